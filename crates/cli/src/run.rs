//! `bpfkit run OBJECT [options]`: runs one program over packets like
//! `BPF_PROG_TEST_RUN`, keeping map state from packet to packet
//! (CONTRACTS.md).

use crate::{read_input, write_stdout, CmdResult};
use anyhow::{anyhow, bail, Context};
use bpfkit::{Engine, Loader, Object, ProgType, XdpAction};
use bpfkit_datapath::packets::{parse_hex, read_capture, to_hex, Packet, PcapOut};
use bpfkit_datapath::xdp::{XdpError, XdpRun, XdpRunner};
use bpfkit_maps::{update_flags, MapType};
use serde_json::{json, Map as JsonMap, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// A BPF ELF object, as built by `clang -target bpf`.
    object: PathBuf,
    /// The program to run (default: the only or first program).
    #[arg(long, value_name = "NAME")]
    prog: Option<String>,
    /// A packet as hex, from the Ethernet header on (repeatable).
    #[arg(long, value_name = "HEX")]
    packet: Vec<String>,
    /// Packets from a pcap or pcapng file (after the --packet ones).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Writes every packet leaving with XDP_TX, XDP_PASS or a redirect to
    /// this pcap file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Sets a map entry before the first packet (repeatable). Per-CPU
    /// maps take one CPU's value (CPU 0, zeros elsewhere) or all of them.
    #[arg(long, num_args = 3, value_names = ["MAP", "KEYHEX", "VALUEHEX"])]
    map_update: Vec<String>,
    /// Puts program PROG of the object into slot INDEX of program array
    /// MAP (repeatable).
    #[arg(long, num_args = 3, value_names = ["MAP", "INDEX", "PROG"])]
    prog_array: Vec<String>,
    /// The context as BPF_PROG_TEST_RUN's ctx_in (for XDP a struct xdp_md).
    #[arg(long, value_name = "HEX")]
    ctx_in: Option<String>,
    /// Execution engine (default: $BPFKIT_ENGINE, else the fastest
    /// available).
    #[arg(long, value_name = "interp|jit")]
    engine: Option<String>,
    /// JIT constant blinding, as the kernel's bpf_jit_harden: every
    /// immediate of the program is emitted XORed with a random key and
    /// decoded at run time, so no program-chosen constant appears in
    /// executable memory (same results, slower code; no effect on the
    /// interpreter).
    #[arg(long)]
    jit_blind: bool,
    /// Runs each packet N times; reports the average duration per run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: u32,
    /// Prints one JSON document (runs and maps).
    #[arg(long)]
    json: bool,
    /// After the runs, prints every map, typed by BTF where the object has
    /// it (human output only).
    #[arg(long)]
    dump_maps: bool,
    /// Stops a program after N instructions (a trap): a guard for programs
    /// that no verifier has checked (default: no limit).
    #[arg(long, value_name = "N")]
    budget: Option<u64>,
    /// Verifies the program (and its --prog-array tail-call targets) first,
    /// like the kernel's BPF_PROG_LOAD, and refuses (exit 1, naming the
    /// instruction and the verifier's message) what the verifier rejects.
    /// This is the default; the flag only makes it explicit. With the JIT,
    /// accepted programs run in its unchecked mode (no run-time memory
    /// checks, as the kernel's JIT).
    #[arg(long, conflicts_with = "no_verify")]
    verify: bool,
    /// Runs without verifying: the engines' run-time checks (every memory
    /// access checked, --budget) are the only guard. For programs the
    /// kernel would refuse, or to see where an unsafe program goes wrong.
    #[arg(long)]
    no_verify: bool,
}

/// One packet's result.
enum Outcome {
    Ran(XdpRun),
    Refused(String),
    Trapped(String),
}

fn action_name(retval: u64) -> String {
    u32::try_from(retval)
        .ok()
        .and_then(|v| XdpAction::try_from(v).ok())
        .map_or_else(|| format!("UNKNOWN({retval})"), |a| a.name().to_string())
}

pub fn run(args: Args) -> CmdResult {
    let name = args.object.display().to_string();
    // `$BPFKIT_ENGINE` sets the default engine (e.g. to run a test suite
    // that does not pass --engine on both engines).
    let env_engine = std::env::var("BPFKIT_ENGINE")
        .ok()
        .filter(|e| !e.is_empty());
    let engine = match args.engine.as_deref().or(env_engine.as_deref()) {
        None => None,
        Some(e) => Some(
            Engine::from_name(e)
                .ok_or_else(|| anyhow!("unknown engine {e:?} (expected interp or jit)"))?,
        ),
    };
    // Inputs are checked before anything runs.
    let mut packets = Vec::new();
    for (i, h) in args.packet.iter().enumerate() {
        let data = parse_hex(h).with_context(|| format!("--packet #{}", i + 1))?;
        packets.push(Packet {
            data,
            timestamp: Duration::ZERO,
        });
    }
    if let Some(p) = &args.pcap {
        packets.extend(read_capture(p)?);
    }
    let ctx_in = match &args.ctx_in {
        Some(h) => Some(parse_hex(h).context("--ctx-in")?),
        None => None,
    };
    let data = read_input(&args.object)?;
    let mut loader = Loader::new();
    if let Some(e) = engine {
        loader = loader.engine(e);
    }
    if let Some(n) = args.budget {
        loader = loader.budget(n);
    }
    loader = loader.jit_blind(args.jit_blind);
    // Off by default until the verifier accepts everything the kernel
    // accepts on the differential suite (see ARCHITECTURE.md, Decisions).
    loader = loader.verify(!args.no_verify);
    let mut obj = loader.load(&data).map_err(|e| anyhow!("{name}: {e}"))?;
    let prog = match &args.prog {
        Some(p) => obj.program_index(p).map_err(|e| anyhow!("{name}: {e}"))?,
        None if obj.programs().is_empty() => bail!("{name}: the object has no program"),
        None => 0,
    };
    let info = &obj.programs()[prog];
    if let Some(t) = info.prog_type.filter(|t| *t != ProgType::Xdp) {
        bail!(
            "{name}: program {} is a {} program; bpfkit run runs XDP programs",
            info.name,
            t.name()
        );
    }
    // The program and the tail-call targets installed below run only if the
    // verifier accepts them (a program whose section implies no type runs
    // as XDP, so it is verified as XDP).
    // Programs that the object's own program-array initialisers (`.values`)
    // install are tail-call targets too.
    let mut targets = vec![prog];
    for m in obj.maps() {
        if m.map.map_type() == MapType::ProgArray {
            for slot in &m.definition.initial_values {
                targets.extend(obj.program_index(&slot.target).ok());
            }
        }
    }
    for t in targets {
        if let Err(e) = verify(&mut obj, t) {
            return Ok(rejected(&name, &e));
        }
    }
    for u in args.map_update.chunks(3) {
        map_update(&obj, &u[0], &u[1], &u[2]).map_err(|e| anyhow!("--map-update: {e:#}"))?;
    }
    for p in args.prog_array.chunks(3) {
        let index: u32 = p[1]
            .parse()
            .map_err(|_| anyhow!("--prog-array {}: bad index {:?}", p[0], p[1]))?;
        let target = obj
            .program_index(&p[2])
            .map_err(|e| anyhow!("--prog-array: {e}"))?;
        if let Err(e) = verify(&mut obj, target) {
            return Ok(rejected(&name, &e));
        }
        obj.set_prog_array(&p[0], index, &p[2])
            .map_err(|e| anyhow!("--prog-array: {e}"))?;
    }
    let mut out = match &args.out {
        Some(p) => Some(PcapOut::create(p)?),
        None => None,
    };

    let mut runner = XdpRunner::new()?;
    let mut results = Vec::new();
    for p in &packets {
        let r = runner.run(&mut obj, prog, &p.data, ctx_in.as_deref(), args.repeat);
        let outcome = match r {
            Ok(run) => {
                let leaves = matches!(run.retval, 2..=4);
                if let (Some(o), true) = (&mut out, leaves) {
                    o.write(&run.data_out[run.meta_len..], p.timestamp)?;
                }
                Outcome::Ran(run)
            }
            Err(XdpError::Trap(t)) => Outcome::Trapped(describe_trap(&t)),
            Err(e @ XdpError::NoFrame(_)) => return Err(e.into()),
            Err(e) => Outcome::Refused(e.to_string()),
        };
        results.push(outcome);
    }
    if let Some(o) = out {
        o.finish()?;
    }
    let trapped = results.iter().any(|r| matches!(r, Outcome::Trapped(_)));
    let text = if args.json {
        let mut s = serde_json::to_string(&document(&obj, &results)?)?;
        s.push('\n');
        s
    } else {
        human(&obj, prog, &packets, &results, args.dump_maps)
    };
    write_stdout(text.as_bytes())?;
    // A trap means the program did something the kernel's verifier would
    // have refused: the answer is "no".
    Ok(if trapped {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `Ok` when program `idx` may run (verification off, or accepted).
fn verify(obj: &mut Object, idx: usize) -> Result<(), bpfkit::Error> {
    if obj.verifies() && obj.report(idx).is_none() {
        obj.verify_as(idx, ProgType::Xdp);
    }
    obj.check(idx)
}

/// A program the verifier rejected: a one-line error naming the program,
/// the instruction and the verifier's message, the verifier's context lines
/// below it; exit 1 (the answer is "no").
fn rejected(name: &str, e: &bpfkit::Error) -> ExitCode {
    let mut msg = format!(
        "bpfkit: error: {name}: {e} (--no-verify runs it anyway, with run-time checks only)\n"
    );
    if let bpfkit::Error::Rejected { context, .. } = e {
        for line in context.lines().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(msg, "  {}", line.trim_start());
        }
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
    ExitCode::from(1)
}

/// A trap as one line; an unknown helper is named.
fn describe_trap(t: &bpfkit::runtime::Trap) -> String {
    match &t.kind {
        bpfkit::runtime::TrapKind::UnknownHelper { id } => format!(
            "trap at insn {}: helper {} ({}) is not implemented by bpfkit",
            t.pc,
            id.0,
            crate::helpers::helper_name(id.0).unwrap_or_else(|| "unknown".into())
        ),
        _ => t.to_string(),
    }
}

fn map_update(obj: &Object, map: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let m = obj.map(map)?;
    if m.map.map_type() == MapType::ProgArray {
        bail!("map {map} is a program array: use --prog-array");
    }
    let key = parse_hex(key).with_context(|| format!("map {map} key"))?;
    let mut value = parse_hex(value).with_context(|| format!("map {map} value"))?;
    let t = m.map.map_type();
    if t.is_percpu() && value.len() == m.map.def().value_size as usize {
        let mut all = vec![0u8; m.map.value_buf_len()];
        all[..value.len()].copy_from_slice(&value);
        value = all;
    }
    m.map
        .update(&key, &value, update_flags::ANY)
        .map_err(|e| anyhow!("map {map}: {e}"))
}

/// Every map but program arrays, entries sorted by key.
fn dump(obj: &Object) -> anyhow::Result<Vec<(String, Vec<bpfkit_maps::Entry>)>> {
    let mut out = Vec::new();
    for m in obj.maps() {
        if m.map.map_type() == MapType::ProgArray {
            continue;
        }
        let mut entries = m
            .map
            .entries()
            .map_err(|e| anyhow!("map {}: {e}", m.name))?;
        entries.sort();
        out.push((m.name.clone(), entries));
    }
    Ok(out)
}

fn document(obj: &Object, results: &[Outcome]) -> anyhow::Result<Value> {
    let runs: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Outcome::Ran(run) => json!({
                "retval": run.retval,
                "action": action_name(run.retval),
                "data_out": to_hex(&run.data_out),
                "duration_ns": run.duration_ns,
            }),
            Outcome::Refused(e) | Outcome::Trapped(e) => json!({ "error": e }),
        })
        .collect();
    let mut maps = JsonMap::new();
    for (name, entries) in dump(obj)? {
        let list = entries
            .iter()
            .map(|(k, v)| json!({"key": to_hex(k), "value": to_hex(v)}))
            .collect();
        maps.insert(name, Value::Array(list));
    }
    Ok(json!({"runs": runs, "maps": maps}))
}

/// What changed between two packets: a length change and the first and
/// last differing bytes.
fn changes(before: &[u8], after: &[u8]) -> String {
    let mut parts = Vec::new();
    if before.len() != after.len() {
        let d = after.len() as i64 - before.len() as i64;
        parts.push(format!("length {d:+}"));
    }
    if before.len() == after.len() {
        let diff: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        if let (Some(a), Some(b)) = (diff.first(), diff.last()) {
            parts.push(format!("{} bytes changed in {a}..={b}", diff.len()));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn human(
    obj: &Object,
    prog: usize,
    packets: &[Packet],
    results: &[Outcome],
    dump_maps: bool,
) -> String {
    let info = &obj.programs()[prog];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} (section {}, id {}) on {}: {} packet{}",
        info.name,
        info.section,
        info.id.0,
        info.engine.name(),
        packets.len(),
        if packets.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "{:>4}  {:<14} {:>6} {:>6} {:>9}  changes",
        "#", "action", "in", "out", "ns"
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut trace = Vec::new();
    for (i, (p, r)) in packets.iter().zip(results).enumerate() {
        match r {
            Outcome::Ran(run) => {
                let action = action_name(run.retval);
                let _ = writeln!(
                    s,
                    "{i:>4}  {action:<14} {:>6} {:>6} {:>9}  {}",
                    p.data.len(),
                    run.data_out.len(),
                    run.duration_ns,
                    changes(&p.data, &run.data_out)
                );
                *counts.entry(action).or_default() += 1;
                trace.extend(run.trace.iter().map(|t| (i, t.clone())));
            }
            Outcome::Refused(e) => {
                let _ = writeln!(s, "{i:>4}  {:<14} {:>6}  {e}", "error", p.data.len());
                *counts.entry("error".into()).or_default() += 1;
            }
            Outcome::Trapped(e) => {
                let _ = writeln!(s, "{i:>4}  {:<14} {:>6}  {e}", "trap", p.data.len());
                *counts.entry("trap".into()).or_default() += 1;
            }
        }
    }
    let summary: Vec<String> = counts.iter().map(|(a, n)| format!("{a} {n}")).collect();
    let _ = writeln!(
        s,
        "total: {}",
        if summary.is_empty() {
            "no packets".into()
        } else {
            summary.join(", ")
        }
    );
    if !trace.is_empty() {
        let _ = writeln!(s, "trace_printk:");
        for (i, t) in trace {
            let _ = writeln!(s, "  #{i}: {t}");
        }
    }
    if dump_maps {
        s.push_str(&crate::maps::describe(obj));
    }
    s
}
