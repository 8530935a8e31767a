//! Host memory for XDP frames: one page below 4 GiB, so that the 32-bit
//! `data`/`data_end`/`data_meta` fields of `struct xdp_md` can hold the
//! frame's real addresses (see ARCHITECTURE.md, "The xdp_md context").
//! Also the host's clocks for the time helpers. The only unsafe code of
//! the crate.

use bpfkit::helpers::ClockId;
use std::io;

/// The host's clock `id` in nanoseconds (`clock_gettime`), the clocks the
/// kernel's `bpf_ktime_get_*ns` helpers read; 0 if the call fails.
pub fn host_clock(id: ClockId) -> u64 {
    let clock = match id {
        ClockId::Monotonic => libc::CLOCK_MONOTONIC,
        ClockId::Boot => libc::CLOCK_BOOTTIME,
        ClockId::MonotonicCoarse => libc::CLOCK_MONOTONIC_COARSE,
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Bytes in a frame: the kernel's `PAGE_SIZE`, the frame size
/// `BPF_PROG_TEST_RUN` gives an XDP buffer.
pub const FRAME_SIZE: usize = 4096;

/// A zeroed, writable page mapped below 4 GiB, unmapped on drop.
#[derive(Debug)]
pub struct LowPage {
    ptr: *mut u8,
}

// SAFETY: the page is owned exclusively by this value; moving it to
// another thread moves that ownership.
unsafe impl Send for LowPage {}

impl LowPage {
    /// Maps a page with `MAP_32BIT` (x86-64 Linux only).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    pub fn new() -> io::Result<LowPage> {
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                FRAME_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = p.cast::<u8>();
        if (ptr as u64).saturating_add(FRAME_SIZE as u64) > u32::MAX as u64 {
            // Not expected with MAP_32BIT; refuse rather than truncate.
            drop(LowPage { ptr });
            return Err(io::Error::other(
                "mmap(MAP_32BIT) returned memory above 4 GiB",
            ));
        }
        Ok(LowPage { ptr })
    }

    /// Elsewhere there is no portable way to get memory below 4 GiB.
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    pub fn new() -> io::Result<LowPage> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "XDP buffers need memory below 4 GiB (mmap MAP_32BIT, x86-64 Linux only)",
        ))
    }

    /// The page's bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live mapping of FRAME_SIZE readable and
        // writable bytes owned by `self`, borrowed mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, FRAME_SIZE) }
    }

    /// The page's bytes, read-only.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`, shared borrow.
        unsafe { std::slice::from_raw_parts(self.ptr, FRAME_SIZE) }
    }
}

impl Drop for LowPage {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the start of a FRAME_SIZE mapping made by `new`
        // and not yet unmapped; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), FRAME_SIZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_clocks_are_ordered() {
        let coarse = host_clock(ClockId::MonotonicCoarse);
        let mono = host_clock(ClockId::Monotonic);
        let boot = host_clock(ClockId::Boot);
        assert!(coarse > 0 && coarse <= mono && mono <= boot);
    }

    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn page_is_low_and_zeroed() {
        let mut p = LowPage::new().unwrap();
        assert!(p.bytes().as_ptr() as u64 + FRAME_SIZE as u64 <= u32::MAX as u64);
        assert!(p.bytes().iter().all(|&b| b == 0));
        p.bytes_mut()[7] = 1;
        assert_eq!(p.bytes()[7], 1);
    }
}
