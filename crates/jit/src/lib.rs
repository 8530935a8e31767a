//! # bpfkit-jit
//!
//! An x86-64 (System V, Linux) JIT compiler for eBPF programs, with the
//! interpreter's execution model and traps.
//!
//! Two modes, fixed when a [`Jit`] is built (never a flag of [`Jit::run`]):
//!
//! - **Checked mode** ([`Jit::new`], [`Builder::build`]), for programs no
//!   verifier has checked: every load, store and atomic is checked at run
//!   time against the guest memory regions the interpreter checks (the
//!   engine's own stack, then the [`Memory`] regions), and a bad access
//!   returns the same [`Trap { pc, kind }`](Trap) as
//!   [`bpfkit_interp::Interpreter`]. Accesses `[r10 + const]` that provably
//!   stay inside the stack are not checked at all; others cost an inline
//!   compare with the stack bounds and one with the region the last
//!   region-table walk found, and only accesses that miss both walk the
//!   region table.
//! - **Unchecked mode** ([`Jit::compile_verified`],
//!   [`Builder::build_verified`]) for programs the verifier accepted: it
//!   takes a [`VerifiedProgram`], which only
//!   [`VerifiedProgram::verify`] makes, from an accepted verdict on the
//!   program it then owns, so unverified code cannot reach it (a type
//!   error). Loads, stores and atomics go straight to memory as in the
//!   kernel's JIT. What the verifier cannot know is checked once per run
//!   instead of per access: that `r1` points at a context of the verified
//!   type's size in `mem`, and that the context's packet pointers
//!   (`data_meta <= data <= data_end`) span one writable region; a passed
//!   check is remembered while the region list, `r1` and the packet words
//!   stay the same, so a repeat costs a few compares. Helpers
//!   are trusted to keep that true when they move the packet
//!   (`xdp_adjust_head`, ...), as the kernel trusts its own. Legacy packet
//!   loads keep their run-time check, as in the kernel. ARCHITECTURE.md
//!   (Decisions) says why each unchecked access is safe.
//!
//! [`Builder::blind_constants`] adds constant blinding to either mode.
//!
//! ```compile_fail
//! # use bpfkit_jit::Jit;
//! # use bpfkit_isa::Program;
//! # use bpfkit_runtime::Helpers;
//! // A plain `Program` is no proof of verification: this does not compile.
//! let p = Program::default();
//! let _ = Jit::compile_verified(&p, &Helpers::new());
//! ```
//!
//! ```
//! # use bpfkit_jit::{Jit, VerifiedProgram};
//! # use bpfkit_isa::{asm::{assemble, Syntax}, Program};
//! # use bpfkit_runtime::{Helpers, Memory, RegionKind};
//! # use bpfkit_verifier::Options;
//! # use bpfkit_abi::ProgType;
//! // The only way in: an accepted verdict on this very program.
//! let p = Program::from_insns(assemble("ldxdw %r0, [%r1+8]\nexit", Syntax::Ubpf).unwrap()).unwrap();
//! let (report, verified) = VerifiedProgram::verify(&p, ProgType::Kprobe, &[], &Options::default());
//! let verified = verified.expect("accepted");
//! if bpfkit_jit::is_supported() {
//!     let mut jit = Jit::compile_verified(&verified, &Helpers::new()).unwrap();
//!     let mut regs = [1u8; 168]; // struct pt_regs
//!     let mut mem = Memory::new();
//!     let ctx = mem.add(RegionKind::Context, &mut regs);
//!     assert_eq!(jit.run(&mut mem, &[ctx]), Ok(0x0101_0101_0101_0101));
//! }
//! ```
//!
//! - [`Jit::new`] / [`Jit::builder`]: compile once (budget, `lddw`
//!   resolver), [`Jit::run`] many times.
//! - [`Jit::run_typed`] / [`Jit::run_repeat`]: runs with per-run data of a
//!   known type `T`, where helpers registered with
//!   [`Helpers::register_body`] for `T` are called straight from the code
//!   through their own direct entries (`bpfkit_runtime::raw`), and those
//!   registered with [`Helpers::register_typed`] through a typed trampoline
//!   (no `Arc<dyn Helper>`, no [`HelperEnv`], no downcast), and several
//!   runs in a row share their set-up. A helper's panic is caught before it
//!   could unwind through the generated code and resumed once the code
//!   returned, on every path.
//! - [`TailTable`] / [`Builder::tail_calls`]: native tail calls in
//!   unchecked code: `bpf_tail_call` enters a published target without
//!   leaving the run (see the `tail` module); whatever the table cannot
//!   take calls the helper.
//! - [`is_supported`]: x86-64 Linux only; elsewhere the crate builds and
//!   [`Jit::new`] returns [`CompileError::Unsupported`].
//! - Code memory: [`memory::publish`] turns emitted bytes into
//!   [`ExecutableCode`] (never writable and executable at once).
//! - [`x64::encode`]: the pure instruction encoder; [`x64::lower`]:
//!   lowering and the machine model (register mapping, frames, checks,
//!   budget).
//!
//! Semantics are the interpreter's (see `bpfkit_interp` for the model):
//! registers zeroed except `r1`-`r5` (the arguments) and `r10`; eight
//! frames of 512 bytes in one stack owned by the engine; helper calls keep
//! `r1`-`r5`; `callx` takes [`bpfkit_interp::FUNC_ADDR_BASE`]` + 8 * slot`
//! or a helper id; legacy packet loads end the program with `r0 = 0`
//! out of range. With a budget, the trap happens at the same instruction as
//! in the interpreter. The interpreter's `executed()` count is not tracked.
//!
//! ```
//! use bpfkit_jit::Jit;
//! use bpfkit_isa::{asm::{assemble, Syntax}, Program};
//! use bpfkit_runtime::{Helpers, Memory, RegionKind};
//!
//! let insns = assemble("ldxb %r0, [%r1+1]\nadd %r0, %r2\nexit", Syntax::Ubpf).unwrap();
//! let prog = Program::from_insns(insns).unwrap();
//! if bpfkit_jit::is_supported() {
//!     let mut jit = Jit::new(&prog, &Helpers::new()).unwrap();
//!     let mut pkt = [1u8, 2, 3];
//!     let mut mem = Memory::new();
//!     let addr = mem.add(RegionKind::Packet, &mut pkt);
//!     assert_eq!(jit.run(&mut mem, &[addr, 40]), Ok(42));
//! }
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[allow(unsafe_code)]
pub mod memory;
pub mod tail;
pub mod x64;

#[doc(hidden)]
pub mod fuzzing;

use bpfkit_isa::{HelperId, Insn, Pc, Program};
use bpfkit_runtime::raw::{RawCall, RawStop};
use bpfkit_runtime::{
    Access, Guest, Helper, HelperAbort, HelperEnv, HelperResult, Helpers, Imm64Resolver, Memory,
    RedirectRecord, Trap, TrapKind, TypedEntry, TypedHelper, MAX_CALL_FRAMES, STACK_SIZE,
};
use bpfkit_verifier::verified::PacketFields;
pub use bpfkit_verifier::VerifiedProgram;
pub use memory::ExecutableCode;
use std::any::Any;
use std::sync::Arc;
pub use tail::TailTable;
use thiserror::Error;
use x64::lower::{lower, status, LowerInput};

/// Whether this build can compile and run code (x86-64 Linux).
pub const fn is_supported() -> bool {
    cfg!(all(target_arch = "x86_64", target_os = "linux"))
}

/// Why a program could not be compiled.
#[derive(Debug, Error)]
pub enum CompileError {
    /// Not an x86-64 Linux host.
    #[error("the JIT supports x86-64 Linux only")]
    Unsupported,
    /// More instructions than the JIT indexes (2^31).
    #[error("program too large: {insns} instructions")]
    TooLarge {
        /// Number of instructions.
        insns: usize,
    },
    /// Mapping executable memory failed.
    #[error("cannot map executable memory")]
    Map(#[source] std::io::Error),
}

/// Configuration for a [`Jit`].
#[derive(Clone, Copy, Default)]
pub struct Builder<'r> {
    no_publish: bool,
    blind: bool,
    budget: Option<u64>,
    resolver: Option<&'r dyn Imm64Resolver>,
    tail: Option<&'r Arc<TailTable>>,
}

impl<'r> Builder<'r> {
    /// Stops programs that execute more than `budget` instructions, at the
    /// same instruction as the interpreter (default: no limit, and no
    /// counting code). Budgets above `i64::MAX` count as `i64::MAX`.
    pub fn budget(mut self, budget: u64) -> Builder<'r> {
        self.budget = Some(budget);
        self
    }

    /// Benchmarking aid: stop after lowering, reporting the code size as
    /// `CompileError::TooLarge { insns }`.
    #[doc(hidden)]
    pub fn lower_only(mut self) -> Builder<'r> {
        self.no_publish = true;
        self
    }

    /// Constant blinding (off by default), as the kernel's
    /// `bpf_jit_harden`: every immediate the program supplies (ALU, jump
    /// and store operands, `lddw` values, legacy packet offsets) is emitted
    /// as `imm ^ key` and `key` with a fresh random key per instruction and
    /// combined in a scratch register at run time, so that a program's
    /// author cannot place chosen bytes in executable memory. Shift counts
    /// (one byte), memory offsets (16 bits) and 0 are not blinded. Results
    /// are unchanged; the code is larger and slower.
    pub fn blind_constants(mut self, on: bool) -> Builder<'r> {
        self.blind = on;
        self
    }

    /// Resolves symbolic `lddw` operands (map references, ...).
    pub fn resolver(mut self, resolver: &'r dyn Imm64Resolver) -> Builder<'r> {
        self.resolver = Some(resolver);
        self
    }

    /// Native tail calls through `table` (see [`TailTable`]): in unchecked
    /// mode without a budget or blinding, `bpf_tail_call` on a program
    /// array the resolver describes ([`Imm64Resolver::prog_array`]) enters
    /// the target the table holds for the slot's program id without
    /// leaving the run, and the code can be published in the table as a
    /// target itself. Ignored otherwise (the helper takes every tail call).
    pub fn tail_calls(mut self, table: &'r Arc<TailTable>) -> Builder<'r> {
        self.tail = Some(table);
        self
    }

    /// Compiles `prog` in checked mode, taking the helpers it calls from
    /// `helpers`.
    pub fn build(self, prog: &Program, helpers: &Helpers) -> Result<Jit, CompileError> {
        self.build_mode(prog, helpers, None)
    }

    /// Compiles a program the verifier accepted in **unchecked mode**: its
    /// loads, stores and atomics go straight to memory, as in the kernel's
    /// JIT (see the crate docs for what is still checked and why this is
    /// sound). The helpers must keep the prototypes the verifier assumed
    /// (a pointer-returning helper returns NULL or memory of the promised
    /// size, as `bpfkit-helpers` does): the kernel trusts its helpers the
    /// same way.
    pub fn build_verified(
        self,
        prog: &VerifiedProgram,
        helpers: &Helpers,
    ) -> Result<Jit, CompileError> {
        let ctx_size = prog.ctx_size() as u64;
        let packet = prog.packet_fields();
        let fields_in_ctx = packet.is_some_and(|p| {
            [p.data, p.data_end, p.data_meta.unwrap_or(p.data)]
                .iter()
                .all(|&off| off as u64 + 4 <= ctx_size)
        });
        let check = EntryCheck {
            ctx_size,
            ctx_writable: prog.ctx_writable(),
            packet,
            fields_in_ctx,
        };
        self.build_mode(prog.program(), helpers, Some(check))
    }

    fn build_mode(
        self,
        prog: &Program,
        helpers: &Helpers,
        unchecked: Option<EntryCheck>,
    ) -> Result<Jit, CompileError> {
        if !is_supported() {
            return Err(CompileError::Unsupported);
        }
        let n = prog.insns().len();
        if n >= i32::MAX as usize || prog.slot_count() >= i32::MAX as usize / 8 {
            return Err(CompileError::TooLarge { insns: n });
        }
        // Native tail calls: unchecked code without a budget (each program
        // of a chain gets its own) or blinding (the sequence's constants).
        let tail = self
            .tail
            .filter(|_| unchecked.is_some() && self.budget.is_none() && !self.blind);
        let input = LowerInput {
            prog,
            helpers,
            resolver: self.resolver,
            budget: self.budget.is_some(),
            checked: unchecked.is_none(),
            blind: self.blind.then(blind_seed),
            tail: tail
                .zip(unchecked.as_ref())
                .map(|(t, check)| x64::lower::TailInput {
                    entries: t.entries_for(check),
                    ids: t.ids(),
                }),
        };
        let lowered = lower(&input);
        if self.no_publish {
            let insns = lowered.code_len;
            x64::lower::recycle_code(lowered.buf);
            return Err(CompileError::TooLarge { insns });
        }
        let code = Arc::new(memory::publish(lowered.code()).map_err(CompileError::Map)?);
        // The buffer serves the thread's next compile.
        x64::lower::recycle_code(lowered.buf);
        let base = code.addr();
        let slots = prog.slot_count();
        // `callx` targets: every instruction start (only needed when the
        // program has a `callx`).
        let has_callx = lowered.has_callx;
        let (mut callx_tab, mut callx_adj) = if has_callx {
            (vec![0u64; slots], vec![0u64; slots])
        } else {
            (Vec::new(), Vec::new())
        };
        if has_callx {
            for (i, pc) in prog.pcs().iter().enumerate() {
                callx_tab[pc.0] = base + lowered.offsets[i] as u64;
                callx_adj[pc.0] = lowered.adj.get(i).map_or(0, |&a| a as u64);
            }
        }
        let (callx_tab, callx_adj) = (callx_tab.into_boxed_slice(), callx_adj.into_boxed_slice());
        // Every registered helper, for `callx` by id (only with a `callx`).
        let mut all_helpers: Vec<(u32, Arc<dyn Helper>)> = if has_callx {
            helpers.iter().map(|(id, h)| (id.0, h.clone())).collect()
        } else {
            Vec::new()
        };
        all_helpers.sort_by_key(|(id, _)| *id);
        let mut frame = take_frame();
        let f = &mut *frame;
        // The typed functions of the table's helpers, resolved per data
        // type at the first typed run (`typed_cache`).
        f.typed_entries.extend(
            lowered
                .table
                .iter()
                .map(|(id, _)| helpers.typed_entry(*id).cloned()),
        );
        f.pcs.clear();
        f.pcs.reserve(n + 1);
        f.pcs.extend_from_slice(prog.pcs());
        f.pcs.push(Pc(slots));
        let stack_start = f.stack.as_mut_ptr() as u64;
        f.ctx = Ctx {
            stack_start,
            stack_top: stack_start + (STACK_SIZE * MAX_CALL_FRAMES) as u64,
            callx_tab: callx_tab.as_ptr() as u64,
            callx_adj: callx_adj.as_ptr() as u64,
            // Every other field as a fresh `Jit`'s: a pooled frame keeps
            // nothing of the compile before.
            ..Ctx::blank()
        };
        Ok(Jit {
            frame: Some(frame),
            sites: lowered.sites,
            helper_sites: HelperSites {
                sites: lowered.helper_sites,
                code_addr: base,
            },
            tramp: base.wrapping_add(lowered.tramp as u64),
            entry: lowered.entry as usize,
            code,
            trap_insns: lowered.trap_insns,
            uses_regions: lowered.uses_regions,
            has_callx,
            tail_table: tail.cloned(),
            redirect_rec: None,
            table: lowered.table,
            typed_cache: None,
            untyped_direct: None,
            all_helpers,
            callx_tab,
            callx_adj,
            budget: self.budget.map(|b| b.min(i64::MAX as u64)),
            unchecked,
            entry_ok: EntryKey::default(),
            blinded: self.blind,
            cpu_limit: match (&unchecked, self.resolver) {
                (Some(_), Some(r)) => x64::inline::cpu_limit(prog, r),
                _ => u32::MAX,
            },
        })
    }
}

/// Words of a `Jit`'s stack (every frame).
const STACK_WORDS: usize = STACK_SIZE * MAX_CALL_FRAMES / 8;

/// Frames of dropped `Jit`s kept for this thread's next compiles, at most.
const FRAME_POOL: usize = 8;

/// A pooled frame's `pcs` keeps its buffer up to this many entries (a
/// 16,384-instruction program), so that a huge program's does not stay
/// allocated.
const PCS_KEEP: usize = 1 << 14;

/// A pooled frame's region table keeps its buffer up to this many regions.
const REGIONS_KEEP: usize = 64;

/// What a `Jit` needs besides its code and tables, in one allocation that
/// is recycled on its thread (`take_frame`/`give_frame`): a fresh
/// allocation each for the state block, the pc table and the 4 KiB stack,
/// and their frees, were most of a compile's own work outside lowering
/// and publishing (BENCHMARKS.md, "Fixed cost outside lowering").
#[repr(C)]
struct Frame {
    /// The state block, kept between runs so that only per-run fields are
    /// written on entry.
    ctx: Ctx,
    /// Slot pc of each instruction, plus the end.
    pcs: Vec<Pc>,
    /// The region table the code checks against (see `snapshot`): its
    /// buffer too is kept from one `Jit` to the next.
    regions: Vec<RegionEntry>,
    /// Per entry of the helper table: its typed function, if registered
    /// with [`Helpers::register_typed`] (emptied when the frame is given
    /// back, so that no helper outlives its `Jit` through the pool).
    typed_entries: Vec<Option<TypedEntry>>,
    /// The stack (see [`Stack`]).
    stack: Stack,
}

/// A `Jit`'s stack, as `u64`s and 16-aligned: its top, `r10` on entry,
/// is then 16-aligned like the interpreter's (and the kernel JIT's frame
/// pointer), so that a privileged program that computes with the stack's
/// address (allowed to root) sees the same low bits on both engines.
#[repr(C, align(16))]
struct Stack([u64; STACK_WORDS]);

impl std::ops::Deref for Stack {
    type Target = [u64; STACK_WORDS];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Stack {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

thread_local! {
    /// Frames of `Jit`s dropped on this thread: a 4 KiB `calloc` and its
    /// `free` are past the allocator's per-thread cache (~370 host
    /// instructions per compile under callgrind; BENCHMARKS.md, "Fixed cost
    /// of a compile").
    static FRAMES: std::cell::RefCell<Vec<Box<Frame>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A frame with a zeroed stack, as a fresh interpreter's: a checked program
/// (or a privileged verified one, as the kernel allows) may read stack it
/// did not write, and must then see zeros whatever ran on a reused stack
/// before (a `Jit` keeps its own stack between its runs, as the
/// interpreter does). The caller sets every field of `ctx` and fills
/// `pcs`.
fn take_frame() -> Box<Frame> {
    let pooled = FRAMES.try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()));
    match pooled.ok().flatten() {
        Some(mut f) => {
            f.stack.fill(0);
            f
        }
        None => new_frame(),
    }
}

/// A new frame (its `ctx` is overwritten by the compile).
#[cold]
fn new_frame() -> Box<Frame> {
    Box::new(Frame {
        ctx: Ctx::blank(),
        pcs: Vec::new(),
        regions: Vec::new(),
        typed_entries: Vec::new(),
        stack: Stack([0; STACK_WORDS]),
    })
}

impl Ctx {
    /// A `Ctx` with every field in its state before a compile: no stack,
    /// no regions, no run, the hooks that do nothing.
    fn blank() -> Ctx {
        Ctx {
            host_rsp: 0,
            stack_start: 0,
            stack_top: 0,
            remaining: 0,
            depth: 0,
            regions: 0,
            nregions: 0,
            args: [0; 5],
            call_h: 0,
            call_site: 0,
            call_ret: 0,
            tramp: 0,
            status: status::OK,
            ret: 0,
            trap_idx: 0,
            fault_addr: 0,
            fault_info: 0,
            callx_tab: 0,
            callx_adj: 0,
            pkt_start: 0,
            pkt_len: 0,
            has_pkt: 0,
            hot_r: [0; 5],
            hot_w: [0; 5],
            env: 0,
            snap_version: 0,
            cpu: 0,
            direct: 0,
            raw: RawCall {
                guest: memory::no_guest(),
                data: std::ptr::null_mut(),
                version: 0,
                engine: std::ptr::null_mut(),
                on_regions: memory::no_regions_hook,
                on_stop: memory::no_stop_hook,
            },
            tail_off: 0,
            tail_prog: 0,
            head_direct: 0,
            redirect_off: 0,
        }
    }
}

/// Keeps `frame` for a later compile on this thread, or frees it when the
/// pool is full (or the thread is shutting down).
fn give_frame(mut frame: Box<Frame>) {
    if frame.pcs.capacity() > PCS_KEEP {
        frame.pcs = Vec::new();
    }
    if frame.regions.capacity() > REGIONS_KEEP {
        frame.regions = Vec::new();
    }
    frame.regions.clear();
    frame.typed_entries.clear();
    let _ = FRAMES.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.len() < FRAME_POOL {
                p.push(frame);
            }
        }
    });
}

impl Drop for Jit {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            give_frame(frame);
        }
    }
}

/// A program compiled to machine code (checked mode).
pub struct Jit {
    /// Shared with a [`TailTable`] that published it.
    code: Arc<ExecutableCode>,
    /// Offset of the entry in `code`.
    entry: usize,
    /// (return-address offset, instruction index) of every checked access.
    sites: Vec<(u32, u32)>,
    /// Where the trampolines find a call by its return address.
    helper_sites: HelperSites,
    /// Address of the code's `L_TRAMP` routine: the run's table entry for
    /// a helper without a direct entry (meaningless without helper calls).
    tramp: u64,
    /// (instruction index, instruction) of unknown-helper and unresolved
    /// `lddw` traps, sorted.
    trap_insns: Vec<(u32, Insn)>,
    /// Whether the code reads the region table (else it is not copied).
    uses_regions: bool,
    /// Whether the program has a `callx`.
    has_callx: bool,
    /// The table the code was compiled with for native tail calls (its
    /// entries' address is in the code; see [`Builder::tail_calls`]).
    tail_table: Option<Arc<TailTable>>,
    /// Where typed runs' data keeps its `RedirectRecord`
    /// ([`Jit::set_redirect_record`]): a `fn(&mut T) -> &mut
    /// RedirectRecord` for the data type `T` it was set for.
    redirect_rec: Option<memory::TypedSlot>,
    table: Vec<(u32, Arc<dyn Helper>)>,
    /// `typed_entries` resolved for the data type of the last typed run: a
    /// `TypedCache<T>` and its `TypeId` (see `typed_cache`), which a run
    /// compares with a constant (no virtual `type_id` call per run).
    typed_cache: Option<memory::TypedSlot>,
    /// The call sites' targets (`Ctx::direct`) in untyped runs: `tramp`
    /// for every table entry (made at the first untyped run).
    untyped_direct: Option<Box<[u64]>>,
    all_helpers: Vec<(u32, Arc<dyn Helper>)>,
    /// Owned here, read by the code through `Ctx::callx_tab`/`callx_adj`.
    #[allow(dead_code)]
    callx_tab: Box<[u64]>,
    #[allow(dead_code)]
    callx_adj: Box<[u64]>,
    budget: Option<u64>,
    /// Unchecked mode: what every run checks of its context before
    /// entering (and after each helper call).
    unchecked: Option<EntryCheck>,
    /// Unchecked mode: the inputs of the last entry check that passed (see
    /// [`EntryKey`]); a run with the same inputs skips the region scans.
    entry_ok: EntryKey,
    blinded: bool,
    /// [`Jit::set_cpu`] refuses CPUs from here on: the fewest CPUs of a
    /// per-CPU array whose lookups the code may compute inline.
    cpu_limit: u32,
    /// The state block, the pc table and the stack (`None` only once the
    /// drop has given it back to the thread's pool).
    frame: Option<Box<Frame>>,
}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jit")
            .field("insns", &(self.frame().pcs.len() - 1))
            .field("code_bytes", &self.code.len())
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// A fresh seed for the blinding keys of one compile.
fn blind_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded from the OS's randomness once per thread and
    // perturbed per instance; good enough for keys an attacker must not
    // predict from the program, without a dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// What the verifier assumed about the context (see
/// [`VerifiedProgram`]), checked against each run's memory in unchecked
/// mode: the program then reads `ctx_size` bytes at `r1` and packet
/// memory between the context's packet pointers without further checks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct EntryCheck {
    ctx_size: u64,
    ctx_writable: bool,
    packet: Option<PacketFields>,
    /// Every packet field's 4 bytes lie inside `[0, ctx_size)` (true of
    /// the verifier's layouts, which derive the size from the fields:
    /// checked, not assumed, since the cache reads them unchecked).
    fields_in_ctx: bool,
}

/// Everything the result of [`EntryCheck::check`] depends on, for a
/// [`Jit`] (whose `EntryCheck` is fixed): the region list of the run's
/// `Memory` (through its [`Memory::version`] stamp), `r1`, and the packet
/// words of the context (`data`, `data_end`, `data_meta`).
///
/// Why a passed check may be reused when the key is equal, so that the
/// cache is exactly as safe as checking every time:
/// - The stamp changes whenever a region is added or the list cleared
///   (the only ways to change it: regions are immutable once added) and is
///   unique in the process, so an equal stamp means the very same region
///   list, with the same bounds, permissions and packet region, in the
///   same `Memory` (another `Memory`, even at the address of a dropped
///   one, has another stamp). Memory that `Memory` lends stays valid while
///   it holds the region (its invariant), whatever happened in between.
/// - With the same list and the same `r1`, the context check gives the same
///   answer; it is not trusted, though, before the packet words are read:
///   they are read with checked loads after the stamp and `r1` matched,
///   i.e. from a context known to lie in a region.
/// - The packet check is a function of the list and the three words only,
///   so equal words give the same answer. The words are read on every run
///   (the caller or a helper of the previous run may have moved the
///   packet: `xdp_adjust_head` rewrites them), never cached.
///
/// Only passed checks are stored (`version` 0, which no `Memory` has,
/// when none is); a failing run is checked in full again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EntryKey {
    pub(crate) version: u64,
    pub(crate) r1: u64,
    pub(crate) words: [u64; 3],
    /// The words may be read straight from `r1 + offs` on a hit: the
    /// program type has packet fields, all inside the context
    /// (`EntryCheck::fields_in_ctx`).
    pub(crate) raw: bool,
    /// The packet fields' offsets (`EntryCheck::offsets`), kept here so
    /// that a hit reads nothing but the key and the context.
    pub(crate) offs: [u32; 3],
}

impl EntryCheck {
    /// The packet words of the context at `r1` (`data`, `data_end`,
    /// `data_meta`, or zeros without packet fields), read with checked
    /// loads (a failing read gives 0: the caller has checked that the
    /// context lies in a region, or decides without the words).
    fn words(&self, mem: &Memory<'_>, r1: u64) -> [u64; 3] {
        let Some(offs) = self.offsets() else {
            return [0; 3];
        };
        offs.map(|off| {
            mem.load::<4>(r1.wrapping_add(off as u64))
                .map_or(0, |b| u32::from_ne_bytes(b) as u64)
        })
    }

    /// Offsets of `data`, `data_end`, `data_meta` (`data` again without
    /// metadata) in the context.
    #[inline(always)]
    fn offsets(&self) -> Option<[u32; 3]> {
        self.packet
            .map(|p| [p.data, p.data_end, p.data_meta.unwrap_or(p.data)])
    }

    /// [`EntryCheck::check`] with the result of the last passed check
    /// reused when its inputs are the same (see [`EntryKey`]).
    #[inline(always)]
    fn check_cached(&self, last: &mut EntryKey, mem: &Memory<'_>, r1: u64) -> Option<TrapKind> {
        // `version` 0 (no `Memory` has it): nothing cached. The hit path
        // reads only the key (field offsets included) and the context.
        if last.version == mem.version() && last.r1 == r1 {
            let words = if last.raw {
                memory::cached_ctx_words(last, mem, r1)
            } else if self.packet.is_none() {
                Some([0; 3])
            } else {
                Some(self.words(mem, r1))
            };
            // One branch for the three words (branch-free compare).
            if let Some(w) = words {
                let k = last.words;
                if (w[0] ^ k[0]) | (w[1] ^ k[1]) | (w[2] ^ k[2]) == 0 {
                    return None;
                }
                // Moved packet words (a helper of the previous run,
                // `xdp_adjust_tail`/`_head`/`_meta`, rewrote them; the
                // packet stays in its region): the same list and `r1`
                // keep the context check's answer, so only the packet
                // check is made again, against the packet region.
                if self.packet_in_packet_region(mem, w) {
                    last.words = w;
                    return None;
                }
            }
        }
        self.check_and_remember(last, mem, r1)
    }

    /// The packet half of [`EntryCheck::check`] for the words `w`, against
    /// the memory's packet region only (`false` sends the caller to the
    /// full check, which tries every region).
    #[inline(always)]
    fn packet_in_packet_region(&self, mem: &Memory<'_>, w: [u64; 3]) -> bool {
        let [data, end, start] = w;
        start <= data
            && data <= end
            && self
                .packet_region(mem)
                .is_some_and(|(lo, hi)| lo <= start && end <= hi)
    }

    /// The bounds `[start, end]` of `mem`'s packet region when packet words
    /// that moved may be checked against it alone: the program type has
    /// packet fields and the region is writable (what the full check
    /// requires of the region holding the packet).
    #[inline(always)]
    fn packet_region(&self, mem: &Memory<'_>) -> Option<(u64, u64)> {
        mem.packet()
            .filter(|r| self.packet.is_some() && r.writable())
            .map(|r| (r.start(), r.end()))
    }

    /// The full check, remembered when it passes (the first run over a
    /// `Memory`, or a changed context).
    #[cold]
    #[inline(never)]
    fn check_and_remember(
        &self,
        last: &mut EntryKey,
        mem: &Memory<'_>,
        r1: u64,
    ) -> Option<TrapKind> {
        last.version = 0;
        let words = match self.check(mem, r1) {
            Ok(words) => words,
            Err(t) => return Some(t),
        };
        let offs = self.offsets().filter(|_| self.fields_in_ctx);
        *last = EntryKey {
            version: mem.version(),
            r1,
            words,
            raw: offs.is_some(),
            offs: offs.unwrap_or_default(),
        };
        None
    }

    /// `Ok` when `mem` holds the context at `r1` and the packet it
    /// describes, with the packet words read ([`EntryCheck::words`]);
    /// otherwise the trap the run ends with.
    fn check(&self, mem: &Memory<'_>, r1: u64) -> Result<[u64; 3], TrapKind> {
        if self.ctx_size == 0 {
            return Ok(self.words(mem, r1));
        }
        // Runs once per run: one pass over the (few) regions for the
        // context, and the packet region looked up directly.
        let ctx_end = r1.wrapping_add(self.ctx_size);
        let ctx_ok = ctx_end > r1
            && mem.regions().iter().any(|r| {
                r.start() <= r1 && ctx_end <= r.end() && (r.writable() || !self.ctx_writable)
            });
        if !ctx_ok {
            return Err(TrapKind::OutOfBounds {
                addr: r1,
                size: self.ctx_size as usize,
                access: if self.ctx_writable {
                    Access::Write
                } else {
                    Access::Read
                },
            });
        }
        if self.packet.is_none() {
            return Ok([0; 3]);
        }
        // Inside the context, checked above.
        let words = self.words(mem, r1);
        let [data, end, start] = words;
        // The verifier lets the program write the packet (XDP, tc) and
        // bounds every access by data_end, reading back from data_meta.
        let covers =
            |r: &bpfkit_runtime::Region| r.start() <= start && end <= r.end() && r.writable();
        let ok = start <= data
            && data <= end
            && (mem.packet().is_some_and(covers) || mem.regions().iter().any(covers));
        if !ok {
            return Err(TrapKind::OutOfBounds {
                addr: start,
                size: end.saturating_sub(start) as usize,
                access: Access::Write,
            });
        }
        Ok(words)
    }
}

/// One guest region as the generated code checks it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RegionEntry {
    start: u64,
    end: u64,
    /// 1 when read-only (tested against the access's write flag).
    readonly: u64,
}

/// The block generated code works with (`r13`), at fixed offsets.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Ctx {
    // Fields the inline checks read come first, within a one-byte
    // displacement of `r13`.
    pub(crate) host_rsp: u64,
    pub(crate) stack_start: u64,
    /// Last region an access was found in: start, then for access sizes 1,
    /// 2, 4, 8 the number of valid offsets (`len - size + 1`; 0: none).
    pub(crate) hot_r: [u64; 5],
    /// The same for the last writable region a write was found in.
    pub(crate) hot_w: [u64; 5],
    /// Budget minus executed instructions (trap when negative).
    pub(crate) remaining: i64,
    pub(crate) depth: u64,
    pub(crate) stack_top: u64,
    /// `r1`-`r5` on entry.
    pub(crate) args: [u64; 5],
    /// The helper call in progress: table index, or id with `callx`.
    pub(crate) call_h: u64,
    /// The helper call in progress: instruction index, plus `1 << 32` when
    /// `call_h` is an id. Call sites do not store these two (see
    /// `Emitter::helper_call`): a trampoline finds them from `call_ret`,
    /// and the code stores them when a call stops the program.
    pub(crate) call_site: u64,
    /// The return address of the call in progress when it went through
    /// `L_TRAMP` (a trampoline call by table index) until the trampoline
    /// read it; 0 otherwise (through the `callx` stub, `call_h`/`call_site`
    /// are set).
    pub(crate) call_ret: u64,
    /// The trampoline of this run (`memory::helper_trampoline`, or
    /// `memory::typed_trampoline::<T>` in typed runs): where `L_TRAMP` and
    /// the `callx` stub go.
    pub(crate) tramp: u64,
    pub(crate) regions: u64,
    pub(crate) nregions: u64,
    pub(crate) status: u64,
    pub(crate) ret: u64,
    pub(crate) trap_idx: u64,
    pub(crate) fault_addr: u64,
    pub(crate) fault_info: u64,
    pub(crate) callx_tab: u64,
    pub(crate) callx_adj: u64,
    pub(crate) pkt_start: u64,
    pub(crate) pkt_len: u64,
    pub(crate) has_pkt: u64,
    /// Address of the run's `RunEnv` (0 between runs).
    pub(crate) env: u64,
    /// [`Memory::version`] of the regions copied into the region table.
    pub(crate) snap_version: u64,
    /// The run's CPU ([`Jit::set_cpu`]), read by inline per-CPU lookups
    /// and `bpf_get_smp_processor_id` (unchecked mode).
    pub(crate) cpu: u64,
    /// The call sites' targets for this run, one per entry of the helper
    /// table: a helper's direct entry (`bpfkit_runtime::raw`), or the
    /// code's `L_TRAMP` (to `tramp`).
    pub(crate) direct: u64,
    /// What every target gets as its first argument: the run's stack,
    /// memory and data for direct entries (a `RawCall<T>` of the typed
    /// run's `T`: the layout is the same for every `T`), with `engine`
    /// pointing back at this `Ctx`.
    pub(crate) raw: RawCall<()>,
    /// Native tail calls (see [`TailTable`]): 1 + the byte offset of the
    /// tail-call count (a `u32`) in the run's data (`raw.data`), or 0 when
    /// the run takes every tail call through the helper. An offset, not a
    /// pointer: nothing of a run's data stays in the `Ctx` after it.
    pub(crate) tail_off: u64,
    /// 0 while the entered program runs (the entry of code compiled with
    /// a table clears it); after a native tail call, the target's
    /// `TailEntry::key` (whose tables a trap is reported with).
    pub(crate) tail_prog: u64,
    /// The entered program's `direct` table, which the entry of code
    /// compiled with a table puts back into `direct` (a native tail call
    /// of the previous run left the target's there).
    pub(crate) head_direct: u64,
    /// 1 + the byte offset of the run's `RedirectRecord` in its data
    /// (`raw.data`), or 0 when the run's data has none
    /// ([`Jit::set_redirect_record`]): inline `bpf_redirect_map`s then
    /// call the helper. An offset for the same reason as `tail_off`.
    pub(crate) redirect_off: u64,
}

/// The helper calls by table index of a `Jit`'s code, for the trampolines
/// (see `site_of_call`).
struct HelperSites {
    /// (return-address offset, instruction index, table index), sorted
    /// (`Lowered::helper_sites`).
    sites: Vec<(u32, u32, u32)>,
    /// The code's address, which the offsets are relative to.
    code_addr: u64,
}

/// What the helper trampoline needs during one run (or one batch of runs
/// in a row, [`Jit::run_repeat`]).
pub(crate) struct RunEnv<'j> {
    pub(crate) stack: *mut u8,
    pub(crate) stack_len: usize,
    pub(crate) mem: *mut Memory<'static>,
    /// [`Jit::run_with_data`]'s data (unused by typed runs, which keep
    /// theirs in [`TypedEnv`]).
    pub(crate) data: Option<*mut (dyn Any + 'static)>,
    regions: &'j mut Vec<RegionEntry>,
    /// Whether the code reads the region table (else helpers' changes to
    /// the regions need not be tracked).
    uses_regions: bool,
    table: &'j [(u32, Arc<dyn Helper>)],
    all_helpers: &'j [(u32, Arc<dyn Helper>)],
    pcs: &'j [Pc],
    /// `Jit::helper_sites` (one pointer to fill per run or series).
    helper_sites: &'j HelperSites,
    trap: Option<Trap>,
    panic: Option<Box<dyn Any + Send + 'static>>,
}

/// A fresh [`RunEnv`] over the `Jit` `$jit`'s tables, its `$frame`'s stack
/// and tables, `$mem` and `$data`. A macro, not a method: the caller holds
/// the frame's `ctx` mutably meanwhile, which a method borrowing the whole
/// `Jit` would conflict with.
macro_rules! run_env {
    ($jit:expr, $frame:expr, $mem:expr, $data:expr) => {
        RunEnv {
            stack: $frame.stack.as_mut_ptr().cast::<u8>(),
            stack_len: 8 * $frame.stack.len(),
            mem: ($mem as *mut Memory<'_>).cast::<Memory<'static>>(),
            data: $data,
            regions: &mut $frame.regions,
            uses_regions: $jit.uses_regions,
            table: &$jit.table,
            all_helpers: &$jit.all_helpers,
            pcs: &$frame.pcs,
            helper_sites: &$jit.helper_sites,
            trap: None,
            panic: None,
        }
    };
}

/// The typed functions and the stub's targets of a `Jit`'s helper table
/// for per-run data of type `T` (see `typed_cache`).
struct TypedCache<T> {
    fns: Vec<Option<TypedHelper<T>>>,
    /// One per table entry (`Ctx::direct`).
    direct: Vec<u64>,
}

/// `cache` (a `Jit`'s `typed_cache`) for data type `T`, filled from the
/// table's typed `entries` unless it holds them already (once per `Jit` and
/// data type, not per run: a run pays one `TypeId` compare).
#[inline(always)]
fn typed_cache<'c, T: Any>(
    cache: &'c mut Option<memory::TypedSlot>,
    entries: &[Option<TypedEntry>],
    tramp: u64,
) -> &'c TypedCache<T> {
    if cache
        .as_ref()
        .and_then(memory::TypedSlot::get::<TypedCache<T>>)
        .is_none()
    {
        *cache = Some(memory::TypedSlot::new(resolve_typed::<T>(entries, tramp)));
    }
    match cache
        .as_ref()
        .and_then(memory::TypedSlot::get::<TypedCache<T>>)
    {
        Some(c) => c,
        None => unreachable!("filled above"),
    }
}

/// The table's typed functions and direct entries for data type `T`.
#[cold]
#[inline(never)]
fn resolve_typed<T: Any>(entries: &[Option<TypedEntry>], tramp: u64) -> TypedCache<T> {
    let fns: Vec<Option<TypedHelper<T>>> = entries
        .iter()
        .map(|e| e.as_ref().and_then(TypedEntry::get::<T>))
        .collect();
    // A helper's own direct entry where it has one for `T`, the code's way
    // to the typed trampoline otherwise (it calls the typed function or
    // the `Helper` object).
    let direct = entries
        .iter()
        .map(|e| {
            e.as_ref()
                .and_then(TypedEntry::raw::<T>)
                .map_or(tramp, |f| f as *const () as u64)
        })
        .collect();
    TypedCache { fns, direct }
}

/// [`RunEnv`] of a typed run ([`Jit::run_repeat`]): the data's own type,
/// and the table's helpers as plain functions of it where registered so.
/// `memory::typed_trampoline::<T>` reads it.
pub(crate) struct TypedEnv<'j, T> {
    pub(crate) base: RunEnv<'j>,
    pub(crate) data: *mut T,
    pub(crate) typed: &'j [Option<TypedHelper<T>>],
}

/// Copies the region table of `mem` for the generated code (at the start of
/// a run and after every helper call, since a helper may change the
/// regions through [`Guest::memory_mut`]).
fn snapshot(mem: &Memory<'_>, regions: &mut Vec<RegionEntry>, ctx: &mut Ctx) {
    regions.clear();
    regions.extend(mem.regions().iter().map(|r| RegionEntry {
        start: r.start(),
        end: r.end(),
        readonly: !r.writable() as u64,
    }));
    ctx.regions = regions.as_ptr() as u64;
    ctx.nregions = regions.len() as u64;
    (ctx.pkt_start, ctx.pkt_len, ctx.has_pkt) = match mem.packet() {
        Some(p) => (p.start(), p.len(), 1),
        None => (0, 0, 0),
    };
    ctx.hot_r = [0; 5];
    ctx.hot_w = [0; 5];
    ctx.snap_version = mem.version();
}

/// Whether `mem`'s regions differ from the table the code checks against:
/// the version stamps say it without comparing every region after every
/// helper call (the table is the copy made when the stamp was taken).
fn regions_changed(mem: &Memory<'_>, _regions: &[RegionEntry], ctx: &Ctx) -> bool {
    mem.version() != ctx.snap_version
}

/// The safe half of the helper trampoline for [`Jit::run`] and
/// [`Jit::run_with_data`] (see `memory::helper_trampoline`): every helper
/// through its [`Helper`] object, with a [`HelperEnv`].
#[inline(always)]
pub(crate) fn call_helper(
    ctx: &mut Ctx,
    env: &mut RunEnv<'_>,
    stack: &mut [u8],
    mem: &mut Memory<'_>,
    data: Option<&mut (dyn Any + 'static)>,
    args: [u64; 5],
) -> memory::Ret2 {
    dispatch(ctx, env, stack, mem, args, |guest, helper, pc, id, args| {
        let mut henv = HelperEnv::new(guest.reborrow(), data, pc, id);
        helper.call(&mut henv, args)
    })
}

/// The safe half of the typed trampoline (see
/// `memory::typed_trampoline`): a helper with a typed function for `T` is
/// a direct call of it with the run's data; others go through their
/// [`Helper`] object as in [`call_helper`].
#[inline(always)]
pub(crate) fn call_typed<T: Any>(
    ctx: &mut Ctx,
    env: &mut RunEnv<'_>,
    typed: &[Option<TypedHelper<T>>],
    stack: &mut [u8],
    mem: &mut Memory<'_>,
    data: &mut T,
    args: [u64; 5],
) -> memory::Ret2 {
    site_of_call(ctx, env);
    // The common case first, with nothing else in the way: a call by
    // table index to a helper with a typed function that returns `r0`.
    let k = ctx.call_h as usize;
    let f = match typed.get(k) {
        Some(&Some(f)) if ctx.call_site >> 32 == 0 => f,
        _ => return call_untyped(ctx, env, stack, mem, data, args),
    };
    let mut guest = Guest::new(stack, mem);
    // A panic must not unwind through the generated code's frames: it is
    // caught here and resumed by `run` once the code has returned.
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut guest, data, args)));
    if env.uses_regions && regions_changed(guest.memory(), env.regions, ctx) {
        snapshot(guest.memory(), env.regions, ctx);
    }
    match result {
        Ok(Ok(r0)) => memory::Ret2 { r0, stop: 0 },
        other => {
            let id = HelperId(env.table[k].0);
            stopped(ctx, env, other, id)
        }
    }
}

/// [`call_typed`] for a helper without a typed function for `T` (or a
/// `callx` by id): through its [`Helper`] object. Out of line, so that the
/// direct call's path stays short.
#[cold]
#[inline(never)]
fn call_untyped<T: Any>(
    ctx: &mut Ctx,
    env: &mut RunEnv<'_>,
    stack: &mut [u8],
    mem: &mut Memory<'_>,
    data: &mut T,
    args: [u64; 5],
) -> memory::Ret2 {
    dispatch(ctx, env, stack, mem, args, |guest, helper, pc, id, args| {
        let mut henv = HelperEnv::new(guest.reborrow(), Some(data), pc, id);
        helper.call(&mut henv, args)
    })
}

/// What both trampolines share: find the helper of the call in progress
/// (`Ctx::call_h`/`call_site`), `call` it without letting a panic unwind
/// into generated code, refresh the region table if the helper changed
/// the regions, and turn the result into what the stub expects.
#[inline(always)]
fn dispatch<F>(
    ctx: &mut Ctx,
    env: &mut RunEnv<'_>,
    stack: &mut [u8],
    mem: &mut Memory<'_>,
    args: [u64; 5],
    call: F,
) -> memory::Ret2
where
    F: FnOnce(&mut Guest<'_, '_>, &Arc<dyn Helper>, Pc, HelperId, [u64; 5]) -> HelperResult,
{
    site_of_call(ctx, env);
    let (h, idx, by_id) = (ctx.call_h, ctx.call_site as u32, ctx.call_site >> 32 != 0);
    let stop = memory::Ret2 { r0: 0, stop: 1 };
    let (all, table) = (env.all_helpers, env.table);
    let (id, helper) = if by_id {
        match all.binary_search_by_key(&h, |(id, _)| *id as u64) {
            Ok(i) => (all[i].0, &all[i].1),
            Err(_) => {
                ctx.status = status::RUST_TRAP;
                let pc = env.pcs[idx as usize];
                env.trap = Some(Trap::new(pc, TrapKind::BadCallTarget { target: h }));
                return stop;
            }
        }
    } else {
        let (id, h) = &table[h as usize];
        (*id, h)
    };
    let pc = env.pcs[idx as usize];
    let mut guest = Guest::new(stack, mem);
    // A panic must not unwind through the generated code's frames: it is
    // caught here and resumed by `run` once the code has returned.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        call(&mut guest, helper, pc, HelperId(id), args)
    }));
    if env.uses_regions && regions_changed(guest.memory(), env.regions, ctx) {
        snapshot(guest.memory(), env.regions, ctx);
    }
    match result {
        Ok(Ok(r0)) => memory::Ret2 { r0, stop: 0 },
        other => stopped(ctx, env, other, HelperId(id)),
    }
}

/// Sets `Ctx::call_h`/`call_site` of a trampoline's call that came
/// through `L_TRAMP` (call sites store neither) from its return address,
/// `Ctx::call_ret`, which it clears (a `callx` by id sets them itself,
/// with `call_ret` 0).
#[inline(always)]
fn site_of_call(ctx: &mut Ctx, env: &RunEnv<'_>) {
    if ctx.call_ret != 0 {
        let sites = &env.helper_sites.sites;
        let off = ctx.call_ret.wrapping_sub(env.helper_sites.code_addr) as u32;
        let k = sites
            .binary_search_by_key(&off, |&(o, _, _)| o)
            .expect("a trampoline called from a helper call site");
        let (_, idx, h) = sites[k];
        (ctx.call_h, ctx.call_site, ctx.call_ret) = (h as u64, idx as u64, 0);
    }
}

/// After a direct entry's call that changed the regions (see
/// `memory::raw_regions_hook`): the table the code checks against is
/// copied again.
pub(crate) fn regions_after_call(ctx: &mut Ctx, env: &mut RunEnv<'_>, mem: &Memory<'_>) {
    if env.uses_regions {
        snapshot(mem, env.regions, ctx);
    }
}

/// After a direct entry's call that aborted or panicked (see
/// `memory::raw_stop_hook`): how the program stops, as for the
/// trampolines' calls. Which call it was is not known yet (call sites
/// store nothing): a trap is kept with a placeholder pc and id (status
/// `RAW_STOP`), which `finish_raw_stop` sets once the code, on its way out
/// (`Cold::Stop`), stored the call in `Ctx::call_h`/`call_site`.
pub(crate) fn raw_stopped(ctx: &mut Ctx, env: &mut RunEnv<'_>, stop: RawStop) {
    match stop {
        // A plain stop (how `bpf_tail_call` ends the program, once per tail
        // call) needs neither the helper's id nor the call's pc: those
        // only describe traps.
        // (`Ok(r0)` is no stop; the entry does not pass it.)
        Ok(Err(HelperAbort::Stop { r0 })) | Ok(Ok(r0)) => {
            ctx.status = status::OK;
            ctx.ret = r0;
        }
        Ok(Err(abort)) => match abort.into_outcome(Pc(0), HelperId(0)) {
            Ok(r0) => {
                ctx.status = status::OK;
                ctx.ret = r0;
            }
            Err(t) => {
                ctx.status = status::RAW_STOP;
                env.trap = Some(t);
            }
        },
        Err(payload) => {
            ctx.status = status::PANIC;
            env.panic = Some(payload);
        }
    }
}

/// After the code returned from a run that a direct entry's call stopped
/// with a trap (`raw_stopped`, status `RAW_STOP`): the trap's pc and
/// helper id, now that the code stored which call it was in
/// `Ctx::call_h`/`call_site`.
#[cold]
#[inline(never)]
fn finish_raw_stop(ctx: &mut Ctx, env: &mut RunEnv<'_>) {
    ctx.status = status::RUST_TRAP;
    if let Some(t) = &mut env.trap {
        name_call_site(
            t,
            env.pcs[ctx.call_site as u32 as usize],
            env.table[ctx.call_h as usize].0,
        );
    }
}

/// A direct entry's trap, stored without knowing where it was called
/// from: the call's pc, and the helper's id for a helper's own trap.
fn name_call_site(t: &mut Trap, pc: Pc, helper: u32) {
    t.pc = pc;
    if let TrapKind::Helper { id, .. } = &mut t.kind {
        *id = HelperId(helper);
    }
}

/// A helper call that did not return `r0`: how the program stops (the
/// status, and the trap or panic for `run` to report once the code has
/// returned).
#[cold]
#[inline(never)]
fn stopped(
    ctx: &mut Ctx,
    env: &mut RunEnv<'_>,
    result: std::thread::Result<HelperResult>,
    id: HelperId,
) -> memory::Ret2 {
    let pc = env.pcs[ctx.call_site as u32 as usize];
    match result {
        Ok(Ok(r0)) => return memory::Ret2 { r0, stop: 0 },
        Ok(Err(abort)) => match abort.into_outcome(pc, id) {
            Ok(r0) => {
                ctx.status = status::OK;
                ctx.ret = r0;
            }
            Err(t) => {
                ctx.status = status::RUST_TRAP;
                env.trap = Some(t);
            }
        },
        Err(payload) => {
            ctx.status = status::PANIC;
            env.panic = Some(payload);
        }
    }
    memory::Ret2 { r0: 0, stop: 1 }
}

/// `Jit::frame_mut` borrowing the field alone (the run path borrows other
/// fields meanwhile).
#[inline(always)]
fn frame_of(frame: &mut Option<Box<Frame>>) -> &mut Frame {
    frame.as_deref_mut().expect("a Jit's frame until its drop")
}

impl Jit {
    /// The frame (present until the drop).
    #[inline(always)]
    fn frame(&self) -> &Frame {
        self.frame.as_deref().expect("a Jit's frame until its drop")
    }

    /// See [`Jit::frame`].
    #[inline(always)]
    fn frame_mut(&mut self) -> &mut Frame {
        frame_of(&mut self.frame)
    }

    /// Configuration: budget, `lddw` resolver.
    pub fn builder<'r>() -> Builder<'r> {
        Builder::default()
    }

    /// Compiles `prog` with the default configuration.
    pub fn new(prog: &Program, helpers: &Helpers) -> Result<Jit, CompileError> {
        Builder::default().build(prog, helpers)
    }

    /// Compiles a verified program in unchecked mode with the default
    /// configuration (see [`Builder::build_verified`]).
    pub fn compile_verified(
        prog: &VerifiedProgram,
        helpers: &Helpers,
    ) -> Result<Jit, CompileError> {
        Builder::default().build_verified(prog, helpers)
    }

    /// Whether the code runs without memory checks (built from a
    /// [`VerifiedProgram`]).
    pub fn is_unchecked(&self) -> bool {
        self.unchecked.is_some()
    }

    /// Whether the code was built with constant blinding.
    pub fn is_blinded(&self) -> bool {
        self.blinded
    }

    /// The machine code.
    pub fn code(&self) -> &ExecutableCode {
        &self.code
    }

    /// The instruction budget (`None`: compiled without counting).
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Changes the budget of a program built with one; a program built
    /// without a budget has no counting code and ignores this.
    pub fn set_budget(&mut self, budget: u64) {
        if self.budget.is_some() {
            self.budget = Some(budget.min(i64::MAX as u64));
        }
    }

    /// Where typed runs with data of type `T` keep the
    /// [`RedirectRecord`] that unchecked code writes for a
    /// `bpf_redirect_map` it answers itself (see
    /// [`bpfkit_runtime::Imm64Resolver::redirect_map`]); runs over other
    /// data (and untyped runs) call the helper. The embedder's helpers
    /// must clear the record's `set` whenever they set a redirect, and the
    /// embedder takes the record after the run.
    pub fn set_redirect_record<T: Any>(&mut self, record: fn(&mut T) -> &mut RedirectRecord) {
        self.redirect_rec = Some(memory::TypedSlot::new(record));
    }

    /// `Ctx::redirect_off` for a typed run over `data`: 1 + the record's
    /// offset when [`Jit::set_redirect_record`] was given `data`'s type
    /// and the record lies inside `data`, else 0.
    #[inline]
    fn redirect_offset<T: Any>(record: Option<&memory::TypedSlot>, data: &mut T) -> u64 {
        let Some(f) = record.and_then(memory::TypedSlot::get::<fn(&mut T) -> &mut RedirectRecord>)
        else {
            return 0;
        };
        let base = data as *mut T as usize;
        let off = (f(data) as *mut RedirectRecord as usize).wrapping_sub(base);
        // The code writes the record through the data's pointer: it must
        // be inside `data` (the function could return one elsewhere).
        match off.checked_add(std::mem::size_of::<RedirectRecord>()) {
            Some(end) if end <= std::mem::size_of::<T>() => off as u64 + 1,
            _ => 0,
        }
    }

    /// Sets the CPU number that the following runs are on, as the code
    /// sees it (0 until set): unchecked code computes lookups in per-CPU
    /// arrays with it and returns it from `bpf_get_smp_processor_id` when
    /// the resolver allows (see [`bpfkit_runtime::Imm64Resolver`]), so an
    /// embedder whose helpers know the run's CPU (`bpfkit-helpers`'
    /// `RunState::cpu`) sets the same one before running. Returns `false`,
    /// leaving the CPU unchanged, for a CPU at or above the CPU count of a
    /// per-CPU array the code may look up inline (its value would lie
    /// outside the map's storage; the helper finds nothing there).
    pub fn set_cpu(&mut self, cpu: usize) -> bool {
        if cpu >= self.cpu_limit as usize {
            return false;
        }
        self.frame_mut().ctx.cpu = cpu as u64;
        true
    }

    /// The CPU set with [`Jit::set_cpu`].
    pub fn cpu(&self) -> usize {
        self.frame().ctx.cpu as usize
    }

    /// Guest address range `[start, end)` of the JIT's stack; `end` is `r10`
    /// on entry.
    pub fn stack_range(&self) -> (u64, u64) {
        let stack = &self.frame().stack;
        let start = stack.as_ptr() as u64;
        (start, start + 8 * stack.len() as u64)
    }

    /// Runs the program with `r1`.. = `args` (at most five are used) over
    /// `mem`; returns `r0` at the outermost `exit`.
    pub fn run(&mut self, mem: &mut Memory<'_>, args: &[u64]) -> Result<u64, Trap> {
        self.run_inner(mem, args, None)
    }

    /// Like [`Jit::run`], with per-run data that helpers reach with
    /// [`HelperEnv::data_mut`].
    pub fn run_with_data(
        &mut self,
        mem: &mut Memory<'_>,
        args: &[u64],
        data: &mut dyn Any,
    ) -> Result<u64, Trap> {
        self.run_inner(mem, args, Some(data))
    }

    /// Like [`Jit::run_with_data`] with data of a known type: helpers
    /// registered with [`Helpers::register_typed`] for `T` are called
    /// directly (no [`HelperEnv`], no downcast of the data), others as
    /// with [`Jit::run_with_data`].
    pub fn run_typed<T: Any>(
        &mut self,
        mem: &mut Memory<'_>,
        args: &[u64],
        data: &mut T,
    ) -> Result<u64, Trap> {
        self.run_repeat(mem, args, data, |_, _| false)
    }

    /// Runs the program several times in a row over the same memory,
    /// arguments and data, as [`Jit::run_typed`] would run it once each
    /// time: after each run that returned `r0`, `again(data, r0)` says
    /// whether to run again (it may reset per-run fields of `data`); a
    /// trap ends the series at once. Returns the last run's result. The
    /// per-run set-up that does not change between such runs is done once
    /// (the helper environment, the arguments, the region table while the
    /// memory's regions stay the same); the unchecked entry check is still
    /// made before every run (a helper of the previous run may have moved
    /// the packet).
    pub fn run_repeat<T: Any>(
        &mut self,
        mem: &mut Memory<'_>,
        args: &[u64],
        data: &mut T,
        mut again: impl FnMut(&mut T, u64) -> bool,
    ) -> Result<u64, Trap> {
        let redirect_off = Self::redirect_offset(self.redirect_rec.as_ref(), data);
        let cache = typed_cache::<T>(
            &mut self.typed_cache,
            &frame_of(&mut self.frame).typed_entries,
            self.tramp,
        );
        let (typed, direct) = (cache.fns.as_slice(), cache.direct.as_ptr() as u64);
        let r1 = args.first().copied().unwrap_or(0);
        let remaining = self.budget.unwrap_or(i64::MAX as u64) as i64;
        let frame = frame_of(&mut self.frame);
        // Native tail calls in this series: where the count is in `data`
        // (the code adds it to `raw.data`), and the table the entry puts
        // back. Nothing per run.
        let tail_off =
            (self.tail_table.as_deref()).and_then(|t| t.count_offset(data, frame.ctx.cpu));
        let ctx = &mut frame.ctx;
        ctx.tail_off = tail_off.map_or(0, |o| o as u64 + 1);
        ctx.redirect_off = redirect_off;
        ctx.head_direct = direct;
        Self::set_args(ctx, args);
        ctx.status = status::OK;
        let mut env = TypedEnv {
            base: run_env!(self, frame, mem, None),
            data: data as *mut T,
            typed,
        };
        ctx.direct = direct;
        let tramp: memory::TrampolineFn = memory::typed_trampoline::<T>;
        ctx.tramp = tramp as usize as u64;
        ctx.raw = RawCall {
            guest: memory::run_guest(&env.base),
            data: env.data.cast::<()>(),
            // What the direct entries compare with after each call: the
            // regions as the run starts with them (the loop below copies
            // them for the code when they differ from its table).
            version: mem.version(),
            engine: (ctx as *mut Ctx).cast::<()>(),
            on_regions: memory::raw_regions_hook::<T>,
            on_stop: memory::raw_stop_hook::<T>,
        };
        // Borrowed, not copied: the `EntryCheck` is a dozen words, copied
        // again at every series (twice per run with a tail call).
        let (unchecked, uses_regions) = (&self.unchecked, self.uses_regions);
        let (code, entry): (&ExecutableCode, _) = (&self.code, self.entry);
        ctx.env = &mut env as *mut TypedEnv<'_, T> as u64;
        // Between runs of the series only the run itself (its helpers) can
        // change the regions or the context's packet words (`again` gets
        // only `data`; `r1` is fixed): while the stamp and the words are
        // those the last passed check and region copy were made for, both
        // still hold, which one test says (`SeriesWords`); anything else
        // takes the full way (`series_entry`).
        let mut held = memory::SeriesWords::none();
        let r = loop {
            // The packet words moved under the same stamp (a helper of the
            // last run, `xdp_adjust_tail`/`_head`/`_meta`, rewrote them in
            // place, every run for some programs): only the packet half of
            // the check is made again, as `check_cached` would, against the
            // packet region's bounds `held` copied (the key is brought up
            // to date once, after the series).
            let moved_ok = match held.words(mem) {
                Some(w) => held.expects(w) || held.moved_within(w),
                None => false,
            };
            if !moved_ok {
                // `held` is written in place (a returned `SeriesWords`,
                // seven words, goes through memory).
                if let Some(kind) = series_entry(
                    unchecked,
                    &mut self.entry_ok,
                    uses_regions,
                    mem,
                    r1,
                    env.base.regions,
                    ctx,
                    &mut held,
                ) {
                    break Err(Trap::new(Pc(0), kind));
                }
            }
            // Only these change during a run that ends normally (a helper
            // may stop the program at any call depth); `status` is OK
            // whenever the loop goes on.
            ctx.remaining = remaining;
            ctx.depth = 0;
            // Re-derived each run, after `again` wrote through `data` (the
            // entry check only reads `mem`, which keeps `env.base.mem`
            // valid).
            env.data = &mut *data;
            ctx.raw.data = env.data.cast::<()>();
            memory::enter(code, entry, ctx);
            if ctx.status != status::OK {
                // After a native tail call, the target's tables say where
                // (`tail_trap`).
                let tail_key = ctx.tail_prog;
                if ctx.status == status::RAW_STOP && tail_key == 0 {
                    finish_raw_stop(ctx, &mut env.base);
                }
                let (trap, panic) = (env.base.trap.take(), env.base.panic.take());
                ctx.env = 0;
                held.store_into(&mut self.entry_ok);
                if tail_key != 0 {
                    return self.tail_trap(tail_key, trap, panic);
                }
                return self.trap(trap, panic);
            }
            let r0 = ctx.ret;
            if !again(data, r0) {
                break Ok(r0);
            }
        };
        ctx.env = 0;
        held.store_into(&mut self.entry_ok);
        r
    }

    /// `r1`-`r5` into the `Ctx`, each stored straight into its field (an
    /// array built on the stack and copied with wider loads would stall
    /// store forwarding).
    #[inline(always)]
    fn set_args(ctx: &mut Ctx, args: &[u64]) {
        for (k, r) in ctx.args.iter_mut().enumerate() {
            *r = args.get(k).copied().unwrap_or(0);
        }
    }

    fn run_inner(
        &mut self,
        mem: &mut Memory<'_>,
        args: &[u64],
        data: Option<&mut dyn Any>,
    ) -> Result<u64, Trap> {
        let r1 = args.first().copied().unwrap_or(0);
        if let Some(c) = &self.unchecked {
            if let Some(kind) = c.check_cached(&mut self.entry_ok, mem, r1) {
                return Err(Trap::new(Pc(0), kind));
            }
        }
        let frame = frame_of(&mut self.frame);
        let ctx = &mut frame.ctx;
        ctx.remaining = self.budget.unwrap_or(i64::MAX as u64) as i64;
        ctx.depth = 0;
        // Untyped runs take every tail call through the helper, and every
        // `bpf_redirect_map` (no data to record it in).
        ctx.tail_off = 0;
        ctx.redirect_off = 0;
        Self::set_args(ctx, args);
        ctx.status = status::OK;
        // Every helper through the dynamic trampoline.
        let tramp = self.tramp;
        let n = self.table.len();
        ctx.direct = self
            .untyped_direct
            .get_or_insert_with(|| vec![tramp; n].into_boxed_slice())
            .as_ptr() as u64;
        // What the entry of code compiled with a tail table puts back.
        ctx.head_direct = ctx.direct;
        let tramp: memory::TrampolineFn = memory::helper_trampoline;
        ctx.tramp = tramp as usize as u64;
        ctx.raw.engine = (ctx as *mut Ctx).cast::<()>();
        // Runs in a row over the same memory (`--repeat`) copy the regions
        // once: the table and the hot-region caches stay exact while the
        // version stamp is the same.
        if self.uses_regions && mem.version() != ctx.snap_version {
            snapshot(mem, &mut frame.regions, ctx);
        }
        let mut env = run_env!(self, frame, mem, data.map(|d| d as *mut dyn Any));
        ctx.env = &mut env as *mut RunEnv<'_> as u64;
        memory::enter(&self.code, self.entry, ctx);
        ctx.env = 0;
        if ctx.status == status::OK {
            return Ok(ctx.ret);
        }
        let (trap, panic) = (env.trap.take(), env.panic.take());
        self.trap(trap, panic)
    }

    /// How a run that did not reach its outermost `exit` ended.
    #[cold]
    #[inline(never)]
    fn trap(
        &self,
        trap: Option<Trap>,
        panic: Option<Box<dyn Any + Send + 'static>>,
    ) -> Result<u64, Trap> {
        let frame = self.frame();
        let tables = TrapTables {
            pcs: &frame.pcs,
            trap_insns: &self.trap_insns,
            sites: &self.sites,
            code_addr: self.code.addr(),
            budget: self.budget,
        };
        trap_with(&tables, &frame.ctx, trap, panic)
    }
}

/// The entry check and the region copy of a [`Jit::run_repeat`] run when
/// [`memory::SeriesWords`] could not say they hold (the series' first run,
/// changed regions, moved packet words): the check (cached by `entry_ok`),
/// the region table brought up to date, and what the next runs test.
// The run loop's state, passed apart so the loop keeps it in registers.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn series_entry(
    unchecked: &Option<EntryCheck>,
    entry_ok: &mut EntryKey,
    uses_regions: bool,
    mem: &Memory<'_>,
    r1: u64,
    regions: &mut Vec<RegionEntry>,
    ctx: &mut Ctx,
    held: &mut memory::SeriesWords,
) -> Option<TrapKind> {
    if let Some(c) = unchecked {
        if let Some(kind) = c.check_cached(entry_ok, mem, r1) {
            return Some(kind);
        }
    }
    // Runs in a row over the same memory copy the regions once: the table
    // and the hot-region caches stay exact while the version stamp is the
    // same (a helper that changes the regions refreshes them itself).
    if uses_regions && mem.version() != ctx.snap_version {
        snapshot(mem, regions, ctx);
    }
    *held = match unchecked {
        // The check passed for this stamp and `r1`, and depends on nothing
        // else (no packet words), or there is no check.
        None => memory::SeriesWords::zeros(mem.version()),
        Some(c) if c.packet.is_none() => memory::SeriesWords::zeros(mem.version()),
        // The words decide too: read raw when the key allows it, else
        // every run comes back here (`none`).
        Some(c) => memory::SeriesWords::of_key(entry_ok, r1, c.packet_region(mem)),
    };
    None
}

/// What turns a stopped run's status into its trap: the tables of the
/// program that was running (the entered one, or the target of a native
/// tail call).
struct TrapTables<'a> {
    pcs: &'a [Pc],
    trap_insns: &'a [(u32, Insn)],
    sites: &'a [(u32, u32)],
    code_addr: u64,
    budget: Option<u64>,
}

impl Jit {
    /// A run that a target entered by a native tail call (`key`,
    /// `Ctx::tail_prog`) ended without reaching `exit` (see
    /// [`Jit::trap`]): its trap, with the target's pcs and helper ids.
    #[cold]
    #[inline(never)]
    fn tail_trap(
        &self,
        key: u64,
        trap: Option<Trap>,
        panic: Option<Box<dyn Any + Send + 'static>>,
    ) -> Result<u64, Trap> {
        let target = (self.tail_table.as_deref())
            .and_then(|t| t.target(key))
            .expect("a target published in the code's table");
        let ctx = &self.frame().ctx;
        if ctx.status == status::RAW_STOP {
            // As `finish_raw_stop`, in the target's tables.
            let mut t = trap.expect("a direct entry stored a trap");
            name_call_site(
                &mut t,
                target.pcs[ctx.call_site as u32 as usize],
                target.helper_ids[ctx.call_h as usize],
            );
            return Err(t);
        }
        let tables = TrapTables {
            pcs: &target.pcs,
            trap_insns: &target.trap_insns,
            // Published targets are unchecked: no checked access, no budget.
            sites: &[],
            code_addr: 0,
            budget: None,
        };
        trap_with(&tables, ctx, trap, panic)
    }
}

/// See [`Jit::trap`].
fn trap_with(
    t: &TrapTables<'_>,
    ctx: &Ctx,
    trap: Option<Trap>,
    panic: Option<Box<dyn Any + Send + 'static>>,
) -> Result<u64, Trap> {
    let pc = |idx: u64| t.pcs[idx as usize];
    let insn = |idx: u64| {
        let i = t
            .trap_insns
            .binary_search_by_key(&(idx as u32), |&(i, _)| i)
            .expect("trap at a recorded instruction");
        t.trap_insns[i].1
    };
    let mut trap_idx = ctx.trap_idx;
    if ctx.status == status::MEM {
        // `trap_idx` is the faulting access's return address.
        let off = ctx.trap_idx.wrapping_sub(t.code_addr) as u32;
        let i = t
            .sites
            .binary_search_by_key(&off, |&(o, _)| o)
            .expect("memory fault at a known access");
        trap_idx = t.sites[i].1 as u64;
    }
    let kind = match ctx.status {
        status::OK => return Ok(ctx.ret),
        status::MEM => TrapKind::OutOfBounds {
            addr: ctx.fault_addr,
            size: (ctx.fault_info & 0xff) as usize,
            access: if ctx.fault_info >> 8 != 0 {
                Access::Write
            } else {
                Access::Read
            },
        },
        status::BUDGET => TrapKind::BudgetExhausted {
            budget: t.budget.unwrap_or(u64::MAX),
        },
        status::DEPTH => TrapKind::CallDepthExceeded {
            max: MAX_CALL_FRAMES,
        },
        status::UNKNOWN_HELPER => match insn(ctx.trap_idx) {
            Insn::Call(id) => TrapKind::UnknownHelper { id },
            _ => unreachable!("unknown-helper trap at a call"),
        },
        status::FELL_OFF => TrapKind::FellOffEnd,
        status::KFUNC => TrapKind::Unsupported { what: "kfunc call" },
        status::UNRESOLVED => match insn(ctx.trap_idx) {
            Insn::LoadImm64 { imm, .. } => TrapKind::UnresolvedImm64 { imm },
            _ => unreachable!("unresolved trap at an lddw"),
        },
        status::NO_PACKET => TrapKind::NoPacket,
        status::BAD_CALLBACK => TrapKind::BadCallTarget {
            target: ctx.fault_addr,
        },
        status::RUST_TRAP => {
            return Err(trap.expect("trampoline stored a trap"));
        }
        status::PANIC => std::panic::resume_unwind(panic.expect("trampoline stored a panic")),
        s => unreachable!("status {s}"),
    };
    Err(Trap::new(pc(trap_idx), kind))
}
