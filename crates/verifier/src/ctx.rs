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
const SKB_PTR_FIELDS: &[i64] = &[144, 168];
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
            // struct xdp_md: six u32 fields, 4-byte accesses only, read only.
            if write || size != 4 || off % 4 != 0 || off >= 24 {
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
    // Pointer fields (flow_keys, sk): refused here.
    if SKB_PTR_FIELDS
        .iter()
        .any(|&s| off < s + 8 && off + size > s)
    {
        return None;
    }
    // tc_classid, and family..local_port, tstamp, wire_len, hwtstamp for
    // socket filters.
    let sf_forbidden = |o: i64| {
        (72..76).contains(&o) || (88..140).contains(&o) || (152..164).contains(&o) || o >= 184
    };
    if t == P::SocketFilter && sf_forbidden(off) {
        return None;
    }
    if let Some(&s) = SKB_U64_FIELDS
        .iter()
        .find(|&&s| off < s + 8 && off + size > s)
    {
        if write {
            return (tc && s == 152 && size == 8).then_some(CtxField::Scalar);
        }
        return narrow_ok(off, size, s, 8).then_some(CtxField::Scalar);
    }
    if size == 8 {
        return None;
    }
    if write {
        // cb[0..5] for all; mark, tc_index, priority, queue_mapping,
        // tc_classid for tc.
        let cb = (48..68).contains(&off);
        let tc_fields = tc && matches!(off, 8 | 12 | 32 | 44 | 72);
        return (cb || (tc_fields && size == 4)).then_some(CtxField::Scalar);
    }
    // u32 fields: narrow loads inside the field.
    let start = off - off % 4;
    narrow_ok(off, size, start, 4).then_some(CtxField::Scalar)
}

fn sock_ops_access(off: i64, size: i64, write: bool) -> Option<CtxField> {
    // struct bpf_sock_ops: u32 fields up to 168, u64 bytes_received and
    // bytes_acked, then pointers.
    if off + size > 224 || off % size != 0 || !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    if write {
        // reply/replylong and sk_txhash.
        return (size == 4 && ((4..20).contains(&off) || off == 164)).then_some(CtxField::Scalar);
    }
    if off >= 184 {
        return None;
    }
    if (168..184).contains(&off) {
        return narrow_ok(off, size, off - (off - 168) % 8, 8).then_some(CtxField::Scalar);
    }
    (size <= 4).then_some(CtxField::Scalar)
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
