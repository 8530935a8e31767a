//! Arrays of references: `prog_array`, `array_of_maps`, `perf_event_array`
//! and `devmap`. Each slot is empty or holds the value the control side
//! gave (a program id, a map id, a perf buffer marker, a `bpf_devmap_val`)
//! plus, for `array_of_maps`, the inner map itself.
//!
//! Kernel semantics kept (`fd_array_map_*`, `dev_map_*`): updates take
//! `BPF_ANY` only for fd arrays (`EINVAL` otherwise) and any of
//! `BPF_ANY`/`BPF_EXIST` for devmaps (`BPF_NOEXIST` gives `EEXIST`); an
//! index past the end gives `E2BIG` on update and delete (`EINVAL` on a
//! devmap delete);
//! looking up or deleting an empty fd-array slot gives `ENOENT`, deleting
//! an empty devmap slot succeeds.

use crate::raw::Rcu;
use crate::storage::ValueRef;
use crate::{lock, rd, wr, Map, MapError, RunGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Where a devmap keeps its entries: one word each (a `struct
/// bpf_devmap_val` is 8 bytes, a plain ifindex 4) in one allocation, so
/// that engines can register all of them as one read-only region per run
/// and compute a lookup without the helper (`Map::devmap_layout`), and per
/// slot the address of its entry's word (0 when empty), the word such a
/// lookup loads.
///
/// An update takes a free word and retires the slot's old one: the old
/// word returns to the free list only through the epoch collector, after
/// every run that could hold a pointer to it has ended (the kernel frees
/// its `bpf_dtab_netdev` after an RCU grace period), and the list is
/// first in, first out, so a word is reused as late as possible.
struct DevArena {
    words: Box<[AtomicU64]>,
    addrs: Box<[AtomicU64]>,
    free: Arc<Mutex<VecDeque<u32>>>,
}

/// Words a devmap has beyond one per slot: `max(max_entries, this)`,
/// for retired entries that wait for the epoch collector (it frees them a
/// few pins after the runs that could see them have ended).
const DEV_SPARE_MIN: usize = 256;

/// How long an update waits for retired devmap words before `ENOMEM`.
const DEV_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// A devmap slot's entry: its word's index, returned to the free list
/// when the slot lets go of it (through the epoch collector, see
/// [`DevArena`]).
struct DevElem {
    index: u32,
    free: Arc<Mutex<VecDeque<u32>>>,
}

/// A retired [`DevElem`]: frees its word when the collector drops it.
struct Release(u32, Arc<Mutex<VecDeque<u32>>>);

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.1).push_back(self.0);
    }
}

impl Drop for DevElem {
    fn drop(&mut self) {
        crate::epoch::retire(Release(self.index, self.free.clone()));
    }
}

impl DevArena {
    fn new(slots: usize) -> Result<DevArena, MapError> {
        let n = slots
            .checked_add(slots.max(DEV_SPARE_MIN))
            .filter(|n| *n <= u32::MAX as usize)
            .ok_or(MapError::NoMemory)?;
        let mut free = VecDeque::new();
        free.try_reserve_exact(n).map_err(|_| MapError::NoMemory)?;
        free.extend(0..n as u32);
        Ok(DevArena {
            words: crate::raw::zeroed_words(n)?,
            addrs: crate::raw::zeroed_words(slots)?,
            free: Arc::new(Mutex::new(free)),
        })
    }

    /// A free word holding `value`, or `ENOMEM` when every word is in a
    /// slot or still waits for runs that may read it: the epoch collector
    /// is asked to free what it can, for up to [`DEV_WAIT`] (runs pin for
    /// a batch, microseconds; only a run pinned all that time, while
    /// hundreds of updates retired words, makes an update fail).
    fn take(&self, value: u64) -> Result<DevElem, MapError> {
        let start = std::time::Instant::now();
        for attempt in 0u32.. {
            if let Some(index) = lock(&self.free).pop_front() {
                self.words[index as usize].store(value, Ordering::Relaxed);
                return Ok(DevElem {
                    index,
                    free: self.free.clone(),
                });
            }
            if start.elapsed() > DEV_WAIT {
                break;
            }
            crate::epoch::reclaim();
            if attempt >= 8 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        Err(MapError::NoMemory)
    }

    fn word(&self, e: &DevElem) -> &AtomicU64 {
        &self.words[e.index as usize]
    }
}

/// One filled slot.
pub(crate) struct Slot {
    /// The value bytes as given (4 or 8).
    pub(crate) value: [u8; 8],
    /// `array_of_maps`: the inner map.
    pub(crate) obj: Option<Rcu<Map>>,
    /// `devmap`: the value again, in a word of the map's [`DevArena`]
    /// that programs read in place (`bpf_map_lookup_elem`), as the
    /// kernel's lookup points into its `bpf_dtab_netdev`. Refilling the
    /// slot takes a new word and retires this one, so a pointer a program
    /// already holds keeps the value it saw until its run ends, and a
    /// lookup after the change gives a new pointer; while the slot is
    /// unchanged every lookup gives the same pointer (no copy per lookup).
    elem: Option<DevElem>,
}

pub(crate) struct Slots {
    slots: Box<[RwLock<Option<Slot>>]>,
    /// Each slot's value again as one word that the per-packet readers
    /// (`bpf_tail_call`, `bpf_redirect_map`, `bpf_perf_event_output`) load
    /// without taking the slot's lock: 0 for an empty slot; a 4-byte value
    /// `v` as `1 << 32 | v`; an 8-byte value (devmaps, whose filled slots
    /// never have ifindex 0) as its bytes. Written under the slot's write
    /// lock, after the slot, so that it is never ahead of the slot.
    words: Box<[AtomicU64]>,
    /// Per slot, a count of the changes made to it (filled, refilled,
    /// emptied), bumped under the slot's write lock after the change: while
    /// it reads the same, the slot holds the element (devmap) or inner map
    /// (array_of_maps) that a lookup made at that count found, which lets a
    /// run reuse what it looked up before without taking the lock.
    gens: Box<[AtomicU64]>,
    value_size: usize,
    /// Devmaps: where filled slots keep their [`Slot::elem`].
    dev: Option<DevArena>,
    /// `perf_event_array`: one record queue per slot, and its lost count.
    perf: Option<PerfBufs>,
}

pub(crate) struct PerfBufs {
    bufs: Box<[Mutex<PerfBuf>]>,
    capacity: usize,
}

#[derive(Default)]
struct PerfBuf {
    records: VecDeque<Vec<u8>>,
    bytes: usize,
    lost: u64,
}

/// What [`crate::Map::perf_drain`] returns for one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfDrain {
    /// Records, oldest first (each the bytes the program output).
    pub records: Vec<Vec<u8>>,
    /// Records dropped because the buffer was full since the last drain
    /// (the kernel reports them as `PERF_RECORD_LOST`).
    pub lost: u64,
}

impl Slots {
    /// `elems`: filled slots keep their value in an element of its own
    /// that [`Slots::value_ref`] lends to programs (devmaps).
    pub(crate) fn new(
        max_entries: u32,
        value_size: u32,
        perf_capacity: Option<usize>,
        elems: bool,
    ) -> Result<Slots, MapError> {
        let n = max_entries as usize;
        let mut slots = Vec::new();
        slots.try_reserve_exact(n).map_err(|_| MapError::NoMemory)?;
        slots.resize_with(n, || RwLock::new(None));
        let perf = match perf_capacity {
            Some(capacity) => {
                let mut bufs = Vec::new();
                bufs.try_reserve_exact(n).map_err(|_| MapError::NoMemory)?;
                bufs.resize_with(n, || Mutex::new(PerfBuf::default()));
                Some(PerfBufs {
                    bufs: bufs.into_boxed_slice(),
                    capacity,
                })
            }
            None => None,
        };
        Ok(Slots {
            slots: slots.into_boxed_slice(),
            words: crate::storage::alloc(n.checked_mul(8).ok_or(MapError::NoMemory)?)?,
            gens: crate::storage::alloc(n.checked_mul(8).ok_or(MapError::NoMemory)?)?,
            value_size: value_size as usize,
            dev: if elems { Some(DevArena::new(n)?) } else { None },
            perf,
        })
    }

    pub(crate) fn max_entries(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Address of slot 0's word in [`Slots::words`] (see
    /// `Map::prog_array_words`).
    pub(crate) fn words_addr(&self) -> u64 {
        self.words.as_ptr() as u64
    }

    fn slot(&self, i: u32) -> Option<&RwLock<Option<Slot>>> {
        self.slots.get(i as usize)
    }

    pub(crate) fn lookup(&self, i: u32, out: &mut [u8]) -> Result<(), MapError> {
        let s = rd(self.slot(i).ok_or(MapError::NotFound)?);
        let s = s.as_ref().ok_or(MapError::NotFound)?;
        out.copy_from_slice(&s.value[..self.value_size]);
        Ok(())
    }

    /// Fills slot `i` (index already checked by the caller).
    pub(crate) fn set(&self, i: u32, value: &[u8], obj: Option<Arc<Map>>) -> Result<(), MapError> {
        let s = self.slot(i).ok_or(MapError::OutOfRange {
            index: i,
            max_entries: self.max_entries(),
        })?;
        let mut v = [0u8; 8];
        v[..value.len()].copy_from_slice(value);
        let elem = match &self.dev {
            Some(d) => Some(d.take(u64::from_ne_bytes(v))?),
            None => None,
        };
        // The entry's word, published after its value (release).
        let addr = match (&self.dev, &elem) {
            (Some(d), Some(e)) => d.word(e) as *const AtomicU64 as u64,
            _ => 0,
        };
        let word = if self.value_size == 8 {
            u64::from_ne_bytes(v)
        } else {
            1 << 32 | u64::from(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
        };
        let mut g = wr(s);
        let old = g.replace(Slot {
            value: v,
            obj: obj.map(Rcu::from_arc),
            elem,
        });
        self.words[i as usize].store(word, Ordering::Release);
        if let Some(d) = &self.dev {
            d.addrs[i as usize].store(addr, Ordering::Release);
        }
        self.gens[i as usize].fetch_add(1, Ordering::Release);
        drop(g);
        drop(old); // an inner map or a devmap element is retired, not freed
        Ok(())
    }

    #[inline]
    pub(crate) fn is_set(&self, i: u32) -> bool {
        self.value(i).is_some()
    }

    /// Empties slot `i`; whether it was filled. An index past the end is
    /// `E2BIG` for fd arrays and `EINVAL` for devmaps.
    pub(crate) fn clear(&self, i: u32, devmap: bool) -> Result<bool, MapError> {
        let s = self.slot(i).ok_or(if devmap {
            MapError::Invalid {
                what: "index past max_entries",
            }
        } else {
            MapError::OutOfRange {
                index: i,
                max_entries: self.max_entries(),
            }
        })?;
        let mut g = wr(s);
        let old = g.take();
        self.words[i as usize].store(0, Ordering::Release);
        if let Some(d) = &self.dev {
            d.addrs[i as usize].store(0, Ordering::Release);
        }
        self.gens[i as usize].fetch_add(1, Ordering::Release);
        drop(g);
        Ok(old.is_some())
    }

    /// The raw value of slot `i` (the 4 or 8 bytes given, zero-padded to
    /// 8), from its word: no lock.
    #[inline]
    pub(crate) fn value(&self, i: u32) -> Option<[u8; 8]> {
        let w = self.words.get(i as usize)?.load(Ordering::Acquire);
        if self.value_size == 8 {
            (w != 0).then(|| w.to_ne_bytes())
        } else if w >> 32 != 0 {
            let mut v = [0u8; 8];
            v[..4].copy_from_slice(&(w as u32).to_ne_bytes());
            Some(v)
        } else {
            None
        }
    }

    /// The change count of slot `i` (see [`Slots::gens`]), without a lock.
    #[inline]
    pub(crate) fn generation(&self, i: u32) -> Option<u64> {
        Some(self.gens.get(i as usize)?.load(Ordering::Acquire))
    }

    /// The element of slot `i` (devmaps), for the rest of the run that
    /// `guard` protects: `value_size` bytes that programs may only read;
    /// with the slot's change count at the time (read under the same lock).
    pub(crate) fn value_ref<'g>(
        &'g self,
        i: u32,
        guard: &'g RunGuard,
    ) -> Option<(ValueRef<'g>, u64)> {
        let _ = guard;
        let dev = self.dev.as_ref()?;
        let slot = rd(self.slot(i)?);
        let e = slot.as_ref()?.elem.as_ref()?;
        let words = &dev.words[e.index as usize..][..1];
        let gen = self.gens[i as usize].load(Ordering::Acquire);
        Some((ValueRef::new(words, self.value_size), gen))
    }

    /// Devmaps: all entry words (see [`DevArena`]) and the per-slot
    /// addresses of the filled slots' words.
    pub(crate) fn dev_arena(&self) -> Option<(&[AtomicU64], &[AtomicU64])> {
        self.dev.as_ref().map(|d| (&d.words[..], &d.addrs[..]))
    }

    /// Devmaps: the address of slot `i`'s entry word, 0 when empty or
    /// past the end (no lock).
    #[inline]
    pub(crate) fn dev_addr(&self, i: u32) -> u64 {
        self.dev
            .as_ref()
            .and_then(|d| d.addrs.get(i as usize))
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    /// The inner map of slot `i`, for the rest of the run, with the slot's
    /// change count at the time (read under the same lock).
    pub(crate) fn inner<'g>(&self, i: u32, guard: &'g RunGuard) -> Option<(&'g Map, u64)> {
        let slot = rd(self.slot(i)?);
        let m = slot.as_ref()?.obj.as_ref()?.get(guard);
        Some((m, self.gens[i as usize].load(Ordering::Acquire)))
    }

    /// Appends the record `make` gives (`len` bytes) to buffer `i`, or
    /// counts it lost when the buffer is full (then `make` is not called:
    /// no copy of a record that is dropped anyway).
    pub(crate) fn perf_push(
        &self,
        i: u32,
        len: usize,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), MapError> {
        match self.perf_push_with(i, len, || Ok::<_, std::convert::Infallible>(make())) {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    /// [`Slots::perf_push`] with a record builder that may fail: its error
    /// is returned as the outer one (nothing is queued, nothing counted
    /// lost).
    ///
    /// Inlined up to the lock: a slot nobody filled (`ENOENT`, what a
    /// program sending to a perf array without a reader gets on every
    /// packet) is answered without the locked part's frame.
    #[inline]
    pub(crate) fn perf_push_with<E>(
        &self,
        i: u32,
        len: usize,
        make: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Result<(), MapError>, E> {
        let Some(perf) = self.perf.as_ref() else {
            return Ok(Err(MapError::Invalid {
                what: "not a perf event array",
            }));
        };
        if !self.is_set(i) {
            return Ok(Err(MapError::NotFound));
        }
        Self::perf_push_locked(perf, i, len, make)
    }

    /// The part of [`Slots::perf_push_with`] under the buffer's lock.
    #[inline(never)]
    fn perf_push_locked<E>(
        perf: &PerfBufs,
        i: u32,
        len: usize,
        make: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Result<(), MapError>, E> {
        let mut b = lock(&perf.bufs[i as usize]);
        if b.bytes + len > perf.capacity {
            b.lost += 1;
            return Ok(Ok(()));
        }
        let record = make()?;
        b.bytes += len;
        b.records.push_back(record);
        Ok(Ok(()))
    }

    pub(crate) fn perf_drain(&self, i: u32) -> PerfDrain {
        let Some(perf) = &self.perf else {
            return PerfDrain::default();
        };
        let Some(b) = perf.bufs.get(i as usize) else {
            return PerfDrain::default();
        };
        let mut b = lock(b);
        b.bytes = 0;
        PerfDrain {
            records: b.records.drain(..).collect(),
            lost: std::mem::take(&mut b.lost),
        }
    }
}
