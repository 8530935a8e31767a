//! Everything `unsafe` in the crate: executable memory, entering the
//! generated code, and the host functions the code calls back.
//!
//! Code memory is a typestate. Machine code is emitted into a `Vec<u8>`;
//! [`publish`] consumes it, gets read+write pages, copies the code, fills
//! the rest of the last page with `int3`, flips the pages to read+execute
//! with a checked `mprotect`, and returns [`ExecutableCode`], which gives
//! them back on drop. Pages are never writable and executable at the same
//! time.
//!
//! Freed mappings are pooled: on drop a mapping is flipped back to
//! read+write with a checked `mprotect` (so stale code is never executable)
//! and goes into a small process-wide pool (at most [`POOL_BYTES`] in all;
//! past that, or if the flip fails, it is unmapped); `publish` takes a
//! pooled mapping of the same length when there is one instead of mapping
//! (and zeroing) fresh pages, so publishing costs one system call, the
//! flip to read+execute. Every transition goes through a checked
//! `mprotect`.
//!
//! The generated code runs with a pointer to a `Ctx` (in `rdi`, System V)
//! and may call back `helper_trampoline` with the same pointer; the
//! trampoline turns it back into `&mut Ctx` and does the rest in safe code
//! (`crate::call_helper`).

use crate::{Ctx, RunEnv};
use std::io;

/// Published machine code: read+execute pages, unmapped on drop.
#[derive(Debug)]
pub struct ExecutableCode {
    ptr: *mut u8,
    map_len: usize,
    len: usize,
}

// SAFETY: the pages are immutable (read+execute) for the value's whole life,
// so sharing or sending the pointer between threads is sound.
unsafe impl Send for ExecutableCode {}
// SAFETY: as above; no interior mutability.
unsafe impl Sync for ExecutableCode {}

impl ExecutableCode {
    /// Address of the first byte.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Length of the code (without the `int3` padding).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no code.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The code bytes (for disassembly and tests).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `[ptr, ptr + len)` is mapped readable for as long as `self`
        // lives, and nothing writes it after `publish`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for ExecutableCode {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn drop(&mut self) {
        if pool_put(self.ptr as usize, self.map_len) {
            return;
        }
        // SAFETY: `ptr`/`map_len` are exactly the mapping made by `publish`,
        // unmapped only here (it did not go to the pool). A failure cannot be
        // handled in drop; it would leak address space, never corrupt memory.
        unsafe {
            libc::munmap(self.ptr.cast(), self.map_len);
        }
    }

    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    fn drop(&mut self) {}
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}

/// Maps `code` read+execute (see the module docs). Unsupported hosts
/// (see [`crate::is_supported`]) get [`io::ErrorKind::Unsupported`].
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub fn publish(code: Vec<u8>) -> io::Result<ExecutableCode> {
    let _ = code;
    Err(io::ErrorKind::Unsupported.into())
}

/// Most bytes of freed code mappings kept for reuse (see the module docs).
pub const POOL_BYTES: usize = 1 << 20;

/// Freed mappings (address, length), read+execute, owned by the pool.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
static POOL: std::sync::Mutex<(usize, Vec<(usize, usize)>)> =
    std::sync::Mutex::new((0, Vec::new()));

/// Gives a freed mapping to the pool, flipped back to read+write (never
/// executable again while pooled); false when the pool is full or the flip
/// failed (the caller unmaps it).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn pool_put(addr: usize, len: usize) -> bool {
    {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.0 + len > POOL_BYTES {
            return false;
        }
        // Reserve the room, flip without holding the lock.
        pool.0 += len;
    }
    // SAFETY: the caller (`ExecutableCode::drop`) owns this mapping and no
    // reference to its code remains, so nothing executes it any more.
    let rc = unsafe {
        libc::mprotect(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if rc != 0 {
        pool.0 -= len;
        return false;
    }
    pool.1.push((addr, len));
    true
}

/// Takes a pooled mapping of exactly `len` bytes (read+write).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn pool_take(len: usize) -> Option<*mut u8> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let i = pool.1.iter().rposition(|&(_, l)| l == len)?;
    pool.0 -= len;
    Some(pool.1.swap_remove(i).0 as *mut u8)
}

/// Maps `code` read+execute (see the module docs).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn publish(code: Vec<u8>) -> io::Result<ExecutableCode> {
    let page = page_size();
    let map_len = code.len().max(1).div_ceil(page) * page;
    let ptr = match pool_take(map_len) {
        Some(ptr) => ptr,
        None => map_fresh(map_len)?,
    };
    // SAFETY: the mapping is `map_len >= code.len()` bytes, readable and
    // writable, and owned by us alone.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), ptr, code.len());
        std::ptr::write_bytes(ptr.add(code.len()), 0xcc, map_len - code.len());
    }
    // SAFETY: changes the protection of our own mapping only; from here on
    // nothing writes it.
    let rc = unsafe { libc::mprotect(ptr.cast(), map_len, libc::PROT_READ | libc::PROT_EXEC) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // SAFETY: our own mapping, never published: unmap it.
        unsafe {
            libc::munmap(ptr.cast(), map_len);
        }
        return Err(err);
    }
    Ok(ExecutableCode {
        ptr,
        map_len,
        len: code.len(),
    })
}

/// Maps `map_len` fresh bytes read+write.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn map_fresh(map_len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing aliases no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            // Populate now: one kernel call instead of a fault per page.
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast::<u8>())
}

/// Runs the code at `code.addr() + entry` with `ctx`.
///
/// This is the one entry into generated code. Its safety rests on the
/// lowering (`x64::lower`): the code only touches the `Ctx` it is given, the
/// stack buffer and the guest regions that `ctx` describes (every access is
/// checked against them at run time, in checked mode), the host stack below
/// the current `rsp` (bounded: at most `MAX_CALL_FRAMES` nested calls of a
/// few words each), and returns with the System V callee-saved registers
/// restored.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn enter(code: &ExecutableCode, entry: usize, ctx: &mut Ctx) {
    debug_assert!(entry < code.len());
    // SAFETY: `code` holds a complete function produced by `x64::lower`
    // starting at `entry`, with the signature `extern "C" fn(*mut Ctx)`,
    // which upholds the contract in the doc comment above; `ctx` is a valid,
    // exclusive pointer for the duration of the call.
    unsafe {
        let f: extern "C" fn(*mut Ctx) =
            std::mem::transmute::<*const u8, extern "C" fn(*mut Ctx)>(code.ptr.add(entry));
        f(ctx);
    }
}

/// Never called: no `ExecutableCode` exists on unsupported hosts.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(crate) fn enter(code: &ExecutableCode, entry: usize, ctx: &mut Ctx) {
    let _ = (code, entry, ctx);
    unreachable!("no executable code on this host")
}

/// The two words a trampoline returns in `rax:rdx` (System V returns a
/// 16-byte struct of two integers in registers).
#[repr(C)]
pub(crate) struct Ret2 {
    /// New `r0`.
    pub r0: u64,
    /// 0: continue; otherwise the program is over (`Ctx::status` says how).
    pub stop: u64,
}

/// Called by generated code for a helper call with `r1`-`r5` as arguments;
/// `ctx.call_h` and `ctx.call_site` say which helper and where.
pub(crate) extern "C" fn helper_trampoline(
    ctx: *mut Ctx,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
) -> Ret2 {
    // SAFETY: generated code passes the pointer it was entered with, which
    // `run` derived from an exclusive `&mut Ctx` that is not used while the
    // code runs; `env` was set by `run` to a `RunEnv` living on its stack for
    // the whole run, reachable only through this pointer meanwhile.
    let (ctx, env) = unsafe {
        let ctx = &mut *ctx;
        let env = &mut *(ctx.env as usize as *mut RunEnv<'_>);
        (ctx, env)
    };
    // SAFETY: `env.stack`/`env.stack_len` is the run's stack buffer and
    // `env.mem` its `Memory`, both exclusively lent to this run (see
    // `Jit::run_inner`); generated code is suspended during the call, so
    // these are the only live references to them.
    let (stack, mem) = unsafe {
        (
            std::slice::from_raw_parts_mut(env.stack, env.stack_len),
            &mut *env.mem,
        )
    };
    // SAFETY: `env.data` is the `&mut dyn Any` passed to `Jit::run_with_data`,
    // lent to this run and not otherwise used while the code runs.
    let data = env.data.map(|d| unsafe { &mut *d });
    crate::call_helper(ctx, env, stack, mem, data, [a1, a2, a3, a4, a5])
}
