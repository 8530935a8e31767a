//! XDP helpers: buffer adjustments, redirects, tail calls, perf events.

use crate::maps::{map_ref, not_a_map, read, readable};
use crate::state::{Redirect, XdpBuff, MAX_TAIL_CALL_CNT};
use crate::{errno, Env, EACCES, EFAULT, EINVAL, EOPNOTSUPP};
use bpfkit_maps::{MapType, BPF_F_INDEX_MASK};
use bpfkit_runtime::{Guest, HelperAbort, HelperResult};

/// `ETH_HLEN`.
pub const ETH_HLEN: u64 = 14;
/// `sizeof(struct xdp_frame)` on 64-bit kernels: the part of the headroom
/// that metadata and `adjust_head` may not use.
pub const XDP_FRAME_SIZE: u64 = 40;
/// `SKB_DATA_ALIGN(sizeof(struct skb_shared_info))` on x86-64: the
/// tailroom reserved at the end of a frame.
pub const XDP_TAILROOM: u64 = 320;
/// `XDP_PACKET_HEADROOM`.
pub const XDP_PACKET_HEADROOM: u64 = 256;
/// Size of a fragment page (`frag_size` of the test run's receive queue).
pub const FRAG_SIZE: u64 = 4096;
/// The largest metadata area (`meta_len` is a `u8` in `skb_shared_info`).
pub const XDP_META_MAX: u64 = 255;

const XDP_ABORTED: u64 = 0;
const XDP_REDIRECT: u64 = 4;
const BPF_F_BROADCAST: u64 = 1 << 3;
const BPF_F_EXCLUDE_INGRESS: u64 = 1 << 4;
const BPF_F_CTXLEN_MASK: u64 = 0xfffff << 32;

fn buff(env: &mut Env<'_, '_, '_>) -> Result<XdpBuff, HelperAbort> {
    env.state().xdp.ok_or_else(not_xdp)
}

/// The abort of an XDP helper in a run without an XDP buffer, out of line.
#[cold]
#[inline(never)]
fn not_xdp() -> HelperAbort {
    HelperAbort::Failed("not an XDP run".into())
}

/// Moves the run's XDP buffer to `meta`, `data` and `end` and rewrites the
/// context's `data`, `data_end` and `data_meta` (32-bit fields holding the
/// addresses). The buffer is changed in place (not copied out and back:
/// these helpers run once per packet in programs that move the packet).
#[inline(always)]
fn move_buff(env: &mut Env<'_, '_, '_>, meta: u64, data: u64, end: u64) -> Result<(), HelperAbort> {
    let (guest, st) = env.split();
    let b = st.xdp.as_mut().ok_or_else(not_xdp)?;
    b.meta = meta;
    b.data = data;
    b.end = end;
    st.ctx_region = store_ctx(guest, st.ctx_region, b)?;
    Ok(())
}

/// Writes `b`'s `data`, `data_end` and `data_meta` into its context (the
/// 32-bit fields holding the addresses) and returns the region written,
/// the hint for the next call. One fixed-size store into the region found
/// last time (`hint`), not through the memory's lookup hint: the
/// program's own accesses move that hint elsewhere between two calls. The
/// context is a region of the run's memory, never the guest stack, so the
/// stack is not tried first.
#[inline(always)]
fn store_ctx(guest: &mut Guest<'_, '_>, hint: usize, b: &XdpBuff) -> Result<usize, HelperAbort> {
    let mut md = [0u8; 12];
    md[0..4].copy_from_slice(&(b.data as u32).to_le_bytes());
    md[4..8].copy_from_slice(&(b.end as u32).to_le_bytes());
    md[8..12].copy_from_slice(&(b.meta as u32).to_le_bytes());
    Ok(guest.memory_mut().store_hinted::<12>(hint, b.ctx, md)?)
}

fn metalen_invalid(len: u64) -> bool {
    !len.is_multiple_of(4) || len > XDP_META_MAX
}

/// `bpf_xdp_adjust_head(ctx, delta)`. The buffer is read and moved in
/// place (not copied out first); metadata moves with `data` through a
/// small stack buffer (at most [`XDP_META_MAX`] bytes, usually a few).
#[inline]
pub(crate) fn adjust_head(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let delta = a[1] as i32 as i64;
    let (guest, st) = env.split();
    let Some(b) = st.xdp.as_mut() else {
        return Err(not_xdp());
    };
    let metalen = b.data - b.meta;
    let data = b.data.wrapping_add(delta as u64);
    if data < b.hard_start + metalen + XDP_FRAME_SIZE || data > b.end.saturating_sub(ETH_HLEN) {
        return Ok(errno(EINVAL));
    }
    let meta = b.meta.wrapping_add(delta as u64);
    if metalen > 0 {
        move_meta(guest, b.meta, meta, metalen as usize)?;
    }
    b.meta = meta;
    b.data = data;
    st.ctx_region = store_ctx(guest, st.ctx_region, b)?;
    Ok(0)
}

/// Copies the `len` metadata bytes at `from` to `to` (the ranges may
/// overlap): read whole, then written, as the kernel's `memmove`.
#[inline]
fn move_meta(guest: &mut Guest<'_, '_>, from: u64, to: u64, len: usize) -> Result<(), HelperAbort> {
    let mut small = [0u8; 32];
    let mut big = Vec::new();
    let buf = if len <= small.len() {
        &mut small[..len]
    } else {
        big.resize(len, 0);
        &mut big[..]
    };
    guest.read(from, buf)?;
    guest.write(to, buf)?;
    Ok(())
}

/// `bpf_xdp_adjust_meta(ctx, delta)`. The buffer is read and moved in
/// place (not copied out first).
#[inline]
pub(crate) fn adjust_meta(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let delta = a[1] as i32 as i64;
    let (guest, st) = env.split();
    let Some(b) = st.xdp.as_mut() else {
        return Err(not_xdp());
    };
    let meta = b.meta.wrapping_add(delta as u64);
    if meta < b.hard_start + XDP_FRAME_SIZE || meta > b.data {
        return Ok(errno(EINVAL));
    }
    if metalen_invalid(b.data - meta) {
        return Ok(errno(EACCES));
    }
    b.meta = meta;
    st.ctx_region = store_ctx(guest, st.ctx_region, b)?;
    Ok(0)
}

/// `bpf_xdp_adjust_tail(ctx, delta)`. A multi-buffer packet grows or
/// shrinks at its last fragments, as the kernel's
/// `bpf_xdp_frags_increase_tail`/`_shrink_tail` do (out of line).
///
/// A linear packet, once per packet in programs that trim or extend it,
/// takes the short way: the buffer is read in place (not copied out), the
/// added bytes are zeroed in the packet region directly
/// ([`bpfkit_runtime::Memory::zero_in_packet`]; the general write is the
/// fallback) and only `data_end` is moved, so that the direct entry needs
/// few registers.
#[inline]
pub(crate) fn adjust_tail(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let delta = a[1] as i32 as i64;
    let (guest, st) = env.split();
    let Some(b) = st.xdp.as_mut() else {
        return Err(not_xdp());
    };
    if !st.frags.is_empty() {
        return adjust_tail_frags(env, delta);
    }
    let hard_end = b.hard_start + b.frame_sz - XDP_TAILROOM;
    let old_end = b.end;
    let end = old_end.wrapping_add(delta as u64);
    if end > hard_end || end < b.data + ETH_HLEN {
        return Ok(errno(EINVAL));
    }
    if delta > 0 && !guest.memory_mut().zero_in_packet(old_end, delta as usize) {
        // `delta` is at most the frame's tailroom (checked above).
        zero_slow(guest, old_end, delta as usize)?;
    }
    b.end = end;
    st.ctx_region = store_ctx(guest, st.ctx_region, b)?;
    Ok(0)
}

/// Zeroes `len` bytes at `addr` through the guest's general write (a
/// packet not in the memory's packet region).
#[cold]
#[inline(never)]
fn zero_slow(guest: &mut Guest<'_, '_>, addr: u64, len: usize) -> Result<(), HelperAbort> {
    static ZEROS: [u8; FRAG_SIZE as usize] = [0; FRAG_SIZE as usize];
    match ZEROS.get(..len) {
        Some(z) => guest.write(addr, z)?,
        None => guest.write(addr, &vec![0u8; len])?,
    }
    Ok(())
}

/// [`adjust_tail`] of a multi-buffer packet (fragments present).
#[cold]
#[inline(never)]
fn adjust_tail_frags(env: &mut Env<'_, '_, '_>, delta: i64) -> HelperResult {
    let b = buff(env)?;
    let st = env.state();
    if delta < 0 {
        let mut left = delta.unsigned_abs();
        let total = b.end - b.data + st.frags.iter().map(|f| f.len() as u64).sum::<u64>();
        if left > total.saturating_sub(ETH_HLEN) {
            return Ok(errno(EINVAL));
        }
        while left > 0 {
            let Some(last) = st.frags.last_mut() else {
                break;
            };
            let cut = left.min(last.len() as u64);
            last.truncate(last.len() - cut as usize);
            left -= cut;
            if last.is_empty() {
                st.frags.pop();
            }
        }
        if st.frags.is_empty() && left > 0 {
            move_buff(env, b.meta, b.data, b.end - left)?;
        }
        return Ok(0);
    }
    let Some(last) = st.frags.last_mut() else {
        return Ok(errno(EINVAL));
    };
    if b.frame_sz < FRAG_SIZE {
        return Ok(errno(EOPNOTSUPP));
    }
    let tailroom = FRAG_SIZE - last.len() as u64;
    if delta as u64 > tailroom {
        return Ok(errno(EINVAL));
    }
    last.resize(last.len() + delta as usize, 0);
    Ok(0)
}

/// Copies `len` packet bytes from `data` on, continuing into the
/// fragments (`bpf_xdp_copy`).
fn packet_bytes(env: &mut Env<'_, '_, '_>, b: XdpBuff, len: u64) -> Result<Vec<u8>, HelperAbort> {
    let linear = len.min(b.end - b.data);
    let mut out = read(env, b.data, linear as usize)?;
    let st = env.state();
    for f in &st.frags {
        if out.len() as u64 >= len {
            break;
        }
        let n = (len - out.len() as u64).min(f.len() as u64) as usize;
        out.extend_from_slice(&f[..n]);
    }
    Ok(out)
}

/// Length of the packet with its fragments (`xdp_get_buff_len`).
fn buff_len(env: &mut Env<'_, '_, '_>, b: XdpBuff) -> Result<u64, HelperAbort> {
    let frags: u64 = env.state().frags.iter().map(|f| f.len() as u64).sum();
    Ok(b.end - b.data + frags)
}

/// `bpf_xdp_get_buff_len(ctx)`.
#[inline]
pub(crate) fn get_buff_len(env: &mut Env<'_, '_, '_>, _a: [u64; 5]) -> HelperResult {
    let b = buff(env)?;
    buff_len(env, b)
}

/// Checks of `bpf_xdp_pointer`: offsets and lengths past 64 KiB give
/// `-EFAULT`, a range past the packet `-EINVAL`.
fn check_range(
    env: &mut Env<'_, '_, '_>,
    b: XdpBuff,
    off: u64,
    len: u64,
) -> Result<Option<u64>, HelperAbort> {
    if off > 0xffff || len > 0xffff {
        return Ok(Some(errno(EFAULT)));
    }
    if off + len > buff_len(env, b)? {
        return Ok(Some(errno(EINVAL)));
    }
    Ok(None)
}

/// `bpf_xdp_load_bytes(ctx, offset, buf, len)`: packet bytes (fragments
/// included) into `buf`.
#[inline]
pub(crate) fn load_bytes(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let b = buff(env)?;
    let (off, len) = (a[1] as u32 as u64, a[3] as u32 as u64);
    if let Some(e) = check_range(env, b, off, len)? {
        return Ok(e);
    }
    let bytes = packet_bytes(env, b, off + len)?;
    env.guest().write(a[2], &bytes[off as usize..])?;
    Ok(0)
}

/// `bpf_xdp_store_bytes(ctx, offset, buf, len)`: `buf` into the packet
/// (fragments included).
#[inline]
pub(crate) fn store_bytes(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let b = buff(env)?;
    let (off, len) = (a[1] as u32 as u64, a[3] as u32 as u64);
    if let Some(e) = check_range(env, b, off, len)? {
        return Ok(e);
    }
    let src = read(env, a[2], len as usize)?;
    let linear = b.end - b.data;
    let head = if off < linear {
        let n = (linear - off).min(len) as usize;
        env.guest().write(b.data + off, &src[..n])?;
        n
    } else {
        0
    };
    // the rest goes to the fragments
    let st = env.state();
    let mut pos = linear; // packet offset of the current fragment
    let mut done = head;
    let mut at = off + head as u64;
    for f in &mut st.frags {
        let end = pos + f.len() as u64;
        if done < src.len() && at < end {
            let i = (at - pos) as usize;
            let n = (src.len() - done).min(f.len() - i);
            f[i..i + n].copy_from_slice(&src[done..done + n]);
            done += n;
            at += n as u64;
        }
        pos = end;
    }
    Ok(0)
}

/// `bpf_redirect(ifindex, flags)` (the XDP flavour).
#[inline]
pub(crate) fn redirect(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    if a[1] != 0 {
        return Ok(XDP_ABORTED);
    }
    env.state()
        .set_redirect(Some(Redirect::Ifindex(a[0] as u32)));
    Ok(XDP_REDIRECT)
}

/// `bpf_redirect_map(map, key, flags)`.
#[inline]
pub(crate) fn redirect_map(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    // The map is borrowed from the run's table (no reference counting per
    // packet) until the target is known.
    let st = env.state();
    let map = map_ref(st, a[0])?;
    let (key, flags) = (a[1] as u32, a[2]);
    // The low bits are the fallback action; only devmaps take the
    // broadcast flags.
    let action_mask = 3u64;
    if !matches!(map.map_type(), MapType::Devmap | MapType::DevmapHash) {
        if flags & !action_mask != 0 {
            return Ok(XDP_ABORTED);
        }
        let target = map
            .lookup(&key.to_ne_bytes())
            .ok()
            .map(|_| Redirect::Other { map: map.id(), key });
        return Ok(set_redirect(st, target, flags & action_mask));
    }
    if flags & !(action_mask | BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) != 0 {
        return Ok(XDP_ABORTED);
    }
    let id = map.id();
    if flags & BPF_F_BROADCAST != 0 {
        st.set_redirect(Some(Redirect::Broadcast { map: id }));
        return Ok(XDP_REDIRECT);
    }
    // The target this run found last for the same map and key, while the
    // map's count for the key still reads what it read then.
    if let Some((m, k, gen, t)) = st.redirect_memo {
        if m == a[0] && k == key && map.redirect_generation(key) == Some(gen) {
            st.set_redirect(Some(Redirect::Devmap {
                map: id,
                key,
                ifindex: t.ifindex,
            }));
            return Ok(XDP_REDIRECT);
        }
    }
    let target = map.redirect_target_gen(key, st.guard()).map(|(t, gen)| {
        if let Some(gen) = gen {
            st.redirect_memo = Some((a[0], key, gen, t));
        }
        Redirect::Devmap {
            map: id,
            key,
            ifindex: t.ifindex,
        }
    });
    Ok(set_redirect(st, target, flags & action_mask))
}

/// The end of [`redirect_map`]: `XDP_REDIRECT` to `target`, or no
/// redirect and the fallback `action`.
#[inline(always)]
fn set_redirect(st: &mut crate::RunState, target: Option<Redirect>, action: u64) -> u64 {
    match target {
        Some(t) => {
            st.set_redirect(Some(t));
            XDP_REDIRECT
        }
        None => {
            st.set_redirect(None);
            action
        }
    }
}

/// `bpf_tail_call(ctx, prog_array, index)`: on success the program ends
/// here and the embedder runs the target (see [`crate::RunState::tail_call`]);
/// otherwise execution falls through. As in the kernel, the count is
/// taken before the slot is read, so an empty slot uses one of the 33.
#[inline]
pub(crate) fn tail_call(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let st = env.state();
    let map = map_ref(st, a[1])?;
    let index = a[2] as u32;
    if map.map_type() != MapType::ProgArray || index >= map.def().max_entries {
        return Ok(errno(EINVAL));
    }
    // Read here (no side effect) so that the map's borrow ends before the
    // count changes; used only if the count allows the call, as before.
    let target = map.prog_at(index);
    if st.tail_calls >= MAX_TAIL_CALL_CNT {
        return Ok(errno(EINVAL));
    }
    st.tail_calls += 1;
    match target {
        Some(id) => {
            st.tail_call = Some(id);
            Err(HelperAbort::Stop { r0: 0 })
        }
        None => Ok(errno(crate::ENOENT)),
    }
}

/// `bpf_perf_event_output(ctx, map, flags, data, size)` for XDP: the upper
/// 32 bits of `flags` ask for that many packet bytes after the sample.
///
/// The answers that need no record (bad flags, a context length past the
/// packet, an index past the array, an empty slot, a full buffer) come
/// from here with a few tests; the record is built out of line
/// ([`build_record`]) and only when the buffer keeps it, so that the
/// direct entry keeps few values (and saves few registers) on the way.
#[inline]
pub(crate) fn perf_event_output(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let flags = a[2];
    if flags & !(BPF_F_CTXLEN_MASK | BPF_F_INDEX_MASK) != 0 {
        return Ok(errno(EINVAL));
    }
    let ctx_len = (flags & BPF_F_CTXLEN_MASK) >> 32;
    let (guest, st) = env.split();
    let (data, linear_len) = st.xdp.as_ref().map_or((0, 0), |b| (b.data, b.end - b.data));
    // The packet's length matters only when bytes of it are asked for
    // (the fragments are summed only when the linear part is too short).
    if ctx_len > linear_len && (st.frags.is_empty() || !ctx_in_frags(st, ctx_len, linear_len)) {
        return Ok(errno(EFAULT));
    }
    let map = st.map(a[1]).ok_or_else(|| not_a_map(a[1]))?;
    let size = a[4] as usize;
    let linear = ctx_len.min(linear_len) as usize;
    // The reads are checked before the map is asked, so that a bad
    // pointer faults whether or not the buffer has room (the record is
    // built only when it has).
    readable(guest, a[3], size)?;
    if linear > 0 {
        readable(guest, data, linear)?;
    }
    // What the record is made of is passed as the few values it is
    // derived from: the closure's captures are stored before the map's
    // tests, whether or not a record is built.
    let (guest, st) = (&*guest, &*st);
    let sample = a[3];
    let len = size.saturating_add(ctx_len as usize);
    Ok(
        match map.perf_event_output_with(st.cpu, flags & BPF_F_INDEX_MASK, len, move || {
            build_record(guest, st, sample, size, ctx_len as usize)
        })? {
            Ok(()) => 0,
            Err(e) => e.to_helper_ret(),
        },
    )
}

/// Whether the packet with its fragments has `ctx_len` bytes (the linear
/// part has `linear_len`, fewer): out of line, for multi-buffer packets.
#[cold]
#[inline(never)]
fn ctx_in_frags(st: &crate::RunState, ctx_len: u64, linear_len: u64) -> bool {
    let frags: u64 = st.frags.iter().map(|f| f.len() as u64).sum();
    st.xdp.is_some() && ctx_len <= linear_len + frags
}

/// The record of [`perf_event_output`], built once in the buffer the map
/// keeps (only when the buffer has room for it): the `size` bytes of the
/// sample, then `ctx_len` packet bytes, from the linear part and then from
/// the fragments (the caller checked that the packet has them and that
/// the linear bytes and the sample are readable).
#[inline(never)]
fn build_record(
    guest: &Guest<'_, '_>,
    st: &crate::RunState,
    sample: u64,
    size: usize,
    ctx_len: usize,
) -> Result<Vec<u8>, HelperAbort> {
    let (data, linear_len) = st.xdp.as_ref().map_or((0, 0), |b| (b.data, b.end - b.data));
    let linear = ctx_len.min(linear_len as usize);
    let mut out = Vec::new();
    out.try_reserve_exact(size.saturating_add(ctx_len))
        .map_err(|_| HelperAbort::Failed(format!("perf event record of {size} bytes")))?;
    out.resize(size + linear, 0);
    if size > 0 {
        guest.read(sample, &mut out[..size])?;
    }
    if linear > 0 {
        guest.read(data, &mut out[size..])?;
    }
    for f in &st.frags {
        if out.len() - size >= ctx_len {
            break;
        }
        let n = (ctx_len - (out.len() - size)).min(f.len());
        out.extend_from_slice(&f[..n]);
    }
    Ok(out)
}
