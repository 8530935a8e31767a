//! # bpfkit-datapath
//!
//! Packets for bpfkit programs: [`packets`] reads them from hex, pcap and
//! pcapng files and writes pcap; [`xdp`] runs XDP programs over them with
//! the buffer layout and context of the kernel's `BPF_PROG_TEST_RUN`
//! ([`xdp::XdpRunner`]). Live interfaces come later.
//!
//! Frames live in memory below 4 GiB ([`sys::LowPage`], `mmap` with
//! `MAP_32BIT`), because programs read the packet addresses from the
//! 32-bit fields of `struct xdp_md` and use them as pointers: with the
//! frame there, the field holds the real address and the engines' region
//! checks apply unchanged (see ARCHITECTURE.md).
//!
//! ```no_run
//! use bpfkit::Loader;
//! use bpfkit_datapath::{packets::parse_hex, xdp::XdpRunner};
//! let mut obj = Loader::new().load(&std::fs::read("examples/xdp_counter.o").unwrap()).unwrap();
//! let prog = obj.program_index("xdp_counter").unwrap();
//! let pkt = parse_hex("ffffffffffff000000000001080045000014000000004001f96c0a0000010a000002").unwrap();
//! let run = XdpRunner::new().unwrap().run(&mut obj, prog, &pkt, None, 1).unwrap();
//! println!("retval {} out {} bytes", run.retval, run.data_out.len());
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod packets;
#[allow(unsafe_code)]
pub mod sys;
pub mod xdp;
