//! Value storage: 8-byte-aligned words, accessed atomically by the crate
//! and through raw pointers by engines (see [`crate::epoch`]).

use crate::MapError;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Zeroed storage of at least `bytes` bytes, in whole words.
pub(crate) fn alloc(bytes: usize) -> Result<Box<[AtomicU64]>, MapError> {
    crate::raw::zeroed_words(bytes.div_ceil(8))
}

/// Copies `out.len()` bytes starting at word `w` into `out`.
pub(crate) fn read(words: &[AtomicU64], w: usize, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let b = words[w + i].load(Relaxed).to_ne_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Copies `src` to the bytes starting at word `w`; bytes of a last partial
/// word beyond `src` keep their value.
pub(crate) fn write(words: &[AtomicU64], w: usize, src: &[u8]) {
    for (i, chunk) in src.chunks(8).enumerate() {
        let word = &words[w + i];
        if chunk.len() == 8 {
            word.store(
                u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])),
                Relaxed,
            );
        } else {
            let _ = word.fetch_update(Relaxed, Relaxed, |old| {
                let mut b = old.to_ne_bytes();
                b[..chunk.len()].copy_from_slice(chunk);
                Some(u64::from_ne_bytes(b))
            });
        }
    }
}

/// A map value (or ring buffer record) that a program may use in place for
/// the lifetime `'g` of its [`crate::RunGuard`]: 8-byte aligned, `len`
/// bytes, readable and writable, with atomics on aligned words.
///
/// Engines give the program [`ValueRef::addr`] and register
/// `[as_ptr(), as_ptr() + len())` as a writable guest region until the run
/// ends; helpers can use the safe accessors.
#[derive(Clone, Copy)]
pub struct ValueRef<'g> {
    words: &'g [AtomicU64],
    len: usize,
    _guard: PhantomData<&'g crate::RunGuard>,
}

impl<'g> ValueRef<'g> {
    pub(crate) fn new(words: &'g [AtomicU64], len: usize) -> ValueRef<'g> {
        debug_assert!(len <= words.len() * 8);
        ValueRef {
            words,
            len,
            _guard: PhantomData,
        }
    }

    /// Host pointer to the first byte (8-byte aligned). Valid for reads and
    /// writes of [`ValueRef::len`] bytes during `'g`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.words.as_ptr().cast::<u8>().cast_mut()
    }

    /// The pointer as a guest address (guest addresses are host addresses).
    pub fn addr(&self) -> u64 {
        self.as_ptr() as u64
    }

    /// Size in bytes (the map's value size, or the reserved record size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (a zero-sized ring buffer record).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of the bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        read(self.words, 0, &mut v);
        v
    }

    /// Copies `src` to byte offset `off` (`off` a multiple of 8).
    pub fn write_at(&self, off: usize, src: &[u8]) -> Result<(), MapError> {
        if !off.is_multiple_of(8) || off.checked_add(src.len()).is_none_or(|e| e > self.len) {
            return Err(MapError::Invalid {
                what: "write outside the value or unaligned",
            });
        }
        write(self.words, off / 8, src);
        Ok(())
    }

    /// The aligned 8-byte word at byte offset `off`, for atomics.
    pub fn atomic_u64(&self, off: usize) -> Option<&'g AtomicU64> {
        if off.is_multiple_of(8) && off + 8 <= self.len {
            self.words.get(off / 8)
        } else {
            None
        }
    }
}

impl std::fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueRef")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .finish()
    }
}
