//! `--repeat` against the kernel: `BPF_PROG_TEST_RUN` runs a program
//! `repeat` times on one `xdp_buff` (`bpf_test_run` does not reset the
//! packet between runs), so a program that moves the packet sees it as the
//! previous run left it. `XdpRunner` splits a repeat into chunks of runs
//! (one `Memory`, one pinned epoch each, growing while they stay cheap:
//! `next_chunk`); the packet, its metadata and the return value after N
//! runs must be the kernel's for every N, across the chunk boundaries
//! (64, 64 + 128, ...) and on every engine, the JIT's unchecked mode
//! included. Skips the kernel side where `bpf()` is not permitted.

use bpfkit::{Engine, Loader};
use bpfkit_datapath::xdp::{next_chunk, XdpRunner, CHUNK_MAX, CHUNK_MIN};
use bpfkit_kernel::{prog_type, ProgLoad, TestRun};
use std::path::Path;

const LIMITS: &str = "tests/fixtures/xdp_limits.o";
const REPEAT: &str = "tests/fixtures/xdp_repeat.o";
const REGIONS: &str = "tests/fixtures/xdp_regions.o";

/// The fixture's packet: op at bytes 14..18, delta at 18..22 (see
/// `xdp_limits.c`), the rest a pattern.
fn packet(len: usize, op: u32, delta: i32) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    p[14..18].copy_from_slice(&op.to_le_bytes());
    p[18..22].copy_from_slice(&delta.to_le_bytes());
    p
}

/// The kernel's program for `object`'s first program.
fn kernel_prog(bytes: &[u8]) -> bpfkit_kernel::Prog {
    let elf = bpfkit_elf::LoadedObject::load(bytes).unwrap();
    let insns = bpfkit_isa::encode_all(elf.programs[0].insns.insns());
    let mut load = ProgLoad::new(prog_type::XDP, &insns);
    load.license = "Dual MIT/GPL".into();
    load.load().unwrap()
}

/// Engines: the interpreter, the JIT's checked code and (`verified`) its
/// unchecked code.
fn engines(verified: bool) -> Vec<(Engine, bool)> {
    let mut v = vec![(Engine::Interp, false)];
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        v.push((Engine::Jit, false));
        if verified {
            v.push((Engine::Jit, true));
        }
    }
    v
}

const REPEATS: [u32; 12] = [1, 2, 63, 64, 65, 191, 192, 193, 400, 1000, 1985, 5000];

/// Runs `input` (with `meta` bytes of `ctx_in` metadata) `repeat` times in
/// the kernel and in bpfkit on each engine and compares the return value
/// and the packet with its metadata; returns the comparisons made.
fn compare(
    bytes: &[u8],
    kprog: &bpfkit_kernel::Prog,
    input: &[u8],
    meta: u32,
    verified: bool,
) -> usize {
    let mut c = vec![0u8; 24];
    c[0..4].copy_from_slice(&meta.to_le_bytes());
    c[4..8].copy_from_slice(&(input.len() as u32).to_le_bytes());
    let ctx_in: &[u8] = if meta > 0 { &c } else { &[] };
    let mut n = 0;
    for (engine, verify) in engines(verified) {
        for repeat in REPEATS {
            // A fresh object per repeat (the fixtures have no maps) and a
            // run from the input packet, as each test run starts.
            let mut obj = Loader::new()
                .engine(engine)
                .verify(verify)
                .load(bytes)
                .unwrap();
            if verify {
                // As `bpfkit run` does: verified before the first run,
                // which then switches to unchecked code.
                obj.verify_as(0, bpfkit::ProgType::Xdp);
                obj.check(0).unwrap();
            }
            let mut runner = XdpRunner::new().unwrap();
            let k = kprog
                .test_run(&TestRun {
                    data_in: input,
                    data_out_len: 8192,
                    ctx_in,
                    ctx_out_len: ctx_in.len(),
                    repeat,
                    flags: 0,
                })
                .unwrap();
            let b = runner
                .run(&mut obj, 0, input, (meta > 0).then_some(ctx_in), repeat)
                .unwrap();
            assert_eq!(
                (k.retval as u64, &k.data_out),
                (b.retval, &b.data_out),
                "{engine:?} verified {verify}: input {:02x?} meta {meta} repeat {repeat}: \
                 kernel (retval, data_out) vs bpfkit's",
                &input[..22.min(input.len())]
            );
            if verify {
                assert!(obj.runs_unchecked(0), "the JIT ran checked code");
            }
            n += 1;
        }
    }
    n
}

#[test]
fn repeats_move_the_packet_as_the_kernels_do() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = bpfkit_kernel::probe() {
        println!("skipped: bpf() is not available here: {e}");
        return;
    }
    let mut runs = 0;
    // One helper per run (`xdp_limits`, which the verifier does not take:
    // `bpf_xdp_store_bytes`): a tail that grows by 8 per run until the
    // tailroom refuses (about 400 runs), one that shrinks by 1 until 14
    // bytes are left, a head that moves back by 2 into the headroom until
    // `xdp_frame` stops it, metadata that grows by 4 until 255 bytes.
    let bytes = std::fs::read(root.join(LIMITS)).unwrap();
    let kprog = kernel_prog(&bytes);
    for (op, delta, len, meta) in [
        (2u32, 8i32, 64usize, 0u32),
        (2, -1, 300, 0),
        (0, -2, 64, 0),
        (1, -4, 64, 0),
        (1, -4, 72, 8),
    ] {
        let mut input = packet(len, 0, 0);
        input[meta as usize..].copy_from_slice(&packet(len - meta as usize, op, delta));
        runs += compare(&bytes, &kprog, &input, meta, false);
    }
    // Metadata, head and tail moved in one run and the packet read and
    // written after them (`xdp_repeat`, verified: also the unchecked JIT).
    let bytes = std::fs::read(root.join(REPEAT)).unwrap();
    let kprog = kernel_prog(&bytes);
    for (m, h, t, len) in [
        (0i8, 0i8, 8i8, 64usize),
        (0, 0, -1, 300),
        (-4, -2, 4, 64),
        (-4, 2, -2, 600),
        (-8, -4, 0, 64),
        (4, 1, 1, 64),
        (-4, 0, 0, 64),
    ] {
        let mut input = packet(len, 0, 0);
        input[12..16].copy_from_slice(&[m as u8, 0, h as u8, t as u8]);
        runs += compare(&bytes, &kprog, &input, 0, true);
    }
    println!("{runs} repeats compared with the kernel");
}

#[test]
fn chunks_grow_only_while_cheap() {
    // Doubling from the first size up to the cap.
    let mut c = CHUNK_MIN;
    let mut sizes = vec![c];
    while c < CHUNK_MAX {
        c = next_chunk(c, 0, 10_000);
        sizes.push(c);
    }
    assert_eq!(sizes, [64, 128, 256, 512, 1024, 2048, 4096]);
    assert_eq!(next_chunk(CHUNK_MAX, 0, 0), CHUNK_MAX);
    // A few new regions (a hash value or two handed out) still grow it.
    assert_eq!(next_chunk(256, 8, 10_000), 512);
    // Many regions, or a slow chunk (the epoch pinned for a millisecond or
    // more), start again from the first size.
    assert_eq!(next_chunk(1024, 9, 10_000), CHUNK_MIN);
    assert_eq!(next_chunk(1024, 0, 1_000_000), CHUNK_MIN);
    assert_eq!(next_chunk(1024, 0, 999_999), 2048);
}

#[test]
fn chunks_grow_unless_runs_add_regions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = packet(64, 0, 0);
    for (engine, verify) in engines(true) {
        let load = |path: &str| {
            let bytes = std::fs::read(root.join(path)).unwrap();
            let mut obj = Loader::new()
                .engine(engine)
                .verify(verify)
                .load(&bytes)
                .unwrap();
            if verify {
                obj.verify_as(0, bpfkit::ProgType::Xdp);
                obj.check(0).unwrap();
            }
            obj
        };
        let mut runner = XdpRunner::new().unwrap();
        // No map values handed out: 64 + 128 + ... + 4096 runs, then the
        // rest (unless this machine made a chunk take over a millisecond,
        // which starts again from 64: still far fewer than 10000 / 64).
        let mut obj = load(REPEAT);
        let out = runner.run(&mut obj, 0, &input, None, 10_000).unwrap();
        assert!(
            (8..40).contains(&out.chunks),
            "{engine:?} verified {verify}: {} chunks",
            out.chunks
        );
        // A new hash value per run, each a region: chunks stay at 64 runs,
        // and every run's update and increment is in the map afterwards.
        let mut obj = load(REGIONS);
        let out = runner.run(&mut obj, 0, &input, None, 1000).unwrap();
        assert_eq!(out.retval, 2, "{engine:?} verified {verify}: XDP_PASS");
        assert_eq!(
            out.chunks,
            1000u32.div_ceil(CHUNK_MIN),
            "{engine:?} verified {verify}"
        );
        let values = &obj.map("values").unwrap().map;
        for k in [0u32, 63, 64, 500, 999] {
            let v = values.lookup(&k.to_ne_bytes()).unwrap();
            assert_eq!(
                v,
                (u64::from(k) * 10 + 1).to_ne_bytes(),
                "{engine:?} verified {verify}: key {k}"
            );
        }
        assert!(values.lookup(&1000u32.to_ne_bytes()).is_err());
    }
}

/// `tests/xdp/ringbuf.o`'s first packet (TCP over IPv4): every run outputs
/// one 16-byte event (`saddr`, `daddr`, `len`, `seq` from a counter in
/// `rb_state[8]`) into a 4 KiB ring that holds 170 such records.
const RINGBUF_PACKET: &str = "02000000000b02000000000a0800\
    4500002800010000400666cd0a0000010a000002\
    00010002000003e8000000005002ffff97f50000";

#[test]
fn ringbuf_records_of_a_repeat_reach_the_consumer_in_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("../../tests/xdp/ringbuf.o")).unwrap();
    let input: Vec<u8> = (0..RINGBUF_PACKET.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&RINGBUF_PACKET[i..i + 2], 16).unwrap())
        .collect();
    for (engine, verify) in engines(true) {
        let mut obj = Loader::new()
            .engine(engine)
            .verify(verify)
            .load(&bytes)
            .unwrap();
        let prog = obj.program_index("xdp_ringbuf").unwrap();
        if verify {
            obj.verify_as(prog, bpfkit::ProgType::Xdp);
            obj.check(prog).unwrap();
        }
        let mut runner = XdpRunner::new().unwrap();
        let mut next = 0u32;
        // (runs, records the consumer then finds): room for all, then a
        // ring that fills after 170 records (the rest fail with -EAGAIN),
        // then room again once consumed.
        for (repeat, records) in [(100u32, 100u32), (300, 170), (5, 5)] {
            let out = runner.run(&mut obj, prog, &input, None, repeat).unwrap();
            assert_eq!(out.retval, 2, "{engine:?} verified {verify}: XDP_PASS");
            let events = &obj.map("events").unwrap().map;
            let mut seqs = Vec::new();
            events
                .ringbuf_consume(|r| {
                    seqs.push(u32::from_ne_bytes(r[12..16].try_into().unwrap()));
                })
                .unwrap();
            let want: Vec<u32> = (next..next + records).collect();
            assert_eq!(seqs, want, "{engine:?} verified {verify}: repeat {repeat}");
            next += repeat;
            let state = &obj.map("rb_state").unwrap().map;
            let slot = |k: u32| {
                let v = state.lookup(&k.to_ne_bytes()).unwrap();
                u64::from_ne_bytes(v[..8].try_into().unwrap())
            };
            assert_eq!(
                slot(8),
                u64::from(next),
                "{engine:?} verified {verify}: seq"
            );
            let last = if records < repeat { -11i64 } else { 0 };
            assert_eq!(
                slot(4),
                last as u64,
                "{engine:?} verified {verify}: last output"
            );
        }
    }
}
