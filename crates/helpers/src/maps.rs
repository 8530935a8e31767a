//! Map helpers: lookup, update, delete, push/pop/peek, ring buffers.

use crate::region::expose;
use crate::state::RunState;
use crate::Env;
use bpfkit_maps::{map_flags, Map, MapError, MapId, MapType, ValueRef};
use bpfkit_runtime::{Access, Guest, HelperAbort, HelperResult, Memory, RegionKind};
use std::sync::Arc;

/// The map behind a program's map pointer, borrowed from the run's state.
pub(crate) fn map_ref(st: &RunState, addr: u64) -> Result<&Arc<Map>, HelperAbort> {
    st.map(addr).ok_or_else(|| not_a_map(addr))
}

/// Reads `len` guest bytes at `addr`.
pub(crate) fn read(
    env: &mut Env<'_, '_, '_>,
    addr: u64,
    len: usize,
) -> Result<Vec<u8>, HelperAbort> {
    let mut buf = vec![0u8; len];
    if len > 0 {
        env.guest().read(addr, &mut buf)?;
    }
    Ok(buf)
}

fn ret(r: Result<(), MapError>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_helper_ret(),
    }
}

fn value_writable(map: &Map) -> bool {
    map.def().map_flags & map_flags::RDONLY_PROG == 0
}

/// Exposes a value reference to the program; returns its address.
/// `slot`: the index in the run's table of the map whose value it is
/// (its value length and write access are `len` and `writable`), for the
/// run's memo of hand-outs ([`RunState::handed_out`]); [`NO_SLOT`] for
/// anything else (inner maps, ring buffer records).
#[inline(always)]
fn hand_out(
    env: &mut Env<'_, '_, '_>,
    slot: Slot,
    ptr: *mut u8,
    len: usize,
    writable: bool,
) -> HelperResult {
    let (guest, st) = env.split();
    let mem = guest.memory();
    let p = ptr as u64;
    // The value this map last handed out, the one the last lookup exposed
    // (the same key in the next run of a batch), or an older one of the
    // few kept (lookups in two maps per run alternate between two values):
    // still no call.
    if st.holds_value(mem, slot, p, len, writable) {
        return Ok(p);
    }
    hand_out_new(env, slot, ptr, len, writable)
}

/// [`hand_out`] for a value none of whose recent regions is still there.
#[allow(unsafe_code)]
#[inline(never)]
fn hand_out_new(
    env: &mut Env<'_, '_, '_>,
    slot: Slot,
    ptr: *mut u8,
    len: usize,
    writable: bool,
) -> HelperResult {
    let (guest, st) = env.split();
    let mem = guest.memory_mut();
    // Only the memory of the running `RunState::scoped` call may take the
    // region: it is dropped before the state's epoch guard.
    if !st.is_run_memory(mem) {
        return Err(HelperAbort::Failed(
            "helper memory is not the memory of the run's RunState::scoped call".into(),
        ));
    }
    let before = mem.regions().len();
    // SAFETY: `ptr` comes from a `ValueRef` obtained under the run
    // state's pinned epoch (or a buffer the state owns), valid until the
    // state is dropped; the memory is the `scoped` call's (checked above),
    // dropped before the state.
    let addr = unsafe { expose(mem, RegionKind::MapValue, ptr, len, writable) };
    if mem.regions().len() > before {
        st.remember_exposed(ptr as u64, before);
        // Noted with the version the new region gave the memory.
        st.note_handed_out(mem, slot, ptr as u64);
    }
    Ok(addr)
}

fn raw(v: &ValueRef<'_>) -> (*mut u8, usize) {
    (v.as_ptr(), v.len())
}

/// Keys up to this size are read into a stack buffer.
const SMALL_KEY: usize = 64;

/// `bpf_map_lookup_elem(map, key)`. Always inlined into its direct entry
/// (left to the compiler, with the two paths below, it was called out of
/// line, its result through memory).
#[inline(always)]
pub(crate) fn lookup(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    match lookup_fast(env, a) {
        Ok(r0) => Ok(r0),
        Err(slot) => lookup_any(env, a[0], a[1], slot),
    }
}

/// What [`lookup_fast`] leaves to [`lookup_any`]: the map's index in the
/// run's table, found once ([`NO_SLOT`]: not in the table). A plain
/// index, so that `Result<u64, Slot>` is two registers (with an `Option`
/// it went through memory and cost more than it saved).
type Slot = usize;

/// The [`Slot`] of a map not in the run's table.
const NO_SLOT: Slot = usize::MAX;

/// The per-packet cases of [`lookup`], complete or not at all: a hash map
/// or LPM trie of the run's table with the key on the program's stack (or
/// of 4 or 8 bytes elsewhere), answered with a miss or a value whose
/// region the run already has; an array of the table (checked code and
/// the interpreter call the helper for those); a slot map or map of maps
/// of the table whose slot the run's memo still answers. `Err` for
/// anything else (other maps, a key to fault on, a value to register as a
/// region, a slot to look up), which [`lookup_any`] then does from the
/// table index found: the map's search again, which finds what this one
/// did or a later state of the map, as a lookup made a moment later would.
///
/// Its answer is a register, not a `HelperResult`, so that the direct
/// entry's common path keeps no result in its frame (measured: a hashed
/// lookup that answered through the general path's result slot paid about
/// 7 host instructions for it).
#[inline(always)]
fn lookup_fast(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> Result<u64, Slot> {
    let (guest, st) = env.split();
    // `a[2]`: the table index the JIT passes for a map it resolved
    // (checked against `a[0]`, never trusted).
    let (i, map) = st.maps.position_hinted(a[0], a[2]).ok_or(NO_SLOT)?;
    let n = map.def().key_size as usize;
    // A key on the program's stack (where programs build them) is searched
    // where it is: no buffer, no copy, no dispatch on its size. A packet's
    // address or port: one load.
    let mut buf;
    let key = match guest.stack_bytes(a[1], n) {
        Some(key) => key,
        None => {
            buf = [0u8; 8];
            let mem = guest.memory();
            let read = match n {
                4 => mem_into::<4>(mem, a[1], &mut buf),
                8 => mem_into::<8>(mem, a[1], &mut buf),
                _ => None,
            };
            read.and_then(|()| buf.get(..n)).ok_or(i)?
        }
    };
    if !map.is_hashed() {
        if st.arrays.get(i).is_some_and(Option::is_some) {
            let index = u32_of(key);
            return st.array_lookup(guest.memory(), i, index).ok_or(i);
        }
        return st.slot_memo(guest.memory(), a[0], map, key).ok_or(i);
    }
    let writable = value_writable(map);
    let Some((ptr, len)) = map.lookup_hashed(key, st.cpu, st.guard()).map(|v| raw(&v)) else {
        return Ok(0);
    };
    // [`hand_out`] without its call.
    let ptr = ptr as u64;
    if st.holds_value(guest.memory(), i, ptr, len, writable) {
        return Ok(ptr);
    }
    Err(i)
}

/// [`lookup`] in general (see [`lookup_fast`]), for the map at index
/// `slot` of the run's table ([`NO_SLOT`]: an inner map of this run, or
/// none). Out of line: inlined with [`lookup_fast`], the direct entry's
/// body grew past what the compiler inlines into its `catch_unwind`, which
/// then called it with the arguments in memory (both paths paid for it).
#[inline(never)]
fn lookup_any(env: &mut Env<'_, '_, '_>, map_addr: u64, key_addr: u64, slot: Slot) -> HelperResult {
    // `r1` and `r2` alone (not `r1`-`r5`, which the caller then stored to
    // its frame on every call, the fast paths' too).
    let a = [map_addr, key_addr];
    // Memory and state at once: one downcast and one search of the table
    // (inner maps handed out in this run after it) per call.
    let (guest, st) = env.split();
    let slot = (slot != NO_SLOT).then(|| (slot, st.maps.at(slot)));
    // Hash maps and LPM tries of the table (the per-packet flow and route
    // tables) first: the key in one fixed-size load, one dispatch (the
    // map's own), none of the searches below.
    if let Some((i, map)) = slot.filter(|(_, m)| m.is_hashed()) {
        let n = map.def().key_size as usize;
        if n <= HASHED_KEY {
            // A key on the program's stack (where programs build them) is
            // searched where it is: no buffer to zero, no copy, no
            // dispatch on its size. Elsewhere (a packet's header field, a
            // map value): one fixed-size load per common key size (no copy
            // of a run-time length). `read_into`'s match, without its arms
            // above `HASHED_KEY`: calling it here cost ~6 host instructions
            // a lookup (router_ipv4, tx_iptunnel).
            let mut buf;
            let key = match guest.stack_bytes(a[1], n) {
                Some(key) => key,
                None => {
                    buf = [0u8; HASHED_KEY];
                    match n {
                        4 => load_into::<4>(guest, a[1], &mut buf)?,
                        8 => load_into::<8>(guest, a[1], &mut buf)?,
                        12 => load_into::<12>(guest, a[1], &mut buf)?,
                        16 => load_into::<16>(guest, a[1], &mut buf)?,
                        20 => load_into::<20>(guest, a[1], &mut buf)?,
                        24 => load_into::<24>(guest, a[1], &mut buf)?,
                        32 => load_into::<32>(guest, a[1], &mut buf)?,
                        40 => load_into::<40>(guest, a[1], &mut buf)?,
                        _ => guest.read(a[1], &mut buf[..n])?,
                    }
                    &buf[..n]
                }
            };
            let writable = value_writable(map);
            let Some((ptr, len)) = map.lookup_hashed(key, st.cpu, st.guard()).map(|v| raw(&v))
            else {
                return Ok(0);
            };
            return hand_out(env, i, ptr, len, writable);
        }
    }
    if let Some((i, _)) = slot {
        if st.arrays.get(i).is_some_and(Option::is_some) {
            let index = u32::from_ne_bytes(guest.load::<4>(a[1])?);
            if let Some(addr) = st.array_lookup(guest.memory(), i, index) {
                return Ok(addr);
            }
        }
    }
    let map = match slot {
        Some((_, m)) => m,
        // Not in the table (just searched): an inner map of this run.
        None => st
            .inner
            .iter()
            .find(|(addr, _)| *addr == a[0])
            .map(|(_, m)| m)
            .ok_or_else(|| not_a_map(a[0]))?,
    };
    let n = map.def().key_size as usize;
    // Buffers initialised only on their branch (zeroing 64 bytes for a
    // 4-byte key is a measurable part of a lookup).
    let (k4, k8, mut small): ([u8; 4], [u8; 8], [u8; SMALL_KEY]);
    let heap;
    let key: &[u8] = match n {
        // The common key sizes (array indexes, addresses) as one load
        // rather than a copy of a run-time length.
        4 => {
            k4 = guest.load::<4>(a[1])?;
            &k4
        }
        8 => {
            k8 = guest.load::<8>(a[1])?;
            &k8
        }
        n if n <= SMALL_KEY => {
            small = [0u8; SMALL_KEY];
            read_into(guest, a[1], &mut small[..n])?;
            &small[..n]
        }
        _ => {
            let mut v = vec![0u8; n];
            guest.read(a[1], &mut v)?;
            heap = v;
            &heap
        }
    };
    match map.map_type() {
        MapType::ArrayOfMaps | MapType::HashOfMaps => {
            // The slot unchanged since this run looked it up: the same map.
            if let Some(addr) = st.slot_memo(guest.memory(), a[0], map, key) {
                return Ok(addr);
            }
            // Read before the lookup, for a miss: while it stands, no
            // change was made since, so the key is still absent.
            let before = map.slot_generation(key);
            let Some((addr, id, gen)) = map
                .inner_map_gen(key, st.guard())
                .map(|(m, g)| (m as *const Map as u64, m.id(), g))
            else {
                if let (Some(gen), true) = (before, key.len() == 4) {
                    st.remember_slot(a[0], u32_of(key), gen, 0, false);
                }
                return Ok(0);
            };
            let (out, added) = inner_addr(st, addr, id)?;
            if added {
                // An inner array outside the table: its storage becomes a
                // region of the run's memory, as the table's arrays are
                // (`add_map_regions`), so that pointers into it that an
                // engine computes from the map's header are accepted by
                // helpers (`Imm64Resolver::map_headers`).
                expose_array(env, out)?;
            }
            let st = env.state();
            // The memo is by 4-byte index (`slot_memo` answers only those);
            // a `hash_of_maps` count stands for all its keys.
            if let (Some(gen), true) = (gen, out != 0 && key.len() == 4) {
                st.remember_slot(a[0], u32_of(key), gen, out, false);
            }
            Ok(out)
        }
        // The entry in place, read-only (the verifier refuses writes to
        // device map values): no copy per lookup, and the pointer
        // identity of the kernel's (see `Map::dev_value`). Answered again
        // while the slot's (devmap) or the map's (devmap_hash) change
        // count stands: the element found is still the one in the map.
        MapType::Devmap | MapType::DevmapHash => {
            if let Some(addr) = st.slot_memo(guest.memory(), a[0], map, key) {
                return Ok(addr);
            }
            let Some((ptr, len, gen)) = map
                .dev_value_gen(key, st.guard())
                .map(|(v, g)| (v.as_ptr(), v.len(), g))
            else {
                return Ok(0);
            };
            let (index, by_index) = (u32_of(key), key.len() == 4);
            let out = hand_out(env, NO_SLOT, ptr, len, false)?;
            if by_index {
                env.state().remember_slot(a[0], index, gen, out, true);
            }
            Ok(out)
        }
        _ => {
            let writable = value_writable(map);
            let Some((ptr, len)) = map.lookup_ptr(key, st.cpu, st.guard()).map(|v| raw(&v)) else {
                return Ok(0);
            };
            hand_out(env, NO_SLOT, ptr, len, writable)
        }
    }
}

/// Keys of hash maps and LPM tries up to this size take the first path of
/// [`lookup`] (flows, IPv6 tuples).
const HASHED_KEY: usize = 40;

/// The `N` guest bytes at `addr` into the start of `buf` (`N <= buf.len()`).
#[inline(always)]
fn load_into<const N: usize>(
    guest: &Guest<'_, '_>,
    addr: u64,
    buf: &mut [u8],
) -> Result<(), HelperAbort> {
    if let Some(b) = buf.first_chunk_mut::<N>() {
        *b = guest.load::<N>(addr)?;
    }
    Ok(())
}

/// The `N` bytes at `addr` of the regions (not the stack) into the start
/// of `buf` (`N <= buf.len()`); `None` on a fault.
#[inline(always)]
fn mem_into<const N: usize>(mem: &Memory<'_>, addr: u64, buf: &mut [u8]) -> Option<()> {
    *buf.first_chunk_mut::<N>()? = mem.load::<N>(addr).ok()?;
    Some(())
}

/// A 4-byte key as the index it is (slot maps' keys are 4 bytes; a
/// shorter key, which their lookups refuse, reads as 0).
fn u32_of(key: &[u8]) -> u32 {
    key.first_chunk::<4>().map_or(0, |b| u32::from_ne_bytes(*b))
}

/// The address a program gets for the inner map at `addr` (with `id`)
/// that a map-in-map lookup found: its own address, kept resolvable for
/// the rest of the run (the table's maps already are; others are looked
/// up in the registry once per run and kept in [`RunState::inner`]); and
/// whether it was added to [`RunState::inner`] now.
fn inner_addr(st: &mut RunState, addr: u64, id: Option<MapId>) -> Result<(u64, bool), HelperAbort> {
    // The repeat path: the map was handed out before in this run, or is a
    // map of the object (libbpf's `.values`): no registry lookup, no
    // reference count.
    if st.inner.iter().any(|(a, _)| *a == addr) || st.maps.position(addr).is_some() {
        return Ok((addr, false));
    }
    let Some(id) = id else {
        return Ok((0, false));
    };
    let Some(inner) = st.maps.registry().and_then(|r| r.get(id)) else {
        return Ok((0, false));
    };
    // The registry's map is the one found (ids are unique while the map
    // lives, and the outer map keeps it alive).
    let addr = Arc::as_ptr(&inner) as u64;
    if st.inner.iter().any(|(a, _)| *a == addr) {
        return Ok((addr, false));
    }
    st.inner.push((addr, inner));
    Ok((addr, true))
}

/// Registers the storage of the inner map at `addr` (one of
/// [`RunState::inner`]) as a writable region of the run's memory when its
/// header describes an array (`bpfkit_maps::MapHeader`).
#[allow(unsafe_code)]
fn expose_array(env: &mut Env<'_, '_, '_>, addr: u64) -> Result<(), HelperAbort> {
    let (guest, st) = env.split();
    let Some(m) = st.inner.iter().find(|(a, _)| *a == addr).map(|(_, m)| m) else {
        return Ok(());
    };
    let h = *m.header();
    let Some(storage) = m.array_storage().filter(|_| h.array_base != 0) else {
        return Ok(());
    };
    let mem = guest.memory_mut();
    if !st.is_run_memory(mem) {
        return Err(HelperAbort::Failed(
            "helper memory is not the memory of the run's RunState::scoped call".into(),
        ));
    }
    // SAFETY: the storage lives as long as the map, which `st.inner` keeps
    // alive until the state is dropped; the memory is the `scoped` call's
    // (checked above), dropped before the state.
    unsafe {
        expose(
            mem,
            RegionKind::MapValue,
            storage.as_ptr(),
            storage.len(),
            true,
        )
    };
    Ok(())
}

/// Keys and values up to this size are read into stack buffers.
const SMALL_BUF: usize = 256;

/// Calls `f` with the `len` guest bytes at `addr`, read into a stack
/// buffer when they fit (no allocation on the per-packet path).
fn with_bytes<R>(
    guest: &Guest<'_, '_>,
    addr: u64,
    len: usize,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, HelperAbort> {
    if len == 0 {
        return Ok(f(&[]));
    }
    // On the program's stack: used where it is (no buffer, no copy; `f`
    // gets it shared while `guest` stays borrowed, so nothing writes it).
    if let Some(b) = guest.stack_bytes(addr, len) {
        return Ok(f(b));
    }
    // Zeroing the buffer costs as much as the copy: the common sizes (keys,
    // counters, small records) get a buffer of about their size.
    if len <= 16 {
        return on_stack::<16, R>(guest, addr, len, f);
    }
    if len <= 64 {
        return on_stack::<64, R>(guest, addr, len, f);
    }
    if len <= SMALL_BUF {
        return on_stack::<SMALL_BUF, R>(guest, addr, len, f);
    }
    let mut buf = vec![0u8; len];
    guest.read(addr, &mut buf)?;
    Ok(f(&buf))
}

/// [`with_bytes`] with an `N`-byte stack buffer (`len <= N`).
#[inline(always)]
fn on_stack<const N: usize, R>(
    guest: &Guest<'_, '_>,
    addr: u64,
    len: usize,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, HelperAbort> {
    let mut buf = [0u8; N];
    let buf = &mut buf[..len];
    read_into(guest, addr, buf)?;
    Ok(f(buf))
}

/// [`Guest::read`] with the common key and value sizes (struct sizes up
/// to 64 bytes, multiples of 4) as one fixed-size load each, inlined here:
/// `Guest::load` reads the program's stack, where programs build keys and
/// values, without a call or a copy of a run-time length, and otherwise
/// asks the regions for the whole range at once, as `read` does.
#[inline(always)]
fn read_into(guest: &Guest<'_, '_>, addr: u64, buf: &mut [u8]) -> Result<(), HelperAbort> {
    match buf.len() {
        4 => load_into::<4>(guest, addr, buf),
        8 => load_into::<8>(guest, addr, buf),
        12 => load_into::<12>(guest, addr, buf),
        16 => load_into::<16>(guest, addr, buf),
        20 => load_into::<20>(guest, addr, buf),
        24 => load_into::<24>(guest, addr, buf),
        32 => load_into::<32>(guest, addr, buf),
        40 => load_into::<40>(guest, addr, buf),
        48 => load_into::<48>(guest, addr, buf),
        64 => load_into::<64>(guest, addr, buf),
        _ => {
            guest.read(addr, buf)?;
            Ok(())
        }
    }
}

/// The map at program address `addr` (see [`RunState::map`]), trying the
/// table's entry `hint` first (`MapTable::position_hinted`: the index an
/// engine passes for a map it resolved, never trusted).
#[inline(always)]
fn hinted_map(st: &RunState, addr: u64, hint: u64) -> Result<&Arc<Map>, HelperAbort> {
    match st.maps.position_hinted(addr, hint) {
        Some((_, m)) => Ok(m),
        // Not in the table (just searched): an inner map of this run.
        None => st
            .inner
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, m)| m)
            .ok_or_else(|| not_a_map(addr)),
    }
}

/// The trap for a map argument that is no map.
#[cold]
pub(crate) fn not_a_map(addr: u64) -> HelperAbort {
    HelperAbort::Failed(format!("{addr:#x} is not a map"))
}

/// `bpf_map_update_elem(map, key, value, flags)`.
#[inline]
pub(crate) fn update(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    // The map stays borrowed from the run's table (no reference count
    // traffic) while the key and value are read.
    let (guest, st) = env.split();
    // `a[4]`: the table index the JIT passes (as for lookups, checked).
    let map = hinted_map(st, a[0], a[4])?;
    let (ks, vs) = (map.def().key_size as usize, map.def().value_size as usize);
    // Key and value on the program's stack (where programs build a flow's
    // key and its new entry): given to the map where they are, as
    // `lookup_fast` does with keys (no buffers to zero, no copies, no
    // dispatch on their sizes; reads there cannot fault). The stack is no
    // map memory, so neither can alias the element being written.
    if let (Some(key), Some(value)) = (guest.stack_bytes(a[1], ks), guest.stack_bytes(a[2], vs)) {
        return Ok(ret(map.prog_update(key, value, a[3], st.cpu)));
    }
    // Keys and values of up to 64 bytes (flows, counters, small records):
    // two stack buffers, read inline, no closures.
    if ks <= SMALL_KEY && vs <= SMALL_KEY {
        let (mut kb, mut vb) = ([0u8; SMALL_KEY], [0u8; SMALL_KEY]);
        let (key, value) = (&mut kb[..ks], &mut vb[..vs]);
        // A zero-sized key (queues, stacks) is not read, as the kernel
        // reads nothing.
        if ks > 0 {
            read_into(guest, a[1], key)?;
        }
        if vs > 0 {
            read_into(guest, a[2], value)?;
        }
        return Ok(ret(map.prog_update(key, value, a[3], st.cpu)));
    }
    with_bytes(guest, a[1], ks, |key| {
        with_bytes(guest, a[2], vs, |value| {
            ret(map.prog_update(key, value, a[3], st.cpu))
        })
    })?
}

/// `bpf_map_delete_elem(map, key)`.
#[inline]
pub(crate) fn delete(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let (guest, st) = env.split();
    // `a[2]`: the table index the JIT passes (as for lookups, checked).
    let map = hinted_map(st, a[0], a[2])?;
    with_bytes(guest, a[1], map.def().key_size as usize, |key| {
        ret(map.prog_delete(key))
    })
}

/// `bpf_map_push_elem(map, value, flags)`.
#[inline]
pub(crate) fn push(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let (guest, st) = env.split();
    let map = st.map(a[0]).ok_or_else(|| not_a_map(a[0]))?;
    with_bytes(guest, a[1], map.def().value_size as usize, |value| {
        ret(map.push(value, a[2]))
    })
}

/// `bpf_map_pop_elem(map, value)` and `bpf_map_peek_elem(map, value)`.
#[inline]
pub(crate) fn pop_or_peek(env: &mut Env<'_, '_, '_>, a: [u64; 5], pop: bool) -> HelperResult {
    let (guest, st) = env.split();
    let map = map_ref(st, a[0])?;
    let n = map.def().value_size as usize;
    let mut pop_into = |out: &mut [u8]| -> HelperResult {
        let r = if pop { map.pop(out) } else { map.peek(out) };
        match r {
            Ok(()) => {
                guest.write(a[1], out)?;
                Ok(0)
            }
            Err(e) => {
                // An empty queue or stack zeroes the caller's buffer, as the
                // kernel's `__queue_map_get`/`__stack_map_get` do.
                if e.errno() == crate::ENOENT {
                    guest.write(a[1], out)?;
                }
                Ok(e.to_helper_ret())
            }
        }
    };
    // A zeroed buffer of about the value's size (zeroing a bigger one
    // would cost more than the copy).
    match n {
        0..=16 => pop_into(&mut [0u8; 16][..n]),
        17..=SMALL_BUF => pop_into(&mut [0u8; SMALL_BUF][..n]),
        _ => pop_into(&mut vec![0u8; n]),
    }
}

/// `bpf_ringbuf_output(ringbuf, data, size, flags)`.
#[inline]
pub(crate) fn ringbuf_output(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let (guest, st) = env.split();
    let map = st.map(a[0]).ok_or_else(|| not_a_map(a[0]))?;
    let size = a[2] as usize;
    // A ring its consumer does not keep up with refuses every output: then
    // only whether the data is readable matters (a bad pointer faults
    // first, as when the data was read first), not the bytes, so they are
    // not copied.
    if let Some(e) = map.ringbuf_output_refused(size as u64, a[3]) {
        readable(guest, a[1], size)?;
        return Ok(e.to_helper_ret());
    }
    with_bytes(
        guest,
        a[1],
        size,
        |data| ret(map.ringbuf_output(data, a[3])),
    )
}

/// Whether the guest may read `[addr, addr + len)` (its stack, or one
/// region), as [`Guest::read`] would find it, without copying: the same
/// fault when it may not.
#[inline]
pub(crate) fn readable(guest: &Guest<'_, '_>, addr: u64, len: usize) -> Result<(), HelperAbort> {
    if len == 0 {
        return Ok(());
    }
    // `off` wraps below the stack, so one compare says "inside".
    let off = addr.wrapping_sub(guest.stack_start());
    let stack_len = guest.stack_end() - guest.stack_start();
    if off <= stack_len && len as u64 <= stack_len - off {
        return Ok(());
    }
    guest.memory().find(addr, len, Access::Read)?;
    Ok(())
}

/// `bpf_ringbuf_reserve(ringbuf, size, flags)`.
#[inline]
pub(crate) fn ringbuf_reserve(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    // The map stays borrowed from the run's state (which keeps it alive
    // for the run): no reference count per record.
    let st = env.state();
    let map = map_ref(st, a[0])?;
    let Some((ptr, len)) = map.ringbuf_reserve(a[1], a[2], st.guard()).map(|v| raw(&v)) else {
        return Ok(0);
    };
    st.reserved.push((ptr as u64, a[0]));
    hand_out(env, NO_SLOT, ptr, len, true)
}

/// `bpf_ringbuf_submit(data, flags)` and `bpf_ringbuf_discard(data, flags)`.
pub(crate) fn ringbuf_commit(
    env: &mut Env<'_, '_, '_>,
    a: [u64; 5],
    discard: bool,
) -> HelperResult {
    let st: &mut RunState = env.state();
    let Some(i) = st.reserved.iter().position(|(addr, _)| *addr == a[0]) else {
        return Err(HelperAbort::Failed(format!(
            "{:#x} is not a reserved ring buffer record",
            a[0]
        )));
    };
    let (_, map) = st.reserved.swap_remove(i);
    let map = map_ref(st, map)?;
    let r = if discard {
        map.ringbuf_discard(a[0], a[1])
    } else {
        map.ringbuf_submit(a[0], a[1])
    };
    r.map_err(|e| HelperAbort::Failed(e.to_string()))?;
    Ok(0)
}

/// `bpf_ringbuf_query(ringbuf, flags)`.
#[inline]
pub(crate) fn ringbuf_query(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    Ok(map_ref(env.state(), a[0])?.ringbuf_query(a[1]))
}
