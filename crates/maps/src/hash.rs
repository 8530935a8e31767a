//! The hash family: `hash`, `percpu_hash`, `lru_hash`, `lru_percpu_hash`,
//! and the storage of `hash_of_maps` and `devmap_hash`.
//!
//! A fixed array of buckets (the kernel's `roundup_pow_of_two(max_entries)`,
//! capped at 2^20 here), each a lock-protected list of elements. An element
//! is an [`Rcu`]: its key, its value words (one 8-byte-aligned slot per CPU
//! for per-CPU maps) and, for `hash_of_maps`, the inner map.
//!
//! Kernel semantics kept: updating an existing key of a plain hash
//! *replaces* the element (a program holding the old value pointer keeps
//! writing to the detached copy), per-CPU hashes update in place; the
//! element count is checked only for new keys (`E2BIG`); `BPF_NOEXIST` /
//! `BPF_EXIST` give `EEXIST` / `ENOENT`.
//!
//! Iteration order ([`Hash::next_key`]) is bucket order, then list order
//! within a bucket: stable while the map is unchanged, but not the kernel's
//! (its hash seed is random too). A key that is absent restarts the
//! iteration from the first key, as the kernel does, so "get next, delete
//! previous" loops terminate.
//!
//! # LRU
//!
//! The kernel keeps per-CPU free lists and active/inactive LRU lists with a
//! reference bit, and may evict several elements at once (even before the
//! map looks full from user space). bpfkit approximates it with the CLOCK
//! algorithm: elements join a queue in insertion order; program lookups set
//! a reference bit; when an insert finds the map full, the queue's head is
//! evicted unless its bit is set, in which case the bit is cleared and the
//! element goes to the back. Exactly one element is evicted per insert, and
//! only when the map holds `max_entries` elements. Control-side lookups do
//! not set the bit (the kernel's `_sys` lookups do not either).
//! `BPF_F_NO_COMMON_LRU` is accepted but shares one queue.

use crate::raw::Rcu;
use crate::storage::{self, ValueRef};
use crate::{lock, rd, update_flags, wr, Map, MapError, RunGuard};
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// A fast seeded hash of a key (multiply-xor over 8-byte words), like the
/// kernel's seeded `jhash`: not cryptographic, but the seed is random per
/// map, so an attacker cannot aim keys at one bucket without seeing the
/// map.
pub(crate) fn hash_key(seed: u64, key: &[u8]) -> u64 {
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(M);
        h ^= h >> 32;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(M);
        h ^= h >> 32;
    }
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 29)
}
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// One element.
pub(crate) struct Elem {
    pub(crate) key: Box<[u8]>,
    pub(crate) words: Box<[AtomicU64]>,
    /// `hash_of_maps`: the inner map.
    pub(crate) obj: Option<Rcu<Map>>,
    referenced: AtomicBool,
    /// False once unlinked (lets the LRU queue skip it).
    live: AtomicBool,
}

/// Where an update's value comes from.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    /// The control side's value: `value_size` bytes, or one slot per CPU.
    All(&'a [u8]),
    /// A program's value for one CPU (`value_size` bytes).
    Cpu(usize, &'a [u8]),
}

pub(crate) struct Hash {
    buckets: Box<[RwLock<Vec<Rcu<Elem>>>]>,
    seed: u64,
    count: AtomicUsize,
    max_entries: u32,
    value_size: usize,
    slot: usize,
    ncpus: usize,
    percpu: bool,
    /// `BPF_EXIST` on a missing key gives `ENOENT` (not for `devmap_hash`).
    check_exist: bool,
    lru: Option<Mutex<VecDeque<Arc<Elem>>>>,
}

/// Bucket count cap: chains get longer beyond it instead of allocating
/// gigabytes of buckets for huge `max_entries`.
const MAX_BUCKETS: usize = 1 << 20;

impl Hash {
    pub(crate) fn new(
        max_entries: u32,
        value_size: u32,
        ncpus: Option<usize>,
        lru: bool,
        check_exist: bool,
    ) -> Result<Hash, MapError> {
        let n = (max_entries as usize).next_power_of_two().min(MAX_BUCKETS);
        let mut buckets = Vec::new();
        buckets
            .try_reserve_exact(n)
            .map_err(|_| MapError::NoMemory)?;
        buckets.resize_with(n, || RwLock::new(Vec::new()));
        Ok(Hash {
            buckets: buckets.into_boxed_slice(),
            seed: RandomState::new().hash_one(0x6270_666b_6974u64),
            count: AtomicUsize::new(0),
            max_entries,
            value_size: value_size as usize,
            slot: (value_size as usize).div_ceil(8) * 8,
            ncpus: ncpus.unwrap_or(1),
            percpu: ncpus.is_some(),
            check_exist,
            lru: lru.then(|| Mutex::new(VecDeque::new())),
        })
    }

    fn bucket(&self, key: &[u8]) -> &RwLock<Vec<Rcu<Elem>>> {
        let h = hash_key(self.seed, key) as usize;
        &self.buckets[h & (self.buckets.len() - 1)]
    }

    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn fill(&self, words: &[AtomicU64], src: Src<'_>) {
        match src {
            Src::All(v) => storage::write(words, 0, v),
            Src::Cpu(c, v) => storage::write(words, c * self.slot / 8, v),
        }
    }

    fn new_elem(&self, key: &[u8], src: Src<'_>, obj: Option<Arc<Map>>) -> Result<Elem, MapError> {
        let words = storage::alloc(self.slot * self.ncpus)?;
        self.fill(&words, src);
        Ok(Elem {
            key: key.into(),
            words,
            obj: obj.map(Rcu::from_arc),
            referenced: AtomicBool::new(false),
            live: AtomicBool::new(true),
        })
    }

    fn check_flags(&self, exists: bool, flags: u64) -> Result<(), MapError> {
        let f = flags & !update_flags::LOCK;
        if exists && f == update_flags::NOEXIST {
            return Err(MapError::Exists);
        }
        if !exists && f == update_flags::EXIST && self.check_exist {
            return Err(MapError::NotFound);
        }
        Ok(())
    }

    /// Control-side copy of the value (`value_size` bytes, or one slot per
    /// CPU), and the inner map for `hash_of_maps`.
    pub(crate) fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let b = rd(self.bucket(key));
        let e = b
            .iter()
            .find(|e| *e.key == *key)
            .ok_or(MapError::NotFound)?;
        storage::read(&e.words, 0, out);
        Ok(())
    }

    /// Whether `key` is present.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        rd(self.bucket(key)).iter().any(|e| *e.key == *key)
    }

    /// Program-side lookup: the element itself, protected by `guard`.
    pub(crate) fn find<'g>(&self, key: &[u8], guard: &'g RunGuard) -> Option<&'g Elem> {
        let b = rd(self.bucket(key));
        let e = b.iter().find(|e| *e.key == *key)?.get(guard);
        if self.lru.is_some() && !e.referenced.load(Ordering::Relaxed) {
            e.referenced.store(true, Ordering::Relaxed);
        }
        Some(e)
    }

    /// `bpf_for_each_map_elem`: calls `f(key, value)` on each element in
    /// iteration order until it returns false; how many calls were made.
    /// No lock is held during a call (the callback may change the map);
    /// elements added meanwhile to buckets already visited are not seen.
    pub(crate) fn for_each<'g>(
        &self,
        cpu: usize,
        guard: &'g RunGuard,
        mut f: impl FnMut(&'g [u8], ValueRef<'g>) -> bool,
    ) -> u64 {
        let cpu = if self.percpu { cpu } else { 0 };
        if cpu >= self.ncpus {
            return 0;
        }
        let w = cpu * self.slot / 8;
        let mut n = 0;
        for bucket in self.buckets.iter() {
            let elems: Vec<&'g Elem> = rd(bucket).iter().map(|e| e.get(guard)).collect();
            for e in elems {
                n += 1;
                let v = ValueRef::new(&e.words[w..w + self.slot / 8], self.value_size);
                if !f(&e.key, v) {
                    return n;
                }
            }
        }
        n
    }

    pub(crate) fn lookup_ptr<'g>(
        &self,
        key: &[u8],
        cpu: usize,
        guard: &'g RunGuard,
    ) -> Option<ValueRef<'g>> {
        let cpu = if self.percpu { cpu } else { 0 };
        if cpu >= self.ncpus {
            return None;
        }
        let e = self.find(key, guard)?;
        let w = cpu * self.slot / 8;
        Some(ValueRef::new(
            &e.words[w..w + self.slot / 8],
            self.value_size,
        ))
    }

    pub(crate) fn update(
        &self,
        key: &[u8],
        src: Src<'_>,
        obj: Option<Arc<Map>>,
        flags: u64,
    ) -> Result<(), MapError> {
        if self.lru.is_some() {
            return self.update_lru(key, src, flags);
        }
        let mut b = wr(self.bucket(key));
        let pos = b.iter().position(|e| *e.key == *key);
        self.check_flags(pos.is_some(), flags)?;
        match pos {
            Some(p) if self.percpu => {
                self.fill(&b[p].words, src);
            }
            Some(p) => {
                let new = Rcu::new(self.new_elem(key, src, obj)?);
                let old = std::mem::replace(&mut b[p], new);
                old.live.store(false, Ordering::Relaxed);
                drop(b);
                drop(old); // retired: freed after the runs that may see it
            }
            None => {
                if !self.try_reserve() {
                    return Err(MapError::Full {
                        max_entries: self.max_entries,
                    });
                }
                match self.new_elem(key, src, obj) {
                    Ok(e) => b.push(Rcu::new(e)),
                    Err(e) => {
                        self.count.fetch_sub(1, Ordering::AcqRel);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn update_lru(&self, key: &[u8], src: Src<'_>, flags: u64) -> Result<(), MapError> {
        loop {
            let exists = rd(self.bucket(key)).iter().any(|e| *e.key == *key);
            let mut reserved = false;
            if !exists {
                self.check_flags(false, flags)?;
                self.reserve_lru()?;
                reserved = true;
            }
            let unreserve = || {
                if reserved {
                    self.count.fetch_sub(1, Ordering::AcqRel);
                }
            };
            let mut b = wr(self.bucket(key));
            let pos = b.iter().position(|e| *e.key == *key);
            if let Err(e) = self.check_flags(pos.is_some(), flags) {
                drop(b);
                unreserve();
                return Err(e);
            }
            let queued = match pos {
                Some(p) => {
                    unreserve();
                    if self.percpu {
                        self.fill(&b[p].words, src);
                        b[p].referenced.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    let new = Rcu::new(self.new_elem(key, src, None)?);
                    new.referenced.store(true, Ordering::Relaxed);
                    let queued = new.arc().clone();
                    let old = std::mem::replace(&mut b[p], new);
                    old.live.store(false, Ordering::Relaxed);
                    drop(b);
                    drop(old);
                    queued
                }
                // Deleted since we looked: start again with a reservation.
                None if !reserved => continue,
                None => {
                    let new = match self.new_elem(key, src, None) {
                        Ok(e) => Rcu::new(e),
                        Err(e) => {
                            drop(b);
                            unreserve();
                            return Err(e);
                        }
                    };
                    let queued = new.arc().clone();
                    b.push(new);
                    drop(b);
                    queued
                }
            };
            // The queue lock is never taken while a bucket lock is held.
            let mut q = lock(self.lru.as_ref().expect("LRU map"));
            if q.len() > 2 * self.max_entries as usize + 16 {
                q.retain(|e| e.live.load(Ordering::Relaxed));
            }
            q.push_back(queued);
            return Ok(());
        }
    }

    /// Counts one more element unless the map is full (the count never
    /// exceeds `max_entries`, even transiently).
    fn try_reserve(&self) -> bool {
        let max = self.max_entries as usize;
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < max).then_some(c + 1)
            })
            .is_ok()
    }

    /// Makes room for one new element, evicting when full.
    fn reserve_lru(&self) -> Result<(), MapError> {
        for _ in 0..1024 {
            if self.try_reserve() {
                return Ok(());
            }
            self.evict_one();
        }
        Err(MapError::NoMemory)
    }

    /// Evicts one element chosen by CLOCK; false when the queue is empty.
    fn evict_one(&self) -> bool {
        let victim = {
            let mut q = lock(self.lru.as_ref().expect("LRU map"));
            let mut budget = q.len() + 1;
            loop {
                let Some(e) = q.pop_front() else {
                    return false;
                };
                if !e.live.load(Ordering::Relaxed) {
                    continue;
                }
                if budget > 0 && e.referenced.swap(false, Ordering::Relaxed) {
                    budget -= 1;
                    q.push_back(e);
                    continue;
                }
                break e;
            }
        };
        let mut b = wr(self.bucket(&victim.key));
        if let Some(p) = b.iter().position(|e| Arc::ptr_eq(e.arc(), &victim)) {
            let old = b.remove(p);
            old.live.store(false, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::AcqRel);
            drop(b);
            drop(old);
        }
        true
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let mut b = wr(self.bucket(key));
        let p = b
            .iter()
            .position(|e| *e.key == *key)
            .ok_or(MapError::NotFound)?;
        let old = b.remove(p);
        old.live.store(false, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::AcqRel);
        drop(b);
        drop(old);
        Ok(())
    }

    /// Removes and returns the element (`lookup_and_delete`).
    pub(crate) fn take(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let mut b = wr(self.bucket(key));
        let p = b
            .iter()
            .position(|e| *e.key == *key)
            .ok_or(MapError::NotFound)?;
        let old = b.remove(p);
        storage::read(&old.words, 0, out);
        old.live.store(false, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::AcqRel);
        drop(b);
        drop(old);
        Ok(())
    }

    fn first_from(&self, start: usize) -> Result<Vec<u8>, MapError> {
        for bucket in &self.buckets[start..] {
            if let Some(e) = rd(bucket).first() {
                return Ok(e.key.to_vec());
            }
        }
        Err(MapError::NotFound)
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, MapError> {
        let Some(key) = key else {
            return self.first_from(0);
        };
        let h = hash_key(self.seed, key) as usize & (self.buckets.len() - 1);
        {
            let b = rd(&self.buckets[h]);
            match b.iter().position(|e| *e.key == *key) {
                None => {
                    drop(b);
                    return self.first_from(0);
                }
                Some(p) => {
                    if let Some(e) = b.get(p + 1) {
                        return Ok(e.key.to_vec());
                    }
                }
            }
        }
        self.first_from(h + 1)
    }
}
