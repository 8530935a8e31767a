//! A pure x86-64 instruction encoder: typed operands in, bytes appended to a
//! `Vec<u8>`. No `unsafe`, no knowledge of eBPF.
//!
//! Encodings follow the Intel 64 and IA-32 Architectures Software
//! Developer's Manual (SDM), Volume 2:
//! - 2.1 instruction format (legacy prefixes, opcode, ModR/M, SIB,
//!   displacement, immediate) and table 2-2 (32-bit addressing forms with
//!   the ModR/M byte), 2-3 (with the SIB byte);
//! - 2.2.1 REX prefixes (`0100WRXB`): W selects 64-bit operand size, R
//!   extends ModR/M.reg, X extends SIB.index, B extends ModR/M.rm or
//!   SIB.base; with any REX prefix, byte registers 4-7 mean SPL/BPL/SIL/DIL
//!   instead of AH/CH/DH/BH (2.2.1.2), so byte operations on them force one;
//! - 2.2.1.6 RIP-relative addressing: mod=00 rm=101 is `[rip+disp32]`, so
//!   `[rbp]`/`[r13]` are encoded with a zero disp8; rm=100 selects a SIB
//!   byte, so `[rsp]`/`[r12]` need one;
//! - the opcode pages of chapters 3-4 cited at each function.

/// A general-purpose register, numbered as in ModR/M (SDM table 2-2).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Gpr {
    const fn low(self) -> u8 {
        self as u8 & 7
    }
    const fn ext(self) -> u8 {
        (self as u8 >> 3) & 1
    }
}

/// A memory operand `[base + index * scale + disp]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mem {
    /// Base register.
    pub base: Gpr,
    /// Optional index register (not `rsp`) and scale (1, 2, 4 or 8).
    pub index: Option<(Gpr, u8)>,
    /// Displacement.
    pub disp: i32,
}

impl Mem {
    /// `[base + disp]`.
    pub const fn at(base: Gpr, disp: i32) -> Mem {
        Mem {
            base,
            index: None,
            disp,
        }
    }

    /// `[base + index * scale]`.
    pub const fn indexed(base: Gpr, index: Gpr, scale: u8) -> Mem {
        Mem {
            base,
            index: Some((index, scale)),
            disp: 0,
        }
    }
}

/// A ModR/M `r/m` operand: a register or memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rm {
    /// Register direct (mod = 11).
    Reg(Gpr),
    /// Memory.
    Mem(Mem),
}

/// Operand size of an integer operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sz {
    /// 8 bits.
    B8,
    /// 16 bits (operand-size prefix 0x66).
    B16,
    /// 32 bits (writes to a register zero the upper half, SDM 3.4.1.1).
    B32,
    /// 64 bits (REX.W).
    B64,
}

/// Condition codes (SDM appendix B.1.4.7, `tttn`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum Cc {
    O = 0,
    No = 1,
    B = 2,
    Ae = 3,
    E = 4,
    Ne = 5,
    Be = 6,
    A = 7,
    S = 8,
    Ns = 9,
    L = 0xc,
    Ge = 0xd,
    Le = 0xe,
    G = 0xf,
}

impl Cc {
    /// The opposite condition (flip the low bit of `tttn`).
    pub fn inverse(self) -> Cc {
        const ALL: [Cc; 16] = [
            Cc::O,
            Cc::No,
            Cc::B,
            Cc::Ae,
            Cc::E,
            Cc::Ne,
            Cc::Be,
            Cc::A,
            Cc::S,
            Cc::Ns,
            Cc::O, // 0xa (P) unused
            Cc::O, // 0xb (NP) unused
            Cc::L,
            Cc::Ge,
            Cc::Le,
            Cc::G,
        ];
        ALL[(self as usize) ^ 1]
    }
}

/// Two-operand integer ALU operations of opcode group 1 (SDM 3.2 `ADD`,
/// `OR`, `AND`, `SUB`, `XOR`, `CMP`): the `/digit` of `81`/`83` and the
/// base of the `r/m, reg` opcode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum Alu {
    Add = 0,
    Or = 1,
    And = 4,
    Sub = 5,
    Xor = 6,
    Cmp = 7,
}

/// Shift and rotate operations of opcode group 2 (SDM 4.3 `SAL/SAR/SHL/SHR`,
/// `RCL/RCR/ROL/ROR`): the `/digit` of `C1`/`D3`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum Shift {
    Rol = 0,
    Ror = 1,
    Shl = 4,
    Shr = 5,
    Sar = 7,
}

/// Unary operations of opcode group 3 (`F7 /digit`): `NOT`, `NEG`, `MUL`,
/// `DIV`, `IDIV` (SDM 3.3, 4.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum Unary {
    Not = 2,
    Neg = 3,
    Div = 6,
    Idiv = 7,
}

/// Appends instructions to a byte buffer. Every method encodes exactly one
/// instruction.
///
/// The code is `buf[..len]`; the buffer is kept longer than the code (what
/// lies past `len` is scratch), so that an instruction is written in place
/// at a cursor after one length test, and finished by moving the cursor:
/// no `Vec` bookkeeping per instruction (capacity test, length updates, a
/// 16-byte zeroing store and a truncation were a quarter of encoding a
/// simple instruction). The buffer only grows, zeroed once as it does.
#[derive(Default, Debug)]
pub struct Asm {
    buf: Vec<u8>,
    len: usize,
}

/// Scratch bytes an instruction may write past the cursor (an encoding
/// is at most 15 bytes, written as a 16-byte window).
const WINDOW: usize = 16;

impl Asm {
    /// An empty buffer.
    #[inline]
    pub fn new() -> Asm {
        Asm::default()
    }

    /// An empty buffer reusing `buf`'s memory (its contents are scratch),
    /// with room for at least `room` bytes of code before it grows.
    pub fn with_buffer(mut buf: Vec<u8>, room: usize) -> Asm {
        // Scratch bytes need not be zero: only the grown part is written.
        let want = room + WINDOW;
        if buf.len() < want {
            buf.resize(want.max(buf.capacity()), 0);
        }
        Asm { buf, len: 0 }
    }

    /// Current length (the offset of the next instruction).
    #[inline]
    pub fn pos(&self) -> usize {
        self.len
    }

    /// The code so far.
    #[inline]
    pub fn code(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The code so far, to patch.
    #[inline]
    pub fn code_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// The buffer and the length of the code in it (the rest is scratch):
    /// give the buffer back to [`Asm::with_buffer`] to reuse it without
    /// zeroing it again.
    #[inline]
    pub fn into_parts(self) -> (Vec<u8>, usize) {
        (self.buf, self.len)
    }

    /// The code alone.
    pub fn into_code(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }

    /// Appends `bytes` (a recorded or precomputed encoding).
    #[inline]
    pub fn extend(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if self.buf.len() < end + WINDOW {
            self.grow(bytes.len());
        }
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    /// Appends the first `n` bytes of `bytes` (`n <= 32`) with one
    /// fixed-size copy (a precomputed encoding; `extend` of a slice of
    /// variable length is a `memcpy` call).
    #[inline]
    pub fn extend_window(&mut self, bytes: &[u8; 32], n: usize) {
        let start = self.len;
        if self.buf.len() < start + 32 {
            self.grow(32);
        }
        let out: &mut [u8; 32] = (&mut self.buf[start..start + 32])
            .try_into()
            .expect("32 bytes");
        *out = *bytes;
        self.len = start + n.min(32);
    }

    /// Makes room for `more` bytes and a window past them (out of line:
    /// the buffer is sized for the typical program up front).
    #[cold]
    #[inline(never)]
    fn grow(&mut self, more: usize) {
        let want = (self.len + more + WINDOW).max(2 * self.buf.len()).max(256);
        self.buf.resize(want, 0);
    }

    #[inline]
    fn b(&mut self, x: u8) {
        let (start, out) = self.open();
        out[0] = x;
        self.close(start, 1);
    }

    /// Appends the first `n` bytes of the constant `out` (`n <= 16`): one
    /// fixed-size copy and a cursor update.
    #[inline(always)]
    fn put(&mut self, bytes: [u8; 16], n: usize) {
        let (start, out) = self.open();
        *out = bytes;
        self.close(start, n);
    }

    /// The 16-byte window at the cursor for one instruction, written in
    /// place and then committed with [`Asm::close`]. (Bytes assembled in a
    /// local array and copied with one wide load would stall store
    /// forwarding.) Bytes of the window that are not committed are
    /// scratch: every byte an instruction commits is written by it.
    #[inline(always)]
    fn open(&mut self) -> (usize, &mut [u8; 16]) {
        let start = self.len;
        if self.buf.len() < start + WINDOW {
            self.grow(WINDOW);
        }
        let out: &mut [u8; 16] = (&mut self.buf[start..start + WINDOW])
            .try_into()
            .expect("16 bytes");
        (start, out)
    }

    #[inline(always)]
    fn close(&mut self, start: usize, n: usize) {
        self.len = start + n;
    }

    /// Prefixes, REX, opcode and ModR/M(+SIB+disp) for `op reg, rm`, where
    /// `reg` is a register number or a `/digit` (SDM 2.1, 2.2.1). The bytes
    /// are assembled in a local array and appended at once.
    #[inline]
    fn emit(&mut self, sz: Sz, opcode: &[u8], reg: u8, rm: Rm, byte_regs: bool) {
        self.emit_i(sz, opcode, reg, rm, byte_regs, 0, 0);
    }

    /// [`Asm::emit`] followed by an immediate of `imm_len` (0, 1, 2 or 4)
    /// bytes, appended together.
    ///
    /// Inlined into every public method (themselves `#[inline]`), where
    /// `sz`, `opcode`, `byte_regs` and `imm_len` are constants, so what
    /// remains at a call site is the path of the operand shapes the
    /// lowering uses: register direct, or `[base + disp]` without an index
    /// (context fields, stack slots, `[reg + off]`). Indexed operands go to
    /// the out-of-line [`Asm::emit_general`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn emit_i(
        &mut self,
        sz: Sz,
        opcode: &[u8],
        reg: u8,
        rm: Rm,
        byte_regs: bool,
        imm: i32,
        imm_len: usize,
    ) {
        let simple = match rm {
            Rm::Reg(_) => true,
            Rm::Mem(m) => m.index.is_none(),
        };
        if !simple || opcode.len() > 2 {
            self.emit_general(sz, opcode, reg, rm, byte_regs, imm, imm_len);
            return;
        }
        let (start, out) = self.open();
        let mut k = 0;
        if sz == Sz::B16 {
            out[0] = 0x66;
            k = 1;
        }
        let (b, byte_rm) = match rm {
            Rm::Reg(g) => (g.ext(), (4..8).contains(&(g as u8))),
            Rm::Mem(m) => (m.base.ext(), false),
        };
        // SPL/BPL/SIL/DIL are only reachable with a REX prefix (2.2.1.2).
        let force = byte_regs
            && ((reg < 16 && (4..8).contains(&(reg & 15)) && opcode_uses_reg(opcode)) || byte_rm);
        let rex = 0x40 | ((sz == Sz::B64) as u8) << 3 | ((reg >> 3) & 1) << 2 | b;
        out[k] = rex;
        k += (rex != 0x40 || force) as usize;
        out[k] = opcode[0];
        if let [_, op2] = opcode {
            out[k + 1] = *op2;
        }
        k += opcode.len();
        let reg = (reg & 7) << 3;
        match rm {
            Rm::Reg(g) => {
                out[k] = 0xc0 | reg | g.low();
                k += 1;
            }
            Rm::Mem(m) => {
                // rbp/r13 as base cannot use mod=00 (that means rip/disp32).
                let md = if m.disp == 0 && m.base.low() != 5 {
                    0
                } else if i8::try_from(m.disp).is_ok() {
                    0x40
                } else {
                    0x80
                };
                out[k] = md | reg | m.base.low();
                // rsp/r12 as base need a SIB byte with no index (100).
                let sib = (m.base.low() == 4) as usize;
                out[k + 1] = 0x24;
                k += 1 + sib;
                let disp = m.disp.to_le_bytes();
                out[k..k + 4].copy_from_slice(&disp);
                k += match md {
                    0 => 0,
                    0x40 => 1,
                    _ => 4,
                };
            }
        }
        // k <= 10 here (prefix, REX, two opcode bytes, ModR/M, SIB, disp32).
        let imm = imm.to_le_bytes();
        out[k..k + 4].copy_from_slice(&imm);
        self.close(start, k + imm_len);
    }

    /// [`Asm::emit_i`] for any operand shape (SIB, disp32, longer
    /// opcodes), out of line.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn emit_general(
        &mut self,
        sz: Sz,
        opcode: &[u8],
        reg: u8,
        rm: Rm,
        byte_regs: bool,
        imm: i32,
        imm_len: usize,
    ) {
        let (start, out) = self.open();
        let mut n = 0;
        let mut put = |x: u8| {
            out[n & 15] = x;
            n += 1;
        };
        if sz == Sz::B16 {
            put(0x66);
        }
        let w = (sz == Sz::B64) as u8;
        let r = (reg >> 3) & 1;
        let (x, b) = match rm {
            Rm::Reg(g) => (0, g.ext()),
            Rm::Mem(m) => (m.index.map_or(0, |(i, _)| i.ext()), m.base.ext()),
        };
        // SPL/BPL/SIL/DIL are only reachable with a REX prefix (2.2.1.2).
        let force = byte_regs
            && ((4..8).contains(&(reg & 15)) && reg < 16 && opcode_uses_reg(opcode)
                || matches!(rm, Rm::Reg(g) if (4..8).contains(&(g as u8))));
        let rex = 0x40 | w << 3 | r << 2 | x << 1 | b;
        if rex != 0x40 || force {
            put(rex);
        }
        for &o in opcode {
            put(o);
        }
        let reg = reg & 7;
        match rm {
            Rm::Reg(g) => put(0xc0 | reg << 3 | g.low()),
            Rm::Mem(m) => {
                // rbp/r13 as base cannot use mod=00 (that means rip/disp32).
                let md = if m.disp == 0 && m.base.low() != 5 {
                    0
                } else if i8::try_from(m.disp).is_ok() {
                    1
                } else {
                    2
                };
                match m.index {
                    None if m.base.low() != 4 => put(md << 6 | reg << 3 | m.base.low()),
                    None => {
                        // rsp/r12 as base need a SIB byte with no index (100).
                        put(md << 6 | reg << 3 | 4);
                        put(4 << 3 | 4);
                    }
                    Some((idx, scale)) => {
                        debug_assert!(idx != Gpr::Rsp, "rsp cannot be an index");
                        let ss = match scale {
                            1 => 0,
                            2 => 1,
                            4 => 2,
                            _ => 3,
                        };
                        put(md << 6 | reg << 3 | 4);
                        put(ss << 6 | idx.low() << 3 | m.base.low());
                    }
                }
                match md {
                    1 => put(m.disp as i8 as u8),
                    2 => {
                        for d in m.disp.to_le_bytes() {
                            put(d);
                        }
                    }
                    _ => {}
                }
            }
        }
        for &d in &imm.to_le_bytes()[..imm_len] {
            put(d);
        }
        self.close(start, n);
    }

    /// Group-1 `op rm, reg` (`00`/`01`-style opcodes: `op*8 + 0/1`),
    /// e.g. `ADD r/m64, r64` = `REX.W 01 /r` (SDM 3.2 ADD).
    #[inline]
    pub fn alu_rm_r(&mut self, sz: Sz, op: Alu, dst: Rm, src: Gpr) {
        let opc = (op as u8) << 3 | if sz == Sz::B8 { 0 } else { 1 };
        self.emit(sz, &[opc], src as u8, dst, sz == Sz::B8);
    }

    /// Group-1 `op reg, rm` (`03`-style: `op*8 + 3`), e.g. `CMP r64, r/m64`
    /// = `REX.W 3B /r`.
    #[inline]
    pub fn alu_r_rm(&mut self, sz: Sz, op: Alu, dst: Gpr, src: Rm) {
        let opc = (op as u8) << 3 | 3;
        self.emit(sz, &[opc], dst as u8, src, false);
    }

    /// Group-1 `op rm, imm`: `83 /digit ib` when the immediate fits a
    /// sign-extended byte, else `81 /digit id` (64-bit: sign-extended imm32).
    #[inline]
    pub fn alu_rm_i(&mut self, sz: Sz, op: Alu, dst: Rm, imm: i32) {
        if sz == Sz::B8 {
            self.emit_i(sz, &[0x80], op as u8, dst, true, imm, 1);
        } else if i8::try_from(imm).is_ok() {
            self.emit_i(sz, &[0x83], op as u8, dst, false, imm, 1);
        } else {
            let len = if sz == Sz::B16 { 2 } else { 4 };
            self.emit_i(sz, &[0x81], op as u8, dst, false, imm, len);
        }
    }

    /// [`Asm::alu_rm_i`] on a 32- or 64-bit register (the same bytes:
    /// REX when needed, `83 /digit ib` or `81 /digit id`, no `05`-style
    /// accumulator form), written directly: the lowering's ALU and compare
    /// instructions with an immediate are nearly all of this shape, and the
    /// general path (operand shape and size tests, three inlined copies)
    /// was ~80 host instructions per call where this is ~15.
    #[inline]
    pub fn alu_r_i(&mut self, sz: Sz, op: Alu, dst: Gpr, imm: i32) {
        if !matches!(sz, Sz::B32 | Sz::B64) {
            self.alu_rm_i(sz, op, Rm::Reg(dst), imm);
            return;
        }
        let (start, out) = self.open();
        let rex = 0x40 | ((sz == Sz::B64) as u8) << 3 | dst.ext();
        out[0] = rex;
        let k = (rex != 0x40) as usize;
        let short = i8::try_from(imm).is_ok();
        out[k] = if short { 0x83 } else { 0x81 };
        out[k + 1] = 0xc0 | (op as u8) << 3 | dst.low();
        out[k + 2..k + 6].copy_from_slice(&imm.to_le_bytes());
        self.close(start, k + 2 + if short { 1 } else { 4 });
    }

    /// `TEST r/m, reg` (`85 /r`, SDM 4.3 TEST).
    #[inline]
    pub fn test_rm_r(&mut self, sz: Sz, a: Rm, b: Gpr) {
        self.emit(sz, &[0x85], b as u8, a, false);
    }

    /// `TEST r/m, imm32` (`F7 /0 id`; 64-bit: sign-extended).
    #[inline]
    pub fn test_rm_i(&mut self, sz: Sz, a: Rm, imm: i32) {
        self.emit_i(sz, &[0xf7], 0, a, false, imm, 4);
    }

    /// `MOV r/m, reg` (`88 /r` byte, `89 /r` otherwise; SDM 4.3 MOV).
    #[inline]
    pub fn mov_rm_r(&mut self, sz: Sz, dst: Rm, src: Gpr) {
        let opc = if sz == Sz::B8 { 0x88 } else { 0x89 };
        self.emit(sz, &[opc], src as u8, dst, sz == Sz::B8);
    }

    /// `MOV reg, r/m` (`8B /r`).
    #[inline]
    pub fn mov_r_rm(&mut self, sz: Sz, dst: Gpr, src: Rm) {
        self.emit(sz, &[0x8b], dst as u8, src, false);
    }

    /// `MOV r/m, imm` (`C6 /0 ib`, `C7 /0 iw/id`; 64-bit sign-extends imm32).
    #[inline]
    pub fn mov_rm_i(&mut self, sz: Sz, dst: Rm, imm: i32) {
        match sz {
            Sz::B8 => self.emit_i(sz, &[0xc6], 0, dst, true, imm, 1),
            Sz::B16 => self.emit_i(sz, &[0xc7], 0, dst, false, imm, 2),
            _ => self.emit_i(sz, &[0xc7], 0, dst, false, imm, 4),
        }
    }

    /// Loads a 64-bit constant into `dst` with the shortest form:
    /// `XOR r32, r32` for 0, `MOV r32, imm32` (`B8+rd id`, zero-extends) for
    /// values below 2^32, `MOV r/m64, imm32` (`REX.W C7 /0`) for
    /// sign-extended ones, else `MOV r64, imm64` (`REX.W B8+rd io`).
    #[inline]
    pub fn mov_r_imm64(&mut self, dst: Gpr, v: u64) {
        if v == 0 {
            self.alu_rm_r(Sz::B32, Alu::Xor, Rm::Reg(dst), dst);
        } else if v <= u32::MAX as u64 {
            let (start, out) = self.open();
            let k = dst.ext() as usize;
            out[0] = 0x41;
            out[k] = 0xb8 + dst.low();
            out[k + 1..k + 5].copy_from_slice(&(v as u32).to_le_bytes());
            self.close(start, k + 5);
        } else if v as i64 >= i32::MIN as i64 && v as i64 <= i32::MAX as i64 {
            self.mov_rm_i(Sz::B64, Rm::Reg(dst), v as i32);
        } else {
            let (start, out) = self.open();
            out[0] = 0x48 | dst.ext();
            out[1] = 0xb8 + dst.low();
            out[2..10].copy_from_slice(&v.to_le_bytes());
            self.close(start, 10);
        }
    }

    /// `MOVZX r32, r/m8|16` (`0F B6`/`0F B7`; SDM 4.3 MOVZX). The 32-bit
    /// destination zero-extends to 64 bits.
    #[inline]
    pub fn movzx(&mut self, from: Sz, dst: Gpr, src: Rm) {
        let opc = if from == Sz::B8 { 0xb6 } else { 0xb7 };
        self.emit(Sz::B32, &[0x0f, opc], dst as u8, src, from == Sz::B8);
    }

    /// `MOVSX r, r/m8|16` (`0F BE`/`0F BF`) and `MOVSXD r64, r/m32`
    /// (`REX.W 63`; SDM 4.3 MOVSX/MOVSXD) into a 32- or 64-bit register.
    #[inline]
    pub fn movsx(&mut self, to: Sz, from: Sz, dst: Gpr, src: Rm) {
        match from {
            Sz::B8 => self.emit(to, &[0x0f, 0xbe], dst as u8, src, true),
            Sz::B16 => self.emit(to, &[0x0f, 0xbf], dst as u8, src, false),
            _ => self.emit(Sz::B64, &[0x63], dst as u8, src, false),
        }
    }

    /// `LEA r64, m` (`REX.W 8D /r`).
    #[inline]
    pub fn lea(&mut self, dst: Gpr, m: Mem) {
        self.emit(Sz::B64, &[0x8d], dst as u8, Rm::Mem(m), false);
    }

    /// `IMUL r, r/m` (`0F AF /r`; SDM 3.2 IMUL): the low half of the product
    /// is the same for signed and unsigned operands.
    #[inline]
    pub fn imul_r_rm(&mut self, sz: Sz, dst: Gpr, src: Rm) {
        self.emit(sz, &[0x0f, 0xaf], dst as u8, src, false);
    }

    /// `IMUL r, r/m, imm` (`6B /r ib` or `69 /r id`).
    #[inline]
    pub fn imul_r_rm_i(&mut self, sz: Sz, dst: Gpr, src: Rm, imm: i32) {
        if i8::try_from(imm).is_ok() {
            self.emit_i(sz, &[0x6b], dst as u8, src, false, imm, 1);
        } else {
            self.emit_i(sz, &[0x69], dst as u8, src, false, imm, 4);
        }
    }

    /// Group-3 unary `F7 /digit` (`NEG`, `NOT`, `DIV`, `IDIV`).
    #[inline]
    pub fn unary(&mut self, sz: Sz, op: Unary, rm: Rm) {
        self.emit(sz, &[0xf7], op as u8, rm, false);
    }

    /// Shift or rotate by an immediate (`C1 /digit ib`, SDM 4.3 SAL/SHL).
    #[inline]
    pub fn shift_i(&mut self, sz: Sz, op: Shift, rm: Rm, count: u8) {
        self.emit_i(sz, &[0xc1], op as u8, rm, false, count as i32, 1);
    }

    /// Shift by `CL` (`D3 /digit`); the CPU masks the count to 5 bits (6
    /// with REX.W), exactly as eBPF masks shift counts.
    #[inline]
    pub fn shift_cl(&mut self, sz: Sz, op: Shift, rm: Rm) {
        self.emit(sz, &[0xd3], op as u8, rm, false);
    }

    /// `CDQ` (`99`) / `CQO` (`REX.W 99`): sign-extend eax/rax into edx/rdx.
    #[inline]
    pub fn cqo(&mut self, sz: Sz) {
        if sz == Sz::B64 {
            self.b(0x48);
        }
        self.b(0x99);
    }

    /// `BSWAP r32/r64` (`0F C8+rd`; SDM 3.2 BSWAP).
    #[inline]
    pub fn bswap(&mut self, sz: Sz, r: Gpr) {
        let rex = 0x40 | ((sz == Sz::B64) as u8) << 3 | r.ext();
        if rex != 0x40 {
            self.b(rex);
        }
        self.b(0x0f);
        self.b(0xc8 + r.low());
    }

    /// `LOCK` prefix (`F0`, SDM 3.2 LOCK), for the next instruction.
    #[inline]
    pub fn lock(&mut self) {
        self.b(0xf0);
    }

    /// `XADD r/m, r` (`0F C1 /r`; SDM 4.3 XADD).
    #[inline]
    pub fn xadd(&mut self, sz: Sz, m: Mem, r: Gpr) {
        self.emit(sz, &[0x0f, 0xc1], r as u8, Rm::Mem(m), false);
    }

    /// `XCHG r/m, r` (`87 /r`); implicitly locked with a memory operand.
    #[inline]
    pub fn xchg(&mut self, sz: Sz, m: Mem, r: Gpr) {
        self.emit(sz, &[0x87], r as u8, Rm::Mem(m), false);
    }

    /// `CMPXCHG r/m, r` (`0F B1 /r`; SDM 3.2 CMPXCHG): compares with
    /// eax/rax.
    #[inline]
    pub fn cmpxchg(&mut self, sz: Sz, m: Mem, r: Gpr) {
        self.emit(sz, &[0x0f, 0xb1], r as u8, Rm::Mem(m), false);
    }

    /// `PUSH r64` (`50+rd`).
    #[inline]
    pub fn push(&mut self, r: Gpr) {
        if r.ext() == 1 {
            self.b(0x41);
        }
        self.b(0x50 + r.low());
    }

    /// `POP r64` (`58+rd`).
    #[inline]
    pub fn pop(&mut self, r: Gpr) {
        if r.ext() == 1 {
            self.b(0x41);
        }
        self.b(0x58 + r.low());
    }

    /// `RET` (`C3`).
    #[inline]
    pub fn ret(&mut self) {
        self.b(0xc3);
    }

    /// `INT3` (`CC`).
    #[inline]
    pub fn int3(&mut self) {
        self.b(0xcc);
    }

    /// Skips `n` bytes whose contents are left to the caller to write
    /// (scratch until then: see [`Asm::with_buffer`]).
    #[inline]
    pub fn reserve(&mut self, n: usize) {
        if self.buf.len() < self.len + n + WINDOW {
            self.grow(n);
        }
        self.len += n;
    }

    /// `CALL r/m64` (`FF /2`).
    #[inline]
    pub fn call_rm(&mut self, rm: Rm) {
        self.emit(Sz::B32, &[0xff], 2, rm, false);
    }

    /// `CALL rel32` (`E8 cd`) with a zero displacement; returns the offset
    /// of the displacement for [`patch_rel`].
    #[inline]
    pub fn call_rel32(&mut self) -> usize {
        self.put([0xe8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 5);
        self.pos() - 4
    }

    /// `JMP rel8` (`EB cb`) or `JMP rel32` (`E9 cd`) with a zero
    /// displacement; returns the displacement's offset.
    #[inline]
    pub fn jmp(&mut self, long: bool) -> usize {
        if long {
            self.put([0xe9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 5);
            self.pos() - 4
        } else {
            self.put([0xeb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2);
            self.pos() - 1
        }
    }

    /// `Jcc rel8` (`70+cc cb`) or `Jcc rel32` (`0F 80+cc cd`); returns the
    /// displacement's offset.
    #[inline]
    pub fn jcc(&mut self, cc: Cc, long: bool) -> usize {
        let (start, out) = self.open();
        if long {
            // The displacement is zero until patched (the window's bytes
            // are scratch).
            *out = [
                0x0f,
                0x80 + cc as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ];
            self.close(start, 6);
            self.pos() - 4
        } else {
            out[0] = 0x70 + cc as u8;
            out[1] = 0;
            self.close(start, 2);
            self.pos() - 1
        }
    }
}

/// Whether the ModR/M `reg` field of this opcode names a byte register
/// (byte forms whose `reg` is an operand, not a `/digit`).
fn opcode_uses_reg(opcode: &[u8]) -> bool {
    matches!(opcode, [0x00 | 0x08 | 0x20 | 0x28 | 0x30 | 0x38 | 0x88])
}

/// The multi-byte `NOP` forms (`0F 1F /0` with a memory operand that
/// is never accessed, and `66` operand-size prefixes), by length: the
/// Intel optimization manual's recommended encodings, which decode as one
/// instruction each on every x86-64 core. Longer lengths add `66`
/// prefixes; more than three prefixes can cost a decoder stall on older
/// cores, so nothing is longer than 11 bytes.
const NOPS: [&[u8]; 12] = [
    &[],
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x66, 0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[
        0x66, 0x66, 0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00,
    ],
];

/// Longest single `NOP` [`fill_nops`] writes.
pub const MAX_NOP: usize = NOPS.len() - 1;

/// Longest padding [`fill_nops`] writes with one copy.
const FILL_MAX: usize = 63;

/// For each length up to [`FILL_MAX`], its `NOP`s, the longest first (so
/// that code falling through runs the fewest), built once at compile time:
/// a padding is then one copy, not one per `NOP`.
static FILLS: [[u8; FILL_MAX]; FILL_MAX + 1] = {
    let mut t = [[0u8; FILL_MAX]; FILL_MAX + 1];
    let mut len = 1;
    while len <= FILL_MAX {
        let mut at = 0;
        while at < len {
            let n = if len - at < MAX_NOP {
                len - at
            } else {
                MAX_NOP
            };
            let mut b = 0;
            while b < n {
                t[len][at + b] = NOPS[n][b];
                b += 1;
            }
            at += n;
        }
        len += 1;
    }
    t
};

/// Fills `out` with `NOP` instructions, as few as cover it.
pub fn fill_nops(out: &mut [u8]) {
    for piece in out.chunks_mut(FILL_MAX) {
        piece.copy_from_slice(&FILLS[piece.len()][..piece.len()]);
    }
}

/// Patches a relative displacement at `at` (of `width` 1 or 4 bytes) so
/// that it reaches `target`; the displacement is relative to the end of the
/// field. Returns `false` when it does not fit.
pub fn patch_rel(buf: &mut [u8], at: usize, width: usize, target: usize) -> bool {
    let rel = target as i64 - (at + width) as i64;
    if width == 1 {
        match i8::try_from(rel) {
            Ok(r) => {
                buf[at] = r as u8;
                true
            }
            Err(_) => false,
        }
    } else {
        match i32::try_from(rel) {
            Ok(r) => {
                buf[at..at + 4].copy_from_slice(&r.to_le_bytes());
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    /// Every register, in encoding order, and its 64-bit name.
    const GPRS: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];
    const GPR_NAMES: [&str; 16] = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];

    fn text(bytes: &[u8]) -> String {
        let mut d = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
        let mut f = IntelFormatter::new();
        f.options_mut().set_space_after_operand_separator(true);
        f.options_mut().set_hex_prefix("0x");
        f.options_mut().set_hex_suffix("");
        f.options_mut().set_uppercase_hex(false);
        f.options_mut().set_branch_leading_zeros(false);
        f.options_mut().set_small_hex_numbers_in_decimal(false);
        f.options_mut().set_show_branch_size(false);
        let insn = d.decode();
        assert_eq!(insn.len(), bytes.len(), "one instruction in {bytes:02x?}");
        let mut s = String::new();
        f.format(&insn, &mut s);
        s
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    }

    /// (what, emitter, expected bytes, expected iced-x86 text)
    #[allow(clippy::type_complexity)]
    fn table() -> Vec<(
        &'static str,
        Box<dyn Fn(&mut Asm)>,
        &'static str,
        &'static str,
    )> {
        use Gpr::*;
        let r = Rm::Reg;
        let m = |b, d| Rm::Mem(Mem::at(b, d));
        vec![
            (
                "add64",
                Box::new(move |a: &mut Asm| a.alu_rm_r(Sz::B64, Alu::Add, r(Rsi), R8)),
                "4c01c6",
                "add rsi, r8",
            ),
            (
                "sub32",
                Box::new(move |a: &mut Asm| a.alu_rm_r(Sz::B32, Alu::Sub, r(R15), Rdi)),
                "4129ff",
                "sub r15d, edi",
            ),
            (
                "xor32 self",
                Box::new(move |a: &mut Asm| a.alu_rm_r(Sz::B32, Alu::Xor, r(Rsi), Rsi)),
                "31f6",
                "xor esi, esi",
            ),
            (
                "cmp r,m",
                Box::new(move |a: &mut Asm| a.alu_r_rm(Sz::B64, Alu::Cmp, Rdx, m(R13, 8))),
                "493b5508",
                "cmp rdx, [r13+0x8]",
            ),
            (
                "add imm8",
                Box::new(move |a: &mut Asm| a.alu_rm_i(Sz::B64, Alu::Add, r(Rbx), -1)),
                "4883c3ff",
                "add rbx, 0xffffffffffffffff",
            ),
            (
                "and imm32",
                Box::new(move |a: &mut Asm| a.alu_rm_i(Sz::B32, Alu::And, r(R11), 0x1234)),
                "4181e334120000",
                "and r11d, 0x1234",
            ),
            (
                "sub mem imm",
                Box::new(move |a: &mut Asm| a.alu_rm_i(Sz::B64, Alu::Sub, m(R13, 24), 3)),
                "49836d1803",
                "sub qword ptr [r13+0x18], 0x3",
            ),
            (
                "test",
                Box::new(move |a: &mut Asm| a.test_rm_r(Sz::B64, r(Rdi), Rdi)),
                "4885ff",
                "test rdi, rdi",
            ),
            (
                "test imm",
                Box::new(move |a: &mut Asm| a.test_rm_i(Sz::B32, r(R9), 8)),
                "41f7c108000000",
                "test r9d, 0x8",
            ),
            (
                "mov store8 sil",
                Box::new(move |a: &mut Asm| a.mov_rm_r(Sz::B8, m(Rax, 0), Rsi)),
                "408830",
                "mov [rax], sil",
            ),
            (
                "mov store16",
                Box::new(move |a: &mut Asm| a.mov_rm_r(Sz::B16, m(Rbp, -2), R9)),
                "6644894dfe",
                "mov [rbp-0x2], r9w",
            ),
            (
                "mov store64 rsp-base",
                Box::new(move |a: &mut Asm| a.mov_rm_r(Sz::B64, m(R12, 0), Rax)),
                "49890424",
                "mov [r12], rax",
            ),
            (
                "mov load r13",
                Box::new(move |a: &mut Asm| a.mov_r_rm(Sz::B64, Rax, m(R13, 0))),
                "498b4500",
                "mov rax, [r13]",
            ),
            (
                "mov load disp32",
                Box::new(move |a: &mut Asm| a.mov_r_rm(Sz::B32, Rdi, m(Rbp, -512))),
                "8bbd00feffff",
                "mov edi, [rbp-0x200]",
            ),
            (
                "mov st imm8",
                Box::new(move |a: &mut Asm| a.mov_rm_i(Sz::B8, m(Rax, 0), 0x7f)),
                "c6007f",
                "mov byte ptr [rax], 0x7f",
            ),
            (
                "mov st imm16",
                Box::new(move |a: &mut Asm| a.mov_rm_i(Sz::B16, m(Rax, 0), 0x1234)),
                "66c7003412",
                "mov word ptr [rax], 0x1234",
            ),
            (
                "mov st imm64",
                Box::new(move |a: &mut Asm| a.mov_rm_i(Sz::B64, m(Rax, 0), -2)),
                "48c700feffffff",
                "mov qword ptr [rax], 0xfffffffffffffffe",
            ),
            (
                "mov imm 0",
                Box::new(move |a: &mut Asm| a.mov_r_imm64(R10, 0)),
                "4531d2",
                "xor r10d, r10d",
            ),
            (
                "mov imm32",
                Box::new(move |a: &mut Asm| a.mov_r_imm64(R10, 0xffff_ffff)),
                "41baffffffff",
                "mov r10d, 0xffffffff",
            ),
            (
                "mov imm sx",
                Box::new(move |a: &mut Asm| a.mov_r_imm64(Rsi, u64::MAX)),
                "48c7c6ffffffff",
                "mov rsi, 0xffffffffffffffff",
            ),
            (
                "movabs",
                Box::new(move |a: &mut Asm| a.mov_r_imm64(R11, 0x1122_3344_5566_7788)),
                "49bb8877665544332211",
                "mov r11, 0x1122334455667788",
            ),
            (
                "movzx b",
                Box::new(move |a: &mut Asm| a.movzx(Sz::B8, Rsi, m(Rax, 0))),
                "0fb630",
                "movzx esi, byte ptr [rax]",
            ),
            (
                "movzx dil",
                Box::new(move |a: &mut Asm| a.movzx(Sz::B8, Rax, r(Rdi))),
                "400fb6c7",
                "movzx eax, dil",
            ),
            (
                "movzx w",
                Box::new(move |a: &mut Asm| a.movzx(Sz::B16, R8, r(R8))),
                "450fb7c0",
                "movzx r8d, r8w",
            ),
            (
                "movsx b64",
                Box::new(move |a: &mut Asm| a.movsx(Sz::B64, Sz::B8, Rdi, r(Rsi))),
                "480fbefe",
                "movsx rdi, sil",
            ),
            (
                "movsx w32",
                Box::new(move |a: &mut Asm| a.movsx(Sz::B32, Sz::B16, Rbx, m(Rax, 2))),
                "0fbf5802",
                "movsx ebx, word ptr [rax+0x2]",
            ),
            (
                "movsxd",
                Box::new(move |a: &mut Asm| a.movsx(Sz::B64, Sz::B32, R14, r(R15))),
                "4d63f7",
                "movsxd r14, r15d",
            ),
            (
                "lea",
                Box::new(move |a: &mut Asm| a.lea(Rax, Mem::at(Rbp, -8))),
                "488d45f8",
                "lea rax, [rbp-0x8]",
            ),
            (
                "lea idx",
                Box::new(move |a: &mut Asm| a.lea(Rcx, Mem::indexed(Rcx, Rax, 1))),
                "488d0c01",
                "lea rcx, [rcx+rax]",
            ),
            (
                "mov idx r13",
                Box::new(move |a: &mut Asm| {
                    a.mov_r_rm(Sz::B64, Rcx, Rm::Mem(Mem::indexed(R13, Rax, 8)))
                }),
                "498b4cc500",
                "mov rcx, [r13+rax*8]",
            ),
            (
                "imul",
                Box::new(move |a: &mut Asm| a.imul_r_rm(Sz::B64, Rdi, r(R14))),
                "490faffe",
                "imul rdi, r14",
            ),
            (
                "imul imm",
                Box::new(move |a: &mut Asm| a.imul_r_rm_i(Sz::B32, Rdi, r(Rsi), 1000)),
                "69fee8030000",
                "imul edi, esi, 0x3e8",
            ),
            (
                "neg",
                Box::new(move |a: &mut Asm| a.unary(Sz::B64, Unary::Neg, r(R15))),
                "49f7df",
                "neg r15",
            ),
            (
                "div",
                Box::new(move |a: &mut Asm| a.unary(Sz::B64, Unary::Div, r(Rcx))),
                "48f7f1",
                "div rcx",
            ),
            (
                "idiv32",
                Box::new(move |a: &mut Asm| a.unary(Sz::B32, Unary::Idiv, r(Rcx))),
                "f7f9",
                "idiv ecx",
            ),
            (
                "shl imm",
                Box::new(move |a: &mut Asm| a.shift_i(Sz::B64, Shift::Shl, r(Rsi), 63)),
                "48c1e63f",
                "shl rsi, 0x3f",
            ),
            (
                "sar cl",
                Box::new(move |a: &mut Asm| a.shift_cl(Sz::B32, Shift::Sar, r(R9))),
                "41d3f9",
                "sar r9d, cl",
            ),
            (
                "rol16",
                Box::new(move |a: &mut Asm| a.shift_i(Sz::B16, Shift::Rol, r(Rdi), 8)),
                "66c1c708",
                "rol di, 0x8",
            ),
            (
                "cqo",
                Box::new(move |a: &mut Asm| a.cqo(Sz::B64)),
                "4899",
                "cqo",
            ),
            (
                "cdq",
                Box::new(move |a: &mut Asm| a.cqo(Sz::B32)),
                "99",
                "cdq",
            ),
            (
                "bswap64",
                Box::new(move |a: &mut Asm| a.bswap(Sz::B64, R12)),
                "490fcc",
                "bswap r12",
            ),
            (
                "bswap32",
                Box::new(move |a: &mut Asm| a.bswap(Sz::B32, Rsi)),
                "0fce",
                "bswap esi",
            ),
            (
                "lock xadd",
                Box::new(move |a: &mut Asm| {
                    a.lock();
                    a.xadd(Sz::B64, Mem::at(Rax, 0), Rdi)
                }),
                "f0480fc138",
                "lock xadd [rax], rdi",
            ),
            (
                "lock add",
                Box::new(move |a: &mut Asm| {
                    a.lock();
                    a.alu_rm_r(Sz::B32, Alu::Add, m(Rax, 0), R8)
                }),
                "f0440100",
                "lock add [rax], r8d",
            ),
            (
                "xchg",
                Box::new(move |a: &mut Asm| a.xchg(Sz::B32, Mem::at(Rax, 4), Rbx)),
                "875804",
                "xchg [rax+0x4], ebx",
            ),
            (
                "lock cmpxchg",
                Box::new(move |a: &mut Asm| {
                    a.lock();
                    a.cmpxchg(Sz::B64, Mem::at(Rdx, 0), Rcx)
                }),
                "f0480fb10a",
                "lock cmpxchg [rdx], rcx",
            ),
            (
                "push r12",
                Box::new(move |a: &mut Asm| a.push(R12)),
                "4154",
                "push r12",
            ),
            (
                "pop rbx",
                Box::new(move |a: &mut Asm| a.pop(Rbx)),
                "5b",
                "pop rbx",
            ),
            (
                "call mem",
                Box::new(move |a: &mut Asm| a.call_rm(m(R13, 0x40))),
                "41ff5540",
                "call qword ptr [r13+0x40]",
            ),
            (
                "call reg",
                Box::new(move |a: &mut Asm| a.call_rm(r(Rcx))),
                "ffd1",
                "call rcx",
            ),
            (
                "jmp mem",
                Box::new(move |a: &mut Asm| a.jmp_rm(m(R13, 0x40))),
                "41ff6540",
                "jmp qword ptr [r13+0x40]",
            ),
            ("ret", Box::new(move |a: &mut Asm| a.ret()), "c3", "ret"),
            (
                "jmp8",
                Box::new(move |a: &mut Asm| {
                    a.jmp(false);
                }),
                "eb00",
                "jmp 0x2",
            ),
            (
                "jmp32",
                Box::new(move |a: &mut Asm| {
                    a.jmp(true);
                }),
                "e900000000",
                "jmp 0x5",
            ),
            (
                "jcc8",
                Box::new(move |a: &mut Asm| {
                    a.jcc(Cc::Le, false);
                }),
                "7e00",
                "jle 0x2",
            ),
            (
                "jcc32",
                Box::new(move |a: &mut Asm| {
                    a.jcc(Cc::A, true);
                }),
                "0f8700000000",
                "ja 0x6",
            ),
            (
                "call32",
                Box::new(move |a: &mut Asm| {
                    a.call_rel32();
                }),
                "e800000000",
                "call 0x5",
            ),
        ]
    }

    #[test]
    fn encodings_match_table_and_iced() {
        let mut bad = Vec::new();
        for (what, f, bytes, txt) in table() {
            let mut a = Asm::new();
            f(&mut a);
            let got_hex = hex(a.code());
            let got_txt = text(a.code());
            if got_hex != bytes || got_txt != txt {
                bad.push(format!(
                    "{what}: got {got_hex} `{got_txt}`, want {bytes} `{txt}`"
                ));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    /// Every register in every addressing form decodes to what was asked.
    #[test]
    fn all_registers_and_displacements() {
        for (i, &d) in GPRS.iter().enumerate() {
            for (j, &b) in GPRS.iter().enumerate() {
                for disp in [0, 8, -128, 0x1000] {
                    let mut a = Asm::new();
                    a.mov_r_rm(Sz::B64, d, Rm::Mem(Mem::at(b, disp)));
                    let want = match disp {
                        0 => format!("mov {}, [{}]", GPR_NAMES[i], GPR_NAMES[j]),
                        d if d < 0 => format!("mov {}, [{}-{:#x}]", GPR_NAMES[i], GPR_NAMES[j], -d),
                        d => format!("mov {}, [{}+{:#x}]", GPR_NAMES[i], GPR_NAMES[j], d),
                    };
                    assert_eq!(text(a.code()), want);
                }
                let mut a = Asm::new();
                a.alu_rm_r(Sz::B64, Alu::Add, Rm::Reg(d), b);
                assert_eq!(
                    text(a.code()),
                    format!("add {}, {}", GPR_NAMES[i], GPR_NAMES[j])
                );
            }
        }
    }

    /// The register-direct `alu_r_i` writes exactly the bytes of the
    /// general `alu_rm_i`, for every register, operation, size and
    /// immediate boundary (imm8 against imm32), and they decode as that
    /// operation.
    #[test]
    fn alu_r_i_matches_alu_rm_i() {
        let ops = [Alu::Add, Alu::Or, Alu::And, Alu::Sub, Alu::Xor, Alu::Cmp];
        let imms = [0, 1, -1, 127, 128, -128, -129, 0x7fff, i32::MAX, i32::MIN];
        let mut n = 0;
        for g in GPRS {
            for sz in [Sz::B8, Sz::B16, Sz::B32, Sz::B64] {
                for op in ops {
                    for imm in imms {
                        let (mut a, mut b) = (Asm::new(), Asm::new());
                        a.alu_r_i(sz, op, g, imm);
                        b.alu_rm_i(sz, op, Rm::Reg(g), imm);
                        assert_eq!(a.code(), b.code(), "{sz:?} {op:?} {g:?} {imm}");
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 16 * 4 * 6 * 10);
        let mut a = Asm::new();
        a.alu_r_i(Sz::B64, Alu::Cmp, Gpr::R13, -129);
        assert_eq!(text(a.code()), "cmp r13, 0xffffffffffffff7f");
        let mut a = Asm::new();
        a.alu_r_i(Sz::B32, Alu::Add, Gpr::Rax, 5);
        assert_eq!(text(a.code()), "add eax, 0x5");
    }

    /// Byte, word, dword and qword register forms for every register.
    #[test]
    fn all_registers_in_every_width() {
        let d = [
            "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d",
            "r12d", "r13d", "r14d", "r15d",
        ];
        let w = [
            "ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w",
            "r13w", "r14w", "r15w",
        ];
        let b = [
            "al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b",
            "r12b", "r13b", "r14b", "r15b",
        ];
        let one = |f: &dyn Fn(&mut Asm)| {
            let mut a = Asm::new();
            f(&mut a);
            text(a.code())
        };
        for (i, &r) in GPRS.iter().enumerate() {
            for (j, &m) in GPRS.iter().enumerate() {
                let mem = Mem::at(m, 0x10);
                let at = format!("[{}+0x10]", GPR_NAMES[j]);
                let rm = Rm::Mem(mem);
                assert_eq!(
                    one(&|a| a.mov_rm_r(Sz::B8, rm, r)),
                    format!("mov {at}, {}", b[i])
                );
                assert_eq!(
                    one(&|a| a.mov_rm_r(Sz::B16, rm, r)),
                    format!("mov {at}, {}", w[i])
                );
                assert_eq!(
                    one(&|a| a.mov_rm_r(Sz::B32, rm, r)),
                    format!("mov {at}, {}", d[i])
                );
                assert_eq!(
                    one(&|a| a.movzx(Sz::B8, r, Rm::Reg(m))),
                    format!("movzx {}, {}", d[i], b[j])
                );
                assert_eq!(
                    one(&|a| a.movzx(Sz::B16, r, Rm::Reg(m))),
                    format!("movzx {}, {}", d[i], w[j])
                );
                assert_eq!(
                    one(&|a| a.movsx(Sz::B64, Sz::B8, r, Rm::Reg(m))),
                    format!("movsx {}, {}", GPR_NAMES[i], b[j])
                );
                assert_eq!(
                    one(&|a| a.movsx(Sz::B32, Sz::B16, r, rm)),
                    format!("movsx {}, word ptr {at}", d[i])
                );
                assert_eq!(
                    one(&|a| a.movsx(Sz::B64, Sz::B32, r, Rm::Reg(m))),
                    format!("movsxd {}, {}", GPR_NAMES[i], d[j])
                );
                assert_eq!(
                    one(&|a| a.imul_r_rm(Sz::B32, r, Rm::Reg(m))),
                    format!("imul {}, {}", d[i], d[j])
                );
                assert_eq!(
                    one(&|a| a.xadd(Sz::B64, mem, r)),
                    format!("xadd {at}, {}", GPR_NAMES[i])
                );
                assert_eq!(
                    one(&|a| a.cmpxchg(Sz::B32, mem, r)),
                    format!("cmpxchg {at}, {}", d[i])
                );
                assert_eq!(
                    one(&|a| a.xchg(Sz::B64, mem, r)),
                    format!("xchg {at}, {}", GPR_NAMES[i])
                );
            }
            let rr = Rm::Reg(r);
            assert_eq!(
                one(&|a| a.shift_cl(Sz::B64, Shift::Sar, rr)),
                format!("sar {}, cl", GPR_NAMES[i])
            );
            assert_eq!(
                one(&|a| a.shift_i(Sz::B16, Shift::Rol, rr, 8)),
                format!("rol {}, 0x8", w[i])
            );
            assert_eq!(one(&|a| a.bswap(Sz::B32, r)), format!("bswap {}", d[i]));
            assert_eq!(
                one(&|a| a.bswap(Sz::B64, r)),
                format!("bswap {}", GPR_NAMES[i])
            );
            assert_eq!(
                one(&|a| a.unary(Sz::B32, Unary::Neg, rr)),
                format!("neg {}", d[i])
            );
            assert_eq!(one(&|a| a.push(r)), format!("push {}", GPR_NAMES[i]));
            assert_eq!(one(&|a| a.pop(r)), format!("pop {}", GPR_NAMES[i]));
            assert_eq!(
                one(&|a| a.alu_rm_i(Sz::B32, Alu::Cmp, rr, 0x12345)),
                format!("cmp {}, 0x12345", d[i])
            );
            assert_eq!(
                one(&|a| a.mov_rm_i(Sz::B8, Rm::Mem(Mem::at(r, -1)), 0x7f)),
                format!("mov byte ptr [{}-0x1], 0x7f", GPR_NAMES[i])
            );
            assert_eq!(
                one(&|a| a.mov_r_imm64(r, 0x8000_0000)),
                format!("mov {}, 0x80000000", d[i])
            );
            assert_eq!(
                one(&|a| a.mov_r_imm64(r, 0x1_0000_0000)),
                format!("mov {}, 0x100000000", GPR_NAMES[i])
            );
        }
    }

    #[test]
    fn patching() {
        let mut a = Asm::new();
        let at = a.jmp(false);
        a.ret();
        assert!(patch_rel(a.code_mut(), at, 1, 3));
        assert_eq!(a.code(), [0xeb, 1, 0xc3]);
        assert!(!patch_rel(a.code_mut(), at, 1, 300));
        assert_eq!(Cc::A.inverse(), Cc::Be);
        assert_eq!(Cc::L.inverse(), Cc::Ge);
    }
}

/// Forms used by the lowering's multi-instruction idioms (fused sequences
/// and selects).
impl Asm {
    /// `LEA r32, m` (`8D /r` without REX.W): the address computed in 64
    /// bits, its low 32 bits zero-extended into `dst` (SDM 3.2 LEA, operand
    /// size 32, address size 64).
    pub fn lea32(&mut self, dst: Gpr, m: Mem) {
        self.emit(Sz::B32, &[0x8d], dst as u8, Rm::Mem(m), false);
    }

    /// `CMOVcc r, r/m` (`0F 40+cc /r`; SDM 3.2 CMOVcc). The 32-bit form
    /// writes (zero-extends) its destination even when the condition is
    /// false, so a conditional move of a whole eBPF register is `Sz::B64`.
    pub fn cmov(&mut self, sz: Sz, cc: Cc, dst: Gpr, src: Rm) {
        self.emit(sz, &[0x0f, 0x40 + cc as u8], dst as u8, src, false);
    }

    /// `JMP r/m64` (`FF /4`; SDM 3.2 JMP, near absolute indirect).
    pub fn jmp_rm(&mut self, rm: Rm) {
        self.emit(Sz::B32, &[0xff], 4, rm, false);
    }
}

#[cfg(test)]
mod idiom_forms {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn one(f: &dyn Fn(&mut Asm)) -> String {
        let mut a = Asm::new();
        f(&mut a);
        let mut d = Decoder::with_ip(64, a.code(), 0, DecoderOptions::NONE);
        let insn = d.decode();
        assert_eq!(
            insn.len(),
            a.code().len(),
            "one instruction in {:02x?}",
            a.code()
        );
        let mut f = IntelFormatter::new();
        f.options_mut().set_space_after_operand_separator(true);
        f.options_mut().set_hex_prefix("0x");
        f.options_mut().set_hex_suffix("");
        f.options_mut().set_uppercase_hex(false);
        let mut s = String::new();
        f.format(&insn, &mut s);
        s
    }

    #[test]
    fn lea32_and_cmov() {
        use Gpr::*;
        let ix = |b, i, d| Mem {
            base: b,
            index: Some((i, 1)),
            disp: d,
        };
        assert_eq!(one(&|a| a.lea32(R8, ix(Rdi, R9, 0))), "lea r8d, [rdi+r9]");
        assert_eq!(
            one(&|a| a.lea32(Rsi, ix(R13, Rbp, 0))),
            "lea esi, [r13+rbp]"
        );
        assert_eq!(
            one(&|a| a.lea32(R11, Mem::at(R12, -7))),
            "lea r11d, [r12-7]"
        );
        assert_eq!(
            one(&|a| a.lea(Rbx, ix(Rbp, R12, 0x10))),
            "lea rbx, [rbp+r12+0x10]"
        );
        assert_eq!(
            one(&|a| a.cmov(Sz::B64, Cc::Ae, R10, Rm::Reg(Rcx))),
            "cmovae r10, rcx"
        );
        assert_eq!(
            one(&|a| a.cmov(Sz::B64, Cc::Ne, Rsi, Rm::Reg(R15))),
            "cmovne rsi, r15"
        );
        assert_eq!(
            one(&|a| a.cmov(Sz::B32, Cc::G, Rbx, Rm::Reg(Rdi))),
            "cmovg ebx, edi"
        );
        // Loads through base + index, as fused address computations use.
        assert_eq!(
            one(&|a| a.movzx(Sz::B8, R11, Rm::Mem(ix(Rdi, R9, 0)))),
            "movzx r11d, byte ptr [rdi+r9]"
        );
        assert_eq!(
            one(&|a| a.movzx(Sz::B16, R8, Rm::Mem(ix(R13, R10, -1)))),
            "movzx r8d, word ptr [r13+r10-1]"
        );
    }
}
