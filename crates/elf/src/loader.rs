//! The loader: from an [`Object`] to linked programs and map definitions.
//!
//! Linking follows libbpf's `bpf_object__relocate`: each entry program is
//! copied, then every subprogram it calls (transitively; `.text` functions
//! and functions of its own section) is appended once, in the order first
//! reached, and the call immediates and `lddw` function references are
//! rewritten to the new distances. Map references become
//! [`Imm64::MapIdx`] and global data references [`Imm64::MapIdxValue`]
//! against [`LoadedObject::maps`], so the program stays symbolic until a
//! runtime (or the kernel) gives the maps addresses or fds.

use crate::btf::{Btf, BtfKind, CoreRelo, FuncInfo, LineInfo, SectionExt};
use crate::error::ElfError;
use crate::maps::{collect_maps, MapDefinition, MapOrigin};
use crate::object_file::{EntryPoint, Object, ProgramSection, RelocKind, RelocTarget};
use bpfkit_abi::ProgType;
use bpfkit_isa::{decode_one, Imm64, Insn, Pc, Program, RawInsn};

/// A loaded object: linked programs, map definitions, BTF.
#[derive(Clone, Debug)]
pub struct LoadedObject {
    /// The programs, in section order (see [`Object::entry_points`]).
    pub programs: Vec<LoadedProgram>,
    /// Programs that could not be linked (only with
    /// [`LoadOptions::keep_going`]; otherwise the first one fails the load).
    pub failed: Vec<ProgramFailure>,
    /// The maps: legacy, then BTF, then global data. [`Imm64::MapIdx`]
    /// and [`Imm64::MapIdxValue`] in the programs index this table.
    pub maps: Vec<MapDefinition>,
    /// The object's BTF, when it has a `.BTF` section.
    pub btf: Option<Btf>,
    /// The `license` section's string.
    pub license: Option<String>,
}

/// A program that failed to link, with the reason.
#[derive(Clone, Debug)]
pub struct ProgramFailure {
    /// Program name.
    pub name: String,
    /// Section name.
    pub section: String,
    /// What went wrong.
    pub error: ElfError,
}

/// A subprogram appended to a program.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Subprogram {
    /// The function's name (the section's for a section without symbols).
    pub name: String,
    /// Section it came from.
    pub section: String,
    /// Its first slot in the linked program.
    pub start: Pc,
    /// Its number of slots.
    pub len: usize,
}

/// One program, linked and ready for a verifier or runtime.
#[derive(Clone, Debug)]
pub struct LoadedProgram {
    /// Name (the function symbol; the section name for sections without
    /// symbols).
    pub name: String,
    /// The ELF section it came from, whose name gives its type.
    pub section: String,
    /// Instructions: the program, then its subprograms. Map references are
    /// `Imm64::MapIdx`/`MapIdxValue`, local calls and function references
    /// point into this instruction list.
    pub insns: Program,
    /// The object's license (`""` when it has none).
    pub license: String,
    /// Functions in the linked program: the entry first (at slot 0), then
    /// each appended subprogram.
    pub functions: Vec<Subprogram>,
    /// `.BTF.ext` function info, program-relative.
    pub func_info: Vec<FuncInfo>,
    /// `.BTF.ext` line info, program-relative (for source lines in
    /// verifier logs).
    pub line_info: Vec<LineInfo>,
    /// CO-RE relocations that apply to the program (program-relative),
    /// all resolved to the object's own layout (see [`LoadOptions`]).
    pub core_relos: Vec<CoreRelo>,
}

impl LoadedProgram {
    /// The program type libbpf derives from the section name; a clear
    /// error when the name is not one it knows.
    ///
    /// Besides libbpf's names ([`ProgType::from_section`]), the prefixes
    /// of the kernel samples' `bpf_load.c` are accepted: `xdp...`
    /// (`xdp1`, `xdp_redirect`, ...) is XDP, `cgroup/sock...` and
    /// `cgroup/skb...` are the cgroup types. Other legacy names (iproute2's
    /// free-form tc sections such as `ingress`) name no type: callers pass
    /// one explicitly.
    pub fn prog_type(&self) -> Result<ProgType, ElfError> {
        ProgType::from_section(&self.section)
            .or_else(|| legacy_prog_type(&self.section))
            .ok_or_else(|| ElfError::UnknownProgType {
                program: self.name.clone(),
                section: self.section.clone(),
            })
    }

    /// The source line attached to `pc` (the last line info at or before
    /// it, as the verifier prints them).
    pub fn line_at(&self, pc: Pc) -> Option<&LineInfo> {
        self.line_info.iter().take_while(|l| l.insn <= pc.0).last()
    }
}

/// `bpf_load.c`'s prefix rules, for sections libbpf does not name.
fn legacy_prog_type(section: &str) -> Option<ProgType> {
    if section.starts_with("xdp") {
        Some(ProgType::Xdp)
    } else if section.starts_with("cgroup/sock") {
        Some(ProgType::CgroupSock)
    } else if section.starts_with("cgroup/skb") {
        Some(ProgType::CgroupSkb)
    } else {
        None
    }
}

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Record programs that fail to link in [`LoadedObject::failed`]
    /// instead of failing the whole load.
    pub keep_going: bool,
    /// BTF of the target kernel (e.g. `/sys/kernel/btf/vmlinux`) to
    /// resolve CO-RE relocations against kernel-internal types; without
    /// it, those relocations are errors.
    pub target_btf: Option<std::sync::Arc<Btf>>,
}

impl LoadOptions {
    /// Keep going past programs that fail to link.
    pub fn keep_going(mut self, yes: bool) -> LoadOptions {
        self.keep_going = yes;
        self
    }

    /// Resolves CO-RE relocations against this BTF (see
    /// [`LoadOptions::target_btf`]).
    pub fn target_btf(mut self, btf: std::sync::Arc<Btf>) -> LoadOptions {
        self.target_btf = Some(btf);
        self
    }

    /// Loads an object with these options.
    pub fn load(&self, data: &[u8]) -> Result<LoadedObject, ElfError> {
        let obj = Object::parse(data)?;
        self.load_object(&obj)
    }

    /// Loads an already parsed object.
    pub fn load_object(&self, obj: &Object<'_>) -> Result<LoadedObject, ElfError> {
        let btf_sec = obj.section_by_name(".BTF").filter(|s| !s.data.is_empty());
        let btf = match btf_sec {
            Some(s) => {
                let mut b = Btf::parse(s.data).map_err(|source| ElfError::Btf { source })?;
                b.fixup_datasecs(
                    |sec| obj.section_by_name(sec).map(|s| s.size),
                    |sec, var| {
                        let index = obj.section_by_name(sec)?.index;
                        let maps = obj
                            .maps()
                            .iter()
                            .map(|m| (m.name, m.section_index, m.offset));
                        let data = obj
                            .data_symbols()
                            .iter()
                            .map(|d| (d.name, d.section_index, d.offset));
                        maps.chain(data)
                            .find(|(n, i, _)| *n == var && *i == index)
                            .map(|(_, _, o)| o)
                    },
                );
                Some(b)
            }
            None => None,
        };
        let ext = match (btf_sec, obj.section_by_name(".BTF.ext")) {
            (Some(b), Some(e)) if !e.data.is_empty() => {
                Btf::parse_ext(b.data, e.data).map_err(|source| ElfError::Btf { source })?
            }
            _ => Vec::new(),
        };
        let maps = collect_maps(obj, btf.as_ref())?;
        let license = obj.license().map(str::to_string);
        let mut programs = Vec::new();
        let mut failed = Vec::new();
        for e in obj.entry_points() {
            let linker = Linker {
                obj,
                maps: &maps,
                btf: btf.as_ref(),
                ext: &ext,
                target: self.target_btf.as_deref(),
            };
            match linker.link(&e) {
                Ok(mut p) => {
                    p.license = license.clone().unwrap_or_default();
                    programs.push(p);
                }
                Err(error) if self.keep_going => failed.push(ProgramFailure {
                    name: e.name().to_string(),
                    section: e.section.name.to_string(),
                    error,
                }),
                Err(error) => return Err(error),
            }
        }
        Ok(LoadedObject {
            programs,
            failed,
            maps,
            btf,
            license,
        })
    }
}

impl LoadedObject {
    /// Loads an object: every program linked, every map defined. The
    /// first program that fails to link fails the load; see
    /// [`LoadOptions::keep_going`] to load the others anyway.
    pub fn load(data: &[u8]) -> Result<LoadedObject, ElfError> {
        LoadOptions::default().load(data)
    }

    /// The program with this name.
    pub fn program(&self, name: &str) -> Option<&LoadedProgram> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The map with this name, with its index in [`LoadedObject::maps`].
    pub fn map(&self, name: &str) -> Option<(usize, &MapDefinition)> {
        self.maps.iter().enumerate().find(|(_, m)| m.name == name)
    }

    /// A map key as typed text (`{"src": 1, ...}`), when the map has a
    /// BTF key type.
    pub fn format_key(&self, map: &MapDefinition, bytes: &[u8]) -> Option<String> {
        Some(self.btf.as_ref()?.format_value(map.key_type?, bytes))
    }

    /// A map value as typed text, when the map has a BTF value type
    /// (global data: their DATASEC, variable by variable).
    pub fn format_value(&self, map: &MapDefinition, bytes: &[u8]) -> Option<String> {
        Some(self.btf.as_ref()?.format_value(map.value_type?, bytes))
    }

    /// The printed BTF type name of a map's key and value (`None` where
    /// the map has no BTF type for it).
    pub fn map_type_names(&self, map: &MapDefinition) -> (Option<String>, Option<String>) {
        let name = |t: Option<u32>| Some(self.btf.as_ref()?.type_name(t?));
        (name(map.key_type), name(map.value_type))
    }
}

/// A piece of code copied into a program: a function, or a section
/// without function symbols.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Unit {
    /// Index into `Object::programs()`.
    sec: usize,
    start: usize,
    end: usize,
}

struct Linker<'a, 'data> {
    obj: &'a Object<'data>,
    maps: &'a [MapDefinition],
    btf: Option<&'a Btf>,
    ext: &'a [(String, SectionExt)],
    target: Option<&'a Btf>,
}

/// A branch whose offset is fixed once every unit has its place.
struct Patch {
    /// Index into the output instructions.
    at: usize,
    /// Output slot of the instruction.
    pc: usize,
    /// Target unit (index into `units`) and the slot within its section.
    unit: usize,
    slot: usize,
}

/// Names of the types that bpfkit presents to programs with the kernel's
/// own (uapi) layout: contexts and packet headers. A CO-RE relocation
/// against them resolves to what the compiler already wrote.
const UAPI_TYPES: &[&str] = &[
    "xdp_md",
    "__sk_buff",
    "bpf_sock_ops",
    "sk_msg_md",
    "bpf_sock",
    "bpf_sock_addr",
    "sk_reuseport_md",
    "bpf_sockopt",
    "bpf_sk_lookup",
    "bpf_flow_keys",
    "bpf_tunnel_key",
    "bpf_xfrm_state",
    "bpf_fib_lookup",
    "ethhdr",
    "vlan_hdr",
    "iphdr",
    "ipv6hdr",
    "tcphdr",
    "udphdr",
    "icmphdr",
    "icmp6hdr",
    "in6_addr",
    "bpf_spin_lock",
    "bpf_timer",
];

impl<'data> Linker<'_, 'data> {
    fn section(&self, u: Unit) -> &ProgramSection<'data> {
        &self.obj.programs()[u.sec]
    }

    fn unit_name(&self, u: Unit) -> String {
        let sec = self.section(u);
        sec.function_at(u.start as u64 * 8)
            .map_or(sec.name, |f| f.name)
            .to_string()
    }

    /// The unit holding `slot` of the program section with ELF index
    /// `elf_index`.
    fn unit_at(&self, elf_index: usize, slot: usize) -> Option<Unit> {
        let sec = self
            .obj
            .programs()
            .iter()
            .position(|p| p.index == elf_index)?;
        let p = &self.obj.programs()[sec];
        if slot >= p.slot_count() {
            return None;
        }
        if p.functions.is_empty() {
            return Some(Unit {
                sec,
                start: 0,
                end: p.slot_count(),
            });
        }
        let f = p.function_containing(slot as u64 * 8)?;
        Some(Unit {
            sec,
            start: f.start().0,
            end: f.start().0 + f.slot_count(),
        })
    }

    fn link(&self, e: &EntryPoint<'_, 'data>) -> Result<LoadedProgram, ElfError> {
        let sec_pos = self
            .obj
            .programs()
            .iter()
            .position(|p| p.index == e.section.index)
            .unwrap_or(0);
        let start = e.start().0;
        let len = e
            .function
            .map_or(e.section.slot_count(), |f| f.slot_count());
        let entry = Unit {
            sec: sec_pos,
            start,
            end: start + len,
        };
        let program = e.name().to_string();
        let mut units: Vec<(Unit, usize)> = vec![(entry, 0)];
        let mut out: Vec<Insn> = Vec::new();
        let mut patches: Vec<Patch> = Vec::new();
        let mut func_info = Vec::new();
        let mut line_info = Vec::new();
        let mut core_relos = Vec::new();
        let mut i = 0;
        while i < units.len() {
            let (u, base) = units[i];
            let sec = self.section(u);
            let err = |slot: usize, reason: String| ElfError::Link {
                program: program.clone(),
                section: sec.name.to_string(),
                insn: slot,
                reason,
            };
            let raws: Vec<RawInsn> = sec
                .data
                .chunks_exact(8)
                .map(|c| RawInsn::from_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            // (section slot, index in `out`) of this unit's instructions.
            let mut placed: Vec<(usize, usize)> = Vec::new();
            let mut s = u.start;
            while s < u.end {
                let next = if s + 1 < u.end { raws.get(s + 1) } else { None };
                let raw = *raws
                    .get(s)
                    .ok_or_else(|| err(s, "past the section".into()))?;
                let mut insn = decode_one(raw, next.copied()).map_err(|k| err(s, k.to_string()))?;
                let pc = base + (s - u.start);
                let reloc = sec.relocation_at(Pc(s));
                // Where a call or function reference goes: (ELF section,
                // slot in it).
                let mut target: Option<(usize, usize)> = None;
                match (&mut insn, reloc) {
                    (Insn::Ja { off, .. }, None) => {
                        self.check_jump(u, s, *off as i64).map_err(|r| err(s, r))?
                    }
                    (Insn::Jmp { off, .. }, None) => {
                        self.check_jump(u, s, *off as i64).map_err(|r| err(s, r))?
                    }
                    (Insn::CallLocal(off), None) => {
                        let t = s as i64 + 1 + *off as i64;
                        let t = usize::try_from(t)
                            .map_err(|_| err(s, format!("call to slot {t} before the section")))?;
                        target = Some((sec.index, t));
                    }
                    (Insn::LoadImm64 { imm: Imm64::Func(off), .. }, None) => {
                        let t = s as i64 + 1 + *off as i64;
                        let t = usize::try_from(t).map_err(|_| {
                            err(s, format!("function reference to slot {t} before the section"))
                        })?;
                        target = Some((sec.index, t));
                    }
                    (_, None) => {}
                    (Insn::CallLocal(off), Some(r)) => {
                        if r.kind != RelocKind::Call32 {
                            return Err(err(s, format!("{:?} relocation on a call", r.kind)));
                        }
                        match r.target {
                            RelocTarget::Code { section, offset } => {
                                if offset % 8 != 0 {
                                    return Err(err(
                                        s,
                                        format!("call to '{}' at an unaligned offset", r.symbol),
                                    ));
                                }
                                let t = (offset / 8) as i64 + *off as i64 + 1;
                                let t = usize::try_from(t).map_err(|_| {
                                    err(s, format!("call before the start of '{}'", r.symbol))
                                })?;
                                target = Some((section, t));
                            }
                            _ => return Err(err(s, self.bad_target("call", r.symbol, &r.target))),
                        }
                    }
                    (Insn::Call(_) | Insn::CallKfunc { .. }, Some(r)) => {
                        return Err(err(s, self.bad_target("call", r.symbol, &r.target)));
                    }
                    (Insn::LoadImm64 { imm, .. }, Some(r)) => {
                        if !matches!(r.kind, RelocKind::Imm64 | RelocKind::None) {
                            return Err(err(
                                s,
                                format!("{:?} relocation to '{}' on lddw", r.kind, r.symbol),
                            ));
                        }
                        let addend = match (r.addend, *imm) {
                            (Some(a), _) => a as u32,
                            (None, Imm64::Value(v)) => v as u32,
                            (None, _) => 0,
                        };
                        match self.resolve_lddw(r, addend).map_err(|m| err(s, m))? {
                            Resolved::Imm(new) => *imm = new,
                            Resolved::Func(sec_index, slot) => {
                                *imm = Imm64::Func(0);
                                target = Some((sec_index, slot));
                            }
                        }
                    }
                    (_, Some(r)) => {
                        return Err(err(
                            s,
                            format!(
                                "{:?} relocation to '{}' on an instruction that is neither lddw nor call",
                                r.kind, r.symbol
                            ),
                        ))
                    }
                }
                if let Some((sec_index, slot)) = target {
                    let t = self.unit_at(sec_index, slot).ok_or_else(|| {
                        let name = self.obj.section_name(sec_index).unwrap_or("?");
                        err(
                            s,
                            format!(
                                "call target slot {slot} of section '{name}' is not in a function"
                            ),
                        )
                    })?;
                    let idx = match units.iter().position(|(x, _)| *x == t) {
                        Some(k) => k,
                        None => {
                            let (last, last_base) = units[units.len() - 1];
                            units.push((t, last_base + (last.end - last.start)));
                            units.len() - 1
                        }
                    };
                    patches.push(Patch {
                        at: out.len(),
                        pc,
                        unit: idx,
                        slot,
                    });
                }
                s += insn.slots();
                placed.push((s - insn.slots(), out.len()));
                out.push(insn);
            }
            // BTF.ext records of this unit, moved to program slots.
            if let Some((_, x)) = self.ext.iter().find(|(n, _)| n == sec.name) {
                let inside = |insn: usize| insn >= u.start && insn < u.end;
                let moved = |insn: usize| base + insn - u.start;
                func_info.extend(
                    x.func_info
                        .iter()
                        .filter(|f| inside(f.insn))
                        .map(|f| FuncInfo {
                            insn: moved(f.insn),
                            type_id: f.type_id,
                        }),
                );
                line_info.extend(
                    x.line_info
                        .iter()
                        .filter(|l| inside(l.insn))
                        .map(|l| LineInfo {
                            insn: moved(l.insn),
                            ..l.clone()
                        }),
                );
                for c in x.core_relos.iter().filter(|c| inside(c.insn)) {
                    if let Some(value) = self.core_value(c, sec.name).map_err(|r| err(c.insn, r))? {
                        let at = placed
                            .binary_search_by_key(&c.insn, |p| p.0)
                            .map(|k| placed[k].1)
                            .map_err(|_| {
                                err(c.insn, "CO-RE relocation on no instruction".into())
                            })?;
                        crate::core::patch(&mut out[at], value).map_err(|r| {
                            err(
                                c.insn,
                                format!(
                                    "CO-RE relocation {} (access {}): {r}",
                                    c.kind.name(),
                                    c.access
                                ),
                            )
                        })?;
                    }
                    core_relos.push(CoreRelo {
                        insn: moved(c.insn),
                        ..c.clone()
                    });
                }
            }
            i += 1;
        }
        for p in &patches {
            let (u, base) = units[p.unit];
            let dest = (base + p.slot - u.start) as i64;
            let off = dest - (p.pc as i64 + 1);
            let off = i32::try_from(off).unwrap_or(i32::MAX);
            match &mut out[p.at] {
                Insn::CallLocal(o) => *o = off,
                Insn::LoadImm64 { imm, .. } => *imm = Imm64::Func(off),
                _ => {}
            }
        }
        let functions = units
            .iter()
            .map(|&(u, base)| Subprogram {
                name: self.unit_name(u),
                section: self.section(u).name.to_string(),
                start: Pc(base),
                len: u.end - u.start,
            })
            .collect();
        let insns = Program::from_insns(out).map_err(|e| ElfError::Link {
            program: program.clone(),
            section: e_section(e),
            insn: e.pc.0,
            reason: format!("linked program is invalid: {}", e.kind),
        })?;
        Ok(LoadedProgram {
            name: program,
            section: e.section.name.to_string(),
            insns,
            license: String::new(),
            functions,
            func_info,
            line_info,
            core_relos,
        })
    }

    /// A jump must stay inside its function.
    fn check_jump(&self, u: Unit, s: usize, off: i64) -> Result<(), String> {
        let t = s as i64 + 1 + off;
        if t < u.start as i64 || t >= u.end as i64 {
            return Err(format!(
                "jump to slot {t} leaves function '{}' (slots {}..{})",
                self.unit_name(u),
                u.start,
                u.end
            ));
        }
        Ok(())
    }

    fn bad_target(&self, what: &str, symbol: &str, t: &RelocTarget<'_>) -> String {
        match t {
            RelocTarget::Extern => format!(
                "{what} of undefined (extern) symbol '{symbol}': kfuncs, ksyms, kconfig \
                 externs and compiler libcalls are not supported"
            ),
            RelocTarget::Map { name } => format!("{what} of map '{name}'"),
            RelocTarget::Data { section, .. } => {
                format!("{what} of '{symbol}' in data section '{section}'")
            }
            RelocTarget::Code { .. } => format!("{what} of code '{symbol}'"),
            RelocTarget::Other => format!("{what} of '{symbol}', which is not in a loaded section"),
        }
    }

    fn resolve_lddw(
        &self,
        r: &crate::object_file::Relocation<'data>,
        addend: u32,
    ) -> Result<Resolved, String> {
        match r.target {
            RelocTarget::Map { name } => {
                // Section symbols (old objects) name the map by offset.
                let name = if r.section_symbol {
                    let off = r.symbol_value.wrapping_add(addend as u64);
                    self.obj
                        .maps()
                        .iter()
                        .find(|m| Some(m.section_index) == r.symbol_section && m.offset == off)
                        .map(|m| m.name)
                        .ok_or_else(|| {
                            format!("reference to offset {off} of '{name}', where no map starts")
                        })?
                } else {
                    name
                };
                let idx = self
                    .maps
                    .iter()
                    .position(|m| m.name == name && !m.is_global_data())
                    .ok_or_else(|| format!("reference to map '{name}', which has no definition"))?;
                Ok(Resolved::Imm(Imm64::MapIdx(idx as i32)))
            }
            RelocTarget::Data { section, offset } => {
                let idx = self
                    .maps
                    .iter()
                    .position(|m| m.origin == MapOrigin::GlobalData { section: section.into() })
                    .ok_or_else(|| {
                        format!(
                            "reference to '{}' in section '{section}', which is not global data (.data, .rodata*, .bss)",
                            r.symbol
                        )
                    })?;
                let off = offset.wrapping_add(addend as u64);
                let size = self.maps[idx].def.value_size as u64;
                // One past the end is a valid C address (`&arr[N]`).
                if off > size {
                    return Err(format!(
                        "reference to '{}' at offset {off} of '{section}', past its {size} bytes",
                        r.symbol
                    ));
                }
                Ok(Resolved::Imm(Imm64::MapIdxValue {
                    idx: idx as i32,
                    off: off as u32,
                }))
            }
            RelocTarget::Code { section, offset } => {
                let bytes = offset.wrapping_add(addend as u64);
                if bytes % 8 != 0 {
                    return Err(format!(
                        "reference to '{}' at byte {bytes} of code, not an instruction",
                        r.symbol
                    ));
                }
                let slot = (bytes / 8) as usize;
                let is_func = self
                    .obj
                    .program_by_index(section)
                    .is_some_and(|p| p.functions.is_empty() || p.function_at(bytes).is_some());
                if !is_func {
                    let name = self.obj.section_name(section).unwrap_or("?");
                    return Err(format!(
                        "reference to '{}' at byte {bytes} of '{name}', which is data in a code section, not a function",
                        r.symbol
                    ));
                }
                Ok(Resolved::Func(section, slot))
            }
            _ => Err(self.bad_target("reference", r.symbol, &r.target)),
        }
    }

    /// A CO-RE relocation resolves when its root type is one that bpfkit
    /// lays out as the kernel's uapi does (contexts, packet headers): the
    /// object's own layout is then the target layout and the instruction
    /// keeps what the compiler wrote. Anything else needs the running
    /// kernel's BTF, which a userspace run does not have.
    /// What to write for a CO-RE relocation: `None` to keep the
    /// instruction as compiled, `Some(None)` to poison it, `Some(Some(v))`
    /// to write `v`.
    fn core_value(&self, c: &CoreRelo, section: &str) -> Result<Option<Option<u64>>, String> {
        use crate::btf::CoreReloKind as K;
        if c.kind == K::TypeIdLocal {
            return Ok(None);
        }
        let (name, type_name) = match self.btf {
            Some(b) => {
                let root = b.resolve(c.type_id).unwrap_or(c.type_id);
                let n = b.get(root).map(|t| t.name.clone()).unwrap_or_default();
                let aggregate = matches!(
                    b.get(root).map(|t| &t.kind),
                    Ok(BtfKind::Struct { .. } | BtfKind::Union { .. })
                );
                (
                    if aggregate { n } else { String::new() },
                    b.type_name(c.type_id),
                )
            }
            None => (String::new(), format!("type {}", c.type_id)),
        };
        // libbpf's flavours: `struct xdp_md___v2` matches `xdp_md`.
        let base = crate::core::essential_name(&name);
        if !base.is_empty() && UAPI_TYPES.contains(&base) {
            return Ok(None);
        }
        if let (Some(local), Some(target)) = (self.btf, self.target) {
            return crate::core::resolve(local, target, c)
                .map(Some)
                .map_err(|r| {
                    format!(
                        "CO-RE relocation {} of {type_name} (access {}): {r}",
                        c.kind.name(),
                        c.access
                    )
                });
        }
        let ty = ProgType::from_section(section).map_or_else(
            || format!("section '{section}'"),
            |t| format!("program type {}", t.name()),
        );
        Err(format!(
            "CO-RE relocation {} of {type_name} (access {}) cannot be resolved for {ty}: it needs the kernel's BTF",
            c.kind.name(),
            c.access
        ))
    }
}

fn e_section(_e: bpfkit_isa::DecodeError) -> String {
    String::from("<linked>")
}

enum Resolved {
    Imm(Imm64),
    Func(usize, usize),
}
