//! Guest memory: the regions a program may address, and every check on
//! them.
//!
//! Guest addresses *are* host addresses: a region registered from a host
//! buffer is seen by the program at the buffer's own address. This keeps
//! pointer values identical between the interpreter and a JIT (which can
//! then access verified memory directly, as the kernel does), and makes the
//! check a subtraction and a comparison. Every access must lie entirely
//! inside one region, and a write needs a writable region.
//!
//! [`Memory`] holds the embedder's regions (context, packet, map values,
//! read-only data, helper-provided memory). [`Guest`] adds the engine's own
//! stack, which is checked first because most accesses go there.
//!
//! This is the only module of the crate with `unsafe` code: reading and
//! writing region bytes through the host pointers recorded at registration.

use crate::trap::{Access, MemFault};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What a region holds. Engines treat all kinds alike except
/// [`RegionKind::Packet`], which legacy packet loads (`LD_ABS`/`LD_IND`) read.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RegionKind {
    /// The program context (`r1` on entry), e.g. `struct xdp_md`.
    Context,
    /// Packet data. The first packet region is the one `LD_ABS`/`LD_IND` read.
    Packet,
    /// An engine's stack (see [`Guest`]).
    Stack,
    /// A map value (or a whole map's value storage).
    MapValue,
    /// Read-only data such as `.rodata`.
    ReadOnlyData,
    /// Memory a helper hands to the program.
    Helper,
    /// Anything else.
    Other,
}

/// One region of guest memory.
///
/// Invariant: `[start, start + len)` is host memory valid for reads (and for
/// writes when `writable`) for as long as the [`Memory`] holding the region
/// lives, and no Rust reference to it is used meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    ptr: *mut u8,
    start: u64,
    len: u64,
    writable: bool,
    kind: RegionKind,
}

impl Region {
    /// First guest address.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the last guest address.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Whether the program may write it.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// What it holds.
    pub fn kind(&self) -> RegionKind {
        self.kind
    }

    /// Whether `[addr, addr + size)` lies inside and `access` is allowed.
    #[inline(always)]
    fn allows(&self, addr: u64, size: usize, access: Access) -> bool {
        // One add and its carry instead of two range tests (`size <= len`,
        // `off <= len - size`): the same answer (no `u64` overflow means the
        // end is exact), two host instructions fewer on every helper access.
        let off = addr.wrapping_sub(self.start);
        off.checked_add(size as u64)
            .is_some_and(|end| end <= self.len)
            && (self.writable || matches!(access, Access::Read))
    }
}

/// Writes `bytes` at guest address `addr` of region `r`.
///
/// # Safety
///
/// `r.allows(addr, N, Access::Write)` must hold, and `r` must be a region
/// of a live `Memory` (its host range is then valid for writes).
#[inline(always)]
unsafe fn store_in<const N: usize>(r: &Region, addr: u64, bytes: [u8; N]) {
    let off = (addr - r.start) as usize;
    // SAFETY: the caller's contract: `[off, off + N)` lies inside `r`'s
    // host range, valid for writes.
    unsafe { r.ptr.add(off).cast::<[u8; N]>().write_unaligned(bytes) };
}

/// The embedder's guest memory regions for one or more runs.
///
/// The lifetime `'a` is that of the host buffers lent to it.
///
/// ```
/// use bpfkit_runtime::{Memory, RegionKind};
/// let mut pkt = [1u8, 2, 3, 4];
/// let mut mem = Memory::new();
/// let addr = mem.add(RegionKind::Packet, &mut pkt);
/// assert_eq!(mem.load::<2>(addr + 1).unwrap(), [2, 3]);
/// assert!(mem.load::<2>(addr + 3).is_err());
/// mem.store::<1>(addr, [9]).unwrap();
/// drop(mem);
/// assert_eq!(pkt[0], 9);
/// ```
#[derive(Debug)]
pub struct Memory<'a> {
    regions: Vec<Region>,
    /// Index of the region that satisfied the last lookup.
    last: Cell<usize>,
    packet: Option<usize>,
    /// See [`Memory::version`].
    version: u64,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl Default for Memory<'_> {
    fn default() -> Self {
        Memory::new()
    }
}

/// The source of [`Memory::version`] stamps: process-wide, so that two
/// memories (or one memory before and after a change) never share one.
static VERSIONS: AtomicU64 = AtomicU64::new(1);

fn next_version() -> u64 {
    VERSIONS.fetch_add(1, Ordering::Relaxed)
}

impl<'a> Memory<'a> {
    /// How many regions a new `Memory` holds before its list grows.
    pub const ROOM: usize = 8;

    /// No regions, room for [`Memory::ROOM`] without reallocating.
    pub fn new() -> Memory<'a> {
        Memory {
            // An XDP chunk adds the context, the packet and the storage of
            // the table's arrays: one allocation, not a growth per chunk
            // (a realloc is some 400 host instructions).
            regions: Vec::with_capacity(Self::ROOM),
            last: Cell::new(0),
            packet: None,
            version: next_version(),
            _borrow: PhantomData,
        }
    }

    /// A stamp of the region list: it changes whenever a region is added or
    /// the list cleared, and no other `Memory` of the process ever has the
    /// same one. An engine that copied the regions can compare stamps
    /// instead of the regions to know whether its copy is still exact (a
    /// helper may add regions during a run; a new `Memory` may sit at the
    /// address of a dropped one).
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    fn push(&mut self, ptr: *mut u8, len: usize, writable: bool, kind: RegionKind) -> u64 {
        let start = ptr as u64;
        self.version = next_version();
        if kind == RegionKind::Packet && self.packet.is_none() {
            self.packet = Some(self.regions.len());
        }
        self.regions.push(Region {
            ptr,
            start,
            len: len as u64,
            writable,
            kind,
        });
        start
    }

    /// Adds a writable region over `buf` and returns its guest address.
    pub fn add(&mut self, kind: RegionKind, buf: &'a mut [u8]) -> u64 {
        self.push(buf.as_mut_ptr(), buf.len(), true, kind)
    }

    /// Adds a read-only region over `buf` and returns its guest address.
    pub fn add_readonly(&mut self, kind: RegionKind, buf: &'a [u8]) -> u64 {
        // The pointer is never written through: the region is read-only.
        self.push(buf.as_ptr().cast_mut(), buf.len(), false, kind)
    }

    /// Adds a region over raw host memory (map storage shared between runs,
    /// memory a helper owns) and returns its guest address.
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` must stay valid for reads (and writes when
    /// `writable`) for as long as this `Memory` holds the region, must not
    /// overlap another region, and must not be accessed through Rust
    /// references meanwhile. Engines access it with plain loads and stores
    /// (atomics with atomic instructions when aligned), so it must not be
    /// written by another thread concurrently with a run, except through
    /// atomic operations on bytes that the program also accesses atomically.
    pub unsafe fn add_raw(
        &mut self,
        kind: RegionKind,
        ptr: *mut u8,
        len: usize,
        writable: bool,
    ) -> u64 {
        self.push(ptr, len, writable, kind)
    }

    /// Removes every region (keeping the allocation).
    pub fn clear(&mut self) {
        self.version = next_version();
        self.regions.clear();
        self.last.set(0);
        self.packet = None;
    }

    /// The regions, in registration order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The first region of kind [`RegionKind::Packet`].
    pub fn packet(&self) -> Option<&Region> {
        self.packet.map(|i| &self.regions[i])
    }

    /// The region allowing `access` to `[addr, addr + size)`.
    #[inline]
    pub fn find(&self, addr: u64, size: usize, access: Access) -> Result<&Region, MemFault> {
        self.find_region(addr, size, access)
            .ok_or(MemFault { addr, size, access })
    }

    /// The region allowing the access: the last one found, else
    /// [`Memory::find_slow`]. An `Option<&Region>` is one register (a
    /// `Result` with the fault would go through memory).
    #[inline(always)]
    fn find_region(&self, addr: u64, size: usize, access: Access) -> Option<&Region> {
        match self.regions.get(self.last.get()) {
            Some(r) if r.allows(addr, size, access) => Some(r),
            _ => self.find_slow(addr, size, access),
        }
    }

    /// The host address of `[addr, addr + size)` when a region allows the
    /// access (valid for it by the [`Region`] invariant).
    #[inline(always)]
    fn host_ptr(&self, addr: u64, size: usize, access: Access) -> Option<*mut u8> {
        let r = self.find_region(addr, size, access)?;
        // In bounds: `allows` checked `addr - start + size <= len`.
        Some(r.ptr.wrapping_add((addr - r.start) as usize))
    }

    /// Every region in order; a hit becomes `last`.
    #[inline(never)]
    fn find_slow(&self, addr: u64, size: usize, access: Access) -> Option<&Region> {
        let (i, r) = self
            .regions
            .iter()
            .enumerate()
            .find(|(_, r)| r.allows(addr, size, access))?;
        self.last.set(i);
        Some(r)
    }

    /// Reads `N` bytes at `addr`.
    #[inline]
    pub fn load<const N: usize>(&self, addr: u64) -> Result<[u8; N], MemFault> {
        let r = self.find(addr, N, Access::Read)?;
        let off = (addr - r.start) as usize;
        // SAFETY: `find` checked that `[off, off + N)` lies inside the region,
        // whose memory is valid for reads while `self` lives (Region invariant).
        Ok(unsafe { r.ptr.add(off).cast::<[u8; N]>().read_unaligned() })
    }

    /// Writes `N` bytes at `addr`.
    #[inline]
    pub fn store<const N: usize>(&mut self, addr: u64, bytes: [u8; N]) -> Result<(), MemFault> {
        let r = self.find(addr, N, Access::Write)?;
        let off = (addr - r.start) as usize;
        // SAFETY: `find` checked that `[off, off + N)` lies inside a writable
        // region, valid for writes while `self` lives (Region invariant).
        unsafe { r.ptr.add(off).cast::<[u8; N]>().write_unaligned(bytes) };
        Ok(())
    }

    /// [`Memory::store`] for a caller that writes the same place again and
    /// again (a helper rewriting the XDP context): region `hint` (an index
    /// this returned before, or any number) is tried first, then every
    /// region in order. Returns the index of the region written, the hint
    /// for the next call. The hint of [`Memory::find`] is left alone, so
    /// that such a store does not evict the region the program's other
    /// accesses go to (each would then walk the list).
    #[inline]
    pub fn store_hinted<const N: usize>(
        &mut self,
        hint: usize,
        addr: u64,
        bytes: [u8; N],
    ) -> Result<usize, MemFault> {
        // The hit writes through the region it tested (indexing again
        // would test the index again, once per packet move).
        match self.regions.get(hint) {
            Some(r) if r.allows(addr, N, Access::Write) => {
                // SAFETY: `allows` checked that `[addr, addr + N)` lies
                // inside this writable region, valid for writes while
                // `self` lives (Region invariant).
                unsafe { store_in(r, addr, bytes) };
                Ok(hint)
            }
            _ => self.store_searched(addr, bytes),
        }
    }

    /// [`Memory::store_hinted`] when the hint missed: every region in order.
    #[cold]
    #[inline(never)]
    fn store_searched<const N: usize>(
        &mut self,
        addr: u64,
        bytes: [u8; N],
    ) -> Result<usize, MemFault> {
        let i = self
            .regions
            .iter()
            .position(|r| r.allows(addr, N, Access::Write))
            .ok_or_else(|| fault(addr, N, Access::Write))?;
        // SAFETY: `allows` checked that `[addr, addr + N)` lies inside
        // region `i`, writable, valid for writes while `self` lives (Region
        // invariant).
        unsafe { store_in(&self.regions[i], addr, bytes) };
        Ok(i)
    }

    /// Zeroes `[addr, addr + len)` if it lies inside the packet region
    /// ([`Memory::packet`]) and that region is writable, and says whether
    /// it did (`false`: nothing written). For the bytes
    /// `bpf_xdp_adjust_tail` adds at the end of a packet, which lie in the
    /// packet's frame: one bounds test against that region instead of the
    /// guest stack test and the lookup hint (which the program's own
    /// accesses keep on other regions), and no `memset` call for the usual
    /// few bytes. Regions never overlap, so a range inside the packet
    /// region is what a general write would find too.
    #[inline]
    pub fn zero_in_packet(&mut self, addr: u64, len: usize) -> bool {
        let Some(r) = self.packet.and_then(|i| self.regions.get(i)) else {
            return false;
        };
        if !r.allows(addr, len, Access::Write) {
            return false;
        }
        let dst = r.ptr.wrapping_add((addr - r.start) as usize);
        // SAFETY: `allows` checked that `[addr, addr + len)` lies inside a
        // writable region, valid for writes while `self` lives (Region
        // invariant); the two words of the 8-16 byte case both lie inside
        // the range (overlapping when `len` < 16).
        unsafe {
            if (8..=16).contains(&len) {
                dst.cast::<u64>().write_unaligned(0);
                dst.add(len - 8).cast::<u64>().write_unaligned(0);
            } else {
                std::ptr::write_bytes(dst, 0, len);
            }
        }
        true
    }

    /// Copies `buf.len()` bytes at `addr` into `buf` (all inside one region).
    #[inline]
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let Some(src) = self.host_ptr(addr, buf.len(), Access::Read) else {
            return Err(fault(addr, buf.len(), Access::Read));
        };
        // SAFETY: the source range lies inside a region (`host_ptr`), valid
        // for reads; `buf` is a distinct Rust buffer, so the ranges cannot
        // overlap (no reference into a region is live).
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `buf` to `addr` (all inside one writable region).
    #[inline]
    pub fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
        let Some(dst) = self.host_ptr(addr, buf.len(), Access::Write) else {
            return Err(fault(addr, buf.len(), Access::Write));
        };
        // SAFETY: the destination lies inside a writable region
        // (`host_ptr`); `buf` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, buf.len()) };
        Ok(())
    }

    /// Atomically replaces the `N`-byte little-endian value at `addr` (N = 4
    /// or 8) by `f(old)` and returns `old`. Aligned accesses use host
    /// atomics; unaligned ones (which the kernel's verifier rejects) a plain
    /// read-modify-write.
    pub fn atomic_update<const N: usize>(
        &mut self,
        addr: u64,
        mut f: impl FnMut(u64) -> u64,
    ) -> Result<u64, MemFault> {
        let r = self.find(addr, N, Access::Write)?;
        let off = (addr - r.start) as usize;
        // SAFETY: `[off, off + N)` lies inside a writable region (`find`).
        let p = unsafe { r.ptr.add(off) };
        let aligned = addr.is_multiple_of(N as u64);
        let old = match N {
            8 if aligned => {
                // SAFETY: `p` is valid for reads and writes of 8 bytes and
                // 8-aligned; the region contract forbids non-atomic
                // concurrent access, so viewing it as an atomic is sound.
                let a = unsafe { AtomicU64::from_ptr(p.cast::<u64>()) };
                let r = a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                    Some(f(u64::from_le(v)).to_le())
                });
                u64::from_le(r.unwrap_or_else(|v| v))
            }
            4 if aligned => {
                // SAFETY: as above, for 4 bytes with 4-alignment.
                let a = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
                let r = a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                    Some((f(u32::from_le(v) as u64) as u32).to_le())
                });
                u32::from_le(r.unwrap_or_else(|v| v)) as u64
            }
            _ => {
                // SAFETY: `p` is valid for reads and writes of N bytes.
                let bytes = unsafe { p.cast::<[u8; N]>().read_unaligned() };
                let old = le_to_u64(&bytes);
                let new = u64_to_le::<N>(f(old));
                // SAFETY: as above.
                unsafe { p.cast::<[u8; N]>().write_unaligned(new) };
                old
            }
        };
        Ok(old)
    }
}

/// The fault of a refused access, out of the callers' way.
#[cold]
#[inline(never)]
fn fault(addr: u64, size: usize, access: Access) -> MemFault {
    MemFault { addr, size, access }
}

/// Little-endian bytes (up to 8) to an integer.
#[inline(always)]
pub fn le_to_u64<const N: usize>(b: &[u8; N]) -> u64 {
    let mut w = [0u8; 8];
    w[..N.min(8)].copy_from_slice(&b[..N.min(8)]);
    u64::from_le_bytes(w)
}

/// The low `N` bytes of `v`, little-endian.
#[inline(always)]
pub fn u64_to_le<const N: usize>(v: u64) -> [u8; N] {
    let w = v.to_le_bytes();
    let mut b = [0u8; N];
    b[..N.min(8)].copy_from_slice(&w[..N.min(8)]);
    b
}

/// Everything a running program can address: the engine's stack (checked
/// first) and the embedder's [`Memory`].
///
/// Engines build one per run around their own stack buffer; helpers get it
/// through [`crate::HelperEnv::guest`].
///
/// It holds its stack and memory as pointers, borrowed for `'r` (as the
/// references [`Guest::new`] takes), so that an engine may also keep one
/// for a whole run in a place its generated code passes to helpers
/// ([`Guest::from_raw`], `crate::raw`) without a reference to the stack
/// living while that code writes it.
#[derive(Debug)]
pub struct Guest<'r, 'a> {
    stack: *mut u8,
    stack_len: usize,
    pub(crate) mem: *mut Memory<'a>,
    _borrow: PhantomData<(&'r mut [u8], &'r mut Memory<'a>)>,
}

impl<'r, 'a> Guest<'r, 'a> {
    /// The engine's `stack` plus the embedder's regions.
    pub fn new(stack: &'r mut [u8], mem: &'r mut Memory<'a>) -> Guest<'r, 'a> {
        // SAFETY: both come from references that are borrowed for 'r.
        unsafe { Guest::from_raw(stack.as_mut_ptr(), stack.len(), mem) }
    }

    /// [`Guest::new`] from pointers, for engines that keep a `Guest` for a
    /// run where their generated code reaches it.
    ///
    /// # Safety
    /// `[stack, stack + stack_len)` must be valid for reads and writes and
    /// `mem` must point at a live `Memory`, both for `'r`, and neither may
    /// be accessed other than through the `Guest` while a method of it (or
    /// a reference it handed out) is in use. Between such uses, the owner
    /// may use them (an engine's generated code writes the stack).
    pub unsafe fn from_raw(
        stack: *mut u8,
        stack_len: usize,
        mem: *mut Memory<'a>,
    ) -> Guest<'r, 'a> {
        Guest {
            stack,
            stack_len,
            mem,
            _borrow: PhantomData,
        }
    }

    /// A shorter-lived view of the same memory (to lend to a helper).
    pub fn reborrow(&mut self) -> Guest<'_, 'a> {
        Guest {
            stack: self.stack,
            stack_len: self.stack_len,
            mem: self.mem,
            _borrow: PhantomData,
        }
    }

    /// The stack buffer.
    #[inline(always)]
    fn stack(&self) -> &[u8] {
        // SAFETY: valid for `'r` and reachable only through `self` while
        // it is borrowed (the constructors' contracts).
        unsafe { std::slice::from_raw_parts(self.stack, self.stack_len) }
    }

    /// The stack buffer, mutably.
    #[inline(always)]
    fn stack_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `stack`.
        unsafe { std::slice::from_raw_parts_mut(self.stack, self.stack_len) }
    }

    /// Guest address of the first stack byte.
    #[inline(always)]
    pub fn stack_start(&self) -> u64 {
        self.stack as u64
    }

    /// One past the last stack byte: the outermost frame's `r10`.
    pub fn stack_end(&self) -> u64 {
        self.stack_start() + self.stack_len as u64
    }

    /// The embedder's regions.
    #[inline(always)]
    pub fn memory(&self) -> &Memory<'a> {
        // SAFETY: as in `stack`.
        unsafe { &*self.mem }
    }

    /// The embedder's regions, mutably.
    #[inline(always)]
    pub fn memory_mut(&mut self) -> &mut Memory<'a> {
        // SAFETY: as in `stack`.
        unsafe { &mut *self.mem }
    }

    /// Offset into the stack of `[addr, addr + n)` when it lies inside it.
    #[inline(always)]
    fn stack_off(&self, addr: u64, n: usize) -> Option<usize> {
        let off = addr.wrapping_sub(self.stack_start());
        let len = self.stack_len as u64;
        if n as u64 <= len && off <= len - n as u64 {
            Some(off as usize)
        } else {
            None
        }
    }

    /// The `n` stack bytes at `addr`, borrowed, when `[addr, addr + n)`
    /// lies inside the stack (`None` otherwise: read them with
    /// [`Guest::read`]). For a helper that only looks at a key the program
    /// built on its stack: no copy, no per-size dispatch.
    #[inline(always)]
    pub fn stack_bytes(&self, addr: u64, n: usize) -> Option<&[u8]> {
        let off = addr.wrapping_sub(self.stack_start()) as usize;
        self.stack().get(off..)?.get(..n)
    }

    /// Reads `N` bytes at `addr`.
    #[inline(always)]
    pub fn load<const N: usize>(&self, addr: u64) -> Result<[u8; N], MemFault> {
        // One subtraction and two comparisons on the stack's fast path.
        let off = addr.wrapping_sub(self.stack_start()) as usize;
        if let Some(b) = self.stack().get(off..).and_then(|s| s.first_chunk::<N>()) {
            return Ok(*b);
        }
        self.memory().load::<N>(addr)
    }

    /// Writes `N` bytes at `addr`.
    #[inline(always)]
    pub fn store<const N: usize>(&mut self, addr: u64, bytes: [u8; N]) -> Result<(), MemFault> {
        let off = addr.wrapping_sub(self.stack_start()) as usize;
        if let Some(b) = self
            .stack_mut()
            .get_mut(off..)
            .and_then(|s| s.first_chunk_mut::<N>())
        {
            *b = bytes;
            return Ok(());
        }
        self.memory_mut().store::<N>(addr, bytes)
    }

    /// [`Memory::store_hinted`] after the stack (which never moves between
    /// regions, so a hit there returns `hint` unchanged).
    #[inline(always)]
    pub fn store_hinted<const N: usize>(
        &mut self,
        hint: usize,
        addr: u64,
        bytes: [u8; N],
    ) -> Result<usize, MemFault> {
        let off = addr.wrapping_sub(self.stack_start()) as usize;
        if let Some(b) = self
            .stack_mut()
            .get_mut(off..)
            .and_then(|s| s.first_chunk_mut::<N>())
        {
            *b = bytes;
            return Ok(hint);
        }
        self.memory_mut().store_hinted::<N>(hint, addr, bytes)
    }

    /// Copies `buf.len()` bytes at `addr` into `buf` (all inside one region).
    /// Inlined into helpers: the stack or the last region found is a few
    /// compares and the copy, without a call and a `Result` in memory.
    #[inline]
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let off = addr.wrapping_sub(self.stack_start()) as usize;
        match self.stack().get(off..).and_then(|s| s.get(..buf.len())) {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => self.memory().read(addr, buf),
        }
    }

    /// Copies `buf` to `addr` (all inside one writable region).
    #[inline]
    pub fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
        let off = addr.wrapping_sub(self.stack_start()) as usize;
        match self
            .stack_mut()
            .get_mut(off..)
            .and_then(|s| s.get_mut(..buf.len()))
        {
            Some(s) => {
                s.copy_from_slice(buf);
                Ok(())
            }
            None => self.memory_mut().write(addr, buf),
        }
    }

    /// Atomically replaces the `N`-byte value at `addr` by `f(old)`;
    /// returns `old` (see [`Memory::atomic_update`]).
    #[inline]
    pub fn atomic_update<const N: usize>(
        &mut self,
        addr: u64,
        mut f: impl FnMut(u64) -> u64,
    ) -> Result<u64, MemFault> {
        if let Some(off) = self.stack_off(addr, N) {
            // The stack belongs to this run alone: a plain read-modify-write
            // is atomic with respect to everything that can observe it.
            let b = &mut self.stack_mut()[off..off + N];
            let mut w = [0u8; 8];
            w[..N].copy_from_slice(b);
            let old = u64::from_le_bytes(w);
            b.copy_from_slice(&f(old).to_le_bytes()[..N]);
            return Ok(old);
        }
        self.memory_mut().atomic_update::<N>(addr, f)
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the
    /// NUL) at `addr`; `None` in the result when no NUL was found in `max`.
    pub fn read_cstr(&self, addr: u64, max: usize) -> Result<Option<Vec<u8>>, MemFault> {
        let mut out = Vec::new();
        for i in 0..max as u64 {
            let [b] = self.load::<1>(addr.wrapping_add(i))?;
            if b == 0 {
                return Ok(Some(out));
            }
            out.push(b);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_changes_with_the_region_list_only() {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let mut m1 = Memory::new();
        let m2 = Memory::new();
        assert_ne!(m1.version(), m2.version());
        let v0 = m1.version();
        let pa = m1.add(RegionKind::Context, &mut a);
        let v1 = m1.version();
        assert_ne!(v1, v0);
        // Accesses do not change it.
        m1.store::<1>(pa, [1]).unwrap();
        m1.load::<1>(pa).unwrap();
        assert_eq!(m1.version(), v1);
        m1.add(RegionKind::Packet, &mut b);
        let v2 = m1.version();
        assert!(v2 != v1 && v2 != v0);
        m1.clear();
        assert!(![v0, v1, v2, m2.version()].contains(&m1.version()));
        assert_ne!(Memory::default().version(), Memory::default().version());
    }

    /// A region answers exactly the accesses inside it: up to its last
    /// byte, not one past, not below its start (the offset wraps), not a
    /// size whose end overflows `u64` (an add that wrapped would take it).
    #[test]
    fn region_bounds_are_exact() {
        let mut a = [0u8; 16];
        let mut m = Memory::new();
        let pa = m.add(RegionKind::Other, &mut a);
        for (addr, size, ok) in [
            (pa, 16, true),
            (pa, 0, true),
            (pa + 15, 1, true),
            (pa + 16, 0, true),
            (pa + 12, 4, true),
            (pa + 13, 4, false),
            (pa + 16, 1, false),
            (pa, 17, false),
            (pa - 1, 1, false),
            (pa - 1, 2, false),
            (pa + 1, usize::MAX, false),
            (pa + 8, usize::MAX - 7, false),
            (pa.wrapping_sub(u64::MAX), 16, false),
        ] {
            assert_eq!(
                m.find(addr, size, Access::Read).is_ok(),
                ok,
                "{addr:#x} {size}"
            );
        }
        let mut r = [0u8; 9];
        m.store::<4>(pa + 12, [1, 2, 3, 4]).unwrap();
        assert!(m.read(pa + 7, &mut r).is_ok());
        assert_eq!(&r[5..], &[1, 2, 3, 4]);
        assert!(m.read(pa + 8, &mut r).is_err());
        assert!(m.store::<8>(pa + 9, [0; 8]).is_err());
        // Read-only: reads inside, no write anywhere.
        let ro = [0u8; 8];
        let mut m2 = Memory::new();
        // SAFETY: `ro` outlives `m2` and nothing writes through the region
        // (added read-only; only `find` is called).
        let pr = unsafe { m2.add_raw(RegionKind::Other, ro.as_ptr().cast_mut(), 8, false) };
        assert!(m2.find(pr, 8, Access::Read).is_ok());
        assert!(m2.find(pr, 1, Access::Write).is_err());
        assert!(m2.find(pr + 8, 0, Access::Write).is_err());
    }

    /// `Guest::stack_bytes` lends exactly the stack's bytes asked for,
    /// and nothing that runs past either end (nor regions' bytes).
    #[test]
    fn stack_bytes_stay_inside_the_stack() {
        let mut stack: Vec<u8> = (0..32).collect();
        let mut other = [9u8; 8];
        let mut mem = Memory::new();
        let po = mem.add(RegionKind::Other, &mut other);
        let guest = Guest::new(&mut stack, &mut mem);
        let s = guest.stack_start();
        assert_eq!(guest.stack_bytes(s, 4), Some(&[0u8, 1, 2, 3][..]));
        assert_eq!(guest.stack_bytes(s + 28, 4), Some(&[28u8, 29, 30, 31][..]));
        assert_eq!(guest.stack_bytes(s, 32).map(<[u8]>::len), Some(32));
        assert_eq!(guest.stack_bytes(s + 32, 0), Some(&[][..]));
        for (addr, n) in [
            (s + 29, 4),
            (s + 32, 1),
            (s, 33),
            (s.wrapping_sub(1), 4),
            (s.wrapping_sub(4), 4),
            (u64::MAX, 2),
            (po, 4),
        ] {
            assert_eq!(guest.stack_bytes(addr, n), None, "{addr:#x} {n}");
        }
        // What `stack_bytes` refuses the regions may still have.
        assert_eq!(guest.load::<4>(po).unwrap(), [9; 4]);
    }

    #[test]
    fn region_bounds() {
        let mut a = [0u8; 8];
        let b = [7u8; 4];
        let mut mem = Memory::new();
        let pa = mem.add(RegionKind::Context, &mut a);
        let pb = mem.add_readonly(RegionKind::ReadOnlyData, &b);
        assert!(mem.load::<8>(pa).is_ok());
        assert!(mem.load::<8>(pa + 1).is_err());
        assert!(mem.load::<1>(pa.wrapping_sub(1)).is_err());
        assert_eq!(mem.load::<4>(pb).unwrap(), [7; 4]);
        let e = mem.store::<1>(pb, [1]).unwrap_err();
        assert_eq!(
            e,
            MemFault {
                addr: pb,
                size: 1,
                access: Access::Write
            }
        );
        mem.store::<4>(pa + 4, [1, 2, 3, 4]).unwrap();
        // Address wrap-around never matches.
        assert!(mem.load::<8>(u64::MAX - 3).is_err());
        assert_eq!(
            mem.atomic_update::<4>(pa + 4, |v| v + 1).unwrap(),
            0x0403_0201
        );
        // Possibly unaligned: still a correct read-modify-write.
        assert_eq!(mem.atomic_update::<4>(pa + 3, |_| 0).unwrap(), 0x0302_0200);
        assert!(mem.atomic_update::<4>(pa + 5, |_| 0).is_err());
        drop(mem);
        assert_eq!(a, [0, 0, 0, 0, 0, 0, 0, 4]);
    }

    #[test]
    fn a_new_memory_takes_room_regions_without_growing() {
        let mut bufs = [[0u8; 4]; Memory::ROOM];
        let mut mem = Memory::new();
        let list = mem.regions.as_ptr();
        for b in &mut bufs {
            mem.add(RegionKind::MapValue, b);
        }
        assert_eq!(mem.regions().len(), Memory::ROOM);
        assert_eq!(mem.regions.as_ptr(), list);
    }

    #[test]
    fn hinted_stores_check_the_hint_and_keep_the_lookup_hint() {
        let mut ctx = [0u8; 8];
        let ro = [2u8; 8];
        let mut val = [4u8; 8];
        let mut mem = Memory::new();
        let pc = mem.add(RegionKind::Context, &mut ctx);
        let pr = mem.add_readonly(RegionKind::ReadOnlyData, &ro);
        let pv = mem.add(RegionKind::MapValue, &mut val);
        // The program's accesses go to the value: `last` is its region.
        assert_eq!(mem.load::<1>(pv).unwrap(), [4]);
        assert_eq!(mem.last.get(), 2);
        // A wrong or stale hint (past the end, a region not holding the
        // address, a read-only one) is a walk, not a store elsewhere.
        for hint in [7, 2, 1] {
            assert_eq!(mem.store_hinted::<4>(hint, pc, [hint as u8; 4]), Ok(0));
        }
        // A good hint is used as it is.
        assert_eq!(mem.store_hinted::<4>(0, pc + 4, [5; 4]), Ok(0));
        // The lookup hint stays on the value's region.
        assert_eq!(mem.last.get(), 2);
        // Bounds and permissions as `store`.
        for (hint, addr) in [(0, pc + 6), (1, pr), (2, pv + 5)] {
            assert_eq!(
                mem.store_hinted::<4>(hint, addr, [0; 4]),
                Err(MemFault {
                    addr,
                    size: 4,
                    access: Access::Write
                })
            );
        }
        drop(mem);
        assert_eq!(ctx, [1, 1, 1, 1, 5, 5, 5, 5]);
        assert_eq!(val, [4; 8]);
    }

    #[test]
    fn zero_in_packet_writes_only_inside_a_writable_packet_region() {
        let mut other = [7u8; 32];
        let mut pkt = [9u8; 64];
        let ro = [9u8; 32];
        let mut mem = Memory::new();
        let po = mem.add(RegionKind::Other, &mut other);
        // No packet region: nothing written, even where a region is.
        assert!(!mem.zero_in_packet(po, 4));
        let pp = mem.add(RegionKind::Packet, &mut pkt);
        let last = mem.last.get();
        // Every length of the word and `memset` cases, at odd places.
        for (off, len) in [(1, 1), (3, 7), (10, 8), (20, 9), (30, 16), (47, 17)] {
            assert!(mem.zero_in_packet(pp + off, len), "{off} {len}");
        }
        assert!(mem.zero_in_packet(pp + 64, 0));
        // Past the end, before the start, in another region: refused.
        assert!(!mem.zero_in_packet(pp + 60, 5));
        assert!(!mem.zero_in_packet(pp.wrapping_sub(1), 2));
        assert!(!mem.zero_in_packet(po, 1));
        // The lookup hint is not the packet's business.
        assert_eq!(mem.last.get(), last);
        drop(mem);
        let zeroed = |i: usize| {
            [(1, 1), (3, 7), (10, 8), (20, 9), (30, 16), (47, 17)]
                .iter()
                .any(|&(o, l)| (o..o + l).contains(&i))
        };
        for (i, b) in pkt.iter().enumerate() {
            assert_eq!(*b, if zeroed(i) { 0 } else { 9 }, "byte {i}");
        }
        assert_eq!(other, [7; 32]);
        // A read-only packet region is not written.
        let mut mem = Memory::new();
        let pr = mem.add_readonly(RegionKind::Packet, &ro);
        assert!(!mem.zero_in_packet(pr, 8));
        drop(mem);
        assert_eq!(ro, [9; 32]);
    }

    #[test]
    fn the_remembered_regions_keep_every_check() {
        // The last region found is tried before the walk: it must still
        // check bounds and permissions, and be forgotten on `clear`.
        let mut ctx = [1u8; 8];
        let ro = [2u8; 8];
        let pkt = [3u8; 16];
        let mut val = [4u8; 8];
        let mut mem = Memory::new();
        let pc = mem.add(RegionKind::Context, &mut ctx);
        let pr = mem.add_readonly(RegionKind::ReadOnlyData, &ro);
        let pp = mem.add_readonly(RegionKind::Packet, &pkt);
        let pv = mem.add(RegionKind::MapValue, &mut val);
        let w = |mem: &mut Memory<'_>, a: u64| mem.write(a, &[9]);
        // Alternate between two regions (each access misses `last`).
        for _ in 0..3 {
            assert_eq!(mem.load::<1>(pr).unwrap(), [2]);
            assert_eq!(mem.load::<1>(pc).unwrap(), [1]);
        }
        // The read-only region was just found: a write there still faults,
        // and so does one to the read-only packet.
        let fault = |addr, size| MemFault {
            addr,
            size,
            access: Access::Write,
        };
        assert_eq!(w(&mut mem, pr), Err(fault(pr, 1)));
        assert_eq!(w(&mut mem, pp), Err(fault(pp, 1)));
        assert_eq!(mem.load::<8>(pp + 8).unwrap(), [3; 8]);
        // `last` = the packet: past its end is a fault, not a hit.
        assert!(mem.load::<2>(pp + 15).is_err());
        let mut buf = [0u8; 4];
        assert!(mem.read(pp + 13, &mut buf).is_err());
        mem.read(pp + 12, &mut buf).unwrap();
        assert_eq!(buf, [3; 4]);
        w(&mut mem, pv).unwrap();
        w(&mut mem, pc + 7).unwrap();
        // Straddling the context's end (whatever lies next to it).
        assert!(mem.write(pc + 7, &[9, 9]).is_err());
        // Cleared: nothing is found, whatever was remembered.
        mem.clear();
        for a in [pc, pr, pp, pv] {
            assert!(mem.load::<1>(a).is_err());
            assert!(mem.read(a, &mut buf[..1]).is_err());
        }
        let mut other = [5u8; 4];
        let po = mem.add(RegionKind::Context, &mut other);
        assert_eq!(mem.load::<1>(po).unwrap(), [5]);
        assert!(mem.load::<1>(pv).is_err() && mem.load::<1>(pc).is_err());
        drop(mem);
        assert_eq!((ctx[7], val[0]), (9, 9));
    }

    #[test]
    fn guest_stack_first() {
        let mut stack = [0u8; 16];
        let mut ctx = [5u8; 2];
        let mut mem = Memory::new();
        let pc = mem.add(RegionKind::Context, &mut ctx);
        let mut g = Guest::new(&mut stack, &mut mem);
        let top = g.stack_end();
        g.store::<8>(top - 8, 42u64.to_le_bytes()).unwrap();
        assert_eq!(u64::from_le_bytes(g.load::<8>(top - 8).unwrap()), 42);
        assert!(g.load::<8>(top - 4).is_err());
        assert_eq!(g.load::<2>(pc).unwrap(), [5, 5]);
        g.write(top - 2, b"a\0").unwrap();
        assert_eq!(g.read_cstr(top - 2, 10).unwrap(), Some(b"a".to_vec()));
        assert_eq!(g.atomic_update::<4>(top - 8, |v| v * 2).unwrap(), 42);
        assert_eq!(g.load::<1>(top - 8).unwrap(), [84]);
    }
}
