//! Control flow: subprogram boundaries, jump targets, reachability.
//!
//! Subprograms start at slot 0 and at every target of a bpf-to-bpf call
//! (`call pc+off`, src 1) or function reference (`lddw` src 4). Jumps must
//! stay inside their subprogram, the last instruction of each subprogram
//! must be an `exit` or an unconditional jump, and every instruction must be
//! reachable from slot 0; back-edges are allowed (loops are bounded by the
//! exploration itself). Messages are the kernel's.

use bpfkit_isa::{Insn, Pc, Program};

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
                cfg.prune_point[t] = true;
                if next < n {
                    cfg.prune_point[next] = true;
                }
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
            _ => work.push(next),
        }
    }
    for (pc, _) in prog.iter() {
        if !seen[pc.0] {
            return Err(err(pc.0, format!("unreachable insn {}", pc.0)));
        }
    }
    Ok(cfg)
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
}
