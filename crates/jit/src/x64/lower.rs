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
//! - A helper call by table index calls its target from the call site:
//!   `call [direct + 8k]` through the run's table (`Ctx::direct`: the
//!   helper's direct entry, or `L_TRAMP`, which sends it to the run's
//!   trampoline), with r1-r5 in the System V argument registers and no
//!   store on the way (`helper_call`). In checked mode the site pushes
//!   the r1-r5 that a path from the call may read before writing them
//!   (`live_after_call`; the interpreter keeps them all across helper
//!   calls; RFC 9669 leaves them unspecified, so keeping them conforms,
//!   and the engines stay identical) and pops them after the call; in
//!   unchecked mode it does not (the verifier makes them unreadable after
//!   a call). A
//!   trampoline finds the helper and the instruction from the call's
//!   return address (`Lowered::helper_sites`); a call that stops the
//!   program leaves through a cold stub of its own that stores them in
//!   `Ctx::call_h`/`call_site` (the trap's pc and id). `callx` by id goes
//!   through a shared stub (`helper_routine`) that stores them first.
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
//!   neither is a bare `call`. In programs that call helpers, a
//!   bpf-to-bpf call to a subprogram that calls a helper (itself or
//!   through its callees, `FRAME_HELPERS`) pushes an even number of words
//!   with its return address (a dummy push when needed), so `rsp` is
//!   16-aligned at every helper call site, as at depth 0, without a
//!   per-call alignment.
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
//!   pass. A forward jump to an instruction whose distance is surely
//!   below 128 bytes (bounds per form of the few instructions in
//!   between: `near_bytes`) is emitted short at once, as relaxation would
//!   have made it; a wrong bound is detected when patching and the program
//!   is lowered again without such jumps.
//! - Compilation is one pass over the instructions (plus a scan for jump
//!   targets with a budget): helpers and `lddw` values are resolved, and
//!   the registers and kinds of calls the entry depends on are collected,
//!   while emitting; `[r10 + const]` accesses are emitted unchecked on the
//!   assumption that r10 is never written, and the pass starts over with
//!   checks in the rare case that an instruction writes r10.
//! - What does not depend on the program is not redone per compile: the
//!   working buffers (code, labels, fixups, relaxation state) are kept per
//!   thread (`Scratch`); the shared routines and the entry, which depend
//!   only on a few flags, are emitted once per thread and flag set and
//!   then replayed from a recording (`Routines`), relaxed once when it is
//!   made (`Routines::pre_relax`); the inline test of a checked access
//!   after its `lea` is encoded once per size, direction and test
//!   (`access_test`). The generated code is the same as without them.

#[path = "callback.rs"]
mod callback;

use super::encode::{fill_nops, patch_rel, Alu, Asm, Cc, Gpr, Mem, Rm, Shift, Sz, Unary, MAX_NOP};
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
pub(crate) const CTX: Gpr = Gpr::R13;

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
    /// A direct entry's call stopped the program with a trap whose pc and
    /// helper id are set once the code has returned (`crate::finish_raw_stop`).
    pub const RAW_STOP: u64 = 12;
    /// A callback-calling helper's `r2` is no function of the program
    /// (`Ctx::fault_addr` holds it; see `callback`).
    pub const BAD_CALLBACK: u64 = 13;
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
    /// Native tail calls (unchecked mode only; see `crate::tail`).
    pub tail: Option<TailInput>,
}

/// What the tail-call sequence (`Emitter::native_tail_call`) needs of the
/// `crate::TailTable` the program is compiled with.
#[derive(Clone, Copy)]
pub(crate) struct TailInput {
    /// Address of the entries for the program's context layout, one `u64`
    /// per program id (a `TailEntry`'s address, or 0).
    pub entries: u64,
    /// Number of entries.
    pub ids: u32,
}

/// The result of lowering.
pub(crate) struct Lowered {
    /// The code is `buf[..code_len]`; the rest is scratch, kept so that the
    /// buffer serves the thread's next lowering as it is (see
    /// `recycle_code`).
    pub buf: Vec<u8>,
    pub code_len: usize,
    /// Code offset of each instruction (only when the program has a
    /// `callx`; empty otherwise).
    pub offsets: Vec<u32>,
    /// Budget credit for a `callx` landing on each instruction (only with a
    /// budget and a `callx`).
    pub adj: Vec<u32>,
    /// (code offset of the return address of a slow-path call, instruction
    /// index), sorted: how a memory fault finds its instruction.
    pub sites: Vec<(u32, u32)>,
    /// (code offset of the return address of a helper call by table index,
    /// instruction index, table index), sorted: how a trampoline and the
    /// stop path find the call (see `Emitter::helper_call`).
    pub helper_sites: Vec<(u32, u32, u32)>,
    /// Code offset of the routine the run's table sends calls of helpers
    /// without a direct entry to (`u32::MAX`: no such call).
    pub tramp: u32,
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
/// Their entries for accesses whose inline test was the cached region's
/// (see `slow_routines`).
const L_SLOW_HOT: usize = 14;
/// Where the run's table sends a call to a helper without a direct entry
/// (see `Emitter::helper_call`).
const L_TRAMP: usize = 22;
/// A helper call that stopped the program: rcx = table index, rdx =
/// instruction index.
const L_HSTOP: usize = 23;
const FIXED: usize = 24;

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
    /// 0 for a jump; for an alignment pad (see [`Emitter::align_here`]),
    /// the alignment: `pad - 1` bytes were reserved at `start`, and
    /// relaxation keeps as many as reach the next multiple of `pad`.
    pad: u8,
    /// For a pad: whether the code before it falls through into it (then
    /// a long padding is jumped over rather than run as `NOP`s).
    falls_in: bool,
}

enum Cold {
    /// Trap with `status` at instruction `idx`.
    Trap { label: usize, status: u64, idx: u32 },
    /// The helper call at instruction `idx` (table index `h`) stopped the
    /// program (see `Emitter::helper_call`).
    Stop { label: usize, h: u32, idx: u32 },
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
    /// Per checked access: where its slow-path call returns (offset before
    /// relaxation, shrink candidates before it: what a label bound there
    /// would hold, without the label) and its instruction index.
    sites: Vec<(u32, u32, u32)>,
    /// Per helper call by table index: where its call returns (as in
    /// `sites`), its instruction index and table index.
    hsites: Vec<(u32, u32, u32, u32)>,
    input: &'a LowerInput<'a>,
    r10_fixed: bool,
    pending: u32,
    /// Which slow-path routines are called (bit `slow_index`).
    used_slow: u8,
    leaders: Vec<bool>,
    /// Instructions whose start is aligned, in order
    /// (`Program::loop_heads`);    /// empty    /// when nothing is.
    heads: &'a [u32],
    /// Their alignment in bytes (a power of two; 1: none).
    align: usize,
    adj: Vec<u32>,
    table: Vec<(u32, Arc<dyn Helper>)>,
    trap_insns: Vec<(u32, Insn)>,
    uses_regions: bool,
    /// eBPF registers the program names (bit `Reg::index`).
    used: u16,
    /// [`regs_info`] of the instructions lowered so far, collected by the
    /// lowering's own dispatch (no second `match` per instruction).
    info: u32,
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
    /// The program calls helpers (or may, by `callx`), so that bpf-to-bpf
    /// calls keep rsp 16-aligned (known with `frames`).
    aligned_calls: bool,
    /// Whether the program has bpf-to-bpf calls (`call local`, `callx`),
    /// found at the first helper call in checked mode.
    subprograms: Option<bool>,
    /// Instructions after the current one that a fused idiom already
    /// emitted (see [`Emitter::fusable`]).
    skip: u32,
    /// [`inline::branch_targets`], at the first lookup that may be inlined
    /// (or the first candidate idiom with `eager_targets`; all true with a
    /// `callx`).
    branch_targets: Option<Vec<bool>>,
    /// Whether idioms look the jump targets up before fusing (a retry);
    /// otherwise they are checked afterwards (see [`Emitter::fusable`]).
    eager_targets: bool,
    /// (first, last) instruction absorbed by each idiom fused without the
    /// jump targets known, in order.
    fused: Vec<(u32, u32)>,
    /// Fixed routines referenced so far (bit per `L_*` label).
    refs: u32,
    /// The instruction being lowered.
    cur: usize,
    /// Forward jumps to instructions at most this many bytes away by
    /// [`near_bytes`] are emitted short at once (see
    /// [`Emitter::near_target`]; 0: none).
    near_limit: usize,
}

const UNBOUND: u32 = u32::MAX;

impl<'a> Emitter<'a> {
    /// The label of fixed routine `l`, marked as referenced: the shared
    /// routines nothing refers to are not emitted.
    fn fixed(&mut self, l: usize) -> usize {
        self.refs |= 1 << l;
        self.n + 1 + l
    }

    /// Whether fixed routine `l` was referenced (see [`Emitter::fixed`]).
    fn referenced(&self, l: usize) -> bool {
        self.refs & 1 << l != 0
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
        let long = if t == UNBOUND {
            !(self.near_limit > 0 && label <= self.n && self.near_target(label))
        } else {
            i8::try_from(t as i64 - (start + 2) as i64).is_err()
        };
        let at = match cc {
            Some(cc) => self.a.jcc(cc, long),
            None => self.a.jmp(long),
        };
        if long && t == UNBOUND {
            self.shrink.push(Candidate {
                start,
                cc,
                fixup: self.fixups.len(),
                pad: 0,
                falls_in: false,
            });
        }
        let k = self.shrink.len();
        self.fixups
            .push((at as u32, if long { 4 } else { 1 }, label as u32, k as u32));
    }

    fn jmp(&mut self, label: usize) {
        self.branch(None, label);
    }

    /// Whether a jump emitted now, at the end of instruction `self.cur`,
    /// to the label of instruction `t` (later) surely reaches it with a
    /// rel8: the instructions in between take at most 127 bytes by the
    /// bounds of [`near_bytes`]. Such a jump is emitted short at once, not
    /// as a shrink candidate, which saves relaxation its bookkeeping and a
    /// copy per jump (the most common forward jump skips a few
    /// instructions). Relaxation would have shrunk it as well, so the code
    /// is the same; should a bound ever be wrong, `relax` finds the
    /// displacement out of range and the program is lowered again without
    /// this (`Retry::Far`).
    fn near_target(&self, t: usize) -> bool {
        let between = self.input.prog.insns().get(self.cur + 1..t);
        let Some(between) = between.filter(|b| b.len() <= NEAR_SCAN) else {
            return false;
        };
        let mut bytes = 0;
        for insn in between {
            bytes += near_bytes(insn, self.input.checked, self.r10_fixed);
            if bytes > self.near_limit {
                return false;
            }
        }
        // The padding reserved before aligned instructions in the span
        // (the target's own included: its padding comes before its label).
        if !self.heads.is_empty() {
            let first = self.heads.partition_point(|&h| h as usize <= self.cur);
            let pads = self.heads[first..]
                .iter()
                .take_while(|&&h| h as usize <= t)
                .count();
            bytes += pads * (self.align - 1);
        }
        bytes <= self.near_limit
    }

    /// Reserves `align - 1` bytes here, a candidate of relaxation that
    /// keeps only the padding that brings the next byte to a multiple of
    /// `align` in the final layout (and writes it then). The reservation
    /// is the most the padding can take, so every distance decided before
    /// the final layout only shrinks, as with shrunk jumps.
    fn align_here(&mut self, falls_in: bool) {
        let start = self.a.pos();
        self.a.reserve(self.align - 1);
        self.shrink.push(Candidate {
            start,
            cc: None,
            fixup: usize::MAX,
            pad: self.align as u8,
            falls_in,
        });
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
        // The subtraction, the compare and the `jcc rel32` to the cold stub
        // are the same bytes for every access of one size, direction and
        // test (copied from `access_tests`); only the displacement is
        // patched. The jump stays long: cold stubs come after the routines.
        let cold = self.new_label();
        let (bytes, len) = access_test_window(n, write, r10);
        self.a.extend_window(bytes, *len);
        let k = self.shrink.len();
        self.fixups
            .push((self.a.pos() as u32 - 4, 4, cold as u32, k as u32));
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

    /// Records that the call just emitted returns to the access of
    /// instruction `idx` (see `Lowered::sites`).
    fn site(&mut self, idx: u32) {
        let at = (self.a.pos() as u32, self.shrink.len() as u32, idx);
        self.sites.push(at);
    }

    fn emit_cold(&mut self) {
        let mut cold = std::mem::take(&mut self.cold);
        for c in &cold {
            match *c {
                Cold::Trap { label, status, idx } => {
                    self.bind(label);
                    self.a.mov_r_imm64(Gpr::Rcx, status);
                    self.a.mov_r_imm64(Gpr::Rdx, idx as u64);
                    let l = self.fixed(L_TRAP);
                    self.jmp(l);
                }
                Cold::Stop { label, h, idx } => {
                    self.bind(label);
                    self.a.mov_r_imm64(Gpr::Rcx, h as u64);
                    self.a.mov_r_imm64(Gpr::Rdx, idx as u64);
                    let l = self.fixed(L_HSTOP);
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
                        let l = self.fixed(L_SLOW_HOT + slow_index(size, write));
                        self.call(l);
                        self.site(idx);
                        self.jmp(back);
                        continue;
                    }
                    self.a.lea(Gpr::Rax, mem);
                    hot_test(&mut self.a, size as i32, write);
                    self.jcc(Cc::B, back);
                    // Neither: walk the regions. The return address
                    // identifies the access if it faults (`Lowered::sites`;
                    // cold stubs are emitted in order, so they stay sorted).
                    let l = self.fixed(L_SLOW_MEM + slow_index(size, write));
                    self.call(l);
                    self.site(idx);
                    self.jmp(back);
                }
            }
        }
        // Back for the next compile (see `Scratch`).
        cold.clear();
        self.cold = cold;
    }

    /// The entry: saves the callee-saved registers the program uses
    /// (r13 always; rbx, r12, r14, r15 for r6-r9 when named; rbp for r10
    /// when named or when bpf-to-bpf calls move it), sets up the eBPF
    /// registers and calls instruction 0. `Ctx::status` is already OK
    /// (set by `run`), so a normal exit only stores `r0`.
    fn prologue(&mut self) {
        let used = self.used;
        let named = |r: usize| used & (1 << r) != 0;
        // With native tail calls every program saves all six: a target
        // entered from another program's code leaves through its own
        // epilogue (`crate::tail`), which must pop what the head pushed.
        let all = self.input.tail.is_some();
        let mut saved = vec![CTX];
        for (r, &g) in REG_MAP.iter().enumerate().take(10).skip(6) {
            if named(r) || all {
                saved.push(g);
            }
        }
        if named(10) || self.local_calls || all {
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
        if all {
            // A native tail call of the last run left its target's table
            // and key (see `native_tail_call`).
            a.mov_r_rm(Sz::B64, Gpr::Rax, field(offset_of!(Ctx, head_direct)));
            a.mov_rm_r(Sz::B64, field(offset_of!(Ctx, direct)), Gpr::Rax);
            a.mov_rm_i(Sz::B64, field(offset_of!(Ctx, tail_prog)), 0);
        }
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

    /// The routines the code shares, only those something refers to: the
    /// program body is emitted by now, and the trap stubs, emitted next,
    /// only refer to `L_TRAP` (about 300 bytes of encoding saved on a
    /// program without helper calls or checked accesses).
    ///
    /// Their emission depends only on which of them are needed (the
    /// [`Routines::key`]): every jump in them goes to one of them or to
    /// the epilogue, which is emitted later. So it is recorded once per
    /// thread and key (bytes, fixups, shrink candidates, label bindings,
    /// relative to where it started) and replayed afterwards, which costs
    /// a copy where encoding ~90 instructions was a tenth of lowering a
    /// small program. The result is the same bytes and metadata (tested by
    /// `shared_routines_replay_as_emitted`).
    fn shared_routines(&mut self, cache: &mut Vec<Routines>) {
        let slow = self.used_slow != 0;
        let trap_mem = slow || self.referenced(L_TRAP_MEM);
        let check_mem = slow || self.referenced(L_CHECK_MEM);
        let trap = trap_mem || !self.cold.is_empty() || self.referenced(L_TRAP);
        let stop0 = self.referenced(L_STOP0);
        // Bits: the callx stub, the trampoline thunk, the stop routine.
        let helper = self.referenced(L_HELPER) as u8
            | (self.referenced(L_TRAMP) as u8) << 1
            | (self.referenced(L_HSTOP) as u8) << 2;
        // The helper stub keeps r1-r5 only in checked mode.
        let key = trap as u64
            | (trap_mem as u64) << 1
            | (stop0 as u64) << 2
            | (check_mem as u64) << 3
            | ((helper & 1) as u64) << 4
            | ((helper & 4) as u64) << 14
            | (self.used_slow as u64) << 5
            | ((helper & 1 != 0 && self.input.checked) as u64) << 13
            | ((helper & 2) as u64) << 14;
        self.cached(cache, key, |e| {
            e.emit_routines(trap, trap_mem, stop0, check_mem, helper)
        });
    }

    /// The entry ([`Emitter::prologue`]), recorded and replayed like the
    /// shared routines: it depends only on the registers the program
    /// names and whether it calls helpers or subprograms (its one jump is
    /// the call of instruction 0).
    fn entry(&mut self, cache: &mut Vec<Routines>) {
        let key = 1 << 63
            | self.used as u64
            | (self.local_calls as u64) << 16
            | (self.helper_calls as u64) << 17
            | (self.input.tail.is_some() as u64) << 18;
        self.cached(cache, key, |e| e.prologue());
    }

    /// `emit`, or its recording for `key` (see `shared_routines`); a
    /// thread keeps at most [`ROUTINES_KEPT`] recordings.
    fn cached(&mut self, cache: &mut Vec<Routines>, key: u64, emit: impl FnOnce(&mut Self)) {
        if let Some(r) = cache.iter().find(|r| r.key == key) {
            self.replay(r);
            return;
        }
        let mut mark = self.mark();
        for l in 0..FIXED {
            if self.labels[self.n + 1 + l] != UNBOUND {
                mark.bound |= 1 << l;
            }
        }
        emit(self);
        if cache.len() < ROUTINES_KEPT {
            if let Some(r) = self.record(key, &mark) {
                cache.push(r);
            }
        }
    }

    /// Where the emission stands (see [`Emitter::record`]; `bound` is
    /// left empty, only a recording needs it).
    fn mark(&self) -> Mark {
        Mark {
            pos: self.a.pos(),
            fixups: self.fixups.len(),
            cands: self.shrink.len(),
            labels: self.labels.len(),
            bound: 0,
        }
    }

    /// What was emitted since `m`, relative to it; `None` when it refers
    /// to an instruction's label other than instruction 0's (the only one
    /// every program has).
    fn record(&self, key: u64, m: &Mark) -> Option<Routines> {
        let fixed0 = self.n + 1;
        let enc = |l: usize| -> Option<u32> {
            if l >= m.labels {
                Some((FIXED + l - m.labels) as u32)
            } else if l >= fixed0 {
                Some((l - fixed0) as u32)
            } else if l == 0 {
                Some(INSN0)
            } else {
                None
            }
        };
        let mut fixups = Vec::with_capacity(self.fixups.len() - m.fixups);
        for &(at, width, label, k) in &self.fixups[m.fixups..] {
            fixups.push((
                at - m.pos as u32,
                width,
                enc(label as usize)?,
                k - m.cands as u32,
            ));
        }
        let cands = self.shrink[m.cands..]
            .iter()
            .map(|c| (c.start - m.pos, c.cc, c.fixup - m.fixups))
            .collect();
        let mut binds = Vec::new();
        for l in 0..FIXED {
            let at = self.labels[fixed0 + l];
            if m.bound & 1 << l == 0 && at != UNBOUND {
                let k = self.label_k[fixed0 + l] - m.cands as u32;
                binds.push((l as u32, at - m.pos as u32, k));
            }
        }
        for l in m.labels..self.labels.len() {
            let at = self.labels[l];
            if at != UNBOUND {
                let k = self.label_k[l] - m.cands as u32;
                binds.push((enc(l)?, at - m.pos as u32, k));
            }
        }
        let mut r = Routines {
            key,
            bytes: self.a.code()[m.pos..].to_vec(),
            fixups,
            cands,
            binds,
            new_labels: (self.labels.len() - m.labels) as u32,
            refs: self.refs,
        };
        r.pre_relax();
        Some(r)
    }

    /// Appends a recording made by [`Emitter::record`].
    fn replay(&mut self, r: &Routines) {
        let m = self.mark();
        let fixed0 = self.n + 1;
        let dec = move |l: u32| -> usize {
            if l == INSN0 {
                0
            } else if (l as usize) < FIXED {
                fixed0 + l as usize
            } else {
                m.labels + l as usize - FIXED
            }
        };
        self.a.extend(&r.bytes);
        // Sized appends (`resize`, `extend` of a mapped slice: one
        // capacity check each), not a `push` per item.
        let len = m.labels + r.new_labels as usize;
        self.labels.resize(len, UNBOUND);
        self.label_k.resize(len, 0);
        for &(l, at, k) in &r.binds {
            let l = dec(l);
            self.labels[l] = m.pos as u32 + at;
            self.label_k[l] = m.cands as u32 + k;
        }
        self.fixups
            .extend(r.fixups.iter().map(|&(at, width, label, k)| {
                (
                    m.pos as u32 + at,
                    width,
                    dec(label) as u32,
                    m.cands as u32 + k,
                )
            }));
        self.shrink
            .extend(r.cands.iter().map(|&(start, cc, fixup)| Candidate {
                start: m.pos + start,
                cc,
                fixup: m.fixups + fixup,
                pad: 0,
                falls_in: false,
            }));
        self.refs |= r.refs;
    }

    fn emit_routines(
        &mut self,
        trap: bool,
        trap_mem: bool,
        stop0: bool,
        check_mem: bool,
        helper: u8,
    ) {
        if trap {
            // Trap with rcx = status, rdx = instruction index.
            let l = self.fixed(L_TRAP);
            self.bind(l);
            self.a
                .mov_rm_r(Sz::B64, field(offset_of!(Ctx, status)), Gpr::Rcx);
            self.a
                .mov_rm_r(Sz::B64, field(offset_of!(Ctx, trap_idx)), Gpr::Rdx);
            self.unwind();
        }
        if trap_mem {
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
        }
        if stop0 {
            // End the program with r0 = 0 (legacy packet load out of range).
            let l = self.fixed(L_STOP0);
            self.bind(l);
            self.a.mov_rm_i(Sz::B64, field(offset_of!(Ctx, ret)), 0);
            self.a
                .mov_rm_i(Sz::B64, field(offset_of!(Ctx, status)), status::OK as i32);
            self.unwind();
        }
        if check_mem {
            self.check_mem_routine();
        }
        self.slow_routines();
        if helper & 5 != 0 {
            // A helper call stopped the program: which call, for the trap's
            // pc and id (see `crate::finish_raw_stop`). Before the `callx`
            // stub, whose stop path is the unwinding here (a backward jump:
            // sized as emitted, so the recording of the routines has the
            // same layout as their emission).
            let l = self.fixed(L_HSTOP);
            self.bind(l);
            self.a
                .mov_rm_r(Sz::B64, field(offset_of!(Ctx, call_h)), Gpr::Rcx);
            self.a
                .mov_rm_r(Sz::B64, field(offset_of!(Ctx, call_site)), Gpr::Rdx);
            let unwind = self.new_label();
            self.bind(unwind);
            self.unwind();
            if helper & 1 != 0 {
                self.helper_routine(unwind);
            }
        }
        if helper & 2 != 0 {
            // A helper without a direct entry: the run's table sends its
            // calls here. The trampoline (`Ctx::tramp`, per run) finds the
            // helper and the instruction from the call's return address
            // (`Lowered::helper_sites`); rsp is as the call site left it.
            let l = self.fixed(L_TRAMP);
            self.bind(l);
            self.a
                .mov_r_rm(Sz::B64, Gpr::Rax, Rm::Mem(Mem::at(Gpr::Rsp, 0)));
            self.a
                .mov_rm_r(Sz::B64, field(offset_of!(Ctx, call_ret)), Gpr::Rax);
            self.a.jmp_rm(field(offset_of!(Ctx, tramp)));
        }
    }
}

/// Instruction 0's label in a [`Routines`] recording.
const INSN0: u32 = u32::MAX;

/// Most recordings a thread keeps (the routines have a few dozen useful
/// combinations, the entry one per set of named registers).
const ROUTINES_KEPT: usize = 64;

/// Where an emission stands: code length, counts of fixups, shrink
/// candidates and labels, and which fixed labels are bound.
struct Mark {
    pos: usize,
    fixups: usize,
    cands: usize,
    labels: usize,
    bound: u32,
}

/// A recorded emission of the shared routines or the entry (see
/// `Emitter::shared_routines`), everything relative to where it started.
/// Labels: below `FIXED` a fixed label, [`INSN0`] instruction 0's, from
/// `FIXED` on the labels the emission created, in order.
pub(crate) struct Routines {
    /// Shared routines: which are needed; entry: bit 63 and what it
    /// depends on.
    key: u64,
    bytes: Vec<u8>,
    fixups: Vec<Fixup>,
    /// (start, condition, fixup) of each shrink candidate.
    cands: Vec<(usize, Option<Cc>, usize)>,
    /// (label, position, candidates before it) of each label bound.
    binds: Vec<(u32, u32, u32)>,
    new_labels: u32,
    refs: u32,
}

impl Routines {
    /// Does once, in the recording, what relaxation would do to it in
    /// every compile that replays it: the shrink decisions of the jumps
    /// whose target is bound in the recording and that only skip other
    /// such jumps (their decisions depend on nothing else: [`relax`]'s
    /// rounds are replayed on them alone, so they come out the same), and
    /// the displacements of the jumps and calls whose both ends are in
    /// the recording with no jump that may still shrink between them.
    /// What is left for relaxation are the jumps to labels bound outside
    /// (the epilogue, instruction 0) and the few that skip one: about half
    /// of a small program's shrink candidates and a third of its fixups
    /// were the routines'. The code after relaxation is the same
    /// (`shared_routines_replay_as_emitted` compares it with emitting).
    fn pre_relax(&mut self) {
        let pos = |binds: &[(u32, u32, u32)], l: u32| {
            binds.iter().find(|b| b.0 == l).map(|b| b.1 as usize)
        };
        let cands = std::mem::take(&mut self.cands);
        let n = cands.len();
        let long_len = |cc: Option<Cc>| if cc.is_some() { 6 } else { 5 };
        // Each candidate's target when bound here, after it.
        let tgt: Vec<Option<usize>> = cands
            .iter()
            .map(|&(start, _, f)| pos(&self.binds, self.fixups[f].2).filter(|&t| t > start))
            .collect();
        // Decided here: every candidate it skips is decided here too.
        let mut det = vec![false; n];
        for c in (0..n).rev() {
            if let Some(t) = tgt[c] {
                det[c] = (c + 1..n).take_while(|&j| cands[j].0 < t).all(|j| det[j]);
            }
        }
        // `relax`'s rounds on them alone.
        let target_k: Vec<usize> = tgt
            .iter()
            .map(|t| t.map_or(0, |t| cands.partition_point(|c| c.0 < t)))
            .collect();
        let mut short = vec![0usize; n];
        let mut saved = vec![0usize; n + 1];
        for _round in 0..4 {
            let mut changed = false;
            for c in 0..n {
                if !det[c] || short[c] != 0 {
                    continue;
                }
                let t = tgt[c].unwrap_or(0);
                let between = saved[target_k[c]] - saved[c];
                if (t - (cands[c].0 + 2)).wrapping_sub(between) <= 127 {
                    short[c] = long_len(cands[c].1) - 2;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
            let mut acc = 0;
            for (c, &g) in short.iter().enumerate() {
                acc += g;
                saved[c + 1] = acc;
            }
        }
        // Bytes saved before an old position, and the candidates left
        // (those not decided here) before it.
        let shift = |p: usize| saved[cands.partition_point(|c| c.0 < p)];
        let left: Vec<usize> = (0..n).filter(|&c| !det[c]).collect();
        let left_before = |p: usize| left.partition_point(|&c| cands[c].0 < p) as u32;
        // The code, compacted as `relax` does.
        let old = &self.bytes;
        let mut bytes = Vec::with_capacity(old.len());
        let mut from = 0;
        let mut own = vec![None; self.fixups.len()];
        for (c, &(start, cc, f)) in cands.iter().enumerate() {
            if short[c] == 0 {
                continue;
            }
            bytes.extend_from_slice(&old[from..start]);
            own[f] = Some(bytes.len() + 1);
            bytes.push(match cc {
                Some(cc) => 0x70 + cc as u8,
                None => 0xeb,
            });
            bytes.push(0);
            from = start + long_len(cc);
        }
        bytes.extend_from_slice(&old[from..]);
        // Fixups: patched now when final, else moved.
        let is_left_cand: Vec<bool> = {
            let mut v = vec![false; self.fixups.len()];
            for &c in &left {
                v[cands[c].2] = true;
            }
            v
        };
        let mut index = vec![usize::MAX; self.fixups.len()];
        let mut fixups = Vec::with_capacity(self.fixups.len());
        for (i, &(at, width, label, _)) in self.fixups.iter().enumerate() {
            let at = at as usize;
            let (new_at, new_width) = match own[i] {
                Some(a) => (a, 1),
                None => (at - shift(at), width),
            };
            if let (false, Some(t)) = (is_left_cand[i], pos(&self.binds, label)) {
                let (lo, hi) = (at.min(t), at.max(t));
                let clear = !left.iter().any(|&c| (lo..hi).contains(&cands[c].0));
                if clear && patch_rel(&mut bytes, new_at, new_width as usize, t - shift(t)) {
                    continue;
                }
            }
            index[i] = fixups.len();
            fixups.push((new_at as u32, new_width, label, left_before(at)));
        }
        self.cands = left
            .iter()
            .map(|&c| {
                let (start, cc, f) = cands[c];
                (start - shift(start), cc, index[f])
            })
            .collect();
        for b in &mut self.binds {
            let p = b.1 as usize;
            (b.1, b.2) = ((p - shift(p)) as u32, left_before(p));
        }
        self.fixups = fixups;
        self.bytes = bytes;
    }
}

impl<'a> Emitter<'a> {
    /// Region check: rax = address, rcx = size, rdx = 1 for a write.
    /// Out: edx = 0 when some region allows the access. Keeps rax and
    /// every eBPF register.
    fn check_mem_routine(&mut self) {
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
    }

    fn slow_routines(&mut self) {
        // Slow memory checks, one routine per size and direction, called
        // from an access's cold stub when its inline test failed: at
        // `L_SLOW_HOT` with rdx = address - the cached region's start (the
        // stack is tested here), at `L_SLOW_MEM` with rax = address after
        // both tests failed. They walk the region table and return when the
        // access is allowed, and trap otherwise.
        for size in [1u8, 2, 4, 8] {
            for write in [false, true] {
                let l = self.fixed(L_SLOW_MEM + slow_index(size, write));
                if self.used_slow & (1 << slow_index(size, write)) == 0 {
                    continue;
                }
                // The entry for accesses whose inline test was the cached
                // region's: rdx = address - the region's start. The address
                // back into rax, then the stack test, then the walk.
                let entry = self.fixed(L_SLOW_HOT + slow_index(size, write));
                self.bind(entry);
                let hot = if write {
                    offset_of!(Ctx, hot_w)
                } else {
                    offset_of!(Ctx, hot_r)
                };
                self.a.mov_r_rm(Sz::B64, Gpr::Rax, Rm::Reg(Gpr::Rdx));
                self.a.alu_r_rm(Sz::B64, Alu::Add, Gpr::Rax, field(hot));
                stack_test(&mut self.a, size as i32);
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
    }

    /// The arguments of a helper's entry: (r1, the run's `RawCall` in the
    /// `Ctx`, r4, r5, r2, r3) in the System V argument registers (rdi, rsi,
    /// rdx, rcx, r8, r9: `bpfkit_runtime::raw::RawEntry`), so that r1-r3
    /// stay where they are and only three moves are made.
    fn raw_entry_args(&mut self) {
        debug_assert_eq!(REG_MAP[1..=3], [Gpr::Rdi, Gpr::R8, Gpr::R9]);
        self.a.mov_r_rm(Sz::B64, Gpr::Rdx, Rm::Reg(REG_MAP[4]));
        self.a.mov_r_rm(Sz::B64, Gpr::Rcx, Rm::Reg(REG_MAP[5]));
        self.a
            .lea(Gpr::Rsi, Mem::at(CTX, offset_of!(Ctx, raw) as i32));
    }

    /// The helper call of `callx` by id (rare: calls by table index call
    /// their target from the call site, `helper_call`): rcx = the id, rdx
    /// = instruction index with bit 32 set; both are kept in the `Ctx` for
    /// the trampoline (which finds the helper by id) and for the stop path.
    fn helper_routine(&mut self, stopped: usize) {
        // The arguments go to the trampoline in registers (see below), never
        // through memory that Rust would read back with wider loads than
        // the stores (a store-forwarding stall).
        // Checked mode keeps r1-r5, as the interpreter does (see the module
        // docs): pushed here, popped after the call; an unverified program
        // may read them. Unchecked code comes from verified programs, and
        // the verifier makes r1-r5 unreadable after a call, so there they
        // are left as the call leaves them (10 pushes and pops fewer).
        let keep = self.input.checked;
        let l = self.fixed(L_HELPER);
        self.bind(l);
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, call_h)), Gpr::Rcx);
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, call_site)), Gpr::Rdx);
        // Called, so rsp is 8 off the call site's (16-aligned, see
        // `helper_call`), or anything under a `callx`'s frame: align it
        // for the System V call, keeping the old value to pop back.
        self.a.mov_r_rm(Sz::B64, Gpr::Rax, Rm::Reg(Gpr::Rsp));
        self.a.alu_rm_i(Sz::B64, Alu::And, Rm::Reg(Gpr::Rsp), -16);
        self.a.push(Gpr::Rax);
        if keep {
            for &r in &REG_MAP[1..=5] {
                self.a.push(r);
            }
        } else {
            // Two copies of the old rsp: the top one is popped back into
            // rsp, which drops the other with it.
            self.a.push(Gpr::Rax);
        }
        // An even number of pushes from a 16-aligned rsp: aligned again
        // for the call.
        self.raw_entry_args();
        self.a.call_rm(field(offset_of!(Ctx, tramp)));
        if keep {
            for &r in REG_MAP[1..=5].iter().rev() {
                self.a.pop(r);
            }
        }
        self.a.pop(Gpr::Rsp);
        // The trampoline made the trap (or the program's end) itself.
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rdx), Gpr::Rdx);
        self.jcc(Cc::Ne, stopped);
        self.a.mov_r_rm(Sz::B64, Gpr::Rsi, Rm::Reg(Gpr::Rax));
        self.a.ret();
    }

    /// The call at instruction `i` of the helper at table index `h`,
    /// straight from the call site: `call [direct + 8h]` through the run's
    /// table (`Ctx::direct`: the helper's direct entry, or `L_TRAMP`),
    /// with no store on the way. What the stub used to keep in the `Ctx`
    /// for the stop path and the trampolines is found otherwise: the call's
    /// return address names the call (`Lowered::helper_sites`, for
    /// trampolines), and a stop goes through a cold stub of this call
    /// (`Cold::Stop`, for the trap's pc and id). rsp is 16-aligned here
    /// by construction (see `local_call`), as the System V call needs.
    fn helper_call(&mut self, i: usize, h: u32) {
        // Checked mode keeps r1-r5 as `helper_routine` does, those that
        // the program may still read (`live_after_call`); an even number
        // of pushes keeps rsp aligned (a dummy one when needed).
        let keep = if self.input.checked {
            let subprograms = *self.subprograms.get_or_insert_with(|| {
                self.input
                    .prog
                    .insns()
                    .iter()
                    .any(|i| matches!(i, Insn::CallLocal(_) | Insn::Callx(_)))
            });
            live_after_call(self.input.prog, i, subprograms)
        } else {
            0
        };
        let kept = |r: usize| keep & (1 << r) != 0;
        for (r, &g) in REG_MAP.iter().enumerate().take(6).skip(1) {
            if kept(r) {
                self.a.push(g);
            }
        }
        let pad = keep.count_ones() % 2 == 1;
        if pad {
            self.a.push(Gpr::Rax);
        }
        self.raw_entry_args();
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rax, field(offset_of!(Ctx, direct)));
        self.a
            .call_rm(Rm::Mem(Mem::at(Gpr::Rax, (8 * h as usize) as i32)));
        let at = (self.a.pos() as u32, self.shrink.len() as u32, i as u32, h);
        self.hsites.push(at);
        self.fixed(L_TRAMP);
        // rax and rdx hold the result.
        if pad {
            self.a.pop(Gpr::Rcx);
        }
        for (r, &g) in REG_MAP.iter().enumerate().take(6).skip(1).rev() {
            if kept(r) {
                self.a.pop(g);
            }
        }
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rdx), Gpr::Rdx);
        let stop = self.new_label();
        self.cold.push(Cold::Stop {
            label: stop,
            h,
            idx: i as u32,
        });
        self.fixed(L_HSTOP);
        self.jcc(Cc::Ne, stop);
        self.a.mov_r_rm(Sz::B64, Gpr::Rsi, Rm::Reg(Gpr::Rax));
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
            self.aligned_calls = self
                .input
                .prog
                .insns()
                .iter()
                .any(|i| matches!(i, Insn::Call(_) | Insn::Callx(_)));
        }
        let m = match (&self.frames, target) {
            (Some(frames), Some(t)) => frames
                .binary_search_by_key(&(t as u32), |f| f.0)
                .map_or(FRAME_ALL, |k| frames[k].1),
            _ => FRAME_ALL,
        };
        let saved = [Gpr::Rbx, Gpr::R12, Gpr::R14, Gpr::R15];
        // Helper calls need rsp 16-aligned at the call site, which holds in
        // the body of instruction 0 (see `prologue`); every subprogram that
        // calls a helper, itself or through its callees (`FRAME_HELPERS`;
        // all of them when the calls are not known), is entered with it
        // too: the pushes below plus the return address are made an even
        // number (a dummy push; `helper_call` relies on it). A helper-free
        // callee runs as well with rsp 8 off (`calls`' 1,877 bpf-to-bpf
        // calls a run paid two instructions each for nothing).
        let pushes = (m & 0xf).count_ones() + !(self.frame_calls && target.is_some()) as u32;
        let pad = self.aligned_calls && m & FRAME_HELPERS != 0 && pushes.is_multiple_of(2);
        if pad {
            self.a.push(Gpr::Rax);
        }
        self.local_call_frame(idx, target, callx_slot_in_rax, m, saved);
        if pad {
            self.a.pop(Gpr::Rcx);
        }
    }

    /// `local_call` without the alignment.
    fn local_call_frame(
        &mut self,
        idx: usize,
        target: Option<usize>,
        callx_slot_in_rax: bool,
        m: u8,
        saved: [Gpr; 4],
    ) {
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

    /// Emits the call at `i` to helper `id` as an inline array (or slot
    /// map) lookup when it is `bpf_map_lookup_elem` in unchecked mode on a
    /// map the resolver describes and `r1` is certain, or as a load of the run's CPU for
    /// `bpf_get_smp_processor_id` when the resolver allows it (see
    /// `inline`); `false`, emitting nothing, otherwise. (The verifier makes the program set `r2`, so
    /// the entry loads it without a helper call.)
    fn inline_lookup(&mut self, i: usize, id: u32) -> bool {
        let Some(resolver) = self.input.resolver else {
            return false;
        };
        if self.input.checked {
            return false;
        }
        if id == inline::GET_SMP_PROCESSOR_ID && resolver.inline_cpu_id() {
            inline::cpu_id(&mut self.a);
            return true;
        }
        if id != inline::MAP_LOOKUP_ELEM {
            return false;
        }
        let prog = self.input.prog;
        let targets = self
            .branch_targets
            .get_or_insert_with(|| inline::branch_targets(prog));
        let Some((pc, imm)) = inline::map_operand(prog, targets, i) else {
            return resolver.map_headers() && self.header_lookup(i);
        };
        let key = inline::const_key(prog, targets, i);
        if let Some(map) = resolver.array_map(pc, &imm) {
            let keys = (self.rng != 0).then(|| inline::Keys {
                base: self.key64(map.base),
                max: self.key32(map.max_entries as i32),
                stride: self.key32(map.stride as i32),
                cpu_stride: self.key32(map.cpu_stride as i32),
            });
            return inline::array_lookup(&mut self.a, &map, keys, key);
        }
        let Some(map) = resolver.slot_map(pc, &imm) else {
            return self.devhash_lookup(pc, &imm);
        };
        let keys = (self.rng != 0).then(|| inline::Keys {
            base: self.key64(map.slots),
            max: self.key32(map.max_entries as i32),
            stride: 0,
            cpu_stride: 0,
        });
        inline::slot_lookup(&mut self.a, &map, keys)
    }

    /// The lookup whose `r1` is certainly the map `lddw` at `pc` as an
    /// inline probe of a `devmap_hash` the resolver describes
    /// (`inline::devhash_lookup`); `false`, emitting nothing, for other
    /// maps and under constant blinding (the helper call stays).
    fn devhash_lookup(&mut self, pc: bpfkit_isa::Pc, imm: &Imm64) -> bool {
        if self.rng != 0 {
            return false;
        }
        let Some(map) = self.input.resolver.and_then(|r| r.devhash_map(pc, imm)) else {
            return false;
        };
        inline::devhash_lookup(&mut self.a, &map)
    }

    /// Before the helper call at `i` to helper `id`: when it is a
    /// `bpf_map_lookup_elem` or `bpf_map_delete_elem` (the index in `r3`)
    /// or a `bpf_map_update_elem` (in `r5`) left to the helper in unchecked
    /// mode whose `r1` is certainly an `lddw` of a map the resolver gives a
    /// table index for (`Imm64Resolver::table_index`), that register = the
    /// index, so that the helper need not search the run's map table for
    /// `r1` (it checks the hint). Neither is an argument of those helpers;
    /// the verifier makes both unreadable after the call, and the call
    /// clobbers them anyway. Not under constant blinding (the index is not
    /// a program constant, but nothing is emitted that blinding would have
    /// to reason about).
    fn lookup_hint(&mut self, i: usize, id: u32) {
        let reg = match id {
            inline::MAP_LOOKUP_ELEM | inline::MAP_DELETE_ELEM => 3,
            inline::MAP_UPDATE_ELEM => 5,
            _ => return,
        };
        if self.input.checked || self.rng != 0 {
            return;
        }
        let Some(resolver) = self.input.resolver else {
            return;
        };
        let prog = self.input.prog;
        let targets = self
            .branch_targets
            .get_or_insert_with(|| inline::branch_targets(prog));
        let Some((pc, imm)) = inline::map_operand(prog, targets, i) else {
            return;
        };
        if let Some(k) = resolver.table_index(pc, &imm) {
            // `mov r32, imm32`: at most 6 bytes, inside `near_bytes`' 64
            // for a call.
            self.a.mov_r_imm64(REG_MAP[reg], u64::from(k));
        }
    }

    /// Emits the call at `i` as an inline `bpf_redirect_map`
    /// (`inline::redirect_map`) when it is one in unchecked mode, without
    /// constant blinding, whose `r1` is certainly an `lddw` of a devmap
    /// the resolver describes (`Imm64Resolver::redirect_map`), also where
    /// every way into a merged call loads it (`inline::merged_map_operand`),
    /// and whose flags in `r3` are a certain constant below 4 (the
    /// fallback action only: broadcasts and invalid flags stay the
    /// helper's) or, not known, tested to be; the helper call stays as the
    /// path of runs whose data has no record (`Ctx::redirect_off` 0) and
    /// of other flags. `false`, emitting nothing, otherwise.
    fn redirect_map(&mut self, i: usize, id: u32) -> bool {
        if id != inline::REDIRECT_MAP || self.input.checked || self.rng != 0 {
            return false;
        }
        let Some(resolver) = self.input.resolver else {
            return false;
        };
        let prog = self.input.prog;
        let targets = self
            .branch_targets
            .get_or_insert_with(|| inline::branch_targets(prog));
        let operand = inline::map_operand(prog, targets, i)
            .or_else(|| inline::merged_map_operand(prog, targets, i));
        let Some((pc, imm)) = operand else {
            return false;
        };
        let flags = inline::r3_constant(prog, targets, i);
        if flags.is_some_and(|f| f >= 4) {
            return false;
        }
        let Some((map, addr)) = resolver.redirect_map(pc, &imm) else {
            return false;
        };
        let Some(h) = self.helper_calls_to(id) else {
            return false;
        };
        let (call, done) = (self.new_label(), self.new_label());
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rcx, field(offset_of!(Ctx, redirect_off)));
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rcx), Gpr::Rcx);
        self.jcc(Cc::E, call);
        if flags.is_none() {
            // Flags beyond the fallback action (64 bits): the helper's.
            self.a.test_rm_i(Sz::B64, Rm::Reg(REG_MAP[3]), -4);
            self.jcc(Cc::Ne, call);
        }
        let data = offset_of!(Ctx, raw) + offset_of!(bpfkit_runtime::raw::RawCall<()>, data);
        let flags = flags.map(|f| f as u32);
        inline::redirect_map(&mut self.a, &map, addr, flags, data);
        self.jmp(done);
        self.bind(call);
        self.helper_call(i, h);
        self.bind(done);
        true
    }

    /// Emits the lookup at `i` whose map is not known when compiling
    /// (`inline::header_probe`): computed from the map's header when it is
    /// an array, the helper call otherwise; `false`, emitting nothing,
    /// when `bpf_map_lookup_elem` is not registered (the call then traps
    /// as any unknown helper's).
    fn header_lookup(&mut self, i: usize) -> bool {
        let Some(h) = self.helper_calls_to(inline::MAP_LOOKUP_ELEM) else {
            return false;
        };
        let (call, done) = (self.new_label(), self.new_label());
        inline::header_probe(&mut self.a);
        self.jcc(Cc::E, call);
        inline::header_lookup(&mut self.a);
        self.jmp(done);
        self.bind(call);
        // The helper call as any other (see `insn`'s `Insn::Call`).
        self.helper_call(i, h);
        self.bind(done);
        true
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

    /// Lowers instruction `i` (any but the ALU instructions the lowering
    /// loop sends to [`Emitter::alu_at`]) and adds its [`regs_info`] to
    /// `info`, each arm its own part (the unit tests check after every lowering that
    /// they add up to the same bits).
    fn insn(&mut self, i: usize, insn: &Insn) {
        if self.skip > 0 {
            // Emitted with an earlier instruction (a fused idiom).
            self.skip -= 1;
            self.info |= regs_info(insn);
            return;
        }
        let b = |r: Reg| 1u32 << r.index();
        let s = |s: Src| match s {
            Src::Reg(r) => b(r),
            Src::Imm(_) => 0,
        };
        let w = |dst: Reg| if dst == Reg::R10 { WRITES_R10 } else { 0 };
        match *insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                self.info |= b(dst) | s(src) | w(dst);
                self.alu_insn(width, op, hr(dst), src)
            }
            Insn::Neg { width, dst } => {
                self.info |= b(dst) | w(dst);
                self.a.unary(sz(width), Unary::Neg, Rm::Reg(hr(dst)))
            }
            Insn::Endian { order, bits, dst } => {
                self.info |= b(dst) | w(dst);
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
            Insn::LoadImm64 { dst, imm } => {
                self.info |= b(dst) | w(dst);
                match self.imm64(i, &imm) {
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
                }
            }
            Insn::Load {
                size,
                sign_extend,
                dst,
                src,
                off,
            } => {
                self.info |= 1 | b(dst) | b(src) | w(dst);
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
                self.info |= b(dst) | s(src);
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
            } => {
                let r10 = if writes_r10(insn) { WRITES_R10 } else { 0 };
                self.info |= 1 | b(dst) | b(src) | r10;
                self.atomic(i, size, op, fetch, dst, src, off)
            }
            Insn::LoadAbs { size, imm } => {
                self.info |= 1;
                self.ld_pkt(i, size, None, imm)
            }
            Insn::LoadInd { size, src, imm } => {
                self.info |= 1 | b(src);
                self.ld_pkt(i, size, Some(src), imm)
            }
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
                self.info |= b(dst) | s(src);
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
            Insn::Call(id) if id.0 == TAIL_CALL && self.native_tail_call(i) => {}
            Insn::Call(id) if self.redirect_map(i, id.0) => {}
            Insn::Call(id) if self.callback_call(i, id.0) => {}
            Insn::Call(id) => match self.helper_calls_to(id.0) {
                Some(h) => {
                    self.lookup_hint(i, id.0);
                    self.helper_call(i, h)
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
                self.info |= b(r);
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
    #[inline(always)]
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
                    Opnd::Imm(imm) => self.a.alu_r_i(s, o, d, imm),
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

/// Flags for `jbe ok` when `[rax, rax + n)` lies in the stack buffer
/// (one subtraction, one compare; clobbers rdx).
fn stack_test(a: &mut Asm, n: i32) {
    a.mov_r_rm(Sz::B64, Gpr::Rdx, Rm::Reg(Gpr::Rax));
    stack_test_rdx(a, n);
}

/// [`stack_test`] with the address already in rdx.
fn stack_test_rdx(a: &mut Asm, n: i32) {
    a.alu_r_rm(
        Sz::B64,
        Alu::Sub,
        Gpr::Rdx,
        field(offset_of!(Ctx, stack_start)),
    );
    a.alu_rm_i(
        Sz::B64,
        Alu::Cmp,
        Rm::Reg(Gpr::Rdx),
        (STACK_SIZE * MAX_CALL_FRAMES) as i32 - n,
    );
}

/// Flags for `jb ok` when `[rax, rax + n)` lies in the region the last
/// region walk found for this direction (`off < len - size + 1`,
/// precomputed per size; clobbers rdx).
fn hot_test(a: &mut Asm, n: i32, write: bool) {
    a.mov_r_rm(Sz::B64, Gpr::Rdx, Rm::Reg(Gpr::Rax));
    hot_test_rdx(a, n, write);
}

/// [`hot_test`] with the address already in rdx.
fn hot_test_rdx(a: &mut Asm, n: i32, write: bool) {
    let hot = if write {
        offset_of!(Ctx, hot_w)
    } else {
        offset_of!(Ctx, hot_r)
    };
    a.alu_r_rm(Sz::B64, Alu::Sub, Gpr::Rdx, field(hot));
    let lim = hot + 8 + 8 * (n as u32).trailing_zeros() as usize;
    a.alu_r_rm(Sz::B64, Alu::Cmp, Gpr::Rdx, field(lim));
}

/// The inline test of a checked access of `n` bytes after its `lea rdx,
/// [base + off]`: the stack test for an r10 base, the cached-region test
/// for any other, then a `jcc rel32` (to the access's cold stub when the
/// test misses) whose displacement, the last 4 bytes, is left 0 for a
/// fixup. Encoded once per size, direction and test (a tenth of lowering
/// a checked access was encoding its checks).
#[cfg(test)]
fn access_test(n: i32, write: bool, r10: bool) -> &'static [u8] {
    let (bytes, len) = access_test_window(n, write, r10);
    &bytes[..*len]
}

/// [`access_test`] padded to 32 bytes, and its length: copied with one
/// fixed-size move ([`Asm::extend_window`]), not a `memcpy` call.
fn access_test_window(n: i32, write: bool, r10: bool) -> &'static ([u8; 32], usize) {
    static ALL: std::sync::OnceLock<Vec<([u8; 32], usize)>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        let mut all = Vec::with_capacity(16);
        for k in 0..16 {
            let (n, write, r10) = (1i32 << (k >> 2), k & 2 != 0, k & 1 != 0);
            let mut a = Asm::new();
            if r10 {
                stack_test_rdx(&mut a, n);
                a.jcc(Cc::A, true);
            } else {
                hot_test_rdx(&mut a, n, write);
                a.jcc(Cc::Ae, true);
            }
            let code = a.into_code();
            let mut bytes = [0u8; 32];
            bytes[..code.len()].copy_from_slice(&code);
            all.push((bytes, code.len()));
        }
        all
    });
    let k = (n as u32).trailing_zeros() as usize * 4 + 2 * write as usize + r10 as usize;
    &all[k]
}

/// Most instructions [`Emitter::near_target`] looks at.
const NEAR_SCAN: usize = 12;

/// An upper bound of the bytes `insn` is lowered to, without a budget or
/// constant blinding (where jumps are never emitted short at once): small
/// for what is common between a jump and its target, 128 (never near) for
/// the rest. Generous, so that improvements of a form need not touch it;
/// `near_bounds_hold` checks every form at its longest.
fn near_bytes(insn: &Insn, checked: bool, r10_fixed: bool) -> usize {
    let mem = |base: Reg, off: i16, size: Size| {
        let n = size.bytes() as i32;
        let off = off as i32;
        let frame = base == Reg::R10 && r10_fixed && off >= -(STACK_SIZE as i32) && off <= -n;
        if frame || !checked {
            16
        } else {
            64
        }
    };
    match *insn {
        Insn::Alu { op, .. } => match op {
            AluOp::Div | AluOp::Mod | AluOp::Sdiv | AluOp::Smod => 64,
            _ => 16,
        },
        Insn::Neg { .. } | Insn::Endian { .. } => 16,
        Insn::LoadImm64 { .. } => 16,
        Insn::Load { src, off, size, .. } => mem(src, off, size),
        Insn::Store { dst, off, size, .. } => mem(dst, off, size),
        Insn::Ja { .. } | Insn::Jmp { .. } => 16,
        // A helper call (`helper_call`: 38 bytes, 58 in checked mode with
        // its pushes and pops) or an unknown helper's trap jump; in
        // unchecked mode also an inline array lookup (`x64::inline`, ~40
        // bytes).
        // A native tail call (`native_tail_call`) is longer than any jump
        // emitted short at once may skip.
        Insn::Call(id) if id.0 == TAIL_CALL => 128,
        // An inline `bpf_redirect_map` (`redirect_map`) with its helper
        // call.
        Insn::Call(id) if id.0 == inline::REDIRECT_MAP => 128,
        // So is a callback loop (`callback`), if the helper is one.
        Insn::Call(id) if callback::LONG_CALLS.contains(&id.0) => 128,
        Insn::Call(_) => 64,
        Insn::Exit => 4,
        _ => 128,
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
    ///
    /// Unless the targets are known already (an inline lookup needed them)
    /// or asked for (`eager_targets`), this answers yes and records the
    /// range, and [`Emitter::fused_ok`] checks it once every jump of the
    /// program has been emitted: that saves a scan of the whole program
    /// (about a tenth of lowering a small one) in the usual case where
    /// nothing jumps into an idiom.
    fn fusable(&mut self, from: usize, to: usize) -> bool {
        if to >= self.n {
            return false;
        }
        if self.branch_targets.is_none() && !self.eager_targets {
            self.fused.push((from as u32, to as u32));
            return true;
        }
        let prog = self.input.prog;
        let t = self
            .branch_targets
            .get_or_insert_with(|| inline::branch_targets(prog));
        !t[from..=to].iter().any(|&b| b)
    }

    /// Whether no jump or call emitted so far lands inside a range that
    /// [`Emitter::fusable`] let fuse without the targets, and the program
    /// has no `callx` (which may land anywhere). Every transfer to an
    /// instruction is a fixup of its label (jumps both ways, bpf-to-bpf
    /// calls; the entry calls instruction 0, never inside a range), so the
    /// fixups of the program body are all there is to look at. (Any new
    /// way into the code at an instruction, as `callx`'s offset table is,
    /// must be refused here too.)
    fn fused_ok(&self) -> bool {
        if self.has_callx {
            return false;
        }
        let fused = &self.fused;
        // Most jumps lie outside all ranges (in checked code, those to the
        // cold stubs and shared routines, whose labels come after the
        // instructions'): no search for them.
        let (Some(&(lo, _)), Some(&(_, hi))) = (fused.first(), fused.last()) else {
            return true;
        };
        self.fixups.iter().all(|&(_, _, l, _)| {
            if l < lo || l > hi {
                return true;
            }
            // The last range starting at or before `l` (ranges are in order
            // and disjoint).
            let k = fused.partition_point(|&(from, _)| from <= l);
            k == 0 || fused[k - 1].1 < l
        })
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
            (_, Opnd::Imm(imm)) => self.a.alu_r_i(s, Alu::Cmp, hr(dst), imm),
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
            // Both idioms go on with an ALU operation on the moved-to
            // register; most moves are not followed by one.
            let next_on_dst = matches!(
                self.input.prog.insns().get(i + 1),
                Some(&Insn::Alu { dst: d, .. }) if d == dst
            );
            if next_on_dst
                && s != dst
                && (self.rotate(i, width, dst, s) || self.mov_op(i, width, dst, s))
            {
                return;
            }
            // As `alu` would (a 64-bit move to itself is nothing).
            let (d, r) = (hr(dst), hr(s));
            if r != d || width == Width::W32 {
                self.a.mov_rm_r(sz(width), Rm::Reg(d), r);
            }
            return;
        }
        // The commonest forms go straight to the encoder, with the calls
        // `alu` would make, instead of through its whole dispatch (out of
        // line, two matches); blinded immediates take the long way.
        let (d, s) = (hr(dst), sz(width));
        let o = match op {
            AluOp::Add => Alu::Add,
            AluOp::Sub => Alu::Sub,
            AluOp::Or => Alu::Or,
            AluOp::And => Alu::And,
            AluOp::Xor => Alu::Xor,
            _ => return self.alu_insn(width, op, d, src),
        };
        match src {
            Src::Imm(imm) if !self.blinds(imm) => self.a.alu_r_i(s, o, d, imm),
            Src::Reg(r) => self.a.alu_rm_r(s, o, Rm::Reg(d), hr(r)),
            Src::Imm(_) => self.alu_insn(width, op, d, src),
        }
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
        // One instruction at a time: most moves are not followed by a
        // shift of their destination, and this runs for every move.
        let Some((op1 @ (AluOp::Rsh | AluOp::Lsh), a1, Src::Imm(c1))) = alu(i + 1) else {
            return false;
        };
        let Some((AluOp::Mov, b, Src::Reg(s2))) = alu(i + 2).filter(|_| a1 == a) else {
            return false;
        };
        let (
            Some((op3 @ (AluOp::Rsh | AluOp::Lsh), b3, Src::Imm(c3))),
            Some((AluOp::Or, b4, Src::Reg(a4))),
        ) = (alu(i + 3), alu(i + 4))
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
/// [`WRITES_R10`] when it can write r10 (see [`writes_r10`]). The
/// lowering collects the same bits in its own dispatch (`Emitter::insn`);
/// this is for the instructions an idiom absorbed, and the reference the
/// unit tests compare with.
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

/// Which of r1-r5 (bit `Reg::index`) the program may read, before writing
/// them, after the helper call at `i` returns: those that checked code
/// must keep across the call (the interpreter keeps them all; a register
/// written before any read cannot tell). A bounded walk of the paths from
/// `i + 1`: a register is dead on a path that writes it (a `mov`, `lddw` or
/// load into it) before reading it, or ends (`exit` when the program has
/// no subprograms, `subprograms` false: a subprogram's caller may read
/// r1-r5 after its return); anything else that names it, a call (which
/// may take them as arguments), or running out of steps keeps it.
fn live_after_call(prog: &Program, i: usize, subprograms: bool) -> u8 {
    const ALL: u8 = 0b11_1110;
    let insns = prog.insns();
    // (r6-r10 give 0: a shift of a `u8` by 8 or more would wrap.)
    let bit = |r: Reg| (1u32 << r.index()) as u8 & ALL;
    let mut live = 0u8;
    // (instruction, registers not yet decided on the path).
    let mut todo: Vec<(usize, u8)> = vec![(i + 1, ALL)];
    let mut seen: Vec<(usize, u8)> = Vec::new();
    let mut steps = 64u32;
    while let Some((mut k, mut open)) = todo.pop() {
        loop {
            if steps == 0 {
                live |= open;
                break;
            }
            // Nothing left to decide, or a state already walked (a loop):
            // this path adds nothing.
            if open == 0 || seen.contains(&(k, open)) {
                break;
            }
            seen.push((k, open));
            steps -= 1;
            let Some(insn) = insns.get(k) else {
                // Past the end: the fall-off trap.
                break;
            };
            let target = |off: i64| {
                prog.pcs()[k]
                    .branch(off)
                    .and_then(|t| prog.index_of(t))
                    .unwrap_or(insns.len())
            };
            match *insn {
                Insn::Alu {
                    op: AluOp::Mov | AluOp::MovSx(_),
                    dst,
                    src,
                    ..
                } if src != Src::Reg(dst) => {
                    if let Src::Reg(r) = src {
                        live |= open & bit(r);
                    }
                    open &= !bit(dst);
                }
                Insn::LoadImm64 { dst, .. } => open &= !bit(dst),
                Insn::Load { dst, src, .. } => {
                    live |= open & bit(src);
                    open &= !bit(dst);
                }
                Insn::Exit if !subprograms => break,
                Insn::Exit
                | Insn::Call(_)
                | Insn::CallLocal(_)
                | Insn::Callx(_)
                | Insn::CallKfunc { .. } => {
                    live |= open;
                    break;
                }
                Insn::Ja { off, .. } => {
                    k = target(off as i64);
                    continue;
                }
                Insn::Jmp { dst, src, off, .. } => {
                    live |= open & (bit(dst) | if let Src::Reg(r) = src { bit(r) } else { 0 });
                    todo.push((target(off as i64), open));
                }
                _ => live |= open & (regs_info(insn) as u8),
            }
            k += 1;
        }
    }
    live
}

/// [`frame_bits`]: r6-r9 are bits 0-3.
const FRAME_R10: u8 = 1 << 4;
/// In [`subprog_frames`]: the subprogram, or one it calls, calls a helper
/// (so it must be entered with rsp aligned, see `local_call`).
const FRAME_HELPERS: u8 = 1 << 5;
const FRAME_ALL: u8 = 0x3f;

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
        Insn::Callx(r) => r10(r) | FRAME_HELPERS,
        Insn::Call(_) => FRAME_HELPERS,
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
    // FRAME_HELPERS through the calls: a subprogram that calls one that
    // calls a helper needs rsp aligned too (a fixed point: at most one
    // round per subprogram).
    let starts: Vec<u32> = frames.iter().map(|f| f.0).collect();
    let sub_of = |i: usize| starts.partition_point(|&s| s as usize <= i) - 1;
    let mut changed = true;
    while changed {
        changed = false;
        for (i, (pc, insn)) in prog.iter().enumerate() {
            if let Insn::CallLocal(_) = *insn {
                let t = insn.branch_target(pc).and_then(|t| prog.index_of(t))?;
                let (k, callee) = (sub_of(i), sub_of(t));
                if frames[callee].1 & FRAME_HELPERS != 0 && frames[k].1 & FRAME_HELPERS == 0 {
                    frames[k].1 |= FRAME_HELPERS;
                    changed = true;
                }
            }
        }
    }
    Some(frames)
}

/// Lowers a whole program (see the module docs): first assuming that r10
/// is never written (accesses `[r10 + const]` inside the frame need no
/// check), and again without that assumption in the rare case that an
/// instruction writes r10 (only programs a verifier rejects do).
/// Alignment of loop heads and subprogram entries in bytes (the targets
/// of backward jumps and calls, `Program::loop_heads`): a loop whose head starts a 64-byte block runs at the
/// same speed wherever the program lands; unaligned, the same bytes of
/// the `acl` benchmark ran 500-800 ns by their offset alone (BENCHMARKS.md,
/// "Code placement").
const HEAD_ALIGN: usize = 64;

// A padding before a head that code falls into and longer than one `NOP`
// ([`MAX_NOP`] bytes) is jumped over by a `jmp rel8` (one instruction run
// on each entry into the loop rather than up to six), which must reach.
const _: () = assert!(HEAD_ALIGN - 1 <= 2 + i8::MAX as usize && HEAD_ALIGN <= 128);

/// The layout knobs for measuring placement, read once from the
/// environment: `BPFKIT_JIT_ALIGN` (a power of two up to 64; 1 turns the
/// alignment off; default [`HEAD_ALIGN`]) and `BPFKIT_JIT_SHIFT` (bytes
/// of `int3` before the first instruction, never run: the whole program
/// lands that much further into its page; default 0, at most 4096).
fn layout() -> (usize, usize) {
    static L: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *L.get_or_init(|| {
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        let align = var("BPFKIT_JIT_ALIGN")
            .filter(|a| a.is_power_of_two() && *a <= HEAD_ALIGN)
            .unwrap_or(HEAD_ALIGN);
        let shift = var("BPFKIT_JIT_SHIFT").filter(|&s| s <= 4096).unwrap_or(0);
        (align, shift)
    })
}

pub(crate) fn lower(input: &LowerInput<'_>) -> Lowered {
    let mut s = SCRATCH.take().unwrap_or_default();
    let (mut r10_fixed, mut near_limit, mut eager) = (true, 127, false);
    let l = loop {
        match lower_with(input, r10_fixed, near_limit, eager, &mut s) {
            Ok(l) => break l,
            Err(Retry::R10) => r10_fixed = false,
            Err(Retry::Targets) => eager = true,
            Err(Retry::Far) if near_limit > 0 => near_limit = 0,
            Err(Retry::Far) => unreachable!("only jumps emitted near can fall short"),
        }
    };
    SCRATCH.set(Some(s));
    l
}

/// Why [`lower_with`] must start over.
enum Retry {
    /// An instruction writes r10.
    R10,
    /// A jump emitted short at once does not reach its target (a bound of
    /// `near_bytes` is wrong).
    Far,
    /// A jump lands inside an idiom fused before the jump targets were
    /// known, or the program has a `callx` (see [`Emitter::fusable`]).
    Targets,
}

/// The working buffers of a lowering, kept per thread for the next one
/// (with their capacity), so that a compile allocates little besides what
/// the `Jit` keeps: a dozen allocations and frees, several of them large
/// enough for `malloc` to consolidate its free lists, were about a tenth of
/// the time of compiling a small program. Buffers grown past
/// [`SCRATCH_KEEP`] bytes by a big program are not kept.
#[derive(Default)]
pub(crate) struct Scratch {
    code: Vec<u8>,
    labels: Vec<u32>,
    label_k: Vec<u32>,
    fixups: Vec<Fixup>,
    shrink: Vec<Candidate>,
    cold: Vec<Cold>,
    sites: Vec<(u32, u32, u32)>,
    leaders: Vec<bool>,
    fused: Vec<(u32, u32)>,
    short: Vec<u8>,
    saved: Vec<usize>,
    target_k: Vec<u32>,
    dist: Vec<usize>,
    open: Vec<u32>,
    /// Recorded emissions of the shared routines, by key (at most a few
    /// dozen combinations occur).
    routines: Vec<Routines>,
}

/// Largest buffer (bytes) a [`Scratch`] keeps between compiles.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::Cell<Option<Box<Scratch>>> = const { std::cell::Cell::new(None) };
}

/// Empties `v` for reuse, or frees it when it has grown past
/// [`SCRATCH_KEEP`].
fn recycle<T>(v: &mut Vec<T>) {
    v.clear();
    if v.capacity() * std::mem::size_of::<T>() > SCRATCH_KEEP {
        *v = Vec::new();
    }
}

impl Lowered {
    /// The generated code.
    pub fn code(&self) -> &[u8] {
        &self.buf[..self.code_len]
    }
}

/// Gives a code buffer (`Lowered::buf`, once published) back to this
/// thread's [`Scratch`] for the next lowering. Its length is kept (its
/// bytes are scratch; see `Asm::with_buffer`).
pub(crate) fn recycle_code(mut code: Vec<u8>) {
    if code.capacity() > SCRATCH_KEEP {
        code = Vec::new();
    }
    SCRATCH.with(|c| {
        let mut s = c.take().unwrap_or_default();
        if code.capacity() > s.code.capacity() {
            s.code = code;
        }
        c.set(Some(s));
    });
}

/// One emission pass; an error when `r10_fixed` or a jump emitted short
/// at once (`near_limit`, see `Emitter::near_limit`) turns out to be
/// wrong.
fn lower_with(
    input: &LowerInput<'_>,
    r10_fixed: bool,
    near_limit: usize,
    eager_targets: bool,
    s: &mut Scratch,
) -> Result<Lowered, Retry> {
    let prog = input.prog;
    let insns = prog.insns();
    let n = insns.len();
    // With a budget, one scan before emitting for the jump targets (where
    // the budget count is flushed) and `callx` (whose targets need the
    // per-instruction credit). Everything else (registers named, calls,
    // helpers, `lddw` values) is found while emitting, and the entry,
    // which depends on it, is emitted last.
    let mut leaders = std::mem::take(&mut s.leaders);
    leaders.clear();
    let mut has_callx = false;
    if input.budget {
        leaders.resize(n + 1, false);
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
    let (align, shift) = layout();
    // The targets of backward jumps and calls (`Program::loop_heads`,
    // found while decoding: a scan here was 5 % of a compile).
    let heads: &[u32] = if align > 1 { prog.loop_heads() } else { &[] };
    // Sized for typical code so that nothing grows while emitting (growth
    // was about a dozen reallocations per compile): checked accesses take
    // ~30 bytes and a label or two, jumps a fixup and a shrink candidate.
    // The buffers come from the thread's `Scratch`, empty.
    let per_insn = if input.checked { 24 } else { 12 };
    fn fresh<T>(v: &mut Vec<T>, cap: usize) -> Vec<T> {
        let mut v = std::mem::take(v);
        v.clear();
        v.reserve(cap);
        v
    }
    let mut labels = fresh(&mut s.labels, 2 * n + 64);
    labels.resize(n + 1 + FIXED, UNBOUND);
    let mut label_k = fresh(&mut s.label_k, 2 * n + 64);
    label_k.resize(n + 1 + FIXED, 0);
    let mut e = Emitter {
        a: Asm::with_buffer(std::mem::take(&mut s.code), n * per_insn + 1024),
        n,
        labels,
        label_k,
        fixups: fresh(&mut s.fixups, n + 16),
        shrink: fresh(&mut s.shrink, n / 2 + 16),
        cold: fresh(&mut s.cold, 16),
        sites: fresh(&mut s.sites, if input.checked { n / 2 + 16 } else { 0 }),
        hsites: Vec::new(),
        input,
        r10_fixed,
        pending: 0,
        used_slow: 0,
        leaders,
        heads,
        align,
        adj: if has_callx { vec![0; n] } else { Vec::new() },
        table: Vec::new(),
        trap_insns: Vec::new(),
        uses_regions: false,
        used: 0,
        info: 0,
        local_calls: false,
        helper_calls: false,
        has_callx: false,
        // xorshift64 must not start at 0.
        rng: input.blind.map_or(0, |s| s | 1),
        frames: None,
        frames_known: false,
        frame_calls: false,
        aligned_calls: false,
        subprograms: None,
        skip: 0,
        branch_targets: None,
        eager_targets,
        fused: fresh(&mut s.fused, 0),
        refs: 0,
        cur: 0,
        near_limit: if input.budget || input.blind.is_some() {
            0
        } else {
            near_limit
        },
    };
    if shift > 0 {
        // Never run: the entry calls instruction 0's label.
        e.a.extend(&vec![0xcc; shift]);
    }
    // The next head (a compare per instruction, not a lookup).
    let (mut hk, mut next_head) = (0, e.heads.first().map_or(usize::MAX, |&h| h as usize));
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
        e.cur = i;
        // Not inside a fused idiom (whose instructions emit nothing of
        // their own; a head there makes the lowering start over anyway).
        if i == next_head {
            if e.skip == 0 {
                let falls_in = i > 0 && !matches!(insns[i - 1], Insn::Ja { .. } | Insn::Exit);
                e.align_here(falls_in);
            }
            hk += 1;
            next_head = e.heads.get(hk).map_or(usize::MAX, |&h| h as usize);
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
                    return Err(Retry::R10);
                }
                e.info |= 1 << dst.index();
                if let Src::Reg(r) = src {
                    e.info |= 1 << r.index();
                }
                e.alu_at(i, width, op, dst, src)
            }
            _ => {
                e.insn(i, insn);
                // Found after emitting it (nothing emitted for an
                // instruction that writes r10 is kept).
                if r10_fixed && e.info & WRITES_R10 != 0 {
                    return Err(Retry::R10);
                }
            }
        }
    }
    #[cfg(test)]
    assert_eq!(
        e.info & !WRITES_R10,
        insns.iter().fold(0, |a, i| a | regs_info(i)) & !WRITES_R10,
        "registers collected by the dispatch"
    );
    if !e.fused.is_empty() && !e.fused_ok() {
        return Err(Retry::Targets);
    }
    e.used = e.info as u16;
    e.bind(n);
    let l = e.trap_stub(status::FELL_OFF, n);
    e.jmp(l);
    let mut routines = std::mem::take(&mut s.routines);
    e.shared_routines(&mut routines);
    e.emit_cold();
    let entry_label = e.new_label();
    e.bind(entry_label);
    e.entry(&mut routines);
    s.routines = routines;
    let Emitter {
        a,
        labels,
        label_k,
        sites,
        mut fixups,
        shrink,
        cold,
        hsites,
        leaders,
        fused,
        adj,
        table,
        trap_insns,
        uses_regions,
        has_callx,
        ..
    } = e;
    let (mut buf, len) = a.into_parts();
    let Some(code_len) = relax(&mut buf[..len], &labels, &label_k, &mut fixups, &shrink, s) else {
        s.code = buf;
        return Err(Retry::Far);
    };
    // Only the labels read below move to their final offsets (see `relax`).
    let last = shrink.len();
    let saved = &s.saved[..=last];
    let at = |l: usize| labels[l] - saved[(label_k[l] as usize).min(last)] as u32;
    let lowered = Lowered {
        buf,
        code_len,
        entry: at(entry_label),
        offsets: if has_callx {
            (0..n).map(at).collect()
        } else {
            Vec::new()
        },
        adj,
        sites: sites
            .iter()
            .map(|&(pos, k, idx)| (pos - saved[(k as usize).min(last)] as u32, idx))
            .collect(),
        helper_sites: hsites
            .iter()
            .map(|&(pos, k, idx, h)| (pos - saved[(k as usize).min(last)] as u32, idx, h))
            .collect(),
        tramp: labels
            .get(n + 1 + L_TRAMP)
            .filter(|&&l| l != UNBOUND)
            .map_or(u32::MAX, |_| at(n + 1 + L_TRAMP)),
        table,
        trap_insns,
        uses_regions,
        has_callx,
    };
    (s.labels, s.label_k, s.fixups, s.shrink) = (labels, label_k, fixups, shrink);
    (s.sites, s.cold, s.leaders, s.fused) = (sites, cold, leaders, fused);
    recycle(&mut s.labels);
    recycle(&mut s.label_k);
    recycle(&mut s.fixups);
    recycle(&mut s.shrink);
    recycle(&mut s.sites);
    recycle(&mut s.cold);
    recycle(&mut s.leaders);
    recycle(&mut s.fused);
    recycle(&mut s.short);
    recycle(&mut s.saved);
    recycle(&mut s.target_k);
    recycle(&mut s.dist);
    recycle(&mut s.open);
    Ok(lowered)
}

/// Shrinks long forward jumps that reach their target with a rel8 once
/// the code is laid out: decide on the metadata until nothing changes
/// (shrinking only shortens distances, so each round keeps earlier
/// decisions valid), then copy the code once, moving fixups, and patch
/// every displacement. `labels` keep their offsets before shrinking: label
/// `l` ends up at `labels[l] - s.saved[label_k[l]]` (the caller reads the
/// few it needs that way).
fn relax(
    code: &mut [u8],
    labels: &[u32],
    label_k: &[u32],
    fixups: &mut [Fixup],
    cands: &[Candidate],
    s: &mut Scratch,
) -> Option<usize> {
    let long_len = |c: &Candidate| match (c.pad, c.cc) {
        (0, Some(_)) => 6,
        (0, None) => 5,
        (a, _) => a as usize - 1,
    };
    // Bytes saved by each candidate: 0 while long, `long_len - 2` once short.
    let short = &mut s.short;
    short.clear();
    short.resize(cands.len(), 0u8);
    // saved[k] = bytes saved by shrunk candidates before candidate k.
    let saved = &mut s.saved;
    saved.clear();
    saved.resize(cands.len() + 1, 0);
    // Old positions never change: find once how many candidates lie before
    // each candidate's target, and its distance as a short jump before any
    // shrinking; with `saved` (from the previous round's decisions) the
    // distance is then `dist - (saved[target_k] - saved[k])`.
    let target_k = &mut s.target_k;
    target_k.clear();
    let dist = &mut s.dist;
    dist.clear();
    let mut pads = false;
    for c in cands {
        if c.pad != 0 {
            // Never a jump's target; decided after the rounds.
            pads = true;
            target_k.push(0);
            dist.push(usize::MAX);
            continue;
        }
        let t = fixups[c.fixup].2 as usize;
        target_k.push(label_k[t]);
        dist.push((labels[t] as usize).wrapping_sub(c.start + 2));
    }
    // The candidates still long, visited each round.
    let open = &mut s.open;
    open.clear();
    open.extend((0..cands.len() as u32).filter(|&k| cands[k as usize].pad == 0));
    let mut any_short = false;
    // A few rounds catch almost everything; stopping early only leaves some
    // jumps long, which is always correct. Every round decides on the
    // previous round's `saved`.
    for _round in 0..4 {
        let mut changed = false;
        for &k in open.iter() {
            let k = k as usize;
            let between = saved[target_k[k] as usize] - saved[k];
            if dist[k].wrapping_sub(between) <= 127 {
                short[k] = long_len(&cands[k]) as u8 - 2;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        any_short = true;
        open.retain(|&k| short[k as usize] == 0);
        // A running sum (reading `saved[k]` back would wait on the store).
        let mut acc = 0;
        for (k, &g) in short.iter().enumerate() {
            acc += g as usize;
            saved[k + 1] = acc;
        }
    }
    if pads {
        // Each pad keeps what aligns its end where the code before it
        // ends up; taking bytes out only shortens the distances the
        // rounds decided on.
        let mut acc = 0;
        for (k, c) in cands.iter().enumerate() {
            if c.pad != 0 {
                let at = c.start - acc;
                let need = at.wrapping_neg() & (c.pad as usize - 1);
                short[k] = (c.pad as usize - 1 - need) as u8;
            }
            acc += short[k] as usize;
            saved[k + 1] = acc;
        }
        any_short = true;
    }
    if !any_short {
        for &(at, width, label, _) in fixups.iter() {
            let ok = patch_rel(
                code,
                at as usize,
                width as usize,
                labels[label as usize] as usize,
            );
            // Only a jump emitted short at once can be out of range.
            if !ok {
                assert_eq!(width, 1, "displacement out of range");
                return None;
            }
        }
        return Some(code.len());
    }
    // Compact in place: the code only gets shorter.
    let (mut from, mut to) = (0, 0);
    for (k, c) in cands.iter().enumerate() {
        // A pad is written here even when it keeps all its bytes (they
        // were only reserved).
        if short[k] == 0 && c.pad == 0 {
            continue;
        }
        code.copy_within(from..c.start, to);
        to += c.start - from;
        if c.pad != 0 {
            let keep = long_len(c) - short[k] as usize;
            let pad = &mut code[to..to + keep];
            if c.falls_in && keep > MAX_NOP {
                // `jmp rel8` over the rest (at most 61 bytes, see
                // `HEAD_ALIGN`), which is never run.
                pad[0] = 0xeb;
                pad[1] = (keep - 2) as u8;
                fill_nops(&mut pad[2..]);
            } else {
                fill_nops(pad);
            }
            to += keep;
            from = c.start + long_len(c);
            continue;
        }
        code[to] = match c.cc {
            Some(cc) => 0x70 + cc as u8,
            None => 0xeb,
        };
        // Now `op rel8`: the displacement follows the one-byte opcode, at
        // `to + 1` once the shift below (by `saved[fx.3]`) is undone.
        let fx = &mut fixups[c.fixup];
        fx.0 = (to + 1 + saved[fx.3 as usize]) as u32;
        fx.1 = 1;
        to += 2;
        from = c.start + long_len(c);
    }
    let len = code.len();
    code.copy_within(from..len, to);
    to += len - from;
    let code = &mut code[..to];
    // A label's final offset is its old one minus `saved` of its
    // `label_k`, worked out only for the labels something reads (the
    // fixups' here, the entry's and the sites' by the caller, with the
    // same `s.saved`): most labels (one per instruction) are never read,
    // and moving them all was about a fifth of relaxation. `min` spares
    // the bounds check.
    let last = cands.len();
    let saved = &saved[..=last];
    for fx in fixups.iter_mut() {
        fx.0 -= saved[(fx.3 as usize).min(last)] as u32;
        let t = fx.2 as usize;
        let target = labels[t] - saved[(label_k[t] as usize).min(last)] as u32;
        let ok = patch_rel(code, fx.0 as usize, fx.1 as usize, target as usize);
        if !ok {
            assert_eq!(fx.1, 1, "displacement out of range after relaxation");
            return None;
        }
    }
    Some(to)
}

/// `bpf_tail_call`'s helper id.
const TAIL_CALL: u32 = 12;
/// The kernel's limit of tail calls in one run (`MAX_TAIL_CALL_CNT`).
const MAX_TAIL_CALLS: i32 = 33;
/// What the helper returns when the call does not happen: an index past
/// the end or the limit reached (`-EINVAL`), an empty slot (`-ENOENT`).
const TAIL_EINVAL: u64 = -22i64 as u64;
const TAIL_ENOENT: u64 = -2i64 as u64;

/// Native tail calls (see `crate::tail`).
impl Emitter<'_> {
    /// The program array of the program's `lddw`s and its slot words, when
    /// they name exactly one (the tail-call sequence compares `r2` with it;
    /// clang often merges a program's tail calls into one call site that
    /// several paths reach with different indexes, so `r2` is compared at
    /// run time instead of traced back to its `lddw`).
    fn tail_map(&self) -> Option<(u64, bpfkit_runtime::SlotMap)> {
        let resolver = self.input.resolver?;
        let mut found = None;
        for (pc, insn) in self.input.prog.iter() {
            let Insn::LoadImm64 {
                imm: imm @ Imm64::MapIdx(_),
                ..
            } = insn
            else {
                continue;
            };
            let Some(slots) = resolver.prog_array(pc, imm) else {
                continue;
            };
            let addr = resolver.resolve(pc, imm)?;
            match found {
                None => found = Some((addr, slots)),
                Some((a, _)) if a == addr => {}
                Some(_) => return None,
            }
        }
        found
    }

    /// Emits `bpf_tail_call` at instruction `i` as the kernel's JIT does
    /// when the program is compiled with a `TailTable` (unchecked mode);
    /// `false`, emitting nothing, otherwise (the helper call then). With
    /// r1 = rdi, r2 = r8, r3 = r9 (kept for the helper), scratch rax, rcx,
    /// rdx and rsi (r0, which the call sets anyway):
    ///
    /// ```text
    ///   mov rax, MAP; cmp r8, rax; jne .helper     ; another map
    ///   mov eax, r9d; cmp eax, MAX; jae .einval    ; index past the end
    ///   mov rcx, [ctx.tail_off]; test; jz .helper  ; run without the table
    ///   add rcx, [ctx.raw.data]                    ; the count is [rcx - 1]
    ///   cmp dword [rcx - 1], 33; jae .einval; add dword [rcx - 1], 1
    ///   mov rdx, SLOTS; mov rsi, [rdx + rax*8]; test; jz .enoent
    ///   mov esi, esi; cmp esi, IDS; jae .undo      ; the slot's program id
    ///   mov rdx, ENTRIES; mov rdx, [rdx + rsi*8]; test; jz .undo
    ///   ctx.direct = entry.direct; ctx.tail_prog = entry.key
    ///   mov rsp, [ctx.host_rsp]; lea rsp, [rsp - 8] ; the caller's frames go
    ///   mov rbp, [ctx.stack_top]; ctx.depth = 0; jmp [rdx] ; instruction 0
    /// .undo: sub dword [rcx], 1                     ; the helper counts
    /// .helper: <helper call>; jmp .done
    /// .einval: r0 = -EINVAL; jmp .done
    /// .enoent: r0 = -ENOENT
    /// .done:
    /// ```
    ///
    /// As in the kernel, the count is taken before the slot is read (an
    /// empty slot uses one of the 33). `[host_rsp - 8]` holds the entry's
    /// return address from its `call` of instruction 0, which nothing
    /// overwrites (code below it only pushes), so the target's `exit` at
    /// depth 0 returns from the run as the caller's would.
    fn native_tail_call(&mut self, i: usize) -> bool {
        let Some(tail) = self.input.tail else {
            return false;
        };
        if self.input.checked || self.input.budget || self.rng != 0 {
            return false;
        }
        let Some((map, slots)) = self.tail_map() else {
            return false;
        };
        let Some(h) = self.helper_calls_to(TAIL_CALL) else {
            return false;
        };
        let (helper, einval, enoent) = (self.new_label(), self.new_label(), self.new_label());
        let (undo, done) = (self.new_label(), self.new_label());
        let count = Rm::Mem(Mem::at(Gpr::Rcx, -1));
        self.a.mov_r_imm64(Gpr::Rax, map);
        self.a
            .alu_rm_r(Sz::B64, Alu::Cmp, Rm::Reg(hr(Reg::R2)), Gpr::Rax);
        self.jcc(Cc::Ne, helper);
        self.a.mov_r_rm(Sz::B32, Gpr::Rax, Rm::Reg(hr(Reg::R3)));
        self.a.alu_rm_i(
            Sz::B32,
            Alu::Cmp,
            Rm::Reg(Gpr::Rax),
            slots.max_entries as i32,
        );
        self.jcc(Cc::Ae, einval);
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rcx, field(offset_of!(Ctx, tail_off)));
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rcx), Gpr::Rcx);
        self.jcc(Cc::E, helper);
        let data = offset_of!(Ctx, raw) + offset_of!(bpfkit_runtime::raw::RawCall<()>, data);
        self.a.alu_r_rm(Sz::B64, Alu::Add, Gpr::Rcx, field(data));
        self.a.alu_rm_i(Sz::B32, Alu::Cmp, count, MAX_TAIL_CALLS);
        self.jcc(Cc::Ae, einval);
        self.a.alu_rm_i(Sz::B32, Alu::Add, count, 1);
        self.a.mov_r_imm64(Gpr::Rdx, slots.slots);
        let slot = Rm::Mem(Mem::indexed(Gpr::Rdx, Gpr::Rax, 8));
        self.a.mov_r_rm(Sz::B64, Gpr::Rsi, slot);
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rsi), Gpr::Rsi);
        self.jcc(Cc::E, enoent);
        self.a.mov_r_rm(Sz::B32, Gpr::Rsi, Rm::Reg(Gpr::Rsi));
        self.a
            .alu_rm_i(Sz::B32, Alu::Cmp, Rm::Reg(Gpr::Rsi), tail.ids as i32);
        self.jcc(Cc::Ae, undo);
        self.a.mov_r_imm64(Gpr::Rdx, tail.entries);
        let entry = Rm::Mem(Mem::indexed(Gpr::Rdx, Gpr::Rsi, 8));
        self.a.mov_r_rm(Sz::B64, Gpr::Rdx, entry);
        self.a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rdx), Gpr::Rdx);
        self.jcc(Cc::E, undo);
        let at = |off: usize| Rm::Mem(Mem::at(Gpr::Rdx, off as i32));
        self.a.mov_r_rm(
            Sz::B64,
            Gpr::Rax,
            at(offset_of!(crate::tail::TailEntry, direct)),
        );
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, direct)), Gpr::Rax);
        self.a.mov_r_rm(
            Sz::B64,
            Gpr::Rax,
            at(offset_of!(crate::tail::TailEntry, key)),
        );
        self.a
            .mov_rm_r(Sz::B64, field(offset_of!(Ctx, tail_prog)), Gpr::Rax);
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rsp, field(offset_of!(Ctx, host_rsp)));
        self.a.lea(Gpr::Rsp, Mem::at(Gpr::Rsp, -8));
        self.a
            .mov_r_rm(Sz::B64, Gpr::Rbp, field(offset_of!(Ctx, stack_top)));
        self.a.mov_rm_i(Sz::B64, field(offset_of!(Ctx, depth)), 0);
        self.a.jmp_rm(at(offset_of!(crate::tail::TailEntry, code0)));
        self.bind(undo);
        self.a.alu_rm_i(Sz::B32, Alu::Sub, count, 1);
        self.bind(helper);
        self.helper_call(i, h);
        self.jmp(done);
        self.bind(einval);
        self.a.mov_r_imm64(hr(Reg::R0), TAIL_EINVAL);
        self.jmp(done);
        self.bind(enoent);
        self.a.mov_r_imm64(hr(Reg::R0), TAIL_ENOENT);
        self.bind(done);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::asm::{assemble, Syntax};

    fn input<'p>(p: &'p Program, h: &'p Helpers, checked: bool) -> LowerInput<'p> {
        LowerInput {
            prog: p,
            helpers: h,
            resolver: None,
            budget: false,
            checked,
            blind: None,
            tail: None,
        }
    }

    /// `near_bytes` bounds every form at its longest (operands that take
    /// SIB bytes, 32-bit displacements and immediates), in both modes: the
    /// jump over the form at instruction 0 tells its size.
    #[test]
    fn near_bounds_hold() {
        let forms = [
            "add %r1, 0x12345678",
            "mov %r1, -5",
            "mov32 %r1, -5",
            "lddw %r1, 0x123456789abcdef",
            "mul %r7, 0x12345678",
            "mul32 %r7, %r9",
            "lsh %r1, %r2",
            "arsh32 %r9, %r2",
            "rsh %r9, 63",
            "div %r1, 7",
            "div %r1, 0x10",
            "mod32 %r1, %r2",
            "mod %r9, %r9",
            "neg %r9",
            "neg32 %r7",
            "be16 %r1",
            "le16 %r9",
            "be32 %r7",
            "be64 %r9",
            "ldxdw %r7, [%r7+0x7fff]",
            "ldxb %r9, [%r7-0x8000]",
            "ldxh %r0, [%r8+3]",
            "ldxw %r6, [%r10+8]",
            "stdw [%r7-0x8000], 0x12345678",
            "sth [%r9+0x100], 0x1234",
            "stb [%r7+1], 0x12",
            "stxb [%r9+0x1000], %r0",
            "stxb [%r7+0x1000], %r1",
            "stxdw [%r12+0], %r1",
            "ldxb %r0, [%r10-512]",
            "stdw [%r10-8], 0x12345678",
            "stxw [%r10-256], %r9",
            "jsgt %r9, 0x12345678, +0",
            "jne32 %r1, %r2, +0",
            "jset %r7, 0x12345678, +0",
            "jslt32 %r9, -1, +0",
            "ja +0",
            "call 1",
            "call 99",
            "exit",
        ];
        let mut h = Helpers::new();
        h.register(1, |_e, a| Ok(a[0]));
        let mut s = Scratch::default();
        for form in forms {
            let Ok(insns) = assemble(&format!("ja end\n{form}\nend:\nexit"), Syntax::Ubpf) else {
                continue; // a register the syntax does not have (r12)
            };
            let p = Program::from_insns(insns).unwrap();
            for checked in [true, false] {
                let (size, bound, _) = span_and_bound(&p, &input(&p, &h, checked), &mut s);
                assert!(
                    size <= bound,
                    "{form} (checked {checked}): {size} > {bound}"
                );
            }
        }
    }

    /// The bytes between the first jump of `p`'s code and its target, the
    /// sum of the [`near_bytes`] bounds of the instructions the jump skips
    /// in `p`, and the code's mnemonics in between.
    fn span_and_bound(
        p: &Program,
        input: &LowerInput<'_>,
        s: &mut Scratch,
    ) -> (usize, usize, Vec<iced_x86::Mnemonic>) {
        use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
        let r10_fixed = !p.insns().iter().any(|i| regs_info(i) & WRITES_R10 != 0);
        let l = lower_with(input, r10_fixed, 0, false, s).unwrap_or_else(|_| panic!("lowered"));
        let mut d = Decoder::with_ip(64, l.code(), 0, DecoderOptions::NONE);
        let jump = d
            .iter()
            .find(|i| i.op0_kind() == OpKind::NearBranch64 && i.mnemonic() != Mnemonic::Call)
            .expect("a jump");
        let (from, to) = (jump.next_ip(), jump.near_branch_target());
        let between = Decoder::with_ip(64, &l.code()[from as usize..to as usize], from, 0)
            .iter()
            .map(|i| i.mnemonic())
            .collect();
        // The instructions the jump skips: after the first jump, up to its
        // target (the jump's target is the program's last instruction).
        let insns = p.insns();
        let first = insns
            .iter()
            .position(|i| matches!(i, Insn::Ja { .. } | Insn::Jmp { .. }))
            .expect("a jump");
        let bound = insns[first + 1..insns.len() - 1]
            .iter()
            .map(|i| near_bytes(i, input.checked, r10_fixed))
            .sum();
        ((to - from) as usize, bound, between)
    }

    /// `near_bytes` bounds the fused idioms (which take the place of all
    /// the instructions they absorb; the first one emits them) and the
    /// cold-stub access tests: the group is the code the jump skips, and
    /// its characteristic instruction shows that it was fused.
    #[test]
    fn near_bounds_hold_for_idioms() {
        use iced_x86::Mnemonic::{self, *};
        let groups: [(&str, Mnemonic); 12] = [
            ("jgt %r9, 0x12345678, +1\nmov %r7, -1", Cmovbe),
            ("jsgt32 %r9, %r7, +1\nmov32 %r9, 0x12345678", Cmovle),
            ("jset %r7, 0x12345678, +1\nmov %r9, %r7", Cmove),
            ("mov %r9, %r7\nadd %r9, %r8", Lea),
            ("mov32 %r7, %r9\nadd32 %r7, %r7", Lea),
            ("mov %r9, %r7\nand %r9, 0xffff", Movzx),
            ("mov %r9, %r7\nmul %r9, 0x12345678", Imul),
            (
                "mov %r2, %r7\nrsh %r2, 51\nmov %r9, %r7\nlsh %r9, 13\nor %r9, %r2",
                Rol,
            ),
            (
                "mov32 %r2, %r9\nlsh32 %r2, 5\nmov32 %r7, %r9\nrsh32 %r7, 27\nor32 %r7, %r2",
                Rol,
            ),
            (
                "ldxb %r2, [%r7+0x7001]\nldxb %r9, [%r7+0x7000]\nlsh %r9, 8\nor %r9, %r2",
                Rol,
            ),
            (
                "ldxb %r9, [%r7-0x8000]\nldxb %r2, [%r7-0x7fff]\nlsh32 %r9, 8\nor32 %r9, %r2",
                Rol,
            ),
            (
                "ldxb %r9, [%r10+0x1000]\nldxb %r2, [%r10+0x1001]\nlsh %r9, 8\nor %r9, %r2",
                Rol,
            ),
        ];
        let h = Helpers::new();
        let mut s = Scratch::default();
        for (group, mnemonic) in groups {
            let p = prog(&format!("ja end\n{group}\nend:\nexit"));
            for checked in [true, false] {
                let (size, bound, code) = span_and_bound(&p, &input(&p, &h, checked), &mut s);
                assert!(code.contains(&mnemonic), "{group}: fused ({code:?})");
                assert!(
                    size <= bound,
                    "{group} (checked {checked}): {size} > {bound}"
                );
            }
        }
    }

    /// `near_bytes` bounds a `call` that is an inline array lookup
    /// (unchecked mode with a resolver that describes the map; a jump
    /// between the `lddw` and the call does not keep it from inlining).
    #[test]
    fn near_bounds_hold_for_inline_lookups() {
        use bpfkit_runtime::ArrayMap;
        struct Arrays;
        impl Imm64Resolver for Arrays {
            fn resolve(&self, _pc: bpfkit_isa::Pc, _imm: &Imm64) -> Option<u64> {
                Some(0x7000_0000_1000)
            }
            fn array_map(&self, _pc: bpfkit_isa::Pc, _imm: &Imm64) -> Option<ArrayMap> {
                // Per-CPU (the longer code): 3 CPUs of 24-byte values.
                Some(ArrayMap {
                    base: 0x7fff_0123_4560,
                    stride: 72,
                    max_entries: 0x1234_5678,
                    cpu_stride: 24,
                    cpus: 3,
                })
            }
        }
        let mut h = Helpers::new();
        h.register(1, |_e, a| Ok(a[0]));
        let mut s = Scratch::default();
        let mut insns =
            assemble("lddw %r1, 0\njeq %r9, 0, +1\ncall 1\nexit", Syntax::Ubpf).unwrap();
        insns[0] = Insn::LoadImm64 {
            dst: Reg::R1,
            imm: Imm64::MapIdx(0),
        };
        let p = Program::from_insns(insns).unwrap();
        for checked in [true, false] {
            let input = LowerInput {
                resolver: Some(&Arrays),
                ..input(&p, &h, checked)
            };
            let (size, bound, code) = span_and_bound(&p, &input, &mut s);
            // Unchecked: inlined, so no call in between.
            let call = code.contains(&iced_x86::Mnemonic::Call);
            assert_eq!(call, checked, "{code:?}");
            assert!(size <= bound, "checked {checked}: {size} > {bound}");
        }
    }

    /// Idioms fused before the jump targets are known give the code of the
    /// eager lookup when nothing jumps inside them; a jump (backward or
    /// forward) or a bpf-to-bpf call into one, or a `callx`, makes the
    /// lowering start over with the lookup, which does not fuse there.
    #[test]
    fn idioms_fused_early_are_checked_against_the_jumps() {
        let fine = [
            "mov %r2, %r1\nadd %r2, %r1\njgt %r2, 5, +1\nmov %r0, 1\nexit",
            "loop:\nmov %r3, %r1\nand %r3, 0xff\nsub %r1, 1\njne %r1, 0, loop\nmov %r0, %r3\nexit",
        ];
        let inside = [
            // Backward, into the `add` of a `lea`.
            "mov %r2, %r1\nadd %r2, %r1\nsub %r1, 1\njne %r1, 0, -3\nmov %r0, %r2\nexit",
            // Forward, onto the `mov` of a select.
            "jeq %r1, 7, +1\njgt %r1, 5, +1\nmov %r0, 1\nexit",
            // A call onto the `lsh` of a rotate.
            "call local f\nexit\nmov %r2, %r1\nrsh %r2, 51\nmov %r0, %r1\nf:\nlsh %r0, 13\nor %r0, %r2\nexit",
        ];
        let h = Helpers::new();
        let mut s = Scratch::default();
        for text in fine.iter().chain(&inside) {
            let p = prog(text);
            for checked in [true, false] {
                let i = input(&p, &h, checked);
                let eager = outcome(&lower_with(&i, true, 0, true, &mut s).ok().unwrap());
                let early = lower_with(&i, true, 0, false, &mut s);
                if fine.contains(text) {
                    assert_eq!(outcome(&early.ok().unwrap()), eager, "{text}");
                } else {
                    assert!(matches!(early, Err(Retry::Targets)), "{text}");
                }
                let unfused = lower_with(&i, true, 0, true, &mut s).ok().unwrap();
                assert_eq!(outcome(&unfused), eager, "{text}");
            }
        }
        // `callx`: every instruction may be a target.
        let mut insns = assemble("mov %r2, %r1\nadd %r2, %r1\nexit", Syntax::Ubpf).unwrap();
        insns.insert(0, Insn::Callx(Reg::R3));
        let p = Program::from_insns(insns).unwrap();
        let i = input(&p, &h, true);
        assert!(matches!(
            lower_with(&i, true, 0, false, &mut s),
            Err(Retry::Targets)
        ));
        assert!(lower_with(&i, true, 0, true, &mut s).is_ok());
    }

    /// Jumps emitted short at once give the same code as relaxation, and a
    /// wrong bound (here: a limit far beyond rel8) is caught and lowered
    /// again without them.
    #[test]
    fn near_jumps_change_nothing_and_fall_back() {
        let mut far = String::from("jeq %r1, 0, +8\n");
        for _ in 0..8 {
            far += "ldxdw %r0, [%r1+0x100]\n";
        }
        far += "exit";
        let texts = [
            "jeq %r1, 0, +2\nadd %r0, 1\nmov %r2, 3\nexit",
            "jgt %r1, 5, +1\nldxw %r0, [%r1+4]\njne %r0, 7, +2\nstxw [%r10-4], %r0\nja +0\nexit",
            "mov %r0, 0\nloop:\nadd %r0, 1\njlt %r0, 10, loop\njeq %r0, 10, +1\nmov %r0, 1\nexit",
            &far,
        ];
        let h = Helpers::new();
        let mut s = Scratch::default();
        for text in texts {
            let p = prog(text);
            for checked in [true, false] {
                let i = input(&p, &h, checked);
                let relaxed = outcome(&lower_with(&i, true, 0, false, &mut s).ok().unwrap());
                if let Ok(l) = lower_with(&i, true, 127, false, &mut s) {
                    assert_eq!(outcome(&l), relaxed, "{text}");
                }
                assert_eq!(outcome(&lower(&i)), relaxed, "{text}");
            }
        }
        // Every jump short at once: the one over 8 checked loads cannot be.
        let p = prog(&far);
        let i = input(&p, &h, true);
        assert!(matches!(
            lower_with(&i, true, 100_000, false, &mut s),
            Err(Retry::Far)
        ));
    }

    /// The copied test is a subtraction, a compare and a `jcc rel32`
    /// (displacement 0, patched by a fixup) on the condition that the
    /// access is outside: the stack for an r10 base, the cached region for
    /// any other.
    #[test]
    fn access_test_is_one_test_and_a_long_jump() {
        use iced_x86::{Decoder, DecoderOptions, Mnemonic};
        for n in [1, 2, 4, 8] {
            for write in [false, true] {
                for r10 in [false, true] {
                    let t = access_test(n, write, r10);
                    let mut d = Decoder::with_ip(64, t, 0, DecoderOptions::NONE);
                    let got: Vec<_> = d.iter().collect();
                    let m: Vec<Mnemonic> = got.iter().map(|i| i.mnemonic()).collect();
                    let jump = if r10 { Mnemonic::Ja } else { Mnemonic::Jae };
                    assert_eq!(m, [Mnemonic::Sub, Mnemonic::Cmp, jump]);
                    assert_eq!(got[2].len(), 6, "rel32");
                    assert_eq!(t[t.len() - 4..], [0; 4]);
                    let mut a = Asm::new();
                    if r10 {
                        stack_test_rdx(&mut a, n);
                    } else {
                        hot_test_rdx(&mut a, n, write);
                    }
                    assert_eq!(a.code(), &t[..t.len() - 6], "n {n} write {write}");
                }
            }
        }
    }

    fn prog(text: &str) -> Program {
        Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
    }

    /// The registers the lowering's dispatch collects (`Emitter::info`,
    /// which the entry depends on) are [`regs_info`]'s, for one
    /// instruction of every kind on its own (so that no other instruction
    /// names the same registers), in both modes; the lowering itself also
    /// asserts it in unit tests. An arm that forgets a register (e.g. the
    /// implicit r0 of an atomic) fails here.
    #[test]
    fn dispatch_collects_regs_info() {
        let forms = [
            "neg %r7",
            "be16 %r8",
            "le32 %r9",
            "lddw %r6, 0x123456789",
            "ldxw %r7, [%r8+4]",
            "ldxb %r6, [%r10-8]",
            "stxdw [%r9+8], %r8",
            "stw [%r7+4], 5",
            "lock add [%r8+8], %r9",
            "lock fetch or32 [%r6+0], %r7",
            "lock xchg64 [%r9+0], %r8",
            "lock cmpxchg [%r7+0], %r6",
            "ldabsb 3",
            "ldindh %r8, 2",
            "jgt %r6, %r9, +0",
            "jeq32 %r7, 5, +0",
            "ja +0",
            "call 1",
            "call %r8",
            "add %r6, %r9",
            "mov32 %r7, 3",
        ];
        let mut h = Helpers::new();
        h.register(1, |_e, a| Ok(a[0]));
        for form in forms {
            let p = prog(&format!("{form}\nexit"));
            for checked in [true, false] {
                let mut s = Scratch::default();
                // Panics on a mismatch (the assertion at the end of the
                // dispatch loop, cfg(test)).
                let l = lower_with(&input(&p, &h, checked), true, 127, false, &mut s);
                assert!(l.is_ok(), "{form}");
            }
        }
    }

    /// Code, entry, offsets, budget credits and sites of a lowering.
    type Outcome = (Vec<u8>, u32, Vec<u32>, Vec<u32>, Vec<(u32, u32)>);

    /// Everything a lowering produces, comparable.
    fn outcome(l: &Lowered) -> Outcome {
        (
            l.code().to_vec(),
            l.entry,
            l.offsets.clone(),
            l.adj.clone(),
            l.sites.clone(),
        )
    }

    /// The per-thread state (scratch buffers, recorded shared routines)
    /// changes nothing: every program lowers the same in a fresh thread
    /// (routines emitted) and after all the others in one thread (routines
    /// replayed, buffers reused), in each mode.
    #[test]
    fn shared_routines_replay_as_emitted() {
        let texts = [
            "mov %r0, 1\nexit",
            "ldxw %r0, [%r1+4]\nstxb [%r1+1], %r0\nexit",
            "ldxdw %r0, [%r1]\nstxdw [%r1+8], %r0\nldxh %r2, [%r1+2]\nstxw [%r1+12], %r2\nexit",
            "mov %r1, 3\ncall 1\nexit",
            "ldabsb 3\nldindh %r1, 2\nexit",
            "mov %r6, 4\nloop:\ncall local f\nsub %r6, 1\njne %r6, 0, loop\nexit\nf:\nldxb %r0, [%r10-1]\nexit",
            // Cold stubs of both tests (r10 out of its frame, another base)
            // and an idiom.
            "ldxw %r0, [%r10+8]\nldxb %r2, [%r1+1]\nldxb %r3, [%r1]\nlsh %r3, 8\nor %r3, %r2\nstxh [%r10-600], %r3\njgt %r3, 9, +1\nmov %r0, 1\nexit",
        ];
        let mut h = Helpers::new();
        h.register(1, |_e, a| Ok(a[0]));
        let inputs = || -> Vec<(bool, bool, Option<u64>)> {
            vec![
                (true, false, None),
                (false, false, None),
                (true, true, None),
                (true, false, Some(0x1234_5678_9abc_def1)),
            ]
        };
        let mut progs: Vec<Program> = texts.iter().map(|t| prog(t)).collect();
        // Forward jumps that stay long, others that shrink.
        let mut long = String::from("mov %r0, 0\njeq %r1, 0, +31\n");
        for k in 0..31 {
            long += if k % 2 == 0 {
                "ldxw %r0, [%r1+4]\n"
            } else {
                "jne %r0, 7, +1\n"
            };
        }
        long += "exit";
        progs.push(prog(&long));
        // `callx` (no ubpf syntax): a helper id in r1.
        progs.push(
            Program::from_insns(vec![
                Insn::LoadImm64 {
                    dst: Reg::R1,
                    imm: Imm64::Value(1),
                },
                Insn::Callx(Reg::R1),
                Insn::Exit,
            ])
            .unwrap(),
        );
        let lower_one = |p: &Program, (checked, budget, blind): (bool, bool, Option<u64>)| {
            let input = LowerInput {
                prog: p,
                helpers: &h,
                resolver: None,
                budget,
                checked,
                blind,
                tail: None,
            };
            outcome(&lower(&input))
        };
        let mut fresh = Vec::new();
        for p in &progs {
            for mode in inputs() {
                // A new thread has no recorded routines and no buffers.
                let got = std::thread::scope(|s| s.spawn(|| lower_one(p, mode)).join().unwrap());
                fresh.push(got);
            }
        }
        // One thread, every program twice over.
        let mut k = 0;
        for round in 0..2 {
            for p in &progs {
                for mode in inputs() {
                    let got = lower_one(p, mode);
                    let want = &fresh[k % fresh.len()];
                    assert_eq!(&got, want, "round {round}, program {k}");
                    k += 1;
                }
            }
        }
    }
}
