//! What `inline.rs` and `inline_percpu.rs` share: the engines they compare,
//! the kprobe context, the run on one engine, the storage as bytes and the
//! blinding check.

use bpfkit_abi::{MapDef, ProgType};
use bpfkit_interp::Interpreter;
use bpfkit_isa::Program;
use bpfkit_jit::{Jit, VerifiedProgram};
use bpfkit_runtime::{Helpers, Imm64Resolver, Memory, Trap};
use bpfkit_verifier::{Options, Verdict};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Engine {
    Interp,
    Checked,
    /// Unchecked, the resolver describing no layout: helper calls.
    UncheckedHelper,
    Unchecked,
    UncheckedBlinded,
}

pub const ENGINES: [Engine; 5] = [
    Engine::Interp,
    Engine::Checked,
    Engine::UncheckedHelper,
    Engine::Unchecked,
    Engine::UncheckedBlinded,
];

/// Whether `e` inlines what the resolver describes (no helper calls).
pub fn inlined(e: Engine) -> bool {
    matches!(e, Engine::Unchecked | Engine::UncheckedBlinded)
}

/// The key from the context, on the stack; returns the lookup's pointer.
pub const LOOKUP: &str = "ldxw %r3, [%r1+0]\nstxw [%r10-4], %r3\nmov %r2, %r10\nadd %r2, -4\n\
                          lddw %r1, 0\ncall 1\nexit";

/// Keys in range, at the boundary of `max_entries` and huge (with the
/// sign bit, and all ones).
pub fn boundary_keys(max_entries: u32) -> [u32; 8] {
    [
        0,
        1,
        max_entries - 1,
        max_entries,
        max_entries + 1,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
    ]
}

/// A kprobe's `pt_regs` whose first u64 is `key` and second `arg`.
pub fn kprobe_ctx(key: u64, arg: u64) -> [u8; 168] {
    let mut regs = [0u8; 168];
    regs[..8].copy_from_slice(&key.to_le_bytes());
    regs[8..16].copy_from_slice(&arg.to_le_bytes());
    regs
}

/// `p` verified as a kprobe over `defs`; it must be accepted.
pub fn verify(p: &Program, defs: &[MapDef]) -> VerifiedProgram {
    let (report, v) = VerifiedProgram::verify(p, ProgType::Kprobe, defs, &Options::default());
    assert_eq!(report.verdict, Verdict::Accepted, "{:?}", report.error);
    v.expect("accepted")
}

/// Runs `p` on `engine` with context `ctx`; with `cpu`, the JITs run on
/// that CPU (which they must accept) and the unchecked ones report it.
#[allow(clippy::too_many_arguments)]
pub fn run_on(
    engine: Engine,
    p: &Program,
    defs: &[MapDef],
    resolver: &dyn Imm64Resolver,
    h: &Helpers,
    mem: &mut Memory<'_>,
    ctx: u64,
    cpu: Option<usize>,
) -> Result<u64, Trap> {
    match engine {
        Engine::Interp => Interpreter::builder()
            .resolver(resolver)
            .build(p, h)
            .unwrap()
            .run(mem, &[ctx]),
        Engine::Checked => {
            let mut j = Jit::builder().resolver(resolver).build(p, h).unwrap();
            if let Some(cpu) = cpu {
                // Checked code reads no CPU: any is accepted.
                assert!(j.set_cpu(cpu));
            }
            j.run(mem, &[ctx])
        }
        Engine::Unchecked | Engine::UncheckedHelper | Engine::UncheckedBlinded => {
            let mut j = Jit::builder()
                .resolver(resolver)
                .blind_constants(engine == Engine::UncheckedBlinded)
                .build_verified(&verify(p, defs), h)
                .unwrap();
            assert!(j.is_unchecked());
            if let Some(cpu) = cpu {
                assert!(j.set_cpu(cpu), "cpu {cpu}");
                assert_eq!(j.cpu(), cpu);
            }
            j.run(mem, &[ctx])
        }
    }
}

/// The storage as bytes (a `Vec<u64>` keeps values 8-aligned, as the maps
/// crate does).
pub fn bytes(words: &mut [u64]) -> &mut [u8] {
    let len = words.len() * 8;
    // SAFETY: u64 has no padding and any byte pattern is a valid u64; the
    // slice covers exactly the words' memory and borrows them mutably.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len)
    }
}

/// Asserts that the unchecked code of `v` holds every one of `secrets`
/// unblinded and none of them blinded.
pub fn assert_blinding_hides(
    v: &VerifiedProgram,
    resolver: &dyn Imm64Resolver,
    h: &Helpers,
    secrets: &[Vec<u8>],
) {
    let code = |blind: bool| {
        let j = Jit::builder()
            .resolver(resolver)
            .blind_constants(blind)
            .build_verified(v, h)
            .unwrap();
        j.code().bytes().to_vec()
    };
    let has = |code: &[u8], bytes: &[u8]| code.windows(bytes.len()).any(|w| w == bytes);
    let plain = code(false);
    for s in secrets {
        assert!(has(&plain, s), "the unblinded code has {s:02x?}");
    }
    let blinded = code(true);
    for s in secrets {
        assert!(!has(&blinded, s), "the blinded code hides {s:02x?}");
    }
}
