//! Errors of the object reader.

use thiserror::Error;

/// Why an object could not be read. Every variant names what is wrong and
/// where, so that a one-line message is enough for a user.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ElfError {
    /// The bytes do not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// An ELF file that is not 64-bit little-endian, the only layout clang
    /// produces for `-target bpf` (`bpfel`).
    #[error("unsupported ELF layout: {what}")]
    Unsupported {
        /// What is unsupported, e.g. `32-bit ELF`.
        what: &'static str,
    },
    /// The machine is neither `EM_BPF` (247) nor `EM_NONE` (0, which old
    /// toolchains wrote for BPF objects).
    #[error("not a BPF object (e_machine {machine})")]
    NotBpf {
        /// The `e_machine` field.
        machine: u16,
    },
    /// A structure of the file is truncated or inconsistent.
    #[error("malformed ELF: {what}: {source}")]
    Malformed {
        /// Which structure, e.g. `section table`.
        what: String,
        /// The `object` crate's description.
        #[source]
        source: object::read::Error,
    },
    /// A section or symbol name is not valid UTF-8.
    #[error("{what} name is not valid UTF-8")]
    BadName {
        /// What the name belongs to, e.g. `section 7`.
        what: String,
    },
    /// A program section whose size is not a whole number of instructions.
    #[error("program section '{section}' has {size} bytes, not a multiple of 8")]
    BadProgramSize {
        /// Section name.
        section: String,
        /// Size in bytes.
        size: u64,
    },
    /// A function symbol outside its section or not on an instruction.
    #[error("function symbol '{name}' at offset {offset:#x} is outside section '{section}' or misaligned")]
    SymbolOutOfRange {
        /// Symbol name.
        name: String,
        /// Section name.
        section: String,
        /// Byte offset.
        offset: u64,
    },
    /// A relocation that does not apply to an instruction of its section.
    #[error(
        "relocation at offset {offset:#x} is outside program section '{section}' or misaligned"
    )]
    RelocationOutOfRange {
        /// Section name.
        section: String,
        /// Byte offset of the relocation.
        offset: u64,
    },
    /// A relocation naming a symbol that does not exist.
    #[error(
        "relocation at offset {offset:#x} in section '{section}' names missing symbol {symbol}"
    )]
    BadRelocationSymbol {
        /// Section name.
        section: String,
        /// Byte offset of the relocation.
        offset: u64,
        /// The symbol index.
        symbol: u32,
    },
    /// The `.BTF` or `.BTF.ext` section is malformed.
    #[error("BTF: {source}")]
    Btf {
        /// What is wrong.
        #[source]
        source: crate::btf::BtfError,
    },
    /// A map definition that cannot be used.
    #[error("map '{map}': {reason}")]
    BadMap {
        /// The map (or section) name.
        map: String,
        /// What is wrong.
        reason: String,
    },
    /// A program that cannot be linked: a relocation of an unsupported
    /// kind or target, a call outside every function, an unresolvable
    /// CO-RE relocation.
    #[error("program '{program}': section '{section}' insn {insn}: {reason}")]
    Link {
        /// The program being linked.
        program: String,
        /// The section holding the instruction.
        section: String,
        /// Slot of the instruction in that section.
        insn: usize,
        /// What is wrong (names the relocation and its symbol).
        reason: String,
    },
    /// A section name that gives no program type.
    #[error("program '{program}': section name '{section}' does not name a program type (as libbpf's SEC() names)")]
    UnknownProgType {
        /// The program.
        program: String,
        /// Its section.
        section: String,
    },
}

impl ElfError {
    pub(crate) fn malformed(
        what: impl Into<String>,
    ) -> impl FnOnce(object::read::Error) -> ElfError {
        let what = what.into();
        move |source| ElfError::Malformed { what, source }
    }
}
