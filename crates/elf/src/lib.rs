//! # bpfkit-elf
//!
//! Reads the ELF objects that `clang -target bpf` produces: program
//! sections and their functions, relocations (map references, bpf-to-bpf
//! calls, global data), map symbols and the license. Parsing borrows from
//! the input bytes (a `'data` lifetime, as the `object` crate does), never
//! panics on malformed input and reports problems as [`ElfError`].
//!
//! This is the first layer of the loader: it names things, it does not
//! resolve them. Map definitions (legacy `maps` sections and BTF `.maps`),
//! global data and linking build on the types here.
//!
//! - [`Object`]: the parsed object.
//! - [`ProgramSection`]: an executable section with instructions, its
//!   [`Function`]s, local [`Label`]s and [`Relocation`]s.
//! - [`MapSymbol`]: a symbol in a map section.
//!
//! ```no_run
//! let data = std::fs::read("examples/xdp_counter.o").unwrap();
//! let obj = bpfkit_elf::Object::parse(&data).unwrap();
//! for sec in obj.programs() {
//!     for f in &sec.functions {
//!         println!("{} in {}: {} instructions", f.name, sec.name, f.size / 8);
//!     }
//! }
//! for map in obj.maps() {
//!     println!("map {}", map.name);
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod btf;
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
