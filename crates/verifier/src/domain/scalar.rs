//! Scalars: what the verifier knows about a register holding a number.
//!
//! # Model
//!
//! A [`Scalar`] is nine constraints on a 64-bit register value `x`, the
//! ones the Linux verifier keeps in `struct bpf_reg_state`:
//!
//! - a [`Tnum`] (`var_off`): the bits of `x` that are known;
//! - `umin <= x <= umax` reading `x` as unsigned, `smin <= x <= smax`
//!   reading it as two's complement;
//! - the same four bounds on the low 32 bits (`u32_min`, `u32_max`,
//!   `s32_min`, `s32_max`), which 32-bit ALU operations and `JMP32`
//!   comparisons work on.
//!
//! It stands for the set of values meeting all nine ([`Scalar::contains`]).
//! The constraints overlap: [`Scalar::sync`] re-derives each from the
//! others (tnum to bounds, 64 to 32 bits and back, signed to unsigned and
//! back, bounds to tnum) until nothing changes, and reports a contradiction
//! (an empty set: the path is impossible) as `None`. Every public operation
//! returns a synced scalar.
//!
//! # Lattice
//!
//! Scalars are ordered by the inclusion of the nine constraints one by one,
//! which implies inclusion of the sets. [`Scalar::includes`] decides that
//! order; the verifier prunes a state when an already verified one includes
//! it. [`Scalar::join`] (tnum union, interval hulls) is the least upper
//! bound, used when merging states; [`Scalar::intersect`] is the meet. Top
//! is [`Scalar::unknown`]; bottom (the empty set) is not a value, it is the
//! `None` of the fallible operations.
//!
//! # Soundness
//!
//! Every operation over-approximates its concrete twin, the semantics of
//! RFC 9669 section 4 (ALU, byte swaps, jumps): for all `x` in `a` and `y`
//! in `b`, `x op y` is in `a.op(b)`; [`refine`] keeps every pair of values
//! for which the branch outcome happens; [`branch_taken`] only decides an
//! outcome that holds for every pair; [`Scalar::sync`] and
//! [`Scalar::join`] lose no member. The property tests at the end of this
//! file check each of these claims on random scalars and members. The
//! converse does not hold: a scalar that [`Scalar::sync`] accepts may still
//! be empty when the nine constraints only conflict jointly.
//!
//! # Relation to the kernel
//!
//! [`Scalar::sync`] plays the part of `reg_bounds_sync` (tnum to bounds,
//! the 32/64-bit and sign deductions, bounds to tnum), the ALU operations
//! that of `adjust_scalar_min_max_vals`, [`branch_taken`] of
//! `is_branch_taken` and [`refine`] of `reg_set_min_max`. The code is our
//! own, written from those semantics, and differs on purpose where that is
//! simpler or more precise:
//!
//! - `sync` iterates to a fixpoint instead of a fixed sequence of steps,
//!   and moves each bound to the nearest value the tnum allows.
//! - All four bounds go through one `i128` interval arithmetic
//!   ([`super::bounds`]) that wraps exactly when a result does not straddle
//!   the modulus; a 32-bit operation is the 64-bit one on the low halves,
//!   zero-extended.
//! - `and`, `or` and `xor` bound intervals exactly (the extremes over two
//!   intervals, not only what the tnum implies); `rem` by a constant is
//!   exact within one quotient.
//! - Shifts by a non-constant amount join the results of every count the
//!   masked amount allows; byte swaps permute the tnum instead of giving up.

use std::fmt;

use bpfkit_isa::{AluOp, Cond, SignExtFrom, Width};

use super::bounds::{Interval, Kind};
use super::tnum::Tnum;

/// Rounds of [`Scalar::sync`] before it settles for what it has (always
/// sound; the limit only bounds the time spent on rare slow chains).
const MAX_SYNC_ROUNDS: usize = 16;

/// A register holding a number: known bits plus unsigned and signed
/// bounds, on 64 and on the low 32 bits. See the [module docs](self).
#[doc(alias = "bpf_reg_state")]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Scalar {
    var_off: Tnum,
    umin: u64,
    umax: u64,
    smin: i64,
    smax: i64,
    u32_min: u32,
    u32_max: u32,
    s32_min: i32,
    s32_max: i32,
}

/// Index of a kind in a `[Interval; 4]`.
const fn ix(k: Kind) -> usize {
    match k {
        Kind::U64 => 0,
        Kind::S64 => 1,
        Kind::U32 => 2,
        Kind::S32 => 3,
    }
}

/// The four bounds, all full.
const FULL: [Interval; 4] = [
    Interval::full(Kind::U64),
    Interval::full(Kind::S64),
    Interval::full(Kind::U32),
    Interval::full(Kind::S32),
];

/// The unsigned and signed kinds that a comparison of `width` reads.
const fn kinds_of(width: Width) -> (Kind, Kind) {
    match width {
        Width::W64 => (Kind::U64, Kind::S64),
        Width::W32 => (Kind::U32, Kind::S32),
    }
}

/// The number of bits of an operation of `width`.
const fn width_bits(width: Width) -> u32 {
    match width {
        Width::W64 => 64,
        Width::W32 => 32,
    }
}

impl Scalar {
    /// Any value: the top of the lattice.
    pub const fn unknown() -> Scalar {
        Scalar {
            var_off: Tnum::UNKNOWN,
            umin: 0,
            umax: u64::MAX,
            smin: i64::MIN,
            smax: i64::MAX,
            u32_min: 0,
            u32_max: u32::MAX,
            s32_min: i32::MIN,
            s32_max: i32::MAX,
        }
    }

    /// Exactly `c`.
    pub const fn constant(c: u64) -> Scalar {
        Scalar {
            var_off: Tnum::constant(c),
            umin: c,
            umax: c,
            smin: c as i64,
            smax: c as i64,
            u32_min: c as u32,
            u32_max: c as u32,
            s32_min: c as u32 as i32,
            s32_max: c as u32 as i32,
        }
    }

    /// The values of a tnum, with the bounds it implies.
    pub fn from_tnum(t: Tnum) -> Scalar {
        Scalar::from_parts(t, FULL).normalize()
    }

    /// The values in `[min, max]`, unsigned. Panics if `min > max`.
    pub fn from_range(min: u64, max: u64) -> Scalar {
        Scalar::unknown()
            .restrict(Kind::U64, Interval::new(min.into(), max.into()))
            .expect("from_range: min > max")
    }

    /// The values in `[min, max]`, signed. Panics if `min > max`.
    pub fn from_signed_range(min: i64, max: i64) -> Scalar {
        Scalar::unknown()
            .restrict(Kind::S64, Interval::new(min.into(), max.into()))
            .expect("from_signed_range: min > max")
    }

    /// The zero-extended 32-bit values in `[min, max]`, as a 32-bit ALU
    /// operation or a 4-byte load leaves them. Panics if `min > max`.
    pub fn from_u32_range(min: u32, max: u32) -> Scalar {
        Scalar::from_range(min.into(), max.into())
    }

    /// The values of `self` whose reading in `kind` lies in `bounds`
    /// (clamped to the kind), or `None` if there are none.
    pub fn restrict(self, kind: Kind, bounds: Interval) -> Option<Scalar> {
        let mut b = self.bounds();
        b[ix(kind)] = b[ix(kind)].meet(bounds)?;
        Scalar::from_parts(self.var_off, b).sync()
    }

    /// The known bits (`var_off` in the kernel's log).
    pub const fn var_off(&self) -> Tnum {
        self.var_off
    }

    /// Smallest value, unsigned.
    pub const fn umin(&self) -> u64 {
        self.umin
    }

    /// Largest value, unsigned.
    pub const fn umax(&self) -> u64 {
        self.umax
    }

    /// Smallest value, signed.
    pub const fn smin(&self) -> i64 {
        self.smin
    }

    /// Largest value, signed.
    pub const fn smax(&self) -> i64 {
        self.smax
    }

    /// Smallest low 32 bits, unsigned.
    pub const fn u32_min(&self) -> u32 {
        self.u32_min
    }

    /// Largest low 32 bits, unsigned.
    pub const fn u32_max(&self) -> u32 {
        self.u32_max
    }

    /// Smallest low 32 bits, signed.
    pub const fn s32_min(&self) -> i32 {
        self.s32_min
    }

    /// Largest low 32 bits, signed.
    pub const fn s32_max(&self) -> i32 {
        self.s32_max
    }

    /// The bounds of one reading of the value.
    pub const fn bound(&self, kind: Kind) -> Interval {
        match kind {
            Kind::U64 => Interval::new(self.umin as i128, self.umax as i128),
            Kind::S64 => Interval::new(self.smin as i128, self.smax as i128),
            Kind::U32 => Interval::new(self.u32_min as i128, self.u32_max as i128),
            Kind::S32 => Interval::new(self.s32_min as i128, self.s32_max as i128),
        }
    }

    /// All four bounds, indexed by [`ix`].
    const fn bounds(&self) -> [Interval; 4] {
        [
            self.bound(Kind::U64),
            self.bound(Kind::S64),
            self.bound(Kind::U32),
            self.bound(Kind::S32),
        ]
    }

    /// A scalar from its parts, without syncing. Bounds must lie within
    /// their kinds.
    fn from_parts(var_off: Tnum, b: [Interval; 4]) -> Scalar {
        for k in Kind::ALL {
            debug_assert!(Interval::full(k).includes(b[ix(k)]), "{k:?} {:?}", b[ix(k)]);
        }
        Scalar {
            var_off,
            umin: b[0].lo as u64,
            umax: b[0].hi as u64,
            smin: b[1].lo as i64,
            smax: b[1].hi as i64,
            u32_min: b[2].lo as u32,
            u32_max: b[2].hi as u32,
            s32_min: b[3].lo as i32,
            s32_max: b[3].hi as i32,
        }
    }

    /// Synced, or as is if syncing finds it empty: an operation on empty
    /// inputs may return anything, and returning the unsynced result keeps
    /// that case sound without a panic.
    fn normalize(self) -> Scalar {
        self.sync().unwrap_or(self)
    }

    /// Whether `x` meets all nine constraints.
    pub fn contains(&self, x: u64) -> bool {
        self.var_off.contains(x) && Kind::ALL.iter().all(|&k| self.bound(k).contains(k.of(x)))
    }

    /// Whether the value is known exactly.
    pub const fn is_const(&self) -> bool {
        self.var_off.is_const()
    }

    /// The value, if known exactly.
    pub const fn const_value(&self) -> Option<u64> {
        if self.var_off.is_const() {
            Some(self.var_off.value())
        } else {
            None
        }
    }

    /// Whether every value of `other` is a value of `self`, constraint by
    /// constraint (sufficient, and what state pruning needs).
    pub fn includes(&self, other: &Scalar) -> bool {
        self.var_off.includes(other.var_off)
            && Kind::ALL
                .iter()
                .all(|&k| self.bound(k).includes(other.bound(k)))
    }

    /// The least upper bound: every value of either.
    pub fn join(&self, other: &Scalar) -> Scalar {
        let (a, b) = (self.bounds(), other.bounds());
        let hull = std::array::from_fn(|i| a[i].hull(b[i]));
        Scalar::from_parts(self.var_off.union(other.var_off), hull).normalize()
    }

    /// The meet: the values of both, `None` if there are none.
    pub fn intersect(&self, other: &Scalar) -> Option<Scalar> {
        let t = self.var_off.try_intersect(other.var_off)?;
        let (a, b) = (self.bounds(), other.bounds());
        let mut m = FULL;
        for i in 0..4 {
            m[i] = a[i].meet(b[i])?;
        }
        Scalar::from_parts(t, m).sync()
    }

    /// Re-tightens the nine constraints from each other until they are
    /// stable; `None` if they contradict (no value meets them all).
    ///
    /// One round: (1) each bound moves to the nearest value the tnum
    /// allows; (2) bounds restrict each other through residues: a value's
    /// low 32 bits must fit the 32-bit bounds, read cyclically, and the
    /// signed and unsigned bounds of one width each lie on a cycle of
    /// `2^width` values; (3) 64-bit bounds that do not wrap around a
    /// multiple of `2^32` bound the low 32 bits; (4) bounds that do not
    /// cross the sign boundary fix the tnum's high bits down to the
    /// highest bit in which the endpoints differ.
    pub fn sync(self) -> Option<Scalar> {
        // Fast paths for the two commonest values, which the rounds below
        // would only confirm (this runs after nearly every ALU step).
        if self == Scalar::unknown() {
            return Some(self);
        }
        if self.var_off.is_const() {
            let c = self.var_off.value();
            return self.contains(c).then_some(Scalar::constant(c));
        }
        self.sync_rounds()
    }

    /// [`Scalar::sync`] without its fast paths: rounds to a fixed point.
    fn sync_rounds(self) -> Option<Scalar> {
        let mut s = self;
        for _ in 0..MAX_SYNC_ROUNDS {
            let next = s.sync_round()?;
            if next == s {
                return Some(s);
            }
            s = next;
        }
        Some(s)
    }

    fn sync_round(self) -> Option<Scalar> {
        let mut t = self.var_off;
        let mut b = self.bounds();
        for k in Kind::ALL {
            b[ix(k)] = tnum_bound(t, k, b[ix(k)])?;
        }
        const PAIRS: [(Kind, Kind); 8] = [
            (Kind::U64, Kind::S64),
            (Kind::S64, Kind::U64),
            (Kind::U32, Kind::S32),
            (Kind::S32, Kind::U32),
            (Kind::U64, Kind::U32),
            (Kind::U64, Kind::S32),
            (Kind::S64, Kind::U32),
            (Kind::S64, Kind::S32),
        ];
        for (k, by) in PAIRS {
            b[ix(k)] = b[ix(k)].restrict_low(b[ix(by)], by.bits())?;
        }
        for wide in [Kind::U64, Kind::S64] {
            for narrow in [Kind::U32, Kind::S32] {
                b[ix(narrow)] = b[ix(narrow)].meet(b[ix(wide)].fit(narrow))?;
            }
        }
        for k in Kind::ALL {
            t = t.try_intersect(range_tnum(b[ix(k)], k))?;
        }
        Some(Scalar::from_parts(t, b))
    }

    /// Applies a binary operation bound by bound, with the tnum operation
    /// alongside. Valid for operations whose low 32 bits depend only on
    /// the operands' low 32 bits (add, sub, mul, and, or, xor), which lets
    /// the 32-bit bounds be computed from the 32-bit bounds.
    fn lift(
        self,
        other: Scalar,
        tf: fn(Tnum, Tnum) -> Tnum,
        bf: fn(Interval, Interval, Kind) -> Interval,
    ) -> Scalar {
        let (a, b) = (self.bounds(), other.bounds());
        let r = Kind::ALL.map(|k| bf(a[ix(k)], b[ix(k)], k));
        Scalar::from_parts(tf(self.var_off, other.var_off), r).normalize()
    }

    /// The result of a 64-bit computation `self` as an operation of
    /// `width`: 32-bit operations keep the low half, zero-extended.
    fn at(self, width: Width) -> Scalar {
        match width {
            Width::W64 => self,
            Width::W32 => self.cast(4),
        }
    }

    /// `self + other` (wrapping).
    pub fn add(self, other: Scalar, width: Width) -> Scalar {
        self.lift(other, Tnum::add, Interval::add).at(width)
    }

    /// `self - other` (wrapping).
    pub fn sub(self, other: Scalar, width: Width) -> Scalar {
        self.lift(other, Tnum::sub, Interval::sub).at(width)
    }

    /// `self * other` (wrapping).
    pub fn mul(self, other: Scalar, width: Width) -> Scalar {
        self.lift(other, Tnum::mul, Interval::mul).at(width)
    }

    /// `self & other`.
    pub fn and(self, other: Scalar, width: Width) -> Scalar {
        self.lift(other, Tnum::and, Interval::and).at(width)
    }

    /// `self | other`.
    pub fn or(self, other: Scalar, width: Width) -> Scalar {
        self.lift(other, Tnum::or, Interval::or).at(width)
    }

    /// `self ^ other`.
    pub fn xor(self, other: Scalar, width: Width) -> Scalar {
        self.lift(other, Tnum::xor, Interval::xor).at(width)
    }

    /// `-self` (wrapping).
    pub fn neg(self, width: Width) -> Scalar {
        Scalar::constant(0).sub(self, width)
    }

    /// The operands of a 32-bit division-like operation, zero- or
    /// sign-extended to 64 bits so that the 64-bit analysis applies.
    fn widen(self, other: Scalar, width: Width, signed: bool) -> (Scalar, Scalar) {
        match (width, signed) {
            (Width::W64, _) => (self, other),
            (Width::W32, false) => (self.cast(4), other.cast(4)),
            (Width::W32, true) => (self.sign_extend(32), other.sign_extend(32)),
        }
    }

    /// One bound computed, the rest derived by [`Scalar::sync`].
    fn only(kind: Kind, bound: Interval) -> Scalar {
        let mut b = FULL;
        b[ix(kind)] = bound;
        Scalar::from_parts(Tnum::UNKNOWN, b).normalize()
    }

    /// Unsigned `self / other`; division by zero gives 0.
    pub fn div(self, other: Scalar, width: Width) -> Scalar {
        let (a, b) = self.widen(other, width, false);
        let q = a.bound(Kind::U64).div(b.bound(Kind::U64), Kind::U64);
        Scalar::only(Kind::U64, q).at(width)
    }

    /// Signed `self / other`; division by zero gives 0, `MIN / -1` gives
    /// `MIN`.
    pub fn sdiv(self, other: Scalar, width: Width) -> Scalar {
        let (a, b) = self.widen(other, width, true);
        let q = a.bound(Kind::S64).div(b.bound(Kind::S64), Kind::S64);
        Scalar::only(Kind::S64, q).at(width)
    }

    /// Unsigned `self % other` (`BPF_MOD`); modulo zero leaves `self`.
    #[doc(alias = "mod")]
    pub fn rem(self, other: Scalar, width: Width) -> Scalar {
        let (a, b) = self.widen(other, width, false);
        let r = a.bound(Kind::U64).rem(b.bound(Kind::U64), Kind::U64);
        Scalar::only(Kind::U64, r).at(width)
    }

    /// Signed `self % other` (`smod`; the sign of `self`); modulo zero
    /// leaves `self`.
    #[doc(alias = "smod")]
    pub fn srem(self, other: Scalar, width: Width) -> Scalar {
        let (a, b) = self.widen(other, width, true);
        let r = a.bound(Kind::S64).rem(b.bound(Kind::S64), Kind::S64);
        Scalar::only(Kind::S64, r).at(width)
    }

    /// The shift counts an amount can give once masked to the width, as
    /// the instruction masks it (RFC 9669 section 4.1): from the values
    /// themselves when the bounds allow few, else from the tnum's low bits.
    fn shift_counts(amount: Scalar, width: Width) -> impl Iterator<Item = u32> {
        let bits = width_bits(width);
        let mask = u64::from(bits - 1);
        let (u, _) = kinds_of(width);
        let range = amount.bound(u);
        let t = amount.tnum_at(width);
        let mut counts = 0u64;
        if range.hi - range.lo < 64 {
            for v in range.lo..=range.hi {
                if t.contains(v as u64) {
                    counts |= 1 << (v as u64 & mask);
                }
            }
        } else {
            let low = t.and(Tnum::constant(mask));
            for c in 0..u64::from(bits) {
                if low.contains(c) {
                    counts |= 1 << c;
                }
            }
        }
        (0..bits).filter(move |&c| counts & (1 << c) != 0)
    }

    /// Joins `f(s)` over the masked shift counts of `amount`.
    fn shift_by(self, amount: Scalar, width: Width, f: fn(Scalar, u32, Width) -> Scalar) -> Scalar {
        let mut acc: Option<Scalar> = None;
        for s in Scalar::shift_counts(amount, width) {
            let r = f(self, s, width);
            acc = Some(acc.map_or(r, |a| a.join(&r)));
        }
        // No count at all means `amount` was empty; anything is sound.
        acc.unwrap_or(Scalar::unknown().at(width))
    }

    /// `self << (amount mod width)`.
    #[doc(alias = "lsh")]
    pub fn shl(self, amount: Scalar, width: Width) -> Scalar {
        self.shift_by(amount, width, Scalar::shl_const)
    }

    /// `self << (s mod width)`: the count is masked as at run time (the
    /// verifier's rejection of constant counts `>= width` is the caller's).
    #[doc(alias = "lsh")]
    pub fn shl_const(self, s: u32, width: Width) -> Scalar {
        let s = s & (width_bits(width) - 1);
        // Multiplication by 2^s: the low 32 bits only depend on the low
        // 32 bits, so every bound can be shifted in its own kind.
        let r = Kind::ALL.map(|k| self.bound(k).shl(s, k));
        Scalar::from_parts(self.var_off.shl(s), r)
            .normalize()
            .at(width)
    }

    /// Logical `self >> (amount mod width)`.
    #[doc(alias = "rsh")]
    pub fn shr(self, amount: Scalar, width: Width) -> Scalar {
        self.shift_by(amount, width, Scalar::shr_const)
    }

    /// Logical `self >> (s mod width)`.
    #[doc(alias = "rsh")]
    pub fn shr_const(self, s: u32, width: Width) -> Scalar {
        let s = s & (width_bits(width) - 1);
        let a = self.at(width);
        if s == 0 {
            return a;
        }
        let mut b = FULL;
        b[ix(Kind::U64)] = a.bound(Kind::U64).shr_by(s);
        Scalar::from_parts(a.var_off.shr(s), b)
            .normalize()
            .at(width)
    }

    /// Arithmetic `self >> (amount mod width)`, with the sign bit of the
    /// width (bit 31 for 32-bit operations).
    pub fn arsh(self, amount: Scalar, width: Width) -> Scalar {
        self.shift_by(amount, width, Scalar::arsh_const)
    }

    /// Arithmetic `self >> (s mod width)`.
    pub fn arsh_const(self, s: u32, width: Width) -> Scalar {
        let s = s & (width_bits(width) - 1);
        // A 32-bit arithmetic shift is the 64-bit one of the sign-extended
        // low half, truncated.
        let a = match width {
            Width::W64 => self,
            Width::W32 => self.sign_extend(32),
        };
        if s == 0 {
            return a.at(width);
        }
        let mut b = FULL;
        b[ix(Kind::S64)] = a.bound(Kind::S64).shr_by(s);
        Scalar::from_parts(a.var_off.arsh(s, 64), b)
            .normalize()
            .at(width)
    }

    /// The low `bytes` bytes (1, 2, 4 or 8), zero-extended: `mov32`
    /// (`bytes = 4`), narrow loads, and `le16/le32` on a little-endian
    /// target.
    pub fn cast(self, bytes: u32) -> Scalar {
        debug_assert!(matches!(bytes, 1 | 2 | 4 | 8));
        match bytes {
            8.. => self,
            4 => {
                let u = self.bound(Kind::U32);
                let b = [u, u, u, self.bound(Kind::S32)];
                Scalar::from_parts(self.var_off.cast(4), b).normalize()
            }
            _ => {
                let bits = bytes * 8;
                let low = self.low_bits(bits, false);
                Scalar::from_parts(self.var_off.cast(bytes), [low; 4]).normalize()
            }
        }
    }

    /// Bounds of the low `bits` bits read as a `bits`-wide number, from
    /// every bound that says something about them.
    fn low_bits(&self, bits: u32, signed: bool) -> Interval {
        let mut low = Interval::new(0, (1i128 << bits) - 1).fit_bits(bits, signed);
        for k in Kind::ALL {
            if bits <= k.bits() {
                let f = self.bound(k).fit_bits(bits, signed);
                // An empty meet only happens for an empty scalar.
                low = low.meet(f).unwrap_or(low);
            }
        }
        low
    }

    /// The low `bits` bits (8, 16 or 32) sign-extended to 64 bits: 64-bit
    /// `movsx` and sign-extending loads. (A 32-bit `movsx` is this
    /// followed by [`Scalar::cast`]`(4)`.)
    pub fn sign_extend(self, bits: u32) -> Scalar {
        debug_assert!(matches!(bits, 8 | 16 | 32));
        let low = self.low_bits(bits, true);
        let t = self.var_off.shl(64 - bits).arsh(64 - bits, 64);
        let b = if bits == 32 {
            // The low half is unchanged.
            [
                Interval::full(Kind::U64),
                low,
                self.bound(Kind::U32),
                self.bound(Kind::S32),
            ]
        } else {
            [
                Interval::full(Kind::U64),
                low,
                Interval::full(Kind::U32),
                low,
            ]
        };
        Scalar::from_parts(t, b).normalize()
    }

    /// The low `bytes` bytes (2, 4 or 8) in reverse order, zero-extended:
    /// `bswap16/32/64`, and `be16/32/64` on a little-endian target. The
    /// tnum is exact (bits only move); the bounds follow from it.
    pub fn swap_bytes(self, bytes: u32) -> Scalar {
        debug_assert!(matches!(bytes, 2 | 4 | 8));
        Scalar::from_tnum(self.var_off.swap_bytes(bytes))
    }

    /// `self op src` for an ALU instruction of `width`: the dispatcher
    /// over the operations above (`Mov` and `MovSx` read only `src`).
    pub fn alu(self, op: AluOp, width: Width, src: Scalar) -> Scalar {
        match op {
            AluOp::Add => self.add(src, width),
            AluOp::Sub => self.sub(src, width),
            AluOp::Mul => self.mul(src, width),
            AluOp::Div => self.div(src, width),
            AluOp::Sdiv => self.sdiv(src, width),
            AluOp::Mod => self.rem(src, width),
            AluOp::Smod => self.srem(src, width),
            AluOp::Or => self.or(src, width),
            AluOp::And => self.and(src, width),
            AluOp::Xor => self.xor(src, width),
            AluOp::Lsh => self.shl(src, width),
            AluOp::Rsh => self.shr(src, width),
            AluOp::Arsh => self.arsh(src, width),
            AluOp::Mov => src.at(width),
            AluOp::MovSx(from) => {
                let bits = match from {
                    SignExtFrom::B8 => 8,
                    SignExtFrom::B16 => 16,
                    SignExtFrom::B32 => 32,
                };
                src.sign_extend(bits).at(width)
            }
        }
    }

    /// The tnum of the bits a comparison of `width` reads.
    fn tnum_at(&self, width: Width) -> Tnum {
        match width {
            Width::W64 => self.var_off,
            Width::W32 => self.var_off.cast(4),
        }
    }

    /// The value a comparison of `width` reads, if known.
    fn const_at(&self, width: Width) -> Option<u64> {
        let t = self.tnum_at(width);
        t.is_const().then_some(t.value())
    }
}

/// `bounds` narrowed to values the tnum allows: each endpoint moves to the
/// nearest member, found in an encoding where the kind's order is the
/// unsigned order of the bits (the sign bit flipped for signed kinds).
fn tnum_bound(t: Tnum, kind: Kind, bounds: Interval) -> Option<Interval> {
    let (t, width_mask) = match kind.bits() {
        64 => (t, u64::MAX),
        _ => (t.cast(4), u64::from(u32::MAX)),
    };
    let flip = if kind.signed() {
        1u64 << (kind.bits() - 1)
    } else {
        0
    };
    let t = Tnum::new(t.value() ^ flip, t.mask());
    let enc = |v: i128| (v as u64 & width_mask) ^ flip;
    let lo = t.min_at_least(enc(bounds.lo))?;
    let hi = t.max_at_most(enc(bounds.hi))?;
    (lo <= hi).then(|| Interval::new(kind.of(lo ^ flip), kind.of(hi ^ flip)))
}

/// The tnum of the values within `bounds` of `kind`: the bits above the
/// highest differing bit of the endpoints are known, if the interval does
/// not cross the sign boundary (where the bit patterns jump).
fn range_tnum(bounds: Interval, kind: Kind) -> Tnum {
    if kind.signed() && bounds.lo < 0 && bounds.hi >= 0 {
        return Tnum::UNKNOWN;
    }
    let width_mask = if kind.bits() == 64 {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    let r = Tnum::range(bounds.lo as u64 & width_mask, bounds.hi as u64 & width_mask);
    if kind.bits() == 64 {
        r
    } else {
        Tnum::new(r.value(), r.mask() | !width_mask)
    }
}

/// A comparison `lhs rel rhs`, both sides read at one width.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rel {
    Eq,
    Ne,
    /// `<` in the kind.
    Lt(Kind),
    /// `<=` in the kind.
    Le(Kind),
    /// `lhs & rhs != 0`.
    Set,
    /// `lhs & rhs == 0`.
    Clear,
}

/// The comparison that holds when `if a cond b` goes the `taken` way, and
/// whether its sides are `(b, a)` rather than `(a, b)`.
fn relation(cond: Cond, width: Width, taken: bool) -> (Rel, bool) {
    let (u, s) = kinds_of(width);
    use Cond::*;
    match (cond, taken) {
        (Eq, true) | (Ne, false) => (Rel::Eq, false),
        (Ne, true) | (Eq, false) => (Rel::Ne, false),
        (Set, true) => (Rel::Set, false),
        (Set, false) => (Rel::Clear, false),
        // a > b is b < a; not (a > b) is a <= b.
        (Gt, true) | (Le, false) => (Rel::Lt(u), true),
        (Ge, true) | (Lt, false) => (Rel::Le(u), true),
        (Lt, true) | (Ge, false) => (Rel::Lt(u), false),
        (Le, true) | (Gt, false) => (Rel::Le(u), false),
        (Sgt, true) | (Sle, false) => (Rel::Lt(s), true),
        (Sge, true) | (Slt, false) => (Rel::Le(s), true),
        (Slt, true) | (Sge, false) => (Rel::Lt(s), false),
        (Sle, true) | (Sgt, false) => (Rel::Le(s), false),
    }
}

/// Whether `if a cond b` (comparing the low 32 bits for `W32`) is taken
/// for every pair of values, for none, or not known (`None`): the kernel's
/// `is_branch_taken`. A `Some` lets the verifier skip the other edge.
pub fn branch_taken(cond: Cond, width: Width, a: Scalar, b: Scalar) -> Option<bool> {
    let (rel, swap) = relation(cond, width, true);
    let (p, q) = if swap { (b, a) } else { (a, b) };
    decide(rel, width, &p, &q)
}

/// Whether `p rel q` holds always, never, or not known.
fn decide(rel: Rel, width: Width, p: &Scalar, q: &Scalar) -> Option<bool> {
    match rel {
        Rel::Eq => {
            if let (Some(x), Some(y)) = (p.const_at(width), q.const_at(width)) {
                return Some(x == y);
            }
            let (u, s) = kinds_of(width);
            let disjoint = [u, s]
                .iter()
                .any(|&k| p.bound(k).meet(q.bound(k)).is_none())
                || p.tnum_at(width).try_intersect(q.tnum_at(width)).is_none();
            disjoint.then_some(false)
        }
        Rel::Ne => decide(Rel::Eq, width, p, q).map(|e| !e),
        Rel::Lt(k) => {
            let (a, b) = (p.bound(k), q.bound(k));
            if a.hi < b.lo {
                Some(true)
            } else if a.lo >= b.hi {
                Some(false)
            } else {
                None
            }
        }
        Rel::Le(k) => {
            let (a, b) = (p.bound(k), q.bound(k));
            if a.hi <= b.lo {
                Some(true)
            } else if a.lo > b.hi {
                Some(false)
            } else {
                None
            }
        }
        Rel::Set => {
            let both = p.tnum_at(width).and(q.tnum_at(width));
            if both.value() != 0 {
                Some(true)
            } else if both.umax() == 0 {
                Some(false)
            } else {
                None
            }
        }
        Rel::Clear => decide(Rel::Set, width, p, q).map(|e| !e),
    }
}

/// Narrows `a` and `b` to the values for which `if a cond b` (comparing
/// the low 32 bits for `W32`) goes the `taken` way: the kernel's
/// `reg_set_min_max`. `None` when that outcome is impossible.
pub fn refine(
    cond: Cond,
    width: Width,
    a: Scalar,
    b: Scalar,
    taken: bool,
) -> Option<(Scalar, Scalar)> {
    let (rel, swap) = relation(cond, width, taken);
    let (p, q) = if swap { (b, a) } else { (a, b) };
    if decide(rel, width, &p, &q) == Some(false) {
        return None;
    }
    let (p, q) = refine_rel(rel, width, p, q)?;
    Some(if swap { (q, p) } else { (p, q) })
}

/// `s` with one bound replaced (not synced).
fn set_bound(s: Scalar, kind: Kind, bound: Interval) -> Scalar {
    let mut b = s.bounds();
    b[ix(kind)] = bound;
    Scalar::from_parts(s.var_off, b)
}

/// Narrows `p` and `q` to the pairs where `p rel q` holds.
fn refine_rel(rel: Rel, width: Width, p: Scalar, q: Scalar) -> Option<(Scalar, Scalar)> {
    let (p, q) = match rel {
        Rel::Eq => match width {
            Width::W64 => {
                let m = p.intersect(&q)?;
                (m, m)
            }
            Width::W32 => {
                let low = p.tnum_at(width).try_intersect(q.tnum_at(width))?;
                let mut pq = [p, q];
                for s in &mut pq {
                    let mut n = *s;
                    n.var_off = s.var_off.with_subreg(low);
                    for k in [Kind::U32, Kind::S32] {
                        let m = p.bound(k).meet(q.bound(k))?;
                        n = set_bound(n, k, m);
                    }
                    *s = n;
                }
                (pq[0], pq[1])
            }
        },
        Rel::Ne => {
            // Only a constant side says something: the other side loses
            // that value where it is an endpoint.
            let shave = |s: Scalar, c: Option<u64>| -> Option<Scalar> {
                let Some(c) = c else { return Some(s) };
                let (u, sk) = kinds_of(width);
                let mut s = s;
                for k in [u, sk] {
                    let mut i = s.bound(k);
                    let v = k.of(c);
                    if i.lo == v {
                        i.lo += 1;
                    }
                    if i.hi == v {
                        i.hi -= 1;
                    }
                    if i.lo > i.hi {
                        return None;
                    }
                    s = set_bound(s, k, i);
                }
                Some(s)
            };
            (shave(p, q.const_at(width))?, shave(q, p.const_at(width))?)
        }
        Rel::Lt(k) | Rel::Le(k) => {
            // p < q: p is below q's largest value, q above p's smallest.
            let gap = if matches!(rel, Rel::Lt(_)) { 1 } else { 0 };
            let (a, b) = (p.bound(k), q.bound(k));
            let a2 = a.meet(Interval::new(i128::MIN, b.hi - gap))?;
            let b2 = b.meet(Interval::new(a.lo + gap, i128::MAX))?;
            (set_bound(p, k, a2), set_bound(q, k, b2))
        }
        Rel::Set => {
            // Some bit is one in both: neither is zero, and if only one bit
            // can be common, it is one in both.
            let may_one = |s: &Scalar| s.tnum_at(width).umax();
            let may = may_one(&p) & may_one(&q);
            let (u, _) = kinds_of(width);
            let mut out = [p, q];
            for s in &mut out {
                if may.is_power_of_two() {
                    s.var_off = s.var_off.try_intersect(Tnum::new(may, !may))?;
                }
                let i = s.bound(u).meet(Interval::new(1, i128::MAX))?;
                *s = set_bound(*s, u, i);
            }
            (out[0], out[1])
        }
        Rel::Clear => {
            // A bit known one on one side is zero on the other.
            let ones = |s: &Scalar| s.tnum_at(width).value();
            let p2 = p.var_off.try_intersect(Tnum::new(0, !ones(&q)))?;
            let q2 = q.var_off.try_intersect(Tnum::new(0, !ones(&p)))?;
            let mut p = p;
            let mut q = q;
            p.var_off = p2;
            q.var_off = q2;
            (p, q)
        }
    };
    Some((p.sync()?, q.sync()?))
}

/// The kernel prints small numbers in decimal and the rest in hex.
fn write_unum(f: &mut fmt::Formatter<'_>, v: u64) -> fmt::Result {
    if v <= u64::from(u16::MAX) {
        write!(f, "{v}")
    } else {
        write!(f, "{v:#x}")
    }
}

/// Signed: decimal within `i16`, else the bits in hex.
fn write_snum(f: &mut fmt::Formatter<'_>, v: i64) -> fmt::Result {
    if (i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&v) {
        write!(f, "{v}")
    } else {
        write!(f, "{:#x}", v as u64)
    }
}

impl fmt::Display for Scalar {
    /// The kernel's verifier-log syntax: a constant as its value, else
    /// `scalar(...)` listing the bounds that say something (not the type's
    /// own limits), equal bounds of one side merged (`smin=umin=0`) unless
    /// their signs differ, then `var_off` unless all bits are unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.const_value() {
            return write_snum(f, c as i64);
        }
        // 32-bit signed bounds print sign-extended when small, as their
        // 32-bit pattern otherwise.
        let s32 = |v: i32| {
            if (i32::from(i16::MIN)..=i32::from(i16::MAX)).contains(&v) {
                v as i64 as u64
            } else {
                u64::from(v as u32)
            }
        };
        // (name, value, trivial): alternating minima and maxima, so
        // entries two apart are of the same side.
        let mut items = [
            ("smin", self.smin as u64, self.smin == i64::MIN),
            ("smax", self.smax as u64, self.smax == i64::MAX),
            ("umin", self.umin, self.umin == 0),
            ("umax", self.umax, self.umax == u64::MAX),
            ("smin32", s32(self.s32_min), self.s32_min == i32::MIN),
            ("smax32", s32(self.s32_max), self.s32_max == i32::MAX),
            ("umin32", u64::from(self.u32_min), self.u32_min == 0),
            ("umax32", u64::from(self.u32_max), self.u32_max == u32::MAX),
        ];
        let negative = |(name, v, _): (&str, u64, bool)| name.starts_with('s') && (v as i64) < 0;
        f.write_str("scalar(")?;
        let mut sep = "";
        for i in 0..items.len() {
            if items[i].2 {
                continue;
            }
            write!(f, "{sep}{}=", items[i].0)?;
            sep = ",";
            for j in (i + 2..items.len()).step_by(2) {
                if !items[j].2
                    && items[j].1 == items[i].1
                    && negative(items[j]) == negative(items[i])
                {
                    items[j].2 = true;
                    write!(f, "{}=", items[j].0)?;
                }
            }
            if items[i].0.starts_with('s') {
                write_snum(f, items[i].1 as i64)?;
            } else {
                write_unum(f, items[i].1)?;
            }
        }
        if !self.var_off.is_unknown() {
            write!(f, "{sep}var_off={}", self.var_off)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The concrete semantics (RFC 9669 section 4.1), written apart from
    /// the abstract code on purpose.
    fn eval(op: AluOp, width: Width, x: u64, y: u64) -> u64 {
        match width {
            Width::W64 => match op {
                AluOp::Add => x.wrapping_add(y),
                AluOp::Sub => x.wrapping_sub(y),
                AluOp::Mul => x.wrapping_mul(y),
                AluOp::Div => x.checked_div(y).unwrap_or(0),
                AluOp::Sdiv => (x as i64)
                    .checked_div(y as i64)
                    .map_or(if y == 0 { 0 } else { x }, |q| q as u64),
                AluOp::Mod => x.checked_rem(y).unwrap_or(x),
                AluOp::Smod => {
                    if y == 0 {
                        x
                    } else {
                        (x as i64).wrapping_rem(y as i64) as u64
                    }
                }
                AluOp::Or => x | y,
                AluOp::And => x & y,
                AluOp::Xor => x ^ y,
                AluOp::Lsh => x << (y & 63),
                AluOp::Rsh => x >> (y & 63),
                AluOp::Arsh => ((x as i64) >> (y & 63)) as u64,
                AluOp::Mov => y,
                AluOp::MovSx(SignExtFrom::B8) => y as i8 as i64 as u64,
                AluOp::MovSx(SignExtFrom::B16) => y as i16 as i64 as u64,
                AluOp::MovSx(SignExtFrom::B32) => y as i32 as i64 as u64,
            },
            Width::W32 => {
                let (a, b) = (x as u32, y as u32);
                let r: u32 = match op {
                    AluOp::Add => a.wrapping_add(b),
                    AluOp::Sub => a.wrapping_sub(b),
                    AluOp::Mul => a.wrapping_mul(b),
                    AluOp::Div => a.checked_div(b).unwrap_or(0),
                    AluOp::Sdiv => {
                        if b == 0 {
                            0
                        } else {
                            (a as i32).wrapping_div(b as i32) as u32
                        }
                    }
                    AluOp::Mod => a.checked_rem(b).unwrap_or(a),
                    AluOp::Smod => {
                        if b == 0 {
                            a
                        } else {
                            (a as i32).wrapping_rem(b as i32) as u32
                        }
                    }
                    AluOp::Or => a | b,
                    AluOp::And => a & b,
                    AluOp::Xor => a ^ b,
                    AluOp::Lsh => a << (b & 31),
                    AluOp::Rsh => a >> (b & 31),
                    AluOp::Arsh => ((a as i32) >> (b & 31)) as u32,
                    AluOp::Mov => b,
                    AluOp::MovSx(SignExtFrom::B8) => b as i8 as i32 as u32,
                    AluOp::MovSx(SignExtFrom::B16) => b as i16 as i32 as u32,
                    AluOp::MovSx(SignExtFrom::B32) => b,
                };
                u64::from(r)
            }
        }
    }

    /// Whether `x cond y` holds at `width`.
    fn holds(cond: Cond, width: Width, x: u64, y: u64) -> bool {
        let (x, y) = match width {
            Width::W64 => (x, y),
            Width::W32 => (x & 0xffff_ffff, y & 0xffff_ffff),
        };
        let (sx, sy) = match width {
            Width::W64 => (x as i64, y as i64),
            Width::W32 => (x as u32 as i32 as i64, y as u32 as i32 as i64),
        };
        match cond {
            Cond::Eq => x == y,
            Cond::Ne => x != y,
            Cond::Gt => x > y,
            Cond::Ge => x >= y,
            Cond::Lt => x < y,
            Cond::Le => x <= y,
            Cond::Sgt => sx > sy,
            Cond::Sge => sx >= sy,
            Cond::Slt => sx < sy,
            Cond::Sle => sx <= sy,
            Cond::Set => x & y != 0,
        }
    }

    const OPS: [AluOp; 17] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::Sdiv,
        AluOp::Mod,
        AluOp::Smod,
        AluOp::Or,
        AluOp::And,
        AluOp::Xor,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Arsh,
        AluOp::Mov,
        AluOp::MovSx(SignExtFrom::B8),
        AluOp::MovSx(SignExtFrom::B16),
        AluOp::MovSx(SignExtFrom::B32),
    ];

    /// Values where the domain's case splits happen: small, negative,
    /// around 2^31, 2^32, 2^63, and anything.
    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            0u64..70,
            (-70i64..0).prop_map(|v| v as u64),
            (0u64..4, -40i64..40).prop_map(|(b, d)| {
                let base = [1u64 << 31, 1 << 32, 1 << 63, 0xffff_ffff][b as usize];
                base.wrapping_add(d as u64)
            }),
        ]
    }

    /// How much a bound reaches below or above the member: nothing, a few
    /// values, some bits' worth, or everything.
    fn spread() -> impl Strategy<Value = Option<u64>> {
        prop_oneof![
            Just(Some(0)),
            (0u64..16).prop_map(Some),
            (0u32..64, any::<u64>()).prop_map(|(w, d)| Some(d & ((1u64 << w) - 1))),
            Just(None),
        ]
    }

    fn mask() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            any::<u64>(),
            (0u32..64).prop_map(|n| (1u64 << n) - 1),
            (0u32..64, 0u32..64).prop_map(|(n, s)| ((1u64 << n) - 1) << s),
        ]
    }

    /// The unsynced nine constraints around `x`: a tnum holding it and
    /// bounds reaching some way from it, so `x` is always a member.
    fn raw_member() -> impl Strategy<Value = (Scalar, u64)> {
        (value(), mask(), proptest::array::uniform8(spread()))
            .prop_map(|(x, m, sp)| (around(x, m, sp), x))
    }

    /// The tnum `(x; m)` and bounds reaching from `x` as far as `sp`
    /// says (below and above, for each kind in turn), unsynced.
    fn around(x: u64, m: u64, sp: [Option<u64>; 8]) -> Scalar {
        let b = Kind::ALL.map(|k| {
            let v = k.of(x);
            let i = ix(k);
            let lo = sp[2 * i].map_or(k.min(), |d| (v - d as i128).max(k.min()));
            let hi = sp[2 * i + 1].map_or(k.max(), |d| (v + d as i128).min(k.max()));
            Interval::new(lo, hi)
        });
        Scalar::from_parts(Tnum::new(x, m), b)
    }

    proptest! {
        /// The fast paths of `sync` (constant tnums) give what the rounds
        /// give, whether the bounds hold the constant or not.
        #[test]
        fn sync_fast_paths_agree_with_rounds(
            x in value(), y in value(), sp in proptest::array::uniform8(spread()),
        ) {
            let s = around(x, 0, sp);
            prop_assert_eq!(s.sync(), s.sync_rounds());
            let t = Scalar::from_parts(Tnum::new(y, 0), s.bounds());
            prop_assert_eq!(t.sync(), t.sync_rounds());
        }
    }

    #[test]
    fn sync_of_unknown_is_unknown_both_ways() {
        assert_eq!(Scalar::unknown().sync(), Some(Scalar::unknown()));
        assert_eq!(Scalar::unknown().sync_rounds(), Some(Scalar::unknown()));
    }

    /// A realistic (synced) scalar and a member of it.
    fn member() -> impl Strategy<Value = (Scalar, u64)> {
        prop_oneof![
            4 => raw_member().prop_map(|(s, x)| (s.sync().expect("member lost"), x)),
            1 => value().prop_map(|x| (Scalar::constant(x), x)),
        ]
    }

    /// Two scalars and members, the second member often related to the
    /// first (equal, equal in the low half, close) so that comparisons
    /// come out both ways.
    fn pair() -> impl Strategy<Value = ((Scalar, u64), (Scalar, u64))> {
        (
            member(),
            value(),
            0u8..5,
            mask(),
            proptest::array::uniform8(spread()),
        )
            .prop_map(|((a, x), v, how, m, sp)| {
                let y = match how {
                    0 | 1 => v,
                    2 => x,
                    3 => (x & 0xffff_ffff) | (v << 32),
                    _ => x.wrapping_add(v % 9).wrapping_sub(4),
                };
                let b = if m == 0 && how == 1 {
                    Scalar::constant(y)
                } else {
                    around(y, m, sp).sync().expect("member lost")
                };
                ((a, x), (b, y))
            })
    }

    fn widths() -> impl Strategy<Value = Width> {
        prop_oneof![Just(Width::W64), Just(Width::W32)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn sync_keeps_members((s, x) in raw_member()) {
            let synced = s.sync();
            prop_assert!(synced.is_some(), "{:?} lost {:#x}", s, x);
            let synced = synced.unwrap();
            prop_assert!(synced.contains(x), "{} lost {:#x}", synced, x);
            prop_assert!(s.includes(&synced));
            // Stable: a second sync changes nothing.
            prop_assert_eq!(synced.sync(), Some(synced));
        }

        #[test]
        fn alu_is_sound(((a, x), (b, y)) in pair(), w in widths()) {
            for op in OPS {
                let r = a.alu(op, w, b);
                let z = eval(op, w, x, y);
                prop_assert!(r.contains(z), "{:?} {:?}: {} op {} = {}, not {:#x} ({:#x}, {:#x})",
                    op, w, a, b, r, z, x, y);
                if w == Width::W32 {
                    prop_assert!(r.umax() <= u64::from(u32::MAX));
                }
            }
        }

        #[test]
        fn unary_ops_are_sound((a, x) in member(), w in widths(), s in 0u32..64) {
            let neg = match w {
                Width::W64 => x.wrapping_neg(),
                Width::W32 => u64::from((x as u32).wrapping_neg()),
            };
            prop_assert!(a.neg(w).contains(neg));
            for bytes in [1u32, 2, 4, 8] {
                let keep = if bytes == 8 { u64::MAX } else { (1u64 << (bytes * 8)) - 1 };
                prop_assert!(a.cast(bytes).contains(x & keep), "cast {}", bytes);
            }
            prop_assert!(a.sign_extend(8).contains(x as i8 as i64 as u64));
            prop_assert!(a.sign_extend(16).contains(x as i16 as i64 as u64));
            prop_assert!(a.sign_extend(32).contains(x as i32 as i64 as u64));
            prop_assert!(a.swap_bytes(2).contains(u64::from((x as u16).swap_bytes())));
            prop_assert!(a.swap_bytes(4).contains(u64::from((x as u32).swap_bytes())));
            prop_assert!(a.swap_bytes(8).contains(x.swap_bytes()));
            prop_assert!(a.shl_const(s, w).contains(eval(AluOp::Lsh, w, x, s.into())));
            prop_assert!(a.shr_const(s, w).contains(eval(AluOp::Rsh, w, x, s.into())));
            prop_assert!(a.arsh_const(s, w).contains(eval(AluOp::Arsh, w, x, s.into())));
        }

        #[test]
        fn refine_keeps_the_pairs_that_go_that_way(((a, x), (b, y)) in pair(), w in widths()) {
            for cond in Cond::ALL {
                let taken = holds(cond, w, x, y);
                let r = refine(cond, w, a, b, taken);
                prop_assert!(r.is_some(), "{:?} {:?} {}: {} vs {} ({:#x}, {:#x})",
                    cond, w, taken, a, b, x, y);
                let (a2, b2) = r.unwrap();
                prop_assert!(a.includes(&a2) && b.includes(&b2));
                prop_assert!(a2.contains(x) && b2.contains(y),
                    "{:?} {:?} {}: {} vs {} -> {} vs {} ({:#x}, {:#x})",
                    cond, w, taken, a, b, a2, b2, x, y);
                if let Some(t) = branch_taken(cond, w, a, b) {
                    prop_assert_eq!(t, taken, "{:?} {:?}: {} vs {}", cond, w, a, b);
                }
            }
        }

        /// The constructors the checker builds scalars with (helper
        /// results, context fields, loads) hold the whole range.
        #[test]
        fn constructors_hold_their_ranges(x in value(), y in value(), z in value()) {
            let (lo, hi) = (x.min(y), x.max(y));
            prop_assert!(Scalar::from_range(lo, hi).contains(z) || z < lo || z > hi);
            prop_assert!(Scalar::from_range(lo, hi).contains(lo) && Scalar::from_range(lo, hi).contains(hi));
            let (sl, sh) = ((x as i64).min(y as i64), (x as i64).max(y as i64));
            let s = Scalar::from_signed_range(sl, sh);
            prop_assert!(s.contains(sl as u64) && s.contains(sh as u64));
            prop_assert!(s.contains(z) || (z as i64) < sl || (z as i64) > sh);
            let (ul, uh) = ((x as u32).min(y as u32), (x as u32).max(y as u32));
            let u = Scalar::from_u32_range(ul, uh);
            prop_assert!(u.contains(u64::from(ul)) && u.contains(u64::from(uh)));
            prop_assert!(u.umax() <= u64::from(u32::MAX));
            prop_assert!(Scalar::from_tnum(Tnum::new(x, y)).contains(x & !y));
        }

        /// `restrict` keeps every member whose reading in the kind lies in
        /// the new bounds.
        #[test]
        fn restrict_keeps_members((a, x) in member(), k in prop_oneof![
            Just(Kind::U64), Just(Kind::S64), Just(Kind::U32), Just(Kind::S32)
        ], d1 in 0u64..1000, d2 in 0u64..1000) {
            let v = k.of(x);
            let b = Interval::new((v - i128::from(d1)).max(k.min()), (v + i128::from(d2)).min(k.max()));
            let r = a.restrict(k, b);
            prop_assert!(r.is_some_and(|r| r.contains(x) && a.includes(&r)), "{} {:?} {:?}", a, k, b);
        }

        #[test]
        fn join_and_includes_agree_with_members(((a, x), (b, y)) in pair()) {
            let j = a.join(&b);
            prop_assert!(j.contains(x) && j.contains(y));
            prop_assert!(j.includes(&a) && j.includes(&b));
            if a.includes(&b) {
                prop_assert!(a.contains(y));
            }
            prop_assert!(a.includes(&a));
            prop_assert!(a.intersect(&Scalar::constant(x)).is_some_and(|m| m.contains(x)));
            if let Some(m) = a.intersect(&b) {
                prop_assert!(a.includes(&m) && b.includes(&m));
            } else {
                prop_assert!(!a.contains(y) || !b.contains(x) || x != y);
            }
            let _ = format!("{a}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Precision: on constants every operation folds to the exact
        /// result and every branch is decided.
        #[test]
        fn constants_fold_exactly(x in value(), y in value(), w in widths()) {
            let (a, b) = (Scalar::constant(x), Scalar::constant(y));
            for op in OPS {
                let r = a.alu(op, w, b);
                prop_assert_eq!(r.const_value(), Some(eval(op, w, x, y)), "{:?} {:?}", op, w);
                prop_assert_eq!(r, Scalar::constant(eval(op, w, x, y)));
            }
            for cond in Cond::ALL {
                prop_assert_eq!(branch_taken(cond, w, a, b), Some(holds(cond, w, x, y)));
            }
            prop_assert_eq!(a.swap_bytes(4).const_value(), Some(u64::from((x as u32).swap_bytes())));
            prop_assert_eq!(a.sign_extend(16).const_value(), Some(x as i16 as i64 as u64));
        }

        /// Joining a scalar with itself or with a part of it changes nothing.
        #[test]
        fn join_is_least((a, x) in member()) {
            prop_assert_eq!(a.join(&a), a);
            prop_assert_eq!(a.join(&Scalar::constant(x)), a);
        }
    }

    /// Not a check: prints, per operation, how often the result's
    /// unsigned bounds are wider than the exact ones on small operands.
    /// `cargo test --release -- --ignored --nocapture precision_probe`
    #[test]
    #[ignore]
    fn precision_probe() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let small = (0u64..64, 0u64..16, 0u64..64, 0u64..16, widths());
        let mut loose = [0u32; 16];
        let n = 2000;
        for _ in 0..n {
            let (l1, d1, l2, d2, w) = small.new_tree(&mut runner).unwrap().current();
            let (a, b) = (
                Scalar::from_range(l1, l1 + d1),
                Scalar::from_range(l2, l2 + d2),
            );
            for (i, op) in OPS.iter().enumerate() {
                let r = a.alu(*op, w, b);
                let mut exact: Option<(u64, u64)> = None;
                for x in l1..=l1 + d1 {
                    for y in l2..=l2 + d2 {
                        let z = eval(*op, w, x, y);
                        assert!(r.contains(z));
                        exact = Some(exact.map_or((z, z), |(lo, hi)| (lo.min(z), hi.max(z))));
                    }
                }
                let (lo, hi) = exact.unwrap();
                if r.umin() != lo || r.umax() != hi {
                    loose[i] += 1;
                }
            }
        }
        for (op, l) in OPS.iter().zip(loose) {
            println!("{op:?}: loose in {l} of {n}");
        }
    }

    fn branch(cond: Cond, a: Scalar, k: u64, taken: bool) -> Scalar {
        refine(cond, Width::W64, a, Scalar::constant(k), taken)
            .unwrap()
            .0
    }

    #[test]
    fn gt_narrows_the_fall_through() {
        // if r1 > 10 goto ...: the fall-through has r1 <= 10.
        let r1 = branch(Cond::Gt, Scalar::unknown(), 10, false);
        assert_eq!((r1.umin(), r1.umax()), (0, 10));
        assert_eq!((r1.smin(), r1.smax()), (0, 10));
        assert_eq!(r1.var_off(), Tnum::new(0, 0xf));
        // and the taken edge r1 >= 11.
        let r1 = branch(Cond::Gt, Scalar::unknown(), 10, true);
        assert_eq!(r1.umin(), 11);
    }

    #[test]
    fn and_with_mask_bounds_the_value() {
        let r1 = Scalar::unknown().and(Scalar::constant(0xff), Width::W64);
        assert_eq!((r1.umin(), r1.umax()), (0, 255));
        assert_eq!(r1.var_off(), Tnum::new(0, 0xff));
        assert_eq!(
            r1.to_string(),
            "scalar(smin=smin32=0,smax=umax=smax32=umax32=255,var_off=(0x0; 0xff))"
        );
    }

    #[test]
    fn add_of_small_ranges() {
        let a = Scalar::from_range(0, 10);
        let r = a.add(a, Width::W64);
        assert_eq!((r.umin(), r.umax(), r.smin(), r.smax()), (0, 20, 0, 20));
        assert_eq!(r.var_off(), Tnum::new(0, 0x1f));
    }

    #[test]
    fn alu32_results_fit_in_32_bits() {
        let r = Scalar::unknown().add(Scalar::constant(1), Width::W32);
        assert_eq!(r.umax(), u64::from(u32::MAX));
        assert_eq!(r.var_off(), Tnum::new(0, 0xffff_ffff));
        assert!(r.smin() >= 0);
        let r = Scalar::constant(u64::MAX).add(Scalar::constant(2), Width::W32);
        assert_eq!(r.const_value(), Some(1));
    }

    #[test]
    fn shift_left_of_small_range() {
        let r = Scalar::from_range(0, 3).shl(Scalar::constant(2), Width::W64);
        assert_eq!((r.umin(), r.umax()), (0, 12));
        assert_eq!(r.var_off(), Tnum::new(0, 0xc));
    }

    #[test]
    fn shift_by_unknown_amount_is_bounded() {
        // 1 << (r & 3) is one of 1, 2, 4, 8.
        let amount = Scalar::unknown().and(Scalar::constant(3), Width::W64);
        let r = Scalar::constant(1).shl(amount, Width::W64);
        assert_eq!((r.umin(), r.umax()), (1, 8));
        assert_eq!(r.var_off(), Tnum::new(0, 0xf));
    }

    #[test]
    fn sign_extension_idiom() {
        // r1 <<= 32; r1 s>>= 32 on a byte: back to [0, 255].
        let byte = Scalar::from_range(0, 255);
        let r = byte.shl_const(32, Width::W64).arsh_const(32, Width::W64);
        assert_eq!(r, byte);
        // movsx from 8 bits of [0x70, 0x90]: [-0x70, 0x7f] signed.
        let r = Scalar::from_range(0x70, 0x90).sign_extend(8);
        assert_eq!((r.smin(), r.smax()), (-128, 127));
        let r = Scalar::from_range(0x80, 0x90).sign_extend(8);
        assert_eq!((r.smin(), r.smax()), (-128, -112));
    }

    #[test]
    fn arsh32_uses_bit_31() {
        let r = Scalar::constant(0x8000_0000).arsh_const(4, Width::W32);
        assert_eq!(r.const_value(), Some(0xf800_0000));
        let r = Scalar::constant(0x8000_0000).arsh_const(4, Width::W64);
        assert_eq!(r.const_value(), Some(0x0800_0000));
    }

    #[test]
    fn sync_derives_across_widths_and_signs() {
        // Signed [-5, -1] is unsigned [2^64 - 5, 2^64 - 1].
        let s = Scalar::from_signed_range(-5, -1);
        assert_eq!((s.umin(), s.umax()), (u64::MAX - 4, u64::MAX));
        assert_eq!((s.s32_min(), s.s32_max()), (-5, -1));
        // A value below 2^32 has its 32-bit bounds equal to the 64-bit ones.
        let s = Scalar::from_range(7, 1000);
        assert_eq!((s.u32_min(), s.u32_max()), (7, 1000));
        // Bounds move to values the tnum allows: even numbers in [3, 9].
        let s = Scalar::from_tnum(Tnum::new(0, !1)).restrict(Kind::U64, Interval::new(3, 9));
        let s = s.unwrap();
        assert_eq!((s.umin(), s.umax()), (4, 8));
        // Contradictions are reported.
        assert!(Scalar::from_range(0, 10)
            .restrict(Kind::S64, Interval::new(-10, -1))
            .is_none());
    }

    #[test]
    fn branch_decisions() {
        let small = Scalar::from_range(0, 10);
        let c = Scalar::constant;
        assert_eq!(
            branch_taken(Cond::Gt, Width::W64, small, c(10)),
            Some(false)
        );
        assert_eq!(branch_taken(Cond::Le, Width::W64, small, c(10)), Some(true));
        assert_eq!(branch_taken(Cond::Gt, Width::W64, small, c(5)), None);
        assert_eq!(branch_taken(Cond::Eq, Width::W64, c(3), c(3)), Some(true));
        assert_eq!(
            branch_taken(Cond::Set, Width::W64, small, c(0x100)),
            Some(false)
        );
        assert_eq!(
            branch_taken(Cond::Eq, Width::W32, c(0x1_0000_0003), c(3)),
            Some(true)
        );
        assert_eq!(
            branch_taken(Cond::Slt, Width::W64, c(u64::MAX), c(0)),
            Some(true)
        );
        assert!(refine(Cond::Gt, Width::W64, small, c(10), true).is_none());
        // if r == 4 (taken): r is 4.
        let (r, _) = refine(Cond::Eq, Width::W64, small, c(4), true).unwrap();
        assert_eq!(r.const_value(), Some(4));
        // if r != 0 (taken) on [0, 10]: [1, 10].
        assert_eq!(branch(Cond::Ne, small, 0, true).umin(), 1);
        // if r & 4 (not taken): bit 2 is zero.
        let r = branch(Cond::Set, Scalar::unknown(), 4, false);
        assert_eq!(r.var_off(), Tnum::new(0, !4));
    }

    #[test]
    fn comparisons_narrow_the_other_readings() {
        // if w1 < 10 (JMP32) on r1 in [0, 100]: the 64-bit value is in [0, 9]
        // too, since all of [0, 100] has the same upper half.
        let r1 = Scalar::from_range(0, 100);
        let (r1, _) = refine(Cond::Lt, Width::W32, r1, Scalar::constant(10), true).unwrap();
        assert_eq!((r1.umin(), r1.umax()), (0, 9));
        // if r1 s>= 0 on anything: unsigned below 2^63 as well.
        let (r1, _) = refine(
            Cond::Sge,
            Width::W64,
            Scalar::unknown(),
            Scalar::constant(0),
            true,
        )
        .unwrap();
        assert_eq!((r1.umin(), r1.umax()), (0, i64::MAX as u64));
        assert_eq!(r1.var_off(), Tnum::new(0, u64::MAX >> 1));
        // if r1 > r2 with r1 in [0, 10], r2 in [5, 20]: r1 in [6, 10], r2 in [5, 9].
        let (a, b) = refine(
            Cond::Gt,
            Width::W64,
            Scalar::from_range(0, 10),
            Scalar::from_range(5, 20),
            true,
        )
        .unwrap();
        assert_eq!((a.umin(), a.umax(), b.umin(), b.umax()), (6, 10, 5, 9));
    }

    #[test]
    fn bitwise_ops_use_both_bounds_and_bits() {
        // [4, 7] | 1 is [5, 7]; [16, 31] & 7 is [0, 7]; [8, 11] ^ 8 is [0, 3].
        let c = Scalar::constant;
        let r = Scalar::from_range(4, 7).or(c(1), Width::W64);
        assert_eq!((r.umin(), r.umax()), (5, 7));
        let r = Scalar::from_range(16, 31).and(c(7), Width::W64);
        assert_eq!((r.umin(), r.umax()), (0, 7));
        let r = Scalar::from_range(8, 11).xor(c(8), Width::W64);
        assert_eq!((r.umin(), r.umax()), (0, 3));
    }

    #[test]
    fn display_matches_the_kernel_log() {
        assert_eq!(Scalar::unknown().to_string(), "scalar()");
        assert_eq!(
            Scalar::unknown().cast(4).to_string(),
            "scalar(smin=0,smax=umax=0xffffffff,var_off=(0x0; 0xffffffff))"
        );
        assert_eq!(Scalar::constant(5).to_string(), "5");
        assert_eq!(Scalar::constant(u64::MAX).to_string(), "-1");
        assert_eq!(Scalar::constant(0x10000).to_string(), "0x10000");
        assert_eq!(
            Scalar::from_signed_range(-5, -1).to_string(),
            "scalar(smin=smin32=-5,smax=smax32=-1,umin=0xfffffffffffffffb,\
             umin32=0xfffffffb,var_off=(0xfffffffffffffff8; 0x7))"
        );
    }
}
