//! Helpers that call back into the program (`bpf_loop`, see
//! `bpfkit_runtime::callback`): the loop is emitted at the call site
//! around a bpf-to-bpf call of the callback, made as `call local` makes
//! it (`Emitter::local_call`: a new frame, the caller's r6-r9 and r10
//! kept, the depth counted where calls count it), so the callback runs as
//! any subprogram runs: same traps (its own pc), same budget, no Rust
//! frame in between and so nothing that could unwind through the code.
//!
//! The callback is `r2`, a function address of the program: the sequence
//! compares it with every function address an `lddw` of the program
//! makes (the only way a program gets one) and calls that function's
//! label directly; anything else traps with `BadCallTarget` at the call
//! (only unverified programs can pass one).

use super::super::encode::{Alu, Cc, Gpr, Mem, Rm, Sz};
use super::{field, status, Emitter, REG_MAP};
use crate::Ctx;
use bpfkit_isa::{Imm64, Insn};
use bpfkit_runtime::callback::{loop_inlined, E2BIG, EINVAL, LOOP_MAX};
use bpfkit_runtime::Callback;
use std::mem::offset_of;

/// The kernel's ids of the helpers that call back (`bpf_for_each_map_elem`,
/// `bpf_loop`): their loops are longer than any jump emitted short at once
/// may skip (`near_bytes`; registered otherwise, a call is shorter still).
pub(super) const LONG_CALLS: [u32; 2] = [164, 181];

/// Host stack words the loop keeps below the call site's `rsp`: the count
/// of calls made, the most allowed, one unused, then `r5` down to `r1` as
/// they were at the call (an even number, so `rsp` keeps the call site's
/// alignment for the calls).
const I: i32 = 0;
const N: i32 = 8;
const R: [i32; 6] = [0, 56, 48, 40, 32, 24];
const BELOW: i32 = 24;

impl Emitter<'_> {
    /// Emits the `call` at `i` of helper `id` when it is a helper that
    /// calls back ([`Callback`]); `false`, emitting nothing, otherwise.
    pub(super) fn callback_call(&mut self, i: usize, id: u32) -> bool {
        match self.input.helpers.callback(id) {
            Some(Callback::Loop) => {
                self.bpf_loop(i);
                true
            }
            Some(Callback::Steps { step }) => match self.helper_calls_to(step) {
                Some(h) => {
                    self.steps(i, h);
                    true
                }
                // Traps as a call of an unknown helper.
                None => false,
            },
            _ => false,
        }
    }

    /// `bpf_loop(nr_loops, callback, ctx, flags)` at instruction `i`.
    fn bpf_loop(&mut self, i: usize) {
        self.local_calls = true;
        self.helper_calls = true;
        // The call instruction is counted here, once; the calls below
        // check the budget (with nothing pending) as `call local` does,
        // where the interpreter checks it.
        self.budget_flush();
        let r = |k: usize| REG_MAP[k];
        let at = |off: i32| Rm::Mem(Mem::at(Gpr::Rsp, off));
        for k in 1..=5 {
            self.a.push(r(k));
        }
        self.a.alu_rm_i(Sz::B64, Alu::Sub, Rm::Reg(Gpr::Rsp), BELOW);
        self.a.mov_rm_i(Sz::B64, at(I), 0);
        let done = self.new_label();
        // The argument checks (`bpfkit_runtime::callback::loop_start`):
        // the kernel's inlined loop's (64-bit count, -E2BIG in 32 bits) or
        // its helper's.
        if loop_inlined(self.input.prog, i) {
            self.a.mov_r_imm64(r(0), E2BIG as u32 as u64);
            self.a.mov_r_imm64(Gpr::Rcx, LOOP_MAX);
            self.a.mov_r_rm(Sz::B64, Gpr::Rax, Rm::Reg(r(1)));
            self.a
                .alu_rm_r(Sz::B64, Alu::Cmp, Rm::Reg(Gpr::Rax), Gpr::Rcx);
            self.jcc(Cc::A, done);
            self.a.mov_rm_r(Sz::B64, at(N), Gpr::Rax);
        } else {
            self.a.mov_r_imm64(r(0), EINVAL);
            self.a.test_rm_r(Sz::B64, Rm::Reg(r(4)), r(4));
            self.jcc(Cc::Ne, done);
            self.a.mov_r_imm64(r(0), E2BIG);
            self.a.mov_r_rm(Sz::B32, Gpr::Rax, Rm::Reg(r(1)));
            self.a
                .alu_rm_i(Sz::B64, Alu::Cmp, Rm::Reg(Gpr::Rax), LOOP_MAX as i32);
            self.jcc(Cc::A, done);
            self.a.mov_rm_r(Sz::B64, at(N), Gpr::Rax);
        }
        self.a.mov_r_imm64(r(0), 0);
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rax), Gpr::Rax);
        self.jcc(Cc::E, done);

        let again = self.new_label();
        let called = self.new_label();
        self.bind(again);
        // callback(i, ctx, 0, 0, 0)
        self.a.mov_r_rm(Sz::B64, r(1), at(I));
        self.a.mov_r_rm(Sz::B64, r(2), at(R[3]));
        for k in 3..=5 {
            self.a.mov_r_imm64(r(k), 0);
        }
        self.dispatch(i, called);
        self.bind(called);
        let stop = self.new_label();
        self.a.mov_r_rm(Sz::B64, Gpr::Rax, at(I));
        self.a.alu_rm_i(Sz::B64, Alu::Add, Rm::Reg(Gpr::Rax), 1);
        self.a.mov_rm_r(Sz::B64, at(I), Gpr::Rax);
        self.a.test_rm_r(Sz::B64, Rm::Reg(r(0)), r(0));
        self.jcc(Cc::Ne, stop);
        self.a.mov_r_rm(Sz::B64, Gpr::Rcx, at(N));
        self.a
            .alu_rm_r(Sz::B64, Alu::Cmp, Rm::Reg(Gpr::Rax), Gpr::Rcx);
        self.jcc(Cc::B, again);
        self.bind(stop);
        self.a.mov_r_rm(Sz::B64, r(0), Rm::Reg(Gpr::Rax));

        self.bind(done);
        self.a.alu_rm_i(Sz::B64, Alu::Add, Rm::Reg(Gpr::Rsp), BELOW);
        for k in (1..=5).rev() {
            self.a.pop(r(k));
        }
        self.pending = 0;
    }

    /// A `Callback::Steps` helper at instruction `i` whose step is at index
    /// `h` of the helper table: the step called as any helper (so a
    /// direct entry, a trampoline, a stop or a panic take their usual
    /// ways), its record read (`bpfkit_runtime::Callback::Steps`), then
    /// the callback called or the loop left. The token is `rsp` at the
    /// step's call: the same for every step of this call, lower for a
    /// nested one.
    fn steps(&mut self, i: usize, h: u32) {
        self.local_calls = true;
        self.budget_flush();
        let r = |k: usize| REG_MAP[k];
        let at = |off: i32| Rm::Mem(Mem::at(Gpr::Rsp, off));
        let rec = |k: i32| Rm::Mem(Mem::at(REG_MAP[0], 8 * k));
        for k in 1..=5 {
            self.a.push(r(k));
        }
        self.a.alu_rm_i(Sz::B64, Alu::Sub, Rm::Reg(Gpr::Rsp), BELOW);
        self.a.mov_rm_i(Sz::B64, at(I), 0);
        let again = self.new_label();
        let called = self.new_label();
        let finish = self.new_label();
        let done = self.new_label();
        self.bind(again);
        // step(r1, r3, r4, calls made, token)
        self.a.mov_r_rm(Sz::B64, r(1), at(R[1]));
        self.a.mov_r_rm(Sz::B64, r(2), at(R[3]));
        self.a.mov_r_rm(Sz::B64, r(3), at(R[4]));
        self.a.mov_r_rm(Sz::B64, r(4), at(I));
        self.a.mov_r_rm(Sz::B64, r(5), Rm::Reg(Gpr::Rsp));
        self.helper_call(i, h);
        self.a.mov_r_rm(Sz::B64, Gpr::Rax, rec(0));
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rax), Gpr::Rax);
        self.jcc(Cc::Ne, finish);
        for k in 1..=5 {
            self.a.mov_r_rm(Sz::B64, r(k), rec(k as i32));
        }
        self.dispatch(i, called);
        self.bind(called);
        self.a.mov_r_rm(Sz::B64, Gpr::Rax, at(I));
        self.a.alu_rm_i(Sz::B64, Alu::Add, Rm::Reg(Gpr::Rax), 1);
        self.a.mov_rm_r(Sz::B64, at(I), Gpr::Rax);
        self.a.test_rm_r(Sz::B64, Rm::Reg(r(0)), r(0));
        self.jcc(Cc::E, again);
        self.a.mov_r_rm(Sz::B64, r(0), Rm::Reg(Gpr::Rax));
        self.jmp(done);
        self.bind(finish);
        self.a.mov_r_rm(Sz::B64, r(0), rec(1));
        // The interpreter leaves through a taken jump here.
        self.budget_check(i);
        self.bind(done);
        self.a.alu_rm_i(Sz::B64, Alu::Add, Rm::Reg(Gpr::Rsp), BELOW);
        for k in (1..=5).rev() {
            self.a.pop(r(k));
        }
        self.pending = 0;
    }

    /// Calls the callback (the helper's `r2`, kept at `R[2]`) with r1-r5
    /// as they are, then goes on at `called`; traps at `i` when `r2` is no
    /// function of the program.
    fn dispatch(&mut self, i: usize, called: usize) {
        let at = |off: i32| Rm::Mem(Mem::at(Gpr::Rsp, off));
        self.a.mov_r_rm(Sz::B64, Gpr::Rax, at(R[2]));
        for (value, t) in self.functions() {
            let next = self.new_label();
            self.a.mov_r_imm64(Gpr::Rcx, value);
            self.a
                .alu_rm_r(Sz::B64, Alu::Cmp, Rm::Reg(Gpr::Rax), Gpr::Rcx);
            self.jcc(Cc::Ne, next);
            self.local_call(i, Some(t), false);
            self.jmp(called);
            self.bind(next);
        }
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, fault_addr)), Gpr::Rax);
        let l = self.trap_stub(status::BAD_CALLBACK, i);
        self.jmp(l);
    }

    /// (value, instruction index) of every function address the program's
    /// `lddw`s make, without repeats.
    fn functions(&self) -> Vec<(u64, usize)> {
        let prog = self.input.prog;
        let mut out: Vec<(u64, usize)> = Vec::new();
        for (k, (pc, insn)) in prog.iter().enumerate() {
            if let Insn::LoadImm64 {
                imm: imm @ Imm64::Func(_),
                ..
            } = insn
            {
                let t = insn.branch_target(pc).and_then(|t| prog.index_of(t));
                if let (Some(v), Some(t)) = (self.imm64(k, imm), t) {
                    if !out.iter().any(|&(w, _)| w == v) {
                        out.push((v, t));
                    }
                }
            }
        }
        out
    }
}
