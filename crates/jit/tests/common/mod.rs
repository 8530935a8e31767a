//! Code shared by test targets (each includes this with `mod common;`).

pub mod inline;
