//! `bpfkit verify OBJECT [--prog NAME] [--type TYPE] [--unprivileged]
//! [--log-level 0|1|2] [--json]`

use crate::{read_input, write_stdout, CmdResult};
use anyhow::anyhow;
use bpfkit_abi::{MapDef, ProgType};
use bpfkit_elf::LoadedObject;
use bpfkit_verifier::{verify, Options, Report, Verdict};
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A BPF ELF object, as built by `clang -target bpf`.
    object: PathBuf,
    /// Only this program: a function name or a section name.
    #[arg(long, value_name = "NAME")]
    prog: Option<String>,
    /// Program type, overriding the one the section name implies (`xdp`,
    /// `socket_filter`, `sched_cls`, `sched_act`, `sock_ops`, `kprobe`, ...).
    #[arg(long = "type", value_name = "TYPE")]
    prog_type: Option<String>,
    /// Verify as a loader without CAP_BPF and CAP_PERFMON would load it:
    /// pointer leaks (into maps, helpers, the return value), pointer
    /// comparisons, uninitialised stack reads, loops, bpf-to-bpf calls and
    /// function pointers are refused, and pointer arithmetic follows the
    /// kernel's Spectre v1 rules (no offsets of mixed sign, one mask per
    /// instruction on every path).
    #[arg(long)]
    unprivileged: bool,
    /// 0: verdicts only; 1: the instructions explored and the states at
    /// branches; 2: also the registers after every instruction.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    log_level: u8,
    /// One JSON document: {"programs": [{"name", "section", "type",
    /// "verdict", "error": null | {"insn", "message"}, "insns_processed",
    /// "states", "time_us"}]}.
    #[arg(long)]
    json: bool,
}

/// One verified (or unloadable) program.
struct Outcome {
    name: String,
    section: String,
    prog_type: String,
    report: Option<Report>,
    load_error: Option<String>,
}

pub fn run(args: Args) -> CmdResult {
    let name = args.object.display().to_string();
    let data = read_input(&args.object)?;
    let obj = LoadedObject::load(&data).map_err(|e| anyhow!("{name}: {e}"))?;
    let forced = match &args.prog_type {
        Some(t) => Some(
            ProgType::from_name(t)
                .or_else(|| ProgType::from_name(&t.replace('-', "_")))
                .ok_or_else(|| anyhow!("unknown program type '{t}'"))?,
        ),
        None => None,
    };
    let wanted = |n: &str, s: &str| args.prog.as_deref().is_none_or(|w| w == n || w == s);
    let maps: Vec<MapDef> = obj.maps.iter().map(|m| m.def.clone()).collect();
    let mut outcomes = Vec::new();
    for p in obj.programs.iter().filter(|p| wanted(&p.name, &p.section)) {
        let t = match forced {
            Some(t) => t,
            None => p.prog_type().map_err(|e| {
                anyhow!(
                    "{name}: {e}; pass --type to say what program '{}' is",
                    p.name
                )
            })?,
        };
        let opts = Options {
            unprivileged: args.unprivileged,
            log_level: args.log_level,
            line_info: p
                .line_info
                .iter()
                .map(|l| (l.insn, format!("{} @ {}:{}", l.line, l.file, l.line_num)))
                .collect(),
            ..Options::default()
        };
        let report = verify(&p.insns, t, &maps, &opts);
        outcomes.push(Outcome {
            name: p.name.clone(),
            section: p.section.clone(),
            prog_type: t.name().to_string(),
            report: Some(report),
            load_error: None,
        });
    }
    for f in obj.failed.iter().filter(|f| wanted(&f.name, &f.section)) {
        let t = forced
            .or_else(|| ProgType::from_section(&f.section))
            .map_or("unknown", |t| t.name());
        outcomes.push(Outcome {
            name: f.name.clone(),
            section: f.section.clone(),
            prog_type: t.to_string(),
            report: None,
            load_error: Some(f.error.to_string()),
        });
    }
    if outcomes.is_empty() {
        let mut all: Vec<&str> = obj.programs.iter().map(|p| p.name.as_str()).collect();
        all.extend(obj.failed.iter().map(|f| f.name.as_str()));
        return Err(match &args.prog {
            Some(w) => anyhow!(
                "no program named '{w}' in {name} (programs: {})",
                all.join(", ")
            ),
            None => anyhow!("{name} holds no program"),
        });
    }
    let rejected = outcomes.iter().any(|o| {
        o.report
            .as_ref()
            .is_none_or(|r| r.verdict == Verdict::Rejected)
    });
    let text = if args.json {
        json_output(&outcomes)
    } else {
        text_output(&outcomes)
    };
    write_stdout(text.as_bytes())?;
    Ok(ExitCode::from(u8::from(rejected)))
}

fn json_output(outcomes: &[Outcome]) -> String {
    let programs: Vec<_> = outcomes
        .iter()
        .map(|o| {
            let mut v = json!({
                "name": o.name,
                "section": o.section,
                "type": o.prog_type,
            });
            match (&o.report, &o.load_error) {
                (Some(r), _) => {
                    v["verdict"] = json!(if r.verdict == Verdict::Accepted {
                        "accepted"
                    } else {
                        "rejected"
                    });
                    v["error"] = match &r.error {
                        Some(e) => json!({"insn": e.pc, "message": e.message}),
                        None => serde_json::Value::Null,
                    };
                    v["insns_processed"] = json!(r.insns_processed);
                    v["states"] = json!(r.states);
                    v["time_us"] = json!(r.time.as_micros() as u64);
                    if !r.log.is_empty() {
                        v["log"] = json!(r.log);
                    }
                }
                (None, e) => {
                    v["verdict"] = json!("rejected");
                    v["error"] = json!({"insn": 0, "message": format!("cannot load: {}", e.as_deref().unwrap_or(""))});
                    v["insns_processed"] = json!(0);
                    v["states"] = json!(0);
                    v["time_us"] = json!(0);
                }
            }
            v
        })
        .collect();
    let mut s = json!({ "programs": programs }).to_string();
    s.push('\n');
    s
}

fn text_output(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        let head = format!("{} (section {}, type {})", o.name, o.section, o.prog_type);
        match (&o.report, &o.load_error) {
            (Some(r), _) => {
                if !r.log.is_empty() {
                    let _ = writeln!(out, "--- verifier log for {}", o.name);
                    out.push_str(&r.log);
                }
                let stats = format!(
                    "{} insns processed, {} states (peak {}), {} us",
                    r.insns_processed,
                    r.states,
                    r.peak_states,
                    r.time.as_micros()
                );
                match &r.error {
                    None => {
                        let _ = writeln!(out, "{head}: accepted ({stats})");
                    }
                    Some(e) => {
                        let _ = writeln!(out, "{head}: rejected ({stats})");
                        let _ = writeln!(out, "  insn {}: {}", e.pc, e.message);
                        for line in e.context.lines() {
                            let _ = writeln!(out, "  {}", line.trim_start());
                        }
                    }
                }
            }
            (None, e) => {
                let _ = writeln!(
                    out,
                    "{head}: rejected (cannot load: {})",
                    e.as_deref().unwrap_or("")
                );
            }
        }
    }
    out
}
