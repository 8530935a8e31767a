//! Tristate numbers ("tnums"): per-bit knowledge of a 64-bit value.
//!
//! # Model
//!
//! A tnum is a pair `(value, mask)` with `value & mask == 0`. Bits set in
//! `mask` are unknown; every other bit is known and equal to the bit of
//! `value`. The tnum stands for the set `{ x | x & !mask == value }`
//! ([`Tnum::contains`]).
//!
//! Ordered by set inclusion, tnums form a lattice: bottom is not
//! representable (the verifier tracks unreachable states elsewhere), top is
//! [`Tnum::UNKNOWN`], the meet is [`Tnum::intersect`] (for two tnums known to
//! describe the same value) and the join is [`Tnum::union`].
//!
//! # Soundness
//!
//! Every operation `op#` here over-approximates its concrete twin: for all
//! `x` in `a` and `y` in `b`, `x op y` is in `a op# b`. The property tests at
//! the end of this file check exactly that claim for every operation. The
//! arithmetic rules (carry propagation for add/sub, shift-and-add for mul)
//! follow the analysis of Vishwanathan et al., "Sound, Precise, and Fast
//! Abstract Interpretation with Tristate Numbers" (CGO 2022), which is also
//! what the Linux verifier implements.

use std::fmt;

/// A tristate number: known bits in `value`, unknown bits in `mask`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tnum {
    value: u64,
    mask: u64,
}

impl fmt::Debug for Tnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:#x}; {:#x})", self.value, self.mask)
    }
}

impl Tnum {
    /// Every value: all bits unknown.
    pub const UNKNOWN: Tnum = Tnum {
        value: 0,
        mask: u64::MAX,
    };

    /// The tnum with known bits `value` and unknown bits `mask`. Bits set in
    /// both are taken as unknown.
    pub const fn new(value: u64, mask: u64) -> Tnum {
        Tnum {
            value: value & !mask,
            mask,
        }
    }

    /// Exactly `c`.
    pub const fn constant(c: u64) -> Tnum {
        Tnum { value: c, mask: 0 }
    }

    /// The known bits' values (unknown bits read as 0).
    pub const fn value(self) -> u64 {
        self.value
    }

    /// The unknown bits.
    pub const fn mask(self) -> u64 {
        self.mask
    }

    /// The smallest tnum holding every value of `[min, max]` (unsigned):
    /// the bits above the highest bit in which `min` and `max` differ are
    /// known, the rest unknown.
    pub fn range(min: u64, max: u64) -> Tnum {
        let differ = min ^ max;
        let bits = 64 - differ.leading_zeros();
        if bits >= 64 {
            return Tnum::UNKNOWN;
        }
        let low = (1u64 << bits) - 1;
        Tnum::new(min & !low, low)
    }

    /// Whether every bit is known.
    pub const fn is_const(self) -> bool {
        self.mask == 0
    }

    /// Whether every bit is unknown.
    pub const fn is_unknown(self) -> bool {
        self.mask == u64::MAX
    }

    /// Whether `x` is one of the values this tnum stands for.
    pub const fn contains(self, x: u64) -> bool {
        x & !self.mask == self.value
    }

    /// Whether every value of `other` is a value of `self` (`other ⊆ self`).
    pub const fn includes(self, other: Tnum) -> bool {
        other.mask & !self.mask == 0 && other.value & !self.mask == self.value
    }

    /// The smallest value it stands for (unsigned).
    pub const fn umin(self) -> u64 {
        self.value
    }

    /// The largest value it stands for (unsigned).
    pub const fn umax(self) -> u64 {
        self.value | self.mask
    }

    /// The smallest value as a signed number: the sign bit set if unknown.
    pub const fn smin(self) -> i64 {
        let sign = 1u64 << 63;
        (self.value | (self.mask & sign)) as i64
    }

    /// The largest value as a signed number: the sign bit clear if unknown.
    pub const fn smax(self) -> i64 {
        let sign = 1u64 << 63;
        ((self.value | self.mask) & !(self.mask & sign)) as i64
    }

    /// `self << shift` (shift below 64).
    pub const fn shl(self, shift: u32) -> Tnum {
        Tnum::new(self.value << shift, self.mask << shift)
    }

    /// Logical `self >> shift` (shift below 64).
    pub const fn shr(self, shift: u32) -> Tnum {
        Tnum::new(self.value >> shift, self.mask >> shift)
    }

    /// Arithmetic `self >> shift` of the low `width` bits (32 or 64), with
    /// the sign bit of that width; the result is zero-extended from `width`.
    pub const fn arsh(self, shift: u32, width: u32) -> Tnum {
        if width == 32 {
            let v = ((self.value as u32 as i32) >> shift) as u32 as u64;
            let m = ((self.mask as u32 as i32) >> shift) as u32 as u64;
            Tnum::new(v, m)
        } else {
            // An unknown sign bit smears into the mask; a known one into
            // the value, exactly like the concrete shift.
            let v = ((self.value as i64) >> shift) as u64;
            let m = ((self.mask as i64) >> shift) as u64;
            Tnum::new(v, m)
        }
    }

    /// `self + other` (wrapping). A bit of the sum is unknown if an operand
    /// bit is unknown or a carry into it may differ between the smallest and
    /// the largest possible sums.
    pub const fn add(self, other: Tnum) -> Tnum {
        let sum_mask = self.mask.wrapping_add(other.mask);
        let sum_value = self.value.wrapping_add(other.value);
        let sum_max = sum_mask.wrapping_add(sum_value);
        let carries = sum_max ^ sum_value;
        let unknown = carries | self.mask | other.mask;
        Tnum::new(sum_value, unknown)
    }

    /// `self - other` (wrapping), the borrow analogue of [`Tnum::add`].
    pub const fn sub(self, other: Tnum) -> Tnum {
        let diff = self.value.wrapping_sub(other.value);
        let high = diff.wrapping_add(self.mask);
        let low = diff.wrapping_sub(other.mask);
        let unknown = (high ^ low) | self.mask | other.mask;
        Tnum::new(diff, unknown)
    }

    /// `-self` (wrapping).
    pub const fn neg(self) -> Tnum {
        Tnum::constant(0).sub(self)
    }

    /// `self & other`: a result bit is known 0 when either operand bit is
    /// known 0, known 1 when both are known 1.
    pub const fn and(self, other: Tnum) -> Tnum {
        let may_self = self.value | self.mask;
        let may_other = other.value | other.mask;
        let ones = self.value & other.value;
        Tnum::new(ones, may_self & may_other & !ones)
    }

    /// `self | other`.
    pub const fn or(self, other: Tnum) -> Tnum {
        let ones = self.value | other.value;
        Tnum::new(ones, (self.mask | other.mask) & !ones)
    }

    /// `self ^ other`.
    pub const fn xor(self, other: Tnum) -> Tnum {
        let unknown = self.mask | other.mask;
        Tnum::new(self.value ^ other.value, unknown)
    }

    /// `self * other` (wrapping), as a sum of shifted partial products: a
    /// known-one bit of `self` adds `other << i`, an unknown bit adds
    /// "0 or `other << i`".
    pub const fn mul(self, other: Tnum) -> Tnum {
        // Known part of the product first, then the uncertainty of each
        // partial product added as a tnum.
        let mut acc = Tnum::constant(self.value.wrapping_mul(other.value));
        let mut a = self;
        let mut b = other;
        while a.value != 0 || a.mask != 0 {
            if a.value & 1 != 0 {
                // Contributes exactly b; the known part b.value is already in
                // the constant above, the unknown part remains.
                acc = acc.add(Tnum::new(0, b.mask));
            } else if a.mask & 1 != 0 {
                // Contributes 0 or b.
                acc = acc.add(Tnum::new(0, b.value | b.mask));
            }
            a = a.shr(1);
            b = b.shl(1);
        }
        acc
    }

    /// The meet of two tnums that describe the same value: what either
    /// knows is known. (If they contradict, the result is still some tnum;
    /// the caller has a contradiction, i.e. an unreachable path, to detect.)
    pub const fn intersect(self, other: Tnum) -> Tnum {
        let value = self.value | other.value;
        let mask = self.mask & other.mask;
        Tnum::new(value, mask)
    }

    /// The meet, or `None` when the two tnums know some bit differently,
    /// i.e. no value is in both.
    pub const fn try_intersect(self, other: Tnum) -> Option<Tnum> {
        let known_both = !self.mask & !other.mask;
        if (self.value ^ other.value) & known_both != 0 {
            return None;
        }
        Some(self.intersect(other))
    }

    /// The smallest member that is `>= lo` (unsigned), if any.
    ///
    /// The answer agrees with `lo` on the bits above some position `i`,
    /// has a one at `i` where `lo` has a zero, and the smallest members'
    /// bits below `i`. The lowest such `i` gives the smallest value; it
    /// cannot be below the highest bit where `lo` contradicts a known bit.
    pub const fn min_at_least(self, lo: u64) -> Option<u64> {
        let bad = (lo ^ self.value) & !self.mask;
        if bad == 0 {
            return Some(lo);
        }
        let h = 63 - bad.leading_zeros();
        let may_be_one = self.value | self.mask;
        let candidates = !lo & may_be_one & (u64::MAX << h);
        if candidates == 0 {
            return None;
        }
        let i = candidates.trailing_zeros();
        let above = if i == 63 {
            0
        } else {
            lo & (u64::MAX << (i + 1))
        };
        let below = self.value & ((1u64 << i) - 1);
        Some(above | (1u64 << i) | below)
    }

    /// The largest member that is `<= hi` (unsigned), if any: the mirror
    /// image of [`Tnum::min_at_least`] under bitwise not.
    pub const fn max_at_most(self, hi: u64) -> Option<u64> {
        let flipped = Tnum::new(!self.value & !self.mask, self.mask);
        match flipped.min_at_least(!hi) {
            Some(x) => Some(!x),
            None => None,
        }
    }

    /// The low `bytes` bytes (2, 4 or 8) in reverse byte order,
    /// zero-extended. Exact: it only moves bits around.
    pub const fn swap_bytes(self, bytes: u32) -> Tnum {
        let t = self.cast(bytes);
        match bytes {
            2 => Tnum::new(
                (t.value as u16).swap_bytes() as u64,
                (t.mask as u16).swap_bytes() as u64,
            ),
            4 => Tnum::new(
                (t.value as u32).swap_bytes() as u64,
                (t.mask as u32).swap_bytes() as u64,
            ),
            _ => Tnum::new(t.value.swap_bytes(), t.mask.swap_bytes()),
        }
    }

    /// The join: the smallest tnum holding every value of both.
    pub const fn union(self, other: Tnum) -> Tnum {
        let mask = self.mask | other.mask | (self.value ^ other.value);
        Tnum::new(self.value, mask)
    }

    /// The low `bytes` bytes (1, 2, 4 or 8), zero-extended.
    pub const fn cast(self, bytes: u32) -> Tnum {
        if bytes >= 8 {
            return self;
        }
        let keep = (1u64 << (bytes * 8)) - 1;
        Tnum::new(self.value & keep, self.mask & keep)
    }

    /// The low 32 bits (the subregister), zero-extended.
    pub const fn subreg(self) -> Tnum {
        self.cast(4)
    }

    /// `self` with the low 32 bits cleared.
    pub const fn clear_subreg(self) -> Tnum {
        self.shr(32).shl(32)
    }

    /// `self` with the low 32 bits replaced by `low`'s low 32 bits.
    pub const fn with_subreg(self, low: Tnum) -> Tnum {
        self.clear_subreg().or(low.cast(4))
    }

    /// Whether every value is a multiple of `size` (a power of two).
    pub const fn is_aligned(self, size: u64) -> bool {
        size == 0 || (self.value | self.mask) & (size - 1) == 0
    }
}

impl fmt::Display for Tnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The kernel's log syntax: var_off=(value; mask).
        write!(f, "({:#x}; {:#x})", self.value, self.mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tnum and a member of it. Masks are drawn sparse, dense and
    /// contiguous so that both precise and vague operands occur.
    fn member() -> impl Strategy<Value = (Tnum, u64)> {
        let mask = prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            any::<u64>(),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| a & b),
            (0u32..64).prop_map(|n| (1u64 << n) - 1),
            (0u32..64, 0u32..64).prop_map(|(n, s)| ((1u64 << n) - 1) << s),
        ];
        (any::<u64>(), mask, any::<u64>())
            .prop_map(|(v, m, pick)| (Tnum::new(v, m), (v & !m) | (pick & m)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn member_is_contained((a, x) in member()) {
            prop_assert!(a.contains(x));
            prop_assert!(a.umin() <= x && x <= a.umax());
            prop_assert!(a.smin() <= x as i64 && x as i64 <= a.smax());
        }

        #[test]
        fn binary_ops_are_sound((a, x) in member(), (b, y) in member()) {
            prop_assert!(a.add(b).contains(x.wrapping_add(y)), "add");
            prop_assert!(a.sub(b).contains(x.wrapping_sub(y)), "sub");
            prop_assert!(a.mul(b).contains(x.wrapping_mul(y)), "mul");
            prop_assert!(a.and(b).contains(x & y), "and");
            prop_assert!(a.or(b).contains(x | y), "or");
            prop_assert!(a.xor(b).contains(x ^ y), "xor");
            prop_assert!(a.union(b).contains(x) && a.union(b).contains(y), "union");
            prop_assert!(a.union(b).includes(a) && a.union(b).includes(b), "union includes");
        }

        #[test]
        fn intersect_keeps_common_members((a, x) in member(), m in any::<u64>()) {
            // b: another tnum that also holds x.
            let b = Tnum::new(x, m);
            prop_assert!(a.intersect(b).contains(x));
        }

        #[test]
        fn unary_ops_are_sound((a, x) in member(), s in 0u32..64, s32 in 0u32..32) {
            prop_assert!(a.shl(s).contains(x << s));
            prop_assert!(a.shr(s).contains(x >> s));
            prop_assert!(a.arsh(s, 64).contains(((x as i64) >> s) as u64));
            prop_assert!(a.arsh(s32, 32).contains(((x as u32 as i32) >> s32) as u32 as u64));
            prop_assert!(a.neg().contains(x.wrapping_neg()));
            for bytes in [1, 2, 4, 8] {
                let keep = if bytes == 8 { u64::MAX } else { (1u64 << (bytes * 8)) - 1 };
                prop_assert!(a.cast(bytes).contains(x & keep));
            }
            prop_assert!(a.clear_subreg().contains(x & !0xffff_ffff));
            prop_assert!(a.subreg().contains(x & 0xffff_ffff));
        }

        /// Writing a 32-bit result into the low half keeps the high half.
        #[test]
        fn with_subreg_is_sound((a, x) in member(), (b, y) in member()) {
            let z = (x & !0xffff_ffff) | (y & 0xffff_ffff);
            prop_assert!(a.with_subreg(b).contains(z));
        }

        /// An aligned tnum holds only aligned values.
        #[test]
        fn alignment_is_sound((a, x) in member(), k in 0u32..4) {
            let size = 1u64 << k;
            if a.is_aligned(size) {
                prop_assert_eq!(x % size, 0);
            }
        }

        #[test]
        fn try_intersect_keeps_common_members((a, x) in member(), m in any::<u64>(), v in any::<u64>()) {
            prop_assert!(a.try_intersect(Tnum::new(x, m)).is_some_and(|t| t.contains(x)));
            // None only when nothing is in both.
            let b = Tnum::new(v, m);
            if a.try_intersect(b).is_none() {
                let common = !a.mask & !b.mask;
                prop_assert!((a.value ^ b.value) & common != 0);
            }
        }

        #[test]
        fn min_at_least_is_the_least_member((a, x) in member(), lo in any::<u64>()) {
            match a.min_at_least(lo) {
                Some(m) => {
                    prop_assert!(a.contains(m) && m >= lo);
                    // x is a member: it is either below lo or not below m.
                    prop_assert!(x < lo || x >= m);
                }
                None => prop_assert!(x < lo),
            }
            match a.max_at_most(lo) {
                Some(m) => {
                    prop_assert!(a.contains(m) && m <= lo);
                    prop_assert!(x > lo || x <= m);
                }
                None => prop_assert!(x > lo),
            }
            prop_assert_eq!(a.min_at_least(x), Some(x));
        }

        #[test]
        fn swap_bytes_is_exact((a, x) in member()) {
            prop_assert!(a.swap_bytes(2).contains((x as u16).swap_bytes() as u64));
            prop_assert!(a.swap_bytes(4).contains((x as u32).swap_bytes() as u64));
            prop_assert!(a.swap_bytes(8).contains(x.swap_bytes()));
            prop_assert_eq!(a.swap_bytes(8).mask().count_ones(), a.mask().count_ones());
        }

        #[test]
        fn range_holds_its_bounds(lo in any::<u64>(), hi in any::<u64>(), pick in any::<u64>()) {
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let t = Tnum::range(lo, hi);
            let x = if hi == lo { lo } else { lo + pick % (hi - lo) };
            prop_assert!(t.contains(lo) && t.contains(hi) && t.contains(x));
        }

        #[test]
        fn alignment_is_exact_for_constants(x in any::<u64>(), k in 0u32..4) {
            let size = 1u64 << k;
            prop_assert_eq!(Tnum::constant(x).is_aligned(size), x % size == 0);
        }
    }

    #[test]
    fn precise_on_constants() {
        let a = Tnum::constant(6);
        let b = Tnum::constant(7);
        assert_eq!(a.add(b), Tnum::constant(13));
        assert_eq!(a.sub(b), Tnum::constant(u64::MAX));
        assert_eq!(a.mul(b), Tnum::constant(42));
        assert_eq!(a.and(b), Tnum::constant(6));
        assert_eq!(Tnum::range(0, 255), Tnum::new(0, 0xff));
        assert_eq!(Tnum::range(16, 31), Tnum::new(16, 0xf));
        assert!(Tnum::range(0, u64::MAX).is_unknown());
    }

    #[test]
    fn add_of_unknown_low_bits_keeps_high_bits_where_no_carry() {
        // x in {0..3} + 4 is in {4..7}: bit 2 known one.
        let t = Tnum::new(0, 3).add(Tnum::constant(4));
        assert_eq!(t, Tnum::new(4, 3));
        // x in {0..3} + 1 may carry into bit 2.
        let t = Tnum::new(0, 3).add(Tnum::constant(1));
        assert_eq!(t, Tnum::new(0, 7));
    }
}
