//! Inline per-CPU array lookups and `bpf_get_smp_processor_id` (unchecked
//! mode): for every CPU below the map's CPUs, `bpf_map_lookup_elem` on a
//! per-CPU array that the resolver describes gives the same pointer as the
//! helper on that CPU (in range, at the boundary, huge keys, value sizes
//! that are not multiples of 8, strides that are no powers of two), with
//! and without constant blinding, and the helpers are then never called;
//! `Jit::set_cpu` refuses CPUs at or above the map's CPUs; checked mode,
//! the interpreter and resolvers that vouch for nothing keep the calls.

mod common;

use bpfkit_abi::{MapDef, MapType};
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Imm64, Insn, Pc, Program, Reg,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{ArrayMap, Helpers, Imm64Resolver, Memory, RegionKind, Trap};
use common::inline::{
    assert_blinding_hides, boundary_keys, bytes, inlined, kprobe_ctx, run_on, verify, Engine,
    ENGINES, LOOKUP,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The address `lddw` gives for map 0 (never dereferenced).
const MAP_ADDR: u64 = 0x7000_0000_1000;

/// A per-CPU array laid out as `bpfkit-maps` does: key `k`, CPU `c` at
/// `(k * cpus + c) * slot`, `slot` the value size rounded up to 8.
struct PerCpu {
    def: MapDef,
    cpus: u32,
    storage: Vec<u64>,
}

impl PerCpu {
    fn new(value_size: u32, max_entries: u32, cpus: u32) -> PerCpu {
        let slot = value_size.div_ceil(8) * 8;
        let def = MapDef::new(MapType::PercpuArray, 4, value_size, max_entries);
        let storage = vec![0u64; (slot / 8 * cpus * max_entries) as usize];
        PerCpu { def, cpus, storage }
    }

    fn layout(&self) -> ArrayMap {
        let slot = self.def.value_size.div_ceil(8) * 8;
        ArrayMap {
            base: self.storage.as_ptr() as u64,
            stride: slot * self.cpus,
            max_entries: self.def.max_entries,
            cpu_stride: slot,
            cpus: self.cpus,
        }
    }

    /// What the helper returns for `key` on `cpu`.
    fn expect(&self, key: u32, cpu: usize) -> u64 {
        let slot = self.def.value_size.div_ceil(8) as u64 * 8;
        if key < self.def.max_entries && cpu < self.cpus as usize {
            self.storage.as_ptr() as u64 + (key as u64 * self.cpus as u64 + cpu as u64) * slot
        } else {
            0
        }
    }
}

struct Resolver {
    map: ArrayMap,
    /// Whether it vouches for the layout and for helper 8.
    inline: bool,
}

impl Imm64Resolver for Resolver {
    fn resolve(&self, _pc: Pc, imm: &Imm64) -> Option<u64> {
        matches!(imm, Imm64::MapIdx(0)).then_some(MAP_ADDR)
    }

    fn array_map(&self, _pc: Pc, imm: &Imm64) -> Option<ArrayMap> {
        (self.inline && matches!(imm, Imm64::MapIdx(0))).then_some(self.map)
    }

    fn inline_cpu_id(&self) -> bool {
        self.inline
    }
}

/// `bpf_map_lookup_elem` (1) over `map` and `bpf_get_smp_processor_id`
/// (8), both on `cpu` and counting their calls.
fn helpers(map: ArrayMap, cpu: usize, calls: &Arc<AtomicUsize>) -> Helpers {
    let mut h = Helpers::new();
    let c = calls.clone();
    h.register(1, move |env, a| {
        c.fetch_add(1, Ordering::Relaxed);
        if a[0] != MAP_ADDR {
            return Ok(0);
        }
        let key = u32::from_le_bytes(env.guest().load::<4>(a[1])?);
        Ok(if key < map.max_entries && cpu < map.cpus as usize {
            map.base + key as u64 * map.stride as u64 + cpu as u64 * map.cpu_stride as u64
        } else {
            0
        })
    });
    let c = calls.clone();
    h.register(8, move |_env, _a| {
        c.fetch_add(1, Ordering::Relaxed);
        Ok(cpu as u64)
    });
    h
}

/// Assembles `text`, turning `lddw %r1, 0` into `lddw` of map 0.
fn prog(text: &str) -> Program {
    let mut insns = assemble(text, Syntax::Ubpf).unwrap();
    for insn in &mut insns {
        if let Insn::LoadImm64 {
            dst: Reg::R1,
            imm: imm @ Imm64::Value(0),
        } = insn
        {
            *imm = Imm64::MapIdx(0);
        }
    }
    Program::from_insns(insns).unwrap()
}

/// Runs `p` (a kprobe: `r1` = a `pt_regs` whose first u64 is `key` and
/// second `arg`) on `cpu`; the result and the number of helper calls.
fn run(
    p: &Program,
    map: &mut PerCpu,
    engine: Engine,
    cpu: usize,
    key: u64,
    arg: u64,
) -> (Result<u64, Trap>, usize) {
    let layout = map.layout();
    let calls = Arc::new(AtomicUsize::new(0));
    let h = helpers(layout, cpu, &calls);
    let resolver = Resolver {
        map: layout,
        inline: engine != Engine::UncheckedHelper,
    };
    let mut regs = kprobe_ctx(key, arg);
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    mem.add(RegionKind::MapValue, bytes(&mut map.storage));
    let defs = std::slice::from_ref(&map.def);
    let r = run_on(engine, p, defs, &resolver, &h, &mut mem, ctx, Some(cpu));
    (r, calls.load(Ordering::Relaxed))
}

#[test]
fn inline_and_helper_lookups_return_the_same_pointer_on_every_cpu() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(LOOKUP);
    // Value sizes giving CPU strides of 8, 16 (12 bytes), 24 and 104,
    // CPU counts giving key strides that are and are not powers of two.
    for (value_size, max_entries, cpus) in [
        (8u32, 4u32, 1u32),
        (8, 4, 2),
        (12, 5, 3),
        (24, 3, 4),
        (1, 100, 5),
        (100, 7, 2),
    ] {
        let mut map = PerCpu::new(value_size, max_entries, cpus);
        let keys = boundary_keys(max_entries);
        for cpu in 0..cpus as usize {
            for key in keys {
                let want = map.expect(key, cpu);
                // The upper half of the context word is not part of the key.
                let word = 0xdead_beef_0000_0000 | key as u64;
                for engine in ENGINES {
                    let (got, calls) = run(&p, &mut map, engine, cpu, word, 0);
                    let what = format!(
                        "value_size {value_size}, max {max_entries}, cpus {cpus}, cpu {cpu}, \
                         key {key:#x}, {engine:?}"
                    );
                    assert_eq!(got, Ok(want), "{what}");
                    assert_eq!(calls, !inlined(engine) as usize, "{what}");
                }
            }
        }
    }
}

#[test]
fn writes_land_in_the_run_cpus_slot() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // value[key].u32@8 += arg and value[key].u32@0 = the CPU + 1 (from
    // bpf_get_smp_processor_id), then the same key looked up again and the
    // u32 at 8 read back.
    let p = prog(
        "ldxw %r3, [%r1+0]\nldxdw %r6, [%r1+8]\nstxw [%r10-4], %r3\ncall 8\nmov %r7, %r0\n\
         add %r7, 1\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, 0\ncall 1\njeq %r0, 0, +11\n\
         stxw [%r0+0], %r7\nldxw %r3, [%r0+8]\nadd %r3, %r6\nstxw [%r0+8], %r3\nmov %r2, %r10\n\
         add %r2, -4\nlddw %r1, 0\ncall 1\njeq %r0, 0, +1\nldxw %r0, [%r0+8]\nexit",
    );
    for engine in ENGINES {
        // 12-byte values, 3 CPUs: slot 16, key stride 48.
        let mut map = PerCpu::new(12, 4, 3);
        for cpu in 0..3usize {
            for round in 1..=cpu as u64 + 1 {
                let (got, calls) = run(&p, &mut map, engine, cpu, 2, 5);
                assert_eq!(got, Ok(5 * round), "{engine:?}, cpu {cpu}");
                assert_eq!(calls, if inlined(engine) { 0 } else { 3 }, "{engine:?}");
            }
        }
        // Key 2, CPU c: bytes 96 + 16c hold c + 1 and, at + 8, 5 * (c + 1).
        let b = bytes(&mut map.storage);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        for c in 0..3 {
            let at = 96 + 16 * c;
            assert_eq!(
                (u32_at(at), u32_at(at + 8)),
                (c as u32 + 1, 5 * (c as u32 + 1)),
                "{engine:?}"
            );
        }
        let sum: u32 = b.iter().map(|&x| x as u32).sum();
        assert_eq!(
            sum,
            (1 + 2 + 3) + 5 * (1 + 2 + 3),
            "{engine:?}: nothing else"
        );
        // Out of range: NULL, nothing written.
        let (got, _) = run(&p, &mut map, engine, 1, 4, 5);
        assert_eq!(got, Ok(0), "{engine:?}");
    }
}

#[test]
fn get_smp_processor_id_is_the_set_cpu() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog("call 8\nexit");
    let mut map = PerCpu::new(8, 1, 1);
    for cpu in [0usize, 1, 7, 1000, u32::MAX as usize - 1] {
        for engine in ENGINES {
            let (got, calls) = run(&p, &mut map, engine, cpu, 0, 0);
            assert_eq!(got, Ok(cpu as u64), "{engine:?}");
            assert_eq!(calls, !inlined(engine) as usize, "{engine:?}, cpu {cpu}");
        }
    }
}

#[test]
fn set_cpu_refuses_cpus_without_a_value() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let map = PerCpu::new(12, 4, 3);
    let calls = Arc::new(AtomicUsize::new(0));
    let h = helpers(map.layout(), 0, &calls);
    let build = |text: &str, inline: bool| {
        let p = prog(text);
        let v = verify(&p, std::slice::from_ref(&map.def));
        let resolver = Resolver {
            map: map.layout(),
            inline,
        };
        Jit::builder()
            .resolver(&resolver)
            .build_verified(&v, &h)
            .unwrap()
    };
    let mut j = build(LOOKUP, true);
    assert_eq!(j.cpu(), 0);
    assert!(j.set_cpu(2));
    for cpu in [3usize, 4, u32::MAX as usize, usize::MAX] {
        assert!(!j.set_cpu(cpu), "cpu {cpu}");
        assert_eq!(j.cpu(), 2, "unchanged");
    }
    // Without a per-CPU layout (helper calls, or no map at all) any CPU
    // that fits the helper's u32 is accepted.
    for (text, inline) in [(LOOKUP, false), ("call 8\nexit", true)] {
        let mut j = build(text, inline);
        assert!(j.set_cpu(3) && j.set_cpu(1 << 20));
    }
}

#[test]
fn blinded_inline_code_hides_the_per_cpu_layout() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Distinctive 4-byte constants: max_entries, a key stride and a CPU
    // stride that are no powers of two.
    let mut map = PerCpu::new(0x1d8, 0x1a3, 3);
    let layout = map.layout();
    let p = prog(LOOKUP);
    let v = verify(&p, std::slice::from_ref(&map.def));
    let calls = Arc::new(AtomicUsize::new(0));
    let h = helpers(layout, 0, &calls);
    let resolver = Resolver {
        map: layout,
        inline: true,
    };
    let secrets = [
        layout.max_entries.to_le_bytes().to_vec(),
        layout.stride.to_le_bytes().to_vec(),
        layout.cpu_stride.to_le_bytes().to_vec(),
        layout.base.to_le_bytes()[..4].to_vec(),
    ];
    assert_blinding_hides(&v, &resolver, &h, &secrets);
    for cpu in 0..3 {
        for key in [0u32, 7, layout.max_entries - 1, layout.max_entries] {
            let want = map.expect(key, cpu);
            let got = run(&p, &mut map, Engine::UncheckedBlinded, cpu, key as u64, 0);
            assert_eq!(got, (Ok(want), 0), "cpu {cpu}, key {key}");
        }
    }
}
