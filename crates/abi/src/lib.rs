//! # bpfkit-abi
//!
//! Descriptions of the kernel's BPF ABI that several bpfkit crates share:
//! the verifier and the loader need to know what a map or a program *is*,
//! the `maps` crate implements them. Nothing here has behaviour beyond
//! conversions; numbers and names are those of `include/uapi/linux/bpf.h`
//! and of bpftool/libbpf.
//!
//! - [`MapType`], [`MapDef`] and the map flag constants in [`map_flags`];
//!   update flags in [`update_flags`].
//! - [`ProgType`], with [`ProgType::from_section`] for libbpf section names.
//! - [`XdpAction`].
//!
//! ```
//! use bpfkit_abi::{MapType, ProgType, XdpAction};
//! assert_eq!(MapType::try_from(1u32), Ok(MapType::Hash));
//! assert_eq!(MapType::LruPercpuHash.name(), "lru_percpu_hash");
//! assert_eq!(ProgType::from_section("xdp/redirect"), Some(ProgType::Xdp));
//! assert_eq!(ProgType::from_section("classifier"), Some(ProgType::SchedCls));
//! assert_eq!(XdpAction::try_from(2u32).unwrap().name(), "XDP_PASS");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod map;
mod prog;

pub use map::{map_flags, update_flags, MapDef, MapType};
pub use prog::{ProgType, XdpAction};

/// A number that names no known kernel constant of the given kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value}")]
pub struct UnknownValue {
    /// What was being converted (`"map type"`, `"program type"`, ...).
    pub kind: &'static str,
    /// The number.
    pub value: u32,
}
