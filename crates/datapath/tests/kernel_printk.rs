//! `bpf_trace_printk`'s format rules against the kernel: the same format
//! and arguments give the same return value (the formatted length, or
//! `-EINVAL` for a format the kernel refuses) in bpfkit and in
//! `BPF_PROG_TEST_RUN`. Skips where `bpf()` is not permitted.

use bpfkit::{Engine, Loader};
use bpfkit_datapath::xdp::XdpRunner;
use bpfkit_kernel::{prog_type, ProgLoad, TestRun};
use std::path::Path;

fn input(fmt: &[u8], args: [u64; 3]) -> Vec<u8> {
    let mut p = vec![0u8; 102];
    p[12] = 0x08;
    for (i, a) in args.iter().enumerate() {
        p[14 + i * 8..22 + i * 8].copy_from_slice(&a.to_le_bytes());
    }
    p[38..38 + fmt.len()].copy_from_slice(fmt);
    p
}

#[test]
fn printk_formats_match_the_kernel() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("tests/fixtures/xdp_printk.o")).unwrap();
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
    let neg = |v: i64| v as u64;
    let formats: &[&[u8]] = &[
        b"plain text",
        b"%d",
        b"%i",
        b"%u",
        b"%x",
        b"%X",
        b"%ld %li %lu %lx %lX",
        b"%lld",
        b"%lli %llu",
        b"%llx",
        b"%5d|",
        b"%-5d|",
        b"%05d",
        b"%+d",
        b"% d",
        b"%010x",
        b"%-010d|",
        b"%+5d",
        b"%12llu",
        b"%c%c%c",
        b"100%%",
        b"%% %d %%",
        b"%p",
        b"%px",
        b"%pK",
        b"%n",
        b"%.2d",
        b"%hd",
        b"%hhd",
        b"%zd",
        b"%#x",
        b"%*d",
        b"%d %d %d %d",
        b"%d %d %d",
        b"tab\there",
        b"line\n",
        b"\x01",
        b"caf\xc3\xa9",
        b"del\x7f",
        b"c1\x85",
        b"nbsp\xa0",
        b"\x0b\x0c\r",
        b"\x1f",
        b"\x9f\xff",
        b"ends with %",
        b"%l",
        b"%lll",
        b"%llld",
        b"%q",
        b"[%s]",
        b"[%5s]",
        b"%pI4",
        b"%pi4",
        b"%pI6",
        b"%pks",
        b"%pus",
        b"%pB",
        b"%pS",
        b"%pi6",
        b"%pI6c",
        b"%pI4x",
        b"%pxyz",
        b"%pK1",
        b"%ps",
        b"%pSR",
        b"%pM",
        b"",
    ];
    let args_sets = [
        [42u64, neg(-7), 0xdead_beef],
        [neg(-1), 0, u64::MAX],
        [0x41, 0x42, 0x43],
        [1 << 40, neg(-(1 << 40)), 12345],
    ];
    let mut diffs = Vec::new();
    for fmt in formats {
        for args in args_sets {
            let pkt = input(fmt, args);
            let k = kprog
                .test_run(&TestRun {
                    data_in: &pkt,
                    data_out_len: 4096,
                    ctx_in: &[],
                    ctx_out_len: 0,
                    repeat: 1,
                    flags: 0,
                })
                .unwrap();
            let b = runner.run(&mut obj, 0, &pkt, None, 1).unwrap();
            let kr = i64::from_le_bytes(k.data_out[..8].try_into().unwrap());
            let br = i64::from_le_bytes(b.data_out[..8].try_into().unwrap());
            if kr != br {
                diffs.push(format!(
                    "{:?} {args:x?}: kernel {kr}, bpfkit {br} {:?}",
                    String::from_utf8_lossy(fmt),
                    b.trace
                ));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
