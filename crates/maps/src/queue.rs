//! `queue` (FIFO) and `stack` (LIFO): values without keys.
//!
//! Push (`BPF_MAP_UPDATE_ELEM` with no key, `bpf_map_push_elem`) fails with
//! `E2BIG` when full unless `BPF_EXIST` is given, which drops the *oldest*
//! element to make room (for both kinds, as in the kernel). Pop and peek
//! take the oldest element (queue) or the newest (stack); `ENOENT` when
//! empty. Values are copied in and out, never shared.
//!
//! Storage is one ring of fixed-size slots, grown by doubling up to
//! `max_entries` (the kernel preallocates all of it): a push or pop copies
//! the value and allocates nothing once the ring has grown. An empty map
//! (pop, peek) and a full one (push without `BPF_EXIST`) answer from a
//! count kept beside the ring, without the lock: the answer was true when
//! the count was read.

use crate::{lock, update_flags, MapError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Values of one size in a ring of slots: slot `(head + i) % cap` holds
/// the `i`-th oldest value.
#[derive(Default)]
struct Ring {
    buf: Vec<u8>,
    /// Bytes per value (set by the first push; the map checks sizes).
    size: usize,
    cap: usize,
    head: usize,
    len: usize,
}

impl Ring {
    fn slot(&self, i: usize) -> std::ops::Range<usize> {
        let at = (self.head + i) % self.cap * self.size;
        at..at + self.size
    }

    /// Room for one more value, at most `max` in all.
    fn grow(&mut self, max: usize) {
        let cap = (self.cap * 2).max(4).min(max.max(self.len + 1));
        let mut buf = Vec::with_capacity(cap * self.size);
        for i in 0..self.len {
            buf.extend_from_slice(&self.buf[self.slot(i)]);
        }
        buf.resize(cap * self.size, 0);
        *self = Ring {
            buf,
            size: self.size,
            cap,
            head: 0,
            len: self.len,
        };
    }

    fn push_back(&mut self, value: &[u8], max: usize) {
        if self.len == 0 && self.cap == 0 {
            self.size = value.len();
        }
        if self.len == self.cap {
            self.grow(max);
        }
        let r = self.slot(self.len);
        self.buf[r].copy_from_slice(value);
        self.len += 1;
    }

    /// The slot of the oldest (`newest` false) or newest value.
    fn end(&self, newest: bool) -> Option<std::ops::Range<usize>> {
        if self.len == 0 {
            return None;
        }
        Some(self.slot(if newest { self.len - 1 } else { 0 }))
    }

    fn drop_end(&mut self, newest: bool) {
        if !newest {
            self.head = (self.head + 1) % self.cap;
        }
        self.len -= 1;
    }
}

pub(crate) struct QueueStack {
    items: Mutex<Ring>,
    /// `items.len`, written under the lock.
    count: AtomicUsize,
    max_entries: u32,
    lifo: bool,
}

impl QueueStack {
    pub(crate) fn new(max_entries: u32, lifo: bool) -> QueueStack {
        QueueStack {
            items: Mutex::new(Ring::default()),
            count: AtomicUsize::new(0),
            max_entries,
            lifo,
        }
    }

    pub(crate) fn push(&self, value: &[u8], flags: u64) -> Result<(), MapError> {
        if flags & update_flags::NOEXIST != 0 || flags > update_flags::EXIST {
            return Err(MapError::Invalid {
                what: "push flags (only BPF_ANY or BPF_EXIST)",
            });
        }
        let max = self.max_entries as usize;
        if flags != update_flags::EXIST && self.count.load(Ordering::Acquire) >= max {
            return Err(MapError::Full {
                max_entries: self.max_entries,
            });
        }
        let mut q = lock(&self.items);
        if q.len >= max {
            if flags != update_flags::EXIST {
                return Err(MapError::Full {
                    max_entries: self.max_entries,
                });
            }
            q.drop_end(false);
        }
        q.push_back(value, max);
        self.count.store(q.len, Ordering::Release);
        Ok(())
    }

    /// Pops (or peeks) into `out`.
    pub(crate) fn pop(&self, out: &mut [u8], remove: bool) -> Result<(), MapError> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Err(MapError::NotFound);
        }
        let mut q = lock(&self.items);
        let r = q.end(self.lifo).ok_or(MapError::NotFound)?;
        let v = q.buf.get(r).ok_or(MapError::Invalid {
            what: "value buffer",
        })?;
        if v.len() != out.len() {
            return Err(MapError::BadLength {
                what: "value",
                got: out.len(),
                expected: v.len(),
            });
        }
        out.copy_from_slice(v);
        if remove {
            q.drop_end(self.lifo);
            self.count.store(q.len, Ordering::Release);
        }
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}
