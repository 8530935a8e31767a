//! The direct entry (`raw_entry`) on its own, called as generated code
//! calls it: what it returns and which hooks it calls, in which order, for
//! every way a body can end (returned, with or without a region change;
//! aborted; panicked; both a region change and an abort or a panic), and
//! whether its common path (returned, nothing changed) stays free of hooks.

use bpfkit_runtime::raw::{raw_entry, RawCall, RawRet, RawStop};
use bpfkit_runtime::{Guest, HelperAbort, HelperResult, Memory, RegionKind, TypedBody};

/// What the body does on its next call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Then {
    Return,
    AddThenReturn,
    Stop,
    AddThenStop,
    Panic,
    AddThenPanic,
}

struct Data {
    then: Then,
    calls: u64,
}

struct Body;
impl TypedBody<Data> for Body {
    fn call(g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
        d.calls += 1;
        if matches!(
            d.then,
            Then::AddThenReturn | Then::AddThenStop | Then::AddThenPanic
        ) {
            let buf: &'static mut [u8] = Box::leak(vec![7u8; 8].into_boxed_slice());
            g.memory_mut().add(RegionKind::MapValue, buf);
        }
        match d.then {
            Then::Return | Then::AddThenReturn => Ok(a.iter().sum()),
            Then::Stop | Then::AddThenStop => Err(HelperAbort::Stop { r0: 99 }),
            Then::Panic | Then::AddThenPanic => panic!("body panicked"),
        }
    }
}

/// What the hooks saw, in order.
#[derive(Default)]
struct Engine {
    log: Vec<String>,
    /// Panic in `on_stop` the next time it is called with an abort.
    panic_on_abort: bool,
}

unsafe fn on_regions(engine: *mut (), mem: &Memory<'_>) {
    // SAFETY: `engine` is the test's `Engine`, not otherwise used meanwhile.
    let e = unsafe { &mut *engine.cast::<Engine>() };
    e.log.push(format!("regions {}", mem.regions().len()));
}

unsafe fn on_stop(engine: *mut (), stop: RawStop) {
    // SAFETY: as in `on_regions`.
    let e = unsafe { &mut *engine.cast::<Engine>() };
    let what = match stop {
        Ok(Ok(r0)) => format!("returned {r0}"),
        Ok(Err(HelperAbort::Stop { r0 })) => format!("stop {r0}"),
        Ok(Err(other)) => format!("abort {other:?}"),
        Err(p) => format!("panic {:?}", p.downcast_ref::<&str>()),
    };
    e.log.push(what);
    if e.panic_on_abort && e.log.last().is_some_and(|l| l.starts_with("stop")) {
        e.panic_on_abort = false;
        panic!("hook panicked");
    }
}

struct Fixture {
    mem: Box<Memory<'static>>,
    stack: Vec<u8>,
    data: Box<Data>,
    engine: Box<Engine>,
    call: Box<RawCall<Data>>,
}

impl Fixture {
    fn new() -> Fixture {
        let mut mem = Box::new(Memory::new());
        let mut stack = vec![0u8; 64];
        let mut data = Box::new(Data {
            then: Then::Return,
            calls: 0,
        });
        let mut engine = Box::<Engine>::default();
        // SAFETY: the stack and the memory are boxed/heap-owned by the
        // fixture, which outlives every call, and are used only through
        // the entry meanwhile.
        let guest = unsafe { Guest::from_raw(stack.as_mut_ptr(), stack.len(), &mut *mem) };
        let call = Box::new(RawCall {
            guest,
            data: &mut *data,
            version: mem.version(),
            engine: (&mut *engine as *mut Engine).cast(),
            on_regions,
            on_stop,
        });
        Fixture {
            mem,
            stack,
            data,
            engine,
            call,
        }
    }

    fn call(&mut self, then: Then) -> RawRet {
        self.data.then = then;
        let call: *mut RawCall<Data> = &mut *self.call;
        // SAFETY: `call`'s pointers are the fixture's, live and lent to
        // this call alone.
        unsafe { raw_entry::<Data, Body>(1, call, 4, 5, 2, 3) }
    }

    fn log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.engine.log)
    }
}

#[test]
fn a_returning_body_calls_no_hook() {
    let mut f = Fixture::new();
    for _ in 0..3 {
        assert_eq!(f.call(Then::Return), RawRet { r0: 15, stop: 0 });
    }
    assert!(f.log().is_empty());
    assert_eq!(f.data.calls, 3);
    assert_eq!(f.stack.len(), 64);
}

#[test]
fn a_region_change_is_reported_once_and_remembered() {
    let mut f = Fixture::new();
    assert_eq!(f.call(Then::AddThenReturn), RawRet { r0: 15, stop: 0 });
    assert_eq!(f.log(), ["regions 1"]);
    assert_eq!(f.call.version, f.mem.version());
    // The next call changes nothing: no hook.
    assert_eq!(f.call(Then::Return), RawRet { r0: 15, stop: 0 });
    assert!(f.log().is_empty());
    assert_eq!(f.call(Then::AddThenReturn), RawRet { r0: 15, stop: 0 });
    assert_eq!(f.log(), ["regions 2"]);
}

#[test]
fn an_abort_or_a_panic_stops_and_regions_follow() {
    let mut f = Fixture::new();
    assert_eq!(f.call(Then::Stop), RawRet { r0: 0, stop: 1 });
    assert_eq!(f.log(), ["stop 99"]);
    assert_eq!(f.call(Then::Panic), RawRet { r0: 0, stop: 1 });
    assert_eq!(f.log(), [r#"panic Some("body panicked")"#]);
    // The stop is handed over first, then the regions it left.
    assert_eq!(f.call(Then::AddThenStop), RawRet { r0: 0, stop: 1 });
    assert_eq!(f.log(), ["stop 99", "regions 1"]);
    assert_eq!(f.call(Then::AddThenPanic), RawRet { r0: 0, stop: 1 });
    assert_eq!(f.log(), [r#"panic Some("body panicked")"#, "regions 2"]);
    assert_eq!(f.call.version, f.mem.version());
    // And the entry goes on as before.
    assert_eq!(f.call(Then::Return), RawRet { r0: 15, stop: 0 });
    assert!(f.log().is_empty());
}

#[test]
fn a_stop_hook_that_panics_on_an_abort_gets_the_panic_too() {
    let mut f = Fixture::new();
    f.engine.panic_on_abort = true;
    assert_eq!(f.call(Then::Stop), RawRet { r0: 0, stop: 1 });
    assert_eq!(f.log(), ["stop 99", r#"panic Some("hook panicked")"#]);
}
