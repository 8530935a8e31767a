//! # bpfkit-verifier
//!
//! The static verifier, in the style of the Linux kernel's. This first part
//! holds the abstract domains it reasons with:
//!
//! - [`domain::tnum`]: tristate numbers, which bits are known and their values.
//!
//! ```
//! use bpfkit_verifier::domain::tnum::Tnum;
//! // x is 4 or 6: bit 1 unknown, bit 2 known one.
//! let x = Tnum::new(4, 2);
//! assert!(x.contains(6) && !x.contains(5));
//! assert_eq!(x.add(Tnum::constant(1)), Tnum::new(5, 2));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod domain;
