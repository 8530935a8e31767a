//! Guest faults: [`Trap`] is what every engine returns when a program cannot
//! go on. Interpreter and JIT produce identical traps for the same program
//! and input.

use bpfkit_isa::{HelperId, Imm64, Pc};
use std::fmt;
use thiserror::Error;

/// Direction of a memory access.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Access {
    /// A load (or the read half of an atomic).
    Read,
    /// A store (or an atomic read-modify-write).
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// A memory access that no region allows: the bytes `[addr, addr + size)`
/// do not lie inside one region, or the region is read-only and `access` is
/// [`Access::Write`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Error)]
#[error("out-of-bounds {access} of {size} bytes at {addr:#x}")]
pub struct MemFault {
    /// First guest address of the access.
    pub addr: u64,
    /// Access size in bytes.
    pub size: usize,
    /// Read or write.
    pub access: Access,
}

/// Why a program was stopped.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
pub enum TrapKind {
    /// A load, store or atomic outside every region (or a store to a
    /// read-only region).
    #[error("out-of-bounds {access} of {size} bytes at {addr:#x}")]
    OutOfBounds {
        /// First guest address of the access.
        addr: u64,
        /// Access size in bytes.
        size: usize,
        /// Read or write.
        access: Access,
    },
    /// The instruction budget ran out (checked at taken jumps, calls and
    /// returns, so a program stops at most one straight-line run later).
    #[error("instruction budget of {budget} exhausted")]
    BudgetExhausted {
        /// The configured budget.
        budget: u64,
    },
    /// A bpf-to-bpf call would need more than `max` frames.
    #[error("call depth exceeded: more than {max} frames")]
    CallDepthExceeded {
        /// Maximum number of frames, the main program included.
        max: usize,
    },
    /// A call to a helper id that the embedder did not register.
    #[error("unknown helper {id}")]
    UnknownHelper {
        /// The helper id called.
        id: HelperId,
    },
    /// `callx` with a register value that is neither a function address nor
    /// a registered helper id.
    #[error("callx to invalid target {target:#x}")]
    BadCallTarget {
        /// The register value.
        target: u64,
    },
    /// Execution ran past the last instruction without `exit`.
    #[error("execution fell off the end of the program")]
    FellOffEnd,
    /// An instruction the engine cannot execute (for example a kfunc call).
    #[error("unsupported instruction: {what}")]
    Unsupported {
        /// What the instruction is.
        what: &'static str,
    },
    /// A symbolic `lddw` (map reference, BTF id, ...) that the loader did
    /// not resolve to a value.
    #[error("unresolved symbolic lddw: {imm:?}")]
    UnresolvedImm64 {
        /// The symbolic operand.
        imm: Imm64,
    },
    /// A legacy packet load (`LD_ABS`/`LD_IND`) with no packet region.
    #[error("legacy packet load without a packet region")]
    NoPacket,
    /// A helper reported an error.
    #[error("helper {id} failed: {message}")]
    Helper {
        /// The helper id.
        id: HelperId,
        /// What went wrong.
        message: String,
    },
}

impl From<MemFault> for TrapKind {
    fn from(f: MemFault) -> TrapKind {
        TrapKind::OutOfBounds {
            addr: f.addr,
            size: f.size,
            access: f.access,
        }
    }
}

/// A guest fault at instruction slot `pc`.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
#[error("trap at insn {pc}: {kind}")]
pub struct Trap {
    /// Slot index of the faulting instruction (as [`bpfkit_isa::Program`] counts).
    pub pc: Pc,
    /// What happened.
    pub kind: TrapKind,
}

impl Trap {
    /// A trap of `kind` at `pc`.
    pub fn new(pc: Pc, kind: impl Into<TrapKind>) -> Trap {
        Trap {
            pc,
            kind: kind.into(),
        }
    }
}
