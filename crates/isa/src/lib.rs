//! # bpfkit-isa
//!
//! The eBPF instruction set of RFC 9669, decoded once into typed
//! instructions so that no other crate handles raw opcode bytes.
//!
//! - [`insn`]: the typed instruction ([`Insn`]) and its parts.
//! - [`codec`]: 8-byte slots to [`Insn`] and back, and [`Program`], a
//!   decoded program whose branch targets have been checked.
//! - [`asm`]: text to instructions, in the uBPF/conformance syntax and in
//!   the kernel/llvm-objdump syntax.
//! - [`disasm`]: instructions to text, in the same two syntaxes.
//!
//! ```
//! use bpfkit_isa::{Insn, Program, Reg, Src, AluOp, Width};
//!
//! // r0 = 42; exit
//! let bytes = [0xb7, 0x00, 0, 0, 42, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
//! let prog = Program::decode(&bytes).unwrap();
//! assert_eq!(
//!     prog.insns()[0],
//!     Insn::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R0, src: Src::Imm(42) }
//! );
//! assert_eq!(prog.to_bytes(), bytes);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod asm;
pub mod codec;
pub mod disasm;
pub mod insn;

pub use asm::{assemble, AsmError, Syntax};

pub use codec::{decode_one, encode, encode_all, DecodeError, DecodeErrorKind, Program, RawInsn};
pub use insn::*;
