//! The XDP buffer's limits against the kernel: `bpf_xdp_adjust_head`,
//! `_meta` and `_tail` (and `bpf_xdp_load_bytes`/`_store_bytes`) succeed and fail at the same deltas in
//! `XdpRunner` as in `BPF_PROG_TEST_RUN` (headroom, `xdp_frame`,
//! tailroom, metadata alignment and size, the 14-byte minimum), with and
//! without `ctx_in` metadata, on linear and multi-buffer packets (up to
//! `MAX_SKB_FRAGS` fragment pages);
//! the refused inputs (too short, too long, bad `ctx_in`) are refused by
//! both. Skips the kernel side where `bpf()` is not permitted.

use bpfkit::{Engine, Loader};
use bpfkit_datapath::xdp::XdpRunner;
use bpfkit_kernel::{prog_type, ProgLoad, TestRun};
use std::path::Path;

const OBJECT: &str = "tests/fixtures/xdp_limits.o";

fn packet(len: usize, op: u32, delta: i32) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    if len >= 22 {
        p[14..18].copy_from_slice(&op.to_le_bytes());
        p[18..22].copy_from_slice(&delta.to_le_bytes());
    }
    p
}

fn ctx(meta: u32, len: usize) -> Vec<u8> {
    let mut c = vec![0u8; 24];
    c[0..4].copy_from_slice(&meta.to_le_bytes());
    c[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    c
}

/// (meta bytes, packet length with meta, op, delta)
fn cases() -> Vec<(u32, usize, u32, i32)> {
    let mut v = Vec::new();
    for &(meta, len) in &[(0u32, 64usize), (0, 1500), (8, 96), (32, 3552), (0, 3520)] {
        for d in [
            -300, -217, -216, -215, -200, -16, -4, 0, 4, 8, 42, 49, 50, 51,
        ] {
            v.push((meta, len, 0, d));
        }
        for d in [
            -300, -256, -220, -217, -216, -212, -40, -36, -6, -4, -2, 0, 4, 8,
        ] {
            v.push((meta, len, 1, d));
        }
        let pkt = len as i32 - meta as i32;
        for d in [
            -pkt,
            14 - pkt - 1,
            14 - pkt,
            -1,
            0,
            1,
            8,
            3520 - pkt - 1,
            3520 - pkt,
            3520 - pkt + 1,
            3520 - pkt + meta as i32,
            4096,
        ] {
            v.push((meta, len, 2, d));
        }
    }
    // load and store bytes, linear and across fragments
    for &len in &[64usize, 3520, 8000] {
        let l = len as i32;
        for d in [0, 14, l - 8, l - 7, 3516, 3520, 4000, 7616 - 4, 0x10000, -1] {
            v.push((0, len, 3, d));
            v.push((0, len, 4, d));
        }
    }
    // inputs the kernel refuses
    v.extend([
        (0, 13, 2, 0),
        (0, 3521, 2, 0),
        (0, 4096, 2, 0),
        (6, 64, 2, 0),
        (0, 0, 2, 0),
    ]);
    v
}

#[test]
fn adjust_limits_match_the_kernel() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join(OBJECT)).unwrap();
    if let Err(e) = bpfkit_kernel::probe() {
        println!("skipped: bpf() is not available here: {e}");
        return;
    }
    let elf = bpfkit_elf::LoadedObject::load(&bytes).unwrap();
    let insns = bpfkit_isa::encode_all(elf.programs[0].insns.insns());
    let mut load = ProgLoad::new(prog_type::XDP, &insns);
    load.license = "Dual MIT/GPL".into();
    let kprog = load.load().unwrap();
    for engine in [Engine::Interp, Engine::Jit] {
        if engine == Engine::Jit && !bpfkit_jit_supported() {
            continue;
        }
        let mut obj = Loader::new().engine(engine).load(&bytes).unwrap();
        let mut runner = XdpRunner::new().unwrap();
        let mut diffs = Vec::new();
        for (meta, len, op, delta) in cases() {
            let input = {
                let mut p = packet(len, 0, 0);
                let body = packet(len.saturating_sub(meta as usize), op, delta);
                p[meta as usize..].copy_from_slice(&body);
                p
            };
            let c = ctx(meta, len);
            let ctx_in: &[u8] = if meta > 0 || len == 64 && op == 1 {
                &c
            } else {
                &[]
            };
            let k = kprog.test_run(&TestRun {
                data_in: &input,
                data_out_len: 128 * 1024,
                ctx_in,
                ctx_out_len: ctx_in.len(),
                repeat: 1,
                flags: 0,
            });
            let b = runner.run(
                &mut obj,
                0,
                &input,
                (!ctx_in.is_empty()).then_some(ctx_in),
                1,
            );
            let same = match (&k, &b) {
                (Ok(k), Ok(b)) => k.retval as u64 == b.retval && k.data_out == b.data_out,
                (Err(_), Err(_)) => true,
                _ => false,
            };
            if !same {
                diffs.push(format!(
                    "{engine:?} meta {meta} len {len} op {op} delta {delta}: kernel {:?}, bpfkit {:?}",
                    k.map(|k| (k.retval, k.data_out.len())),
                    b.map(|b| (b.retval, b.data_out.len()))
                ));
            }
        }
        assert!(
            diffs.is_empty(),
            "{} differences:\n{}",
            diffs.len(),
            diffs.join("\n")
        );
    }
}

#[test]
fn ctx_in_devices_match_the_kernel() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join(OBJECT)).unwrap();
    if let Err(e) = bpfkit_kernel::probe() {
        println!("skipped: bpf() is not available here: {e}");
        return;
    }
    let elf = bpfkit_elf::LoadedObject::load(&bytes).unwrap();
    let insns = bpfkit_isa::encode_all(elf.programs[0].insns.insns());
    let mut load = ProgLoad::new(prog_type::XDP, &insns);
    load.license = "Dual MIT/GPL".into();
    let kprog = load.load().unwrap();
    let mut obj = Loader::new().engine(Engine::Interp).load(&bytes).unwrap();
    let mut runner = XdpRunner::new().unwrap();
    let input = packet(64, 2, 0);
    for (ifindex, rxq, egress) in [
        (0, 0, 0),
        (1, 0, 0),
        (1, 1, 0),
        (0, 1, 0),
        (999_999, 0, 0),
        (1, 0, 1),
    ] {
        let mut c = ctx(0, 64);
        c[12..16].copy_from_slice(&(ifindex as u32).to_le_bytes());
        c[16..20].copy_from_slice(&(rxq as u32).to_le_bytes());
        c[20..24].copy_from_slice(&(egress as u32).to_le_bytes());
        let k = kprog.test_run(&TestRun {
            data_in: &input,
            data_out_len: 4096,
            ctx_in: &c,
            ctx_out_len: 24,
            repeat: 1,
            flags: 0,
        });
        let b = runner.run(&mut obj, 0, &input, Some(&c), 1);
        assert_eq!(
            k.is_ok(),
            b.is_ok(),
            "ifindex {ifindex} rxq {rxq} egress {egress}: kernel {k:?}, bpfkit {b:?}"
        );
    }
}

fn bpfkit_jit_supported() -> bool {
    cfg!(all(target_arch = "x86_64", target_os = "linux"))
}
