//! `bpf_for_each_map_elem` (helper 164): the step the engines call before
//! each call of the callback (`bpfkit_runtime::Callback::Steps`), which
//! checks the arguments and walks the map. The engines make the callback
//! calls themselves (a callback is a bpf-to-bpf call of the program).
//!
//! `long bpf_for_each_map_elem(map, callback_fn, callback_ctx, flags)`:
//! `flags` must be 0 (else `-EINVAL`); the callback runs as `cb(map, key,
//! value, callback_ctx)` for each element until it returns non-zero, and
//! the helper returns the number of calls. Arrays (and per-CPU arrays:
//! the run's CPU's value) go by index, as in the kernel; hash maps (plain,
//! per-CPU, LRU) in the order of `bpfkit_maps::Map::for_each_elem`, which
//! is bpfkit's bucket order, not the kernel's (its hash function differs):
//! a program whose result depends on that order gives another result than
//! the kernel, so the differential suite checks order-free results only.
//! The elements are those present when the walk starts (a hash map's
//! listed at the first step, an array's looked up by index at each step,
//! every index being present; values are read and written in place, so
//! changes the callback makes are seen; an element deleted meanwhile keeps its memory
//! to the end of the run, as `Map::for_each_elem` documents, and is still
//! visited). Keys are read-only regions: a hash map's key is the element's
//! own, an array's index is a word of a table of indexes the state keeps
//! per map (so a nested walk cannot overwrite the key an outer callback
//! still holds). Other map types: no call, 0 (the kernel's verifier
//! refuses them).

use crate::maps::map_ref;
use crate::region::expose;
use crate::{errno, Env, EINVAL};
use bpfkit_maps::{map_flags, MapType};
use bpfkit_runtime::callback::{STEP_CALL, STEP_DONE};
use bpfkit_runtime::{HelperAbort, HelperResult, Memory, RegionKind};

/// The walks in progress and what they hand out, kept by the run's state.
#[derive(Default, Debug)]
pub(crate) struct ForEach {
    /// The step's record (`STEP_CALL`/`STEP_DONE` and five words), a
    /// read-only region once handed out; boxed so that its address stays.
    record: Box<[u64; 6]>,
    /// Walks in progress.
    walks: Vec<Walk>,
    /// Per array walked: (map address, the indexes 0..max_entries as
    /// native-endian `u32`s, the array's keys).
    keys: Vec<(u64, Box<[u32]>)>,
    /// Whether the record is a region of the run's memory already (the
    /// state and the memory are the run's own, so once is enough).
    record_out: bool,
    /// Element lists of ended walks, kept for the next walk of the run
    /// (a run's walks would otherwise allocate and grow one each).
    spare: Vec<Vec<(u64, u64)>>,
}

impl ForEach {
    /// Ends the walks of `token`, keeping their element lists.
    fn end(&mut self, token: u64) {
        while let Some(k) = self.walks.iter().position(|w| w.token == token) {
            let mut w = self.walks.swap_remove(k);
            if w.elems.capacity() > 0 {
                w.elems.clear();
                self.spare.push(w.elems);
            }
        }
    }
}

/// A walk in progress.
#[derive(Debug)]
struct Walk {
    /// The engine's token for the helper call.
    token: u64,
    /// The elements' key and value addresses.
    elems: Vec<(u64, u64)>,
    /// Whether the values may be written.
    writable: bool,
    /// For an array, its key table (the walk's first step made it a
    /// region of the run's memory), else 0.
    keys: u64,
}

/// Registers `[ptr, ptr + len)` as a region of the run's memory.
#[allow(unsafe_code)]
fn hand_out(mem: &mut Memory<'_>, ptr: u64, len: usize, writable: bool) {
    let kind = if writable {
        RegionKind::MapValue
    } else {
        RegionKind::Helper
    };
    // SAFETY: every pointer handed out here is either state-owned memory
    // (the record, the key tables: boxed, kept until the state drops) or
    // a map element's key or value obtained under the state's pinned
    // epoch, valid until the state is dropped; the caller checked that
    // `mem` is the running `RunState::scoped` call's memory, which is
    // dropped before the state. Nothing holds a Rust reference to them
    // while the program runs (the record is written only by the step,
    // between callback calls; the key tables never after they are made).
    unsafe {
        expose(mem, kind, ptr as *mut u8, len, writable);
    }
}

/// The step of `bpf_for_each_map_elem` (`a`: map, callback context,
/// flags, calls made, token; see `bpfkit_runtime::Callback::Steps`).
pub(crate) fn for_each_step(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let [map_addr, ctx, flags, i, token] = a;
    let (guest, st) = env.split();
    let mem = guest.memory_mut();
    if !st.is_run_memory(mem) {
        return Err(HelperAbort::Failed(
            "helper memory is not the memory of the run's RunState::scoped call".into(),
        ));
    }
    let map = map_ref(st, map_addr)?.clone();
    let record = st.for_each.record.as_mut_ptr() as u64;
    if !st.for_each.record_out {
        hand_out(mem, record, 48, false);
        st.for_each.record_out = true;
    }
    let done = |fe: &mut ForEach, r0: u64| {
        fe.end(token);
        *fe.record = [STEP_DONE, r0, 0, 0, 0, 0];
        Ok(record)
    };
    if flags != 0 {
        return done(&mut st.for_each, errno(EINVAL));
    }
    if i == 0 {
        // A new walk (a token is reused only once its walk ended).
        st.for_each.end(token);
        let array = matches!(map.map_type(), MapType::Array | MapType::PercpuArray);
        let mut keys = 0;
        if array {
            let fe = &mut st.for_each;
            let k = match fe.keys.iter().position(|(m, _)| *m == map_addr) {
                Some(k) => k,
                None => {
                    let n = map.def().max_entries;
                    fe.keys.push((map_addr, (0..n).collect()));
                    fe.keys.len() - 1
                }
            };
            let table = &fe.keys[k].1;
            keys = table.as_ptr() as u64;
            hand_out(mem, keys, 4 * table.len(), false);
        }
        // An array's elements are all its indexes, at fixed addresses: each
        // step looks its index up (a walk the callback stops early looks
        // up no more). A hash map's are those present now: listed.
        let mut elems = Vec::new();
        if !array {
            elems = st.for_each.spare.pop().unwrap_or_default();
            // The key is the element's own (`bpfkit_maps` hands out the
            // element's bytes, kept under the epoch like its value).
            map.for_each_elem(st.cpu, st.guard(), |k, v| {
                elems.push((k.as_ptr() as u64, v.as_ptr() as u64));
                true
            });
        }
        let writable = map.def().map_flags & map_flags::RDONLY_PROG == 0;
        st.for_each.walks.push(Walk {
            token,
            elems,
            writable,
            keys,
        });
    }
    let fe = &mut st.for_each;
    let Some(w) = fe.walks.iter().find(|w| w.token == token) else {
        return done(fe, i);
    };
    let (writable, keys) = (w.writable, w.keys);
    let elem = if keys != 0 {
        // As `Map::for_each_elem` does for arrays: every index below
        // `max_entries` (the key table's length), the run's CPU's value.
        (i < u64::from(map.def().max_entries))
            .then(|| map.lookup_ptr(&(i as u32).to_ne_bytes(), st.cpu, st.guard()))
            .flatten()
            .map(|v| (keys + 4 * i, v.as_ptr() as u64))
    } else {
        w.elems.get(i as usize).copied()
    };
    let fe = &mut st.for_each;
    let Some((key, value)) = elem else {
        return done(fe, i);
    };
    *fe.record = [STEP_CALL, map_addr, key, value, ctx, 0];
    if keys == 0 {
        hand_out(mem, key, map.def().key_size as usize, false);
    }
    hand_out(mem, value, map.def().value_size as usize, writable);
    Ok(record)
}
