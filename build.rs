//! The SQL migrations are embedded at compile time (`refinery::embed_migrations!`): rebuild
//! when one is added or edited, not only when a Rust file changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
