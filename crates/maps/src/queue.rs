//! `queue` (FIFO) and `stack` (LIFO): values without keys.
//!
//! Push (`BPF_MAP_UPDATE_ELEM` with no key, `bpf_map_push_elem`) fails with
//! `E2BIG` when full unless `BPF_EXIST` is given, which drops the *oldest*
//! element to make room (for both kinds, as in the kernel). Pop and peek
//! take the oldest element (queue) or the newest (stack); `ENOENT` when
//! empty. Values are copied in and out, never shared.

use crate::{lock, update_flags, MapError};
use std::collections::VecDeque;
use std::sync::Mutex;

pub(crate) struct QueueStack {
    items: Mutex<VecDeque<Box<[u8]>>>,
    max_entries: u32,
    lifo: bool,
}

impl QueueStack {
    pub(crate) fn new(max_entries: u32, lifo: bool) -> QueueStack {
        QueueStack {
            items: Mutex::new(VecDeque::new()),
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
        let mut q = lock(&self.items);
        if q.len() >= self.max_entries as usize {
            if flags != update_flags::EXIST {
                return Err(MapError::Full {
                    max_entries: self.max_entries,
                });
            }
            q.pop_front();
        }
        q.push_back(value.into());
        Ok(())
    }

    /// Pops (or peeks) into `out`.
    pub(crate) fn pop(&self, out: &mut [u8], remove: bool) -> Result<(), MapError> {
        let mut q = lock(&self.items);
        let v = match (self.lifo, remove) {
            (false, true) => q.pop_front(),
            (true, true) => q.pop_back(),
            (false, false) => q.front().cloned(),
            (true, false) => q.back().cloned(),
        }
        .ok_or(MapError::NotFound)?;
        out.copy_from_slice(&v);
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.items).len()
    }
}
