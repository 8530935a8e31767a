//! The checker: depth-first exploration of every path with state pruning,
//! and the per-instruction checks.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bpfkit_abi::{MapDef, MapType, ProgType};
use bpfkit_isa::disasm::format_llvm;
use bpfkit_isa::{encode, AluOp, AtomicOp, Cond, Imm64, Insn, Pc, Program, Reg, Size, Src, Width};

use crate::cfg::{self, Cfg};
use crate::ctx::{self, CtxField};
use crate::domain::scalar::{branch_taken, refine, Scalar};
use crate::explain;
use crate::helpers::{self, Arg, Ret};
use crate::observe::Observed;
use crate::precision::{self, Marks, Step, FRAMES, LINKED_SLOT};
use crate::state::{Frame, PtrKind, RegState, RegType, Slot, SlotByte, State, STACK_SIZE};
use crate::VerifierError;

/// The kernel's limit on processed instructions (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const INSN_LIMIT: u64 = 1_000_000;
/// Deepest call chain (`MAX_CALL_FRAMES`).
const MAX_FRAMES: usize = 8;
/// Largest variable offset of a pointer (`BPF_MAX_VAR_OFF`).
const MAX_VAR_OFF: i64 = 1 << 29;
/// Largest packet offset (`MAX_PACKET_OFF`).
const MAX_PACKET_OFF: i64 = 0xffff;

/// How to verify.
#[derive(Clone, Debug)]
pub struct Options {
    /// Unprivileged mode: pointer leaks and pointer comparisons refused,
    /// uninitialised stack reads refused.
    pub unprivileged: bool,
    /// 0: no log; 1: instructions and branch states; 2: also the state
    /// after every instruction.
    pub log_level: u8,
    /// Processed-instruction limit.
    pub insn_limit: u64,
    /// Source lines by instruction slot (from BTF line info), ascending.
    pub line_info: Vec<(usize, String)>,
    /// Record the registers at every visit of every instruction
    /// ([`Report::observed`]; costly, for soundness checks).
    pub record_states: bool,
    /// Prune paths whose state an explored one includes (off: explore
    /// every path, for soundness checks; see [`crate::observe`]).
    pub prune: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            unprivileged: false,
            log_level: 0,
            insn_limit: INSN_LIMIT,
            line_info: Vec::new(),
            record_states: false,
            prune: true,
        }
    }
}

/// The verdict.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Every path is safe.
    Accepted,
    /// Some path is not (or could not be shown safe).
    Rejected,
}

/// The outcome of a verification.
#[derive(Clone, Debug)]
pub struct Report {
    /// Accepted or rejected.
    pub verdict: Verdict,
    /// Why it was rejected.
    pub error: Option<VerifierError>,
    /// Instructions processed (as the kernel counts them).
    pub insns_processed: u64,
    /// States remembered for pruning.
    pub states: u64,
    /// Most states remembered at once.
    pub peak_states: u64,
    /// Most states remembered at one instruction.
    pub max_states_per_insn: u64,
    /// Wall time.
    pub time: Duration,
    /// The kernel-style log (empty at log level 0).
    pub log: String,
    /// With [`Options::record_states`]: the registers at every visit.
    pub observed: Option<Observed>,
}

/// Verifies `prog` as a program of type `prog_type` whose map references
/// (`Imm64::MapIdx`/`MapIdxValue`) index `maps`.
pub fn verify(prog: &Program, prog_type: ProgType, maps: &[MapDef], opts: &Options) -> Report {
    let start = Instant::now();
    let mut env = Env {
        slots: slot_table(prog),
        cfg: Cfg {
            subprogs: vec![0],
            prune_point: Vec::new(),
            live_in: Vec::new(),
            slot_live_in: Vec::new(),
        },
        t: prog_type,
        maps: maps.to_vec(),
        opts,
        next_id: 0,
        visited: Vec::new(),
        by_pc: vec![Vec::new(); prog.slot_count()],
        live_states: 0,
        processed: 0,
        jmps: 0,
        last_jmps: 0,
        last_insns: 0,
        peak: 0,
        max_per_insn: 0,
        log: String::new(),
        depth: Vec::new(),
        demand: Marks::default(),
        step_slot: None,
        step_linked: Vec::new(),
        step_reads: Marks::default(),
        step_writes: Marks::default(),
        observed: opts.record_states.then(|| Observed::new(prog.slot_count())),
        alu_masks: vec![None; prog.slot_count()],
        exact_scalars: false,
    };
    let result = no_calls(prog, opts.unprivileged)
        .and_then(|()| cfg::build(prog))
        .and_then(|c| {
            if opts.unprivileged {
                no_back_edges(prog)?;
            }
            env.depth = vec![0; c.subprogs.len()];
            env.cfg = c;
            env.run()
        });
    let error = result.err().map(|mut e| {
        env.describe(&mut e);
        if opts.log_level > 0 {
            if !env.log.is_empty() && !env.log.ends_with('\n') {
                env.log.push('\n');
            }
            let _ = writeln!(env.log, "{}", e.message);
        }
        e
    });
    if opts.log_level > 0 {
        let _ = writeln!(
            env.log,
            "processed {} insns (limit {}) max_states_per_insn {} total_states {} peak_states {}",
            env.processed,
            opts.insn_limit,
            env.max_per_insn,
            env.visited.len(),
            env.peak
        );
    }
    Report {
        verdict: if error.is_some() {
            Verdict::Rejected
        } else {
            Verdict::Accepted
        },
        error,
        insns_processed: env.processed,
        states: env.visited.len() as u64,
        peak_states: env.peak,
        max_states_per_insn: env.max_per_insn,
        time: start.elapsed(),
        log: env.log,
        observed: env.observed,
    }
}

/// A loader without `CAP_BPF` may not call other BPF functions or kernel
/// functions, nor take a function's address (the kernel checks this while
/// it collects subprograms, before anything else).
fn no_calls(prog: &Program, unprivileged: bool) -> R<()> {
    if !unprivileged {
        return Ok(());
    }
    for (pc, insn) in prog.iter() {
        if let Insn::CallLocal(_)
        | Insn::CallKfunc { .. }
        | Insn::LoadImm64 {
            imm: Imm64::Func(_),
            ..
        } = insn
        {
            return err(
                pc.0,
                "loading/calling other bpf or kernel functions are allowed for CAP_BPF and CAP_SYS_ADMIN",
            );
        }
    }
    Ok(())
}

/// Unprivileged programs may not loop (bounded loops need `CAP_BPF`).
fn no_back_edges(prog: &Program) -> R<()> {
    for (pc, insn) in prog.iter() {
        if let Insn::Ja { .. } | Insn::Jmp { .. } = insn {
            if let Some(t) = insn.branch_target(pc) {
                if t.0 <= pc.0 {
                    return err(pc.0, format!("back-edge from insn {} to {}", pc.0, t.0));
                }
            }
        }
    }
    Ok(())
}

fn slot_table(prog: &Program) -> Vec<Option<Insn>> {
    let mut v = vec![None; prog.slot_count()];
    for (pc, insn) in prog.iter() {
        v[pc.0] = Some(*insn);
    }
    v
}

struct Visited {
    state: State,
    /// [`State::fingerprint`], to find equal states quickly.
    fp: u64,
    /// The instructions from the parent state to this one.
    hist: Vec<Step>,
    /// Registers and stack slots (whole) written between the parent state
    /// and this one.
    written: Marks,
    /// Registers and stack slots some path from this state read before
    /// writing them (the kernel's `REG_LIVE_READ`): once the state is
    /// complete, only those need comparing.
    read: Marks,
    /// Live paths below this state; 0 when its exploration is complete.
    branches: u32,
    parent: Option<usize>,
    hits: u32,
    misses: u32,
}

struct Path {
    state: State,
    pc: usize,
    last: Option<usize>,
    from: Option<usize>,
    /// The instructions processed since `last`.
    hist: Vec<Step>,
    /// Registers and stack slots (whole) written since `last`.
    written: Marks,
}

/// What [`Env::visit`] found at a prune point.
enum Visit {
    /// An explored state includes this one; its precise scalars and the
    /// stack slots its paths read.
    Pruned(Marks, Marks),
    /// Recorded as a new explored state.
    New(usize),
    /// Neither.
    Continue,
}

struct Env<'a> {
    slots: Vec<Option<Insn>>,
    cfg: Cfg,
    t: ProgType,
    maps: Vec<MapDef>,
    opts: &'a Options,
    next_id: u32,
    visited: Vec<Visited>,
    by_pc: Vec<Vec<usize>>,
    live_states: u64,
    processed: u64,
    jmps: u64,
    last_jmps: u64,
    last_insns: u64,
    peak: u64,
    max_per_insn: u64,
    log: String,
    /// Deepest stack use of each subprogram, bytes.
    depth: Vec<i64>,
    /// Values the current instruction's checks depended on, to be marked
    /// precise along the path (see [`precision`]).
    demand: Marks,
    /// The stack slot the current instruction spilled to or filled from.
    step_slot: Option<(u8, u8)>,
    /// The scalars linked to the current conditional jump's operands.
    step_linked: Vec<(u8, u8)>,
    /// Stack slots the current instruction read.
    step_reads: Marks,
    /// Stack slots the current instruction wrote whole.
    step_writes: Marks,
    /// Abstract states per instruction, when `Options::record_states`.
    observed: Option<Observed>,
    /// Unprivileged: how each `+=`/`-=` with a register operand was
    /// masked against Spectre v1, `(state, limit)`, as the kernel records
    /// it per instruction (`alu_state`, `alu_limit`): one mask must suit
    /// every path, or the kernel refuses the program.
    alu_masks: Vec<Option<(u8, u32)>>,
    /// Unprivileged, once pointer arithmetic with an unknown offset has
    /// been masked: prune only on equal scalars (the kernel's
    /// `explore_alu_limits`), so that each path's mask is checked.
    exact_scalars: bool,
}

/// Why unprivileged pointer arithmetic cannot be masked against Spectre v1
/// (the kernel's `sanitize_err` reasons).
enum Unmaskable {
    Type,
    Limit,
}

/// Parts of an `alu_masks` state (the values only need to differ).
const MASK_NEG: u8 = 1;
const MASK_IMM: u8 = 2;
const MASK_PTR_SRC: u8 = 4;
const MASK_PTR_DST: u8 = 8;
const MASK_SCALAR: u8 = 16;
const NO_ROOT: &str = "pointer arithmetic with it prohibited for !root";

/// What an instruction does to control flow.
enum Flow {
    Next(usize),
    /// Fall-through and taken states (either may be impossible).
    Branch(Option<State>, Option<(State, usize)>),
    Exit,
}

type R<T> = Result<T, VerifierError>;

fn err<T>(pc: usize, msg: impl Into<String>) -> R<T> {
    Err(VerifierError::new(pc, msg.into()))
}

fn size_bytes(s: Size) -> i64 {
    match s {
        Size::B => 1,
        Size::H => 2,
        Size::W => 4,
        Size::DW => 8,
    }
}

fn type_name(r: &RegState) -> &'static str {
    match r.ty {
        RegType::NotInit => "?",
        RegType::Scalar => "scalar",
        RegType::Ptr(k) => k.name(),
    }
}

impl<'a> Env<'a> {
    fn fresh_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn run(&mut self) -> R<()> {
        let mut main = Frame::new(0, 0, 0);
        main.regs[1] = RegState::ptr(PtrKind::Ctx);
        let mut work = vec![Path {
            state: State {
                frames: vec![main],
                refs: Vec::new(),
            },
            pc: 0,
            last: None,
            from: None,
            hist: Vec::new(),
            written: Marks::default(),
        }];
        while let Some(mut path) = work.pop() {
            if self.opts.log_level > 0 {
                if let Some(from) = path.from {
                    let _ = writeln!(
                        self.log,
                        "from {} to {}: {}",
                        from,
                        path.pc,
                        path.state.cur()
                    );
                }
            }
            loop {
                let pc = path.pc;
                self.processed += 1;
                if self.processed > self.opts.insn_limit {
                    return err(
                        pc,
                        format!(
                            "BPF program is too large. Processed {} insn",
                            self.processed
                        ),
                    );
                }
                if self.opts.prune && self.cfg.prune_point.get(pc).copied().unwrap_or(false) {
                    let visit = match self.visit(&mut path) {
                        Ok(v) => v,
                        // An infinite loop: the path shows how it got there.
                        Err(e) => {
                            let insn = self.slots.get(pc).copied().flatten();
                            let insn = insn.unwrap_or(Insn::Exit);
                            return Err(self.explain(e, &path, &insn));
                        }
                    };
                    match visit {
                        Visit::Pruned(marks, reads) => {
                            if self.opts.log_level > 0 {
                                let _ = writeln!(self.log, "{pc}: safe");
                            }
                            // What made the explored state safe must hold
                            // on this path's states too, which are still
                            // being explored (`propagate_precision`).
                            let fr = path.state.frames.len() - 1;
                            self.backtrack(&path.hist, path.last, marks, fr);
                            // And so must the stack it read.
                            self.mark_read(&path.written, path.last, reads);
                            self.finish(path.last);
                            break;
                        }
                        Visit::New(id) => path.last = Some(id),
                        Visit::Continue => {}
                    }
                }
                let Some(insn) = self.slots.get(pc).copied().flatten() else {
                    return err(pc, format!("invalid insn idx {pc}"));
                };
                if self.opts.log_level > 0 {
                    self.log_insn(pc, &insn);
                }
                if let Some(o) = self.observed.as_mut() {
                    o.record(pc, &path.state);
                }
                // The kernel counts every instruction of the jump classes,
                // calls and exits included.
                if matches!(
                    insn,
                    Insn::Jmp { .. }
                        | Insn::Ja { .. }
                        | Insn::Call(_)
                        | Insn::CallLocal(_)
                        | Insn::CallKfunc { .. }
                        | Insn::Callx(_)
                        | Insn::Exit
                ) {
                    self.jmps += 1;
                }
                let fr = path.state.frames.len() - 1;
                self.demand = Marks::default();
                self.step_slot = None;
                self.step_linked.clear();
                self.step_reads = Marks::default();
                self.step_writes = Marks::default();
                // After a two-way conditional jump `path.state` may be left
                // empty (no frame): the branches carry the state on, see
                // `cond_jump`; only a state log reads it before then.
                let flow = match self.step(&mut path.state, pc, &insn) {
                    Ok(f) => f,
                    Err(e) => return Err(self.explain(e, &path, &insn)),
                };
                if let Flow::Exit = flow {
                    if path.state.frames.len() == 1 {
                        if let Err(e) = self.check_exit(&path.state, pc) {
                            return Err(self.explain(e, &path, &insn));
                        }
                    }
                }
                if !self.demand.is_empty() {
                    let marks = std::mem::take(&mut self.demand);
                    self.backtrack(&path.hist, path.last, marks, fr);
                }
                // Registers: what the instruction reads and writes in its
                // frame; a call starts a frame whose registers and slots
                // hold nothing older; a return redefines the caller's r0-r5.
                let (uses, defs) = cfg::uses_defs(&insn);
                if fr < FRAMES {
                    self.step_reads.regs[fr] |= uses;
                    match insn {
                        Insn::CallLocal(_) => {
                            if let Some(f) = fr.checked_add(1).filter(|&f| f < FRAMES) {
                                self.step_writes.regs[f] = u16::MAX;
                                self.step_writes.slots[f] = u64::MAX;
                            }
                        }
                        // A callback's caller keeps its registers.
                        Insn::Exit if fr > 0 && self.in_callback(&path.state, fr) => {}
                        Insn::Exit if fr > 0 => self.step_writes.regs[fr - 1] |= 0b11_1111,
                        Insn::Call(id) if calls_callback(id.0) => {
                            self.step_writes.regs[fr] |= defs;
                            if let Some(f) = fr.checked_add(1).filter(|&f| f < FRAMES) {
                                self.step_writes.regs[f] = u16::MAX;
                                self.step_writes.slots[f] = u64::MAX;
                            }
                        }
                        _ => self.step_writes.regs[fr] |= defs,
                    }
                }
                if !self.step_reads.is_empty() {
                    let reads = self.step_reads;
                    self.mark_read(&path.written, path.last, reads);
                }
                path.written.or(&self.step_writes);
                let callback_exit =
                    matches!(insn, Insn::Exit) && fr > 0 && self.in_callback(&path.state, fr);
                path.hist.push(Step {
                    pc: pc as u32,
                    slot: self.step_slot.take(),
                    linked: std::mem::take(&mut self.step_linked),
                    callback: callback_exit,
                });
                if self.opts.log_level > 1 {
                    let _ = writeln!(self.log, "  ; {}", path.state.cur());
                } else if self.opts.log_level > 0 {
                    self.log.push('\n');
                }
                match flow {
                    Flow::Next(n) => path.pc = n,
                    Flow::Branch(fall, taken) => match (fall, taken) {
                        (Some(f), Some((t, target))) => {
                            if let Some(l) = path.last {
                                self.visited[l].branches += 1;
                            }
                            let mut hist = path.hist.clone();
                            if let (Insn::Call(id), Some(last)) = (insn, hist.last_mut()) {
                                // The taken side of a callback-calling
                                // helper is the callback's entry.
                                last.callback = calls_callback(id.0);
                            }
                            work.push(Path {
                                state: t,
                                pc: target,
                                last: path.last,
                                from: Some(pc),
                                hist,
                                written: path.written,
                            });
                            path.state = f;
                            path.pc = pc + 1;
                        }
                        (Some(f), None) => {
                            path.state = f;
                            path.pc = pc + 1;
                        }
                        (None, Some((t, target))) => {
                            path.state = t;
                            path.pc = target;
                        }
                        (None, None) => {
                            self.finish(path.last);
                            break;
                        }
                    },
                    Flow::Exit => {
                        if path.state.frames.len() == 1 {
                            self.finish(path.last);
                            break;
                        }
                        if callback_exit {
                            path.pc = self.return_from_callback(&mut path.state);
                        } else {
                            path.pc = self.return_from_callee(&mut path.state, pc)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn log_insn(&mut self, pc: usize, insn: &Insn) {
        let (raw, _) = encode(insn);
        let _ = write!(
            self.log,
            "{pc}: ({:02x}) {}",
            raw[0].code,
            format_llvm(insn)
        );
    }

    /// Looks for an explored state at `path.pc` that includes the current
    /// one, else records the current one (spaced out).
    fn visit(&mut self, path: &mut Path) -> R<Visit> {
        let uninit = !self.opts.unprivileged;
        // Unprivileged, every scalar is precise, as in the kernel.
        let precision = !self.opts.unprivileged;
        // Registers that matter: live ones in the current frame; in a
        // caller, the callee-saved ones live after its call returns.
        let frames = &path.state.frames;
        let live: Vec<u16> = (0..frames.len())
            .map(|i| match frames.get(i + 1) {
                None => self.cfg.live_in[path.pc],
                // A callback returns to its helper call, which reads the
                // caller's r1-r5 again.
                Some(callee) if self.in_callback(&path.state, i + 1) => self
                    .cfg
                    .live_in
                    .get(callee.callsite)
                    .copied()
                    .unwrap_or(u16::MAX),
                Some(callee) => {
                    let ret = callee.callsite + 1;
                    self.cfg.live_in.get(ret).copied().unwrap_or(u16::MAX) & 0b111_1100_0000
                }
            })
            .collect();
        // Stack slots that matter: in the current frame, those some path
        // may read before overwriting; in callers, all (the callee may
        // read them through pointers).
        let static_slots: Vec<u64> = (0..frames.len())
            .map(|i| {
                if i + 1 == frames.len() {
                    self.cfg.slot_live_in[path.pc]
                } else {
                    u64::MAX
                }
            })
            .collect();
        let mut slots = static_slots.clone();
        let mut regs = live.clone();
        // As the kernel, remember a new state only every few jumps and
        // instructions, and more rarely while a loop is being unrolled
        // here (its iterations differ and rarely prune one another).
        // At a callback-calling helper, always (the kernel forces a
        // checkpoint there): the callback's iterations converge on them.
        let callsite =
            matches!(self.slots.get(path.pc), Some(Some(Insn::Call(id))) if calls_callback(id.0));
        let mut add =
            callsite || (self.jmps - self.last_jmps >= 2 && self.processed - self.last_insns >= 8);
        let mut evict = Vec::new();
        let mut cur_fp = None;
        // Newest first, as the kernel's list.
        for (k, &id) in self.by_pc[path.pc].iter().enumerate().rev() {
            let v = &mut self.visited[id];
            if v.branches == 0 {
                // Complete: its read marks are final.
                for (f, m) in slots.iter_mut().enumerate() {
                    *m = static_slots[f] & v.read.slots.get(f).copied().unwrap_or(u64::MAX);
                }
                for (f, m) in regs.iter_mut().enumerate() {
                    *m = live[f] & v.read.regs.get(f).copied().unwrap_or(u16::MAX);
                }
                if v.state
                    .includes_live(&path.state, uninit, &regs, &slots, precision)
                    && (!self.exact_scalars || scalars_equal(&v.state, &path.state, &regs, &slots))
                {
                    v.hits += 1;
                    return Ok(Visit::Pruned(precise_marks(&v.state, &live), v.read));
                }
            } else if callsite {
                // The callback came back to its helper call: if an
                // earlier visit, still being explored, covers this one by
                // ranges (every register and slot, imprecise scalars
                // too), iterating further finds nothing new
                // (`RANGE_WITHIN`). Not an infinite loop otherwise: the
                // helper bounds the iterations.
                let all_regs = vec![u16::MAX; path.state.frames.len()];
                let all_slots = vec![u64::MAX; path.state.frames.len()];
                if v.state
                    .includes_live(&path.state, uninit, &all_regs, &all_slots, false)
                {
                    v.hits += 1;
                    return Ok(Visit::Pruned(precise_marks(&v.state, &live), v.read));
                }
            } else {
                if *cur_fp.get_or_insert_with(|| path.state.fingerprint()) == v.fp
                    && v.state == path.state
                {
                    return err(
                        path.pc,
                        format!("infinite loop detected at insn {}", path.pc),
                    );
                }
                if !callsite
                    && self.jmps - self.last_jmps < 20
                    && self.processed - self.last_insns < 100
                {
                    add = false;
                }
            }
            // A state that rarely prunes anything stops being compared
            // (pruning less is always sound); misses count only when a new
            // state will be kept, so that a long loop does not push out
            // the states of its first iterations.
            if add {
                v.misses += 1;
            }
            if v.misses > v.hits * 3 + 3 {
                evict.push(k);
            }
        }
        // (Collected from the highest index down.)
        for &k in &evict {
            let id = self.by_pc[path.pc].remove(k);
            self.live_states -= 1;
            // An incomplete state is still an ancestor of live paths.
            if self.visited[id].branches == 0 {
                self.visited[id].state = State {
                    frames: Vec::new(),
                    refs: Vec::new(),
                };
                self.visited[id].hist = Vec::new();
            }
        }
        if !add {
            return Ok(Visit::Continue);
        }
        self.last_jmps = self.jmps;
        self.last_insns = self.processed;
        let id = self.visited.len();
        self.visited.push(Visited {
            fp: path.state.fingerprint(),
            state: path.state.clone(),
            hist: std::mem::take(&mut path.hist),
            written: std::mem::take(&mut path.written),
            read: Marks::default(),
            branches: 1,
            parent: path.last,
            hits: 0,
            misses: 0,
        });
        self.by_pc[path.pc].push(id);
        self.max_per_insn = self.max_per_insn.max(self.by_pc[path.pc].len() as u64);
        self.live_states += 1;
        self.peak = self.peak.max(self.live_states);
        Ok(Visit::New(id))
    }

    /// Marks precise what `marks` names after the last instruction of
    /// `hist` (frame `fr`), and everything it was computed from, back along
    /// the chain of explored states from `last` (`__mark_chain_precision`).
    fn backtrack(&mut self, hist: &[Step], last: Option<usize>, mut marks: Marks, mut fr: usize) {
        if self.opts.unprivileged || marks.is_empty() {
            return;
        }
        if !self.back_steps(hist, &mut marks, &mut fr) {
            return self.all_precise(last);
        }
        let mut at = last;
        while let Some(id) = at {
            // (`back_steps` stops as soon as nothing is left to follow,
            // possibly in another frame than the state's.)
            if marks.is_empty() {
                return;
            }
            let state = &mut self.visited[id].state;
            if state.frames.len() != fr + 1 {
                return self.all_precise(Some(id));
            }
            for (f, frame) in state.frames.iter_mut().enumerate() {
                // (Over the set bits only.)
                let mut bits = marks.regs.get(f).copied().unwrap_or(0) & 0x7ff;
                while bits != 0 {
                    let r = bits.trailing_zeros() as u8;
                    bits &= bits - 1;
                    let reg = &mut frame.regs[r as usize];
                    // A register already precise here had its own sources
                    // marked when it became so.
                    if !reg.is_scalar() || reg.precise {
                        marks.regs[f] &= !(1 << r);
                    } else {
                        reg.precise = true;
                    }
                }
                let mut bits = marks.slots.get(f).copied().unwrap_or(0);
                while bits != 0 {
                    let s = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    match frame.stack.get_mut(s).and_then(|x| x.spill.as_mut()) {
                        Some(reg) if reg.is_scalar() && !reg.precise => reg.precise = true,
                        _ => marks.slots[f] &= !(1 << s),
                    }
                }
            }
            if marks.is_empty() {
                return;
            }
            let v = &self.visited[id];
            let parent = v.parent;
            let hist = std::mem::take(&mut self.visited[id].hist);
            let ok = self.back_steps(&hist, &mut marks, &mut fr);
            self.visited[id].hist = hist;
            if !ok {
                return self.all_precise(parent);
            }
            at = parent;
        }
    }

    /// Records that the current path read the stack slots `mask` of frame
    /// `f`: each state up the chain from `last` needs them, up to the one
    /// after which the path wrote them whole (`mark_reg_read`).
    fn mark_read(&mut self, written: &Marks, last: Option<usize>, reads: Marks) {
        let mut m = reads.minus(written);
        let mut at = last;
        while let Some(id) = at {
            if m.is_empty() {
                return;
            }
            let v = &mut self.visited[id];
            // Frames the state does not have were made after it.
            m.keep_frames(v.state.frames.len());
            // Already marked: so are the states above it.
            let new = m.minus(&v.read);
            v.read.or(&new);
            m = new.minus(&v.written);
            at = v.parent;
        }
    }

    /// [`precision::back_step`] over `hist`, last instruction first.
    fn back_steps(&self, hist: &[Step], marks: &mut Marks, fr: &mut usize) -> bool {
        for step in hist.iter().rev() {
            let Some(insn) = self.slots.get(step.pc as usize).copied().flatten() else {
                return false;
            };
            if !precision::back_step(&insn, step, marks, fr) {
                return false;
            }
            if marks.is_empty() {
                break;
            }
        }
        true
    }

    /// Gives up following values: every scalar of the states from `from`
    /// up the chain becomes precise (`mark_all_scalars_precise`).
    fn all_precise(&mut self, from: Option<usize>) {
        let mut at = from;
        while let Some(id) = at {
            self.visited[id].state.for_each_reg(|r| {
                if r.is_scalar() {
                    r.precise = true;
                }
            });
            at = self.visited[id].parent;
        }
    }

    /// The current frame's index.
    fn frame_no(st: &State) -> usize {
        st.frames.len() - 1
    }

    /// A path ended: its ancestors lose one live branch.
    fn finish(&mut self, last: Option<usize>) {
        let mut cur = last;
        while let Some(id) = cur {
            let v = &mut self.visited[id];
            v.branches -= 1;
            if v.branches > 0 {
                break;
            }
            cur = v.parent;
        }
    }

    // ---------------------------------------------------------------
    // Registers

    fn read(&self, st: &State, r: Reg, pc: usize) -> R<RegState> {
        let v = st.cur().regs[r.index()];
        if v.ty == RegType::NotInit {
            return err(pc, format!("R{} !read_ok", r.num()));
        }
        Ok(v)
    }

    fn check_dst(&self, r: Reg, pc: usize) -> R<()> {
        if r == Reg::R10 {
            return err(pc, "frame pointer is read only");
        }
        Ok(())
    }

    fn set(&self, st: &mut State, r: Reg, v: RegState) {
        st.cur_mut().regs[r.index()] = v;
    }

    fn leaks(&self) -> bool {
        self.opts.unprivileged
    }

    // ---------------------------------------------------------------
    // One instruction

    fn step(&mut self, st: &mut State, pc: usize, insn: &Insn) -> R<Flow> {
        let next = pc + insn.slots();
        match *insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                self.alu(st, pc, width, op, dst, src)?;
                Ok(Flow::Next(next))
            }
            Insn::Neg { width, dst } => {
                let d = self.read(st, dst, pc)?;
                self.check_dst(dst, pc)?;
                if !d.is_scalar() {
                    return self.ptr_unknown_or(
                        st,
                        dst,
                        pc,
                        next,
                        "R{} pointer arithmetic prohibited",
                    );
                }
                self.set(st, dst, RegState::scalar(d.var.neg(width)));
                Ok(Flow::Next(next))
            }
            Insn::Endian { order, bits, dst } => {
                let d = self.read(st, dst, pc)?;
                self.check_dst(dst, pc)?;
                if !d.is_scalar() {
                    return self.ptr_unknown_or(
                        st,
                        dst,
                        pc,
                        next,
                        "R{} pointer arithmetic prohibited",
                    );
                }
                let n = match bits {
                    bpfkit_isa::SwapBits::B16 => 2,
                    bpfkit_isa::SwapBits::B32 => 4,
                    bpfkit_isa::SwapBits::B64 => 8,
                };
                let v = match order {
                    bpfkit_isa::ByteOrder::ToLe => d.var.cast(n),
                    _ => d.var.swap_bytes(n),
                };
                self.set(st, dst, RegState::scalar(v));
                Ok(Flow::Next(next))
            }
            Insn::LoadImm64 { dst, imm } => {
                self.check_dst(dst, pc)?;
                let v = match imm {
                    Imm64::Value(v) => RegState::scalar(Scalar::constant(v)),
                    Imm64::MapIdx(i) => {
                        let map = self.map_index(i, pc)?;
                        RegState::ptr(PtrKind::ConstMap { map })
                    }
                    Imm64::MapIdxValue { idx, off } => {
                        let map = self.map_index(idx, pc)?;
                        let vs = self.maps[map as usize].value_size;
                        if off >= vs {
                            return err(
                                pc,
                                format!(
                                    "invalid access to map value pointer, value_size={vs} off={off}"
                                ),
                            );
                        }
                        let mut r = RegState::ptr(PtrKind::MapValue { map });
                        r.off = i64::from(off);
                        r
                    }
                    Imm64::MapFd(_) | Imm64::MapValue { .. } => {
                        return err(
                            pc,
                            "not supported yet: map fd references (the verifier needs map indexes from the loader)",
                        )
                    }
                    Imm64::Func(_) => {
                        let t = insn.branch_target(Pc(pc)).map_or(0, |p| p.0);
                        RegState::ptr(PtrKind::Func { pc: t as u32 })
                    }
                    Imm64::BtfId { .. } => {
                        return err(pc, "not supported yet: BTF id references (ld_imm64 src 3)")
                    }
                };
                self.set(st, dst, v);
                Ok(Flow::Next(next))
            }
            Insn::Load {
                size,
                sign_extend,
                dst,
                src,
                off,
            } => {
                let base = self.read(st, src, pc)?;
                self.check_dst(dst, pc)?;
                let n = size_bytes(size);
                let mut v = self.mem_access(st, pc, src, base, i64::from(off), n, Access::Read)?;
                if v.is_scalar() {
                    if sign_extend && n < 8 {
                        v = RegState::scalar(v.var.sign_extend(n as u32 * 8));
                    } else if n < 8 {
                        v.var = v.var.cast(n as u32);
                    }
                }
                self.set(st, dst, v);
                Ok(Flow::Next(next))
            }
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => {
                let base = self.read(st, dst, pc)?;
                let n = size_bytes(size);
                let val = match src {
                    Src::Reg(r) => {
                        let mut v = self.read(st, r, pc)?;
                        // A scalar spilled whole at an 8-aligned stack
                        // offset stays linked to its register, so a later
                        // bound on one applies to the other (the kernel's
                        // `assign_scalar_id_before_mov` on a spill).
                        let aligned = matches!(base.kind(), Some(PtrKind::Stack { .. }))
                            && base
                                .var
                                .const_value()
                                .is_some_and(|c| (base.off + c as i64 + i64::from(off)) % 8 == 0);
                        let fits = n == 8 || v.var.umax() <= u64::MAX >> (64 - 8 * n);
                        if aligned
                            && fits
                            && !self.opts.unprivileged
                            && v.is_scalar()
                            && !v.var.is_const()
                            && v.id == 0
                        {
                            v.id = self.fresh_id();
                            st.cur_mut().regs[r.index()].id = v.id;
                        }
                        Stored::Reg(r, v)
                    }
                    // Stores of an immediate into the context are checked
                    // like register stores (the kernel has allowed them since 6.3).
                    Src::Imm(i) => Stored::Imm(i64::from(i) as u64),
                };
                self.mem_access(st, pc, dst, base, i64::from(off), n, Access::Write(val))?;
                Ok(Flow::Next(next))
            }
            Insn::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off,
            } => {
                self.atomic(st, pc, size, op, fetch, dst, src, off)?;
                Ok(Flow::Next(next))
            }
            Insn::LoadAbs { size, .. } | Insn::LoadInd { size, .. } => {
                use ProgType as P;
                if !matches!(self.t, P::SocketFilter | P::SchedCls | P::SchedAct) {
                    return err(
                        pc,
                        "BPF_LD_[ABS|IND] instructions not allowed for this program type",
                    );
                }
                if !st.refs.is_empty() {
                    return err(
                        pc,
                        "BPF_LD_[ABS|IND] cannot be mixed with socket references",
                    );
                }
                let r6 = self.read(st, Reg::R6, pc)?;
                if r6.kind() != Some(PtrKind::Ctx) {
                    return err(pc, "at the time of BPF_LD_ABS|IND R6 != pointing to skb");
                }
                if let Insn::LoadInd { src, .. } = *insn {
                    let s = self.read(st, src, pc)?;
                    if !s.is_scalar() {
                        return err(
                            pc,
                            format!("R{} invalid mem access '{}'", src.num(), type_name(&s)),
                        );
                    }
                }
                for r in 1..=5 {
                    st.cur_mut().regs[r] = RegState::NOT_INIT;
                }
                let v = Scalar::unknown().cast(size_bytes(size) as u32);
                st.cur_mut().regs[0] = RegState::scalar(v);
                Ok(Flow::Next(next))
            }
            Insn::Ja { .. } => {
                let t = insn.branch_target(Pc(pc)).map_or(0, |p| p.0);
                Ok(Flow::Next(t))
            }
            Insn::Jmp {
                width,
                cond,
                dst,
                src,
                ..
            } => {
                let t = insn.branch_target(Pc(pc)).map_or(0, |p| p.0);
                self.cond_jump(st, pc, width, cond, dst, src, t)
            }
            Insn::Call(id) if calls_callback(id.0) => self.callback_call(st, pc, id.0),
            Insn::Call(id) => {
                self.helper_call(st, pc, id.0)?;
                Ok(Flow::Next(next))
            }
            Insn::CallLocal(_) => {
                let t = insn.branch_target(Pc(pc)).map_or(0, |p| p.0);
                self.local_call(st, pc, t)?;
                Ok(Flow::Next(t))
            }
            Insn::CallKfunc { .. } => err(pc, "not supported yet: kernel function calls (kfuncs)"),
            Insn::Callx(_) => err(pc, "not supported yet: indirect calls (callx)"),
            Insn::Exit => {
                let fr = Self::frame_no(st);
                if fr > 0 && self.in_callback(st, fr) {
                    self.check_callback_return(st, pc)?;
                }
                Ok(Flow::Exit)
            }
        }
    }

    fn ptr_unknown_or(
        &self,
        st: &mut State,
        dst: Reg,
        pc: usize,
        next: usize,
        msg: &str,
    ) -> R<Flow> {
        if self.leaks() {
            return err(pc, msg.replace("{}", &dst.num().to_string()));
        }
        self.set(st, dst, RegState::unknown());
        Ok(Flow::Next(next))
    }

    fn map_index(&self, i: i32, pc: usize) -> R<u32> {
        if i < 0 || i as usize >= self.maps.len() {
            return err(pc, format!("fd {i} is not pointing to valid bpf_map"));
        }
        Ok(i as u32)
    }

    // ---------------------------------------------------------------
    // ALU

    fn alu(
        &mut self,
        st: &mut State,
        pc: usize,
        width: Width,
        op: AluOp,
        dst: Reg,
        src: Src,
    ) -> R<()> {
        let s = match src {
            Src::Reg(r) => self.read(st, r, pc)?,
            Src::Imm(i) => {
                let v = Scalar::constant(i64::from(i) as u64);
                RegState::scalar(if width == Width::W32 { v.cast(4) } else { v })
            }
        };
        if let AluOp::Mov | AluOp::MovSx(_) = op {
            self.check_dst(dst, pc)?;
            let v = if s.is_scalar() {
                let mut v = s;
                match (op, width, src) {
                    (AluOp::Mov, Width::W64, Src::Reg(r)) => {
                        // Link the copies so that a later bound on one
                        // applies to the other.
                        if !s.var.is_const() {
                            let id = if s.id != 0 { s.id } else { self.fresh_id() };
                            st.cur_mut().regs[r.index()].id = id;
                            v.id = id;
                        }
                    }
                    (AluOp::Mov, Width::W32, Src::Reg(r))
                        if s.var.umax() <= u64::from(u32::MAX) =>
                    {
                        // The value already fits in 32 bits, so the
                        // zero-extending copy is the same 64-bit value:
                        // link them too, as the kernel does for a source
                        // no wider than 32 bits (`get_reg_width`).
                        if !s.var.is_const() {
                            let id = if s.id != 0 { s.id } else { self.fresh_id() };
                            st.cur_mut().regs[r.index()].id = id;
                            v.id = id;
                        }
                    }
                    _ => {
                        v = RegState::scalar(Scalar::unknown().alu(op, width, s.var));
                    }
                }
                v
            } else if op == AluOp::Mov && width == Width::W64 {
                s
            } else {
                let r = match src {
                    Src::Reg(r) => r.num(),
                    Src::Imm(_) => 0,
                };
                if self.leaks() {
                    return err(pc, format!("R{r} partial copy of pointer"));
                }
                RegState::scalar(Scalar::unknown().alu(op, width, Scalar::unknown()))
            };
            self.set(st, dst, v);
            return Ok(());
        }
        let d = self.read(st, dst, pc)?;
        self.check_dst(dst, pc)?;
        if let Src::Imm(i) = src {
            if matches!(op, AluOp::Div | AluOp::Mod | AluOp::Sdiv | AluOp::Smod) && i == 0 {
                return err(pc, "div by zero");
            }
            let bits = if width == Width::W64 { 64 } else { 32 };
            if matches!(op, AluOp::Lsh | AluOp::Rsh | AluOp::Arsh) && (i < 0 || i >= bits) {
                return err(pc, format!("invalid shift {i}"));
            }
        }
        let srcno = match src {
            Src::Reg(r) => r.num(),
            Src::Imm(_) => dst.num(),
        };
        match (d.is_scalar(), s.is_scalar()) {
            (true, true) => {
                if let (true, AluOp::Add | AluOp::Sub, Src::Reg(_)) = (self.leaks(), op, src) {
                    // The same instruction may not also be masked pointer
                    // arithmetic on another path.
                    self.record_mask(pc, dst.num(), op, MASK_SCALAR, 0)?;
                }
                // The kernel does not track division and modulo at all (not
                // even of constants, and for 32-bit operations it skips the
                // zero extension): the whole register becomes unknown.
                if matches!(op, AluOp::Div | AluOp::Mod | AluOp::Sdiv | AluOp::Smod) {
                    self.set(st, dst, RegState::unknown());
                    return Ok(());
                }
                // Nor shifts by an amount it does not know (or one past the
                // width): unknown as well.
                if matches!(op, AluOp::Lsh | AluOp::Rsh | AluOp::Arsh) {
                    let bits = if width == Width::W64 { 64 } else { 32 };
                    let amount = match width {
                        Width::W64 => s.var.const_value(),
                        Width::W32 => s.var.cast(4).const_value(),
                    };
                    // The kernel bounds the amount by its 64-bit maximum,
                    // for 32-bit shifts too.
                    if amount.is_none_or(|a| a >= bits) || s.var.umax() >= bits {
                        self.set(st, dst, RegState::unknown());
                        return Ok(());
                    }
                }
                let v = d.var.alu(op, width, s.var);
                self.set(st, dst, RegState::scalar(v));
                Ok(())
            }
            (false, true) => {
                let v = self.ptr_arith(pc, dst.num(), src_reg(src), width, op, d, s, false)?;
                // The pointer's new offset depends on the scalar's range.
                if let Src::Reg(r) = src {
                    self.demand.reg(Self::frame_no(st), r.num());
                }
                self.set(st, dst, v);
                Ok(())
            }
            (true, false) => {
                // `scalar op pointer`: the kernel checks it as pointer
                // arithmetic with the roles swapped (32-bit ops first).
                if width == Width::W32 || matches!(op, AluOp::Add | AluOp::Sub) {
                    let v = self.ptr_arith(pc, dst.num(), src_reg(src), width, op, s, d, true)?;
                    self.demand.reg(Self::frame_no(st), dst.num());
                    self.set(st, dst, v);
                    Ok(())
                } else {
                    self.bad_ptr_op(pc, srcno, op, &s)
                }
            }
            (false, false) => {
                // Any two pointers, any width: only subtraction, and only
                // when pointer values may leak (privileged), giving an
                // unknown scalar.
                if op == AluOp::Sub && !self.leaks() {
                    self.set(st, dst, RegState::unknown());
                    return Ok(());
                }
                err(
                    pc,
                    format!("R{} pointer {} pointer prohibited", dst.num(), alu_name(op)),
                )
            }
        }
    }

    fn bad_ptr_op<T>(&self, pc: usize, regno: u8, op: AluOp, _p: &RegState) -> R<T> {
        let name = alu_name(op);
        match op {
            AluOp::And | AluOp::Or | AluOp::Xor => err(
                pc,
                format!("R{regno} bitwise operator {name} on pointer prohibited"),
            ),
            _ => err(
                pc,
                format!("R{regno} pointer arithmetic with {name} operator prohibited"),
            ),
        }
    }

    /// `ptr op scalar` (or `scalar + ptr` when `swapped`), as
    /// `adjust_ptr_min_max_vals`.
    #[allow(clippy::too_many_arguments)]
    fn ptr_arith(
        &mut self,
        pc: usize,
        regno: u8,
        srcno: Option<u8>,
        width: Width,
        op: AluOp,
        p: RegState,
        s: RegState,
        swapped: bool,
    ) -> R<RegState> {
        // A register operand (even a known constant) is masked at run time
        // against Spectre v1 when the loader lacks CAP_PERFMON; an
        // immediate needs no mask.
        let masked = self.leaks() && srcno.is_some();
        if width == Width::W32 {
            // 32-bit ALU ops on pointers give meaningless scalars: allowed
            // (as unknown) only for subtraction by privileged programs.
            if op == AluOp::Sub && !self.leaks() {
                return Ok(RegState::unknown());
            }
            return err(pc, format!("R{regno} 32-bit pointer arithmetic prohibited"));
        }
        let kind = p.kind().expect("pointer");
        if kind.maybe_null() {
            return err(
                pc,
                format!(
                    "R{regno} pointer arithmetic on {} prohibited, null-check it first",
                    kind.name()
                ),
            );
        }
        match kind {
            PtrKind::ConstMap { .. } => {
                return err(
                    pc,
                    format!("R{regno} pointer arithmetic on map_ptr prohibited"),
                )
            }
            PtrKind::PacketEnd => {
                return err(
                    pc,
                    format!("R{regno} pointer arithmetic on pkt_end prohibited"),
                )
            }
            _ => {}
        }
        if !matches!(op, AluOp::Add | AluOp::Sub) {
            return self.bad_ptr_op(pc, regno, op, &p);
        }
        let name = kind.name();
        let v = s.var;
        if let Some(c) = v.const_value() {
            let c = c as i64;
            if !(-MAX_VAR_OFF..MAX_VAR_OFF).contains(&c) {
                return err(pc, format!("{name} pointer offset {c} is not allowed"));
            }
        } else {
            if v.smin() == i64::MIN {
                return err(
                    pc,
                    format!(
                        "math between {name} pointer and register with unbounded min value is not allowed"
                    ),
                );
            }
            if v.smin() >= MAX_VAR_OFF || v.smin() <= -MAX_VAR_OFF {
                return err(
                    pc,
                    format!("value {} makes {name} pointer be out of bounds", v.smin()),
                );
            }
        }
        let opname = if op == AluOp::Add { "add" } else { "sub" };
        let mut pre = None;
        if masked {
            let off_no = if swapped {
                regno
            } else {
                srcno.unwrap_or(regno)
            };
            let ptr_no = if swapped {
                srcno.unwrap_or(regno)
            } else {
                regno
            };
            // The mask keeps the offset on one side of the pointer; an
            // offset that may be either sign cannot be masked.
            if !v.is_const() && (v.smin() < 0) != (v.smax() < 0) {
                return err(
                    pc,
                    format!("R{off_no} has unknown scalar with mixed signed bounds, {NO_ROOT}"),
                );
            }
            let neg = v.smin() < 0;
            let left = (op == AluOp::Add) == neg;
            let limit = match self.ptr_limit(&p, left) {
                Ok(l) => l,
                Err(Unmaskable::Type) => {
                    return err(
                        pc,
                        format!("R{ptr_no} has pointer with unsupported alu operation, {NO_ROOT}"),
                    )
                }
                Err(Unmaskable::Limit) => {
                    return err(
                        pc,
                        format!("R{regno} tried to {opname} beyond pointer bounds, {NO_ROOT}"),
                    )
                }
            };
            let mut state = if swapped { MASK_PTR_DST } else { MASK_PTR_SRC };
            if neg {
                state |= MASK_NEG;
            }
            if v.is_const() {
                state |= MASK_IMM;
            }
            pre = Some((state, limit, left));
            if !v.is_const() {
                self.exact_scalars = true;
            }
        }
        if swapped && op == AluOp::Sub {
            return err(
                pc,
                format!("R{regno} tried to subtract pointer from scalar"),
            );
        }
        // The kernel refuses any subtraction from a stack pointer (JITs
        // were not all able to handle it), privileged or not.
        if op == AluOp::Sub && matches!(kind, PtrKind::Stack { .. }) {
            return err(
                pc,
                format!("R{regno} subtraction from stack pointer prohibited"),
            );
        }
        let mut r = p;
        if let Some(c) = v.const_value() {
            let c = c as i64;
            r.off = if op == AluOp::Add {
                p.off + c
            } else {
                p.off - c
            };
        } else {
            r.var = if op == AluOp::Add {
                p.var.add(v, Width::W64)
            } else {
                p.var.sub(v, Width::W64)
            };
            if matches!(kind, PtrKind::Packet | PtrKind::PacketMeta) {
                r.id = self.fresh_id();
                r.range = 0;
            }
        }
        if !(-MAX_VAR_OFF..MAX_VAR_OFF).contains(&r.off) {
            return err(
                pc,
                format!("{name} pointer offset {} is not allowed", r.off),
            );
        }
        // Unprivileged programs may not even form a stack pointer that a
        // speculative access could misuse: the kernel checks it here, at
        // the arithmetic, not at the later access.
        if self.leaks() && matches!(kind, PtrKind::Stack { .. }) {
            let t = r.var.var_off();
            let off = r.off + t.value() as i64;
            if !t.is_const() {
                return err(
                    pc,
                    format!(
                        "R{regno} variable stack access prohibited for !root, var_off={} off={off}",
                        tnum_str(&r.var)
                    ),
                );
            }
            if !(-STACK_SIZE..0).contains(&off) {
                return err(
                    pc,
                    format!(
                        "R{regno} stack pointer arithmetic goes out of range, prohibited for !root; off={off}"
                    ),
                );
            }
        }
        if let (true, PtrKind::MapValue { map }) = (self.leaks(), kind) {
            let vs = i64::from(self.maps[map as usize].value_size);
            let lo = r.off.saturating_add(r.var.smin());
            let hi = (r.var.umax() as i64)
                .saturating_add(r.off)
                .saturating_add(1);
            if lo < 0 || r.var.umax() > i64::MAX as u64 || hi > vs {
                return err(
                    pc,
                    format!(
                        "R{regno} pointer arithmetic of map value goes out of range, prohibited for !root"
                    ),
                );
            }
        }
        if let Some((state, before, left)) = pre {
            // The mask is the distance the pointer moved, and must be the
            // same on every path through this instruction.
            let after = match self.ptr_limit(&r, left) {
                Ok(l) => l,
                Err(_) => {
                    return err(
                        pc,
                        format!("R{regno} tried to {opname} beyond pointer bounds, {NO_ROOT}"),
                    )
                }
            };
            self.record_mask(pc, regno, op, state, before.abs_diff(after))?;
        }
        Ok(r)
    }

    /// How far the Spectre v1 mask lets `p` move towards the start of its
    /// region (`left`) or its end (the kernel's `retrieve_ptr_limit`):
    /// only stack and map value pointers can be masked.
    fn ptr_limit(&self, p: &RegState, left: bool) -> Result<u32, Unmaskable> {
        let (max, limit) = match p.kind() {
            Some(PtrKind::Stack { .. }) => {
                // Offset 0 (the frame pointer) is a valid start going left.
                let at = (p.var.var_off().value() as i64).wrapping_add(p.off);
                (
                    STACK_SIZE as u32 + u32::from(left),
                    at.wrapping_neg() as u32,
                )
            }
            Some(PtrKind::MapValue { map }) => {
                let bound = if left {
                    p.var.smin()
                } else {
                    p.var.umax() as i64
                };
                let vs = self.maps[map as usize].value_size;
                (vs, bound.wrapping_add(p.off) as u32)
            }
            _ => return Err(Unmaskable::Type),
        };
        if limit >= max {
            return Err(Unmaskable::Limit);
        }
        Ok(limit)
    }

    /// Records the Spectre v1 mask of the `+=`/`-=` at `pc`; another path
    /// through it must need the same one.
    fn record_mask(&mut self, pc: usize, regno: u8, op: AluOp, state: u8, limit: u32) -> R<()> {
        match self.alu_masks[pc] {
            Some(m) if m != (state, limit) => {
                let opname = if op == AluOp::Add { "add" } else { "sub" };
                err(
                    pc,
                    format!(
                        "R{regno} tried to {opname} from different maps, paths or scalars, {NO_ROOT}"
                    ),
                )
            }
            _ => {
                self.alu_masks[pc] = Some((state, limit));
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------
    // Memory

    #[allow(clippy::too_many_arguments)]
    fn mem_access(
        &mut self,
        st: &mut State,
        pc: usize,
        regno: Reg,
        base: RegState,
        off: i64,
        size: i64,
        acc: Access,
    ) -> R<RegState> {
        let rn = regno.num();
        let write = matches!(acc, Access::Write(_));
        let kind = match base.ty {
            RegType::Ptr(k) => k,
            _ => {
                return err(
                    pc,
                    format!("R{rn} invalid mem access '{}'", type_name(&base)),
                )
            }
        };
        // Pointer stores leak addresses in unprivileged mode.
        if let Access::Write(Stored::Reg(r, v)) = acc {
            if v.kind().is_some() && self.leaks() && !matches!(kind, PtrKind::Stack { .. }) {
                let into = match kind {
                    PtrKind::Ctx => "ctx",
                    PtrKind::Packet | PtrKind::PacketMeta => "packet",
                    PtrKind::MapValue { .. } => "map",
                    _ => "mem",
                };
                return err(pc, format!("R{} leaks addr into {into}", r.num()));
            }
        }
        let unknown = RegState::scalar(Scalar::unknown().cast(size.min(8) as u32));
        match kind {
            PtrKind::Stack { frame } => self.stack_access(st, pc, rn, base, frame, off, size, acc),
            PtrKind::MapValue { map } => {
                let def = &self.maps[map as usize];
                if write && map_rdonly_prog(def) {
                    return err(
                        pc,
                        format!(
                            "write into map forbidden, value_size={} off={} size={size}",
                            def.value_size,
                            base.off + off
                        ),
                    );
                }
                self.region(
                    pc,
                    rn,
                    &base,
                    off,
                    size,
                    i64::from(def.value_size),
                    "map value",
                )?;
                Ok(unknown)
            }
            PtrKind::MapKey { map } => {
                if write {
                    return err(pc, format!("write to change key R{rn} not allowed"));
                }
                let ks = i64::from(self.maps[map as usize].key_size);
                self.region(pc, rn, &base, off, size, ks, "map key")?;
                Ok(unknown)
            }
            PtrKind::Mem { size: ms } => {
                self.region(pc, rn, &base, off, size, i64::from(ms), "memory")?;
                Ok(unknown)
            }
            PtrKind::Packet | PtrKind::PacketMeta => {
                if write && !self.may_write_packet() {
                    return err(pc, "cannot write into packet");
                }
                self.packet_range(pc, rn, &base, off, size)?;
                Ok(unknown)
            }
            PtrKind::Ctx => {
                if let Some(c) = base.var.const_value() {
                    if c != 0 || base.off != 0 {
                        return err(
                            pc,
                            format!(
                                "dereference of modified ctx ptr R{rn} off={} disallowed",
                                base.off.saturating_add(c as i64)
                            ),
                        );
                    }
                } else {
                    return err(
                        pc,
                        format!(
                            "variable ctx access var_off={} disallowed",
                            tnum_str(&base.var)
                        ),
                    );
                }
                if self.opts.unprivileged && ctx::is_pointer_field(self.t, off) {
                    return err(
                        pc,
                        format!("not supported yet: pointer field at ctx offset {off} in unprivileged mode"),
                    );
                }
                match ctx::access(self.t, off, size, write) {
                    None => err(
                        pc,
                        format!("invalid bpf_context access off={off} size={size}"),
                    ),
                    Some(CtxField::Scalar) => Ok(unknown),
                    Some(CtxField::Ptr(k)) => Ok(RegState::ptr(k)),
                }
            }
            _ => err(pc, format!("R{rn} invalid mem access '{}'", kind.name())),
        }
    }

    fn may_write_packet(&self) -> bool {
        use ProgType as P;
        matches!(
            self.t,
            P::Xdp | P::SchedCls | P::SchedAct | P::LwtXmit | P::SkSkb | P::SkMsg | P::LwtSeg6local
        )
    }

    /// A bounded region access (map values, helper memory), as
    /// `check_mem_region_access`.
    #[allow(clippy::too_many_arguments)]
    fn region(
        &self,
        pc: usize,
        rn: u8,
        base: &RegState,
        off: i64,
        size: i64,
        mem: i64,
        what: &str,
    ) -> R<()> {
        let off = base.off.saturating_add(off);
        let v = &base.var;
        if v.smin() < 0 && (v.smin() == i64::MIN || v.smin().saturating_add(off) < 0) {
            return err(
                pc,
                format!(
                    "R{rn} min value is negative, either use unsigned index or do a if (index >=0) check."
                ),
            );
        }
        let oob = |o: i64| o < 0 || o.saturating_add(size) > mem;
        if oob(v.smin().saturating_add(off)) {
            return Err(VerifierError::new(
                pc,
                format!("R{rn} min value is outside of the allowed memory range"),
            )
            .with_context(format!(
                "invalid access to {what}, {}={mem} off={} size={size}",
                match what {
                    "map value" => "value_size",
                    "map key" => "key_size",
                    _ => "mem_size",
                },
                v.smin().saturating_add(off)
            )));
        }
        if v.umax() >= MAX_VAR_OFF as u64 {
            return err(
                pc,
                format!("R{rn} unbounded memory access, make sure to bounds check any such access"),
            );
        }
        if oob((v.umax() as i64).saturating_add(off)) {
            return Err(VerifierError::new(
                pc,
                format!("R{rn} max value is outside of the allowed memory range"),
            )
            .with_context(format!(
                "invalid access to {what}, {}={mem} off={} size={size}",
                match what {
                    "map value" => "value_size",
                    "map key" => "key_size",
                    _ => "mem_size",
                },
                (v.umax() as i64).saturating_add(off)
            )));
        }
        Ok(())
    }

    fn packet_range(&self, pc: usize, rn: u8, base: &RegState, off: i64, size: i64) -> R<()> {
        if base.var.smin() < 0 {
            return err(
                pc,
                format!(
                    "R{rn} min value is negative, either use unsigned index or do a if (index >=0) check."
                ),
            );
        }
        let o = base.off + off;
        if o < 0 || o + size > base.range {
            return Err(
                VerifierError::new(pc, format!("R{rn} offset is outside of the packet"))
                    .with_context(format!(
                        "invalid access to packet, off={o} size={size}, R{rn}(id={},off={},r={})",
                        base.id, base.off, base.range
                    )),
            );
        }
        Ok(())
    }

    /// The current instruction reads the bytes `[lo, hi)` of `frame`'s stack.
    fn note_reads(&mut self, frame: u8, lo: i64, hi: i64) {
        let Some(r) = self.step_reads.slots.get_mut(frame as usize) else {
            return;
        };
        for b in lo.max(-STACK_SIZE)..hi.min(0) {
            *r |= 1 << ((-b - 1) / 8);
        }
    }

    fn note_depth(&mut self, st: &State, pc: usize, frame: u8, lowest: i64) -> R<()> {
        let fr = &st.frames[frame as usize];
        let d = &mut self.depth[fr.subprog];
        *d = (*d).max(-lowest);
        let total: i64 = st
            .frames
            .iter()
            .map(|f| (self.depth[f.subprog] + 31) / 32 * 32)
            .sum();
        if total > STACK_SIZE && st.frames.len() > 1 {
            return err(
                pc,
                format!(
                    "combined stack size of {} calls is {total}. Too large",
                    st.frames.len()
                ),
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn stack_access(
        &mut self,
        st: &mut State,
        pc: usize,
        rn: u8,
        base: RegState,
        frame: u8,
        off: i64,
        size: i64,
        acc: Access,
    ) -> R<RegState> {
        let write = matches!(acc, Access::Write(_));
        let Some(c) = base.var.const_value() else {
            return self.stack_var_access(st, pc, rn, base, frame, off, size, acc);
        };
        let o = base.off.saturating_add(c as i64).saturating_add(off);
        // Alignment first, as the kernel checks it before the bounds.
        if o % size != 0 {
            return err(
                pc,
                format!(
                    "misaligned stack access off {}+{}+{off} size {size}",
                    tnum_str(&base.var),
                    base.off
                ),
            );
        }
        if o < -STACK_SIZE || o.saturating_add(size) > 0 {
            return err(
                pc,
                format!(
                    "invalid {} stack R{rn} off={o} size={size}",
                    if write { "write to" } else { "read from" }
                ),
            );
        }
        self.note_depth(st, pc, frame, o)?;
        let uninit_ok = !self.opts.unprivileged;
        let cur_frame = Self::frame_no(st);
        let fr = &mut st.frames[frame as usize];
        let si = ((-o - 1) / 8) as usize;
        // The kernel words an uninitialised read differently when nothing
        // was ever written that deep.
        let unallocated = fr.stack.len() <= si;
        if fr.stack.len() <= si {
            fr.stack.resize(si + 1, Slot::INVALID);
        }
        let bi = (o + 8 * (si as i64 + 1)) as usize;
        match acc {
            Access::Read => {
                if let Some(r) = self.step_reads.slots.get_mut(frame as usize) {
                    *r |= 1 << si;
                }
                let slot = fr.stack[si];
                if let Some(sp) = slot.spill {
                    let spill_size = slot.spill_size();
                    if size == 8 && spill_size == 8 {
                        self.step_slot = Some((frame, si as u8));
                        return Ok(sp);
                    }
                    if !sp.is_scalar() {
                        return err(pc, "invalid size of register fill");
                    }
                    // A scalar spill (narrow ones are kept only at 8-aligned
                    // offsets): a fill of at most its size from its start
                    // reads its low bytes (`bpf_stack_narrow_access_ok`).
                    if bi == 0 && size <= spill_size {
                        self.step_slot = Some((frame, si as u8));
                        return Ok(if sp.var.umax() <= u64::MAX >> (64 - 8 * size) {
                            sp
                        } else {
                            RegState::scalar(sp.var.cast(size as u32))
                        });
                    }
                    if spill_size == 8 {
                        return Ok(RegState::scalar(Scalar::unknown().cast(size as u32)));
                    }
                    // Anything else reads its bytes as unknown.
                }
                let mut zero = true;
                for i in 0..size as usize {
                    match slot.bytes[bi + i] {
                        SlotByte::Zero => {}
                        SlotByte::Invalid if !uninit_ok => {
                            return err(
                                pc,
                                if unallocated {
                                    format!("invalid read from stack R{rn} off={o} size={size}")
                                } else {
                                    format!("invalid read from stack off {o}+{i} size {size}")
                                },
                            );
                        }
                        _ => zero = false,
                    }
                }
                Ok(if zero {
                    RegState::scalar(Scalar::constant(0))
                } else {
                    RegState::scalar(Scalar::unknown().cast(size as u32))
                })
            }
            Access::Write(val) => {
                let (reg, is_zero) = match val {
                    Stored::Reg(_, v) => (v, v.const_value() == Some(0)),
                    Stored::Imm(i) => (RegState::scalar(Scalar::constant(i)), i == 0),
                };
                if size == 8 {
                    fr.stack[si] = Slot {
                        bytes: [SlotByte::Spill; 8],
                        spill: Some(reg),
                    };
                    self.step_slot = Some((frame, si as u8));
                    if let Some(w) = self.step_writes.slots.get_mut(frame as usize) {
                        *w |= 1 << si;
                    }
                    return Ok(reg);
                }
                if !reg.is_scalar() {
                    return err(pc, "invalid size of register spill");
                }
                let slot = &mut fr.stack[si];
                if slot.spill.take().is_some() {
                    slot.bytes = [SlotByte::Misc; 8];
                }
                for i in 0..size as usize {
                    slot.bytes[bi + i] = if is_zero {
                        SlotByte::Zero
                    } else {
                        SlotByte::Misc
                    };
                }
                // As the kernel for a capable loader, keep a narrow scalar
                // spill at an 8-aligned offset (`save_register_state` with
                // its size): its low `size` bytes hold the register.
                if bi == 0 && !self.opts.unprivileged {
                    for b in &mut slot.bytes[..size as usize] {
                        *b = SlotByte::Spill;
                    }
                    slot.spill = Some(reg);
                    self.step_slot = Some((frame, si as u8));
                } else if is_zero {
                    // Zero bytes are compared exactly from now on: the
                    // register's value must be known to be zero.
                    if let Stored::Reg(r, _) = val {
                        self.demand.reg(cur_frame, r.num());
                    }
                }
                Ok(reg)
            }
        }
    }

    /// A stack access at a variable offset (privileged only): every byte
    /// it may touch must be in bounds; writes make them unknown, reads
    /// give an unknown value.
    #[allow(clippy::too_many_arguments)]
    fn stack_var_access(
        &mut self,
        st: &mut State,
        pc: usize,
        rn: u8,
        base: RegState,
        frame: u8,
        off: i64,
        size: i64,
        acc: Access,
    ) -> R<RegState> {
        let write = matches!(acc, Access::Write(_));
        let fixed = base.off + off;
        let vs = tnum_str(&base.var);
        if self.opts.unprivileged {
            return err(
                pc,
                format!("R{rn} variable offset stack access prohibited for !root, var_off={vs} off={fixed}"),
            );
        }
        let t = base
            .var
            .var_off()
            .add(crate::domain::tnum::Tnum::constant(fixed as u64));
        if (t.value() | t.mask()) & (size as u64 - 1) != 0 {
            return err(
                pc,
                format!(
                    "misaligned stack access off {vs}+{}+{off} size {size}",
                    base.off
                ),
            );
        }
        let (smin, smax) = (base.var.smin(), base.var.smax());
        let lo = smin.saturating_add(fixed);
        let hi = smax.saturating_add(fixed).saturating_add(size);
        if smin <= -MAX_VAR_OFF || smax >= MAX_VAR_OFF {
            return err(
                pc,
                format!(
                    "invalid unbounded variable-offset{} stack R{rn}",
                    if write { " write to" } else { " read from" }
                ),
            );
        }
        if lo < -STACK_SIZE || hi > 0 {
            return err(
                pc,
                format!(
                    "invalid variable-offset{} stack R{rn} var_off={vs} off={fixed} size={size}",
                    if write { " write to" } else { " read from" }
                ),
            );
        }
        self.note_depth(st, pc, frame, lo)?;
        let cur_frame = Self::frame_no(st);
        let fr = &mut st.frames[frame as usize];
        let need = ((-lo - 1) / 8 + 1) as usize;
        if fr.stack.len() < need {
            fr.stack.resize(need, Slot::INVALID);
        }
        let zero = match acc {
            Access::Write(Stored::Reg(r, v)) => {
                if !v.is_scalar() {
                    return err(pc, "spilled ptr in range of var-offset stack write");
                }
                if v.const_value() == Some(0) {
                    self.demand.reg(cur_frame, r.num());
                }
                v.const_value() == Some(0)
            }
            Access::Write(Stored::Imm(i)) => i == 0,
            Access::Read => false,
        };
        if !write {
            self.note_reads(frame, lo, hi);
        }
        if write {
            for b in lo..hi {
                let si = ((-b - 1) / 8) as usize;
                let bi = (b + 8 * (si as i64 + 1)) as usize;
                let slot = &mut fr.stack[si];
                if slot.spill.take().is_some() {
                    slot.bytes = [SlotByte::Misc; 8];
                }
                if !(zero && slot.bytes[bi] == SlotByte::Zero) {
                    slot.bytes[bi] = SlotByte::Misc;
                }
            }
        }
        Ok(RegState::scalar(Scalar::unknown().cast(size.min(8) as u32)))
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        st: &mut State,
        pc: usize,
        size: Size,
        op: AtomicOp,
        fetch: bool,
        dst: Reg,
        src: Reg,
        off: i16,
    ) -> R<()> {
        if !matches!(size, Size::W | Size::DW) {
            return err(pc, "invalid atomic operand size");
        }
        let s = self.read(st, src, pc)?;
        let base = self.read(st, dst, pc)?;
        if op == AtomicOp::Cmpxchg {
            self.read(st, Reg::R0, pc)?;
        }
        if !s.is_scalar() && self.leaks() {
            return err(pc, format!("R{} leaks addr into mem", src.num()));
        }
        // Privileged, a pointer operand is just a number to the memory:
        // what the operation leaves there is an unknown scalar.
        let fetches = fetch || matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg);
        match base.kind() {
            Some(PtrKind::Stack { .. })
            | Some(PtrKind::MapValue { .. })
            | Some(PtrKind::Mem { .. }) => {}
            Some(k) => {
                return err(
                    pc,
                    format!(
                        "BPF_ATOMIC stores into R{} {} is not allowed",
                        dst.num(),
                        k.name()
                    ),
                )
            }
            None => {
                return err(
                    pc,
                    format!("R{} invalid mem access '{}'", dst.num(), type_name(&base)),
                )
            }
        }
        let n = size_bytes(size);
        // Atomics must be aligned whatever the memory (the kernel checks
        // them strictly even where plain accesses may be misaligned); the
        // stack's own check comes with the access.
        let desc = match base.kind() {
            Some(PtrKind::MapValue { .. }) => Some("value "),
            Some(PtrKind::Mem { .. }) => Some(""),
            _ => None,
        };
        if let Some(desc) = desc {
            let t = base.var.var_off().add(crate::domain::tnum::Tnum::constant(
                (base.off + i64::from(off)) as u64,
            ));
            if (t.value() | t.mask()) & (n as u64 - 1) != 0 {
                return err(
                    pc,
                    format!(
                        "misaligned {desc}access off {}+{}+{off} size {n}",
                        tnum_str(&base.var),
                        base.off
                    ),
                );
            }
        }
        let old = self.mem_access(st, pc, dst, base, i64::from(off), n, Access::Read)?;
        // The same for a spilled pointer updated in place, but a fetch would
        // load the pointer back (the kernel's fill rules): not modelled.
        if !old.is_scalar() && (fetches || self.leaks()) {
            return err(pc, "not supported yet: atomic fetch of a spilled pointer");
        }
        self.mem_access(
            st,
            pc,
            dst,
            base,
            i64::from(off),
            n,
            Access::Write(Stored::Reg(src, RegState::unknown())),
        )?;
        let loaded = RegState::scalar(Scalar::unknown().cast(n as u32));
        if op == AtomicOp::Cmpxchg {
            self.set(st, Reg::R0, loaded);
        } else if fetch || op == AtomicOp::Xchg {
            self.check_dst(src, pc)?;
            self.set(st, src, loaded);
        }
        Ok(())
    }

    // ---------------------------------------------------------------
    // Jumps

    #[allow(clippy::too_many_arguments)]
    fn cond_jump(
        &mut self,
        st: &mut State,
        pc: usize,
        width: Width,
        cond: Cond,
        dst: Reg,
        src: Src,
        target: usize,
    ) -> R<Flow> {
        let d = self.read(st, dst, pc)?;
        let (s, sreg) = match src {
            Src::Reg(r) => (self.read(st, r, pc)?, Some(r)),
            Src::Imm(i) => (
                RegState::scalar(Scalar::constant(i64::from(i) as u64)),
                None,
            ),
        };
        // The caller replaces the current state with the branches' and
        // reads it no more unless it logs states: the last branch built
        // may then take it instead of a copy (a copy allocates every
        // frame's stack, at every conditional jump).
        let may_take = self.opts.log_level <= 1;
        let both = |st: &mut State| {
            let taken = st.clone();
            let fall = if may_take {
                std::mem::replace(st, State::empty())
            } else {
                st.clone()
            };
            Ok(Flow::Branch(Some(fall), Some((taken, target))))
        };
        if d.is_scalar() && s.is_scalar() {
            let decided = branch_taken(cond, width, d.var, s.var);
            let way = |taken: bool| {
                if decided.is_some_and(|x| x != taken) {
                    return None;
                }
                refine(cond, width, d.var, s.var, taken)
            };
            let refined = [way(false), way(true)];
            // Only one way on (or none): the ranges decided it.
            if refined.iter().filter(|o| o.is_some()).count() < 2 {
                let f = Self::frame_no(st);
                self.demand.reg(f, dst.num());
                if let Some(r) = sreg {
                    self.demand.reg(f, r.num());
                }
            }
            if d.id != 0 || s.id != 0 {
                self.step_linked = linked_scalars(st, [d.id, s.id]);
            }
            let mut out = [None, None];
            for i in [1, 0] {
                let Some((nd, ns)) = refined[i] else {
                    continue;
                };
                // (`i == 0` is built last: nothing needs `st` after it.)
                let mut s2 = if i == 0 && may_take {
                    std::mem::replace(st, State::empty())
                } else {
                    st.clone()
                };
                assign_scalar(&mut s2, dst, d.id, nd);
                if let Some(r) = sreg {
                    assign_scalar(&mut s2, r, s.id, ns);
                }
                out[i] = Some(s2);
            }
            let [fall, taken] = out;
            return Ok(Flow::Branch(fall, taken.map(|t| (t, target))));
        }
        // Null checks of maybe-null pointers.
        let zero = s.const_value() == Some(0);
        if width == Width::W64 && zero && matches!(cond, Cond::Eq | Cond::Ne) {
            if let Some(k) = d.kind() {
                if let Some(r) = sreg {
                    self.demand.reg(Self::frame_no(st), r.num());
                }
                if k.maybe_null() {
                    let mut null = st.clone();
                    mark_null(&mut null, d.id, d.ref_id, true);
                    let mut nonnull = st.clone();
                    mark_null(&mut nonnull, d.id, d.ref_id, false);
                    let (fall, taken) = if cond == Cond::Eq {
                        (nonnull, null)
                    } else {
                        (null, nonnull)
                    };
                    return Ok(Flow::Branch(Some(fall), Some((taken, target))));
                }
                // A valid pointer is never NULL, but the kernel decides the
                // comparison only for the kinds its `reg_not_null` lists:
                // with the context, stack or packet both branches are walked
                // (and unprivileged programs may not compare them at all).
                if matches!(
                    k,
                    PtrKind::MapValue { .. } | PtrKind::Mem { .. } | PtrKind::ConstMap { .. }
                ) {
                    let taken = cond == Cond::Ne;
                    return Ok(if taken {
                        Flow::Branch(None, Some((st.clone(), target)))
                    } else {
                        Flow::Branch(Some(st.clone()), None)
                    });
                }
            }
        }
        // Packet pointers against their end.
        if width == Width::W64 {
            if let (Some(a), Some(b)) = (d.kind(), s.kind()) {
                let pkt_vs_end = |p: PtrKind, e: PtrKind| {
                    matches!(
                        (p, e),
                        (PtrKind::Packet, PtrKind::PacketEnd)
                            | (PtrKind::PacketMeta, PtrKind::Packet)
                    )
                };
                // Which branch (taken?) proves "pkt <= end" or, strictly,
                // "pkt < end" (one more byte).
                let proof = if pkt_vs_end(a, b) {
                    match cond {
                        Cond::Gt => Some((false, d, 0)),
                        Cond::Ge => Some((false, d, 1)),
                        Cond::Lt => Some((true, d, 1)),
                        Cond::Le => Some((true, d, 0)),
                        _ => None,
                    }
                } else if pkt_vs_end(b, a) {
                    match cond {
                        Cond::Gt => Some((true, s, 1)),
                        Cond::Ge => Some((true, s, 0)),
                        Cond::Lt => Some((false, s, 0)),
                        Cond::Le => Some((false, s, 1)),
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some((taken, p, strict)) = proof {
                    let mut good = st.clone();
                    if !(p.off < 0
                        || p.var.umax() > MAX_PACKET_OFF as u64
                        || p.var.umax() as i64 + p.off > MAX_PACKET_OFF)
                    {
                        let kind = p.kind();
                        good.for_each_reg(|r| {
                            if r.kind() == kind && r.id == p.id {
                                r.range = r.range.max(p.off + strict);
                            }
                        });
                    }
                    let other = st.clone();
                    let (fall, tk) = if taken { (other, good) } else { (good, other) };
                    return Ok(Flow::Branch(Some(fall), Some((tk, target))));
                }
            }
        }
        if self.leaks() {
            // The kernel looks at a source register first.
            let r = match sreg {
                Some(r) if s.kind().is_some() => r.num(),
                _ => dst.num(),
            };
            return err(pc, format!("R{r} pointer comparison prohibited"));
        }
        both(st)
    }

    // ---------------------------------------------------------------
    // Calls

    fn local_call(&mut self, st: &mut State, pc: usize, target: usize) -> R<()> {
        if st.frames.len() >= MAX_FRAMES {
            return err(
                pc,
                format!(
                    "the call stack of {} frames is too deep",
                    st.frames.len() + 1
                ),
            );
        }
        let sub = self.cfg.subprog_of(target);
        let mut f = Frame::new(st.frames.len() as u8, pc, sub);
        for r in 1..=5 {
            f.regs[r] = st.cur().regs[r];
        }
        st.frames.push(f);
        self.note_depth(st, pc, (st.frames.len() - 1) as u8, 0)?;
        Ok(())
    }

    fn return_from_callee(&mut self, st: &mut State, pc: usize) -> R<usize> {
        // Not `read`: the kernel passes a callee's R0 back as it is, even
        // uninitialised; only a read in the caller is an error.
        let r0 = st.cur().regs[0];
        let depth = (st.frames.len() - 1) as u8;
        if let Some(PtrKind::Stack { frame }) = r0.kind() {
            if frame >= depth {
                return err(pc, "cannot return stack pointer to the caller");
            }
        }
        let callee = st.frames.pop().expect("callee frame");
        // Pointers into the callee's stack die with it.
        st.for_each_reg(|r| {
            if let Some(PtrKind::Stack { frame }) = r.kind() {
                if frame >= depth {
                    *r = RegState::unknown();
                }
            }
        });
        let cur = st.cur_mut();
        cur.regs[0] = r0;
        for r in 1..=5 {
            cur.regs[r] = RegState::NOT_INIT;
        }
        Ok(callee.callsite + 1)
    }

    /// Whether frame `i` runs a callback (its call is a helper's).
    fn in_callback(&self, st: &State, i: usize) -> bool {
        i > 0
            && st
                .frames
                .get(i)
                .is_some_and(|f| matches!(self.slots.get(f.callsite), Some(Some(Insn::Call(_)))))
    }

    /// A callback-calling helper (`bpf_loop`, `bpf_for_each_map_elem`):
    /// the path goes on after the call as for any helper, and another
    /// enters the callback with the arguments the helper gives it. The
    /// callback returns to the call, which enters it again until the
    /// states there converge (`push_callback_call`).
    fn callback_call(&mut self, st: &mut State, pc: usize, id: u32) -> R<Flow> {
        let before = st.clone();
        self.helper_call(st, pc, id)?;
        let fr = Self::frame_no(&before);
        let caller = before.cur();
        let (r1, r2, r3) = (caller.regs[1], caller.regs[2], caller.regs[3]);
        let Some(PtrKind::Func { pc: target }) = r2.kind() else {
            return err(pc, "R2 type=scalar expected=func");
        };
        let target = target as usize;
        if id == 181 {
            // How often the callback runs decides when to stop unrolling.
            self.demand.reg(fr, 1);
            if u64::from(caller.callback_depth) >= r1.var.umax() {
                st.cur_mut().callback_depth = 0;
                return Ok(Flow::Next(pc + 1));
            }
        }
        let mut cb = before;
        if cb.frames.len() >= MAX_FRAMES {
            return err(
                pc,
                format!(
                    "the call stack of {} frames is too deep",
                    cb.frames.len() + 1
                ),
            );
        }
        let sub = self.cfg.subprog_of(target);
        let mut f = Frame::new(cb.frames.len() as u8, pc, sub);
        if id == 181 {
            // callback(u32 index, void *ctx)
            f.regs[1] = RegState::unknown();
            f.regs[2] = r3;
        } else {
            // callback(map, key, value, ctx)
            let Some(PtrKind::ConstMap { map }) = r1.kind() else {
                return err(pc, "R1 type=scalar expected=map_ptr");
            };
            let mt = self.maps[map as usize].map_type;
            if !matches!(
                mt,
                MapType::Array
                    | MapType::PercpuArray
                    | MapType::Hash
                    | MapType::PercpuHash
                    | MapType::LruHash
                    | MapType::LruPercpuHash
            ) {
                return err(pc, "callback function not allowed for map");
            }
            f.regs[1] = r1;
            f.regs[2] = RegState::ptr(PtrKind::MapKey { map });
            f.regs[3] = RegState::ptr(PtrKind::MapValue { map });
            f.regs[4] = r3;
        }
        cb.cur_mut().callback_depth += 1;
        st.cur_mut().callback_depth = 0;
        cb.frames.push(f);
        self.note_depth(&cb, pc, (cb.frames.len() - 1) as u8, 0)?;
        Ok(Flow::Branch(Some(st.clone()), Some((cb, target))))
    }

    /// A callback's r0 at its exit: 0 or 1.
    fn check_callback_return(&mut self, st: &State, pc: usize) -> R<()> {
        let r0 = st.cur().regs[0];
        if matches!(r0.kind(), Some(PtrKind::Stack { .. })) {
            return err(pc, "cannot return stack pointer to the caller");
        }
        if !r0.is_scalar() {
            return err(pc, "R0 not a scalar value");
        }
        self.demand.reg(Self::frame_no(st), 0);
        if r0.var.smin() < 0 || r0.var.smax() > 1 {
            // The kernel names only the signed bounds here.
            let mut has = String::new();
            if r0.var.smin() > i64::MIN {
                has += &format!(" smin={}", r0.var.smin());
            }
            if r0.var.smax() < i64::MAX {
                has += &format!(" smax={}", r0.var.smax());
            }
            if has.is_empty() {
                has = " unknown scalar value".into();
            }
            return err(
                pc,
                format!("At callback return the register R0 has{has} should have been in [0, 1]"),
            );
        }
        Ok(())
    }

    /// Back from a callback to its helper call, to enter it again. Imprecise
    /// scalars that changed since the last visit there become unknown, so
    /// that a callback counting in its caller's stack converges
    /// (`widen_imprecise_scalars`).
    fn return_from_callback(&mut self, st: &mut State) -> usize {
        let depth = (st.frames.len() - 1) as u8;
        let callee = st.frames.pop().expect("callback frame");
        st.for_each_reg(|r| {
            if let Some(PtrKind::Stack { frame }) = r.kind() {
                if frame >= depth {
                    *r = RegState::unknown();
                }
            }
        });
        let at = callee.callsite;
        let prev = self.by_pc[at].iter().rev().copied().find(|&id| {
            let v = &self.visited[id];
            v.branches > 0
                && v.state.frames.len() == st.frames.len()
                && v.state
                    .frames
                    .iter()
                    .zip(&st.frames)
                    .all(|(a, b)| a.callsite == b.callsite)
        });
        if let Some(id) = prev {
            let old = &self.visited[id].state;
            for (fo, fc) in old.frames.iter().zip(st.frames.iter_mut()) {
                for (a, b) in fo.regs.iter().zip(fc.regs.iter_mut()) {
                    widen(a, b);
                }
                for (a, b) in fo.stack.iter().zip(fc.stack.iter_mut()) {
                    if let (Some(a), Some(b)) = (a.spill.as_ref(), b.spill.as_mut()) {
                        widen(a, b);
                    }
                }
            }
        }
        at
    }

    fn check_exit(&mut self, st: &State, pc: usize) -> R<()> {
        let r0 = self.read(st, Reg::R0, pc)?;
        if let Some(&(id, insn)) = st.refs.first() {
            return Err(VerifierError::new(
                pc,
                "BPF_EXIT instruction in main prog would lead to reference leak".into(),
            )
            .with_context(format!("Unreleased reference id={id} alloc_insn={insn}")));
        }
        if r0.kind().is_some() && self.leaks() {
            return err(pc, "R0 leaks addr as return value");
        }
        use ProgType as P;
        if matches!(
            self.t,
            P::CgroupSkb | P::CgroupSock | P::CgroupSockAddr | P::CgroupDevice | P::CgroupSysctl
        ) {
            if !r0.is_scalar() {
                return err(
                    pc,
                    format!(
                        "At program exit the register R0 is not a known value ({})",
                        type_name(&r0)
                    ),
                );
            }
            self.demand.reg(0, 0);
            if r0.var.umax() > 1 {
                return err(
                    pc,
                    format!(
                        "At program exit the register R0 has {} should have been in [0, 1]",
                        r0.var
                    ),
                );
            }
        }
        Ok(())
    }

    fn helper_call(&mut self, st: &mut State, pc: usize, id: u32) -> R<()> {
        let Some(p) = helpers::proto(id) else {
            if id < helpers::KERNEL_HELPER_COUNT {
                return err(
                    pc,
                    format!("not supported yet: helper #{id} (no prototype in bpfkit's table)"),
                );
            }
            return err(pc, format!("invalid func unknown#{id}"));
        };
        if !helpers::available(p.avail, self.t) {
            return err(
                pc,
                format!("program of this type cannot use helper bpf_{}#{id}", p.name),
            );
        }
        let mut map: Option<u32> = None;
        let mut mem: Option<(Reg, RegState, bool)> = None;
        let mut release: Option<u32> = None;
        let mut alloc_size = 0u32;
        let mut inner_map: Option<u32> = None;
        let mut const_key: Option<u64> = None;
        for (i, &arg) in p.args.iter().enumerate() {
            let r = Reg::new(i as u8 + 1).expect("r1-r5");
            let v = self.read(st, r, pc)?;
            let rn = r.num();
            match arg {
                Arg::Anything => {
                    if v.kind().is_some() && self.leaks() {
                        return err(pc, format!("R{rn} leaks addr into helper function"));
                    }
                }
                Arg::ConstMap => match v.kind() {
                    Some(PtrKind::ConstMap { map: m }) => map = Some(m),
                    _ => return err(pc, format!("R{rn} type={} expected=map_ptr", type_name(&v))),
                },
                Arg::Ctx => {
                    if v.kind() != Some(PtrKind::Ctx) {
                        return err(pc, format!("R{rn} type={} expected=ctx", type_name(&v)));
                    }
                    if v.off != 0 || v.var.const_value() != Some(0) {
                        return err(
                            pc,
                            format!(
                                "dereference of modified ctx ptr R{rn} off={} disallowed",
                                v.off
                            ),
                        );
                    }
                }
                Arg::MapKey | Arg::MapValue | Arg::UninitMapValue => {
                    let Some(m) = map else {
                        return err(pc, "invalid map_ptr to access map->key");
                    };
                    let def = &self.maps[m as usize];
                    let n = if arg == Arg::MapKey {
                        def.key_size
                    } else {
                        def.value_size
                    };
                    let write = arg == Arg::UninitMapValue;
                    self.helper_mem(st, pc, r, v, i64::from(n), write)?;
                    if arg == Arg::MapKey {
                        const_key = const_stack_key(st, &v, n).map(|(k, spill)| {
                            // The lookup's result type depends on the key.
                            if let Some((f, s)) = spill {
                                self.demand.slot(f, s);
                            }
                            k
                        });
                    }
                }
                Arg::Mem | Arg::MemOrNull | Arg::UninitMem => {
                    if arg == Arg::MemOrNull && v.const_value() == Some(0) {
                        self.demand.reg(Self::frame_no(st), rn);
                        mem = None;
                    } else {
                        mem = Some((r, v, arg == Arg::UninitMem));
                    }
                }
                Arg::ConstSize | Arg::ConstSizeOrZero => {
                    if !v.is_scalar() {
                        return err(pc, format!("R{rn} type={} expected=scalar", type_name(&v)));
                    }
                    self.demand.reg(Self::frame_no(st), rn);
                    if v.var.smin() < 0 {
                        return err(
                            pc,
                            format!("R{rn} min value is negative, either use unsigned index or do a if (index >=0) check."),
                        );
                    }
                    if v.var.umin() == 0 && arg == Arg::ConstSize {
                        return err(
                            pc,
                            format!(
                                "R{rn} invalid zero-sized read: u64=[{},{}]",
                                v.var.umin() as i64,
                                v.var.umax() as i64
                            ),
                        );
                    }
                    if v.var.umax() >= MAX_VAR_OFF as u64 {
                        return err(
                            pc,
                            format!("R{rn} unbounded memory access, use 'var &= const' or 'if (var < const)'"),
                        );
                    }
                    if let Some((mr, mv, w)) = mem.take() {
                        if v.var.umax() > 0 {
                            self.helper_mem(st, pc, mr, mv, v.var.umax() as i64, w)?;
                        }
                    } else if v.var.umax() > 0 && p.args[i - 1] == Arg::MemOrNull {
                        return err(pc, format!("R{} type=scalar expected=mem", rn - 1));
                    }
                }
                Arg::AllocSize => {
                    self.demand.reg(Self::frame_no(st), rn);
                    match v.const_value() {
                        Some(c) if c < u64::from(u32::MAX) => alloc_size = c as u32,
                        _ => return err(pc, format!("R{rn} is not a known constant'")),
                    }
                }
                Arg::Func => {
                    if !matches!(v.kind(), Some(PtrKind::Func { .. })) {
                        return err(pc, format!("R{rn} type={} expected=func", type_name(&v)));
                    }
                }
                Arg::StackOrNull => {
                    let null = v.is_scalar() && v.const_value() == Some(0);
                    if !null && !matches!(v.kind(), Some(PtrKind::Stack { .. })) {
                        return err(pc, format!("R{rn} type={} expected=fp", type_name(&v)));
                    }
                }
                Arg::RingbufMem => {
                    if !matches!(v.kind(), Some(PtrKind::Mem { .. })) || v.ref_id == 0 {
                        return err(
                            pc,
                            format!("R{rn} type={} expected=ringbuf_mem", type_name(&v)),
                        );
                    }
                    if v.off != 0 {
                        return err(
                            pc,
                            format!("R{rn} must have zero offset when passed to release func"),
                        );
                    }
                    release = Some(v.ref_id);
                }
            }
        }
        // Map and helper compatibility.
        if let Some(m) = map {
            let mt = self.maps[m as usize].map_type;
            let ok = match id {
                12 => mt == MapType::ProgArray,
                51 => matches!(
                    mt,
                    MapType::Devmap | MapType::DevmapHash | MapType::Cpumap | MapType::Xskmap
                ),
                25 | 22 | 55 => mt == MapType::PerfEventArray,
                27 => mt == MapType::StackTrace,
                130 | 131 | 134 => mt == MapType::Ringbuf,
                87 | 89 => matches!(mt, MapType::Queue | MapType::Stack | MapType::BloomFilter),
                88 => matches!(mt, MapType::Queue | MapType::Stack),
                33 | 37 => mt == MapType::CgroupArray,
                // Queues and stacks have only push, pop and peek; device
                // maps only lookup (and redirect_map) from programs.
                1..=3 if matches!(mt, MapType::Queue | MapType::Stack | MapType::BloomFilter) => {
                    false
                }
                2 | 3 if matches!(mt, MapType::Devmap | MapType::DevmapHash) => false,
                1 => !matches!(
                    mt,
                    MapType::ProgArray
                        | MapType::PerfEventArray
                        | MapType::Ringbuf
                        | MapType::StackTrace
                        | MapType::CgroupArray
                ),
                _ => true,
            };
            if !ok {
                if id == 12 {
                    return err(pc, "expected prog array map for tail call");
                }
                return err(
                    pc,
                    format!(
                        "cannot pass map_type {} into func bpf_{}#{id}",
                        mt as u32, p.name
                    ),
                );
            }
            if id == 1 && mt.is_map_in_map() {
                let Some(inner) = self.maps[m as usize].inner.as_deref().cloned() else {
                    return err(
                        pc,
                        "not supported yet: map-in-map without an inner map template",
                    );
                };
                let ix = match self.maps.iter().position(|d| *d == inner) {
                    Some(i) => i,
                    None => {
                        self.maps.push(inner);
                        self.maps.len() - 1
                    }
                };
                inner_map = Some(ix as u32);
            } else if id == 1
                && (matches!(
                    mt,
                    MapType::Sockmap | MapType::Sockhash | MapType::Xskmap | MapType::Cpumap
                ))
            {
                return err(
                    pc,
                    format!(
                        "not supported yet: bpf_map_lookup_elem on map type {}",
                        mt.name()
                    ),
                );
            }
        }
        if let Some(rid) = release {
            st.refs.retain(|&(r, _)| r != rid);
            st.for_each_reg(|r| {
                if r.ref_id == rid {
                    *r = RegState::unknown();
                }
            });
        }
        const CHANGES_PKT: &[u32] = &[9, 10, 11, 13, 18, 19, 31, 32, 38, 39, 43, 44, 50, 54, 65];
        if CHANGES_PKT.contains(&id) {
            let leaks = self.leaks();
            st.for_each_reg(|r| {
                if matches!(
                    r.kind(),
                    Some(PtrKind::Packet | PtrKind::PacketMeta | PtrKind::PacketEnd)
                ) {
                    *r = if leaks {
                        RegState::NOT_INIT
                    } else {
                        RegState::unknown()
                    };
                }
            });
        }
        for r in 1..=5 {
            st.cur_mut().regs[r] = RegState::NOT_INIT;
        }
        let r0 = match p.ret {
            Ret::Integer => RegState::unknown(),
            Ret::Void => RegState::NOT_INIT,
            Ret::MapValueOrNull => {
                let m = map.expect("map argument");
                let kind = match inner_map {
                    Some(map) => PtrKind::ConstMapOrNull { map },
                    None => PtrKind::MapValueOrNull { map: m },
                };
                let def = &self.maps[m as usize];
                // An array lookup with a constant in-range key cannot fail.
                let never_null = inner_map.is_none()
                    && matches!(def.map_type, MapType::Array | MapType::PercpuArray)
                    && const_key.is_some_and(|k| k < u64::from(def.max_entries));
                if never_null {
                    RegState::ptr(PtrKind::MapValue { map: m })
                } else {
                    let mut r = RegState::ptr(kind);
                    r.id = self.fresh_id();
                    r
                }
            }
            Ret::RingbufMemOrNull => {
                let mut r = RegState::ptr(PtrKind::MemOrNull { size: alloc_size });
                r.id = self.fresh_id();
                r.ref_id = self.fresh_id();
                st.refs.push((r.ref_id, pc));
                r
            }
        };
        st.cur_mut().regs[0] = r0;
        Ok(())
    }

    /// A helper reading (or, `write`, filling) `size` bytes at `v`.
    fn helper_mem(
        &mut self,
        st: &mut State,
        pc: usize,
        r: Reg,
        v: RegState,
        size: i64,
        write: bool,
    ) -> R<()> {
        let rn = r.num();
        if size == 0 {
            return err(pc, "invalid zero-sized read");
        }
        match v.kind() {
            Some(PtrKind::Stack { frame }) => {
                let Some(c) = v.var.const_value() else {
                    let acc = if write {
                        Access::Write(Stored::Reg(r, RegState::unknown()))
                    } else {
                        Access::Read
                    };
                    return self
                        .stack_var_access(st, pc, rn, v, frame, 0, size, acc)
                        .map(|_| ());
                };
                let o = v.off.saturating_add(c as i64);
                if o < -STACK_SIZE || o.saturating_add(size) > 0 || size <= 0 {
                    return err(
                        pc,
                        format!(
                            "invalid {} stack R{rn} off={o} size={size}",
                            // As this kernel words it for helpers too.
                            if write { "write to" } else { "read from" }
                        ),
                    );
                }
                self.note_depth(st, pc, frame, o)?;
                if !write {
                    self.note_reads(frame, o, o + size);
                }
                let uninit_ok = !self.opts.unprivileged;
                let fr = &mut st.frames[frame as usize];
                let need = ((-o - 1) / 8 + 1) as usize;
                // The kernel words the error differently when the stack was
                // never allocated that deep (nothing written there yet).
                let unallocated = fr.stack.len() < need;
                if fr.stack.len() < need {
                    fr.stack.resize(need, Slot::INVALID);
                }
                for b in o..o + size {
                    let si = ((-b - 1) / 8) as usize;
                    let bi = (b + 8 * (si as i64 + 1)) as usize;
                    let slot = &mut fr.stack[si];
                    if write {
                        if let Some(sp) = slot.spill.take() {
                            let _ = sp;
                            slot.bytes = [SlotByte::Misc; 8];
                        }
                        slot.bytes[bi] = SlotByte::Misc;
                    } else if slot.bytes[bi] == SlotByte::Invalid && !uninit_ok {
                        return err(
                            pc,
                            if unallocated {
                                format!("invalid read from stack R{rn} off={o} size={size}")
                            } else {
                                format!("invalid read from stack R{rn} off {o}+{} size {size}", b - o)
                            },
                        );
                    } else if let Some(sp) = slot.spill {
                        if !sp.is_scalar() && self.opts.unprivileged {
                            return err(
                                pc,
                                format!(
                                    "invalid indirect read from stack R{rn} off {o}+{} size {size}",
                                    b - o
                                ),
                            );
                        }
                    }
                }
                Ok(())
            }
            Some(PtrKind::MapValue { map }) => {
                let def = &self.maps[map as usize];
                let vs = i64::from(def.value_size);
                if write && map_rdonly_prog(def) {
                    return err(
                        pc,
                        format!(
                            "write into map forbidden, value_size={vs} off={} size={size}",
                            v.off
                        ),
                    );
                }
                self.region(pc, rn, &v, 0, size, vs, "map value")
            }
            Some(PtrKind::Mem { size: ms }) => {
                self.region(pc, rn, &v, 0, size, i64::from(ms), "memory")
            }
            Some(PtrKind::MapKey { map }) => {
                if write {
                    return err(pc, format!("R{rn} cannot write into map_key"));
                }
                let ks = i64::from(self.maps[map as usize].key_size);
                self.region(pc, rn, &v, 0, size, ks, "map key")
            }
            Some(PtrKind::Packet | PtrKind::PacketMeta) => self.packet_range(pc, rn, &v, 0, size),
            _ => err(
                pc,
                format!(
                    "R{rn} type={} expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_",
                    type_name(&v)
                ),
            ),
        }
    }

    // ---------------------------------------------------------------
    // Messages

    /// Adds the plain-words context to an error: the instruction, the
    /// register states there, the source line.
    /// Adds to a rejection at `insn` on `path` (state as the check saw
    /// it): why it is unsafe in plain words, the branch decisions that led
    /// there, the registers the instruction reads; the kernel's detail
    /// line (already in the context) comes last.
    fn explain(&self, mut e: VerifierError, path: &Path, insn: &Insn) -> VerifierError {
        let mut lines = Vec::new();
        let cur = path.state.frames.last();
        if let Some(w) = cur.and_then(|f| explain::why(&e.message, &e.context, insn, f)) {
            lines.push(format!("why: {w}"));
        }
        if let Some(p) = explain::path(&self.slots, &self.path_pcs(path), e.pc) {
            lines.push(p);
        }
        // The registers the instruction reads, as they were.
        let (uses, _) = cfg::uses_defs(insn);
        if let Some(cur) = cur {
            let regs: Vec<String> = (0..11)
                .filter(|&r| uses & (1 << r) != 0 && r != 10)
                .map(|r| format!("R{r}={}", cur.regs[r]))
                .collect();
            if !regs.is_empty() {
                lines.push(format!("registers read: {}", regs.join(" ")));
            }
        }
        if !e.context.is_empty() {
            lines.push(std::mem::take(&mut e.context));
        }
        e.context = lines.join("\n  ");
        e
    }

    /// The instructions of `path` from the program's start: the histories
    /// of its explored ancestors (kept while they have live paths), oldest
    /// first, then its own.
    fn path_pcs(&self, path: &Path) -> Vec<usize> {
        let mut chunks: Vec<&[Step]> = vec![&path.hist];
        let mut at = path.last;
        while let Some(id) = at {
            let Some(v) = self.visited.get(id) else { break };
            chunks.push(&v.hist);
            at = v.parent;
        }
        chunks
            .iter()
            .rev()
            .flat_map(|c| c.iter().map(|s| s.pc as usize))
            .collect()
    }

    fn describe(&self, e: &mut VerifierError) {
        let mut text = String::new();
        if let Some(insn) = self.slots.get(e.pc).copied().flatten() {
            let _ = write!(text, "at insn {}: {}", e.pc, format_llvm(&insn));
        }
        if let Some((_, line)) = self
            .opts
            .line_info
            .iter()
            .take_while(|(at, _)| *at <= e.pc)
            .last()
        {
            let _ = write!(text, "\n  source: {}", line.trim());
        }
        // Failures found before or outside the walk (the control-flow
        // checks, the instruction budget) have no path state to explain
        // from: the message alone says enough.
        // (A message naming a register needs that register's state.)
        if !e.context.starts_with("why: ") && !e.message.starts_with('R') {
            let insn = self
                .slots
                .get(e.pc)
                .copied()
                .flatten()
                .unwrap_or(Insn::Exit);
            let empty = Frame::new(0, 0, 0);
            if let Some(w) = explain::why(&e.message, &e.context, &insn, &empty) {
                let _ = write!(text, "\n  why: {w}");
            }
        }
        if !e.context.is_empty() {
            let _ = write!(text, "\n  {}", e.context);
        }
        e.context = text;
    }
}

/// The precise scalars of an explored state (live registers, spills).
/// Helpers that call a subprogram back (verified as a loop over it).
pub(crate) fn calls_callback(id: u32) -> bool {
    id == 164 || id == 181
}

/// `cur` becomes an unknown scalar if it is an imprecise scalar that
/// differs from `old` (`maybe_widen_reg`).
fn widen(old: &RegState, cur: &mut RegState) {
    // Ids only link scalars within one state: an unknown scalar is the
    // same value whatever its id (the kernel compares them through an id
    // map).
    let (mut a, mut b) = (*old, *cur);
    a.id = 0;
    b.id = 0;
    if old.is_scalar() && cur.is_scalar() && !old.precise && !cur.precise && a != b {
        *cur = RegState::unknown();
    }
}

fn precise_marks(st: &State, live: &[u16]) -> Marks {
    let mut m = Marks::default();
    for (f, frame) in st.frames.iter().enumerate() {
        let mask = live.get(f).copied().unwrap_or(u16::MAX);
        for (r, reg) in frame.regs.iter().enumerate() {
            if mask & (1 << r) != 0 && reg.is_scalar() && reg.precise {
                m.reg(f, r as u8);
            }
        }
        for (s, slot) in frame.stack.iter().enumerate() {
            if slot.spill.is_some_and(|r| r.is_scalar() && r.precise) {
                m.slot(f, s);
            }
        }
    }
    m
}

/// Where scalars linked to `ids` live: (frame, register) or
/// (frame, [`LINKED_SLOT`] + slot).
fn linked_scalars(st: &State, ids: [u32; 2]) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    let linked = |r: &RegState| r.is_scalar() && r.id != 0 && ids.contains(&r.id);
    for (f, frame) in st.frames.iter().enumerate() {
        for (r, reg) in frame.regs.iter().enumerate() {
            if linked(reg) {
                out.push((f as u8, r as u8));
            }
        }
        for (s, slot) in frame.stack.iter().enumerate() {
            if s < 64 && slot.spill.as_ref().is_some_and(linked) {
                out.push((f as u8, LINKED_SLOT + s as u8));
            }
        }
    }
    out
}

/// Whether programs may only read the map's values: `BPF_F_RDONLY_PROG`,
/// which the kernel also sets itself on device and cpu maps (their values
/// point straight at the kernel's entry).
fn map_rdonly_prog(def: &MapDef) -> bool {
    def.map_flags & bpfkit_abi::map_flags::RDONLY_PROG != 0
        || matches!(
            def.map_type,
            MapType::Devmap | MapType::DevmapHash | MapType::Cpumap
        )
}

/// The value of a map key of `size` bytes on the stack at `key`, when it
/// is a known constant (zero bytes or a spilled constant), and the spill's
/// (frame, slot) for the latter.
fn const_stack_key(st: &State, key: &RegState, size: u32) -> Option<(u64, Option<(usize, usize)>)> {
    let Some(PtrKind::Stack { frame }) = key.kind() else {
        return None;
    };
    let o = key.off + key.var.const_value()? as i64;
    if size == 0 || size > 8 || o % i64::from(size) != 0 {
        return None;
    }
    let fr = &st.frames[frame as usize];
    let si = ((-o - 1) / 8) as usize;
    let slot = fr.stack.get(si)?;
    let bi = (o + 8 * (si as i64 + 1)) as usize;
    if let Some(sp) = slot.spill {
        let c = sp.const_value()?;
        if bi != 0 || i64::from(size) > slot.spill_size() {
            return None;
        }
        let mask = if size == 8 {
            u64::MAX
        } else {
            (1u64 << (size * 8)) - 1
        };
        return Some((c & mask, Some((frame as usize, si))));
    }
    slot.bytes[bi..bi + size as usize]
        .iter()
        .all(|b| *b == SlotByte::Zero)
        .then_some((0, None))
}

/// Sets the scalar `r` (and every register and spill linked to it by `id`)
/// to `v`.
fn assign_scalar(st: &mut State, r: Reg, id: u32, v: Scalar) {
    if id != 0 {
        st.for_each_reg(|x| {
            if x.is_scalar() && x.id == id {
                x.var = v;
            }
        });
    }
    st.cur_mut().regs[r.index()].var = v;
}

/// After a null check: every maybe-null pointer with `id` becomes NULL
/// (scalar 0) or valid.
fn mark_null(st: &mut State, id: u32, ref_id: u32, is_null: bool) {
    st.for_each_reg(|r| {
        if r.id == id && r.kind().is_some_and(|k| k.maybe_null()) {
            if is_null {
                *r = RegState::scalar(Scalar::constant(0));
            } else {
                r.ty = RegType::Ptr(match r.kind() {
                    Some(PtrKind::MapValueOrNull { map }) => PtrKind::MapValue { map },
                    Some(PtrKind::MemOrNull { size }) => PtrKind::Mem { size },
                    Some(PtrKind::ConstMapOrNull { map }) => PtrKind::ConstMap { map },
                    Some(k) => k,
                    None => unreachable!(),
                });
                r.id = 0;
            }
        }
    });
    if is_null && ref_id != 0 {
        st.refs.retain(|&(r, _)| r != ref_id);
    }
}

/// Whether every scalar `old` compares (registers in `live`, spilled in
/// `slots`) is the same in `new`: ranges that merely include each other
/// could need different Spectre masks.
fn scalars_equal(old: &State, new: &State, live: &[u16], slots: &[u64]) -> bool {
    let same = |a: &RegState, b: &RegState| !a.is_scalar() || (b.is_scalar() && a.var == b.var);
    old.frames
        .iter()
        .zip(&new.frames)
        .enumerate()
        .all(|(fi, (o, n))| {
            let mask = live.get(fi).copied().unwrap_or(u16::MAX);
            let regs_ok = o
                .regs
                .iter()
                .zip(&n.regs)
                .enumerate()
                .all(|(ri, (a, b))| mask & (1 << ri) == 0 || same(a, b));
            let slot_mask = slots.get(fi).copied().unwrap_or(u64::MAX);
            regs_ok
                && o.stack.iter().enumerate().all(|(i, a)| {
                    if i < 64 && slot_mask & (1 << i) == 0 {
                        return true;
                    }
                    match (a.spill, n.stack.get(i).and_then(|b| b.spill)) {
                        (Some(a), Some(b)) => same(&a, &b),
                        (Some(a), None) => !a.is_scalar(),
                        _ => true,
                    }
                })
        })
}

fn src_reg(src: Src) -> Option<u8> {
    match src {
        Src::Reg(r) => Some(r.num()),
        Src::Imm(_) => None,
    }
}

fn tnum_str(v: &Scalar) -> String {
    let t = v.var_off();
    if t.is_const() {
        return (t.value() as i64).to_string();
    }
    format!("({:#x}; {:#x})", t.value(), t.mask())
}

fn alu_name(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div | AluOp::Sdiv => "/=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Mod | AluOp::Smod => "%=",
        AluOp::Xor => "^=",
        AluOp::Mov | AluOp::MovSx(_) => "=",
        AluOp::Arsh => "s>>=",
    }
}

#[derive(Clone, Copy)]
enum Stored {
    Reg(Reg, RegState),
    Imm(u64),
}

#[derive(Clone, Copy)]
enum Access {
    Read,
    Write(Stored),
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::{assemble, Syntax};

    fn run(text: &str, t: ProgType) -> Report {
        let p = Program::from_insns(assemble(text, Syntax::Llvm).unwrap()).unwrap();
        verify(&p, t, &[], &Options::default())
    }

    #[test]
    fn unprivileged_loaders_may_not_call_functions() {
        let text = "call f\nr0 = 0\nexit\nf:\nr0 = 1\nexit\n";
        let p = Program::from_insns(assemble(text, Syntax::Llvm).unwrap()).unwrap();
        let opts = Options {
            unprivileged: true,
            ..Options::default()
        };
        let r = verify(&p, ProgType::SocketFilter, &[], &opts);
        let e = r.error.expect("rejected");
        assert_eq!(e.pc, 0);
        assert!(e.message.contains("allowed for CAP_BPF"), "{}", e.message);
        assert_eq!(
            verify(&p, ProgType::SocketFilter, &[], &Options::default()).verdict,
            Verdict::Accepted
        );
    }

    #[test]
    fn instruction_limit() {
        let text = "r1 = 0\nL1:\nr1 += 1\nif r1 < 0x927c0 goto L1\nr0 = 0\nexit\n";
        let p = Program::from_insns(assemble(text, Syntax::Llvm).unwrap()).unwrap();
        // The kernel's limit, lowered to keep the debug-build test quick.
        let opts = Options {
            insn_limit: 30_000,
            ..Options::default()
        };
        let r = verify(&p, ProgType::Xdp, &[], &opts);
        let e = r.error.unwrap();
        assert_eq!(e.message, "BPF program is too large. Processed 30001 insn");
        assert_eq!(r.insns_processed, 30_001);
        // Spaced checkpoints keep the state count well below the insns.
        assert!(r.states < 30_000 / 4, "{}", r.states);
        assert_eq!(Options::default().insn_limit, 1_000_000);
    }

    #[test]
    fn pruning_keeps_the_unsafe_path() {
        // The first path to reach L1 has 8 bytes of packet proven; the
        // second has none and must not be pruned by the first.
        let text = "r0 = 0\nr2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 8\n\
                    if r4 > r3 goto L1\nr0 = 1\nL1:\nr5 = *(u8 *)(r2 + 0)\nexit\n";
        let e = run(text, ProgType::Xdp).error.unwrap();
        assert_eq!(
            (e.pc, e.message.as_str()),
            (7, "R2 offset is outside of the packet")
        );
        // With the proof on both paths the join is safe, and the second
        // path is pruned there.
        let text = "r0 = 0\nr2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 8\n\
                    if r4 > r3 goto L2\nr6 = 1\nif r0 == 0 goto L1\nr6 = 2\nL1:\nr5 = *(u8 *)(r2 + 0)\nL2:\nexit\n";
        let r = run(text, ProgType::Xdp);
        assert!(r.error.is_none(), "{:?}", r.error);
    }

    #[test]
    fn null_check_applies_to_copies() {
        let maps = [MapDef::new(MapType::Hash, 4, 8, 1)];
        let text = "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\n\
                    call 1\nr6 = r0\nif r0 == 0 goto L1\nr0 = *(u64 *)(r6 + 0)\nL1:\nr0 = 0\nexit\n";
        let p = Program::from_insns(assemble(text, Syntax::Llvm).unwrap()).unwrap();
        let r = verify(&p, ProgType::SocketFilter, &maps, &Options::default());
        assert!(r.error.is_none(), "{:?}", r.error);
        // Without the check, the copy is still maybe-null.
        let text = text.replace("if r0 == 0 goto L1\n", "");
        let p = Program::from_insns(assemble(&text, Syntax::Llvm).unwrap()).unwrap();
        let e = verify(&p, ProgType::SocketFilter, &maps, &Options::default())
            .error
            .unwrap();
        assert_eq!(e.message, "R6 invalid mem access 'map_value_or_null'");
    }

    #[test]
    fn linked_scalars_share_bounds() {
        // r2 = r1 (linked); bounding r2 bounds r1, used as a stack index.
        let text =
            "r1 = *(u32 *)(r1 + 0)\nr2 = r1\nif r2 > 7 goto L1\nr3 = r10\nr3 += -8\nr3 += r1\n\
                    r4 = 0\n*(u8 *)(r3 + 0) = r4\nL1:\nr0 = 0\nexit\n";
        let r = run(text, ProgType::SocketFilter);
        assert!(r.error.is_none(), "{:?}", r.error);
    }

    #[test]
    fn ringbuf_reference_must_be_released() {
        let maps = [MapDef::new(MapType::Ringbuf, 0, 0, 4096)];
        let reserve = "ld_pseudo r1, 0x5, 0x0\nr2 = 8\nr3 = 0\ncall 0x83\nif r0 == 0 goto L1\n";
        let leak = format!("{reserve}r1 = 1\n*(u64 *)(r0 + 0) = r1\nL1:\nr0 = 0\nexit\n");
        let p = Program::from_insns(assemble(&leak, Syntax::Llvm).unwrap()).unwrap();
        let e = verify(&p, ProgType::Xdp, &maps, &Options::default())
            .error
            .unwrap();
        assert_eq!(
            e.message,
            "BPF_EXIT instruction in main prog would lead to reference leak"
        );
        assert!(
            e.context.contains("Unreleased reference id=2 alloc_insn=4"),
            "{}",
            e.context
        );
        let ok = format!(
            "{reserve}r1 = 1\n*(u64 *)(r0 + 0) = r1\nr1 = r0\nr2 = 0\ncall 0x84\nL1:\nr0 = 0\nexit\n"
        );
        let p = Program::from_insns(assemble(&ok, Syntax::Llvm).unwrap()).unwrap();
        let r = verify(&p, ProgType::Xdp, &maps, &Options::default());
        assert!(r.error.is_none(), "{:?}", r.error);
    }
}
