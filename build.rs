//! The SQL migrations are embedded at compile time (`refinery::embed_migrations!`, and the
//! function files by `include_str!` in src/db/functions.rs): rebuild when one is added or
//! edited, not only when a Rust file changes. Cargo scans the whole folder, subfolders too.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
