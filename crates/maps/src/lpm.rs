//! `lpm_trie`: longest-prefix match over `struct bpf_lpm_trie_key` keys
//! (a host-endian `u32` prefix length, then the data bytes, most
//! significant bit first).
//!
//! Elements live in a `BTreeMap` keyed by an encoding of their prefix that
//! sorts in the kernel's iteration order: the kernel's `get_next_key` walks
//! its trie in post-order (child 0, child 1, then the node), which is the
//! order of the prefixes written as bit strings with a terminator that
//! sorts *after* both bits ("more specific before less specific"). A
//! lookup tries the prefix lengths present, longest first.
//!
//! Kept from the kernel: lookups (also from the control side) are
//! longest-prefix matches over the first `prefixlen` bits of the key; update
//! and delete are exact; the key bytes stored are those of the last update
//! (bits past the prefix included), which `get_next_key` returns; a full
//! trie gives `ENOSPC` for new prefixes; an absent or invalid key restarts
//! the iteration from the first prefix.

use crate::raw::Rcu;
use crate::storage::{self, ValueRef};
use crate::{rd, update_flags, wr, MapError, RunGuard};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;

struct Elem {
    key: Box<[u8]>,
    words: Box<[AtomicU64]>,
}

struct Inner {
    by_order: BTreeMap<Vec<u8>, Rcu<Elem>>,
    /// How many elements have each prefix length.
    per_len: Vec<u32>,
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

impl Lpm {
    pub(crate) fn new(key_size: u32, value_size: u32, max_entries: u32) -> Lpm {
        let max_prefixlen = (key_size - 4) * 8;
        Lpm {
            inner: RwLock::new(Inner {
                by_order: BTreeMap::new(),
                per_len: vec![0; max_prefixlen as usize + 1],
            }),
            max_prefixlen,
            max_entries,
            value_size: value_size as usize,
        }
    }

    fn best<'a>(&self, inner: &'a Inner, key: &[u8]) -> Option<&'a Rcu<Elem>> {
        let len = prefixlen(key) as usize;
        if len > self.max_prefixlen as usize {
            return None;
        }
        // The key's bits are spelled out once (on the stack up to IPv6's
        // 128 bits: a bigger buffer would cost its zeroing on every
        // lookup); each prefix length present then looks up the first `l`
        // of them with the terminator at `l`, longest first. Going down,
        // the terminator only overwrites bits that no shorter prefix reads.
        // Same keys as `order_key`, without building one per length.
        let data = key.get(4..)?;
        let mut small = [0u8; 129];
        let mut heap = Vec::new();
        let bits: &mut [u8] = if len < small.len() {
            &mut small[..=len]
        } else {
            heap.resize(len + 1, 0);
            &mut heap
        };
        for (i, b) in bits[..len].iter_mut().enumerate() {
            *b = (data.get(i / 8)? >> (7 - i % 8)) & 1;
        }
        for l in (0..=len).rev() {
            if inner.per_len.get(l).is_none_or(|&n| n == 0) {
                continue;
            }
            bits[l] = 2;
            if let Some(e) = inner.by_order.get(&bits[..=l]) {
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
        let ok = order_key(&key[4..], len);
        let mut inner = wr(&self.inner);
        let exists = inner.by_order.contains_key(&ok);
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
        let old = inner.by_order.insert(ok, new);
        if old.is_none() {
            inner.per_len[len as usize] += 1;
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
        let mut inner = wr(&self.inner);
        let old = inner
            .by_order
            .remove(&order_key(&key[4..], len))
            .ok_or(MapError::NotFound)?;
        inner.per_len[len as usize] -= 1;
        drop(inner);
        drop(old);
        Ok(())
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, MapError> {
        let inner = rd(&self.inner);
        let first = || {
            inner
                .by_order
                .values()
                .next()
                .map(|e| e.key.to_vec())
                .ok_or(MapError::NotFound)
        };
        let Some(key) = key.filter(|k| prefixlen(k) <= self.max_prefixlen) else {
            return first();
        };
        let ok = order_key(&key[4..], prefixlen(key));
        if !inner.by_order.contains_key(&ok) {
            return first();
        }
        inner
            .by_order
            .range((Bound::Excluded(ok), Bound::Unbounded))
            .next()
            .map(|(_, e)| e.key.to_vec())
            .ok_or(MapError::NotFound)
    }

    pub(crate) fn len(&self) -> usize {
        rd(&self.inner).by_order.len()
    }
}
