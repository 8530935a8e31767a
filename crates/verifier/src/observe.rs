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
/// memory, function and map-key pointers) are not checked.
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
        // Not generated yet (helper memory, callbacks' function and key
        // pointers; the runtime has no callback helpers).
        PtrKind::Mem { .. }
        | PtrKind::MemOrNull { .. }
        | PtrKind::Func { .. }
        | PtrKind::MapKey { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scalar::Scalar;

    fn layout() -> Layout {
        Layout {
            stack_top: 0x10_0000,
            ctx: 0x2000,
            packet: Some([0x3000 - 8, 0x3000, 0x3000 + 60]),
            maps: vec![(0xdead_0000, vec![0x5000, 0x5100])],
        }
    }

    fn ptr(kind: PtrKind, off: i64, var: Scalar) -> RegState {
        RegState {
            off,
            var,
            ..RegState::ptr(kind)
        }
    }

    #[test]
    fn scalars_and_uninitialised_registers() {
        let l = layout();
        let r = RegState::scalar(Scalar::from_range(10, 20));
        assert!(contains(&r, 10, 0, &l) && contains(&r, 20, 0, &l));
        assert!(!contains(&r, 21, 0, &l) && !contains(&r, 9, 0, &l));
        assert!(contains(&RegState::NOT_INIT, 12345, 0, &l));
    }

    #[test]
    fn pointers_map_back_to_their_regions() {
        let l = layout();
        // fp-16 in frame 0, seen from frame 0 and from a callee.
        let fp = ptr(PtrKind::Stack { frame: 0 }, -16, Scalar::constant(0));
        assert!(contains(&fp, 0x10_0000 - 16, 0, &l) && contains(&fp, 0x10_0000 - 16, 1, &l));
        assert!(!contains(&fp, 0x10_0000 - 8, 0, &l));
        // A frame-1 pointer does not exist in frame 0.
        let fp1 = ptr(PtrKind::Stack { frame: 1 }, -8, Scalar::constant(0));
        assert!(contains(&fp1, 0x10_0000 - 512 - 8, 1, &l));
        assert!(!contains(&fp1, 0x10_0000 - 512 - 8, 0, &l));
        // Map values: any value of the map, NULL only when maybe-null.
        let v = ptr(PtrKind::MapValue { map: 0 }, 4, Scalar::from_range(0, 8));
        assert!(contains(&v, 0x5104, 0, &l) && contains(&v, 0x500c, 0, &l));
        assert!(!contains(&v, 0x5010, 0, &l) && !contains(&v, 0, 0, &l));
        let n = ptr(PtrKind::MapValueOrNull { map: 0 }, 0, Scalar::constant(0));
        assert!(contains(&n, 0, 0, &l) && contains(&n, 0x5100, 0, &l));
        let m = ptr(PtrKind::ConstMap { map: 0 }, 0, Scalar::constant(0));
        assert!(contains(&m, 0xdead_0000, 0, &l) && !contains(&m, 0x5000, 0, &l));
        let c = ptr(PtrKind::Ctx, 0, Scalar::constant(0));
        assert!(contains(&c, 0x2000, 0, &l) && !contains(&c, 0x2004, 0, &l));
    }

    #[test]
    fn packet_pointers_respect_their_range() {
        let l = layout();
        let mut p = ptr(PtrKind::Packet, 2, Scalar::from_range(0, 40));
        p.range = 10;
        // ptr - off = data + 30, and 10 bytes from there end at data + 40.
        assert!(contains(&p, 0x3000 + 32, 0, &l));
        // ptr - off = data + 55: only 5 bytes are left, not 10.
        p.var = Scalar::from_range(0, 60);
        assert!(!contains(&p, 0x3000 + 57, 0, &l));
        let end = ptr(PtrKind::PacketEnd, 0, Scalar::constant(0));
        assert!(contains(&end, 0x3000 + 60, 0, &l) && !contains(&end, 0x3000 + 59, 0, &l));
        let mut meta = ptr(PtrKind::PacketMeta, 0, Scalar::constant(0));
        meta.range = 8;
        assert!(contains(&meta, 0x3000 - 8, 0, &l));
        meta.range = 9;
        assert!(!contains(&meta, 0x3000 - 8, 0, &l));
    }
}
