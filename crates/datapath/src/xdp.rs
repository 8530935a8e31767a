//! XDP runs as `BPF_PROG_TEST_RUN` does them (`bpf_prog_test_run_xdp` in
//! `net/bpf/test_run.c`): one page per frame, [`XDP_PACKET_HEADROOM`]
//! bytes of headroom (less the metadata that `ctx_in` asks for), the
//! packet, and the `skb_shared_info` tailroom reserved at the end, so that
//! `adjust_head`, `adjust_meta` and `adjust_tail` succeed and fail exactly
//! where the kernel's do.

use crate::sys::{LowPage, FRAME_SIZE};
use bpfkit::helpers::{
    Redirect, XdpBuff, ETH_HLEN, FRAG_SIZE, MAX_SKB_FRAGS, XDP_META_MAX, XDP_PACKET_HEADROOM,
    XDP_TAILROOM,
};
use bpfkit::runtime::{Memory, RegionKind, Trap};
use bpfkit::{Object, RunInput};
use thiserror::Error;

/// `sizeof(struct xdp_md)`.
pub const XDP_MD_SIZE: usize = 24;
/// The interface `BPF_PROG_TEST_RUN` reports when `ctx_in` names none:
/// the loopback device.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Why a packet did not run (an `error` entry of `bpfkit run --json`).
#[derive(Debug, Error)]
pub enum XdpError {
    /// Shorter than an Ethernet header: the kernel refuses it (`EINVAL`).
    #[error("packet shorter than an Ethernet header ({len} bytes)")]
    TooShort {
        /// The packet's length.
        len: usize,
    },
    /// Longer than a frame's linear part and [`MAX_SKB_FRAGS`] fragment
    /// pages.
    #[error("packet longer than {max} bytes ({len} bytes)")]
    TooLong {
        /// The packet's length.
        len: usize,
        /// The longest packet a frame holds.
        max: usize,
    },
    /// A `ctx_in` that the kernel refuses (`EINVAL`).
    #[error("ctx_in refused: {why}")]
    BadCtx {
        /// What is wrong.
        why: String,
    },
    /// The program trapped (the kernel's verifier would have refused it).
    #[error("{0}")]
    Trap(#[from] Trap),
    /// No memory below 4 GiB for the frame.
    #[error("cannot allocate an XDP frame below 4 GiB: {0}")]
    NoFrame(#[source] std::io::Error),
}

/// `struct xdp_md` as `ctx_in` gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMd {
    /// Offset of the packet data after the metadata.
    pub data: u32,
    /// Offset of the end (the input's length).
    pub data_end: u32,
    /// Must be 0.
    pub data_meta: u32,
    /// The receiving interface (0: loopback).
    pub ingress_ifindex: u32,
    /// The receive queue.
    pub rx_queue_index: u32,
    /// Must be 0.
    pub egress_ifindex: u32,
}

impl XdpMd {
    /// Parses `ctx_in` bytes as the kernel's `bpf_ctx_init` does: shorter
    /// input is zero-padded, longer input must be zero past the struct.
    pub fn parse(bytes: &[u8]) -> Result<XdpMd, XdpError> {
        if bytes.len() > XDP_MD_SIZE && bytes[XDP_MD_SIZE..].iter().any(|&b| b != 0) {
            return Err(XdpError::BadCtx {
                why: format!("{} bytes, non-zero past struct xdp_md", bytes.len()),
            });
        }
        let mut b = [0u8; XDP_MD_SIZE];
        let n = bytes.len().min(XDP_MD_SIZE);
        b[..n].copy_from_slice(&bytes[..n]);
        let f = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ok(XdpMd {
            data: f(0),
            data_end: f(4),
            data_meta: f(8),
            ingress_ifindex: f(12),
            rx_queue_index: f(16),
            egress_ifindex: f(20),
        })
    }
}

/// The number of receive queues of interface `ifindex` as the host's
/// `/sys/class/net` shows them: `Some(None)` when no interface has that
/// index, `None` when the host cannot tell (no sysfs), in which case any
/// index is accepted.
pub fn rx_queues(ifindex: u32) -> Option<Option<usize>> {
    let dir = std::fs::read_dir("/sys/class/net").ok()?;
    for e in dir.flatten() {
        let idx = std::fs::read_to_string(e.path().join("ifindex")).ok();
        if idx.and_then(|s| s.trim().parse::<u32>().ok()) != Some(ifindex) {
            continue;
        }
        let n = std::fs::read_dir(e.path().join("queues"))
            .map(|q| {
                q.flatten()
                    .filter(|q| q.file_name().to_string_lossy().starts_with("rx-"))
                    .count()
            })
            .unwrap_or(1);
        return Some(Some(n.max(1)));
    }
    Some(None)
}

/// `bpf_trace_printk` lines kept per packet (a long `--repeat` prints
/// the same lines again and again).
pub const MAX_TRACE_LINES: usize = 1000;

/// What a packet run produced.
#[derive(Debug)]
pub struct XdpRun {
    /// The program's return value (of the last run with `repeat`).
    pub retval: u64,
    /// The bytes from `data_meta` to `data_end` after the run.
    pub data_out: Vec<u8>,
    /// Metadata bytes at the start of `data_out`.
    pub meta_len: usize,
    /// Average wall time of one run, in nanoseconds.
    pub duration_ns: u64,
    /// `bpf_trace_printk` lines of every run.
    pub trace: Vec<String>,
    /// The redirect target of the last run.
    pub redirect: Option<Redirect>,
    /// Tail calls taken by the last run.
    pub tail_calls: u32,
    /// Chunks the runs went in (one `Memory` and one pinned map epoch
    /// each; see [`next_chunk`]).
    pub chunks: u32,
}

/// Runs per chunk at first (see [`next_chunk`]).
pub const CHUNK_MIN: u32 = 64;
/// The most runs one chunk (one `Memory`, one pinned epoch) may have.
pub const CHUNK_MAX: u32 = 4096;
/// A chunk that took longer than this (1 ms, about a scheduler tick) is not
/// followed by a longer one:
/// the epoch stays pinned about as long as the kernel's test run keeps its
/// RCU read section before it checks for a reschedule.
pub const CHUNK_GROW_NS: u64 = 1_000_000;
/// A chunk that added more regions than this is not followed by a longer
/// one (twice the runs would add about twice the regions).
pub const CHUNK_GROW_REGIONS: usize = 8;

/// The size of the chunk after one of `chunk` runs that added `regions`
/// regions in `ns` nanoseconds: twice as long (up to [`CHUNK_MAX`]) when it
/// added at most [`CHUNK_GROW_REGIONS`] regions and took less than
/// [`CHUNK_GROW_NS`], else back to [`CHUNK_MIN`].
pub fn next_chunk(chunk: u32, regions: usize, ns: u64) -> u32 {
    if regions <= CHUNK_GROW_REGIONS && ns < CHUNK_GROW_NS {
        chunk.saturating_mul(2).min(CHUNK_MAX)
    } else {
        CHUNK_MIN
    }
}

/// Runs XDP programs over packets, reusing one frame.
#[derive(Debug)]
pub struct XdpRunner {
    page: LowPage,
    ctx: [u8; XDP_MD_SIZE],
    cpu: usize,
}

impl XdpRunner {
    /// A runner for CPU 0.
    pub fn new() -> Result<XdpRunner, XdpError> {
        Ok(XdpRunner {
            page: LowPage::new().map_err(XdpError::NoFrame)?,
            ctx: [0; XDP_MD_SIZE],
            cpu: 0,
        })
    }

    /// Sets the CPU number programs see.
    pub fn cpu(mut self, cpu: usize) -> XdpRunner {
        self.cpu = cpu;
        self
    }

    /// Runs program `prog` of `obj` over `input` (metadata first when
    /// `ctx_in` says so) `repeat` times (at least once), each run seeing
    /// the packet and maps as the previous one left them.
    pub fn run(
        &mut self,
        obj: &mut Object,
        prog: usize,
        input: &[u8],
        ctx_in: Option<&[u8]>,
        repeat: u32,
    ) -> Result<XdpRun, XdpError> {
        let md = match ctx_in {
            Some(c) => Some(XdpMd::parse(c)?),
            None => None,
        };
        let meta_len = md.map_or(0, |m| m.data as usize);
        if let Some(m) = md {
            let why = if m.data_meta != 0 {
                Some("data_meta must be 0".to_string())
            } else if m.data_end as usize != input.len() {
                Some(format!(
                    "data_end {} is not the input's length {}",
                    m.data_end,
                    input.len()
                ))
            } else if m.data > m.data_end {
                Some("data past data_end".into())
            } else if !m.data.is_multiple_of(4) || m.data as u64 > XDP_META_MAX {
                Some(format!(
                    "metadata of {} bytes (a multiple of 4, at most {XDP_META_MAX})",
                    m.data
                ))
            } else if m.egress_ifindex != 0 {
                Some("egress_ifindex must be 0".into())
            } else if m.ingress_ifindex == 0 && m.rx_queue_index != 0 {
                Some("rx_queue_index without ingress_ifindex".into())
            } else if m.ingress_ifindex != 0 {
                match rx_queues(m.ingress_ifindex) {
                    Some(None) => Some(format!("no interface {}", m.ingress_ifindex)),
                    Some(Some(n)) if m.rx_queue_index as usize >= n => Some(format!(
                        "interface {} has no receive queue {}",
                        m.ingress_ifindex, m.rx_queue_index
                    )),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(why) = why {
                return Err(XdpError::BadCtx { why });
            }
        }
        if input.len() < ETH_HLEN as usize {
            return Err(XdpError::TooShort { len: input.len() });
        }
        let headroom = XDP_PACKET_HEADROOM as usize - meta_len;
        // As `bpf_prog_test_run_xdp`: the linear part fills the frame up
        // to the tailroom, the rest goes to fragment pages.
        let max_linear = FRAME_SIZE - headroom - XDP_TAILROOM as usize;
        let max = max_linear + MAX_SKB_FRAGS * FRAG_SIZE as usize;
        if input.len() > max {
            return Err(XdpError::TooLong {
                len: input.len(),
                max,
            });
        }
        let (linear, rest) = input.split_at(input.len().min(max_linear));
        let mut frags: Vec<Vec<u8>> = rest
            .chunks(FRAG_SIZE as usize)
            .map(<[u8]>::to_vec)
            .collect();
        let frame = self.page.bytes_mut();
        frame.fill(0);
        frame[headroom..headroom + linear.len()].copy_from_slice(linear);
        let hard_start = frame.as_ptr() as u64;
        let mut buff = XdpBuff {
            hard_start,
            frame_sz: FRAME_SIZE as u64,
            meta: hard_start + headroom as u64,
            data: hard_start + headroom as u64 + meta_len as u64,
            end: hard_start + (headroom + linear.len()) as u64,
            ctx: 0,
        };
        let ingress = md
            .map(|m| m.ingress_ifindex)
            .filter(|&i| i != 0)
            .unwrap_or(LOOPBACK_IFINDEX);
        let rxq = md.map_or(0, |m| m.rx_queue_index);
        self.ctx = [0; XDP_MD_SIZE];
        for (i, v) in [buff.data, buff.end, buff.meta].into_iter().enumerate() {
            // The frame lies below 4 GiB (`LowPage`), so the address fits.
            self.ctx[i * 4..i * 4 + 4].copy_from_slice(&(v as u32).to_le_bytes());
        }
        self.ctx[12..16].copy_from_slice(&ingress.to_le_bytes());
        self.ctx[16..20].copy_from_slice(&rxq.to_le_bytes());
        buff.ctx = self.ctx.as_ptr() as u64;

        // Runs go in chunks over one Memory and one pinned map epoch: set-up
        // is amortised, and the regions that helpers add for map values (and
        // the values retired meanwhile) are released between chunks. The
        // kernel's test run keeps one RCU read section over its repeats and
        // leaves it only when the scheduler asks (`bpf_test_timer_continue`);
        // here a chunk doubles while the last one added few regions and took
        // little time, so that the per-chunk set-up fades on long repeats
        // without letting regions pile up or the epoch stay pinned long.
        let mut chunk = CHUNK_MIN;
        let mut chunks = 0;
        let mut left = repeat.max(1);
        let mut trace = Vec::new();
        let mut total_ns = 0u64;
        let mut runs = 0u64;
        let out = loop {
            let n = left.min(chunk);
            let mut mem = Memory::new();
            let ctx_addr = mem.add(RegionKind::Context, &mut self.ctx);
            mem.add(RegionKind::Packet, self.page.bytes_mut());
            let out = obj.run(
                prog,
                mem,
                &[ctx_addr],
                RunInput {
                    cpu: self.cpu,
                    xdp: Some(buff),
                    frags: std::mem::take(&mut frags),
                    clock: Some(crate::sys::host_clock),
                    repeat: n,
                },
            );
            total_ns += out.duration_ns;
            runs += u64::from(out.runs);
            left -= n;
            chunks += 1;
            chunk = next_chunk(chunk, out.regions_added, out.duration_ns);
            if trace.len() < MAX_TRACE_LINES {
                trace.extend(
                    out.trace
                        .iter()
                        .take(MAX_TRACE_LINES - trace.len())
                        .cloned(),
                );
            }
            if let Some(b) = out.xdp {
                buff = b;
            }
            frags = out.frags.clone();
            if out.result.is_err() || left == 0 {
                break out;
            }
        };
        let retval = out.result?;
        let frame = self.page.bytes();
        let lo = (buff.meta - hard_start) as usize;
        let hi = (buff.end - hard_start) as usize;
        let mut data_out = frame[lo..hi].to_vec();
        for f in &frags {
            data_out.extend_from_slice(f);
        }
        Ok(XdpRun {
            retval,
            data_out,
            meta_len: (buff.data - buff.meta) as usize,
            duration_ns: total_ns / runs.max(1),
            trace,
            redirect: out.redirect,
            tail_calls: out.tail_calls,
            chunks,
        })
    }
}
