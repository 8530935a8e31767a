//! `bpfkit run --dump-maps` on a program with a per-CPU array and
//! `bpf_get_smp_processor_id` (`tests/xdp/percpu.o`), which the JIT's
//! unchecked mode computes inline: the per-CPU values the dump prints are
//! the interpreter's (the run's CPU 0 slot counted, the others untouched),
//! with and without constant blinding.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bpfkit");

/// An IPv4/UDP packet from 10.0.0.1 (42 bytes, the spec's first).
const PACKET: &str =
    "02000000000b02000000000a08004500001c00010000401166ce0a0000010a000002000100020008ebd8";

/// The `--dump-maps` part of `bpfkit run`'s output.
fn dump(extra: &[&str]) -> String {
    let obj = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/xdp/percpu.o");
    let o = Command::new(BIN)
        .arg("run")
        .arg(obj)
        .args(["--packet", PACKET, "--repeat", "3", "--dump-maps"])
        // Element 0 of `cpu_check`: the CPU bound the program checks.
        .args(["--map-update", "cpu_check", "00000000", "40000000"])
        .args(extra)
        .output()
        .expect("bpfkit runs");
    assert!(
        o.status.success(),
        "{extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let at = out.find("\nmap ").expect("a map dump");
    out[at + 1..].to_string()
}

#[test]
fn per_cpu_values_in_the_dump_match_the_interpreter() {
    let interp = dump(&["--engine", "interp"]);
    // Key 1 (IPv4) counted 3 packets of 42 bytes on CPU 0, nothing on the
    // other CPUs; `cpu_check[1]` counted the 3 runs whose CPU was below 64.
    let key1 = interp
        .split("  key 01000000 1\n")
        .nth(1)
        .expect("proto_stats key 1");
    let mut cpus = key1.lines().take_while(|l| l.starts_with("    cpu "));
    assert_eq!(
        cpus.next(),
        Some("    cpu 0: 03000000000000007e00000000000000 {\"packets\": 3, \"bytes\": 126}")
    );
    assert!(cpus.all(|l| l.contains("{\"packets\": 0, \"bytes\": 0}")));
    assert!(
        interp.contains("  key 01000000 1 value 03000000 3\n"),
        "{interp}"
    );
    // The JIT runs the verified program unchecked (`run` verifies by
    // default), as `jit_modes.rs` assumes a JIT on the test machine.
    for extra in [
        &["--engine", "jit"][..],
        &["--engine", "jit", "--jit-blind"],
    ] {
        assert_eq!(dump(extra), interp, "{extra:?}");
    }
}
