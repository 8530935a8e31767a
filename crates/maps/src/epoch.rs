//! Run guards: how value pointers stay valid while a program runs.
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
//! Two more duties of an engine: a run that ends early (a trap) must
//! discard the ring buffer records it reserved and did not submit
//! ([`crate::Map::ringbuf_discard`]), or the consumer stalls at them, as
//! the kernel's verifier guarantees this cannot happen there; and a guard
//! should be dropped between runs (or batches of runs): memory retired
//! while any guard is held is reclaimed only after it is dropped.
//!
//! # What the unsafe code relies on (see the private `raw` module)
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

impl RunGuard {
    /// The pinned epoch, for the crate's lock-free reads (`raw::RcuCell`).
    pub(crate) fn epoch(&self) -> &crossbeam_epoch::Guard {
        &self._pin
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

/// Asks the epoch collector to run what it may: pushes this thread's
/// deferred drops to the global queue and collects those whose runs have
/// all ended (for writers that wait for retired storage to come back).
pub(crate) fn reclaim() {
    crossbeam_epoch::pin().flush();
}
