//! `array` and `percpu_array`: one slot per index, allocated up front and
//! never freed before the map.
//!
//! Layout: index `i`, CPU `c` lives at byte `(i * ncpus + c) * slot`, where
//! `slot` is the value size rounded up to 8 and `ncpus` is 1 for plain
//! arrays. Updates copy in place (as in the kernel), so a program holding a
//! pointer sees them.

use crate::storage::{self, ValueRef};
use crate::{update_flags, MapError};
use std::sync::atomic::AtomicU64;

pub(crate) struct Array {
    words: Box<[AtomicU64]>,
    max_entries: u32,
    value_size: usize,
    /// `value_size` rounded up to 8.
    slot: usize,
    /// 1, or the number of possible CPUs for `percpu_array`.
    ncpus: usize,
}

pub(crate) fn index(key: &[u8]) -> u32 {
    // Keys are checked to be 4 bytes before they get here; a shorter one
    // would be a bug, not a reason to panic.
    key.first_chunk::<4>()
        .map_or(u32::MAX, |b| u32::from_ne_bytes(*b))
}

impl Array {
    pub(crate) fn new(max_entries: u32, value_size: u32, ncpus: usize) -> Result<Array, MapError> {
        let slot = (value_size as usize).div_ceil(8) * 8;
        let bytes = (max_entries as usize)
            .checked_mul(ncpus)
            .and_then(|n| n.checked_mul(slot))
            .ok_or(MapError::NoMemory)?;
        Ok(Array {
            words: storage::alloc(bytes)?,
            max_entries,
            value_size: value_size as usize,
            slot,
            ncpus,
        })
    }

    fn word(&self, i: u32, cpu: usize) -> usize {
        (i as usize * self.ncpus + cpu) * self.slot / 8
    }

    /// Control-side copy: `value_size` bytes, or one `slot` per CPU.
    pub(crate) fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let i = index(key);
        if i >= self.max_entries {
            return Err(MapError::NotFound);
        }
        storage::read(&self.words, self.word(i, 0), out);
        Ok(())
    }

    /// The program-side lookup, once per `bpf_map_lookup_elem` on an
    /// array: kept to an index computation and one bounds check.
    #[inline]
    pub(crate) fn lookup_ptr<'g>(&'g self, key: &[u8], cpu: usize) -> Option<ValueRef<'g>> {
        let i = index(key);
        let cpu = if self.ncpus == 1 { 0 } else { cpu };
        if i >= self.max_entries || cpu >= self.ncpus {
            return None;
        }
        let n = self.slot / 8;
        let w = (i as usize * self.ncpus + cpu) * n;
        let words = self.words.get(w..w + n)?;
        Some(ValueRef::new(words, self.value_size))
    }

    /// `value` is `value_size` bytes for one CPU (`cpu` given, or a plain
    /// array), or one `slot` per CPU (`cpu` is `None` on a per-CPU array).
    pub(crate) fn update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: Option<usize>,
    ) -> Result<(), MapError> {
        let i = index(key);
        if i >= self.max_entries {
            return Err(MapError::OutOfRange {
                index: i,
                max_entries: self.max_entries,
            });
        }
        if flags & !update_flags::LOCK == update_flags::NOEXIST {
            return Err(MapError::Exists);
        }
        if flags & update_flags::LOCK != 0 {
            return Err(MapError::Invalid {
                what: "BPF_F_LOCK on a map without a bpf_spin_lock",
            });
        }
        match cpu {
            Some(c) if c < self.ncpus => storage::write(&self.words, self.word(i, c), value),
            Some(_) => return Err(MapError::Invalid { what: "CPU index" }),
            None => storage::write(&self.words, self.word(i, 0), value),
        }
        Ok(())
    }

    /// Every slot, for the map's lifetime.
    pub(crate) fn storage(&self) -> ValueRef<'_> {
        ValueRef::new(&self.words, self.words.len() * 8)
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<u32, MapError> {
        match key.map(index) {
            Some(i) if i < self.max_entries => {
                if i + 1 == self.max_entries {
                    Err(MapError::NotFound)
                } else {
                    Ok(i + 1)
                }
            }
            _ => Ok(0),
        }
    }
}
