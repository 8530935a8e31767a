//! Integer intervals: the bounds half of a [`Scalar`](super::scalar::Scalar).
//!
//! # Model
//!
//! A register holds 64 bits, which the verifier reads four ways
//! ([`Kind`]): as an unsigned or signed 64-bit number, and its low 32 bits
//! as an unsigned or signed 32-bit number. An [`Interval`] `[lo, hi]`
//! bounds one such reading; it stands for the set of registers whose
//! reading in that kind lies in `[lo, hi]`. Endpoints are `i128`, so that
//! all four kinds share one arithmetic and intermediate results (a sum of
//! two `u64` maxima, a product of two `i64` minima) never overflow.
//!
//! Intervals of one kind, ordered by inclusion, form a lattice whose join
//! is [`Interval::hull`] and meet [`Interval::meet`] (`None` is bottom).
//!
//! # Soundness
//!
//! The arithmetic works on mathematical integers and then reduces the
//! result into the kind with [`Interval::fit`]: a register operation is
//! the mathematical one modulo 2^bits, so if `x op y` lies in the
//! mathematical interval, the register result lies in its reduction. The
//! reduction is exact when the interval does not straddle a multiple of the
//! modulus (measured from the kind's minimum), and the whole kind otherwise
//! ("wrapped"). Division and remainder are analysed with the truncating
//! semantics of RFC 9669 section 4.1 (`x / 0 = 0`, `x % 0 = x`). The
//! property tests of [`super::scalar`] check every operation through the
//! scalar domain.

use std::cmp::{max, min};

/// One reading of a 64-bit register: width and signedness.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    /// All 64 bits, unsigned (`umin`/`umax`).
    U64,
    /// All 64 bits, two's complement (`smin`/`smax`).
    S64,
    /// The low 32 bits, unsigned (`u32_min`/`u32_max`).
    U32,
    /// The low 32 bits, two's complement (`s32_min`/`s32_max`).
    S32,
}

impl Kind {
    /// Every kind, in the order the kernel prints them after signedness.
    pub const ALL: [Kind; 4] = [Kind::U64, Kind::S64, Kind::U32, Kind::S32];

    /// The number of bits read (64 or 32).
    pub const fn bits(self) -> u32 {
        match self {
            Kind::U64 | Kind::S64 => 64,
            Kind::U32 | Kind::S32 => 32,
        }
    }

    /// Whether the reading is two's complement.
    pub const fn signed(self) -> bool {
        matches!(self, Kind::S64 | Kind::S32)
    }

    /// The smallest value of the kind.
    pub const fn min(self) -> i128 {
        kind_min(self.bits(), self.signed())
    }

    /// The largest value of the kind.
    pub const fn max(self) -> i128 {
        kind_min(self.bits(), self.signed()) + (1i128 << self.bits()) - 1
    }

    /// What register value `x` reads as in this kind.
    pub const fn of(self, x: u64) -> i128 {
        match self {
            Kind::U64 => x as i128,
            Kind::S64 => x as i64 as i128,
            Kind::U32 => x as u32 as i128,
            Kind::S32 => x as u32 as i32 as i128,
        }
    }

    /// The same width with the other signedness.
    pub const fn flip_sign(self) -> Kind {
        match self {
            Kind::U64 => Kind::S64,
            Kind::S64 => Kind::U64,
            Kind::U32 => Kind::S32,
            Kind::S32 => Kind::U32,
        }
    }
}

/// The smallest value of a `bits`-wide integer type.
const fn kind_min(bits: u32, signed: bool) -> i128 {
    if signed {
        -(1i128 << (bits - 1))
    } else {
        0
    }
}

/// The smallest `2^k - 1` that is `>= v` (for `v >= 0`): every number
/// made of bits no higher than `v`'s highest bit is at most this.
fn all_ones_above(v: i128) -> i128 {
    debug_assert!(v >= 0);
    let bits = 128 - v.leading_zeros();
    if bits >= 127 {
        i128::MAX
    } else {
        (1i128 << bits) - 1
    }
}

/// A closed interval `[lo, hi]` of integers, `lo <= hi`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Interval {
    /// The smallest value.
    pub lo: i128,
    /// The largest value.
    pub hi: i128,
}

impl Interval {
    /// `[lo, hi]`; the caller keeps `lo <= hi`.
    pub const fn new(lo: i128, hi: i128) -> Interval {
        Interval { lo, hi }
    }

    /// Exactly `v`.
    pub const fn point(v: i128) -> Interval {
        Interval { lo: v, hi: v }
    }

    /// Every value of `kind`.
    pub const fn full(kind: Kind) -> Interval {
        Interval::new(kind.min(), kind.max())
    }

    /// Whether `v` is in the interval.
    pub const fn contains(self, v: i128) -> bool {
        self.lo <= v && v <= self.hi
    }

    /// Whether every value of `other` is in `self`.
    pub const fn includes(self, other: Interval) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    /// Whether the interval is a single value.
    pub const fn is_point(self) -> bool {
        self.lo == self.hi
    }

    /// The intersection, `None` when empty.
    pub fn meet(self, other: Interval) -> Option<Interval> {
        let lo = max(self.lo, other.lo);
        let hi = min(self.hi, other.hi);
        (lo <= hi).then_some(Interval::new(lo, hi))
    }

    /// The smallest interval holding both.
    pub fn hull(self, other: Interval) -> Interval {
        Interval::new(min(self.lo, other.lo), max(self.hi, other.hi))
    }

    /// The smallest interval of a `bits`-wide type (signed or not) that
    /// holds every value of `self` reduced modulo `2^bits` into that type:
    /// exact if the reduction does not wrap around, the whole type if it
    /// does.
    pub fn fit_bits(self, bits: u32, signed: bool) -> Interval {
        let base = kind_min(bits, signed);
        let modulus = 1i128 << bits;
        let full = Interval::new(base, base + modulus - 1);
        if self.hi - self.lo >= modulus - 1 {
            return full;
        }
        // `modulus` is a power of two: the mask is `rem_euclid` without an
        // i128 division (a hot path of every bounds sync).
        let lo = base + ((self.lo - base) & (modulus - 1));
        let hi = lo + (self.hi - self.lo);
        if hi <= full.hi {
            Interval::new(lo, hi)
        } else {
            full
        }
    }

    /// [`Interval::fit_bits`] into `kind`.
    pub fn fit(self, kind: Kind) -> Interval {
        self.fit_bits(kind.bits(), kind.signed())
    }

    /// Narrows `self` to the values whose residue modulo `2^bits` lies in
    /// `low`, read cyclically (`low` may be an interval of another kind of
    /// that width, e.g. signed bounds restricting unsigned ones). Only the
    /// endpoints move: each goes to the nearest value that meets the
    /// constraint. `None` when no value of `self` does.
    pub fn restrict_low(self, low: Interval, bits: u32) -> Option<Interval> {
        let modulus = 1i128 << bits;
        let len = low.hi - low.lo;
        if len >= modulus - 1 {
            return Some(self);
        }
        let mut lo = self.lo;
        // (A mask: `rem_euclid` by a power of two, without an i128 division.)
        let off = (lo - low.lo) & (modulus - 1);
        if off > len {
            lo += modulus - off;
        }
        let mut hi = self.hi;
        let off = (hi - low.lo) & (modulus - 1);
        if off > len {
            hi -= off - len;
        }
        (lo <= hi).then_some(Interval::new(lo, hi))
    }

    /// `x + y` in `kind`.
    pub fn add(self, other: Interval, kind: Kind) -> Interval {
        Interval::new(self.lo + other.lo, self.hi + other.hi).fit(kind)
    }

    /// `x - y` in `kind`.
    pub fn sub(self, other: Interval, kind: Kind) -> Interval {
        Interval::new(self.lo - other.hi, self.hi - other.lo).fit(kind)
    }

    /// `x * y` in `kind`: the product is monotone in each factor on each
    /// side of zero, so its extremes are among the four corner products.
    pub fn mul(self, other: Interval, kind: Kind) -> Interval {
        let corners = [
            self.lo.checked_mul(other.lo),
            self.lo.checked_mul(other.hi),
            self.hi.checked_mul(other.lo),
            self.hi.checked_mul(other.hi),
        ];
        hull_of(corners).map_or(Interval::full(kind), |i| i.fit(kind))
    }

    /// `x << s` in `kind`, for a shift `s` below 64: multiplication by
    /// `2^s`; a shift by the width or more leaves zero.
    pub fn shl(self, s: u32, kind: Kind) -> Interval {
        if s >= kind.bits() {
            return Interval::point(0);
        }
        self.mul(Interval::point(1i128 << s), kind)
    }

    /// `x >> s` where the shift matches the kind (logical for unsigned,
    /// arithmetic for signed): monotone, so the endpoints shift.
    pub fn shr_by(self, s: u32) -> Interval {
        Interval::new(self.lo >> s, self.hi >> s)
    }

    /// Truncating `x / y` in `kind`, `x / 0 = 0`. Over a rectangle where
    /// `y` keeps one sign the quotient is monotone in each operand, so the
    /// extremes are corners; the negative and positive parts of `y` are
    /// done apart, and zero contributes 0. The one overflow, `MIN / -1`,
    /// comes out as `2^(bits-1)` and wraps in [`Interval::fit`].
    pub fn div(self, other: Interval, kind: Kind) -> Interval {
        let mut acc: Option<Interval> = other.contains(0).then_some(Interval::point(0));
        for part in [
            other.meet(Interval::new(i128::MIN, -1)),
            other.meet(Interval::new(1, i128::MAX)),
        ]
        .into_iter()
        .flatten()
        {
            let q = hull_of([
                Some(self.lo / part.lo),
                Some(self.lo / part.hi),
                Some(self.hi / part.lo),
                Some(self.hi / part.hi),
            ]);
            acc = join_opt(acc, q);
        }
        acc.map_or(Interval::full(kind), |i| i.fit(kind))
    }

    /// Truncating `x % y` in `kind`, `x % 0 = x`: the remainder takes the
    /// sign of `x` and is smaller in magnitude than both `|x| + 1` and
    /// `|y|`.
    pub fn rem(self, other: Interval, kind: Kind) -> Interval {
        if self.is_point() && other.is_point() {
            let (x, y) = (self.lo, other.lo);
            let r = if y == 0 { x } else { x % y };
            return Interval::point(r).fit(kind);
        }
        if other.is_point() && other.lo != 0 && (self.lo >= 0 || self.hi <= 0) {
            // Where the quotient is the same for all x, x % y = x - q * y
            // moves with x.
            let y = other.lo;
            if self.lo / y == self.hi / y {
                return Interval::new(self.lo % y, self.hi % y).fit(kind);
            }
        }
        let neg = other.meet(Interval::new(i128::MIN, -1));
        let pos = other.meet(Interval::new(1, i128::MAX));
        let mut acc: Option<Interval> = other.contains(0).then_some(self);
        // The largest |y| over the non-zero divisors.
        let big_y = max(neg.map_or(0, |n| -n.lo), pos.map_or(0, |p| p.hi));
        if big_y > 0 {
            let small_y = min(
                neg.map_or(i128::MAX, |n| -n.hi),
                pos.map_or(i128::MAX, |p| p.lo),
            );
            let r = if self.lo >= 0 && self.hi < small_y {
                // Every x is below every |y|: x % y == x.
                self
            } else {
                let lim = big_y - 1;
                Interval::new(max(min(self.lo, 0), -lim), min(max(self.hi, 0), lim))
            };
            acc = join_opt(acc, Some(r));
        }
        acc.map_or(Interval::full(kind), |i| i.fit(kind))
    }

    /// `x & y` in `kind`: see `Interval::bitwise`.
    pub fn and(self, other: Interval, kind: Kind) -> Interval {
        self.bitwise(other, kind, Bitwise::And)
    }

    /// `x | y` in `kind`: see `Interval::bitwise`.
    pub fn or(self, other: Interval, kind: Kind) -> Interval {
        self.bitwise(other, kind, Bitwise::Or)
    }

    /// `x ^ y` in `kind`: see `Interval::bitwise`.
    pub fn xor(self, other: Interval, kind: Kind) -> Interval {
        self.bitwise(other, kind, Bitwise::Xor)
    }

    /// A bitwise operation, bounded two ways and the results intersected:
    ///
    /// - by sign: the sign of the result follows from the operands' signs
    ///   and its magnitude stays below the next power of two;
    /// - exactly for the interval constraints alone, when neither operand
    ///   crosses the sign boundary: on the operands' bit patterns (unsigned,
    ///   `2^bits` added to negatives) the extremes of `x | y`, `x & y` and
    ///   `x ^ y` over two unsigned intervals are found bit by bit from the
    ///   top, as in Warren, *Hacker's Delight*, section 4-3.
    fn bitwise(self, other: Interval, kind: Kind, op: Bitwise) -> Interval {
        // Two constants: the exact result, which the bounds below would
        // also find, at a fraction of the cost.
        if self.lo == self.hi && other.lo == other.hi {
            if let (Some((a, _)), Some((c, _))) = (self.pattern(kind), other.pattern(kind)) {
                let v = match op {
                    Bitwise::And => a & c,
                    Bitwise::Or => a | c,
                    Bitwise::Xor => a ^ c,
                };
                return Interval::point(v.into()).fit(kind);
            }
        }
        let by_sign = match op {
            Bitwise::And => self.and_by_sign(other, kind),
            Bitwise::Or => self.or_by_sign(other, kind),
            Bitwise::Xor => self.xor_by_sign(other, kind),
        };
        let (Some((a, b)), Some((c, d))) = (self.pattern(kind), other.pattern(kind)) else {
            return by_sign;
        };
        let (lo, hi) = match op {
            Bitwise::And => (min_and(a, b, c, d), max_and(a, b, c, d)),
            Bitwise::Or => (min_or(a, b, c, d), max_or(a, b, c, d)),
            Bitwise::Xor => (min_xor(a, b, c, d), max_xor(a, b, c, d)),
        };
        let exact = Interval::new(lo.into(), hi.into()).fit(kind);
        // Both are sound, so they overlap unless an operand is empty.
        by_sign.meet(exact).unwrap_or(by_sign)
    }

    /// The bit patterns (as unsigned `bits`-wide numbers) of the interval's
    /// ends, if it does not cross the sign boundary, where patterns jump.
    fn pattern(self, kind: Kind) -> Option<(u64, u64)> {
        if self.lo >= 0 {
            Some((self.lo as u64, self.hi as u64))
        } else if self.hi < 0 {
            let m = 1i128 << kind.bits();
            Some(((self.lo + m) as u64, (self.hi + m) as u64))
        } else {
            None
        }
    }

    /// `x & y` by sign: no larger than a non-negative operand, and below
    /// both when both are negative (the sign bit stays, others only clear).
    fn and_by_sign(self, other: Interval, kind: Kind) -> Interval {
        let mut r = Interval::full(kind);
        for a in [self, other] {
            if a.lo >= 0 {
                r = r.meet(Interval::new(0, a.hi)).unwrap_or(r);
            }
        }
        if self.hi < 0 && other.hi < 0 {
            let cap = Interval::new(kind.min(), min(self.hi, other.hi));
            r = r.meet(cap).unwrap_or(r);
        }
        r
    }

    /// `x | y` by sign: at least the larger of two non-negative operands
    /// and below the next power of two; at least a negative operand and
    /// negative.
    fn or_by_sign(self, other: Interval, kind: Kind) -> Interval {
        let mut r = Interval::full(kind);
        if self.lo >= 0 && other.lo >= 0 {
            let hi = all_ones_above(max(self.hi, other.hi));
            r = Interval::new(max(self.lo, other.lo), min(hi, kind.max()));
        }
        for a in [self, other] {
            if a.hi < 0 {
                r = r.meet(Interval::new(a.lo, -1)).unwrap_or(r);
            }
        }
        r
    }

    /// `x ^ y` by sign: operands of equal sign give a non-negative
    /// result, of different signs a negative one, and in both cases the
    /// magnitude stays below the next power of two of the magnitudes (with
    /// `!x = -x - 1` standing in for a negative `x`).
    fn xor_by_sign(self, other: Interval, kind: Kind) -> Interval {
        // Magnitude bound of x when its sign is known: x itself or !x.
        let mag = |a: Interval| {
            if a.lo >= 0 {
                Some((false, a.hi))
            } else if a.hi < 0 {
                Some((true, -a.lo - 1))
            } else {
                None
            }
        };
        match (mag(self), mag(other)) {
            (Some((na, ma)), Some((nb, mb))) => {
                let m = min(all_ones_above(max(ma, mb)), kind.max());
                if na == nb {
                    Interval::new(0, m)
                } else {
                    Interval::new(max(-m - 1, kind.min()), -1)
                }
            }
            _ => Interval::full(kind),
        }
    }
}

/// The bitwise operations [`Interval::bitwise`] bounds.
#[derive(Clone, Copy)]
enum Bitwise {
    And,
    Or,
    Xor,
}

// Extremes of bitwise operations over `x` in `[a, b]` and `y` in `[c, d]`
// (unsigned). Each walks the bits from the top looking for the first
// position where one operand can be moved to a nearby value with a better
// bit there without leaving its interval; after that move the lower bits
// are free, so the answer is the operation on the moved ends.

/// Smallest `x | y`: raise `x` (or `y`) to set a bit the other has, so
/// that the bits below can all be zero.
fn min_or(mut a: u64, b: u64, mut c: u64, d: u64) -> u64 {
    let mut m = top_bit(a | b | c | d);
    while m != 0 {
        if !a & c & m != 0 {
            let t = (a | m) & m.wrapping_neg();
            if t <= b {
                a = t;
                break;
            }
        } else if a & !c & m != 0 {
            let t = (c | m) & m.wrapping_neg();
            if t <= d {
                c = t;
                break;
            }
        }
        m >>= 1;
    }
    a | c
}

/// Largest `x | y`: where both maxima have a bit, clear it in one and set
/// all the bits below instead.
fn max_or(a: u64, mut b: u64, c: u64, mut d: u64) -> u64 {
    let mut m = top_bit(a | b | c | d);
    while m != 0 {
        if b & d & m != 0 {
            let t = (b - m) | (m - 1);
            if t >= a {
                b = t;
                break;
            }
            let t = (d - m) | (m - 1);
            if t >= c {
                d = t;
                break;
            }
        }
        m >>= 1;
    }
    b | d
}

/// Smallest `x & y`: where both minima lack a bit, raise one to it so that
/// the bits below can all be zero.
fn min_and(mut a: u64, b: u64, mut c: u64, d: u64) -> u64 {
    let mut m = top_bit(a | b | c | d);
    while m != 0 {
        if !a & !c & m != 0 {
            let t = (a | m) & m.wrapping_neg();
            if t <= b {
                a = t;
                break;
            }
            let t = (c | m) & m.wrapping_neg();
            if t <= d {
                c = t;
                break;
            }
        }
        m >>= 1;
    }
    a & c
}

/// Largest `x & y`: where only one maximum has a bit, clear it there and
/// set all the bits below.
fn max_and(a: u64, mut b: u64, c: u64, mut d: u64) -> u64 {
    let mut m = top_bit(a | b | c | d);
    while m != 0 {
        if b & !d & m != 0 {
            let t = (b & !m) | (m - 1);
            if t >= a {
                b = t;
                break;
            }
        } else if !b & d & m != 0 {
            let t = (d & !m) | (m - 1);
            if t >= c {
                d = t;
                break;
            }
        }
        m >>= 1;
    }
    b & d
}

/// The highest bit set in `x` (0 for 0). The bit loops above start there:
/// at a higher bit all four bounds are 0, where no step of them changes
/// anything (a step needs a bound with the bit, or, for the smallest
/// `x & y`, raises a minimum past its maximum), so those rounds are
/// skipped (for small values, most of the 64).
fn top_bit(x: u64) -> u64 {
    if x == 0 {
        0
    } else {
        1u64 << (63 - x.leading_zeros())
    }
}

/// Smallest `x ^ y`, from `x ^ y = (x & !y) | (!x & y)`.
fn min_xor(a: u64, b: u64, c: u64, d: u64) -> u64 {
    min_and(a, b, !d, !c) | min_and(!b, !a, c, d)
}

/// Largest `x ^ y`, from `x ^ y = (x & !y) | (!x & y)`.
fn max_xor(a: u64, b: u64, c: u64, d: u64) -> u64 {
    max_or(0, max_and(a, b, !d, !c), 0, max_and(!b, !a, c, d))
}

/// The hull of some values, `None` if any is missing (overflowed).
fn hull_of(vals: [Option<i128>; 4]) -> Option<Interval> {
    let mut acc: Option<Interval> = None;
    for v in vals {
        acc = join_opt(acc, Some(Interval::point(v?)));
    }
    acc
}

/// The hull of two optional intervals (`None` is the empty set).
fn join_opt(a: Option<Interval>, b: Option<Interval>) -> Option<Interval> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.hull(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An interval of `kind` and a member of it, as a register value.
    fn member(kind: Kind) -> impl Strategy<Value = (Interval, u64)> {
        (any::<u64>(), any::<u64>(), 0u32..65, any::<u64>()).prop_map(move |(x, d1, w, d2)| {
            let v = kind.of(x);
            let spread = |d: u64| {
                if w >= 64 {
                    d as i128
                } else {
                    (d & ((1u64 << w) - 1)) as i128
                }
            };
            let lo = max(kind.min(), v - spread(d1));
            let hi = min(kind.max(), v + spread(d2));
            (Interval::new(lo, hi), x)
        })
    }

    fn kinds() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::U64),
            Just(Kind::S64),
            Just(Kind::U32),
            Just(Kind::S32)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn fit_and_restrict_keep_members(
            k1 in kinds(), k2 in kinds(),
            ((a, x), d) in (member(Kind::U64), any::<u64>()),
        ) {
            // x's reading in k2 is in the fit of its reading in k1 whenever
            // k2 is no wider.
            let ia = Interval::new(k1.of(x) - (d % 7) as i128, k1.of(x) + (d % 5) as i128);
            if k2.bits() <= k1.bits() {
                prop_assert!(ia.fit(k2).contains(k2.of(x)));
                let r = Interval::full(k1).restrict_low(Interval::point(k2.of(x)), k2.bits());
                prop_assert!(r.is_some_and(|r| r.contains(k1.of(x))));
            }
            prop_assert!(a.contains(x as i128));
        }

        #[test]
        fn arithmetic_is_sound(k in kinds(), (a, x) in member(Kind::U64), (b, y) in member(Kind::U64)) {
            // Re-read the members and intervals in kind k.
            let (a, b) = (a.fit(k), b.fit(k));
            let (xk, yk) = (k.of(x), k.of(y));
            prop_assume!(a.contains(xk) && b.contains(yk));
            prop_assert!(a.add(b, k).contains(k.of(x.wrapping_add(y))));
            prop_assert!(a.sub(b, k).contains(k.of(x.wrapping_sub(y))));
            prop_assert!(a.mul(b, k).contains(k.of(x.wrapping_mul(y))));
            prop_assert!(a.and(b, k).contains(k.of(x & y)));
            prop_assert!(a.or(b, k).contains(k.of(x | y)));
            prop_assert!(a.xor(b, k).contains(k.of(x ^ y)));
            let q = if yk == 0 { 0 } else { xk / yk };
            prop_assert!(a.div(b, k).contains(Interval::point(q).fit(k).lo));
            let r = if yk == 0 { xk } else { xk % yk };
            prop_assert!(a.rem(b, k).contains(r));
        }

        /// Shifts, as `Scalar` uses them: left in every kind (a shift by
        /// the width or more leaves zero), right by the kind's own shift
        /// (logical when unsigned, arithmetic when signed).
        #[test]
        fn shifts_are_sound(k in kinds(), (a, x) in member(Kind::U64), s in 0u32..64) {
            let a = a.fit(k);
            let xk = k.of(x);
            prop_assume!(a.contains(xk));
            let shifted = if s >= k.bits() { 0 } else { x << s };
            prop_assert!(a.shl(s, k).contains(k.of(shifted)), "{:?} << {}", a, s);
            if s < k.bits() {
                prop_assert!(a.shr_by(s).contains(xk >> s), "{:?} >> {}", a, s);
            }
        }

        /// The lattice operations: the hull holds both members, the meet
        /// holds what both hold and is empty only when nothing is.
        #[test]
        fn meet_and_hull_are_sound((a, x) in member(Kind::U64), (b, y) in member(Kind::U64)) {
            let (xi, yi) = (x as i128, y as i128);
            let h = a.hull(b);
            prop_assert!(h.contains(xi) && h.contains(yi) && h.includes(a) && h.includes(b));
            match a.meet(b) {
                Some(m) => {
                    prop_assert!(a.includes(m) && b.includes(m));
                    if b.contains(xi) {
                        prop_assert!(m.contains(xi));
                    }
                }
                None => prop_assert!(!b.contains(xi) && !a.contains(yi)),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Two constants of any size: the bitwise bounds are the one value
        /// (the direct path for points, checked against the integers).
        #[test]
        fn bitwise_of_points_is_the_point(k in kinds(), x in any::<u64>(), y in any::<u64>()) {
            let (p, q) = (k.of(x), k.of(y));
            let (a, b) = (Interval::point(p), Interval::point(q));
            prop_assert_eq!(a.and(b, k), Interval::point(k.of(x & y)));
            prop_assert_eq!(a.or(b, k), Interval::point(k.of(x | y)));
            prop_assert_eq!(a.xor(b, k), Interval::point(k.of(x ^ y)));
        }

        /// On small intervals of one sign, the bitwise bounds are the exact
        /// extremes (checked by enumeration), in unsigned and signed kinds.
        #[test]
        fn bitwise_bounds_are_exact(
            a in -40i128..40, da in 0i128..24, b in -40i128..40, db in 0i128..24,
            k in prop_oneof![Just(Kind::S64), Just(Kind::S32), Just(Kind::U64)],
        ) {
            let one_sign = |lo: i128, d: i128| if lo < 0 { (lo, (lo + d).min(-1)) } else { (lo, lo + d) };
            let ((a, a2), (b, b2)) = (one_sign(a, da), one_sign(b, db));
            prop_assume!(!(k == Kind::U64 && (a < 0 || b < 0)));
            let (x, y) = (Interval::new(a, a2), Interval::new(b, b2));
            type Op = fn(i128, i128) -> i128;
            let ops: [(Op, Interval); 3] = [
                (|p, q| p & q, x.and(y, k)),
                (|p, q| p | q, x.or(y, k)),
                (|p, q| p ^ q, x.xor(y, k)),
            ];
            for (f, got) in ops {
                let mut exact: Option<Interval> = None;
                for p in a..=a2 {
                    for q in b..=b2 {
                        exact = join_opt(exact, Some(Interval::point(f(p, q))));
                    }
                }
                prop_assert_eq!(Some(got), exact, "{:?} {:?} {:?}", x, y, k);
            }
        }
    }

    #[test]
    fn fit_wraps_only_when_crossing() {
        let i = Interval::new(-1, 0);
        assert_eq!(i.fit(Kind::U64), Interval::full(Kind::U64));
        assert_eq!(i.fit(Kind::S32), i);
        let i = Interval::new(1 << 32, (1 << 32) + 5);
        assert_eq!(i.fit(Kind::U32), Interval::new(0, 5));
        let i = Interval::new(-5, -1);
        assert_eq!(
            Interval::full(Kind::U64).restrict_low(i, 64),
            Some(Interval::new((1 << 64) - 5, (1 << 64) - 1))
        );
    }
}
