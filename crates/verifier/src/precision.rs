//! Precision tracking: which scalars a safety decision depended on.
//!
//! Explored states keep their scalars imprecise until some later check
//! (a pointer offset, a helper's size argument, a branch decided by the
//! ranges, a return value) depends on one. Then the value is followed
//! backwards, instruction by instruction, through the path's history and
//! the chain of explored states it went through, and every scalar it was
//! computed from is marked [`precise`](crate::state::RegState::precise) in
//! those states. Pruning compares only precise scalars (an imprecise one
//! includes any scalar), which is what lets the checker, as the kernel's,
//! treat loop iterations that differ only in irrelevant counters as one.
//!
//! The walk works on masks of registers and stack slots per frame. Where
//! it cannot follow a value, it gives up soundly by marking every scalar of
//! every state on the chain precise.

use bpfkit_isa::{AluOp, AtomicOp, Insn, Src};

/// Most frames of a call chain (`MAX_CALL_FRAMES`).
pub(crate) const FRAMES: usize = 8;

/// One processed instruction, as the history of a path remembers it.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    /// The instruction's slot.
    pub pc: u32,
    /// The stack slot (frame, slot) a spill wrote or a fill read.
    pub slot: Option<(u8, u8)>,
    /// A conditional jump's linked scalars (same id as an operand), which
    /// the jump refined together: (frame, register) or (frame, 16 + slot).
    pub linked: Vec<(u8, u8)>,
    /// The step entered a callback (a callback-calling helper on the path
    /// into its callback) or returned from one (its exit, back to the
    /// helper call).
    pub callback: bool,
}

/// Registers (bit per register) and stack slots (bit per 8-byte slot)
/// whose values must be precise, per frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    pub regs: [u16; FRAMES],
    pub slots: [u64; FRAMES],
}

/// Code of a linked stack slot in [`Step::linked`].
pub(crate) const LINKED_SLOT: u8 = 16;

impl Marks {
    pub fn is_empty(&self) -> bool {
        // (One OR over all words, no early exit: it runs after every
        // instruction walked back, and the words are few.)
        let regs = self.regs.iter().fold(0, |a, &r| a | r);
        let slots = self.slots.iter().fold(0, |a, &s| a | s);
        regs == 0 && slots == 0
    }

    /// Those of `self` not in `o`.
    pub fn minus(&self, o: &Marks) -> Marks {
        let mut m = *self;
        for f in 0..FRAMES {
            m.regs[f] &= !o.regs[f];
            m.slots[f] &= !o.slots[f];
        }
        m
    }

    /// Adds those of `o`.
    pub fn or(&mut self, o: &Marks) {
        for f in 0..FRAMES {
            self.regs[f] |= o.regs[f];
            self.slots[f] |= o.slots[f];
        }
    }

    /// Drops the frames from `n` on.
    pub fn keep_frames(&mut self, n: usize) {
        for f in n.min(FRAMES)..FRAMES {
            self.regs[f] = 0;
            self.slots[f] = 0;
        }
    }

    pub fn reg(&mut self, frame: usize, r: u8) {
        if let Some(m) = self.regs.get_mut(frame) {
            *m |= 1 << r;
        }
    }

    pub fn slot(&mut self, frame: usize, s: usize) {
        if let Some(m) = self.slots.get_mut(frame) {
            if s < 64 {
                *m |= 1 << s;
            }
        }
    }

    fn has_reg(&self, frame: usize, r: u8) -> bool {
        self.regs.get(frame).is_some_and(|m| m & (1 << r) != 0)
    }

    fn clear_reg(&mut self, frame: usize, r: u8) {
        if let Some(m) = self.regs.get_mut(frame) {
            *m &= !(1 << r);
        }
    }

    fn has_linked(&self, (f, l): (u8, u8)) -> bool {
        let f = f as usize;
        if l >= LINKED_SLOT {
            self.slots
                .get(f)
                .is_some_and(|m| m & (1 << (l - LINKED_SLOT)) != 0)
        } else {
            self.has_reg(f, l)
        }
    }

    fn set_linked(&mut self, (f, l): (u8, u8)) {
        if l >= LINKED_SLOT {
            self.slot(f as usize, (l - LINKED_SLOT) as usize);
        } else {
            self.reg(f as usize, l);
        }
    }
}

const R0_TO_R5: u16 = 0b11_1111;

/// Moves `m` from after `step` to before it; `fr` is the frame the path
/// was in after it and becomes the frame it was in before. False when the
/// value cannot be followed (the caller then marks everything precise).
pub(crate) fn back_step(insn: &Insn, step: &Step, m: &mut Marks, fr: &mut usize) -> bool {
    let f = *fr;
    match *insn {
        Insn::Alu { op, dst, src, .. } => {
            let d = dst.num();
            if !m.has_reg(f, d) {
                return true;
            }
            if matches!(op, AluOp::Mov | AluOp::MovSx(_)) {
                m.clear_reg(f, d);
            }
            if let Src::Reg(s) = src {
                m.reg(f, s.num());
            }
        }
        Insn::Neg { .. } | Insn::Endian { .. } | Insn::Ja { .. } => {}
        Insn::LoadImm64 { dst, .. } => m.clear_reg(f, dst.num()),
        Insn::Load { dst, .. } => {
            if m.has_reg(f, dst.num()) {
                m.clear_reg(f, dst.num());
                // A fill: the value is the spilled register's.
                if let Some((sf, s)) = step.slot {
                    m.slot(sf as usize, s as usize);
                }
            }
        }
        Insn::Store { src, .. } => {
            if let Some((sf, s)) = step.slot {
                let (sf, s) = (sf as usize, s as usize);
                if m.slots.get(sf).is_some_and(|x| x & (1 << s) != 0) {
                    m.slots[sf] &= !(1 << s);
                    if let Src::Reg(r) = src {
                        m.reg(f, r.num());
                    }
                }
            }
        }
        Insn::Atomic { op, fetch, src, .. } => {
            // What an atomic operation leaves in memory and registers is
            // unknown data, needing nothing before it.
            if op == AtomicOp::Cmpxchg {
                m.clear_reg(f, 0);
            } else if fetch || op == AtomicOp::Xchg {
                m.clear_reg(f, src.num());
            }
            if let Some((sf, s)) = step.slot {
                if let Some(x) = m.slots.get_mut(sf as usize) {
                    *x &= !(1 << s);
                }
            }
        }
        Insn::Call(_) if step.callback => {
            // Backwards over the entry of a callback: its arguments were
            // made by the helper (an unknown index, pointers, the caller's
            // context pointer), nothing to follow; the caller's registers
            // and stack were left as they were.
            if f == 0 || m.regs[f] & !0b11_1110 != 0 || m.slots[f] != 0 {
                return false;
            }
            m.regs[f] = 0;
            *fr = f - 1;
        }
        Insn::Exit if step.callback => {
            // Backwards over a callback's return to its helper call: the
            // caller's registers are untouched by the callback (its r0 is
            // not passed back).
            if f + 1 >= FRAMES {
                return false;
            }
            m.regs[f + 1] = 0;
            m.slots[f + 1] = 0;
            *fr = f + 1;
        }
        Insn::LoadAbs { .. } | Insn::LoadInd { .. } | Insn::Call(_) => {
            if let Some(x) = m.regs.get_mut(f) {
                *x &= !R0_TO_R5;
            }
        }
        Insn::Jmp { dst, src, .. } => {
            // (No vector built: this runs for every jump walked back.)
            let operands = match src {
                Src::Reg(s) => [(f as u8, dst.num()), (f as u8, s.num())],
                _ => [(f as u8, dst.num()); 2],
            };
            let group = || step.linked.iter().chain(operands.iter()).copied();
            // A register refined by a comparison with another is as
            // precise as both operands (and every scalar linked to them).
            if group().any(|g| m.has_linked(g)) {
                for g in group() {
                    m.set_linked(g);
                }
            }
        }
        Insn::CallLocal(_) => {
            // Backwards over a call: from the callee's first instruction
            // to the caller's call. Its arguments were the caller's r1-r5.
            if f == 0 {
                return false;
            }
            let args = m.regs[f] & 0b11_1110;
            if m.regs[f] & !0b11_1110 != 0 || m.slots[f] != 0 {
                return false;
            }
            m.regs[f] = 0;
            m.regs[f - 1] |= args;
            *fr = f - 1;
        }
        Insn::Exit => {
            // Backwards over a return: from the caller after the call to
            // the callee's exit. The caller's r0 was the callee's.
            if f + 1 >= FRAMES {
                return false;
            }
            let r0 = m.regs[f] & 1;
            m.regs[f] &= !R0_TO_R5;
            m.regs[f + 1] = r0;
            m.slots[f + 1] = 0;
            *fr = f + 1;
        }
        Insn::CallKfunc { .. } | Insn::Callx(_) => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::{assemble, Syntax};

    fn insn(text: &str) -> Insn {
        assemble(text, Syntax::Llvm).unwrap()[0]
    }

    fn step(slot: Option<(u8, u8)>) -> Step {
        Step {
            callback: false,
            pc: 0,
            slot,
            linked: Vec::new(),
        }
    }

    #[test]
    fn registers_are_followed_through_moves_and_arithmetic() {
        let mut m = Marks::default();
        m.reg(0, 1);
        let mut fr = 0;
        // r1 += r2: r1 depends on both.
        assert!(back_step(&insn("r1 += r2"), &step(None), &mut m, &mut fr));
        assert_eq!(m.regs[0], 0b110);
        // r2 = r3: r2 came from r3.
        assert!(back_step(&insn("r2 = r3"), &step(None), &mut m, &mut fr));
        assert_eq!(m.regs[0], 0b1010);
        // r1 = 5: a constant needs nothing before it.
        assert!(back_step(&insn("r1 = 5"), &step(None), &mut m, &mut fr));
        assert_eq!(m.regs[0], 0b1000);
        // A fill of slot 0 makes the slot needed; its spill, the register.
        assert!(back_step(
            &insn("r3 = *(u64 *)(r10 - 8)"),
            &step(Some((0, 0))),
            &mut m,
            &mut fr
        ));
        assert_eq!((m.regs[0], m.slots[0]), (0, 1));
        assert!(back_step(
            &insn("*(u64 *)(r10 - 8) = r6"),
            &step(Some((0, 0))),
            &mut m,
            &mut fr
        ));
        assert_eq!((m.regs[0], m.slots[0]), (1 << 6, 0));
        // Comparisons between registers join them; linked ones too.
        let mut j = step(None);
        j.linked = vec![(0, 7), (0, LINKED_SLOT + 2)];
        assert!(back_step(&insn("if r6 > r8 goto +1"), &j, &mut m, &mut fr));
        assert_eq!((m.regs[0], m.slots[0]), (1 << 6 | 1 << 7 | 1 << 8, 1 << 2));
    }

    #[test]
    fn calls_move_between_frames() {
        let mut m = Marks::default();
        m.reg(0, 0);
        m.reg(0, 6);
        let mut fr = 0;
        // Backwards over the callee's exit: the caller's r0 is the callee's.
        assert!(back_step(&insn("exit"), &step(None), &mut m, &mut fr));
        assert_eq!((fr, m.regs[0], m.regs[1]), (1, 1 << 6, 1));
        // In the callee: r0 = r1, then back over the call to the caller.
        assert!(back_step(&insn("r0 = r1"), &step(None), &mut m, &mut fr));
        assert!(back_step(&Insn::CallLocal(1), &step(None), &mut m, &mut fr));
        assert_eq!((fr, m.regs[0], m.regs[1]), (0, 1 << 6 | 1 << 1, 0));
        // A helper call: its result and the clobbered r1-r5 need nothing.
        m.reg(0, 0);
        assert!(back_step(&insn("call 1"), &step(None), &mut m, &mut fr));
        assert_eq!(m.regs[0], 1 << 6);
    }

    #[test]
    fn callbacks_leave_the_caller_marks_alone() {
        let cb = Step {
            callback: true,
            ..step(None)
        };
        // The caller needs r1 (bpf_loop's count) and a slot of its stack
        // when the callback has returned to the helper call.
        let mut m = Marks::default();
        m.reg(0, 1);
        m.slot(0, 3);
        let mut fr = 0;
        // Backwards over the callback's return: its r0 is not the
        // caller's; the caller's registers were untouched.
        assert!(back_step(&insn("exit"), &cb, &mut m, &mut fr));
        assert_eq!(
            (fr, m.regs[0], m.regs[1], m.slots[0]),
            (1, 1 << 1, 0, 1 << 3)
        );
        // The callback's argument (the index, made by the helper) needs
        // nothing before the entry; the caller's marks stay.
        m.reg(1, 1);
        assert!(back_step(&insn("call 181"), &cb, &mut m, &mut fr));
        assert_eq!(
            (fr, m.regs[0], m.regs[1], m.slots[0]),
            (0, 1 << 1, 0, 1 << 3)
        );
        // A callee stack slot or a register the helper did not set cannot
        // be followed: give up (everything precise).
        let mut m = Marks::default();
        m.reg(1, 6);
        let mut fr = 1;
        assert!(!back_step(&insn("call 181"), &cb, &mut m, &mut fr));
        // The same helper call on the path that skips the callback is an
        // ordinary helper call.
        let mut m = Marks::default();
        m.reg(0, 0);
        m.reg(0, 7);
        let mut fr = 0;
        assert!(back_step(&insn("call 181"), &step(None), &mut m, &mut fr));
        assert_eq!((fr, m.regs[0]), (0, 1 << 7));
    }
}
