//! `lpm_trie`: longest-prefix match over `struct bpf_lpm_trie_key` keys
//! (a host-endian `u32` prefix length, then the data bytes, most
//! significant bit first).
//!
//! Elements live in one hash table per prefix length, keyed by the
//! prefix's bytes (bits past the prefix cleared): a lookup tries the prefix
//! lengths present, longest first, each with one hash of at most the key's
//! bytes (the kernel walks its trie, one node per differing bit). Keys of
//! at most 16 data bytes (IPv4, IPv6) are read once as a big-endian word
//! and masked per length, without copying bytes. Iteration order comes
//! from a `BTreeMap` over an encoding of the prefixes that sorts in the
//! kernel's order: its `get_next_key` walks the trie in post-order (child
//! 0, child 1, then the node), which is the order of the prefixes written
//! as bit strings with a terminator that sorts *after* both bits ("more
//! specific before less specific").
//!
//! Lookups take no lock, as the kernel's (RCU): the list of lengths
//! present, each length's bucket array and each bucket's chain are
//! published whole ([`RcuCell`]) by writers, who hold one lock for the
//! trie (the kernel's trie spinlock) and double a length's bucket array
//! when it holds more elements than buckets. A lookup that runs while
//! several prefixes change may see some of the changes and not others, as
//! a walk of the kernel's trie may.
//!
//! Kept from the kernel: lookups (also from the control side) are
//! longest-prefix matches over the first `prefixlen` bits of the key; update
//! and delete are exact; an update replaces the element (an earlier value
//! pointer keeps the old value); the key bytes stored are those of the last
//! update (bits past the prefix included), which `get_next_key` returns; a
//! full trie gives `ENOSPC` for new prefixes; an absent or invalid key
//! restarts the iteration from the first prefix.

use crate::hash::{key_eq, Seed};
use crate::raw::RcuCell;
use crate::storage::{self, ValueRef};
use crate::{lock, update_flags, MapError, RunGuard};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct Elem {
    /// The key of the last update, as given.
    key: Box<[u8]>,
    /// The prefix's bytes, bits past the prefix cleared: the table key.
    prefix: Box<[u8]>,
    /// Keys of up to 16 data bytes: the prefix as a big-endian word (what
    /// lookups compare); 0 otherwise.
    word: u128,
    /// Its hash in the length's table.
    hash: u64,
    words: Box<[AtomicU64]>,
}

/// A prefix as lookups and writers name it.
#[derive(Clone, Copy)]
enum Prefix<'a> {
    /// Keys of up to 16 data bytes: the masked big-endian word.
    Word(u128),
    /// Longer keys: the prefix's bytes.
    Bytes(&'a [u8]),
}

/// The elements of one bucket (never empty), replaced whole.
struct Chain(Box<[Arc<Elem>]>);

type Buckets = Box<[RcuCell<Chain>]>;

struct Writer {
    /// Iteration order: the order key of each prefix -> its length.
    by_order: BTreeMap<Vec<u8>, u32>,
    /// Elements per prefix length.
    counts: Vec<usize>,
}

pub(crate) struct Lpm {
    /// Per prefix length (index), a power-of-two bucket array, absent
    /// while the length has no element.
    tables: Box<[RcuCell<Buckets>]>,
    /// The prefix lengths that have elements, longest first.
    lens: RcuCell<Box<[u32]>>,
    writer: Mutex<Writer>,
    count: AtomicUsize,
    seed: Seed,
    max_prefixlen: u32,
    max_entries: u32,
    value_size: usize,
    /// Keys of at most 16 data bytes take the word path.
    small: bool,
}

#[inline(always)]
fn prefixlen(key: &[u8]) -> u32 {
    key.first_chunk::<4>()
        .map_or(u32::MAX, |b| u32::from_ne_bytes(*b))
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

/// The most data bytes an LPM key has (the kernel's `LPM_DATA_SIZE_MAX`).
const LPM_DATA_MAX: usize = 256;

/// The first `len` bits (`len` <= 128) of a big-endian word.
#[inline(always)]
fn word_mask(len: u32) -> u128 {
    match len {
        0 => 0,
        l => !0u128 << (128 - l.min(128)),
    }
}

/// The data bytes of a key of at most 16 data bytes as a big-endian word
/// (zero-padded), `None` for longer keys.
#[inline(always)]
fn word(data: &[u8]) -> Option<u128> {
    // IPv4: one load and a shift (not a zeroed buffer, a copy and two
    // byte swaps).
    if let Some(b) = data.first_chunk::<4>().filter(|_| data.len() == 4) {
        return Some(u128::from(u32::from_be_bytes(*b)) << 96);
    }
    let mut b = [0u8; 16];
    match data.len() {
        4 => b[..4].copy_from_slice(data),
        16 => b.copy_from_slice(data),
        n if n < 16 => b[..n].copy_from_slice(data),
        _ => return None,
    }
    Some(u128::from_be_bytes(b))
}

impl Lpm {
    pub(crate) fn new(key_size: u32, value_size: u32, max_entries: u32) -> Lpm {
        let max_prefixlen = (key_size - 4) * 8;
        Lpm {
            // Absent tables allocate nothing but their pointer.
            tables: (0..=max_prefixlen).map(|_| RcuCell::empty()).collect(),
            lens: RcuCell::empty(),
            writer: Mutex::new(Writer {
                by_order: BTreeMap::new(),
                counts: vec![0; max_prefixlen as usize + 1],
            }),
            count: AtomicUsize::new(0),
            seed: Seed::random(),
            max_prefixlen,
            max_entries,
            value_size: value_size as usize,
            small: max_prefixlen <= 128,
        }
    }

    // Always inlined: out of line (as `best`'s loop left it), its
    // `Prefix` went through memory on every probe.
    #[inline(always)]
    fn hash_of(&self, p: Prefix<'_>) -> u64 {
        match p {
            Prefix::Word(w) => self.seed.hash_word(w),
            Prefix::Bytes(b) => self.seed.hash(b),
        }
    }

    /// How writers name the prefix whose bytes are `prefix`.
    fn prefix_of<'a>(&self, prefix: &'a [u8]) -> Prefix<'a> {
        match word(prefix).filter(|_| self.small) {
            Some(w) => Prefix::Word(w),
            None => Prefix::Bytes(prefix),
        }
    }

    /// The element of prefix length `len` and prefix `p` (inlined into
    /// `best`'s loop: one probe per prefix length present).
    #[inline(always)]
    fn find<'g>(&self, len: u32, p: Prefix<'_>, g: &'g RunGuard) -> Option<&'g Arc<Elem>> {
        let buckets = self.tables.get(len as usize)?.load(g)?;
        let h = self.hash_of(p);
        let chain = buckets.get(h as usize & (buckets.len() - 1))?.load(g)?;
        match p {
            Prefix::Word(w) => chain.0.iter().find(|e| e.word == w),
            Prefix::Bytes(b) => chain.0.iter().find(|e| key_eq(&e.prefix, b)),
        }
    }

    // Always inlined into the program's lookup (`lookup_ptr`), as
    // `Hash::lookup_ptr` is: a call's prologue and epilogue were a tenth
    // of the search.
    #[inline(always)]
    fn best<'g>(&self, key: &[u8], g: &'g RunGuard) -> Option<&'g Arc<Elem>> {
        let len = prefixlen(key);
        if len > self.max_prefixlen {
            return None;
        }
        let data = key.get(4..)?;
        let lens = self.lens.load(g)?;
        if let Some(w) = word(data) {
            // Longest first; the lengths above the key's are skipped.
            for &l in lens.iter() {
                if l > len {
                    continue;
                }
                if let Some(e) = self.find(l, Prefix::Word(w & word_mask(l)), g) {
                    return Some(e);
                }
            }
            return None;
        }
        // Longer keys: one masked copy per length, on the stack (the data
        // is at most `LPM_DATA_MAX` bytes, as creation checks).
        let mut buf = [0u8; LPM_DATA_MAX];
        for &l in lens.iter().filter(|&&l| l <= len) {
            let prefix = prefix_into(data, l, &mut buf)?;
            if let Some(e) = self.find(l, Prefix::Bytes(prefix), g) {
                return Some(e);
            }
        }
        None
    }

    pub(crate) fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let g = crate::pin();
        let e = self.best(key, &g).ok_or(MapError::NotFound)?;
        storage::read(&e.words, 0, out);
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn lookup_ptr<'g>(&self, key: &[u8], guard: &'g RunGuard) -> Option<ValueRef<'g>> {
        let e = self.best(key, guard)?;
        Some(ValueRef::new(&e.words, self.value_size))
    }

    /// The prefix bytes of `data` at `len` (`len` <= `max_prefixlen`).
    fn prefix(data: &[u8], len: u32) -> Vec<u8> {
        let mut buf = vec![0u8; data.len()];
        let n = prefix_into(data, len, &mut buf).map_or(0, <[u8]>::len);
        buf.truncate(n);
        buf
    }

    /// Publishes `elems` (a bucket's new contents) in bucket `i` of `len`'s
    /// table. Writers only.
    fn set_bucket(buckets: &Buckets, i: usize, elems: Vec<Arc<Elem>>) {
        buckets[i].replace((!elems.is_empty()).then(|| Chain(elems.into_boxed_slice())));
    }

    /// A bucket array of `n` buckets holding `elems`.
    fn build(&self, n: usize, elems: impl Iterator<Item = Arc<Elem>>) -> Buckets {
        let mut lists: Vec<Vec<Arc<Elem>>> = (0..n).map(|_| Vec::new()).collect();
        for e in elems {
            lists[e.hash as usize & (n - 1)].push(e);
        }
        lists
            .into_iter()
            .map(|l| {
                if l.is_empty() {
                    RcuCell::empty()
                } else {
                    RcuCell::new(Chain(l.into_boxed_slice()))
                }
            })
            .collect()
    }

    /// Republishes the list of lengths present. Writers only.
    fn publish_lens(&self, w: &Writer) {
        let lens: Box<[u32]> = (0..w.counts.len() as u32)
            .rev()
            .filter(|&l| w.counts[l as usize] > 0)
            .collect();
        self.lens.replace((!lens.is_empty()).then_some(lens));
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
        let prefix = Self::prefix(data, len);
        let p = self.prefix_of(&prefix);
        let hash = self.hash_of(p);
        let word = match p {
            Prefix::Word(w) => w,
            Prefix::Bytes(_) => 0,
        };
        let mut w = lock(&self.writer);
        let g = crate::pin();
        let exists = self.find(len, p, &g).is_some();
        if exists && flags == update_flags::NOEXIST {
            return Err(MapError::Exists);
        }
        if !exists && flags == update_flags::EXIST {
            return Err(MapError::NotFound);
        }
        if !exists && w.by_order.len() >= self.max_entries as usize {
            return Err(MapError::NoSpace {
                max_entries: self.max_entries,
            });
        }
        let words = storage::alloc(self.value_size)?;
        storage::write(&words, 0, value);
        let new = Arc::new(Elem {
            key: key.into(),
            prefix: prefix.clone().into_boxed_slice(),
            word,
            hash,
            words,
        });
        let table = &self.tables[len as usize];
        let count = w.counts[len as usize] + usize::from(!exists);
        let buckets = match table.load(&g) {
            // Grown (or made) when the length holds more elements than
            // buckets: chains stay short, as in a hash map.
            Some(b) if count <= b.len() => b,
            old => {
                let n = count.next_power_of_two().max(2);
                let elems = old
                    .into_iter()
                    .flat_map(|b| b.iter())
                    .flat_map(|c| c.load(&g).map_or(&[][..], |c| &c.0[..]).iter().cloned());
                table.replace(Some(self.build(n, elems)));
                table.load(&g).ok_or(MapError::NoMemory)?
            }
        };
        let i = hash as usize & (buckets.len() - 1);
        let mut elems: Vec<Arc<Elem>> = buckets[i].load(&g).map_or_else(Vec::new, |c| c.0.to_vec());
        match elems.iter().position(|e| key_eq(&e.prefix, &prefix)) {
            // Replaced: the old element lives on in the retired chain
            // until the runs that may use it have ended.
            Some(p) => elems[p] = new,
            None => elems.push(new),
        }
        Self::set_bucket(buckets, i, elems);
        if !exists {
            w.counts[len as usize] += 1;
            w.by_order.insert(order_key(data, len), len);
            self.count.fetch_add(1, Ordering::Relaxed);
            if w.counts[len as usize] == 1 {
                self.publish_lens(&w);
            }
        }
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
        let prefix = Self::prefix(data, len);
        let mut w = lock(&self.writer);
        let g = crate::pin();
        let table = &self.tables[len as usize];
        let buckets = table.load(&g).ok_or(MapError::NotFound)?;
        let i = self.hash_of(self.prefix_of(&prefix)) as usize & (buckets.len() - 1);
        let mut elems: Vec<Arc<Elem>> = buckets[i].load(&g).map_or_else(Vec::new, |c| c.0.to_vec());
        let p = elems
            .iter()
            .position(|e| key_eq(&e.prefix, &prefix))
            .ok_or(MapError::NotFound)?;
        elems.remove(p);
        Self::set_bucket(buckets, i, elems);
        w.counts[len as usize] -= 1;
        w.by_order.remove(&order_key(data, len));
        self.count.fetch_sub(1, Ordering::Relaxed);
        if w.counts[len as usize] == 0 {
            table.replace(None);
            self.publish_lens(&w);
        }
        Ok(())
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, MapError> {
        let w = lock(&self.writer);
        let g = crate::pin();
        // The stored key of the element an order key names.
        let stored = |ok: &[u8], len: u32| -> Result<Vec<u8>, MapError> {
            // The order key spells the prefix's bits: rebuild its bytes.
            let mut data = vec![0u8; (self.max_prefixlen / 8) as usize];
            for (i, &b) in ok[..len as usize].iter().enumerate() {
                data[i / 8] |= b << (7 - i % 8);
            }
            let prefix = Self::prefix(&data, len);
            self.find(len, self.prefix_of(&prefix), &g)
                .map(|e| e.key.to_vec())
                .ok_or(MapError::NotFound)
        };
        let first = || match w.by_order.iter().next() {
            Some((ok, &len)) => stored(ok, len),
            None => Err(MapError::NotFound),
        };
        let Some(key) = key.filter(|k| prefixlen(k) <= self.max_prefixlen) else {
            return first();
        };
        let len = prefixlen(key);
        let prefix = Self::prefix(&key[4..], len);
        if self.find(len, self.prefix_of(&prefix), &g).is_none() {
            return first();
        }
        let ok = order_key(&key[4..], len);
        match w
            .by_order
            .range((Bound::Excluded(ok), Bound::Unbounded))
            .next()
        {
            Some((ok, &len)) => stored(ok, len),
            None => Err(MapError::NotFound),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::word;

    /// An IPv4 key's word (one load and a shift) is the one the general
    /// path builds (zero-padded big-endian bytes).
    #[test]
    fn ipv4_word_is_the_padded_big_endian_word() {
        for data in [
            [10u8, 1, 2, 3],
            [255, 0, 0, 1],
            [0, 0, 0, 0],
            [1, 2, 255, 128],
        ] {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&data);
            assert_eq!(word(&data), Some(u128::from_be_bytes(b)), "{data:?}");
        }
        assert_eq!(word(&[1, 2, 3]), Some(0x0001_0203_u128 << 104));
        assert_eq!(word(&[0; 17]), None);
    }
}
