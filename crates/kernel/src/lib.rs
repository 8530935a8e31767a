//! # bpfkit-kernel
//!
//! A small, dev-only wrapper of the Linux `bpf()` system call, used as the
//! oracle of bpfkit's differential tests: create maps, load programs (with the
//! verifier's log), and run them with `BPF_PROG_TEST_RUN`.
//!
//! Everything here needs root (or `CAP_BPF`) on a Linux kernel. Callers check
//! [`probe`] first and skip with its reason where `bpf()` is refused.
//!
//! All `unsafe` of this crate is in its private `sys` module: the raw system call with
//! `bpf_attr` structures laid out as in `include/uapi/linux/bpf.h`.

#![deny(missing_docs)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use thiserror::Error;

mod sys;

/// Errors of the `bpf()` wrapper.
#[derive(Debug, Error)]
pub enum KernelError {
    /// The system call failed.
    #[error("bpf({cmd}) failed: {source}")]
    Syscall {
        /// The command name, e.g. `BPF_PROG_LOAD`.
        cmd: &'static str,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// The verifier rejected the program; `log` holds its log.
    #[error(
        "the kernel rejected the program ({source}): {}",
        rejection_message(log)
    )]
    Rejected {
        /// The errno of `BPF_PROG_LOAD`.
        #[source]
        source: std::io::Error,
        /// The verifier log.
        log: String,
    },
    /// An argument the kernel interface cannot take.
    #[error("invalid argument: {what}")]
    Invalid {
        /// What is wrong.
        what: String,
    },
    /// Not sent: the program has a pattern that crashes this kernel's
    /// verifier (see [`crash_pattern`]).
    #[error("not sent to the kernel: {what}")]
    Unsafe {
        /// The pattern and where it is.
        what: String,
    },
}

/// Why a program must not be sent to this machine's kernel, if it must not.
///
/// The kernel this project is developed on has a verifier bug: a
/// branch-free mask (`-(x & 1)`, i.e. `neg`, or `x s>> 63`, i.e. an `arsh`
/// by the width minus one) inside a loop crashed it in `maybe_fork_scalars`
/// (a NULL dereference that kills the loading process and can leave the
/// machine unstable). Every program the test suites load goes through
/// [`ProgLoad::load`], so this guard keeps all of them away from it: a
/// program with a `neg`, or an `arsh` by 31/63 or by a register, between
/// the target of a backward jump and the jump (a loop body) is refused.
/// The same instructions outside loops (e.g. `s>>= 32` sign extensions) are
/// still sent. A mask in a subprogram called from a loop is not caught:
/// keep such programs out of kernel tests by hand.
pub fn crash_pattern(insns: &[u8]) -> Option<String> {
    let mut masks = Vec::new();
    let mut loops = Vec::new();
    for (pc, insn) in insns.chunks_exact(8).enumerate() {
        let (code, class) = (insn[0], insn[0] & 7);
        let off = i16::from_le_bytes([insn[2], insn[3]]);
        let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
        let by_reg = code & 0x08 != 0;
        match (class, code & 0xf0) {
            // BPF_ALU, BPF_ALU64: BPF_NEG (0x80), BPF_ARSH (0xc0).
            (4 | 7, 0x80) => masks.push((pc, "neg")),
            (4, 0xc0) if by_reg || imm == 31 => masks.push((pc, "arsh")),
            (7, 0xc0) if by_reg || imm == 63 => masks.push((pc, "arsh")),
            // BPF_JMP, BPF_JMP32 other than call (0x80) and exit (0x90);
            // `gotol` (JMP32 JA) keeps its offset in imm.
            (5 | 6, op) if op != 0x80 && op != 0x90 => {
                let off = if class == 6 && op == 0 {
                    i64::from(imm)
                } else {
                    i64::from(off)
                };
                if off < 0 {
                    loops.push((pc as i64 + 1 + off, pc as i64));
                }
            }
            _ => {}
        }
    }
    let (m, what, (t, b)) = masks.iter().find_map(|&(m, what)| {
        let l = loops
            .iter()
            .find(|&&(t, b)| t <= m as i64 && m as i64 <= b)?;
        Some((m, what, *l))
    })?;
    Some(format!(
        "{what} at insn {m} inside the loop of insns {t}..={b}: a branch-free mask in a \
         loop crashes this machine's kernel verifier (maybe_fork_scalars)"
    ))
}

/// The line of a verifier log that says why a program was rejected: the
/// last line that is not one of the statistics the kernel appends.
pub fn rejection_message(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| {
            !l.trim().is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                // After "infinite loop detected" the kernel prints both states.
                && !l.starts_with("cur state:")
                && !l.starts_with("old state:")
        })
        // A few messages lack their newline, and the statistics line
        // then continues them.
        .map(|l| match l.find("verification time ") {
            Some(i) if i > 0 => &l[..i],
            _ => l,
        })
        .unwrap_or("")
}

/// The instruction the kernel blames for `message` (a rejection message, as
/// [`rejection_message`] finds it in a log of level 4): the one the message
/// names (`infinite loop detected at insn 1`, `unreachable insn 5`), else the
/// last instruction a level-1 `log` printed before the message. (At level 1
/// the kernel may print states after the message, so the message is not
/// always that log's last line.)
pub fn rejection_insn(log: &str, message: &str) -> Option<usize> {
    let named = message.split_once("insn ").and_then(|(_, after)| {
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    if named.is_some() {
        return named;
    }
    let mut last = None;
    for l in log.lines() {
        if l == message {
            return last;
        }
        if let Some((n, rest)) = l.split_once(": ") {
            if rest.starts_with('(') {
                if let Ok(n) = n.parse() {
                    last = Some(n);
                }
            }
        }
    }
    last
}

/// The kernel's own verification time in microseconds, from the statistics
/// line `verification time N usec` (log level 4).
pub fn verification_time_usec(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        // Also where an unterminated message runs into it.
        let (_, rest) = l.split_once("verification time ")?;
        rest.strip_suffix(" usec")?.trim().parse().ok()
    })
}

/// `CAP_SYS_ADMIN`
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_PERFMON`
const CAP_PERFMON: u32 = 38;

/// Runs `f` on a new thread without `CAP_SYS_ADMIN` and `CAP_PERFMON` (but
/// with `CAP_BPF` and `CAP_NET_ADMIN`): there the kernel's verifier applies
/// its unprivileged rules (no pointer leaks, comparisons or uninitialised
/// stack reads, Spectre v1/v4 checks) while `bpf()` still works with
/// `kernel.unprivileged_bpf_disabled` set. Loops and the other
/// `CAP_BPF` allowances remain.
pub fn without_ptr_leak_caps<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, KernelError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            sys::drop_effective_caps(&[CAP_SYS_ADMIN, CAP_PERFMON]).map_err(|source| {
                KernelError::Syscall {
                    cmd: "capset",
                    source,
                }
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Checks that `bpf()` works here by loading the smallest socket filter.
/// The error says why it does not (for a test's skip message).
pub fn probe() -> Result<(), KernelError> {
    // r0 = 0; exit
    let insns = [0xb7u8, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    ProgLoad::new(prog_type::SOCKET_FILTER, &insns)
        .load()
        .map(drop)
}

/// Program type numbers (`enum bpf_prog_type`).
pub mod prog_type {
    /// `BPF_PROG_TYPE_SOCKET_FILTER`
    pub const SOCKET_FILTER: u32 = 1;
    /// `BPF_PROG_TYPE_KPROBE`
    pub const KPROBE: u32 = 2;
    /// `BPF_PROG_TYPE_SCHED_CLS`
    pub const SCHED_CLS: u32 = 3;
    /// `BPF_PROG_TYPE_SCHED_ACT`
    pub const SCHED_ACT: u32 = 4;
    /// `BPF_PROG_TYPE_TRACEPOINT`
    pub const TRACEPOINT: u32 = 5;
    /// `BPF_PROG_TYPE_XDP`
    pub const XDP: u32 = 6;
    /// `BPF_PROG_TYPE_SOCK_OPS`
    pub const SOCK_OPS: u32 = 13;
}

/// Map type numbers (`enum bpf_map_type`).
pub mod map_type {
    /// `BPF_MAP_TYPE_HASH`
    pub const HASH: u32 = 1;
    /// `BPF_MAP_TYPE_ARRAY`
    pub const ARRAY: u32 = 2;
    /// `BPF_MAP_TYPE_PROG_ARRAY`
    pub const PROG_ARRAY: u32 = 3;
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`
    pub const PERF_EVENT_ARRAY: u32 = 4;
    /// `BPF_MAP_TYPE_PERCPU_HASH`
    pub const PERCPU_HASH: u32 = 5;
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`
    pub const PERCPU_ARRAY: u32 = 6;
    /// `BPF_MAP_TYPE_LRU_HASH`
    pub const LRU_HASH: u32 = 9;
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`
    pub const LRU_PERCPU_HASH: u32 = 10;
    /// `BPF_MAP_TYPE_LPM_TRIE`
    pub const LPM_TRIE: u32 = 11;
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`
    pub const ARRAY_OF_MAPS: u32 = 12;
    /// `BPF_MAP_TYPE_HASH_OF_MAPS`
    pub const HASH_OF_MAPS: u32 = 13;
    /// `BPF_MAP_TYPE_DEVMAP`
    pub const DEVMAP: u32 = 14;
    /// `BPF_MAP_TYPE_QUEUE`
    pub const QUEUE: u32 = 22;
    /// `BPF_MAP_TYPE_STACK`
    pub const STACK: u32 = 23;
    /// `BPF_MAP_TYPE_DEVMAP_HASH`
    pub const DEVMAP_HASH: u32 = 25;
    /// `BPF_MAP_TYPE_RINGBUF`
    pub const RINGBUF: u32 = 27;

    /// Whether lookups return one value per possible CPU.
    pub fn is_percpu(t: u32) -> bool {
        matches!(t, PERCPU_HASH | PERCPU_ARRAY | LRU_PERCPU_HASH)
    }
}

/// Number of possible CPUs, as the kernel sizes per-CPU lookups.
pub fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let mut it = part.split('-');
        let a: usize = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let b: usize = it.next().and_then(|s| s.parse().ok()).unwrap_or(a);
        n += b.saturating_sub(a) + 1;
    }
    n.max(1)
}

/// What [`Map::create`] makes.
#[derive(Clone, Debug, Default)]
pub struct MapSpec {
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `map_flags`.
    pub map_flags: u32,
    /// For map-in-map types, a template inner map.
    pub inner_map_fd: Option<i32>,
    /// Name (at most 15 bytes are passed).
    pub name: String,
}

/// A kernel map, closed on drop.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    spec: MapSpec,
}

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
pub const BPF_EXIST: u64 = 2;

impl Map {
    /// Creates a map.
    pub fn create(spec: &MapSpec) -> Result<Map, KernelError> {
        let fd = sys::map_create(spec)?;
        Ok(Map {
            fd,
            spec: spec.clone(),
        })
    }

    /// The file descriptor (for `lddw` map references and `fd_array`).
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// How it was created.
    pub fn spec(&self) -> &MapSpec {
        &self.spec
    }

    /// Bytes of a value as the syscall side sees it: per-CPU maps hold one
    /// 8-byte-aligned slot per possible CPU.
    pub fn value_buf_len(&self) -> usize {
        let v = self.spec.value_size as usize;
        if map_type::is_percpu(self.spec.map_type) {
            v.div_ceil(8) * 8 * possible_cpus()
        } else {
            v
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KernelError> {
        if key.len() != self.spec.key_size as usize {
            return Err(KernelError::Invalid {
                what: format!(
                    "key of {} bytes for key size {}",
                    key.len(),
                    self.spec.key_size
                ),
            });
        }
        Ok(())
    }

    /// `BPF_MAP_UPDATE_ELEM`.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), KernelError> {
        self.check_key(key)?;
        if value.len() != self.value_buf_len() {
            return Err(KernelError::Invalid {
                what: format!(
                    "value of {} bytes where the kernel expects {}",
                    value.len(),
                    self.value_buf_len()
                ),
            });
        }
        sys::map_elem(
            sys::BPF_MAP_UPDATE_ELEM,
            self.fd(),
            key.as_ptr() as u64,
            value.as_ptr() as u64,
            flags,
        )
    }

    /// `BPF_MAP_LOOKUP_ELEM`: `None` when the key is absent.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KernelError> {
        self.check_key(key)?;
        let mut value = vec![0u8; self.value_buf_len()];
        match sys::map_elem(
            sys::BPF_MAP_LOOKUP_ELEM,
            self.fd(),
            key.as_ptr() as u64,
            value.as_mut_ptr() as u64,
            0,
        ) {
            Ok(()) => Ok(Some(value)),
            Err(KernelError::Syscall { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `BPF_MAP_DELETE_ELEM`.
    pub fn delete(&self, key: &[u8]) -> Result<(), KernelError> {
        self.check_key(key)?;
        sys::map_elem(
            sys::BPF_MAP_DELETE_ELEM,
            self.fd(),
            key.as_ptr() as u64,
            0,
            0,
        )
    }

    /// Every key present, in the kernel's iteration order (`BPF_MAP_GET_NEXT_KEY`).
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, KernelError> {
        let mut keys = Vec::new();
        let mut next = vec![0u8; self.spec.key_size as usize];
        let mut prev: Option<Vec<u8>> = None;
        loop {
            let key_ptr = prev.as_ref().map_or(0, |k| k.as_ptr() as u64);
            match sys::map_elem(
                sys::BPF_MAP_GET_NEXT_KEY,
                self.fd(),
                key_ptr,
                next.as_mut_ptr() as u64,
                0,
            ) {
                Ok(()) => {
                    keys.push(next.clone());
                    prev = Some(next.clone());
                }
                Err(KernelError::Syscall { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    return Ok(keys)
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A program to load with [`ProgLoad::load`].
#[derive(Clone, Debug)]
pub struct ProgLoad<'a> {
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    /// The instruction bytes (map references already turned into fds).
    pub insns: &'a [u8],
    /// License string (`GPL` unlocks GPL-only helpers).
    pub license: String,
    /// Verifier log level (0-2; 4 adds statistics).
    pub log_level: u32,
    /// `prog_flags` (e.g. `BPF_F_STRICT_ALIGNMENT` = 1).
    pub prog_flags: u32,
    /// `expected_attach_type`.
    pub expected_attach_type: u32,
    /// Program name (at most 15 bytes are passed).
    pub name: String,
    /// First instruction of each subprogram, main first. When not empty,
    /// the program is loaded with a minimal BTF that describes each as a
    /// static `int fN(void)` (`func_info`): the kernel refuses callbacks
    /// (`ld_imm64` src 4) without it ("missing btf func_info").
    pub func_starts: Vec<u32>,
}

impl<'a> ProgLoad<'a> {
    /// A GPL program of `prog_type` with statistics logging on.
    pub fn new(prog_type: u32, insns: &'a [u8]) -> ProgLoad<'a> {
        ProgLoad {
            prog_type,
            insns,
            license: "GPL".into(),
            log_level: 4,
            prog_flags: 0,
            expected_attach_type: 0,
            name: String::new(),
            func_starts: Vec::new(),
        }
    }

    /// Loads the program and drops it, keeping only the verdict: `None` when
    /// the kernel accepts it, the kernel's message ([`rejection_message`])
    /// when its verifier rejects it; other failures are errors.
    pub fn verdict(&self) -> Result<Option<String>, KernelError> {
        match self.load() {
            Ok(_) => Ok(None),
            Err(KernelError::Rejected { log, .. }) => Ok(Some(rejection_message(&log).to_string())),
            Err(e) => Err(e),
        }
    }

    /// Runs `BPF_PROG_LOAD`; a rejection carries the verifier log.
    ///
    /// Programs with the pattern that crashes this machine's kernel
    /// verifier ([`crash_pattern`]) are refused before the system call.
    pub fn load(&self) -> Result<Prog, KernelError> {
        if !self.insns.len().is_multiple_of(8) || self.insns.is_empty() {
            return Err(KernelError::Invalid {
                what: format!("{} bytes of instructions", self.insns.len()),
            });
        }
        if let Some(what) = crash_pattern(self.insns) {
            return Err(KernelError::Unsafe { what });
        }
        let license = CString::new(self.license.clone()).map_err(|_| KernelError::Invalid {
            what: "license contains a NUL byte".into(),
        })?;
        let mut log = vec![0u8; 1 << 22];
        // BPF_PROG_LOAD can fail with EAGAIN when the verifier is
        // interrupted (e.g. under load); libbpf retries it a few times, and
        // so do we, so that a busy machine does not look like a rejection.
        let btf = if self.func_starts.is_empty() {
            None
        } else {
            Some(sys::btf_load(&static_funcs_btf(self.func_starts.len()))?)
        };
        let btf_fd = btf.as_ref().map(|b| b.as_raw_fd());
        let mut r = sys::prog_load(self, &license, &mut log, btf_fd);
        for _ in 0..5 {
            match &r {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    log.fill(0);
                    r = sys::prog_load(self, &license, &mut log, btf_fd);
                }
                _ => break,
            }
        }
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let log = String::from_utf8_lossy(&log[..end]).into_owned();
        match r {
            Ok(fd) => Ok(Prog { fd, log }),
            Err(source) => Err(KernelError::Rejected { source, log }),
        }
    }
}

/// A BTF blob with `int` (id 1), `int (void)` (id 2) and `n` static
/// functions `f0`.. of that type (ids 3..), as `func_info` names them.
fn static_funcs_btf(n: usize) -> Vec<u8> {
    const KIND_INT: u32 = 1;
    const KIND_FUNC: u32 = 12;
    const KIND_FUNC_PROTO: u32 = 13;
    let mut strings = b"\0int\0".to_vec();
    let mut types = Vec::new();
    let mut put = |v: u32| types.extend_from_slice(&v.to_le_bytes());
    // int: name "int", 4 bytes, signed 32 bits.
    put(1);
    put(KIND_INT << 24);
    put(4);
    put((1 << 24) | 32);
    // int (void)
    put(0);
    put(KIND_FUNC_PROTO << 24);
    put(1);
    for i in 0..n {
        let name_off = strings.len() as u32;
        strings.extend_from_slice(format!("f{i}\0").as_bytes());
        // Linkage (in vlen) 0: static.
        put(name_off);
        put(KIND_FUNC << 24);
        put(2);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&0xeb9fu16.to_le_bytes());
    out.push(1); // version
    out.push(0); // flags
    for v in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    out
}

/// A loaded program, closed on drop.
#[derive(Debug)]
pub struct Prog {
    fd: OwnedFd,
    log: String,
}

/// Input of [`Prog::test_run`].
#[derive(Clone, Debug, Default)]
pub struct TestRun<'a> {
    /// The packet (`data_in`).
    pub data_in: &'a [u8],
    /// Room for the output packet (`data_size_out`); 0 means no output.
    pub data_out_len: usize,
    /// `ctx_in` (e.g. a `struct xdp_md`), empty for none.
    pub ctx_in: &'a [u8],
    /// Room for `ctx_out`.
    pub ctx_out_len: usize,
    /// `repeat` (0 and 1 both run once).
    pub repeat: u32,
    /// `flags`.
    pub flags: u32,
}

/// Output of [`Prog::test_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value.
    pub retval: u32,
    /// The output packet.
    pub data_out: Vec<u8>,
    /// The output context.
    pub ctx_out: Vec<u8>,
    /// Average duration of one run in nanoseconds.
    pub duration_ns: u32,
}

impl Prog {
    /// The file descriptor.
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The verifier log of the load (with statistics at log level 4).
    pub fn log(&self) -> &str {
        &self.log
    }

    /// Runs `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, t: &TestRun<'_>) -> Result<TestRunOutput, KernelError> {
        sys::prog_test_run(self.fd(), t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One instruction's bytes.
    fn insn(code: u8, regs: u8, off: i16, imm: i32) -> Vec<u8> {
        let mut v = vec![code, regs];
        v.extend_from_slice(&off.to_le_bytes());
        v.extend_from_slice(&imm.to_le_bytes());
        v
    }

    #[test]
    fn masks_inside_loops_are_never_sent() {
        let mov = insn(0xb7, 0x01, 0, 8); // r1 = 8
        let arsh63 = insn(0xc7, 0x02, 0, 63); // r2 s>>= 63
        let arsh32 = insn(0xc7, 0x02, 0, 32); // r2 s>>= 32 (a sign extension)
        let neg32 = insn(0x84, 0x02, 0, 0); // w2 = -w2
        let sub = insn(0x17, 0x01, 0, 1); // r1 -= 1
        let back = |n: i16| insn(0x55, 0x01, -n, 0); // if r1 != 0 goto -n
        let exit = [insn(0xb7, 0x00, 0, 0), insn(0x95, 0, 0, 0)].concat();
        let prog = |body: &[&[u8]]| -> Vec<u8> { [body.concat(), exit.clone()].concat() };
        // A mask in the loop body: refused, naming both instructions.
        let bad = prog(&[&mov, &arsh63, &sub, &back(3)]);
        let why = crash_pattern(&bad).expect("refused");
        assert!(
            why.contains("arsh at insn 1") && why.contains("1..=3"),
            "{why}"
        );
        assert!(crash_pattern(&prog(&[&mov, &neg32, &sub, &back(3)])).is_some());
        // gotol (JMP32 JA, offset in imm) back over a mask.
        let gotol = insn(0x06, 0, 0, -3);
        assert!(crash_pattern(&prog(&[&mov, &neg32, &sub, &gotol])).is_some());
        // The same mask before the loop, a sign extension in it, or no loop
        // at all: sent.
        assert_eq!(crash_pattern(&prog(&[&arsh63, &mov, &sub, &back(2)])), None);
        assert_eq!(crash_pattern(&prog(&[&mov, &arsh32, &sub, &back(3)])), None);
        assert_eq!(crash_pattern(&prog(&[&mov, &arsh63, &neg32])), None);
        // And ProgLoad refuses before any system call (works without bpf()).
        match ProgLoad::new(6, &bad).load() {
            Err(KernelError::Unsafe { what }) => assert!(what.contains("maybe_fork_scalars")),
            other => panic!("{other:?}"),
        }
    }

    fn skip() -> bool {
        if let Err(e) = probe() {
            println!("skipped: bpf() is not available here: {e}");
            return true;
        }
        false
    }

    #[test]
    fn log_parsing_finds_message_instruction_and_time() {
        let log = "0: R1=ctx() R10=fp0\n0: (b7) r0 = 0\n1: (79) r2 = *(u64 *)(r9 +0)\n\
                   R9 !read_ok\nprocessed 2 insns (limit 1000000)\n\
                   verification time 17 usec\nstack depth 0\n";
        assert_eq!(rejection_message(log), "R9 !read_ok");
        assert_eq!(rejection_insn(log, "R9 !read_ok"), Some(1));
        assert_eq!(verification_time_usec(log), Some(17));
        // States printed after the message, and a message the kernel left
        // without its newline.
        let looped = "infinite loop detected at insn 1\ncur state: R1=0\nold state: R1=0\n\
                      expected prog array map for tail callverification time 9 usec\n";
        assert_eq!(
            rejection_message(looped),
            "expected prog array map for tail call"
        );
        assert_eq!(
            rejection_insn(looped, "infinite loop detected at insn 1"),
            Some(1)
        );
        assert_eq!(verification_time_usec(looped), Some(9));
        assert_eq!(verification_time_usec("no statistics"), None);
    }

    #[test]
    fn xdp_test_run_returns_the_program_result() {
        if skip() {
            return;
        }
        // r0 = 2 (XDP_PASS); exit
        let insns = [0xb7u8, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let prog = ProgLoad::new(prog_type::XDP, &insns).load().unwrap();
        assert!(prog.log().contains("processed 2 insns"), "{}", prog.log());
        let pkt = [0xabu8; 64];
        let out = prog
            .test_run(&TestRun {
                data_in: &pkt,
                data_out_len: 256,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(out.retval, 2);
        assert_eq!(out.data_out, pkt);
    }

    #[test]
    fn rejection_carries_the_verifier_log() {
        if skip() {
            return;
        }
        // r0 = *(u64 *)(r2 + 0); exit   -- r2 is not initialised
        let insns = [0x79u8, 0x20, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let err = ProgLoad::new(prog_type::XDP, &insns).load().unwrap_err();
        match err {
            KernelError::Rejected { log, .. } => {
                assert!(log.contains("R2 !read_ok"), "{log}");
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn hash_map_update_lookup_delete_and_iterate() {
        if skip() {
            return;
        }
        let map = Map::create(&MapSpec {
            map_type: map_type::HASH,
            key_size: 4,
            value_size: 8,
            max_entries: 4,
            name: "t".into(),
            ..Default::default()
        })
        .unwrap();
        map.update(&1u32.to_le_bytes(), &7u64.to_le_bytes(), BPF_ANY)
            .unwrap();
        assert!(map
            .update(&1u32.to_le_bytes(), &8u64.to_le_bytes(), BPF_NOEXIST)
            .is_err());
        assert_eq!(
            map.lookup(&1u32.to_le_bytes()).unwrap(),
            Some(7u64.to_le_bytes().to_vec())
        );
        assert_eq!(map.lookup(&2u32.to_le_bytes()).unwrap(), None);
        assert_eq!(map.keys().unwrap(), vec![1u32.to_le_bytes().to_vec()]);
        map.delete(&1u32.to_le_bytes()).unwrap();
        assert!(map.keys().unwrap().is_empty());
    }
}
