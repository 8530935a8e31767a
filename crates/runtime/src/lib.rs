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
//!   helper may stop the program with [`HelperAbort::Stop`]; helpers
//!   registered as plain functions over typed per-run data
//!   ([`Helpers::register_typed`]) can be called directly by engines, and
//!   bodies registered as types ([`Helpers::register_body`]) also from
//!   generated code through their own `extern "C"` entries ([`raw`]).
//! - [`Imm64Resolver`]: how a loader turns symbolic `lddw` operands (map
//!   references, ...) into values for an engine, and where array maps
//!   (plain and per-CPU) keep their values ([`ArrayMap`]) and maps whose
//!   lookup is one load from an array of pointers (device maps,
//!   [`SlotMap`]), for engines that inline lookups.
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

pub mod callback;
mod helper;
#[allow(unsafe_code)]
mod memory;
#[allow(unsafe_code)]
pub mod raw;
mod trap;

pub use bpfkit_isa::{HelperId, Imm64, Pc};
pub use callback::Callback;
pub use helper::{Helper, HelperAbort, HelperEnv, HelperResult, Helpers, TypedEntry, TypedHelper};
pub use memory::{le_to_u64, u64_to_le, Guest, Memory, Region, RegionKind};
pub use raw::TypedBody;
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

    /// The layout of the map that `resolve(pc, imm)` names, when it is an
    /// array (`BPF_MAP_TYPE_ARRAY`, or `BPF_MAP_TYPE_PERCPU_ARRAY` with
    /// [`ArrayMap::cpu_stride`] set) whose lookups an engine may compute
    /// itself instead of calling `bpf_map_lookup_elem` (the kernel's
    /// `map_gen_lookup`); `None` (the default) keeps the helper call. The
    /// JIT asks only in unchecked mode, for a call whose `r1` certainly
    /// holds this `lddw`'s value.
    ///
    /// An implementation promises, for as long as code compiled with it
    /// may run:
    /// - `bpf_map_lookup_elem` on that map with the 4-byte key `k`, in a
    ///   run on CPU `c < cpus` (the CPU the engine was given for the run,
    ///   `bpfkit_jit::Jit::set_cpu`), returns `base + k * stride + c *
    ///   cpu_stride` when `k < max_entries` and NULL otherwise: the
    ///   inlined code returns exactly that pointer and never calls the
    ///   helper (the engine never runs with a CPU at or above `cpus`);
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

    /// The slot words of the map that `resolve(pc, imm)` names, when its
    /// `bpf_map_lookup_elem` with a 4-byte key is one load from an array
    /// of pointers (a device map, whose entries live in storage the
    /// embedder registers: the kernel calls `__dev_map_lookup_elem`
    /// directly; here the engine may load the slot itself); `None` (the
    /// default) keeps the helper call. The JIT asks only in unchecked
    /// mode, for a call whose `r1` certainly holds this `lddw`'s value,
    /// and only when [`Imm64Resolver::array_map`] gave nothing.
    ///
    /// An implementation promises, for as long as code compiled with it
    /// may run:
    /// - `bpf_map_lookup_elem` on that map with the 4-byte key `k` returns
    ///   what the `u64` at `slots + 8 * k` holds at that moment when `k <
    ///   max_entries` (a pointer, or 0 for NULL), and NULL otherwise; the
    ///   words stay allocated, and each is written atomically, after the
    ///   memory it points to (release order), so the inlined code's plain
    ///   load is the helper's lookup;
    /// - whenever a helper could be handed such a pointer, the run's
    ///   `Memory` has a region covering the value it points to, so
    ///   helpers accept it as the helper lookup's result; and the value
    ///   stays readable, unchanged, until the run ends, even if the slot
    ///   is changed meanwhile (what the helper's pointer gives).
    ///
    /// The JIT's unchecked mode dereferences these pointers without
    /// checks: the resolver is trusted as for [`Imm64Resolver::array_map`].
    fn slot_map(&self, pc: Pc, imm: &Imm64) -> Option<SlotMap> {
        let _ = (pc, imm);
        None
    }

    /// For a map `lddw` at `pc` of a `devmap` whose `bpf_redirect_map`
    /// generated code may answer itself: its slot words (as
    /// [`Imm64Resolver::slot_map`]: the entry's address, 0 when empty) and
    /// the map's address as the `lddw` gives it (the helper's `r1`), which
    /// the code writes into the run's [`RedirectRecord`] for the embedder
    /// to turn into the run's redirect target. `None` (the default) keeps
    /// the helper call.
    fn redirect_map(&self, pc: Pc, imm: &Imm64) -> Option<(SlotMap, u64)> {
        let _ = (pc, imm);
        None
    }

    /// How to find the entries of the map that `resolve(pc, imm)` names,
    /// when it is a `devmap_hash` whose `bpf_map_lookup_elem` an engine
    /// may compute itself by probing an open-addressing table (see
    /// [`DevhashMap`]); `None` (the default) keeps the helper call. The
    /// JIT asks only in unchecked mode, for a call whose `r1` certainly
    /// holds this `lddw`'s value, without constant blinding.
    ///
    /// An implementation promises, for as long as code compiled with it
    /// may run, and for a run pinned as the helper's lookups are:
    /// - the `u64` at `table` holds the address of a table of `1 << bits`
    ///   `u64` cells that stays allocated for the rest of the run; every
    ///   such table has a cell holding 0;
    /// - the probe for the 4-byte key `k` starts at cell `(k * mult) >>
    ///   (32 - bits)` (32-bit arithmetic) and moves to the next cell
    ///   (wrapping) past a cell holding 1 or the address of another key's
    ///   entry; a cell holding 0 means the key is absent; any other cell
    ///   holds the address `p` of an entry whose key is the `u32` at `p +
    ///   8`, and `p` is exactly what the registered `bpf_map_lookup_elem`
    ///   returns for that key at that moment;
    /// - the entry stays readable and unchanged until the run ends, and
    ///   whenever a helper could be handed `p`, the run's `Memory` has a
    ///   region covering the value at `p` (read-only).
    fn devhash_map(&self, pc: Pc, imm: &Imm64) -> Option<DevhashMap> {
        let _ = (pc, imm);
        None
    }

    /// Whether every map pointer a program can hold points at a map
    /// header, so that an engine may compute `bpf_map_lookup_elem` on a
    /// map it cannot name when it compiles (an inner map from a map-in-map
    /// lookup, a map chosen by a branch) when the header describes an
    /// array; `false` (the default) keeps the helper call. The JIT asks
    /// only in unchecked mode, where the verifier guarantees that `r1` at
    /// a `bpf_map_lookup_elem` holds a map pointer: an `lddw` of a map or
    /// the result of a map-in-map lookup.
    ///
    /// The header, at the map pointer itself (`bpfkit_maps::MapHeader`):
    /// a `u64` `base` at byte 0, a `u32` `max_entries` at byte 8 and a
    /// `u32` `stride` at byte 12. An implementation promises, for as long
    /// as code compiled with it may run:
    /// - every map address it resolves, and every map pointer the
    ///   registered map-in-map lookup returns, is readable for 16 bytes
    ///   and holds a header that does not change while a run may hold the
    ///   pointer;
    /// - `base` 0 means "call the helper"; otherwise the map's
    ///   `bpf_map_lookup_elem` with the 4-byte key `k` returns `base + k *
    ///   stride` for `k < max_entries` and NULL above, the storage stays
    ///   allocated while the pointer may be used, and whenever a helper
    ///   could be handed one of these pointers the run's `Memory` has a
    ///   region covering `[base, base + max_entries * stride)`, writable
    ///   (programs may write array values).
    fn map_headers(&self) -> bool {
        false
    }

    /// Whether the registered `bpf_get_smp_processor_id` (helper 8)
    /// returns the CPU the engine is given for the run
    /// (`bpfkit_jit::Jit::set_cpu`), so that an engine may load it itself
    /// instead of calling the helper; `false` (the default) keeps the call.
    /// The JIT asks only in unchecked mode.
    fn inline_cpu_id(&self) -> bool {
        false
    }

    /// The index of the map that `resolve(pc, imm)` names in the table
    /// the registered `bpf_map_lookup_elem` searches for its map (in
    /// `bpfkit-helpers`, `MapTable` order), which an engine may pass to
    /// the helper as a hint in the otherwise unused third argument (`r3`)
    /// of a lookup it does not compute itself; `None` (the default) passes
    /// nothing. The JIT asks only in unchecked mode (where the verifier
    /// makes `r3` unreadable after the call), for a call whose `r1`
    /// certainly holds this `lddw`'s value, and not under constant
    /// blinding.
    ///
    /// A hint is never trusted: the helper compares the table's entry at
    /// that index with its `r1` and searches as without a hint when they
    /// differ (a program may set `r3` to anything where no engine sets
    /// it), so a wrong index costs a compare, never a wrong answer.
    fn table_index(&self, pc: Pc, imm: &Imm64) -> Option<u32> {
        let _ = (pc, imm);
        None
    }

    /// The slot words of the map that `resolve(pc, imm)` names, when it is
    /// a program array whose `bpf_tail_call` an engine may take itself
    /// (native tail calls: `bpfkit_jit::TailTable`); `None` (the default)
    /// keeps the helper call. The JIT asks only in unchecked mode.
    ///
    /// An implementation promises, for as long as code compiled with it
    /// may run: the `u64` at `slots + 8 * k` for `k < max_entries` is 0
    /// while slot `k` is empty and `1 << 32 | id` while it holds the
    /// program with id `id` (each word written atomically), and the
    /// registered `bpf_tail_call` on that map with index `k` runs the
    /// program its word names at that moment (the engine runs the same
    /// program natively, looked up by `id` in the embedder's table, or
    /// calls the helper); the words stay allocated.
    fn prog_array(&self, pc: Pc, imm: &Imm64) -> Option<SlotMap> {
        let _ = (pc, imm);
        None
    }
}

/// Where an array map keeps its values (see [`Imm64Resolver::array_map`]):
/// value `k` of CPU `c` at `base + k * stride + c * cpu_stride` for `k <
/// max_entries` and `c < cpus` (a plain array: `cpu_stride` 0, one value
/// for every CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayMap {
    /// Guest (= host) address of value 0 (of CPU 0).
    pub base: u64,
    /// Bytes from one key's value to the next (in `bpfkit-maps`: the value
    /// size rounded up to 8, times the possible CPUs for a per-CPU array);
    /// at least `cpus * cpu_stride` and the value size.
    pub stride: u32,
    /// Number of values (per CPU).
    pub max_entries: u32,
    /// Bytes from CPU `c`'s value of a key to CPU `c + 1`'s: 0 for a plain
    /// array (the value does not depend on the CPU), the value size
    /// rounded up to 8 for a per-CPU array in `bpfkit-maps`.
    pub cpu_stride: u32,
    /// The CPUs that have a value (the maps' possible CPUs); runs on CPUs
    /// at or above it must not use the layout. Ignored when `cpu_stride`
    /// is 0.
    pub cpus: u32,
}

impl ArrayMap {
    /// The layout of a plain array: value `k` at `base + k * stride` on
    /// every CPU.
    pub fn plain(base: u64, stride: u32, max_entries: u32) -> ArrayMap {
        ArrayMap {
            base,
            stride,
            max_entries,
            cpu_stride: 0,
            cpus: u32::MAX,
        }
    }
}

/// Where a map whose lookup is one load keeps its slot words (see
/// [`Imm64Resolver::slot_map`]): the answer for key `k < max_entries` is
/// the `u64` at `slots + 8 * k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotMap {
    /// Guest (= host) address of slot 0's word.
    pub slots: u64,
    /// Number of slots.
    pub max_entries: u32,
}

/// What a `bpf_redirect_map` answered in generated code
/// ([`Imm64Resolver::redirect_map`]) left for the embedder, at fixed
/// offsets in the run's data: `set` 1 when that call was the run's last
/// redirect (a helper that sets the redirect clears it), then `entry` the
/// devmap entry found (0: none, no redirect), `key` the key and `map` the
/// map's address as the program's `lddw` gives it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectRecord {
    /// 1: generated code wrote the fields below last; 0: nothing to take.
    pub set: u64,
    /// The entry's address (its first 4 bytes are the ifindex), or 0.
    pub entry: u64,
    /// The key (`u32`, zero-extended).
    pub key: u64,
    /// The map's address as programs see it (the helper's `r1`).
    pub map: u64,
}

/// Where a `devmap_hash`'s lookups can be computed (see
/// [`Imm64Resolver::devhash_map`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevhashMap {
    /// Address of the `u64` holding the current table's address.
    pub table: u64,
    /// The odd multiplier of the probe's first cell.
    pub mult: u32,
    /// The table has `1 << bits` cells (`1 <= bits <= 31`).
    pub bits: u32,
}

impl<F: Fn(Pc, &Imm64) -> Option<u64>> Imm64Resolver for F {
    fn resolve(&self, pc: Pc, imm: &Imm64) -> Option<u64> {
        self(pc, imm)
    }
}
