//! Control flow: subprogram boundaries, jump targets, reachability.
//!
//! Subprograms start at slot 0 and at every target of a bpf-to-bpf call
//! (`call pc+off`, src 1) or function reference (`lddw` src 4). Jumps must
//! stay inside their subprogram, the last instruction of each subprogram
//! must be an `exit` or an unconditional jump, and every instruction must be
//! reachable from slot 0; back-edges are allowed (loops are bounded by the
//! exploration itself). Messages are the kernel's.

use bpfkit_isa::{AluOp, AtomicOp, Insn, Pc, Program, Reg, Src};

use crate::VerifierError;

/// The control-flow facts the checker needs.
#[derive(Clone, Debug)]
pub struct Cfg {
    /// First slot of each subprogram, ascending; `subprogs[0] == 0`.
    pub subprogs: Vec<usize>,
    /// For each slot, whether a state should be remembered there for
    /// pruning (jump targets, the slot after a conditional jump, call
    /// returns).
    pub prune_point: Vec<bool>,
    /// For each slot, the registers (bit `i` for `ri`) that some path from
    /// there may read before writing them.
    pub live_in: Vec<u16>,
    /// For each slot, the current frame's 8-byte stack slots (bit `i` for
    /// the slot at `fp-8(i+1)`) that some path from there may read before
    /// overwriting them whole. Reads through other pointers than `r10`,
    /// helper and function calls count as reading every slot.
    pub slot_live_in: Vec<u64>,
}

impl Cfg {
    /// The index of the subprogram containing slot `pc`.
    pub fn subprog_of(&self, pc: usize) -> usize {
        match self.subprogs.binary_search(&pc) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }

    /// One past the last slot of subprogram `i`.
    pub fn subprog_end(&self, i: usize, slot_count: usize) -> usize {
        self.subprogs.get(i + 1).copied().unwrap_or(slot_count)
    }
}

fn err(pc: usize, message: String) -> VerifierError {
    VerifierError::new(pc, message)
}

/// Checks the control flow of `prog` and finds its subprograms.
pub fn build(prog: &Program) -> Result<Cfg, VerifierError> {
    let n = prog.slot_count();
    if n == 0 {
        return Err(err(0, "last insn is not an exit or jmp".into()));
    }
    let mut starts = vec![0usize];
    for (pc, insn) in prog.iter() {
        let is_call = matches!(
            insn,
            Insn::CallLocal(_)
                | Insn::LoadImm64 {
                    imm: bpfkit_isa::Imm64::Func(_),
                    ..
                }
        );
        if is_call {
            match insn.branch_target(pc) {
                Some(t) if t.0 < n => starts.push(t.0),
                _ => {
                    return Err(err(
                        pc.0,
                        format!("function call to invalid destination at insn {}", pc.0),
                    ))
                }
            }
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let cfg0 = Cfg {
        subprogs: starts,
        prune_point: vec![false; n],
        live_in: vec![u16::MAX; n],
        slot_live_in: vec![u64::MAX; n],
    };
    let mut cfg = cfg0;
    // Jumps stay inside their subprogram; each subprogram ends in exit/ja.
    for (i, &start) in cfg.subprogs.iter().enumerate() {
        let end = cfg.subprogs.get(i + 1).copied().unwrap_or(n);
        let mut last = None;
        for (pc, insn) in prog.iter() {
            if pc.0 < start || pc.0 >= end {
                continue;
            }
            last = Some(*insn);
            if let Insn::Ja { .. } | Insn::Jmp { .. } = insn {
                let t = insn.branch_target(pc).map(|t| t.0 as i64).unwrap_or(-1);
                if t < start as i64 || t >= end as i64 {
                    return Err(err(
                        pc.0,
                        format!("jump out of range from insn {} to {}", pc.0, t),
                    ));
                }
            }
        }
        match last {
            Some(Insn::Exit) | Some(Insn::Ja { .. }) => {}
            _ => {
                return Err(err(end - 1, "last insn is not an exit or jmp".into()));
            }
        }
    }
    // Reachability from slot 0, following calls into callees.
    let mut seen = vec![false; n];
    let mut work = vec![0usize];
    while let Some(pc) = work.pop() {
        if pc >= n || seen[pc] {
            continue;
        }
        seen[pc] = true;
        let insn = prog.get(Pc(pc)).copied().unwrap_or(Insn::Exit);
        let next = pc + insn.slots();
        match insn {
            Insn::Exit => {}
            Insn::Ja { .. } => {
                let t = insn.branch_target(Pc(pc)).map_or(n, |t| t.0);
                cfg.prune_point[t] = true;
                work.push(t);
            }
            Insn::Jmp { .. } => {
                let t = insn.branch_target(Pc(pc)).map_or(n, |t| t.0);
                // As the kernel: branch targets, and the conditional jump
                // itself (before the path splits), not its fall-through.
                cfg.prune_point[t] = true;
                cfg.prune_point[pc] = true;
                work.push(t);
                work.push(next);
            }
            Insn::CallLocal(_) | Insn::LoadImm64 { .. } => {
                if let Some(t) = insn.branch_target(Pc(pc)) {
                    work.push(t.0);
                }
                if let Insn::CallLocal(_) = insn {
                    if next < n {
                        cfg.prune_point[next] = true;
                    }
                }
                work.push(next);
            }
            // A callback-calling helper is where the callback's
            // iterations come back to and converge (the kernel forces a
            // checkpoint there).
            Insn::Call(id) if crate::check::calls_callback(id.0) => {
                cfg.prune_point[pc] = true;
                work.push(next);
            }
            _ => work.push(next),
        }
    }
    for (pc, _) in prog.iter() {
        if !seen[pc.0] {
            return Err(err(pc.0, format!("unreachable insn {}", pc.0)));
        }
    }
    cfg.live_in = liveness(prog);
    cfg.slot_live_in = slot_liveness(prog);
    Ok(cfg)
}

const ARGS: u16 = 0b11_1110;
const R0_TO_R5: u16 = 0b11_1111;

fn bit(r: Reg) -> u16 {
    1 << r.index()
}

fn src_bit(s: Src) -> u16 {
    match s {
        Src::Reg(r) => bit(r),
        Src::Imm(_) => 0,
    }
}

/// (registers read, registers written) by one instruction, within its
/// function (a call reads r1-r5 and writes r0-r5; r6-r9 survive it).
pub(crate) fn uses_defs(insn: &Insn) -> (u16, u16) {
    match *insn {
        Insn::Alu {
            op: AluOp::Mov | AluOp::MovSx(_),
            dst,
            src,
            ..
        } => (src_bit(src), bit(dst)),
        Insn::Alu { dst, src, .. } => (bit(dst) | src_bit(src), bit(dst)),
        Insn::Neg { dst, .. } | Insn::Endian { dst, .. } => (bit(dst), bit(dst)),
        Insn::LoadImm64 { dst, .. } => (0, bit(dst)),
        Insn::Load { dst, src, .. } => (bit(src), bit(dst)),
        Insn::Store { dst, src, .. } => (bit(dst) | src_bit(src), 0),
        Insn::Atomic {
            op,
            fetch,
            dst,
            src,
            ..
        } => {
            if op == AtomicOp::Cmpxchg {
                (bit(dst) | bit(src) | 1, 1)
            } else if fetch || op == AtomicOp::Xchg {
                (bit(dst) | bit(src), bit(src))
            } else {
                (bit(dst) | bit(src), 0)
            }
        }
        Insn::LoadAbs { .. } => (bit(Reg::R6), R0_TO_R5),
        Insn::LoadInd { src, .. } => (bit(Reg::R6) | bit(src), R0_TO_R5),
        Insn::Ja { .. } => (0, 0),
        Insn::Jmp { dst, src, .. } => (bit(dst) | src_bit(src), 0),
        // A helper reads only its arguments (r1 up to its last one).
        Insn::Call(id) => match crate::helpers::proto(id.0) {
            Some(p) => (ARGS & ((1u16 << (p.args.len() + 1)) - 1), R0_TO_R5),
            None => (ARGS, R0_TO_R5),
        },
        Insn::CallLocal(_) => (ARGS, R0_TO_R5),
        Insn::CallKfunc { .. } | Insn::Callx(_) => (u16::MAX, R0_TO_R5),
        Insn::Exit => (1, 0),
    }
}

/// The stack slots an access `[off, off + size)` from `r10` touches.
fn slots_of(off: i16, size: bpfkit_isa::Size) -> u64 {
    let n = match size {
        bpfkit_isa::Size::B => 1,
        bpfkit_isa::Size::H => 2,
        bpfkit_isa::Size::W => 4,
        bpfkit_isa::Size::DW => 8,
    };
    let mut m = 0u64;
    for b in i64::from(off)..i64::from(off) + n {
        if (-512..0).contains(&b) {
            m |= 1 << ((-b - 1) / 8);
        }
    }
    m
}

/// (slots read, slots overwritten whole) of the current frame's stack.
fn slot_uses_defs(insn: &Insn) -> (u64, u64) {
    match *insn {
        Insn::Load { src, off, size, .. } => {
            if src == Reg::R10 {
                (slots_of(off, size), 0)
            } else {
                (u64::MAX, 0)
            }
        }
        Insn::Store { dst, off, size, .. }
            if dst == Reg::R10 && size == bpfkit_isa::Size::DW && off % 8 == 0 =>
        {
            (0, slots_of(off, size))
        }
        Insn::Atomic { dst, off, size, .. } => {
            if dst == Reg::R10 {
                (slots_of(off, size), 0)
            } else {
                (u64::MAX, 0)
            }
        }
        Insn::Call(_) | Insn::CallLocal(_) | Insn::CallKfunc { .. } | Insn::Callx(_) => {
            (u64::MAX, 0)
        }
        _ => (0, 0),
    }
}

/// Backward liveness of the current frame's stack slots.
fn slot_liveness(prog: &Program) -> Vec<u64> {
    backward_fixpoint(prog, u64::MAX, |insn, out| {
        let (uses, defs) = slot_uses_defs(insn);
        uses | (out & !defs)
    })
}

/// Backward liveness of registers over each function's control flow.
fn liveness(prog: &Program) -> Vec<u16> {
    backward_fixpoint(prog, u16::MAX, |insn, out| {
        let (uses, defs) = uses_defs(insn);
        // r10 is always live.
        uses | (out & !defs) | (1 << 10)
    })
}

/// The live-in set of every instruction slot, iterated backwards to a fixed
/// point: what is live after an instruction is what is live at its
/// successors (nothing after `exit`, which ends the frame; `all` where a
/// jump target is out of range), and `transfer` gives what is live before
/// it from that.
fn backward_fixpoint<T>(prog: &Program, all: T, transfer: impl Fn(&Insn, T) -> T) -> Vec<T>
where
    T: Copy + Default + PartialEq + std::ops::BitOr<Output = T>,
{
    let n = prog.slot_count();
    let insns: Vec<(usize, Insn)> = prog.iter().map(|(pc, i)| (pc.0, *i)).collect();
    let mut live = vec![T::default(); n + 1];
    loop {
        let mut changed = false;
        for &(pc, insn) in insns.iter().rev() {
            let next = pc + insn.slots();
            let target = match insn {
                Insn::Ja { .. } | Insn::Jmp { .. } => insn.branch_target(Pc(pc)).map(|t| t.0),
                _ => None,
            };
            let at_target = target.map_or(all, |t| live[t.min(n)]);
            let out = match insn {
                Insn::Exit => T::default(),
                Insn::Ja { .. } => at_target,
                Insn::Jmp { .. } => live[next.min(n)] | at_target,
                _ => live[next.min(n)],
            };
            let new = transfer(&insn, out);
            if new != live[pc] {
                live[pc] = new;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    live.truncate(n);
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::{assemble, Syntax};

    fn prog(text: &str) -> Program {
        Program::from_insns(assemble(text, Syntax::Llvm).unwrap()).unwrap()
    }

    #[test]
    fn fall_through_and_unreachable_are_rejected() {
        let e = build(&prog("r0 = 0\nr0 += 1\n")).unwrap_err();
        assert_eq!(e.message, "last insn is not an exit or jmp");
        let e = build(&prog("r0 = 0\nexit\nr0 = 1\nexit\n")).unwrap_err();
        assert_eq!(e.message, "unreachable insn 2");
        assert_eq!(e.pc, 2);
    }

    #[test]
    fn subprograms_and_back_edges() {
        let p = prog(
            "r1 = 3\ncall f\nexit\nf:\nr0 = 0\nLBB0_1:\nr1 += -1\nif r1 != 0 goto LBB0_1\nexit\n",
        );
        let c = build(&p).unwrap();
        assert_eq!(c.subprogs, vec![0, 3]);
        assert!(c.prune_point[4]);
        let e = build(&prog(
            "call f\nexit\nf:\nr0 = 0\nif r0 == 0 goto LBB0_1\nexit\nLBB0_1:\nexit\n",
        ));
        assert!(e.is_ok());
    }

    #[test]
    fn register_liveness() {
        // 0: r2 = 1; 1: r3 = r2; 2: if r1 > 0 goto 4; 3: r3 = 0; 4: r0 = r3; 5: exit
        let p = prog("r2 = 1\nr3 = r2\nif r1 > 0x0 goto L1\nr3 = 0\nL1:\nr0 = r3\nexit\n");
        let live = build(&p).unwrap().live_in;
        let regs = |m: u16| (0..10).filter(|i| m & (1 << i) != 0).collect::<Vec<_>>();
        assert_eq!(regs(live[0]), vec![1]);
        assert_eq!(regs(live[2]), vec![1, 3]);
        assert_eq!(regs(live[3]), Vec::<usize>::new());
        assert_eq!(regs(live[4]), vec![3]);
        assert_eq!(regs(live[5]), vec![0]);
        // A helper call reads its arguments only (ktime_get_ns none,
        // map_lookup_elem r1 and r2); r6 lives across it.
        let p = prog("r6 = 1\nr1 = 2\ncall 0x5\nr0 = r6\nexit\n");
        let live = build(&p).unwrap().live_in;
        assert_eq!(regs(live[2]), vec![6]);
        let p = prog("r6 = 1\nr1 = 2\ncall 0x1\nr0 = r6\nexit\n");
        let live = build(&p).unwrap().live_in;
        assert_eq!(regs(live[2]), vec![1, 2, 6]);
        // A bpf-to-bpf call may read r1-r5.
        let p = prog("r6 = 1\ncall f\nr0 = r6\nexit\nf:\nr0 = 0\nexit\n");
        let live = build(&p).unwrap().live_in;
        assert_eq!(regs(live[1]), vec![1, 2, 3, 4, 5, 6]);
    }
}
