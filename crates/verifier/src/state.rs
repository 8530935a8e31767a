//! Abstract machine state: registers, stack slots, frames.
//!
//! A register is not initialised, a scalar ([`Scalar`]), or a pointer of
//! some [`PtrKind`] with a fixed offset (`off`) and a variable offset
//! (`var`, a [`Scalar`]). Stack slots are tracked per 8-byte slot and per
//! byte (invalid, misc, zero, spilled register), one stack per frame.

use std::fmt;

use crate::domain::scalar::Scalar;

/// Stack size of one frame, as the kernel (`MAX_BPF_STACK`).
pub const STACK_SIZE: i64 = 512;
/// Number of 8-byte slots of one frame.
pub const SLOTS: usize = 64;

/// What a pointer points to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PtrKind {
    /// The program's context (`PTR_TO_CTX`).
    Ctx,
    /// The stack of frame `frame` (`PTR_TO_STACK`).
    Stack {
        /// Frame number (0 = main program).
        frame: u8,
    },
    /// Packet data (`PTR_TO_PACKET`).
    Packet,
    /// Packet metadata (`PTR_TO_PACKET_META`).
    PacketMeta,
    /// End of packet data (`PTR_TO_PACKET_END`).
    PacketEnd,
    /// A value of map `map` (`PTR_TO_MAP_VALUE`).
    MapValue {
        /// Index in the map table.
        map: u32,
    },
    /// A map value or NULL (`PTR_TO_MAP_VALUE | PTR_MAYBE_NULL`).
    MapValueOrNull {
        /// Index in the map table.
        map: u32,
    },
    /// The map itself (`CONST_PTR_TO_MAP`).
    ConstMap {
        /// Index in the map table.
        map: u32,
    },
    /// A map or NULL (lookup in a map of maps).
    ConstMapOrNull {
        /// Index in the map table (the inner map's template).
        map: u32,
    },
    /// Memory of `size` bytes returned by a helper (`PTR_TO_MEM`, ring
    /// buffer records).
    Mem {
        /// Size in bytes.
        size: u32,
    },
    /// Memory of `size` bytes or NULL.
    MemOrNull {
        /// Size in bytes.
        size: u32,
    },
    /// A subprogram, from `ld_imm64` with src 4 (`PTR_TO_FUNC`), passed to
    /// callback-calling helpers.
    Func {
        /// The subprogram's first slot.
        pc: u32,
    },
    /// A key of map `map`, read-only, as for_each_map_elem's callback
    /// receives it (`PTR_TO_MAP_KEY`).
    MapKey {
        /// Index in the map table.
        map: u32,
    },
}

impl PtrKind {
    /// The kernel's name of the type (`reg_type_str`).
    pub fn name(self) -> &'static str {
        match self {
            PtrKind::Ctx => "ctx",
            PtrKind::Stack { .. } => "fp",
            PtrKind::Packet => "pkt",
            PtrKind::PacketMeta => "pkt_meta",
            PtrKind::PacketEnd => "pkt_end",
            PtrKind::MapValue { .. } => "map_value",
            PtrKind::MapValueOrNull { .. } => "map_value_or_null",
            PtrKind::ConstMap { .. } => "map_ptr",
            PtrKind::ConstMapOrNull { .. } => "map_ptr_or_null",
            PtrKind::Mem { .. } => "ringbuf_mem",
            PtrKind::MemOrNull { .. } => "ringbuf_mem_or_null",
            PtrKind::Func { .. } => "func",
            PtrKind::MapKey { .. } => "map_key",
        }
    }

    /// Whether the pointer may be NULL.
    pub fn maybe_null(self) -> bool {
        matches!(
            self,
            PtrKind::MapValueOrNull { .. }
                | PtrKind::MemOrNull { .. }
                | PtrKind::ConstMapOrNull { .. }
        )
    }
}

/// The type of a register.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RegType {
    /// Never written (`NOT_INIT`).
    NotInit,
    /// A number (`SCALAR_VALUE`).
    Scalar,
    /// A pointer.
    Ptr(PtrKind),
}

/// One register's abstract value.
#[derive(Clone, Copy, Debug)]
pub struct RegState {
    /// Type.
    pub ty: RegType,
    /// Fixed offset (pointers).
    pub off: i64,
    /// The value (scalars) or the variable offset (pointers).
    pub var: Scalar,
    /// Identity: scalars copied from one another, packet pointers with the
    /// same variable part, maybe-null pointers from one helper call.
    pub id: u32,
    /// Reference (acquired resource, e.g. a ring buffer record), 0 if none.
    pub ref_id: u32,
    /// Packet pointers: bytes known to be in the packet from `ptr - off`.
    pub range: i64,
    /// Scalars in explored states: some check on a path from here depended
    /// on this value's range, so pruning must compare it (the kernel's
    /// `precise`). Not part of equality: it is bookkeeping, not a value.
    pub precise: bool,
}

impl std::hash::Hash for RegState {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (
            self.ty,
            self.off,
            self.var,
            self.id,
            self.ref_id,
            self.range,
        )
            .hash(h);
    }
}

impl PartialEq for RegState {
    fn eq(&self, o: &RegState) -> bool {
        self.ty == o.ty
            && self.off == o.off
            && self.var == o.var
            && self.id == o.id
            && self.ref_id == o.ref_id
            && self.range == o.range
    }
}

impl RegState {
    /// A register never written.
    pub const NOT_INIT: RegState = RegState {
        ty: RegType::NotInit,
        off: 0,
        var: Scalar::unknown(),
        id: 0,
        ref_id: 0,
        range: 0,
        precise: false,
    };

    /// A scalar with value `v`.
    pub fn scalar(v: Scalar) -> RegState {
        RegState {
            ty: RegType::Scalar,
            var: v,
            ..RegState::NOT_INIT
        }
    }

    /// An unknown scalar.
    pub fn unknown() -> RegState {
        RegState::scalar(Scalar::unknown())
    }

    /// A pointer of `kind` at offset 0.
    pub fn ptr(kind: PtrKind) -> RegState {
        RegState {
            ty: RegType::Ptr(kind),
            var: Scalar::constant(0),
            ..RegState::NOT_INIT
        }
    }

    /// The pointer kind, if a pointer.
    pub fn kind(&self) -> Option<PtrKind> {
        match self.ty {
            RegType::Ptr(k) => Some(k),
            _ => None,
        }
    }

    /// Whether this is a scalar.
    pub fn is_scalar(&self) -> bool {
        self.ty == RegType::Scalar
    }

    /// Whether this is a known constant scalar.
    pub fn const_value(&self) -> Option<u64> {
        if self.is_scalar() {
            self.var.const_value()
        } else {
            None
        }
    }

    /// Whether every concrete value of `new` is one of `self`'s, with
    /// `ids` mapping identities consistently (old id -> new id). With
    /// `precision`, a scalar of `self` not marked [`precise`](Self::precise)
    /// includes every scalar: no check after it depended on its range.
    pub fn includes(&self, new: &RegState, ids: &mut IdMap, precision: bool) -> bool {
        match (self.ty, new.ty) {
            (RegType::NotInit, _) => true,
            (RegType::Scalar, RegType::Scalar) if precision && !self.precise => true,
            (RegType::Scalar, RegType::Scalar) => {
                self.var.includes(&new.var) && (self.id == 0 || ids.check(self.id, new.id))
            }
            (RegType::Ptr(a), RegType::Ptr(b)) => {
                a == b
                    && self.off == new.off
                    && self.var.includes(&new.var)
                    && self.range <= new.range
                    && ids.check(self.id, new.id)
                    && ids.check(self.ref_id, new.ref_id)
            }
            _ => false,
        }
    }
}

/// A consistent renaming of identities between two states.
#[derive(Default, Debug)]
pub struct IdMap(Vec<(u32, u32)>);

impl IdMap {
    /// Records `old -> new`; false when it contradicts an earlier pair.
    pub fn check(&mut self, old: u32, new: u32) -> bool {
        if old == 0 && new == 0 {
            return true;
        }
        if old == 0 || new == 0 {
            return false;
        }
        for &(o, n) in &self.0 {
            if o == old || n == new {
                return o == old && n == new;
            }
        }
        self.0.push((old, new));
        true
    }
}

/// What one byte of the stack holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SlotByte {
    /// Never written (`STACK_INVALID`).
    Invalid,
    /// Some unknown data (`STACK_MISC`).
    Misc,
    /// Known zero (`STACK_ZERO`).
    Zero,
    /// Part of a spilled register (`STACK_SPILL`).
    Spill,
}

impl SlotByte {
    fn letter(self) -> char {
        match self {
            SlotByte::Invalid => '?',
            SlotByte::Misc => 'm',
            SlotByte::Zero => '0',
            SlotByte::Spill => 'r',
        }
    }
}

/// One 8-byte stack slot.
#[derive(Clone, Copy, PartialEq, Hash, Debug)]
pub struct Slot {
    /// Byte kinds, lowest address first.
    pub bytes: [SlotByte; 8],
    /// The spilled register when the bytes from the lowest address are
    /// `Spill`: all 8, or fewer for a narrow scalar spill (its low bytes;
    /// the others are then `Misc` or `Zero`).
    pub spill: Option<RegState>,
}

impl Slot {
    /// A slot never written.
    pub const INVALID: Slot = Slot {
        bytes: [SlotByte::Invalid; 8],
        spill: None,
    };

    /// How many bytes the spilled register covers (0 without a spill).
    pub fn spill_size(&self) -> i64 {
        if self.spill.is_none() {
            return 0;
        }
        self.bytes
            .iter()
            .take_while(|&&b| b == SlotByte::Spill)
            .count() as i64
    }

    fn includes(
        &self,
        new: &Slot,
        ids: &mut IdMap,
        uninit_readable: bool,
        precision: bool,
    ) -> bool {
        if let Some(old) = &self.spill {
            // An imprecise scalar spill promises only some number: its
            // bytes compare as unknown data (which any data includes).
            if precision && old.is_scalar() && !old.precise {
                let data = Slot {
                    bytes: self.bytes.map(|b| {
                        if b == SlotByte::Spill {
                            SlotByte::Misc
                        } else {
                            b
                        }
                    }),
                    spill: None,
                };
                return data.includes(new, ids, uninit_readable, precision);
            }
            return match &new.spill {
                Some(n) => self.bytes == new.bytes && old.includes(n, ids, precision),
                None => false,
            };
        }
        let read_as_unknown = |b: SlotByte| {
            matches!(b, SlotByte::Misc) || (uninit_readable && b == SlotByte::Invalid)
        };
        // The new slot holding a spilled scalar reads as that scalar, or
        // as unknown bytes: all included by unknown bytes.
        let new_scalar_spill = new.spill.is_some_and(|s| s.is_scalar());
        self.bytes.iter().zip(new.bytes.iter()).all(|(&o, &n)| {
            if o == SlotByte::Invalid && !uninit_readable {
                return true;
            }
            if read_as_unknown(o) {
                return n != SlotByte::Spill || new_scalar_spill;
            }
            o == n
        })
    }
}

/// One function's frame.
#[derive(Clone, PartialEq, Hash, Debug)]
pub struct Frame {
    /// Registers r0-r10.
    pub regs: [RegState; 11],
    /// Stack slots; slot `i` covers bytes `[-8(i+1), -8i)` from the frame
    /// pointer. Grows on demand; missing slots are invalid.
    pub stack: Vec<Slot>,
    /// The call instruction that made this frame (0 for the main frame).
    pub callsite: usize,
    /// Subprogram index.
    pub subprog: usize,
    /// How many times the callback of the callback-calling helper this
    /// frame is calling has been entered on this path (the kernel's
    /// `callback_depth`, bounding bpf_loop's unrolling by its count).
    pub callback_depth: u32,
}

impl Frame {
    /// A frame with no register initialised but r10.
    pub fn new(frame_no: u8, callsite: usize, subprog: usize) -> Frame {
        let mut regs = [RegState::NOT_INIT; 11];
        regs[10] = RegState::ptr(PtrKind::Stack { frame: frame_no });
        Frame {
            regs,
            stack: Vec::new(),
            callsite,
            subprog,
            callback_depth: 0,
        }
    }
}

/// A multiply-rotate hash (as rustc's `FxHasher`) for
/// [`State::fingerprint`]: the fingerprint only filters candidates before a
/// full comparison, so it needs speed, not resistance to chosen collisions,
/// and the default SipHash took a third of the time on loop-heavy programs.
struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
}

/// A whole verifier state: the call stack and held references.
#[derive(Clone, PartialEq, Hash, Debug)]
pub struct State {
    /// Frames, the current one last.
    pub frames: Vec<Frame>,
    /// Held references: (id, instruction that acquired it).
    pub refs: Vec<(u32, usize)>,
}

impl State {
    /// A hash of the state (precision marks aside): equal states have
    /// equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // A few words per register and the shapes only: hashing every
        // field of every register and stack slot took a fifth of the time
        // of loop-heavy programs (it runs at each prune point inside a
        // loop), and states that agree on these are told apart by the
        // full comparison after a match.
        let mut h = FastHasher(0);
        h.add(self.frames.len() as u64);
        h.add(self.refs.len() as u64);
        for f in &self.frames {
            for r in &f.regs {
                let tag = match r.ty {
                    RegType::NotInit => continue,
                    RegType::Scalar => 1,
                    RegType::Ptr(k) => {
                        let mut kh = FastHasher(2);
                        k.hash(&mut kh);
                        kh.finish()
                    }
                };
                h.add(tag ^ (r.off as u64).rotate_left(17));
                h.add(r.var.umin() ^ r.var.umax().rotate_left(32));
            }
            h.add(f.stack.len() as u64);
            h.add(f.callsite as u64);
        }
        h.finish()
    }

    /// A state of no frame (allocates nothing): what is left where a state
    /// was moved out.
    pub fn empty() -> State {
        State {
            frames: Vec::new(),
            refs: Vec::new(),
        }
    }

    /// The current frame.
    pub fn cur(&self) -> &Frame {
        self.frames.last().expect("at least one frame")
    }

    /// The current frame, mutable.
    pub fn cur_mut(&mut self) -> &mut Frame {
        self.frames.last_mut().expect("at least one frame")
    }

    /// Whether every execution from `new` is covered by one from `self`
    /// (`self` is an explored state). `uninit_readable`: reading an
    /// invalid stack byte gives an unknown value instead of an error.
    pub fn includes(&self, new: &State, uninit_readable: bool) -> bool {
        let all = vec![u16::MAX; self.frames.len()];
        let slots = vec![u64::MAX; self.frames.len()];
        self.includes_live(new, uninit_readable, &all, &slots, false)
    }

    /// [`State::includes`], comparing in frame `i` only the registers in
    /// the bit mask `live[i]` (the others are never read again before
    /// being written, on any path), and only the stack slots in the bit
    /// mask `slots[i]` (the others are overwritten before any read). With
    /// `precision`, scalars of `self` not marked precise include any scalar.
    pub fn includes_live(
        &self,
        new: &State,
        uninit_readable: bool,
        live: &[u16],
        slots: &[u64],
        precision: bool,
    ) -> bool {
        if self.frames.len() != new.frames.len() || self.refs.len() != new.refs.len() {
            return false;
        }
        let mut ids = IdMap::default();
        for (fi, (o, n)) in self.frames.iter().zip(new.frames.iter()).enumerate() {
            if o.callsite != n.callsite || o.subprog != n.subprog {
                return false;
            }
            let mask = live.get(fi).copied().unwrap_or(u16::MAX);
            for (ri, (a, b)) in o.regs.iter().zip(n.regs.iter()).enumerate() {
                if mask & (1 << ri) != 0 && !a.includes(b, &mut ids, precision) {
                    return false;
                }
            }
            let slot_mask = slots.get(fi).copied().unwrap_or(u64::MAX);
            for i in 0..o.stack.len().max(n.stack.len()) {
                if i < 64 && slot_mask & (1 << i) == 0 {
                    continue;
                }
                let a = o.stack.get(i).unwrap_or(&Slot::INVALID);
                let b = n.stack.get(i).unwrap_or(&Slot::INVALID);
                if !a.includes(b, &mut ids, uninit_readable, precision) {
                    return false;
                }
            }
        }
        self.refs
            .iter()
            .zip(new.refs.iter())
            .all(|(a, b)| ids.check(a.0, b.0))
    }

    /// Applies `f` to every register and spilled register of every frame.
    pub fn for_each_reg(&mut self, mut f: impl FnMut(&mut RegState)) {
        for fr in &mut self.frames {
            for r in fr.regs.iter_mut() {
                f(r);
            }
            for s in fr.stack.iter_mut() {
                if let Some(r) = s.spill.as_mut() {
                    f(r);
                }
            }
        }
    }
}

impl fmt::Display for RegState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ty {
            RegType::NotInit => f.write_str("?"),
            RegType::Scalar => {
                if self.id != 0 && !self.var.is_const() {
                    let s = self.var.to_string();
                    let rest = s.strip_prefix("scalar(").unwrap_or("");
                    if rest == ")" {
                        write!(f, "scalar(id={})", self.id)
                    } else {
                        write!(f, "scalar(id={},{}", self.id, rest)
                    }
                } else {
                    write!(f, "{}", self.var)
                }
            }
            RegType::Ptr(PtrKind::Stack { .. }) if self.var.const_value() == Some(0) => {
                write!(f, "fp{}", self.off)
            }
            RegType::Ptr(k) => {
                let mut parts = Vec::new();
                if self.id != 0 {
                    parts.push(format!("id={}", self.id));
                }
                if self.ref_id != 0 {
                    parts.push(format!("ref_obj_id={}", self.ref_id));
                }
                match k {
                    PtrKind::MapValue { map }
                    | PtrKind::MapValueOrNull { map }
                    | PtrKind::ConstMap { map }
                    | PtrKind::ConstMapOrNull { map } => parts.push(format!("map=#{map}")),
                    PtrKind::Mem { size } | PtrKind::MemOrNull { size } => {
                        parts.push(format!("sz={size}"))
                    }
                    _ => {}
                }
                if self.off != 0 {
                    parts.push(format!("off={}", self.off));
                }
                if matches!(k, PtrKind::Packet | PtrKind::PacketMeta) {
                    parts.push(format!("r={}", self.range));
                }
                if self.var.const_value() != Some(0) {
                    let s = self.var.to_string();
                    let inner = s
                        .strip_prefix("scalar(")
                        .and_then(|s| s.strip_suffix(')'))
                        .unwrap_or(&s)
                        .to_string();
                    if !inner.is_empty() {
                        parts.push(inner);
                    }
                }
                write!(f, "{}({})", k.name(), parts.join(","))
            }
        }
    }
}

impl fmt::Display for Frame {
    /// Initialised registers as `R1=ctx() R10=fp0`, then stack slots that
    /// are not invalid as `fp-8=mmmmmmmm` or `fp-8=ctx()` for spills.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (i, r) in self.regs.iter().enumerate() {
            if r.ty != RegType::NotInit {
                write!(f, "{sep}R{i}={r}")?;
                sep = " ";
            }
        }
        for (i, s) in self.stack.iter().enumerate() {
            let off = -8 * (i as i64 + 1);
            if let Some(r) = &s.spill {
                write!(f, "{sep}fp{off}={r}")?;
            } else if s.bytes.iter().any(|b| *b != SlotByte::Invalid) {
                let text: String = s.bytes.iter().rev().map(|b| b.letter()).collect();
                write!(f, "{sep}fp{off}={text}")?;
            } else {
                continue;
            }
            sep = " ";
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let mut f = Frame::new(0, 0, 0);
        f.regs[1] = RegState::ptr(PtrKind::Ctx);
        f.regs[2] = RegState::scalar(Scalar::constant(7));
        f.stack.push(Slot {
            bytes: [SlotByte::Spill; 8],
            spill: Some(RegState::scalar(Scalar::constant(3))),
        });
        State {
            frames: vec![f],
            refs: Vec::new(),
        }
    }

    #[test]
    fn equal_states_have_equal_fingerprints() {
        let a = state();
        // Precision marks are bookkeeping: not part of equality, nor of
        // the fingerprint.
        let mut b = a.clone();
        b.frames[0].regs[2].precise = true;
        if let Some(r) = b.frames[0].stack[0].spill.as_mut() {
            r.precise = true;
        }
        assert!(a == b);
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn fingerprint_tells_registers_apart() {
        let a = state();
        for change in [
            |s: &mut State| s.frames[0].regs[2] = RegState::scalar(Scalar::constant(8)),
            |s: &mut State| s.frames[0].regs[3] = RegState::unknown(),
            |s: &mut State| s.frames[0].regs[1].off = 4,
            |s: &mut State| s.frames[0].regs[1] = RegState::ptr(PtrKind::Packet),
            |s: &mut State| s.frames.push(Frame::new(1, 5, 1)),
        ] {
            let mut b = a.clone();
            change(&mut b);
            assert_ne!(a.fingerprint(), b.fingerprint(), "{b:?}");
        }
        // A stack-only difference may share the fingerprint: equality
        // (which the fingerprint only filters for) still tells them apart.
        let mut b = a.clone();
        b.frames[0].stack[0].spill = Some(RegState::scalar(Scalar::constant(4)));
        assert!(a != b);
    }
}
