//! BPF Type Format: the `.BTF` section (types and strings) and the parts
//! of `.BTF.ext` a loader needs (function info, line info, CO-RE
//! relocation records).
//!
//! Layout facts are from the kernel's `Documentation/bpf/btf.rst` and
//! `include/uapi/linux/btf.h`: a header (`magic 0xeb9f`, version 1,
//! `hdr_len`, then offsets and lengths of the type and string sections,
//! relative to the end of the header); each type is a `struct btf_type`
//! (name offset, `info` = vlen in bits 0-15, kind in bits 24-28,
//! `kind_flag` in bit 31, then size or type) followed by kind-specific
//! data. Type ids count from 1 in section order; id 0 is `void`.
//!
//! Everything here owns its data (a [`Btf`] outlives the object bytes) and
//! every lookup is checked: malformed BTF gives [`BtfError`], and
//! cycles (`typedef a a`) stop at a fixed depth instead of looping.

use std::fmt::Write as _;
use thiserror::Error;

/// BTF type id (0 is `void`).
pub type TypeId = u32;

/// How deep type chains (typedef, const, arrays of arrays, nested
/// structs) are followed before the type is declared cyclic, as libbpf's
/// `MAX_RESOLVE_DEPTH`.
const MAX_DEPTH: usize = 32;

/// Why BTF could not be read or used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BtfError {
    /// The section is shorter than its header says, or a record runs past
    /// its end.
    #[error("{section}: truncated at byte {offset}")]
    Truncated {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// Where the missing bytes start.
        offset: usize,
    },
    /// Wrong magic number (big-endian BTF is not supported either).
    #[error("{section}: bad magic {magic:#06x}")]
    BadMagic {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// The value found.
        magic: u16,
    },
    /// A type kind this parser does not know.
    #[error("BTF type {id}: unknown kind {kind}")]
    UnknownKind {
        /// The type id.
        id: TypeId,
        /// The kind number.
        kind: u32,
    },
    /// A string offset outside the string section, or a string without
    /// its terminating NUL.
    #[error("BTF string offset {offset} is invalid")]
    BadString {
        /// The offset.
        offset: u32,
    },
    /// A reference to a type id that does not exist.
    #[error("BTF type id {id} does not exist")]
    BadTypeId {
        /// The id.
        id: TypeId,
    },
    /// A type chain that loops or nests deeper than 32 levels.
    #[error("BTF type {id} is cyclic or nested too deeply")]
    TooDeep {
        /// Where resolution started.
        id: TypeId,
    },
    /// A type that has no size (function, `void`, forward declaration).
    #[error("BTF type {id} ({name}) has no size")]
    NoSize {
        /// The type id.
        id: TypeId,
        /// Its printed name.
        name: String,
    },
    /// A record size below what the format requires.
    #[error("{section}: record size {size} is too small for {what}")]
    BadRecordSize {
        /// `.BTF.ext`.
        section: &'static str,
        /// Which records.
        what: &'static str,
        /// The size found.
        size: u32,
    },
}

/// Integer encoding bits of a `BTF_KIND_INT`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IntEncoding {
    /// `BTF_INT_SIGNED`.
    pub signed: bool,
    /// `BTF_INT_CHAR`.
    pub char: bool,
    /// `BTF_INT_BOOL`.
    pub bool: bool,
}

/// A member of a struct or union.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Member {
    /// Member name (empty for anonymous members).
    pub name: String,
    /// Member type.
    pub ty: TypeId,
    /// Offset from the start of the aggregate, in bits.
    pub bit_offset: u32,
    /// Bitfield width in bits (0: not a bitfield).
    pub bitfield_size: u32,
}

/// An enumerator of an enum (32- or 64-bit).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Enumerator {
    /// Name.
    pub name: String,
    /// Value, as the raw 64 bits (sign-extended for signed 32-bit enums).
    pub value: u64,
}

/// A function parameter of a `FUNC_PROTO`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Param {
    /// Name (often empty in prototypes).
    pub name: String,
    /// Type (0 for the `...` of variadic functions).
    pub ty: TypeId,
}

/// A variable of a `DATASEC`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VarSecInfo {
    /// The `VAR` (or `FUNC` for extern functions) type id.
    pub ty: TypeId,
    /// Offset in the section, in bytes.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// What a BTF type is.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BtfKind {
    /// Id 0.
    Void,
    /// `BTF_KIND_INT`.
    Int {
        /// Size in bytes.
        size: u32,
        /// Signedness, char, bool.
        encoding: IntEncoding,
        /// Bit offset of the value inside the storage.
        offset: u8,
        /// Number of value bits.
        bits: u8,
    },
    /// `BTF_KIND_PTR`.
    Ptr {
        /// Pointee.
        target: TypeId,
    },
    /// `BTF_KIND_ARRAY`.
    Array {
        /// Element type.
        elem: TypeId,
        /// Index type.
        index: TypeId,
        /// Number of elements.
        len: u32,
    },
    /// `BTF_KIND_STRUCT`.
    Struct {
        /// Size in bytes.
        size: u32,
        /// Members.
        members: Vec<Member>,
    },
    /// `BTF_KIND_UNION`.
    Union {
        /// Size in bytes.
        size: u32,
        /// Members.
        members: Vec<Member>,
    },
    /// `BTF_KIND_ENUM` (32-bit values).
    Enum {
        /// Size in bytes.
        size: u32,
        /// Signed values (`kind_flag`).
        signed: bool,
        /// Enumerators.
        values: Vec<Enumerator>,
    },
    /// `BTF_KIND_FWD`.
    Fwd {
        /// `union` rather than `struct`.
        union: bool,
    },
    /// `BTF_KIND_TYPEDEF`.
    Typedef {
        /// Aliased type.
        target: TypeId,
    },
    /// `BTF_KIND_VOLATILE`.
    Volatile {
        /// Qualified type.
        target: TypeId,
    },
    /// `BTF_KIND_CONST`.
    Const {
        /// Qualified type.
        target: TypeId,
    },
    /// `BTF_KIND_RESTRICT`.
    Restrict {
        /// Qualified type.
        target: TypeId,
    },
    /// `BTF_KIND_FUNC`.
    Func {
        /// The `FUNC_PROTO`.
        proto: TypeId,
        /// 0 static, 1 global, 2 extern.
        linkage: u32,
    },
    /// `BTF_KIND_FUNC_PROTO`.
    FuncProto {
        /// Return type.
        ret: TypeId,
        /// Parameters.
        params: Vec<Param>,
    },
    /// `BTF_KIND_VAR`.
    Var {
        /// Variable type.
        ty: TypeId,
        /// 0 static, 1 global, 2 extern.
        linkage: u32,
    },
    /// `BTF_KIND_DATASEC`.
    Datasec {
        /// Section size (0 in objects for some sections; the loader
        /// takes the ELF section's).
        size: u32,
        /// Variables.
        vars: Vec<VarSecInfo>,
    },
    /// `BTF_KIND_FLOAT`.
    Float {
        /// Size in bytes.
        size: u32,
    },
    /// `BTF_KIND_DECL_TAG`.
    DeclTag {
        /// Tagged type, variable or function.
        target: TypeId,
        /// Member or parameter index, -1 for the declaration itself.
        component_idx: i32,
    },
    /// `BTF_KIND_TYPE_TAG`.
    TypeTag {
        /// Tagged type.
        target: TypeId,
    },
    /// `BTF_KIND_ENUM64`.
    Enum64 {
        /// Size in bytes.
        size: u32,
        /// Signed values (`kind_flag`).
        signed: bool,
        /// Enumerators.
        values: Vec<Enumerator>,
    },
}

/// One BTF type: its name and what it is.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BtfType {
    /// The name (empty for anonymous types); for tags, the tag string.
    pub name: String,
    /// The kind and its data.
    pub kind: BtfKind,
}

/// A line of C source attached to an instruction (`.BTF.ext` line info).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LineInfo {
    /// Instruction slot, relative to the start of the section in the
    /// object; relative to the program in a linked
    /// [`LoadedProgram`](crate::LoadedProgram).
    pub insn: usize,
    /// Source file name.
    pub file: String,
    /// The source line's text.
    pub line: String,
    /// Line number.
    pub line_num: u32,
    /// Column.
    pub column: u32,
}

/// A function's BTF type (`.BTF.ext` function info).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FuncInfo {
    /// Instruction slot where the function starts (section-relative in
    /// the object, program-relative once linked).
    pub insn: usize,
    /// The `FUNC` type id.
    pub type_id: TypeId,
}

/// What a CO-RE relocation asks for (`enum bpf_core_relo_kind`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CoreReloKind {
    /// Field byte offset (0).
    FieldByteOffset,
    /// Field byte size (1).
    FieldByteSize,
    /// Field existence (2).
    FieldExists,
    /// Field signedness (3).
    FieldSigned,
    /// Bitfield left shift (4).
    FieldLshiftU64,
    /// Bitfield right shift (5).
    FieldRshiftU64,
    /// Local type id (6).
    TypeIdLocal,
    /// Target type id (7).
    TypeIdTarget,
    /// Type existence (8).
    TypeExists,
    /// Type size (9).
    TypeSize,
    /// Enumerator existence (10).
    EnumvalExists,
    /// Enumerator value (11).
    EnumvalValue,
    /// Type match (12).
    TypeMatches,
    /// Any other number.
    Other(u32),
}

impl CoreReloKind {
    fn from_raw(k: u32) -> CoreReloKind {
        use CoreReloKind::*;
        match k {
            0 => FieldByteOffset,
            1 => FieldByteSize,
            2 => FieldExists,
            3 => FieldSigned,
            4 => FieldLshiftU64,
            5 => FieldRshiftU64,
            6 => TypeIdLocal,
            7 => TypeIdTarget,
            8 => TypeExists,
            9 => TypeSize,
            10 => EnumvalExists,
            11 => EnumvalValue,
            12 => TypeMatches,
            k => Other(k),
        }
    }

    /// libbpf's name for the kind (`byte_off`, `type_exists`, ...).
    pub fn name(self) -> &'static str {
        use CoreReloKind::*;
        match self {
            FieldByteOffset => "byte_off",
            FieldByteSize => "byte_sz",
            FieldExists => "field_exists",
            FieldSigned => "signed",
            FieldLshiftU64 => "lshift_u64",
            FieldRshiftU64 => "rshift_u64",
            TypeIdLocal => "local_type_id",
            TypeIdTarget => "target_type_id",
            TypeExists => "type_exists",
            TypeSize => "type_size",
            EnumvalExists => "enumval_exists",
            EnumvalValue => "enumval_value",
            TypeMatches => "type_matches",
            Other(_) => "unknown",
        }
    }
}

/// A CO-RE relocation record (`struct bpf_core_relo`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CoreRelo {
    /// Instruction slot (section-relative).
    pub insn: usize,
    /// The local root type.
    pub type_id: TypeId,
    /// The access string (`0:1:2`, or an enumerator index).
    pub access: String,
    /// What is asked.
    pub kind: CoreReloKind,
}

/// `.BTF.ext` records of one program section.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SectionExt {
    /// Function info, in order.
    pub func_info: Vec<FuncInfo>,
    /// Line info, in order.
    pub line_info: Vec<LineInfo>,
    /// CO-RE relocations.
    pub core_relos: Vec<CoreRelo>,
}

/// Parsed BTF: the types of an object, owning their data.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Btf {
    types: Vec<BtfType>,
}

/// Little-endian reader over a byte slice with checked access.
struct Reader<'a> {
    data: &'a [u8],
    section: &'static str,
}

impl Reader<'_> {
    fn u32(&self, off: usize) -> Result<u32, BtfError> {
        off.checked_add(4)
            .and_then(|end| self.data.get(off..end))
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(BtfError::Truncated {
                section: self.section,
                offset: off,
            })
    }

    fn u16(&self, off: usize) -> Result<u16, BtfError> {
        off.checked_add(2)
            .and_then(|end| self.data.get(off..end))
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::Truncated {
                section: self.section,
                offset: off,
            })
    }
}

/// The string at `off` in a string section.
fn string_at(strings: &[u8], off: u32) -> Result<String, BtfError> {
    let bad = BtfError::BadString { offset: off };
    let rest = strings.get(off as usize..).ok_or(bad.clone())?;
    let end = rest.iter().position(|&b| b == 0).ok_or(bad)?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Header of `.BTF` or `.BTF.ext`: returns (header length, fields after
/// the common 8 bytes).
fn header(r: &Reader<'_>) -> Result<usize, BtfError> {
    let magic = r.u16(0)?;
    if magic != 0xeb9f {
        return Err(BtfError::BadMagic {
            section: r.section,
            magic,
        });
    }
    Ok(r.u32(4)? as usize)
}

/// A subslice `[start, start + len)` of `data`, or a truncation error.
fn sub<'a>(
    data: &'a [u8],
    start: usize,
    len: usize,
    section: &'static str,
) -> Result<&'a [u8], BtfError> {
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .ok_or(BtfError::Truncated {
            section,
            offset: start,
        })
}

impl Btf {
    /// Parses a `.BTF` section.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        const S: &str = ".BTF";
        let r = Reader { data, section: S };
        let hdr_len = header(&r)?;
        let type_off = r.u32(8)? as usize;
        let type_len = r.u32(12)? as usize;
        let str_off = r.u32(16)? as usize;
        let str_len = r.u32(20)? as usize;
        let body = data.get(hdr_len..).ok_or(BtfError::Truncated {
            section: S,
            offset: hdr_len,
        })?;
        let tdata = sub(body, type_off, type_len, S)?;
        let strings = sub(body, str_off, str_len, S)?;
        let str_at = |off: u32| string_at(strings, off);
        let t = Reader {
            data: tdata,
            section: S,
        };
        let mut types = vec![BtfType {
            name: String::new(),
            kind: BtfKind::Void,
        }];
        let mut pos = 0usize;
        while pos < tdata.len() {
            let id = types.len() as TypeId;
            let name = str_at(t.u32(pos)?)?;
            let info = t.u32(pos + 4)?;
            let size_or_type = t.u32(pos + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind_num = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            pos += 12;
            // Every record is read through `t`, which checks bounds; a
            // huge vlen fails at its first missing record.
            let kind = match kind_num {
                1 => {
                    let v = t.u32(pos)?;
                    pos += 4;
                    let enc = (v >> 24) & 0x0f;
                    BtfKind::Int {
                        size: size_or_type,
                        encoding: IntEncoding {
                            signed: enc & 1 != 0,
                            char: enc & 2 != 0,
                            bool: enc & 4 != 0,
                        },
                        offset: (v >> 16) as u8,
                        bits: v as u8,
                    }
                }
                2 => BtfKind::Ptr {
                    target: size_or_type,
                },
                3 => {
                    let k = BtfKind::Array {
                        elem: t.u32(pos)?,
                        index: t.u32(pos + 4)?,
                        len: t.u32(pos + 8)?,
                    };
                    pos += 12;
                    k
                }
                4 | 5 => {
                    let mut members = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        let off = t.u32(pos + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (off & 0xff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        members.push(Member {
                            name: str_at(t.u32(pos)?)?,
                            ty: t.u32(pos + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                        pos += 12;
                    }
                    if kind_num == 4 {
                        BtfKind::Struct {
                            size: size_or_type,
                            members,
                        }
                    } else {
                        BtfKind::Union {
                            size: size_or_type,
                            members,
                        }
                    }
                }
                6 => {
                    let mut values = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        let v = t.u32(pos + 4)?;
                        let value = if kind_flag {
                            v as i32 as i64 as u64
                        } else {
                            v as u64
                        };
                        values.push(Enumerator {
                            name: str_at(t.u32(pos)?)?,
                            value,
                        });
                        pos += 8;
                    }
                    BtfKind::Enum {
                        size: size_or_type,
                        signed: kind_flag,
                        values,
                    }
                }
                7 => BtfKind::Fwd { union: kind_flag },
                8 => BtfKind::Typedef {
                    target: size_or_type,
                },
                9 => BtfKind::Volatile {
                    target: size_or_type,
                },
                10 => BtfKind::Const {
                    target: size_or_type,
                },
                11 => BtfKind::Restrict {
                    target: size_or_type,
                },
                12 => BtfKind::Func {
                    proto: size_or_type,
                    linkage: vlen as u32,
                },
                13 => {
                    let mut params = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        params.push(Param {
                            name: str_at(t.u32(pos)?)?,
                            ty: t.u32(pos + 4)?,
                        });
                        pos += 8;
                    }
                    BtfKind::FuncProto {
                        ret: size_or_type,
                        params,
                    }
                }
                14 => {
                    let linkage = t.u32(pos)?;
                    pos += 4;
                    BtfKind::Var {
                        ty: size_or_type,
                        linkage,
                    }
                }
                15 => {
                    let mut vars = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        vars.push(VarSecInfo {
                            ty: t.u32(pos)?,
                            offset: t.u32(pos + 4)?,
                            size: t.u32(pos + 8)?,
                        });
                        pos += 12;
                    }
                    BtfKind::Datasec {
                        size: size_or_type,
                        vars,
                    }
                }
                16 => BtfKind::Float { size: size_or_type },
                17 => {
                    let c = t.u32(pos)? as i32;
                    pos += 4;
                    BtfKind::DeclTag {
                        target: size_or_type,
                        component_idx: c,
                    }
                }
                18 => BtfKind::TypeTag {
                    target: size_or_type,
                },
                19 => {
                    let mut values = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        let lo = t.u32(pos + 4)? as u64;
                        let hi = t.u32(pos + 8)? as u64;
                        values.push(Enumerator {
                            name: str_at(t.u32(pos)?)?,
                            value: hi << 32 | lo,
                        });
                        pos += 12;
                    }
                    BtfKind::Enum64 {
                        size: size_or_type,
                        signed: kind_flag,
                        values,
                    }
                }
                kind => return Err(BtfError::UnknownKind { id, kind }),
            };
            types.push(BtfType { name, kind });
        }
        let btf = Btf { types };
        btf.check_refs()?;
        Ok(btf)
    }

    /// Every type id a type refers to exists.
    fn check_refs(&self) -> Result<(), BtfError> {
        for t in &self.types {
            let mut refs: Vec<TypeId> = Vec::new();
            match &t.kind {
                BtfKind::Ptr { target }
                | BtfKind::Typedef { target }
                | BtfKind::Volatile { target }
                | BtfKind::Const { target }
                | BtfKind::Restrict { target }
                | BtfKind::TypeTag { target }
                | BtfKind::DeclTag { target, .. } => refs.push(*target),
                BtfKind::Array { elem, index, .. } => refs.extend([*elem, *index]),
                BtfKind::Struct { members, .. } | BtfKind::Union { members, .. } => {
                    refs.extend(members.iter().map(|m| m.ty))
                }
                BtfKind::Func { proto, .. } => refs.push(*proto),
                BtfKind::FuncProto { ret, params } => {
                    refs.push(*ret);
                    refs.extend(params.iter().map(|p| p.ty));
                }
                BtfKind::Var { ty, .. } => refs.push(*ty),
                BtfKind::Datasec { vars, .. } => refs.extend(vars.iter().map(|v| v.ty)),
                _ => {}
            }
            if let Some(&id) = refs.iter().find(|&&id| id as usize >= self.types.len()) {
                return Err(BtfError::BadTypeId { id });
            }
        }
        Ok(())
    }

    /// Fills in what objects leave to the loader in each `DATASEC` (as
    /// libbpf's `btf_fixup_datasec` does): the section size and each
    /// variable's offset, from the ELF section and symbols. `lookup`
    /// gives, for a section name, its size, and for (section, variable)
    /// the symbol's offset.
    pub(crate) fn fixup_datasecs(
        &mut self,
        section_size: impl Fn(&str) -> Option<u64>,
        var_offset: impl Fn(&str, &str) -> Option<u64>,
    ) {
        let names: Vec<String> = self.types.iter().map(|t| t.name.clone()).collect();
        for t in &mut self.types {
            let BtfKind::Datasec { size, vars } = &mut t.kind else {
                continue;
            };
            if let Some(s) = section_size(&t.name).and_then(|s| u32::try_from(s).ok()) {
                *size = s;
            }
            for v in vars.iter_mut() {
                let Some(var_name) = names.get(v.ty as usize) else {
                    continue;
                };
                if let Some(off) = var_offset(&t.name, var_name).and_then(|o| u32::try_from(o).ok())
                {
                    v.offset = off;
                }
            }
        }
    }

    /// Number of types, `void` included (ids are `0..len()`).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether there are no types besides `void`.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// The type with this id.
    pub fn get(&self, id: TypeId) -> Result<&BtfType, BtfError> {
        self.types
            .get(id as usize)
            .ok_or(BtfError::BadTypeId { id })
    }

    /// Every type with its id (`void` first).
    pub fn types(&self) -> impl Iterator<Item = (TypeId, &BtfType)> + '_ {
        self.types.iter().enumerate().map(|(i, t)| (i as TypeId, t))
    }

    /// The first type with this name and a kind accepted by `pred`.
    pub fn find(&self, name: &str, pred: impl Fn(&BtfKind) -> bool) -> Option<TypeId> {
        self.types()
            .find(|(_, t)| t.name == name && pred(&t.kind))
            .map(|(id, _)| id)
    }

    /// Follows typedefs, qualifiers (`const`, `volatile`, `restrict`) and
    /// type tags to the underlying type.
    pub fn resolve(&self, id: TypeId) -> Result<TypeId, BtfError> {
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            match self.get(cur)?.kind {
                BtfKind::Typedef { target }
                | BtfKind::Volatile { target }
                | BtfKind::Const { target }
                | BtfKind::Restrict { target }
                | BtfKind::TypeTag { target } => cur = target,
                _ => return Ok(cur),
            }
        }
        Err(BtfError::TooDeep { id })
    }

    /// Size in bytes of a type (through typedefs, qualifiers, variables;
    /// arrays multiply).
    pub fn size_of(&self, id: TypeId) -> Result<u32, BtfError> {
        self.size_at_depth(id, 0)
    }

    fn size_at_depth(&self, id: TypeId, depth: usize) -> Result<u32, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id });
        }
        let id = self.resolve(id)?;
        match &self.get(id)?.kind {
            BtfKind::Int { size, .. }
            | BtfKind::Struct { size, .. }
            | BtfKind::Union { size, .. }
            | BtfKind::Enum { size, .. }
            | BtfKind::Enum64 { size, .. }
            | BtfKind::Float { size }
            | BtfKind::Datasec { size, .. } => Ok(*size),
            BtfKind::Ptr { .. } => Ok(8),
            BtfKind::Array { elem, len, .. } => {
                let e = self.size_at_depth(*elem, depth + 1)?;
                e.checked_mul(*len).ok_or(BtfError::TooDeep { id })
            }
            BtfKind::Var { ty, .. } => self.size_at_depth(*ty, depth + 1),
            _ => Err(BtfError::NoSize {
                id,
                name: self.type_name(id),
            }),
        }
    }

    /// The C-like name of a type: `struct flow_key`, `__u32`, `char[16]`,
    /// `const int *`, `void`, `int (*)(void *)`. Never fails: invalid ids
    /// print as `<bad type N>`.
    pub fn type_name(&self, id: TypeId) -> String {
        let mut s = String::new();
        self.write_decl(id, String::new(), 0, &mut 4096, &mut s);
        s
    }

    /// Writes the declaration of `id` with declarator `decl` (C's inside-out
    /// syntax: `char[16]` is `char` with declarator `[16]`).
    fn write_decl(
        &self,
        id: TypeId,
        decl: String,
        depth: usize,
        budget: &mut u32,
        out: &mut String,
    ) {
        // A budget of visited types keeps wide, deep (malformed) graphs
        // from printing exponentially.
        if *budget == 0 {
            out.push_str("...");
            return;
        }
        *budget -= 1;
        let join = |base: &str, decl: &str| {
            if decl.is_empty() {
                base.to_string()
            } else if decl.starts_with('[') {
                format!("{base}{decl}")
            } else {
                format!("{base} {decl}")
            }
        };
        let Ok(t) = self.get(id) else {
            out.push_str(&join(&format!("<bad type {id}>"), &decl));
            return;
        };
        if depth > MAX_DEPTH {
            out.push_str(&join("<cyclic>", &decl));
            return;
        }
        let named = |prefix: &str| {
            if t.name.is_empty() {
                format!("{prefix}{{...}}")
            } else {
                format!("{prefix}{}", t.name)
            }
        };
        match &t.kind {
            BtfKind::Void => out.push_str(&join("void", &decl)),
            BtfKind::Int { .. } | BtfKind::Float { .. } | BtfKind::Typedef { .. } => {
                out.push_str(&join(&t.name, &decl))
            }
            BtfKind::Struct { .. } => out.push_str(&join(&named("struct "), &decl)),
            BtfKind::Union { .. } => out.push_str(&join(&named("union "), &decl)),
            BtfKind::Enum { .. } | BtfKind::Enum64 { .. } => {
                out.push_str(&join(&named("enum "), &decl))
            }
            BtfKind::Fwd { union } => {
                let p = if *union { "union " } else { "struct " };
                out.push_str(&join(&format!("{p}{}", t.name), &decl))
            }
            BtfKind::Ptr { target } => {
                self.write_decl(*target, format!("*{decl}"), depth + 1, budget, out)
            }
            BtfKind::Array { elem, len, .. } => {
                // A pointer to an array needs parentheses: `int (*)[4]`.
                let d = if decl.starts_with('*') {
                    format!("({decl})[{len}]")
                } else {
                    format!("{decl}[{len}]")
                };
                self.write_decl(*elem, d, depth + 1, budget, out)
            }
            BtfKind::Const { target } => {
                self.write_qualified("const", *target, decl, depth, budget, out)
            }
            BtfKind::Volatile { target } => {
                self.write_qualified("volatile", *target, decl, depth, budget, out)
            }
            BtfKind::Restrict { target } => {
                self.write_qualified("restrict", *target, decl, depth, budget, out)
            }
            BtfKind::TypeTag { target } => {
                let tag = format!("__attribute__((btf_type_tag(\"{}\")))", t.name);
                self.write_qualified(&tag, *target, decl, depth, budget, out)
            }
            BtfKind::FuncProto { ret, params } => {
                let mut ps: Vec<String> = params
                    .iter()
                    .map(|p| {
                        if p.ty == 0 {
                            "...".to_string()
                        } else {
                            let mut s = String::new();
                            self.write_decl(p.ty, String::new(), depth + 1, budget, &mut s);
                            s
                        }
                    })
                    .collect();
                if ps.is_empty() {
                    ps.push("void".into());
                }
                let d = if decl.starts_with('*') {
                    format!("({decl})")
                } else {
                    decl
                };
                self.write_decl(
                    *ret,
                    format!("{d}({})", ps.join(", ")),
                    depth + 1,
                    budget,
                    out,
                )
            }
            BtfKind::Func { proto, .. } => {
                let mut s = String::new();
                self.write_decl(*proto, t.name.clone(), depth + 1, budget, &mut s);
                out.push_str(&s)
            }
            BtfKind::Var { ty, .. } => self.write_decl(*ty, t.name.clone(), depth + 1, budget, out),
            BtfKind::Datasec { .. } => out.push_str(&join(&format!("SEC(\"{}\")", t.name), &decl)),
            BtfKind::DeclTag { target, .. } => {
                self.write_decl(*target, decl, depth + 1, budget, out);
                let _ = write!(out, " __attribute__((btf_decl_tag(\"{}\")))", t.name);
            }
        }
    }

    fn write_qualified(
        &self,
        q: &str,
        target: TypeId,
        decl: String,
        depth: usize,
        budget: &mut u32,
        out: &mut String,
    ) {
        // `const int` reads better than `int const`; for pointers the
        // qualifier belongs to the declarator (`int *const`).
        let ptr_like = matches!(
            self.get(target).map(|t| &t.kind),
            Ok(BtfKind::Ptr { .. }) | Ok(BtfKind::Array { .. })
        );
        if ptr_like {
            let d = if decl.is_empty() {
                q.to_string()
            } else {
                format!("{q} {decl}")
            };
            self.write_decl(target, d, depth + 1, budget, out)
        } else {
            out.push_str(q);
            out.push(' ');
            self.write_decl(target, decl, depth + 1, budget, out)
        }
    }

    /// Formats `bytes` as a value of type `id`, in the JSON-like style of
    /// `bpftool map dump` with BTF: integers in decimal, `char` arrays as
    /// strings, structs as `{"field": value, ...}`, arrays as `[...]`,
    /// enums by enumerator name, pointers in hex. Bytes missing at the end
    /// print as `<truncated>`.
    pub fn format_value(&self, id: TypeId, bytes: &[u8]) -> String {
        let mut out = String::new();
        self.fmt_value(id, bytes, 0, 0, &mut 65536, &mut out);
        out
    }

    fn fmt_value(
        &self,
        id: TypeId,
        bytes: &[u8],
        bit_off: u32,
        bits: u32,
        budget: &mut u32,
        out: &mut String,
    ) {
        if bits == 0 && bit_off == 0 && self.fmt_value_at(id, bytes, 0, budget, out) {
            return;
        }
        if bits != 0 || bit_off != 0 {
            // A bitfield (or a member at a bit offset): extract it.
            let v = extract_bits(bytes, bit_off, if bits == 0 { 64 } else { bits });
            match v {
                Some(v) => {
                    let signed = matches!(
                        self.resolve(id).and_then(|r| self.get(r)).map(|t| &t.kind),
                        Ok(BtfKind::Int { encoding, .. }) if encoding.signed
                    );
                    if signed && bits > 0 && bits < 64 && v >> (bits - 1) & 1 == 1 {
                        let _ = write!(out, "{}", (v | (!0u64 << bits)) as i64);
                    } else {
                        let _ = write!(out, "{v}");
                    }
                }
                None => out.push_str("<truncated>"),
            }
        }
    }

    /// Formats a byte-aligned value; false when nothing could be printed.
    fn fmt_value_at(
        &self,
        id: TypeId,
        bytes: &[u8],
        depth: usize,
        budget: &mut u32,
        out: &mut String,
    ) -> bool {
        if *budget == 0 {
            out.push_str("...");
            return true;
        }
        *budget -= 1;
        if depth > MAX_DEPTH {
            out.push_str("<cyclic>");
            return true;
        }
        let Ok(rid) = self.resolve(id) else {
            out.push_str("<cyclic>");
            return true;
        };
        let Ok(t) = self.get(rid) else {
            out.push_str("<bad type>");
            return true;
        };
        let int = |size: usize| -> Option<u64> {
            let b = bytes.get(..size)?;
            let mut v = [0u8; 8];
            v[..size.min(8)].copy_from_slice(&b[..size.min(8)]);
            Some(u64::from_le_bytes(v))
        };
        match &t.kind {
            BtfKind::Int {
                size,
                encoding,
                offset,
                bits,
            } => {
                let size = *size as usize;
                if size > 8 {
                    // __int128: hex, as bpftool does.
                    match bytes.get(..size) {
                        Some(b) => {
                            out.push_str("0x");
                            for x in b.iter().rev() {
                                let _ = write!(out, "{x:02x}");
                            }
                        }
                        None => out.push_str("<truncated>"),
                    }
                    return true;
                }
                let Some(raw) = int(size) else {
                    out.push_str("<truncated>");
                    return true;
                };
                let nbits = if *bits == 0 {
                    size as u32 * 8
                } else {
                    *bits as u32
                }
                .min(64);
                // The offset comes from the file: shift checked.
                let shifted = raw.checked_shr(u32::from(*offset)).unwrap_or(0);
                let v = if nbits >= 64 {
                    shifted
                } else {
                    shifted & ((1u64 << nbits) - 1)
                };
                if encoding.bool {
                    out.push_str(if v != 0 { "true" } else { "false" });
                } else if encoding.signed && nbits > 0 && nbits < 64 && v >> (nbits - 1) & 1 == 1 {
                    let _ = write!(out, "{}", (v | (!0u64 << nbits)) as i64);
                } else if encoding.signed {
                    let _ = write!(out, "{}", v as i64);
                } else {
                    let _ = write!(out, "{v}");
                }
                true
            }
            BtfKind::Ptr { .. } => {
                match int(8) {
                    Some(v) => {
                        let _ = write!(out, "{v:#x}");
                    }
                    None => out.push_str("<truncated>"),
                }
                true
            }
            BtfKind::Enum {
                size,
                signed,
                values,
            }
            | BtfKind::Enum64 {
                size,
                signed,
                values,
            } => {
                let size = (*size as usize).clamp(1, 8);
                let Some(mut v) = int(size) else {
                    out.push_str("<truncated>");
                    return true;
                };
                if *signed && size < 8 && v >> (size * 8 - 1) & 1 == 1 {
                    v |= !0u64 << (size * 8);
                }
                let mask = if size >= 8 {
                    !0
                } else {
                    (1u64 << (size * 8)) - 1
                };
                match values.iter().find(|e| e.value & mask == v & mask) {
                    Some(e) => {
                        let _ = write!(out, "\"{}\"", e.name);
                    }
                    None if *signed => {
                        let _ = write!(out, "{}", v as i64);
                    }
                    None => {
                        let _ = write!(out, "{v}");
                    }
                }
                true
            }
            BtfKind::Float { size } => {
                match (*size, bytes) {
                    (4, [a, b, c, d, ..]) => {
                        let _ = write!(out, "{}", f32::from_le_bytes([*a, *b, *c, *d]));
                    }
                    (8, _) if bytes.len() >= 8 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&bytes[..8]);
                        let _ = write!(out, "{}", f64::from_le_bytes(b));
                    }
                    _ => out.push_str("<float>"),
                }
                true
            }
            BtfKind::Array { elem, len, .. } => {
                let Ok(esize) = self.size_of(*elem) else {
                    out.push_str("[]");
                    return true;
                };
                let is_char = self.resolve(*elem).ok().and_then(|e| self.get(e).ok()).is_some_and(
                    |t| matches!(&t.kind, BtfKind::Int { size: 1, encoding, .. } if encoding.char || t.name == "char"),
                );
                let total = (esize as usize).saturating_mul(*len as usize);
                if is_char {
                    if let Some(b) = bytes.get(..total) {
                        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                        if b[..end].iter().all(|c| c.is_ascii_graphic() || *c == b' ')
                            && b[end..].iter().all(|&c| c == 0)
                        {
                            out.push('"');
                            for &c in &b[..end] {
                                if c == b'"' || c == b'\\' {
                                    out.push('\\');
                                }
                                out.push(c as char);
                            }
                            out.push('"');
                            return true;
                        }
                    }
                }
                out.push('[');
                for i in 0..*len as usize {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let start = i.saturating_mul(esize as usize);
                    match bytes.get(start..) {
                        Some(b) if esize == 0 || b.len() >= esize as usize => {
                            self.fmt_value_at(*elem, b, depth + 1, budget, out);
                        }
                        _ => {
                            out.push_str("<truncated>");
                            break;
                        }
                    }
                    if i >= 4096 {
                        out.push_str(", ...");
                        break;
                    }
                }
                out.push(']');
                true
            }
            BtfKind::Struct { members, .. } | BtfKind::Union { members, .. } => {
                out.push('{');
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "\"{}\": ", m.name);
                    let byte = (m.bit_offset / 8) as usize;
                    let rest = bytes.get(byte..).unwrap_or(&[]);
                    if m.bitfield_size == 0 && m.bit_offset % 8 == 0 {
                        self.fmt_value_at(m.ty, rest, depth + 1, budget, out);
                    } else {
                        let bits = if m.bitfield_size == 0 {
                            self.size_of(m.ty)
                                .map_or(0, |s| s.saturating_mul(8))
                                .min(64)
                        } else {
                            m.bitfield_size
                        };
                        self.fmt_value(m.ty, rest, m.bit_offset % 8, bits, budget, out);
                    }
                }
                out.push('}');
                true
            }
            BtfKind::Datasec { vars, .. } => {
                out.push('{');
                for (i, v) in vars.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let name = self.get(v.ty).map(|t| t.name.clone()).unwrap_or_default();
                    let _ = write!(out, "\"{name}\": ");
                    let b = bytes.get(v.offset as usize..).unwrap_or(&[]);
                    self.fmt_value_at(v.ty, b, depth + 1, budget, out);
                }
                out.push('}');
                true
            }
            BtfKind::Var { ty, .. } => self.fmt_value_at(*ty, bytes, depth + 1, budget, out),
            _ => {
                // Functions, forward declarations, void: raw hex.
                out.push('"');
                for b in bytes {
                    let _ = write!(out, "{b:02x}");
                }
                out.push('"');
                true
            }
        }
    }

    /// Parses `.BTF.ext` against this BTF's strings (`strings` is the raw
    /// `.BTF` section, whose string table `.BTF.ext` records index).
    /// Returns the records per section name; line info carries the source
    /// text.
    pub fn parse_ext(
        btf_section: &[u8],
        ext: &[u8],
    ) -> Result<Vec<(String, SectionExt)>, BtfError> {
        const S: &str = ".BTF.ext";
        let strings = {
            let r = Reader {
                data: btf_section,
                section: ".BTF",
            };
            let hdr_len = header(&r)?;
            let str_off = r.u32(16)? as usize;
            let str_len = r.u32(20)? as usize;
            let body = btf_section.get(hdr_len..).ok_or(BtfError::Truncated {
                section: ".BTF",
                offset: hdr_len,
            })?;
            sub(body, str_off, str_len, ".BTF")?
        };
        let r = Reader {
            data: ext,
            section: S,
        };
        let hdr_len = header(&r)?;
        let body = ext.get(hdr_len..).ok_or(BtfError::Truncated {
            section: S,
            offset: hdr_len,
        })?;
        let mut out: Vec<(String, SectionExt)> = Vec::new();
        fn entry(out: &mut Vec<(String, SectionExt)>, name: String) -> usize {
            match out.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    out.push((name, SectionExt::default()));
                    out.len() - 1
                }
            }
        }
        // (offset field, minimal record size, what)
        let parts: [(usize, u32, &str); 3] = [
            (8, 8, "func_info"),
            (16, 16, "line_info"),
            (24, 16, "core_relo"),
        ];
        let mut results: Vec<(usize, String, Vec<[u32; 4]>)> = Vec::new();
        for (part, (field, min, what)) in parts.iter().enumerate() {
            if *field + 8 > hdr_len {
                continue; // older header without this part (CO-RE)
            }
            let off = r.u32(*field)? as usize;
            let len = r.u32(*field + 4)? as usize;
            if len == 0 {
                continue;
            }
            let d = sub(body, off, len, S)?;
            let dr = Reader {
                data: d,
                section: S,
            };
            let rec_size = dr.u32(0)?;
            if rec_size < *min {
                return Err(BtfError::BadRecordSize {
                    section: S,
                    what,
                    size: rec_size,
                });
            }
            let mut pos = 4usize;
            while pos < d.len() {
                let sec = string_at(strings, dr.u32(pos)?)?;
                let n = dr.u32(pos + 4)? as usize;
                pos += 8;
                for _ in 0..n {
                    let mut rec = [0u32; 4];
                    for (k, w) in rec.iter_mut().enumerate().take((*min / 4) as usize) {
                        *w = dr.u32(pos + 4 * k)?;
                    }
                    results.push((part, sec.clone(), vec![rec]));
                    pos = pos
                        .checked_add(rec_size as usize)
                        .ok_or(BtfError::Truncated {
                            section: S,
                            offset: pos,
                        })?;
                }
            }
        }
        for (part, sec, recs) in results {
            let i = entry(&mut out, sec);
            for rec in recs {
                let e = &mut out[i].1;
                match part {
                    0 => e.func_info.push(FuncInfo {
                        insn: rec[0] as usize / 8,
                        type_id: rec[1],
                    }),
                    1 => e.line_info.push(LineInfo {
                        insn: rec[0] as usize / 8,
                        file: string_at(strings, rec[1]).unwrap_or_default(),
                        line: string_at(strings, rec[2]).unwrap_or_default(),
                        line_num: rec[3] >> 10,
                        column: rec[3] & 0x3ff,
                    }),
                    _ => e.core_relos.push(CoreRelo {
                        insn: rec[0] as usize / 8,
                        type_id: rec[1],
                        access: string_at(strings, rec[2])?,
                        kind: CoreReloKind::from_raw(rec[3]),
                    }),
                }
            }
        }
        Ok(out)
    }
}

/// `bits` bits of little-endian `bytes` starting at bit `off`.
fn extract_bits(bytes: &[u8], off: u32, bits: u32) -> Option<u64> {
    let bits = bits.min(64);
    let end_bit = off as usize + bits as usize;
    let nbytes = end_bit.div_ceil(8);
    let b = bytes.get(..nbytes)?;
    let mut v: u128 = 0;
    for (i, &x) in b.iter().enumerate().take(16) {
        v |= (x as u128) << (8 * i);
    }
    v >>= off;
    let mask = if bits >= 64 {
        u64::MAX as u128
    } else {
        (1u128 << bits) - 1
    };
    Some((v & mask) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF writer: types as (name offset, info, size/type, extra
    /// words), strings as a NUL-separated blob.
    fn build(types: &[(u32, u32, u32, &[u32])], strings: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for (name, info, st, extra) in types {
            for w in [*name, *info, *st].iter().chain(extra.iter()) {
                t.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(strings);
        out
    }

    const fn info(kind: u32, vlen: u32) -> u32 {
        kind << 24 | vlen
    }

    #[test]
    fn names_of_declarators() {
        // 1 int, 2 int[4], 3 ptr to 2, 4 func_proto int(int), 5 ptr to 4,
        // 6 const 3, 7 typedef u32 = unsigned int (8).
        let strings = b"\0int\0u32\0unsigned int\0";
        let btf = Btf::parse(&build(
            &[
                (1, info(1, 0), 4, &[1 << 24 | 32]),
                (0, info(3, 0), 0, &[1, 1, 4]),
                (0, info(2, 0), 2, &[]),
                (0, info(13, 1), 1, &[0, 1]),
                (0, info(2, 0), 4, &[]),
                (0, info(10, 0), 3, &[]),
                (5, info(8, 0), 8, &[]),
                (9, info(1, 0), 4, &[32]),
            ],
            strings,
        ))
        .unwrap();
        assert_eq!(btf.type_name(1), "int");
        assert_eq!(btf.type_name(2), "int[4]");
        assert_eq!(btf.type_name(3), "int (*)[4]");
        assert_eq!(btf.type_name(5), "int (*)(int)");
        assert_eq!(btf.type_name(6), "int (*const)[4]");
        assert_eq!(btf.type_name(7), "u32");
        assert_eq!(btf.type_name(99), "<bad type 99>");
        assert_eq!(btf.size_of(2).unwrap(), 16);
        assert_eq!(btf.size_of(6).unwrap(), 8);
        assert_eq!(btf.resolve(7).unwrap(), 8);
        assert_eq!(
            btf.format_value(2, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            "[1, -1, <truncated>]"
        );
        assert_eq!(btf.format_value(7, &7u32.to_le_bytes()), "7");
    }

    #[test]
    fn malformed_btf_is_an_error_not_a_panic() {
        // A typedef cycle: 1 -> 2 -> 1.
        let cyc = Btf::parse(&build(
            &[(0, info(8, 0), 2, &[]), (0, info(8, 0), 1, &[])],
            b"\0",
        ))
        .unwrap();
        assert!(matches!(cyc.resolve(1), Err(BtfError::TooDeep { .. })));
        assert!(cyc.size_of(1).is_err());
        assert_eq!(cyc.format_value(1, &[0; 8]), "<cyclic>");
        let _ = cyc.type_name(1);
        // A reference to a missing type.
        let bad = build(&[(0, info(2, 0), 7, &[])], b"\0");
        assert_eq!(Btf::parse(&bad), Err(BtfError::BadTypeId { id: 7 }));
        // An unknown kind, a bad string offset, truncation, bad magic.
        let unk = build(&[(0, info(31, 0), 0, &[])], b"\0");
        assert!(matches!(
            Btf::parse(&unk),
            Err(BtfError::UnknownKind { kind: 31, .. })
        ));
        let s = build(&[(50, info(1, 0), 4, &[32])], b"\0");
        assert_eq!(Btf::parse(&s), Err(BtfError::BadString { offset: 50 }));
        let full = build(&[(0, info(4, 3), 8, &[0, 0, 0])], b"\0");
        assert!(matches!(Btf::parse(&full), Err(BtfError::Truncated { .. })));
        assert!(matches!(
            Btf::parse(&[0x9f, 0xeb]),
            Err(BtfError::Truncated { .. })
        ));
        assert!(matches!(
            Btf::parse(&[0xeb, 0x9f, 1, 0, 24, 0, 0, 0]),
            Err(BtfError::BadMagic { .. })
        ));
        // An int whose bit offset is past its storage (fuzz regression).
        let odd = Btf::parse(&build(&[(0, info(1, 0), 8, &[200 << 16 | 8])], b"\0")).unwrap();
        assert_eq!(odd.format_value(1, &[0xff; 8]), "0");
        // A member at a bit offset whose type is too large to count in
        // bits (fuzz regression).
        let wide = Btf::parse(&build(
            &[
                (0, info(1, 0), 4, &[32]),
                (0, info(3, 0), 0, &[1, 1, 0x0c00_0000]),
                (0, info(4, 1), 8, &[0, 2, 3]),
            ],
            b"\0",
        ))
        .unwrap();
        let _ = wide.format_value(3, &[0xff; 8]);
    }

    #[test]
    fn wide_graphs_print_in_bounded_time() {
        // A struct of 1000 members of itself through a pointer to an array
        // of 1000 of it: formatting stops at its budget.
        let mut members = Vec::new();
        for _ in 0..1000 {
            members.extend_from_slice(&[0, 2, 0]);
        }
        let btf = Btf::parse(&build(
            &[
                (0, info(4, 1000), 4, &members),
                (0, info(3, 0), 0, &[1, 1, 1000]),
            ],
            b"\0",
        ))
        .unwrap();
        let s = btf.format_value(1, &[0; 4]);
        assert!(s.contains("..."));
    }
}
