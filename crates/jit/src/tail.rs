//! Native tail calls: `bpf_tail_call` taken by generated code, without
//! leaving the run (unchecked mode only).
//!
//! A [`TailTable`] belongs to one embedder's set of programs (the `bpfkit`
//! facade makes one per object). Programs compiled with it
//! ([`crate::Builder::tail_calls`]) lower a `bpf_tail_call` on a program
//! array that the resolver describes ([`Imm64Resolver::prog_array`]) to:
//! the index's bounds check, the tail-call count (33, the kernel's limit,
//! in the run's data: [`TailTable::new`]'s `count`), one load of the
//! slot's word, and the program id it holds looked up in the table's
//! entries for the caller's context layout. An entry the embedder
//! published ([`TailTable::publish`]) is entered at once: the caller's
//! frame is discarded (`rsp` back to the run's entry, `r10` the top of the
//! stack), the target's helper table goes into the `Ctx` and its
//! instruction 0 is jumped to; its `exit` returns from the run. Anything
//! else (no entry for the id, a run without the table's data type, a map
//! or an index the sequence does not know) calls the registered helper,
//! which decides as before, so the semantics are the helper's.
//!
//! [`Imm64Resolver::prog_array`]: bpfkit_runtime::Imm64Resolver::prog_array
//!
//! What makes entering another program's code safe:
//! - Only unchecked code (from a `VerifiedProgram`), without a budget,
//!   blinding, `callx` or region-table reads, compiled with this very
//!   table, is published; a target is entered only from code of the same
//!   context layout (`EntryCheck`: one entry array per layout, the head's
//!   chosen when it is compiled), whose run passed the same entry check.
//! - Every program compiled with a table saves all six callee-saved
//!   registers in its entry (`Emitter::prologue`), so the target's
//!   epilogue (reached by a trap) restores what the head's entry saved.
//! - Published targets are never freed before the table: a replaced entry
//!   stays in `published` (its code, direct table and trap tables), and
//!   every `Jit` compiled with the table holds an `Arc` of it, so an entry
//!   that generated code loaded stays valid for the whole run.
//! - The target's helper calls go to its direct entries for the table's
//!   data type `T`; a program with a helper that has none is not
//!   published (a trampoline would look the call up in the head's tables).
//!   The run's data is of type `T` whenever the count offset is set
//!   (`Jit::run_repeat` checks the `TypeId`), so the entries get the data
//!   they were made for.

use crate::{EntryCheck, ExecutableCode, Jit};
use bpfkit_isa::{Insn, Pc};
use bpfkit_runtime::TypedEntry;
use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What generated code reads of a published target (`#[repr(C)]`: the
/// tail-call sequence loads the fields at fixed offsets).
#[repr(C)]
pub(crate) struct TailEntry {
    /// Address of the target's instruction 0.
    pub(crate) code0: u64,
    /// The target's `Ctx::direct` for the table's data type.
    pub(crate) direct: u64,
    /// `Ctx::tail_prog` while the target runs: its index in `published`
    /// plus one.
    pub(crate) key: u64,
}

/// A published target, kept until the table drops.
pub(crate) struct TailTarget {
    entry: Box<TailEntry>,
    /// What `entry.direct` points at.
    _direct: Box<[u64]>,
    /// The code `entry.code0` points into.
    _code: Arc<ExecutableCode>,
    /// Slot pc of each instruction (traps of the target).
    pub(crate) pcs: Box<[Pc]>,
    /// As `Jit::trap_insns`.
    pub(crate) trap_insns: Box<[(u32, Insn)]>,
    /// Helper id per table index (a helper's trap names it).
    pub(crate) helper_ids: Box<[u32]>,
}

/// A context layout and the entries of the targets compiled for it.
struct Class {
    check: EntryCheck,
    /// Per program id: a published `TailEntry`'s address, or 0. Never
    /// reallocated (generated code holds its address).
    entries: Box<[AtomicU64]>,
}

#[derive(Default)]
struct Inner {
    classes: Vec<Class>,
    published: Vec<Arc<TailTarget>>,
}

/// The programs that code compiled with this table may enter by a tail
/// call (see the module docs), by program id.
pub struct TailTable {
    ids: u32,
    /// `fn(&mut T) -> &mut u32`, the run data's tail-call count.
    count: crate::memory::TypedSlot,
    data_type: TypeId,
    direct: DirectFn,
    /// The lowest CPU limit (`Jit::set_cpu`) of the targets ever published.
    cpu_limit: AtomicU32,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for TailTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailTable")
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

/// [`direct_entries`] for the table's data type.
type DirectFn = fn(&[Option<TypedEntry>]) -> Option<Box<[u64]>>;

/// The direct entries of a helper table for data type `T`, or `None` when
/// one helper has none.
fn direct_entries<T: Any>(entries: &[Option<TypedEntry>]) -> Option<Box<[u64]>> {
    entries
        .iter()
        .map(|e| Some(e.as_ref()?.raw::<T>()? as *const () as u64))
        .collect()
}

impl TailTable {
    /// A table for program ids below `ids`, for runs whose data is a `T`
    /// ([`Jit::run_repeat`]): `count` gives the run's tail-call count,
    /// which the registered `bpf_tail_call` helper counts too (the
    /// sequence and the helper share it, so a chain that mixes both stops
    /// at the same 33rd call).
    pub fn new<T: Any>(ids: u32, count: fn(&mut T) -> &mut u32) -> Arc<TailTable> {
        Arc::new(TailTable {
            ids,
            count: crate::memory::TypedSlot::new(count),
            data_type: TypeId::of::<T>(),
            direct: direct_entries::<T>,
            cpu_limit: AtomicU32::new(u32::MAX),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Number of program ids (the entries are indexed by id).
    pub fn ids(&self) -> u32 {
        self.ids
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Address of the entries of context layout `check` (made on first
    /// use), for code compiled with that layout.
    pub(crate) fn entries_for(&self, check: &EntryCheck) -> u64 {
        let mut inner = self.inner();
        Self::class(&mut inner, check, self.ids).entries.as_ptr() as u64
    }

    fn class<'i>(inner: &'i mut Inner, check: &EntryCheck, ids: u32) -> &'i Class {
        let k = match inner.classes.iter().position(|c| c.check == *check) {
            Some(k) => k,
            None => {
                let entries = (0..ids).map(|_| AtomicU64::new(0)).collect();
                inner.classes.push(Class {
                    check: *check,
                    entries,
                });
                inner.classes.len() - 1
            }
        };
        &inner.classes[k]
    }

    /// Makes `jit` the program that tail calls to `id` enter natively
    /// (replacing what `id` had). `false`, leaving `id` without an entry
    /// (its tail calls take the helper), when `jit` cannot be entered so:
    /// not compiled with this table (unchecked, no budget, no blinding), a
    /// `callx` or legacy packet loads, a helper without a direct entry for
    /// the table's data type, or `id` out of range.
    pub fn publish(&self, id: u32, jit: &Jit) -> bool {
        self.clear(id);
        let Some(check) = jit.unchecked else {
            return false;
        };
        let ours = jit
            .tail_table
            .as_deref()
            .is_some_and(|t| std::ptr::eq(t, self));
        if id >= self.ids || !ours || jit.has_callx || jit.uses_regions || jit.budget.is_some() {
            return false;
        }
        let frame = jit.frame();
        let Some(direct) = (self.direct)(&frame.typed_entries) else {
            return false;
        };
        let mut inner = self.inner();
        let key = inner.published.len() as u64 + 1;
        let target = Arc::new(TailTarget {
            entry: Box::new(TailEntry {
                // Instruction 0 is the first byte of the code (`lower`).
                code0: jit.code.addr(),
                direct: direct.as_ptr() as u64,
                key,
            }),
            _direct: direct,
            _code: jit.code.clone(),
            pcs: frame.pcs.clone().into_boxed_slice(),
            trap_insns: jit.trap_insns.clone().into_boxed_slice(),
            helper_ids: jit.table.iter().map(|(id, _)| *id).collect(),
        });
        let at = &*target.entry as *const TailEntry as u64;
        inner.published.push(target);
        self.cpu_limit.fetch_min(jit.cpu_limit, Ordering::Relaxed);
        // Release: the entry is complete before code can load its address.
        Self::class(&mut inner, &check, self.ids).entries[id as usize].store(at, Ordering::Release);
        true
    }

    /// Takes `id`'s entry away: its tail calls take the helper again.
    pub fn clear(&self, id: u32) {
        let inner = self.inner();
        for c in &inner.classes {
            if let Some(e) = c.entries.get(id as usize) {
                e.store(0, Ordering::Release);
            }
        }
    }

    /// Whether a tail call to `id` from code of `jit`'s context layout
    /// enters a published target.
    pub fn is_published(&self, id: u32, jit: &Jit) -> bool {
        let Some(check) = jit.unchecked else {
            return false;
        };
        let inner = self.inner();
        inner
            .classes
            .iter()
            .find(|c| c.check == check)
            .and_then(|c| c.entries.get(id as usize))
            .is_some_and(|e| e.load(Ordering::Acquire) != 0)
    }

    /// The target published with `key` (`Ctx::tail_prog`).
    pub(crate) fn target(&self, key: u64) -> Option<Arc<TailTarget>> {
        let inner = self.inner();
        inner.published.get((key as usize).wrapping_sub(1)).cloned()
    }

    /// The byte offset of the tail-call count in the run's data `data`,
    /// when native tail calls may happen in this run: `data` is the
    /// table's data type, the count lies inside it, and the run's CPU is
    /// below every target's limit.
    #[inline]
    pub(crate) fn count_offset<T: Any>(&self, data: &mut T, cpu: u64) -> Option<usize> {
        if self.data_type != TypeId::of::<T>()
            || cpu >= u64::from(self.cpu_limit.load(Ordering::Relaxed))
        {
            return None;
        }
        let count = *self.count.get::<fn(&mut T) -> &mut u32>()?;
        let base = data as *mut T as usize;
        let off = (count(data) as *mut u32 as usize).wrapping_sub(base);
        // Inside `data` (a `fn(&mut T) -> &mut u32` could also return a
        // count elsewhere): the code writes it through the data's pointer.
        (off.checked_add(4)? <= std::mem::size_of::<T>()).then_some(off)
    }
}
