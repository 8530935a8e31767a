//! Code memory in forked children (`bpfkit_jit::memory`, module docs): a
//! child does not inherit the userfaultfd registration, and its copy of
//! the fd refers to the parent's address space. Alone in its file (its
//! own process with one test thread), since a forked child of a
//! multi-threaded test harness could inherit a held lock.

use bpfkit_isa::{
    asm::{assemble, Syntax},
    Program,
};
use bpfkit_jit::memory::Fill;
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

/// Compiles and runs a few programs, checks their results; returns the
/// fill of the last one.
fn compile_and_run(seed: u64) -> Fill {
    let h = Helpers::new();
    let mut last = Fill::Flip;
    for k in 0..4 {
        let p = prog(&format!("mov %r0, {seed}\nadd %r0, {k}\nexit"));
        let mut jit = Jit::new(&p, &h).unwrap();
        assert_eq!(jit.run(&mut Memory::new(), &[]), Ok(seed + k));
        last = jit.code().fill();
    }
    last
}

/// Runs `child` in a child made by `fork` (`raw`: the system call itself,
/// which skips `pthread_atfork` handlers) and returns its exit status.
fn in_child(raw: bool, child: impl FnOnce() -> bool) -> i32 {
    // SAFETY: this test binary's only other thread waits for the test to
    // end, holding no lock the child needs; the child ends with `_exit`.
    let pid = unsafe {
        if raw {
            libc::syscall(libc::SYS_fork) as libc::pid_t
        } else {
            libc::fork()
        }
    };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

#[test]
fn forked_children_compile_and_run() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let before = compile_and_run(10);
    // Live code of the parent, copied into the child by the fork.
    let h = Helpers::new();
    let mut kept = Jit::new(&prog("mov %r0, 77\nexit"), &h).unwrap();
    // A fork through libc: the child makes its own userfaultfd.
    let status = in_child(false, || {
        kept.run(&mut Memory::new(), &[]) == Ok(77) && compile_and_run(20) == before
    });
    assert_eq!(status, 0, "child after fork()");
    assert_eq!(compile_and_run(30), before, "parent after fork()");
    // The bare system call: the child does not know it was forked, fills
    // the parent's pages through the inherited fd, finds its own piece
    // empty, and flips from then on; the parent finds those pages taken
    // and flips too. Both keep running right.
    let status = in_child(true, || {
        kept.run(&mut Memory::new(), &[]) == Ok(77) && compile_and_run(40) == Fill::Flip
    });
    assert_eq!(status, 0, "child after the fork system call");
    compile_and_run(50);
    assert_eq!(kept.run(&mut Memory::new(), &[]), Ok(77));
}
