//! The object model and its parser.
//!
//! Facts used (from the ELF gABI and the BPF psABI in LLVM's
//! `llvm/docs/BPFUsage` / the kernel's `Documentation/bpf/llvm_reloc.rst`):
//! programs live in `SHF_EXECINSTR` sections; functions are `STT_FUNC`
//! symbols (older clang wrote global `STT_NOTYPE` symbols with size 0);
//! `LBB*` jump labels are local `STT_NOTYPE` symbols; map definitions are
//! symbols in `maps`/`maps/*` (legacy) or `.maps` (BTF); relocation types
//! are `R_BPF_64_64` (1, `lddw`), `R_BPF_64_ABS64` (2), `R_BPF_64_ABS32`
//! (3), `R_BPF_64_NODYLD32` (4) and `R_BPF_64_32` (10, calls).

use crate::error::ElfError;
use bpfkit_isa::{DecodeError, Pc, Program};
use object::elf::{self, FileHeader64, Sym64};
use object::read::elf::{FileHeader, Rela as _, SectionHeader, SectionTable, Sym, SymbolTable};
use object::{LittleEndian as LE, SectionIndex, SymbolIndex};

/// A parsed BPF object file, borrowing from its bytes.
#[derive(Clone, Debug)]
pub struct Object<'data> {
    data: &'data [u8],
    machine: u16,
    sections: Vec<Section<'data>>,
    programs: Vec<ProgramSection<'data>>,
    maps: Vec<MapSymbol<'data>>,
    data_symbols: Vec<DataSymbol<'data>>,
    map_relocations: Vec<Relocation<'data>>,
    license: Option<&'data str>,
}

/// Any section of the object, as the section header describes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Section<'data> {
    /// ELF section index.
    pub index: usize,
    /// Section name.
    pub name: &'data str,
    /// `sh_type` (`SHT_PROGBITS`, `SHT_NOBITS`, ...).
    pub sh_type: u32,
    /// `sh_flags` (`SHF_ALLOC`, `SHF_WRITE`, `SHF_EXECINSTR`, ...).
    pub flags: u64,
    /// Size in bytes (for `SHT_NOBITS`, the size in memory).
    pub size: u64,
    /// File contents (empty for `SHT_NOBITS`).
    pub data: &'data [u8],
}

impl Section<'_> {
    /// Whether the section holds instructions (`SHF_EXECINSTR`).
    pub fn is_executable(&self) -> bool {
        self.flags & u64::from(elf::SHF_EXECINSTR) != 0
    }

    /// Whether the section is loaded (`SHF_ALLOC`): code and global data.
    pub fn is_alloc(&self) -> bool {
        self.flags & u64::from(elf::SHF_ALLOC) != 0
    }

    /// Whether the section is writable (`SHF_WRITE`: `.data`, `.bss`).
    pub fn is_writable(&self) -> bool {
        self.flags & u64::from(elf::SHF_WRITE) != 0
    }
}

/// An executable section holding instructions.
#[derive(Clone, Debug)]
pub struct ProgramSection<'data> {
    /// ELF section index.
    pub index: usize,
    /// Section name (`xdp`, `socket/1`, `.text`, ...).
    pub name: &'data str,
    /// The instruction bytes (a multiple of 8, never empty).
    pub data: &'data [u8],
    /// Function symbols, sorted by offset.
    pub functions: Vec<Function<'data>>,
    /// Local labels (`LBB0_3`), sorted by offset.
    pub labels: Vec<Label<'data>>,
    /// Relocations applying to this section, sorted by offset.
    pub relocations: Vec<Relocation<'data>>,
}

/// A program of the object: a function, or a whole section that has no
/// function symbols (see [`Object::entry_points`]).
#[derive(Clone, Copy, Debug)]
pub struct EntryPoint<'a, 'data> {
    /// The section holding it.
    pub section: &'a ProgramSection<'data>,
    /// The function, if the section has function symbols.
    pub function: Option<&'a Function<'data>>,
}

impl<'data> EntryPoint<'_, 'data> {
    /// The program's name: the function's, else the section's.
    pub fn name(&self) -> &'data str {
        self.function.map_or(self.section.name, |f| f.name)
    }

    /// The first slot of the program in its section.
    pub fn start(&self) -> Pc {
        self.function.map_or(Pc(0), |f| f.start())
    }
}

/// A function symbol in a program section.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Function<'data> {
    /// Symbol name.
    pub name: &'data str,
    /// Byte offset in the section (a multiple of 8).
    pub offset: u64,
    /// Size in bytes; for symbols without a size, up to the next function
    /// or the end of the section.
    pub size: u64,
    /// Global (or weak) binding: a program entry point or a global
    /// subprogram; local functions are static subprograms.
    pub global: bool,
}

impl Function<'_> {
    /// The first instruction slot.
    pub fn start(&self) -> Pc {
        Pc((self.offset / 8) as usize)
    }

    /// Number of instruction slots.
    pub fn slot_count(&self) -> usize {
        (self.size / 8) as usize
    }
}

/// A local label symbol (a jump target that clang kept in the symbol table).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Label<'data> {
    /// Symbol name.
    pub name: &'data str,
    /// Byte offset in the section.
    pub offset: u64,
}

/// A BPF relocation type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RelocKind {
    /// `R_BPF_64_64`: the 64-bit immediate of an `lddw` (maps, global data).
    #[doc(alias = "R_BPF_64_64")]
    Imm64,
    /// `R_BPF_64_ABS64`: a 64-bit data word.
    #[doc(alias = "R_BPF_64_ABS64")]
    Abs64,
    /// `R_BPF_64_ABS32`: a 32-bit data word.
    #[doc(alias = "R_BPF_64_ABS32")]
    Abs32,
    /// `R_BPF_64_NODYLD32`: a 32-bit word not resolved at load time.
    #[doc(alias = "R_BPF_64_NODYLD32")]
    NoDyld32,
    /// `R_BPF_NONE` (0): written by old toolchains (with `EM_NONE`
    /// objects) for map references; loaders of the time relocated every
    /// `lddw` regardless of the type.
    #[doc(alias = "R_BPF_NONE")]
    None,
    /// `R_BPF_64_32`: the immediate of a call (bpf-to-bpf or kfunc).
    #[doc(alias = "R_BPF_64_32")]
    Call32,
    /// Any other type number.
    Other(u32),
}

impl RelocKind {
    fn from_raw(t: u32) -> RelocKind {
        match t {
            0 => RelocKind::None,
            1 => RelocKind::Imm64,
            2 => RelocKind::Abs64,
            3 => RelocKind::Abs32,
            4 => RelocKind::NoDyld32,
            10 => RelocKind::Call32,
            t => RelocKind::Other(t),
        }
    }
}

/// What a relocation refers to, classified by the section of its symbol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RelocTarget<'data> {
    /// A map definition symbol (in `maps`, `maps/*` or `.maps`).
    Map {
        /// The map's symbol name.
        name: &'data str,
    },
    /// Code: a function or a section symbol in a program section.
    Code {
        /// ELF index of the program section.
        section: usize,
        /// The symbol's byte offset in that section.
        offset: u64,
    },
    /// Global data (`.data`, `.rodata*`, `.bss`, ...): a variable or the
    /// section itself. The address is `offset` plus the `lddw`'s own
    /// immediate (clang's implicit addend for section symbols).
    Data {
        /// Section name.
        section: &'data str,
        /// The symbol's byte offset in that section.
        offset: u64,
    },
    /// An undefined symbol (an `extern` variable or kfunc).
    Extern,
    /// Anything else (absolute or common symbols, non-allocated sections).
    Other,
}

/// A relocation applying to an instruction of a program section.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Relocation<'data> {
    /// Byte offset in the section (a multiple of 8).
    pub offset: u64,
    /// The relocation type.
    pub kind: RelocKind,
    /// The symbol name; for section symbols, the section name.
    pub symbol: &'data str,
    /// What the symbol refers to.
    pub target: RelocTarget<'data>,
    /// The explicit addend of a `RELA` relocation (`None` for `REL`,
    /// whose addend is the instruction's immediate).
    pub addend: Option<i64>,
    /// ELF index of the symbol's section (`None` for undefined, absolute
    /// and common symbols).
    pub symbol_section: Option<usize>,
    /// The symbol's value (its byte offset in its section).
    pub symbol_value: u64,
    /// Whether the symbol is a section symbol (`STT_SECTION`), whose
    /// relocations carry the offset in the instruction (clang's implicit
    /// addend).
    pub section_symbol: bool,
}

impl Relocation<'_> {
    /// The instruction slot the relocation applies to.
    pub fn slot(&self) -> Pc {
        Pc((self.offset / 8) as usize)
    }

    /// For a call relocation to code, the slot called in the target
    /// section: the symbol's slot plus `imm + 1`, `imm` being the call
    /// instruction's immediate (`-1` for calls to function symbols, the
    /// offset within the section for calls through a section symbol).
    pub fn call_target(&self, imm: i32) -> Option<(usize, Pc)> {
        match self.target {
            RelocTarget::Code { section, offset } => {
                let slot = (offset / 8) as i64 + imm as i64 + 1;
                usize::try_from(slot).ok().map(|s| (section, Pc(s)))
            }
            _ => None,
        }
    }
}

/// A variable symbol in a data section (`.data`, `.rodata`, `.bss`, ...).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DataSymbol<'data> {
    /// Symbol name.
    pub name: &'data str,
    /// ELF index of its section.
    pub section_index: usize,
    /// Byte offset in the section.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Where a map is defined.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapKind {
    /// A `struct bpf_map_def` in a `maps` or `maps/*` section.
    Legacy,
    /// A BTF-described map in `.maps`.
    Btf,
}

/// A map symbol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MapSymbol<'data> {
    /// Symbol name.
    pub name: &'data str,
    /// Name of the section defining it.
    pub section: &'data str,
    /// ELF section index.
    pub section_index: usize,
    /// Byte offset in the section.
    pub offset: u64,
    /// Size in bytes (from the symbol, or up to the next map symbol).
    pub size: u64,
    /// How the map is defined.
    pub kind: MapKind,
    /// The definition bytes (empty where the section has no file data).
    pub data: &'data [u8],
}

/// The fields of a legacy `struct bpf_map_def` (libbpf's five `u32`s; the
/// kernel samples' loaders appended more, kept in `extra`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LegacyMapDef<'data> {
    /// `BPF_MAP_TYPE_*` number.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries.
    pub max_entries: u32,
    /// `BPF_F_*` flags (0 when the definition has only four fields).
    pub map_flags: u32,
    /// Bytes after the fields above (`inner_map_idx`, `numa_node`, `id`,
    /// `pinning`, depending on the loader the object was written for).
    pub extra: &'data [u8],
}

impl<'data> MapSymbol<'data> {
    /// Reads a legacy definition: `None` for BTF maps and for definitions
    /// shorter than four fields.
    pub fn legacy_def(&self) -> Option<LegacyMapDef<'data>> {
        if self.kind != MapKind::Legacy || self.data.len() < 16 {
            return None;
        }
        let word = |i: usize| {
            self.data
                .get(i * 4..i * 4 + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        Some(LegacyMapDef {
            map_type: word(0)?,
            key_size: word(1)?,
            value_size: word(2)?,
            max_entries: word(3)?,
            map_flags: word(4).unwrap_or(0),
            extra: self.data.get(20..).unwrap_or(&[]),
        })
    }
}

fn is_map_section(name: &str) -> Option<MapKind> {
    if name == ".maps" {
        Some(MapKind::Btf)
    } else if name == "maps" || name.starts_with("maps/") {
        Some(MapKind::Legacy)
    } else {
        None
    }
}

fn utf8(bytes: &[u8], what: impl FnOnce() -> String) -> Result<&str, ElfError> {
    std::str::from_utf8(bytes).map_err(|_| ElfError::BadName { what: what() })
}

/// Per-section facts gathered before symbols are read.
struct SecInfo<'data> {
    name: &'data str,
    flags: u64,
    sh_type: u32,
    size: u64,
    data: &'data [u8],
}

impl<'data> Object<'data> {
    /// Parses an object. Fails on anything that is not a readable 64-bit
    /// little-endian BPF ELF object.
    pub fn parse(data: &'data [u8]) -> Result<Object<'data>, ElfError> {
        if data.len() < 16 || data[..4] != elf::ELFMAG {
            return Err(ElfError::NotElf);
        }
        if data[4] != elf::ELFCLASS64 {
            return Err(ElfError::Unsupported { what: "32-bit ELF" });
        }
        if data[5] != elf::ELFDATA2LSB {
            return Err(ElfError::Unsupported {
                what: "big-endian ELF",
            });
        }
        let header = FileHeader64::<LE>::parse(data).map_err(ElfError::malformed("ELF header"))?;
        let machine = header.e_machine(LE);
        if machine != elf::EM_BPF && machine != elf::EM_NONE {
            return Err(ElfError::NotBpf { machine });
        }
        let sections: SectionTable<'data, FileHeader64<LE>> = header
            .sections(LE, data)
            .map_err(ElfError::malformed("section table"))?;
        let symbols: SymbolTable<'data, FileHeader64<LE>> = sections
            .symbols(LE, data, elf::SHT_SYMTAB)
            .map_err(ElfError::malformed("symbol table"))?;

        let mut infos: Vec<SecInfo<'data>> = Vec::with_capacity(sections.len());
        for (i, sh) in sections.enumerate() {
            let name_bytes = sections
                .section_name(LE, sh)
                .map_err(ElfError::malformed(format!("name of section {}", i.0)))?;
            let name = utf8(name_bytes, || format!("section {}", i.0))?;
            let sh_type = sh.sh_type(LE);
            let section_data = if sh_type == elf::SHT_NOBITS {
                &[][..]
            } else {
                sh.data(LE, data)
                    .map_err(ElfError::malformed(format!("data of section '{name}'")))?
            };
            infos.push(SecInfo {
                name,
                flags: sh.sh_flags(LE),
                sh_type,
                size: sh.sh_size(LE),
                data: section_data,
            });
        }

        let mut obj = Object {
            data,
            machine,
            sections: infos
                .iter()
                .enumerate()
                .map(|(index, s)| Section {
                    index,
                    name: s.name,
                    sh_type: s.sh_type,
                    flags: s.flags,
                    size: s.size,
                    data: s.data,
                })
                .collect(),
            programs: Vec::new(),
            maps: Vec::new(),
            map_relocations: Vec::new(),
            data_symbols: Vec::new(),
            license: None,
        };

        for (i, s) in infos.iter().enumerate() {
            if s.name == "license" {
                let end = s.data.iter().position(|&b| b == 0).unwrap_or(s.data.len());
                obj.license = Some(utf8(&s.data[..end], || "license".to_string())?);
            }
            let exec = s.flags & u64::from(elf::SHF_EXECINSTR) != 0;
            if exec && s.sh_type == elf::SHT_PROGBITS && !s.data.is_empty() {
                if s.data.len() % 8 != 0 {
                    return Err(ElfError::BadProgramSize {
                        section: s.name.to_string(),
                        size: s.size,
                    });
                }
                obj.programs.push(ProgramSection {
                    index: i,
                    name: s.name,
                    data: s.data,
                    functions: Vec::new(),
                    labels: Vec::new(),
                    relocations: Vec::new(),
                });
            }
        }

        obj.read_symbols(&symbols, &infos)?;
        obj.read_relocations(&sections, &symbols, &infos)?;
        Ok(obj)
    }

    fn program_mut(&mut self, index: usize) -> Option<&mut ProgramSection<'data>> {
        self.programs.iter_mut().find(|p| p.index == index)
    }

    fn read_symbols(
        &mut self,
        symbols: &SymbolTable<'data, FileHeader64<LE>>,
        infos: &[SecInfo<'data>],
    ) -> Result<(), ElfError> {
        for (idx, sym) in symbols.enumerate() {
            let Some(sec) = symbol_section(symbols, sym, idx)? else {
                continue;
            };
            let Some(info) = infos.get(sec) else {
                continue;
            };
            let st_type = sym.st_type();
            if st_type == elf::STT_SECTION || st_type == elf::STT_FILE {
                continue;
            }
            let name = symbol_name(symbols, sym, idx)?;
            if name.is_empty() {
                continue;
            }
            let value = sym.st_value(LE);
            let size = sym.st_size(LE);
            let global = sym.st_bind() != elf::STB_LOCAL;
            if let Some(kind) = is_map_section(info.name) {
                let data = usize::try_from(value)
                    .ok()
                    .and_then(|start| {
                        let end = start.checked_add(usize::try_from(size).ok()?)?;
                        info.data.get(start..end)
                    })
                    .unwrap_or(&[]);
                self.maps.push(MapSymbol {
                    name,
                    section: info.name,
                    section_index: sec,
                    offset: value,
                    size,
                    kind,
                    data,
                });
                continue;
            }
            let Some(prog) = self.program_mut(sec) else {
                if st_type == elf::STT_OBJECT || st_type == elf::STT_NOTYPE {
                    self.data_symbols.push(DataSymbol {
                        name,
                        section_index: sec,
                        offset: value,
                        size,
                    });
                }
                continue;
            };
            let is_func = st_type == elf::STT_FUNC || (st_type == elf::STT_NOTYPE && global);
            if is_func {
                let len = prog.data.len() as u64;
                if value % 8 != 0 || value >= len || size > len - value {
                    return Err(ElfError::SymbolOutOfRange {
                        name: name.to_string(),
                        section: prog.name.to_string(),
                        offset: value,
                    });
                }
                prog.functions.push(Function {
                    name,
                    offset: value,
                    size,
                    global,
                });
            } else if st_type == elf::STT_NOTYPE && value <= prog.data.len() as u64 {
                prog.labels.push(Label {
                    name,
                    offset: value,
                });
            }
        }
        for prog in &mut self.programs {
            prog.functions.sort_by_key(|f| (f.offset, f.name));
            prog.functions.dedup_by_key(|f| f.offset);
            let len = prog.data.len() as u64;
            let starts: Vec<u64> = prog.functions.iter().map(|f| f.offset).collect();
            for (i, f) in prog.functions.iter_mut().enumerate() {
                if f.size == 0 {
                    let next = starts.get(i + 1).copied().unwrap_or(len);
                    f.size = next - f.offset;
                }
            }
            prog.labels.sort_by_key(|l| (l.offset, l.name));
        }
        // Map symbols without a size (old objects) extend to the next one.
        self.maps.sort_by_key(|m| (m.section_index, m.offset));
        let ends: Vec<(usize, u64)> = self
            .maps
            .iter()
            .map(|m| (m.section_index, m.offset))
            .collect();
        for (i, m) in self.maps.iter_mut().enumerate() {
            if m.size == 0 && m.kind == MapKind::Legacy {
                let sec_len = infos[m.section_index].data.len() as u64;
                let next = ends
                    .get(i + 1)
                    .filter(|(s, _)| *s == m.section_index)
                    .map(|(_, o)| *o)
                    .unwrap_or(sec_len);
                m.size = next.saturating_sub(m.offset);
                let start = m.offset.min(sec_len) as usize;
                let end = (m.offset.saturating_add(m.size)).min(sec_len) as usize;
                m.data = &infos[m.section_index].data[start..end];
            }
        }
        Ok(())
    }

    fn read_relocations(
        &mut self,
        sections: &SectionTable<'data, FileHeader64<LE>>,
        symbols: &SymbolTable<'data, FileHeader64<LE>>,
        infos: &[SecInfo<'data>],
    ) -> Result<(), ElfError> {
        for (i, sh) in sections.enumerate() {
            // (offset, symbol, type, explicit addend): clang writes REL;
            // some old toolchains (the corpus' ovs datapath) wrote RELA.
            let entries: Vec<(u64, u32, u32, Option<i64>)> = if let Some((rels, _)) = sh
                .rel(LE, self.data)
                .map_err(ElfError::malformed(format!("relocation section {}", i.0)))?
            {
                rels.iter()
                    .map(|r| (r.r_offset.get(LE), r.r_sym(LE), r.r_type(LE), None))
                    .collect()
            } else if let Some((relas, _)) = sh
                .rela(LE, self.data)
                .map_err(ElfError::malformed(format!("relocation section {}", i.0)))?
            {
                relas
                    .iter()
                    .map(|r| {
                        (
                            r.r_offset.get(LE),
                            r.r_sym(LE, false),
                            r.r_type(LE, false),
                            Some(r.r_addend(LE)),
                        )
                    })
                    .collect()
            } else {
                continue;
            };
            let target_index = sh.sh_info(LE) as usize;
            // Relocations of `.maps` fill the `values` slots of prog
            // arrays and maps of maps (libbpf's `__array(values, ...)`).
            let map_section = infos
                .get(target_index)
                .filter(|i| is_map_section(i.name) == Some(MapKind::Btf));
            let (sec_name, sec_len) = match (self.program_by_index(target_index), map_section) {
                (Some(p), _) => (p.name, p.data.len() as u64),
                (None, Some(info)) => (info.name, info.data.len() as u64),
                (None, None) => continue,
            };
            let mut out = Vec::new();
            for (offset, r_sym, r_type, addend) in entries {
                if offset % 8 != 0 || offset >= sec_len {
                    return Err(ElfError::RelocationOutOfRange {
                        section: sec_name.to_string(),
                        offset,
                    });
                }
                let bad_symbol = || ElfError::BadRelocationSymbol {
                    section: sec_name.to_string(),
                    offset,
                    symbol: r_sym,
                };
                let sym_index = SymbolIndex(r_sym as usize);
                let sym = symbols.symbol(sym_index).map_err(|_| bad_symbol())?;
                let sec = symbol_section(symbols, sym, sym_index)?;
                let value = sym.st_value(LE);
                let mut name = symbol_name(symbols, sym, sym_index)?;
                let section_symbol = sym.st_type() == elf::STT_SECTION;
                if section_symbol {
                    name = sec.and_then(|s| infos.get(s)).map_or("", |s| s.name);
                }
                let target = match sec.and_then(|s| infos.get(s).map(|info| (s, info))) {
                    None if sym.is_undefined(LE) => RelocTarget::Extern,
                    None => RelocTarget::Other,
                    Some((_, info)) if is_map_section(info.name).is_some() => {
                        RelocTarget::Map { name }
                    }
                    Some((s, info)) if info.flags & u64::from(elf::SHF_EXECINSTR) != 0 => {
                        RelocTarget::Code {
                            section: s,
                            offset: value,
                        }
                    }
                    Some((_, info)) if info.flags & u64::from(elf::SHF_ALLOC) != 0 => {
                        RelocTarget::Data {
                            section: info.name,
                            offset: value,
                        }
                    }
                    Some(_) => RelocTarget::Other,
                };
                out.push(Relocation {
                    offset,
                    kind: RelocKind::from_raw(r_type),
                    symbol: name,
                    target,
                    addend,
                    symbol_section: sec,
                    symbol_value: value,
                    section_symbol,
                });
            }
            out.sort_by_key(|r| r.offset);
            if let Some(prog) = self.programs.iter_mut().find(|p| p.index == target_index) {
                prog.relocations.extend(out);
                prog.relocations.sort_by_key(|r| r.offset);
            } else {
                self.map_relocations.extend(out);
            }
        }
        Ok(())
    }

    /// The raw bytes of the object.
    pub fn data(&self) -> &'data [u8] {
        self.data
    }

    /// The ELF `e_machine` (`EM_BPF`, or 0 for some old objects).
    pub fn machine(&self) -> u16 {
        self.machine
    }

    /// The program sections, in section-header order.
    pub fn programs(&self) -> &[ProgramSection<'data>] {
        &self.programs
    }

    /// The programs a loader would load: every global function of every
    /// program section other than `.text` (a section without function
    /// symbols is one program named after the section); `.text` functions
    /// are subprograms, unless the object has no other program section, in
    /// which case its global functions are the programs. This is the rule
    /// libbpf applies to `SEC()` functions, and it names the programs of
    /// the corpus' `kernel-verdicts.jsonl` exactly.
    pub fn entry_points(&self) -> Vec<EntryPoint<'_, 'data>> {
        let only_text = self.programs.iter().all(|p| p.name == ".text");
        let mut out = Vec::new();
        for sec in &self.programs {
            if sec.name == ".text" && !only_text {
                continue;
            }
            let globals: Vec<&Function<'data>> =
                sec.functions.iter().filter(|f| f.global).collect();
            if globals.is_empty() {
                out.push(EntryPoint {
                    section: sec,
                    function: sec.function_at(0),
                });
            }
            out.extend(globals.into_iter().map(|f| EntryPoint {
                section: sec,
                function: Some(f),
            }));
        }
        out
    }

    /// The program section with this name.
    pub fn program_section(&self, name: &str) -> Option<&ProgramSection<'data>> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The program section with this ELF index.
    pub fn program_by_index(&self, index: usize) -> Option<&ProgramSection<'data>> {
        self.programs.iter().find(|p| p.index == index)
    }

    /// The function with this symbol name, with its section.
    pub fn function(&self, name: &str) -> Option<(&ProgramSection<'data>, &Function<'data>)> {
        self.programs
            .iter()
            .find_map(|p| p.functions.iter().find(|f| f.name == name).map(|f| (p, f)))
    }

    /// Map symbols, ordered by section and offset.
    pub fn maps(&self) -> &[MapSymbol<'data>] {
        &self.maps
    }

    /// Relocations of the BTF `.maps` section (the `values` initialisers
    /// of prog arrays and maps of maps), sorted by offset.
    pub fn map_relocations(&self) -> &[Relocation<'data>] {
        &self.map_relocations
    }

    /// Named symbols of data sections other than map sections (global
    /// variables), in symbol table order.
    pub fn data_symbols(&self) -> &[DataSymbol<'data>] {
        &self.data_symbols
    }

    /// The map symbol with this name.
    pub fn map(&self, name: &str) -> Option<&MapSymbol<'data>> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// The `license` section's string, if present.
    pub fn license(&self) -> Option<&'data str> {
        self.license
    }

    /// The name of the section with this ELF index.
    pub fn section_name(&self, index: usize) -> Option<&'data str> {
        self.sections.get(index).map(|s| s.name)
    }

    /// Every section, indexed by ELF section index (index 0 is the null
    /// section).
    pub fn sections(&self) -> &[Section<'data>] {
        &self.sections
    }

    /// The first section with this name (`.BTF`, `.rodata`, ...).
    pub fn section_by_name(&self, name: &str) -> Option<&Section<'data>> {
        self.sections.iter().find(|s| s.name == name)
    }
}

impl<'data> ProgramSection<'data> {
    /// Number of instruction slots.
    pub fn slot_count(&self) -> usize {
        self.data.len() / 8
    }

    /// Decodes the whole section.
    pub fn decode(&self) -> Result<Program, DecodeError> {
        Program::decode(self.data)
    }

    /// The bytes of one function.
    pub fn function_data(&self, f: &Function<'_>) -> &'data [u8] {
        let start = (f.offset as usize).min(self.data.len());
        let end = (f.offset.saturating_add(f.size) as usize).min(self.data.len());
        &self.data[start..end]
    }

    /// The function starting exactly at this byte offset.
    pub fn function_at(&self, offset: u64) -> Option<&Function<'data>> {
        self.functions.iter().find(|f| f.offset == offset)
    }

    /// The function containing this byte offset.
    pub fn function_containing(&self, offset: u64) -> Option<&Function<'data>> {
        self.functions
            .iter()
            .find(|f| offset >= f.offset && offset < f.offset + f.size)
    }

    /// The relocation applying to the instruction at `slot`.
    pub fn relocation_at(&self, slot: Pc) -> Option<&Relocation<'data>> {
        let off = slot.0 as u64 * 8;
        self.relocations
            .binary_search_by_key(&off, |r| r.offset)
            .ok()
            .map(|i| &self.relocations[i])
    }

    /// The first label at this byte offset.
    pub fn label_at(&self, offset: u64) -> Option<&Label<'data>> {
        self.labels.iter().find(|l| l.offset == offset)
    }
}

fn symbol_section(
    symbols: &SymbolTable<'_, FileHeader64<LE>>,
    sym: &Sym64<LE>,
    idx: SymbolIndex,
) -> Result<Option<usize>, ElfError> {
    symbols
        .symbol_section(LE, sym, idx)
        .map(|s| s.map(|SectionIndex(i)| i))
        .map_err(ElfError::malformed(format!("section of symbol {}", idx.0)))
}

fn symbol_name<'data>(
    symbols: &SymbolTable<'data, FileHeader64<LE>>,
    sym: &Sym64<LE>,
    idx: SymbolIndex,
) -> Result<&'data str, ElfError> {
    let bytes = symbols
        .symbol_name(LE, sym)
        .map_err(ElfError::malformed(format!("name of symbol {}", idx.0)))?;
    utf8(bytes, || format!("symbol {}", idx.0))
}
