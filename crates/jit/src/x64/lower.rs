//! Lowering: eBPF instructions to x86-64 through the encoder, in checked
//! mode (every memory access checked against the guest regions) or
//! unchecked mode (verified programs: `[reg + off]` emitted as it is).
//!
//! # Machine model
//!
//! eBPF registers live in host registers for the whole run:
//!
//! | eBPF | r0  | r1  | r2 | r3 | r4  | r5  | r6  | r7  | r8  | r9  | r10 |
//! |------|-----|-----|----|----|-----|-----|-----|-----|-----|-----|-----|
//! | x86  | rsi | rdi | r8 | r9 | r10 | r11 | rbx | r12 | r14 | r15 | rbp |
//!
//! `r13` holds the `Ctx` pointer (the run's state block); `rax`, `rcx`, `rdx` are
//! scratch, which is what `div`/`idiv` (rdx:rax), variable shifts (`cl`)
//! and `cmpxchg` (rax) need, so no eBPF register is ever spilled.
//!
//! - The entry (emitted last, at `Lowered::entry`, once the registers the
//!   program names are known) saves the System V callee-saved registers the
//!   program can change (r13; rbx, r12, r14, r15 for the r6-r9 it names;
//!   rbp when it names r10 or makes bpf-to-bpf calls), loads the argument
//!   registers it can read from `Ctx::args`, zeroes r0 and the named
//!   r6-r9, records `rsp` in `Ctx::host_rsp` and `call`s instruction 0.
//!   Every `exit` is a `ret`: at depth 0 it returns to the entry, which
//!   stores `r0` and returns (`run` set `Ctx::status` to OK before).
//! - Helper calls go through one shared stub: it pushes r1-r5 (the
//!   interpreter keeps them across helper calls; RFC 9669 leaves them
//!   unspecified, so keeping them conforms, and the engines stay
//!   identical), passes them to the trampoline in the System V argument
//!   registers, pops them and moves the result to r0. The helper and the
//!   call site go through `Ctx::call_h`/`call_site` (same-size stores and
//!   loads, so no store-forwarding stall).
//! - A trap anywhere (at any call depth) stores its status in the `Ctx`,
//!   reloads `rsp` from `Ctx::host_rsp` and jumps to the epilogue.
//! - A bpf-to-bpf call pushes r6-r9 and r10 on the host stack, sets r10 to
//!   the new frame (`stack_top - depth * 512`, as the interpreter does) and
//!   `call`s the target; `Ctx::depth` counts frames (trap at
//!   `MAX_CALL_FRAMES`). Only the r6-r9 the callee's own instructions
//!   write are pushed, when every subprogram stays in its range (no jump
//!   out, no fall-through, no `callx`: `subprog_frames`). In verified code
//!   without a budget there is no depth count and r10 moves down by 512
//!   only when the callee names r10 (`local_call`); a leaf that touches
//!   neither is a bare `call`. Since the host stack depth varies, the
//!   helper stub aligns `rsp` itself.
//! - A checked memory access tests its address inline with three
//!   instructions that fall through when they pass (`lea rdx, [base +
//!   off]`, a subtraction and a compare with `jcc` to a cold stub), then
//!   accesses `[base + off]` itself: against the region the last
//!   region-table walk found (kept in the `Ctx` per direction, with `len -
//!   size + 1` precomputed per size) for any base but r10, against the
//!   stack buffer for r10. The access's cold stub (emitted after the
//!   shared routines) calls a routine shared per size and direction: for
//!   the cached-region test it recovers the address from the test's `rdx`
//!   and tests the stack; when that misses too it walks the region table,
//!   refreshes the cache, and on a miss stores the fault and traps; the
//!   call's return address (in the stub) tells which instruction faulted.
//!   Then the stub jumps back to the access. `[r10 + off]` with `-512 <=
//!   off <= -size` needs no check at all when the program never writes
//!   r10 (every frame is inside the stack buffer). The order of checks
//!   does not change the outcome: regions never overlap the stack or each
//!   other.
//! - Idioms (see "Multi-instruction idioms" below): a few sequences clang
//!   writes for BPF are emitted as fewer x86 instructions (`mov` + `add`
//!   of a register as `lea`, byte pairs as one 16-bit load, rotates as
//!   `rol`, `if .. goto +1; mov` as `cmov`), only when nothing jumps into
//!   the middle.
//! - Unchecked mode (`LowerInput::checked` false) emits every load and
//!   store as one instruction on `[reg + off]`; atomics still compute the
//!   address into `rax` for the alignment test below. Legacy packet loads
//!   keep their check in both modes. `bpf_map_lookup_elem` on a plain
//!   array map known at the call is computed in place (`inline`).
//! - Constant blinding (`LowerInput::blind`): an immediate `imm` becomes
//!   `mov scratch, imm ^ key; xor scratch, key` (rcx, or the destination
//!   itself for `mov`), with a fresh key per instruction, and the
//!   instruction uses the register form; `lddw` does the same with 64-bit
//!   keys. Division by a blinded constant takes the register path (with
//!   its run-time zero test) since the divisor is no longer known.
//! - Atomics use `lock`ed instructions (`xadd`, `cmpxchg` loops for the
//!   fetching `or`/`and`/`xor`, `xchg`); a misaligned address takes a plain
//!   read-modify-write instead, as in the interpreter, so that a program
//!   cannot cause split locks.
//! - Budget (when configured): the count of executed instructions is kept
//!   as `Ctx::remaining = budget - executed`, decremented by the static
//!   count of each straight-line run at the points where the interpreter
//!   checks it (taken jumps, calls, returns), so a budget trap happens at
//!   exactly the same instruction as in the interpreter. Before a jump
//!   target the pending count is flushed without a check; `callx` into the
//!   middle of a run credits the part of the run it skipped
//!   (`Lowered::adj`).
//! - Short (rel8) jumps are used where they fit: backward jumps are sized
//!   exactly as they are emitted; forward jumps start long (rel32) and are
//!   shrunk afterwards (`relax`): decisions are iterated on the metadata
//!   alone, then the code is copied once, so there is a single emission
//!   pass.
//! - Compilation is one pass over the instructions (plus a scan for jump
//!   targets with a budget): helpers and `lddw` values are resolved, and
//!   the registers and kinds of calls the entry depends on are collected,
//!   while emitting; `[r10 + const]` accesses are emitted unchecked on the
//!   assumption that r10 is never written, and the pass starts over with
//!   checks in the rare case that an instruction writes r10.

use super::encode::{patch_rel, Alu, Asm, Cc, Gpr, Mem, Rm, Shift, Sz, Unary};
use super::inline;
use crate::Ctx;
use bpfkit_isa::Imm64;
use bpfkit_isa::{
    AluOp, AtomicOp, ByteOrder, Cond, Insn, Program, Reg, SignExtFrom, Size, Src, SwapBits, Width,
};
use bpfkit_runtime::{Helper, Helpers, Imm64Resolver, MAX_CALL_FRAMES, STACK_SIZE};
use std::mem::offset_of;
use std::sync::Arc;

/// Host register of each eBPF register.
pub(crate) const REG_MAP: [Gpr; 11] = [
    Gpr::Rsi,
    Gpr::Rdi,
    Gpr::R8,
    Gpr::R9,
    Gpr::R10,
    Gpr::R11,
    Gpr::Rbx,
    Gpr::R12,
    Gpr::R14,
    Gpr::R15,
    Gpr::Rbp,
];
const CTX: Gpr = Gpr::R13;

fn hr(r: Reg) -> Gpr {
    REG_MAP[r.index()]
}

fn field(off: usize) -> Rm {
    Rm::Mem(Mem::at(CTX, off as i32))
}

/// Status codes in `Ctx::status`.
pub(crate) mod status {
    pub const OK: u64 = 0;
    pub const MEM: u64 = 1;
    pub const BUDGET: u64 = 2;
    pub const DEPTH: u64 = 3;
    pub const UNKNOWN_HELPER: u64 = 4;
    pub const FELL_OFF: u64 = 6;
    pub const KFUNC: u64 = 7;
    pub const UNRESOLVED: u64 = 8;
    pub const NO_PACKET: u64 = 9;
    pub const RUST_TRAP: u64 = 10;
    pub const PANIC: u64 = 11;
}

/// What the lowering needs to know besides the instructions.
pub(crate) struct LowerInput<'p> {
    pub prog: &'p Program,
    /// Where `call` finds its helpers (resolved while emitting).
    pub helpers: &'p Helpers,
    /// Resolves symbolic `lddw` operands (while emitting).
    pub resolver: Option<&'p dyn Imm64Resolver>,
    /// Count instructions for a budget.
    pub budget: bool,
    /// Check every memory access at run time (false only for programs the
    /// verifier accepted: see `Jit::compile_verified`).
    pub checked: bool,
    /// Constant blinding: the seed of the per-instruction keys (`None`:
    /// immediates are emitted as they are).
    pub blind: Option<u64>,
}

/// The result of lowering.
pub(crate) struct Lowered {
    pub code: Vec<u8>,
    /// Code offset of each instruction (only when the program has a
    /// `callx`; empty otherwise).
    pub offsets: Vec<u32>,
    /// Budget credit for a `callx` landing on each instruction (only with a
    /// budget and a `callx`).
    pub adj: Vec<u32>,
    /// (code offset of the return address of a slow-path call, instruction
    /// index), sorted: how a memory fault finds its instruction.
    pub sites: Vec<(u32, u32)>,
    /// Code offset of the entry (`extern "C" fn(*mut Ctx)`).
    pub entry: u32,
    /// Helpers called by `call`, indexed by the code.
    pub table: Vec<(u32, Arc<dyn Helper>)>,
    /// (instruction index, instruction) of the `call`s to unknown helpers and
    /// unresolved `lddw`s, sorted: what their traps report.
    pub trap_insns: Vec<(u32, Insn)>,
    /// Whether the code reads the region table or the packet fields of the
    /// `Ctx` (checked accesses, legacy packet loads).
    pub uses_regions: bool,
    /// Whether the program has a `callx`.
    pub has_callx: bool,
}

// Fixed labels after the instruction labels (0..=n).
const L_CHECK_MEM: usize = 0;
const L_TRAP_MEM: usize = 1;
const L_TRAP: usize = 2;
const L_STOP0: usize = 3;
const L_HELPER: usize = 4;
const L_EPILOGUE: usize = 5;
/// Eight slow-path routines, one per access size and direction.
const L_SLOW_MEM: usize = 6;
const FIXED: usize = 14;

fn slow_index(size: u8, write: bool) -> usize {
    size.trailing_zeros() as usize * 2 + write as usize
}

/// (displacement offset, width, label, shrink candidates emitted before it).
/// (16 bytes: code offsets and label numbers fit `u32`, since rel32 jumps
/// limit the code to 2 GiB.)
type Fixup = (u32, u8, u32, u32);

/// A long forward jump emitted before its target was known.
struct Candidate {
    /// Offset of the instruction.
    start: usize,
    /// `None` for `jmp`.
    cc: Option<Cc>,
    /// Index of its fixup.
    fixup: usize,
}

enum Cold {
    /// Trap with `status` at instruction `idx`.
    Trap { label: usize, status: u64, idx: u32 },
    /// The rest of a checked access's test (see `mem_operand`): entered
    /// at `label` when the inline test missed, back at `back` when the
    /// access is allowed.
    Access {
        label: usize,
        back: usize,
        mem: Mem,
        size: u8,
        write: bool,
        r10: bool,
        idx: u32,
    },
}

struct Emitter<'a> {
    a: Asm,
    n: usize,
    labels: Vec<u32>,
    /// (displacement offset, width, label, candidates before it) of every
    /// jump and call.
    fixups: Vec<Fixup>,
    /// Per label: number of shrink candidates emitted before it.
    label_k: Vec<u32>,
    /// Long forward jumps that may become short.
    shrink: Vec<Candidate>,
    cold: Vec<Cold>,
    /// (label after the slow-path call, instruction index) per checked access.
    sites: Vec<(usize, u32)>,
    input: &'a LowerInput<'a>,
    r10_fixed: bool,
    pending: u32,
    /// Which slow-path routines are called (bit `slow_index`).
    used_slow: u8,
    /// Per `slow_index`: the entry of the slow routine for accesses whose
    /// inline test was the cached region's (rdx = address - its start).
    slow_hot: [usize; 8],
    leaders: Vec<bool>,
    adj: Vec<u32>,
    table: Vec<(u32, Arc<dyn Helper>)>,
    trap_insns: Vec<(u32, Insn)>,
    uses_regions: bool,
    /// eBPF registers the program names (bit `Reg::index`).
    used: u16,
    /// Whether the program makes bpf-to-bpf calls (`call local`, `callx`).
    local_calls: bool,
    /// Whether the program calls helpers (`call`, `callx`).
    helper_calls: bool,
    /// Whether the program has a `callx`.
    has_callx: bool,
    /// Blinding key generator state (xorshift64; 0 when not blinding).
    rng: u64,
    /// The subprograms' starts and [`frame_bits`] when calls can save only
    /// what their callee changes (see [`subprog_frames`] and `local_call`).
    frames: Option<Vec<(u32, u8)>>,
    /// Whether `frames` was computed: at the first call, so that programs
    /// without calls do not pay for the scan.
    frames_known: bool,
    /// bpf-to-bpf calls without a depth count (unchecked mode, no budget,
    /// `frames` known).
    frame_calls: bool,
    /// Instructions after the current one that a fused idiom already
    /// emitted (see [`Emitter::fusable`]).
    skip: u32,
    /// [`inline::branch_targets`], at the first lookup that may be inlined
    /// or the first candidate idiom (all true with a `callx`).
    branch_targets: Option<Vec<bool>>,
}

const UNBOUND: u32 = u32::MAX;

impl<'a> Emitter<'a> {
    fn fixed(&self, l: usize) -> usize {
        self.n + 1 + l
    }

    fn new_label(&mut self) -> usize {
        self.labels.push(UNBOUND);
        self.label_k.push(0);
        self.labels.len() - 1
    }

    fn bind(&mut self, l: usize) {
        self.labels[l] = self.a.pos() as u32;
        self.label_k[l] = self.shrink.len() as u32;
    }

    /// Emits a jump to `label`: short when it is bound (backward) and in
    /// reach, long otherwise; long forward jumps become shrink candidates.
    fn branch(&mut self, cc: Option<Cc>, label: usize) {
        let start = self.a.pos();
        let t = self.labels[label];
        let long = t == UNBOUND || i8::try_from(t as i64 - (start + 2) as i64).is_err();
        let at = match cc {
            Some(cc) => self.a.jcc(cc, long),
            None => self.a.jmp(long),
        };
        if long && t == UNBOUND {
            self.shrink.push(Candidate {
                start,
                cc,
                fixup: self.fixups.len(),
            });
        }
        let k = self.shrink.len();
        self.fixups
            .push((at as u32, if long { 4 } else { 1 }, label as u32, k as u32));
    }

    fn jmp(&mut self, label: usize) {
        self.branch(None, label);
    }

    fn jcc(&mut self, cc: Cc, label: usize) {
        self.branch(Some(cc), label);
    }

    fn call(&mut self, label: usize) {
        let at = self.a.call_rel32();
        let k = self.shrink.len();
        self.fixups.push((at as u32, 4, label as u32, k as u32));
    }

    fn trap_stub(&mut self, status: u64, idx: usize) -> usize {
        let label = self.new_label();
        self.cold.push(Cold::Trap {
            label,
            status,
            idx: idx as u32,
        });
        label
    }

    /// Counts `pending` against the budget and traps at `idx` when it is
    /// exhausted (the interpreter's check at a taken jump, call or return).
    fn budget_check(&mut self, idx: usize) {
        if self.input.budget {
            let k = self.pending as i32;
            self.a
                .alu_rm_i(Sz::B64, Alu::Sub, field(offset_of!(Ctx, remaining)), k);
            let l = self.trap_stub(status::BUDGET, idx);
            self.jcc(Cc::S, l);
        }
    }

    fn budget_flush(&mut self) {
        if self.input.budget && self.pending > 0 {
            let k = self.pending as i32;
            self.a
                .alu_rm_i(Sz::B64, Alu::Sub, field(offset_of!(Ctx, remaining)), k);
            self.pending = 0;
        }
    }

    /// Flags for `jbe ok` when `[rax, rax + n)` lies in the stack buffer
    /// (one subtraction, one compare; clobbers rdx).
    fn stack_test(&mut self, n: i32) {
        self.a.mov_r_rm(Sz::B64, Gpr::Rdx, Rm::Reg(Gpr::Rax));
        self.stack_test_rdx(n);
    }

    /// [`Emitter::stack_test`] with the address already in rdx.
    fn stack_test_rdx(&mut self, n: i32) {
        self.a.alu_r_rm(
            Sz::B64,
            Alu::Sub,
            Gpr::Rdx,
            field(offset_of!(Ctx, stack_start)),
        );
        self.a.alu_rm_i(
            Sz::B64,
            Alu::Cmp,
            Rm::Reg(Gpr::Rdx),
            (STACK_SIZE * MAX_CALL_FRAMES) as i32 - n,
        );
    }

    /// Flags for `jb ok` when `[rax, rax + n)` lies in the region the last
    /// region walk found for this direction (`off < len - size + 1`,
    /// precomputed per size; clobbers rdx).
    fn hot_test(&mut self, n: i32, write: bool) {
        self.a.mov_r_rm(Sz::B64, Gpr::Rdx, Rm::Reg(Gpr::Rax));
        self.hot_test_rdx(n, write);
    }

    /// [`Emitter::hot_test`] with the address already in rdx.
    fn hot_test_rdx(&mut self, n: i32, write: bool) {
        let hot = if write {
            offset_of!(Ctx, hot_w)
        } else {
            offset_of!(Ctx, hot_r)
        };
        self.a.alu_r_rm(Sz::B64, Alu::Sub, Gpr::Rdx, field(hot));
        let lim = hot + 8 + 8 * (n as u32).trailing_zeros() as usize;
        self.a.alu_r_rm(Sz::B64, Alu::Cmp, Gpr::Rdx, field(lim));
    }

    /// A `jcc rel32` to a label that stays far (cold code): no shrink
    /// candidate.
    fn jcc_far(&mut self, cc: Cc, label: usize) {
        let at = self.a.jcc(cc, true);
        let k = self.shrink.len();
        self.fixups.push((at as u32, 4, label as u32, k as u32));
    }

    /// Whether `[base + off, + n)` is provably inside the current frame
    /// (r10 never written, so r10 is a frame pointer, 8-aligned).
    fn in_frame(&self, base: Reg, off: i16, n: i32) -> bool {
        let off = off as i32;
        base == Reg::R10 && self.r10_fixed && off >= -(STACK_SIZE as i32) && off <= -n
    }

    /// The operand for an access of `size` bytes at `base + off`, with the
    /// check: `[rbp + off]` directly when provably inside the stack,
    /// `[base + off]` as it is in unchecked mode, otherwise `[base + off]`
    /// after one inline test that falls through when it passes (three
    /// instructions: `lea rdx`, `sub`, `cmp` + `jcc` to this access's cold
    /// stub). The test is the stack for r10 (which can only get here when
    /// the program writes r10 or the offset leaves the frame) and the
    /// cached region for any other base; the cold stub tries the other one
    /// and then calls the region walk, and jumps back to the access. The
    /// order of the tests does not change the outcome: regions never
    /// overlap the stack or each other.
    fn mem_operand(&mut self, base: Reg, off: i16, size: Size, write: bool, idx: usize) -> Mem {
        let n = size.bytes() as i32;
        if self.in_frame(base, off, n) {
            return Mem::at(Gpr::Rbp, off as i32);
        }
        let m = Mem::at(hr(base), off as i32);
        self.checked_mem(m, n, write, idx)
    }

    /// `m` for an access of `n` bytes, after its check in checked mode (see
    /// [`Emitter::mem_operand`]; the stack is tested first when the base is
    /// r10's register).
    fn checked_mem(&mut self, m: Mem, n: i32, write: bool, idx: usize) -> Mem {
        if !self.input.checked {
            // The verifier proved this access inside memory the run owns
            // (ARCHITECTURE.md, Decisions: the JIT's unchecked mode).
            return m;
        }
        self.uses_regions = true;
        self.a.lea(Gpr::Rdx, m);
        let r10 = m.base == hr(Reg::R10);
        let cold = self.new_label();
        if r10 {
            self.stack_test_rdx(n);
            self.jcc_far(Cc::A, cold);
        } else {
            self.hot_test_rdx(n, write);
            self.jcc_far(Cc::Ae, cold);
        }
        let back = self.new_label();
        self.bind(back);
        // Marked now: the slow routines are emitted before the cold stubs.
        self.used_slow |= 1 << slow_index(n as u8, write);
        self.cold.push(Cold::Access {
            label: cold,
            back,
            mem: m,
            size: n as u8,
            write,
            r10,
            idx: idx as u32,
        });
        m
    }

    fn emit_cold(&mut self) {
        let cold = std::mem::take(&mut self.cold);
        for c in &cold {
            match *c {
                Cold::Trap { label, status, idx } => {
                    self.bind(label);
                    self.a.mov_r_imm64(Gpr::Rcx, status);
                    self.a.mov_r_imm64(Gpr::Rdx, idx as u64);
                    let l = self.fixed(L_TRAP);
                    self.jmp(l);
                }
                Cold::Access {
                    label,
                    back,
                    mem,
                    size,
                    write,
                    r10,
                    idx,
                } => {
                    self.bind(label);
                    if !r10 {
                        // The shared entry recovers the address from rdx
                        // and tests the stack itself.
                        self.call(self.slow_hot[slow_index(size, write)]);
                        let ret = self.new_label();
                        self.bind(ret);
                        self.sites.push((ret, idx));
                        self.jmp(back);
                        continue;
                    }
                    self.a.lea(Gpr::Rax, mem);
                    self.hot_test(size as i32, write);
                    self.jcc(Cc::B, back);
                    // Neither: walk the regions. The return address
                    // identifies the access if it faults (`Lowered::sites`;
                    // cold stubs are emitted in order, so they stay sorted).
                    let l = self.fixed(L_SLOW_MEM + slow_index(size, write));
                    self.call(l);
                    let ret = self.new_label();
                    self.bind(ret);
                    self.sites.push((ret, idx));
                    self.jmp(back);
                }
            }
        }
    }

    /// The entry: saves the callee-saved registers the program uses
    /// (r13 always; rbx, r12, r14, r15 for r6-r9 when named; rbp for r10
    /// when named or when bpf-to-bpf calls move it), sets up the eBPF
    /// registers and calls instruction 0. `Ctx::status` is already OK
    /// (set by `run`), so a normal exit only stores `r0`.
    fn prologue(&mut self) {
        let used = self.used;
        let named = |r: usize| used & (1 << r) != 0;
        let mut saved = vec![CTX];
        for (r, &g) in REG_MAP.iter().enumerate().take(10).skip(6) {
            if named(r) {
                saved.push(g);
            }
        }
        if named(10) || self.local_calls {
            saved.push(Gpr::Rbp);
        }
        // Keep rsp 16-aligned at instruction 0 minus the return address:
        // an even number of pushes (the extra one is a dummy).
        let pad = saved.len() % 2 == 1;
        let a = &mut self.a;
        for &r in &saved {
            a.push(r);
        }
        if pad {
            a.push(Gpr::Rax);
        }
        a.mov_r_rm(Sz::B64, CTX, Rm::Reg(Gpr::Rdi));
        for (i, &r) in REG_MAP[1..=5].iter().enumerate() {
            if named(i + 1) || self.helper_calls {
                a.mov_r_rm(Sz::B64, r, field(offset_of!(Ctx, args) + 8 * i));
            }
        }
        for i in [0, 6, 7, 8, 9] {
            if i == 0 || named(i) {
                a.mov_r_imm64(REG_MAP[i], 0);
            }
        }
        if saved.contains(&Gpr::Rbp) {
            a.mov_r_rm(Sz::B64, Gpr::Rbp, field(offset_of!(Ctx, stack_top)));
        }
        a.mov_rm_r(Sz::B64, field(offset_of!(Ctx, host_rsp)), Gpr::Rsp);
        self.call(0);
        let a = &mut self.a;
        a.mov_rm_r(Sz::B64, field(offset_of!(Ctx, ret)), Gpr::Rsi);
        let l = self.fixed(L_EPILOGUE);
        self.bind(l);
        let a = &mut self.a;
        if pad {
            a.pop(Gpr::Rcx);
        }
        for &r in saved.iter().rev() {
            a.pop(r);
        }
        a.ret();
    }

    fn shared_routines(&mut self) {
        // Trap with rcx = status, rdx = instruction index.
        let l = self.fixed(L_TRAP);
        self.bind(l);
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, status)), Gpr::Rcx);
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, trap_idx)), Gpr::Rdx);
        self.unwind();

        // Memory fault: rax = address, rcx = size | write << 8, rdx = the
        // return address of the faulting access's slow-path call.
        let l = self.fixed(L_TRAP_MEM);
        self.bind(l);
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, fault_addr)), Gpr::Rax);
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, fault_info)), Gpr::Rcx);
        self.a.mov_r_imm64(Gpr::Rcx, status::MEM);
        let l = self.fixed(L_TRAP);
        self.jmp(l);

        // End the program with r0 = 0 (legacy packet load out of range).
        let l = self.fixed(L_STOP0);
        self.bind(l);
        self.a.mov_rm_i(Sz::B64, field(offset_of!(Ctx, ret)), 0);
        self.a
            .mov_rm_i(Sz::B64, field(offset_of!(Ctx, status)), status::OK as i32);
        self.unwind();

        // Region check: rax = address, rcx = size, rdx = 1 for a write.
        // Out: edx = 0 when some region allows the access. Keeps rax and
        // every eBPF register.
        let l = self.fixed(L_CHECK_MEM);
        self.bind(l);
        let (fail, lp, next, done) = (
            self.new_label(),
            self.new_label(),
            self.new_label(),
            self.new_label(),
        );
        self.a.push(Gpr::Rdi);
        self.a.push(Gpr::Rsi);
        self.a.lea(Gpr::Rsi, Mem::indexed(Gpr::Rax, Gpr::Rcx, 1));
        self.a
            .alu_rm_r(Sz::B64, Alu::Cmp, Rm::Reg(Gpr::Rsi), Gpr::Rax);
        self.jcc(Cc::B, fail);
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rdi, field(offset_of!(Ctx, regions)));
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rcx, field(offset_of!(Ctx, nregions)));
        self.bind(lp);
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rcx), Gpr::Rcx);
        self.jcc(Cc::E, fail);
        self.a
            .alu_r_rm(Sz::B64, Alu::Cmp, Gpr::Rax, Rm::Mem(Mem::at(Gpr::Rdi, 0)));
        self.jcc(Cc::B, next);
        self.a
            .alu_r_rm(Sz::B64, Alu::Cmp, Gpr::Rsi, Rm::Mem(Mem::at(Gpr::Rdi, 8)));
        self.jcc(Cc::A, next);
        self.a
            .test_rm_r(Sz::B64, Rm::Mem(Mem::at(Gpr::Rdi, 16)), Gpr::Rdx);
        self.jcc(Cc::Ne, next);
        // Found: remember it for the inline caches (reads: any region;
        // writes: this writable one) as start and, per access size n,
        // `len - n + 1` (regions shorter than 8 bytes are not cached).
        let read_only = self.new_label();
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rcx, Rm::Mem(Mem::at(Gpr::Rdi, 0)));
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rsi, Rm::Mem(Mem::at(Gpr::Rdi, 8)));
        self.a
            .alu_rm_r(Sz::B64, Alu::Sub, Rm::Reg(Gpr::Rsi), Gpr::Rcx);
        self.a.alu_rm_i(Sz::B64, Alu::Cmp, Rm::Reg(Gpr::Rsi), 8);
        self.jcc(Cc::B, read_only);
        for (hot, only_write) in [
            (offset_of!(Ctx, hot_r), false),
            (offset_of!(Ctx, hot_w), true),
        ] {
            if only_write {
                self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rdx), Gpr::Rdx);
                self.jcc(Cc::E, read_only);
            }
            self.a.mov_rm_r(Sz::B64, field(hot), Gpr::Rcx);
            for (k, n) in [1i32, 2, 4, 8].into_iter().enumerate() {
                self.a.lea(Gpr::Rdi, Mem::at(Gpr::Rsi, 1 - n));
                self.a.mov_rm_r(Sz::B64, field(hot + 8 + 8 * k), Gpr::Rdi);
            }
        }
        self.bind(read_only);
        self.a.mov_r_imm64(Gpr::Rdx, 0);
        self.jmp(done);
        self.bind(next);
        self.a.alu_rm_i(Sz::B64, Alu::Add, Rm::Reg(Gpr::Rdi), 24);
        self.a.alu_rm_i(Sz::B64, Alu::Sub, Rm::Reg(Gpr::Rcx), 1);
        self.jmp(lp);
        self.bind(fail);
        self.a.mov_r_imm64(Gpr::Rdx, 1);
        self.bind(done);
        self.a.pop(Gpr::Rsi);
        self.a.pop(Gpr::Rdi);
        self.a.ret();

        // Slow memory checks, one routine per size and direction, called
        // from the access with rax = address after the inline stack and
        // last-region checks failed; they
        // walk the region table and return when the access is allowed, and
        // trap otherwise.
        for size in [1u8, 2, 4, 8] {
            for write in [false, true] {
                let l = self.fixed(L_SLOW_MEM + slow_index(size, write));
                if self.used_slow & (1 << slow_index(size, write)) == 0 {
                    continue;
                }
                // The entry for accesses whose inline test was the cached
                // region's: rdx = address - the region's start. The address
                // back into rax, then the stack test, then the walk.
                let entry = self.new_label();
                self.slow_hot[slow_index(size, write)] = entry;
                self.bind(entry);
                let hot = if write {
                    offset_of!(Ctx, hot_w)
                } else {
                    offset_of!(Ctx, hot_r)
                };
                self.a.mov_r_rm(Sz::B64, Gpr::Rax, Rm::Reg(Gpr::Rdx));
                self.a.alu_r_rm(Sz::B64, Alu::Add, Gpr::Rax, field(hot));
                self.stack_test(size as i32);
                self.jcc(Cc::A, l);
                self.a.ret();
                self.bind(l);
                let fail = self.new_label();
                self.a.mov_r_imm64(Gpr::Rcx, size as u64);
                self.a.mov_r_imm64(Gpr::Rdx, write as u64);
                let l = self.fixed(L_CHECK_MEM);
                self.call(l);
                self.a.test_rm_r(Sz::B32, Rm::Reg(Gpr::Rdx), Gpr::Rdx);
                self.jcc(Cc::Ne, fail);
                self.a.ret();
                self.bind(fail);
                // rdx = the access's return address (see `Lowered::sites`).
                self.a.pop(Gpr::Rdx);
                self.a
                    .mov_r_imm64(Gpr::Rcx, size as u64 | (write as u64) << 8);
                let l = self.fixed(L_TRAP_MEM);
                self.jmp(l);
            }
        }

        // Helper call: rcx = table index or id, rdx = instruction index,
        // with bit 32 set when rcx is an id (callx). The arguments go to the
        // trampoline in registers (System V: rsi, rdx, rcx, r8, r9 after the
        // `Ctx` in rdi), never through memory that Rust would read back
        // with wider loads than the stores (a store-forwarding stall).
        // r1-r5 are kept, as the interpreter keeps them (see the module
        // docs): pushed here, popped after the call.
        let l = self.fixed(L_HELPER);
        self.bind(l);
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, call_h)), Gpr::Rcx);
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, call_site)), Gpr::Rdx);
        // bpf-to-bpf calls push only what their callee needs (see
        // `local_call`), so rsp can be anything here: align it for the
        // System V call, keeping the old value to pop back into rsp.
        self.a.mov_r_rm(Sz::B64, Gpr::Rax, Rm::Reg(Gpr::Rsp));
        self.a.alu_rm_i(Sz::B64, Alu::And, Rm::Reg(Gpr::Rsp), -16);
        self.a.push(Gpr::Rax);
        for &r in &REG_MAP[1..=5] {
            self.a.push(r);
        }
        // Six pushes from a 16-aligned rsp: aligned again for the call.
        self.a.mov_r_rm(Sz::B64, Gpr::Rdx, Rm::Reg(REG_MAP[2]));
        self.a.mov_r_rm(Sz::B64, Gpr::Rcx, Rm::Reg(REG_MAP[3]));
        self.a.mov_r_rm(Sz::B64, Gpr::R8, Rm::Reg(REG_MAP[4]));
        self.a.mov_r_rm(Sz::B64, Gpr::R9, Rm::Reg(REG_MAP[5]));
        self.a.mov_r_rm(Sz::B64, Gpr::Rsi, Rm::Reg(REG_MAP[1]));
        self.a.mov_r_rm(Sz::B64, Gpr::Rdi, Rm::Reg(CTX));
        self.a.call_rm(field(offset_of!(Ctx, trampoline)));
        for &r in REG_MAP[1..=5].iter().rev() {
            self.a.pop(r);
        }
        self.a.pop(Gpr::Rsp);
        let stopped = self.new_label();
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rdx), Gpr::Rdx);
        self.jcc(Cc::Ne, stopped);
        self.a.mov_r_rm(Sz::B64, Gpr::Rsi, Rm::Reg(Gpr::Rax));
        self.a.ret();
        self.bind(stopped);
        self.unwind();
    }

    /// Back to the entry's frame and out through the epilogue.
    fn unwind(&mut self) {
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rsp, field(offset_of!(Ctx, host_rsp)));
        let l = self.fixed(L_EPILOGUE);
        self.jmp(l);
    }

    /// Enters a new frame and calls `target` (a label, or the address in
    /// `rcx` when `None`, with `rax` = slot * 8 when `callx_slot_in_rax`).
    fn local_call(&mut self, idx: usize, target: Option<usize>, callx_slot_in_rax: bool) {
        // What the callee changes (see `subprog_frames`): the r6-r9 its own
        // instructions write (its callees save theirs) and whether it names
        // r10; everything for `callx` or when the program's shape does not
        // allow telling.
        if !self.frames_known {
            self.frames_known = true;
            self.frames = subprog_frames(self.input.prog);
            self.frame_calls = !self.input.checked && !self.input.budget && self.frames.is_some();
        }
        let m = match (&self.frames, target) {
            (Some(frames), Some(t)) => frames
                .binary_search_by_key(&(t as u32), |f| f.0)
                .map_or(FRAME_ALL, |k| frames[k].1),
            _ => FRAME_ALL,
        };
        let saved = [Gpr::Rbx, Gpr::R12, Gpr::R14, Gpr::R15];
        if let (true, Some(t)) = (self.frame_calls, target) {
            // Verified code: the verifier bounds the call chain at 8
            // frames, so the new frame is simply the caller's minus 512
            // (what `stack_top - depth * 512` gives) and no depth is kept.
            // r10 only moves when the callee names it (the verifier refuses
            // writes to r10, so `add` undoes the `sub`; a callee that does
            // not name r10 leaves the caller's frame alone, and its own
            // callees' frames still start below the caller's).
            for (k, &r) in saved.iter().enumerate() {
                if m & (1 << k) != 0 {
                    self.a.push(r);
                }
            }
            let r10 = m & FRAME_R10 != 0;
            if r10 {
                self.a
                    .alu_rm_i(Sz::B64, Alu::Sub, Rm::Reg(Gpr::Rbp), STACK_SIZE as i32);
            }
            self.pending = 0;
            self.call(t);
            if r10 {
                self.a
                    .alu_rm_i(Sz::B64, Alu::Add, Rm::Reg(Gpr::Rbp), STACK_SIZE as i32);
            }
            for (k, &r) in saved.iter().enumerate().rev() {
                if m & (1 << k) != 0 {
                    self.a.pop(r);
                }
            }
            return;
        }
        let d = Gpr::Rdx;
        self.a.mov_r_rm(Sz::B64, d, field(offset_of!(Ctx, depth)));
        self.a
            .alu_rm_i(Sz::B64, Alu::Cmp, Rm::Reg(d), (MAX_CALL_FRAMES - 1) as i32);
        let l = self.trap_stub(status::DEPTH, idx);
        self.jcc(Cc::Ae, l);
        self.budget_check(idx);
        if self.input.budget && callx_slot_in_rax {
            // Credit the part of the target's straight-line run that the
            // call skips: remaining += adj[slot] (rax = slot * 8 indexes a
            // table of u64).
            self.a.alu_r_rm(
                Sz::B64,
                Alu::Add,
                Gpr::Rax,
                field(offset_of!(Ctx, callx_adj)),
            );
            self.a
                .mov_r_rm(Sz::B64, Gpr::Rax, Rm::Mem(Mem::at(Gpr::Rax, 0)));
            self.a.alu_rm_r(
                Sz::B64,
                Alu::Add,
                field(offset_of!(Ctx, remaining)),
                Gpr::Rax,
            );
        }
        self.pending = 0;
        self.a.alu_rm_i(Sz::B64, Alu::Add, Rm::Reg(d), 1);
        self.a.mov_rm_r(Sz::B64, field(offset_of!(Ctx, depth)), d);
        for (k, &r) in saved.iter().enumerate() {
            if m & (1 << k) != 0 {
                self.a.push(r);
            }
        }
        self.a.push(Gpr::Rbp);
        self.a.shift_i(Sz::B32, Shift::Shl, Rm::Reg(d), 9);
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rbp, field(offset_of!(Ctx, stack_top)));
        self.a.alu_rm_r(Sz::B64, Alu::Sub, Rm::Reg(Gpr::Rbp), d);
        match target {
            Some(t) => self.call(t),
            None => self.a.call_rm(Rm::Reg(Gpr::Rcx)),
        }
        self.a.pop(Gpr::Rbp);
        for (k, &r) in saved.iter().enumerate().rev() {
            if m & (1 << k) != 0 {
                self.a.pop(r);
            }
        }
        self.a
            .alu_rm_i(Sz::B64, Alu::Sub, field(offset_of!(Ctx, depth)), 1);
    }

    /// Instruction index of the target of the jump or call at `i`.
    fn target(&self, i: usize, off: i64) -> usize {
        let prog = self.input.prog;
        prog.pcs()[i]
            .branch(off)
            .and_then(|t| prog.index_of(t))
            .expect("Program checked branch targets")
    }

    /// The value of the `lddw` at `i` (`None`: unresolved).
    fn imm64(&self, i: usize, imm: &Imm64) -> Option<u64> {
        let prog = self.input.prog;
        let pc = prog.pcs()[i];
        let resolve = || self.input.resolver.and_then(|r| r.resolve(pc, imm));
        match *imm {
            Imm64::Value(v) => Some(v),
            Imm64::Func(off) => resolve().or_else(|| {
                pc.branch(off as i64)
                    .map(|t| bpfkit_interp::FUNC_ADDR_BASE.wrapping_add(8 * t.0 as u64))
            }),
            _ => resolve(),
        }
    }

    /// Emits the call at `i` to helper `id` as an inline array lookup when
    /// it is `bpf_map_lookup_elem` in unchecked mode on a map the resolver
    /// describes and `r1` is certain (see `inline`); `false`, emitting
    /// nothing, otherwise. (The verifier makes the program set `r2`, so
    /// the entry loads it without a helper call.)
    fn inline_lookup(&mut self, i: usize, id: u32) -> bool {
        let Some(resolver) = self.input.resolver else {
            return false;
        };
        if self.input.checked || id != inline::MAP_LOOKUP_ELEM {
            return false;
        }
        let prog = self.input.prog;
        let targets = self
            .branch_targets
            .get_or_insert_with(|| inline::branch_targets(prog));
        let Some(map) = inline::map_operand(prog, targets, i)
            .and_then(|(pc, imm)| resolver.array_map(pc, &imm))
        else {
            return false;
        };
        let keys = (self.rng != 0).then(|| inline::Keys {
            base: self.key64(map.base),
            max: self.key32(map.max_entries as i32),
            stride: self.key32(map.stride as i32),
        });
        inline::array_lookup(&mut self.a, &map, keys)
    }

    /// The helper table index for helper `id` (`None`: not registered).
    fn helper_calls_to(&mut self, id: u32) -> Option<u32> {
        self.helper_calls = true;
        if let Some(k) = self.table.iter().position(|(i, _)| *i == id) {
            return Some(k as u32);
        }
        let h = self.input.helpers.get(id)?;
        self.table.push((id, h.clone()));
        Some(self.table.len() as u32 - 1)
    }

    fn insn(&mut self, i: usize, insn: &Insn) {
        if self.skip > 0 {
            // Emitted with an earlier instruction (a fused idiom).
            self.skip -= 1;
            return;
        }
        match *insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => self.alu_insn(width, op, hr(dst), src),
            Insn::Neg { width, dst } => self.a.unary(sz(width), Unary::Neg, Rm::Reg(hr(dst))),
            Insn::Endian { order, bits, dst } => {
                let d = hr(dst);
                match (order, bits) {
                    (ByteOrder::ToLe, SwapBits::B16) => self.a.movzx(Sz::B16, d, Rm::Reg(d)),
                    (ByteOrder::ToLe, SwapBits::B32) => self.a.mov_rm_r(Sz::B32, Rm::Reg(d), d),
                    (ByteOrder::ToLe, SwapBits::B64) => {}
                    (_, SwapBits::B16) => {
                        self.a.shift_i(Sz::B16, Shift::Rol, Rm::Reg(d), 8);
                        self.a.movzx(Sz::B16, d, Rm::Reg(d));
                    }
                    (_, SwapBits::B32) => self.a.bswap(Sz::B32, d),
                    (_, SwapBits::B64) => self.a.bswap(Sz::B64, d),
                }
            }
            Insn::LoadImm64 { dst, imm } => match self.imm64(i, &imm) {
                Some(v) if self.rng != 0 && v != 0 => {
                    let k = self.key64(v);
                    self.a.mov_r_imm64(hr(dst), v ^ k);
                    self.a.mov_r_imm64(Gpr::Rcx, k);
                    self.a
                        .alu_rm_r(Sz::B64, Alu::Xor, Rm::Reg(hr(dst)), Gpr::Rcx);
                }
                Some(v) => self.a.mov_r_imm64(hr(dst), v),
                None => {
                    self.trap_insns.push((i as u32, *insn));
                    let l = self.trap_stub(status::UNRESOLVED, i);
                    self.jmp(l);
                }
            },
            Insn::Load {
                size,
                sign_extend,
                dst,
                src,
                off,
            } => {
                if size == Size::B && !sign_extend && self.be16_pair(i) {
                    return;
                }
                let m = self.mem_operand(src, off, size, false, i);
                self.load_from(size, sign_extend, hr(dst), m);
            }
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => {
                let m = Rm::Mem(self.mem_operand(dst, off, size, true, i));
                let s = msz(size);
                match src {
                    Src::Imm(imm) if self.blinds(imm) => {
                        self.blinded(Gpr::Rcx, imm);
                        self.a.mov_rm_r(s, m, Gpr::Rcx);
                    }
                    Src::Imm(imm) => self.a.mov_rm_i(s, m, imm),
                    Src::Reg(r) => self.a.mov_rm_r(s, m, hr(r)),
                }
            }
            Insn::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => self.atomic(i, size, op, fetch, dst, src, off),
            Insn::LoadAbs { size, imm } => self.ld_pkt(i, size, None, imm),
            Insn::LoadInd { size, src, imm } => self.ld_pkt(i, size, Some(src), imm),
            Insn::Ja { off, .. } => {
                let t = self.target(i, off as i64);
                self.budget_check(i);
                self.pending = 0;
                self.jmp(t);
            }
            Insn::Jmp {
                width,
                cond,
                dst,
                src,
                off,
            } => {
                if off == 1 && self.select(i, width, cond, dst, src) {
                    return;
                }
                let t = self.target(i, off as i64);
                let cc = self.compare(width, cond, dst, src);
                if self.input.budget {
                    let skip = self.new_label();
                    self.jcc(cc.inverse(), skip);
                    let k = self.pending as i32;
                    self.a
                        .alu_rm_i(Sz::B64, Alu::Sub, field(offset_of!(Ctx, remaining)), k);
                    let l = self.trap_stub(status::BUDGET, i);
                    self.jcc(Cc::S, l);
                    self.jmp(t);
                    self.bind(skip);
                } else {
                    self.jcc(cc, t);
                }
            }
            // An array lookup computed in place (emitted by the guard).
            Insn::Call(id) if self.inline_lookup(i, id.0) => {}
            Insn::Call(id) => match self.helper_calls_to(id.0) {
                Some(h) => {
                    self.a.mov_r_imm64(Gpr::Rcx, h as u64);
                    self.a.mov_r_imm64(Gpr::Rdx, i as u64);
                    let l = self.fixed(L_HELPER);
                    self.call(l);
                }
                None => {
                    self.trap_insns.push((i as u32, *insn));
                    let l = self.trap_stub(status::UNKNOWN_HELPER, i);
                    self.jmp(l);
                }
            },
            Insn::CallLocal(off) => {
                self.local_calls = true;
                let t = self.target(i, off as i64);
                self.local_call(i, Some(t), false);
            }
            Insn::CallKfunc { .. } => {
                let l = self.trap_stub(status::KFUNC, i);
                self.jmp(l);
            }
            Insn::Callx(r) => {
                (self.local_calls, self.helper_calls, self.has_callx) = (true, true, true);
                self.callx(i, hr(r))
            }
            Insn::Exit => {
                if self.input.budget {
                    let ret = self.new_label();
                    self.a
                        .alu_rm_i(Sz::B64, Alu::Cmp, field(offset_of!(Ctx, depth)), 0);
                    self.jcc(Cc::E, ret);
                    self.budget_check(i);
                    self.bind(ret);
                }
                self.pending = 0;
                self.a.ret();
            }
        }
    }

    fn callx(&mut self, i: usize, r: Gpr) {
        let n = self.input.prog.slot_count() as u64;
        let helper = self.new_label();
        let done = self.new_label();
        self.a.mov_r_rm(Sz::B64, Gpr::Rax, Rm::Reg(r));
        // rax - FUNC_ADDR_BASE = slot * 8 for a function address.
        let base = bpfkit_interp::FUNC_ADDR_BASE;
        self.a.mov_r_imm64(Gpr::Rcx, base.wrapping_neg());
        self.a
            .alu_rm_r(Sz::B64, Alu::Add, Rm::Reg(Gpr::Rax), Gpr::Rcx);
        self.a.mov_r_imm64(Gpr::Rcx, n.saturating_mul(8));
        self.a
            .alu_rm_r(Sz::B64, Alu::Cmp, Rm::Reg(Gpr::Rax), Gpr::Rcx);
        self.jcc(Cc::Ae, helper);
        self.a.test_rm_i(Sz::B32, Rm::Reg(Gpr::Rax), 7);
        self.jcc(Cc::Ne, helper);
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rcx, field(offset_of!(Ctx, callx_tab)));
        self.a.mov_r_rm(
            Sz::B64,
            Gpr::Rcx,
            Rm::Mem(Mem::indexed(Gpr::Rcx, Gpr::Rax, 1)),
        );
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rcx), Gpr::Rcx);
        self.jcc(Cc::E, helper);
        let saved_pending = self.pending;
        self.local_call(i, None, true);
        self.jmp(done);
        self.bind(helper);
        self.pending = saved_pending;
        self.budget_flush();
        self.a.mov_r_rm(Sz::B64, Gpr::Rcx, Rm::Reg(r));
        self.a.mov_r_imm64(Gpr::Rdx, i as u64 | 1 << 32);
        let l = self.fixed(L_HELPER);
        self.call(l);
        self.bind(done);
        self.pending = 0;
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        i: usize,
        size: Size,
        op: AtomicOp,
        fetch: bool,
        dst: Reg,
        src: Reg,
        off: i16,
    ) {
        let s = msz(size);
        let n = size.bytes() as i32;
        let frame = self.in_frame(dst, off, n);
        let mut m = self.mem_operand(dst, off, size, true, i);
        let v = hr(src);
        if !frame {
            // The alignment test below needs the address.
            self.a.lea(Gpr::Rax, m);
            m = Mem::at(Gpr::Rax, 0);
        }
        if frame {
            // Frames are 8-aligned (the stack is a `[u64]`), so alignment is
            // known from the offset.
            self.atomic_body(s, op, fetch, m, v, off as i32 % n == 0);
            return;
        }
        // A misaligned locked access that crosses a cache line is a split
        // lock (slow, or fatal with split-lock detection); misaligned
        // atomics only occur in programs a verifier rejects, and the
        // interpreter does them as plain read-modify-writes, so do the same.
        let (unaligned, done) = (self.new_label(), self.new_label());
        self.a.test_rm_i(Sz::B32, Rm::Reg(Gpr::Rax), n - 1);
        self.jcc(Cc::Ne, unaligned);
        self.atomic_body(s, op, fetch, m, v, true);
        self.jmp(done);
        self.bind(unaligned);
        self.atomic_body(s, op, fetch, m, v, false);
        self.bind(done);
    }

    /// One atomic operation on `m` with `v`: locked instructions, or
    /// (`locked = false`) the same effect as a plain read-modify-write.
    fn atomic_body(&mut self, s: Sz, op: AtomicOp, fetch: bool, mut m: Mem, v: Gpr, locked: bool) {
        let alu = |op| match op {
            AtomicOp::Add => Alu::Add,
            AtomicOp::Or => Alu::Or,
            AtomicOp::And => Alu::And,
            _ => Alu::Xor,
        };
        if m.base == Gpr::Rax && (fetch || matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg)) {
            // rax is needed for the old value.
            self.a.mov_r_rm(Sz::B64, Gpr::Rdx, Rm::Reg(Gpr::Rax));
            m = Mem::at(Gpr::Rdx, 0);
        }
        match op {
            AtomicOp::Add if fetch => {
                if locked {
                    self.a.lock();
                }
                self.a.xadd(s, m, v);
            }
            AtomicOp::Add | AtomicOp::Or | AtomicOp::And | AtomicOp::Xor if !fetch => {
                // Without fetch: one (locked) read-modify-write.
                if locked {
                    self.a.lock();
                }
                self.a.alu_rm_r(s, alu(op), Rm::Mem(m), v);
            }
            AtomicOp::Add | AtomicOp::Or | AtomicOp::And | AtomicOp::Xor => {
                // fetch (not add): compare-exchange loop (SDM 3.2 CMPXCHG).
                self.a.mov_r_rm(s, Gpr::Rax, Rm::Mem(m));
                let lp = self.new_label();
                self.bind(lp);
                self.a.mov_r_rm(s, Gpr::Rcx, Rm::Reg(Gpr::Rax));
                self.a.alu_rm_r(s, alu(op), Rm::Reg(Gpr::Rcx), v);
                if locked {
                    self.a.lock();
                    self.a.cmpxchg(s, m, Gpr::Rcx);
                    self.jcc(Cc::Ne, lp);
                } else {
                    self.a.mov_rm_r(s, Rm::Mem(m), Gpr::Rcx);
                }
                self.a.mov_r_rm(s, v, Rm::Reg(Gpr::Rax));
            }
            AtomicOp::Xchg => {
                if locked {
                    // XCHG with memory is always locked (SDM 3.2 XCHG).
                    self.a.xchg(s, m, v);
                } else {
                    self.a.mov_r_rm(s, Gpr::Rcx, Rm::Mem(m));
                    self.a.mov_rm_r(s, Rm::Mem(m), v);
                    self.a.mov_r_rm(s, v, Rm::Reg(Gpr::Rcx));
                }
            }
            AtomicOp::Cmpxchg => {
                self.a.mov_r_rm(Sz::B64, Gpr::Rax, Rm::Reg(REG_MAP[0]));
                if locked {
                    self.a.lock();
                }
                self.a.cmpxchg(s, m, v);
                self.a.mov_r_rm(s, REG_MAP[0], Rm::Reg(Gpr::Rax));
            }
        }
    }

    fn ld_pkt(&mut self, i: usize, size: Size, src: Option<Reg>, imm: i32) {
        self.uses_regions = true;
        let n = size.bytes() as i32;
        self.a
            .alu_rm_i(Sz::B64, Alu::Cmp, field(offset_of!(Ctx, has_pkt)), 0);
        let l = self.trap_stub(status::NO_PACKET, i);
        self.jcc(Cc::E, l);
        if self.blinds(imm) {
            let k = self.key32(imm);
            self.a.mov_r_imm64(Gpr::Rax, (imm ^ k) as u32 as u64);
            self.a.alu_rm_i(Sz::B32, Alu::Xor, Rm::Reg(Gpr::Rax), k);
        } else {
            self.a.mov_r_imm64(Gpr::Rax, imm as u32 as u64);
        }
        if let Some(s) = src {
            self.a.alu_rm_r(Sz::B32, Alu::Add, Rm::Reg(Gpr::Rax), hr(s));
        }
        // A negative offset (as i32) or one past the packet ends the program
        // with r0 = 0, as in the interpreter (and the kernel).
        let stop = self.fixed(L_STOP0);
        self.a.test_rm_r(Sz::B32, Rm::Reg(Gpr::Rax), Gpr::Rax);
        self.jcc(Cc::S, stop);
        self.a.lea(Gpr::Rdx, Mem::at(Gpr::Rax, n));
        self.a
            .alu_r_rm(Sz::B64, Alu::Cmp, Gpr::Rdx, field(offset_of!(Ctx, pkt_len)));
        self.jcc(Cc::A, stop);
        self.a.alu_r_rm(
            Sz::B64,
            Alu::Add,
            Gpr::Rax,
            field(offset_of!(Ctx, pkt_start)),
        );
        let m = Rm::Mem(Mem::at(Gpr::Rax, 0));
        let r0 = REG_MAP[0];
        match size {
            Size::B => self.a.movzx(Sz::B8, r0, m),
            Size::H => {
                self.a.movzx(Sz::B16, r0, m);
                self.a.shift_i(Sz::B16, Shift::Rol, Rm::Reg(r0), 8);
                self.a.movzx(Sz::B16, r0, Rm::Reg(r0));
            }
            Size::W => {
                self.a.mov_r_rm(Sz::B32, r0, m);
                self.a.bswap(Sz::B32, r0);
            }
            Size::DW => {
                self.a.mov_r_rm(Sz::B64, r0, m);
                self.a.bswap(Sz::B64, r0);
            }
        }
    }

    /// Whether `imm` is emitted blinded (constant blinding on, and not 0,
    /// which needs no constant in the code).
    fn blinds(&self, imm: i32) -> bool {
        self.rng != 0 && imm != 0
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64 (Marsaglia): keys need to be unpredictable to the
        // program's author, not cryptographic; the seed is per compile.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A fresh 32-bit key for `imm`: nonzero and not `imm` itself, so
    /// neither `imm ^ key` nor `key` is `imm`, and `imm ^ key` is not 0.
    fn key32(&mut self, imm: i32) -> i32 {
        loop {
            let k = (self.next_rand() >> 32) as i32;
            if k != 0 && k != imm {
                return k;
            }
        }
    }

    fn key64(&mut self, v: u64) -> u64 {
        loop {
            let k = self.next_rand();
            if k != 0 && k != v {
                return k;
            }
        }
    }

    /// `dst` = `imm` sign-extended to 64 bits, with neither `imm` nor its
    /// encoding in the code: `mov dst, imm ^ key; xor dst, key`.
    fn blinded(&mut self, dst: Gpr, imm: i32) {
        let k = self.key32(imm);
        self.a.mov_r_imm64(dst, (imm ^ k) as i64 as u64);
        self.a.alu_rm_i(Sz::B64, Alu::Xor, Rm::Reg(dst), k);
    }

    /// An ALU instruction with its eBPF source, blinding the immediate
    /// when asked (shift counts are one byte and stay as they are).
    fn alu_insn(&mut self, width: Width, op: AluOp, d: Gpr, src: Src) {
        match src {
            Src::Reg(r) => self.alu(width, op, d, Opnd::Reg(hr(r))),
            Src::Imm(imm)
                if self.blinds(imm) && !matches!(op, AluOp::Lsh | AluOp::Rsh | AluOp::Arsh) =>
            {
                if matches!(op, AluOp::Mov | AluOp::MovSx(_)) {
                    let k = self.key32(imm);
                    if width == Width::W64 {
                        self.a.mov_r_imm64(d, (imm ^ k) as i64 as u64);
                        self.a.alu_rm_i(Sz::B64, Alu::Xor, Rm::Reg(d), k);
                    } else {
                        self.a.mov_r_imm64(d, (imm ^ k) as u32 as u64);
                        self.a.alu_rm_i(Sz::B32, Alu::Xor, Rm::Reg(d), k);
                    }
                } else {
                    self.blinded(Gpr::Rcx, imm);
                    self.alu(width, op, d, Opnd::Reg(Gpr::Rcx));
                }
            }
            Src::Imm(imm) => self.alu(width, op, d, Opnd::Imm(imm)),
        }
    }

    fn alu(&mut self, width: Width, op: AluOp, d: Gpr, src: Opnd) {
        let s = sz(width);
        let dr = Rm::Reg(d);
        let w64 = width == Width::W64;
        match (op, src) {
            (AluOp::Mov, Opnd::Imm(imm)) => {
                let v = if w64 {
                    imm as i64 as u64
                } else {
                    imm as u32 as u64
                };
                self.a.mov_r_imm64(d, v);
            }
            (AluOp::Mov, Opnd::Reg(r)) => {
                if r != d || !w64 {
                    self.a.mov_rm_r(s, dr, r);
                }
            }
            (AluOp::MovSx(from), Opnd::Reg(r)) => {
                let r = Rm::Reg(r);
                match (from, w64) {
                    (SignExtFrom::B8, _) => self.a.movsx(s, Sz::B8, d, r),
                    (SignExtFrom::B16, _) => self.a.movsx(s, Sz::B16, d, r),
                    (SignExtFrom::B32, true) => self.a.movsx(Sz::B64, Sz::B32, d, r),
                    (SignExtFrom::B32, false) => self.a.mov_r_rm(Sz::B32, d, r),
                }
            }
            (AluOp::MovSx(_), Opnd::Imm(imm)) => self.alu(width, AluOp::Mov, d, Opnd::Imm(imm)),
            (AluOp::Add | AluOp::Sub | AluOp::Or | AluOp::And | AluOp::Xor, _) => {
                let o = match op {
                    AluOp::Add => Alu::Add,
                    AluOp::Sub => Alu::Sub,
                    AluOp::Or => Alu::Or,
                    AluOp::And => Alu::And,
                    _ => Alu::Xor,
                };
                match src {
                    Opnd::Imm(imm) => self.a.alu_rm_i(s, o, dr, imm),
                    Opnd::Reg(r) => self.a.alu_rm_r(s, o, dr, r),
                }
            }
            (AluOp::Mul, Opnd::Imm(imm)) => self.a.imul_r_rm_i(s, d, dr, imm),
            (AluOp::Mul, Opnd::Reg(r)) => self.a.imul_r_rm(s, d, Rm::Reg(r)),
            (AluOp::Lsh | AluOp::Rsh | AluOp::Arsh, _) => {
                let o = match op {
                    AluOp::Lsh => Shift::Shl,
                    AluOp::Rsh => Shift::Shr,
                    _ => Shift::Sar,
                };
                match src {
                    Opnd::Imm(imm) => {
                        let c = (imm as u32 & if w64 { 63 } else { 31 }) as u8;
                        if c == 0 {
                            // A zero count leaves dst, zero-extended in 32 bits.
                            if !w64 {
                                self.a.mov_rm_r(Sz::B32, dr, d);
                            }
                        } else {
                            self.a.shift_i(s, o, dr, c);
                        }
                    }
                    Opnd::Reg(r) => {
                        self.a.mov_rm_r(Sz::B32, Rm::Reg(Gpr::Rcx), r);
                        // A 32-bit shift writes its destination, so it
                        // zero-extends even when the masked count is 0 (only
                        // the flags are left alone): no `mov d32, d32`.
                        // Tested by `shift32_by_register_zero_extends`.
                        self.a.shift_cl(s, o, dr);
                    }
                }
            }
            (AluOp::Div | AluOp::Mod | AluOp::Sdiv | AluOp::Smod, Opnd::Imm(imm)) => {
                self.divmod_imm(width, op, d, imm)
            }
            (AluOp::Div | AluOp::Mod | AluOp::Sdiv | AluOp::Smod, Opnd::Reg(r)) => {
                self.divmod_reg(width, op, d, r)
            }
        }
    }

    fn divmod_imm(&mut self, width: Width, op: AluOp, d: Gpr, imm: i32) {
        let s = sz(width);
        let w64 = width == Width::W64;
        let dr = Rm::Reg(d);
        let divisor = if w64 {
            imm as i64 as u64
        } else {
            imm as u32 as u64
        };
        let signed = matches!(op, AluOp::Sdiv | AluOp::Smod);
        let is_div = matches!(op, AluOp::Div | AluOp::Sdiv);
        if divisor == 0 {
            // RFC 9669 4.1: x / 0 = 0, x % 0 = x (zero-extended in 32 bits).
            if is_div {
                self.a.mov_r_imm64(d, 0);
            } else if !w64 {
                self.a.mov_rm_r(Sz::B32, dr, d);
            }
            return;
        }
        if signed && imm == -1 {
            // INT_MIN / -1 = INT_MIN (wrapping neg), INT_MIN % -1 = 0.
            if is_div {
                self.a.unary(s, Unary::Neg, dr);
            } else {
                self.a.mov_r_imm64(d, 0);
            }
            return;
        }
        if !signed && divisor.is_power_of_two() && divisor <= i32::MAX as u64 {
            if is_div {
                let k = divisor.trailing_zeros() as u8;
                if k == 0 {
                    if !w64 {
                        self.a.mov_rm_r(Sz::B32, dr, d);
                    }
                } else {
                    self.a.shift_i(s, Shift::Shr, dr, k);
                }
            } else {
                self.a.alu_rm_i(s, Alu::And, dr, (divisor - 1) as i32);
            }
            return;
        }
        self.a.mov_r_rm(s, Gpr::Rax, dr);
        self.a.mov_r_imm64(Gpr::Rcx, divisor);
        if signed {
            self.a.cqo(s);
            self.a.unary(s, Unary::Idiv, Rm::Reg(Gpr::Rcx));
        } else {
            self.a.mov_r_imm64(Gpr::Rdx, 0);
            self.a.unary(s, Unary::Div, Rm::Reg(Gpr::Rcx));
        }
        let res = if is_div { Gpr::Rax } else { Gpr::Rdx };
        self.a.mov_r_rm(s, d, Rm::Reg(res));
    }

    fn divmod_reg(&mut self, width: Width, op: AluOp, d: Gpr, r: Gpr) {
        let s = sz(width);
        let w64 = width == Width::W64;
        let dr = Rm::Reg(d);
        let signed = matches!(op, AluOp::Sdiv | AluOp::Smod);
        let is_div = matches!(op, AluOp::Div | AluOp::Sdiv);
        let zero = self.new_label();
        let done = self.new_label();
        // The divisor may be dst itself: keep it in rcx.
        self.a.mov_r_rm(s, Gpr::Rcx, Rm::Reg(r));
        self.a.test_rm_r(s, Rm::Reg(Gpr::Rcx), Gpr::Rcx);
        self.jcc(Cc::E, zero);
        let mut minus1 = None;
        if signed {
            let l = self.new_label();
            self.a.alu_rm_i(s, Alu::Cmp, Rm::Reg(Gpr::Rcx), -1);
            self.jcc(Cc::E, l);
            minus1 = Some(l);
        }
        self.a.mov_r_rm(s, Gpr::Rax, dr);
        if signed {
            self.a.cqo(s);
            self.a.unary(s, Unary::Idiv, Rm::Reg(Gpr::Rcx));
        } else {
            self.a.mov_r_imm64(Gpr::Rdx, 0);
            self.a.unary(s, Unary::Div, Rm::Reg(Gpr::Rcx));
        }
        let res = if is_div { Gpr::Rax } else { Gpr::Rdx };
        self.a.mov_r_rm(s, d, Rm::Reg(res));
        self.jmp(done);
        if let Some(l) = minus1 {
            self.bind(l);
            if is_div {
                self.a.unary(s, Unary::Neg, dr);
            } else {
                self.a.mov_r_imm64(d, 0);
            }
            self.jmp(done);
        }
        self.bind(zero);
        if is_div {
            self.a.mov_r_imm64(d, 0);
        } else if !w64 {
            self.a.mov_rm_r(Sz::B32, dr, d);
        }
        self.bind(done);
    }
}

/// Multi-instruction idioms: sequences clang writes for BPF that fewer
/// x86 instructions do. Each takes effect only when the instructions it
/// absorbs are not jump targets (so nothing enters the sequence in the
/// middle) and leaves the registers, memory and traps exactly as the
/// instructions one by one would (a trap reports the same instruction and
/// address: registers are not observable after a trap, memory is, and
/// the absorbed instructions do not write memory).
impl Emitter<'_> {
    /// Whether instructions `from..=to` may be emitted with an earlier one:
    /// none is a jump target, and the program has no `callx` (which can
    /// land anywhere). The targets are found at the first candidate.
    fn fusable(&mut self, from: usize, to: usize) -> bool {
        let prog = self.input.prog;
        let t = self
            .branch_targets
            .get_or_insert_with(|| inline::branch_targets(prog));
        to < self.n && !t[from..=to].iter().any(|&b| b)
    }

    /// Sets the flags of `dst <cond> src` and returns the condition code
    /// that holds when the jump is taken.
    fn compare(&mut self, width: Width, cond: Cond, dst: Reg, src: Src) -> Cc {
        let s = sz(width);
        let d = Rm::Reg(hr(dst));
        let src = match src {
            Src::Imm(imm) if self.blinds(imm) => {
                self.blinded(Gpr::Rcx, imm);
                Opnd::Reg(Gpr::Rcx)
            }
            Src::Imm(imm) => Opnd::Imm(imm),
            Src::Reg(r) => Opnd::Reg(hr(r)),
        };
        match (cond, src) {
            (Cond::Set, Opnd::Imm(imm)) => self.a.test_rm_i(s, d, imm),
            (Cond::Set, Opnd::Reg(r)) => self.a.test_rm_r(s, d, r),
            // `test d, d` sets ZF, SF and CF = OF = 0 exactly as `cmp d, 0`.
            (_, Opnd::Imm(0)) => self.a.test_rm_r(s, d, hr(dst)),
            (_, Opnd::Imm(imm)) => self.a.alu_rm_i(s, Alu::Cmp, d, imm),
            (_, Opnd::Reg(r)) => self.a.alu_rm_r(s, Alu::Cmp, d, r),
        }
        cond_cc(cond)
    }

    /// `dst = load(m)` of `size` bytes.
    fn load_from(&mut self, size: Size, sign_extend: bool, d: Gpr, m: Mem) {
        let m = Rm::Mem(m);
        match (size, sign_extend) {
            (Size::B, false) => self.a.movzx(Sz::B8, d, m),
            (Size::H, false) => self.a.movzx(Sz::B16, d, m),
            (Size::W, false) => self.a.mov_r_rm(Sz::B32, d, m),
            (Size::DW, _) => self.a.mov_r_rm(Sz::B64, d, m),
            (Size::B, true) => self.a.movsx(Sz::B64, Sz::B8, d, m),
            (Size::H, true) => self.a.movsx(Sz::B64, Sz::B16, d, m),
            (Size::W, true) => self.a.movsx(Sz::B64, Sz::B32, d, m),
        }
    }

    /// ALU instruction `i` (the lowering loop's common case), possibly with
    /// the ones after it.
    fn alu_at(&mut self, i: usize, width: Width, op: AluOp, dst: Reg, src: Src) {
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if let (AluOp::Mov, Src::Reg(s)) = (op, src) {
            if s != dst && (self.rotate(i, width, dst, s) || self.mov_op(i, width, dst, s)) {
                return;
            }
        }
        self.alu_insn(width, op, hr(dst), src)
    }

    /// `d = s; d op= x` as one instruction (`lea` for `+=` a register,
    /// `movzx` for `&= 0xff`/`0xffff`, three-operand `imul`). A 32-bit move
    /// zero-extends, so it only pairs with a 32-bit operation; a 64-bit one
    /// pairs with both. Not done, because slower on this benchmark machine
    /// (a Golden Cove-class Xeon, which executes a register move and an add
    /// of an immediate without an ALU port): `lea` for `+=` an immediate,
    /// and `d = s; d += t; d = load(d)` as one `[s + t]` load (crc32's loop,
    /// 4 % slower at every code alignment tried).
    fn mov_op(&mut self, i: usize, width: Width, d: Reg, s: Reg) -> bool {
        let insns = self.input.prog.insns();
        let Some(&Insn::Alu {
            width: w,
            op,
            dst,
            src,
        }) = insns.get(i + 1)
        else {
            return false;
        };
        if dst != d || (width == Width::W32 && w == Width::W64) {
            return false;
        }
        let (hd, hs) = (hr(d), hr(s));
        match (op, src) {
            (AluOp::Add, Src::Reg(t)) => {
                // `d += d` adds the moved value, s.
                let t = if t == d { s } else { t };
                let m = Mem::indexed(hs, hr(t), 1);
                if !self.fusable(i + 1, i + 1) {
                    return false;
                }
                match w {
                    Width::W64 => self.a.lea(hd, m),
                    Width::W32 => self.a.lea32(hd, m),
                }
            }
            (AluOp::And, Src::Imm(0xff)) if self.fusable(i + 1, i + 1) => {
                self.a.movzx(Sz::B8, hd, Rm::Reg(hs))
            }
            (AluOp::And, Src::Imm(0xffff)) if self.fusable(i + 1, i + 1) => {
                self.a.movzx(Sz::B16, hd, Rm::Reg(hs))
            }
            (AluOp::Mul, Src::Imm(k)) if !self.blinds(k) && self.fusable(i + 1, i + 1) => {
                self.a.imul_r_rm_i(sz(w), hd, Rm::Reg(hs), k)
            }
            _ => return false,
        }
        self.skip = 1;
        true
    }

    /// A rotate written as two shifted copies or-ed together (BPF has no
    /// rotate): `a = s; a >>= w - k; b = s; b <<= k; b |= a` (or `a <<= k`
    /// and `b >>= w - k`), all of one width `w`, becomes `a = s; a >>=|<<=
    /// ..; b = s; rol b, k`: `b` is the rotate, `a` keeps its value.
    fn rotate(&mut self, i: usize, width: Width, a: Reg, s: Reg) -> bool {
        let insns = self.input.prog.insns();
        let alu = |k: usize| match insns.get(k) {
            Some(&Insn::Alu {
                width: w,
                op,
                dst,
                src,
            }) if w == width => Some((op, dst, src)),
            _ => None,
        };
        let (
            Some((op1 @ (AluOp::Rsh | AluOp::Lsh), a1, Src::Imm(c1))),
            Some((AluOp::Mov, b, Src::Reg(s2))),
            Some((op3 @ (AluOp::Rsh | AluOp::Lsh), b3, Src::Imm(c3))),
            Some((AluOp::Or, b4, Src::Reg(a4))),
        ) = (alu(i + 1), alu(i + 2), alu(i + 3), alu(i + 4))
        else {
            return false;
        };
        let bits = match width {
            Width::W64 => 64,
            Width::W32 => 32,
        };
        if a1 != a || s2 != s || b3 != b || b4 != b || a4 != a || b == s || b == a || op1 == op3 {
            return false;
        }
        if !(1..bits).contains(&c1) || c1 + c3 != bits || !self.fusable(i + 1, i + 4) {
            return false;
        }
        // `b << c3 | b >> c1` (or the other way round) is `rol b, k`.
        let k = if op3 == AluOp::Lsh { c3 } else { c1 } as u8;
        let (ha, hs, hb, w) = (hr(a), hr(s), hr(b), sz(width));
        let sh = |op| {
            if op == AluOp::Lsh {
                Shift::Shl
            } else {
                Shift::Shr
            }
        };
        self.a.mov_rm_r(w, Rm::Reg(ha), hs);
        self.a.shift_i(w, sh(op1), Rm::Reg(ha), c1 as u8);
        self.a.mov_rm_r(w, Rm::Reg(hb), hs);
        self.a.shift_i(w, Shift::Rol, Rm::Reg(hb), k);
        self.skip = 4;
        true
    }

    /// A big-endian 16-bit load written as two byte loads from the same
    /// base, a shift and an or (`load_be16`):
    /// `a = *(u8 *)(b + k + 1); c = *(u8 *)(b + k); c <<= 8; c |= a` (the
    /// loads in either order) becomes `movzx a, byte [b + k + 1]; movzx c,
    /// word [b + k]; rol c16, 8`. In checked mode each byte is checked at
    /// its own instruction, in program order, before the loads.
    fn be16_pair(&mut self, i: usize) -> bool {
        let insns = self.input.prog.insns();
        let (
            Some(&Insn::Load {
                size: Size::B,
                sign_extend: false,
                dst: d1,
                src: b1,
                off: o1,
            }),
            Some(&Insn::Load {
                size: Size::B,
                sign_extend: false,
                dst: d2,
                src: b2,
                off: o2,
            }),
            Some(&Insn::Alu {
                op: AluOp::Lsh,
                src: Src::Imm(8),
                dst: c,
                ..
            }),
            Some(&Insn::Alu {
                op: AluOp::Or,
                src: Src::Reg(a),
                dst: c2,
                ..
            }),
        ) = (
            insns.get(i),
            insns.get(i + 1),
            insns.get(i + 2),
            insns.get(i + 3),
        )
        else {
            return false;
        };
        // Same base, not overwritten by the first load; two different
        // destinations, the high byte's shifted and or-ed with the low one.
        if b1 != b2 || d1 == b1 || d1 == d2 || c2 != c || a == c || a == Reg::R10 || c == Reg::R10 {
            return false;
        }
        let (hi, lo) = match (d1 == c, d2 == c, d1 == a, d2 == a) {
            (true, _, _, true) => (o1, o2),
            (_, true, true, _) => (o2, o1),
            _ => return false,
        };
        if hi as i32 + 1 != lo as i32 || !self.fusable(i + 1, i + 3) {
            return false;
        }
        let m1 = self.mem_operand(b1, o1, Size::B, false, i);
        let m2 = self.mem_operand(b2, o2, Size::B, false, i + 1);
        let (mhi, mlo) = if d1 == c { (m1, m2) } else { (m2, m1) };
        let (ha, hc) = (hr(a), hr(c));
        // The base is read by both loads: the one that overwrites it last.
        if ha == mlo.base {
            self.a.movzx(Sz::B16, hc, Rm::Mem(mhi));
            self.a.movzx(Sz::B8, ha, Rm::Mem(mlo));
        } else {
            self.a.movzx(Sz::B8, ha, Rm::Mem(mlo));
            self.a.movzx(Sz::B16, hc, Rm::Mem(mhi));
        }
        self.a.shift_i(Sz::B16, Shift::Rol, Rm::Reg(hc), 8);
        self.skip = 3;
        true
    }

    /// `if (cond) goto +1; d = x` (clang's select of a value, e.g. a
    /// boolean) as `cmov` on the inverse condition, without a branch to
    /// mispredict. Not with a budget (the two paths execute different
    /// instruction counts) or blinding (the compare may use rcx).
    fn select(&mut self, i: usize, width: Width, cond: Cond, dst: Reg, src: Src) -> bool {
        if self.input.budget || self.rng != 0 {
            return false;
        }
        let Some(&Insn::Alu {
            width: mw,
            op: AluOp::Mov,
            dst: md,
            src: ms,
        }) = self.input.prog.insns().get(i + 1)
        else {
            return false;
        };
        if md == Reg::R10 || !self.fusable(i + 1, i + 1) {
            return false;
        }
        // The value into rcx (or its own register) before the compare: a
        // `mov` of 0 is `xor`, which changes the flags.
        let v = match (mw, ms) {
            (Width::W64, Src::Reg(r)) => hr(r),
            (Width::W32, Src::Reg(r)) => {
                self.a.mov_rm_r(Sz::B32, Rm::Reg(Gpr::Rcx), hr(r));
                Gpr::Rcx
            }
            (Width::W64, Src::Imm(k)) => {
                self.a.mov_r_imm64(Gpr::Rcx, k as i64 as u64);
                Gpr::Rcx
            }
            (Width::W32, Src::Imm(k)) => {
                self.a.mov_r_imm64(Gpr::Rcx, k as u32 as u64);
                Gpr::Rcx
            }
        };
        let cc = self.compare(width, cond, dst, src);
        // 64-bit: a 32-bit cmov would zero-extend d even when it keeps it.
        self.a.cmov(Sz::B64, cc.inverse(), hr(md), Rm::Reg(v));
        self.skip = 1;
        true
    }
}

/// A source operand on the host: an immediate or a host register.
#[derive(Clone, Copy)]
enum Opnd {
    Imm(i32),
    Reg(Gpr),
}

fn sz(w: Width) -> Sz {
    match w {
        Width::W32 => Sz::B32,
        Width::W64 => Sz::B64,
    }
}

fn msz(s: Size) -> Sz {
    match s {
        Size::B => Sz::B8,
        Size::H => Sz::B16,
        Size::W => Sz::B32,
        Size::DW => Sz::B64,
    }
}

fn cond_cc(c: Cond) -> Cc {
    match c {
        Cond::Eq => Cc::E,
        Cond::Ne | Cond::Set => Cc::Ne,
        Cond::Gt => Cc::A,
        Cond::Ge => Cc::Ae,
        Cond::Lt => Cc::B,
        Cond::Le => Cc::Be,
        Cond::Sgt => Cc::G,
        Cond::Sge => Cc::Ge,
        Cond::Slt => Cc::L,
        Cond::Sle => Cc::Le,
    }
}

/// Whether the instruction can write r10 (the decoder allows it; the
/// interpreter executes it). If none does, r10 is always a frame pointer.
fn writes_r10(insn: &Insn) -> bool {
    match *insn {
        Insn::Alu { dst, .. }
        | Insn::Neg { dst, .. }
        | Insn::Endian { dst, .. }
        | Insn::LoadImm64 { dst, .. }
        | Insn::Load { dst, .. } => dst == Reg::R10,
        Insn::Atomic { src, fetch, op, .. } => {
            src == Reg::R10 && (fetch || op == AtomicOp::Xchg) && op != AtomicOp::Cmpxchg
        }
        _ => false,
    }
}

/// The eBPF registers an instruction names (bit `Reg::index`), including
/// the implicit `r0` of atomics and legacy packet loads, plus
/// [`WRITES_R10`] when it can write r10 (see [`writes_r10`]): one `match`
/// per instruction for both.
#[inline]
fn regs_info(insn: &Insn) -> u32 {
    let b = |r: Reg| 1u32 << r.index();
    let s = |s: Src| match s {
        Src::Reg(r) => b(r),
        Src::Imm(_) => 0,
    };
    let w = |dst: Reg| if dst == Reg::R10 { WRITES_R10 } else { 0 };
    match *insn {
        Insn::Alu { dst, src, .. } => b(dst) | s(src) | w(dst),
        Insn::Store { dst, src, .. } | Insn::Jmp { dst, src, .. } => b(dst) | s(src),
        Insn::Neg { dst, .. } | Insn::Endian { dst, .. } | Insn::LoadImm64 { dst, .. } => {
            b(dst) | w(dst)
        }
        Insn::Load { dst, src, .. } => 1 | b(dst) | b(src) | w(dst),
        Insn::Atomic { dst, src, .. } => {
            let r10 = if writes_r10(insn) { WRITES_R10 } else { 0 };
            1 | b(dst) | b(src) | r10
        }
        Insn::LoadAbs { .. } => 1,
        Insn::LoadInd { src, .. } => 1 | b(src),
        Insn::Callx(r) => b(r),
        _ => 0,
    }
}

/// See [`regs_info`].
const WRITES_R10: u32 = 1 << 16;

/// [`frame_bits`]: r6-r9 are bits 0-3.
const FRAME_R10: u8 = 1 << 4;
const FRAME_ALL: u8 = 0x1f;

/// What a bpf-to-bpf call into the subprogram holding `insn` must keep:
/// the r6-r9 it writes (bits 0-3; the caller expects them back) and
/// whether it names r10 ([`FRAME_R10`]: it needs a frame of its own).
#[inline]
fn frame_bits(insn: &Insn) -> u8 {
    // Bit r - 6 for r6-r9, FRAME_R10 for r10, nothing for r0-r5.
    const W: [u8; 11] = [0, 0, 0, 0, 0, 0, 1, 2, 4, 8, FRAME_R10];
    let w = |r: Reg| W[r.index()];
    let r10 = |r: Reg| w(r) & FRAME_R10;
    let s = |s: Src| match s {
        Src::Reg(r) => r10(r),
        Src::Imm(_) => 0,
    };
    match *insn {
        Insn::Alu { dst, src, .. } => w(dst) | s(src),
        Insn::Neg { dst, .. } | Insn::Endian { dst, .. } | Insn::LoadImm64 { dst, .. } => w(dst),
        Insn::Load { dst, src, .. } => w(dst) | r10(src),
        Insn::Store { dst, src, .. } | Insn::Jmp { dst, src, .. } => r10(dst) | s(src),
        // Fetching atomics and `xchg` write `src`, `cmpxchg` writes r0.
        Insn::Atomic {
            dst,
            src,
            fetch,
            op,
            ..
        } => {
            let written = fetch || op == AtomicOp::Xchg;
            r10(dst) | if written { w(src) } else { r10(src) }
        }
        Insn::LoadInd { src, .. } => r10(src),
        Insn::Callx(r) => r10(r),
        _ => 0,
    }
}

/// The subprograms of a program, split as the verifier splits them
/// (starts at call targets and `lddw` function targets), each with the
/// [`frame_bits`] of its instructions, sorted by start. `None` when a call
/// could run instructions outside its callee's range, which the verifier
/// refuses but checked mode must run: a `callx` (targets unknown), a jump
/// out of its subprogram, or a subprogram whose last instruction is not
/// `exit` or `ja` (it falls through into the next one).
fn subprog_frames(prog: &Program) -> Option<Vec<(u32, u8)>> {
    let mut frames = Vec::new();
    for (pc, insn) in prog.iter() {
        match *insn {
            Insn::Callx(_) => return None,
            Insn::CallLocal(_)
            | Insn::LoadImm64 {
                imm: Imm64::Func(_),
                ..
            } => {
                let t = insn.branch_target(pc).and_then(|t| prog.index_of(t))?;
                frames.push((t as u32, 0u8));
            }
            _ => {}
        }
    }
    if frames.is_empty() {
        return Some(frames);
    }
    frames.push((0, 0));
    frames.sort_unstable();
    frames.dedup();
    let insns = prog.insns();
    let n = insns.len();
    let mut k = 0;
    let mut end = frames.get(1).map_or(n, |f| f.0 as usize);
    for (i, (pc, insn)) in prog.iter().enumerate() {
        if i == end {
            k += 1;
            end = frames.get(k + 1).map_or(n, |f| f.0 as usize);
        }
        frames[k].1 |= frame_bits(insn);
        match *insn {
            Insn::Ja { .. } | Insn::Jmp { .. } => {
                let t = insn.branch_target(pc).and_then(|t| prog.index_of(t))?;
                if t < frames[k].0 as usize || t >= end {
                    return None;
                }
            }
            Insn::Exit => {}
            _ if i + 1 == end => return None,
            _ => {}
        }
    }
    Some(frames)
}

/// Lowers a whole program (see the module docs): first assuming that r10
/// is never written (accesses `[r10 + const]` inside the frame need no
/// check), and again without that assumption in the rare case that an
/// instruction writes r10 (only programs a verifier rejects do).
pub(crate) fn lower(input: &LowerInput<'_>) -> Lowered {
    match lower_with(input, true) {
        Some(l) => l,
        None => lower_with(input, false).expect("no assumption about r10"),
    }
}

/// One emission pass; `None` when `r10_fixed` turns out to be wrong.
fn lower_with(input: &LowerInput<'_>, r10_fixed: bool) -> Option<Lowered> {
    let prog = input.prog;
    let insns = prog.insns();
    let n = insns.len();
    // With a budget, one scan before emitting for the jump targets (where
    // the budget count is flushed) and `callx` (whose targets need the
    // per-instruction credit). Everything else (registers named, calls,
    // helpers, `lddw` values) is found while emitting, and the entry,
    // which depends on it, is emitted last.
    let mut leaders = Vec::new();
    let mut has_callx = false;
    if input.budget {
        leaders = vec![false; n + 1];
        for (pc, insn) in prog.iter() {
            match *insn {
                Insn::Ja { .. }
                | Insn::Jmp { .. }
                | Insn::CallLocal(_)
                | Insn::LoadImm64 { .. } => {
                    if let Some(t) = insn.branch_target(pc).and_then(|t| prog.index_of(t)) {
                        leaders[t] = true;
                    }
                }
                Insn::Callx(_) => has_callx = true,
                _ => {}
            }
        }
    }
    // Sized for typical code so that nothing grows while emitting (growth
    // was about a dozen reallocations per compile): checked accesses take
    // ~30 bytes and a label or two, jumps a fixup and a shrink candidate.
    let per_insn = if input.checked { 24 } else { 12 };
    let mut labels = Vec::with_capacity(2 * n + 64);
    labels.resize(n + 1 + FIXED, UNBOUND);
    let mut label_k = Vec::with_capacity(2 * n + 64);
    label_k.resize(n + 1 + FIXED, 0);
    let mut e = Emitter {
        a: Asm {
            buf: Vec::with_capacity(n * per_insn + 1024),
        },
        n,
        labels,
        label_k,
        fixups: Vec::with_capacity(n + 16),
        shrink: Vec::with_capacity(n / 2 + 16),
        cold: Vec::with_capacity(16),
        sites: Vec::with_capacity(if input.checked { n / 2 + 16 } else { 0 }),
        input,
        r10_fixed,
        pending: 0,
        used_slow: 0,
        slow_hot: [0; 8],
        leaders,
        adj: if has_callx { vec![0; n] } else { Vec::new() },
        table: Vec::new(),
        trap_insns: Vec::new(),
        uses_regions: false,
        used: 0,
        local_calls: false,
        helper_calls: false,
        has_callx: false,
        // xorshift64 must not start at 0.
        rng: input.blind.map_or(0, |s| s | 1),
        frames: None,
        frames_known: false,
        frame_calls: false,
        skip: 0,
        branch_targets: None,
    };
    let mut info = 0u32;
    for (i, insn) in insns.iter().enumerate() {
        if input.budget {
            if e.leaders[i] {
                e.budget_flush();
            }
            if has_callx {
                e.adj[i] = e.pending;
            }
            e.pending += 1;
        }
        e.bind(i);
        match *insn {
            // The most common case without the big dispatch function (and
            // the registers it names without a second one).
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                if dst == Reg::R10 && r10_fixed {
                    return None;
                }
                info |= 1 << dst.index();
                if let Src::Reg(r) = src {
                    info |= 1 << r.index();
                }
                e.alu_at(i, width, op, dst, src)
            }
            _ => {
                let r = regs_info(insn);
                if r10_fixed && r & WRITES_R10 != 0 {
                    return None;
                }
                info |= r;
                e.insn(i, insn)
            }
        }
    }
    e.used = info as u16;
    e.bind(n);
    let l = e.trap_stub(status::FELL_OFF, n);
    e.jmp(l);
    e.shared_routines();
    e.emit_cold();
    let entry_label = e.new_label();
    e.bind(entry_label);
    e.prologue();
    let Emitter {
        a,
        mut labels,
        label_k,
        sites,
        mut fixups,
        shrink,
        adj,
        table,
        trap_insns,
        uses_regions,
        has_callx,
        ..
    } = e;
    let code = relax(a.buf, &mut labels, &label_k, &mut fixups, &shrink);
    Some(Lowered {
        code,
        entry: labels[entry_label],
        offsets: if has_callx {
            labels[..n].to_vec()
        } else {
            Vec::new()
        },
        adj,
        sites: sites.iter().map(|&(l, idx)| (labels[l], idx)).collect(),
        table,
        trap_insns,
        uses_regions,
        has_callx,
    })
}

/// Shrinks long forward jumps that reach their target with a rel8 once
/// the code is laid out: decide on the metadata until nothing changes
/// (shrinking only shortens distances, so each round keeps earlier
/// decisions valid), then copy the code once, moving labels and fixups, and
/// patch every displacement.
fn relax(
    old: Vec<u8>,
    labels: &mut [u32],
    label_k: &[u32],
    fixups: &mut [Fixup],
    cands: &[Candidate],
) -> Vec<u8> {
    let long_len = |c: &Candidate| if c.cc.is_some() { 6 } else { 5 };
    let mut short = vec![false; cands.len()];
    // saved[k] = bytes saved by shrunk candidates before candidate k.
    let mut saved = vec![0usize; cands.len() + 1];
    // Old positions never change: find once how many candidates lie before
    // each candidate's target.
    let target_k: Vec<u32> = cands
        .iter()
        .map(|c| label_k[fixups[c.fixup].2 as usize])
        .collect();
    // A few rounds catch almost everything; stopping early only leaves some
    // jumps long, which is always correct.
    for _round in 0..4 {
        for k in 0..cands.len() {
            saved[k + 1] = saved[k] + if short[k] { long_len(&cands[k]) - 2 } else { 0 };
        }
        let mut changed = false;
        for (k, c) in cands.iter().enumerate() {
            if short[k] {
                continue;
            }
            let target = labels[fixups[c.fixup].2 as usize] as usize - saved[target_k[k] as usize];
            let end = c.start - saved[k] + 2;
            if target - end <= 127 {
                short[k] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for k in 0..cands.len() {
        saved[k + 1] = saved[k] + if short[k] { long_len(&cands[k]) - 2 } else { 0 };
    }
    if !short.iter().any(|&s| s) {
        let mut code = old;
        for &(at, width, label, _) in fixups.iter() {
            let ok = patch_rel(
                &mut code,
                at as usize,
                width as usize,
                labels[label as usize] as usize,
            );
            assert!(ok, "displacement out of range");
        }
        return code;
    }
    // Compact in place: the code only gets shorter.
    let mut code = old;
    let (mut from, mut to) = (0, 0);
    for (k, c) in cands.iter().enumerate() {
        if !short[k] {
            continue;
        }
        code.copy_within(from..c.start, to);
        to += c.start - from;
        code[to] = match c.cc {
            Some(cc) => 0x70 + cc as u8,
            None => 0xeb,
        };
        to += 2;
        from = c.start + long_len(c);
    }
    let len = code.len();
    code.copy_within(from..len, to);
    to += len - from;
    code.truncate(to);
    for (l, &k) in labels.iter_mut().zip(label_k) {
        if *l != UNBOUND {
            *l -= saved[k as usize] as u32;
        }
    }
    for fx in fixups.iter_mut() {
        fx.0 -= saved[fx.3 as usize] as u32;
    }
    for (k, c) in cands.iter().enumerate() {
        if short[k] {
            // Now `op rel8`: the displacement follows the one-byte opcode.
            let fx = &mut fixups[c.fixup];
            fx.0 = (c.start - saved[k] + 1) as u32;
            fx.1 = 1;
        }
    }
    for &(at, width, label, _) in fixups.iter() {
        let ok = patch_rel(
            &mut code,
            at as usize,
            width as usize,
            labels[label as usize] as usize,
        );
        assert!(ok, "displacement out of range after relaxation");
    }
    code
}
