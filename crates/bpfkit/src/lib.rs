//! # bpfkit
//!
//! The facade over bpfkit's crates: load a BPF ELF object as a loader
//! such as libbpf would, with its maps created and initialised, every
//! program prepared on an execution engine, ids given to both, and run
//! programs with the kernel's helpers.
//!
//! - [`Loader`]: configuration (engine, possible CPUs, instruction
//!   budget, verification); [`Loader::load`] gives an [`Object`].
//! - [`Object`]: the object's maps ([`ObjectMap`]: name, [`MapId`], the
//!   [`bpfkit_maps::Map`]) and programs ([`ProgramInfo`]: name, section,
//!   [`ProgId`], type), program-array slots ([`Object::set_prog_array`]),
//!   and [`Object::run`], which runs a program over guest memory the
//!   caller prepared (context, packet), following tail calls within the
//!   same run as the kernel does (on the JIT, tail calls between programs
//!   running unchecked stay in the generated code: `bpfkit_jit::TailTable`).
//!
//! Map instantiation: every map of the object is created in one
//! [`MapRegistry`] (ids from 1, in the object's order); global data maps
//! get their section's contents, `.rodata*` is created read-only for
//! programs (`BPF_F_RDONLY_PROG`) and frozen; maps of maps get their
//! `.values` initialisers (inner map ids), program arrays theirs (program
//! ids). Symbolic `lddw`s resolve as follows: `MapIdx` to an address that
//! the helpers map back to the map (never a guest region, so a program
//! cannot dereference it), `MapIdxValue` to the value address inside an
//! array's storage, which every run registers as a guest region.
//!
//! Verification: by default every program whose section implies a type is
//! checked by `bpfkit-verifier` with that type and the object's map
//! definitions in map-table order, once, the first time its verdict is
//! asked ([`Object::report`], [`Object::check`]: before its first run, so
//! that loading stays cheap for programs never run), and the [`Report`] is
//! kept. A rejected program is still loaded and prepared (an
//! object may hold programs that are never run, and embedders such as the
//! benchmarks run programs whose verdict they do not need); [`Object::check`]
//! says whether a program may run, and callers that refuse unverified code
//! (`bpfkit run`) ask it for the program and every tail-call target they
//! install. [`Object::verify_as`] verifies a program with a type its section
//! does not imply. [`Loader::verify`]`(false)` skips verification: then the
//! engines' runtime checks are the only guard.
//!
//! ```no_run
//! use bpfkit::{Engine, Loader};
//! let bytes = std::fs::read("examples/xdp_counter.o").unwrap();
//! let obj = Loader::new().engine(Engine::Interp).load(&bytes).unwrap();
//! for m in obj.maps() {
//!     println!("map {} id {}", m.name, m.id.0);
//! }
//! for p in obj.programs() {
//!     println!("prog {} id {} ({})", p.name, p.id.0, p.section);
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use bpfkit_elf::{ElfError, LoadedObject, MapDefinition};
use bpfkit_helpers::{MapTable, Redirect, RunState, XdpBuff};
use bpfkit_interp::Interpreter;
use bpfkit_isa::{Imm64, Pc};
use bpfkit_jit::{Jit, TailTable};
use bpfkit_maps::{map_flags, update_flags, Map, MapError, MapOptions, MapRegistry, MapType};
use bpfkit_runtime::{Helpers, Memory, Trap, TrapKind};
use bpfkit_verifier::{Options as VerifyOptions, VerifiedProgram};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use thiserror::Error;

pub use bpfkit_abi::{MapId, ProgId, ProgType, XdpAction};
pub use bpfkit_helpers as helpers;
pub use bpfkit_runtime as runtime;
pub use bpfkit_verifier::{Report, Verdict};

/// An execution engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The reference interpreter (`bpfkit-interp`).
    Interp,
    /// The x86-64 JIT (`bpfkit-jit`): checked mode, or unchecked mode for
    /// programs the verifier accepted (see [`Loader::verify`]).
    Jit,
}

impl Engine {
    /// The fastest engine this host supports.
    pub fn fastest() -> Engine {
        if bpfkit_jit::is_supported() {
            Engine::Jit
        } else {
            Engine::Interp
        }
    }

    /// `interp` or `jit`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Interp => "interp",
            Engine::Jit => "jit",
        }
    }

    /// Parses `interp` or `jit`.
    pub fn from_name(name: &str) -> Option<Engine> {
        match name {
            "interp" => Some(Engine::Interp),
            "jit" => Some(Engine::Jit),
            _ => None,
        }
    }
}

/// Why an object could not be loaded or used.
#[derive(Debug, Error)]
pub enum Error {
    /// The ELF loader refused the object.
    #[error("{0}")]
    Elf(#[from] ElfError),
    /// Creating or initialising a map failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map's name.
        map: String,
        /// The cause.
        #[source]
        source: MapError,
    },
    /// A program could not be prepared on the engine.
    #[error("program {program}: cannot prepare it on the {engine} engine: {what}")]
    Compile {
        /// The program.
        program: String,
        /// The engine.
        engine: &'static str,
        /// What failed.
        what: String,
    },
    /// The JIT does not run on this host.
    #[error("the JIT engine is not available on this host (x86-64 Linux only)")]
    NoJit,
    /// No program has this name.
    #[error("no program named {name:?} in the object")]
    NoProgram {
        /// The name asked for.
        name: String,
    },
    /// No map has this name.
    #[error("no map named {name:?} in the object")]
    NoMap {
        /// The name asked for.
        name: String,
    },
    /// The verifier rejected the program.
    #[error("program {program} rejected by the verifier: insn {pc}: {message}")]
    Rejected {
        /// The program.
        program: String,
        /// The instruction slot where the verifier stopped.
        pc: usize,
        /// The verifier's (the kernel's) message.
        message: String,
        /// The verifier's context lines (instruction, earlier kernel
        /// lines, source line).
        context: String,
    },
    /// A map of the wrong type for the operation.
    #[error("map {map} is a {actual} map, not a {expected}")]
    MapType {
        /// The map.
        map: String,
        /// Its type.
        actual: &'static str,
        /// The type needed.
        expected: &'static str,
    },
}

/// Configuration for loading objects.
#[derive(Clone, Debug)]
pub struct Loader {
    engine: Option<Engine>,
    cpus: Option<usize>,
    budget: Option<u64>,
    verify: bool,
    blind: bool,
}

impl Default for Loader {
    fn default() -> Loader {
        Loader::new()
    }
}

impl Loader {
    /// The fastest engine, as many possible CPUs as the host has, no
    /// instruction budget, programs verified.
    pub fn new() -> Loader {
        Loader {
            engine: None,
            cpus: None,
            budget: None,
            verify: true,
            blind: false,
        }
    }

    /// JIT constant blinding (default: off; see
    /// [`bpfkit_jit::Builder::blind_constants`]): no immediate of the
    /// program appears in the machine code. The interpreter ignores it.
    pub fn jit_blind(mut self, on: bool) -> Loader {
        self.blind = on;
        self
    }

    /// Whether to verify programs (default: yes; each once, before its
    /// first run or when its report is asked). Without verification every
    /// program may run and the engines' runtime checks are the only guard.
    /// With verification and the JIT, a program whose report says accepted
    /// runs in the JIT's unchecked mode from its next [`Object::run`] on
    /// (tail-call targets too, once their reports exist: ask
    /// [`Object::check`] for them first).
    pub fn verify(mut self, on: bool) -> Loader {
        self.verify = on;
        self
    }

    /// Uses `engine` (default: [`Engine::fastest`], falling back to the
    /// interpreter for a program the JIT cannot prepare).
    pub fn engine(mut self, engine: Engine) -> Loader {
        self.engine = Some(engine);
        self
    }

    /// Number of possible CPUs (slots of per-CPU maps).
    pub fn possible_cpus(mut self, n: usize) -> Loader {
        self.cpus = Some(n.max(1));
        self
    }

    /// Stops programs after `budget` instructions (a trap).
    pub fn budget(mut self, budget: u64) -> Loader {
        self.budget = Some(budget);
        self
    }

    /// Loads an object: maps created and initialised, programs prepared.
    pub fn load(&self, bytes: &[u8]) -> Result<Object, Error> {
        let elf = LoadedObject::load(bytes)?;
        Object::instantiate(elf, self)
    }
}

/// A map of a loaded object.
#[derive(Debug)]
pub struct ObjectMap {
    /// Its name (global data: the section name).
    pub name: String,
    /// Its id.
    pub id: MapId,
    /// The map.
    pub map: Arc<Map>,
    /// The definition the object gave.
    pub definition: MapDefinition,
}

/// A program of a loaded object.
#[derive(Clone, Debug)]
pub struct ProgramInfo {
    /// Its name (the function symbol).
    pub name: String,
    /// Its ELF section.
    pub section: String,
    /// Its id.
    pub id: ProgId,
    /// The type its section implies, if any.
    pub prog_type: Option<ProgType>,
    /// Instruction slots (with subprograms).
    pub slots: usize,
    /// The engine it runs on.
    pub engine: Engine,
}

enum Exec {
    Interp(Box<Interpreter>),
    Jit(Box<Jit>),
}

impl Exec {
    #[inline]
    fn run(&mut self, mem: &mut Memory<'_>, args: &[u64], st: &mut RunState) -> Result<u64, Trap> {
        match self {
            Exec::Interp(i) => i.run_with_data(mem, args, st),
            Exec::Jit(j) => j.run_typed(mem, args, st),
        }
    }
}

/// Clears what one run of a `--repeat` series reports, before the next.
#[inline(always)]
fn reset_run(state: &mut RunState) {
    state.tail_call = None;
    state.tail_calls = 0;
    state.clear_redirect();
}

/// What a run starts from besides its memory and arguments.
#[derive(Clone, Debug, Default)]
pub struct RunInput {
    /// The CPU number the program sees: below the possible CPUs
    /// ([`Loader::possible_cpus`]), or [`Object::run`] refuses the run
    /// ([`BAD_CPU`]).
    pub cpu: usize,
    /// The packet buffer, for the XDP helpers.
    pub xdp: Option<XdpBuff>,
    /// Fragments of a multi-buffer XDP packet after its linear part.
    pub frags: Vec<Vec<u8>>,
    /// Where time helpers read the time (default:
    /// [`bpfkit_helpers::fallback_clock`]).
    pub clock: Option<bpfkit_helpers::Clock>,
    /// Runs in a row over the same memory (0 counts as 1), each seeing the
    /// packet and maps as the previous one left them, as
    /// `BPF_PROG_TEST_RUN`'s `repeat`; stops at the first trap.
    pub repeat: u32,
}

/// What one run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// `r0` of the last program of the tail-call chain, or its trap.
    pub result: Result<u64, Trap>,
    /// Lines printed with `bpf_trace_printk`.
    pub trace: Vec<String>,
    /// The redirect target the run set, if any.
    pub redirect: Option<Redirect>,
    /// The XDP buffer after the run (moved by `adjust_head`/`_meta`/`_tail`).
    pub xdp: Option<XdpBuff>,
    /// The fragments after the run (`adjust_tail` grows or cuts them).
    pub frags: Vec<Vec<u8>>,
    /// Tail calls taken by the last run.
    pub tail_calls: u32,
    /// Runs done (fewer than asked when one trapped).
    pub runs: u32,
    /// Wall time spent in the programs, over all runs, in nanoseconds
    /// (set-up excluded).
    pub duration_ns: u64,
    /// Guest regions that helpers added to the run's memory for map values
    /// (hash values, ring buffer records, inner arrays) over all runs,
    /// beyond the caller's and the map table's arrays: a caller that
    /// splits a long `--repeat` into calls may make the next call longer
    /// when this stays small (`bpfkit_datapath::XdpRunner` does).
    pub regions_added: usize,
}

/// A loaded object: maps and prepared programs.
pub struct Object {
    elf: LoadedObject,
    registry: MapRegistry,
    maps: Vec<ObjectMap>,
    table: Arc<MapTable>,
    infos: Vec<ProgramInfo>,
    execs: Vec<Exec>,
    verify: bool,
    /// Per program: the report and, when accepted, the proof the JIT's
    /// unchecked mode takes.
    reports: Vec<OnceLock<(Report, Option<VerifiedProgram>)>>,
    /// Per program: whether its verdict was taken into the engine (a JIT
    /// program recompiled unchecked, or nothing to do).
    settled: Vec<bool>,
    /// What compiling needs again when a program moves to unchecked mode.
    helpers: Helpers,
    resolver: ObjResolver,
    /// Native tail calls on the JIT (objects with a program array): the
    /// programs running unchecked, by id, which unchecked code enters
    /// without leaving the run (see `settle_verdicts`).
    tails: Option<Arc<TailTable>>,
    budget: Option<u64>,
    blind: bool,
}

/// Resolves the object's symbolic `lddw`s (see the crate docs).
struct ObjResolver {
    /// Per map: the address the helpers map back to it.
    addrs: Vec<u64>,
    /// Per map: the address of its array storage, if it has one.
    values: Vec<Option<u64>>,
    /// Per map: its layout when it is a plain array (inline lookups).
    arrays: Vec<Option<bpfkit_runtime::ArrayMap>>,
    /// Per map: its slot words when it is a devmap (inline lookups).
    slots: Vec<Option<bpfkit_runtime::SlotMap>>,
    /// Per map: its slot words when it is a program array (native tail
    /// calls).
    progs: Vec<Option<bpfkit_runtime::SlotMap>>,
    /// Per map: its entry table when it is a `devmap_hash` with one
    /// (inline lookups).
    devhash: Vec<Option<bpfkit_runtime::DevhashMap>>,
}

impl bpfkit_runtime::Imm64Resolver for ObjResolver {
    fn resolve(&self, _pc: Pc, imm: &Imm64) -> Option<u64> {
        match *imm {
            Imm64::MapIdx(i) => self.addrs.get(usize::try_from(i).ok()?).copied(),
            Imm64::MapIdxValue { idx, off } => {
                let base = (*self.values.get(usize::try_from(idx).ok()?)?)?;
                Some(base + off as u64)
            }
            _ => None,
        }
    }

    /// Plain and per-CPU arrays, as `bpfkit_maps` lays them out: value
    /// `k` at `k * round_up(value_size, 8)` in `Map::array_storage`, CPU
    /// `c`'s value of key `k` at `(k * possible_cpus + c) *
    /// round_up(value_size, 8)` in `Map::percpu_array_storage`, which is
    /// what `Map::lookup_ptr` (the helper's lookup) returns on CPU `c` for
    /// `k < max_entries`, and NULL above. Runs on a CPU outside the
    /// possible CPUs (where the helper finds nothing) are refused by
    /// `Object::run`, and `Jit::set_cpu` gets the run's CPU before every
    /// batch (`cpus` here is the possible CPUs). The storage lives as long
    /// as the `Map`, which the `Object` holds (in `maps` and its
    /// `MapTable`) for as long as it holds the code compiled with this
    /// resolver. `Object::run` registers the storage of every array of the
    /// table as a region of the run's memory
    /// (`RunState::add_map_regions`, writable unless `BPF_F_RDONLY_PROG`)
    /// before the first instruction of every batch, so helpers accept an
    /// inlined lookup's pointer as they accept the helper's (tested in
    /// `tests/inline.rs`).
    fn array_map(&self, _pc: Pc, imm: &Imm64) -> Option<bpfkit_runtime::ArrayMap> {
        match *imm {
            Imm64::MapIdx(i) => *self.arrays.get(usize::try_from(i).ok()?)?,
            _ => None,
        }
    }

    /// Devmaps, as `bpfkit_maps` keeps them (`Map::devmap_layout`): slot
    /// `k`'s word holds the address of its entry (0 when empty), which is
    /// what `Map::dev_value` (the helper's lookup) points at; the words
    /// and entries live as long as the `Map`, which the `Object` holds for
    /// as long as the code compiled with this resolver; an update takes a
    /// new entry and retires the old one until every run pinned before it
    /// has ended (the run's `RunState` pins for the whole batch).
    /// `Object::run` registers every devmap's entries of the table as one
    /// read-only region of the run's memory (`RunState::add_map_regions`)
    /// before the first instruction of every batch, so helpers accept an
    /// inlined lookup's pointer (tested in `tests/inline_devmap.rs`).
    fn slot_map(&self, _pc: Pc, imm: &Imm64) -> Option<bpfkit_runtime::SlotMap> {
        match *imm {
            Imm64::MapIdx(i) => *self.slots.get(usize::try_from(i).ok()?)?,
            _ => None,
        }
    }

    /// Devmaps (their `slot_map`) with their address: `Object::run` gives
    /// every JIT engine its `RunState`'s record
    /// (`Jit::set_redirect_record`), settles it after the runs, and the
    /// entries the code records are in a region of the run's memory
    /// (`RunState::add_map_regions`); tested in `tests/inline_redirect.rs`.
    fn redirect_map(&self, pc: Pc, imm: &Imm64) -> Option<(bpfkit_runtime::SlotMap, u64)> {
        let map = self.slot_map(pc, imm)?;
        let Imm64::MapIdx(i) = *imm else {
            return None;
        };
        Some((map, *self.addrs.get(usize::try_from(i).ok()?)?))
    }

    /// `devmap_hash`es, as `bpfkit_maps` keeps them
    /// (`Map::devhash_layout`, whose promises are the trait's): the table
    /// and entries live as long as the `Map`, which the `Object` holds for
    /// as long as the code; retired tables and entries wait for every run
    /// pinned before (the run's `RunState` pins for the whole batch).
    /// `Object::run` registers every `devmap_hash`'s entries as one
    /// read-only region of the run's memory (`RunState::add_map_regions`),
    /// so helpers accept an inlined lookup's pointer (tested in
    /// `tests/inline_devhash.rs`).
    fn devhash_map(&self, _pc: Pc, imm: &Imm64) -> Option<bpfkit_runtime::DevhashMap> {
        match *imm {
            Imm64::MapIdx(i) => *self.devhash.get(usize::try_from(i).ok()?)?,
            _ => None,
        }
    }

    /// Every map address this resolver gives is a `bpfkit_maps::Map`'s
    /// own (`MapTable::addr_of`), and so is every inner map a map-in-map
    /// lookup of `bpfkit_helpers` returns: a `Map` starts with its
    /// `MapHeader` (`#[repr(C)]`, fixed at creation, `array_base` set only
    /// for plain arrays programs may write, the storage `Map::lookup_ptr`
    /// returns pointers into). The `Object` holds the table's maps, and a
    /// run's `RunState` the inner maps it handed out, for as long as the
    /// run may use them; the table's arrays are regions of every run's
    /// memory (`add_map_regions`) and an inner array outside the table
    /// becomes one when the lookup hands it out (tested in
    /// `tests/inline_inner.rs`).
    fn map_headers(&self) -> bool {
        true
    }

    /// `bpfkit_helpers`' `bpf_get_smp_processor_id` returns
    /// `RunState::cpu`, which `Object::run` also gives the JIT
    /// (`Jit::set_cpu`).
    fn inline_cpu_id(&self) -> bool {
        true
    }

    /// The object's maps enter the run's `MapTable` in map order (`load`
    /// inserts each, all distinct), so map `i` is the table's entry `i`:
    /// the hint `bpfkit_helpers`' `bpf_map_lookup_elem` checks against its
    /// `r1` before using it.
    fn table_index(&self, _pc: Pc, imm: &Imm64) -> Option<u32> {
        match *imm {
            Imm64::MapIdx(i) => (usize::try_from(i).ok()? < self.addrs.len()).then_some(i as u32),
            _ => None,
        }
    }

    /// Program arrays, as `bpfkit_maps` keeps them
    /// (`Map::prog_array_words`: 0 for an empty slot, `1 << 32 | id`
    /// otherwise, written atomically), the words `bpf_tail_call` of
    /// `bpfkit_helpers` reads (`Map::prog_at`); ids are the object's
    /// program ids, which index the `TailTable` the JIT code is compiled
    /// with. The map lives as long as the `Object`, which holds the code.
    fn prog_array(&self, _pc: Pc, imm: &Imm64) -> Option<bpfkit_runtime::SlotMap> {
        match *imm {
            Imm64::MapIdx(i) => *self.progs.get(usize::try_from(i).ok()?)?,
            _ => None,
        }
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("maps", &self.maps)
            .field("programs", &self.infos)
            .finish_non_exhaustive()
    }
}

fn map_err(name: &str) -> impl Fn(MapError) -> Error + '_ {
    move |source| Error::Map {
        map: name.to_string(),
        source,
    }
}

impl Object {
    fn instantiate(elf: LoadedObject, cfg: &Loader) -> Result<Object, Error> {
        let mut opts = MapOptions::new();
        if let Some(n) = cfg.cpus {
            opts = opts.possible_cpus(n);
        }
        let registry = MapRegistry::new(opts);
        let mut maps = Vec::new();
        for d in &elf.maps {
            let mut def = d.def.clone();
            if d.frozen {
                def.map_flags |= map_flags::RDONLY_PROG;
            }
            let (id, map) = registry.create(def).map_err(map_err(&d.name))?;
            if let Some(data) = &d.initial_data {
                map.update(&0u32.to_ne_bytes(), data, update_flags::ANY)
                    .map_err(map_err(&d.name))?;
            }
            if d.frozen {
                map.freeze().map_err(map_err(&d.name))?;
            }
            maps.push(ObjectMap {
                name: d.name.clone(),
                id,
                map,
                definition: d.clone(),
            });
        }
        // `.values` of maps of maps: inner map ids.
        for m in &maps {
            if !m.map.map_type().is_map_in_map() {
                continue;
            }
            for slot in &m.definition.initial_values {
                let inner =
                    maps.iter()
                        .find(|x| x.name == slot.target)
                        .ok_or_else(|| Error::NoMap {
                            name: slot.target.clone(),
                        })?;
                m.map
                    .update(
                        &slot.index.to_ne_bytes(),
                        &inner.id.0.to_ne_bytes(),
                        update_flags::ANY,
                    )
                    .map_err(map_err(&m.name))?;
            }
        }
        let mut table = MapTable::new(Some(registry.clone()));
        let addrs: Vec<u64> = maps.iter().map(|m| table.insert(m.map.clone())).collect();
        let values: Vec<Option<u64>> = maps
            .iter()
            .map(|m| m.map.array_storage().map(|v| v.addr()))
            .collect();
        let arrays = maps
            .iter()
            .map(|m| {
                let def = m.map.def();
                (def.key_size == 4).then_some(())?;
                let slot = def.value_size.checked_next_multiple_of(8)?;
                if let Some(storage) = m.map.array_storage() {
                    return Some(bpfkit_runtime::ArrayMap::plain(
                        storage.addr(),
                        slot,
                        def.max_entries,
                    ));
                }
                let storage = m.map.percpu_array_storage()?;
                let cpus = u32::try_from(m.map.possible_cpus()).ok()?;
                Some(bpfkit_runtime::ArrayMap {
                    base: storage.addr(),
                    stride: slot.checked_mul(cpus)?,
                    max_entries: def.max_entries,
                    cpu_stride: slot,
                    cpus,
                })
            })
            .collect();
        let slots = maps
            .iter()
            .map(|m| {
                let d = m.map.devmap_layout()?;
                Some(bpfkit_runtime::SlotMap {
                    slots: d.slots,
                    max_entries: d.max_entries,
                })
            })
            .collect();
        let devhash = maps
            .iter()
            .map(|m| {
                let d = m.map.devhash_layout()?;
                Some(bpfkit_runtime::DevhashMap {
                    table: d.table,
                    mult: d.mult,
                    bits: d.bits,
                })
            })
            .collect();
        let progs: Vec<Option<bpfkit_runtime::SlotMap>> = maps
            .iter()
            .map(|m| {
                let (slots, max_entries) = m.map.prog_array_words()?;
                Some(bpfkit_runtime::SlotMap { slots, max_entries })
            })
            .collect();
        // Program ids are 1..=n (see below).
        let tails = progs.iter().any(Option::is_some).then(|| {
            TailTable::new::<RunState>(elf.programs.len() as u32 + 1, |st| &mut st.tail_calls)
        });
        let resolver = ObjResolver {
            addrs,
            values,
            arrays,
            slots,
            progs,
            devhash,
        };
        let mut helpers = Helpers::new();
        bpfkit_helpers::register(&mut helpers);
        let wanted = cfg.engine.unwrap_or_else(Engine::fastest);
        if wanted == Engine::Jit && !bpfkit_jit::is_supported() {
            return Err(Error::NoJit);
        }
        let mut infos = Vec::new();
        let mut execs = Vec::new();
        for (i, p) in elf.programs.iter().enumerate() {
            let (exec, engine) = match wanted {
                Engine::Jit => {
                    let b = jit_builder(&resolver, cfg.budget, cfg.blind, tails.as_ref());
                    match b.build(&p.insns, &helpers) {
                        Ok(j) => (exec_jit(j), Engine::Jit),
                        Err(e) if cfg.engine == Some(Engine::Jit) => {
                            return Err(Error::Compile {
                                program: p.name.clone(),
                                engine: "jit",
                                what: e.to_string(),
                            })
                        }
                        Err(_) => (interp(p, &helpers, &resolver, cfg)?, Engine::Interp),
                    }
                }
                Engine::Interp => (interp(p, &helpers, &resolver, cfg)?, Engine::Interp),
            };
            infos.push(ProgramInfo {
                name: p.name.clone(),
                section: p.section.clone(),
                id: ProgId(i as u32 + 1),
                prog_type: p.prog_type().ok(),
                slots: p.insns.slot_count(),
                engine,
            });
            execs.push(exec);
        }
        let obj = Object {
            elf,
            registry,
            maps,
            table: Arc::new(table),
            reports: (0..infos.len()).map(|_| OnceLock::new()).collect(),
            settled: vec![false; infos.len()],
            infos,
            execs,
            verify: cfg.verify,
            helpers,
            resolver,
            tails,
            budget: cfg.budget,
            blind: cfg.blind,
        };
        // `.values` of program arrays: program ids.
        for m in &obj.maps {
            if m.map.map_type() != MapType::ProgArray {
                continue;
            }
            for slot in &m.definition.initial_values {
                obj.set_prog_array(&m.name, slot.index, &slot.target)?;
            }
        }
        Ok(obj)
    }

    /// The object as the ELF loader read it (BTF, line info, ...).
    pub fn elf(&self) -> &LoadedObject {
        &self.elf
    }

    /// The registry holding the object's maps.
    pub fn registry(&self) -> &MapRegistry {
        &self.registry
    }

    /// The maps, in the object's order.
    pub fn maps(&self) -> &[ObjectMap] {
        &self.maps
    }

    /// The map named `name`.
    pub fn map(&self, name: &str) -> Result<&ObjectMap, Error> {
        self.maps
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::NoMap { name: name.into() })
    }

    /// The programs, in the object's order (program `i` has id `i + 1`).
    pub fn programs(&self) -> &[ProgramInfo] {
        &self.infos
    }

    /// The index of the program named `name`.
    pub fn program_index(&self, name: &str) -> Result<usize, Error> {
        self.infos
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| Error::NoProgram { name: name.into() })
    }

    /// The index of the program with id `id`.
    pub fn program_by_id(&self, id: ProgId) -> Option<usize> {
        self.infos.iter().position(|p| p.id == id)
    }

    /// Verifies program `prog` (an index into [`Object::programs`]) as a
    /// program of type `t`, with the object's map definitions, and keeps
    /// the report (replacing an earlier one).
    pub fn verify_as(&mut self, prog: usize, t: ProgType) -> &Report {
        let report = self.verify_with(prog, t);
        self.reports[prog] = OnceLock::from(report);
        // A new verdict: the engine follows it at the next run (back to
        // checked mode if the program is now rejected).
        self.settled[prog] = false;
        &self.reports[prog].get().expect("just set").0
    }

    fn verify_with(&self, prog: usize, t: ProgType) -> (Report, Option<VerifiedProgram>) {
        let p = &self.elf.programs[prog];
        // Frozen maps (`.rodata*`) as the registry created them
        // (`BPF_F_RDONLY_PROG`), so that the verifier refuses writes to them
        // as the checked engines do at run time.
        let maps: Vec<bpfkit_abi::MapDef> = self
            .elf
            .maps
            .iter()
            .map(|m| {
                let mut d = m.def.clone();
                if m.frozen {
                    d.map_flags |= map_flags::RDONLY_PROG;
                }
                d
            })
            .collect();
        let opts = VerifyOptions {
            line_info: p
                .line_info
                .iter()
                .map(|l| (l.insn, format!("{} @ {}:{}", l.line, l.file, l.line_num)))
                .collect(),
            ..VerifyOptions::default()
        };
        VerifiedProgram::verify(&p.insns, t, &maps, &opts)
    }

    /// Whether programs are verified (see [`Loader::verify`]).
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The verifier's report on program `prog`: verified now if it was not
    /// yet, as the type its section implies. `None` when verification is
    /// off, or the section implies no type and [`Object::verify_as`] was not
    /// called.
    pub fn report(&self, prog: usize) -> Option<&Report> {
        let cell = self.reports.get(prog)?;
        if let Some(r) = cell.get() {
            return Some(&r.0);
        }
        if !self.verify {
            return None;
        }
        let t = self.infos[prog].prog_type?;
        Some(&cell.get_or_init(|| self.verify_with(prog, t)).0)
    }

    /// `Ok` when program `prog` may run: verification is off, or the
    /// verifier did not reject it. A program never verified (its section
    /// implies no type and [`Object::verify_as`] was not called) may run.
    pub fn check(&self, prog: usize) -> Result<(), Error> {
        if !self.verify {
            return Ok(());
        }
        match self.report(prog) {
            Some(r) if r.verdict == Verdict::Rejected => {
                let (pc, message, context) = match &r.error {
                    Some(e) => (e.pc, e.message.clone(), e.context.clone()),
                    None => (0, "rejected".to_string(), String::new()),
                };
                Err(Error::Rejected {
                    program: self.infos[prog].name.clone(),
                    pc,
                    message,
                    context,
                })
            }
            _ => Ok(()),
        }
    }

    /// Puts program `prog` into slot `index` of program array `map` (see
    /// [`Object::check`] to refuse rejected programs first).
    pub fn set_prog_array(&self, map: &str, index: u32, prog: &str) -> Result<(), Error> {
        let m = self.map(map)?;
        if m.map.map_type() != MapType::ProgArray {
            return Err(Error::MapType {
                map: map.into(),
                actual: m.map.map_type().name(),
                expected: "prog_array",
            });
        }
        let id = self.infos[self.program_index(prog)?].id;
        m.map
            .update(&index.to_ne_bytes(), &id.0.to_ne_bytes(), update_flags::ANY)
            .map_err(map_err(map))
    }

    /// Runs program `prog` (an index into [`Object::programs`]) with
    /// `args` (`r1` = the context address) over `mem`, which holds the
    /// caller's regions (context, packet); the maps' regions are added
    /// here. A successful tail call runs the target next with the same
    /// arguments, as the kernel does. `input` gives the CPU number and,
    /// for XDP, the packet buffer (a CPU at or above the possible CPUs:
    /// nothing runs, the result is an `Unsupported` trap saying
    /// [`BAD_CPU`]). It runs whatever it is given: callers that want only
    /// verified programs ask [`Object::check`] first.
    pub fn run(
        &mut self,
        prog: usize,
        mem: Memory<'_>,
        args: &[u64],
        input: RunInput,
    ) -> RunOutcome {
        if self.verify {
            self.settle_verdicts();
        }
        let RunInput {
            cpu,
            xdp,
            frags,
            clock,
            repeat,
        } = input;
        // The kernel has no run on a CPU that is not possible: here the
        // helpers would find no per-CPU value, where inline lookups in
        // arrays and `bpf_get_smp_processor_id` would not notice. Refused
        // on every engine alike; the JIT gets the CPU before every batch
        // (its code reads it for those inline forms).
        let possible = self.registry.options().cpus();
        let on_cpu = cpu < possible
            && self.execs.iter_mut().all(|e| match e {
                Exec::Jit(j) => j.set_cpu(cpu),
                Exec::Interp(_) => true,
            });
        if !on_cpu {
            return RunOutcome {
                result: Err(Trap::new(Pc(0), TrapKind::Unsupported { what: BAD_CPU })),
                trace: Vec::new(),
                redirect: None,
                xdp,
                frags,
                tail_calls: 0,
                runs: 0,
                duration_ns: 0,
                regions_added: 0,
            };
        }
        let ((result, runs, duration_ns, regions_added), mut state) =
            RunState::scoped(self.table.clone(), cpu, mem, |mem, state| {
                state.xdp = xdp;
                state.frags = frags;
                if let Some(c) = clock {
                    state.clock = c;
                }
                state.add_map_regions(mem);
                let base = mem.regions().len();
                // One clock read around the whole loop, as the kernel's
                // test timer does.
                let t = Instant::now();
                let want = repeat.max(1);
                let mut runs = 0;
                let r = if matches!(self.execs.get(prog), Some(Exec::Jit(_))) {
                    loop {
                        reset_run(state);
                        let r = self.jit_series(prog, mem, args, state, want - runs, &mut runs);
                        if r.is_err() || runs >= want {
                            break r;
                        }
                    }
                } else {
                    loop {
                        reset_run(state);
                        let r = self.run_chain(prog, mem, args, state);
                        runs += 1;
                        if r.is_err() || runs >= want {
                            break r;
                        }
                    }
                };
                let ns = t.elapsed().as_nanos() as u64;
                state.settle_redirect(mem);
                (r, runs, ns, mem.regions().len().saturating_sub(base))
            });
        RunOutcome {
            result,
            runs,
            duration_ns,
            trace: std::mem::take(&mut state.trace),
            redirect: state.redirect,
            xdp: state.xdp,
            frags: std::mem::take(&mut state.frags),
            tail_calls: state.tail_calls,
            regions_added,
        }
    }

    /// Whether program `prog` runs in the JIT's unchecked mode (it did
    /// since its last [`Object::run`]: the switch happens there, once the
    /// program's report says accepted).
    pub fn runs_unchecked(&self, prog: usize) -> bool {
        matches!(self.execs.get(prog), Some(Exec::Jit(j)) if j.is_unchecked())
    }

    /// Whether a tail call to program `prog` from unchecked JIT code of
    /// program `from` enters it without leaving the JIT (it runs unchecked
    /// since the last [`Object::run`], with the same context layout, and
    /// can be entered so: no budget, no blinding); otherwise such a tail
    /// call ends `from` and [`Object::run`] runs `prog` next.
    pub fn tail_calls_native(&self, from: usize, prog: usize) -> bool {
        let (Some(t), Some(Exec::Jit(j)), Some(info)) =
            (&self.tails, self.execs.get(from), self.infos.get(prog))
        else {
            return false;
        };
        t.is_published(info.id.0, j)
    }

    /// Engine selection after verification: a JIT program whose report
    /// exists and says accepted is recompiled in unchecked mode from its
    /// [`VerifiedProgram`]; one whose report says rejected, or that was
    /// never verified, keeps (or gets back) checked code. Each verdict is
    /// taken once; the loop costs a flag test per program afterwards.
    /// Unchecked code is published in the object's [`TailTable`] under
    /// the program's id (tail calls from unchecked code enter it without
    /// leaving the run); a program back in checked mode is taken out
    /// (its tail calls go through the helper and [`Object::run`]).
    fn settle_verdicts(&mut self) {
        for i in 0..self.execs.len() {
            if self.settled[i] {
                continue;
            }
            let Some((_, verified)) = self.reports[i].get() else {
                // Not verified (yet): checked code, decided again later.
                continue;
            };
            self.settled[i] = true;
            let Exec::Jit(old) = &self.execs[i] else {
                continue;
            };
            let tails = self.tails.as_ref();
            let b = jit_builder(&self.resolver, self.budget, self.blind, tails);
            let new = match verified {
                Some(v) => b.build_verified(v, &self.helpers),
                None if old.is_unchecked() => b.build(&self.elf.programs[i].insns, &self.helpers),
                None => continue,
            };
            // A failure here (out of code memory) keeps the checked code,
            // which is always correct.
            if let Ok(j) = new {
                if let Some(t) = tails {
                    // Refused (and the id cleared) unless unchecked and
                    // enterable (no budget, blinding, ...).
                    t.publish(self.infos[i].id.0, &j);
                }
                self.execs[i] = exec_jit(j);
            }
        }
    }

    /// Up to `max` runs of JIT program `prog` in a row (at least one),
    /// each with its tail calls, counted in `runs`; returns the last run's
    /// result. Runs without a tail call go on inside one
    /// [`Jit::run_repeat`] (the per-run state reset between them, as the
    /// caller's loop does); a run that asks for a tail call or traps ends
    /// the series there, and its tail calls are followed here.
    #[inline]
    fn jit_series(
        &mut self,
        prog: usize,
        mem: &mut Memory<'_>,
        args: &[u64],
        state: &mut RunState,
        max: u32,
        runs: &mut u32,
    ) -> Result<u64, Trap> {
        let Some(Exec::Jit(j)) = self.execs.get_mut(prog) else {
            // The caller checked; the interpreter's way, just in case.
            *runs += 1;
            return self.run_chain(prog, mem, args, state);
        };
        let mut done = 0;
        let r = j.run_repeat(mem, args, state, |st, _| {
            done += 1;
            if done >= max || st.tail_call.is_some() {
                return false;
            }
            reset_run(st);
            true
        });
        // A trap ends the series without `again`.
        *runs += done + r.is_err() as u32;
        self.follow_tail_calls(r, mem, args, state)
    }

    /// One run of program `prog` with its tail calls.
    #[inline]
    fn run_chain(
        &mut self,
        prog: usize,
        mem: &mut Memory<'_>,
        args: &[u64],
        state: &mut RunState,
    ) -> Result<u64, Trap> {
        let mut idx = prog;
        loop {
            let Some(exec) = self.execs.get_mut(idx) else {
                return Err(not_loaded());
            };
            let r = exec.run(mem, args, state);
            // Without a tail call the result goes straight back (no move
            // of the `Result` through a tuple: this runs once per packet).
            let Some(id) = state.tail_call.take() else {
                return r;
            };
            r?;
            idx = self.program_by_id(id).unwrap_or(usize::MAX);
        }
    }

    /// The rest of a run whose first program returned `r`: the programs
    /// its successful tail calls ask for, in turn.
    #[inline]
    fn follow_tail_calls(
        &mut self,
        mut r: Result<u64, Trap>,
        mem: &mut Memory<'_>,
        args: &[u64],
        state: &mut RunState,
    ) -> Result<u64, Trap> {
        // Without a tail call the result goes straight back (no move of
        // the `Result` through a tuple: this runs once per packet).
        while let Some(id) = state.tail_call.take() {
            r?;
            let idx = self.program_by_id(id).unwrap_or(usize::MAX);
            let Some(exec) = self.execs.get_mut(idx) else {
                return Err(not_loaded());
            };
            r = exec.run(mem, args, state);
        }
        r
    }
}

/// What [`Object::run`] reports for a [`RunInput::cpu`] at or above the
/// possible CPUs ([`Loader::possible_cpus`]).
pub const BAD_CPU: &str = "a run on a CPU at or above the possible CPUs (Loader::possible_cpus)";

#[cold]
fn not_loaded() -> Trap {
    Trap::new(
        Pc(0),
        TrapKind::Unsupported {
            what: "tail call to a program that is not loaded",
        },
    )
}

/// A JIT engine for runs over a `RunState`, whose code records the
/// `bpf_redirect_map`s it answers in the state's record (taken by
/// `RunState::settle_redirect` at the end of `Object::run`).
fn exec_jit(mut j: Jit) -> Exec {
    j.set_redirect_record::<RunState>(RunState::redirect_record);
    Exec::Jit(Box::new(j))
}

fn jit_builder<'r>(
    resolver: &'r ObjResolver,
    budget: Option<u64>,
    blind: bool,
    tails: Option<&'r Arc<TailTable>>,
) -> bpfkit_jit::Builder<'r> {
    let mut b = Jit::builder().resolver(resolver).blind_constants(blind);
    if let Some(t) = tails {
        b = b.tail_calls(t);
    }
    if let Some(n) = budget {
        b = b.budget(n);
    }
    b
}

fn interp(
    p: &bpfkit_elf::LoadedProgram,
    helpers: &Helpers,
    resolver: &dyn bpfkit_runtime::Imm64Resolver,
    cfg: &Loader,
) -> Result<Exec, Error> {
    let mut b = Interpreter::builder().resolver(resolver);
    if let Some(n) = cfg.budget {
        b = b.budget(n);
    }
    b.build(&p.insns, helpers)
        .map(|i| Exec::Interp(Box::new(i)))
        .map_err(|e| Error::Compile {
            program: p.name.clone(),
            engine: "interp",
            what: e.to_string(),
        })
}
