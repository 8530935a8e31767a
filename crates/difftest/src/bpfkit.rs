//! The bpfkit side: `bpfkit run --json` with the spec turned into flags.

use crate::spec::Spec;
use crate::{hex, DiffError};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the `bpfkit` binary with a working `run` subcommand is: `$BPFKIT_BIN`,
/// else `bpfkit` beside the test binary's target folder, else on `PATH`.
/// `None` when none answers `bpfkit run --help` successfully.
pub fn find_binary() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("BPFKIT_BIN") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/deps/<test> -> target/<profile>/bpfkit
        if let Some(profile) = exe.parent().and_then(Path::parent) {
            candidates.push(profile.join("bpfkit"));
        }
    }
    candidates.push(PathBuf::from("bpfkit"));
    candidates.into_iter().find(|bin| {
        Command::new(bin)
            .args(["run", "--help"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// Programs that the kernel accepts but bpfkit's verifier still rejects
/// (verifier gaps, not unsafe programs): their specs run with
/// `--no-verify`, so the engines' runtime checks are the only guard. Remove
/// an entry once `bpfkit verify tests/xdp/<object>.o` accepts the program.
/// Empty now: every kernel-accepted program of the suite verifies.
pub const UNVERIFIED: &[(&str, &str)] = &[];

/// The arguments of `bpfkit run` for a spec (after the object path).
pub fn run_args(spec: &Spec) -> Vec<String> {
    let mut args = vec!["--prog".to_string(), spec.program.clone()];
    for (map, entries) in &spec.maps {
        for e in entries {
            args.push("--map-update".into());
            args.push(map.clone());
            args.push(hex::encode(&hex::decode(&e.key).unwrap_or_default()));
            args.push(hex::encode(&hex::decode(&e.value).unwrap_or_default()));
        }
    }
    for (map, slots) in &spec.prog_array {
        for (slot, prog) in slots {
            args.push("--prog-array".into());
            args.push(map.clone());
            args.push(slot.to_string());
            args.push(prog.clone());
        }
    }
    if let Some(c) = &spec.ctx_in {
        args.push("--ctx-in".into());
        args.push(hex::encode(&hex::decode(c).unwrap_or_default()));
    }
    for p in &spec.packets {
        args.push("--packet".into());
        args.push(hex::encode(&p.hex.bytes().unwrap_or_default()));
    }
    // `run` verifies only on request (--verify): ask for it, so every
    // spec also checks that bpfkit's verifier accepts what the kernel does.
    if UNVERIFIED.iter().any(|(p, _)| *p == spec.program) {
        args.push("--no-verify".into());
    } else {
        args.push("--verify".into());
    }
    args.push("--json".into());
    args
}

/// Runs the spec with `bpfkit run --json` and parses its document.
pub fn run(bin: &Path, spec: &Spec, object: &Path) -> Result<Value, DiffError> {
    let mut attempt = 0;
    let out = loop {
        match Command::new(bin)
            .arg("run")
            .arg(object)
            .args(run_args(spec))
            .output()
        {
            // a binary written just now can be briefly busy while another
            // thread's child still holds it open (ETXTBSY)
            Err(e) if e.raw_os_error() == Some(26) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => {
                break r.map_err(|e| DiffError::Bpfkit {
                    what: format!("running {}: {e}", bin.display()),
                })?
            }
        }
    };
    if !out.status.success() {
        return Err(DiffError::Bpfkit {
            what: format!(
                "bpfkit run exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| DiffError::Bpfkit {
        what: format!("bpfkit run --json printed no JSON document: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_contract() {
        let spec: Spec = serde_json::from_str(
            r#"{"object": "a.o", "program": "p", "ctx_in": "00 00",
                "maps": {"m": [{"key": "01 00", "value": "FF"}]},
                "prog_array": {"jt": {"2": "q"}},
                "packets": [{"name": "x", "hex": ["aa", "bb"]}, {"name": "y", "hex": "cc"}]}"#,
        )
        .unwrap();
        assert_eq!(
            run_args(&spec).join(" "),
            "--prog p --map-update m 0100 ff --prog-array jt 2 q --ctx-in 0000 \
             --packet aabb --packet cc --verify --json"
        );
    }
}
