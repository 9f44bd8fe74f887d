//! The synchub snapshot format (CONTRACT section 5): build and read/verify.

pub mod paths;
