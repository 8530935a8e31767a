//! Binary encoding: 8-byte slots to [`Insn`] and back (RFC 9669 section 3-5).
//!
//! Decoding is strict in the way the kernel's verifier is strict about
//! reserved fields (`check_alu_op`, `check_ld_imm`, ...): a field an
//! instruction does not use must be zero, so every valid instruction has
//! exactly one encoding and `encode(decode(x)) == x`.

use crate::insn::*;
use thiserror::Error;

/// One raw 8-byte instruction slot, fields as encoded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct RawInsn {
    /// The opcode byte.
    pub code: u8,
    /// `dst` in the low nibble, `src` in the high nibble.
    pub regs: u8,
    /// Signed 16-bit offset.
    pub off: i16,
    /// Signed 32-bit immediate.
    pub imm: i32,
}

impl RawInsn {
    /// Builds a slot from its fields (`dst`, `src` are 4-bit).
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
        RawInsn {
            code,
            regs: (dst & 0xf) | (src << 4),
            off,
            imm,
        }
    }

    /// Reads a slot from 8 little-endian bytes.
    pub fn from_bytes(b: [u8; 8]) -> RawInsn {
        RawInsn {
            code: b[0],
            regs: b[1],
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// The 8 little-endian bytes of this slot.
    pub fn to_bytes(self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [self.code, self.regs, o[0], o[1], i[0], i[1], i[2], i[3]]
    }

    /// The slot as a 64-bit word (opcode in the low byte), as the
    /// conformance suite's `-- raw` sections write it.
    pub fn to_u64(self) -> u64 {
        u64::from_le_bytes(self.to_bytes())
    }

    /// The slot from a 64-bit word (opcode in the low byte).
    pub fn from_u64(w: u64) -> RawInsn {
        RawInsn::from_bytes(w.to_le_bytes())
    }

    /// The `dst` register field (0..=15).
    pub const fn dst(self) -> u8 {
        self.regs & 0xf
    }

    /// The `src` register field (0..=15).
    pub const fn src(self) -> u8 {
        self.regs >> 4
    }
}

/// Why a slot could not be decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum DecodeErrorKind {
    /// The byte length is not a multiple of 8.
    #[error("program length {len} is not a multiple of 8 bytes")]
    TrailingBytes {
        /// Length in bytes.
        len: usize,
    },
    /// The program has no instructions.
    #[error("program is empty")]
    Empty,
    /// No instruction has this opcode.
    #[error("unknown opcode {code:#04x}")]
    UnknownOpcode {
        /// The opcode byte.
        code: u8,
    },
    /// A field the instruction does not use is not zero (or has a value the
    /// instruction does not allow).
    #[error("opcode {code:#04x} has an invalid {field} field ({value})")]
    ReservedField {
        /// The opcode byte.
        code: u8,
        /// Field name: `dst`, `src`, `off` or `imm`.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// A register field above 10.
    #[error("invalid register r{reg}")]
    BadRegister {
        /// The register number.
        reg: u8,
    },
    /// `lddw` in the last slot.
    #[error("lddw is missing its second slot")]
    LddwTruncated,
    /// The second slot of an `lddw` is not all zero apart from `imm`.
    #[error("invalid second slot of lddw")]
    LddwBadSecondSlot,
    /// A jump or call target outside the program.
    #[error("jump out of range to {target}")]
    JumpOutOfRange {
        /// The target slot (may be negative).
        target: i64,
    },
    /// A jump or call into the second slot of an `lddw`.
    #[error("jump into the middle of lddw at {target}")]
    JumpIntoLddw {
        /// The target slot.
        target: usize,
    },
}

/// A decoding error at a given instruction slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
#[error("insn {pc}: {kind}")]
pub struct DecodeError {
    /// The slot index of the faulty instruction.
    pub pc: Pc,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

// Opcode fields (RFC 9669 section 3 and 4).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
const SRC_X: u8 = 0x08;
const MODE_IMM: u8 = 0x00;
const MODE_ABS: u8 = 0x20;
const MODE_IND: u8 = 0x40;
const MODE_MEM: u8 = 0x60;
const MODE_MEMSX: u8 = 0x80;
const MODE_ATOMIC: u8 = 0xc0;
const ATOMIC_FETCH: i32 = 0x01;

fn size_bits(size: Size) -> u8 {
    match size {
        Size::W => 0x00,
        Size::H => 0x08,
        Size::B => 0x10,
        Size::DW => 0x18,
    }
}

fn size_from_bits(code: u8) -> Size {
    match code & 0x18 {
        0x00 => Size::W,
        0x08 => Size::H,
        0x10 => Size::B,
        _ => Size::DW,
    }
}

fn alu_code(op: AluOp) -> u8 {
    match op {
        AluOp::Add => 0x00,
        AluOp::Sub => 0x10,
        AluOp::Mul => 0x20,
        AluOp::Div | AluOp::Sdiv => 0x30,
        AluOp::Or => 0x40,
        AluOp::And => 0x50,
        AluOp::Lsh => 0x60,
        AluOp::Rsh => 0x70,
        AluOp::Mod | AluOp::Smod => 0x90,
        AluOp::Xor => 0xa0,
        AluOp::Mov | AluOp::MovSx(_) => 0xb0,
        AluOp::Arsh => 0xc0,
    }
}

fn cond_code(c: Cond) -> u8 {
    match c {
        Cond::Eq => 0x10,
        Cond::Gt => 0x20,
        Cond::Ge => 0x30,
        Cond::Set => 0x40,
        Cond::Ne => 0x50,
        Cond::Sgt => 0x60,
        Cond::Sge => 0x70,
        Cond::Lt => 0xa0,
        Cond::Le => 0xb0,
        Cond::Slt => 0xc0,
        Cond::Sle => 0xd0,
    }
}

fn atomic_imm(op: AtomicOp, fetch: bool) -> i32 {
    let base = match op {
        AtomicOp::Add => 0x00,
        AtomicOp::Or => 0x40,
        AtomicOp::And => 0x50,
        AtomicOp::Xor => 0xa0,
        AtomicOp::Xchg => 0xe0,
        AtomicOp::Cmpxchg => 0xf0,
    };
    if fetch || matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg) {
        base | ATOMIC_FETCH
    } else {
        base
    }
}

fn width_class(width: Width, alu: bool) -> u8 {
    match (width, alu) {
        (Width::W32, true) => CLASS_ALU,
        (Width::W64, true) => CLASS_ALU64,
        (Width::W32, false) => CLASS_JMP32,
        (Width::W64, false) => CLASS_JMP,
    }
}

fn src_fields(src: Src) -> (u8, u8, i32) {
    match src {
        Src::Reg(r) => (SRC_X, r.num(), 0),
        Src::Imm(i) => (0, 0, i),
    }
}

/// Encodes one instruction: one slot, or two for `lddw`.
pub fn encode(insn: &Insn) -> ([RawInsn; 2], usize) {
    let one = |r: RawInsn| ([r, RawInsn::default()], 1);
    match *insn {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let (x, s, imm) = src_fields(src);
            let off = match op {
                AluOp::Sdiv | AluOp::Smod => 1,
                AluOp::MovSx(from) => from.bits() as i16,
                _ => 0,
            };
            let code = alu_code(op) | x | width_class(width, true);
            one(RawInsn::new(code, dst.num(), s, off, imm))
        }
        Insn::Neg { width, dst } => one(RawInsn::new(
            0x80 | width_class(width, true),
            dst.num(),
            0,
            0,
            0,
        )),
        Insn::Endian { order, bits, dst } => {
            let code = match order {
                ByteOrder::ToLe => 0xd0 | CLASS_ALU,
                ByteOrder::ToBe => 0xd0 | SRC_X | CLASS_ALU,
                ByteOrder::Swap => 0xd0 | CLASS_ALU64,
            };
            one(RawInsn::new(code, dst.num(), 0, 0, bits.bits() as i32))
        }
        Insn::LoadImm64 { dst, imm } => {
            let (src, lo, hi) = match imm {
                Imm64::Value(v) => (0, v as u32 as i32, (v >> 32) as u32 as i32),
                Imm64::MapFd(fd) => (1, fd, 0),
                Imm64::MapValue { fd, off } => (2, fd, off as i32),
                Imm64::BtfId { id, btf_fd } => (3, id, btf_fd),
                Imm64::Func(off) => (4, off, 0),
                Imm64::MapIdx(idx) => (5, idx, 0),
                Imm64::MapIdxValue { idx, off } => (6, idx, off as i32),
            };
            (
                [
                    RawInsn::new(0x18, dst.num(), src, 0, lo),
                    RawInsn::new(0, 0, 0, 0, hi),
                ],
                2,
            )
        }
        Insn::Load {
            size,
            sign_extend,
            dst,
            src,
            off,
        } => {
            let mode = if sign_extend { MODE_MEMSX } else { MODE_MEM };
            one(RawInsn::new(
                mode | size_bits(size) | CLASS_LDX,
                dst.num(),
                src.num(),
                off,
                0,
            ))
        }
        Insn::Store {
            size,
            dst,
            off,
            src,
        } => match src {
            Src::Imm(imm) => one(RawInsn::new(
                MODE_MEM | size_bits(size) | CLASS_ST,
                dst.num(),
                0,
                off,
                imm,
            )),
            Src::Reg(r) => one(RawInsn::new(
                MODE_MEM | size_bits(size) | CLASS_STX,
                dst.num(),
                r.num(),
                off,
                0,
            )),
        },
        Insn::Atomic {
            size,
            op,
            fetch,
            dst,
            src,
            off,
        } => one(RawInsn::new(
            MODE_ATOMIC | size_bits(size) | CLASS_STX,
            dst.num(),
            src.num(),
            off,
            atomic_imm(op, fetch),
        )),
        Insn::LoadAbs { size, imm } => one(RawInsn::new(
            MODE_ABS | size_bits(size) | CLASS_LD,
            0,
            0,
            0,
            imm,
        )),
        Insn::LoadInd { size, src, imm } => one(RawInsn::new(
            MODE_IND | size_bits(size) | CLASS_LD,
            0,
            src.num(),
            0,
            imm,
        )),
        Insn::Ja { off, long: false } => one(RawInsn::new(CLASS_JMP, 0, 0, off as i16, 0)),
        Insn::Ja { off, long: true } => one(RawInsn::new(CLASS_JMP32, 0, 0, 0, off)),
        Insn::Jmp {
            width,
            cond,
            dst,
            src,
            off,
        } => {
            let (x, s, imm) = src_fields(src);
            let code = cond_code(cond) | x | width_class(width, false);
            one(RawInsn::new(code, dst.num(), s, off, imm))
        }
        Insn::Call(h) => one(RawInsn::new(0x85, 0, 0, 0, h.0 as i32)),
        Insn::CallLocal(off) => one(RawInsn::new(0x85, 0, 1, 0, off)),
        Insn::CallKfunc { btf_id, off } => one(RawInsn::new(0x85, 0, 2, off, btf_id)),
        Insn::Callx(r) => one(RawInsn::new(0x8d, r.num(), 0, 0, 0)),
        Insn::Exit => one(RawInsn::new(0x95, 0, 0, 0, 0)),
    }
}

/// Encodes a sequence of instructions into bytes.
pub fn encode_all<'a>(insns: impl IntoIterator<Item = &'a Insn>) -> Vec<u8> {
    let mut out = Vec::new();
    for insn in insns {
        let (raw, n) = encode(insn);
        for r in &raw[..n] {
            out.extend_from_slice(&r.to_bytes());
        }
    }
    out
}

fn reg(n: u8) -> Result<Reg, DecodeErrorKind> {
    Reg::new(n).ok_or(DecodeErrorKind::BadRegister { reg: n })
}

fn reserved(code: u8, field: &'static str, value: i64) -> DecodeErrorKind {
    DecodeErrorKind::ReservedField { code, field, value }
}

/// Checks that a field is zero.
fn zero(code: u8, field: &'static str, value: i64) -> Result<(), DecodeErrorKind> {
    if value == 0 {
        Ok(())
    } else {
        Err(reserved(code, field, value))
    }
}

/// Decodes one instruction from its first slot and, for `lddw`, the slot
/// after it (`next`, `None` at the end of the program).
pub fn decode_one(raw: RawInsn, next: Option<RawInsn>) -> Result<Insn, DecodeErrorKind> {
    let code = raw.code;
    let class = code & 0x07;
    match class {
        CLASS_ALU | CLASS_ALU64 => decode_alu(raw),
        CLASS_JMP | CLASS_JMP32 => decode_jmp(raw),
        CLASS_LD => decode_ld(raw, next),
        CLASS_LDX => {
            let mode = code & 0xe0;
            let size = size_from_bits(code);
            let sign_extend = match mode {
                MODE_MEM => false,
                MODE_MEMSX if size != Size::DW => true,
                _ => return Err(DecodeErrorKind::UnknownOpcode { code }),
            };
            zero(code, "imm", raw.imm as i64)?;
            Ok(Insn::Load {
                size,
                sign_extend,
                dst: reg(raw.dst())?,
                src: reg(raw.src())?,
                off: raw.off,
            })
        }
        CLASS_ST => {
            if code & 0xe0 != MODE_MEM {
                return Err(DecodeErrorKind::UnknownOpcode { code });
            }
            zero(code, "src", raw.src() as i64)?;
            Ok(Insn::Store {
                size: size_from_bits(code),
                dst: reg(raw.dst())?,
                off: raw.off,
                src: Src::Imm(raw.imm),
            })
        }
        _ => {
            // CLASS_STX
            let size = size_from_bits(code);
            match code & 0xe0 {
                MODE_MEM => {
                    zero(code, "imm", raw.imm as i64)?;
                    Ok(Insn::Store {
                        size,
                        dst: reg(raw.dst())?,
                        off: raw.off,
                        src: Src::Reg(reg(raw.src())?),
                    })
                }
                MODE_ATOMIC if matches!(size, Size::W | Size::DW) => {
                    let fetch = raw.imm & ATOMIC_FETCH != 0;
                    let op = match raw.imm & !ATOMIC_FETCH {
                        0x00 => AtomicOp::Add,
                        0x40 => AtomicOp::Or,
                        0x50 => AtomicOp::And,
                        0xa0 => AtomicOp::Xor,
                        0xe0 if fetch => AtomicOp::Xchg,
                        0xf0 if fetch => AtomicOp::Cmpxchg,
                        _ => return Err(reserved(code, "imm", raw.imm as i64)),
                    };
                    Ok(Insn::Atomic {
                        size,
                        op,
                        fetch,
                        dst: reg(raw.dst())?,
                        src: reg(raw.src())?,
                        off: raw.off,
                    })
                }
                _ => Err(DecodeErrorKind::UnknownOpcode { code }),
            }
        }
    }
}

fn decode_alu(raw: RawInsn) -> Result<Insn, DecodeErrorKind> {
    let code = raw.code;
    let width = if code & 0x07 == CLASS_ALU64 {
        Width::W64
    } else {
        Width::W32
    };
    let x = code & SRC_X != 0;
    let dst = reg(raw.dst())?;
    if code & 0xf0 == 0xd0 {
        // Byte order, checked before the generic source operand because
        // `be` sets the source bit yet carries the width in imm. The source
        // bit selects le/be in class ALU; in ALU64 only the K form exists
        // (bswap).
        let order = match (width, x) {
            (Width::W32, false) => ByteOrder::ToLe,
            (Width::W32, true) => ByteOrder::ToBe,
            (Width::W64, false) => ByteOrder::Swap,
            (Width::W64, true) => return Err(DecodeErrorKind::UnknownOpcode { code }),
        };
        zero(code, "src", raw.src() as i64)?;
        zero(code, "off", raw.off as i64)?;
        let bits = match raw.imm {
            16 => SwapBits::B16,
            32 => SwapBits::B32,
            64 => SwapBits::B64,
            v => return Err(reserved(code, "imm", v as i64)),
        };
        return Ok(Insn::Endian { order, bits, dst });
    }
    let src = if x {
        zero(code, "imm", raw.imm as i64)?;
        Src::Reg(reg(raw.src())?)
    } else {
        zero(code, "src", raw.src() as i64)?;
        Src::Imm(raw.imm)
    };
    let op = match code & 0xf0 {
        0x00 => AluOp::Add,
        0x10 => AluOp::Sub,
        0x20 => AluOp::Mul,
        0x30 | 0x90 => {
            let signed = match raw.off {
                0 => false,
                1 => true,
                v => return Err(reserved(code, "off", v as i64)),
            };
            return Ok(Insn::Alu {
                width,
                op: match (code & 0xf0 == 0x30, signed) {
                    (true, false) => AluOp::Div,
                    (true, true) => AluOp::Sdiv,
                    (false, false) => AluOp::Mod,
                    (false, true) => AluOp::Smod,
                },
                dst,
                src,
            });
        }
        0x40 => AluOp::Or,
        0x50 => AluOp::And,
        0x60 => AluOp::Lsh,
        0x70 => AluOp::Rsh,
        0x80 => {
            if x {
                return Err(DecodeErrorKind::UnknownOpcode { code });
            }
            zero(code, "imm", raw.imm as i64)?;
            zero(code, "off", raw.off as i64)?;
            return Ok(Insn::Neg { width, dst });
        }
        0xa0 => AluOp::Xor,
        0xb0 => {
            let op = match (raw.off, src, width) {
                (0, _, _) => AluOp::Mov,
                (8, Src::Reg(_), _) => AluOp::MovSx(SignExtFrom::B8),
                (16, Src::Reg(_), _) => AluOp::MovSx(SignExtFrom::B16),
                (32, Src::Reg(_), Width::W64) => AluOp::MovSx(SignExtFrom::B32),
                (v, _, _) => return Err(reserved(code, "off", v as i64)),
            };
            return Ok(Insn::Alu {
                width,
                op,
                dst,
                src,
            });
        }
        0xc0 => AluOp::Arsh,
        _ => return Err(DecodeErrorKind::UnknownOpcode { code }),
    };
    zero(code, "off", raw.off as i64)?;
    Ok(Insn::Alu {
        width,
        op,
        dst,
        src,
    })
}

fn decode_jmp(raw: RawInsn) -> Result<Insn, DecodeErrorKind> {
    let code = raw.code;
    let jmp32 = code & 0x07 == CLASS_JMP32;
    let width = if jmp32 { Width::W32 } else { Width::W64 };
    let x = code & SRC_X != 0;
    let cond = match code & 0xf0 {
        0x00 => {
            if x {
                return Err(DecodeErrorKind::UnknownOpcode { code });
            }
            zero(code, "dst", raw.dst() as i64)?;
            zero(code, "src", raw.src() as i64)?;
            return if jmp32 {
                zero(code, "off", raw.off as i64)?;
                Ok(Insn::Ja {
                    off: raw.imm,
                    long: true,
                })
            } else {
                zero(code, "imm", raw.imm as i64)?;
                Ok(Insn::Ja {
                    off: raw.off as i32,
                    long: false,
                })
            };
        }
        0x80 => {
            if jmp32 {
                return Err(DecodeErrorKind::UnknownOpcode { code });
            }
            if x {
                // callx: the register is in dst (as clang and the kernel encode it).
                zero(code, "src", raw.src() as i64)?;
                zero(code, "off", raw.off as i64)?;
                zero(code, "imm", raw.imm as i64)?;
                return Ok(Insn::Callx(reg(raw.dst())?));
            }
            zero(code, "dst", raw.dst() as i64)?;
            return match raw.src() {
                0 => {
                    zero(code, "off", raw.off as i64)?;
                    Ok(Insn::Call(HelperId(raw.imm as u32)))
                }
                1 => {
                    zero(code, "off", raw.off as i64)?;
                    Ok(Insn::CallLocal(raw.imm))
                }
                2 => Ok(Insn::CallKfunc {
                    btf_id: raw.imm,
                    off: raw.off,
                }),
                s => Err(reserved(code, "src", s as i64)),
            };
        }
        0x90 => {
            if jmp32 || x {
                return Err(DecodeErrorKind::UnknownOpcode { code });
            }
            zero(code, "dst", raw.dst() as i64)?;
            zero(code, "src", raw.src() as i64)?;
            zero(code, "off", raw.off as i64)?;
            zero(code, "imm", raw.imm as i64)?;
            return Ok(Insn::Exit);
        }
        0x10 => Cond::Eq,
        0x20 => Cond::Gt,
        0x30 => Cond::Ge,
        0x40 => Cond::Set,
        0x50 => Cond::Ne,
        0x60 => Cond::Sgt,
        0x70 => Cond::Sge,
        0xa0 => Cond::Lt,
        0xb0 => Cond::Le,
        0xc0 => Cond::Slt,
        0xd0 => Cond::Sle,
        _ => return Err(DecodeErrorKind::UnknownOpcode { code }),
    };
    let src = if x {
        zero(code, "imm", raw.imm as i64)?;
        Src::Reg(reg(raw.src())?)
    } else {
        zero(code, "src", raw.src() as i64)?;
        Src::Imm(raw.imm)
    };
    Ok(Insn::Jmp {
        width,
        cond,
        dst: reg(raw.dst())?,
        src,
        off: raw.off,
    })
}

fn decode_ld(raw: RawInsn, next: Option<RawInsn>) -> Result<Insn, DecodeErrorKind> {
    let code = raw.code;
    let size = size_from_bits(code);
    match code & 0xe0 {
        MODE_IMM if size == Size::DW => {
            zero(code, "off", raw.off as i64)?;
            let next = next.ok_or(DecodeErrorKind::LddwTruncated)?;
            if next.code != 0 || next.regs != 0 || next.off != 0 {
                return Err(DecodeErrorKind::LddwBadSecondSlot);
            }
            let lo = raw.imm;
            let hi = next.imm;
            let imm = match raw.src() {
                0 => Imm64::Value((lo as u32 as u64) | ((hi as u32 as u64) << 32)),
                1 => {
                    zero(code, "imm of the second slot", hi as i64)?;
                    Imm64::MapFd(lo)
                }
                2 => Imm64::MapValue {
                    fd: lo,
                    off: hi as u32,
                },
                3 => Imm64::BtfId { id: lo, btf_fd: hi },
                4 => {
                    zero(code, "imm of the second slot", hi as i64)?;
                    Imm64::Func(lo)
                }
                5 => {
                    zero(code, "imm of the second slot", hi as i64)?;
                    Imm64::MapIdx(lo)
                }
                6 => Imm64::MapIdxValue {
                    idx: lo,
                    off: hi as u32,
                },
                s => return Err(reserved(code, "src", s as i64)),
            };
            Ok(Insn::LoadImm64 {
                dst: reg(raw.dst())?,
                imm,
            })
        }
        MODE_ABS | MODE_IND if size != Size::DW => {
            zero(code, "dst", raw.dst() as i64)?;
            zero(code, "off", raw.off as i64)?;
            if code & 0xe0 == MODE_ABS {
                zero(code, "src", raw.src() as i64)?;
                Ok(Insn::LoadAbs { size, imm: raw.imm })
            } else {
                Ok(Insn::LoadInd {
                    size,
                    src: reg(raw.src())?,
                    imm: raw.imm,
                })
            }
        }
        _ => Err(DecodeErrorKind::UnknownOpcode { code }),
    }
}

/// A decoded program: instructions with their slot indices, validated so
/// that every jump, local call and `lddw` function reference lands on the
/// first slot of an instruction inside the program.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Program {
    insns: Vec<Insn>,
    pcs: Vec<Pc>,
    /// For each slot, the index in `insns` of the instruction starting
    /// there, or `u32::MAX` for the second slot of an `lddw`.
    slot_index: Vec<u32>,
    /// See [`Program::loop_heads`].
    loop_heads: Vec<u32>,
}

const NOT_START: u32 = u32::MAX;

impl Program {
    /// Decodes and validates a program from its bytes.
    pub fn decode(bytes: &[u8]) -> Result<Program, DecodeError> {
        if !bytes.len().is_multiple_of(8) {
            return Err(DecodeError {
                pc: Pc(bytes.len() / 8),
                kind: DecodeErrorKind::TrailingBytes { len: bytes.len() },
            });
        }
        let raws: Vec<RawInsn> = bytes
            .chunks_exact(8)
            .map(|c| RawInsn::from_bytes(c.try_into().expect("chunk of 8")))
            .collect();
        Program::decode_raw(&raws)
    }

    /// Decodes and validates a program from raw slots.
    pub fn decode_raw(raws: &[RawInsn]) -> Result<Program, DecodeError> {
        if raws.is_empty() {
            return Err(DecodeError {
                pc: Pc(0),
                kind: DecodeErrorKind::Empty,
            });
        }
        let mut p = Program {
            insns: Vec::with_capacity(raws.len()),
            pcs: Vec::with_capacity(raws.len()),
            slot_index: Vec::with_capacity(raws.len()),
            loop_heads: Vec::new(),
        };
        let mut pc = 0;
        while pc < raws.len() {
            let insn = decode_one(raws[pc], raws.get(pc + 1).copied())
                .map_err(|kind| DecodeError { pc: Pc(pc), kind })?;
            p.slot_index.push(p.insns.len() as u32);
            if insn.slots() == 2 {
                p.slot_index.push(NOT_START);
            }
            p.insns.push(insn);
            p.pcs.push(Pc(pc));
            pc += insn.slots();
        }
        p.check_targets()?;
        Ok(p)
    }

    /// Builds a program from typed instructions (slot indices computed),
    /// validating branch targets as [`Program::decode`] does.
    pub fn from_insns(insns: Vec<Insn>) -> Result<Program, DecodeError> {
        if insns.is_empty() {
            return Err(DecodeError {
                pc: Pc(0),
                kind: DecodeErrorKind::Empty,
            });
        }
        let mut p = Program {
            pcs: Vec::with_capacity(insns.len()),
            slot_index: Vec::with_capacity(insns.len()),
            insns: Vec::new(),
            loop_heads: Vec::new(),
        };
        let mut pc = 0;
        for (i, insn) in insns.iter().enumerate() {
            p.pcs.push(Pc(pc));
            p.slot_index.push(i as u32);
            if insn.slots() == 2 {
                p.slot_index.push(NOT_START);
            }
            pc += insn.slots();
        }
        p.insns = insns;
        p.check_targets()?;
        Ok(p)
    }

    /// Also collects [`Program::loop_heads`]: this pass finds every target
    /// anyway.
    fn check_targets(&mut self) -> Result<(), DecodeError> {
        for (insn, &pc) in self.insns.iter().zip(&self.pcs) {
            let off = match *insn {
                Insn::Ja { off, .. } => off as i64,
                Insn::Jmp { off, .. } => off as i64,
                Insn::CallLocal(off) => off as i64,
                Insn::LoadImm64 {
                    imm: Imm64::Func(off),
                    ..
                } => off as i64,
                _ => continue,
            };
            let target = pc.0 as i64 + 1 + off;
            let err = |kind| Err(DecodeError { pc, kind });
            if target < 0 || target >= self.slot_index.len() as i64 {
                return err(DecodeErrorKind::JumpOutOfRange { target });
            }
            let index = self.slot_index[target as usize];
            if index == NOT_START {
                return err(DecodeErrorKind::JumpIntoLddw {
                    target: target as usize,
                });
            }
            if off < 0 || !matches!(insn, Insn::Ja { .. } | Insn::Jmp { .. }) {
                self.loop_heads.push(index);
            }
        }
        self.loop_heads.sort_unstable();
        self.loop_heads.dedup();
        Ok(())
    }

    /// Indexes into [`Program::insns`], in order and once each, of the
    /// targets of backward jumps (`goto` and conditional jumps), of
    /// bpf-to-bpf calls and of `lddw` function references: loop heads and
    /// subprogram entries, where the JIT aligns its code.
    pub fn loop_heads(&self) -> &[u32] {
        &self.loop_heads
    }

    /// The instructions in order.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// The slot index of each instruction (parallel to [`Program::insns`]).
    pub fn pcs(&self) -> &[Pc] {
        &self.pcs
    }

    /// Instructions with their slot indices.
    pub fn iter(&self) -> impl Iterator<Item = (Pc, &Insn)> + '_ {
        self.pcs.iter().copied().zip(self.insns.iter())
    }

    /// Number of slots (the kernel's `insn_cnt`).
    pub fn slot_count(&self) -> usize {
        self.slot_index.len()
    }

    /// Index into [`Program::insns`] of the instruction starting at `pc`;
    /// `None` past the end or in the middle of an `lddw`.
    pub fn index_of(&self, pc: Pc) -> Option<usize> {
        match self.slot_index.get(pc.0) {
            Some(&i) if i != NOT_START => Some(i as usize),
            _ => None,
        }
    }

    /// The instruction starting at `pc`.
    pub fn get(&self, pc: Pc) -> Option<&Insn> {
        self.index_of(pc).map(|i| &self.insns[i])
    }

    /// Re-encodes the program to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_all(&self.insns)
    }

    /// The bytes the kernel's `BPF_PROG_LOAD` takes: map-table references
    /// (`MapIdx`, `MapIdxValue`) turned into references by map fd (`MapFd`,
    /// `MapValue`), `fd` giving the fd of each map-table index; as a loader
    /// does after creating the object's maps.
    pub fn to_bytes_with_map_fds(&self, fd: impl Fn(i32) -> i32) -> Vec<u8> {
        let insns: Vec<Insn> = self
            .insns
            .iter()
            .map(|insn| match *insn {
                Insn::LoadImm64 {
                    dst,
                    imm: Imm64::MapIdx(i),
                } => Insn::LoadImm64 {
                    dst,
                    imm: Imm64::MapFd(fd(i)),
                },
                Insn::LoadImm64 {
                    dst,
                    imm: Imm64::MapIdxValue { idx, off },
                } => Insn::LoadImm64 {
                    dst,
                    imm: Imm64::MapValue { fd: fd(idx), off },
                },
                other => other,
            })
            .collect();
        encode_all(&insns)
    }
}
