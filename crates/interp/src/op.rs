//! The pre-decoded form the interpreter executes.
//!
//! [`compile`] turns each [`Insn`] into one [`Op`]: a small enum variant
//! whose name fixes operation, width and operand kind, with immediates
//! already in the form the operation uses, shift counts masked, and branch
//! targets as absolute op indices. One op per instruction (an `lddw` is one
//! op) keeps op index = instruction index, so traps map back to slot pcs
//! with one table lookup and the executed-instruction count is exact.

use bpfkit_isa::{
    AluOp, AtomicOp, ByteOrder, Cond, Imm64, Insn, Pc, Program, Reg, SignExtFrom, Size, Src,
    SwapBits, Width,
};
use bpfkit_runtime::callback::loop_inlined;
use bpfkit_runtime::{Callback, Helpers, Imm64Resolver, STACK_SIZE};

/// A register number known to be at most 10, so indexing an 11-entry array
/// with it needs no bounds check.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
#[allow(missing_docs)]
pub(crate) enum R {
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

impl From<Reg> for R {
    fn from(r: Reg) -> R {
        const ALL: [R; 11] = [
            R::R0,
            R::R1,
            R::R2,
            R::R3,
            R::R4,
            R::R5,
            R::R6,
            R::R7,
            R::R8,
            R::R9,
            R::R10,
        ];
        ALL[r.index()]
    }
}

/// Base of the values the interpreter gives `lddw` function references
/// (`Imm64::Func`): `FUNC_ADDR_BASE + 8 * slot`. `callx` with such a value
/// calls the subprogram at `slot`; any other value below 2^32 is taken as a
/// helper id (uBPF's convention, which the conformance suite's `callx` test
/// relies on).
pub const FUNC_ADDR_BASE: u64 = 0xffff_ffff_c000_0000;

/// One pre-decoded instruction. `d`/`s` are registers, `t` an absolute op
/// index, `imm` the raw 32-bit immediate (sign-extended at use for 64-bit
/// ops, which costs nothing on x86-64), `off` a memory offset.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub(crate) enum Op {
    // 64-bit ALU, immediate source.
    Add64I {
        d: R,
        imm: i32,
    },
    Sub64I {
        d: R,
        imm: i32,
    },
    Mul64I {
        d: R,
        imm: i32,
    },
    Div64I {
        d: R,
        imm: i32,
    },
    Sdiv64I {
        d: R,
        imm: i32,
    },
    Mod64I {
        d: R,
        imm: i32,
    },
    Smod64I {
        d: R,
        imm: i32,
    },
    Or64I {
        d: R,
        imm: i32,
    },
    And64I {
        d: R,
        imm: i32,
    },
    Xor64I {
        d: R,
        imm: i32,
    },
    Lsh64I {
        d: R,
        imm: u8,
    },
    Rsh64I {
        d: R,
        imm: u8,
    },
    Arsh64I {
        d: R,
        imm: u8,
    },
    Mov64I {
        d: R,
        imm: i32,
    },
    // 64-bit ALU, register source.
    Add64R {
        d: R,
        s: R,
    },
    Sub64R {
        d: R,
        s: R,
    },
    Mul64R {
        d: R,
        s: R,
    },
    Div64R {
        d: R,
        s: R,
    },
    Sdiv64R {
        d: R,
        s: R,
    },
    Mod64R {
        d: R,
        s: R,
    },
    Smod64R {
        d: R,
        s: R,
    },
    Or64R {
        d: R,
        s: R,
    },
    And64R {
        d: R,
        s: R,
    },
    Xor64R {
        d: R,
        s: R,
    },
    Lsh64R {
        d: R,
        s: R,
    },
    Rsh64R {
        d: R,
        s: R,
    },
    Arsh64R {
        d: R,
        s: R,
    },
    Mov64R {
        d: R,
        s: R,
    },
    // 32-bit ALU, immediate source (results zero-extend).
    Add32I {
        d: R,
        imm: u32,
    },
    Sub32I {
        d: R,
        imm: u32,
    },
    Mul32I {
        d: R,
        imm: u32,
    },
    Div32I {
        d: R,
        imm: u32,
    },
    Sdiv32I {
        d: R,
        imm: u32,
    },
    Mod32I {
        d: R,
        imm: u32,
    },
    Smod32I {
        d: R,
        imm: u32,
    },
    Or32I {
        d: R,
        imm: u32,
    },
    And32I {
        d: R,
        imm: u32,
    },
    Xor32I {
        d: R,
        imm: u32,
    },
    Lsh32I {
        d: R,
        imm: u8,
    },
    Rsh32I {
        d: R,
        imm: u8,
    },
    Arsh32I {
        d: R,
        imm: u8,
    },
    Mov32I {
        d: R,
        imm: u32,
    },
    // 32-bit ALU, register source.
    Add32R {
        d: R,
        s: R,
    },
    Sub32R {
        d: R,
        s: R,
    },
    Mul32R {
        d: R,
        s: R,
    },
    Div32R {
        d: R,
        s: R,
    },
    Sdiv32R {
        d: R,
        s: R,
    },
    Mod32R {
        d: R,
        s: R,
    },
    Smod32R {
        d: R,
        s: R,
    },
    Or32R {
        d: R,
        s: R,
    },
    And32R {
        d: R,
        s: R,
    },
    Xor32R {
        d: R,
        s: R,
    },
    Lsh32R {
        d: R,
        s: R,
    },
    Rsh32R {
        d: R,
        s: R,
    },
    Arsh32R {
        d: R,
        s: R,
    },
    Mov32R {
        d: R,
        s: R,
    },
    // Sign-extending moves.
    Movsx8To32 {
        d: R,
        s: R,
    },
    Movsx16To32 {
        d: R,
        s: R,
    },
    Movsx8To64 {
        d: R,
        s: R,
    },
    Movsx16To64 {
        d: R,
        s: R,
    },
    Movsx32To64 {
        d: R,
        s: R,
    },
    Neg64 {
        d: R,
    },
    Neg32 {
        d: R,
    },
    // Byte order (little-endian host): `le` truncates, `be`/`bswap` swap.
    Trunc16 {
        d: R,
    },
    Trunc32 {
        d: R,
    },
    Swap16 {
        d: R,
    },
    Swap32 {
        d: R,
    },
    Swap64 {
        d: R,
    },
    Nop,
    LoadImm {
        d: R,
        lo: u32,
        hi: u32,
    },
    // Loads and stores.
    LdxB {
        d: R,
        s: R,
        off: i16,
    },
    LdxH {
        d: R,
        s: R,
        off: i16,
    },
    LdxW {
        d: R,
        s: R,
        off: i16,
    },
    LdxDw {
        d: R,
        s: R,
        off: i16,
    },
    LdxSb {
        d: R,
        s: R,
        off: i16,
    },
    LdxSh {
        d: R,
        s: R,
        off: i16,
    },
    LdxSw {
        d: R,
        s: R,
        off: i16,
    },
    StB {
        d: R,
        off: i16,
        imm: i32,
    },
    StH {
        d: R,
        off: i16,
        imm: i32,
    },
    StW {
        d: R,
        off: i16,
        imm: i32,
    },
    StDw {
        d: R,
        off: i16,
        imm: i32,
    },
    StxB {
        d: R,
        s: R,
        off: i16,
    },
    StxH {
        d: R,
        s: R,
        off: i16,
    },
    StxW {
        d: R,
        s: R,
        off: i16,
    },
    StxDw {
        d: R,
        s: R,
        off: i16,
    },
    Atomic32 {
        d: R,
        s: R,
        off: i16,
        op: AtomicOp,
        fetch: bool,
    },
    Atomic64 {
        d: R,
        s: R,
        off: i16,
        op: AtomicOp,
        fetch: bool,
    },
    // Loads and stores at `r10 + off` with `[off, off + size)` inside the
    // current frame, in programs that never write `r10`: `r10` is then
    // always the frame's top, so the access is in bounds by construction
    // and needs neither `r10` nor a region lookup, only the frame's offset
    // in the stack.
    LdxStackB {
        d: R,
        off: i16,
    },
    LdxStackH {
        d: R,
        off: i16,
    },
    LdxStackW {
        d: R,
        off: i16,
    },
    LdxStackDw {
        d: R,
        off: i16,
    },
    StxStackB {
        s: R,
        off: i16,
    },
    StxStackH {
        s: R,
        off: i16,
    },
    StxStackW {
        s: R,
        off: i16,
    },
    StxStackDw {
        s: R,
        off: i16,
    },
    StStackW {
        off: i16,
        imm: i32,
    },
    StStackDw {
        off: i16,
        imm: i32,
    },
    /// Legacy packet load; `s` is `None` for `LD_ABS`.
    LdPkt {
        size: u8,
        s: Option<R>,
        imm: i32,
    },
    // Jumps.
    Ja {
        t: u32,
    },
    JeqI {
        d: R,
        imm: i32,
        t: u32,
    },
    JgtI {
        d: R,
        imm: i32,
        t: u32,
    },
    JgeI {
        d: R,
        imm: i32,
        t: u32,
    },
    JsetI {
        d: R,
        imm: i32,
        t: u32,
    },
    JneI {
        d: R,
        imm: i32,
        t: u32,
    },
    JsgtI {
        d: R,
        imm: i32,
        t: u32,
    },
    JsgeI {
        d: R,
        imm: i32,
        t: u32,
    },
    JltI {
        d: R,
        imm: i32,
        t: u32,
    },
    JleI {
        d: R,
        imm: i32,
        t: u32,
    },
    JsltI {
        d: R,
        imm: i32,
        t: u32,
    },
    JsleI {
        d: R,
        imm: i32,
        t: u32,
    },
    JeqR {
        d: R,
        s: R,
        t: u32,
    },
    JgtR {
        d: R,
        s: R,
        t: u32,
    },
    JgeR {
        d: R,
        s: R,
        t: u32,
    },
    JsetR {
        d: R,
        s: R,
        t: u32,
    },
    JneR {
        d: R,
        s: R,
        t: u32,
    },
    JsgtR {
        d: R,
        s: R,
        t: u32,
    },
    JsgeR {
        d: R,
        s: R,
        t: u32,
    },
    JltR {
        d: R,
        s: R,
        t: u32,
    },
    JleR {
        d: R,
        s: R,
        t: u32,
    },
    JsltR {
        d: R,
        s: R,
        t: u32,
    },
    JsleR {
        d: R,
        s: R,
        t: u32,
    },
    Jeq32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jgt32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jge32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jset32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jne32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jsgt32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jsge32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jlt32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jle32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jslt32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jsle32I {
        d: R,
        imm: u32,
        t: u32,
    },
    Jeq32R {
        d: R,
        s: R,
        t: u32,
    },
    Jgt32R {
        d: R,
        s: R,
        t: u32,
    },
    Jge32R {
        d: R,
        s: R,
        t: u32,
    },
    Jset32R {
        d: R,
        s: R,
        t: u32,
    },
    Jne32R {
        d: R,
        s: R,
        t: u32,
    },
    Jsgt32R {
        d: R,
        s: R,
        t: u32,
    },
    Jsge32R {
        d: R,
        s: R,
        t: u32,
    },
    Jlt32R {
        d: R,
        s: R,
        t: u32,
    },
    Jle32R {
        d: R,
        s: R,
        t: u32,
    },
    Jslt32R {
        d: R,
        s: R,
        t: u32,
    },
    Jsle32R {
        d: R,
        s: R,
        t: u32,
    },
    // Calls.
    /// Helper at index `h` of the interpreter's helper table.
    Call {
        h: u32,
    },
    /// Helper id nobody registered: traps when executed.
    CallUnknown {
        id: u32,
    },
    CallLocal {
        t: u32,
    },
    Callx {
        r: R,
    },
    /// `bpf_loop` (a helper registered as `Callback::Loop`): the argument
    /// checks (the kernel's inlined loop's when `inlined`), then the first
    /// call of the callback in `r2`.
    CallLoop {
        inlined: bool,
    },
    /// A helper registered as `Callback::Steps`: its step (at index `h`
    /// of the helper table) decides each call of the callback in `r2`.
    CallSteps {
        h: u32,
    },
    /// Where a `bpf_loop` callback returns to (one op after the sentinel,
    /// never an instruction): the next call, or back after the helper.
    LoopNext,
    Exit,
    /// Symbolic `lddw` left unresolved: traps when executed.
    Unresolved,
    /// Instruction the interpreter cannot run (a kfunc call).
    Kfunc,
    /// Sentinel after the last instruction.
    FellOff,
    // Superinstructions (see `fuse`): each does the work of its
    // instruction and of the next one, then skips the next one.
    /// `mov32 d, s; and32 d, imm`
    Mov32And32I {
        d: R,
        s: R,
        imm: u32,
    },
    /// `mov32 d, s; lsh32 d, imm`
    Mov32Lsh32I {
        d: R,
        s: R,
        imm: u8,
    },
    /// `mov32 d, s; rsh32 d, imm`
    Mov32Rsh32I {
        d: R,
        s: R,
        imm: u8,
    },
    /// `mov32 d, s; add32 d, imm`
    Mov32Add32I {
        d: R,
        s: R,
        imm: u32,
    },
    /// `mov d, s; add d, imm`
    Mov64Add64I {
        d: R,
        s: R,
        imm: i32,
    },
    /// `lsh32 d, a; arsh32 d, b` (sign extension of a narrow field)
    Lsh32Arsh32 {
        d: R,
        a: u8,
        b: u8,
    },
    /// `lsh d, a; rsh d, b` (zero extension / field extraction)
    Lsh64Rsh64 {
        d: R,
        a: u8,
        b: u8,
    },
    /// `lsh d, a; arsh d, b` (sign extension)
    Lsh64Arsh64 {
        d: R,
        a: u8,
        b: u8,
    },
    /// `lsh d, k; or d, s` (assembling a value from bytes)
    Lsh64Or64R {
        d: R,
        k: u8,
        s: R,
    },
    /// `lsh32 d, k; or32 d, s`
    Lsh32Or32R {
        d: R,
        k: u8,
        s: R,
    },
    /// `arsh32 d, k; and32 d, imm` (a mask from a sign bit)
    Arsh32And32I {
        d: R,
        k: u8,
        imm: u32,
    },
    // Longer superinstructions (and pairs found later): each covers the
    // instructions its comment lists and does their work in order on the
    // register array, so any register aliasing behaves as unfused; only
    // loads and stores can trap, and a trap in the n-th instruction is
    // reported at its pc with an exact count.
    /// `mov32 t, s; rsh32 t, a; mov32 d, s; lsh32 d, b; or32 d, t`: a
    /// 32-bit rotate by a constant, as clang writes it (jhash, murmur).
    Rot32I5 {
        d: R,
        t: R,
        s: R,
        a: u8,
        b: u8,
    },
    /// `mov32 t, d; rsh32 t, a; lsh32 d, b; or32 d, t`: the same in place.
    Rot32I4 {
        d: R,
        t: R,
        a: u8,
        b: u8,
    },
    /// `mov32 d, x; mov32 c, 32; sub32 c, n; mov32 t, d; lsh32 t, n;
    /// rsh32 d, c; or32 d, t`: a 32-bit rotate by a register.
    Rot32R7 {
        d: R,
        x: R,
        c: R,
        n: R,
        t: R,
    },
    /// `ldxb d, [s+off]; lsh32 d, k` (a byte moved into place)
    LdxBLsh32 {
        d: R,
        s: R,
        off: i16,
        k: u8,
    },
    /// `ldxb t, [s+off]; or32 d, t` (a byte merged in)
    LdxBOr32 {
        t: R,
        s: R,
        off: i16,
        d: R,
    },
    /// `ldxb t, [s+off]; lsh32 t, k; or32 d, t` (a byte moved and merged)
    LdxBLshOr32 {
        t: R,
        s: R,
        off: i16,
        k: u8,
        d: R,
    },
    /// `ldxb a, [s+o1]; ldxb b, [s+o2]; lsh b, k; or b, a`: a 16-bit
    /// big-endian field (`Wide`: 64-bit shift and or, else 32-bit).
    LdxB2LshOr64 {
        a: R,
        b: R,
        s: R,
        k: u8,
        o1: i16,
        o2: i16,
    },
    /// `LdxB2LshOr64` then `add b, x`: a 16-bit big-endian field added to
    /// a sum (the Internet checksum's loop)
    LdxB2LshOr64Add64R {
        a: R,
        b: R,
        s: R,
        k: u8,
        o1: i16,
        o2: i16,
        x: R,
    },
    LdxB2LshOr32 {
        a: R,
        b: R,
        s: R,
        k: u8,
        o1: i16,
        o2: i16,
    },
    /// `lsh32 d, a; arsh32 d, b; and32 d, imm` (bit `31 - a` as a mask)
    Lsh32Arsh32And32 {
        d: R,
        a: u8,
        b: u8,
        imm: u32,
    },
    /// `mov32 d, s; lsh32 d, a; arsh32 d, b; and32 d, imm`
    Mov32Lsh32Arsh32And32 {
        d: R,
        s: R,
        a: u8,
        b: u8,
        imm: u32,
    },
    /// `lsh32 d, a; arsh32 d, b; and32 d, imm; xor32 d, x` (a bit-serial
    /// CRC step)
    Lsh32Arsh32And32Xor32R {
        d: R,
        a: u8,
        b: u8,
        x: R,
        imm: u32,
    },
    /// `mov32 d, s; lsh32 d, a; arsh32 d, b; and32 d, imm; xor32 d, x`
    Mov32Lsh32Arsh32And32Xor32R {
        d: R,
        s: R,
        a: u8,
        b: u8,
        x: R,
        imm: u32,
    },
    /// `mov32 t, s; rsh32 t, k; xor32 d, t`
    Mov32Rsh32Xor32R {
        t: R,
        s: R,
        k: u8,
        d: R,
    },
    /// `neg32 d; and32 d, imm` (bit 0 as a mask)
    Neg32And32I {
        d: R,
        imm: u32,
    },
    /// `mov d, s; add d, s2` (base plus index)
    Mov64Add64R {
        d: R,
        s: R,
        s2: R,
    },
    /// `add d1, i1; add d2, i2` (two induction variables)
    Add64I2 {
        d1: R,
        d2: R,
        i1: i32,
        i2: i32,
    },
    /// `mul32 d, m; add32 d, a` (hash and LCG steps)
    Mul32Add32I {
        d: R,
        m: u32,
        a: u32,
    },
    /// `mov d, a; if x <cond> imm goto +1; mov d, b`: a select, as clang
    /// writes `d = x <cond> imm` (a and b small; `cond` a [`truth`] table,
    /// 32-bit compare unless `wide`). Taken: two instructions and the
    /// budget check of a taken jump; not taken: three. Executed without a
    /// branch on the condition, which is often data-dependent.
    Select {
        d: R,
        x: R,
        wide: bool,
        a: u8,
        b: u8,
        cond: u16,
        imm: i32,
    },
    /// `and32 d, mask; if d <cond> imm goto t` (32-bit, `cond` a [`truth`]
    /// table; mask and imm fit 16 bits)
    And32Jcc32 {
        d: R,
        cond: u16,
        mask: u16,
        imm: u16,
        t: u32,
    },
    /// `mov32 d, s; call local t` (an argument, then the call)
    Mov32RCall {
        d: R,
        s: R,
        t: u32,
    },
    /// `mov d, s; call local t`
    Mov64RCall {
        d: R,
        s: R,
        t: u32,
    },
    /// `mov32 d, imm; call local t`
    Mov32ICall {
        d: R,
        imm: u32,
        t: u32,
    },
    /// `mov d, s; if x < y goto t` (a loop latch after the loop's last
    /// move)
    Mov64JltR {
        d: R,
        s: R,
        x: R,
        y: R,
        t: u32,
    },
    /// `mov32 d, s; if x < imm goto t` (the same with a constant bound)
    Mov32JltI {
        d: R,
        s: R,
        x: R,
        imm: i32,
        t: u32,
    },
    /// `ldxb d, [s+o+1]; lsh32 d, 8; ldxb t, [s+o]; or32 d, t;
    /// ldxb u, [s+o+2]; lsh32 u, 16; or32 d, u; ldxb v, [s+o+3];
    /// lsh32 v, 24; or32 d, v`: a little-endian 32-bit load from bytes, as
    /// clang writes an unaligned one.
    LdxLe32Bytes {
        d: R,
        t: R,
        u: R,
        v: R,
        s: R,
        o: i16,
    },
    /// `mov32 d1, s1; mov32 d2, s2` (arguments)
    Mov32R2 {
        d1: R,
        s1: R,
        d2: R,
        s2: R,
    },
    /// `mov32 d, s; add32 d, s2`
    Mov32Add32R {
        d: R,
        s: R,
        s2: R,
    },
    /// `mov32 d, s; xor32 d, s2`
    Mov32Xor32R {
        d: R,
        s: R,
        s2: R,
    },
    /// `xor32 d, x; sub32 d, y` (jhash mixing)
    Xor32Sub32R {
        d: R,
        x: R,
        y: R,
    },
    /// `mov32 d, s; xor32 d, x; sub32 d, y` (jhash mixing)
    Mov32Xor32Sub32R {
        d: R,
        s: R,
        x: R,
        y: R,
    },
    /// `ldxw/ldxdw d, [r10+off]; and32 d, imm` (a frame slot, as
    /// `LdxStack*`; only its low four bytes matter)
    LdxStackAnd32I {
        d: R,
        off: i16,
        imm: u32,
    },
    /// `ldxdw d, [r10+off]; add d, imm` (a spilled counter)
    LdxStackDwAdd64I {
        d: R,
        off: i16,
        imm: i32,
    },
    /// `ldxdw d, [r10+off]; and d, imm`
    LdxStackDwAnd64I {
        d: R,
        off: i16,
        imm: i32,
    },
    /// `ldxdw d1, [r10+o1]; ldxw d2, [r10+o2]` (two reloads, frame slots as
    /// `LdxStack*`)
    LdxStackDwW {
        d1: R,
        d2: R,
        o1: i16,
        o2: i16,
    },
    /// `stxw [r10+o1], s1; stxw [r10+o2], s2` (two spills)
    StxStackW2 {
        s1: R,
        s2: R,
        o1: i16,
        o2: i16,
    },
    /// `mov d, 1; lsh d, s; lddw t, mask; and d, t`: membership of `s` in a
    /// 64-bit set, as clang writes a `switch` over small values
    BitTest64 {
        d: R,
        s: R,
        t: R,
        lo: u32,
        hi: u32,
    },
    /// `ldxw d, [s+off]; add32 d, imm; stxw [s+off], d`: a 32-bit counter
    /// in memory bumped (both accesses checked, as unfused)
    IncW {
        d: R,
        s: R,
        off: i16,
        imm: u32,
    },
    /// `Rot32I4` then `xor32 x, d` (a rotate-and-xor hash step)
    Rot32I4Xor32R {
        d: R,
        t: R,
        a: u8,
        b: u8,
        x: R,
    },
    /// `lsh32 d, k; and32 d, imm` (a field moved into place)
    Lsh32And32I {
        d: R,
        k: u8,
        imm: u32,
    },
    /// `add32 d, a; and32 d, m` (a range check of a byte)
    Add32And32I {
        d: R,
        a: u32,
        m: u32,
    },
    /// `ldxw d, [s+off]; if32 d <cond> x goto t`, or the jump with `d` on
    /// the right (then `cond` is the swapped condition, see [`swapped`]):
    /// a field loaded and compared with a register, as clang writes most
    /// comparisons of a struct field with a value (32-bit compare, `cond` a
    /// [`truth`] table).
    LdxWJcc32R {
        d: R,
        s: R,
        x: R,
        off: i16,
        cond: u16,
        t: u32,
    },
    /// `mov32 d, s; if32 x <cond> y goto t` (a loop variable moved, then
    /// the loop's test; `cond` a [`truth`] table)
    Mov32Jcc32R {
        d: R,
        s: R,
        x: R,
        y: R,
        cond: u16,
        t: u32,
    },
    /// `mov32 d, s; add32 d, s2; rsh32 d, k`: a sum halved or scaled down
    /// (a midpoint, an average)
    Mov32Add32Rsh32I {
        d: R,
        s: R,
        s2: R,
        k: u8,
    },
    /// `mov t, i; mul t, k; mov p, b; add p, t`, or the same with `lsh t,
    /// log2(k)`: the address of element `i` of an array at `b` whose
    /// elements are `k` bytes (`p != t`, else the group is not fused).
    IndexAddr {
        t: R,
        i: R,
        p: R,
        b: R,
        k: i32,
    },
    /// `mov d, s; mul d, imm` (an index scaled by an element size that is
    /// not a power of two)
    Mov64Mul64I {
        d: R,
        s: R,
        imm: i32,
    },
}

/// Compiles `prog`: ops (with a trailing [`Op::FellOff`]) and the helper
/// table they index.
pub(crate) fn compile(
    prog: &Program,
    helpers: &Helpers,
    table: &mut Vec<(u32, std::sync::Arc<dyn bpfkit_runtime::Helper>)>,
    resolver: Option<&dyn Imm64Resolver>,
) -> Vec<Op> {
    let target = |pc: Pc, off: i64| -> u32 {
        // `Program` has checked that every target is an instruction start.
        pc.branch(off)
            .and_then(|t| prog.index_of(t))
            .map_or(u32::MAX, |i| i as u32)
    };
    let fixed_fp = !prog.insns().iter().any(writes_r10);
    // `r10 + off` is inside the current frame for an access of `n` bytes.
    let in_frame = |r: Reg, off: i16, n: i16| {
        fixed_fp && r == Reg::R10 && off >= -(STACK_SIZE as i16) && off <= -n
    };
    let mut ops = Vec::with_capacity(prog.insns().len() + 1);
    for (pc, insn) in prog.iter() {
        let op = match *insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => alu(width, op, dst.into(), src),
            Insn::Neg { width, dst } => match width {
                Width::W64 => Op::Neg64 { d: dst.into() },
                Width::W32 => Op::Neg32 { d: dst.into() },
            },
            Insn::Endian { order, bits, dst } => {
                let d = dst.into();
                match (order, bits) {
                    (ByteOrder::ToLe, SwapBits::B16) => Op::Trunc16 { d },
                    (ByteOrder::ToLe, SwapBits::B32) => Op::Trunc32 { d },
                    (ByteOrder::ToLe, SwapBits::B64) => Op::Nop,
                    (_, SwapBits::B16) => Op::Swap16 { d },
                    (_, SwapBits::B32) => Op::Swap32 { d },
                    (_, SwapBits::B64) => Op::Swap64 { d },
                }
            }
            Insn::LoadImm64 { dst, imm } => {
                let value = match imm {
                    Imm64::Value(v) => Some(v),
                    Imm64::Func(off) => match resolver.and_then(|r| r.resolve(pc, &imm)) {
                        Some(v) => Some(v),
                        None => pc
                            .branch(off as i64)
                            .map(|t| FUNC_ADDR_BASE.wrapping_add(8 * t.0 as u64)),
                    },
                    _ => resolver.and_then(|r| r.resolve(pc, &imm)),
                };
                match value {
                    Some(v) => Op::LoadImm {
                        d: dst.into(),
                        lo: v as u32,
                        hi: (v >> 32) as u32,
                    },
                    None => Op::Unresolved,
                }
            }
            Insn::Load {
                size,
                sign_extend,
                dst,
                src,
                off,
            } => {
                let (d, s) = (dst.into(), src.into());
                if !sign_extend && in_frame(src, off, size.bytes() as i16) {
                    match size {
                        Size::B => Op::LdxStackB { d, off },
                        Size::H => Op::LdxStackH { d, off },
                        Size::W => Op::LdxStackW { d, off },
                        Size::DW => Op::LdxStackDw { d, off },
                    }
                } else {
                    match (size, sign_extend) {
                        (Size::B, false) => Op::LdxB { d, s, off },
                        (Size::H, false) => Op::LdxH { d, s, off },
                        (Size::W, false) => Op::LdxW { d, s, off },
                        (Size::DW, _) => Op::LdxDw { d, s, off },
                        (Size::B, true) => Op::LdxSb { d, s, off },
                        (Size::H, true) => Op::LdxSh { d, s, off },
                        (Size::W, true) => Op::LdxSw { d, s, off },
                    }
                }
            }
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => {
                let d = dst.into();
                match (size, src) {
                    _ if !in_frame(dst, off, size.bytes() as i16) => store(size, d, off, src),
                    (Size::W, Src::Imm(imm)) => Op::StStackW { off, imm },
                    (Size::DW, Src::Imm(imm)) => Op::StStackDw { off, imm },
                    (Size::B, Src::Reg(s)) => Op::StxStackB { s: s.into(), off },
                    (Size::H, Src::Reg(s)) => Op::StxStackH { s: s.into(), off },
                    (Size::W, Src::Reg(s)) => Op::StxStackW { s: s.into(), off },
                    (Size::DW, Src::Reg(s)) => Op::StxStackDw { s: s.into(), off },
                    _ => store(size, d, off, src),
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
                let (d, s) = (dst.into(), src.into());
                if size == Size::DW {
                    Op::Atomic64 {
                        d,
                        s,
                        off,
                        op,
                        fetch,
                    }
                } else {
                    Op::Atomic32 {
                        d,
                        s,
                        off,
                        op,
                        fetch,
                    }
                }
            }
            Insn::LoadAbs { size, imm } => Op::LdPkt {
                size: size.bytes() as u8,
                s: None,
                imm,
            },
            Insn::LoadInd { size, src, imm } => Op::LdPkt {
                size: size.bytes() as u8,
                s: Some(src.into()),
                imm,
            },
            Insn::Ja { off, .. } => Op::Ja {
                t: target(pc, off as i64),
            },
            Insn::Jmp {
                width,
                cond,
                dst,
                src,
                off,
            } => jmp(width, cond, dst.into(), src, target(pc, off as i64)),
            Insn::Call(id) if helpers.callback(id.0) == Some(Callback::Loop) => Op::CallLoop {
                inlined: loop_inlined(prog, ops.len()),
            },
            Insn::Call(id) if matches!(helpers.callback(id.0), Some(Callback::Steps { .. })) => {
                let Some(Callback::Steps { step }) = helpers.callback(id.0) else {
                    unreachable!("matched above")
                };
                match helpers.get(step) {
                    Some(h) => {
                        let idx = match table.iter().position(|(i, _)| *i == step) {
                            Some(i) => i,
                            None => {
                                table.push((step, h.clone()));
                                table.len() - 1
                            }
                        };
                        Op::CallSteps { h: idx as u32 }
                    }
                    None => Op::CallUnknown { id: id.0 },
                }
            }
            Insn::Call(id) => match helpers.get(id.0) {
                Some(h) => {
                    let idx = match table.iter().position(|(i, _)| *i == id.0) {
                        Some(i) => i,
                        None => {
                            table.push((id.0, h.clone()));
                            table.len() - 1
                        }
                    };
                    Op::Call { h: idx as u32 }
                }
                None => Op::CallUnknown { id: id.0 },
            },
            Insn::CallLocal(off) => Op::CallLocal {
                t: target(pc, off as i64),
            },
            Insn::CallKfunc { .. } => Op::Kfunc,
            Insn::Callx(r) => Op::Callx { r: r.into() },
            Insn::Exit => Op::Exit,
        };
        ops.push(op);
    }
    ops.push(Op::FellOff);
    ops
}

/// Peephole fusion of common instruction sequences into superinstructions.
///
/// Op `i` becomes a fused op doing the work of ops `i..i + n`, and ops
/// `i + 1..` stay as they were (possibly fused themselves), so a jump (or
/// `callx`) landing inside the group still runs it from there, and no
/// branch-target analysis is needed. A fused op advances the pc by `n`,
/// which keeps the executed-instruction count exact; one ending in a jump
/// checks the budget as the jump would. Longer patterns ([`fuse_long`]) are
/// tried first, then the pairs below.
pub(crate) fn fuse(ops: &[Op], insns: &[Insn]) -> Vec<Op> {
    let mut out = ops.to_vec();
    for i in 0..ops.len() {
        if let Some(f) = fuse_long(&ops[i..], &insns[i.min(insns.len())..]) {
            out[i] = f;
        }
    }
    for (i, pair) in ops.windows(2).enumerate() {
        let fused = match (pair[0], pair[1]) {
            (Op::Mov32R { d, s }, Op::And32I { d: d2, imm }) if d == d2 => {
                Op::Mov32And32I { d, s, imm }
            }
            (Op::Mov32R { d, s }, Op::Lsh32I { d: d2, imm }) if d == d2 => {
                Op::Mov32Lsh32I { d, s, imm }
            }
            (Op::Mov32R { d, s }, Op::Rsh32I { d: d2, imm }) if d == d2 => {
                Op::Mov32Rsh32I { d, s, imm }
            }
            (Op::Mov32R { d, s }, Op::Add32I { d: d2, imm }) if d == d2 => {
                Op::Mov32Add32I { d, s, imm }
            }
            (Op::Mov64R { d, s }, Op::Add64I { d: d2, imm }) if d == d2 => {
                Op::Mov64Add64I { d, s, imm }
            }
            (Op::Lsh32I { d, imm: a }, Op::Arsh32I { d: d2, imm: b }) if d == d2 => {
                Op::Lsh32Arsh32 { d, a, b }
            }
            (Op::Lsh64I { d, imm: a }, Op::Rsh64I { d: d2, imm: b }) if d == d2 => {
                Op::Lsh64Rsh64 { d, a, b }
            }
            (Op::Lsh64I { d, imm: a }, Op::Arsh64I { d: d2, imm: b }) if d == d2 => {
                Op::Lsh64Arsh64 { d, a, b }
            }
            (Op::Lsh64I { d, imm: k }, Op::Or64R { d: d2, s }) if d == d2 && s != d => {
                Op::Lsh64Or64R { d, k, s }
            }
            (Op::Lsh32I { d, imm: k }, Op::Or32R { d: d2, s }) if d == d2 && s != d => {
                Op::Lsh32Or32R { d, k, s }
            }
            (Op::Arsh32I { d, imm: k }, Op::And32I { d: d2, imm }) if d == d2 => {
                Op::Arsh32And32I { d, k, imm }
            }
            (Op::Mov64R { d, s }, Op::Mul64I { d: d2, imm }) if d == d2 => {
                Op::Mov64Mul64I { d, s, imm }
            }
            _ => continue,
        };
        if std::mem::discriminant(&out[i]) == std::mem::discriminant(&ops[i]) {
            out[i] = fused;
        }
    }
    out
}

/// The target of a 32-bit conditional jump with an immediate.
fn jump_target(op: Op) -> Option<u32> {
    use Op::*;
    match op {
        Jeq32I { t, .. }
        | Jne32I { t, .. }
        | Jlt32I { t, .. }
        | Jle32I { t, .. }
        | Jgt32I { t, .. }
        | Jge32I { t, .. }
        | Jset32I { t, .. }
        | Jslt32I { t, .. }
        | Jsle32I { t, .. }
        | Jsgt32I { t, .. }
        | Jsge32I { t, .. } => Some(t),
        _ => None,
    }
}

/// Bits of a comparison `x ? y`, the index into a [`truth`] table:
/// equal, unsigned less, signed less, any common bit.
#[inline(always)]
pub(crate) fn flags(eq: bool, ult: bool, slt: bool, set: bool) -> u32 {
    eq as u32 | (ult as u32) << 1 | (slt as u32) << 2 | (set as u32) << 3
}

/// A condition as a 16-entry truth table over [`flags`], so that fused ops
/// evaluate any condition with a shift instead of a branch or a jump table.
pub(crate) fn truth(cond: Cond) -> u16 {
    let mut table = 0;
    for f in 0..16u16 {
        let (eq, ult, slt, set) = (f & 1 != 0, f & 2 != 0, f & 4 != 0, f & 8 != 0);
        let holds = match cond {
            Cond::Eq => eq,
            Cond::Ne => !eq,
            Cond::Gt => !eq && !ult,
            Cond::Ge => !ult,
            Cond::Lt => ult,
            Cond::Le => ult || eq,
            Cond::Sgt => !eq && !slt,
            Cond::Sge => !slt,
            Cond::Slt => slt,
            Cond::Sle => slt || eq,
            Cond::Set => set,
        };
        table |= (holds as u16) << f;
    }
    table
}

/// `cond` with its operands swapped: `x <cond> y` iff `y <swapped> x`.
pub(crate) fn swapped(cond: Cond) -> Cond {
    match cond {
        Cond::Gt => Cond::Lt,
        Cond::Ge => Cond::Le,
        Cond::Lt => Cond::Gt,
        Cond::Le => Cond::Ge,
        Cond::Sgt => Cond::Slt,
        Cond::Sge => Cond::Sle,
        Cond::Slt => Cond::Sgt,
        Cond::Sle => Cond::Sge,
        Cond::Eq | Cond::Ne | Cond::Set => cond,
    }
}

/// The target of a 32-bit conditional jump between registers.
fn jump_target_r(op: Op) -> Option<u32> {
    use Op::*;
    match op {
        Jeq32R { t, .. }
        | Jne32R { t, .. }
        | Jlt32R { t, .. }
        | Jle32R { t, .. }
        | Jgt32R { t, .. }
        | Jge32R { t, .. }
        | Jset32R { t, .. }
        | Jslt32R { t, .. }
        | Jsle32R { t, .. }
        | Jsgt32R { t, .. }
        | Jsge32R { t, .. } => Some(t),
        _ => None,
    }
}

/// A small immediate of `mov` or `mov32` (both zero-extend it).
fn small_mov(op: Op) -> Option<(R, u8)> {
    match op {
        Op::Mov32I { d, imm } if imm <= 255 => Some((d, imm as u8)),
        Op::Mov64I { d, imm } if (0..=255).contains(&imm) => Some((d, imm as u8)),
        _ => None,
    }
}

/// Superinstructions of three or more instructions, and the ones that need
/// the instruction (`Select`'s condition); `ops` and `insns` start at the
/// same instruction.
fn fuse_long(ops: &[Op], insns: &[Insn]) -> Option<Op> {
    use Op::*;
    if let (
        [m1, _, m2, ..],
        [_, Insn::Jmp {
            width,
            cond,
            dst,
            src: Src::Imm(imm),
            off: 1,
        }, ..],
    ) = (ops, insns)
    {
        if let (Some((d, a)), Some((d2, b))) = (small_mov(*m1), small_mov(*m2)) {
            if d == d2 {
                return Some(Select {
                    d,
                    x: (*dst).into(),
                    wide: *width == Width::W64,
                    a,
                    b,
                    cond: truth(*cond),
                    imm: *imm,
                });
            }
        }
    }
    if let [LdxB { d, s, off: o1 }, Lsh32I { d: d2, imm: 8 }, LdxB {
        d: t,
        s: s2,
        off: o,
    }, Or32R { d: d3, s: t2 }, LdxB {
        d: u,
        s: s3,
        off: o2,
    }, Lsh32I { d: u2, imm: 16 }, Or32R { d: d4, s: u3 }, LdxB {
        d: v,
        s: s4,
        off: o3,
    }, Lsh32I { d: v2, imm: 24 }, Or32R { d: d5, s: v3 }, ..] = *ops
    {
        if [d2, d3, d4, d5] == [d; 4]
            && [t2, u2, u3, v2, v3] == [t, u, u, v, v]
            && [s2, s3, s4] == [s; 3]
            && o.checked_add(1) == Some(o1)
            && o.checked_add(2) == Some(o2)
            && o.checked_add(3) == Some(o3)
        {
            return Some(LdxLe32Bytes { d, t, u, v, s, o });
        }
    }
    // A 32-bit register compare after a 32-bit load or a 32-bit move.
    if let (
        [first, second, ..],
        [_, Insn::Jmp {
            width: Width::W32,
            cond,
            dst,
            src: Src::Reg(src),
            ..
        }, ..],
    ) = (ops, insns)
    {
        let t = jump_target_r(*second).unwrap_or(u32::MAX);
        let (x, y): (R, R) = ((*dst).into(), (*src).into());
        match *first {
            _ if t == u32::MAX => {}
            LdxW { d, s, off } if x == d => {
                return Some(LdxWJcc32R {
                    d,
                    s,
                    x: y,
                    off,
                    cond: truth(*cond),
                    t,
                })
            }
            LdxW { d, s, off } if y == d => {
                return Some(LdxWJcc32R {
                    d,
                    s,
                    x,
                    off,
                    cond: truth(swapped(*cond)),
                    t,
                })
            }
            Mov32R { d, s } => {
                return Some(Mov32Jcc32R {
                    d,
                    s,
                    x,
                    y,
                    cond: truth(*cond),
                    t,
                })
            }
            _ => {}
        }
    }
    if let [Mov32R { d, s }, Add32R { d: d2, s: s2 }, Rsh32I { d: d3, imm: k }, ..] = *ops {
        if d == d2 && d == d3 {
            return Some(Mov32Add32Rsh32I { d, s, s2, k });
        }
    }
    if let [Mov64R { d: t, s: i }, scale, Mov64R { d: p, s: b }, Add64R { d: p2, s: t3 }, ..] = *ops
    {
        let scaled = match scale {
            Mul64I { d, imm } => Some((d, imm)),
            Lsh64I { d, imm } if imm <= 30 => Some((d, 1i32 << imm)),
            _ => None,
        };
        if let Some((t2, k)) = scaled {
            if t == t2 && t == t3 && p == p2 && p != t {
                return Some(IndexAddr { t, i, p, b, k });
            }
        }
    }
    Some(match *ops {
        [Mov32R { d: t, s: d }, Rsh32I { d: t2, imm: a }, Lsh32I { d: d2, imm: b }, Or32R { d: d3, s: t3 }, Xor32R { d: x, s: d4 }, ..]
            if t == t2 && t == t3 && d == d2 && d == d3 && d == d4 =>
        {
            Rot32I4Xor32R { d, t, a, b, x }
        }
        [LdxW { d, s, off }, Add32I { d: d2, imm }, StxW {
            d: s2,
            s: d3,
            off: off2,
        }, ..]
            if d == d2 && d == d3 && s == s2 && off == off2 =>
        {
            IncW { d, s, off, imm }
        }
        [Mov32R { d, s: x }, Mov32I { d: c, imm: 32 }, Sub32R { d: c2, s: n }, Mov32R { d: t, s: d2 }, Lsh32R { d: t2, s: n2 }, Rsh32R { d: d3, s: c3 }, Or32R { d: d4, s: t3 }, ..]
            if c == c2
                && c == c3
                && d == d2
                && d == d3
                && d == d4
                && t == t2
                && t == t3
                && n == n2 =>
        {
            Rot32R7 { d, x, c, n, t }
        }
        [Mov32R { d: t, s }, Rsh32I { d: t2, imm: a }, Mov32R { d, s: s2 }, Lsh32I { d: d2, imm: b }, Or32R { d: d3, s: t3 }, ..]
            if t == t2 && t == t3 && s == s2 && d == d2 && d == d3 =>
        {
            Rot32I5 { d, t, s, a, b }
        }
        [Mov32R { d: t, s: d }, Rsh32I { d: t2, imm: a }, Lsh32I { d: d2, imm: b }, Or32R { d: d3, s: t3 }, ..]
            if t == t2 && t == t3 && d == d2 && d == d3 =>
        {
            Rot32I4 { d, t, a, b }
        }
        [LdxB { d: a, s, off: o1 }, LdxB {
            d: b,
            s: s2,
            off: o2,
        }, Lsh64I { d: b2, imm: k }, Or64R { d: b3, s: a2 }, Add64R { d: b4, s: x }, ..]
            if s == s2 && b == b2 && b == b3 && b == b4 && a == a2 =>
        {
            LdxB2LshOr64Add64R {
                a,
                b,
                s,
                k,
                o1,
                o2,
                x,
            }
        }
        [LdxB { d: a, s, off: o1 }, LdxB {
            d: b,
            s: s2,
            off: o2,
        }, Lsh64I { d: b2, imm: k }, Or64R { d: b3, s: a2 }, ..]
            if s == s2 && b == b2 && b == b3 && a == a2 =>
        {
            LdxB2LshOr64 { a, b, s, k, o1, o2 }
        }
        [LdxB { d: a, s, off: o1 }, LdxB {
            d: b,
            s: s2,
            off: o2,
        }, Lsh32I { d: b2, imm: k }, Or32R { d: b3, s: a2 }, ..]
            if s == s2 && b == b2 && b == b3 && a == a2 =>
        {
            LdxB2LshOr32 { a, b, s, k, o1, o2 }
        }
        [Mov32R { d, s }, Lsh32I { d: d2, imm: a }, Arsh32I { d: d3, imm: b }, And32I { d: d4, imm }, Xor32R { d: d5, s: x }, ..]
            if [d2, d3, d4, d5] == [d; 4] =>
        {
            Mov32Lsh32Arsh32And32Xor32R { d, s, a, b, x, imm }
        }
        [Lsh32I { d, imm: a }, Arsh32I { d: d2, imm: b }, And32I { d: d3, imm }, Xor32R { d: d4, s: x }, ..]
            if [d2, d3, d4] == [d; 3] =>
        {
            Lsh32Arsh32And32Xor32R { d, a, b, x, imm }
        }
        [Mov32R { d: t, s }, Rsh32I { d: t2, imm: k }, Xor32R { d, s: t3 }, ..]
            if t == t2 && t == t3 =>
        {
            Mov32Rsh32Xor32R { t, s, k, d }
        }
        [Mov32R { d, s }, Lsh32I { d: d2, imm: a }, Arsh32I { d: d3, imm: b }, And32I { d: d4, imm }, ..]
            if d == d2 && d == d3 && d == d4 =>
        {
            Mov32Lsh32Arsh32And32 { d, s, a, b, imm }
        }
        [Lsh32I { d, imm: a }, Arsh32I { d: d2, imm: b }, And32I { d: d3, imm }, ..]
            if d == d2 && d == d3 =>
        {
            Lsh32Arsh32And32 { d, a, b, imm }
        }
        [LdxB { d: t, s, off }, Lsh32I { d: t2, imm: k }, Or32R { d, s: t3 }, ..]
            if t == t2 && t == t3 =>
        {
            LdxBLshOr32 { t, s, off, k, d }
        }
        [LdxB { d, s, off }, Lsh32I { d: d2, imm: k }, ..] if d == d2 => LdxBLsh32 { d, s, off, k },
        [LdxB { d: t, s, off }, Or32R { d, s: t2 }, ..] if t == t2 => LdxBOr32 { t, s, off, d },
        [Neg32 { d }, And32I { d: d2, imm }, ..] if d == d2 => Neg32And32I { d, imm },
        [And32I { d, imm: mask }, Jeq32I { d: d2, .. }
        | Jne32I { d: d2, .. }
        | Jlt32I { d: d2, .. }
        | Jle32I { d: d2, .. }
        | Jgt32I { d: d2, .. }
        | Jge32I { d: d2, .. }
        | Jset32I { d: d2, .. }
        | Jslt32I { d: d2, .. }
        | Jsle32I { d: d2, .. }
        | Jsgt32I { d: d2, .. }
        | Jsge32I { d: d2, .. }, ..]
            if d == d2 && mask <= 0xffff =>
        {
            let Insn::Jmp {
                cond,
                src: Src::Imm(imm),
                ..
            } = *insns.get(1)?
            else {
                return None;
            };
            let imm = u16::try_from(imm).ok()?;
            let t = jump_target(ops[1])?;
            And32Jcc32 {
                d,
                cond: truth(cond),
                mask: mask as u16,
                imm,
                t,
            }
        }
        [Mov32R { d, s }, Xor32R { d: d2, s: x }, Sub32R { d: d3, s: y }, ..]
            if d == d2 && d == d3 =>
        {
            Mov32Xor32Sub32R { d, s, x, y }
        }
        [Mov32R { d, s }, Add32R { d: d2, s: s2 }, ..] if d == d2 => Mov32Add32R { d, s, s2 },
        [Mov32R { d, s }, Xor32R { d: d2, s: s2 }, ..] if d == d2 => Mov32Xor32R { d, s, s2 },
        [Xor32R { d, s: x }, Sub32R { d: d2, s: y }, ..] if d == d2 => Xor32Sub32R { d, x, y },
        [Mov64R { d, s }, JltR { d: x, s: y, t }, ..] => Mov64JltR { d, s, x, y, t },
        [Mov32R { d, s }, JltI { d: x, imm, t }, ..] => Mov32JltI { d, s, x, imm, t },
        [Mov32R { d: d1, s: s1 }, Mov32R { d: d2, s: s2 }, ..] => Mov32R2 { d1, s1, d2, s2 },
        [Mov32R { d, s }, CallLocal { t }, ..] => Mov32RCall { d, s, t },
        [Mov64R { d, s }, CallLocal { t }, ..] => Mov64RCall { d, s, t },
        [Mov32I { d, imm }, CallLocal { t }, ..] => Mov32ICall { d, imm, t },
        [LdxStackW { d, off } | LdxStackDw { d, off }, And32I { d: d2, imm }, ..] if d == d2 => {
            LdxStackAnd32I { d, off, imm }
        }
        [LdxStackDw { d, off }, Add64I { d: d2, imm }, ..] if d == d2 => {
            LdxStackDwAdd64I { d, off, imm }
        }
        [LdxStackDw { d, off }, And64I { d: d2, imm }, ..] if d == d2 => {
            LdxStackDwAnd64I { d, off, imm }
        }
        [Lsh32I { d, imm: k }, And32I { d: d2, imm }, ..] if d == d2 => Lsh32And32I { d, k, imm },
        [LdxStackDw { d: d1, off: o1 }, LdxStackW { d: d2, off: o2 }, ..] => {
            LdxStackDwW { d1, d2, o1, o2 }
        }
        [StxStackW { s: s1, off: o1 }, StxStackW { s: s2, off: o2 }, ..] => {
            StxStackW2 { s1, s2, o1, o2 }
        }
        [Mov64I { d, imm: 1 }, Lsh64R { d: d2, s }, LoadImm { d: t, lo, hi }, And64R { d: d3, s: t2 }, ..]
            if d == d2 && d == d3 && t == t2 =>
        {
            BitTest64 { d, s, t, lo, hi }
        }
        [Add32I { d, imm: a }, And32I { d: d2, imm: m }, ..] if d == d2 => Add32And32I { d, a, m },
        [Mov64R { d, s }, Add64R { d: d2, s: s2 }, ..] if d == d2 => Mov64Add64R { d, s, s2 },
        [Add64I { d: d1, imm: i1 }, Add64I { d: d2, imm: i2 }, ..] => Add64I2 { d1, d2, i1, i2 },
        [Mul32I { d, imm: m }, Add32I { d: d2, imm: a }, ..] if d == d2 => Mul32Add32I { d, m, a },
        _ => return None,
    })
}

fn store(size: Size, d: R, off: i16, src: Src) -> Op {
    match (size, src) {
        (Size::B, Src::Imm(imm)) => Op::StB { d, off, imm },
        (Size::H, Src::Imm(imm)) => Op::StH { d, off, imm },
        (Size::W, Src::Imm(imm)) => Op::StW { d, off, imm },
        (Size::DW, Src::Imm(imm)) => Op::StDw { d, off, imm },
        (Size::B, Src::Reg(s)) => Op::StxB {
            d,
            s: s.into(),
            off,
        },
        (Size::H, Src::Reg(s)) => Op::StxH {
            d,
            s: s.into(),
            off,
        },
        (Size::W, Src::Reg(s)) => Op::StxW {
            d,
            s: s.into(),
            off,
        },
        (Size::DW, Src::Reg(s)) => Op::StxDw {
            d,
            s: s.into(),
            off,
        },
    }
}

/// Whether `insn` may write `r10`.
fn writes_r10(insn: &Insn) -> bool {
    match *insn {
        Insn::Alu { dst, .. }
        | Insn::Neg { dst, .. }
        | Insn::Endian { dst, .. }
        | Insn::LoadImm64 { dst, .. }
        | Insn::Load { dst, .. } => dst == Reg::R10,
        Insn::Atomic { src, fetch, .. } => fetch && src == Reg::R10,
        _ => false,
    }
}

fn alu(width: Width, op: AluOp, d: R, src: Src) -> Op {
    match (width, src) {
        (Width::W64, Src::Imm(imm)) => match op {
            AluOp::Add => Op::Add64I { d, imm },
            AluOp::Sub => Op::Sub64I { d, imm },
            AluOp::Mul => Op::Mul64I { d, imm },
            // Division by the constant 0 gives 0, modulo leaves dst.
            AluOp::Div | AluOp::Sdiv if imm == 0 => Op::Mov64I { d, imm: 0 },
            AluOp::Mod | AluOp::Smod if imm == 0 => Op::Nop,
            AluOp::Div => Op::Div64I { d, imm },
            AluOp::Sdiv => Op::Sdiv64I { d, imm },
            AluOp::Mod => Op::Mod64I { d, imm },
            AluOp::Smod => Op::Smod64I { d, imm },
            AluOp::Or => Op::Or64I { d, imm },
            AluOp::And => Op::And64I { d, imm },
            AluOp::Xor => Op::Xor64I { d, imm },
            AluOp::Lsh => Op::Lsh64I {
                d,
                imm: (imm & 63) as u8,
            },
            AluOp::Rsh => Op::Rsh64I {
                d,
                imm: (imm & 63) as u8,
            },
            AluOp::Arsh => Op::Arsh64I {
                d,
                imm: (imm & 63) as u8,
            },
            // movsx with an immediate does not decode; treat as mov.
            AluOp::Mov | AluOp::MovSx(_) => Op::Mov64I { d, imm },
        },
        (Width::W32, Src::Imm(imm)) => {
            let imm = imm as u32;
            match op {
                AluOp::Add => Op::Add32I { d, imm },
                AluOp::Sub => Op::Sub32I { d, imm },
                AluOp::Mul => Op::Mul32I { d, imm },
                AluOp::Div | AluOp::Sdiv if imm == 0 => Op::Mov32I { d, imm: 0 },
                // Modulo by 0 leaves dst, but the 32-bit form zero-extends it.
                AluOp::Mod | AluOp::Smod if imm == 0 => Op::Mov32R { d, s: d },
                AluOp::Div => Op::Div32I { d, imm },
                AluOp::Sdiv => Op::Sdiv32I { d, imm },
                AluOp::Mod => Op::Mod32I { d, imm },
                AluOp::Smod => Op::Smod32I { d, imm },
                AluOp::Or => Op::Or32I { d, imm },
                AluOp::And => Op::And32I { d, imm },
                AluOp::Xor => Op::Xor32I { d, imm },
                AluOp::Lsh => Op::Lsh32I {
                    d,
                    imm: (imm & 31) as u8,
                },
                AluOp::Rsh => Op::Rsh32I {
                    d,
                    imm: (imm & 31) as u8,
                },
                AluOp::Arsh => Op::Arsh32I {
                    d,
                    imm: (imm & 31) as u8,
                },
                AluOp::Mov | AluOp::MovSx(_) => Op::Mov32I { d, imm },
            }
        }
        (Width::W64, Src::Reg(s)) => {
            let s = s.into();
            match op {
                AluOp::Add => Op::Add64R { d, s },
                AluOp::Sub => Op::Sub64R { d, s },
                AluOp::Mul => Op::Mul64R { d, s },
                AluOp::Div => Op::Div64R { d, s },
                AluOp::Sdiv => Op::Sdiv64R { d, s },
                AluOp::Mod => Op::Mod64R { d, s },
                AluOp::Smod => Op::Smod64R { d, s },
                AluOp::Or => Op::Or64R { d, s },
                AluOp::And => Op::And64R { d, s },
                AluOp::Xor => Op::Xor64R { d, s },
                AluOp::Lsh => Op::Lsh64R { d, s },
                AluOp::Rsh => Op::Rsh64R { d, s },
                AluOp::Arsh => Op::Arsh64R { d, s },
                AluOp::Mov => Op::Mov64R { d, s },
                AluOp::MovSx(SignExtFrom::B8) => Op::Movsx8To64 { d, s },
                AluOp::MovSx(SignExtFrom::B16) => Op::Movsx16To64 { d, s },
                AluOp::MovSx(SignExtFrom::B32) => Op::Movsx32To64 { d, s },
            }
        }
        (Width::W32, Src::Reg(s)) => {
            let s = s.into();
            match op {
                AluOp::Add => Op::Add32R { d, s },
                AluOp::Sub => Op::Sub32R { d, s },
                AluOp::Mul => Op::Mul32R { d, s },
                AluOp::Div => Op::Div32R { d, s },
                AluOp::Sdiv => Op::Sdiv32R { d, s },
                AluOp::Mod => Op::Mod32R { d, s },
                AluOp::Smod => Op::Smod32R { d, s },
                AluOp::Or => Op::Or32R { d, s },
                AluOp::And => Op::And32R { d, s },
                AluOp::Xor => Op::Xor32R { d, s },
                AluOp::Lsh => Op::Lsh32R { d, s },
                AluOp::Rsh => Op::Rsh32R { d, s },
                AluOp::Arsh => Op::Arsh32R { d, s },
                AluOp::Mov => Op::Mov32R { d, s },
                AluOp::MovSx(SignExtFrom::B8) => Op::Movsx8To32 { d, s },
                AluOp::MovSx(SignExtFrom::B16) => Op::Movsx16To32 { d, s },
                // movsx32 in class ALU does not decode; a 32-bit move of
                // the low half is what it would mean.
                AluOp::MovSx(SignExtFrom::B32) => Op::Mov32R { d, s },
            }
        }
    }
}

fn jmp(width: Width, cond: bpfkit_isa::Cond, d: R, src: Src, t: u32) -> Op {
    use bpfkit_isa::Cond::*;
    match (width, src) {
        (Width::W64, Src::Imm(imm)) => match cond {
            Eq => Op::JeqI { d, imm, t },
            Gt => Op::JgtI { d, imm, t },
            Ge => Op::JgeI { d, imm, t },
            Set => Op::JsetI { d, imm, t },
            Ne => Op::JneI { d, imm, t },
            Sgt => Op::JsgtI { d, imm, t },
            Sge => Op::JsgeI { d, imm, t },
            Lt => Op::JltI { d, imm, t },
            Le => Op::JleI { d, imm, t },
            Slt => Op::JsltI { d, imm, t },
            Sle => Op::JsleI { d, imm, t },
        },
        (Width::W64, Src::Reg(s)) => {
            let s = s.into();
            match cond {
                Eq => Op::JeqR { d, s, t },
                Gt => Op::JgtR { d, s, t },
                Ge => Op::JgeR { d, s, t },
                Set => Op::JsetR { d, s, t },
                Ne => Op::JneR { d, s, t },
                Sgt => Op::JsgtR { d, s, t },
                Sge => Op::JsgeR { d, s, t },
                Lt => Op::JltR { d, s, t },
                Le => Op::JleR { d, s, t },
                Slt => Op::JsltR { d, s, t },
                Sle => Op::JsleR { d, s, t },
            }
        }
        (Width::W32, Src::Imm(imm)) => {
            let imm = imm as u32;
            match cond {
                Eq => Op::Jeq32I { d, imm, t },
                Gt => Op::Jgt32I { d, imm, t },
                Ge => Op::Jge32I { d, imm, t },
                Set => Op::Jset32I { d, imm, t },
                Ne => Op::Jne32I { d, imm, t },
                Sgt => Op::Jsgt32I { d, imm, t },
                Sge => Op::Jsge32I { d, imm, t },
                Lt => Op::Jlt32I { d, imm, t },
                Le => Op::Jle32I { d, imm, t },
                Slt => Op::Jslt32I { d, imm, t },
                Sle => Op::Jsle32I { d, imm, t },
            }
        }
        (Width::W32, Src::Reg(s)) => {
            let s = s.into();
            match cond {
                Eq => Op::Jeq32R { d, s, t },
                Gt => Op::Jgt32R { d, s, t },
                Ge => Op::Jge32R { d, s, t },
                Set => Op::Jset32R { d, s, t },
                Ne => Op::Jne32R { d, s, t },
                Sgt => Op::Jsgt32R { d, s, t },
                Sge => Op::Jsge32R { d, s, t },
                Lt => Op::Jlt32R { d, s, t },
                Le => Op::Jle32R { d, s, t },
                Slt => Op::Jslt32R { d, s, t },
                Sle => Op::Jsle32R { d, s, t },
            }
        }
    }
}

// Keep ops small: the dispatch loads one op per instruction.
const _: () = assert!(std::mem::size_of::<Op>() <= 12);
