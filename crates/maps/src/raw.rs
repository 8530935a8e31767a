//! The crate's only `unsafe` code, in three small pieces:
//!
//! - [`Rcu`]: an `Arc` held by a map whose release is always deferred
//!   through the epoch collector, so that [`Rcu::get`] can lend the element
//!   for the lifetime of a [`RunGuard`]. The argument is in
//!   [`crate::epoch`]: the `Arc` is released only by a deferred function,
//!   which `crossbeam-epoch` runs only after every thread pinned at the
//!   time of deferral has unpinned; a borrow of the `Rcu` proves the
//!   element is reachable *now*, and the guard was pinned before *now*.
//! - [`RcuCell`]: a pointer that readers load without a lock while a run
//!   guard is pinned (the kernel's `rcu_dereference`), and that writers
//!   replace with an atomic swap, the old value being destroyed through
//!   the epoch collector (the kernel's `kfree_rcu`). Hash buckets use it so
//!   that a program's lookup takes no lock and makes no atomic
//!   read-modify-write.
//! - [`zeroed_words`]: value storage from the allocator's zeroed memory, so
//!   that large arrays and ring buffers are zero pages until touched (as
//!   the kernel's are) instead of being written once at creation.
//!
//! Everything else touches map storage as `[AtomicU64]` through safe code.

use crate::epoch::{retire, RunGuard};
use crate::MapError;
use crossbeam_epoch::{Atomic, Owned};
use std::alloc::{alloc_zeroed, Layout};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `n` zeroed words, or `ENOMEM`.
pub(crate) fn zeroed_words(n: usize) -> Result<Box<[AtomicU64]>, MapError> {
    if n == 0 {
        return Ok(Box::new([]));
    }
    let layout = Layout::array::<AtomicU64>(n).map_err(|_| MapError::NoMemory)?;
    // SAFETY: `layout` has a non-zero size (n > 0, words are 8 bytes).
    let p = unsafe { alloc_zeroed(layout) }.cast::<AtomicU64>();
    if p.is_null() {
        return Err(MapError::NoMemory);
    }
    // SAFETY: `p` is a fresh allocation from the global allocator with the
    // layout of `[AtomicU64; n]`, which is what `Box<[AtomicU64]>` frees
    // with; all-zero bytes are a valid `AtomicU64` (0).
    Ok(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) })
}

/// An `Arc<T>` that a map holds and that programs may borrow for the length
/// of a run: dropping it (removing it from the map) defers the release of
/// the `Arc` until every [`RunGuard`] pinned at that moment is dropped.
pub(crate) struct Rcu<T: Send + Sync + 'static> {
    arc: ManuallyDrop<Arc<T>>,
}

impl<T: Send + Sync + 'static> Rcu<T> {
    /// Wraps a shared element.
    pub(crate) fn from_arc(arc: Arc<T>) -> Rcu<T> {
        Rcu {
            arc: ManuallyDrop::new(arc),
        }
    }

    /// The element for the rest of the run that `guard` protects.
    pub(crate) fn get<'g>(&self, _guard: &'g RunGuard) -> &'g T {
        let p: *const T = Arc::as_ptr(&self.arc);
        // SAFETY: `self` is alive now, so the `Arc` it holds keeps `*p`
        // alive now; `_guard` is pinned now. The `Arc` is released only by
        // the deferred function of `Drop` below, which crossbeam-epoch runs
        // after every guard pinned at the time of deferral (so `_guard`,
        // which lives for `'g`) has been dropped. Other `Arc` clones can only
        // keep `*p` alive longer. `T: Sync`, so sharing `&T` across threads
        // is allowed.
        unsafe { &*p }
    }
}

impl<T: Send + Sync + 'static> std::ops::Deref for Rcu<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.arc
    }
}

impl<T: Send + Sync + 'static> Drop for Rcu<T> {
    fn drop(&mut self) {
        // SAFETY: `self.arc` is never used again: this is `drop`, and no
        // other code takes it out of the `ManuallyDrop`.
        let arc = unsafe { ManuallyDrop::take(&mut self.arc) };
        retire(arc);
    }
}

/// An optional `T` that threads read without locking, for the length of a
/// [`RunGuard`], while writers replace it as a whole: the value is never
/// changed in place (except through its own atomics), a new one is
/// published instead and the old one destroyed once no run that could have
/// loaded it is left.
pub(crate) struct RcuCell<T: Send + Sync + 'static> {
    ptr: Atomic<T>,
}

impl<T: Send + Sync + 'static> RcuCell<T> {
    /// An empty cell.
    pub(crate) fn empty() -> RcuCell<T> {
        RcuCell {
            ptr: Atomic::null(),
        }
    }

    /// A cell holding `value`.
    pub(crate) fn new(value: T) -> RcuCell<T> {
        RcuCell {
            ptr: Atomic::new(value),
        }
    }

    /// The current value, for the rest of the run that `guard` protects.
    #[inline]
    pub(crate) fn load<'g>(&self, guard: &'g RunGuard) -> Option<&'g T> {
        let p = self.ptr.load(Ordering::Acquire, guard.epoch());
        // SAFETY: `p` is null or was published by `replace` (an `Owned`,
        // so a valid, initialised `T`) and loaded while `guard` is pinned.
        // A value is destroyed only after `replace` or `drop` has swapped it
        // out of the cell and handed it to `defer_destroy`, which
        // crossbeam-epoch runs only once every guard pinned at that moment
        // (`guard`, which lives for `'g`, among them) has been dropped. No
        // `&mut T` is ever made from the pointer. `T: Sync`, so `&T` may
        // be shared by threads.
        unsafe { p.as_ref() }
    }

    /// Publishes `value` (or empties the cell) and retires the old value.
    /// Safe with concurrent readers and writers (the swap gives the old
    /// value to exactly one writer); callers that read, change and write
    /// back must still serialise among themselves.
    pub(crate) fn replace(&self, value: Option<T>) {
        let guard = crossbeam_epoch::pin();
        let new = match value {
            Some(v) => Owned::new(v).into_shared(&guard),
            None => crossbeam_epoch::Shared::null(),
        };
        let old = self.ptr.swap(new, Ordering::AcqRel, &guard);
        if !old.is_null() {
            // SAFETY: the swap made `old` unreachable from the cell, and no
            // other cell holds it (each value is published once), so no
            // thread can load it any more; threads that loaded it earlier
            // were pinned, and `defer_destroy` waits for them.
            unsafe { guard.defer_destroy(old) };
        }
    }
}

impl<T: Send + Sync + 'static> Drop for RcuCell<T> {
    fn drop(&mut self) {
        // SAFETY: `unprotected` lends a guard that protects nothing; it is
        // only used to read the pointer (never dereferenced here), which
        // `&mut self` keeps from changing.
        let empty = self
            .ptr
            .load(Ordering::Relaxed, unsafe { crossbeam_epoch::unprotected() })
            .is_null();
        // Deferred as any replaced value: a reference obtained through the
        // cell may outlive the cell itself until its run ends. Empty cells
        // (most buckets of a sparse table) cost no pin.
        if !empty {
            self.replace(None);
        }
    }
}
