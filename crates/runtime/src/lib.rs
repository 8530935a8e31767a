//! # bpfkit-runtime
//!
//! What every execution engine (interpreter, JIT) shares, and the contract
//! between engines and embedders:
//!
//! - [`Trap`] / [`TrapKind`]: typed guest faults, identical across engines.
//! - [`Memory`]: the embedder's guest memory regions (context, packet, map
//!   values, read-only data, helper memory); [`Guest`] adds the engine's
//!   stack. Guest addresses are host addresses; every access is checked
//!   against the regions ([`MemFault`] otherwise).
//! - [`Helpers`]: helper id → [`Helper`], called with `r1`-`r5` and a
//!   [`HelperEnv`] giving checked guest memory access and per-run data; a
//!   helper may stop the program with [`HelperAbort::Stop`].
//! - [`Imm64Resolver`]: how a loader turns symbolic `lddw` operands (map
//!   references, ...) into values for an engine, and where plain array
//!   maps keep their values ([`ArrayMap`]), for engines that inline
//!   lookups.
//! - Constants of the execution model: [`STACK_SIZE`], [`MAX_CALL_FRAMES`].
//!
//! ```
//! use bpfkit_runtime::{Guest, Memory, RegionKind, Access};
//! let mut ctx = [0u8; 4];
//! let mut stack = [0u8; 512];
//! let mut mem = Memory::new();
//! let p = mem.add(RegionKind::Context, &mut ctx);
//! let mut g = Guest::new(&mut stack, &mut mem);
//! g.store::<4>(p, 7u32.to_le_bytes()).unwrap();
//! let fault = g.load::<8>(p).unwrap_err();
//! assert_eq!((fault.addr, fault.size, fault.access), (p, 8, Access::Read));
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod helper;
#[allow(unsafe_code)]
mod memory;
mod trap;

pub use bpfkit_isa::{HelperId, Imm64, Pc};
pub use helper::{Helper, HelperAbort, HelperEnv, HelperResult, Helpers};
pub use memory::{le_to_u64, u64_to_le, Guest, Memory, Region, RegionKind};
pub use trap::{Access, MemFault, Trap, TrapKind};

/// Bytes of stack per call frame (RFC 9669 section 3; the kernel's
/// `MAX_BPF_STACK`).
pub const STACK_SIZE: usize = 512;

/// Maximum number of frames, the main program included (the kernel's
/// `MAX_CALL_FRAMES`).
pub const MAX_CALL_FRAMES: usize = 8;

/// Turns the symbolic operand of an `lddw` into the 64-bit value the program
/// sees (a map's address, a map value's address, ...). Engines ask once, when
/// they prepare a program; `None` leaves it unresolved, and executing that
/// `lddw` traps with [`TrapKind::UnresolvedImm64`]. [`Imm64::Value`] is never
/// passed; [`Imm64::Func`] only when the engine does not handle it itself.
pub trait Imm64Resolver {
    /// The value for the `lddw` at `pc` with operand `imm`.
    fn resolve(&self, pc: Pc, imm: &Imm64) -> Option<u64>;

    /// The layout of the map that `resolve(pc, imm)` names, when it is a
    /// plain array (`BPF_MAP_TYPE_ARRAY`) whose lookups an engine may
    /// compute itself instead of calling `bpf_map_lookup_elem` (the
    /// kernel's `map_gen_lookup`); `None` (the default) keeps the helper
    /// call. The JIT asks only in unchecked mode, for a call whose `r1`
    /// certainly holds this `lddw`'s value.
    ///
    /// An implementation promises, for as long as code compiled with it
    /// may run:
    /// - `bpf_map_lookup_elem` on that map with the 4-byte key `k`
    ///   returns `base + k * stride` when `k < max_entries` and NULL
    ///   otherwise, on every CPU: the inlined code returns exactly that
    ///   pointer and never calls the helper;
    /// - `[base, base + max_entries * stride)` stays allocated (the
    ///   storage outlives the code: the `bpfkit` facade's `Object` owns
    ///   both), and whenever a helper could be handed one of these
    ///   pointers, the run's `Memory` has a region covering that range
    ///   (writable unless the map is read-only for programs), so helpers
    ///   accept them as they accept the helper lookup's result.
    ///
    /// The JIT's unchecked mode dereferences the pointers without checks,
    /// as it does `lddw` value addresses (`MapIdxValue`): the resolver is
    /// trusted in the same way.
    fn array_map(&self, pc: Pc, imm: &Imm64) -> Option<ArrayMap> {
        let _ = (pc, imm);
        None
    }
}

/// Where a plain array map keeps its values (see
/// [`Imm64Resolver::array_map`]): value `k` at `base + k * stride` for
/// `k < max_entries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayMap {
    /// Guest (= host) address of value 0.
    pub base: u64,
    /// Bytes from one value to the next (the value size rounded up to 8
    /// in `bpfkit-maps`); at least the value size.
    pub stride: u32,
    /// Number of values.
    pub max_entries: u32,
}

impl<F: Fn(Pc, &Imm64) -> Option<u64>> Imm64Resolver for F {
    fn resolve(&self, pc: Pc, imm: &Imm64) -> Option<u64> {
        self(pc, imm)
    }
}
