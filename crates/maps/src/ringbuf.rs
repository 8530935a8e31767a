//! `ringbuf`: the kernel's multi-producer, single-consumer ring buffer.
//!
//! Records are laid out as in the kernel: an 8-byte header (`u32 len`
//! whose bit 31 means "busy" and bit 30 "discarded", then `u32 pg_off`),
//! then the data, the whole rounded up to 8 bytes. Positions grow without
//! wrapping; the offset in the ring is `pos & (size - 1)`.
//!
//! The kernel maps the data pages twice, back to back, so that a record
//! crossing the end is contiguous. bpfkit allocates twice the size instead:
//! a record that crosses the end continues into the second half, and the
//! consumer ([`crate::Map::ringbuf_consume`]) reads it from the same place; the
//! second half is never read otherwise.
//!
//! Reservations hold a lock only to move the producer position; submit and
//! discard flip the header bits atomically; the consumer stops at the first
//! busy record, so records are consumed in reservation order.

use crate::storage::{self, ValueRef};
use crate::{lock, MapError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Header bit: the record is reserved but not yet submitted.
pub const BUSY_BIT: u32 = 1 << 31;
/// Header bit: the record was discarded.
pub const DISCARD_BIT: u32 = 1 << 30;
/// Header size.
pub const HDR_SZ: usize = 8;
/// `bpf_ringbuf_query` flags.
pub mod query {
    /// Bytes not yet consumed (`BPF_RB_AVAIL_DATA`).
    pub const AVAIL_DATA: u64 = 0;
    /// Size of the ring (`BPF_RB_RING_SIZE`).
    pub const RING_SIZE: u64 = 1;
    /// Consumer position (`BPF_RB_CONS_POS`).
    pub const CONS_POS: u64 = 2;
    /// Producer position (`BPF_RB_PROD_POS`).
    pub const PROD_POS: u64 = 3;
}
/// `BPF_RB_NO_WAKEUP`.
pub const NO_WAKEUP: u64 = 1;
/// `BPF_RB_FORCE_WAKEUP`.
pub const FORCE_WAKEUP: u64 = 2;
/// Largest record (`RINGBUF_MAX_RECORD_SZ`).
pub const MAX_RECORD_SZ: u64 = u32::MAX as u64 / 4;

pub(crate) struct RingBuf {
    words: Box<[AtomicU64]>,
    size: u64,
    producer: Mutex<()>,
    prod_pos: AtomicU64,
    cons_pos: AtomicU64,
    /// Serialises consumers.
    consumer: Mutex<()>,
}

fn header(len: u32, pg_off: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&len.to_ne_bytes());
    b[4..].copy_from_slice(&pg_off.to_ne_bytes());
    u64::from_ne_bytes(b)
}

fn header_len(h: u64) -> u32 {
    let b = h.to_ne_bytes();
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// Whether a record of `total` bytes cannot fit, from a producer position
/// read before the consumer position: `cons` may then exceed `prod`.
fn full_as_seen(prod: u64, cons: u64, total: u64, size: u64) -> bool {
    prod.saturating_sub(cons) + total > size - 1
}

impl RingBuf {
    pub(crate) fn new(size: u32) -> Result<RingBuf, MapError> {
        Ok(RingBuf {
            words: storage::alloc(2 * size as usize)?,
            size: size as u64,
            producer: Mutex::new(()),
            prod_pos: AtomicU64::new(0),
            cons_pos: AtomicU64::new(0),
            consumer: Mutex::new(()),
        })
    }

    /// `bpf_ringbuf_reserve`: `None` where the kernel returns NULL (bad
    /// flags, too big, no room). Inlined up to the lock: a ring that its
    /// consumer does not keep up with answers every reservation and output
    /// from here, with a few loads and compares.
    #[inline]
    pub(crate) fn reserve(&self, size: u64, flags: u64) -> Option<ValueRef<'_>> {
        if flags != 0 || size > MAX_RECORD_SZ {
            return None;
        }
        let total = (size + HDR_SZ as u64).div_ceil(8) * 8;
        if total > self.size {
            return None;
        }
        // A full ring (a lagging consumer) answers without the lock. The
        // producer position is read first: it only grows, so the space
        // used as seen here is at most the space used at the moment the
        // consumer position is read, and "full" was true then. (The
        // consumer may even have passed the producer position read, if
        // records were made and consumed in between: nothing used then.)
        let prod = self.prod_pos.load(Ordering::Acquire);
        let cons = self.cons_pos.load(Ordering::Acquire);
        if full_as_seen(prod, cons, total, self.size) {
            return None;
        }
        self.reserve_locked(size, total)
    }

    /// The rest of [`RingBuf::reserve`], under the producer lock, for a
    /// record of `total` bytes (header and padding included).
    #[inline(never)]
    fn reserve_locked(&self, size: u64, total: u64) -> Option<ValueRef<'_>> {
        let _p = lock(&self.producer);
        let cons = self.cons_pos.load(Ordering::Acquire);
        let prod = self.prod_pos.load(Ordering::Relaxed);
        if prod + total - cons > self.size - 1 {
            return None;
        }
        let off = (prod & (self.size - 1)) as usize;
        let w = off / 8;
        self.words[w].store(
            header(size as u32 | BUSY_BIT, (off / 4096) as u32),
            Ordering::Relaxed,
        );
        self.prod_pos.store(prod + total, Ordering::Release);
        let n = (total as usize - HDR_SZ) / 8;
        Some(ValueRef::new(&self.words[w + 1..w + 1 + n], size as usize))
    }

    /// Header word of the record whose data starts at `addr`.
    fn header_of(&self, addr: u64) -> Result<&AtomicU64, MapError> {
        let base = self.words.as_ptr() as u64;
        let off = addr.wrapping_sub(base).wrapping_sub(HDR_SZ as u64);
        if off >= self.size || !off.is_multiple_of(8) {
            return Err(MapError::Invalid {
                what: "not a record of this ring buffer",
            });
        }
        let h = &self.words[off as usize / 8];
        if header_len(h.load(Ordering::Acquire)) & BUSY_BIT == 0 {
            return Err(MapError::Invalid {
                what: "record already submitted or discarded",
            });
        }
        Ok(h)
    }

    /// `bpf_ringbuf_submit` / `bpf_ringbuf_discard` on the record whose data
    /// starts at guest address `addr`.
    pub(crate) fn commit(&self, addr: u64, discard: bool) -> Result<(), MapError> {
        let h = self.header_of(addr)?;
        // Idempotent bit operations on the length half of the header (two
        // racing commits of one record, which only an unverified program
        // can make, cannot leave it busy): a discard marks the record
        // while it is still busy, so the consumer never sees it half done.
        if discard {
            h.fetch_or(header(DISCARD_BIT, 0), Ordering::Relaxed);
        }
        h.fetch_and(!header(BUSY_BIT, 0), Ordering::Release);
        Ok(())
    }

    /// What [`RingBuf::output`] of `size` bytes with `flags` would answer
    /// without the data: `Some` for bad flags and for a record that cannot
    /// fit (too big, or the ring full as [`RingBuf::reserve`] tests it,
    /// without the lock), in that order, as the kernel's
    /// `bpf_ringbuf_output` checks before its copy; `None` when the output
    /// may go on. A caller can then skip reading the data when a lagging
    /// consumer has left no room, the steady state of such a ring.
    #[inline]
    pub(crate) fn output_refused(&self, size: u64, flags: u64) -> Option<MapError> {
        if flags & !(NO_WAKEUP | FORCE_WAKEUP) != 0 {
            return Some(MapError::Invalid {
                what: "ring buffer output flags",
            });
        }
        if size > MAX_RECORD_SZ {
            return Some(MapError::Again);
        }
        let total = (size + HDR_SZ as u64).div_ceil(8) * 8;
        let prod = self.prod_pos.load(Ordering::Acquire);
        let cons = self.cons_pos.load(Ordering::Acquire);
        if total > self.size || full_as_seen(prod, cons, total, self.size) {
            return Some(MapError::Again);
        }
        None
    }

    /// `bpf_ringbuf_output`.
    #[inline]
    pub(crate) fn output(&self, data: &[u8], flags: u64) -> Result<(), MapError> {
        if flags & !(NO_WAKEUP | FORCE_WAKEUP) != 0 {
            return Err(MapError::Invalid {
                what: "ring buffer output flags",
            });
        }
        let r = self.reserve(data.len() as u64, 0).ok_or(MapError::Again)?;
        r.write_at(0, data)?;
        self.commit(r.addr(), false)
    }

    /// `bpf_ringbuf_query`.
    #[inline]
    pub(crate) fn query(&self, flags: u64) -> u64 {
        let cons = self.cons_pos.load(Ordering::Acquire);
        let prod = self.prod_pos.load(Ordering::Acquire);
        match flags {
            query::AVAIL_DATA => prod - cons,
            query::RING_SIZE => self.size,
            query::CONS_POS => cons,
            query::PROD_POS => prod,
            _ => 0,
        }
    }

    /// Consumes submitted records in order, calling `f` on each record's
    /// data and skipping discarded ones; stops at the first busy record.
    /// Returns how many records `f` saw.
    pub(crate) fn consume(&self, mut f: impl FnMut(&[u8])) -> usize {
        let _c = lock(&self.consumer);
        let mut n = 0;
        let mut buf = Vec::new();
        loop {
            let cons = self.cons_pos.load(Ordering::Relaxed);
            let prod = self.prod_pos.load(Ordering::Acquire);
            if cons == prod {
                return n;
            }
            let w = (cons & (self.size - 1)) as usize / 8;
            let len = header_len(self.words[w].load(Ordering::Acquire));
            if len & BUSY_BIT != 0 {
                return n;
            }
            let data = (len & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if len & DISCARD_BIT == 0 {
                buf.resize(data, 0);
                storage::read(&self.words, w + 1, &mut buf);
                f(&buf);
                n += 1;
            }
            let total = (data + HDR_SZ).div_ceil(8) * 8;
            self.cons_pos.store(cons + total as u64, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::full_as_seen;

    #[test]
    fn full_test_survives_a_consumer_ahead_of_the_stale_producer() {
        // Seen: producer at 100 (stale), consumer at 200 (it consumed
        // records made after the producer position was read): nothing used.
        assert!(!full_as_seen(100, 200, 8, 4096));
        // Exactly the kernel's rule otherwise: used + record > size - 1.
        assert!(!full_as_seen(4088, 0, 7, 4096));
        assert!(full_as_seen(4088, 0, 8, 4096));
    }
}
