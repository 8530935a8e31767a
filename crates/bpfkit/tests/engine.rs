//! Engine selection: with verification on and the JIT, a program runs in
//! the JIT's unchecked mode once its report says accepted; rejected and
//! unverified programs keep the checked JIT.

use bpfkit::runtime::{Memory, RegionKind, TrapKind};
use bpfkit::{Engine, Loader, RunInput};

/// `r0 = *(u64 *)(r1 + off); exit`.
fn load_ctx(off: u8) -> Vec<u8> {
    vec![
        0x79, 0x10, off, 0, 0, 0, 0, 0, // r0 = *(u64 *)(r1 + off)
        0x95, 0, 0, 0, 0, 0, 0, 0, // exit
    ]
}

/// Runs program 0 over a `struct pt_regs` of 168 bytes `0..168`.
fn run(obj: &mut bpfkit::Object) -> Result<u64, bpfkit::runtime::Trap> {
    let mut regs: Vec<u8> = (0..168u8).collect();
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    obj.run(0, mem, &[ctx], RunInput::default()).result
}

#[test]
fn accepted_programs_move_to_unchecked_mode() {
    if !bpfkit_jit_supported() {
        return;
    }
    let bytes = bpfkit_testdata::bpf_object("kprobe/f", &load_ctx(8));
    let mut obj = Loader::new().engine(Engine::Jit).load(&bytes).unwrap();
    // Not verified yet: checked code.
    let want = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
    assert_eq!(run(&mut obj), Ok(want));
    assert!(!obj.runs_unchecked(0));
    obj.check(0).unwrap();
    assert_eq!(run(&mut obj), Ok(want));
    assert!(obj.runs_unchecked(0));
    // Same result with blinding.
    let mut obj = Loader::new()
        .engine(Engine::Jit)
        .jit_blind(true)
        .load(&bytes)
        .unwrap();
    obj.check(0).unwrap();
    assert_eq!(run(&mut obj), Ok(want));
    assert!(obj.runs_unchecked(0));
}

#[test]
fn rejected_and_unverified_programs_stay_checked() {
    if !bpfkit_jit_supported() {
        return;
    }
    // Past the end of pt_regs: rejected; the checked JIT traps.
    let bytes = bpfkit_testdata::bpf_object("kprobe/f", &load_ctx(200));
    let mut obj = Loader::new().engine(Engine::Jit).load(&bytes).unwrap();
    assert!(obj.check(0).is_err());
    let t = run(&mut obj).unwrap_err();
    assert!(
        matches!(t.kind, TrapKind::OutOfBounds { size: 8, .. }),
        "{t:?}"
    );
    assert!(!obj.runs_unchecked(0));
    // Verification off: never unchecked, even for a valid program.
    let bytes = bpfkit_testdata::bpf_object("kprobe/f", &load_ctx(8));
    let mut obj = Loader::new()
        .engine(Engine::Jit)
        .verify(false)
        .load(&bytes)
        .unwrap();
    assert!(obj.report(0).is_none());
    assert!(run(&mut obj).is_ok());
    assert!(!obj.runs_unchecked(0));
    // The interpreter is never "unchecked".
    let mut obj = Loader::new().engine(Engine::Interp).load(&bytes).unwrap();
    obj.check(0).unwrap();
    assert!(run(&mut obj).is_ok());
    assert!(!obj.runs_unchecked(0));
}

fn bpfkit_jit_supported() -> bool {
    bpfkit::Engine::fastest() == Engine::Jit
}
