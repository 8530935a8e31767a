//! Helpers that call back into the program (`bpf_loop`).
//!
//! A callback runs as a bpf-to-bpf call of the program's own code, so only
//! an engine can make it: such a helper is registered with
//! [`Helpers::register_callback`](crate::Helpers::register_callback), and
//! an engine that prepares a `call` to it emits its own loop around a call
//! of the callback instead of a helper call. The rules that decide how many
//! times the callback runs, and what the helper returns when it runs none,
//! live here ([`loop_start`]) so that every engine applies the same ones.
//!
//! `long bpf_loop(u32 nr_loops, void *callback_fn, void *callback_ctx, u64
//! flags)` (helper 181): `flags` must be 0 (else `-EINVAL`), `nr_loops` at
//! most [`LOOP_MAX`] (else `-E2BIG`); then `callback_fn(i, callback_ctx)`
//! (`r1` = `i`, `r2` = `callback_ctx`, `r3`-`r5` = 0) for `i` = 0, 1, ...
//! until it returns non-zero or `i` reaches `nr_loops`, and the helper
//! returns the number of calls made (the one that returned non-zero
//! included). The callback is the function address in `r2` (an `lddw` of a
//! function); anything else traps with
//! [`TrapKind::BadCallTarget`](crate::TrapKind::BadCallTarget) at the call.
//! Each call is a new frame (its own 512 bytes of stack, the caller's
//! `r6`-`r9` kept) and counts against
//! [`MAX_CALL_FRAMES`](crate::MAX_CALL_FRAMES) as the kernel's verifier
//! counts it. After the helper, `r1`-`r5` hold the values they had at the
//! call (as after any helper call in bpfkit's engines).
//!
//! The kernel has two versions of this, and which one runs shows: where its
//! verifier saw `flags` as the constant 0 and the same callback on every
//! path, it replaces the call with a loop of its own (`inline_bpf_loop`),
//! which compares the whole 64-bit `r1` with the limit and returns `-E2BIG`
//! as a 32-bit value (`0x00000000fffffff9`, measured: `tests/xdp/loop_sum`);
//! the helper itself takes the low 32 bits of `r1` and returns `-E2BIG`
//! sign-extended. bpfkit's engines take the kernel's loop where
//! [`loop_inlined`] says a call surely gets it (the pattern clang emits:
//! `r4 = 0` and `r2 = callback` in the straight-line code before the call),
//! the helper's rules everywhere else; they differ only for `nr_loops`
//! above the limit or with its upper half set.

use bpfkit_isa::{AluOp, AtomicOp, Imm64, Insn, Program, Reg, Src};

/// What an engine does for a `call` to a helper registered with
/// [`Helpers::register_callback`](crate::Helpers::register_callback).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Callback {
    /// `bpf_loop` (see the module docs).
    Loop,
    /// A helper whose body decides each call of the callback (in `r2`),
    /// e.g. `bpf_for_each_map_elem`: the engine calls the ordinary helper
    /// `step` before each call of the callback, with
    ///
    /// - `r1`, `r2`, `r3`: the helper's `r1`, `r3` and `r4` (for
    ///   `for_each_map_elem`: the map, the callback's context, the flags),
    /// - `r4`: the number of callback calls made so far,
    /// - `r5`: a token naming this call of the helper among those in
    ///   progress in the run (a nested call gets another; one that ended
    ///   may be reused),
    ///
    /// and `step` returns the address of a record of six `u64`s in a
    /// region of the run's memory, which the engine reads at once (the
    /// next step may overwrite it): [`STEP_CALL`] and the callback's `r1`-`r5`,
    /// or [`STEP_DONE`] and the helper's return value. After a callback
    /// that returns non-zero the engine returns the number of calls made
    /// without another step. `r1`-`r5` after the helper, frames, traps and
    /// the budget are as for [`Callback::Loop`]; an abort of `step` is the
    /// helper's.
    Steps {
        /// The helper id of the step.
        step: u32,
    },
}

/// First word of a step's record: call the callback with the next five.
pub const STEP_CALL: u64 = 0;

/// First word of a step's record: return the next word.
pub const STEP_DONE: u64 = 1;

/// The most iterations `bpf_loop` accepts (the kernel's `BPF_MAX_LOOPS`).
pub const LOOP_MAX: u64 = 1 << 23;

/// `-EINVAL` as a helper's `r0`.
pub const EINVAL: u64 = (-22i64) as u64;

/// `-E2BIG` as a helper's `r0`.
pub const E2BIG: u64 = (-7i64) as u64;

/// The argument checks of `bpf_loop` with `r1` = `nr_loops` and `r4` =
/// `flags`, as the kernel's inlined loop makes them when `inlined` (see
/// the module docs) and as its helper makes them otherwise: `Ok(n)` runs
/// the callback at most `n` times, `Err(r0)` returns `r0` without calling
/// it.
///
/// ```
/// use bpfkit_runtime::callback::{loop_start, E2BIG, EINVAL, LOOP_MAX};
/// assert_eq!(loop_start(5, 0, false), Ok(5));
/// assert_eq!(loop_start(1 << 32 | 3, 0, false), Ok(3));
/// assert_eq!(loop_start(LOOP_MAX, 0, false), Ok(LOOP_MAX));
/// assert_eq!(loop_start(LOOP_MAX + 1, 0, false), Err(E2BIG));
/// assert_eq!(loop_start(1, 1, false), Err(EINVAL));
/// // The kernel's own loop: 64-bit compare, -E2BIG in 32 bits.
/// assert_eq!(loop_start(1 << 32 | 3, 0, true), Err(E2BIG as u32 as u64));
/// assert_eq!(loop_start(LOOP_MAX, 0, true), Ok(LOOP_MAX));
/// ```
pub fn loop_start(nr_loops: u64, flags: u64, inlined: bool) -> Result<u64, u64> {
    if inlined {
        return if nr_loops > LOOP_MAX {
            Err(E2BIG as u32 as u64)
        } else {
            Ok(nr_loops)
        };
    }
    let n = nr_loops as u32 as u64;
    if flags != 0 {
        Err(EINVAL)
    } else if n > LOOP_MAX {
        Err(E2BIG)
    } else {
        Ok(n)
    }
}

/// Whether the kernel surely runs the `bpf_loop` call at instruction index
/// `call` of `prog` as its own inlined loop (see the module docs): in the
/// straight-line code before the call (no jump target after the write, no
/// call or legacy packet load in between), `r4` is last written by a move
/// of 0 and `r2` by an `lddw` of a function. Both engines ask this, so
/// they agree.
pub fn loop_inlined(prog: &Program, call: usize) -> bool {
    let insns = prog.insns();
    let mut target = vec![false; insns.len()];
    for (pc, insn) in prog.iter() {
        if let Some(t) = insn.branch_target(pc).and_then(|t| prog.index_of(t)) {
            target[t] = true;
        }
    }
    let (mut flags, mut func) = (None, None);
    for k in (0..call.min(insns.len())).rev() {
        let insn = &insns[k];
        match *insn {
            Insn::Ja { .. }
            | Insn::Jmp { .. }
            | Insn::Call(_)
            | Insn::CallLocal(_)
            | Insn::CallKfunc { .. }
            | Insn::Callx(_)
            | Insn::Exit
            | Insn::LoadAbs { .. }
            | Insn::LoadInd { .. } => break,
            _ => {}
        }
        if let Some(r) = written(insn) {
            if r == Reg::R4 && flags.is_none() {
                flags = Some(matches!(
                    insn,
                    Insn::Alu {
                        op: AluOp::Mov,
                        src: Src::Imm(0),
                        ..
                    }
                ));
            }
            if r == Reg::R2 && func.is_none() {
                func = Some(matches!(
                    insn,
                    Insn::LoadImm64 {
                        imm: Imm64::Func(_),
                        ..
                    }
                ));
            }
        }
        if flags.is_some() && func.is_some() {
            break;
        }
        if target[k] {
            break;
        }
    }
    flags == Some(true) && func == Some(true)
}

/// The registers `insn` writes (not counting calls, which end the walk).
fn written(insn: &Insn) -> Option<Reg> {
    match *insn {
        Insn::Alu { dst, .. }
        | Insn::Neg { dst, .. }
        | Insn::Endian { dst, .. }
        | Insn::LoadImm64 { dst, .. }
        | Insn::Load { dst, .. } => Some(dst),
        Insn::Atomic { fetch, op, src, .. } => match op {
            AtomicOp::Cmpxchg => Some(Reg::R0),
            _ if fetch || op == AtomicOp::Xchg => Some(src),
            _ => None,
        },
        _ => None,
    }
}
