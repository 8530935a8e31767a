//! # bpfkit-bench
//!
//! Benchmarks of bpfkit's engines against the `rbpf` crate on BPF C programs
//! built with clang (`bench/programs/`, objects committed next to their
//! sources and `build.sh`).
//!
//! - [`link`]: turns a program's object file into flat bytecode (entry
//!   section, then `.text`, bpf-to-bpf calls relocated as libbpf does).
//! - [`programs`]: the benchmark programs, their inputs and Rust reference
//!   implementations of what they compute.
//! - [`count`]: a step counter that says how many instructions a run
//!   executes, for the ns-per-instruction column of `BENCHMARKS.md`.
//!
//! ```
//! use bpfkit_bench::{count::run_counted, programs::by_name};
//! use bpfkit_isa::Program;
//!
//! let crc = by_name("crc32").unwrap();
//! let prog = Program::decode(&crc.bytecode().unwrap()).unwrap();
//! let mut input = crc.input();
//! let run = run_counted(&prog, &mut input, 1 << 24).unwrap();
//! assert_eq!(run.r0, crc.reference(&input));
//! ```
//!
//! The criterion benchmark is `benches/interp.rs`:
//! `cargo bench -p bpfkit-bench --bench interp`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod count;
pub mod link;
pub mod programs;
pub mod xdp;
