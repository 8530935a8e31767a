//! Helper functions: the registry an embedder fills, and the environment a
//! helper runs in.
//!
//! A helper takes the five argument registers `r1`-`r5` and a
//! [`HelperEnv`] through which it reaches guest memory (with the same
//! checks as the program's own accesses) and the embedder's per-run data.
//! It returns the new `r0`, or a [`HelperAbort`]: stop the program with a
//! given `r0` (the conformance suite's `unwind`, `bpf_tail_call`-like
//! exits), a memory fault, or an error; engines turn the latter two into a
//! [`Trap`] at the call's pc with [`HelperAbort::into_outcome`].
//!
//! A helper registered with [`Helpers::register_typed`] is also a plain
//! function of guest memory and the embedder's per-run data of one type
//! ([`TypedHelper`]): an engine that runs with data of that type can call it
//! directly (no dynamic dispatch, no `HelperEnv`, no downcast of the data
//! per call); every other caller reaches it through the registry's
//! [`Helper`] object, which downcasts the data and calls the same function.

use crate::callback::Callback;
use crate::memory::Guest;
use crate::raw::{raw_entry, RawEntry, TypedBody};
use crate::trap::{MemFault, Trap, TrapKind};
use bpfkit_isa::{HelperId, Pc};
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Why a helper did not return normally.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HelperAbort {
    /// End the program now, as if it executed `exit` with this `r0`
    /// (at every call depth).
    Stop {
        /// The program's return value.
        r0: u64,
    },
    /// A guest memory access failed.
    Fault(MemFault),
    /// Any other failure.
    Failed(String),
}

impl From<MemFault> for HelperAbort {
    fn from(f: MemFault) -> HelperAbort {
        HelperAbort::Fault(f)
    }
}

impl HelperAbort {
    /// What an engine does with an abort from helper `id` called at `pc`:
    /// `Ok(r0)` ends the program successfully, `Err(trap)` with a trap.
    pub fn into_outcome(self, pc: Pc, id: HelperId) -> Result<u64, Trap> {
        match self {
            HelperAbort::Stop { r0 } => Ok(r0),
            HelperAbort::Fault(f) => Err(Trap::new(pc, f)),
            HelperAbort::Failed(message) => Err(Trap::new(pc, TrapKind::Helper { id, message })),
        }
    }
}

/// What a helper returns: the new `r0`, or an abort.
pub type HelperResult = Result<u64, HelperAbort>;

/// What a helper sees of the running program.
pub struct HelperEnv<'r, 'a> {
    guest: Guest<'r, 'a>,
    data: Option<&'r mut (dyn Any + 'static)>,
    pc: Pc,
    id: HelperId,
}

impl<'r, 'a> HelperEnv<'r, 'a> {
    /// Built by an engine for a call to helper `id` at `pc`; `data` is the
    /// embedder's per-run value, if any.
    pub fn new(
        guest: Guest<'r, 'a>,
        data: Option<&'r mut (dyn Any + 'static)>,
        pc: Pc,
        id: HelperId,
    ) -> HelperEnv<'r, 'a> {
        HelperEnv {
            guest,
            data,
            pc,
            id,
        }
    }

    /// Guest memory: stack and regions, with the program's own checks.
    pub fn guest(&mut self) -> &mut Guest<'r, 'a> {
        &mut self.guest
    }

    /// The embedder's per-run data, if it is a `T`.
    pub fn data_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.data.as_deref_mut()?.downcast_mut::<T>()
    }

    /// Guest memory and the embedder's per-run data (if it is a `T`) at
    /// once, for helpers that need both (e.g. to check that a value they
    /// hand out already lies in a region).
    pub fn split_mut<T: Any>(&mut self) -> (&mut Guest<'r, 'a>, Option<&mut T>) {
        let data = self.data.as_deref_mut().and_then(|d| d.downcast_mut::<T>());
        (&mut self.guest, data)
    }

    /// Slot index of the call instruction.
    pub fn pc(&self) -> Pc {
        self.pc
    }

    /// The helper id being called.
    pub fn id(&self) -> HelperId {
        self.id
    }
}

/// A helper function. Closures of the right shape implement it.
pub trait Helper: Send + Sync {
    /// Runs the helper with `r1`-`r5` in `args`.
    fn call(&self, env: &mut HelperEnv<'_, '_>, args: [u64; 5]) -> HelperResult;
}

impl<F> Helper for F
where
    F: Fn(&mut HelperEnv<'_, '_>, [u64; 5]) -> HelperResult + Send + Sync,
{
    fn call(&self, env: &mut HelperEnv<'_, '_>, args: [u64; 5]) -> HelperResult {
        self(env, args)
    }
}

/// A helper as a plain function of guest memory, the embedder's per-run
/// data of type `T` and `r1`-`r5` (see [`Helpers::register_typed`]).
pub type TypedHelper<T> = fn(&mut Guest<'_, '_>, &mut T, [u64; 5]) -> HelperResult;

/// The typed function of a helper registered with
/// [`Helpers::register_typed`], for engines that resolve it once (when
/// they prepare a program) and call it for a given data type with
/// [`TypedEntry::get`].
#[derive(Clone)]
pub struct TypedEntry {
    f: Arc<dyn Any + Send + Sync>,
    /// A [`RawEntry<T>`], for helpers registered with
    /// [`Helpers::register_body`].
    raw: Option<Arc<dyn Any + Send + Sync>>,
}

impl TypedEntry {
    /// The function, if it was registered for per-run data of type `T`.
    pub fn get<T: Any>(&self) -> Option<TypedHelper<T>> {
        self.f.downcast_ref::<TypedHelper<T>>().copied()
    }

    /// The direct entry ([`crate::raw`]), if the helper was registered
    /// with [`Helpers::register_body`] for per-run data of type `T`.
    pub fn raw<T: Any>(&self) -> Option<RawEntry<T>> {
        self.raw.as_ref()?.downcast_ref::<RawEntry<T>>().copied()
    }
}

impl fmt::Debug for TypedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypedEntry")
    }
}

/// The helpers an embedder makes available, by id. Engines copy what they
/// need when they prepare a program, so the registry can be dropped or
/// changed afterwards without affecting prepared programs.
///
/// ```
/// use bpfkit_runtime::{Helpers, HelperAbort};
/// let mut h = Helpers::new();
/// h.register(1, |_env, args| Ok(args[0] + args[1]));
/// h.register(5, |_env, args| match args[0] {
///     0 => Err(HelperAbort::Stop { r0: 0 }),
///     a => Ok(a),
/// });
/// assert!(h.get(1).is_some() && h.get(2).is_none());
/// ```
#[derive(Clone, Default)]
pub struct Helpers {
    by_id: BTreeMap<u32, Arc<dyn Helper>>,
    /// The plain functions of helpers registered with `register_typed`
    /// (replaced or removed with their entry in `by_id`).
    typed: BTreeMap<u32, TypedEntry>,
    /// Helpers that call back into the program (removed with their entry
    /// in `by_id`).
    callbacks: BTreeMap<u32, Callback>,
}

impl Helpers {
    /// An empty registry.
    pub fn new() -> Helpers {
        Helpers::default()
    }

    /// Registers (or replaces) helper `id` as a closure.
    pub fn register<F>(&mut self, id: u32, f: F) -> &mut Helpers
    where
        F: Fn(&mut HelperEnv<'_, '_>, [u64; 5]) -> HelperResult + Send + Sync + 'static,
    {
        self.by_id.insert(id, Arc::new(f));
        self.typed.remove(&id);
        self.callbacks.remove(&id);
        self
    }

    /// Registers (or replaces) helper `id` as a shared [`Helper`] object.
    pub fn register_shared(&mut self, id: u32, helper: Arc<dyn Helper>) -> &mut Helpers {
        self.by_id.insert(id, helper);
        self.typed.remove(&id);
        self.callbacks.remove(&id);
        self
    }

    /// Registers (or replaces) helper `id` as a plain function over per-run
    /// data of type `T`. Engines that run with a `T` may call `f` directly
    /// ([`Helpers::typed`]); everywhere else ([`Helpers::get`], other data)
    /// the helper is an ordinary [`Helper`] that finds its `T` with
    /// [`HelperEnv::split_mut`] and, when the run's data is not a `T`,
    /// fails with `missing` as its [`HelperAbort::Failed`] message.
    ///
    /// ```
    /// use bpfkit_runtime::{Guest, HelperEnv, HelperId, Helpers, Memory, Pc};
    /// fn count(_g: &mut Guest<'_, '_>, n: &mut u64, a: [u64; 5]) -> bpfkit_runtime::HelperResult {
    ///     *n += a[0];
    ///     Ok(*n)
    /// }
    /// let mut h = Helpers::new();
    /// h.register_typed::<u64>(1, count, "no counter");
    /// let f = h.typed::<u64>(1).unwrap();
    /// let (mut stack, mut mem, mut n) = ([0u8; 8], Memory::new(), 1u64);
    /// let mut g = Guest::new(&mut stack, &mut mem);
    /// assert_eq!(f(&mut g, &mut n, [2, 0, 0, 0, 0]), Ok(3));
    /// // The same function through the registry's `Helper` object.
    /// let mut env = HelperEnv::new(g.reborrow(), Some(&mut n), Pc(0), HelperId(1));
    /// assert_eq!(h.get(1).unwrap().call(&mut env, [4, 0, 0, 0, 0]), Ok(7));
    /// assert!(h.typed::<u32>(1).is_none());
    /// ```
    pub fn register_typed<T: Any>(
        &mut self,
        id: u32,
        f: TypedHelper<T>,
        missing: &'static str,
    ) -> &mut Helpers {
        let dynamic = move |env: &mut HelperEnv<'_, '_>, args: [u64; 5]| match env.split_mut::<T>()
        {
            (g, Some(data)) => f(g, data, args),
            (_, None) => Err(HelperAbort::Failed(missing.into())),
        };
        self.register_typed_with(id, f, dynamic)
    }

    /// [`Helpers::register_typed`] with the [`Helper`] object given:
    /// `dynamic` must do what `f` does when the run's data is a `T` (e.g.
    /// the same body, its data found with [`HelperEnv::split_mut`]). For
    /// registries whose other callers (an interpreter) should not pay for
    /// the call through `f`'s pointer that `register_typed`'s object makes.
    pub fn register_typed_with<T: Any, F>(
        &mut self,
        id: u32,
        f: TypedHelper<T>,
        dynamic: F,
    ) -> &mut Helpers
    where
        F: Fn(&mut HelperEnv<'_, '_>, [u64; 5]) -> HelperResult + Send + Sync + 'static,
    {
        self.by_id.insert(id, Arc::new(dynamic));
        self.callbacks.remove(&id);
        self.typed.insert(
            id,
            TypedEntry {
                f: Arc::new(f),
                raw: None,
            },
        );
        self
    }

    /// [`Helpers::register_typed_with`] for a body given as a type: the
    /// typed function is `B::call`, and engines that call helpers from
    /// generated code also get its direct entry ([`TypedEntry::raw`]), a
    /// function of its own with the body inlined (see [`crate::raw`]).
    /// `dynamic` must do what `B::call` does when the run's data is a `T`.
    pub fn register_body<T: Any, B: TypedBody<T>, F>(&mut self, id: u32, dynamic: F) -> &mut Helpers
    where
        F: Fn(&mut HelperEnv<'_, '_>, [u64; 5]) -> HelperResult + Send + Sync + 'static,
    {
        let f: TypedHelper<T> = B::call;
        let raw: RawEntry<T> = raw_entry::<T, B>;
        self.by_id.insert(id, Arc::new(dynamic));
        self.callbacks.remove(&id);
        self.typed.insert(
            id,
            TypedEntry {
                f: Arc::new(f),
                raw: Some(Arc::new(raw)),
            },
        );
        self
    }

    /// The plain function of helper `id`, if it was registered with
    /// [`Helpers::register_typed`] for data of type `T`.
    pub fn typed<T: Any>(&self, id: u32) -> Option<TypedHelper<T>> {
        self.typed.get(&id)?.get::<T>()
    }

    /// The typed entry of helper `id`, if it was registered with
    /// [`Helpers::register_typed`] (for any data type).
    pub fn typed_entry(&self, id: u32) -> Option<&TypedEntry> {
        self.typed.get(&id)
    }

    /// Registers (or replaces) helper `id` as one that calls back into the
    /// program ([`crate::callback`]): engines that prepare a `call` to it
    /// run `kind`'s loop themselves. Every other way of reaching it (its
    /// [`Helper`] object: `callx` by id, an engine without callbacks)
    /// fails with a message saying so.
    ///
    /// ```
    /// use bpfkit_runtime::{Callback, Helpers};
    /// let mut h = Helpers::new();
    /// h.register_callback(181, Callback::Loop);
    /// assert_eq!(h.callback(181), Some(Callback::Loop));
    /// h.register(181, |_e, _a| Ok(0));
    /// assert_eq!(h.callback(181), None);
    /// ```
    pub fn register_callback(&mut self, id: u32, kind: Callback) -> &mut Helpers {
        let refuse = move |_env: &mut HelperEnv<'_, '_>, _args: [u64; 5]| -> HelperResult {
            Err(HelperAbort::Failed(format!(
                "helper {id} calls back into the program; only a direct `call` of it can run"
            )))
        };
        self.by_id.insert(id, Arc::new(refuse));
        self.typed.remove(&id);
        self.callbacks.insert(id, kind);
        self
    }

    /// What helper `id` is, if it was registered with
    /// [`Helpers::register_callback`].
    pub fn callback(&self, id: u32) -> Option<Callback> {
        self.callbacks.get(&id).copied()
    }

    /// The helper with this id.
    pub fn get(&self, id: u32) -> Option<&Arc<dyn Helper>> {
        self.by_id.get(&id)
    }

    /// Registered helpers in id order.
    pub fn iter(&self) -> impl Iterator<Item = (HelperId, &Arc<dyn Helper>)> + '_ {
        self.by_id.iter().map(|(&id, h)| (HelperId(id), h))
    }

    /// Number of registered helpers.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl fmt::Debug for Helpers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_id.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Memory;

    #[test]
    fn helper_env_reaches_memory_and_data() {
        let mut h = Helpers::new();
        h.register(1, |env, args| {
            let [b] = env.guest().load::<1>(args[0])?;
            *env.data_mut::<u32>()
                .ok_or(HelperAbort::Failed("no data".into()))? += 1;
            Ok(b as u64)
        });
        let mut stack = [3u8; 8];
        let mut mem = Memory::new();
        let mut data = 10u32;
        let mut guest = Guest::new(&mut stack, &mut mem);
        let top = guest.stack_end();
        let helper = h.get(1).unwrap().clone();
        let mut env = HelperEnv::new(guest.reborrow(), Some(&mut data), Pc(3), HelperId(1));
        assert_eq!(helper.call(&mut env, [top - 1, 0, 0, 0, 0]), Ok(3));
        let err = helper.call(&mut env, [top, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(
            err.into_outcome(Pc(3), HelperId(1)).unwrap_err().kind,
            TrapKind::OutOfBounds {
                addr: top,
                size: 1,
                access: crate::Access::Read
            }
        );
        let (g, d) = env.split_mut::<u32>();
        assert_eq!(g.load::<1>(top - 1), Ok([3]));
        assert_eq!(d.copied(), Some(11));
        assert!(env.split_mut::<u64>().1.is_none());
        assert_eq!(data, 11);
    }

    fn add_first(g: &mut Guest<'_, '_>, n: &mut u64, a: [u64; 5]) -> HelperResult {
        let [b] = g.load::<1>(a[1])?;
        *n += a[0] + b as u64;
        Ok(*n)
    }

    #[test]
    fn typed_helpers_are_reachable_both_ways() {
        let mut h = Helpers::new();
        h.register_typed::<u64>(7, add_first, "no u64");
        let f = h.typed::<u64>(7).expect("typed for u64");
        assert!(h.typed::<u32>(7).is_none());
        assert!(h.typed_entry(7).is_some_and(|e| e.get::<u64>().is_some()));
        let mut stack = [5u8; 8];
        let mut mem = Memory::new();
        let mut guest = Guest::new(&mut stack, &mut mem);
        let top = guest.stack_end();
        let mut n = 1u64;
        assert_eq!(f(&mut guest, &mut n, [2, top - 1, 0, 0, 0]), Ok(8));
        // A fault in the function is the same abort either way.
        assert!(matches!(
            f(&mut guest, &mut n, [2, top, 0, 0, 0]),
            Err(HelperAbort::Fault(_))
        ));
        let helper = h.get(7).unwrap().clone();
        let mut env = HelperEnv::new(guest.reborrow(), Some(&mut n), Pc(0), HelperId(7));
        assert_eq!(helper.call(&mut env, [1, top - 1, 0, 0, 0]), Ok(14));
        // Data of another type: the registry's object fails with `missing`.
        let mut other = 0u32;
        let mut env = HelperEnv::new(guest.reborrow(), Some(&mut other), Pc(0), HelperId(7));
        assert_eq!(
            helper.call(&mut env, [1, top - 1, 0, 0, 0]),
            Err(HelperAbort::Failed("no u64".into()))
        );
        let mut env = HelperEnv::new(guest.reborrow(), None, Pc(0), HelperId(7));
        assert!(helper.call(&mut env, [0; 5]).is_err());
        // Replacing the helper with a closure drops its typed function.
        h.register(7, |_e, _a| Ok(0));
        assert!(h.typed::<u64>(7).is_none() && h.typed_entry(7).is_none());
        h.register_typed::<u64>(8, add_first, "no u64");
        h.register_shared(8, Arc::new(|_e: &mut HelperEnv<'_, '_>, _a| Ok(0)));
        assert!(h.typed::<u64>(8).is_none());
        // `register_typed_with`: the typed function for typed callers, the
        // given object for the others.
        h.register_typed_with::<u64, _>(9, add_first, |_e: &mut HelperEnv<'_, '_>, a| {
            Ok(a[0] * 100)
        });
        let f = h.typed::<u64>(9).expect("typed");
        assert_eq!(f(&mut guest, &mut n, [1, top - 1, 0, 0, 0]), Ok(20));
        let mut env = HelperEnv::new(guest.reborrow(), Some(&mut n), Pc(0), HelperId(9));
        assert_eq!(h.get(9).unwrap().call(&mut env, [3, 0, 0, 0, 0]), Ok(300));
    }
}
