//! Typed eBPF instructions (RFC 9669 section 4-5).
//!
//! An [`Insn`] is one decoded instruction. Every instruction occupies one
//! 8-byte slot except [`Insn::LoadImm64`] (`lddw`), which occupies two. Jump
//! and call offsets stay exactly as encoded (relative to the next slot), so
//! that encode(decode(x)) == x for every valid instruction.

use std::fmt;

/// A register number, `r0` to `r10`.
///
/// `r10` is the read-only frame pointer; `r0` the return value; `r1`-`r5`
/// arguments; `r6`-`r9` callee-saved (RFC 9669 section 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(u8);

impl Reg {
    /// Return value register.
    pub const R0: Reg = Reg(0);
    /// First argument register.
    pub const R1: Reg = Reg(1);
    /// Second argument register.
    pub const R2: Reg = Reg(2);
    /// Third argument register.
    pub const R3: Reg = Reg(3);
    /// Fourth argument register.
    pub const R4: Reg = Reg(4);
    /// Fifth argument register.
    pub const R5: Reg = Reg(5);
    /// Callee-saved register.
    pub const R6: Reg = Reg(6);
    /// Callee-saved register.
    pub const R7: Reg = Reg(7);
    /// Callee-saved register.
    pub const R8: Reg = Reg(8);
    /// Callee-saved register.
    pub const R9: Reg = Reg(9);
    /// Read-only frame pointer.
    pub const R10: Reg = Reg(10);
    /// Number of registers.
    pub const COUNT: usize = 11;

    /// The register with number `n`, if `n <= 10`.
    pub const fn new(n: u8) -> Option<Reg> {
        if n <= 10 {
            Some(Reg(n))
        } else {
            None
        }
    }

    /// The register number, 0..=10.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The register number as encoded.
    pub const fn num(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// An instruction slot index: the unit of jump offsets and of the kernel's
/// "insn N" in verifier messages. An `lddw` covers slots `pc` and `pc + 1`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Pc(pub usize);

impl fmt::Display for Pc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Pc {
    /// The slot `off` slots after the one following this instruction, as
    /// jumps count (`pc + 1 + off`); `None` when it falls before slot 0.
    pub fn branch(self, off: i64) -> Option<Pc> {
        let t = self.0 as i64 + 1 + off;
        usize::try_from(t).ok().map(Pc)
    }
}

/// A helper function id (`call imm` with `src = 0`), as the kernel numbers them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct HelperId(pub u32);

impl fmt::Display for HelperId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Operation width of an ALU or jump instruction: class ALU/JMP32 (32-bit)
/// or ALU64/JMP (64-bit).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Width {
    /// 32-bit operation: class `ALU` or `JMP32`. ALU results zero-extend.
    W32,
    /// 64-bit operation: class `ALU64` or `JMP`.
    W64,
}

/// Source operand: a register (`BPF_X`) or the sign-extended 32-bit
/// immediate (`BPF_K`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Src {
    /// `BPF_X`: the source register.
    Reg(Reg),
    /// `BPF_K`: the immediate, sign-extended to 64 bits for 64-bit ops.
    Imm(i32),
}

/// Binary ALU operations (RFC 9669 section 4.1). `neg` and byte swaps are
/// separate [`Insn`] variants because they have no source operand.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AluOp {
    /// `dst += src`
    Add,
    /// `dst -= src`
    Sub,
    /// `dst *= src`
    Mul,
    /// Unsigned `dst /= src`; division by zero gives 0.
    Div,
    /// Signed division (`off = 1`); division by zero gives 0.
    Sdiv,
    /// `dst |= src`
    Or,
    /// `dst &= src`
    And,
    /// `dst <<= src` (count masked to the width)
    Lsh,
    /// Logical `dst >>= src` (count masked)
    Rsh,
    /// Unsigned `dst %= src`; modulo by zero leaves dst.
    Mod,
    /// Signed modulo (`off = 1`); modulo by zero leaves dst.
    Smod,
    /// `dst ^= src`
    Xor,
    /// `dst = src`
    Mov,
    /// `dst = (s8/s16/s32) src` (`movsx`, `off` = 8, 16 or 32); register source only.
    MovSx(SignExtFrom),
    /// Arithmetic `dst >>= src` (count masked)
    Arsh,
}

/// The width a `movsx` sign-extends from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SignExtFrom {
    /// From 8 bits.
    B8,
    /// From 16 bits.
    B16,
    /// From 32 bits (64-bit form only).
    B32,
}

impl SignExtFrom {
    /// Number of bits.
    pub const fn bits(self) -> u32 {
        match self {
            SignExtFrom::B8 => 8,
            SignExtFrom::B16 => 16,
            SignExtFrom::B32 => 32,
        }
    }
}

/// Byte-order operation kind (RFC 9669 section 4.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ByteOrder {
    /// `le16/32/64`: convert to little endian (truncation only, on our hosts).
    ToLe,
    /// `be16/32/64`: convert to big endian.
    ToBe,
    /// `bswap16/32/64`: unconditional swap (ALU64 class).
    Swap,
}

/// Bit width of a byte-order operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SwapBits {
    /// 16 bits.
    B16,
    /// 32 bits.
    B32,
    /// 64 bits.
    B64,
}

impl SwapBits {
    /// Number of bits.
    pub const fn bits(self) -> u32 {
        match self {
            SwapBits::B16 => 16,
            SwapBits::B32 => 32,
            SwapBits::B64 => 64,
        }
    }
}

/// Size of a memory access.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Size {
    /// 1 byte (`u8`, `BPF_B`)
    B,
    /// 2 bytes (`u16`, `BPF_H`)
    H,
    /// 4 bytes (`u32`, `BPF_W`)
    W,
    /// 8 bytes (`u64`, `BPF_DW`)
    DW,
}

impl Size {
    /// Number of bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
}

/// Atomic read-modify-write operations (RFC 9669 section 5.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AtomicOp {
    /// `*dst += src`
    Add,
    /// `*dst |= src`
    Or,
    /// `*dst &= src`
    And,
    /// `*dst ^= src`
    Xor,
    /// Exchange: `src = xchg(*dst, src)` (always fetches).
    Xchg,
    /// Compare-exchange with `r0`: `r0 = cmpxchg(*dst, r0, src)` (always fetches).
    Cmpxchg,
}

/// Conditions of conditional jumps (RFC 9669 section 4.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Cond {
    /// `==`
    Eq,
    /// unsigned `>`
    Gt,
    /// unsigned `>=`
    Ge,
    /// `dst & src != 0`
    Set,
    /// `!=`
    Ne,
    /// signed `>`
    Sgt,
    /// signed `>=`
    Sge,
    /// unsigned `<`
    Lt,
    /// unsigned `<=`
    Le,
    /// signed `<`
    Slt,
    /// signed `<=`
    Sle,
}

impl Cond {
    /// Every condition.
    pub const ALL: [Cond; 11] = [
        Cond::Eq,
        Cond::Gt,
        Cond::Ge,
        Cond::Set,
        Cond::Ne,
        Cond::Sgt,
        Cond::Sge,
        Cond::Lt,
        Cond::Le,
        Cond::Slt,
        Cond::Sle,
    ];
}

/// What the 64-bit immediate of an `lddw` stands for (the `src` field,
/// RFC 9669 section 5.4). Symbolic forms are resolved by the loader.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Imm64 {
    /// src 0: the literal value.
    Value(u64),
    /// src 1 (`BPF_PSEUDO_MAP_FD`): the map with this fd.
    MapFd(i32),
    /// src 2 (`BPF_PSEUDO_MAP_VALUE`): address of the value of map `fd`, plus `off`.
    MapValue {
        /// Map fd.
        fd: i32,
        /// Byte offset into the (first) value.
        off: u32,
    },
    /// src 3 (`BPF_PSEUDO_BTF_ID`): a kernel variable by BTF id.
    BtfId {
        /// BTF type id.
        id: i32,
        /// BTF object fd (0: vmlinux).
        btf_fd: i32,
    },
    /// src 4 (`BPF_PSEUDO_FUNC`): address of the subprogram at slot
    /// `pc + 1 + off`, `pc` being the `lddw`'s first slot (as the kernel counts).
    Func(i32),
    /// src 5 (`BPF_PSEUDO_MAP_IDX`): the map at this index of the map table.
    MapIdx(i32),
    /// src 6 (`BPF_PSEUDO_MAP_IDX_VALUE`): value address of map `idx`, plus `off`.
    MapIdxValue {
        /// Index in the map table.
        idx: i32,
        /// Byte offset into the value.
        off: u32,
    },
}

/// One decoded eBPF instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Insn {
    /// Binary ALU operation `dst = dst op src`.
    Alu {
        /// 32 or 64 bit.
        width: Width,
        /// The operation.
        op: AluOp,
        /// Destination (and first operand).
        dst: Reg,
        /// Second operand.
        src: Src,
    },
    /// `dst = -dst`.
    Neg {
        /// 32 or 64 bit.
        width: Width,
        /// Operand and destination.
        dst: Reg,
    },
    /// Byte-order conversion of `dst`.
    Endian {
        /// Which conversion.
        order: ByteOrder,
        /// 16, 32 or 64 bits.
        bits: SwapBits,
        /// Operand and destination.
        dst: Reg,
    },
    /// `lddw dst, imm64` (two slots).
    LoadImm64 {
        /// Destination.
        dst: Reg,
        /// The value or symbolic reference.
        imm: Imm64,
    },
    /// `dst = *(size *)(src + off)`, zero- or sign-extended.
    Load {
        /// Access size.
        size: Size,
        /// Sign-extend the loaded value (`BPF_MEMSX`).
        sign_extend: bool,
        /// Destination.
        dst: Reg,
        /// Base address register.
        src: Reg,
        /// Byte offset.
        off: i16,
    },
    /// `*(size *)(dst + off) = src` (`BPF_ST` for an immediate, `BPF_STX` for a register).
    Store {
        /// Access size.
        size: Size,
        /// Base address register.
        dst: Reg,
        /// Byte offset.
        off: i16,
        /// Value stored.
        src: Src,
    },
    /// Atomic operation on `*(size *)(dst + off)` with `src`.
    Atomic {
        /// `W` or `DW`.
        size: Size,
        /// The operation.
        op: AtomicOp,
        /// Whether the old value is returned in `src` (always true for xchg/cmpxchg).
        fetch: bool,
        /// Base address register.
        dst: Reg,
        /// Operand register.
        src: Reg,
        /// Byte offset.
        off: i16,
    },
    /// Legacy packet load `r0 = ntoh(*(size *)(skb->data + imm))`.
    LoadAbs {
        /// `B`, `H` or `W`.
        size: Size,
        /// Packet offset.
        imm: i32,
    },
    /// Legacy packet load `r0 = ntoh(*(size *)(skb->data + src + imm))`.
    LoadInd {
        /// `B`, `H` or `W`.
        size: Size,
        /// Offset register.
        src: Reg,
        /// Packet offset.
        imm: i32,
    },
    /// Unconditional jump: `goto +off` (`long = false`, offset in `off`) or
    /// `gotol +imm` (`long = true`, class JMP32, offset in `imm`).
    Ja {
        /// Slot offset from the next instruction.
        off: i32,
        /// Encoded as `gotol` (JMP32 class, 32-bit offset).
        long: bool,
    },
    /// Conditional jump `if dst cond src goto +off`.
    Jmp {
        /// 32 (JMP32) or 64 bit (JMP) comparison.
        width: Width,
        /// The condition.
        cond: Cond,
        /// First operand.
        dst: Reg,
        /// Second operand.
        src: Src,
        /// Slot offset from the next instruction.
        off: i16,
    },
    /// Helper call (`call imm`, src 0).
    Call(HelperId),
    /// bpf-to-bpf call (src 1) to the subprogram `off` slots after the next instruction.
    CallLocal(i32),
    /// Kernel function call (src 2, `BPF_PSEUDO_KFUNC_CALL`).
    CallKfunc {
        /// BTF id of the function.
        btf_id: i32,
        /// Index into the fd array of the module BTF (0: vmlinux).
        off: i16,
    },
    /// Indirect call `callx reg` (register number in `dst`).
    Callx(Reg),
    /// Return from the current function (or program) with `r0`.
    Exit,
}

impl Insn {
    /// Number of 8-byte slots this instruction occupies (2 for `lddw`).
    pub const fn slots(&self) -> usize {
        match self {
            Insn::LoadImm64 { .. } => 2,
            _ => 1,
        }
    }

    /// The target slot of a jump or local call at `pc`, if it is one.
    /// `None` for other instructions (and for targets before slot 0, which
    /// decoding rejects).
    pub fn branch_target(&self, pc: Pc) -> Option<Pc> {
        match *self {
            Insn::Ja { off, .. } => pc.branch(off as i64),
            Insn::Jmp { off, .. } => pc.branch(off as i64),
            Insn::CallLocal(off) => pc.branch(off as i64),
            Insn::LoadImm64 {
                imm: Imm64::Func(off),
                ..
            } => pc.branch(off as i64),
            _ => None,
        }
    }
}
