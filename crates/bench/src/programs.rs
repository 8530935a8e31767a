//! The benchmark programs: their objects, their inputs and a Rust reference
//! implementation of what each computes.
//!
//! Every program takes one argument, `r1` = start of its input buffer (what
//! both rbpf's `execute_program(mem, &[])` and bpfkit pass), and returns a
//! 32-bit checksum or hash, zero-extended, in `r0`. The buffer starts with a
//! header holding what the program cannot get from the VM (lengths, a seed);
//! see `bench/programs/bench.h`.

use crate::link::{link, LinkError};

/// Data bytes of a length-prefixed packet (`MAX_PKT` in `bench.h`).
pub const MAX_PKT: usize = 1500;
/// Size of `struct pkt`: `u32 len`, `u32 seed`, `u8 data[MAX_PKT]`.
pub const PKT_SIZE: usize = 8 + MAX_PKT;
/// Descriptors in a burst (`MAX_BURST` in `parser.c`).
pub const MAX_BURST: usize = 32;
/// Size of `struct burst`: count, seed, descriptors.
pub const BURST_HEADER: usize = 8 + 4 * MAX_BURST;
/// Bytes after the burst header that packets may occupy (`BURST_BYTES`).
pub const BURST_BYTES: usize = 8192;

/// One benchmark program.
pub struct BenchProgram {
    /// Short name, also the file stem in `bench/programs/`.
    pub name: &'static str,
    /// One line saying what it computes.
    pub description: &'static str,
    object: &'static [u8],
    input: fn() -> Vec<u8>,
    reference: fn(&[u8]) -> u64,
}

impl BenchProgram {
    /// The committed object file, as clang-19 built it.
    pub fn object(&self) -> &'static [u8] {
        self.object
    }

    /// The linked bytecode: section `bench` followed by `.text`.
    pub fn bytecode(&self) -> Result<Vec<u8>, LinkError> {
        link(self.object, "bench")
    }

    /// The benchmark input buffer (deterministic).
    pub fn input(&self) -> Vec<u8> {
        (self.input)()
    }

    /// What the program returns for `input`, computed in Rust.
    pub fn reference(&self, input: &[u8]) -> u64 {
        (self.reference)(input)
    }
}

/// The issue's five programs, then the control program `acl` (added after
/// the interpreter was tuned on the five), in the order the benchmark
/// reports them.
pub static PROGRAMS: [BenchProgram; 6] = [
    BenchProgram {
        name: "parser",
        description: "Ethernet/802.1Q/IPv4/TCP-UDP parser hashing the 5-tuple, burst of 32 packets",
        object: include_bytes!("../../../bench/programs/parser.o"),
        input: parser_input,
        reference: parser_ref,
    },
    BenchProgram {
        name: "csum",
        description: "RFC 1071 Internet checksum over a 1500-byte packet",
        object: include_bytes!("../../../bench/programs/csum.o"),
        input: || pkt_input(&random_bytes(MAX_PKT, 0x1071), 0),
        reference: csum_ref,
    },
    BenchProgram {
        name: "crc32",
        description: "bitwise CRC-32 (IEEE) over a 1500-byte packet",
        object: include_bytes!("../../../bench/programs/crc32.o"),
        input: || pkt_input(&random_bytes(MAX_PKT, 0xc3c3), 0),
        reference: crc32_ref,
    },
    BenchProgram {
        name: "tokenizer",
        description: "branchy lexer state machine over 1500 bytes of C-like text",
        object: include_bytes!("../../../bench/programs/tokenizer.o"),
        input: || pkt_input(&source_text(MAX_PKT), 7),
        reference: tokenizer_ref,
    },
    BenchProgram {
        name: "calls",
        description: "MurmurHash3 over a 1500-byte packet, 1877 bpf-to-bpf calls a run",
        object: include_bytes!("../../../bench/programs/calls.o"),
        input: || pkt_input(&random_bytes(MAX_PKT, 0x3333), 0x9747b28c),
        reference: calls_ref,
    },
    BenchProgram {
        name: "acl",
        description: "control: binary search of 64 addresses in a 256-range ACL table",
        object: include_bytes!("../../../bench/programs/acl.o"),
        input: acl_input,
        reference: acl_ref,
    },
];

/// The program called `name`.
pub fn by_name(name: &str) -> Option<&'static BenchProgram> {
    PROGRAMS.iter().find(|p| p.name == name)
}

// ---------------------------------------------------------------------------
// Inputs

/// A `struct pkt` buffer: `data` (at most [`MAX_PKT`] bytes) behind the
/// length and seed header, zero-padded to [`PKT_SIZE`].
pub fn pkt_input(data: &[u8], seed: u32) -> Vec<u8> {
    assert!(data.len() <= MAX_PKT, "packet longer than MAX_PKT");
    let mut buf = Vec::with_capacity(PKT_SIZE);
    buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
    buf.extend_from_slice(&seed.to_le_bytes());
    buf.extend_from_slice(data);
    buf.resize(PKT_SIZE, 0);
    buf
}

/// A small deterministic generator (xorshift64*), so inputs need no crate.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed (zero is mapped to a constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `len` pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// `len` bytes of C-like source: identifiers, numbers, strings with escapes,
/// comments and operators, repeated and cut to length.
pub fn source_text(len: usize) -> Vec<u8> {
    const SNIPPET: &str = r#"/* flow table lookup */
static int lookup(struct flow *f, __u32 key) {
    // walk the bucket chain
    for (int i = 0; i < 0x40; i++) {
        if (f->keys[i] == key && f->ttl >= 3) return i;
        f->hits += (key >> 4) & 0xff;
    }
    printk("miss: %d\n", key);
    return -1; /* not found */
}
"#;
    SNIPPET.bytes().cycle().take(len).collect()
}

fn be16(b: &[u8], at: usize) -> u32 {
    u16::from_be_bytes([b[at], b[at + 1]]) as u32
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The `len` and `seed` header of a `struct pkt` and its data, `len`
/// clamped to [`MAX_PKT`] as the programs do.
fn pkt_parts(input: &[u8]) -> (&[u8], u32) {
    let len = (le32(input, 0) as usize).min(MAX_PKT);
    (&input[8..8 + len], le32(input, 4))
}

// ---------------------------------------------------------------------------
// csum.c

/// RFC 1071 checksum of `data`, the accumulator starting at `seed`.
pub fn rfc1071(data: &[u8], seed: u32) -> u16 {
    let mut sum = seed as u64;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = words.remainder() {
        sum += (*last as u64) << 8;
    }
    for _ in 0..3 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn csum_ref(input: &[u8]) -> u64 {
    let (data, seed) = pkt_parts(input);
    rfc1071(data, seed) as u64
}

// ---------------------------------------------------------------------------
// crc32.c

/// Bitwise CRC-32 (reflected 0xEDB88320), register preset to `!seed`.
pub fn crc32_bitwise(data: &[u8], seed: u32) -> u32 {
    let mut crc = !seed;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn crc32_ref(input: &[u8]) -> u64 {
    let (data, seed) = pkt_parts(input);
    crc32_bitwise(data, seed) as u64
}

// ---------------------------------------------------------------------------
// calls.c

fn murmur_scramble(k: u32) -> u32 {
    k.wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593)
}

/// MurmurHash3 x86_32 of `data` with `seed`.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        h ^= murmur_scramble(le32(b, 0));
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .enumerate()
            .fold(0u32, |k, (i, &b)| k ^ (b as u32) << (8 * i));
        h ^= murmur_scramble(k);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn calls_ref(input: &[u8]) -> u64 {
    let (data, seed) = pkt_parts(input);
    murmur3_32(data, seed) as u64
}

// ---------------------------------------------------------------------------
// tokenizer.c

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Start,
    Ident,
    Number,
    Zero,
    Hex,
    String,
    Escape,
    Slash,
    LineComment,
    BlockComment,
    BlockStar,
    Op,
}

#[derive(Clone, Copy)]
enum Kind {
    Ident,
    Number,
    String,
    Comment,
    Op,
    Punct,
    Error,
}

const FNV_PRIME: u32 = 0x0100_0193;

struct Lexer {
    hash: u32,
    counts: [u32; 7],
}

impl Lexer {
    fn emit(&mut self, k: Kind, len: u32) {
        self.counts[k as usize] += 1;
        self.hash = (self.hash ^ ((k as u32) << 16 | len)).wrapping_mul(FNV_PRIME);
    }
}

fn is_op(c: u8) -> bool {
    b"=!<>&|+-*%^".contains(&c)
}

fn is_punct(c: u8) -> bool {
    b"(){}[];,.:?~".contains(&c)
}

/// The tokenizer's result for `text` and `seed`.
pub fn tokenize(text: &[u8], seed: u32) -> u32 {
    let mut lx = Lexer {
        hash: 0x811c_9dc5 ^ seed,
        counts: [0; 7],
    };
    let mut s = State::Start;
    let mut start = 0u32;
    let mut prev = 0u8;
    for i in 0..=text.len() {
        let c = text.get(i).copied().unwrap_or(0);
        let i = i as u32;
        loop {
            let mut again = false;
            match s {
                State::Start => {
                    start = i;
                    if c == 0 || matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                    } else if c.is_ascii_alphabetic() || c == b'_' {
                        s = State::Ident;
                    } else if c == b'0' {
                        s = State::Zero;
                    } else if c.is_ascii_digit() {
                        s = State::Number;
                    } else if c == b'"' {
                        s = State::String;
                    } else if c == b'/' {
                        s = State::Slash;
                    } else if is_op(c) {
                        s = State::Op;
                        prev = c;
                    } else if is_punct(c) {
                        lx.emit(Kind::Punct, 1);
                    } else {
                        lx.emit(Kind::Error, 1);
                    }
                }
                State::Ident => {
                    if !(c.is_ascii_alphanumeric() || c == b'_') {
                        lx.emit(Kind::Ident, i - start);
                        s = State::Start;
                        again = true;
                    }
                }
                State::Zero => {
                    if c == b'x' || c == b'X' {
                        s = State::Hex;
                    } else {
                        s = State::Number;
                        again = true;
                    }
                }
                State::Number => {
                    if !c.is_ascii_digit() {
                        lx.emit(Kind::Number, i - start);
                        s = State::Start;
                        again = true;
                    }
                }
                State::Hex => {
                    if !c.is_ascii_hexdigit() {
                        lx.emit(Kind::Number, i - start);
                        s = State::Start;
                        again = true;
                    }
                }
                State::String => {
                    if c == b'\\' {
                        s = State::Escape;
                    } else if c == b'"' {
                        lx.emit(Kind::String, i + 1 - start);
                        s = State::Start;
                    } else if c == b'\n' || c == 0 {
                        lx.emit(Kind::Error, i - start);
                        s = State::Start;
                    }
                }
                State::Escape => s = if c == 0 { State::Start } else { State::String },
                State::Slash => {
                    if c == b'/' {
                        s = State::LineComment;
                    } else if c == b'*' {
                        s = State::BlockComment;
                    } else {
                        lx.emit(Kind::Op, 1);
                        s = State::Start;
                        again = true;
                    }
                }
                State::LineComment => {
                    if c == b'\n' || c == 0 {
                        lx.emit(Kind::Comment, i - start);
                        s = State::Start;
                    }
                }
                State::BlockComment => {
                    if c == b'*' {
                        s = State::BlockStar;
                    } else if c == 0 {
                        lx.emit(Kind::Error, i - start);
                        s = State::Start;
                    }
                }
                State::BlockStar => {
                    if c == b'/' {
                        lx.emit(Kind::Comment, i + 1 - start);
                        s = State::Start;
                    } else if c == 0 {
                        lx.emit(Kind::Error, i - start);
                        s = State::Start;
                    } else if c != b'*' {
                        s = State::BlockComment;
                    }
                }
                State::Op => {
                    let doubles = c == prev && b"&|+-<>".contains(&c);
                    if c == b'=' || doubles || (prev == b'-' && c == b'>') {
                        lx.emit(Kind::Op, 2);
                        s = State::Start;
                    } else {
                        lx.emit(Kind::Op, 1);
                        s = State::Start;
                        again = true;
                    }
                }
            }
            if !again {
                break;
            }
        }
    }
    let h = lx
        .counts
        .iter()
        .fold(lx.hash, |h, &n| (h ^ n).wrapping_mul(FNV_PRIME));
    h ^ s as u32
}

fn tokenizer_ref(input: &[u8]) -> u64 {
    let (data, seed) = pkt_parts(input);
    tokenize(data, seed) as u64
}

// ---------------------------------------------------------------------------
// parser.c

/// What the parser made of one packet (`enum verdict` in `parser.c`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Truncated or malformed.
    Drop,
    /// Not IPv4.
    Other,
    /// An IPv4 fragment (hashed without ports).
    Frag,
    /// TCP over IPv4.
    Tcp,
    /// UDP over IPv4.
    Udp,
    /// Another IPv4 protocol (hashed without ports).
    L3,
}

fn mix3(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

/// The flow hash of `parser.c` (lookup3's final mix, as `jhash_3words`).
/// Addresses and ports are the raw header bytes read little-endian.
pub fn hash_5tuple(saddr: u32, daddr: u32, ports: u32, proto: u32, seed: u32) -> u32 {
    let init = 0xdead_beefu32.wrapping_add(5 << 2).wrapping_add(seed);
    mix3(
        saddr.wrapping_add(init),
        daddr.wrapping_add(init),
        (ports ^ (proto << 24)).wrapping_add(init),
    )
}

/// Parses one Ethernet frame as `parser.c` does: its verdict and flow hash
/// (0 when not hashed).
pub fn parse_packet(data: &[u8], seed: u32) -> (Verdict, u32) {
    let len = data.len();
    if len < 14 {
        return (Verdict::Drop, 0);
    }
    let mut off = 14;
    let mut proto = be16(data, 12);
    for _ in 0..2 {
        if proto != 0x8100 && proto != 0x88a8 {
            break;
        }
        if off + 4 > len {
            return (Verdict::Drop, 0);
        }
        proto = be16(data, off + 2);
        off += 4;
    }
    if proto != 0x0800 {
        return (Verdict::Other, 0);
    }
    if off + 20 > len {
        return (Verdict::Drop, 0);
    }
    let ip = &data[off..];
    if ip[0] >> 4 != 4 {
        return (Verdict::Drop, 0);
    }
    let ihl = (ip[0] & 0xf) as usize * 4;
    if ihl < 20 || off + ihl > len {
        return (Verdict::Drop, 0);
    }
    let tot_len = be16(ip, 2) as usize;
    if tot_len < ihl || off + tot_len > len {
        return (Verdict::Drop, 0);
    }
    let (saddr, daddr, l4proto) = (le32(ip, 12), le32(ip, 16), ip[9] as u32);
    if be16(ip, 6) & 0x3fff != 0 {
        return (Verdict::Frag, hash_5tuple(saddr, daddr, 0, l4proto, seed));
    }
    let l4 = off + ihl;
    let end = off + tot_len;
    match l4proto {
        6 => {
            if l4 + 20 > end {
                return (Verdict::Drop, 0);
            }
            let doff = (data[l4 + 12] >> 4) as usize * 4;
            if doff < 20 || l4 + doff > end {
                return (Verdict::Drop, 0);
            }
            let ports = le32(data, l4);
            (Verdict::Tcp, hash_5tuple(saddr, daddr, ports, 6, seed))
        }
        17 => {
            if l4 + 8 > end {
                return (Verdict::Drop, 0);
            }
            let ulen = be16(data, l4 + 4) as usize;
            if ulen < 8 || l4 + ulen > end {
                return (Verdict::Drop, 0);
            }
            let ports = le32(data, l4);
            (Verdict::Udp, hash_5tuple(saddr, daddr, ports, 17, seed))
        }
        p => (Verdict::L3, hash_5tuple(saddr, daddr, 0, p, seed)),
    }
}

fn parser_ref(input: &[u8]) -> u64 {
    let n = (le32(input, 0) as usize).min(MAX_BURST);
    let seed = le32(input, 4);
    let mut acc = 0u32;
    let mut counts = [0u32; 6];
    for i in 0..n {
        let off = u16::from_le_bytes([input[8 + 4 * i], input[9 + 4 * i]]) as usize;
        let len = u16::from_le_bytes([input[10 + 4 * i], input[11 + 4 * i]]) as usize;
        if off < BURST_HEADER || off + len > BURST_HEADER + BURST_BYTES {
            continue;
        }
        let (v, hash) = parse_packet(&input[off..off + len], seed);
        counts[v as usize] += 1;
        acc = acc.rotate_left(5) ^ hash;
    }
    counts
        .iter()
        .fold(acc, |acc, &n| acc.wrapping_mul(31).wrapping_add(n)) as u64
}

// ---------------------------------------------------------------------------
// acl.c

/// Rules in the ACL table (`MAX_RULES`).
pub const ACL_RULES: usize = 256;
/// Addresses looked up per run (`MAX_LOOKUPS`).
pub const ACL_LOOKUPS: usize = 64;
/// Size of `struct acl_input`.
pub const ACL_SIZE: usize = 8 + 12 * ACL_RULES + 4 * ACL_LOOKUPS;

/// An ACL rule: addresses `lo..=hi` get `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclRule {
    /// First address.
    pub lo: u32,
    /// Last address.
    pub hi: u32,
    /// What matching addresses get.
    pub action: u32,
}

/// A `struct acl_input` buffer: `rules` (sorted, non-overlapping) and
/// the `addrs` to classify.
pub fn acl_buffer(rules: &[AclRule], addrs: &[u32]) -> Vec<u8> {
    assert!(rules.len() <= ACL_RULES && addrs.len() <= ACL_LOOKUPS);
    let mut buf = vec![0u8; ACL_SIZE];
    buf[0..4].copy_from_slice(&(rules.len() as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&(addrs.len() as u32).to_le_bytes());
    for (i, r) in rules.iter().enumerate() {
        let at = 8 + 12 * i;
        buf[at..at + 4].copy_from_slice(&r.lo.to_le_bytes());
        buf[at + 4..at + 8].copy_from_slice(&r.hi.to_le_bytes());
        buf[at + 8..at + 12].copy_from_slice(&r.action.to_le_bytes());
    }
    let base = 8 + 12 * ACL_RULES;
    for (i, a) in addrs.iter().enumerate() {
        buf[base + 4 * i..base + 4 * i + 4].copy_from_slice(&a.to_le_bytes());
    }
    buf
}

fn acl_input() -> Vec<u8> {
    let mut rng = Rng::new(0xac1);
    let mut rules = Vec::with_capacity(ACL_RULES);
    let mut next = 0x0a00_0000u32;
    for _ in 0..ACL_RULES {
        let lo = next + rng.below(4096) as u32;
        let hi = lo + rng.below(65536) as u32;
        rules.push(AclRule {
            lo,
            hi,
            action: 1 + rng.below(3) as u32,
        });
        next = hi + 1;
    }
    // Three in four addresses inside a rule, the rest in gaps or outside.
    let addrs: Vec<u32> = (0..ACL_LOOKUPS)
        .map(|i| {
            let r = rules[rng.below(ACL_RULES as u64) as usize];
            match i % 4 {
                3 => r.lo.wrapping_sub(1 + rng.below(8) as u32),
                _ => r.lo + rng.below((r.hi - r.lo) as u64 + 1) as u32,
            }
        })
        .collect();
    acl_buffer(&rules, &addrs)
}

/// What `acl.c` returns for `rules` and `addrs`.
pub fn acl_lookup(rules: &[AclRule], addrs: &[u32]) -> u32 {
    let (mut acc, mut hits) = (0u32, 0u32);
    for &addr in addrs {
        let (mut lo, mut hi) = (0usize, rules.len());
        let (mut found, mut action) = (0xffffu32, 0u32);
        let mut step = 0;
        while step < 9 && lo < hi {
            let mid = (lo + hi) / 2;
            let r = rules[mid];
            if addr < r.lo {
                hi = mid;
            } else if addr > r.hi {
                lo = mid + 1;
            } else {
                found = mid as u32;
                action = r.action;
                hits += 1;
                break;
            }
            step += 1;
        }
        acc = (acc ^ (found << 8 | action)).wrapping_mul(0x9e37_79b1);
    }
    acc ^ hits
}

fn acl_ref(input: &[u8]) -> u64 {
    let n = (le32(input, 0) as usize).min(ACL_RULES);
    let m = (le32(input, 4) as usize).min(ACL_LOOKUPS);
    let rules: Vec<AclRule> = (0..n)
        .map(|i| AclRule {
            lo: le32(input, 8 + 12 * i),
            hi: le32(input, 12 + 12 * i),
            action: le32(input, 16 + 12 * i),
        })
        .collect();
    let base = 8 + 12 * ACL_RULES;
    let addrs: Vec<u32> = (0..m).map(|i| le32(input, base + 4 * i)).collect();
    acl_lookup(&rules, &addrs) as u64
}

/// Builders of the frames in the parser's burst.
pub mod frames {
    use super::rfc1071;

    /// Ethernet header with the given VLAN tag protocol ids (outer first).
    pub fn eth(vlan_tpids: &[u16], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for (i, tpid) in vlan_tpids.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// IPv4 header (with `options` bytes, a multiple of 4) and payload.
    pub fn ipv4(
        proto: u8,
        src: [u8; 4],
        dst: [u8; 4],
        frag: u16,
        options: usize,
        l4: &[u8],
    ) -> Vec<u8> {
        let ihl = 20 + options;
        let tot = (ihl + l4.len()) as u16;
        let mut h = vec![0x40 | (ihl / 4) as u8, 0];
        h.extend_from_slice(&tot.to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.resize(ihl, 1); // NOP options
        let sum = rfc1071(&h, 0);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(l4);
        h
    }

    /// TCP header with `options` bytes (a multiple of 4) and payload.
    pub fn tcp(sport: u16, dport: u16, options: usize, payload: &[u8]) -> Vec<u8> {
        let doff = 20 + options;
        let mut t = Vec::with_capacity(doff + payload.len());
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        t.push(((doff / 4) as u8) << 4);
        t.extend_from_slice(&[0x18, 0xff, 0xff, 0, 0, 0, 0]);
        t.resize(doff, 1);
        t.extend_from_slice(payload);
        t
    }

    /// UDP header and payload.
    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::with_capacity(8 + payload.len());
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }
}

/// The parser's frames: mostly TCP and UDP over IPv4, some VLAN-tagged, with
/// IPv6, ARP, fragments, ICMP and truncated frames mixed in.
pub fn burst_frames(seed: u64) -> Vec<Vec<u8>> {
    use frames::*;
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(MAX_BURST);
    for i in 0..MAX_BURST {
        let src = (rng.next_u64() as u32 | 0x0a00_0000).to_be_bytes();
        let dst = (rng.next_u64() as u32 | 0xc0a8_0000).to_be_bytes();
        let sport = 1024 + rng.below(60000) as u16;
        let dport = [80, 443, 53, 8080][rng.below(4) as usize];
        let payload = random_bytes(rng.below(100) as usize, rng.next_u64());
        let frame = match i % 16 {
            0 | 3 | 6 | 14 => [
                eth(&[], 0x0800),
                ipv4(6, src, dst, 0x4000, 0, &tcp(sport, dport, 0, &payload)),
            ]
            .concat(),
            1 | 7 | 15 => [
                eth(&[], 0x0800),
                ipv4(17, src, dst, 0, 0, &udp(sport, dport, &payload)),
            ]
            .concat(),
            2 => [
                eth(&[], 0x0800),
                ipv4(6, src, dst, 0x4000, 0, &tcp(sport, dport, 12, &payload)),
            ]
            .concat(),
            4 => [
                eth(&[0x8100], 0x0800),
                ipv4(6, src, dst, 0, 0, &tcp(sport, dport, 0, &payload)),
            ]
            .concat(),
            5 => [
                eth(&[0x88a8, 0x8100], 0x0800),
                ipv4(17, src, dst, 0, 0, &udp(sport, dport, &payload)),
            ]
            .concat(),
            8 => [eth(&[], 0x86dd), payload.clone(), vec![0; 40]].concat(),
            9 => [eth(&[], 0x0806), vec![0; 28]].concat(),
            10 => [
                eth(&[], 0x0800),
                ipv4(17, src, dst, 0x2000, 0, &udp(sport, dport, &payload)),
            ]
            .concat(),
            11 => [eth(&[], 0x0800), ipv4(1, src, dst, 0, 0, &payload)].concat(),
            12 => [
                eth(&[], 0x0800),
                ipv4(6, src, dst, 0, 8, &tcp(sport, dport, 0, &payload)),
            ]
            .concat(),
            _ => {
                // Truncated in the TCP header.
                let mut f = [
                    eth(&[], 0x0800),
                    ipv4(6, src, dst, 0, 0, &tcp(sport, dport, 0, &payload)),
                ]
                .concat();
                f.truncate(14 + 20 + 10);
                f
            }
        };
        out.push(frame);
    }
    out
}

/// A `struct burst` buffer holding `frames` (at most [`MAX_BURST`]).
pub fn burst_input(frames: &[Vec<u8>], seed: u32) -> Vec<u8> {
    assert!(frames.len() <= MAX_BURST);
    let mut buf = vec![0u8; BURST_HEADER + BURST_BYTES];
    buf[0..4].copy_from_slice(&(frames.len() as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&seed.to_le_bytes());
    let mut off = BURST_HEADER;
    for (i, f) in frames.iter().enumerate() {
        assert!(off + f.len() <= buf.len(), "burst does not fit");
        buf[8 + 4 * i..10 + 4 * i].copy_from_slice(&(off as u16).to_le_bytes());
        buf[10 + 4 * i..12 + 4 * i].copy_from_slice(&(f.len() as u16).to_le_bytes());
        buf[off..off + f.len()].copy_from_slice(f);
        // Start the next frame 2 bytes past a 4-byte boundary, as drivers
        // do (NET_IP_ALIGN) so that the IP header is aligned.
        off = (off + f.len()).next_multiple_of(4) + 2;
    }
    buf
}

fn parser_input() -> Vec<u8> {
    burst_input(&burst_frames(0xe7e7), 0x5eed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The CRC-32 catalogue's check value.
        assert_eq!(crc32_bitwise(b"123456789", 0), 0xcbf4_3926);
    }

    #[test]
    fn murmur3_known_values() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(rfc1071(&data, 0), !0xddf2);
        // An odd trailing byte is padded with zero on the right.
        assert_eq!(rfc1071(&[0x12], 0), !0x1200);
        // A header with its checksum filled in sums to zero.
        let ip = frames::ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], 0, 0, &[]);
        assert_eq!(rfc1071(&ip, 0), 0);
    }

    #[test]
    fn tokenizer_counts_tokens() {
        // ident ( ident , number ) punct; string; comment; op "->"; hex
        let text = br#"f(a, 42); "x\"y" // c
p->q = 0x1F;"#;
        let mut lx_counts = [0u32; 7];
        // Recount by hand: ident f a p q = 4, number 42 0x1F = 2, string 1,
        // comment 1, op -> = 2, punct ( , ) ; ; = 5.
        lx_counts[Kind::Ident as usize] = 4;
        lx_counts[Kind::Number as usize] = 2;
        lx_counts[Kind::String as usize] = 1;
        lx_counts[Kind::Comment as usize] = 1;
        lx_counts[Kind::Op as usize] = 2;
        lx_counts[Kind::Punct as usize] = 5;
        // tokenize() only returns the hash; check it against a hand-built
        // lexer fed the expected token sequence.
        let mut lx = Lexer {
            hash: 0x811c_9dc5,
            counts: [0; 7],
        };
        for (k, len) in [
            (Kind::Ident, 1),
            (Kind::Punct, 1),
            (Kind::Ident, 1),
            (Kind::Punct, 1),
            (Kind::Number, 2),
            (Kind::Punct, 1),
            (Kind::Punct, 1),
            (Kind::String, 6),
            (Kind::Comment, 4),
            (Kind::Ident, 1),
            (Kind::Op, 2),
            (Kind::Ident, 1),
            (Kind::Op, 1),
            (Kind::Number, 4),
            (Kind::Punct, 1),
        ] {
            lx.emit(k, len);
        }
        assert_eq!(lx.counts, lx_counts);
        let want = lx
            .counts
            .iter()
            .fold(lx.hash, |h, &n| (h ^ n).wrapping_mul(FNV_PRIME));
        assert_eq!(tokenize(text, 0), want ^ State::Start as u32);
    }

    #[test]
    fn parser_verdicts() {
        let frames = burst_frames(0xe7e7);
        let verdicts: Vec<Verdict> = frames.iter().map(|f| parse_packet(f, 0).0).collect();
        let count = |v| verdicts.iter().filter(|&&x| x == v).count();
        assert_eq!(count(Verdict::Tcp), 14);
        assert_eq!(count(Verdict::Udp), 8);
        assert_eq!(count(Verdict::Frag), 2);
        assert_eq!(count(Verdict::L3), 2);
        assert_eq!(count(Verdict::Other), 4);
        assert_eq!(count(Verdict::Drop), 2);
        // The 5-tuple hash depends on the ports.
        let a = frames::ipv4(
            17,
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            0,
            0,
            &frames::udp(1, 2, &[]),
        );
        let b = frames::ipv4(
            17,
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            0,
            0,
            &frames::udp(1, 3, &[]),
        );
        let ha = parse_packet(&[frames::eth(&[], 0x0800), a].concat(), 0);
        let hb = parse_packet(&[frames::eth(&[], 0x0800), b].concat(), 0);
        assert_eq!(ha.0, Verdict::Udp);
        assert_ne!(ha.1, hb.1);
    }

    #[test]
    fn acl_finds_hits_and_misses() {
        let rules = [
            AclRule {
                lo: 10,
                hi: 19,
                action: 1,
            },
            AclRule {
                lo: 30,
                hi: 30,
                action: 2,
            },
            AclRule {
                lo: 40,
                hi: 99,
                action: 3,
            },
        ];
        // One lookup: the hash of (index << 8 | action), then ^ hits.
        let one = |found: u32, action: u32, hits: u32| {
            (found << 8 | action).wrapping_mul(0x9e37_79b1) ^ hits
        };
        assert_eq!(acl_lookup(&rules, &[15]), one(0, 1, 1));
        assert_eq!(acl_lookup(&rules, &[30]), one(1, 2, 1));
        assert_eq!(acl_lookup(&rules, &[99]), one(2, 3, 1));
        assert_eq!(acl_lookup(&rules, &[25]), one(0xffff, 0, 0));
        assert_eq!(acl_lookup(&rules, &[100]), one(0xffff, 0, 0));
        assert_eq!(acl_lookup(&[], &[5]), one(0xffff, 0, 0));
        // The benchmark input has both hits and misses.
        let input = acl_input();
        let base = 8 + 12 * ACL_RULES;
        let rules: Vec<AclRule> = (0..ACL_RULES)
            .map(|i| AclRule {
                lo: le32(&input, 8 + 12 * i),
                hi: le32(&input, 12 + 12 * i),
                action: le32(&input, 16 + 12 * i),
            })
            .collect();
        let hits = (0..ACL_LOOKUPS)
            .map(|i| le32(&input, base + 4 * i))
            .filter(|&a| rules.iter().any(|r| (r.lo..=r.hi).contains(&a)))
            .count();
        assert!((40..64).contains(&hits), "{hits} hits");
    }

    #[test]
    fn inputs_fit_their_structs() {
        for p in &PROGRAMS {
            let input = p.input();
            let want = match p.name {
                "parser" => BURST_HEADER + BURST_BYTES,
                "acl" => ACL_SIZE,
                _ => PKT_SIZE,
            };
            assert_eq!(input.len(), want, "{}", p.name);
        }
    }
}
