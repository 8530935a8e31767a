//! `bpf_trace_printk` with the kernel's format rules
//! (`bpf_bprintf_prepare` in `kernel/bpf/helpers.c`): a NUL inside
//! `fmt_size`, no ASCII control characters but whitespace, at most three conversions, flags
//! `0 + - space` and a width, then `%d %i %u %x %X` with `l`/`ll`, `%c`,
//! `%s`, `%p` forms, `%%`. Anything else (`%n`, a precision, ...) makes
//! the helper return `-EINVAL` and print nothing. It returns the length of
//! the formatted text, as the kernel's `bstr_printf` does.

use crate::{errno, Env, EINVAL};
use bpfkit_runtime::HelperResult;
use bpfkit_runtime::{Guest, HelperAbort};

/// The kernel's `MAX_BPRINTF_BUF`: formatted output is cut to this (with
/// its NUL).
const MAX_BPRINTF_BUF: usize = 1024;
/// Longest `%s` string copied.
const MAX_STR: usize = 1024;

enum Arg {
    Int {
        signed: bool,
        long: bool,
        hex: Option<bool>,
    },
    Char,
    Str,
    Ptr(String),
}

struct Spec {
    left: bool,
    zero: bool,
    plus: bool,
    space: bool,
    width: usize,
    arg: Arg,
}

enum Piece {
    Text(Vec<u8>),
    Conv(Spec),
}

/// Formats parsed in a run, by their bytes (`None`: refused): a program
/// prints with the same few formats packet after packet.
#[derive(Default)]
pub(crate) struct ParseCache {
    entries: Vec<(Box<[u8]>, Parsed)>,
}

/// A parsed format, `None` when the kernel refuses it.
type Parsed = Option<Vec<Piece>>;

/// Formats a [`ParseCache`] keeps.
const PARSE_CACHE: usize = 8;

impl ParseCache {
    fn get(&mut self, fmt: &[u8]) -> Option<&[Piece]> {
        let i = match self.entries.iter().position(|(f, _)| **f == *fmt) {
            Some(i) => i,
            None => {
                if self.entries.len() == PARSE_CACHE {
                    self.entries.remove(0);
                }
                self.entries.push((fmt.into(), parse(fmt, 3)));
                self.entries.len() - 1
            }
        };
        self.entries[i].1.as_deref()
    }
}

/// What a format may contain: the kernel refuses only ASCII control
/// characters (other than whitespace) and DEL; bytes from 0x80 up pass
/// (measured against `BPF_PROG_TEST_RUN`, see
/// `crates/datapath/tests/kernel_printk.rs`).
fn printable(c: u8) -> bool {
    matches!(c, b' '..=b'~' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x80..=0xff)
}

fn parse(fmt: &[u8], max_args: usize) -> Option<Vec<Piece>> {
    let at = |i: usize| fmt.get(i).copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut text = Vec::with_capacity(fmt.len());
    let mut i = 0;
    let mut n = 0;
    while i < fmt.len() {
        let c = fmt[i];
        if !printable(c) {
            return None;
        }
        if c != b'%' {
            text.push(c);
            i += 1;
            continue;
        }
        if at(i + 1) == b'%' {
            text.push(b'%');
            i += 2;
            continue;
        }
        if n >= max_args {
            return None;
        }
        n += 1;
        i += 1;
        let (mut left, mut zero, mut plus, mut space) = (false, false, false, false);
        loop {
            match at(i) {
                b'0' => zero = true,
                b'-' => left = true,
                b'+' => plus = true,
                b' ' => space = true,
                _ => break,
            }
            i += 1;
        }
        let mut width = 0usize;
        while at(i).is_ascii_digit() {
            width = (width * 10 + (at(i) - b'0') as usize).min(MAX_BPRINTF_BUF);
            i += 1;
        }
        let arg = match at(i) {
            b'p' => {
                // The kind is decided by one or two characters; like
                // vsprintf, any further letters and digits are swallowed.
                let (c1, c2) = (at(i + 1), at(i + 2));
                let kind = match (c1, c2) {
                    (b'k' | b'u', b's') | (b'i' | b'I', b'4' | b'6') => {
                        format!("{}{}", c1 as char, c2 as char)
                    }
                    (b'K' | b'x' | b's' | b'S' | b'B', _) => (c1 as char).to_string(),
                    (c, _) if !c.is_ascii_alphanumeric() => String::new(),
                    _ => return None,
                };
                i += 1 + kind.len();
                while at(i).is_ascii_alphanumeric() {
                    i += 1;
                }
                out.push(Piece::Text(std::mem::take(&mut text)));
                out.push(Piece::Conv(Spec {
                    left,
                    zero,
                    plus,
                    space,
                    width,
                    arg: Arg::Ptr(kind),
                }));
                continue;
            }
            b's' => Arg::Str,
            b'c' => Arg::Char,
            _ => {
                let mut long = false;
                if at(i) == b'l' {
                    long = true;
                    i += 1;
                }
                if at(i) == b'l' {
                    i += 1;
                }
                match at(i) {
                    b'd' | b'i' => Arg::Int {
                        signed: true,
                        long,
                        hex: None,
                    },
                    b'u' => Arg::Int {
                        signed: false,
                        long,
                        hex: None,
                    },
                    b'x' => Arg::Int {
                        signed: false,
                        long,
                        hex: Some(false),
                    },
                    b'X' => Arg::Int {
                        signed: false,
                        long,
                        hex: Some(true),
                    },
                    _ => return None,
                }
            }
        };
        i += 1;
        out.push(Piece::Text(std::mem::take(&mut text)));
        out.push(Piece::Conv(Spec {
            left,
            zero,
            plus,
            space,
            width,
            arg,
        }));
    }
    out.push(Piece::Text(text));
    Some(out)
}

fn pad(s: &mut Vec<u8>, body: &[u8], sign: &[u8], spec: &Spec, numeric: bool) {
    let len = body.len() + sign.len();
    let fill = spec.width.saturating_sub(len);
    if spec.left {
        s.extend_from_slice(sign);
        s.extend_from_slice(body);
        s.extend(std::iter::repeat_n(b' ', fill));
    } else if spec.zero && numeric {
        s.extend_from_slice(sign);
        s.extend(std::iter::repeat_n(b'0', fill));
        s.extend_from_slice(body);
    } else {
        s.extend(std::iter::repeat_n(b' ', fill));
        s.extend_from_slice(sign);
        s.extend_from_slice(body);
    }
}

/// Formats `fmt` (without its NUL) with the three arguments; `None` where
/// the kernel refuses the format. `%s`, `%pks`/`%pus` and `%pI4`/`%pI6`
/// read guest memory with `read_guest(addr, max, up_to_nul)` (`None` on a
/// fault: an empty string, or zeros for an address, as in the kernel).
pub fn format(
    fmt: &[u8],
    args: [u64; 3],
    read_guest: impl FnMut(u64, usize, bool) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    format_parsed(&parse(fmt, 3)?, args, read_guest)
}

/// [`format`] with the format already parsed.
fn format_parsed(
    pieces: &[Piece],
    args: [u64; 3],
    mut read_guest: impl FnMut(u64, usize, bool) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut s = Vec::with_capacity(128);
    let mut next = args.iter();
    for p in pieces {
        let spec = match p {
            Piece::Text(t) => {
                s.extend_from_slice(t);
                continue;
            }
            Piece::Conv(spec) => spec,
        };
        let v = *next.next()?;
        match &spec.arg {
            Arg::Int { signed, long, hex } => {
                let v = if *long {
                    v
                } else if *signed {
                    v as u32 as i32 as i64 as u64
                } else {
                    v as u32 as u64
                };
                let (body, sign): (String, &[u8]) = match hex {
                    Some(upper) => (
                        if *upper {
                            format!("{v:X}")
                        } else {
                            format!("{v:x}")
                        },
                        b"",
                    ),
                    None if *signed => {
                        let x = v as i64;
                        let sign: &[u8] = if x < 0 {
                            b"-"
                        } else if spec.plus {
                            b"+"
                        } else if spec.space {
                            b" "
                        } else {
                            b""
                        };
                        (x.unsigned_abs().to_string(), sign)
                    }
                    None => (v.to_string(), b""),
                };
                pad(&mut s, body.as_bytes(), sign, spec, true);
            }
            Arg::Char => pad(&mut s, &[v as u8], b"", spec, false),
            Arg::Str => {
                let text = read_guest(v, MAX_STR, true).unwrap_or_default();
                pad(&mut s, &text, b"", spec, false);
            }
            Arg::Ptr(kind) => {
                let body = match kind.as_str() {
                    // An unreadable address prints as zeros, as the
                    // kernel's failed copy leaves them.
                    "I4" | "i4" => {
                        let b = read_guest(v, 4, false)
                            .filter(|b| b.len() == 4)
                            .unwrap_or(vec![0; 4]);
                        if kind == "I4" {
                            format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
                        } else {
                            format!("{:03}.{:03}.{:03}.{:03}", b[0], b[1], b[2], b[3])
                        }
                    }
                    "I6" | "i6" => {
                        let b = read_guest(v, 16, false)
                            .filter(|b| b.len() == 16)
                            .unwrap_or(vec![0; 16]);
                        let groups: Vec<String> = b
                            .chunks(2)
                            .map(|g| format!("{:02x}{:02x}", g[0], g[1]))
                            .collect();
                        groups.join(if kind == "I6" { ":" } else { "" })
                    }
                    "ks" | "us" => {
                        let t = read_guest(v, MAX_STR, true).unwrap_or_default();
                        String::from_utf8_lossy(&t).into_owned()
                    }
                    // Symbols: userspace has none, so the address.
                    "B" | "S" | "s" => format!("{v:#x}"),
                    _ => format!("{v:016x}"),
                };
                pad(&mut s, body.as_bytes(), b"", spec, false);
            }
        }
    }
    s.truncate(MAX_BPRINTF_BUF - 1);
    Some(s)
}

/// `len` guest bytes at `addr`.
fn read_bytes(guest: &Guest<'_, '_>, addr: u64, len: usize) -> Result<Vec<u8>, HelperAbort> {
    let mut v = vec![0u8; len];
    guest.read(addr, &mut v)?;
    Ok(v)
}

/// `bpf_trace_printk(fmt, fmt_size, arg1, arg2, arg3)`.
#[inline]
pub(crate) fn trace_printk(env: &mut Env<'_, '_, '_>, a: [u64; 5]) -> HelperResult {
    let size = a[1] as u32 as usize;
    if size == 0 {
        return Ok(errno(EINVAL));
    }
    let (guest, st) = env.split();
    // The format on the stack when it is short (they are), parsed once per
    // run and format.
    let mut small = [0u8; 256];
    let heap;
    let fmt: &[u8] = if size <= small.len() {
        guest.read(a[0], &mut small[..size])?;
        &small[..size]
    } else {
        heap = read_bytes(guest, a[0], size)?;
        &heap
    };
    let Some(nul) = fmt.iter().position(|&b| b == 0) else {
        return Ok(errno(EINVAL));
    };
    let Some(pieces) = st.printk.get(&fmt[..nul]) else {
        return Ok(errno(EINVAL));
    };
    let out = format_parsed(pieces, [a[2], a[3], a[4]], |addr, max, cstr| {
        let mut v = Vec::new();
        for i in 0..max as u64 {
            let [b] = guest.load::<1>(addr.wrapping_add(i)).ok()?;
            if cstr && b == 0 {
                break;
            }
            v.push(b);
        }
        Some(v)
    });
    let Some(out) = out else {
        return Ok(errno(EINVAL));
    };
    let n = out.len();
    // Valid UTF-8 (the usual case) becomes the line without a copy.
    let mut line = match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    line.truncate(line.trim_end_matches('\n').len());
    st.trace.push(line);
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(fmt: &str, args: [u64; 3]) -> Option<String> {
        format(fmt.as_bytes(), args, |_, _, _| None).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn kernel_conversions() {
        assert_eq!(
            f("len %i proto %x", [60, 0x800, 0]).unwrap(),
            "len 60 proto 800"
        );
        assert_eq!(
            f("%d %u", [-5i64 as u64, -5i64 as u64, 0]).unwrap(),
            "-5 4294967291"
        );
        assert_eq!(
            f("%llx %lld", [0x1234567890, -60i64 as u64, 0]).unwrap(),
            "1234567890 -60"
        );
        assert_eq!(
            f("100%% %05d|%-4u|", [42, 7, 0]).unwrap(),
            "100% 00042|7   |"
        );
        assert!(f("%n", [0; 3]).is_none());
        assert!(f("%.2d", [0; 3]).is_none());
        assert!(f("%d %d %d %d", [0; 3]).is_none());
        assert!(f("tab\x01", [0; 3]).is_none());
    }

    #[test]
    fn strings_and_addresses_from_memory() {
        let mem = |addr: u64, max: usize, cstr: bool| -> Option<Vec<u8>> {
            let bytes: &[u8] = match addr {
                1 => b"eth0\0junk",
                2 => &[10, 0, 0, 1],
                3 => &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                _ => return None,
            };
            let n = if cstr {
                bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())
            } else {
                bytes.len()
            };
            Some(bytes[..n.min(max)].to_vec())
        };
        let g = |fmt: &str, args: [u64; 3]| {
            String::from_utf8(format(fmt.as_bytes(), args, mem).unwrap()).unwrap()
        };
        assert_eq!(g("[%s] [%6s] [%s]", [1, 1, 9]), "[eth0] [  eth0] []");
        assert_eq!(
            g("%pI4 %pi4 %pI4", [2, 2, 9]),
            "10.0.0.1 010.000.000.001 0.0.0.0"
        );
        assert_eq!(
            g("%pI6", [3, 0, 0]),
            "fe80:0000:0000:0000:0000:0000:0000:0001"
        );
        assert_eq!(g("%pI4h|%pS", [2, 0x2a, 0]), "10.0.0.1|0x2a");
        assert!(format(b"%pM", [0; 3], mem).is_none());
    }
}
