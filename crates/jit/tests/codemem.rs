//! Code memory (`bpfkit_jit::memory`): both ways of filling it give
//! read+execute pages that are never writable and executable at once,
//! pieces are never shared by live code, and code keeps running right
//! while chunks come and go, across threads.

use bpfkit_isa::{
    asm::{assemble, Syntax},
    Program,
};
use bpfkit_jit::memory::{publish, publish_with, ExecutableCode, Fill, CHUNK_BYTES};
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory};
use std::sync::atomic::{AtomicBool, Ordering};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

/// The mappings of this process as (start, end, permissions).
fn mappings() -> Vec<(u64, u64, String)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.split(' ');
            let (a, b) = f.next().unwrap().split_once('-').unwrap();
            (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
                f.next().unwrap().to_owned(),
            )
        })
        .collect()
}

fn perms_of(maps: &[(u64, u64, String)], addr: u64) -> &str {
    &maps
        .iter()
        .find(|(a, b, _)| (*a..*b).contains(&addr))
        .expect("mapping listed")
        .2
}

fn no_writable_executable(maps: &[(u64, u64, String)]) {
    for (a, b, p) in maps {
        assert!(
            !(p.contains('w') && p.contains('x')),
            "{a:x}-{b:x} {p} is writable and executable"
        );
    }
}

/// `fill`'s publication, or `None` where the kernel refuses copies.
fn publish_by(code: Vec<u8>, fill: Fill) -> Option<ExecutableCode> {
    match publish_with(code, fill) {
        Ok(c) => Some(c),
        Err(e) if fill == Fill::Copy && e.kind() == std::io::ErrorKind::Unsupported => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn both_fills_give_read_execute_pages_and_never_writable_executable() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    for fill in [Fill::Copy, Fill::Flip] {
        let mut live = Vec::new();
        // Enough pieces for several chunks, half of them kept alive.
        for k in 0..3 * CHUNK_BYTES / 4096 {
            let len = 100 + k % 5000;
            let Some(code) = publish_by(vec![k as u8; len], fill) else {
                eprintln!("copies refused here: only the flip is tested");
                break;
            };
            assert_eq!(code.fill(), fill);
            assert_eq!(code.bytes(), &vec![k as u8; len][..]);
            if k % 2 == 0 {
                live.push((k, code));
            }
        }
        let maps = mappings();
        no_writable_executable(&maps);
        for (_, c) in &live {
            assert_eq!(perms_of(&maps, c.addr()), "r-xp");
            assert_eq!(perms_of(&maps, c.addr() + c.len() as u64 - 1), "r-xp");
        }
        let mut ranges: Vec<(u64, u64)> = live
            .iter()
            .map(|(_, c)| (c.addr(), c.addr() + c.len() as u64))
            .collect();
        ranges.sort_unstable();
        assert!(
            ranges.windows(2).all(|w| w[0].1 <= w[1].0),
            "pieces overlap"
        );
        for (k, c) in &live {
            assert!(c.bytes().iter().all(|&b| b == *k as u8));
        }
    }
}

/// While another thread compiles, runs and drops programs, no mapping of
/// the process is ever writable and executable.
#[test]
fn never_writable_and_executable_while_compiling() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let p = prog("mov %r0, 5\nadd %r0, 6\nexit");
            let h = Helpers::new();
            let mut k = 0u8;
            while !stop.load(Ordering::Relaxed) {
                let mut jit = Jit::new(&p, &h).unwrap();
                assert_eq!(jit.run(&mut Memory::new(), &[]), Ok(11));
                // The flip's read+write window too.
                let fill = if k.is_multiple_of(2) {
                    Fill::Flip
                } else {
                    Fill::Copy
                };
                drop(publish_by(vec![k; 3000], fill));
                k = k.wrapping_add(1);
            }
        });
        let seen = std::panic::catch_unwind(|| {
            for _ in 0..300 {
                no_writable_executable(&mappings());
            }
        });
        // Stop the compiling thread before reporting (the scope waits for it).
        stop.store(true, Ordering::Relaxed);
        if let Err(e) = seen {
            std::panic::resume_unwind(e);
        }
    });
}

/// Different programs one after the other, each dropped before the next
/// compile, each giving its own result; some dropped on other threads, and
/// published both ways; programs keep running while chunks come and go.
#[test]
fn pieces_are_never_reused_wrongly() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = Helpers::new();
    let progs: Vec<(Program, u64)> = (0..8u64)
        .map(|k| {
            let mut text = format!("mov %r0, {k}\n");
            // Different lengths: pieces of 1-3 pages.
            for i in 0..k * 150 {
                text += &format!("add %r0, {}\n", i % 3);
            }
            text += "exit";
            let want = k + (0..k * 150).map(|i| i % 3).sum::<u64>();
            (prog(&text), want)
        })
        .collect();
    let keep = Jit::new(&progs[3].0, &h).unwrap();
    let mut others = Vec::new();
    for round in 0..3 * CHUNK_BYTES / 4096 {
        let (p, want) = &progs[round % progs.len()];
        let mut jit = Jit::new(p, &h).unwrap();
        assert_eq!(jit.run(&mut Memory::new(), &[]), Ok(*want), "round {round}");
        match round % 3 {
            0 => drop(jit),
            1 => others.push(std::thread::spawn(move || drop(jit))),
            _ => {
                // Run and drop on another thread.
                let want = *want;
                others.push(std::thread::spawn(move || {
                    assert_eq!(jit.run(&mut Memory::new(), &[]), Ok(want));
                }));
            }
        }
        if round % 5 == 0 {
            drop(publish(vec![0xc3; 5000]).unwrap());
            drop(publish_with(vec![0xc3; 100], Fill::Flip).unwrap());
        }
    }
    for t in others {
        t.join().unwrap();
    }
    let mut keep = keep;
    assert_eq!(keep.run(&mut Memory::new(), &[]), Ok(progs[3].1));
}
