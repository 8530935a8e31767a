//! # bpfkit-difftest
//!
//! The differential test suite of bpfkit: XDP programs in C
//! (`tests/xdp/*.c`, compiled objects committed beside them) run over lists of
//! packets from the same initial maps in the Linux kernel
//! (`BPF_PROG_TEST_RUN`, through [`bpfkit_kernel`]) and in bpfkit
//! (`bpfkit run --json`); the return values, output packets and every map
//! after the last packet must be identical once normalised.
//!
//! - [`spec`]: the test specs (`tests/xdp/<name>.json`).
//! - [`kernel`]: the kernel side, producing a `bpfkit run --json` document.
//! - [`bpfkit`]: the bpfkit side, by running the `bpfkit` binary.
//! - [`compare`]: normalisation (per-CPU sums, map ids, time stamps) and the
//!   comparison, a pure function over two documents.
//!
//! `tests/xdp/README.md` lists the programs, the map types and helpers each
//! uses, and the normalisations.
//!
//! ```no_run
//! use bpfkit_difftest::{compare, kernel, rules_for, spec::Spec};
//! let path = std::path::Path::new("tests/xdp/lb_tx.json");
//! let spec = Spec::read(path).unwrap();
//! let object = std::fs::read(spec.object_path(path)).unwrap();
//! let run = kernel::run(&spec, &object).unwrap();
//! let rules = rules_for(&spec, &object).unwrap();
//! assert!(compare::compare(&run.doc, &run.doc, &rules).is_empty());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bpfkit;
pub mod compare;
pub mod hex;
pub mod kernel;
pub mod spec;

use bpfkit_elf::LoadedObject;
use compare::{Rule, Rules};
use spec::Spec;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors of a differential run.
#[derive(Debug, Error)]
pub enum DiffError {
    /// A spec file is unreadable or inconsistent.
    #[error("spec {spec}: {what}")]
    Spec {
        /// The spec's path.
        spec: String,
        /// What is wrong.
        what: String,
    },
    /// Setting up the object (maps, programs, slots) failed.
    #[error("{what}")]
    Setup {
        /// What failed.
        what: String,
    },
    /// A `bpf()` call failed.
    #[error("kernel: {what}: {error}")]
    Kernel {
        /// The map or step.
        what: String,
        /// The error.
        error: String,
    },
    /// The kernel's verifier rejected a program.
    #[error("the kernel rejected {program}: {error}")]
    Rejected {
        /// The program.
        program: String,
        /// The error's summary.
        error: String,
        /// The verifier log.
        log: String,
    },
    /// Running bpfkit failed.
    #[error("bpfkit: {what}")]
    Bpfkit {
        /// What failed.
        what: String,
    },
}

/// The normalisation rules of a spec: automatic ones from the object's map
/// types (per-CPU sums, map ids of maps of maps) and the spec's field rules.
pub fn rules_for(spec: &Spec, object: &[u8]) -> Result<Rules, DiffError> {
    let obj = LoadedObject::load(object).map_err(|e| DiffError::Setup {
        what: format!("loading {}: {e}", spec.object),
    })?;
    let mut rules = Rules::default();
    for m in &obj.maps {
        if m.def.map_type.is_percpu() {
            rules.add(
                &m.name,
                Rule::PercpuSum {
                    value_size: m.def.value_size as usize,
                },
            );
        }
        if m.def.map_type.is_map_in_map() {
            rules.add(&m.name, Rule::MapIds);
        }
    }
    for r in &spec.normalise {
        let whole = r.offset == 0 && r.len.is_none();
        let rule = match r.rule.as_str() {
            "nonzero" => Rule::Nonzero {
                offset: r.offset,
                len: r.len,
            },
            _ if whole => Rule::IgnoreMap,
            _ => Rule::Ignore {
                offset: r.offset,
                len: r.len,
            },
        };
        if obj.map(&r.map).is_none() {
            return Err(DiffError::Spec {
                spec: spec.object.clone(),
                what: format!("normalise: no map {:?}", r.map),
            });
        }
        rules.add(&r.map, rule);
    }
    Ok(rules)
}

/// The folder of the suite: `tests/xdp` at the workspace root.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/xdp")
}

/// Every spec of the suite, sorted by name.
pub fn spec_paths() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
