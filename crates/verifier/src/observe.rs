//! Observing the verifier, for soundness checks.
//!
//! With [`Options::record_states`](crate::Options::record_states) the
//! [`Report`](crate::Report) carries, for every instruction slot, the
//! abstract registers of the current frame at every visit ([`Observed`]).
//! [`Observed::check`] then asks whether a concrete register file, taken
//! from a real run just before the same instruction, lies inside one of
//! them: scalars in the tnum and all four bounds, pointers in the right
//! region at an offset the verifier allowed, packet pointers no further
//! from the end than their proven range.
//!
//! Pruning must be off for that question to be fair
//! ([`Options::prune`](crate::Options::prune)): a pruned path continues
//! as the explored state that covered it, so its registers need only lie
//! in *that* state, and with precision tracking an explored state may be
//! recorded with imprecise scalars that a concrete path through the pruned
//! one does not satisfy downstream. Without pruning every concrete path
//! follows one explored abstract path, instruction by instruction.

use std::fmt;

use crate::state::{PtrKind, RegState, RegType, State};

/// The registers of the current frame at one visit of an instruction.
#[derive(Clone, PartialEq, Debug)]
pub struct Visit {
    /// Call depth (0: the main program).
    pub depth: u8,
    /// `r0`-`r10`.
    pub regs: [RegState; 11],
}

/// The abstract registers at every visit of every instruction.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Visits by instruction slot.
    pub at: Vec<Vec<Visit>>,
}

/// Where a concrete run put things, to map addresses back to what the
/// verifier calls them.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// `r10` of the main program; frame `k`'s is `STACK_SIZE * k` lower.
    pub stack_top: u64,
    /// Address of the context (`r1` on entry).
    pub ctx: u64,
    /// `data_meta`, `data`, `data_end` (packet programs).
    pub packet: Option<[u64; 3]>,
    /// By map index: the value of an `lddw` of the map, and the start of
    /// every value a lookup may return.
    pub maps: Vec<(u64, Vec<u64>)>,
}

/// A concrete state outside every abstract state recorded for its
/// instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Instruction slot.
    pub pc: usize,
    /// The concrete registers.
    pub regs: [u64; 11],
    /// What failed: the registers outside the closest recorded state.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "insn {}: {}", self.pc, self.detail)
    }
}

/// Bytes of stack per frame, as the engines lay frames out.
const FRAME: u64 = crate::state::STACK_SIZE as u64;

impl Observed {
    pub(crate) fn new(slots: usize) -> Observed {
        Observed {
            at: vec![Vec::new(); slots],
        }
    }

    pub(crate) fn record(&mut self, pc: usize, st: &State) {
        let Some(at) = self.at.get_mut(pc) else {
            return;
        };
        let visit = Visit {
            depth: (st.frames.len() - 1) as u8,
            regs: st.cur().regs,
        };
        // Loop iterations and re-joined branches often repeat a state.
        if !at.iter().rev().take(8).any(|v| *v == visit) {
            at.push(visit);
        }
    }

    /// Number of visits recorded.
    pub fn visits(&self) -> usize {
        self.at.iter().map(Vec::len).sum()
    }

    /// Whether the concrete registers `regs` before instruction `pc` lie
    /// inside one visit recorded there (at the call depth `r10` shows).
    pub fn check(&self, pc: usize, regs: &[u64; 11], layout: &Layout) -> Result<(), Violation> {
        let depth = layout.stack_top.wrapping_sub(regs[10]) / FRAME;
        let visits = self.at.get(pc).map(Vec::as_slice).unwrap_or(&[]);
        let mut best: Option<(usize, String)> = None;
        for v in visits.iter().filter(|v| u64::from(v.depth) == depth) {
            let bad: Vec<String> = (0..11)
                .filter(|&r| !contains(&v.regs[r], regs[r], v.depth, layout))
                .map(|r| format!("R{r}={:#x} not in {}", regs[r], v.regs[r]))
                .collect();
            if bad.is_empty() {
                return Ok(());
            }
            if !matches!(&best, Some((n, _)) if *n <= bad.len()) {
                best = Some((bad.len(), bad.join(", ")));
            }
        }
        let detail = match best {
            Some((_, d)) => format!(
                "outside all {} recorded states at depth {depth}; closest: {d}",
                visits.len()
            ),
            None => format!("never reached by the verifier at depth {depth}"),
        };
        Err(Violation {
            pc,
            regs: *regs,
            detail,
        })
    }
}

/// Whether the concrete value `v` is one the abstract register `r` of a
/// frame at `depth` allows. Kinds no generator produces yet (helper
/// memory) are not checked.
pub fn contains(r: &RegState, v: u64, depth: u8, layout: &Layout) -> bool {
    let kind = match r.ty {
        RegType::NotInit => return true,
        RegType::Scalar => return r.var.contains(v),
        RegType::Ptr(k) => k,
    };
    // The pointer is `base + off + var` for one of the candidate bases.
    let at = |base: u64| {
        r.var
            .contains(v.wrapping_sub(base).wrapping_sub(r.off as u64))
    };
    let map = |m: u32| layout.maps.get(m as usize);
    match kind {
        PtrKind::Ctx => at(layout.ctx),
        PtrKind::Stack { frame } => {
            // A pointer into a caller's frame keeps that frame's number.
            frame <= depth && at(layout.stack_top.wrapping_sub(u64::from(frame) * FRAME))
        }
        PtrKind::Packet | PtrKind::PacketMeta | PtrKind::PacketEnd => {
            let Some([meta, data, end]) = layout.packet else {
                return false;
            };
            let (base, limit) = match kind {
                PtrKind::Packet => (data, end),
                PtrKind::PacketMeta => (meta, data),
                _ => return at(end),
            };
            if !at(base) {
                return false;
            }
            // `range` bytes from `ptr - off` are known to be inside.
            let start = v.wrapping_sub(r.off as u64);
            r.range <= 0
                || (start >= base
                    && start
                        .checked_add(r.range as u64)
                        .is_some_and(|e| e <= limit))
        }
        PtrKind::MapValue { map: m } => map(m).is_some_and(|(_, vals)| vals.iter().any(|&b| at(b))),
        PtrKind::MapValueOrNull { map: m } => {
            v == 0 || map(m).is_some_and(|(_, vals)| vals.iter().any(|&b| at(b)))
        }
        PtrKind::ConstMap { map: m } => map(m).is_some_and(|&(a, _)| at(a)),
        PtrKind::ConstMapOrNull { map: m } => v == 0 || map(m).is_some_and(|&(a, _)| at(a)),
        PtrKind::Mem { .. } | PtrKind::MemOrNull { .. } => true,
    }
}
