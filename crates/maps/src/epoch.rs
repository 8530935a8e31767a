//! Run guards: how value pointers stay valid while a program runs.
//!
//! This is the only module of the crate with `unsafe` code.
//!
//! # The rule
//!
//! The kernel protects map values with RCU: a program runs inside an RCU
//! read-side section, and an element that is deleted or replaced meanwhile
//! is freed only after every such section that could have seen it has
//! ended. bpfkit does the same with epoch-based reclamation
//! (`crossbeam-epoch`):
//!
//! 1. An engine calls [`pin`] before a program run and keeps the
//!    [`RunGuard`] until the run (with all its tail calls) has finished. The
//!    guard is not `Send`: pin and unpin on the thread that runs the program.
//! 2. Program-side lookups ([`crate::Map::lookup_ptr`], ring buffer
//!    reservations, inner-map lookups) take `&'g RunGuard` and return values
//!    that borrow it: a [`crate::ValueRef<'g>`] and the raw pointer inside it
//!    stay valid for `'g`, even if another thread deletes or replaces the
//!    element in the meantime (the program then writes to the old, detached
//!    copy, exactly as in the kernel).
//! 3. Whoever unlinks an element from a map (delete, replace, LRU eviction,
//!    removing an inner map from a map-in-map) never frees it: it *retires*
//!    it with `retire`, which defers the drop until every guard that was
//!    pinned at that moment has been dropped.
//!
//! Arrays never free their storage before the map itself is dropped, and
//! the map outlives `'g` because lookups borrow it for `'g` as well.
//!
//! # What the unsafe code relies on
//!
//! Elements of maps that can free them (hashes, tries, inner maps) are held
//! in an `Rcu`: an `Arc` whose drop is always deferred with `retire`.
//! `Rcu::get` turns `&Rcu<T>` (a borrow that proves the element is
//! reachable *now*) plus `&'g RunGuard` (pinned *now*) into `&'g T`. That is
//! sound because the `Arc` held by the `Rcu` is released only by a deferred
//! function, and `crossbeam-epoch` runs a deferred function only after every
//! thread that was pinned when it was deferred has unpinned; other clones
//! of the `Arc` can only delay the free further. Value storage is
//! `[AtomicU64]`, so shared access from several threads through `&` is
//! always allowed.
//!
//! Engines access values through raw pointers ([`crate::ValueRef::as_ptr`])
//! with plain loads and stores, as the kernel's JIT does; two programs
//! writing the same bytes at once race exactly as they do in the kernel.
//! The crate's own accesses (control-side copies, helper updates) are
//! relaxed atomic word operations.

use std::mem::ManuallyDrop;
use std::sync::Arc;

/// A pinned epoch: hold one for the whole of a program run (see the module
/// documentation). Pins nest; pinning is cheap (a thread-local counter and
/// a fence).
pub struct RunGuard {
    _pin: crossbeam_epoch::Guard,
}

impl std::fmt::Debug for RunGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunGuard")
    }
}

/// Pins the current thread for a program run.
pub fn pin() -> RunGuard {
    RunGuard {
        _pin: crossbeam_epoch::pin(),
    }
}

/// Drops `value` once every run pinned now has finished.
pub(crate) fn retire<T: Send + 'static>(value: T) {
    let guard = crossbeam_epoch::pin();
    guard.defer(move || drop(value));
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
