//! # bpfkit-elf
//!
//! Loads the ELF objects that `clang -target bpf` produces, as libbpf
//! (and, for old objects, iproute2 and the kernel samples' `bpf_load.c`)
//! would: every program of every section, linked with its subprograms;
//! every map (BTF `.maps`, legacy `maps` sections, global data); the BTF
//! to name and print their types. Untrusted bytes never panic: problems
//! are [`ElfError`]s that name the section, symbol and instruction.
//!
//! Two layers:
//!
//! - [`Object`] names things and borrows from the bytes: program sections
//!   ([`ProgramSection`]) with [`Function`]s, [`Label`]s and classified
//!   [`Relocation`]s, [`MapSymbol`]s, data symbols, the license.
//!   `bpfkit disasm` works on this layer.
//! - [`LoadedObject`] resolves them and owns its data:
//!   - [`LoadedObject::programs`]: [`LoadedProgram`]s, each one
//!     instruction list ([`bpfkit_isa::Program`]) with its `.text` and
//!     same-section subprograms appended (libbpf's order), calls and
//!     function references fixed, maps referenced as
//!     `Imm64::MapIdx(i)` and global data as `Imm64::MapIdxValue { idx,
//!     off }` into [`LoadedObject::maps`]; the program type from the
//!     section name ([`LoadedProgram::prog_type`]); `.BTF.ext` function
//!     and line info moved to program slots.
//!   - [`LoadedObject::maps`]: [`MapDefinition`]s (a
//!     [`bpfkit_abi::MapDef`] plus BTF key/value types, initial data of
//!     global data, `frozen` for `.rodata*`, `values` initialisers of prog
//!     arrays and maps of maps).
//!   - [`LoadedObject::btf`]: the parsed [`Btf`], with
//!     [`Btf::type_name`] (`struct flow_key`) and [`Btf::format_value`]
//!     (`{"src": 1, ...}`).
//!
//! CO-RE relocations against types bpfkit lays out as the kernel's uapi
//! does (contexts, packet headers) keep what the compiler wrote; against
//! other types they resolve with a target BTF
//! ([`LoadOptions::target_btf`], e.g. `/sys/kernel/btf/vmlinux`, see
//! [`core`]) or are errors naming the relocation. What needs a running
//! kernel otherwise (kfuncs, ksyms, kconfig externs) is an error for the
//! program that needs it ([`LoadOptions::keep_going`] loads the others).
//!
//! ```no_run
//! use bpfkit_isa::{Imm64, Insn};
//! let data = std::fs::read("examples/xdp_counter.o").unwrap();
//! let obj = bpfkit_elf::LoadedObject::load(&data).unwrap();
//! for (i, m) in obj.maps.iter().enumerate() {
//!     let (key, value) = obj.map_type_names(m);
//!     println!("map {i} {}: {} {:?} -> {:?}", m.name, m.def.map_type, key, value);
//! }
//! for p in &obj.programs {
//!     println!("{} ({}): {} slots", p.name, p.prog_type().unwrap(), p.insns.slot_count());
//!     for insn in p.insns.insns() {
//!         if let Insn::LoadImm64 { imm: Imm64::MapIdx(i), .. } = insn {
//!             println!("  uses map {}", obj.maps[*i as usize].name);
//!         }
//!     }
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod btf;
pub mod core;
mod error;
pub mod fuzzing;
mod loader;
mod maps;
mod object_file;

pub use btf::{Btf, BtfError};
pub use error::ElfError;
pub use loader::{LoadOptions, LoadedObject, LoadedProgram, ProgramFailure, Subprogram};
pub use maps::{MapDefinition, MapOrigin, SlotInit};
pub use object_file::{
    DataSymbol, EntryPoint, Function, Label, MapKind, MapSymbol, Object, ProgramSection, RelocKind,
    RelocTarget, Relocation,
};
