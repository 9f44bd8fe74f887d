//! synchub-agent: hydrates a preview container from a signed snapshot, then applies live
//! deltas. The file-system and protocol core lives in the `container_agent` library; the
//! network loop is not wired yet.

fn main() {
    eprintln!("synchub-agent {}: not implemented yet", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
