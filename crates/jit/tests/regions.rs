//! The JIT copies the run's regions into its check table only when the
//! memory's version stamp changed (once per `--repeat` batch): a region
//! added between runs or during a run (by a helper), and a new `Memory`
//! in place of a dropped one, must still be what the code checks against.

use bpfkit_isa::{
    asm::{assemble, Syntax},
    Program,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{Access, Helpers, Memory, RegionKind, TrapKind};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

fn out_of_bounds(addr: u64) -> TrapKind {
    TrapKind::OutOfBounds {
        addr,
        size: 8,
        access: Access::Read,
    }
}

#[test]
fn regions_follow_the_memory_between_runs() {
    // r0 = *(u64 *)r1
    let p = prog("ldxdw %r0, [%r1]\nexit");
    let mut jit = Jit::new(&p, &Helpers::new()).unwrap();
    let mut a = 1u64.to_le_bytes();
    let mut b = 2u64.to_le_bytes();
    let mut c = 3u64.to_le_bytes();
    let (pa, pc);
    {
        let mut mem = Memory::new();
        pa = mem.add(RegionKind::Context, &mut a);
        // The same memory, runs in a row (the table is copied once).
        for _ in 0..3 {
            assert_eq!(jit.run(&mut mem, &[pa]), Ok(1));
        }
        // A region added between runs is seen by the next run.
        let pb = mem.add(RegionKind::Other, &mut b);
        assert_eq!(jit.run(&mut mem, &[pb]), Ok(2));
        assert_eq!(jit.run(&mut mem, &[pa]), Ok(1));
    }
    // A new memory (possibly at the dropped one's address) without `a`:
    // reading `a` traps, reading `c` works.
    let mut mem = Memory::new();
    pc = mem.add(RegionKind::Context, &mut c);
    assert_eq!(jit.run(&mut mem, &[pc]), Ok(3));
    assert_eq!(
        jit.run(&mut mem, &[pa]).unwrap_err().kind,
        out_of_bounds(pa)
    );
    mem.clear();
    assert_eq!(
        jit.run(&mut mem, &[pc]).unwrap_err().kind,
        out_of_bounds(pc)
    );
}

#[test]
fn a_region_a_helper_adds_is_checked_in_the_same_run() {
    // r0 = helper 1(); r0 = *(u64 *)r0
    let p = prog("call 1\nldxdw %r0, [%r0]\nexit");
    static VALUE: [u8; 8] = 7u64.to_le_bytes();
    let mut h = Helpers::new();
    h.register(1, |e, _a| {
        let mem = e.guest().memory_mut();
        let addr = VALUE.as_ptr() as u64;
        if !mem.regions().iter().any(|r| r.start() == addr) {
            mem.add_readonly(RegionKind::Helper, &VALUE);
        }
        Ok(addr)
    });
    let mut jit = Jit::new(&p, &h).unwrap();
    let mut ctx = [0u8; 8];
    let mut mem = Memory::new();
    let pctx = mem.add(RegionKind::Context, &mut ctx);
    for _ in 0..3 {
        assert_eq!(jit.run(&mut mem, &[pctx]), Ok(7));
    }
}
