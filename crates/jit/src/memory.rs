//! Everything `unsafe` in the crate: executable memory, entering the
//! generated code, and the host functions the code calls back.
//!
//! Code memory is a typestate. Machine code is emitted into a `Vec<u8>`;
//! [`publish`] consumes it, puts a copy followed by `int3` padding into
//! pages never used before, and returns [`ExecutableCode`]. Pages are
//! never writable and executable at the same time, and never writable
//! again once executable.
//!
//! The pages come from a process-wide arena of chunks of [`CHUNK_BYTES`]
//! (one `mmap` each), cut front to back, one piece per published program.
//! A chunk is unmapped when it is used up and its last piece is dropped.
//! Dropped code stays mapped read+execute (unreachable: nothing points to
//! it) until its chunk goes, and one live program keeps its whole chunk
//! mapped. A chunk is filled in one of two ways ([`Fill`]):
//!
//! - [`Fill::Copy`] (the default where the kernel allows it): the chunk
//!   is mapped read+execute from the start, its pages not present, and
//!   registered with a userfaultfd of the process for missing pages. A
//!   piece is filled by one `UFFDIO_COPY`: the kernel copies the code into
//!   a fresh page and maps it, read+execute as the mapping is, in one
//!   step. No page of the chunk is ever writable in the process's page
//!   tables, no protection changes, and a page that is present can never
//!   be filled again (the kernel answers `EEXIST`), so no code can be
//!   rewritten. This is about half the system time of the flip (no PTE
//!   change of a present page, no TLB flush, no VMA split; BENCHMARKS.md,
//!   "Code memory filled by the kernel"). The userfaultfd is asked for
//!   `UFFD_FEATURE_SIGBUS` and user-mode faults only, so a stray access
//!   to a page not filled yet raises `SIGBUS` instead of waiting for a
//!   handler (there is none), as a stray access to a read+write page of
//!   a flip chunk raises `SIGSEGV`.
//! - [`Fill::Flip`] (where userfaultfd is refused, after any failure of
//!   it, or with `BPFKIT_JIT_FLIP=1` in the environment): the chunk is
//!   mapped read+write and populated; a piece is written, then flipped to
//!   read+execute with a checked `mprotect` (one per compile).
//!
//! A forked child does not inherit the registration, and its copy of the
//! userfaultfd still refers to the parent's address space: the child
//! makes its own at its next publish (a `pthread_atfork` handler counts
//! forks), and every copied piece is checked to be present in this
//! process's memory (its last byte, always `int3`, read back) before it
//! is handed out; anything unexpected turns the copy off for the process
//! and the piece is published by the flip instead.
//!
//! The generated code runs with a pointer to a `Ctx` (in `rdi`, System V)
//! and may call back `helper_trampoline` with the same pointer; the
//! trampoline turns it back into `&mut Ctx` and does the rest in safe code
//! (`crate::call_helper`).

use crate::{Ctx, RunEnv, TypedEnv};
use bpfkit_runtime::raw::{RawCall, RawStop};
use std::io;

/// Published machine code: read+execute pages, given back to the arena on
/// drop (see the module docs).
#[derive(Debug)]
pub struct ExecutableCode {
    ptr: *mut u8,
    len: usize,
    /// Base of the arena chunk the pages were cut from.
    chunk: usize,
    fill: Fill,
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

    /// How the pages were filled.
    pub fn fill(&self) -> Fill {
        self.fill
    }

    /// The code bytes (for disassembly and tests).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `[ptr, ptr + len)` is mapped readable and present for as
        // long as `self` lives, and nothing writes it after `publish`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for ExecutableCode {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn drop(&mut self) {
        release(self.chunk);
    }

    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    fn drop(&mut self) {}
}

/// How code gets into read+execute pages (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Copied by the kernel into missing pages of a read+execute mapping
    /// (`UFFDIO_COPY`).
    Copy,
    /// Written into read+write pages, then flipped with `mprotect`.
    Flip,
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn page_size() -> usize {
    // Asked once: `sysconf` was a visible part of a small compile.
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p <= 0 {
            4096
        } else {
            p as usize
        }
    })
}

/// Maps `code` read+execute (see the module docs). Unsupported hosts
/// (see [`crate::is_supported`]) get [`io::ErrorKind::Unsupported`].
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub fn publish(code: impl AsRef<[u8]>) -> io::Result<ExecutableCode> {
    let _ = code;
    Err(io::ErrorKind::Unsupported.into())
}

/// As [`publish`], one way only: [`io::ErrorKind::Unsupported`] when that
/// way is not available.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub fn publish_with(code: impl AsRef<[u8]>, fill: Fill) -> io::Result<ExecutableCode> {
    let _ = (code, fill);
    Err(io::ErrorKind::Unsupported.into())
}

/// Size of the chunks that code pages are cut from (see the module docs);
/// bigger code gets a chunk of its own size.
pub const CHUNK_BYTES: usize = 256 << 10;

/// One mapping that code pages are cut from, front to back.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
struct Chunk {
    base: usize,
    len: usize,
    /// Bytes handed out (from `base`).
    used: usize,
    /// Handed-out pieces not dropped yet.
    live: usize,
    fill: Fill,
}

/// The process's userfaultfd for [`Fill::Copy`].
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[derive(Clone, Copy)]
enum Uffd {
    /// Not asked for yet.
    Untried,
    /// Open, made in this process (no fork since: `gen` is `FORKS` then).
    Ready { fd: i32, gen: u64 },
    /// Refused, failed once, or turned off by the environment: flips only.
    Off,
}

/// The chunk being cut, the used-up ones that still hold live code, and
/// the userfaultfd.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
struct Arena {
    open: Option<Chunk>,
    full: Vec<Chunk>,
    uffd: Uffd,
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
static ARENA: std::sync::Mutex<Arena> = std::sync::Mutex::new(Arena {
    open: None,
    full: Vec::new(),
    uffd: Uffd::Untried,
});

/// Forks of this process so far, as far as this process knows: counted in
/// the child by a `pthread_atfork` handler.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
extern "C" fn forked_child() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn arena() -> std::sync::MutexGuard<'static, Arena> {
    // The arena's state stays consistent at every point a panic could
    // interrupt it (none of its updates call out), so a poisoned lock is
    // still usable.
    ARENA.lock().unwrap_or_else(|e| e.into_inner())
}

/// The userfaultfd ABI (`linux/userfaultfd.h`; the `libc` crate has only
/// the system call number).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod uffd_abi {
    pub const UFFD_API: u64 = 0xaa;
    pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    pub const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
    pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
    /// `_IOWR(0xaa, 0x3f, struct uffdio_api)`.
    pub const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
    /// `_IOWR(0xaa, 0x00, struct uffdio_register)`.
    pub const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
    /// `_IOWR(0xaa, 0x03, struct uffdio_copy)`.
    pub const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
    /// The bit of `uffdio_register::ioctls` that says `UFFDIO_COPY` works
    /// on the range (`1 << _UFFDIO_COPY`).
    pub const COPY_BIT: u64 = 1 << 0x03;

    #[repr(C)]
    pub struct Api {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }

    #[repr(C)]
    pub struct Register {
        pub start: u64,
        pub len: u64,
        pub mode: u64,
        pub ioctls: u64,
    }

    #[repr(C)]
    pub struct Copy {
        pub dst: u64,
        pub src: u64,
        pub len: u64,
        pub mode: u64,
        pub copy: i64,
    }
}

/// A new userfaultfd set up for [`Fill::Copy`], or `None` where the kernel
/// refuses it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn open_uffd() -> Option<i32> {
    use uffd_abi::*;
    // SAFETY: the system call takes flags only and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    let mut api = Api {
        api: UFFD_API,
        features: UFFD_FEATURE_SIGBUS,
        ioctls: 0,
    };
    // SAFETY: `fd` is the userfaultfd just made; `api` is the ioctl's
    // argument struct, valid for reads and writes.
    if unsafe { libc::ioctl(fd, UFFDIO_API, &mut api as *mut Api) } != 0 {
        // SAFETY: our own fd, used by nothing else.
        unsafe { libc::close(fd) };
        return None;
    }
    Some(fd)
}

/// Unmaps a chunk that nothing points into any more.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn unmap(c: Chunk) {
    // SAFETY: `[base, base + len)` is exactly a mapping made by `map_chunk`
    // for this chunk, and no `ExecutableCode` points into it (`live` is 0,
    // and the arena hands out no more of it). A failure cannot be handled
    // here; it would leak address space, never corrupt memory.
    unsafe {
        libc::munmap(c.base as *mut libc::c_void, c.len);
    }
}

/// Stops cutting the open chunk (its remaining pages are never handed
/// out); returns it if it can go now.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn retire_open(a: &mut Arena) -> Option<Chunk> {
    match a.open.take() {
        Some(c) if c.live == 0 => Some(c),
        Some(c) => {
            a.full.push(c);
            None
        }
        None => None,
    }
}

/// Whether `BPFKIT_JIT_FLIP=1` asks for flips only (read once).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn flip_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var_os("BPFKIT_JIT_FLIP").is_some_and(|v| v == "1"))
}

/// The userfaultfd to fill a [`Fill::Copy`] chunk with, made (again, after
/// a fork) if needed; `None` when copies are off. Chunks registered with a
/// previous process's userfaultfd are no longer cut.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn uffd_for_copy(a: &mut Arena) -> (Option<i32>, Option<Chunk>) {
    use std::sync::atomic::Ordering;
    let gen = FORKS.load(Ordering::Relaxed);
    match a.uffd {
        Uffd::Ready { fd, gen: g } if g == gen => return (Some(fd), None),
        Uffd::Off => return (None, None),
        _ => {}
    }
    let mut dead = None;
    if let Uffd::Ready { fd, .. } = a.uffd {
        // A forked child: `fd` refers to the parent's address space, and
        // this process's copy-filled chunks are no longer registered with
        // anything. Only threads of the parent could have taken `fd` from
        // the arena, and none of them exists here, so it can be closed.
        // SAFETY: the arena's own fd, not used by any thread of this process.
        unsafe { libc::close(fd) };
        if a.open.as_ref().is_some_and(|c| c.fill == Fill::Copy) {
            dead = retire_open(a);
        }
    } else {
        static ATFORK: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a child handler that only increments an atomic
        // (async-signal-safe); no prepare or parent handler.
        ATFORK.call_once(|| unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        });
    }
    a.uffd = match (flip_forced(), open_uffd()) {
        (false, Some(fd)) => Uffd::Ready { fd, gen },
        (true, Some(fd)) => {
            // SAFETY: our own fd, just made, used by nothing else.
            unsafe { libc::close(fd) };
            Uffd::Off
        }
        _ => Uffd::Off,
    };
    match a.uffd {
        Uffd::Ready { fd, .. } => (Some(fd), dead),
        _ => (None, dead),
    }
}

/// Copies are off for the rest of the process (a copy or registration
/// failed): the open copy-filled chunk is no longer cut. The fd stays
/// open: other threads may still be using it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn copies_off() {
    let mut a = arena();
    a.uffd = Uffd::Off;
    let dead = if a.open.as_ref().is_some_and(|c| c.fill == Fill::Copy) {
        retire_open(&mut a)
    } else {
        None
    };
    drop(a);
    if let Some(c) = dead {
        unmap(c);
    }
}

/// `map_len` bytes never handed out before, filled the way `fill` says
/// (read+write for a flip, read+execute and missing for a copy), the base
/// of their chunk, and for a copy the userfaultfd. `None` when copies are
/// off and `fill` is [`Fill::Copy`].
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn carve(map_len: usize, fill: Fill) -> io::Result<Option<(*mut u8, usize, i32)>> {
    let mut a = arena();
    let mut fd = -1;
    let mut dead = None;
    if fill == Fill::Copy {
        let (f, d) = uffd_for_copy(&mut a);
        dead = d;
        match f {
            Some(f) => fd = f,
            None => {
                drop(a);
                if let Some(c) = dead {
                    unmap(c);
                }
                return Ok(None);
            }
        }
    }
    if let Some(c) = a
        .open
        .as_mut()
        .filter(|c| c.fill == fill && c.len - c.used >= map_len)
    {
        let (p, base) = (c.base + c.used, c.base);
        c.used += map_len;
        c.live += 1;
        drop(a);
        if let Some(c) = dead {
            unmap(c);
        }
        return Ok(Some((p as *mut u8, base, fd)));
    }
    let len = CHUNK_BYTES.max(map_len);
    let base = match map_chunk(len, fill, fd) {
        Ok(Some(b)) => b as usize,
        Ok(None) => {
            // Registration refused: no copies from here on.
            drop(a);
            if let Some(c) = dead {
                unmap(c);
            }
            copies_off();
            return Ok(None);
        }
        Err(e) => {
            drop(a);
            if let Some(c) = dead {
                unmap(c);
            }
            return Err(e);
        }
    };
    let older = retire_open(&mut a);
    a.open = Some(Chunk {
        base,
        len,
        used: map_len,
        live: 1,
        fill,
    });
    drop(a);
    for c in [dead, older].into_iter().flatten() {
        unmap(c);
    }
    Ok(Some((base as *mut u8, base, fd)))
}

/// A piece of the chunk at `base` is no longer used; a used-up chunk goes
/// with its last piece.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn release(base: usize) {
    let mut a = arena();
    if let Some(c) = a.open.as_mut().filter(|c| c.base == base) {
        c.live -= 1;
        return;
    }
    let Some(i) = a.full.iter().position(|c| c.base == base) else {
        return;
    };
    a.full[i].live -= 1;
    if a.full[i].live == 0 {
        let c = a.full.swap_remove(i);
        drop(a);
        unmap(c);
    }
}

/// Bytes mapped for `code`: whole pages, with at least one `int3` after
/// the code (the byte a copy's check reads back).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn map_len_for(code: &[u8]) -> usize {
    let page = page_size();
    (code.len() + 1).div_ceil(page) * page
}

/// Maps a copy of `code` read+execute (see the module docs): by a copy
/// where the kernel allows it, else by a flip.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn publish(code: impl AsRef<[u8]>) -> io::Result<ExecutableCode> {
    let code = code.as_ref();
    let map_len = map_len_for(code);
    if let Some(done) = publish_copy(code, map_len)? {
        return Ok(done);
    }
    publish_flip(code, map_len)
}

/// As [`publish`], one way only: [`io::ErrorKind::Unsupported`] when copies
/// are off (refused by the kernel, failed before, or `BPFKIT_JIT_FLIP=1`).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn publish_with(code: impl AsRef<[u8]>, fill: Fill) -> io::Result<ExecutableCode> {
    let code = code.as_ref();
    let map_len = map_len_for(code);
    match fill {
        Fill::Copy => publish_copy(code, map_len)?.ok_or_else(|| io::ErrorKind::Unsupported.into()),
        Fill::Flip => publish_flip(code, map_len),
    }
}

/// Largest `STAGE` kept between compiles.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const STAGE_KEEP: usize = 64 << 10;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
thread_local! {
    /// The code and its padding as `UFFDIO_COPY` takes them (whole pages),
    /// kept between compiles.
    static STAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A [`Fill::Copy`] publication; `Ok(None)` when copies are off (now, or
/// from this failure on: the caller flips instead).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn publish_copy(code: &[u8], map_len: usize) -> io::Result<Option<ExecutableCode>> {
    use uffd_abi::*;
    let Some((ptr, chunk, fd)) = carve(map_len, Fill::Copy)? else {
        return Ok(None);
    };
    let rc = STAGE.with(|s| {
        let mut s = s.borrow_mut();
        s.clear();
        s.extend_from_slice(code);
        s.resize(map_len, 0xcc);
        let mut op = Copy {
            dst: ptr as u64,
            src: s.as_ptr() as u64,
            len: map_len as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: `carve` handed out `[ptr, ptr + map_len)` to us alone:
        // pages of a read+execute chunk registered with `fd` that were
        // never filled. The kernel copies `map_len` bytes from `src` (our
        // buffer, that long) into new pages and maps them there; it
        // refuses (`EEXIST`) to touch a page that is present, so no other
        // code can be overwritten, and nothing in this process holds a
        // reference to those addresses yet.
        let rc = unsafe { libc::ioctl(fd, UFFDIO_COPY, &mut op as *mut Copy) };
        // A huge program's copy is not kept for the thread's life.
        if s.capacity() > STAGE_KEEP {
            *s = Vec::new();
        }
        (rc == 0 && op.copy == map_len as i64).then_some(())
    });
    // Read back where the last `int3` should be: a page not filled in this
    // process's memory reads as zero (e.g. in a forked child whose fd
    // still refers to the parent; the registration is not inherited, so
    // the read cannot raise `SIGBUS` there), and a filled one as `0xcc`.
    // SAFETY: the piece is mapped readable (read+execute) and ours; a
    // volatile read, since the kernel wrote it behind the compiler's back.
    let filled = rc.is_some() && unsafe { ptr.add(map_len - 1).read_volatile() } == 0xcc;
    if !filled {
        // Whatever went wrong, the piece's pages are never handed out
        // again; from now on this process flips.
        release(chunk);
        copies_off();
        return Ok(None);
    }
    Ok(Some(ExecutableCode {
        ptr,
        len: code.len(),
        chunk,
        fill: Fill::Copy,
    }))
}

/// A [`Fill::Flip`] publication.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn publish_flip(code: &[u8], map_len: usize) -> io::Result<ExecutableCode> {
    let Some((ptr, chunk, _)) = carve(map_len, Fill::Flip)? else {
        unreachable!("flip chunks are always available");
    };
    // SAFETY: `carve` handed out `map_len >= code.len()` bytes, readable and
    // writable, to us alone.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), ptr, code.len());
        std::ptr::write_bytes(ptr.add(code.len()), 0xcc, map_len - code.len());
    }
    // SAFETY: changes the protection of our own pages only; from here on
    // nothing writes them, and they never become writable again (the
    // chunk is unmapped as a whole once all its pieces are dropped).
    let rc = unsafe { libc::mprotect(ptr.cast(), map_len, libc::PROT_READ | libc::PROT_EXEC) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // The pages stay read+write and unused until the chunk goes.
        release(chunk);
        return Err(err);
    }
    Ok(ExecutableCode {
        ptr,
        len: code.len(),
        chunk,
        fill: Fill::Flip,
    })
}

/// Maps a chunk of `len` fresh bytes for `fill`: read+write and populated
/// for a flip; read+execute, not present and registered with `fd` for
/// missing pages for a copy (`Ok(None)` if registration is refused).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn map_chunk(len: usize, fill: Fill, fd: i32) -> io::Result<Option<*mut u8>> {
    use uffd_abi::*;
    let (prot, flags) = match fill {
        // Populate now: one kernel call instead of a fault per page.
        Fill::Flip => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_POPULATE),
        Fill::Copy => (libc::PROT_READ | libc::PROT_EXEC, 0),
    };
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing aliases no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if fill == Fill::Copy {
        let mut reg = Register {
            start: ptr as u64,
            len: len as u64,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: registers our own new mapping with our userfaultfd; the
        // argument struct is valid for reads and writes.
        let rc = unsafe { libc::ioctl(fd, UFFDIO_REGISTER, &mut reg as *mut Register) };
        if rc != 0 || reg.ioctls & COPY_BIT == 0 {
            // SAFETY: the mapping just made, which nothing points into.
            unsafe { libc::munmap(ptr, len) };
            return Ok(None);
        }
    }
    Ok(Some(ptr.cast::<u8>()))
}

/// Runs the code at `code.addr() + entry` with `ctx`.
///
/// This is the one entry into generated code. Its safety rests on the
/// lowering (`x64::lower`): the code only touches the `Ctx` it is given, the
/// stack buffer and the guest regions that `ctx` describes (every access is
/// checked against them at run time, in checked mode), the host stack below
/// the current `rsp` (bounded: at most `MAX_CALL_FRAMES` nested calls of a
/// few words each), and returns with the System V callee-saved registers
/// restored. With native tail calls (`crate::tail`) it may jump into the
/// code of a target published in the `TailTable` it was compiled with,
/// which then runs on the same terms (same `Ctx`, stack and regions; the
/// table, held by the entered `Jit`, keeps that code alive) and leaves
/// through an epilogue that restores the same registers.
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

/// The `Ctx` a trampoline is handed and the environment `E` its `env`
/// points at.
///
/// # Safety
/// `ctx` must be valid and not otherwise used for `'a`, and `ctx.env` must
/// point at an `E` that lives for `'a`, reachable only through `ctx`
/// meanwhile.
unsafe fn ctx_and_env<'a, E>(ctx: *mut Ctx) -> (&'a mut Ctx, &'a mut E) {
    // SAFETY: the caller's contract above.
    unsafe {
        let ctx = &mut *ctx;
        let env = &mut *(ctx.env as usize as *mut E);
        (ctx, env)
    }
}

/// The run's stack buffer and `Memory` that `env` records.
///
/// # Safety
/// `env.stack`/`env.stack_len` must be a live buffer and `env.mem` a live
/// `Memory`, neither otherwise referenced for `'a`.
unsafe fn stack_and_mem<'a>(
    env: &RunEnv<'_>,
) -> (&'a mut [u8], &'a mut bpfkit_runtime::Memory<'static>) {
    // SAFETY: the caller's contract above.
    unsafe {
        (
            std::slice::from_raw_parts_mut(env.stack, env.stack_len),
            &mut *env.mem,
        )
    }
}

/// The `Ctx` that `raw` (the address of its `raw` field, as generated
/// code passes it) belongs to.
///
/// # Safety
/// `raw` must point at `Ctx::raw` of a run in progress, whose `engine` the
/// run set to the `Ctx` pointer it entered the code with.
unsafe fn ctx_of(raw: *mut RawCall<()>) -> *mut Ctx {
    // SAFETY: the caller's contract; only the pointer field is read.
    unsafe { (*raw).engine.cast::<Ctx>() }
}

/// The type of [`helper_trampoline`] (and of the typed ones).
pub(crate) type TrampolineFn = extern "C" fn(u64, *mut RawCall<()>, u64, u64, u64, u64) -> Ret2;

/// Called by generated code for a helper call with `r1`-`r5` as arguments
/// (through `Ctx::direct`, with `Ctx::raw`, in the order of
/// `bpfkit_runtime::raw::RawEntry`); `ctx.call_h` and `ctx.call_site` say
/// which helper and where.
pub(crate) extern "C" fn helper_trampoline(
    a1: u64,
    raw: *mut RawCall<()>,
    a4: u64,
    a5: u64,
    a2: u64,
    a3: u64,
) -> Ret2 {
    // SAFETY: generated code passes `&ctx.raw` of the `Ctx` it was entered
    // with, whose `engine` `run` set to that `Ctx`, derived from an
    // exclusive `&mut Ctx` that is not used while the code runs; `env`
    // was set by `run` to a `RunEnv` living on its stack for the whole
    // run, reachable only through this pointer meanwhile.
    let (ctx, env) = unsafe { ctx_and_env::<RunEnv<'_>>(ctx_of(raw)) };
    // SAFETY: `env.stack`/`env.stack_len` is the run's stack buffer and
    // `env.mem` its `Memory`, both exclusively lent to this run (see
    // `Jit::run_inner`); generated code is suspended during the call, so
    // these are the only live references to them.
    let (stack, mem) = unsafe { stack_and_mem(env) };
    // SAFETY: `env.data` is the `&mut dyn Any` passed to `Jit::run_with_data`,
    // lent to this run and not otherwise used while the code runs.
    let data = env.data.map(|d| unsafe { &mut *d });
    crate::call_helper(ctx, env, stack, mem, data, [a1, a2, a3, a4, a5])
}

/// Called by generated code for a helper call during a typed run
/// ([`crate::Jit::run_repeat`]): as [`helper_trampoline`], with `ctx.env`
/// pointing at a `TypedEnv<T>`.
pub(crate) extern "C" fn typed_trampoline<T: std::any::Any>(
    a1: u64,
    raw: *mut RawCall<()>,
    a4: u64,
    a5: u64,
    a2: u64,
    a3: u64,
) -> Ret2 {
    // SAFETY: generated code passes `&ctx.raw` of the `Ctx` it was entered
    // with, whose `engine` `run_repeat` set to that `Ctx`, derived from an
    // exclusive `&mut Ctx` that is not used while the code runs.
    // `run_repeat::<T>` puts this very instantiation in `ctx.direct` (from
    // its `TypedCache<T>`) and `ctx.env` to its `TypedEnv<T>` (same `T`),
    // which lives on its stack for the whole run and is reachable only
    // through this pointer meanwhile.
    let (ctx, env) = unsafe { ctx_and_env::<TypedEnv<'_, T>>(ctx_of(raw)) };
    // SAFETY: as in `helper_trampoline`: the run's stack buffer and
    // `Memory`, exclusively lent to the run; and `env.data`, derived
    // from the `&mut T` lent to `run_repeat` right before entering the
    // code, not otherwise used until the code returns.
    let ((stack, mem), data) = unsafe { (stack_and_mem(&env.base), &mut *env.data) };
    let typed = env.typed;
    crate::call_typed(
        ctx,
        &mut env.base,
        typed,
        stack,
        mem,
        data,
        [a1, a2, a3, a4, a5],
    )
}

/// The `Guest` of a `Ctx` outside runs: no stack, no memory (never used:
/// direct entries run only during typed runs, which set their own).
pub(crate) fn no_guest() -> bpfkit_runtime::Guest<'static, 'static> {
    // SAFETY: an empty stack (no byte is ever accessed through a null
    // pointer with length 0) and no memory; never used (see above).
    unsafe { bpfkit_runtime::Guest::from_raw(std::ptr::null_mut(), 0, std::ptr::null_mut()) }
}

/// The `Guest` that a typed run's direct entries lend to helpers
/// (`Ctx::raw`), over the run's stack buffer and `Memory` that `env`
/// records.
pub(crate) fn run_guest(env: &RunEnv<'_>) -> bpfkit_runtime::Guest<'static, 'static> {
    // SAFETY: `env.stack`/`env.stack_len` is the `Jit`'s stack buffer and
    // `env.mem` the run's `Memory`, both exclusively lent to the run by
    // `run_repeat` for as long as `ctx.raw` is used (the typed run; the next
    // run replaces it). Between helper calls the generated code writes the
    // stack, which `Guest::from_raw` allows: no reference made through the
    // `Guest` outlives a helper call.
    unsafe { bpfkit_runtime::Guest::from_raw(env.stack, env.stack_len, env.mem) }
}

/// `RawCall::on_regions` of a typed run ([`crate::Jit::run_repeat`]): a
/// direct entry's helper changed the regions, so the table the code checks
/// against is copied again.
///
/// # Safety
/// `engine` must be the `Ctx` of a typed run over data `T` in progress (as
/// `run_repeat::<T>` sets it), suspended in a direct entry's call.
pub(crate) unsafe fn raw_regions_hook<T: std::any::Any>(
    engine: *mut (),
    mem: &bpfkit_runtime::Memory<'_>,
) {
    // SAFETY: `engine` is the run's `Ctx` (the caller's contract), which
    // `run_repeat::<T>` derived from an exclusive `&mut Ctx` not used while
    // the code runs, with `ctx.env` at its `TypedEnv<T>` (same `T`), on
    // its stack for the whole run. The direct entry holds no reference to
    // either (only to the run's stack, memory and data, which `env` points
    // at but which are not dereferenced here).
    let (ctx, env) = unsafe { ctx_and_env::<TypedEnv<'_, T>>(engine.cast()) };
    crate::regions_after_call(ctx, &mut env.base, mem);
}

/// `RawCall::on_stop` of a typed run: the helper aborted or panicked; the
/// program stops as with the trampolines.
///
/// # Safety
/// As [`raw_regions_hook`].
pub(crate) unsafe fn raw_stop_hook<T: std::any::Any>(engine: *mut (), stop: RawStop) {
    // SAFETY: as in `raw_regions_hook`.
    let (ctx, env) = unsafe { ctx_and_env::<TypedEnv<'_, T>>(engine.cast()) };
    crate::raw_stopped(ctx, &mut env.base, stop);
}

/// The hooks of a `Ctx` outside typed runs: never called, since only typed
/// runs put direct entries in `Ctx::direct`.
pub(crate) fn no_regions_hook(_engine: *mut (), _mem: &bpfkit_runtime::Memory<'_>) {}

/// See [`no_regions_hook`].
pub(crate) fn no_stop_hook(_engine: *mut (), _stop: RawStop) {}

/// On a repeat of the last passed unchecked entry check (`key` matches
/// `mem`'s stamp and `r1`, and allows raw reads), the three `u32` context
/// words at `r1 + key.offs[i]` (the packet fields, zero-extended), read
/// straight from host memory: a few instructions where `Memory::load`
/// would search the regions again. `None` otherwise.
///
/// `key` must come from `crate::EntryCheck::check_and_remember`, which
/// stores a key (nonzero stamp) only after the full check passed for that
/// stamp and `r1`, and sets `raw` only when every `offs[i] + 4` is at most
/// the context size that check covered.
#[inline(always)]
pub(crate) fn cached_ctx_words(
    key: &crate::EntryKey,
    mem: &bpfkit_runtime::Memory<'_>,
    r1: u64,
) -> Option<[u64; 3]> {
    if !key.raw || key.version != mem.version() || key.r1 != r1 {
        return None;
    }
    // SAFETY: the same stamp means the same, unchanged region list of the
    // same `Memory` (stamps are process-unique and renewed on every change),
    // which is borrowed for this run and so alive. The passed check found
    // `[r1, r1 + ctx_size)` inside one of its regions, and each field lies
    // inside the context (`raw`), so each 4-byte read is inside a region:
    // valid for reads by `Memory`'s invariant, and not written concurrently
    // (the contract the generated code relies on too). Unaligned reads: a
    // caller's context need not be 4-aligned.
    Some(
        key.offs.map(|off| unsafe {
            (r1.wrapping_add(off as u64) as *const u32).read_unaligned() as u64
        }),
    )
}

/// What a run of a [`crate::Jit::run_repeat`] series needs to know that
/// the entry check and the region table of the previous run still hold:
/// the memory's stamp is `version` and the three `u32` words at `at` are
/// `expect` (the context's packet fields, or constant zeros when the check
/// does not depend on them). One test per run instead of the cached check's
/// key compares (BENCHMARKS.md, "The JIT's per-run loop"). When a helper
/// moved the words (`bpf_xdp_adjust_tail` and friends, every run for some
/// programs), the packet half of the check is made against the packet
/// region's bounds copied when the series' check passed (`lo`, `hi`): the
/// same stamp is the same region list, whose regions never change, so they
/// are the bounds `EntryCheck::packet_in_packet_region` would read
/// (BENCHMARKS.md, "adjust_tail and the run loop").
///
/// Reading `at` is sound because the only ways to build one are
/// [`SeriesWords::of_key`] (pointers into the context a passed check
/// covered, valid while the stamp is the key's) and
/// [`SeriesWords::zeros`] (a static), and [`SeriesWords::words`]
/// reads only after the stamp matched.
pub(crate) struct SeriesWords {
    /// 0 (no `Memory` has it): nothing holds, the next run checks in full.
    version: u64,
    at: [*const u32; 3],
    expect: [u64; 3],
    /// The writable packet region `[lo, hi]` under `version` that moved
    /// words may stay in; `lo > hi` (no packet region, read-only, or words
    /// that do not matter) sends moved words to the full way.
    lo: u64,
    hi: u64,
}

/// One branch for three words.
#[inline(always)]
fn same_words(w: [u64; 3], k: [u64; 3]) -> bool {
    (w[0] ^ k[0]) | (w[1] ^ k[1]) | (w[2] ^ k[2]) == 0
}

/// What [`SeriesWords::zeros`] points at.
static ZERO_WORDS: [u32; 3] = [0; 3];

impl SeriesWords {
    /// Nothing known: the next run takes the full path.
    pub(crate) fn none() -> SeriesWords {
        SeriesWords::zeros(0)
    }

    /// For stamp `version` when the words do not matter (checked code, or
    /// a context without packet fields): only the stamp is compared.
    pub(crate) fn zeros(version: u64) -> SeriesWords {
        SeriesWords {
            version,
            at: [ZERO_WORDS.as_ptr(); 3],
            expect: [0; 3],
            lo: 1,
            hi: 0,
        }
    }

    /// The packet words of the last passed check `key` (see
    /// [`cached_ctx_words`] for what a key guarantees) for the context at
    /// `r1`, with `packet`, the bounds of the writable packet region of the
    /// key's region list (`None`: moved words always take the full way);
    /// [`SeriesWords::none`] when the key does not allow raw reads of the
    /// words or is not for `r1`.
    #[inline(always)]
    pub(crate) fn of_key(
        key: &crate::EntryKey,
        r1: u64,
        packet: Option<(u64, u64)>,
    ) -> SeriesWords {
        if !key.raw || key.version == 0 || key.r1 != r1 {
            return SeriesWords::none();
        }
        let (lo, hi) = packet.unwrap_or((1, 0));
        SeriesWords {
            version: key.version,
            at: key
                .offs
                .map(|off| r1.wrapping_add(off as u64) as usize as *const u32),
            expect: key.words,
            lo,
            hi,
        }
    }

    /// The three words now, when `mem` has the stamp `self` was built for
    /// (only then may they be read); `None` otherwise.
    #[inline(always)]
    pub(crate) fn words(&self, mem: &bpfkit_runtime::Memory<'_>) -> Option<[u64; 3]> {
        if mem.version() != self.version {
            return None;
        }
        // SAFETY: the stamp matched (`none` has stamp 0, which no `Memory`
        // has), so `at` is `zeros`' static, or `of_key` built it from a key
        // for this very region list of this `Memory` (stamps are
        // process-unique and renewed on every change), borrowed by the
        // caller and so alive: each `at[i]` is then 4 bytes inside the
        // context the passed check found in a region (valid for reads by
        // `Memory`'s invariant, not written concurrently). Unaligned: a
        // context need not be 4-aligned.
        Some(self.at.map(|p| unsafe { p.read_unaligned() } as u64))
    }

    /// Whether `w` are the words the next run expects.
    #[inline(always)]
    pub(crate) fn expects(&self, w: [u64; 3]) -> bool {
        same_words(w, self.expect)
    }

    /// Whether the moved words `w` (`data`, `data_end`, `data_meta`, read
    /// by [`SeriesWords::words`] under this stamp) describe a packet inside
    /// the packet region, as `EntryCheck::packet_in_packet_region` says;
    /// if so they are the words the next runs expect.
    #[inline(always)]
    pub(crate) fn moved_within(&mut self, w: [u64; 3]) -> bool {
        let [data, end, start] = w;
        let ok = self.lo <= start && start <= data && data <= end && end <= self.hi;
        if ok {
            self.expect = w;
        }
        ok
    }

    /// Brings `key.words` up to the words the runs last passed with, when
    /// `self` was made from `key` (the run loop does not write the key on
    /// every moved packet: a key left behind still records a check that
    /// passed, under the same stamp and `r1`, and only costs the next
    /// series a full check).
    #[inline(always)]
    pub(crate) fn store_into(&self, key: &mut crate::EntryKey) {
        if self.lo <= self.hi && self.version == key.version {
            key.words = self.expect;
        }
    }
}

/// A value of a type known only at run time, with that type's `TypeId`
/// kept beside it: a lookup compares two constants instead of making
/// `Any::type_id`'s virtual call (a `Jit`'s typed helper table, looked up
/// once per typed run: BENCHMARKS.md, "Tail-call series").
pub(crate) struct TypedSlot {
    /// `TypeId` of the boxed value's type, set with it (the fields are
    /// private to this module, so no other code can pair them otherwise).
    id: std::any::TypeId,
    value: Box<dyn std::any::Any + Send + Sync>,
}

impl TypedSlot {
    pub(crate) fn new<T: std::any::Any + Send + Sync>(value: T) -> TypedSlot {
        TypedSlot {
            id: std::any::TypeId::of::<T>(),
            value: Box::new(value),
        }
    }

    /// The value if it is a `T`.
    #[inline(always)]
    pub(crate) fn get<T: std::any::Any>(&self) -> Option<&T> {
        if self.id != std::any::TypeId::of::<T>() {
            return None;
        }
        let p: *const (dyn std::any::Any + Send + Sync) = &*self.value;
        // SAFETY: `id` is the `TypeId` of the boxed value's type (`new`
        // records them together and nothing else writes either), and it is
        // `T`'s: the trait object's data pointer points at a live `T`,
        // borrowed for as long as `self` (what `downcast_ref` does after
        // its own, virtual, `type_id` call).
        Some(unsafe { &*p.cast::<T>() })
    }
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use super::*;

    /// The safety argument of [`Fill::Copy`]: a page that holds code can
    /// never be filled again, not even through the arena's own fd.
    #[test]
    fn a_filled_page_cannot_be_filled_again() {
        let code = match publish_with([0x90u8; 100], Fill::Copy) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => return,
            Err(e) => panic!("{e}"),
        };
        let Uffd::Ready { fd, .. } = arena().uffd else {
            panic!("a copy was made without a userfaultfd");
        };
        let page = page_size();
        let evil = vec![0xc3u8; page];
        let mut op = uffd_abi::Copy {
            dst: code.addr(),
            src: evil.as_ptr() as u64,
            len: page as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: the kernel must refuse this (the point of the test); if
        // it did not, the page would hold `ret`s, which nothing runs.
        let rc = unsafe { libc::ioctl(fd, uffd_abi::UFFDIO_COPY, &mut op as *mut uffd_abi::Copy) };
        let err = io::Error::last_os_error();
        assert_eq!(rc, -1);
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
        assert_eq!(code.bytes(), &[0x90u8; 100]);
    }

    /// The padding up to the page end is `int3`, and code that fills a
    /// page exactly still gets one byte of it (the read-back check).
    #[test]
    fn copied_pieces_are_padded_with_int3() {
        let page = page_size();
        for len in [1, 100, page - 1, page, 2 * page + 7, 20 * page + 3, 5] {
            for fill in [Fill::Copy, Fill::Flip] {
                let code = match publish_with(vec![0x90u8; len], fill) {
                    Ok(c) => c,
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => continue,
                    Err(e) => panic!("{e}"),
                };
                assert_eq!(code.fill(), fill);
                let map_len = map_len_for(code.bytes());
                assert!(map_len > len && map_len.is_multiple_of(page));
                // SAFETY: the whole piece is mapped readable while `code` lives.
                let all = unsafe { std::slice::from_raw_parts(code.ptr, map_len) };
                assert!(all[..len].iter().all(|&b| b == 0x90));
                assert!(all[len..].iter().all(|&b| b == 0xcc), "{fill:?} {len}");
            }
        }
    }
}
