//! The raw `bpf()` system call. Each `bpf_attr` variant is a `#[repr(C)]`
//! struct laid out field for field as in `include/uapi/linux/bpf.h`, zeroed
//! beyond the fields we set (the kernel requires unused tail bytes to be 0).

use crate::{KernelError, MapSpec, ProgLoad, TestRun, TestRunOutput};
use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub(crate) const BPF_MAP_CREATE: i32 = 0;
pub(crate) const BPF_MAP_LOOKUP_ELEM: i32 = 1;
pub(crate) const BPF_MAP_UPDATE_ELEM: i32 = 2;
pub(crate) const BPF_MAP_DELETE_ELEM: i32 = 3;
pub(crate) const BPF_MAP_GET_NEXT_KEY: i32 = 4;
const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_TEST_RUN: i32 = 10;
const BPF_BTF_LOAD: i32 = 18;

fn cmd_name(cmd: i32) -> &'static str {
    match cmd {
        BPF_MAP_CREATE => "BPF_MAP_CREATE",
        BPF_MAP_LOOKUP_ELEM => "BPF_MAP_LOOKUP_ELEM",
        BPF_MAP_UPDATE_ELEM => "BPF_MAP_UPDATE_ELEM",
        BPF_MAP_DELETE_ELEM => "BPF_MAP_DELETE_ELEM",
        BPF_MAP_GET_NEXT_KEY => "BPF_MAP_GET_NEXT_KEY",
        BPF_PROG_LOAD => "BPF_PROG_LOAD",
        BPF_BTF_LOAD => "BPF_BTF_LOAD",
        _ => "BPF_PROG_TEST_RUN",
    }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
    map_extra: u64,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    core_relo_cnt: u32,
    fd_array: u64,
    core_relos: u64,
    core_relo_rec_size: u32,
    log_true_size: u32,
}

#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    btf_log_true_size: u32,
}

/// `bpf_func_info`: a subprogram's first instruction and its BTF type.
#[repr(C)]
struct FuncInfo {
    insn_off: u32,
    type_id: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Calls `bpf(cmd, attr, size_of::<T>())`.
fn bpf<T>(cmd: i32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` bpf_attr
    // variant of exactly the size passed; every pointer inside it was set by
    // the callers below to buffers that outlive this call and are as large as
    // the sizes they put beside them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned_fd(r: i64) -> OwnedFd {
    // SAFETY: a successful BPF_MAP_CREATE / BPF_PROG_LOAD returns a new file
    // descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // The kernel accepts only [A-Za-z0-9_.] in object names.
    let clean = name
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        .take(15);
    for (o, b) in out.iter_mut().zip(clean) {
        *o = b;
    }
    out
}

pub(crate) fn map_create(spec: &MapSpec) -> Result<OwnedFd, KernelError> {
    let mut attr = MapCreateAttr {
        map_type: spec.map_type,
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        map_flags: spec.map_flags,
        inner_map_fd: spec.inner_map_fd.unwrap_or(0) as u32,
        map_name: name16(&spec.name),
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut attr)
        .map(owned_fd)
        .map_err(|source| KernelError::Syscall {
            cmd: cmd_name(BPF_MAP_CREATE),
            source,
        })
}

pub(crate) fn map_elem(
    cmd: i32,
    fd: i32,
    key: u64,
    value: u64,
    flags: u64,
) -> Result<(), KernelError> {
    let mut attr = MapElemAttr {
        map_fd: fd as u32,
        key,
        value,
        flags,
        ..Default::default()
    };
    bpf(cmd, &mut attr)
        .map(drop)
        .map_err(|source| KernelError::Syscall {
            cmd: cmd_name(cmd),
            source,
        })
}

pub(crate) fn btf_load(btf: &[u8]) -> Result<OwnedFd, KernelError> {
    let mut attr = BtfLoadAttr {
        btf: btf.as_ptr() as u64,
        btf_size: btf.len() as u32,
        ..Default::default()
    };
    bpf(BPF_BTF_LOAD, &mut attr)
        .map(owned_fd)
        .map_err(|source| KernelError::Syscall {
            cmd: cmd_name(BPF_BTF_LOAD),
            source,
        })
}

/// `btf_fd`: the BTF of [`ProgLoad::func_starts`] (function `i` has type
/// id `3 + i`).
pub(crate) fn prog_load(
    p: &ProgLoad<'_>,
    license: &CStr,
    log: &mut [u8],
    btf_fd: Option<i32>,
) -> io::Result<OwnedFd> {
    let funcs: Vec<FuncInfo> = p
        .func_starts
        .iter()
        .enumerate()
        .map(|(i, &insn_off)| FuncInfo {
            insn_off,
            type_id: 3 + i as u32,
        })
        .collect();
    let mut attr = ProgLoadAttr {
        prog_type: p.prog_type,
        insn_cnt: (p.insns.len() / 8) as u32,
        insns: p.insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: p.log_level,
        log_size: if p.log_level > 0 { log.len() as u32 } else { 0 },
        log_buf: if p.log_level > 0 {
            log.as_mut_ptr() as u64
        } else {
            0
        },
        prog_flags: p.prog_flags,
        prog_name: name16(&p.name),
        expected_attach_type: p.expected_attach_type,
        ..Default::default()
    };
    if let Some(fd) = btf_fd {
        attr.prog_btf_fd = fd as u32;
        attr.func_info_rec_size = std::mem::size_of::<FuncInfo>() as u32;
        attr.func_info = funcs.as_ptr() as u64;
        attr.func_info_cnt = funcs.len() as u32;
    }
    bpf(BPF_PROG_LOAD, &mut attr).map(owned_fd)
}

pub(crate) fn prog_test_run(fd: i32, t: &TestRun<'_>) -> Result<TestRunOutput, KernelError> {
    let mut data_out = vec![0u8; t.data_out_len];
    let mut ctx_out = vec![0u8; t.ctx_out_len];
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: t.data_in.len() as u32,
        data_size_out: data_out.len() as u32,
        data_in: if t.data_in.is_empty() {
            0
        } else {
            t.data_in.as_ptr() as u64
        },
        data_out: if data_out.is_empty() {
            0
        } else {
            data_out.as_mut_ptr() as u64
        },
        repeat: t.repeat,
        ctx_size_in: t.ctx_in.len() as u32,
        ctx_size_out: ctx_out.len() as u32,
        ctx_in: if t.ctx_in.is_empty() {
            0
        } else {
            t.ctx_in.as_ptr() as u64
        },
        ctx_out: if ctx_out.is_empty() {
            0
        } else {
            ctx_out.as_mut_ptr() as u64
        },
        flags: t.flags,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(|source| KernelError::Syscall {
        cmd: cmd_name(BPF_PROG_TEST_RUN),
        source,
    })?;
    data_out.truncate((attr.data_size_out as usize).min(data_out.len()));
    ctx_out.truncate((attr.ctx_size_out as usize).min(ctx_out.len()));
    Ok(TestRunOutput {
        retval: attr.retval,
        data_out,
        ctx_out,
        duration_ns: attr.duration,
    })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Clears capabilities `caps` from the calling thread's effective set
/// (capabilities are per thread in Linux, so other threads keep theirs).
pub(crate) fn drop_effective_caps(caps: &[u32]) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData words (version 3) into `data`, which
    // lives for the call; `hdr` is a valid header for this thread (pid 0).
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    for &c in caps {
        data[(c / 32) as usize].effective &= !(1 << (c % 32));
    }
    // SAFETY: capset only reads `hdr` and the two CapData words.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
