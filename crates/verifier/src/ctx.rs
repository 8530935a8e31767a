//! Context access rules per program type: which offsets and sizes may be
//! read or written, and which fields give packet pointers.

use bpfkit_abi::ProgType;

use crate::state::PtrKind;

/// What reading a context field gives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CtxField {
    /// A number.
    Scalar,
    /// A pointer of this kind.
    Ptr(PtrKind),
}

/// Whether `size` bytes at `off` fall inside the `field_size`-byte field at
/// `start` as an aligned narrow (or full) load.
fn narrow_ok(off: i64, size: i64, start: i64, field_size: i64) -> bool {
    off >= start && off + size <= start + field_size && off % size == 0
}

/// `struct __sk_buff` fields: (offset, size).
const SKB_U64_FIELDS: &[i64] = &[152, 184];
const SKB_SIZE: i64 = 192;

/// The result of an access of `size` bytes at `off` of the context of
/// type `t`; `None` when the kernel refuses it
/// ("invalid bpf_context access").
pub fn access(t: ProgType, off: i64, size: i64, write: bool) -> Option<CtxField> {
    use ProgType as P;
    if off < 0 || size <= 0 {
        return None;
    }
    match t {
        P::Xdp => {
            // struct xdp_md: u32 fields, 4-byte reads only (egress_ifindex
            // only for devmap programs).
            if write || size != 4 || off % 4 != 0 || off >= 20 {
                return None;
            }
            Some(match off {
                0 => CtxField::Ptr(PtrKind::Packet),
                4 => CtxField::Ptr(PtrKind::PacketEnd),
                8 => CtxField::Ptr(PtrKind::PacketMeta),
                _ => CtxField::Scalar,
            })
        }
        P::SocketFilter
        | P::SchedCls
        | P::SchedAct
        | P::CgroupSkb
        | P::LwtIn
        | P::LwtOut
        | P::LwtXmit
        | P::SkSkb => skb_access(t, off, size, write),
        P::Kprobe => tracing_access(off, size, write, 168),
        P::PerfEvent => tracing_access(off, size, write, 184),
        P::Tracepoint => tracing_access(off, size, write, 2048),
        P::RawTracepoint | P::RawTracepointWritable => tracing_access(off, size, write, 96),
        P::SockOps => sock_ops_access(off, size, write),
        P::CgroupSock => {
            // struct bpf_sock: u32 fields, narrow reads; writes to
            // bound_dev_if, mark, priority.
            if off + size > 80 || off % size != 0 || size > 4 {
                return None;
            }
            if write && !(size == 4 && matches!(off, 0 | 16 | 20)) {
                return None;
            }
            Some(CtxField::Scalar)
        }
        _ => None,
    }
}

/// Whether offset `off` of the context of `t` holds a kernel pointer that
/// the checker reads as a number (`__sk_buff.sk`, `bpf_sock_ops.sk`,
/// `skb_data`, `skb_data_end`).
pub fn is_pointer_field(t: ProgType, off: i64) -> bool {
    use ProgType as P;
    match t {
        P::SockOps => matches!(off, 184 | 192 | 200),
        P::SocketFilter
        | P::SchedCls
        | P::SchedAct
        | P::CgroupSkb
        | P::LwtIn
        | P::LwtOut
        | P::LwtXmit
        | P::SkSkb => off == 168,
        _ => false,
    }
}

fn tracing_access(off: i64, size: i64, write: bool, len: i64) -> Option<CtxField> {
    if write || off + size > len || off % size != 0 || !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    Some(CtxField::Scalar)
}

fn skb_access(t: ProgType, off: i64, size: i64, write: bool) -> Option<CtxField> {
    use ProgType as P;
    if off + size > SKB_SIZE || off % size != 0 || !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    let tc = matches!(t, P::SchedCls | P::SchedAct);
    let direct = tc
        || matches!(
            t,
            P::LwtIn | P::LwtOut | P::LwtXmit | P::SkSkb | P::CgroupSkb
        );
    // data, data_end, data_meta: exact u32 loads.
    if matches!(off, 76 | 80 | 140) || (off < 84 && off + size > 76) {
        if !direct || write || size != 4 || (off == 140 && !tc) {
            return None;
        }
        return Some(CtxField::Ptr(match off {
            76 => PtrKind::Packet,
            80 => PtrKind::PacketEnd,
            _ => PtrKind::PacketMeta,
        }));
    }
    if (140..144).contains(&off) {
        return None;
    }
    // flow_keys: refused; sk: a socket pointer (or NULL) that the
    // checker does not model yet, read as a number (it can never be
    // dereferenced as such).
    if off < 152 && off + size > 144 {
        return None;
    }
    if off < 176 && off + size > 168 {
        return (!write && off == 168 && size == 8).then_some(CtxField::Scalar);
    }
    // tc_classid, family..local_port for socket filters; family..local_port
    // for every skb type but cgroup_skb and sk_skb.
    if t == P::SocketFilter && (72..76).contains(&off) {
        return None;
    }
    if (88..140).contains(&off) && !matches!(t, P::CgroupSkb | P::SkSkb) {
        return None;
    }
    // tstamp_type (u8 at 180, tc only) and its padding.
    if (180..184).contains(&off) {
        return (tc && !write && off == 180 && size == 1).then_some(CtxField::Scalar);
    }
    // tstamp, wire_len, hwtstamp: not for socket filters.
    if t == P::SocketFilter && ((152..164).contains(&off) || off >= 184) {
        return None;
    }
    // u64 fields (tstamp, hwtstamp): whole 8-byte loads only.
    if let Some(&s) = SKB_U64_FIELDS
        .iter()
        .find(|&&s| off < s + 8 && off + size > s)
    {
        if write {
            return (tc && s == 152 && size == 8).then_some(CtxField::Scalar);
        }
        return (off == s && size == 8).then_some(CtxField::Scalar);
    }
    // cb[0..5]: any aligned access inside, 8-byte ones included.
    if (48..68).contains(&off) {
        return (off + size <= 68).then_some(CtxField::Scalar);
    }
    if size == 8 {
        return None;
    }
    if write {
        // mark, tc_index, priority, queue_mapping, tc_classid for tc.
        let tc_fields = tc && matches!(off, 8 | 12 | 32 | 44 | 72);
        return (tc_fields && size == 4).then_some(CtxField::Scalar);
    }
    // u32 fields: narrow loads inside the field.
    let start = off - off % 4;
    narrow_ok(off, size, start, 4).then_some(CtxField::Scalar)
}

fn sock_ops_access(off: i64, size: i64, write: bool) -> Option<CtxField> {
    // struct bpf_sock_ops: u32 fields up to 168, u64 bytes_received and
    // bytes_acked, pointers sk, skb_data, skb_data_end (read as numbers:
    // not modelled yet), skb_len, skb_tcp_flags, skb_hwtstamp.
    if off + size > 224 || off % size != 0 || !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    if write {
        // reply and sk_txhash.
        return (size == 4 && (off == 4 || off == 164)).then_some(CtxField::Scalar);
    }
    match off {
        0..168 => (size == 4).then_some(CtxField::Scalar),
        168 | 176 | 184 | 192 | 200 | 216 => (size == 8).then_some(CtxField::Scalar),
        208 => (size == 4).then_some(CtxField::Scalar),
        212 => Some(CtxField::Scalar),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_and_skb_rules() {
        assert_eq!(
            access(ProgType::Xdp, 0, 4, false),
            Some(CtxField::Ptr(PtrKind::Packet))
        );
        assert_eq!(access(ProgType::Xdp, 0, 8, false), None);
        assert_eq!(access(ProgType::Xdp, 12, 4, true), None);
        // socket filters read len, not data_end; tc reads data.
        assert_eq!(
            access(ProgType::SocketFilter, 0, 4, false),
            Some(CtxField::Scalar)
        );
        assert_eq!(access(ProgType::SocketFilter, 80, 4, false), None);
        assert_eq!(access(ProgType::SocketFilter, 8, 8, false), None);
        assert_eq!(
            access(ProgType::SchedCls, 80, 4, false),
            Some(CtxField::Ptr(PtrKind::PacketEnd))
        );
        // narrow load of protocol
        assert_eq!(
            access(ProgType::SchedCls, 16, 2, false),
            Some(CtxField::Scalar)
        );
        assert_eq!(access(ProgType::SchedCls, 17, 2, false), None);
    }
}
