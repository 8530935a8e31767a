//! Map helpers: lookup, update, delete, push/pop/peek, ring buffers.

use crate::region::expose;
use crate::state::RunState;
use crate::state_of;
use bpfkit_maps::{map_flags, Map, MapError, MapType, ValueRef};
use bpfkit_runtime::{HelperAbort, HelperEnv, HelperResult, Memory, RegionKind};
use std::sync::Arc;

/// The map behind a program's map pointer.
pub(crate) fn map_arg(env: &mut HelperEnv<'_, '_>, addr: u64) -> Result<Arc<Map>, HelperAbort> {
    let st = state_of(env)?;
    st.map(addr)
        .cloned()
        .ok_or_else(|| HelperAbort::Failed(format!("{addr:#x} is not a map")))
}

/// Reads `len` guest bytes at `addr`.
pub(crate) fn read(
    env: &mut HelperEnv<'_, '_>,
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
#[allow(unsafe_code)]
fn hand_out(env: &mut HelperEnv<'_, '_>, ptr: *mut u8, len: usize, writable: bool) -> HelperResult {
    // Only the memory of the running `RunState::scoped` call may take the
    // region: it is dropped before the state's epoch guard.
    let mem = env.guest().memory() as *const Memory<'_> as usize;
    if !state_of(env)?.is_run_memory_at(mem) {
        return Err(HelperAbort::Failed(
            "helper memory is not the memory of the run's RunState::scoped call".into(),
        ));
    }
    // SAFETY: `ptr` comes from a `ValueRef` obtained under the run
    // state's pinned epoch (or a buffer the state owns), valid until the
    // state is dropped; the memory is the `scoped` call's (checked above),
    // dropped before the state.
    Ok(unsafe {
        expose(
            env.guest().memory_mut(),
            RegionKind::MapValue,
            ptr,
            len,
            writable,
        )
    })
}

fn raw(v: &ValueRef<'_>) -> (*mut u8, usize) {
    (v.as_ptr(), v.len())
}

/// The key size of the map at `addr`, without keeping a borrow.
fn key_size(env: &mut HelperEnv<'_, '_>, addr: u64) -> Result<usize, HelperAbort> {
    let st = state_of(env)?;
    st.map(addr)
        .map(|m| m.def().key_size as usize)
        .ok_or_else(|| HelperAbort::Failed(format!("{addr:#x} is not a map")))
}

/// Keys up to this size are read into a stack buffer.
const SMALL_KEY: usize = 64;

/// `bpf_map_lookup_elem(map, key)`.
pub(crate) fn lookup(env: &mut HelperEnv<'_, '_>, a: [u64; 5]) -> HelperResult {
    let n = key_size(env, a[0])?;
    let mut small = [0u8; SMALL_KEY];
    let heap;
    let key: &[u8] = if n <= SMALL_KEY {
        env.guest().read(a[1], &mut small[..n])?;
        &small[..n]
    } else {
        heap = read(env, a[1], n)?;
        &heap
    };
    let st = state_of(env)?;
    let Some(map) = st.map(a[0]) else {
        return Err(HelperAbort::Failed(format!("{:#x} is not a map", a[0])));
    };
    match map.map_type() {
        MapType::ArrayOfMaps | MapType::HashOfMaps | MapType::Devmap | MapType::DevmapHash => {
            let map = map.clone();
            lookup_special(env, &map, key)
        }
        _ => {
            let writable = value_writable(map);
            let Some((ptr, len)) = map.lookup_ptr(key, st.cpu, st.guard()).map(|v| raw(&v)) else {
                return Ok(0);
            };
            hand_out(env, ptr, len, writable)
        }
    }
}

/// Lookups in maps of maps (the inner map's address) and devmaps (a
/// read-only copy of `struct bpf_devmap_val`).
fn lookup_special(env: &mut HelperEnv<'_, '_>, map: &Arc<Map>, key: &[u8]) -> HelperResult {
    let st = state_of(env)?;
    match map.map_type() {
        MapType::ArrayOfMaps | MapType::HashOfMaps => {
            let Some(id) = map.inner_map(key, st.guard()).and_then(Map::id) else {
                return Ok(0);
            };
            let Some(inner) = st.maps.registry().and_then(|r| r.get(id)) else {
                return Ok(0);
            };
            let addr = Arc::as_ptr(&inner) as u64;
            if !st.inner.iter().any(|(a, _)| *a == addr) {
                st.inner.push((addr, inner));
            }
            Ok(addr)
        }
        _ => {
            let Ok(v) = map.lookup(key) else {
                return Ok(0);
            };
            let mut words = vec![0u64; v.len().div_ceil(8)].into_boxed_slice();
            for (w, c) in words.iter_mut().zip(v.chunks(8)) {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                *w = u64::from_ne_bytes(b);
            }
            let ptr = words.as_mut_ptr().cast::<u8>();
            st.scratch.push(words);
            hand_out(env, ptr, v.len(), false)
        }
    }
}

/// `bpf_map_update_elem(map, key, value, flags)`.
pub(crate) fn update(env: &mut HelperEnv<'_, '_>, a: [u64; 5]) -> HelperResult {
    let map = map_arg(env, a[0])?;
    let key = read(env, a[1], map.def().key_size as usize)?;
    let value = read(env, a[2], map.def().value_size as usize)?;
    let cpu = state_of(env)?.cpu;
    Ok(ret(map.prog_update(&key, &value, a[3], cpu)))
}

/// `bpf_map_delete_elem(map, key)`.
pub(crate) fn delete(env: &mut HelperEnv<'_, '_>, a: [u64; 5]) -> HelperResult {
    let map = map_arg(env, a[0])?;
    let key = read(env, a[1], map.def().key_size as usize)?;
    Ok(ret(map.prog_delete(&key)))
}

/// `bpf_map_push_elem(map, value, flags)`.
pub(crate) fn push(env: &mut HelperEnv<'_, '_>, a: [u64; 5]) -> HelperResult {
    let map = map_arg(env, a[0])?;
    let value = read(env, a[1], map.def().value_size as usize)?;
    Ok(ret(map.push(&value, a[2])))
}

/// `bpf_map_pop_elem(map, value)` and `bpf_map_peek_elem(map, value)`.
pub(crate) fn pop_or_peek(env: &mut HelperEnv<'_, '_>, a: [u64; 5], pop: bool) -> HelperResult {
    let map = map_arg(env, a[0])?;
    let mut out = vec![0u8; map.def().value_size as usize];
    let r = if pop {
        map.pop(&mut out)
    } else {
        map.peek(&mut out)
    };
    match r {
        Ok(()) => {
            env.guest().write(a[1], &out)?;
            Ok(0)
        }
        Err(e) => {
            // An empty queue or stack zeroes the caller's buffer, as the
            // kernel's `__queue_map_get`/`__stack_map_get` do.
            if e.errno() == crate::ENOENT {
                env.guest().write(a[1], &out)?;
            }
            Ok(e.to_helper_ret())
        }
    }
}

/// `bpf_ringbuf_output(ringbuf, data, size, flags)`.
pub(crate) fn ringbuf_output(env: &mut HelperEnv<'_, '_>, a: [u64; 5]) -> HelperResult {
    let map = map_arg(env, a[0])?;
    let data = read(env, a[1], a[2] as usize)?;
    Ok(ret(map.ringbuf_output(&data, a[3])))
}

/// `bpf_ringbuf_reserve(ringbuf, size, flags)`.
pub(crate) fn ringbuf_reserve(env: &mut HelperEnv<'_, '_>, a: [u64; 5]) -> HelperResult {
    let map = map_arg(env, a[0])?;
    let st = state_of(env)?;
    let Some((ptr, len)) = map.ringbuf_reserve(a[1], a[2], st.guard()).map(|v| raw(&v)) else {
        return Ok(0);
    };
    st.reserved.push((ptr as u64, map));
    hand_out(env, ptr, len, true)
}

/// `bpf_ringbuf_submit(data, flags)` and `bpf_ringbuf_discard(data, flags)`.
pub(crate) fn ringbuf_commit(
    env: &mut HelperEnv<'_, '_>,
    a: [u64; 5],
    discard: bool,
) -> HelperResult {
    let st: &mut RunState = state_of(env)?;
    let Some(i) = st.reserved.iter().position(|(addr, _)| *addr == a[0]) else {
        return Err(HelperAbort::Failed(format!(
            "{:#x} is not a reserved ring buffer record",
            a[0]
        )));
    };
    let (_, map) = st.reserved.swap_remove(i);
    let r = if discard {
        map.ringbuf_discard(a[0], a[1])
    } else {
        map.ringbuf_submit(a[0], a[1])
    };
    r.map_err(|e| HelperAbort::Failed(e.to_string()))?;
    Ok(0)
}

/// `bpf_ringbuf_query(ringbuf, flags)`.
pub(crate) fn ringbuf_query(env: &mut HelperEnv<'_, '_>, a: [u64; 5]) -> HelperResult {
    let map = map_arg(env, a[0])?;
    Ok(map.ringbuf_query(a[1]))
}
