//! Differential tests against the running kernel: the same map is created
//! in the kernel (through `bpf()`) and in bpfkit, the same seeded random
//! sequence of control-side operations is applied to both, and every
//! result (value or errno) and the final contents must agree.
//!
//! Skips with a printed reason where `bpf()` is refused.
//!
//! Element operations go through a small raw `bpf()` wrapper here rather
//! than `bpfkit-kernel`'s, because queues and stacks need a NULL key and
//! `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, which that crate does not offer.

use bpfkit_abi::update_flags::{ANY, EXIST, LOCK, NOEXIST};
use bpfkit_kernel::{Map as KMap, MapSpec};
use bpfkit_maps::{map_flags, Map, MapDef, MapError, MapOptions, MapType};
use std::fmt::Debug;

const LOOKUP: i64 = 1;
const UPDATE: i64 = 2;
const DELETE: i64 = 3;
const NEXT_KEY: i64 = 4;
const LOOKUP_AND_DELETE: i64 = 21;

#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// One `BPF_MAP_*_ELEM` command; `key` empty means a NULL key pointer.
fn bpf_elem(cmd: i64, fd: i32, key: &[u8], value: &mut [u8], flags: u64) -> Result<(), i32> {
    let attr = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: if key.is_empty() {
            0
        } else {
            key.as_ptr() as u64
        },
        value: if value.is_empty() {
            0
        } else {
            value.as_mut_ptr() as u64
        },
        flags,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for the element commands;
    // the key and value pointers are null or point to live buffers of the
    // sizes the map was created with (the callers size them so), and the
    // kernel writes at most the map's value (or key) size through them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// The kernel twin of a bpfkit map.
struct Twin {
    k: KMap,
    ours: Map,
    key_size: usize,
    vlen: usize,
}

impl Twin {
    fn new(def: MapDef) -> Twin {
        let k = KMap::create(&MapSpec {
            map_type: def.map_type as u32,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            map_flags: def.map_flags,
            inner_map_fd: None,
            name: "diff".into(),
        })
        .unwrap_or_else(|e| panic!("kernel refused {def:?}: {e}"));
        let opts = MapOptions::new()
            .possible_cpus(bpfkit_kernel::possible_cpus())
            .ifindex_check(|i| interfaces().contains(&i));
        let ours = Map::new(def.clone(), &opts).unwrap();
        let vlen = ours.value_buf_len();
        assert_eq!(vlen, k.value_buf_len());
        Twin {
            k,
            ours,
            key_size: def.key_size as usize,
            vlen,
        }
    }

    fn k_lookup(&self, key: &[u8]) -> Result<Vec<u8>, i32> {
        let mut v = vec![0; self.vlen];
        bpf_elem(LOOKUP, self.k.fd(), key, &mut v, 0).map(|_| v)
    }

    fn k_update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), i32> {
        let mut v = value.to_vec();
        bpf_elem(UPDATE, self.k.fd(), key, &mut v, flags)
    }

    fn k_delete(&self, key: &[u8]) -> Result<(), i32> {
        bpf_elem(DELETE, self.k.fd(), key, &mut [], 0)
    }

    fn k_next(&self, key: Option<&[u8]>) -> Result<Vec<u8>, i32> {
        let mut next = vec![0; self.key_size.max(1)];
        bpf_elem(NEXT_KEY, self.k.fd(), key.unwrap_or(&[]), &mut next, 0).map(|_| next)
    }

    fn k_take(&self, key: &[u8]) -> Result<Vec<u8>, i32> {
        let mut v = vec![0; self.vlen];
        bpf_elem(LOOKUP_AND_DELETE, self.k.fd(), key, &mut v, 0).map(|_| v)
    }

    /// Keys in iteration order (kernel, then ours).
    fn keys(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut kk = Vec::new();
        let mut prev: Option<Vec<u8>> = None;
        while let Ok(n) = self.k_next(prev.as_deref()) {
            kk.push(n.clone());
            prev = Some(n);
        }
        let mut ok = Vec::new();
        let mut prev: Option<Vec<u8>> = None;
        while let Ok(n) = self.ours.get_next_key(prev.as_deref()) {
            ok.push(n.clone());
            prev = Some(n);
        }
        (kk, ok)
    }
}

/// The host's interface indexes (devmaps accept only existing ones).
fn interfaces() -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(e.path().join("ifindex")) {
            v.extend(s.trim().parse::<u32>().ok());
        }
    }
    v
}

/// Compares one operation's outcome; returns whether it succeeded.
fn same<T: PartialEq + Debug>(
    ctx: &str,
    ours: Result<T, MapError>,
    kernel: Result<T, i32>,
) -> Option<T> {
    match (ours, kernel) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{ctx}: values differ (bpfkit, kernel)");
            Some(a)
        }
        (Err(e), Err(k)) => {
            assert_eq!(e.errno(), k, "{ctx}: bpfkit says {e}, the kernel errno {k}");
            None
        }
        (a, b) => panic!("{ctx}: bpfkit {a:?}, kernel {b:?}"),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn flags(&mut self) -> u64 {
        match self.below(12) {
            0..=4 => ANY,
            5..=7 => NOEXIST,
            8..=10 => EXIST,
            _ => [3, LOCK, 8][self.below(3) as usize],
        }
    }
}

fn kernel_ok() -> bool {
    match bpfkit_kernel::probe() {
        Ok(()) => true,
        Err(e) => {
            println!("skipped: bpf() is not available here: {e}");
            false
        }
    }
}

const OPS: usize = 400;
const SEEDS: [u64; 3] = [0x9e37_79b9_7f4a_7c15, 0x1234_5678_9abc_def1, 42];

/// Random keyed operations; `key` draws a key; `ordered` compares
/// `get_next_key` results exactly (otherwise only their outcome).
fn run_keyed(def: MapDef, key: impl Fn(&mut Rng) -> Vec<u8>, ordered: bool, take: bool) {
    run_keyed_with(def, key, |r, n| r.bytes(n), ordered, take)
}

/// [`run_keyed`] with values drawn by `value(rng, len)`.
fn run_keyed_with(
    def: MapDef,
    key: impl Fn(&mut Rng) -> Vec<u8>,
    value: impl Fn(&mut Rng, usize) -> Vec<u8>,
    ordered: bool,
    take: bool,
) {
    for seed in SEEDS {
        let t = Twin::new(def.clone());
        let mut rng = Rng(seed);
        let (mut hits, mut misses) = (0, 0);
        for step in 0..OPS {
            let k = key(&mut rng);
            let ctx =
                |op: &str| format!("{} seed {seed:#x} step {step}: {op} {k:02x?}", def.map_type);
            match rng.below(10) {
                0..=3 => {
                    let v = value(&mut rng, t.vlen);
                    let f = rng.flags();
                    same(
                        &ctx(&format!("update {v:02x?} flags {f}")),
                        t.ours.update(&k, &v, f),
                        t.k_update(&k, &v, f),
                    );
                }
                4..=5 => match same(&ctx("lookup"), t.ours.lookup(&k), t.k_lookup(&k)) {
                    Some(_) => hits += 1,
                    None => misses += 1,
                },
                6 => {
                    same(&ctx("delete"), t.ours.delete(&k), t.k_delete(&k));
                }
                7 if take => {
                    same(
                        &ctx("lookup_and_delete"),
                        t.ours.lookup_and_delete(&k),
                        t.k_take(&k),
                    );
                }
                _ => {
                    let start = (rng.below(4) != 0).then_some(k.clone());
                    let ours = t.ours.get_next_key(start.as_deref());
                    let kern = t.k_next(start.as_deref());
                    if ordered {
                        same(&ctx(&format!("get_next_key from {start:02x?}")), ours, kern);
                    } else {
                        // Orders differ (hash seeds): compare the outcome,
                        // and that the key returned is present.
                        let ctx = ctx(&format!("get_next_key from {start:02x?}"));
                        match (ours, kern) {
                            (Ok(a), Ok(b)) => {
                                assert!(t.ours.lookup(&a).is_ok(), "{ctx}");
                                assert!(t.k_lookup(&b).is_ok(), "{ctx}");
                            }
                            (Err(e), Err(k)) => assert_eq!(e.errno(), k, "{ctx}"),
                            // The last key in one order need not be last in the other.
                            (Err(MapError::NotFound), Ok(_)) | (Ok(_), Err(2))
                                if start.is_some() => {}
                            (a, b) => panic!("{ctx}: bpfkit {a:?}, kernel {b:?}"),
                        }
                    }
                }
            }
        }
        // The sequence must exercise both outcomes.
        assert!(
            hits > 10 && misses > 10,
            "{} seed {seed:#x}: {hits} hits, {misses} misses",
            def.map_type
        );
        // Final contents.
        let (mut kk, mut ok) = t.keys();
        if !ordered {
            kk.sort();
            ok.sort();
        }
        assert_eq!(
            ok, kk,
            "{} seed {seed:#x}: final keys (bpfkit, kernel)",
            def.map_type
        );
        for k in &kk {
            let ctx = format!("{} seed {seed:#x}: final value of {k:02x?}", def.map_type);
            same(&ctx, t.ours.lookup(k), t.k_lookup(k));
        }
    }
}

fn u32_key(n: u64) -> impl Fn(&mut Rng) -> Vec<u8> {
    move |r: &mut Rng| (r.below(n) as u32).to_ne_bytes().to_vec()
}

#[test]
fn array_matches_kernel() {
    if kernel_ok() {
        run_keyed(
            MapDef::new(MapType::Array, 4, 12, 8),
            u32_key(11),
            true,
            false,
        );
    }
}

#[test]
fn percpu_array_matches_kernel() {
    if kernel_ok() {
        run_keyed(
            MapDef::new(MapType::PercpuArray, 4, 4, 4),
            u32_key(6),
            true,
            false,
        );
    }
}

#[test]
fn hash_matches_kernel() {
    if kernel_ok() {
        run_keyed(
            MapDef::new(MapType::Hash, 4, 8, 8),
            u32_key(14),
            false,
            true,
        );
        let no_prealloc = MapDef::new(MapType::Hash, 6, 3, 5).with_flags(map_flags::NO_PREALLOC);
        run_keyed(no_prealloc, |r| vec![r.below(9) as u8; 6], false, true);
    }
}

#[test]
fn percpu_hash_matches_kernel() {
    if kernel_ok() {
        run_keyed(
            MapDef::new(MapType::PercpuHash, 4, 4, 8),
            u32_key(14),
            false,
            true,
        );
    }
}

#[test]
fn lru_hash_matches_kernel_while_not_full() {
    if !kernel_ok() {
        return;
    }
    // The kernel's LRU hands out free elements from per-CPU lists and may
    // evict before the map is full if the thread migrates: keep to one CPU
    // and far below max_entries.
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; the
    // call only affects this thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    run_keyed(
        MapDef::new(MapType::LruHash, 4, 8, 1024),
        u32_key(40),
        false,
        true,
    );
}

#[test]
fn lru_percpu_hash_matches_kernel_while_not_full() {
    if !kernel_ok() {
        return;
    }
    // As for lru_hash: one CPU, far below max_entries.
    // SAFETY: as in lru_hash_matches_kernel_while_not_full.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    run_keyed(
        MapDef::new(MapType::LruPercpuHash, 4, 12, 1024),
        u32_key(40),
        false,
        true,
    );
}

#[test]
fn devmaps_match_kernel() {
    if !kernel_ok() {
        return;
    }
    let mut ifs = interfaces();
    ifs.extend([0, 9999, 0x7fff_0000]);
    let value = move |r: &mut Rng, len: usize| {
        let mut v = ifs[r.below(ifs.len() as u64) as usize]
            .to_ne_bytes()
            .to_vec();
        if len == 8 {
            // No program (a real one needs an XDP devmap program fd).
            v.extend_from_slice(&[0, -1i32 as u32][r.below(2) as usize].to_ne_bytes());
        }
        v
    };
    for (ty, vs) in [
        (MapType::Devmap, 4),
        (MapType::Devmap, 8),
        (MapType::DevmapHash, 4),
        (MapType::DevmapHash, 8),
    ] {
        run_keyed_with(
            MapDef::new(ty, 4, vs, 4),
            u32_key(7),
            &value,
            ty == MapType::Devmap,
            false,
        );
    }
}

#[test]
fn lpm_trie_matches_kernel() {
    if !kernel_ok() {
        return;
    }
    let bases: [[u8; 4]; 6] = [
        [10, 0, 0, 0],
        [10, 0, 1, 0],
        [10, 1, 0, 0],
        [192, 168, 0, 0],
        [192, 168, 128, 0],
        [255, 255, 255, 255],
    ];
    let key = move |r: &mut Rng| {
        let len = match r.below(20) {
            0 => 33 + r.below(3) as u32,
            1..=4 => r.below(33) as u32,
            _ => [8, 16, 20, 24, 32][r.below(5) as usize],
        };
        let mut data = bases[r.below(6) as usize];
        if r.below(3) == 0 {
            data[3] = r.next() as u8;
        }
        let mut k = len.to_ne_bytes().to_vec();
        k.extend_from_slice(&data);
        k
    };
    run_keyed(
        MapDef::new(MapType::LpmTrie, 8, 4, 8).with_flags(map_flags::NO_PREALLOC),
        key,
        true,
        false,
    );
}

#[test]
fn queue_and_stack_match_kernel() {
    if !kernel_ok() {
        return;
    }
    for ty in [MapType::Queue, MapType::Stack] {
        for seed in SEEDS {
            let t = Twin::new(MapDef::new(ty, 0, 4, 6));
            let mut rng = Rng(seed);
            for step in 0..OPS {
                let ctx = |op: &str| format!("{ty} seed {seed:#x} step {step}: {op}");
                match rng.below(8) {
                    0..=3 => {
                        let v = rng.bytes(4);
                        let f = rng.flags();
                        same(
                            &ctx(&format!("push flags {f}")),
                            t.ours.update(&[], &v, f),
                            t.k_update(&[], &v, f),
                        );
                    }
                    4 => {
                        same(&ctx("peek"), t.ours.lookup(&[]), t.k_lookup(&[]));
                    }
                    5 | 6 => {
                        same(&ctx("pop"), t.ours.lookup_and_delete(&[]), t.k_take(&[]));
                    }
                    _ => {
                        same(&ctx("delete"), t.ours.delete(&[]), t.k_delete(&[]));
                        same(
                            &ctx("get_next_key"),
                            t.ours.get_next_key(None),
                            t.k_next(None),
                        );
                    }
                }
            }
            loop {
                let done = same(
                    &format!("{ty} drain"),
                    t.ours.lookup_and_delete(&[]),
                    t.k_take(&[]),
                );
                if done.is_none() {
                    break;
                }
            }
        }
    }
}

#[test]
fn creation_checks_match_kernel() {
    if !kernel_ok() {
        return;
    }
    use MapType::*;
    let f = |d: MapDef, flags: u32| d.with_flags(flags);
    let defs = [
        MapDef::new(Array, 4, 4, 1),
        MapDef::new(Array, 8, 4, 1),
        MapDef::new(Array, 4, 0, 1),
        MapDef::new(Array, 4, 4, 0),
        f(MapDef::new(Array, 4, 4, 1), map_flags::NO_PREALLOC),
        f(MapDef::new(Array, 4, 4, 1), map_flags::MMAPABLE),
        f(
            MapDef::new(Array, 4, 4, 1),
            map_flags::RDONLY_PROG | map_flags::WRONLY_PROG,
        ),
        f(
            MapDef::new(Array, 4, 4, 1),
            map_flags::RDONLY | map_flags::WRONLY,
        ),
        f(MapDef::new(Array, 4, 4, 1), map_flags::PRESERVE_ELEMS),
        f(MapDef::new(PercpuArray, 4, 4, 1), map_flags::MMAPABLE),
        MapDef::new(PercpuArray, 4, 40000, 1),
        MapDef::new(ProgArray, 4, 8, 1),
        f(MapDef::new(ProgArray, 4, 4, 1), map_flags::RDONLY_PROG),
        f(
            MapDef::new(PerfEventArray, 4, 4, 1),
            map_flags::PRESERVE_ELEMS,
        ),
        MapDef::new(Hash, 0, 4, 1),
        MapDef::new(Hash, 4, 0, 1),
        MapDef::new(Hash, 4, 4, 0),
        MapDef::new(Hash, 513, 4, 1),
        MapDef::new(Hash, 512, 4, 1),
        MapDef::new(Hash, 4, 4_194_251, 1),
        MapDef::new(Hash, 4, 4_194_252, 1),
        MapDef::new(Hash, 64, 4_194_192, 1),
        f(MapDef::new(Hash, 4, 4, 1 << 27), map_flags::NO_PREALLOC),
        f(
            MapDef::new(Hash, 4, 4, (1 << 27) + 1),
            map_flags::NO_PREALLOC,
        ),
        MapDef::new(PercpuHash, 4, 32768, 1),
        MapDef::new(PercpuHash, 4, 32769, 1),
        MapDef::new(Array, 4, 1 << 31, 1),
        MapDef::new(Queue, 0, 1 << 22, 1),
        MapDef::new(Queue, 0, (1 << 22) + 1, 1),
        f(
            MapDef::new(LpmTrie, 8, 4_194_024, 1),
            map_flags::NO_PREALLOC,
        ),
        f(
            MapDef::new(LpmTrie, 8, 4_194_025, 1),
            map_flags::NO_PREALLOC,
        ),
        f(MapDef::new(Hash, 4, 4, 1), map_flags::MMAPABLE),
        f(MapDef::new(Hash, 4, 4, 1), map_flags::NO_COMMON_LRU),
        f(
            MapDef::new(Hash, 4, 4, 1),
            map_flags::NO_PREALLOC | map_flags::ZERO_SEED,
        ),
        MapDef::new(PercpuHash, 4, 40000, 1),
        f(MapDef::new(LruHash, 4, 4, 1), map_flags::NO_PREALLOC),
        f(
            MapDef::new(LruPercpuHash, 4, 4, 3),
            map_flags::NO_COMMON_LRU,
        ),
        MapDef::new(LpmTrie, 8, 4, 1),
        f(MapDef::new(LpmTrie, 4, 4, 1), map_flags::NO_PREALLOC),
        f(MapDef::new(LpmTrie, 261, 4, 1), map_flags::NO_PREALLOC),
        f(MapDef::new(LpmTrie, 260, 4, 1), map_flags::NO_PREALLOC),
        f(MapDef::new(LpmTrie, 8, 0, 1), map_flags::NO_PREALLOC),
        f(MapDef::new(LpmTrie, 8, 4, 0), map_flags::NO_PREALLOC),
        MapDef::new(Queue, 4, 4, 1),
        MapDef::new(Queue, 0, 0, 1),
        MapDef::new(Stack, 0, 4, 0),
        f(MapDef::new(Stack, 0, 4, 1), map_flags::NO_PREALLOC),
        MapDef::new(Ringbuf, 0, 0, 4096),
        MapDef::new(Ringbuf, 0, 0, 4096 * 3),
        MapDef::new(Ringbuf, 0, 0, 1024),
        MapDef::new(Ringbuf, 4, 0, 4096),
        MapDef::new(Ringbuf, 0, 0, 0),
        MapDef::new(Devmap, 4, 4, 1),
        MapDef::new(Devmap, 4, 6, 1),
        MapDef::new(Devmap, 8, 4, 1),
        MapDef::new(DevmapHash, 4, 8, 1),
        f(MapDef::new(DevmapHash, 4, 8, 1), map_flags::RDONLY_PROG),
    ];
    let opts = MapOptions::new().possible_cpus(bpfkit_kernel::possible_cpus());
    for def in defs {
        let kernel = KMap::create(&MapSpec {
            map_type: def.map_type as u32,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            map_flags: def.map_flags,
            inner_map_fd: None,
            name: String::new(),
        });
        let ours = Map::new(def.clone(), &opts);
        match (&ours, &kernel) {
            (Ok(_), Ok(_)) => {}
            (Err(e), Err(bpfkit_kernel::KernelError::Syscall { source, .. })) => {
                assert_eq!(
                    Some(e.errno()),
                    source.raw_os_error(),
                    "{def:?}: bpfkit says {e}"
                )
            }
            _ => panic!("{def:?}: bpfkit {ours:?}, kernel {kernel:?}"),
        }
    }
}

// -------------------------------------------------------------------------
// Program side: the same helper calls made by a tiny XDP program in the
// kernel (BPF_PROG_TEST_RUN, on CPU 0) and through bpfkit's program-side
// API with cpu 0.
// -------------------------------------------------------------------------

/// Hand-assembled instructions (the encodings of RFC 9669).
struct Asm(Vec<u8>);

impl Asm {
    fn insn(&mut self, op: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Asm {
        self.0.push(op);
        self.0.push(dst | src << 4);
        self.0.extend_from_slice(&off.to_le_bytes());
        self.0.extend_from_slice(&imm.to_le_bytes());
        self
    }
    /// `*(u32 *)(r10 + off) = imm`
    fn st32(&mut self, off: i16, imm: i32) -> &mut Asm {
        self.insn(0x62, 10, 0, off, imm)
    }
    /// `*(u64 *)(r10 + off) = imm` (sign-extended)
    fn st64(&mut self, off: i16, imm: i32) -> &mut Asm {
        self.insn(0x7a, 10, 0, off, imm)
    }
    /// `rD = map fd` (`lddw` with `BPF_PSEUDO_MAP_FD`)
    fn map(&mut self, dst: u8, fd: i32) -> &mut Asm {
        self.insn(0x18, dst, 1, 0, fd).insn(0, 0, 0, 0, 0)
    }
    /// `rD = r10 + off`
    fn fp(&mut self, dst: u8, off: i32) -> &mut Asm {
        self.insn(0xbf, dst, 10, 0, 0).insn(0x07, dst, 0, 0, off)
    }
    /// `rD = imm`
    fn mov(&mut self, dst: u8, imm: i32) -> &mut Asm {
        self.insn(0xb7, dst, 0, 0, imm)
    }
    fn call(&mut self, helper: i32) -> &mut Asm {
        self.insn(0x85, 0, 0, 0, helper)
    }
    /// `if r0 != 0 goto +skip`
    fn jne0(&mut self, skip: i16) -> &mut Asm {
        self.insn(0x55, 0, 0, skip, 0)
    }
    /// `r0 = *(u32 *)(r10 + off)`
    fn ld32(&mut self, off: i16) -> &mut Asm {
        self.insn(0x61, 0, 10, off, 0)
    }
    fn exit(&mut self) -> &mut Asm {
        self.insn(0x95, 0, 0, 0, 0)
    }
}

/// Runs `insns` as an XDP program on CPU 0; its `r0` (low 32 bits).
fn k_run(insns: &[u8]) -> u32 {
    let prog = bpfkit_kernel::ProgLoad::new(bpfkit_kernel::prog_type::XDP, insns)
        .load()
        .unwrap_or_else(|e| panic!("{e}"));
    let pkt = [0u8; 64];
    prog.test_run(&bpfkit_kernel::TestRun {
        data_in: &pkt,
        ..Default::default()
    })
    .unwrap()
    .retval
}

/// What a helper returns in `r0` (low 32 bits) for bpfkit's result.
fn ret<T>(r: Result<T, MapError>, ok: impl FnOnce(T) -> u32) -> u32 {
    match r {
        Ok(v) => ok(v),
        Err(e) => e.to_helper_ret() as u32,
    }
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; the
    // call only affects this thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[test]
fn program_side_updates_match_kernel() {
    if !kernel_ok() {
        return;
    }
    pin_to_cpu0();
    for def in [
        MapDef::new(MapType::Hash, 4, 8, 6),
        MapDef::new(MapType::PercpuHash, 4, 8, 6),
        MapDef::new(MapType::Array, 4, 8, 6),
        MapDef::new(MapType::PercpuArray, 4, 8, 6),
        MapDef::new(MapType::LruHash, 4, 8, 1024),
        MapDef::new(MapType::LruPercpuHash, 4, 8, 1024),
    ] {
        let t = Twin::new(def.clone());
        let mut rng = Rng(7);
        for step in 0..120 {
            let key = rng.below(9) as u32;
            let val = rng.next() as i32;
            let flags = rng.flags();
            let ctx = format!("{} step {step}: key {key}", def.map_type);
            let (kr, or) = if rng.below(4) == 0 {
                let mut a = Asm(Vec::new());
                a.st32(-4, key as i32)
                    .map(1, t.k.fd())
                    .fp(2, -4)
                    .call(3)
                    .exit();
                (
                    k_run(&a.0),
                    ret(t.ours.prog_delete(&key.to_ne_bytes()), |_| 0),
                )
            } else {
                let mut a = Asm(Vec::new());
                a.st32(-4, key as i32)
                    .st64(-16, val)
                    .map(1, t.k.fd())
                    .fp(2, -4)
                    .fp(3, -16)
                    .mov(4, flags as i32)
                    .call(2)
                    .exit();
                let v = (val as i64 as u64).to_ne_bytes();
                (
                    k_run(&a.0),
                    ret(t.ours.prog_update(&key.to_ne_bytes(), &v, flags, 0), |_| 0),
                )
            };
            assert_eq!(or, kr, "{ctx}: r0 (bpfkit, kernel)");
        }
        let (mut kk, mut ok) = t.keys();
        kk.sort();
        ok.sort();
        assert_eq!(ok, kk, "{}: final keys", def.map_type);
        for k in &kk {
            // Per-CPU maps: CPU 0's slot was written, the others zeroed
            // for new elements.
            let ctx = format!("{}: final value of {k:02x?}", def.map_type);
            same(&ctx, t.ours.lookup(k), t.k_lookup(k));
        }
    }
}

#[test]
fn program_side_queue_and_stack_match_kernel() {
    if !kernel_ok() {
        return;
    }
    for ty in [MapType::Queue, MapType::Stack] {
        let t = Twin::new(MapDef::new(ty, 0, 8, 4));
        let mut rng = Rng(11);
        for step in 0..120 {
            let mut a = Asm(Vec::new());
            let val = rng.next() as i32;
            let (kr, or) = match rng.below(3) {
                0 => {
                    let flags = rng.flags();
                    a.st64(-16, val)
                        .map(1, t.k.fd())
                        .fp(2, -16)
                        .mov(3, flags as i32)
                        .call(87)
                        .exit();
                    let v = (val as i64 as u64).to_ne_bytes();
                    (k_run(&a.0), ret(t.ours.push(&v, flags), |_| 0))
                }
                op => {
                    // pop (88) or peek (89); r0 = the value's low word.
                    a.st64(-16, 0)
                        .map(1, t.k.fd())
                        .fp(2, -16)
                        .call(if op == 1 { 88 } else { 89 })
                        .jne0(1)
                        .ld32(-16)
                        .exit();
                    let mut out = [0u8; 8];
                    let r = if op == 1 {
                        t.ours.pop(&mut out)
                    } else {
                        t.ours.peek(&mut out)
                    };
                    let low = u32::from_ne_bytes(out[..4].try_into().unwrap());
                    (k_run(&a.0), ret(r, |_| low))
                }
            };
            assert_eq!(or, kr, "{ty} step {step}: r0 (bpfkit, kernel)");
        }
    }
}

#[test]
fn program_side_ringbuf_matches_kernel() {
    if !kernel_ok() {
        return;
    }
    use bpfkit_maps::ringbuf::query;
    let t = Twin::new(MapDef::new(MapType::Ringbuf, 0, 0, 4096));
    let mut rng = Rng(5);
    let mut sent = Vec::new();
    for step in 0..200 {
        let size = 1 + rng.below(16) as i32;
        let flags = [0, 0, 0, 1, 2, 4][rng.below(6) as usize];
        let q = rng.below(4);
        // ringbuf_output(map, fp-16, size, flags); on success r0 =
        // ringbuf_query(map, q).
        let mut a = Asm(Vec::new());
        a.st64(-16, step)
            .st64(-8, -1)
            .map(1, t.k.fd())
            .fp(2, -16)
            .mov(3, size)
            .mov(4, flags)
            .call(130)
            .jne0(4)
            .map(1, t.k.fd())
            .mov(2, q as i32)
            .call(134)
            .exit();
        let mut data = (step as i64).to_ne_bytes().to_vec();
        data.extend_from_slice(&(-1i64).to_ne_bytes());
        let r = t.ours.ringbuf_output(&data[..size as usize], flags as u64);
        if r.is_ok() {
            sent.push(data[..size as usize].to_vec());
        }
        let or = ret(r, |_| t.ours.ringbuf_query(q) as u32);
        assert_eq!(
            or,
            k_run(&a.0),
            "step {step}: size {size} flags {flags} query {q}"
        );
    }
    // The ring is full by now (4096 bytes, records of 16 or 24 bytes);
    // the consumer sees every record in order.
    let mut got = Vec::new();
    t.ours.ringbuf_consume(|r| got.push(r.to_vec())).unwrap();
    assert_eq!(got, sent);
    assert!(got.len() > 100 && t.ours.ringbuf_query(query::AVAIL_DATA) == 0);
}

#[test]
fn access_flags_and_freeze_match_kernel() {
    if !kernel_ok() {
        return;
    }
    const FREEZE: i64 = 22;
    for flags in [
        0,
        map_flags::RDONLY,
        map_flags::WRONLY,
        map_flags::RDONLY_PROG,
    ] {
        for freeze in [false, true] {
            let t = Twin::new(MapDef::new(MapType::Hash, 4, 4, 4).with_flags(flags));
            let ctx = format!("flags {flags:#x} frozen {freeze}");
            if freeze {
                #[repr(C)]
                struct FreezeAttr {
                    map_fd: u32,
                }
                let attr = FreezeAttr {
                    map_fd: t.k.fd() as u32,
                };
                let call = || {
                    // SAFETY: `attr` is the `bpf_attr` of BPF_MAP_FREEZE.
                    let r = unsafe {
                        libc::syscall(libc::SYS_bpf, FREEZE, &attr as *const FreezeAttr, 4usize)
                    };
                    if r < 0 {
                        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
                    } else {
                        Ok(())
                    }
                };
                same(&ctx, t.ours.freeze(), call());
                same(&ctx, t.ours.freeze(), call());
            }
            let k = 1u32.to_ne_bytes();
            same(&ctx, t.ours.update(&k, &k, ANY), t.k_update(&k, &k, ANY));
            same(&ctx, t.ours.lookup(&k), t.k_lookup(&k));
            same(&ctx, t.ours.get_next_key(None), t.k_next(None));
            same(&ctx, t.ours.lookup_and_delete(&k), t.k_take(&k));
            same(&ctx, t.ours.delete(&k), t.k_delete(&k));
        }
    }
}
