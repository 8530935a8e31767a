//! XDP contexts for tests that run the JIT on a real packet: `struct
//! xdp_md` and a packet page below 4 GiB (its fields are 32-bit).

/// `struct xdp_md` for the packet `[data, data_end)`, data_meta = data.
pub fn xdp_md(data: u64, data_end: u64) -> Vec<u8> {
    let mut md = vec![0u8; 24];
    md[0..4].copy_from_slice(&(data as u32).to_ne_bytes());
    md[4..8].copy_from_slice(&(data_end as u32).to_ne_bytes());
    md[8..12].copy_from_slice(&(data as u32).to_ne_bytes());
    md
}

/// A packet buffer below 4 GiB (the `xdp_md` fields are 32-bit, as the
/// facade's XDP frame), filled with 0x5a; leaked (one page per test).
pub fn low_packet(len: usize) -> Option<&'static mut [u8]> {
    assert!(len <= 4096);
    // SAFETY: an anonymous private mapping of one page, no address hint;
    // the result is checked before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED || ptr as u64 + 4096 > u32::MAX as u64 {
        return None;
    }
    // SAFETY: the page is mapped read+write, never unmapped, and only
    // reachable through the returned (unique) slice.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
    buf.fill(0x5a);
    Some(buf)
}
