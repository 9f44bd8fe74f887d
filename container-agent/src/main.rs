//! synchub-agent: hydrates a preview container from a signed snapshot, then applies live deltas.

fn main() {
    eprintln!("synchub-agent: not implemented yet");
    std::process::exit(2);
}
