//! # bpfkit-maps
//!
//! BPF maps with the kernel's semantics, safe to share between the threads
//! of a multi-core datapath (`Map: Send + Sync`, shared as `Arc<Map>`).
//!
//! A [`Map`] is created from a [`MapDef`] with the kernel's validation (the
//! same `EINVAL`/`E2BIG` cases per type) and has two faces:
//!
//! - **Control side**, like the `bpf()` syscall: [`Map::lookup`] (a copy;
//!   per-CPU maps give one 8-byte-aligned slot per possible CPU,
//!   concatenated), [`Map::update`] with `BPF_ANY`/`BPF_NOEXIST`/`BPF_EXIST`,
//!   [`Map::delete`], [`Map::get_next_key`], [`Map::lookup_and_delete`].
//!   Map-in-map and prog-array values are ids ([`MapId`], [`ProgId`]);
//!   map ids are resolved by the [`MapRegistry`] the outer map was created
//!   in.
//! - **Program side**, what helpers call while a program runs: [`Map::lookup_ptr`]
//!   gives a [`ValueRef`], a pointer into the map's own storage that the
//!   program may read, write and use atomics on in place; [`Map::prog_update`],
//!   [`Map::prog_delete`], [`Map::push`]/[`Map::pop`]/[`Map::peek`],
//!   ring buffer ([`Map::ringbuf_reserve`], ...), [`Map::perf_event_output`],
//!   [`Map::redirect_target`], [`Map::prog_at`], [`Map::inner_map`].
//!
//! Errors are [`MapError`]s; [`MapError::errno`] gives the kernel's errno
//! for the same case.
//!
//! # Value lifetime: the rule for engines
//!
//! Pin a [`RunGuard`] with [`pin`] before running a program and drop it
//! after the run; pass it to every program-side lookup. What a lookup
//! returns stays valid until the guard is dropped, even if another thread
//! deletes or replaces the element meanwhile: removed elements are retired,
//! not freed, until every run that might see them has ended (epoch-based
//! reclamation, the counterpart of the kernel's RCU). See [`epoch`] for the
//! argument.
//!
//! A "CPU" is a small index that the embedder passes (its runtime thread's
//! number), below [`MapOptions::possible_cpus`].
//!
//! # Helpers, by map type
//!
//! | helper | call |
//! |---|---|
//! | `bpf_map_lookup_elem` | [`Map::lookup_ptr`] (arrays, hashes, LRU, LPM); [`Map::inner_map`] (map-in-map: the program gets the inner map); [`Map::dev_value`] (devmap, devmap_hash: the entry, read-only); [`Map::slot_generation`] tells whether a slot still holds what a lookup found |
//! | `bpf_map_update_elem` / `bpf_map_delete_elem` | [`Map::prog_update`] / [`Map::prog_delete`]; return `-errno` with [`MapError::to_helper_ret`] |
//! | `bpf_map_push_elem` / `pop` / `peek` | [`Map::push`] / [`Map::pop`] / [`Map::peek`] |
//! | `bpf_ringbuf_{reserve,submit,discard,output,query}` | [`Map::ringbuf_reserve`], [`Map::ringbuf_submit`], [`Map::ringbuf_discard`], [`Map::ringbuf_output`], [`Map::ringbuf_query`]; the embedder drains with [`Map::ringbuf_consume`] |
//! | `bpf_perf_event_output` | [`Map::perf_event_output`]; drained with [`Map::perf_drain`] |
//! | `bpf_redirect_map` | [`Map::redirect_target`] (devmap, devmap_hash) |
//! | `bpf_tail_call` | [`Map::prog_at`] |
//! | `bpf_for_each_map_elem` | [`Map::for_each_elem`] |
//! | `bpf_map_lookup_percpu_elem` | [`Map::lookup_ptr`] with that CPU |
//!
//! # Where bpfkit differs from the kernel
//!
//! - LRU eviction is CLOCK over one queue, one element at a time, only when
//!   full (see the `hash` module docs): the kernel's per-CPU lists may evict
//!   earlier and differently.
//! - Hash iteration order is bpfkit's own (the kernel's depends on a random
//!   seed too); LPM and array orders are the kernel's.
//! - Program ids in `prog_array` and devmap values are the embedder's and
//!   not checked (the kernel checks the fd and the program type); map ids
//!   in map-in-maps are checked against the [`MapRegistry`].
//! - `perf_event_output` accepts any filled slot, not only the current
//!   CPU's (the kernel gives `EOPNOTSUPP` for another CPU's event).
//! - No `BPF_F_LOCK` (no BTF spin locks yet): it gives `EINVAL`, as the
//!   kernel does for maps without a `bpf_spin_lock`.
//! - Creation limits follow the reference kernel (6.18): e.g. hash keys are
//!   not limited to 512 bytes any more, and `lpm_trie` full gives `ENOSPC`.
//!
//! ```
//! use bpfkit_abi::{MapDef, MapType, update_flags::*};
//! use bpfkit_maps::{pin, Map, MapError, MapOptions};
//! use std::sync::atomic::Ordering;
//!
//! let map = Map::new(MapDef::new(MapType::Hash, 4, 8, 16), &MapOptions::new())?;
//! map.update(&1u32.to_ne_bytes(), &5u64.to_ne_bytes(), ANY)?;
//! assert_eq!(map.update(&1u32.to_ne_bytes(), &6u64.to_ne_bytes(), NOEXIST), Err(MapError::Exists));
//!
//! // A program run on CPU 0 increments the value in place.
//! let guard = pin();
//! let v = map.lookup_ptr(&1u32.to_ne_bytes(), 0, &guard).unwrap();
//! v.atomic_u64(0).unwrap().fetch_add(1, Ordering::Relaxed);
//! drop(guard);
//!
//! assert_eq!(map.lookup(&1u32.to_ne_bytes())?, 6u64.to_ne_bytes());
//! assert_eq!(map.lookup(&2u32.to_ne_bytes()).unwrap_err().errno(), 2); // ENOENT
//! # Ok::<(), MapError>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod array;
mod devhash;
pub mod epoch;
mod error;
mod hash;
mod lpm;
mod queue;
#[allow(unsafe_code)]
mod raw;
mod registry;
pub mod ringbuf;
mod slots;
mod storage;
mod validate;

pub use bpfkit_abi::{map_flags, update_flags, MapDef, MapId, MapType, ProgId};
pub use devhash::{DevhashLayout, TOMB as DEVHASH_TOMB};
pub use epoch::{pin, RunGuard};
pub use error::{MapError, ENOTSUPP};
pub use registry::MapRegistry;
pub use slots::PerfDrain;
pub use storage::ValueRef;
pub use validate::{KMALLOC_MAX_SIZE, MAX_BPF_STACK, PAGE_SIZE, PCPU_MIN_UNIT_SIZE};

use array::Array;
use hash::{Hash, Src};
use lpm::Lpm;
use queue::QueueStack;
use ringbuf::RingBuf;
use slots::Slots;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

/// `BPF_F_CURRENT_CPU`: `perf_event_output`'s index meaning "this CPU".
pub const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;
/// `BPF_F_INDEX_MASK`.
pub const BPF_F_INDEX_MASK: u64 = 0xffff_ffff;

// Poisoning cannot leave our structures inconsistent (no code between
// lock and unlock panics on valid state), so a poisoned lock is used as is.
pub(crate) fn rd<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn wr<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// A (key, value) pair, as [`Map::entries`] lists them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Whether an interface index exists (see [`MapOptions::ifindex_check`]).
type IfindexCheck = Arc<dyn Fn(u32) -> bool + Send + Sync>;

/// Settings shared by the maps of one embedder.
#[derive(Clone)]
pub struct MapOptions {
    possible_cpus: usize,
    perf_buffer_bytes: usize,
    ifindex_check: Option<IfindexCheck>,
}

impl std::fmt::Debug for MapOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapOptions")
            .field("possible_cpus", &self.possible_cpus)
            .field("perf_buffer_bytes", &self.perf_buffer_bytes)
            .field("ifindex_check", &self.ifindex_check.is_some())
            .finish()
    }
}

impl Default for MapOptions {
    fn default() -> MapOptions {
        MapOptions::new()
    }
}

impl MapOptions {
    /// As many possible CPUs as the host has threads available; perf
    /// buffers of 256 KiB.
    pub fn new() -> MapOptions {
        MapOptions {
            possible_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            perf_buffer_bytes: 256 << 10,
            ifindex_check: None,
        }
    }

    /// Sets how devmaps check that an interface exists (the kernel refuses
    /// unknown interfaces with `EINVAL`). Without one, every non-zero
    /// ifindex is accepted.
    pub fn ifindex_check(mut self, f: impl Fn(u32) -> bool + Send + Sync + 'static) -> MapOptions {
        self.ifindex_check = Some(Arc::new(f));
        self
    }

    /// Sets the number of possible CPUs (at least 1): the slots of per-CPU
    /// maps, and the bound of the `cpu` that program-side calls take.
    pub fn possible_cpus(mut self, n: usize) -> MapOptions {
        self.possible_cpus = n.max(1);
        self
    }

    /// Sets how many bytes of records each perf event buffer keeps before
    /// counting further records as lost.
    pub fn perf_buffer_bytes(mut self, n: usize) -> MapOptions {
        self.perf_buffer_bytes = n;
        self
    }

    /// The number of possible CPUs.
    pub fn cpus(&self) -> usize {
        self.possible_cpus
    }
}

/// Where a `devmap` keeps its entries ([`Map::devmap_layout`]), for
/// engines that register them as one region and compute lookups
/// themselves:
///
/// - every entry a program can get (`bpf_map_lookup_elem`,
///   [`Map::dev_value`]) is one 8-byte word inside `entries`, which lives
///   as long as the map; engines register `entries` as one read-only
///   region (programs may only read device map values);
/// - the `u64` at `slots + 8 * k`, for `k < max_entries`, holds the
///   address of slot `k`'s entry word, 0 when the slot is empty: written
///   with release order after the entry's value, so a plain (acquire)
///   load of it followed by a read of the entry sees the value. An update
///   takes another word and retires the old one, which stays unchanged
///   until every run pinned before the update has ended (see
///   [`crate::epoch`]): a pointer a run loaded keeps its value for the
///   rest of that run.
#[derive(Clone, Copy, Debug)]
pub struct DevmapLayout<'m> {
    /// All entry words (free ones included: they read as stale or zero
    /// values, never as another map's memory).
    pub entries: ValueRef<'m>,
    /// Address of the first of `max_entries` slot words.
    pub slots: u64,
    /// The map's `max_entries`.
    pub max_entries: u32,
}

/// A `devmap`/`devmap_hash` entry as `bpf_redirect_map` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevTarget {
    /// The interface index to send to.
    pub ifindex: u32,
    /// The XDP program to run on the device first (8-byte values), if any.
    pub prog: Option<ProgId>,
}

// A tag byte (not a niche in `Hash`'s fields): the per-packet lookups'
// dispatch is one compare of it (the niche took six instructions).
#[repr(u8)]
enum Imp {
    Array(Array),
    Hash(Hash),
    Lpm(Lpm),
    Queue(QueueStack),
    Ring(RingBuf),
    Slots(Slots),
}

/// What an engine may read at the address of a [`Map`] (the first bytes
/// of every `Map`, `#[repr(C)]`): for a plain `array` (not read-only for
/// programs, 4-byte keys), where its values are, so that code holding a
/// map pointer it cannot name in advance (an inner map from a map-in-map
/// lookup) can compute `bpf_map_lookup_elem` itself, as the kernel's
/// verifier inlines lookups in inner arrays; `array_base` 0 for every
/// other map (call the helper). Fixed for the life of the map.
///
/// Layout (what generated code reads): `array_base` at byte 0 (u64),
/// `max_entries` at byte 8 (u32), `stride` at byte 12 (u32); for key `k <
/// max_entries` the value is at `array_base + k * stride`, which is what
/// [`Map::lookup_ptr`] returns, and `[array_base, array_base +
/// max_entries * stride)` is the storage [`Map::array_storage`] gives.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapHeader {
    /// The storage's address (value 0), or 0: not an inlinable array.
    pub array_base: u64,
    /// Number of values.
    pub max_entries: u32,
    /// Bytes from one value to the next (the value size rounded up to 8).
    pub stride: u32,
}

/// A map. See the [crate documentation](crate) for the two sides of its
/// API and the value lifetime rule.
///
/// `#[repr(C)]` so that its [`MapHeader`] is at its address
/// ([`Map::header`]).
#[repr(C)]
pub struct Map {
    header: MapHeader,
    def: MapDef,
    ncpus: usize,
    ifindex_check: Option<IfindexCheck>,
    id: Option<MapId>,
    registry: Weak<registry::Inner>,
    frozen: std::sync::atomic::AtomicBool,
    imp: Imp,
    /// `devmap_hash`: the entries programs get, findable without the
    /// helper ([`Map::devhash_layout`]); `None` for other types and above
    /// `devhash::INDEX_MAX_ENTRIES`.
    devidx: Option<devhash::DevIndex>,
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("id", &self.id)
            .field("def", &self.def)
            .finish_non_exhaustive()
    }
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

impl Map {
    /// Creates a map, checking `def` as the kernel's `BPF_MAP_CREATE`
    /// does. Map-in-map types made this way cannot resolve inner map ids
    /// (updates give `EBADF`): create them with [`MapRegistry::create`].
    pub fn new(def: MapDef, opts: &MapOptions) -> Result<Map, MapError> {
        Map::build(def, opts, None, Weak::new())
    }

    pub(crate) fn build(
        def: MapDef,
        opts: &MapOptions,
        id: Option<MapId>,
        registry: Weak<registry::Inner>,
    ) -> Result<Map, MapError> {
        let ncpus = opts.possible_cpus;
        let def = validate::validate(&def, ncpus)?;
        let percpu = def.map_type.is_percpu().then_some(ncpus);
        use MapType as T;
        let imp = match def.map_type {
            T::Array | T::PercpuArray => Imp::Array(Array::new(
                def.max_entries,
                def.value_size,
                percpu.unwrap_or(1),
            )?),
            T::Hash | T::PercpuHash => Imp::Hash(Hash::new(
                def.max_entries,
                def.value_size,
                percpu,
                false,
                true,
            )?),
            // Program lookups in these may be answered again within a run
            // while the map's change count stands (`Map::slot_generation`).
            T::HashOfMaps => Imp::Hash(
                Hash::new(def.max_entries, def.value_size, None, false, true)?.counting_changes(),
            ),
            T::LruHash | T::LruPercpuHash => Imp::Hash(Hash::new(
                def.max_entries,
                def.value_size,
                percpu,
                true,
                true,
            )?),
            T::DevmapHash => Imp::Hash(
                Hash::new(def.max_entries, def.value_size, None, false, false)?.counting_changes(),
            ),
            T::LpmTrie => Imp::Lpm(Lpm::new(def.key_size, def.value_size, def.max_entries)),
            T::Queue => Imp::Queue(QueueStack::new(def.max_entries, false)),
            T::Stack => Imp::Queue(QueueStack::new(def.max_entries, true)),
            T::Ringbuf => Imp::Ring(RingBuf::new(def.max_entries)?),
            T::PerfEventArray => Imp::Slots(Slots::new(
                def.max_entries,
                def.value_size,
                Some(opts.perf_buffer_bytes),
                false,
            )?),
            T::ProgArray | T::ArrayOfMaps | T::Devmap => Imp::Slots(Slots::new(
                def.max_entries,
                def.value_size,
                None,
                def.map_type == T::Devmap,
            )?),
            t => return Err(MapError::UnsupportedType { map_type: t }),
        };
        let devidx = match def.map_type {
            T::DevmapHash => devhash::DevIndex::new(def.max_entries)?,
            _ => None,
        };
        let header = match &imp {
            Imp::Array(a)
                if def.map_type == T::Array
                    && def.key_size == 4
                    && def.map_flags & map_flags::RDONLY_PROG == 0 =>
            {
                MapHeader {
                    array_base: a.storage().addr(),
                    max_entries: def.max_entries,
                    stride: def.value_size.div_ceil(8) * 8,
                }
            }
            _ => MapHeader {
                array_base: 0,
                max_entries: 0,
                stride: 0,
            },
        };
        Ok(Map {
            header,
            def,
            ncpus,
            ifindex_check: opts.ifindex_check.clone(),
            id,
            registry,
            frozen: Default::default(),
            imp,
            devidx,
        })
    }

    /// What engines may read at this map's address (see [`MapHeader`]);
    /// it is the first field of the `Map`.
    pub fn header(&self) -> &MapHeader {
        &self.header
    }

    /// The definition as the kernel keeps it.
    pub fn def(&self) -> &MapDef {
        &self.def
    }

    /// The type.
    pub fn map_type(&self) -> MapType {
        self.def.map_type
    }

    /// The map's address: a stable value that loaders can give programs
    /// as the map pointer (`lddw` of a map), and that
    /// [`MapRegistry::get_by_addr`] resolves.
    pub fn addr(&self) -> u64 {
        self as *const Map as u64
    }

    /// The id [`MapRegistry::create`] gave it.
    pub fn id(&self) -> Option<MapId> {
        self.id
    }

    /// The number of possible CPUs it was made for.
    pub fn possible_cpus(&self) -> usize {
        self.ncpus
    }

    /// Length of a control-side value: `value_size`, or for per-CPU maps
    /// `round_up(value_size, 8) * possible_cpus`.
    pub fn value_buf_len(&self) -> usize {
        let v = self.def.value_size as usize;
        if self.def.map_type.is_percpu() {
            v.div_ceil(8) * 8 * self.ncpus
        } else {
            v
        }
    }

    /// Number of elements present (hash-like maps, tries, queues); for
    /// arrays, `max_entries`.
    pub fn len(&self) -> usize {
        match &self.imp {
            Imp::Hash(h) => h.len(),
            Imp::Lpm(l) => l.len(),
            Imp::Queue(q) => q.len(),
            Imp::Ring(_) => 0,
            Imp::Array(_) | Imp::Slots(_) => self.def.max_entries as usize,
        }
    }

    /// Whether [`Map::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        if key.len() != self.def.key_size as usize {
            return Err(MapError::BadLength {
                what: "key",
                got: key.len(),
                expected: self.def.key_size as usize,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8], expected: usize) -> Result<(), MapError> {
        if value.len() != expected {
            return Err(MapError::BadLength {
                what: "value",
                got: value.len(),
                expected,
            });
        }
        Ok(())
    }

    fn unsupported(&self, op: &'static str) -> MapError {
        MapError::NotSupported {
            op,
            map_type: self.def.map_type,
        }
    }

    fn readable(&self) -> Result<(), MapError> {
        if self.def.map_flags & map_flags::WRONLY != 0 {
            return Err(MapError::Permission {
                what: "map is write-only (BPF_F_WRONLY)",
            });
        }
        Ok(())
    }

    fn writable(&self) -> Result<(), MapError> {
        if self.def.map_flags & map_flags::RDONLY != 0 {
            return Err(MapError::Permission {
                what: "map is read-only (BPF_F_RDONLY)",
            });
        }
        if self.is_frozen() {
            return Err(MapError::Permission {
                what: "map is frozen (BPF_MAP_FREEZE)",
            });
        }
        Ok(())
    }

    /// `BPF_MAP_FREEZE`: from now on the control side may not change the
    /// map (`EPERM`); programs still may unless the map has
    /// `BPF_F_RDONLY_PROG` (loaders freeze `.rodata` this way). `EPERM`,
    /// as in the kernel, when the control side cannot write the map
    /// (`BPF_F_RDONLY`, or already frozen).
    pub fn freeze(&self) -> Result<(), MapError> {
        self.writable()?;
        self.frozen
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether [`Map::freeze`] was called.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The whole value storage of a plain `array`, valid as long as the map:
    /// index `i` starts at byte `i * round_up(value_size, 8)`. Loaders use
    /// it for global data (`.data`, `.bss`, `.rodata` are one-element
    /// arrays whose value programs address directly) and engines may
    /// register it as one guest region. `None` for other types.
    pub fn array_storage(&self) -> Option<ValueRef<'_>> {
        match (&self.imp, self.def.map_type) {
            (Imp::Array(a), MapType::Array) => Some(a.storage()),
            _ => None,
        }
    }

    /// The whole value storage of a `percpu_array`, valid as long as the
    /// map: index `i`, CPU `c` at byte `(i * possible_cpus + c) *
    /// round_up(value_size, 8)`, which is what [`Map::lookup_ptr`] returns
    /// on CPU `c`. Engines may register it as one guest region and compute
    /// lookups in it. `None` for other types.
    pub fn percpu_array_storage(&self) -> Option<ValueRef<'_>> {
        match (&self.imp, self.def.map_type) {
            (Imp::Array(a), MapType::PercpuArray) => Some(a.storage()),
            _ => None,
        }
    }

    /// Where a `devmap` keeps its entries, valid as long as the map (see
    /// [`DevmapLayout`]); `None` for other types.
    pub fn devmap_layout(&self) -> Option<DevmapLayout<'_>> {
        match (&self.imp, self.def.map_type) {
            (Imp::Slots(s), MapType::Devmap) => {
                let (words, addrs) = s.dev_arena()?;
                Some(DevmapLayout {
                    entries: ValueRef::new(words, words.len() * 8),
                    slots: addrs.as_ptr() as u64,
                    max_entries: self.def.max_entries,
                })
            }
            _ => None,
        }
    }

    /// Where a `devmap_hash` keeps what programs look up, valid as long as
    /// the map, for engines that find entries themselves (see the
    /// `devhash` module and [`DevhashLayout`]): `None` for other types and
    /// for maps above 65,536 entries. Promises, for code reading it:
    ///
    /// - the `u64` at `table` holds the address of the current table of
    ///   `1 << bits` cells; a table stays allocated until every run pinned
    ///   while it was current has ended;
    /// - key `k`'s probe starts at cell `(k * mult as u32) >> (32 - bits)`
    ///   and goes on at the next cell (wrapping) past cells holding
    ///   [`DEVHASH_TOMB`] or another key's entry, up to an empty cell (0:
    ///   absent), which every table has; any other cell holds the address
    ///   of an entry inside `entries` whose second word's low 4 bytes are
    ///   its key and whose first word is the value, which is exactly
    ///   [`Map::dev_value`]'s pointer for that key; cells are written with
    ///   release order after the entry, and an entry does not change while
    ///   a run pinned when it was in a table may hold it (engines register
    ///   `entries` as one read-only region).
    pub fn devhash_layout(&self) -> Option<DevhashLayout> {
        self.devidx.as_ref().map(|ix| ix.layout())
    }

    /// `bpf_map_lookup_elem` on a `devmap_hash` with an entry table
    /// ([`Map::devhash_layout`]) with the 4-byte key `key`, without a lock:
    /// the address of the entry (what [`Map::dev_value`] points at), 0
    /// when absent or for other maps. The entry stays readable for as long
    /// as `guard`.
    #[inline]
    pub fn devhash_entry_addr(&self, key: u32, guard: &RunGuard) -> u64 {
        self.devidx
            .as_ref()
            .and_then(|ix| ix.find(key, guard))
            .unwrap_or(0)
    }

    /// [`Map::devhash_layout`]'s entries, for registering them as one
    /// region.
    pub fn devhash_entries(&self) -> Option<ValueRef<'_>> {
        let e = self.devidx.as_ref()?.entries();
        Some(ValueRef::new(e, e.len() * 8))
    }

    /// A `prog_array`'s slot words, valid as long as the map: (address of
    /// slot 0's `u64`, number of slots). A word is 0 while its slot is
    /// empty and `1 << 32 | id` while it holds program `id`, written
    /// atomically under the slot's lock (what [`Map::prog_at`] reads), so
    /// that generated code may read a slot with one load at a tail call.
    /// `None` for other types.
    pub fn prog_array_words(&self) -> Option<(u64, u32)> {
        match (&self.imp, self.def.map_type) {
            (Imp::Slots(s), MapType::ProgArray) => Some((s.words_addr(), s.max_entries())),
            _ => None,
        }
    }

    /// `bpf_map_lookup_elem` on a `devmap` with index `key`, without a
    /// lock: the address of the entry's word in
    /// [`DevmapLayout::entries`] (what [`Map::dev_value`] points at), 0
    /// for an empty slot, an index past the end or another map type. The
    /// entry stays readable for as long as `guard`, as [`Map::dev_value`]'s.
    #[inline]
    pub fn devmap_entry_addr(&self, key: u32, guard: &RunGuard) -> u64 {
        let _ = guard;
        match &self.imp {
            Imp::Slots(s) => s.dev_addr(key),
            _ => 0,
        }
    }

    fn prog_writable(&self) -> Result<(), MapError> {
        if self.def.map_flags & map_flags::RDONLY_PROG != 0 {
            return Err(MapError::Permission {
                what: "map is read-only for programs (BPF_F_RDONLY_PROG)",
            });
        }
        Ok(())
    }

    // ---------------------------------------------------------------
    // Control side
    // ---------------------------------------------------------------

    /// `BPF_MAP_LOOKUP_ELEM`: a copy of the value ([`Map::value_buf_len`]
    /// bytes). LPM tries do a longest-prefix match; queues and stacks
    /// (empty key) peek; `prog_array`, `array_of_maps` and `hash_of_maps`
    /// give the stored id as 4 bytes; devmaps the `bpf_devmap_val`.
    pub fn lookup(&self, key: &[u8]) -> Result<Vec<u8>, MapError> {
        self.readable()?;
        self.check_key(key)?;
        let mut out = vec![0u8; self.value_buf_len()];
        self.lookup_checked(key, &mut out)?;
        Ok(out)
    }

    /// [`Map::lookup`] into `out` (whose first [`Map::value_buf_len`]
    /// bytes it writes; a shorter `out` is `EINVAL`), without allocating:
    /// for helpers that copy a value once per packet (devmaps).
    pub fn lookup_into(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        self.readable()?;
        self.check_key(key)?;
        let (n, got) = (self.value_buf_len(), out.len());
        let out = out.get_mut(..n).ok_or(MapError::BadLength {
            what: "value buffer",
            got,
            expected: n,
        })?;
        self.lookup_checked(key, out)
    }

    fn lookup_checked(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        match &self.imp {
            Imp::Array(a) => a.lookup(key, out),
            Imp::Hash(h) => h.lookup(key, out),
            Imp::Lpm(l) => l.lookup(key, out),
            Imp::Queue(q) => q.pop(out, false),
            Imp::Ring(_) => Err(self.unsupported("lookup")),
            Imp::Slots(s) => {
                if self.def.map_type == MapType::PerfEventArray {
                    return Err(self.unsupported("lookup"));
                }
                s.lookup(u32_of(key), out)
            }
        }
    }

    /// `BPF_MAP_UPDATE_ELEM` with `flags` from [`update_flags`]. Per-CPU
    /// maps take one 8-byte-aligned slot per CPU; map-in-map values are
    /// [`MapId`]s and `prog_array` values [`ProgId`]s, as `u32`; queues and
    /// stacks (empty key) push.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        self.writable()?;
        self.check_key(key)?;
        self.check_value(value, self.value_buf_len())?;
        if flags & update_flags::LOCK != 0 {
            return Err(MapError::Invalid {
                what: "BPF_F_LOCK on a map without a bpf_spin_lock",
            });
        }
        self.update_any(key, value, flags, None)
    }

    fn update_any(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: Option<usize>,
    ) -> Result<(), MapError> {
        // Devmap values: an fd (here: a program id) of 0 or below means
        // none, and reads back as 0, as the kernel's program id does.
        let normalized;
        let value = if matches!(self.def.map_type, MapType::Devmap | MapType::DevmapHash)
            && value.len() == 8
            && (u32_of(&value[4..]) as i32) <= 0
        {
            normalized = [&value[..4], &[0; 4][..]].concat();
            &normalized[..]
        } else {
            value
        };
        let dev_ok = |v: &[u8]| {
            let i = u32_of(v);
            i != 0 && self.ifindex_check.as_ref().is_none_or(|f| f(i))
        };
        let bad_flags = || {
            Err(MapError::Invalid {
                what: "update flags",
            })
        };
        match &self.imp {
            Imp::Array(a) => {
                if flags & !update_flags::LOCK > update_flags::EXIST {
                    return bad_flags();
                }
                a.update(key, value, flags, cpu)
            }
            Imp::Hash(h) => {
                // hash_of_maps resolves the inner map first (EBADF, EINVAL),
                // as the kernel's bpf_fd_htab_map_update_elem does.
                let inner = match self.def.map_type {
                    MapType::HashOfMaps => Some(self.resolve_inner(value)?),
                    _ => None,
                };
                if flags > update_flags::EXIST {
                    return bad_flags();
                }
                let src = match cpu {
                    Some(c) => Src::Cpu(c, value),
                    None => Src::All(value),
                };
                match self.def.map_type {
                    MapType::HashOfMaps => h.update(key, src, inner, flags),
                    MapType::DevmapHash => {
                        // The kernel refuses ifindex 0 first, then checks
                        // EEXIST, then whether the device exists, then E2BIG.
                        if u32_of(value) != 0
                            && !dev_ok(value)
                            && flags == update_flags::NOEXIST
                            && h.contains(key)
                        {
                            return Err(MapError::Exists);
                        }
                        if !dev_ok(value) {
                            return Err(MapError::Invalid {
                                what: "no interface with this ifindex",
                            });
                        }
                        let Some(ix) = &self.devidx else {
                            return h.update(key, src, None, flags);
                        };
                        // The index changes under its lock with the hash, in
                        // the same order; only once the hash took the update.
                        let mut w = ix.lock();
                        let mut word = [0u8; 8];
                        word[..value.len()].copy_from_slice(value);
                        let e = ix.prepare(&mut w, u32_of(key), u64::from_ne_bytes(word))?;
                        match h.update(key, src, None, flags) {
                            Ok(()) => {
                                ix.commit(&mut w, u32_of(key), e);
                                Ok(())
                            }
                            Err(err) => {
                                ix.cancel(e);
                                Err(err)
                            }
                        }
                    }
                    _ => h.update(key, src, None, flags),
                }
            }
            Imp::Lpm(l) => l.update(key, value, flags),
            Imp::Queue(q) => q.push(value, flags),
            Imp::Ring(_) => Err(self.unsupported("update")),
            Imp::Slots(s) => {
                let i = u32_of(key);
                if self.def.map_type == MapType::Devmap {
                    if flags > update_flags::EXIST {
                        return bad_flags();
                    }
                    if i >= s.max_entries() {
                        return Err(MapError::OutOfRange {
                            index: i,
                            max_entries: s.max_entries(),
                        });
                    }
                    if flags == update_flags::NOEXIST {
                        return Err(MapError::Exists);
                    }
                    if u32_of(value) == 0 {
                        if value.len() == 8 && u32_of(&value[4..]) != 0 {
                            return Err(MapError::Invalid {
                                what: "devmap program without an ifindex",
                            });
                        }
                        s.clear(i, true)?;
                        return Ok(());
                    }
                    if !dev_ok(value) {
                        return Err(MapError::Invalid {
                            what: "no interface with this ifindex",
                        });
                    }
                    return s.set(i, value, None);
                }
                if flags != update_flags::ANY {
                    return bad_flags();
                }
                if i >= s.max_entries() {
                    return Err(MapError::OutOfRange {
                        index: i,
                        max_entries: s.max_entries(),
                    });
                }
                let obj = if self.def.map_type == MapType::ArrayOfMaps {
                    Some(self.resolve_inner(value)?)
                } else {
                    None
                };
                s.set(i, value, obj)
            }
        }
    }

    /// The map an outer map's value names, checked against the template.
    fn resolve_inner(&self, value: &[u8]) -> Result<Arc<Map>, MapError> {
        let id = u32_of(value);
        let map = self
            .registry
            .upgrade()
            .and_then(|r| r.get(MapId(id)))
            .ok_or(MapError::BadId { id })?;
        let tmpl = self.def.inner.as_deref().ok_or(MapError::Invalid {
            what: "no inner map template",
        })?;
        if !validate::inner_compatible(tmpl, &map.def) {
            return Err(MapError::Invalid {
                what: "inner map does not match the outer map's template",
            });
        }
        Ok(map)
    }

    /// `BPF_MAP_DELETE_ELEM`. Arrays, queues and stacks give `EINVAL`.
    pub fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.writable()?;
        self.check_key(key)?;
        self.delete_any(key)
    }

    fn delete_any(&self, key: &[u8]) -> Result<(), MapError> {
        match &self.imp {
            Imp::Array(_) | Imp::Queue(_) => Err(MapError::Invalid {
                what: "delete on an array, queue or stack",
            }),
            Imp::Hash(h) => match &self.devidx {
                Some(ix) => {
                    let mut w = ix.lock();
                    h.delete(key)?;
                    ix.remove(&mut w, u32_of(key));
                    Ok(())
                }
                None => h.delete(key),
            },
            Imp::Lpm(l) => l.delete(key),
            Imp::Ring(_) => Err(self.unsupported("delete")),
            Imp::Slots(s) => {
                let devmap = self.def.map_type == MapType::Devmap;
                let filled = s.clear(u32_of(key), devmap)?;
                if !filled && self.def.map_type != MapType::Devmap {
                    return Err(MapError::NotFound);
                }
                Ok(())
            }
        }
    }

    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`: pop for queues and stacks (empty
    /// key), remove-and-return for the hash family; `ENOTSUPP` otherwise.
    pub fn lookup_and_delete(&self, key: &[u8]) -> Result<Vec<u8>, MapError> {
        self.readable()?;
        self.writable()?;
        self.check_key(key)?;
        let mut out = vec![0u8; self.value_buf_len()];
        match (&self.imp, self.def.map_type) {
            (Imp::Queue(q), _) => q.pop(&mut out, true)?,
            (
                Imp::Hash(h),
                MapType::Hash | MapType::PercpuHash | MapType::LruHash | MapType::LruPercpuHash,
            ) => h.take(key, &mut out)?,
            _ => return Err(self.unsupported("lookup_and_delete")),
        }
        Ok(out)
    }

    /// `BPF_MAP_GET_NEXT_KEY`: the key after `key`, or the first key for
    /// `None`; `ENOENT` after the last. Orders: arrays by index (an index
    /// past the end restarts at 0); hashes by bucket (stable while
    /// unchanged; an absent key restarts from the first, as in the
    /// kernel); LPM tries in the kernel's post-order (more specific
    /// prefixes first; an absent key restarts). Queues and stacks give
    /// `EINVAL`, ring buffers `ENOTSUPP`.
    pub fn get_next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, MapError> {
        self.readable()?;
        if let Some(k) = key {
            self.check_key(k)?;
        }
        match &self.imp {
            Imp::Array(a) => a.next_key(key).map(|i| i.to_ne_bytes().to_vec()),
            Imp::Slots(s) => {
                let n = s.max_entries();
                match key.map(u32_of) {
                    Some(i) if i < n && i + 1 == n => Err(MapError::NotFound),
                    Some(i) if i < n => Ok((i + 1).to_ne_bytes().to_vec()),
                    _ => Ok(0u32.to_ne_bytes().to_vec()),
                }
            }
            Imp::Hash(h) => h.next_key(key),
            Imp::Lpm(l) => l.next_key(key),
            Imp::Queue(_) => Err(MapError::Invalid {
                what: "queues and stacks have no keys",
            }),
            Imp::Ring(_) => Err(self.unsupported("get_next_key")),
        }
    }

    /// Every (key, value) that `bpftool map dump` would list, in
    /// [`Map::get_next_key`] order: all indexes of arrays, the filled slots
    /// of prog/map/dev arrays, the keys present otherwise. Empty for
    /// queues, stacks and ring buffers.
    pub fn entries(&self) -> Result<Vec<Entry>, MapError> {
        let mut out = Vec::new();
        if matches!(self.imp, Imp::Queue(_) | Imp::Ring(_))
            || self.def.map_type == MapType::PerfEventArray
        {
            return Ok(out);
        }
        let mut prev: Option<Vec<u8>> = None;
        // Bounded: a concurrent writer cannot make this loop forever.
        for _ in 0..=self.def.max_entries as usize * 2 + 1 {
            let k = match self.get_next_key(prev.as_deref()) {
                Ok(k) => k,
                Err(MapError::NotFound) => break,
                Err(e) => return Err(e),
            };
            match self.lookup(&k) {
                Ok(v) => out.push((k.clone(), v)),
                Err(MapError::NotFound) => {}
                Err(e) => return Err(e),
            }
            prev = Some(k);
        }
        Ok(out)
    }

    // ---------------------------------------------------------------
    // Program side
    // ---------------------------------------------------------------

    /// Whether [`Map::lookup_ptr`] is the whole of a program's lookup in
    /// this map and its value is in an element of its own: the hash maps
    /// (plain, LRU, per-CPU, LRU per-CPU) and the LPM trie, the maps a
    /// lookup helper may take first, before its search for arrays, slot
    /// maps and maps of maps.
    #[inline]
    pub fn is_hashed(&self) -> bool {
        matches!(
            self.def.map_type,
            MapType::Hash
                | MapType::LruHash
                | MapType::PercpuHash
                | MapType::LruPercpuHash
                | MapType::LpmTrie
        )
    }

    /// [`Map::lookup_ptr`] for a map that [`Map::is_hashed`] with a key of
    /// `key_size` bytes (the caller's promise; a key of another length
    /// finds nothing): the map's own search and nothing else.
    #[inline(always)]
    pub fn lookup_hashed<'g>(
        &'g self,
        key: &[u8],
        cpu: usize,
        guard: &'g RunGuard,
    ) -> Option<ValueRef<'g>> {
        if cpu >= self.ncpus {
            return None;
        }
        match &self.imp {
            Imp::Hash(h) => h.lookup_ptr(key, cpu, guard),
            Imp::Lpm(l) => l.lookup_ptr(key, guard),
            _ => None,
        }
    }

    /// `bpf_map_lookup_elem` from a program running on `cpu`: the value in
    /// place (for per-CPU maps, `cpu`'s slot), valid until `guard` is
    /// dropped; for a `devmap_hash`, the entry, which programs may only
    /// read (see [`Map::dev_value`]). `None` when absent, for a key of the
    /// wrong size, a `cpu` out of range, or a map type whose values
    /// programs cannot address (use the dedicated calls below for those).
    #[inline]
    pub fn lookup_ptr<'g>(
        &'g self,
        key: &[u8],
        cpu: usize,
        guard: &'g RunGuard,
    ) -> Option<ValueRef<'g>> {
        if key.len() != self.def.key_size as usize || cpu >= self.ncpus {
            return None;
        }
        match (&self.imp, self.def.map_type) {
            (Imp::Array(a), _) => a.lookup_ptr(key, cpu),
            // With an index, a devmap_hash's entries are the index's.
            (Imp::Hash(_), MapType::DevmapHash) if self.devidx.is_some() => {
                self.dev_value_gen(key, guard).map(|(v, _)| v)
            }
            // devmap_hash too (its elements are replaced on update, never
            // per-CPU): one call of `Hash::lookup_ptr` for every hash, so
            // that the compiler keeps it inlined here.
            (Imp::Hash(h), t) if t != MapType::HashOfMaps => h.lookup_ptr(key, cpu, guard),
            (Imp::Lpm(l), _) => l.lookup_ptr(key, guard),
            _ => None,
        }
    }

    /// `bpf_map_update_elem` from a program running on `cpu`: `value` is
    /// `value_size` bytes (per-CPU maps: stored in `cpu`'s slot; a new
    /// per-CPU element has the other slots zeroed). Queues and stacks push.
    pub fn prog_update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: usize,
    ) -> Result<(), MapError> {
        self.prog_writable()?;
        self.check_key(key)?;
        self.check_value(value, self.def.value_size as usize)?;
        if cpu >= self.ncpus {
            return Err(MapError::Invalid { what: "CPU index" });
        }
        // BPF_F_LOCK is refused by each map type at its own point (arrays
        // only after the index and BPF_NOEXIST checks), as in the kernel.
        // The map types programs update per packet go straight to their
        // storage, with the checks `update_any` makes for them and nothing
        // of its generic dispatch (device map values, inner maps).
        let t = self.def.map_type;
        match &self.imp {
            Imp::Hash(h)
                if matches!(
                    t,
                    MapType::Hash | MapType::LruHash | MapType::PercpuHash | MapType::LruPercpuHash
                ) =>
            {
                if flags > update_flags::EXIST {
                    return Err(MapError::Invalid {
                        what: "update flags",
                    });
                }
                let src = if t.is_percpu() {
                    Src::Cpu(cpu, value)
                } else {
                    Src::All(value)
                };
                h.update(key, src, None, flags)
            }
            Imp::Array(a) => {
                if flags & !update_flags::LOCK > update_flags::EXIST {
                    return Err(MapError::Invalid {
                        what: "update flags",
                    });
                }
                a.update(key, value, flags, t.is_percpu().then_some(cpu))
            }
            _ => match t {
                MapType::ProgArray | MapType::ArrayOfMaps | MapType::HashOfMaps => {
                    Err(MapError::Invalid {
                        what: "programs cannot update prog arrays or map-in-maps",
                    })
                }
                t if t.is_percpu() => self.update_any(key, value, flags, Some(cpu)),
                _ => self.update_any(key, value, flags, None),
            },
        }
    }

    /// `bpf_map_delete_elem` from a program.
    pub fn prog_delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.prog_writable()?;
        self.check_key(key)?;
        self.delete_any(key)
    }

    /// `bpf_map_push_elem` (queues, stacks): `flags` `BPF_EXIST` overwrites
    /// the oldest value when full.
    pub fn push(&self, value: &[u8], flags: u64) -> Result<(), MapError> {
        self.prog_writable()?;
        self.check_value(value, self.def.value_size as usize)?;
        match &self.imp {
            Imp::Queue(q) => q.push(value, flags),
            _ => Err(self.unsupported("push")),
        }
    }

    /// `bpf_map_pop_elem`: removes the next value into `out`.
    pub fn pop(&self, out: &mut [u8]) -> Result<(), MapError> {
        self.prog_writable()?;
        self.check_value(out, self.def.value_size as usize)?;
        match &self.imp {
            Imp::Queue(q) => q.pop(out, true),
            _ => Err(self.unsupported("pop")),
        }
    }

    /// `bpf_map_peek_elem`: copies the next value into `out`.
    pub fn peek(&self, out: &mut [u8]) -> Result<(), MapError> {
        self.check_value(out, self.def.value_size as usize)?;
        match &self.imp {
            Imp::Queue(q) => q.pop(out, false),
            _ => Err(self.unsupported("peek")),
        }
    }

    fn ring(&self) -> Result<&RingBuf, MapError> {
        match &self.imp {
            Imp::Ring(r) => Ok(r),
            _ => Err(self.unsupported("ring buffer operation")),
        }
    }

    /// `bpf_ringbuf_reserve`: `size` bytes of record data in place, `None`
    /// where the kernel returns NULL (flags not 0, too big, no room). Pass
    /// the record's [`ValueRef::addr`] to [`Map::ringbuf_submit`] or
    /// [`Map::ringbuf_discard`] before the run ends.
    #[inline]
    pub fn ringbuf_reserve<'g>(
        &'g self,
        size: u64,
        flags: u64,
        _guard: &'g RunGuard,
    ) -> Option<ValueRef<'g>> {
        self.ring().ok()?.reserve(size, flags)
    }

    /// `bpf_ringbuf_submit` of the record whose data starts at `addr`.
    pub fn ringbuf_submit(&self, addr: u64, _flags: u64) -> Result<(), MapError> {
        self.ring()?.commit(addr, false)
    }

    /// `bpf_ringbuf_discard` of the record whose data starts at `addr`.
    pub fn ringbuf_discard(&self, addr: u64, _flags: u64) -> Result<(), MapError> {
        self.ring()?.commit(addr, true)
    }

    /// `bpf_ringbuf_output`: reserve, copy, submit; `EAGAIN` when full.
    #[inline]
    pub fn ringbuf_output(&self, data: &[u8], flags: u64) -> Result<(), MapError> {
        self.ring()?.output(data, flags)
    }

    /// What [`Map::ringbuf_output`] of `size` bytes with `flags` answers
    /// before it needs the data: `Some` error for bad flags or a record
    /// that cannot fit now (the lock-free full test of
    /// `bpf_ringbuf_reserve`), `None` when the output may go on or this is
    /// not a ring buffer (then `ringbuf_output` says why).
    #[inline]
    pub fn ringbuf_output_refused(&self, size: u64, flags: u64) -> Option<MapError> {
        match &self.imp {
            Imp::Ring(r) => r.output_refused(size, flags),
            _ => None,
        }
    }

    /// `bpf_ringbuf_query` with a [`ringbuf::query`] flag (0 for others).
    #[inline]
    pub fn ringbuf_query(&self, flags: u64) -> u64 {
        self.ring().map_or(0, |r| r.query(flags))
    }

    /// The consumer side of a ring buffer: calls `f` on each submitted
    /// record's data in order (skipping discarded ones) and frees them;
    /// returns the number of records seen.
    pub fn ringbuf_consume(&self, f: impl FnMut(&[u8])) -> Result<usize, MapError> {
        Ok(self.ring()?.consume(f))
    }

    /// `bpf_perf_event_output` from a program on `cpu`: appends `data` to
    /// the buffer of slot `flags & BPF_F_INDEX_MASK` (`BPF_F_CURRENT_CPU`
    /// for `cpu`'s slot). `E2BIG` past `max_entries`, `ENOENT` for a slot
    /// the control side has not filled, `EINVAL` for other flag bits.
    pub fn perf_event_output(&self, cpu: usize, flags: u64, data: &[u8]) -> Result<(), MapError> {
        let (s, index) = self.perf_slot(cpu, flags)?;
        s.perf_push(index, data.len(), || data.to_vec())
    }

    /// [`Map::perf_event_output`] with a record the caller built: it is
    /// kept as it is (no copy), or dropped when the buffer is full.
    pub fn perf_event_output_vec(
        &self,
        cpu: usize,
        flags: u64,
        data: Vec<u8>,
    ) -> Result<(), MapError> {
        let (s, index) = self.perf_slot(cpu, flags)?;
        s.perf_push(index, data.len(), || data)
    }

    /// [`Map::perf_event_output`] with a record of `len` bytes that `make`
    /// builds only if the buffer has room for it: a full buffer counts the
    /// record lost without building it (the per-packet cost of a program
    /// whose consumer lags). An error of `make` is the outer one (nothing
    /// queued); the map's own errors are the inner one.
    pub fn perf_event_output_with<E>(
        &self,
        cpu: usize,
        flags: u64,
        len: usize,
        make: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Result<(), MapError>, E> {
        match self.perf_slot(cpu, flags) {
            Ok((s, index)) => s.perf_push_with(index, len, make),
            Err(e) => Ok(Err(e)),
        }
    }

    /// The slots and buffer index `bpf_perf_event_output` writes to.
    fn perf_slot(&self, cpu: usize, flags: u64) -> Result<(&Slots, u32), MapError> {
        let Imp::Slots(s) = &self.imp else {
            return Err(self.unsupported("perf_event_output"));
        };
        if self.def.map_type != MapType::PerfEventArray {
            return Err(self.unsupported("perf_event_output"));
        }
        if flags & !BPF_F_INDEX_MASK != 0 {
            return Err(MapError::Invalid {
                what: "perf_event_output flags",
            });
        }
        let index = match flags & BPF_F_INDEX_MASK {
            BPF_F_CURRENT_CPU => cpu as u64,
            i => i,
        };
        if index >= s.max_entries() as u64 {
            return Err(MapError::OutOfRange {
                index: index as u32,
                max_entries: s.max_entries(),
            });
        }
        Ok((s, index as u32))
    }

    /// Takes the records that programs sent to perf buffer `index`.
    pub fn perf_drain(&self, index: u32) -> PerfDrain {
        match &self.imp {
            Imp::Slots(s) => s.perf_drain(index),
            _ => PerfDrain::default(),
        }
    }

    /// The redirect target of a `devmap`/`devmap_hash` entry
    /// (`bpf_redirect_map`), `None` when absent.
    pub fn redirect_target(&self, key: u32) -> Option<DevTarget> {
        match (&self.imp, self.def.map_type) {
            (Imp::Slots(s), MapType::Devmap) => Some(self.dev_target(s.value(key)?)),
            (Imp::Hash(_), MapType::DevmapHash) => self.redirect_target_in(key, &crate::pin()),
            _ => None,
        }
    }

    /// [`Map::redirect_target`] from a run, whose `guard` protects the
    /// `devmap_hash` element read (no pin of its own, no copy through a
    /// buffer: the element is one word).
    #[inline]
    pub fn redirect_target_in(&self, key: u32, guard: &RunGuard) -> Option<DevTarget> {
        let v = match (&self.imp, self.def.map_type) {
            (Imp::Slots(s), MapType::Devmap) => s.value(key)?,
            // With an index too: the hash holds the same values (both
            // change under the index's lock, the hash first; the change
            // count that `redirect_target_gen` reads is bumped after both).
            (Imp::Hash(h), MapType::DevmapHash) => {
                let e = h.find(&key.to_ne_bytes(), guard)?;
                let w = e.words.first()?.load(std::sync::atomic::Ordering::Relaxed);
                // A 4-byte value is the word's first 4 bytes; the rest of
                // the word is not part of it.
                let mut v = w.to_ne_bytes();
                if self.def.value_size < 8 {
                    v[4..].fill(0);
                }
                v
            }
            _ => return None,
        };
        Some(self.dev_target(v))
    }

    /// [`Map::redirect_target_in`] with the [`Map::slot_generation`] read
    /// before the entry: while the count still reads the same, no change
    /// was made since and the target stands (the run's redirect memo).
    /// `None` when absent; no count when the map keeps none.
    #[inline]
    pub fn redirect_target_gen(
        &self,
        key: u32,
        guard: &RunGuard,
    ) -> Option<(DevTarget, Option<u64>)> {
        let gen = self.redirect_generation(key);
        Some((self.redirect_target_in(key, guard)?, gen))
    }

    /// [`Map::slot_generation`] of a 4-byte key of a `devmap` or
    /// `devmap_hash` (the count [`Map::redirect_target_gen`] gives), with
    /// no key bytes to check: for `bpf_redirect_map`'s memo.
    #[inline]
    pub fn redirect_generation(&self, key: u32) -> Option<u64> {
        match (&self.imp, &self.devidx) {
            (Imp::Slots(s), _) => s.generation(key),
            (Imp::Hash(_), Some(ix)) => Some(ix.changes()),
            (Imp::Hash(h), None) if self.def.key_size == 4 => h.changes(),
            _ => None,
        }
    }

    /// A device map value (`struct bpf_devmap_val`'s first 8 bytes, or
    /// the 4-byte ifindex) as a redirect target.
    fn dev_target(&self, v: [u8; 8]) -> DevTarget {
        let prog = u32_of(&v[4..]);
        DevTarget {
            ifindex: u32_of(&v),
            prog: (self.def.value_size == 8 && prog != 0).then_some(ProgId(prog)),
        }
    }

    /// `bpf_map_lookup_elem` on a `devmap` or `devmap_hash`: the entry's
    /// `struct bpf_devmap_val` in place, valid until `guard` is dropped,
    /// which programs may only read (the kernel's verifier makes device
    /// map values read-only; engines register it read-only). While the
    /// entry is unchanged every lookup gives the same pointer; an update
    /// replaces the element, so a pointer taken before keeps the old value
    /// and a later lookup gives a new pointer, as in the kernel. `None`
    /// when absent, for a key of the wrong size, and for other map types.
    #[inline]
    pub fn dev_value<'g>(&'g self, key: &[u8], guard: &'g RunGuard) -> Option<ValueRef<'g>> {
        match self.def.map_type {
            MapType::Devmap => self.dev_value_gen(key, guard).map(|(v, _)| v),
            MapType::DevmapHash if self.devidx.is_some() => {
                self.dev_value_gen(key, guard).map(|(v, _)| v)
            }
            MapType::DevmapHash => self.lookup_ptr(key, 0, guard),
            _ => None,
        }
    }

    /// [`Map::dev_value`] with the [`Map::slot_generation`] the entry was
    /// found under (for a `devmap_hash`, the map's change count read
    /// before the lookup).
    #[inline]
    pub fn dev_value_gen<'g>(
        &'g self,
        key: &[u8],
        guard: &'g RunGuard,
    ) -> Option<(ValueRef<'g>, u64)> {
        match (&self.imp, self.def.map_type) {
            (Imp::Slots(s), MapType::Devmap) if key.len() == 4 => s.value_ref(u32_of(key), guard),
            (Imp::Hash(_), MapType::DevmapHash) if key.len() == 4 && self.devidx.is_some() => {
                let ix = self.devidx.as_ref()?;
                let gen = ix.changes();
                let addr = ix.find(u32_of(key), guard)?;
                let words = ix.entry_words(addr);
                Some((ValueRef::new(words, self.def.value_size as usize), gen))
            }
            (Imp::Hash(h), MapType::DevmapHash) if key.len() == self.def.key_size as usize => {
                let gen = h.changes()?;
                Some((h.lookup_ptr(key, 0, guard)?, gen))
            }
            _ => None,
        }
    }

    /// For the array-like maps of references (`devmap`, `array_of_maps`,
    /// `prog_array`, `perf_event_array`), a count of the changes made to
    /// slot `key` (filled, refilled, emptied), read without a lock. While
    /// it reads what [`Map::dev_value_gen`] or [`Map::inner_map_gen`] gave
    /// with a lookup, the slot still holds what that lookup found (the same
    /// element, the same inner map), so a run may reuse the result. `None`
    /// for other map types, a key of the wrong size or an index past the
    /// end.
    #[inline]
    pub fn slot_generation(&self, key: &[u8]) -> Option<u64> {
        match &self.imp {
            Imp::Slots(s) if key.len() == 4 => s.generation(u32_of(key)),
            // `hash_of_maps` and `devmap_hash`: no count per key, the
            // map's count of changes (any key), which stands for every key.
            // (A `devmap_hash` with an index: its count, which its lookups
            // read.)
            Imp::Hash(h) if key.len() == self.def.key_size as usize => match &self.devidx {
                Some(ix) => Some(ix.changes()),
                None => h.changes(),
            },
            _ => None,
        }
    }

    /// The program in slot `index` of a `prog_array` (`bpf_tail_call`).
    pub fn prog_at(&self, index: u32) -> Option<ProgId> {
        match (&self.imp, self.def.map_type) {
            (Imp::Slots(s), MapType::ProgArray) => s.value(index).map(|v| ProgId(u32_of(&v))),
            _ => None,
        }
    }

    /// `bpf_for_each_map_elem` from a program on `cpu`: calls
    /// `f(key, value)` for each element (arrays: every index; per-CPU maps:
    /// `cpu`'s slot) in [`Map::get_next_key`] order until `f` returns
    /// false, and returns the number of calls, as the helper does. No lock
    /// is held while `f` runs, so it may update or delete elements. Other
    /// map types: 0 calls (the kernel's verifier refuses them).
    pub fn for_each_elem<'g>(
        &'g self,
        cpu: usize,
        guard: &'g RunGuard,
        mut f: impl FnMut(&[u8], ValueRef<'g>) -> bool,
    ) -> u64 {
        match (&self.imp, self.def.map_type) {
            (Imp::Array(a), _) => {
                let mut n = 0;
                for i in 0..self.def.max_entries {
                    let key = i.to_ne_bytes();
                    let Some(v) = a.lookup_ptr(&key, cpu) else {
                        break;
                    };
                    n += 1;
                    if !f(&key, v) {
                        break;
                    }
                }
                n
            }
            (Imp::Hash(h), t) if !matches!(t, MapType::HashOfMaps | MapType::DevmapHash) => {
                h.for_each(cpu, guard, f)
            }
            _ => 0,
        }
    }

    /// The inner map of a map-in-map (`bpf_map_lookup_elem` on an
    /// `array_of_maps` or `hash_of_maps`), valid until `guard` is dropped
    /// even if the slot is replaced meanwhile.
    pub fn inner_map<'g>(&'g self, key: &[u8], guard: &'g RunGuard) -> Option<&'g Map> {
        self.inner_map_gen(key, guard).map(|(m, _)| m)
    }

    /// [`Map::inner_map`] with the [`Map::slot_generation`] it was found
    /// under (for a `hash_of_maps`, the map's change count read before
    /// the lookup).
    pub fn inner_map_gen<'g>(
        &'g self,
        key: &[u8],
        guard: &'g RunGuard,
    ) -> Option<(&'g Map, Option<u64>)> {
        if key.len() != self.def.key_size as usize {
            return None;
        }
        match (&self.imp, self.def.map_type) {
            (Imp::Slots(s), MapType::ArrayOfMaps) => {
                s.inner(u32_of(key), guard).map(|(m, g)| (m, Some(g)))
            }
            (Imp::Hash(h), MapType::HashOfMaps) => {
                let gen = h.changes();
                h.find(key, guard)?
                    .obj
                    .as_ref()
                    .map(|m| (m.get(guard), gen))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
