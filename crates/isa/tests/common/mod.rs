//! Helpers shared by the integration tests: locating the shared data folder
//! and reading bpf_conformance `.data` files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `$BPFKIT_SHARED`, or `<workspace>/../shared`; `None` (with the reason
/// printed) when it does not exist.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("BPFKIT_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: shared data folder {} not found (set BPFKIT_SHARED)",
            dir.display()
        );
        None
    }
}

/// One conformance test file's sections.
pub struct DataFile {
    /// File name, e.g. `lddw.data`.
    pub name: String,
    /// The `-- asm` section, comments removed, one line per source line.
    pub asm: String,
    /// The `-- raw` words, if the file has that section.
    pub raw: Option<Vec<u64>>,
}

/// Every `.data` file of the conformance folder, sorted by name.
pub fn conformance_files(shared: &Path) -> Vec<DataFile> {
    let dir = shared.join("conformance");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    paths.sort();
    paths.iter().map(|p| parse_data_file(p)).collect()
}

/// Parses a `.data` file with the upstream rules (see conformance/README.md).
pub fn parse_data_file(path: &Path) -> DataFile {
    let text = std::fs::read_to_string(path).unwrap();
    let mut section = String::new();
    let mut asm = String::new();
    let mut raw: Option<Vec<u64>> = None;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = match line.find('#') {
            Some(i) => &line[..i],
            None => line,
        };
        if line.contains("--") {
            section = line.to_string();
            if section.contains("raw") {
                raw.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if section.contains("asm") {
            asm.push_str(line);
            asm.push('\n');
        } else if section.contains("raw") {
            for w in line.split_whitespace() {
                let v = match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
                    Some(h) => u64::from_str_radix(h, 16).unwrap(),
                    None => w.parse().unwrap(),
                };
                raw.as_mut().unwrap().push(v);
            }
        }
    }
    DataFile {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        asm,
        raw,
    }
}

pub mod objdump;

/// A program section of an object: its name and instruction bytes.
pub struct ProgSection {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The executable sections (`SHF_EXECINSTR`, non-empty) of an ELF object,
/// read with the `object` crate (independently of bpfkit-elf).
pub fn program_sections(data: &[u8]) -> Vec<ProgSection> {
    use object::{Object, ObjectSection, SectionFlags};
    let file = object::File::parse(data).expect("corpus object parses");
    file.sections()
        .filter(|s| match s.flags() {
            SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0,
            _ => false,
        })
        .filter(|s| s.size() > 0)
        .map(|s| ProgSection {
            name: s.name().unwrap().to_string(),
            bytes: s.data().unwrap().to_vec(),
        })
        .collect()
}

/// Builds a relocatable EM_BPF object with one executable section per
/// program, each with a global function symbol at its start.
pub fn build_object(progs: &[(String, Vec<u8>)]) -> Vec<u8> {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    for (name, bytes) in progs {
        let sec = obj.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Text);
        let off = obj.append_section_data(sec, bytes, 8);
        obj.add_symbol(Symbol {
            name: format!("{name}_fn").into_bytes(),
            value: off,
            size: bytes.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(sec),
            flags: SymbolFlags::None,
        });
    }
    obj.write().expect("object writes")
}
