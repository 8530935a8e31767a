//! # bpfkit-interp
//!
//! The reference eBPF interpreter: RFC 9669 semantics, every load, store and
//! atomic checked against the guest memory regions of
//! [`bpfkit_runtime::Memory`] plus its own stack, typed [`Trap`]s.
//!
//! A [`Program`] is compiled once ([`Interpreter::new`] or
//! [`Interpreter::builder`]) into a compact pre-decoded form (one small
//! enum op per instruction, operands pre-extended, branch targets as
//! absolute indices, helpers pre-resolved), then run many times with
//! [`Interpreter::run`]: a run allocates nothing and keeps the registers in a
//! local array. A peephole pass then fuses common sequences of dependent
//! instructions into superinstructions: pairs (`mov32 r1, r2; and32 r1,
//! 0xff`, `lsh r1, 8; or r1, r2`, spill reloads with their use, argument
//! moves with the call, ...) and the longer idioms clang emits for hashing,
//! checksums and parsing (32-bit rotates, big-endian 16-bit and unaligned
//! little-endian 32-bit loads from bytes, bit-serial CRC steps, selects
//! `d = x < k`, counter bumps in memory), and for data structures: a 32-bit
//! field load or a move followed by a register compare-and-branch on it,
//! an array element's address (`mov`, `mul` or `lsh`, `mov`, `add`), a sum
//! shifted right (a midpoint). A fused op saves dispatches and
//! round trips of intermediate values through the register array; it does
//! the work of its instructions in order, so register aliasing behaves as
//! unfused, and a load trapping inside it reports its own pc and an exact
//! count. The instructions after the first stay in place, so jumps into a
//! fused group still work. [`Interpreter::run_traced`] executes the unfused
//! form, and the tests check that both agree on random programs.
//!
//! Other choices made for speed:
//! - Dispatch goes through a pointer to the current op (the crate's one
//!   `unsafe` dereference; the table is padded with sentinels so that no op
//!   can step past it, and jump targets are masked into it), advanced after
//!   the op. The dispatch is then four instructions (load the tag, load the
//!   jump-table entry, add, `jmp *`), which LLVM copies into the handlers,
//!   so most ops end in their own indirect jump, predicted on its own
//!   (direct threading without computed goto). Whether LLVM makes the copies
//!   depends on heuristics that small source changes flip, and without them
//!   the interpreter is about 25% slower: `cargo bench -p bpfkit-bench
//!   --bench interp` prints the count (about 130-150 with them, 5 without).
//! - The executed-instruction count is kept in op bytes (`bias + ip`), so a
//!   taken jump checks the budget with one add and compare; a call saves the
//!   return op's address.
//! - Loads and stores at `r10 + off` inside the current frame, in programs
//!   that never write `r10`, index the stack directly (in bounds by
//!   construction) instead of going through the region lookup, through a
//!   mask and eight bytes of padding after the stack, so with no bounds
//!   check at all; other stack accesses cost one compare (the stack has a
//!   constant size).
//! - Conditions inside fused ops are 16-entry truth tables, evaluated
//!   without branching.
//!
//! Speed (`cargo run --release -p bpfkit-interp --example speed`, and the
//! `bpfkit-bench` criterion bench, whose paired ratio is the robust number):
//! about 0.35-0.8 ns per executed instruction on the benchmark programs on a
//! 2.6 GHz Xeon, where rbpf 0.4's interpreter takes 3.4-4.4 ns. Timings move
//! by up to 10% with code placement alone (this Xeon's jump-alignment
//! erratum penalises a jump that ends on a 32-byte boundary, and every op
//! ends in one), so compare builds by executed host instructions as well
//! (`crates/bench/examples/interp_profile.rs` under callgrind).
//!
//! Execution model:
//! - Eleven 64-bit registers; on entry `r1`-`r5` are the run's arguments
//!   (others 0) and `r10` is the top of the current frame's stack.
//! - [`MAX_CALL_FRAMES`] frames of [`STACK_SIZE`] bytes each, in one stack
//!   owned by the interpreter; a bpf-to-bpf call saves `r6`-`r9`, moves `r10`
//!   down one frame, and `exit` restores them. The stack is not cleared
//!   between runs (verified programs never read stack they did not write).
//! - Instruction budget ([`Builder::budget`], default unlimited): the count
//!   of executed instructions is exact ([`Interpreter::executed`]) and is
//!   compared with the budget at every taken jump, call and return, so a
//!   program that exceeds it stops with [`TrapKind::BudgetExhausted`]
//!   within one straight-line run.
//! - Legacy packet loads (`LD_ABS`/`LD_IND`) read big-endian from the first
//!   [`RegionKind::Packet`](bpfkit_runtime::RegionKind::Packet) region.
//!   As in the kernel, an offset outside the packet ends the program with
//!   `r0 = 0` (not a trap); with no packet region at all they trap with
//!   [`TrapKind::NoPacket`]. The offset is `imm` (+ `src` for `LD_IND`),
//!   computed in 32 bits; negative offsets are out of range.
//! - Symbolic `lddw` operands go through the [`Imm64Resolver`] given to the
//!   builder; an unresolved one traps with [`TrapKind::UnresolvedImm64`]
//!   when executed. `lddw` function references resolve to
//!   [`FUNC_ADDR_BASE`]` + 8 * slot`, which `callx` accepts.
//! - `callx reg`: a function address as above calls that subprogram;
//!   otherwise a value that is a registered helper id calls the helper
//!   (uBPF's convention); otherwise [`TrapKind::BadCallTarget`].
//!
//! ```
//! use bpfkit_interp::Interpreter;
//! use bpfkit_isa::{asm::{assemble, Syntax}, Program};
//! use bpfkit_runtime::{Helpers, Memory, RegionKind};
//!
//! let insns = assemble("ldxb %r0, [%r1+1]\nadd %r0, %r2\nexit", Syntax::Ubpf).unwrap();
//! let prog = Program::from_insns(insns).unwrap();
//! let mut vm = Interpreter::new(&prog, &Helpers::new()).unwrap();
//! let mut pkt = [1u8, 2, 3];
//! let mut mem = Memory::new();
//! let addr = mem.add(RegionKind::Packet, &mut pkt);
//! assert_eq!(vm.run(&mut mem, &[addr, 40]), Ok(42));
//! assert_eq!(vm.executed(), 3);
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod op;

use bpfkit_isa::{AtomicOp, HelperId, Imm64, Insn, Pc, Program};
use bpfkit_runtime::callback::{loop_start, STEP_CALL};
use bpfkit_runtime::{
    Guest, Helper, HelperEnv, Helpers, Imm64Resolver, Memory, Trap, TrapKind, MAX_CALL_FRAMES,
    STACK_SIZE,
};
use op::{compile, fuse, Op};
use std::any::Any;
use std::sync::Arc;
use thiserror::Error;

pub use op::FUNC_ADDR_BASE;

/// The most ops one op moves past (the fused op of the longest group
/// advances by its length; see `op::fuse`), and the least number of
/// sentinels after the last instruction.
const MAX_ADVANCE: usize = 16;

/// Bytes of the interpreter's stack (every frame).
const STACK_BYTES: usize = STACK_SIZE * MAX_CALL_FRAMES;

/// Bytes allocated for it: eight more, never part of the guest's stack,
/// so that a frame slot's offset masked with `STACK_BYTES - 1` (which
/// leaves it unchanged, see `stack_load!`) indexes an 8-byte access
/// without a bounds check.
const STACK_ALLOC: usize = STACK_BYTES + 8;

const _: () = assert!(STACK_BYTES.is_power_of_two());

const OP_SIZE: usize = std::mem::size_of::<Op>();

/// Why a program could not be prepared.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
pub enum CompileError {
    /// More instructions than the interpreter indexes (2^32 - 2).
    #[error("program too large: {insns} instructions")]
    TooLarge {
        /// Number of instructions.
        insns: usize,
    },
}

/// Configuration for an [`Interpreter`].
#[derive(Clone, Copy, Default)]
pub struct Builder<'r> {
    budget: Option<u64>,
    resolver: Option<&'r dyn Imm64Resolver>,
}

impl<'r> Builder<'r> {
    /// Stops programs that execute more than `budget` instructions (default:
    /// no limit).
    pub fn budget(mut self, budget: u64) -> Builder<'r> {
        self.budget = Some(budget);
        self
    }

    /// Resolves symbolic `lddw` operands (map references, ...).
    pub fn resolver(mut self, resolver: &'r dyn Imm64Resolver) -> Builder<'r> {
        self.resolver = Some(resolver);
        self
    }

    /// Compiles `prog`, taking the helpers it calls from `helpers`.
    pub fn build(self, prog: &Program, helpers: &Helpers) -> Result<Interpreter, CompileError> {
        let n = prog.insns().len();
        if n >= u32::MAX as usize - 1 || prog.slot_count() >= u32::MAX as usize - 1 {
            return Err(CompileError::TooLarge { insns: n });
        }
        let mut table = Vec::new();
        let mut plain = compile(prog, helpers, &mut table, self.resolver);
        let mut ops = fuse(&plain, prog.insns());
        // Pad both with at least `MAX_ADVANCE` more sentinels, so that no
        // op's advance, from any instruction, can leave the table (the run
        // loop's op pointer relies on it), to a power of two, so that jump
        // targets can be masked into the table. Control never goes past the
        // first sentinel: every jump target is an instruction.
        // `bpf_loop`'s callbacks return to one more op after the sentinel
        // (`Op::LoopNext`), kept out of reach of every advance (the padding
        // follows it).
        let loop_next = ops.len();
        ops.push(Op::LoopNext);
        plain.push(Op::LoopNext);
        let padded = (ops.len() + MAX_ADVANCE).next_power_of_two();
        ops.resize(padded, Op::FellOff);
        plain.resize(padded, Op::FellOff);
        let mut pcs = prog.pcs().to_vec();
        // The sentinel's and `LoopNext`'s (neither traps with it: see
        // `Op::LoopNext`).
        pcs.push(Pc(prog.slot_count()));
        pcs.push(Pc(prog.slot_count()));
        let slot_to_op = (0..prog.slot_count())
            .map(|s| prog.index_of(Pc(s)).map_or(u32::MAX, |i| i as u32))
            .collect();
        let mut all_helpers: Vec<(u32, Arc<dyn Helper>)> =
            helpers.iter().map(|(id, h)| (id.0, h.clone())).collect();
        all_helpers.sort_by_key(|(id, _)| *id);
        Ok(Interpreter {
            ops,
            plain,
            insns: prog.insns().to_vec(),
            pcs,
            slot_to_op,
            table,
            all_helpers,
            stack: Box::new([0u8; STACK_ALLOC]),
            frames: [Frame::default(); MAX_CALL_FRAMES],
            loops: [Loop::default(); MAX_CALL_FRAMES],
            loop_next,
            budget: self.budget.unwrap_or(u64::MAX),
            executed: 0,
        })
    }
}

/// The op index of the function whose address (`lddw` of a function:
/// [`FUNC_ADDR_BASE`]` + 8 * slot`) is `v`, if it is one.
fn func_target(slot_to_op: &[u32], v: u64) -> Option<u32> {
    let slot = v.wrapping_sub(FUNC_ADDR_BASE);
    if !slot.is_multiple_of(8) {
        return None;
    }
    slot_to_op
        .get((slot / 8).min(usize::MAX as u64) as usize)
        .copied()
        .filter(|&t| t != u32::MAX)
}

/// What a bpf-to-bpf call saves.
#[derive(Clone, Copy, Default, Debug)]
struct Frame {
    /// Address of the op after the call (an address, not an index, so
    /// that neither the call nor the return divides by the op size).
    ret: usize,
    saved: [u64; 4],
    fp: u64,
}

/// A `bpf_loop` (or `Callback::Steps` helper) in progress, kept per call
/// depth of its caller (so that a
/// callback's own `bpf_loop` has its own).
#[derive(Clone, Copy, Default, Debug)]
struct Loop {
    /// Address of the op after the helper call.
    ret: usize,
    /// `r1`-`r5` at the call (restored after the loop; `r3` is the
    /// callback's context).
    args: [u64; 5],
    /// Calls made so far, and the most allowed.
    i: u64,
    n: u64,
    /// Op index of the callback.
    target: u32,
    /// For `Callback::Steps`: the step's index in the helper table
    /// (`u32::MAX` for `bpf_loop`).
    step: u32,
    /// The helper call's pc.
    pc: Pc,
}

/// A program prepared for execution (see the crate docs for the model).
pub struct Interpreter {
    /// Ops with superinstructions (what `run` executes).
    ops: Vec<Op>,
    /// One op per instruction, unfused (what tracing executes, so that the
    /// tracer sees every instruction).
    plain: Vec<Op>,
    insns: Vec<Insn>,
    /// Slot pc of each op (one more for the sentinel).
    pcs: Vec<Pc>,
    /// Op index of each slot (`u32::MAX` inside an `lddw`).
    slot_to_op: Vec<u32>,
    /// Helpers called directly, indexed by `Op::Call::h`.
    table: Vec<(u32, Arc<dyn Helper>)>,
    /// Every registered helper, sorted by id, for `callx`.
    all_helpers: Vec<(u32, Arc<dyn Helper>)>,
    stack: Box<[u8; STACK_ALLOC]>,
    frames: [Frame; MAX_CALL_FRAMES],
    loops: [Loop; MAX_CALL_FRAMES],
    /// Op index of `Op::LoopNext`.
    loop_next: usize,
    budget: u64,
    executed: u64,
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter")
            .field("insns", &self.insns.len())
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// A tracer for [`Interpreter::run_traced`]: called before each instruction
/// with its slot pc, the instruction (`None` past the end) and the registers.
pub type Tracer<'t> = &'t mut dyn FnMut(Pc, Option<&Insn>, &[u64; 11]);

impl Interpreter {
    /// Configuration: budget, `lddw` resolver.
    pub fn builder<'r>() -> Builder<'r> {
        Builder::default()
    }

    /// Compiles `prog` with the default configuration.
    pub fn new(prog: &Program, helpers: &Helpers) -> Result<Interpreter, CompileError> {
        Builder::default().build(prog, helpers)
    }

    /// Instructions executed by the last run (including the one that
    /// trapped, if any).
    pub fn executed(&self) -> u64 {
        self.executed
    }

    /// The instruction budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Changes the instruction budget.
    pub fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
    }

    /// Guest address range `[start, end)` of the interpreter's stack; `end`
    /// is `r10` on entry.
    pub fn stack_range(&self) -> (u64, u64) {
        let start = self.stack.as_ptr() as u64;
        (start, start + STACK_BYTES as u64)
    }

    /// Runs the program with `r1`.. = `args` (at most five are used) over
    /// `mem`; returns `r0` at the outermost `exit`.
    pub fn run(&mut self, mem: &mut Memory<'_>, args: &[u64]) -> Result<u64, Trap> {
        self.exec::<false>(mem, args, None, None)
    }

    /// Like [`Interpreter::run`], with per-run data that helpers reach with
    /// [`HelperEnv::data_mut`].
    pub fn run_with_data(
        &mut self,
        mem: &mut Memory<'_>,
        args: &[u64],
        data: &mut dyn Any,
    ) -> Result<u64, Trap> {
        self.exec::<false>(mem, args, Some(data), None)
    }

    /// Like [`Interpreter::run_with_data`], calling `tracer` before every
    /// instruction.
    pub fn run_traced(
        &mut self,
        mem: &mut Memory<'_>,
        args: &[u64],
        data: Option<&mut dyn Any>,
        tracer: Tracer<'_>,
    ) -> Result<u64, Trap> {
        self.exec::<true>(mem, args, data, Some(tracer))
    }

    fn exec<const TRACE: bool>(
        &mut self,
        mem: &mut Memory<'_>,
        args: &[u64],
        mut data: Option<&mut dyn Any>,
        mut tracer: Option<Tracer<'_>>,
    ) -> Result<u64, Trap> {
        let Interpreter {
            ops,
            plain,
            insns,
            pcs,
            slot_to_op,
            table,
            all_helpers,
            stack,
            frames,
            loops,
            loop_next,
            budget,
            executed,
        } = self;
        let ops: &[Op] = if TRACE { plain } else { ops };
        // `ops.len()` is a power of two (see `Builder::build`).
        let mask = ops.len() - 1;
        let ops = &ops[..=mask];
        // The current op, as a pointer: dispatch is then one load of the tag
        // and the jump, where an index costs a mask, a multiply-add and
        // register copies per op. It always points into `ops` (see the
        // SAFETY comment at the fetch), and moves on after the op (inside a
        // fused op, to the instruction it is at). `pc!()` is its index.
        let start: *const Op = ops.as_ptr();
        let mut ip: *const Op = start;
        let budget = *budget;
        // The budget in bytes of ops (see `bias`). It saturates only for
        // budgets above 2^60 instructions, which no run reaches.
        let budget_b = budget.saturating_mul(OP_SIZE as u64);
        // The stack and the embedder's regions are kept apart (a `Guest` is
        // built only to lend both to a helper or an atomic), so that
        // accesses the compiler proved to be inside the current frame index
        // the stack directly.
        let stack: &mut [u8; STACK_ALLOC] = stack;
        let stack_start = stack.as_ptr() as u64;
        let stack_top = stack_start + STACK_BYTES as u64;
        // Stack offset of the current frame's `r10`.
        let mut fp_off = STACK_BYTES;
        let mut regs = [0u64; 11];
        for (r, a) in regs[1..6].iter_mut().zip(args) {
            *r = *a;
        }
        regs[10] = stack_top;
        let mut depth = 0usize;
        // Instructions executed so far (the current one included), times
        // `OP_SIZE`, = `bias + ip` (wrapping): a taken jump checks the budget
        // with one add and one compare, where counting in instructions would
        // divide `ip - start` by the op size.
        let mut bias: u64 = (OP_SIZE as u64).wrapping_sub(start.addr() as u64);

        macro_rules! count {
            () => {
                bias.wrapping_add(ip.addr() as u64) / OP_SIZE as u64
            };
        }
        macro_rules! pc {
            () => {
                (ip.addr() - start.addr()) / OP_SIZE
            };
        }
        // Moves past `$k` more instructions of a fused group.
        macro_rules! adv {
            ($k:expr) => {
                ip = ip.wrapping_add($k)
            };
        }

        macro_rules! r {
            ($r:expr) => {
                regs[$r as usize]
            };
        }
        macro_rules! finish {
            ($result:expr) => {{
                *executed = count!();
                return $result;
            }};
        }
        macro_rules! trap {
            ($kind:expr) => {
                finish!(Err(Trap::new(pcs[pc!()], $kind)))
            };
        }
        // Taken jump to op `t`: keep the count exact, check the budget, and
        // go on at `t` (skipping the advance after the op).
        macro_rules! jump {
            // Masked, so that even a bad target keeps `ip` in `ops`.
            ($t:expr) => {
                jump_to!(&ops[$t as usize & mask])
            };
        }
        macro_rules! jump_to {
            ($target:expr) => {{
                let n = bias.wrapping_add(ip.addr() as u64);
                if n > budget_b {
                    trap!(TrapKind::BudgetExhausted { budget });
                }
                ip = $target;
                // The count at the target includes it.
                bias = n
                    .wrapping_sub(ip.addr() as u64)
                    .wrapping_add(OP_SIZE as u64);
                continue;
            }};
        }
        macro_rules! cond {
            ($c:expr, $t:expr) => {
                if $c {
                    jump!($t)
                }
            };
        }
        macro_rules! addr {
            ($b:expr, $off:expr) => {
                r!($b).wrapping_add($off as i64 as u64)
            };
        }
        macro_rules! load {
            ($n:literal, $a:expr) => {{
                let a: u64 = $a;
                // The stack first (most accesses), then the regions.
                match chunk::<$n>(stack, a.wrapping_sub(stack_start)) {
                    Some(b) => *b,
                    None => match mem.load::<$n>(a) {
                        Ok(b) => b,
                        Err(f) => trap!(f),
                    },
                }
            }};
        }
        // `load!` without the trap: `None` where `load!` would trap.
        macro_rules! try_load {
            ($n:literal, $a:expr) => {{
                let a: u64 = $a;
                match chunk::<$n>(stack, a.wrapping_sub(stack_start)) {
                    Some(b) => Some(*b),
                    None => mem.load::<$n>(a).ok(),
                }
            }};
        }
        macro_rules! store {
            ($n:literal, $a:expr, $v:expr) => {{
                let a: u64 = $a;
                let v: [u8; $n] = $v;
                match chunk_mut::<$n>(stack, a.wrapping_sub(stack_start)) {
                    Some(b) => *b = v,
                    None => {
                        if let Err(f) = mem.store::<$n>(a, v) {
                            trap!(f)
                        }
                    }
                }
            }};
        }
        // A frame slot (`Op::LdxStack*`, ...): in bounds by construction
        // (`fp_off` is at least one frame, `off` inside one frame below
        // it), so the index is below `STACK_BYTES` and the mask changes
        // nothing; with it, and the padding after the stack, the compiler
        // sees the access in bounds and drops the check a plain index
        // needs. The general path only avoids a panic branch.
        macro_rules! stack_load {
            ($n:literal, $off:expr) => {{
                let i = fp_off.wrapping_add($off as isize as usize) & (STACK_BYTES - 1);
                match stack[i..].first_chunk::<$n>() {
                    Some(b) => *b,
                    None => load!($n, r!(10).wrapping_add($off as i64 as u64)),
                }
            }};
        }
        macro_rules! stack_store {
            ($n:literal, $off:expr, $v:expr) => {{
                let i = fp_off.wrapping_add($off as isize as usize) & (STACK_BYTES - 1);
                let v: [u8; $n] = $v;
                match stack[i..].first_chunk_mut::<$n>() {
                    Some(b) => *b = v,
                    None => store!($n, r!(10).wrapping_add($off as i64 as u64), v),
                }
            }};
        }
        macro_rules! call_helper {
            ($id:expr, $h:expr) => {{
                let id = HelperId($id);
                let mut env = HelperEnv::new(
                    Guest::new(&mut stack[..STACK_BYTES], mem),
                    data.as_deref_mut(),
                    pcs[pc!()],
                    id,
                );
                let args = [r!(1), r!(2), r!(3), r!(4), r!(5)];
                match $h.call(&mut env, args) {
                    Ok(v) => regs[0] = v,
                    Err(abort) => finish!(abort.into_outcome(pcs[pc!()], id)),
                }
            }};
        }
        macro_rules! call_local {
            ($t:expr) => {
                call_local!($t, ip.wrapping_add(1).addr())
            };
            ($t:expr, $ret:expr) => {{
                if depth + 1 >= MAX_CALL_FRAMES {
                    trap!(TrapKind::CallDepthExceeded {
                        max: MAX_CALL_FRAMES
                    });
                }
                frames[depth] = Frame {
                    ret: $ret,
                    saved: [r!(6), r!(7), r!(8), r!(9)],
                    fp: r!(10),
                };
                depth += 1;
                fp_off = STACK_BYTES - depth * STACK_SIZE;
                regs[10] = stack_top - (depth * STACK_SIZE) as u64;
                jump!($t);
            }};
        }

        // The next step of the `Callback::Steps` helper whose loop is
        // `loops[depth]`: its record read, then the callback called or the
        // loop left (see `bpfkit_runtime::Callback::Steps`).
        macro_rules! step {
            () => {{
                let l = loops[depth];
                let (id, helper) = &table[l.step as usize];
                let args = [l.args[0], l.args[2], l.args[3], l.i, depth as u64];
                let mut env = HelperEnv::new(
                    Guest::new(&mut stack[..STACK_BYTES], mem),
                    data.as_deref_mut(),
                    l.pc,
                    HelperId(*id),
                );
                let at = match helper.call(&mut env, args) {
                    Ok(v) => v,
                    // Named as the step (the JIT's stop path names the
                    // helper it called, too).
                    Err(abort) => finish!(abort.into_outcome(l.pc, HelperId(*id))),
                };
                let mut rec = [0u64; 6];
                for (k, w) in rec.iter_mut().enumerate() {
                    match mem.load::<8>(at.wrapping_add(8 * k as u64)) {
                        Ok(b) => *w = u64::from_le_bytes(b),
                        Err(f) => finish!(Err(Trap::new(l.pc, f))),
                    }
                }
                if rec[0] != STEP_CALL {
                    regs[0] = rec[1];
                    [regs[1], regs[2], regs[3], regs[4], regs[5]] = l.args;
                    jump_to!(start.with_addr(l.ret));
                }
                let t = if l.target != u32::MAX {
                    l.target
                } else {
                    match func_target(slot_to_op, l.args[1]) {
                        Some(t) => t,
                        None => finish!(Err(Trap::new(
                            l.pc,
                            TrapKind::BadCallTarget { target: l.args[1] }
                        ))),
                    }
                };
                loops[depth].target = t;
                [regs[1], regs[2], regs[3], regs[4], regs[5]] =
                    [rec[1], rec[2], rec[3], rec[4], rec[5]];
                call_local!(t, start.wrapping_add(*loop_next).addr())
            }};
        }

        loop {
            if TRACE {
                if let Some(t) = tracer.as_deref_mut() {
                    t(pcs[pc!()], insns.get(pc!()), &regs);
                }
            }
            // SAFETY: `ip` points to an element of `ops`, which is borrowed
            // (unchanged) for the whole loop. It starts at `ops[0]`; jumps and
            // calls set it to `&ops[t & mask]`, returns to the op after the
            // call (`Frame::ret`, set only by calls, whose op is before the
            // sentinel); every other op
            // moves it forward by at most `MAX_ADVANCE` (the size of the
            // longest fused group) from an instruction, and `Builder::build`
            // pads `ops` with at least `MAX_ADVANCE` sentinels after the last
            // instruction; the sentinel `FellOff` never moves it forward.
            #[allow(unsafe_code)]
            let op: &Op = unsafe { &*ip };
            match *op {
                Op::Add64I { d, imm } => r!(d) = r!(d).wrapping_add(imm as i64 as u64),
                Op::Sub64I { d, imm } => r!(d) = r!(d).wrapping_sub(imm as i64 as u64),
                Op::Mul64I { d, imm } => r!(d) = r!(d).wrapping_mul(imm as i64 as u64),
                Op::Div64I { d, imm } => r!(d) = r!(d).checked_div(imm as i64 as u64).unwrap_or(0),
                Op::Sdiv64I { d, imm } => r!(d) = sdiv64(r!(d), imm as i64 as u64),
                Op::Mod64I { d, imm } => {
                    r!(d) = r!(d).checked_rem(imm as i64 as u64).unwrap_or(r!(d))
                }
                Op::Smod64I { d, imm } => r!(d) = smod64(r!(d), imm as i64 as u64),
                Op::Or64I { d, imm } => r!(d) |= imm as i64 as u64,
                Op::And64I { d, imm } => r!(d) &= imm as i64 as u64,
                Op::Xor64I { d, imm } => r!(d) ^= imm as i64 as u64,
                Op::Lsh64I { d, imm } => r!(d) <<= imm,
                Op::Rsh64I { d, imm } => r!(d) >>= imm,
                Op::Arsh64I { d, imm } => r!(d) = ((r!(d) as i64) >> imm) as u64,
                Op::Mov64I { d, imm } => r!(d) = imm as i64 as u64,

                Op::Add64R { d, s } => r!(d) = r!(d).wrapping_add(r!(s)),
                Op::Sub64R { d, s } => r!(d) = r!(d).wrapping_sub(r!(s)),
                Op::Mul64R { d, s } => r!(d) = r!(d).wrapping_mul(r!(s)),
                Op::Div64R { d, s } => r!(d) = r!(d).checked_div(r!(s)).unwrap_or(0),
                Op::Sdiv64R { d, s } => r!(d) = sdiv64(r!(d), r!(s)),
                Op::Mod64R { d, s } => r!(d) = r!(d).checked_rem(r!(s)).unwrap_or(r!(d)),
                Op::Smod64R { d, s } => r!(d) = smod64(r!(d), r!(s)),
                Op::Or64R { d, s } => r!(d) |= r!(s),
                Op::And64R { d, s } => r!(d) &= r!(s),
                Op::Xor64R { d, s } => r!(d) ^= r!(s),
                Op::Lsh64R { d, s } => r!(d) <<= r!(s) & 63,
                Op::Rsh64R { d, s } => r!(d) >>= r!(s) & 63,
                Op::Arsh64R { d, s } => r!(d) = ((r!(d) as i64) >> (r!(s) & 63)) as u64,
                Op::Mov64R { d, s } => r!(d) = r!(s),

                Op::Add32I { d, imm } => r!(d) = (r!(d) as u32).wrapping_add(imm) as u64,
                Op::Sub32I { d, imm } => r!(d) = (r!(d) as u32).wrapping_sub(imm) as u64,
                Op::Mul32I { d, imm } => r!(d) = (r!(d) as u32).wrapping_mul(imm) as u64,
                Op::Div32I { d, imm } => {
                    r!(d) = (r!(d) as u32).checked_div(imm).unwrap_or(0) as u64
                }
                Op::Sdiv32I { d, imm } => r!(d) = sdiv32(r!(d), imm as u64),
                Op::Mod32I { d, imm } => {
                    let x = r!(d) as u32;
                    r!(d) = x.checked_rem(imm).unwrap_or(x) as u64
                }
                Op::Smod32I { d, imm } => r!(d) = smod32(r!(d), imm as u64),
                Op::Or32I { d, imm } => r!(d) = (r!(d) as u32 | imm) as u64,
                Op::And32I { d, imm } => r!(d) = (r!(d) as u32 & imm) as u64,
                Op::Xor32I { d, imm } => r!(d) = (r!(d) as u32 ^ imm) as u64,
                Op::Lsh32I { d, imm } => r!(d) = ((r!(d) as u32) << imm) as u64,
                Op::Rsh32I { d, imm } => r!(d) = ((r!(d) as u32) >> imm) as u64,
                Op::Arsh32I { d, imm } => r!(d) = ((r!(d) as i32) >> imm) as u32 as u64,
                Op::Mov32I { d, imm } => r!(d) = imm as u64,

                Op::Add32R { d, s } => r!(d) = (r!(d) as u32).wrapping_add(r!(s) as u32) as u64,
                Op::Sub32R { d, s } => r!(d) = (r!(d) as u32).wrapping_sub(r!(s) as u32) as u64,
                Op::Mul32R { d, s } => r!(d) = (r!(d) as u32).wrapping_mul(r!(s) as u32) as u64,
                Op::Div32R { d, s } => {
                    r!(d) = (r!(d) as u32).checked_div(r!(s) as u32).unwrap_or(0) as u64
                }
                Op::Sdiv32R { d, s } => r!(d) = sdiv32(r!(d), r!(s)),
                Op::Mod32R { d, s } => {
                    let x = r!(d) as u32;
                    r!(d) = x.checked_rem(r!(s) as u32).unwrap_or(x) as u64
                }
                Op::Smod32R { d, s } => r!(d) = smod32(r!(d), r!(s)),
                Op::Or32R { d, s } => r!(d) = (r!(d) as u32 | r!(s) as u32) as u64,
                Op::And32R { d, s } => r!(d) = (r!(d) as u32 & r!(s) as u32) as u64,
                Op::Xor32R { d, s } => r!(d) = (r!(d) as u32 ^ r!(s) as u32) as u64,
                Op::Lsh32R { d, s } => r!(d) = ((r!(d) as u32) << (r!(s) & 31)) as u64,
                Op::Rsh32R { d, s } => r!(d) = ((r!(d) as u32) >> (r!(s) & 31)) as u64,
                Op::Arsh32R { d, s } => r!(d) = ((r!(d) as i32) >> (r!(s) & 31)) as u32 as u64,
                Op::Mov32R { d, s } => r!(d) = r!(s) as u32 as u64,

                Op::Movsx8To32 { d, s } => r!(d) = r!(s) as i8 as i32 as u32 as u64,
                Op::Movsx16To32 { d, s } => r!(d) = r!(s) as i16 as i32 as u32 as u64,
                Op::Movsx8To64 { d, s } => r!(d) = r!(s) as i8 as i64 as u64,
                Op::Movsx16To64 { d, s } => r!(d) = r!(s) as i16 as i64 as u64,
                Op::Movsx32To64 { d, s } => r!(d) = r!(s) as i32 as i64 as u64,
                Op::Neg64 { d } => r!(d) = r!(d).wrapping_neg(),
                Op::Neg32 { d } => r!(d) = (r!(d) as u32).wrapping_neg() as u64,
                Op::Trunc16 { d } => r!(d) = r!(d) as u16 as u64,
                Op::Trunc32 { d } => r!(d) = r!(d) as u32 as u64,
                Op::Swap16 { d } => r!(d) = (r!(d) as u16).swap_bytes() as u64,
                Op::Swap32 { d } => r!(d) = (r!(d) as u32).swap_bytes() as u64,
                Op::Swap64 { d } => r!(d) = r!(d).swap_bytes(),
                Op::Nop => {}
                Op::LoadImm { d, lo, hi } => r!(d) = lo as u64 | (hi as u64) << 32,

                Op::LdxB { d, s, off } => r!(d) = load!(1, addr!(s, off))[0] as u64,
                Op::LdxH { d, s, off } => {
                    r!(d) = u16::from_le_bytes(load!(2, addr!(s, off))) as u64
                }
                Op::LdxW { d, s, off } => {
                    r!(d) = u32::from_le_bytes(load!(4, addr!(s, off))) as u64
                }
                Op::LdxDw { d, s, off } => r!(d) = u64::from_le_bytes(load!(8, addr!(s, off))),
                Op::LdxSb { d, s, off } => r!(d) = load!(1, addr!(s, off))[0] as i8 as i64 as u64,
                Op::LdxSh { d, s, off } => {
                    r!(d) = i16::from_le_bytes(load!(2, addr!(s, off))) as i64 as u64
                }
                Op::LdxSw { d, s, off } => {
                    r!(d) = i32::from_le_bytes(load!(4, addr!(s, off))) as i64 as u64
                }
                Op::StB { d, off, imm } => store!(1, addr!(d, off), [imm as u8]),
                Op::StH { d, off, imm } => store!(2, addr!(d, off), (imm as u16).to_le_bytes()),
                Op::StW { d, off, imm } => store!(4, addr!(d, off), imm.to_le_bytes()),
                Op::StDw { d, off, imm } => {
                    store!(8, addr!(d, off), (imm as i64).to_le_bytes())
                }
                Op::StxB { d, s, off } => store!(1, addr!(d, off), [r!(s) as u8]),
                Op::StxH { d, s, off } => {
                    store!(2, addr!(d, off), (r!(s) as u16).to_le_bytes())
                }
                Op::StxW { d, s, off } => {
                    store!(4, addr!(d, off), (r!(s) as u32).to_le_bytes())
                }
                Op::StxDw { d, s, off } => store!(8, addr!(d, off), r!(s).to_le_bytes()),
                Op::LdxStackB { d, off } => r!(d) = stack_load!(1, off)[0] as u64,
                Op::LdxStackH { d, off } => r!(d) = u16::from_le_bytes(stack_load!(2, off)) as u64,
                Op::LdxStackW { d, off } => r!(d) = u32::from_le_bytes(stack_load!(4, off)) as u64,
                Op::LdxStackDw { d, off } => r!(d) = u64::from_le_bytes(stack_load!(8, off)),
                Op::StxStackB { s, off } => stack_store!(1, off, [r!(s) as u8]),
                Op::StxStackH { s, off } => stack_store!(2, off, (r!(s) as u16).to_le_bytes()),
                Op::StxStackW { s, off } => stack_store!(4, off, (r!(s) as u32).to_le_bytes()),
                Op::StxStackDw { s, off } => stack_store!(8, off, r!(s).to_le_bytes()),
                Op::StStackW { off, imm } => stack_store!(4, off, imm.to_le_bytes()),
                Op::StStackDw { off, imm } => stack_store!(8, off, (imm as i64).to_le_bytes()),
                Op::Atomic32 {
                    d,
                    s,
                    off,
                    op,
                    fetch,
                } => {
                    let a = addr!(d, off);
                    let v = r!(s) as u32 as u64;
                    let expected = r!(0) as u32 as u64;
                    let old = match Guest::new(&mut stack[..STACK_BYTES], mem)
                        .atomic_update::<4>(a, |x| atomic(op, x, v, expected))
                    {
                        Ok(old) => old,
                        Err(f) => trap!(f),
                    };
                    match op {
                        AtomicOp::Cmpxchg => r!(0) = old,
                        _ if fetch => r!(s) = old,
                        _ => {}
                    }
                }
                Op::Atomic64 {
                    d,
                    s,
                    off,
                    op,
                    fetch,
                } => {
                    let a = addr!(d, off);
                    let v = r!(s);
                    let expected = r!(0);
                    let old = match Guest::new(&mut stack[..STACK_BYTES], mem)
                        .atomic_update::<8>(a, |x| atomic(op, x, v, expected))
                    {
                        Ok(old) => old,
                        Err(f) => trap!(f),
                    };
                    match op {
                        AtomicOp::Cmpxchg => r!(0) = old,
                        _ if fetch => r!(s) = old,
                        _ => {}
                    }
                }
                Op::LdPkt { size, s, imm } => {
                    let Some(pkt) = mem.packet() else {
                        trap!(TrapKind::NoPacket)
                    };
                    let off = match s {
                        Some(s) => imm.wrapping_add(r!(s) as i32),
                        None => imm,
                    };
                    let (start, len) = (pkt.start(), pkt.len());
                    let size = size as u64;
                    if off < 0 || off as u64 + size > len {
                        finish!(Ok(0));
                    }
                    let a = start + off as u64;
                    r!(0) = match size {
                        1 => load!(1, a)[0] as u64,
                        2 => u16::from_be_bytes(load!(2, a)) as u64,
                        _ => u32::from_be_bytes(load!(4, a)) as u64,
                    };
                }

                Op::Ja { t } => jump!(t),
                Op::JeqI { d, imm, t } => cond!(r!(d) == imm as i64 as u64, t),
                Op::JgtI { d, imm, t } => cond!(r!(d) > imm as i64 as u64, t),
                Op::JgeI { d, imm, t } => cond!(r!(d) >= imm as i64 as u64, t),
                Op::JsetI { d, imm, t } => cond!(r!(d) & imm as i64 as u64 != 0, t),
                Op::JneI { d, imm, t } => cond!(r!(d) != imm as i64 as u64, t),
                Op::JsgtI { d, imm, t } => cond!(r!(d) as i64 > imm as i64, t),
                Op::JsgeI { d, imm, t } => cond!(r!(d) as i64 >= imm as i64, t),
                Op::JltI { d, imm, t } => cond!(r!(d) < imm as i64 as u64, t),
                Op::JleI { d, imm, t } => cond!(r!(d) <= imm as i64 as u64, t),
                Op::JsltI { d, imm, t } => cond!((r!(d) as i64) < imm as i64, t),
                Op::JsleI { d, imm, t } => cond!(r!(d) as i64 <= imm as i64, t),
                Op::JeqR { d, s, t } => cond!(r!(d) == r!(s), t),
                Op::JgtR { d, s, t } => cond!(r!(d) > r!(s), t),
                Op::JgeR { d, s, t } => cond!(r!(d) >= r!(s), t),
                Op::JsetR { d, s, t } => cond!(r!(d) & r!(s) != 0, t),
                Op::JneR { d, s, t } => cond!(r!(d) != r!(s), t),
                Op::JsgtR { d, s, t } => cond!(r!(d) as i64 > r!(s) as i64, t),
                Op::JsgeR { d, s, t } => cond!(r!(d) as i64 >= r!(s) as i64, t),
                Op::JltR { d, s, t } => cond!(r!(d) < r!(s), t),
                Op::JleR { d, s, t } => cond!(r!(d) <= r!(s), t),
                Op::JsltR { d, s, t } => cond!((r!(d) as i64) < r!(s) as i64, t),
                Op::JsleR { d, s, t } => cond!(r!(d) as i64 <= r!(s) as i64, t),
                Op::Jeq32I { d, imm, t } => cond!(r!(d) as u32 == imm, t),
                Op::Jgt32I { d, imm, t } => cond!(r!(d) as u32 > imm, t),
                Op::Jge32I { d, imm, t } => cond!(r!(d) as u32 >= imm, t),
                Op::Jset32I { d, imm, t } => cond!(r!(d) as u32 & imm != 0, t),
                Op::Jne32I { d, imm, t } => cond!(r!(d) as u32 != imm, t),
                Op::Jsgt32I { d, imm, t } => cond!(r!(d) as i32 > imm as i32, t),
                Op::Jsge32I { d, imm, t } => cond!(r!(d) as i32 >= imm as i32, t),
                Op::Jlt32I { d, imm, t } => cond!((r!(d) as u32) < imm, t),
                Op::Jle32I { d, imm, t } => cond!(r!(d) as u32 <= imm, t),
                Op::Jslt32I { d, imm, t } => cond!((r!(d) as i32) < imm as i32, t),
                Op::Jsle32I { d, imm, t } => cond!(r!(d) as i32 <= imm as i32, t),
                Op::Jeq32R { d, s, t } => cond!(r!(d) as u32 == r!(s) as u32, t),
                Op::Jgt32R { d, s, t } => cond!(r!(d) as u32 > r!(s) as u32, t),
                Op::Jge32R { d, s, t } => cond!(r!(d) as u32 >= r!(s) as u32, t),
                Op::Jset32R { d, s, t } => cond!(r!(d) as u32 & r!(s) as u32 != 0, t),
                Op::Jne32R { d, s, t } => cond!(r!(d) as u32 != r!(s) as u32, t),
                Op::Jsgt32R { d, s, t } => cond!(r!(d) as i32 > r!(s) as i32, t),
                Op::Jsge32R { d, s, t } => cond!(r!(d) as i32 >= r!(s) as i32, t),
                Op::Jlt32R { d, s, t } => cond!((r!(d) as u32) < r!(s) as u32, t),
                Op::Jle32R { d, s, t } => cond!(r!(d) as u32 <= r!(s) as u32, t),
                Op::Jslt32R { d, s, t } => cond!((r!(d) as i32) < r!(s) as i32, t),
                Op::Jsle32R { d, s, t } => cond!(r!(d) as i32 <= r!(s) as i32, t),

                Op::Call { h } => {
                    let (id, helper) = &table[h as usize];
                    call_helper!(*id, helper)
                }
                Op::CallUnknown { id } => trap!(TrapKind::UnknownHelper { id: HelperId(id) }),
                Op::CallLocal { t } => call_local!(t),
                Op::Callx { r } => {
                    let v = r!(r);
                    if let Some(t) = func_target(slot_to_op, v) {
                        call_local!(t)
                    } else if let Ok(i) = all_helpers.binary_search_by_key(&v, |(id, _)| *id as u64)
                    {
                        let (id, helper) = &all_helpers[i];
                        call_helper!(*id, helper)
                    } else {
                        trap!(TrapKind::BadCallTarget { target: v })
                    }
                }
                Op::CallLoop { inlined } => match loop_start(r!(1), r!(4), inlined) {
                    Err(r0) | Ok(r0 @ 0) => regs[0] = r0,
                    Ok(n) => {
                        let v = r!(2);
                        let Some(t) = func_target(slot_to_op, v) else {
                            trap!(TrapKind::BadCallTarget { target: v })
                        };
                        let args = [r!(1), r!(2), r!(3), r!(4), r!(5)];
                        loops[depth] = Loop {
                            ret: ip.wrapping_add(1).addr(),
                            args,
                            i: 0,
                            n,
                            target: t,
                            step: u32::MAX,
                            pc: pcs[pc!()],
                        };
                        [regs[1], regs[2], regs[3], regs[4], regs[5]] = [0, args[2], 0, 0, 0];
                        call_local!(t, start.wrapping_add(*loop_next).addr())
                    }
                },
                Op::CallSteps { h } => {
                    loops[depth] = Loop {
                        ret: ip.wrapping_add(1).addr(),
                        args: [r!(1), r!(2), r!(3), r!(4), r!(5)],
                        i: 0,
                        n: u64::MAX,
                        target: u32::MAX,
                        step: h,
                        pc: pcs[pc!()],
                    };
                    step!()
                }
                Op::LoopNext => {
                    // Reached only from a callback's `exit` (its frame's
                    // return address), which counted and checked the
                    // budget; this op is no instruction, so it is taken
                    // back out of the count, and the call or jump below
                    // checks an unchanged count (so neither traps here
                    // for the budget; the depth is the first call's).
                    bias = bias.wrapping_sub(OP_SIZE as u64);
                    let l = &mut loops[depth];
                    l.i += 1;
                    if l.step != u32::MAX && regs[0] == 0 {
                        step!()
                    }
                    if regs[0] != 0 || l.i == l.n {
                        regs[0] = l.i;
                        [regs[1], regs[2], regs[3], regs[4], regs[5]] = l.args;
                        let ret = l.ret;
                        jump_to!(start.with_addr(ret));
                    }
                    [regs[1], regs[2], regs[3], regs[4], regs[5]] = [l.i, l.args[2], 0, 0, 0];
                    let t = l.target;
                    call_local!(t, start.wrapping_add(*loop_next).addr())
                }
                Op::Exit => {
                    if depth == 0 {
                        finish!(Ok(regs[0]));
                    }
                    depth -= 1;
                    fp_off = STACK_BYTES - depth * STACK_SIZE;
                    let f = frames[depth];
                    [regs[6], regs[7], regs[8], regs[9]] = f.saved;
                    regs[10] = f.fp;
                    jump_to!(start.with_addr(f.ret));
                }
                Op::Unresolved => {
                    let imm = match insns[pc!()] {
                        Insn::LoadImm64 { imm, .. } => imm,
                        _ => Imm64::Value(0),
                    };
                    trap!(TrapKind::UnresolvedImm64 { imm })
                }
                Op::Kfunc => trap!(TrapKind::Unsupported { what: "kfunc call" }),
                Op::Mov32And32I { d, s, imm } => {
                    r!(d) = (r!(s) as u32 & imm) as u64;
                    adv!(1);
                }
                Op::Mov32Lsh32I { d, s, imm } => {
                    r!(d) = ((r!(s) as u32) << imm) as u64;
                    adv!(1);
                }
                Op::Mov32Rsh32I { d, s, imm } => {
                    r!(d) = ((r!(s) as u32) >> imm) as u64;
                    adv!(1);
                }
                Op::Mov32Add32I { d, s, imm } => {
                    r!(d) = (r!(s) as u32).wrapping_add(imm) as u64;
                    adv!(1);
                }
                Op::Mov64Add64I { d, s, imm } => {
                    r!(d) = r!(s).wrapping_add(imm as i64 as u64);
                    adv!(1);
                }
                Op::Lsh32Arsh32 { d, a, b } => {
                    r!(d) = ((((r!(d) as u32) << a) as i32) >> b) as u32 as u64;
                    adv!(1);
                }
                Op::Lsh64Rsh64 { d, a, b } => {
                    r!(d) = (r!(d) << a) >> b;
                    adv!(1);
                }
                Op::Lsh64Arsh64 { d, a, b } => {
                    r!(d) = ((r!(d) << a) as i64 >> b) as u64;
                    adv!(1);
                }
                Op::Lsh64Or64R { d, k, s } => {
                    r!(d) = (r!(d) << k) | r!(s);
                    adv!(1);
                }
                Op::Lsh32Or32R { d, k, s } => {
                    r!(d) = (((r!(d) as u32) << k) | r!(s) as u32) as u64;
                    adv!(1);
                }
                Op::Arsh32And32I { d, k, imm } => {
                    r!(d) = (((r!(d) as i32) >> k) as u32 & imm) as u64;
                    adv!(1);
                }
                Op::Rot32I5 { d, t, s, a, b } => {
                    r!(t) = ((r!(s) as u32) >> a) as u64;
                    r!(d) = ((r!(s) as u32) << b) as u64;
                    r!(d) = (r!(d) as u32 | r!(t) as u32) as u64;
                    adv!(4);
                }
                Op::Rot32I4 { d, t, a, b } => {
                    r!(t) = ((r!(d) as u32) >> a) as u64;
                    r!(d) = ((r!(d) as u32) << b) as u64;
                    r!(d) = (r!(d) as u32 | r!(t) as u32) as u64;
                    adv!(3);
                }
                Op::Rot32R7 { d, x, c, n, t } => {
                    r!(d) = r!(x) as u32 as u64;
                    r!(c) = 32;
                    r!(c) = (r!(c) as u32).wrapping_sub(r!(n) as u32) as u64;
                    r!(t) = r!(d) as u32 as u64;
                    r!(t) = ((r!(t) as u32) << (r!(n) & 31)) as u64;
                    r!(d) = ((r!(d) as u32) >> (r!(c) & 31)) as u64;
                    r!(d) = (r!(d) as u32 | r!(t) as u32) as u64;
                    adv!(6);
                }
                Op::LdxBLsh32 { d, s, off, k } => {
                    r!(d) = ((load!(1, addr!(s, off))[0] as u32) << k) as u64;
                    adv!(1);
                }
                Op::LdxBOr32 { t, s, off, d } => {
                    r!(t) = load!(1, addr!(s, off))[0] as u64;
                    r!(d) = (r!(d) as u32 | r!(t) as u32) as u64;
                    adv!(1);
                }
                Op::LdxBLshOr32 { t, s, off, k, d } => {
                    r!(t) = ((load!(1, addr!(s, off))[0] as u32) << k) as u64;
                    r!(d) = (r!(d) as u32 | r!(t) as u32) as u64;
                    adv!(2);
                }
                Op::LdxB2LshOr64 { a, b, s, k, o1, o2 } => {
                    r!(a) = load!(1, addr!(s, o1))[0] as u64;
                    adv!(1);
                    r!(b) = load!(1, addr!(s, o2))[0] as u64;
                    r!(b) <<= k;
                    r!(b) |= r!(a);
                    adv!(2);
                }
                Op::LdxB2LshOr64Add64R {
                    a,
                    b,
                    s,
                    k,
                    o1,
                    o2,
                    x,
                } => {
                    r!(a) = load!(1, addr!(s, o1))[0] as u64;
                    adv!(1);
                    r!(b) = load!(1, addr!(s, o2))[0] as u64;
                    r!(b) <<= k;
                    r!(b) |= r!(a);
                    r!(b) = r!(b).wrapping_add(r!(x));
                    adv!(3);
                }
                Op::LdxB2LshOr32 { a, b, s, k, o1, o2 } => {
                    r!(a) = load!(1, addr!(s, o1))[0] as u64;
                    adv!(1);
                    r!(b) = load!(1, addr!(s, o2))[0] as u64;
                    r!(b) = ((r!(b) as u32) << k) as u64;
                    r!(b) = (r!(b) as u32 | r!(a) as u32) as u64;
                    adv!(2);
                }
                Op::Lsh32Arsh32And32 { d, a, b, imm } => {
                    r!(d) = (((((r!(d) as u32) << a) as i32) >> b) as u32 & imm) as u64;
                    adv!(2);
                }
                Op::Mov32Lsh32Arsh32And32 { d, s, a, b, imm } => {
                    r!(d) = (((((r!(s) as u32) << a) as i32) >> b) as u32 & imm) as u64;
                    adv!(3);
                }
                Op::Lsh32Arsh32And32Xor32R { d, a, b, x, imm } => {
                    r!(d) = (((((r!(d) as u32) << a) as i32) >> b) as u32 & imm) as u64;
                    r!(d) = (r!(d) as u32 ^ r!(x) as u32) as u64;
                    adv!(3);
                }
                Op::Mov32Lsh32Arsh32And32Xor32R { d, s, a, b, x, imm } => {
                    r!(d) = (((((r!(s) as u32) << a) as i32) >> b) as u32 & imm) as u64;
                    r!(d) = (r!(d) as u32 ^ r!(x) as u32) as u64;
                    adv!(4);
                }
                Op::Mov32Rsh32Xor32R { t, s, k, d } => {
                    r!(t) = ((r!(s) as u32) >> k) as u64;
                    r!(d) = (r!(d) as u32 ^ r!(t) as u32) as u64;
                    adv!(2);
                }
                Op::Neg32And32I { d, imm } => {
                    r!(d) = ((r!(d) as u32).wrapping_neg() & imm) as u64;
                    adv!(1);
                }
                Op::Mov64Add64R { d, s, s2 } => {
                    r!(d) = r!(s);
                    r!(d) = r!(d).wrapping_add(r!(s2));
                    adv!(1);
                }
                Op::Add64I2 { d1, d2, i1, i2 } => {
                    r!(d1) = r!(d1).wrapping_add(i1 as i64 as u64);
                    r!(d2) = r!(d2).wrapping_add(i2 as i64 as u64);
                    adv!(1);
                }
                Op::Mul32Add32I { d, m, a } => {
                    r!(d) = (r!(d) as u32).wrapping_mul(m).wrapping_add(a) as u64;
                    adv!(1);
                }
                Op::Select {
                    d,
                    x,
                    wide,
                    a,
                    b,
                    cond,
                    imm,
                } => {
                    r!(d) = a as u64;
                    let taken = if wide {
                        test64(cond, r!(x), imm as i64 as u64)
                    } else {
                        test32(cond, r!(x) as u32, imm as u32)
                    };
                    // Without a branch on `taken`: the jump skips the
                    // second move, which then does not count.
                    r!(d) = if taken { a } else { b } as u64;
                    adv!(2);
                    bias = bias.wrapping_sub(taken as u64 * OP_SIZE as u64);
                    let n = bias.wrapping_add(ip.addr() as u64);
                    if taken & (n > budget_b) {
                        // Report the jump, with the count at it.
                        bias = bias.wrapping_add(OP_SIZE as u64);
                        ip = ip.wrapping_sub(1);
                        trap!(TrapKind::BudgetExhausted { budget });
                    }
                }
                Op::And32Jcc32 {
                    d,
                    cond,
                    mask,
                    imm,
                    t,
                } => {
                    r!(d) = (r!(d) as u32 & mask as u32) as u64;
                    adv!(1);
                    cond!(test32(cond, r!(d) as u32, imm as u32), t);
                }
                Op::Mov32RCall { d, s, t } => {
                    r!(d) = r!(s) as u32 as u64;
                    adv!(1);
                    call_local!(t)
                }
                Op::Mov64RCall { d, s, t } => {
                    r!(d) = r!(s);
                    adv!(1);
                    call_local!(t)
                }
                Op::Mov32ICall { d, imm, t } => {
                    r!(d) = imm as u64;
                    adv!(1);
                    call_local!(t)
                }
                Op::Mov64JltR { d, s, x, y, t } => {
                    r!(d) = r!(s);
                    adv!(1);
                    cond!(r!(x) < r!(y), t);
                }
                Op::LdxWJcc32R {
                    d,
                    s,
                    x,
                    off,
                    cond,
                    t,
                } => {
                    let v = u32::from_le_bytes(load!(4, addr!(s, off)));
                    r!(d) = v as u64;
                    adv!(1);
                    // `x` after the load: it may be `d`.
                    cond!(test32(cond, v, r!(x) as u32), t);
                }
                Op::Mov32Jcc32R {
                    d,
                    s,
                    x,
                    y,
                    cond,
                    t,
                } => {
                    r!(d) = r!(s) as u32 as u64;
                    adv!(1);
                    cond!(test32(cond, r!(x) as u32, r!(y) as u32), t);
                }
                Op::Mov32Add32Rsh32I { d, s, s2, k } => {
                    r!(d) = r!(s) as u32 as u64;
                    // `s2` after `d` is written: it may be `d`.
                    r!(d) = ((r!(d) as u32).wrapping_add(r!(s2) as u32) >> k) as u64;
                    adv!(2);
                }
                Op::IndexAddr { t, i, p, b, k } => {
                    let v = r!(i).wrapping_mul(k as i64 as u64);
                    r!(t) = v;
                    // `b` after `t` is written: it may be `t`.
                    r!(p) = r!(b).wrapping_add(v);
                    adv!(3);
                }
                Op::Mov64Mul64I { d, s, imm } => {
                    r!(d) = r!(s).wrapping_mul(imm as i64 as u64);
                    adv!(1);
                }
                Op::Mov32JltI { d, s, x, imm, t } => {
                    r!(d) = r!(s) as u32 as u64;
                    adv!(1);
                    cond!(r!(x) < imm as i64 as u64, t);
                }
                Op::LdxLe32Bytes { d, t, u, v, s, o } => {
                    // One four-byte access when it is allowed and no load
                    // overwrites the base before the last one (then each
                    // one-byte access is allowed and reads the same byte);
                    // else the ten instructions one by one.
                    let whole = if d != s && t != s && u != s {
                        try_load!(4, addr!(s, o))
                    } else {
                        None
                    };
                    if let Some([b0, b1, b2, b3]) = whole {
                        r!(d) = (b1 as u64) << 8;
                        r!(t) = b0 as u64;
                        r!(d) |= r!(t);
                        r!(u) = (b2 as u64) << 16;
                        r!(d) |= r!(u);
                        r!(v) = (b3 as u64) << 24;
                        r!(d) |= r!(v);
                        adv!(9);
                    } else {
                        r!(d) = load!(1, addr!(s, o as i32 + 1))[0] as u64;
                        r!(d) = ((r!(d) as u32) << 8) as u64;
                        adv!(2);
                        r!(t) = load!(1, addr!(s, o))[0] as u64;
                        r!(d) = (r!(d) as u32 | r!(t) as u32) as u64;
                        adv!(2);
                        r!(u) = load!(1, addr!(s, o as i32 + 2))[0] as u64;
                        r!(u) = ((r!(u) as u32) << 16) as u64;
                        r!(d) = (r!(d) as u32 | r!(u) as u32) as u64;
                        adv!(3);
                        r!(v) = load!(1, addr!(s, o as i32 + 3))[0] as u64;
                        r!(v) = ((r!(v) as u32) << 24) as u64;
                        r!(d) = (r!(d) as u32 | r!(v) as u32) as u64;
                        adv!(2);
                    }
                }
                Op::Mov32R2 { d1, s1, d2, s2 } => {
                    r!(d1) = r!(s1) as u32 as u64;
                    r!(d2) = r!(s2) as u32 as u64;
                    adv!(1);
                }
                Op::Mov32Add32R { d, s, s2 } => {
                    r!(d) = r!(s) as u32 as u64;
                    r!(d) = (r!(d) as u32).wrapping_add(r!(s2) as u32) as u64;
                    adv!(1);
                }
                Op::Mov32Xor32R { d, s, s2 } => {
                    r!(d) = r!(s) as u32 as u64;
                    r!(d) = (r!(d) as u32 ^ r!(s2) as u32) as u64;
                    adv!(1);
                }
                Op::Xor32Sub32R { d, x, y } => {
                    r!(d) = (r!(d) as u32 ^ r!(x) as u32) as u64;
                    r!(d) = (r!(d) as u32).wrapping_sub(r!(y) as u32) as u64;
                    adv!(1);
                }
                Op::Mov32Xor32Sub32R { d, s, x, y } => {
                    r!(d) = r!(s) as u32 as u64;
                    r!(d) = (r!(d) as u32 ^ r!(x) as u32) as u64;
                    r!(d) = (r!(d) as u32).wrapping_sub(r!(y) as u32) as u64;
                    adv!(2);
                }
                Op::LdxStackAnd32I { d, off, imm } => {
                    r!(d) = (u32::from_le_bytes(stack_load!(4, off)) & imm) as u64;
                    adv!(1);
                }
                Op::LdxStackDwAdd64I { d, off, imm } => {
                    r!(d) = u64::from_le_bytes(stack_load!(8, off)).wrapping_add(imm as i64 as u64);
                    adv!(1);
                }
                Op::LdxStackDwAnd64I { d, off, imm } => {
                    r!(d) = u64::from_le_bytes(stack_load!(8, off)) & imm as i64 as u64;
                    adv!(1);
                }
                Op::LdxStackDwW { d1, d2, o1, o2 } => {
                    r!(d1) = u64::from_le_bytes(stack_load!(8, o1));
                    r!(d2) = u32::from_le_bytes(stack_load!(4, o2)) as u64;
                    adv!(1);
                }
                Op::StxStackW2 { s1, s2, o1, o2 } => {
                    stack_store!(4, o1, (r!(s1) as u32).to_le_bytes());
                    stack_store!(4, o2, (r!(s2) as u32).to_le_bytes());
                    adv!(1);
                }
                Op::BitTest64 { d, s, t, lo, hi } => {
                    r!(d) = 1;
                    r!(d) <<= r!(s) & 63;
                    r!(t) = lo as u64 | (hi as u64) << 32;
                    r!(d) &= r!(t);
                    adv!(3);
                }
                Op::IncW { d, s, off, imm } => {
                    r!(d) = u32::from_le_bytes(load!(4, addr!(s, off))) as u64;
                    r!(d) = (r!(d) as u32).wrapping_add(imm) as u64;
                    adv!(2);
                    store!(4, addr!(s, off), (r!(d) as u32).to_le_bytes());
                }
                Op::Rot32I4Xor32R { d, t, a, b, x } => {
                    r!(t) = ((r!(d) as u32) >> a) as u64;
                    r!(d) = ((r!(d) as u32) << b) as u64;
                    r!(d) = (r!(d) as u32 | r!(t) as u32) as u64;
                    r!(x) = (r!(x) as u32 ^ r!(d) as u32) as u64;
                    adv!(4);
                }
                Op::Lsh32And32I { d, k, imm } => {
                    r!(d) = (((r!(d) as u32) << k) & imm) as u64;
                    adv!(1);
                }
                Op::Add32And32I { d, a, m } => {
                    r!(d) = ((r!(d) as u32).wrapping_add(a) & m) as u64;
                    adv!(1);
                }
                Op::FellOff => {
                    // The sentinel is not an instruction.
                    *executed = count!() - 1;
                    return Err(Trap::new(pcs[pc!()], TrapKind::FellOffEnd));
                }
            }
            adv!(1);
        }
    }
}

/// The `N` stack bytes at offset `off`, if all are inside the stack. The
/// stack's length is a constant, so this is one compare, and indexing after
/// it needs no other check.
#[inline(always)]
fn chunk<const N: usize>(stack: &[u8; STACK_ALLOC], off: u64) -> Option<&[u8; N]> {
    if off <= (STACK_BYTES - N) as u64 {
        stack[off as usize..].first_chunk::<N>()
    } else {
        None
    }
}

/// [`chunk`], writable.
#[inline(always)]
fn chunk_mut<const N: usize>(stack: &mut [u8; STACK_ALLOC], off: u64) -> Option<&mut [u8; N]> {
    if off <= (STACK_BYTES - N) as u64 {
        stack[off as usize..].first_chunk_mut::<N>()
    } else {
        None
    }
}

#[inline(always)]
fn atomic(op: AtomicOp, old: u64, v: u64, expected: u64) -> u64 {
    match op {
        AtomicOp::Add => old.wrapping_add(v),
        AtomicOp::Or => old | v,
        AtomicOp::And => old & v,
        AtomicOp::Xor => old ^ v,
        AtomicOp::Xchg => v,
        AtomicOp::Cmpxchg => {
            if old == expected {
                v
            } else {
                old
            }
        }
    }
}

/// Whether `x <cond> y` holds in 64 bits (`cond` a truth table, see
/// `op::truth`), without branches.
#[inline(always)]
fn test64(cond: u16, x: u64, y: u64) -> bool {
    let f = op::flags(x == y, x < y, (x as i64) < y as i64, x & y != 0);
    cond >> f & 1 != 0
}

/// Whether `x <cond> y` holds in 32 bits.
#[inline(always)]
fn test32(cond: u16, x: u32, y: u32) -> bool {
    let f = op::flags(x == y, x < y, (x as i32) < y as i32, x & y != 0);
    cond >> f & 1 != 0
}

/// Signed 64-bit division: x / 0 = 0, INT_MIN / -1 = INT_MIN.
#[inline(always)]
fn sdiv64(x: u64, y: u64) -> u64 {
    if y == 0 {
        0
    } else {
        (x as i64).wrapping_div(y as i64) as u64
    }
}

/// Signed 64-bit modulo: x % 0 = x, INT_MIN % -1 = 0.
#[inline(always)]
fn smod64(x: u64, y: u64) -> u64 {
    if y == 0 {
        x
    } else {
        (x as i64).wrapping_rem(y as i64) as u64
    }
}

/// Signed 32-bit division, zero-extended.
#[inline(always)]
fn sdiv32(x: u64, y: u64) -> u64 {
    let (x, y) = (x as i32, y as i32);
    if y == 0 {
        0
    } else {
        x.wrapping_div(y) as u32 as u64
    }
}

/// Signed 32-bit modulo, zero-extended (x % 0 = low half of x).
#[inline(always)]
fn smod32(x: u64, y: u64) -> u64 {
    let (x, y) = (x as i32, y as i32);
    if y == 0 {
        x as u32 as u64
    } else {
        x.wrapping_rem(y) as u32 as u64
    }
}

#[cfg(test)]
mod tests;
