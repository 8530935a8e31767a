//! Unchecked mode (programs the verifier accepted) and constant blinding:
//! both agree with checked mode and the interpreter; unchecked mode checks
//! the context it is given before entering; checked mode still traps.

use bpfkit_abi::ProgType;
use bpfkit_interp::Interpreter;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Pc, Program,
};
use bpfkit_jit::{Jit, VerifiedProgram};
use bpfkit_runtime::{Access, Helpers, Memory, RegionKind, Trap, TrapKind};
use bpfkit_verifier::{Options, Verdict};

#[allow(dead_code)] // the rest is for other test targets
mod common;
use common::xdp::{low_packet, xdp_md};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

fn verified(p: &Program, t: ProgType) -> VerifiedProgram {
    let (report, v) = VerifiedProgram::verify(p, t, &[], &Options::default());
    assert_eq!(report.verdict, Verdict::Accepted, "{:?}", report.error);
    v.expect("accepted")
}

/// A kprobe context (`struct pt_regs`, 168 readable bytes) with known
/// contents.
fn pt_regs() -> Vec<u8> {
    (0..168u32).map(|i| (i * 7 + 3) as u8).collect()
}

#[derive(Clone, Copy, Debug)]
enum Engine {
    Interp,
    Checked,
    Unchecked,
    Blinded,
    UncheckedBlinded,
}

fn run(p: &Program, t: ProgType, engine: Engine, ctx: &[u8]) -> Result<u64, Trap> {
    let h = Helpers::new();
    let mut ctx = ctx.to_vec();
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Context, &mut ctx);
    let args = [addr];
    match engine {
        Engine::Interp => Interpreter::new(p, &h).unwrap().run(&mut mem, &args),
        Engine::Checked => Jit::new(p, &h).unwrap().run(&mut mem, &args),
        Engine::Blinded => Jit::builder()
            .blind_constants(true)
            .build(p, &h)
            .unwrap()
            .run(&mut mem, &args),
        Engine::Unchecked => {
            let j = Jit::compile_verified(&verified(p, t), &h).unwrap();
            assert!(j.is_unchecked());
            let mut j = j;
            j.run(&mut mem, &args)
        }
        Engine::UncheckedBlinded => {
            let mut j = Jit::builder()
                .blind_constants(true)
                .build_verified(&verified(p, t), &h)
                .unwrap();
            assert!(j.is_unchecked() && j.is_blinded());
            j.run(&mut mem, &args)
        }
    }
}

/// Programs the verifier accepts as kprobes: context reads, stack spills
/// and fills at constant and bounded variable offsets, atomics on the
/// stack, bpf-to-bpf calls with pointers to the caller's stack, division
/// and shifts by registers (RFC 9669 semantics for 0 and wide counts).
const PROGRAMS: &[&str] = &[
    "ldxdw %r0, [%r1+160]\nldxw %r2, [%r1+4]\nadd %r0, %r2\nexit",
    "ldxdw %r2, [%r1+8]\nstxdw [%r10-8], %r2\nldxdw %r3, [%r1+16]\nstxdw [%r10-16], %r3\n\
     ldxb %r0, [%r10-3]\nldxh %r4, [%r10-14]\nmul %r0, %r4\nexit",
    // Variable offset into the stack, bounded by a mask.
    "ldxdw %r2, [%r1+0]\nstdw [%r10-32], 0\nstdw [%r10-24], 0\nstdw [%r10-16], 0\nstdw [%r10-8], 0\n\
     and %r2, 24\nmov %r3, %r10\nadd %r3, -32\nadd %r3, %r2\nmov %r4, 0x1234567\nstxdw [%r3+0], %r4\n\
     ldxdw %r0, [%r10-32]\nldxdw %r5, [%r10-8]\nadd %r0, %r5\nexit",
    // Atomics on the stack.
    "stdw [%r10-8], 5\nmov %r2, 7\nlock add [%r10-8], %r2\nmov %r3, 3\nlock fetch add [%r10-8], %r3\n\
     mov %r0, 12\nmov %r4, 100\nlock cmpxchg [%r10-8], %r4\nldxdw %r5, [%r10-8]\nadd %r0, %r5\nadd %r0, %r3\nexit",
    // A callee writing through a pointer to the caller's frame.
    "mov %r6, %r1\nstdw [%r10-8], 1\nmov %r1, %r10\nadd %r1, -8\nldxdw %r2, [%r6+24]\ncall local f\n\
     ldxdw %r0, [%r10-8]\nexit\nf:\nldxdw %r3, [%r1+0]\nadd %r3, %r2\nstxdw [%r1+0], %r3\nmov %r0, 0\nexit",
    // Nested calls: each frame 512 bytes below its caller's.
    "stdw [%r10-8], 11\ncall local g\nldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\n\
     g:\nstdw [%r10-8], 22\ncall local h\nldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\n\
     h:\nstdw [%r10-8], 33\nmov %r2, %r10\nadd %r2, 504\nldxdw %r0, [%r10-8]\nexit",
    // Unchecked calls save only what the callee changes: f writes r6 and
    // r8 and never names r10 (no frame of its own), g names r10 and
    // writes r7 and r9 (the latter through a fetching atomic); the
    // caller's r6-r9 and its stack slot must survive both.
    "mov %r6, 1\nmov %r7, 2\nmov %r8, 3\nmov %r9, 4\nstdw [%r10-8], 100\ncall local f\n\
     add %r0, %r6\nadd %r0, %r7\nadd %r0, %r8\nadd %r0, %r9\nldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\n\
     f:\nmov %r6, 50\nmov %r8, 60\ncall local g\nadd %r0, %r6\nadd %r0, %r8\nexit\n\
     g:\nstdw [%r10-8], 7\nmov %r7, 1000\nmov %r9, 5\nlock fetch add [%r10-8], %r9\n\
     ldxdw %r0, [%r10-8]\nadd %r0, %r9\nadd %r0, %r7\nexit",
    // A leaf without r10 between two frames that use the same slot.
    "stdw [%r10-16], 9\ncall local f\nldxdw %r1, [%r10-16]\nmul %r0, %r1\nexit\n\
     f:\nmov %r7, 3\ncall local g\nadd %r0, %r7\nexit\n\
     g:\nstdw [%r10-16], 4\nldxdw %r0, [%r10-16]\nexit",
    // Division and modulo by a register that may be 0, wide shifts.
    "ldxb %r2, [%r1+1]\nand %r2, 1\nldxdw %r0, [%r1+40]\ndiv %r0, %r2\nldxdw %r3, [%r1+48]\nmod %r3, %r2\n\
     add %r0, %r3\nldxb %r4, [%r1+2]\nlsh %r0, %r4\nmod32 %r0, %r2\nexit",
    // A bounded loop.
    "mov %r0, 0\nmov %r2, 0\nlp:\nldxb %r3, [%r1+5]\nadd %r0, %r3\nadd %r2, 1\njlt %r2, 10, lp\nexit",
    // Constants that blinding must hide.
    "lddw %r0, 0x1122334455667788\nadd %r0, 0x12345678\nxor32 %r0, 0x0badf00d\nstw [%r10-4], 0x5a5a1234\n\
     ldxw %r2, [%r10-4]\nadd %r0, %r2\njeq %r0, 0x7eadbeef, +1\nmul %r0, 0x01020304\nmov32 %r3, 0x6e6f7071\n\
     sub %r0, %r3\nmov %r4, -0x3456789a\nor %r0, %r4\ndiv %r0, 0x1357\nmod32 %r0, 0x2468ace\nexit",
];

#[test]
fn unchecked_checked_blinded_and_interpreter_agree() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let ctx = pt_regs();
    for text in PROGRAMS {
        let p = prog(text);
        let want = run(&p, ProgType::Kprobe, Engine::Interp, &ctx);
        assert!(want.is_ok(), "{text}: {want:?}");
        for e in [
            Engine::Checked,
            Engine::Unchecked,
            Engine::Blinded,
            Engine::UncheckedBlinded,
        ] {
            assert_eq!(run(&p, ProgType::Kprobe, e, &ctx), want, "{e:?}: {text}");
        }
    }
}

#[test]
fn unchecked_code_has_no_access_checks() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // A context read: checked mode compares with the stack bounds and
    // the cached region (and may call the region walk); unchecked mode is
    // one load, so its code is much shorter.
    let p = prog("ldxdw %r0, [%r1+8]\nldxdw %r2, [%r1+16]\nadd %r0, %r2\nexit");
    let h = Helpers::new();
    let checked = Jit::new(&p, &h).unwrap();
    let unchecked = Jit::compile_verified(&verified(&p, ProgType::Kprobe), &h).unwrap();
    assert!(!checked.is_unchecked());
    assert!(
        unchecked.code().len() + 40 < checked.code().len(),
        "unchecked {} bytes, checked {}",
        unchecked.code().len(),
        checked.code().len()
    );
}

#[test]
fn unchecked_mode_checks_the_context_before_entering() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog("ldxdw %r0, [%r1+160]\nexit");
    let v = verified(&p, ProgType::Kprobe);
    let h = Helpers::new();
    let mut j = Jit::compile_verified(&v, &h).unwrap();
    // A context shorter than the type's: the program could read past it.
    let mut short = vec![0u8; 100];
    let mut mem = Memory::new();
    let a = mem.add(RegionKind::Context, &mut short);
    let t = j.run(&mut mem, &[a]).unwrap_err();
    assert_eq!(
        (t.pc, t.kind),
        (
            Pc(0),
            TrapKind::OutOfBounds {
                addr: a,
                size: 168,
                access: Access::Read
            }
        )
    );
    // No context at all, a wild r1.
    let t = j.run(&mut Memory::new(), &[0xdead_0000]).unwrap_err();
    assert!(
        matches!(
            t.kind,
            TrapKind::OutOfBounds {
                addr: 0xdead_0000,
                ..
            }
        ),
        "{t:?}"
    );
    // A proper one.
    let mut ctx = pt_regs();
    let mut mem = Memory::new();
    let a = mem.add(RegionKind::Context, &mut ctx);
    let want = u64::from_le_bytes(pt_regs()[160..168].try_into().unwrap());
    assert_eq!(j.run(&mut mem, &[a]), Ok(want));
}

#[test]
fn unchecked_xdp_refuses_packet_pointers_outside_the_memory() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // A verified XDP program trusts data..data_end; the run must not enter
    // when the context's packet fields do not describe a region.
    let p = prog(
        "ldxw %r2, [%r1+0]\nldxw %r3, [%r1+4]\nmov %r4, %r2\nadd %r4, 2\njgt %r4, %r3, +2\n\
         ldxh %r0, [%r2+0]\nexit\nmov %r0, 1\nexit",
    );
    let v = verified(&p, ProgType::Xdp);
    let h = Helpers::new();
    let mut j = Jit::compile_verified(&v, &h).unwrap();
    // Fields pointing at 0x1000..0x1040: no such region.
    let mut md = xdp_md(0x1000, 0x1040);
    let mut mem = Memory::new();
    let a = mem.add(RegionKind::Context, &mut md);
    let t = j.run(&mut mem, &[a]).unwrap_err();
    assert_eq!(t.pc, Pc(0));
    assert!(
        matches!(
            t.kind,
            TrapKind::OutOfBounds {
                addr: 0x1000,
                size: 0x40,
                access: Access::Write
            }
        ),
        "{t:?}"
    );
    // data > data_end.
    let mut md = xdp_md(0x1040, 0x1000);
    let mut mem = Memory::new();
    let a = mem.add(RegionKind::Context, &mut md);
    assert!(j.run(&mut mem, &[a]).is_err());
    // The checked JIT runs the same program over the same memory and traps
    // at the load instead.
    let mut md = xdp_md(0x1000, 0x1040);
    let mut mem = Memory::new();
    let a = mem.add(RegionKind::Context, &mut md);
    let t = Jit::new(&p, &h).unwrap().run(&mut mem, &[a]).unwrap_err();
    assert_eq!(t.pc, Pc(5));
    assert!(
        matches!(
            t.kind,
            TrapKind::OutOfBounds {
                addr: 0x1000,
                size: 2,
                ..
            }
        ),
        "{t:?}"
    );
}

#[test]
fn checked_mode_still_traps_on_what_the_verifier_rejects() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Past the end of pt_regs: rejected, so no unchecked code can exist for
    // it; the checked JIT traps as the interpreter does.
    let p = prog("ldxdw %r0, [%r1+200]\nexit");
    let (report, v) = VerifiedProgram::verify(&p, ProgType::Kprobe, &[], &Options::default());
    assert_eq!(report.verdict, Verdict::Rejected);
    assert!(v.is_none());
    let ctx = pt_regs();
    let want = run(&p, ProgType::Kprobe, Engine::Interp, &ctx);
    let got = run(&p, ProgType::Kprobe, Engine::Checked, &ctx);
    assert_eq!(got, want);
    let t = got.unwrap_err();
    assert_eq!(t.pc, Pc(0));
    assert!(matches!(
        t.kind,
        TrapKind::OutOfBounds {
            size: 8,
            access: Access::Read,
            ..
        }
    ));
}

/// Every 4-byte window of `code` as a little-endian i32.
fn imm32s(code: &[u8]) -> Vec<i32> {
    code.windows(4)
        .map(|w| i32::from_le_bytes(w.try_into().unwrap()))
        .collect()
}

#[test]
fn blinded_code_contains_no_program_constant() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let text = PROGRAMS.last().unwrap();
    let p = prog(text);
    let consts: [i32; 9] = [
        0x5566_7788,
        0x1122_3344,
        0x1234_5678,
        0x0bad_f00d,
        0x5a5a_1234,
        0x7ead_beef,
        0x0102_0304,
        0x6e6f_7071,
        -0x3456_789a,
    ];
    let h = Helpers::new();
    let plain = Jit::new(&p, &h).unwrap();
    let words = imm32s(plain.code().bytes());
    // The unblinded code does carry them (so the test can fail).
    for c in &consts {
        assert!(words.contains(c), "{c:#x} not in plain code");
    }
    for _ in 0..8 {
        for j in [
            Jit::builder().blind_constants(true).build(&p, &h).unwrap(),
            Jit::builder()
                .blind_constants(true)
                .build_verified(&verified(&p, ProgType::Kprobe), &h)
                .unwrap(),
        ] {
            let words = imm32s(j.code().bytes());
            for c in &consts {
                assert!(!words.contains(c), "{c:#x} in blinded code");
            }
            // Small constants are blinded too: 0x1357 and 0x2468ace as
            // their 4-byte encodings.
            for c in [0x1357, 0x0246_8ace] {
                assert!(!words.contains(&c), "{c:#x} in blinded code");
            }
        }
    }
}

/// Writes the packet words of the `xdp_md` at `a` through `mem` (the
/// context buffer is lent to `mem`).
fn set_xdp_words(mem: &mut Memory<'_>, a: u64, data: u64, data_end: u64, data_meta: u64) {
    for (off, v) in [(0, data), (4, data_end), (8, data_meta)] {
        mem.store::<4>(a + off, (v as u32).to_ne_bytes()).unwrap();
    }
}

/// An XDP program reading the first two packet bytes (1 when the packet is
/// shorter), verified and compiled unchecked.
fn xdp_reader() -> Jit {
    let p = prog(
        "ldxw %r2, [%r1+0]\nldxw %r3, [%r1+4]\nmov %r4, %r2\nadd %r4, 2\njgt %r4, %r3, +2\n\
         ldxh %r0, [%r2+0]\nexit\nmov %r0, 1\nexit",
    );
    Jit::compile_verified(&verified(&p, ProgType::Xdp), &Helpers::new()).unwrap()
}

#[test]
fn unchecked_entry_check_is_redone_when_the_packet_words_change() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Repeated runs over one `Memory` reuse the entry check; the caller (or
    // a helper) rewriting the context's packet words must still be caught.
    let mut j = xdp_reader();
    let mut md = xdp_md(0, 0);
    let Some(pkt) = low_packet(64) else {
        eprintln!("no packet buffer below 4 GiB here; skipped");
        return;
    };
    let mut mem = Memory::new();
    let a = mem.add(RegionKind::Context, &mut md);
    let p = mem.add(RegionKind::Packet, pkt);
    let want = u16::from_ne_bytes([0x5a, 0x5a]) as u64;
    set_xdp_words(&mut mem, a, p, p + 64, p);
    for _ in 0..3 {
        assert_eq!(j.run(&mut mem, &[a]), Ok(want));
    }
    // data_end past the packet region: the packet check fails again.
    set_xdp_words(&mut mem, a, p, p + 65, p);
    let t = j.run(&mut mem, &[a]).unwrap_err();
    assert_eq!(
        (t.pc, t.kind),
        (
            Pc(0),
            TrapKind::OutOfBounds {
                addr: p,
                size: 65,
                access: Access::Write
            }
        )
    );
    // Back inside: passes (and is cached) again.
    set_xdp_words(&mut mem, a, p + 8, p + 64, p);
    assert_eq!(j.run(&mut mem, &[a]), Ok(want));
    assert_eq!(j.run(&mut mem, &[a]), Ok(want));
    // Each word alone moved outside any region after a passed run.
    for (data, end, meta) in [
        (0x1000, 0x1040, 0x1000),           // all three elsewhere
        (p + 8, p + 64, p.wrapping_sub(4)), // data_meta below the packet
        (p + 8, p + 4, p),                  // data past data_end
        (p + 8, p + 64, p + 12),            // data_meta past data
    ] {
        set_xdp_words(&mut mem, a, p, p + 64, p);
        assert_eq!(j.run(&mut mem, &[a]), Ok(want));
        set_xdp_words(&mut mem, a, data, end, meta);
        let t = j.run(&mut mem, &[a]).unwrap_err();
        assert_eq!(t.pc, Pc(0));
        assert!(matches!(t.kind, TrapKind::OutOfBounds { .. }), "{t:?}");
        // And again: a failed check is never cached as passed.
        assert!(j.run(&mut mem, &[a]).is_err());
    }
    // One word at a time, the others as in the passed run.
    let (data, end, meta) = (p + 8, p + 60, p + 4);
    for (i, bad) in [(0, p + 61), (1, p + 65), (2, p.wrapping_sub(4)), (2, p + 9)] {
        set_xdp_words(&mut mem, a, data, end, meta);
        assert_eq!(j.run(&mut mem, &[a]), Ok(want));
        let mut w = [data, end, meta];
        w[i] = bad;
        set_xdp_words(&mut mem, a, w[0], w[1], w[2]);
        let t = j.run(&mut mem, &[a]).unwrap_err();
        assert_eq!(t.pc, Pc(0), "word {i}");
        assert!(matches!(t.kind, TrapKind::OutOfBounds { .. }), "{t:?}");
    }
}

#[test]
fn unchecked_entry_check_is_redone_when_the_regions_change() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut j = xdp_reader();
    let Some(pkt) = low_packet(64) else {
        eprintln!("no packet buffer below 4 GiB here; skipped");
        return;
    };
    let p = pkt.as_ptr() as u64;
    let want = u16::from_ne_bytes([0x5a, 0x5a]) as u64;
    // The context lent read-only (XDP's context has no writable field), so
    // that the same buffer, at the same address, can be lent again.
    let md = xdp_md(p, p + 64);
    let a = md.as_ptr() as u64;
    {
        let mut mem = Memory::new();
        mem.add_readonly(RegionKind::Context, &md);
        mem.add(RegionKind::Packet, &mut *pkt);
        assert_eq!(j.run(&mut mem, &[a]), Ok(want));
        assert_eq!(j.run(&mut mem, &[a]), Ok(want));
        // Same r1 and words, but the list was cleared: no context.
        mem.clear();
        let t = j.run(&mut mem, &[a]).unwrap_err();
        assert_eq!(t.pc, Pc(0));
        assert!(
            matches!(
                t.kind,
                TrapKind::OutOfBounds {
                    addr,
                    access: Access::Read,
                    ..
                } if addr == a
            ),
            "{t:?}"
        );
        // The context again, the packet not: the packet check fails.
        mem.add_readonly(RegionKind::Context, &md);
        let t = j.run(&mut mem, &[a]).unwrap_err();
        assert_eq!(t.pc, Pc(0));
        assert!(
            matches!(
                t.kind,
                TrapKind::OutOfBounds {
                    addr,
                    size: 64,
                    access: Access::Write
                } if addr == p
            ),
            "{t:?}"
        );
    }
    // A new `Memory` (possibly at the old one's address) with the packet
    // lent read-only: not the region list the passed check saw.
    let mut mem = Memory::new();
    mem.add_readonly(RegionKind::Context, &md);
    mem.add(RegionKind::Packet, &mut *pkt);
    assert_eq!(j.run(&mut mem, &[a]), Ok(want));
    drop(mem);
    let mut mem = Memory::new();
    mem.add_readonly(RegionKind::Context, &md);
    mem.add_readonly(RegionKind::Packet, &*pkt);
    assert!(j.run(&mut mem, &[a]).is_err());
    // Only the context lent: the same.
    let mut mem = Memory::new();
    mem.add_readonly(RegionKind::Context, &md);
    assert!(j.run(&mut mem, &[a]).is_err());
}
