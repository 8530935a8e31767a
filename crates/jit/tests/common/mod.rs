//! Code shared by test targets (each includes this with `mod common;`).

pub mod inline;
// Not every target that includes `common` runs XDP packets.
#[allow(dead_code)]
pub mod xdp;
