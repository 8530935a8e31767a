//! A `devmap_hash`'s entries as engines can find them without the helper
//! ([`crate::Map::devhash_layout`]): the map's [`crate::hash::Hash`] stays
//! the control side's (iteration, element count, flags), and next to it
//! every present key has an entry of two words in one allocation (the
//! value word as programs read it, then the key) and a cell of an
//! open-addressing table holding the entry's address.
//!
//! Why not probe the hash itself: its elements are separate allocations
//! (no one region for a run to register) and its buckets are chains behind
//! `Arc`s, whose layout generated code cannot read. Here a lookup is a
//! multiplication, a shift and one or two loads.
//!
//! Readers take no lock: a cell is `EMPTY` (0, the end of a probe),
//! [`TOMB`] (a deleted key: probe on) or an entry address. Entries never
//! change while a cell may point at them: an update takes a new entry and
//! stores its address in the key's cell (release order, after the entry's
//! words), and the old entry goes back to the free list only through the
//! epoch collector, as a `devmap`'s words do (`slots.rs`), so a pointer a
//! run holds keeps its value until the run ends and the same entry gives
//! the same pointer while unchanged. Cells never become `EMPTY` again
//! within a table, and a writer never fills a table's last quarter: when an
//! insert would, it builds a new table of the live entries, publishes its
//! address and retires the old one through the collector. So every table a
//! reader can hold has an empty cell, and a probe ends.

use crate::raw::RcuCell;
use crate::{lock, MapError, RunGuard};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Maps up to this `max_entries` get an index (a table of twice the
/// entries, rounded up to a power of two, and twice the entries again
/// for retired ones): larger ones keep the helper's hash lookups.
pub(crate) const INDEX_MAX_ENTRIES: u32 = 1 << 16;

/// A deleted key's cell.
pub const TOMB: u64 = 1;

/// Entries beyond `max_entries`, for retired ones waiting for the epoch
/// collector: `max(max_entries, this)`.
const SPARE_MIN: usize = 256;

/// How long an update waits for retired entries before `ENOMEM`.
const WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// What generated code needs to find an entry (see
/// [`crate::Map::devhash_layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevhashLayout {
    /// Address of the word holding the current table's address.
    pub table: u64,
    /// The odd multiplier: key `k`'s first cell is `(k * mult) >> (32 -
    /// bits)` in 32-bit arithmetic.
    pub mult: u32,
    /// The table has `1 << bits` cells (8-byte words).
    pub bits: u32,
    /// Address and length in bytes of all entries (two words each: the
    /// value, then the key in the low 4 bytes of the second).
    pub entries: u64,
    /// Length of the entries in bytes.
    pub entries_len: usize,
}

pub(crate) struct Writer {
    /// Cells of the current table that are not `EMPTY`.
    used: usize,
}

/// A retired entry: goes back to the free list when the collector drops it.
struct Release(u32, Arc<Mutex<VecDeque<u32>>>);

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.1).push_back(self.0);
    }
}

pub(crate) struct DevIndex {
    entries: Box<[AtomicU64]>,
    /// The current table.
    cells: RcuCell<Box<[AtomicU64]>>,
    /// The address of its first cell, for generated code (boxed: its own
    /// address is given out). Stored before the table is published and the
    /// old one retired, so a run pinned after that retirement reads the
    /// new address.
    pub(crate) table: Box<AtomicU64>,
    mult: u32,
    bits: u32,
    /// Changes made (any key), bumped after each: while it reads the same,
    /// what a lookup found after reading it is still there.
    changes: AtomicU64,
    w: Mutex<Writer>,
    free: Arc<Mutex<VecDeque<u32>>>,
}

impl DevIndex {
    /// An index for `max_entries` keys, `None` above
    /// [`INDEX_MAX_ENTRIES`].
    pub(crate) fn new(max_entries: u32) -> Result<Option<DevIndex>, MapError> {
        if max_entries == 0 || max_entries > INDEX_MAX_ENTRIES {
            return Ok(None);
        }
        let n = max_entries as usize;
        let cells = (2 * n).next_power_of_two().max(8);
        let spare = n + n.max(SPARE_MIN);
        let mut free = VecDeque::new();
        free.try_reserve_exact(spare)
            .map_err(|_| MapError::NoMemory)?;
        free.extend(0..spare as u32);
        let words = crate::raw::zeroed_words(cells)?;
        let table = Box::new(AtomicU64::new(words.as_ptr() as u64));
        let mult =
            (std::collections::hash_map::RandomState::new().hash_one(0x6465_7668u64) as u32) | 1;
        Ok(Some(DevIndex {
            entries: crate::raw::zeroed_words(2 * spare)?,
            cells: RcuCell::new(words),
            table,
            mult,
            bits: cells.trailing_zeros(),
            changes: AtomicU64::new(0),
            w: Mutex::new(Writer { used: 0 }),
            free: Arc::new(Mutex::new(free)),
        }))
    }

    pub(crate) fn layout(&self) -> DevhashLayout {
        DevhashLayout {
            table: &*self.table as *const AtomicU64 as u64,
            mult: self.mult,
            bits: self.bits,
            entries: self.entries.as_ptr() as u64,
            entries_len: self.entries.len() * 8,
        }
    }

    /// The entries, for registering them as one region.
    pub(crate) fn entries(&self) -> &[AtomicU64] {
        &self.entries
    }

    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    #[inline(always)]
    fn home(&self, key: u32) -> usize {
        (key.wrapping_mul(self.mult) >> (32 - self.bits)) as usize
    }

    /// The entry index of an entry address from a cell.
    #[inline(always)]
    fn index_of(&self, addr: u64) -> usize {
        (addr.wrapping_sub(self.entries.as_ptr() as u64) / 16) as usize
    }

    /// The key of the entry at `addr` (an address from a cell: inside
    /// `entries`; 0 otherwise, never a panic).
    #[inline(always)]
    fn key_at(&self, addr: u64) -> u32 {
        self.entries
            .get(2 * self.index_of(addr) + 1)
            .map_or(0, |w| w.load(Ordering::Relaxed) as u32)
    }

    /// The address of `key`'s entry (its value word), while `_guard` is
    /// held: what generated code finds the same way.
    #[inline(always)]
    pub(crate) fn find(&self, key: u32, guard: &RunGuard) -> Option<u64> {
        let cells = self.cells.load(guard)?;
        let mask = cells.len() - 1;
        let mut i = self.home(key);
        for _ in 0..=mask {
            let c = cells[i].load(Ordering::Acquire);
            if c == 0 {
                return None;
            }
            if c != TOMB && self.key_at(c) == key {
                return Some(c);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The value word of the entry at `addr` as a one-word slice (for a
    /// `ValueRef`).
    pub(crate) fn entry_words(&self, addr: u64) -> &[AtomicU64] {
        &self.entries[2 * self.index_of(addr)..][..1]
    }

    /// The value word of the entry at `addr` (from [`DevIndex::find`]).
    #[cfg(test)]
    pub(crate) fn value_at(&self, addr: u64) -> u64 {
        self.entries[2 * self.index_of(addr)].load(Ordering::Relaxed)
    }

    /// The cell holding `key` in `cells`, or the cell an insert takes (the
    /// first tombstone on the way, else the empty cell that ends it).
    fn slot(&self, cells: &[AtomicU64], key: u32) -> (usize, bool) {
        let mask = cells.len() - 1;
        let mut i = self.home(key);
        let mut free = None;
        loop {
            let c = cells[i].load(Ordering::Relaxed);
            if c == 0 {
                return (free.unwrap_or(i), false);
            }
            if c == TOMB {
                free.get_or_insert(i);
            } else if self.key_at(c) == key {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// A free entry holding `value` and `key`: see `slots.rs`'s
    /// `DevArena::take` for the wait.
    fn take(&self, key: u32, value: u64) -> Result<u64, MapError> {
        let start = std::time::Instant::now();
        for attempt in 0u32.. {
            if let Some(i) = lock(&self.free).pop_front() {
                let i = i as usize;
                self.entries[2 * i].store(value, Ordering::Relaxed);
                self.entries[2 * i + 1].store(u64::from(key), Ordering::Relaxed);
                return Ok(&self.entries[2 * i] as *const AtomicU64 as u64);
            }
            if start.elapsed() > WAIT {
                break;
            }
            crate::epoch::reclaim();
            if attempt >= 8 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        Err(MapError::NoMemory)
    }

    fn retire(&self, addr: u64) {
        crate::epoch::retire(Release(self.index_of(addr) as u32, self.free.clone()));
    }

    /// The first half of an update of `key` to `value` (the value bytes,
    /// zero-padded to 8), before the hash's own: a free entry holding
    /// them, and a new table when the insert would fill the last quarter
    /// of this one. Nothing a reader sees changes; give the entry to
    /// [`DevIndex::commit`] once the hash took the update, or back with
    /// [`DevIndex::cancel`].
    pub(crate) fn prepare(&self, w: &mut Writer, key: u32, value: u64) -> Result<u64, MapError> {
        let e = self.take(key, value)?;
        let g = crate::pin();
        let cells = self.current(&g);
        let (i, found) = self.slot(cells, key);
        if !found && cells[i].load(Ordering::Relaxed) == 0 && 4 * (w.used + 1) > 3 * cells.len() {
            if let Err(err) = self.rebuild(w) {
                self.cancel(e);
                return Err(err);
            }
        }
        Ok(e)
    }

    /// Publishes entry `e` from [`DevIndex::prepare`] as `key`'s, retiring
    /// the entry it replaces.
    pub(crate) fn commit(&self, w: &mut Writer, key: u32, e: u64) {
        let g = crate::pin();
        let cells = self.current(&g);
        let (i, found) = self.slot(cells, key);
        let old = cells[i].swap(e, Ordering::Release);
        if old == 0 {
            w.used += 1;
        }
        if found {
            self.retire(old);
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Gives back an entry from [`DevIndex::prepare`] that no cell holds.
    pub(crate) fn cancel(&self, e: u64) {
        lock(&self.free).push_front(self.index_of(e) as u32);
    }

    /// Removes `key` (nothing when absent).
    pub(crate) fn remove(&self, _w: &mut Writer, key: u32) {
        let g = crate::pin();
        let cells = self.current(&g);
        let (i, found) = self.slot(cells, key);
        if found {
            let old = cells[i].swap(TOMB, Ordering::Release);
            self.retire(old);
            self.changes.fetch_add(1, Ordering::Release);
        }
    }

    /// Replaces the table by one holding the live entries only (no
    /// tombstones), retiring the old one.
    fn rebuild(&self, w: &mut Writer) -> Result<(), MapError> {
        let g = crate::pin();
        let old = self.current(&g);
        let cells = crate::raw::zeroed_words(old.len())?;
        let mut used = 0;
        for c in old.iter() {
            let c = c.load(Ordering::Relaxed);
            if c > TOMB {
                let (i, _) = self.slot(&cells, self.key_at(c));
                cells[i].store(c, Ordering::Relaxed);
                used += 1;
            }
        }
        w.used = used;
        // The address first: see `table`.
        self.table.store(cells.as_ptr() as u64, Ordering::Release);
        self.cells.replace(Some(cells));
        Ok(())
    }

    /// The current table (always present), under the writer's lock.
    pub(crate) fn current<'g>(&self, g: &'g RunGuard) -> &'g [AtomicU64] {
        self.cells.load(g).map_or(&[], |c| &c[..])
    }

    /// The writer's lock: hold it across the hash's change and the
    /// index's, so that both see the same order of updates.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        lock(&self.w)
    }
}
