//! The hash family: `hash`, `percpu_hash`, `lru_hash`, `lru_percpu_hash`,
//! and the storage of `hash_of_maps` and `devmap_hash`.
//!
//! A fixed array of buckets (the kernel's `roundup_pow_of_two(max_entries)`,
//! capped at 2^20 here), each a chain of elements that lookups read without
//! a lock (an [`RcuCell`], the kernel's RCU list) and that writers replace
//! whole under the bucket's mutex; the old chain is freed once the runs that
//! may be reading it have ended. An element (an `Arc`, shared by the chains
//! and the LRU queue) holds its key, its value words (one 8-byte-aligned
//! slot per CPU for per-CPU maps) and, for `hash_of_maps`, the inner map.
//! Short keys take a multiply-based hash of two words and integer compares
//! ([`Seed::hash`], [`key_eq`]).
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

use crate::raw::{Rcu, RcuCell};
use crate::storage::{self, ValueRef};
use crate::{lock, update_flags, Map, MapError, RunGuard};
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The seeds of [`Seed::hash`], random per map.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seed([u64; 3]);

/// The 64x64->128-bit product folded to 64 bits: every input bit reaches
/// every output bit in one multiplication.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn half(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

impl Seed {
    /// A fresh random seed.
    pub(crate) fn random() -> Seed {
        let s = RandomState::new();
        // Odd multipliers: a zero factor would collapse the product.
        Seed([
            s.hash_one(0x6270_666b_6974u64),
            s.hash_one(0x6861_7368u64) | 1,
            s.hash_one(0x6b65_7973u64) | 1,
        ])
    }

    /// A seeded hash of a key, like the kernel's seeded `jhash`: not
    /// cryptographic, but the seed is random per map, so an attacker
    /// cannot aim keys at one bucket without seeing the map. Keys of up to
    /// 16 bytes (the usual 4-, 8- and 16-byte keys) take two loads and two
    /// folded multiplications, without a loop or a copy.
    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        let [s0, s1, s2] = self.0;
        let n = key.len();
        // Two words that together cover every byte (overlapping when the
        // key is shorter than 16 bytes): for one key length, different
        // keys give different pairs.
        let (lo, hi) = if n >= 8 {
            if n > 32 {
                return self.hash_long(key);
            }
            if n > 16 {
                // `hash_long`'s two steps, inline (tuples, IPv6 addresses
                // with a port: 17 to 32 bytes).
                let h = fold_mul(word(key, 0) ^ s0 ^ n as u64, word(key, 8) ^ s1);
                let h = fold_mul(word(key, n - 16) ^ h, word(key, n - 8) ^ s1);
                return fold_mul(h ^ s0, s2);
            }
            (word(key, 0), word(key, n - 8))
        } else if n >= 4 {
            (half(key, 0), half(key, n - 4))
        } else if n > 0 {
            let b = |i: usize| u64::from(key[i]);
            (b(0) | b(n / 2) << 8 | b(n - 1) << 16, 0)
        } else {
            (0, 0)
        };
        let h = fold_mul(lo ^ s0, hi ^ s1 ^ n as u64);
        fold_mul(h ^ s0, s2)
    }

    /// The hash of a 128-bit word (LPM prefixes of up to 16 bytes).
    #[inline]
    pub(crate) fn hash_word(&self, w: u128) -> u64 {
        let [s0, s1, s2] = self.0;
        let h = fold_mul(w as u64 ^ s0, (w >> 64) as u64 ^ s1);
        fold_mul(h ^ s0, s2)
    }

    /// Keys above 32 bytes: 16 bytes a step, the last step overlapping
    /// (from 17 to 32 bytes [`Seed::hash`] takes the same two steps inline).
    #[cold]
    fn hash_long(&self, key: &[u8]) -> u64 {
        let [s0, s1, s2] = self.0;
        let n = key.len();
        let mut h = s0 ^ n as u64;
        let mut at = 0;
        loop {
            let at_ = at.min(n - 16);
            h = fold_mul(word(key, at_) ^ h, word(key, at_ + 8) ^ s1);
            at += 16;
            if at >= n {
                break;
            }
        }
        fold_mul(h ^ s0, s2)
    }
}

/// Whether two keys are equal. Keys of up to 32 bytes (the usual sizes)
/// are compared as two or four (possibly overlapping) integers each
/// instead of through `memcmp`.
#[inline(always)]
pub(crate) fn key_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // IPv4 addresses and indexes, the most common per-packet key, first:
    // one compare (behind the three range tests below, 11 instructions).
    if n == 4 {
        return half(a, 0) == half(b, 0);
    }
    if (8..=16).contains(&n) {
        word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8)
    } else if (17..=32).contains(&n) {
        // Flow tuples and IPv6 keys: four words (the last two overlapping
        // the first two below 32 bytes) instead of a `memcmp` call.
        word(a, 0) == word(b, 0)
            && word(a, 8) == word(b, 8)
            && word(a, n - 16) == word(b, n - 16)
            && word(a, n - 8) == word(b, n - 8)
    } else if (4..8).contains(&n) {
        half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
    } else if (1..4).contains(&n) {
        a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]
    } else {
        a == b
    }
}

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

/// The elements of one bucket, never changed once published: a writer
/// builds a new chain and publishes it in the bucket's [`RcuCell`]. Most
/// buckets hold one element (there are at least as many buckets as
/// `max_entries`), which then costs no second allocation.
struct Chain {
    first: Arc<Elem>,
    rest: Box<[Arc<Elem>]>,
}

impl Chain {
    fn from_vec(mut v: Vec<Arc<Elem>>) -> Option<Chain> {
        if v.is_empty() {
            return None;
        }
        let first = v.remove(0);
        Some(Chain {
            first,
            rest: v.into_boxed_slice(),
        })
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Elem>> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    /// Always inlined: lookups are instantiated in the crates that call
    /// them, whose codegen units left it out of line after unrelated
    /// changes (33 host instructions more per lookup).
    #[inline(always)]
    fn find(&self, key: &[u8]) -> Option<&Arc<Elem>> {
        if key_eq(&self.first.key, key) {
            return Some(&self.first);
        }
        self.rest.iter().find(|e| key_eq(&e.key, key))
    }

    fn to_vec(&self) -> Vec<Arc<Elem>> {
        self.iter().cloned().collect()
    }
}

/// A bucket: its chain, read without a lock, and the lock that writers of
/// the bucket hold while they build and publish the next chain.
struct Bucket {
    chain: RcuCell<Chain>,
    writer: Mutex<()>,
}

pub(crate) struct Hash {
    buckets: Box<[Bucket]>,
    seed: Seed,
    count: AtomicUsize,
    max_entries: u32,
    value_size: usize,
    slot: usize,
    ncpus: usize,
    percpu: bool,
    /// `BPF_EXIST` on a missing key gives `ENOENT` (not for `devmap_hash`).
    check_exist: bool,
    lru: Option<Mutex<VecDeque<Arc<Elem>>>>,
    /// For the maps whose program lookups a run may answer again
    /// (`hash_of_maps`, `devmap_hash`): a count of the chains published
    /// (every insert, replacement and removal; these maps are never
    /// per-CPU, so no value changes in place). While it reads what it
    /// read before a lookup, every element that lookup found is still the
    /// one in the map. `None` for other hashes, whose writers would pay a
    /// shared atomic per update for nothing.
    changes: Option<AtomicU64>,
}

impl Drop for Hash {
    fn drop(&mut self) {
        // One pin for all the chains retired with the buckets (each
        // cell's own pin then nests, which costs a counter, not a fence).
        let _g = crate::pin();
        drop(std::mem::take(&mut self.buckets));
    }
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
        buckets.resize_with(n, || Bucket {
            chain: RcuCell::empty(),
            writer: Mutex::new(()),
        });
        Ok(Hash {
            buckets: buckets.into_boxed_slice(),
            seed: Seed::random(),
            count: AtomicUsize::new(0),
            max_entries,
            value_size: value_size as usize,
            slot: (value_size as usize).div_ceil(8) * 8,
            ncpus: ncpus.unwrap_or(1),
            percpu: ncpus.is_some(),
            check_exist,
            lru: lru.then(|| Mutex::new(VecDeque::new())),
            changes: None,
        })
    }

    /// The hash with a change count (see [`Hash::changes`]).
    pub(crate) fn counting_changes(mut self) -> Hash {
        self.changes = Some(AtomicU64::new(0));
        self
    }

    /// The change count, for a hash made [`Hash::counting_changes`]. Read
    /// before a lookup (acquire, pairing with the release increment that
    /// follows each publication): a lookup made after this read sees every
    /// chain counted in it, so an unchanged count later means no chain was
    /// published since and the lookup's answer stands.
    #[inline]
    pub(crate) fn changes(&self) -> Option<u64> {
        Some(self.changes.as_ref()?.load(Ordering::Acquire))
    }

    #[inline]
    fn index(&self, key: &[u8]) -> usize {
        self.seed.hash(key) as usize & (self.buckets.len() - 1)
    }

    #[inline]
    fn bucket(&self, key: &[u8]) -> &Bucket {
        &self.buckets[self.index(key)]
    }

    /// The element of `key`, without a lock.
    #[inline(always)]
    fn get<'g>(&self, key: &[u8], guard: &'g RunGuard) -> Option<&'g Arc<Elem>> {
        self.bucket(key).chain.load(guard)?.find(key)
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
        let g = crate::pin();
        let e = self.get(key, &g).ok_or(MapError::NotFound)?;
        storage::read(&e.words, 0, out);
        Ok(())
    }

    /// Whether `key` is present.
    #[inline]
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.get(key, &crate::pin()).is_some()
    }

    /// Program-side lookup: the element itself, protected by `guard`.
    /// Always inlined: out of line, its prologue and epilogue were a
    /// quarter of a per-packet hash lookup's instructions.
    #[inline(always)]
    pub(crate) fn find<'g>(&self, key: &[u8], guard: &'g RunGuard) -> Option<&'g Elem> {
        let e = self.get(key, guard)?;
        if self.lru.is_some() && !e.referenced.load(Ordering::Relaxed) {
            e.referenced.store(true, Ordering::Relaxed);
        }
        Some(e)
    }

    /// `bpf_for_each_map_elem`: calls `f(key, value)` on each element in
    /// iteration order until it returns false; how many calls were made.
    /// No lock is held during a call (the callback may change the map); a
    /// bucket is visited as it was when the walk reached it.
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
            let Some(chain) = bucket.chain.load(guard) else {
                continue;
            };
            for e in chain.iter() {
                n += 1;
                let v = ValueRef::new(&e.words[w..w + self.slot / 8], self.value_size);
                if !f(&e.key, v) {
                    return n;
                }
            }
        }
        n
    }

    // Always inlined: the helper's lookup has one call site of it
    // (`Map::lookup_hashed`), where a call's prologue and epilogue were a
    // fifth of the lookup's own work.
    #[inline(always)]
    pub(crate) fn lookup_ptr<'g>(
        &self,
        key: &[u8],
        cpu: usize,
        guard: &'g RunGuard,
    ) -> Option<ValueRef<'g>> {
        let e = self.find(key, guard)?;
        let n = self.slot / 8;
        // A plain hash's element is its one slot: no slot offset to
        // multiply and add (with its overflow test) per lookup, just the
        // length test.
        let words = if self.percpu {
            let w = cpu * n;
            e.words.get(w..w + n)?
        } else {
            e.words.get(..n)?
        };
        Some(ValueRef::new(words, self.value_size))
    }

    /// Publishes `elems` as the bucket's chain; the caller holds the
    /// bucket's writer lock.
    fn publish(&self, b: &Bucket, elems: Vec<Arc<Elem>>) {
        b.chain.replace(Chain::from_vec(elems));
        // After the chain: a reader whose count includes this change sees
        // the new chain (see `Hash::changes`).
        if let Some(c) = &self.changes {
            c.fetch_add(1, Ordering::Release);
        }
    }

    /// The bucket's elements now; the caller holds its writer lock, so the
    /// chain cannot change meanwhile.
    fn snapshot(b: &Bucket) -> Vec<Arc<Elem>> {
        let g = crate::pin();
        b.chain.load(&g).map_or_else(Vec::new, Chain::to_vec)
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
        // The flag errors need no lock: the answer was true when the
        // chain was read (`BPF_NOEXIST` on a present key is the common
        // case of a connection table).
        if flags & !update_flags::LOCK != update_flags::ANY {
            self.check_flags(self.contains(key), flags)?;
        }
        self.update_locked(key, src, obj, flags)
    }

    /// [`Hash::update`] under the bucket's writer lock (not LRU).
    #[inline(never)]
    fn update_locked(
        &self,
        key: &[u8],
        src: Src<'_>,
        obj: Option<Arc<Map>>,
        flags: u64,
    ) -> Result<(), MapError> {
        let b = self.bucket(key);
        let _w = lock(&b.writer);
        let mut elems = Self::snapshot(b);
        let pos = elems.iter().position(|e| key_eq(&e.key, key));
        self.check_flags(pos.is_some(), flags)?;
        match pos {
            Some(p) if self.percpu => {
                self.fill(&elems[p].words, src);
            }
            Some(p) => {
                let new = Arc::new(self.new_elem(key, src, obj)?);
                let old = std::mem::replace(&mut elems[p], new);
                old.live.store(false, Ordering::Relaxed);
                // The old element lives on in the retired chain until the
                // runs that may see it have ended.
                self.publish(b, elems);
            }
            None => {
                if !self.try_reserve() {
                    return Err(MapError::Full {
                        max_entries: self.max_entries,
                    });
                }
                match self.new_elem(key, src, obj) {
                    Ok(e) => {
                        elems.push(Arc::new(e));
                        self.publish(b, elems);
                    }
                    Err(e) => {
                        self.count.fetch_sub(1, Ordering::AcqRel);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn update_lru(&self, key: &[u8], src: Src<'_>, flags: u64) -> Result<(), MapError> {
        let b = self.bucket(key);
        loop {
            let exists = self.contains(key);
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
            let w = lock(&b.writer);
            let mut elems = Self::snapshot(b);
            let pos = elems.iter().position(|e| key_eq(&e.key, key));
            if let Err(e) = self.check_flags(pos.is_some(), flags) {
                drop(w);
                unreserve();
                return Err(e);
            }
            let queued = match pos {
                Some(p) => {
                    unreserve();
                    if self.percpu {
                        self.fill(&elems[p].words, src);
                        elems[p].referenced.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    let new = Arc::new(self.new_elem(key, src, None)?);
                    new.referenced.store(true, Ordering::Relaxed);
                    let queued = new.clone();
                    let old = std::mem::replace(&mut elems[p], new);
                    old.live.store(false, Ordering::Relaxed);
                    self.publish(b, elems);
                    drop(w);
                    queued
                }
                // Deleted since we looked: start again with a reservation.
                None if !reserved => continue,
                None => {
                    let new = match self.new_elem(key, src, None) {
                        Ok(e) => Arc::new(e),
                        Err(e) => {
                            drop(w);
                            unreserve();
                            return Err(e);
                        }
                    };
                    let queued = new.clone();
                    elems.push(new);
                    self.publish(b, elems);
                    drop(w);
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
        let b = self.bucket(&victim.key);
        let _w = lock(&b.writer);
        let mut elems = Self::snapshot(b);
        if let Some(p) = elems.iter().position(|e| Arc::ptr_eq(e, &victim)) {
            let old = elems.remove(p);
            old.live.store(false, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.publish(b, elems);
        }
        true
    }

    /// Unlinks the element of `key` and returns it (still readable by the
    /// runs that found it until they end).
    fn unlink(&self, key: &[u8]) -> Result<Arc<Elem>, MapError> {
        let b = self.bucket(key);
        let _w = lock(&b.writer);
        let mut elems = Self::snapshot(b);
        let p = elems
            .iter()
            .position(|e| key_eq(&e.key, key))
            .ok_or(MapError::NotFound)?;
        let old = elems.remove(p);
        old.live.store(false, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.publish(b, elems);
        Ok(old)
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.unlink(key).map(drop)
    }

    /// Removes and returns the element (`lookup_and_delete`).
    pub(crate) fn take(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let old = self.unlink(key)?;
        storage::read(&old.words, 0, out);
        Ok(())
    }

    fn first_from(&self, start: usize, g: &RunGuard) -> Result<Vec<u8>, MapError> {
        for bucket in &self.buckets[start..] {
            if let Some(c) = bucket.chain.load(g) {
                return Ok(c.first.key.to_vec());
            }
        }
        Err(MapError::NotFound)
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, MapError> {
        let g = crate::pin();
        let Some(key) = key else {
            return self.first_from(0, &g);
        };
        let h = self.index(key);
        let Some(chain) = self.buckets[h].chain.load(&g) else {
            return self.first_from(0, &g);
        };
        let mut it = chain.iter();
        if it.by_ref().any(|e| key_eq(&e.key, key)) {
            if let Some(e) = it.next() {
                return Ok(e.key.to_vec());
            }
            return self.first_from(h + 1, &g);
        }
        self.first_from(0, &g)
    }
}

#[cfg(test)]
mod tests {
    use super::{key_eq, Seed};

    /// The largest bucket and the share of empty buckets when `keys` go
    /// into as many buckets as there are keys (a power of two).
    fn spread(seed: &Seed, keys: &[Vec<u8>]) -> (usize, f64) {
        let n = keys.len();
        assert!(n.is_power_of_two());
        let mut load = vec![0usize; n];
        for k in keys {
            load[seed.hash(k) as usize & (n - 1)] += 1;
        }
        let empty = load.iter().filter(|&&l| l == 0).count();
        (*load.iter().max().unwrap(), empty as f64 / n as f64)
    }

    /// `Seed::hash_long` as a plain loop over 16-byte steps (the last
    /// one overlapping), for every length.
    fn looped(seed: &Seed, key: &[u8]) -> u64 {
        let [s0, s1, s2] = seed.0;
        let n = key.len();
        let w = |at: usize| u64::from_le_bytes(key[at..at + 8].try_into().unwrap());
        let mut h = s0 ^ n as u64;
        let mut at = 0;
        while at < n {
            let a = at.min(n - 16);
            h = super::fold_mul(w(a) ^ h, w(a + 8) ^ s1);
            at += 16;
        }
        super::fold_mul(h ^ s0, s2)
    }

    /// The inline steps for keys of 17 to 32 bytes are the loop's:
    /// every length above 16 hashes as the loop does, and a change in
    /// any byte or in the length changes the hash.
    #[test]
    fn medium_keys_hash_as_the_long_loop() {
        let seed = Seed::random();
        for n in 17..=48usize {
            let key: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            assert_eq!(seed.hash(&key), looped(&seed, &key), "{n} bytes");
            for i in 0..n {
                let mut k = key.clone();
                k[i] ^= 1;
                assert_ne!(seed.hash(&k), seed.hash(&key), "{n} bytes, byte {i}");
            }
            let mut longer = key.clone();
            longer.push(0);
            assert_ne!(seed.hash(&longer), seed.hash(&key), "{n} bytes");
        }
    }

    /// Structured key sets (what programs use as keys: counters, IPv4
    /// addresses in one subnet, 5-tuples differing in a port, keys
    /// differing only in their top or bottom byte, long keys) spread like
    /// random keys would: no bucket above 12 of 4096 keys (random keys
    /// give about 7) and about 1/e of the buckets empty.
    #[test]
    fn structured_keys_spread_over_the_buckets() {
        let n = 4096u32;
        let sets: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "u32 counter",
                (0..n).map(|i| i.to_ne_bytes().to_vec()).collect(),
            ),
            (
                "u32 << 20",
                (0..n).map(|i| (i << 20).to_ne_bytes().to_vec()).collect(),
            ),
            (
                "ipv4 10.0.x.y",
                (0..n)
                    .map(|i| vec![10, 0, (i >> 8) as u8, i as u8])
                    .collect(),
            ),
            (
                "u64 top bits",
                (0..n)
                    .map(|i| (u64::from(i) << 52).to_ne_bytes().to_vec())
                    .collect(),
            ),
            (
                "12-byte tuple, sport",
                (0..n)
                    .map(|i| {
                        let mut k = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 80];
                        k[8..10].copy_from_slice(&(i as u16).to_be_bytes());
                        k
                    })
                    .collect(),
            ),
            (
                "16-byte, last bytes",
                (0..n)
                    .map(|i| {
                        let mut k = vec![7u8; 16];
                        k[14..].copy_from_slice(&(i as u16).to_be_bytes());
                        k
                    })
                    .collect(),
            ),
            (
                "6-byte",
                (0..n)
                    .map(|i| vec![2, 0, 0, 0, (i >> 8) as u8, i as u8])
                    .collect(),
            ),
            (
                "40-byte, middle",
                (0..n)
                    .map(|i| {
                        let mut k = vec![0u8; 40];
                        k[20..24].copy_from_slice(&i.to_le_bytes());
                        k
                    })
                    .collect(),
            ),
        ];
        for round in 0..4 {
            let seed = Seed::random();
            for (name, keys) in &sets {
                let (max, empty) = spread(&seed, keys);
                assert!(max <= 12, "{name} (seed {round}): a bucket of {max}");
                assert!(
                    (0.30..0.44).contains(&empty),
                    "{name} (seed {round}): {empty:.3} of the buckets empty"
                );
            }
        }
    }

    #[test]
    fn short_keys_hash_every_byte() {
        // Keys of every length up to 40: changing any one byte changes the
        // hash (for a fixed seed, almost surely; here always).
        let seed = Seed::random();
        for n in 1..=40usize {
            let base: Vec<u8> = (0..n as u8).collect();
            let h = seed.hash(&base);
            for i in 0..n {
                let mut k = base.clone();
                k[i] ^= 0x40;
                assert_ne!(seed.hash(&k), h, "length {n}, byte {i}");
            }
        }
        // The length is part of the hash.
        assert_ne!(seed.hash(&[0; 4]), seed.hash(&[0; 5]));
    }

    #[test]
    fn key_eq_compares_every_byte() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37)).collect();
            assert!(key_eq(&a, &a.clone()), "length {n}");
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 1;
                assert!(!key_eq(&a, &b), "length {n}, byte {i}");
            }
            assert!(!key_eq(&a, &[a.as_slice(), &[0]].concat()));
        }
    }
}
