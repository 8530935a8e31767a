//! Inline per-CPU array lookups and `bpf_get_smp_processor_id` through the
//! facade (the JIT's unchecked mode computes both from the run's CPU,
//! which `Object::run` gives it with `Jit::set_cpu`): on every CPU the
//! pointer is the one the maps crate hands out for that CPU, writes
//! through it land in that CPU's slot of the map (as a map dump shows
//! them), and helpers accept it (the per-CPU storage is a region of every
//! run's memory, `RunState::add_map_regions`), in single runs and
//! repeated batches; the interpreter, which calls the helpers, agrees. A
//! run on a CPU at or above the possible CPUs is refused on every engine.
//! Fixture: `tests/inline/percpu_lookup.c`.

mod common;

use bpfkit::runtime::TrapKind;
use bpfkit::{Engine, Loader, Object, BAD_CPU};

const FIXTURE: &[u8] = include_bytes!("inline/percpu_lookup.o");

/// Possible CPUs of the objects here (more than this machine may have).
const CPUS: usize = 3;

/// Runs `lookup` on `cpu` with the key `key` in its context, `repeat`
/// times.
fn run(obj: &mut Object, cpu: usize, key: u32, repeat: u32) -> bpfkit::RunOutcome {
    common::run_words(obj, &[key], cpu, repeat)
}

fn ok(obj: &mut Object, cpu: usize, key: u32, repeat: u32) -> u64 {
    let out = run(obj, cpu, key, repeat);
    assert_eq!(out.runs, repeat.max(1));
    out.result.expect("runs without a trap")
}

/// `struct val` of the fixture at the start of `bytes`: (a, b, c).
fn val(bytes: &[u8]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_ne_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    (w(0), w(1), w(2))
}

fn load(engine: Engine, blind: bool) -> Object {
    common::load(Loader::new().possible_cpus(CPUS), engine, blind, FIXTURE)
}

fn check_engine(engine: Engine, blind: bool) {
    let mut obj = load(engine, blind);
    let pcpu = obj.map("pcpu").unwrap().map.clone();
    let base = pcpu.percpu_array_storage().expect("a per-CPU array").addr();
    assert!(pcpu.array_storage().is_none());
    // (key * CPUS + cpu) * 16: what `Map::lookup_ptr` returns on `cpu`.
    let at = |key: u32, cpu: usize| base + 16 * (key as u64 * CPUS as u64 + cpu as u64);
    // In range (the boundary included), out of range, huge; key k is run
    // k + 1 times on CPU 1 and once on CPU 0 and 2.
    for cpu in 0..CPUS {
        for key in [0u32, 1, 2, 3, 4, 0x8000_0000, u32::MAX] {
            let runs = if cpu == 1 && key < 3 { key + 1 } else { 1 };
            let want = if key < 3 { at(key, cpu) } else { 0 };
            assert_eq!(
                ok(&mut obj, cpu, key, runs),
                want,
                "{engine:?}, blind {blind}, cpu {cpu}, key {key:#x}"
            );
        }
    }
    if engine == Engine::Jit {
        assert!(obj.runs_unchecked(0));
    }
    // The map as `bpfkit map dump` reads it: one 16-byte slot per CPU,
    // each with its own count and CPU mark.
    let copies = obj.map("copies").unwrap().map.clone();
    for key in 0..3u32 {
        let slots = pcpu.lookup(&key.to_ne_bytes()).unwrap();
        assert_eq!(slots.len(), 16 * CPUS);
        for cpu in 0..CPUS {
            let runs = if cpu == 1 { key + 1 } else { 1 };
            let v = val(&slots[16 * cpu..]);
            assert_eq!(
                v,
                (runs, 100 + cpu as u32, 0),
                "{engine:?}, blind {blind}, pcpu[{key}] cpu {cpu}"
            );
            // The helper read the value through the lookup's pointer.
            let c = copies
                .lookup(&(key * 16 + cpu as u32).to_ne_bytes())
                .unwrap();
            assert_eq!(val(&c), v, "{engine:?}, copies[{key}, {cpu}]");
        }
    }
    // CPUs beyond the possible ones: refused, nothing run, nothing written.
    for cpu in [CPUS, CPUS + 1, usize::MAX] {
        let out = run(&mut obj, cpu, 0, 5);
        assert_eq!(out.runs, 0);
        let trap = out.result.unwrap_err();
        assert_eq!(trap.kind, TrapKind::Unsupported { what: BAD_CPU });
        assert!(trap.to_string().contains("possible CPUs"), "{trap}");
    }
    let slots = pcpu.lookup(&0u32.to_ne_bytes()).unwrap();
    assert_eq!(val(&slots[..]).0, 1);
    // And the object still runs on a possible CPU afterwards.
    assert_eq!(ok(&mut obj, 2, 2, 1), at(2, 2));
}

#[test]
fn per_cpu_lookups_match_the_maps_on_every_cpu() {
    for (engine, blind) in common::engines() {
        check_engine(engine, blind);
    }
}

/// The plain-array fixture run on CPU 1 gets the same pointer (plain
/// arrays have one value for every CPU) and a CPU at the limit is refused
/// there too: the refusal does not depend on per-CPU maps.
#[test]
fn plain_arrays_ignore_the_cpu_and_share_the_refusal() {
    let engines: &[Engine] = if bpfkit_jit::is_supported() {
        &[Engine::Interp, Engine::Jit]
    } else {
        &[Engine::Interp]
    };
    for &engine in engines {
        let mut obj = Loader::new()
            .engine(engine)
            .possible_cpus(2)
            .load(include_bytes!("inline/array_lookup.o"))
            .unwrap();
        obj.check(0).unwrap();
        let base = obj.map("arr").unwrap().map.array_storage().unwrap().addr();
        assert_eq!(ok(&mut obj, 1, 3, 2), base + 48, "{engine:?}");
        let out = run(&mut obj, 2, 3, 1);
        assert_eq!(out.runs, 0, "{engine:?}");
        assert_eq!(
            out.result.unwrap_err().kind,
            TrapKind::Unsupported { what: BAD_CPU }
        );
    }
}
