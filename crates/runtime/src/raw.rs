//! Direct helper entries for generated code: a helper registered as a
//! [`TypedBody`] also gets a plain `extern "C"` function of its own
//! ([`RawEntry`]), with the body inlined into it, that a JIT can call from
//! its code with the arguments still in registers. The function lends the
//! body the [`Guest`] of a [`RawCall`] that the engine fills once per run,
//! catches a panic of the body (so that it never unwinds into generated
//! code) and tells the engine through the call's hooks when the regions
//! changed or the helper did not return `r0`.
//!
//! This replaces, per call, a generic trampoline with a table lookup, a
//! `Guest` built for the call, an indirect call of the typed function and
//! the arguments and result passed through memory: `bpfkit-jit`'s stub
//! calls the entry straight from a per-run table.

use crate::helper::HelperResult;
use crate::memory::{Guest, Memory};
use std::any::Any;

/// A helper body as a type (one zero-sized type per helper), so that an
/// engine's direct entry ([`raw_entry`]) is a separate function per helper
/// with the body inlined. Register it with [`crate::Helpers::register_body`].
pub trait TypedBody<T>: 'static {
    /// Runs the helper with the run's guest memory, its data and `r1`-`r5`.
    fn call(guest: &mut Guest<'_, '_>, data: &mut T, args: [u64; 5]) -> HelperResult;
}

/// How a helper call that did not return `r0` ended: its abort, or the
/// panic payload of its body.
pub type RawStop = std::thread::Result<HelperResult>;

/// What a direct entry needs of the run, filled by the engine before it
/// enters its code and valid (with everything it points to) while the code
/// runs. `repr(C)`, and the same layout for every `T` (only pointers), so
/// that an engine may keep it at a fixed place.
#[repr(C)]
#[derive(Debug)]
pub struct RawCall<T> {
    /// The run's stack and memory (built once per run with
    /// [`Guest::from_raw`]), lent to each call's helper.
    pub guest: Guest<'static, 'static>,
    /// The run's data.
    pub data: *mut T,
    /// The [`Memory::version`] of `guest`'s memory that the engine knows
    /// the regions as: a call after which the memory has another one
    /// calls `on_regions`.
    pub version: u64,
    /// Passed back to the hooks.
    pub engine: *mut (),
    /// Called after a call that left `mem`'s region list (its
    /// [`Memory::version`]) other than `version`, with that memory (the
    /// entry then sets `version` to the memory's).
    pub on_regions: unsafe fn(engine: *mut (), mem: &Memory<'_>),
    /// Called after a call that aborted or panicked, before the entry
    /// returns `stop` 1; the engine records how the program ends. For an
    /// abort it runs inside the entry's `catch_unwind`: should it panic,
    /// it is called again with that panic.
    pub on_stop: unsafe fn(engine: *mut (), stop: RawStop),
}

// SAFETY: a `RawCall` only carries pointers; they are dereferenced by
// `raw_entry` alone, whose contract makes the engine guarantee that they are
// valid and exclusively lent to the call. Between runs an engine may keep a
// `RawCall` with stale pointers (never dereferenced) and move it to another
// thread with the engine.
unsafe impl<T: Send> Send for RawCall<T> {}
// SAFETY: a shared `&RawCall` gives access to nothing but the pointer
// values (no interior mutability).
unsafe impl<T: Sync> Sync for RawCall<T> {}

/// What a direct entry returns (in `rax:rdx`, System V): the new `r0`, and
/// `stop` 0 to go on or 1 when the program is over (the `on_stop` hook was
/// called).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRet {
    /// New `r0`.
    pub r0: u64,
    /// 0: continue; 1: the program is over.
    pub stop: u64,
}

/// A direct entry: `(r1, call, r4, r5, r2, r3)`, where `call` points at a
/// [`RawCall<T>`] whose pointers are valid and exclusively lent to the call
/// (see [`raw_entry`]). The order puts `r1`-`r3` in the System V argument
/// registers (rdi, r8, r9) that `bpfkit-jit` keeps them in, so its stub
/// moves only `r4`, `r5` and `call`.
pub type RawEntry<T> = unsafe extern "C" fn(u64, *mut RawCall<T>, u64, u64, u64, u64) -> RawRet;

/// The direct entry of body `B` for data `T` (see the module docs).
///
/// # Safety
/// `call` must point at a `RawCall<T>` that is valid for the call and not
/// otherwise used meanwhile, except by its hooks (which get `engine`, and
/// may use the memory holding the `RawCall`: no reference into it is alive
/// when they run); its `guest` must satisfy [`Guest::from_raw`]'s contract
/// and `data` point at a live `T`, neither otherwise referenced during the
/// call.
pub unsafe extern "C" fn raw_entry<T: Any, B: TypedBody<T>>(
    a1: u64,
    call: *mut RawCall<T>,
    a4: u64,
    a5: u64,
    a2: u64,
    a3: u64,
) -> RawRet {
    // SAFETY: the caller's contract: `call` is valid. The guest and the
    // data are reached through pointers, so that no reference into the
    // `RawCall` outlives the body's call (the hooks may use the memory
    // around it); the hooks are read only when needed (off the common path).
    let (guest, data) = unsafe { (std::ptr::addr_of_mut!((*call).guest), (*call).data) };
    // A panic must not unwind into the engine's generated code: caught
    // here and handed to the engine (`on_stop`), which resumes it once its
    // code has returned. The closure takes its captures by value and
    // returns the entry's own two-word answer, not the body's
    // `HelperResult` (four words, with a `String` to drop): an abort is
    // handed to the engine inside it, out of line, so that after
    // `catch_unwind` the common path only has `r0` and `stop` 0 in
    // registers, with nothing to test but the version. (A result in the
    // frame cost a load, three tests of its tag and moves around them on
    // every call.)
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        // SAFETY: the guest and the data are live and lent to this call
        // alone (the caller's contract); the references end with the body.
        let (guest, data) = unsafe { (&mut *guest, &mut *data) };
        match B::call(guest, data, [a1, a2, a3, a4, a5]) {
            Ok(r0) => RawRet { r0, stop: 0 },
            // SAFETY: `call` is valid (the caller's contract) and the
            // body's references are gone. Should the hook panic, the
            // panic is caught here as the body's would be.
            Err(abort) => unsafe { stop(call, Ok(Err(abort))) },
        }
    }));
    let ret = match result {
        Ok(ret) => ret,
        // SAFETY: as above.
        Err(payload) => unsafe { stop(call, Err(payload)) },
    };
    // The engine knows the regions as of `RawCall::version`: one compare
    // after the call (no stamp kept across it) tells whether they changed.
    // SAFETY: as above, and the memory is live (read through its own
    // pointer).
    if unsafe { (*(*call).guest.mem).version() != (*call).version } {
        // Passed through, so that this is a tail call: nothing is kept
        // across it, and the common path saves no register for it.
        // SAFETY: as above.
        return unsafe { regions_changed(call, ret.r0, ret.stop) };
    }
    ret
}

/// Tells the engine that a call changed the regions, out of line.
///
/// # Safety
/// `call` as in [`raw_entry`], with no reference into it alive.
/// `extern "C"`, as the entry: a hook's panic ends the process here
/// either way, and a callee that cannot unwind needs no landing pad in
/// the entry (which would keep the body's result in its frame).
#[cold]
#[inline(never)]
unsafe extern "C" fn regions_changed<T>(call: *mut RawCall<T>, r0: u64, stop: u64) -> RawRet {
    // SAFETY: the caller's contract; the fields are copied out before the
    // hook runs, and the memory is live (read through its own pointer).
    unsafe {
        let (engine, hook, mem) = ((*call).engine, (*call).on_regions, (*call).guest.mem);
        hook(engine, &*mem);
        (*call).version = (*mem).version();
    }
    RawRet { r0, stop }
}

/// The rare end of [`raw_entry`], out of line: hands the engine how the
/// call ended (the body's abort or its panic).
///
/// # Safety
/// `call` as in [`raw_entry`], with no reference into it alive.
#[cold]
#[inline(never)]
unsafe fn stop<T>(call: *mut RawCall<T>, result: RawStop) -> RawRet {
    // SAFETY: the caller's contract; the fields are copied out before the
    // hook (the engine's, set with this `engine`) runs.
    unsafe {
        let (engine, hook) = ((*call).engine, (*call).on_stop);
        hook(engine, result);
    }
    RawRet { r0: 0, stop: 1 }
}
