//! `lpm_trie`: longest-prefix match over `struct bpf_lpm_trie_key` keys
//! (a host-endian `u32` prefix length, then the data bytes, most
//! significant bit first).
//!
//! Elements live in one hash table per prefix length, keyed by the
//! prefix's bytes (bits past the prefix cleared): a lookup tries the prefix
//! lengths present, longest first, each with one hash of at most the key's
//! bytes (the kernel walks its trie, one node per differing bit). Iteration
//! order comes from a `BTreeMap` over an encoding of the prefixes that sorts
//! in the kernel's order: its `get_next_key` walks the trie in post-order
//! (child 0, child 1, then the node), which is the order of the prefixes
//! written as bit strings with a terminator that sorts *after* both bits
//! ("more specific before less specific").
//!
//! Kept from the kernel: lookups (also from the control side) are
//! longest-prefix matches over the first `prefixlen` bits of the key; update
//! and delete are exact; the key bytes stored are those of the last update
//! (bits past the prefix included), which `get_next_key` returns; a full
//! trie gives `ENOSPC` for new prefixes; an absent or invalid key restarts
//! the iteration from the first prefix.

use crate::hash::Seed;
use crate::raw::Rcu;
use crate::storage::{self, ValueRef};
use crate::{rd, update_flags, wr, MapError, RunGuard};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;

struct Elem {
    key: Box<[u8]>,
    words: Box<[AtomicU64]>,
}

/// The per-map seeded hash of prefix bytes (`Seed::hash`, as hash maps use).
#[derive(Clone, Copy)]
struct Seeded(Seed);

struct SeededHasher(Seed, u64);

impl BuildHasher for Seeded {
    type Hasher = SeededHasher;
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0, 0)
    }
}

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.1 ^= self.0.hash(bytes);
    }
    // `[u8]` hashes its length first: all keys of one table have the same
    // length, so it needs no mixing of its own.
    fn write_usize(&mut self, n: usize) {
        self.1 ^= n as u64;
    }
    fn finish(&self) -> u64 {
        self.1
    }
}

/// The elements of one prefix length, by their prefix bytes.
type ByPrefix = HashMap<Box<[u8]>, Rcu<Elem>, Seeded>;

/// The same for keys of at most 16 data bytes (IPv4, IPv6): the prefix as
/// one big-endian integer, bits past the prefix cleared, so that a lookup
/// masks one word per length instead of copying and comparing bytes.
type ByWord = HashMap<u128, Rcu<Elem>, Seeded>;

/// The first `len` bits (`len` <= 128) of a big-endian word.
fn word_mask(len: u32) -> u128 {
    match len {
        0 => 0,
        l => !0u128 << (128 - l.min(128)),
    }
}

struct Inner {
    /// Iteration order: the order key of each prefix -> its length.
    by_order: BTreeMap<Vec<u8>, u32>,
    /// Per prefix length (index), the elements of that length (keys of
    /// more than 16 data bytes; empty otherwise).
    by_len: Vec<ByPrefix>,
    /// Per prefix length, for keys of up to 16 data bytes.
    by_word: Vec<ByWord>,
    /// The prefix lengths that have elements, longest first.
    lens: Vec<u32>,
}

pub(crate) struct Lpm {
    inner: RwLock<Inner>,
    max_prefixlen: u32,
    max_entries: u32,
    value_size: usize,
}

fn prefixlen(key: &[u8]) -> u32 {
    u32::from_ne_bytes([key[0], key[1], key[2], key[3]])
}

/// One byte per prefix bit (0 or 1), then 2: sorts in trie post-order.
fn order_key(data: &[u8], len: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(len as usize + 1);
    for i in 0..len as usize {
        k.push((data[i / 8] >> (7 - i % 8)) & 1);
    }
    k.push(2);
    k
}

/// Writes the first `len` bits of `data` to `out` (`len.div_ceil(8)`
/// bytes, the bits past `len` cleared) and returns them.
fn prefix_into<'a>(data: &[u8], len: u32, out: &'a mut [u8]) -> Option<&'a [u8]> {
    let n = (len as usize).div_ceil(8);
    let out = out.get_mut(..n)?;
    out.copy_from_slice(data.get(..n)?);
    if !len.is_multiple_of(8) {
        out[n - 1] &= 0xffu8 << (8 - len % 8);
    }
    Some(out)
}

/// Prefixes up to IPv6's 128 bits are built on the stack.
const SMALL_PREFIX: usize = 16;

impl Lpm {
    pub(crate) fn new(key_size: u32, value_size: u32, max_entries: u32) -> Lpm {
        let max_prefixlen = (key_size - 4) * 8;
        let seed = Seeded(Seed::random());
        let words = max_prefixlen <= 128;
        let tables = |used: bool| if used { max_prefixlen as usize + 1 } else { 0 };
        Lpm {
            inner: RwLock::new(Inner {
                by_order: BTreeMap::new(),
                // Empty tables allocate nothing.
                by_len: (0..tables(!words))
                    .map(|_| HashMap::with_hasher(seed))
                    .collect(),
                by_word: (0..tables(words))
                    .map(|_| HashMap::with_hasher(seed))
                    .collect(),
                lens: Vec::new(),
            }),
            max_prefixlen,
            max_entries,
            value_size: value_size as usize,
        }
    }

    /// The data bytes of a key of at most 16 data bytes as a big-endian
    /// word (zero-padded), `None` for longer keys.
    #[inline]
    fn word(&self, data: &[u8]) -> Option<u128> {
        let mut b = [0u8; 16];
        match data.len() {
            4 => b[..4].copy_from_slice(data),
            16 => b.copy_from_slice(data),
            n if n < 16 => b[..n].copy_from_slice(data),
            _ => return None,
        }
        Some(u128::from_be_bytes(b))
    }

    fn best<'a>(&self, inner: &'a Inner, key: &[u8]) -> Option<&'a Rcu<Elem>> {
        let len = prefixlen(key);
        if len > self.max_prefixlen {
            return None;
        }
        let data = key.get(4..)?;
        if let Some(w) = self.word(data) {
            // Longest first; the lengths above the key's are skipped.
            for &l in &inner.lens {
                if l > len {
                    continue;
                }
                if let Some(e) = inner.by_word.get(l as usize)?.get(&(w & word_mask(l))) {
                    return Some(e);
                }
            }
            return None;
        }
        let mut small = [0u8; SMALL_PREFIX];
        let mut heap = Vec::new();
        for &l in inner.lens.iter().filter(|&&l| l <= len) {
            let buf: &mut [u8] = if l as usize <= SMALL_PREFIX * 8 {
                &mut small
            } else {
                heap.resize(data.len(), 0);
                &mut heap
            };
            let prefix = prefix_into(data, l, buf)?;
            if let Some(e) = inner.by_len.get(l as usize)?.get(prefix) {
                return Some(e);
            }
        }
        None
    }

    pub(crate) fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let inner = rd(&self.inner);
        let e = self.best(&inner, key).ok_or(MapError::NotFound)?;
        storage::read(&e.words, 0, out);
        Ok(())
    }

    pub(crate) fn lookup_ptr<'g>(&self, key: &[u8], guard: &'g RunGuard) -> Option<ValueRef<'g>> {
        let inner = rd(&self.inner);
        let e = self.best(&inner, key)?.get(guard);
        Some(ValueRef::new(&e.words, self.value_size))
    }

    /// The element of exactly prefix `len` of `key` (data after the
    /// 4-byte length), if any.
    fn exact<'a>(&self, inner: &'a Inner, key: &[u8], len: u32) -> Option<&'a Elem> {
        if let Some(w) = self.word(key.get(4..)?) {
            return inner
                .by_word
                .get(len as usize)?
                .get(&(w & word_mask(len)))
                .map(|e| &**e);
        }
        let mut buf = vec![0u8; key.len().saturating_sub(4)];
        let prefix = prefix_into(key.get(4..)?, len, &mut buf)?;
        inner.by_len.get(len as usize)?.get(prefix).map(|e| &**e)
    }

    pub(crate) fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        if flags > update_flags::EXIST {
            return Err(MapError::Invalid {
                what: "update flags",
            });
        }
        let len = prefixlen(key);
        if len > self.max_prefixlen {
            return Err(MapError::Invalid {
                what: "prefix length above the key's data bits",
            });
        }
        let data = &key[4..];
        let mut prefix = vec![0u8; data.len()];
        let n = prefix_into(data, len, &mut prefix).map_or(0, <[u8]>::len);
        prefix.truncate(n);
        let word = self.word(data).map(|w| w & word_mask(len));
        let mut inner = wr(&self.inner);
        let exists = match word {
            Some(w) => inner.by_word[len as usize].contains_key(&w),
            None => inner.by_len[len as usize].contains_key(prefix.as_slice()),
        };
        if exists && flags == update_flags::NOEXIST {
            return Err(MapError::Exists);
        }
        if !exists && flags == update_flags::EXIST {
            return Err(MapError::NotFound);
        }
        if !exists && inner.by_order.len() >= self.max_entries as usize {
            return Err(MapError::NoSpace {
                max_entries: self.max_entries,
            });
        }
        let words = storage::alloc(self.value_size)?;
        storage::write(&words, 0, value);
        let new = Rcu::new(Elem {
            key: key.into(),
            words,
        });
        let old = match word {
            Some(w) => inner.by_word[len as usize].insert(w, new),
            None => inner.by_len[len as usize].insert(prefix.into_boxed_slice(), new),
        };
        if old.is_none() {
            inner.by_order.insert(order_key(data, len), len);
            if let Err(at) = inner.lens.binary_search_by(|l| len.cmp(l)) {
                inner.lens.insert(at, len);
            }
        }
        drop(inner);
        drop(old); // retired
        Ok(())
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let len = prefixlen(key);
        if len > self.max_prefixlen {
            return Err(MapError::Invalid {
                what: "prefix length above the key's data bits",
            });
        }
        let data = &key[4..];
        let mut buf = vec![0u8; data.len()];
        let prefix = prefix_into(data, len, &mut buf).ok_or(MapError::NotFound)?;
        let word = self.word(data).map(|w| w & word_mask(len));
        let mut inner = wr(&self.inner);
        let (old, emptied) = match word {
            Some(w) => {
                let table = &mut inner.by_word[len as usize];
                (table.remove(&w), table.is_empty())
            }
            None => {
                let table = &mut inner.by_len[len as usize];
                (table.remove(prefix), table.is_empty())
            }
        };
        let old = old.ok_or(MapError::NotFound)?;
        inner.by_order.remove(&order_key(data, len));
        if emptied {
            inner.lens.retain(|&l| l != len);
        }
        drop(inner);
        drop(old); // retired
        Ok(())
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, MapError> {
        let inner = rd(&self.inner);
        // The stored key of the element an order key names.
        let stored = |ok: &[u8], len: u32| -> Result<Vec<u8>, MapError> {
            // The order key spells the prefix's bits: rebuild its bytes.
            let mut data = vec![0u8; (self.max_prefixlen / 8) as usize];
            for (i, &b) in ok[..len as usize].iter().enumerate() {
                data[i / 8] |= b << (7 - i % 8);
            }
            let mut k = len.to_ne_bytes().to_vec();
            k.extend_from_slice(&data);
            self.exact(&inner, &k, len)
                .map(|e| e.key.to_vec())
                .ok_or(MapError::NotFound)
        };
        let first = || match inner.by_order.iter().next() {
            Some((ok, &len)) => stored(ok, len),
            None => Err(MapError::NotFound),
        };
        let Some(key) = key.filter(|k| prefixlen(k) <= self.max_prefixlen) else {
            return first();
        };
        let len = prefixlen(key);
        if self.exact(&inner, key, len).is_none() {
            return first();
        }
        let ok = order_key(&key[4..], len);
        match inner
            .by_order
            .range((Bound::Excluded(ok), Bound::Unbounded))
            .next()
        {
            Some((ok, &len)) => stored(ok, len),
            None => Err(MapError::NotFound),
        }
    }

    pub(crate) fn len(&self) -> usize {
        rd(&self.inner).by_order.len()
    }
}
