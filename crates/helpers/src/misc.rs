//! Time, random numbers, the CPU number and checksums.

use crate::{errno, Env, EINVAL};
use bpfkit_runtime::HelperResult;
use std::sync::OnceLock;
use std::time::Instant;

/// A clock of the kernel that time helpers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClockId {
    /// `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`).
    Monotonic,
    /// `CLOCK_BOOTTIME` (`bpf_ktime_get_boot_ns`).
    Boot,
    /// `CLOCK_MONOTONIC_COARSE` (`bpf_ktime_get_coarse_ns`).
    MonotonicCoarse,
}

/// How a run reads time: nanoseconds of the given clock. Embedders that
/// can call `clock_gettime` pass the host's clocks (`bpfkit-datapath`
/// does), so that values match what a control plane reads; the default is
/// [`fallback_clock`].
pub type Clock = fn(ClockId) -> u64;

/// Nanoseconds on a monotonic clock that starts at one second when the
/// process first asks (never 0, like the kernel's clocks after boot).
pub(crate) fn monotonic_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    1_000_000_000 + start.elapsed().as_nanos() as u64
}

/// The kernel's coarse clocks tick with the jiffy (4 ms at `HZ=250`).
const COARSE_NS: u64 = 4_000_000;

/// The clock used without the host's: one monotonic clock from process
/// start (plus one second) for `Monotonic` and `Boot` (a userspace run
/// never suspends), truncated to 4 ms for `MonotonicCoarse` (so it never
/// runs ahead of the others).
pub fn fallback_clock(id: ClockId) -> u64 {
    let t = monotonic_ns();
    match id {
        ClockId::Monotonic | ClockId::Boot => t,
        ClockId::MonotonicCoarse => t - t % COARSE_NS,
    }
}

/// `bpf_ktime_get_ns()`.
#[inline]
pub(crate) fn ktime(env: &mut Env<'_, '_, '_>, _a: [u64; 5]) -> HelperResult {
    Ok((env.state().clock)(ClockId::Monotonic))
}

/// `bpf_ktime_get_boot_ns()`.
#[inline]
pub(crate) fn ktime_boot(env: &mut Env<'_, '_, '_>, _a: [u64; 5]) -> HelperResult {
    Ok((env.state().clock)(ClockId::Boot))
}

/// `bpf_ktime_get_coarse_ns()`.
#[inline]
pub(crate) fn ktime_coarse(env: &mut Env<'_, '_, '_>, _a: [u64; 5]) -> HelperResult {
    Ok((env.state().clock)(ClockId::MonotonicCoarse))
}

/// `bpf_get_prandom_u32()`.
#[inline]
pub(crate) fn prandom(env: &mut Env<'_, '_, '_>, _a: [u64; 5]) -> HelperResult {
    Ok(env.state().next_u32() as u64)
}

/// `bpf_get_smp_processor_id()`.
#[inline]
pub(crate) fn cpu(env: &mut Env<'_, '_, '_>, _a: [u64; 5]) -> HelperResult {
    Ok(env.state().cpu as u64)
}

/// The 32-bit ones' complement sum of `words` (little-endian 32-bit
/// words) added to `seed`, folded to 32 bits as `csum_partial` returns it.
pub fn csum_add(seed: u32, bytes: &[u8], invert: bool) -> u32 {
    let mut sum = seed as u64;
    for c in bytes.chunks_exact(4) {
        let mut w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if invert {
            w = !w;
        }
        sum += w as u64;
    }
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// `bpf_csum_diff(from, from_size, to, to_size, seed)`.
#[inline]
pub(crate) fn csum_diff(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let (from_size, to_size) = (a[1] as u32 as u64, a[3] as u32 as u64);
    if (from_size | to_size) & 3 != 0 || from_size + to_size > 512 {
        return Ok(errno(EINVAL));
    }
    // At most 512 bytes in all: read on the stack.
    let mut buf = [0u8; 512];
    let (from, to) = buf.split_at_mut(from_size as usize);
    let to = &mut to[..to_size as usize];
    let guest = env.guest();
    if !from.is_empty() {
        guest.read(a[0], from)?;
    }
    if !to.is_empty() {
        guest.read(a[2], to)?;
    }
    let s = csum_add(a[4] as u32, from, true);
    Ok(csum_add(s, to, false) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csum_folds_carries() {
        assert_eq!(csum_add(0, &[0xff; 8], false), 0xffff_ffff);
        assert_eq!(csum_add(1, &[0xff, 0xff, 0xff, 0xff], false), 1);
        assert_eq!(csum_add(0, &[1, 0, 0, 0], true), 0xffff_fffe);
    }
}
