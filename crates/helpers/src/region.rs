//! The one unsafe operation of the crate: making a map value (or a
//! helper-owned buffer) addressable by the running program.

use bpfkit_runtime::{Access, Memory, RegionKind};

/// Registers `[ptr, ptr + len)` as a guest region of `mem` unless a region
/// already allows the same access to it; returns the guest address.
///
/// # Safety
///
/// The memory must stay valid (for writes too when `writable`) until `mem`
/// is cleared or dropped, and must not be accessed through Rust
/// references meanwhile. Callers pass values obtained under the
/// [`crate::RunState`]'s pinned epoch (or buffers the state owns), and
/// `RunState::new`'s contract makes the embedder clear or drop the memory
/// before the state.
pub(crate) unsafe fn expose(
    mem: &mut Memory<'_>,
    kind: RegionKind,
    ptr: *mut u8,
    len: usize,
    writable: bool,
) -> u64 {
    let addr = ptr as u64;
    let access = if writable {
        Access::Write
    } else {
        Access::Read
    };
    if len == 0 || mem.find(addr, len, access).is_ok() {
        return addr;
    }
    // SAFETY: forwarded from this function's contract (validity until the
    // memory is cleared, no Rust references, no overlap: a region that
    // already covers the bytes was found above, and map values, records
    // and device map elements are distinct allocations).
    unsafe { mem.add_raw(kind, ptr, len, writable) }
}
