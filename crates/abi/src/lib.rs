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
//! - [`MapId`] and [`ProgId`], the ids that the control side uses.
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

/// A map's id, as `bpftool map show` prints it (the kernel's map id; bpfkit
/// hands them out from 1 upwards).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapId(pub u32);

/// A program's id, as `bpftool prog show` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgId(pub u32);

impl std::fmt::Display for MapId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for ProgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A number that names no known kernel constant of the given kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value}")]
pub struct UnknownValue {
    /// What was being converted (`"map type"`, `"program type"`, ...).
    pub kind: &'static str,
    /// The number.
    pub value: u32,
}
