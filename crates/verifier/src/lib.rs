//! # bpfkit-verifier
//!
//! The static verifier, in the style of the Linux kernel's:
//!
//! - [`cfg`](mod@cfg): subprograms, jumps, reachability;
//! - [`state`]: registers (scalars, pointers of each kind), stack slots,
//!   frames, and the inclusion test used for pruning;
//! - [`check`]: depth-first exploration of every path and the checks of
//!   each instruction, entered through [`verify`];
//! - [`helpers`], [`ctx`]: helper prototypes and context layouts;
//! - [`observe`]: the abstract registers at every instruction, and the
//!   test that a concrete run stays inside them (soundness checks).
//!
//! The abstract domains it reasons with:
//!
//! - [`domain::tnum`]: tristate numbers, which bits are known and their values.
//! - [`domain::bounds`]: integer intervals over the four readings of a
//!   register (unsigned/signed, 64/32 bits), with wrapping arithmetic.
//! - [`domain::scalar`]: a register holding a number, a tnum plus the eight
//!   bounds the kernel keeps, kept consistent by `sync`, with every ALU
//!   operation and the narrowing done by conditional jumps.
//!
//! ```
//! use bpfkit_verifier::domain::tnum::Tnum;
//! // x is 4 or 6: bit 1 unknown, bit 2 known one.
//! let x = Tnum::new(4, 2);
//! assert!(x.contains(6) && !x.contains(5));
//! assert_eq!(x.add(Tnum::constant(1)), Tnum::new(5, 2));
//! ```
//!
//! ```
//! use bpfkit_isa::{Cond, Width};
//! use bpfkit_verifier::domain::scalar::{branch_taken, refine, Scalar};
//! // r1 = unknown; r1 &= 0xff
//! let r1 = Scalar::unknown().and(Scalar::constant(0xff), Width::W64);
//! assert_eq!((r1.umin(), r1.umax()), (0, 255));
//! // if r1 > 10 goto ...: on the fall-through r1 is in [0, 10].
//! let ten = Scalar::constant(10);
//! let (r1, _) = refine(Cond::Gt, Width::W64, r1, ten, false).unwrap();
//! assert_eq!(r1.to_string(), "scalar(smin=smin32=0,smax=umax=smax32=umax32=10,var_off=(0x0; 0xf))");
//! // and a second test of the same condition is decided.
//! assert_eq!(branch_taken(Cond::Gt, Width::W64, r1, ten), Some(false));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cfg;
pub mod check;
pub mod ctx;
pub mod domain;
mod explain;
pub mod helpers;
pub mod observe;
mod precision;
pub mod state;
pub mod verified;

pub use check::{verify, Options, Report, Verdict, INSN_LIMIT};
pub use verified::VerifiedProgram;

/// Why a program was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("insn {pc}: {message}")]
pub struct VerifierError {
    /// Instruction slot where the check failed.
    pub pc: usize,
    /// The kernel's message (its last log line for the same failure).
    pub message: String,
    /// Plain-words context: the instruction, earlier kernel lines, the
    /// source line when line info exists.
    pub context: String,
}

impl VerifierError {
    /// An error at `pc`.
    pub fn new(pc: usize, message: String) -> VerifierError {
        VerifierError {
            pc,
            message,
            context: String::new(),
        }
    }

    /// Adds context.
    pub fn with_context(mut self, context: String) -> VerifierError {
        self.context = context;
        self
    }
}
