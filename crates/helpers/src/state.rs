//! Per-run state that helpers reach through
//! [`HelperEnv::data_mut`](bpfkit_runtime::HelperEnv::data_mut).

use bpfkit_maps::{map_flags, pin, Map, MapId, MapRegistry, MapType, ProgId, RunGuard};
use bpfkit_runtime::{Memory, RedirectRecord, RegionKind};
use std::sync::Arc;

/// The maps a program may name, by the address its `lddw` loaded (the
/// embedder's choice; `bpfkit` uses the address of the `Map` itself), and
/// the registry that resolves inner maps of map-in-maps.
#[derive(Debug, Default)]
pub struct MapTable {
    /// (address, map), few entries: a linear scan beats hashing.
    by_addr: Vec<(u64, Arc<Map>)>,
    registry: Option<MapRegistry>,
}

impl MapTable {
    /// An empty table whose inner maps resolve through `registry`.
    pub fn new(registry: Option<MapRegistry>) -> MapTable {
        MapTable {
            by_addr: Vec::new(),
            registry,
        }
    }

    /// The address a program sees for `map`: the `Map`'s own address,
    /// which is never a guest region, so a program cannot dereference it.
    pub fn addr_of(map: &Arc<Map>) -> u64 {
        Arc::as_ptr(map) as u64
    }

    /// Adds `map` and returns its address.
    pub fn insert(&mut self, map: Arc<Map>) -> u64 {
        let addr = MapTable::addr_of(&map);
        if self.get(addr).is_none() {
            self.by_addr.push((addr, map));
        }
        addr
    }

    /// The map at `addr`.
    pub fn get(&self, addr: u64) -> Option<&Arc<Map>> {
        self.position(addr).map(|i| &self.by_addr[i].1)
    }

    /// The index of the map at `addr` (in insertion order).
    #[inline]
    pub(crate) fn position(&self, addr: u64) -> Option<usize> {
        self.by_addr.iter().position(|(a, _)| *a == addr)
    }

    /// [`MapTable::position`], trying index `hint` first (what an engine
    /// passes for a map it resolved when compiling,
    /// `bpfkit_runtime::Imm64Resolver::table_index`; anything, where no
    /// engine set it): taken only when that entry is the map at `addr`.
    /// Gives the map too (no second bounds check).
    #[inline(always)]
    pub(crate) fn position_hinted(&self, addr: u64, hint: u64) -> Option<(usize, &Arc<Map>)> {
        let h = usize::try_from(hint).unwrap_or(usize::MAX);
        match self.by_addr.get(h) {
            Some((a, m)) if *a == addr => Some((h, m)),
            _ => {
                let i = self.position(addr)?;
                Some((i, &self.by_addr[i].1))
            }
        }
    }

    /// The map at index `i` (see [`MapTable::position`]).
    #[inline]
    pub(crate) fn at(&self, i: usize) -> &Arc<Map> {
        &self.by_addr[i].1
    }

    /// The registry of inner maps.
    pub fn registry(&self) -> Option<&MapRegistry> {
        self.registry.as_ref()
    }
}

/// The XDP buffer of a run, as the kernel's `struct xdp_buff` keeps it:
/// guest addresses of the frame start (`data_hard_start`), metadata,
/// packet data and end, the frame size, and where the program's `struct
/// xdp_md` lives (its `data`, `data_end` and `data_meta` fields are
/// rewritten when a helper moves them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpBuff {
    /// `data_hard_start`: first byte of the frame.
    pub hard_start: u64,
    /// Frame size in bytes (`frame_sz`, a page for `BPF_PROG_TEST_RUN`).
    pub frame_sz: u64,
    /// `data_meta`.
    pub meta: u64,
    /// `data`.
    pub data: u64,
    /// `data_end`.
    pub end: u64,
    /// Guest address of the `struct xdp_md` the program reads.
    pub ctx: u64,
}

/// Where `bpf_redirect`/`bpf_redirect_map` asked the packet to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// `bpf_redirect(ifindex, 0)`.
    Ifindex(u32),
    /// `bpf_redirect_map` to a devmap entry: the interface index.
    Devmap {
        /// The devmap's id.
        map: Option<MapId>,
        /// The key.
        key: u32,
        /// The interface it holds.
        ifindex: u32,
    },
    /// `bpf_redirect_map` with `BPF_F_BROADCAST`.
    Broadcast {
        /// The devmap's id.
        map: Option<MapId>,
    },
    /// `bpf_redirect_map` to another map type (xskmap, cpumap): the key.
    Other {
        /// The map's id.
        map: Option<MapId>,
        /// The key.
        key: u32,
    },
}

/// Everything helpers keep for one program run (with its tail calls).
pub struct RunState {
    guard: RunGuard,
    /// Maps the program may name.
    pub maps: Arc<MapTable>,
    /// Inner maps handed out in this run, by the address the program got.
    pub(crate) inner: Vec<(u64, Arc<Map>)>,
    /// Ring buffer records reserved in this run: data address -> the
    /// program's address of the map (of the table, or an inner map this
    /// state keeps).
    pub(crate) reserved: Vec<(u64, u64)>,
    /// Per map of the table (same order): for a plain or per-CPU array
    /// whose storage (or a devmap whose entries) [`RunState::add_map_regions`]
    /// registered as a region of the run's memory, where its values are,
    /// so that a lookup is an index computation or one load of a slot's
    /// word (no map dispatch, no region search).
    pub(crate) arrays: Vec<Option<ArrayView>>,
    /// The last values helpers registered as regions: (address, region
    /// index), newest last, at most [`EXPOSED_KEPT`].
    exposed: Vec<(u64, usize)>,
    /// What lookups in slot maps (devmap entries, inner maps of arrays of
    /// maps) found in this run, with the slot's change count then: while
    /// the count is unchanged, the same lookup gives the same answer
    /// without the slot's lock. At most [`EXPOSED_KEPT`], newest last.
    slot_memo: Vec<SlotMemo>,
    /// The CPU number the run is on (below the maps' possible CPUs).
    pub cpu: usize,
    /// The XDP buffer, for XDP programs.
    pub xdp: Option<XdpBuff>,
    /// The region of the run's memory where the XDP helpers last rewrote
    /// the context's fields (a hint, checked at each use: 0, where
    /// `XdpRunner` puts the context).
    pub(crate) ctx_region: usize,
    /// The fragments of a multi-buffer XDP packet after the linear part
    /// (the kernel's `skb_shared_info` frags, one page at most each, at
    /// most [`MAX_SKB_FRAGS`]); programs reach them only through helpers.
    pub frags: Vec<Vec<u8>>,
    /// Lines printed by `bpf_trace_printk` (without a trailing newline).
    pub trace: Vec<String>,
    /// `bpf_trace_printk` formats parsed in this run.
    pub(crate) printk: crate::printk::ParseCache,
    /// The program a successful `bpf_tail_call` asked for; the embedder
    /// runs it next with the same context and clears this.
    pub tail_call: Option<ProgId>,
    /// Tail calls taken so far in this run (the kernel allows
    /// [`MAX_TAIL_CALL_CNT`]).
    pub tail_calls: u32,
    /// The last redirect target set.
    pub redirect: Option<Redirect>,
    /// The last device map target `bpf_redirect_map` found: (map address,
    /// key, [`bpfkit_maps::Map::slot_generation`] then, target). While the
    /// count reads the same the entry is unchanged, so a repeat redirect
    /// skips the map's search (the same packet path redirects each run).
    pub(crate) redirect_memo: Option<(u64, u32, u64, bpfkit_maps::DevTarget)>,
    /// What a `bpf_redirect_map` that generated code answered itself
    /// wrote (`bpfkit_runtime::Imm64Resolver::redirect_map`): when `set`,
    /// the run's redirect is that, not [`RunState::redirect`], until
    /// [`RunState::settle_redirect`]. Helpers that set the redirect clear
    /// `set` (the last redirect of the run wins).
    redirect_rec: RedirectRecord,
    /// Where time helpers read the time.
    pub clock: crate::Clock,
    /// Address of the `Memory` of the running [`RunState::scoped`] call
    /// (0 outside it): the only memory helpers may add regions to, since
    /// only it is dropped before the epoch guard.
    run_mem: usize,
    /// xorshift64* state, 0 until the first draw (`seed` never gives 0).
    rng: u64,
    /// `bpf_for_each_map_elem` calls in progress (`crate::callbacks`).
    pub(crate) for_each: crate::callbacks::ForEach,
    /// Per map of the table (same order; the first [`HAND_MEMO_MAPS`],
    /// kept in place: no allocation per run state): the value a lookup in
    /// it last handed out, and the [`Memory::version`] of the run's memory when that
    /// value's region was known to be in it. While the memory's version
    /// reads the same, its region list is the same (versions change with
    /// every region added and every clear, and no two memories share one),
    /// so the region is still there; the map fixes the length and the
    /// write access the value needs. A repeat hit is two compares instead
    /// of [`RunState::last_exposed`]'s search of the region list. Last in
    /// the struct: declared after `exposed`, it moved fields that every
    /// helper reads, and xdp_router_ipv4 (whose lookups miss, same host
    /// instructions) measured 13-14 ns instead of 12-13.
    hand_memo: [(u64, u64); HAND_MEMO_MAPS],
}

/// Where the values of an array of the map table are in the run's memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArrayView {
    /// The index of its storage's region in the run's memory.
    region: usize,
    /// The storage's address.
    base: u64,
    /// Bytes per value (per CPU for per-CPU arrays): `value_size` rounded
    /// up to 8.
    stride: u64,
    max_entries: u32,
    /// The map's possible CPUs.
    cpus: usize,
    kind: View,
}

/// What an [`ArrayView`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum View {
    /// A plain array: index `i` is value `i`.
    Array,
    /// A `percpu_array`: index `i` on CPU `c` is value `i * cpus + c`.
    PercpuArray,
    /// A devmap's entries (`Map::devmap_layout`): a lookup loads the
    /// slot's word (`Map::devmap_entry_addr`).
    Devmap,
    /// A devmap_hash's entries (`Map::devhash_layout`): a lookup probes
    /// its table (`Map::devhash_entry_addr`).
    Devhash,
}

/// A lookup in a slot map that a run may answer again (see
/// [`RunState::slot_memo`]).
#[derive(Clone, Copy, Debug)]
struct SlotMemo {
    /// The map's program-visible address.
    map: u64,
    index: u32,
    /// [`bpfkit_maps::Map::slot_generation`] when the lookup was made.
    gen: u64,
    /// What the program got.
    addr: u64,
    /// For a value (devmap entry): the index of its region in the run's
    /// memory, which must still be there; `None` for an inner map's
    /// address, which is no region.
    region: Option<usize>,
}

/// Values whose regions [`RunState`] remembers (a program's lookups per
/// run are usually fewer).
const EXPOSED_KEPT: usize = 16;

/// Maps of the table (the first ones) whose last hand-out
/// [`RunState`] remembers (per-packet programs use a few).
const HAND_MEMO_MAPS: usize = 8;

/// The kernel's `MAX_SKB_FRAGS`: fragments of a multi-buffer packet.
pub const MAX_SKB_FRAGS: usize = 17;

/// The kernel's `MAX_TAIL_CALL_CNT`: a run may take 33 tail calls.
pub const MAX_TAIL_CALL_CNT: u32 = 33;

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("cpu", &self.cpu)
            .field("xdp", &self.xdp)
            .field("tail_calls", &self.tail_calls)
            .field("redirect", &self.redirect)
            .finish_non_exhaustive()
    }
}

impl RunState {
    /// Pins the map epoch for a run on `cpu` over the maps of `maps` (see
    /// [`RunState::scoped`], the safe way).
    ///
    /// # Safety
    ///
    /// Helpers register map values (hash elements, ring buffer records,
    /// per-CPU slots) as regions of the run's `Memory`; they stay valid
    /// only while this state (and the epoch it pins) lives. Every `Memory`
    /// passed to a run with this state must therefore be cleared
    /// ([`bpfkit_runtime::Memory::clear`]) or dropped before this state is
    /// dropped, and must not be used by another thread meanwhile.
    #[allow(unsafe_code)]
    unsafe fn new(maps: Arc<MapTable>, cpu: usize) -> RunState {
        RunState {
            guard: pin(),
            maps,
            inner: Vec::new(),
            reserved: Vec::new(),
            arrays: Vec::new(),
            exposed: Vec::new(),
            // Address 0 is no value's and version 0 no memory's.
            hand_memo: [(0, 0); HAND_MEMO_MAPS],
            slot_memo: Vec::new(),
            cpu,
            xdp: None,
            ctx_region: 0,
            frags: Vec::new(),
            trace: Vec::new(),
            printk: Default::default(),
            tail_call: None,
            tail_calls: 0,
            redirect: None,
            redirect_memo: None,
            redirect_rec: RedirectRecord::default(),
            clock: crate::fallback_clock,
            run_mem: 0,
            // Seeded at the first `get_prandom_u32` of the run (most runs
            // never ask; the seed reads the clock).
            rng: 0,
            for_each: Default::default(),
        }
    }

    /// Runs `f` with a fresh state for a run on `cpu` over the maps of
    /// `maps`, and `mem` (the caller's regions: context, packet). The state
    /// pins the map epoch; `mem` is dropped before the state is returned,
    /// so the regions helpers added for map values never outlive the epoch
    /// that keeps those values alive.
    pub fn scoped<'a, R>(
        maps: Arc<MapTable>,
        cpu: usize,
        mut mem: Memory<'a>,
        f: impl FnOnce(&mut Memory<'a>, &mut RunState) -> R,
    ) -> (R, RunState) {
        // SAFETY: `mem` is owned here and dropped before `state` is
        // returned (and so before it can be dropped).
        #[allow(unsafe_code)]
        let mut state = unsafe { RunState::new(maps, cpu) };
        state.run_mem = &mem as *const Memory<'a> as usize;
        let r = f(&mut mem, &mut state);
        drop(mem);
        state.run_mem = 0;
        (r, state)
    }

    /// The record an engine's code writes a `bpf_redirect_map` into
    /// (for `bpfkit_jit::Jit::set_redirect_record`).
    pub fn redirect_record(&mut self) -> &mut RedirectRecord {
        &mut self.redirect_rec
    }

    /// Sets the redirect as a helper does: `redirect`, and the record no
    /// longer counts.
    #[inline(always)]
    pub(crate) fn set_redirect(&mut self, redirect: Option<Redirect>) {
        self.redirect = redirect;
        self.redirect_rec.set = 0;
    }

    /// No redirect (between runs of a series).
    #[inline(always)]
    pub fn clear_redirect(&mut self) {
        self.set_redirect(None);
    }

    /// Makes [`RunState::redirect`] the run's redirect when generated code
    /// answered the last `bpf_redirect_map` (see [`RedirectRecord`]): the
    /// devmap entry's interface read from `mem`, where
    /// [`RunState::add_map_regions`] registered the entries (as the kernel
    /// reads the entry its helper recorded). Call it after the run, before
    /// reading the redirect, while this state's epoch pin still holds the
    /// entry.
    pub fn settle_redirect(&mut self, mem: &Memory<'_>) {
        let rec = std::mem::take(&mut self.redirect_rec);
        if rec.set == 0 {
            return;
        }
        let Some(map) = self.maps.get(rec.map) else {
            self.redirect = None;
            return;
        };
        let (id, key) = (map.id(), rec.key as u32);
        let ifindex = match mem.load::<4>(rec.entry) {
            _ if rec.entry == 0 => None,
            Ok(b) => Some(u32::from_ne_bytes(b)),
            // Not a registered entry (an engine that did not register the
            // devmap's entries): the map's answer now.
            Err(_) => map.redirect_target_in(key, &self.guard).map(|t| t.ifindex),
        };
        self.redirect = ifindex.map(|ifindex| Redirect::Devmap {
            map: id,
            key,
            ifindex,
        });
    }

    /// Registers the whole value storage of every array in the map table
    /// (plain and per-CPU, global data included) as guest regions of
    /// `mem`: read-only for maps created with `BPF_F_RDONLY_PROG`
    /// (`.rodata`). Lookups in these maps then need no new region (on
    /// every CPU), `lddw` value addresses (`MapIdxValue`) point into them,
    /// and pointers that an engine computes itself for a lookup (the JIT's
    /// inline lookups, `bpfkit_runtime::Imm64Resolver::array_map`) are
    /// accepted by helpers as the helper lookup's are. Only the memory of the running
    /// [`RunState::scoped`] call takes regions: for any other, nothing is
    /// added and the result is `false`.
    pub fn add_map_regions(&mut self, mem: &mut Memory<'_>) -> bool {
        if !self.is_run_memory(mem) {
            return false;
        }
        self.arrays.clear();
        self.arrays.reserve(self.maps.by_addr.len());
        for (_, m) in &self.maps.by_addr {
            let before = mem.regions().len();
            // Devmap entries: one read-only region for all of them
            // (`Map::devmap_layout`), so that a lookup's pointer (the
            // helper's or one an engine loads from the slot words,
            // `bpfkit_runtime::Imm64Resolver::slot_map`) needs no region of
            // its own.
            if let Some(d) = m.devmap_layout() {
                let e = d.entries;
                // SAFETY: the entry words live as long as the map, which
                // the table (held by this state) keeps alive; a word a
                // program may hold is not reused before this state's
                // epoch guard is dropped; `mem` is the memory of the
                // running `scoped` call (checked above), dropped before
                // this state. Read-only: programs may not write device
                // map values.
                #[allow(unsafe_code)]
                unsafe {
                    crate::region::expose(mem, RegionKind::MapValue, e.as_ptr(), e.len(), false)
                };
                self.arrays
                    .push((mem.regions().len() > before).then(|| ArrayView {
                        region: before,
                        base: e.addr(),
                        stride: 8,
                        max_entries: d.max_entries,
                        cpus: usize::MAX,
                        kind: View::Devmap,
                    }));
                continue;
            }
            // devmap_hash entries likewise, after the loop.
            if m.devhash_entries().is_some() {
                self.arrays.push(None);
                continue;
            }
            let percpu = m.map_type() == MapType::PercpuArray;
            let mut view = None;
            if let Some(v) = m.array_storage().or_else(|| m.percpu_array_storage()) {
                let writable = m.def().map_flags & map_flags::RDONLY_PROG == 0;
                let len = v.len();
                // SAFETY: the storage of an array lives as long as its map,
                // which the table (held by this state) keeps alive; `mem`
                // is the memory of the running `scoped` call (checked
                // above), which is dropped before this state.
                #[allow(unsafe_code)]
                unsafe {
                    crate::region::expose(mem, RegionKind::MapValue, v.as_ptr(), len, writable)
                };
                // The layout `Map::array_storage` and
                // `Map::percpu_array_storage` document.
                view = (mem.regions().len() > before).then(|| ArrayView {
                    region: before,
                    base: v.addr(),
                    stride: u64::from(m.def().value_size).div_ceil(8) * 8,
                    max_entries: m.def().max_entries,
                    cpus: m.possible_cpus(),
                    kind: if percpu {
                        View::PercpuArray
                    } else {
                        View::Array
                    },
                });
            }
            self.arrays.push(view);
        }
        // The devmap_hash entries (`Map::devhash_layout`,
        // `bpfkit_runtime::Imm64Resolver::devhash_map`): one read-only
        // region per map, after the others, so that a search of the regions
        // for the arrays' values (the interpreter's, checked code's) does
        // not pass them first.
        for (i, (_, m)) in self.maps.by_addr.iter().enumerate() {
            let Some(e) = m.devhash_entries() else {
                continue;
            };
            let before = mem.regions().len();
            // SAFETY: as for the devmap entries above: they live as long as
            // the map, an entry a program may hold is not reused before this
            // state's epoch guard is dropped, and `mem` is the running
            // `scoped` call's. Read-only.
            #[allow(unsafe_code)]
            unsafe {
                crate::region::expose(mem, RegionKind::MapValue, e.as_ptr(), e.len(), false)
            };
            if mem.regions().len() > before {
                self.arrays[i] = Some(ArrayView {
                    region: before,
                    base: e.addr(),
                    stride: 16,
                    max_entries: 0,
                    cpus: usize::MAX,
                    kind: View::Devhash,
                });
            }
        }
        true
    }

    /// `bpf_map_lookup_elem(map, &index)` on table map `i` when it is an
    /// array, devmap or devmap_hash of [`RunState::arrays`] and its region
    /// is still in `mem` (the run's memory): the value's address, or 0 for
    /// an index past the end, a CPU the map does not have, an empty devmap
    /// slot or an absent devmap_hash key (what `Map::lookup_ptr` and
    /// `Map::dev_value` give). `None` sends
    /// the caller the general way.
    #[inline(always)]
    pub(crate) fn array_lookup(&self, mem: &Memory<'_>, i: usize, index: u32) -> Option<u64> {
        let v = self.arrays.get(i)?.as_ref()?;
        // The region is the storage's as long as `mem` is the memory it was
        // added to (regions are only appended, or all cleared).
        if !self.is_run_memory(mem) || mem.regions().get(v.region)?.start() != v.base {
            return None;
        }
        if matches!(v.kind, View::Devmap | View::Devhash) {
            // The entry the slot's word points at (the table's cell for a
            // devmap_hash), inside the region.
            let m = self.maps.at(i);
            return Some(if v.kind == View::Devmap {
                m.devmap_entry_addr(index, &self.guard)
            } else {
                m.devhash_entry_addr(index, &self.guard)
            });
        }
        if index >= v.max_entries || self.cpu >= v.cpus {
            return Some(0);
        }
        let percpu = v.kind == View::PercpuArray;
        let cpu = if percpu { self.cpu as u64 } else { 0 };
        let slots = if percpu { v.cpus as u64 } else { 1 };
        Some(v.base + (u64::from(index) * slots + cpu) * v.stride)
    }

    /// [`RunState::exposed_region`] for the newest entry only, when `mem`
    /// is the run's memory (the common case of a batch: the same value as
    /// the run before).
    #[inline(always)]
    pub(crate) fn last_exposed(
        &self,
        mem: &Memory<'_>,
        ptr: u64,
        len: usize,
        writable: bool,
    ) -> bool {
        let Some(&(p, i)) = self.exposed.last() else {
            return false;
        };
        p == ptr && self.is_run_memory(mem) && region_holds(mem, i, ptr, len, writable)
    }

    /// Whether `ptr` is the value a lookup in table map `i` last handed out
    /// and `mem` has not changed its regions since (see
    /// [`RunState::hand_memo`]): its region is still there.
    #[inline(always)]
    pub(crate) fn handed_out(&self, mem: &Memory<'_>, i: usize, ptr: u64) -> bool {
        self.hand_memo
            .get(i)
            .is_some_and(|&(p, v)| p == ptr && v == mem.version())
    }

    /// Whether the value at `ptr` (`len` bytes, written when `writable`) of
    /// table map `i` already has its region in `mem`, the way a hand-out
    /// finds out without registering one: the value this map last handed
    /// out, regions unchanged since ([`RunState::handed_out`]), or one the
    /// run (or the batch's run before) exposed ([`RunState::last_exposed`],
    /// [`RunState::exposed_region`]), then noted as the map's.
    #[inline(always)]
    pub(crate) fn holds_value(
        &mut self,
        mem: &Memory<'_>,
        i: usize,
        ptr: u64,
        len: usize,
        writable: bool,
    ) -> bool {
        if self.handed_out(mem, i, ptr) {
            return true;
        }
        if self.last_exposed(mem, ptr, len, writable)
            || (self.is_run_memory(mem) && self.exposed_region(mem, ptr, len, writable))
        {
            self.note_handed_out(mem, i, ptr);
            return true;
        }
        false
    }

    /// Notes that `ptr`, a value of table map `i`, has its region (with the
    /// map's value length and write access) in `mem`, the run's memory:
    /// the caller checked both. Later lookups of it take
    /// [`RunState::handed_out`].
    #[inline(always)]
    pub(crate) fn note_handed_out(&mut self, mem: &Memory<'_>, i: usize, ptr: u64) {
        if let Some(e) = self.hand_memo.get_mut(i) {
            *e = (ptr, mem.version());
        }
    }

    /// Whether a value at `ptr` of `len` bytes was registered as a region
    /// of `mem` by a recent lookup (and that region is still there, with
    /// write access when `writable`).
    #[inline]
    pub(crate) fn exposed_region(
        &self,
        mem: &Memory<'_>,
        ptr: u64,
        len: usize,
        writable: bool,
    ) -> bool {
        let Some(&(_, i)) = self.exposed.iter().rev().find(|(p, _)| *p == ptr) else {
            return false;
        };
        region_holds(mem, i, ptr, len, writable)
    }

    /// The answer of an earlier lookup of `key` (an index) in the slot map
    /// `map` at program address `map_addr`, if the slot has not changed
    /// since and (for a value) its region is still in `mem`, the run's
    /// memory.
    #[inline]
    pub(crate) fn slot_memo(
        &self,
        mem: &Memory<'_>,
        map_addr: u64,
        map: &Map,
        key: &[u8],
    ) -> Option<u64> {
        if self.slot_memo.is_empty() {
            return None;
        }
        let index = u32::from_ne_bytes(key.try_into().ok()?);
        let e = self
            .slot_memo
            .iter()
            .rev()
            .find(|e| e.map == map_addr && e.index == index)?;
        if map.slot_generation(key)? != e.gen {
            return None;
        }
        match e.region {
            None => Some(e.addr),
            Some(r) => (self.is_run_memory(mem)
                && mem.regions().get(r).is_some_and(|r| r.start() == e.addr))
            .then_some(e.addr),
        }
    }

    /// Notes the answer `addr` of a lookup of `index` in the slot map at
    /// `map_addr` when the slot's change count was `gen`; `value`: it is a
    /// value, which needs the region a recent lookup registered for it
    /// (otherwise nothing is noted).
    pub(crate) fn remember_slot(
        &mut self,
        map_addr: u64,
        index: u32,
        gen: u64,
        addr: u64,
        value: bool,
    ) {
        let region = if value {
            match self.exposed.iter().rev().find(|(p, _)| *p == addr) {
                Some(&(_, r)) => Some(r),
                None => return,
            }
        } else {
            None
        };
        self.slot_memo
            .retain(|e| !(e.map == map_addr && e.index == index));
        if self.slot_memo.len() == EXPOSED_KEPT {
            self.slot_memo.remove(0);
        }
        self.slot_memo.push(SlotMemo {
            map: map_addr,
            index,
            gen,
            addr,
            region,
        });
    }

    /// Notes that region `index` was registered for the value at `ptr`.
    pub(crate) fn remember_exposed(&mut self, ptr: u64, index: usize) {
        if self.exposed.len() == EXPOSED_KEPT {
            self.exposed.remove(0);
        }
        self.exposed.push((ptr, index));
    }

    /// Whether `mem` is the memory of the running [`RunState::scoped`]
    /// call, which alone may hold regions that this state keeps valid.
    pub(crate) fn is_run_memory(&self, mem: &Memory<'_>) -> bool {
        self.is_run_memory_at(mem as *const Memory<'_> as usize)
    }

    /// [`RunState::is_run_memory`] by address.
    pub(crate) fn is_run_memory_at(&self, addr: usize) -> bool {
        self.run_mem != 0 && addr == self.run_mem
    }

    /// The pinned epoch.
    pub fn guard(&self) -> &RunGuard {
        &self.guard
    }

    /// The map at a program-visible address (object maps, then inner maps
    /// handed out in this run).
    pub fn map(&self, addr: u64) -> Option<&Arc<Map>> {
        self.maps
            .get(addr)
            .or_else(|| self.inner.iter().find(|(a, _)| *a == addr).map(|(_, m)| m))
    }

    /// The next pseudo-random number (xorshift64*).
    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.rng == 0 {
            self.rng = seed();
        }
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

fn seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let t = crate::misc::monotonic_ns();
    let c = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    (t ^ c).max(1)
}

/// Whether region `i` of `mem` is still the value at `ptr` a lookup
/// exposed: it starts there, holds `len` bytes and allows writes when
/// `writable`.
#[inline(always)]
fn region_holds(mem: &Memory<'_>, i: usize, ptr: u64, len: usize, writable: bool) -> bool {
    mem.regions()
        .get(i)
        .is_some_and(|r| r.start() == ptr && len as u64 <= r.len() && (r.writable() || !writable))
}
