//! The crate's only `unsafe` code, in two small pieces:
//!
//! - [`Rcu`]: an `Arc` held by a map whose release is always deferred
//!   through the epoch collector, so that [`Rcu::get`] can lend the element
//!   for the lifetime of a [`RunGuard`]. The argument is in
//!   [`crate::epoch`]: the `Arc` is released only by a deferred function,
//!   which `crossbeam-epoch` runs only after every thread pinned at the
//!   time of deferral has unpinned; a borrow of the `Rcu` proves the
//!   element is reachable *now*, and the guard was pinned before *now*.
//! - [`zeroed_words`]: value storage from the allocator's zeroed memory, so
//!   that large arrays and ring buffers are zero pages until touched (as
//!   the kernel's are) instead of being written once at creation.
//!
//! Everything else touches map storage as `[AtomicU64]` through safe code.

use crate::epoch::{retire, RunGuard};
use crate::MapError;
use std::alloc::{alloc_zeroed, Layout};
use std::mem::ManuallyDrop;
use std::sync::atomic::AtomicU64;
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
    /// Wraps a fresh element.
    pub(crate) fn new(value: T) -> Rcu<T> {
        Rcu::from_arc(Arc::new(value))
    }

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

    /// The shared `Arc` (to clone it, or to compare identities).
    pub(crate) fn arc(&self) -> &Arc<T> {
        &self.arc
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
