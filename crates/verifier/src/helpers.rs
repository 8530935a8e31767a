//! Helper prototypes: argument kinds, return kinds and the program types
//! that may call each helper, for the common helpers.

use bpfkit_abi::ProgType;

/// What a helper argument must be (`enum bpf_arg_type`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Arg {
    /// Any initialised value (`ARG_ANYTHING`).
    Anything,
    /// A map (`ARG_CONST_MAP_PTR`).
    ConstMap,
    /// Readable memory of the map's key size (`ARG_PTR_TO_MAP_KEY`).
    MapKey,
    /// Readable memory of the map's value size (`ARG_PTR_TO_MAP_VALUE`).
    MapValue,
    /// Writable memory of the map's value size, need not be initialised
    /// (`ARG_PTR_TO_MAP_VALUE | MEM_UNINIT`).
    UninitMapValue,
    /// The context (`ARG_PTR_TO_CTX`).
    Ctx,
    /// Readable memory whose size is the next argument (`ARG_PTR_TO_MEM`).
    Mem,
    /// Like `Mem`, or NULL with a zero size.
    MemOrNull,
    /// Writable memory whose size is the next argument, need not be
    /// initialised (`ARG_PTR_TO_UNINIT_MEM`).
    UninitMem,
    /// The size of the previous memory argument, > 0 (`ARG_CONST_SIZE`).
    ConstSize,
    /// The size of the previous memory argument, >= 0.
    ConstSizeOrZero,
    /// A constant allocation size (`ARG_CONST_ALLOC_SIZE_OR_ZERO`).
    AllocSize,
    /// A record from `bpf_ringbuf_reserve` (`ARG_PTR_TO_RINGBUF_MEM`),
    /// released by the call.
    RingbufMem,
    /// A subprogram to call back (`ARG_PTR_TO_FUNC`).
    Func,
    /// A stack pointer or NULL (`ARG_PTR_TO_STACK_OR_NULL`), handed to the
    /// callback.
    StackOrNull,
}

/// What a helper returns (`enum bpf_return_type`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ret {
    /// A number.
    Integer,
    /// Nothing (r0 is not readable).
    Void,
    /// A value of the map in argument 1, or NULL.
    MapValueOrNull,
    /// Memory of the size in argument 2, or NULL, to be released
    /// (ring buffer reserve).
    RingbufMemOrNull,
}

/// Which program types may call a helper.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Avail {
    /// Every program type (`bpf_base_func_proto`).
    All,
    /// Tracing types (kprobe, tracepoint, perf_event, raw_tracepoint).
    Tracing,
    /// Every type but the tracing ones (the kernel's tracing prototypes
    /// hide `bpf_ktime_get_coarse_ns`).
    NotTracing,
    /// Socket buffer types that may change the packet (tc, lwt_xmit).
    SkbWrite,
    /// Every socket buffer type (socket_filter, tc, cgroup_skb, lwt).
    Skb,
    /// tc programs only.
    Tc,
    /// XDP only.
    Xdp,
    /// XDP and tc.
    Net,
    /// Tracing, tc, XDP and socket filters (perf_event_output and
    /// similar).
    Output,
    /// sock_ops only.
    SockOps,
    /// tc and lwt_xmit.
    TcLwt,
    /// XDP, tc and lwt_xmit.
    Redirect,
    /// XDP, tc and the lwt types.
    CsumDiff,
    /// Socket buffer types but lwt, and sock_ops.
    SocketCookie,
    /// Socket buffer types but lwt.
    SkbNoLwt,
    /// perf_event only.
    PerfEvent,
    /// Not available on this kernel build (configuration or lockdown).
    Never,
}

/// A helper prototype.
#[derive(Clone, Copy, Debug)]
pub struct Proto {
    /// Helper id.
    pub id: u32,
    /// Name without the `bpf_` prefix.
    pub name: &'static str,
    /// Arguments r1.. in order.
    pub args: &'static [Arg],
    /// Return kind.
    pub ret: Ret,
    /// Program types that may call it.
    pub avail: Avail,
}

use Arg::*;

macro_rules! protos {
    ($($id:literal $name:ident ($($a:ident),*) -> $ret:ident, $avail:ident;)*) => {
        /// The prototype table, by helper id.
        pub const PROTOS: &[Proto] = &[
            $(Proto { id: $id, name: stringify!($name), args: &[$($a),*], ret: Ret::$ret, avail: Avail::$avail },)*
        ];
    };
}

protos! {
    1 map_lookup_elem(ConstMap, MapKey) -> MapValueOrNull, All;
    2 map_update_elem(ConstMap, MapKey, MapValue, Anything) -> Integer, All;
    3 map_delete_elem(ConstMap, MapKey) -> Integer, All;
    4 probe_read(UninitMem, ConstSizeOrZero, Anything) -> Integer, Tracing;
    5 ktime_get_ns() -> Integer, All;
    6 trace_printk(Mem, ConstSize) -> Integer, All;
    7 get_prandom_u32() -> Integer, All;
    8 get_smp_processor_id() -> Integer, All;
    9 skb_store_bytes(Ctx, Anything, Mem, ConstSize, Anything) -> Integer, SkbWrite;
    10 l3_csum_replace(Ctx, Anything, Anything, Anything, Anything) -> Integer, SkbWrite;
    11 l4_csum_replace(Ctx, Anything, Anything, Anything, Anything) -> Integer, SkbWrite;
    12 tail_call(Ctx, ConstMap, Anything) -> Void, All;
    13 clone_redirect(Ctx, Anything, Anything) -> Integer, TcLwt;
    14 get_current_pid_tgid() -> Integer, All;
    15 get_current_uid_gid() -> Integer, All;
    16 get_current_comm(UninitMem, ConstSize) -> Integer, All;
    17 get_cgroup_classid(Ctx) -> Integer, All;
    18 skb_vlan_push(Ctx, Anything, Anything) -> Integer, Tc;
    19 skb_vlan_pop(Ctx) -> Integer, Tc;
    20 skb_get_tunnel_key(Ctx, UninitMem, ConstSize, Anything) -> Integer, TcLwt;
    21 skb_set_tunnel_key(Ctx, Mem, ConstSize, Anything) -> Integer, TcLwt;
    22 perf_event_read(ConstMap, Anything) -> Integer, All;
    23 redirect(Anything, Anything) -> Integer, Redirect;
    24 get_route_realm(Ctx) -> Integer, TcLwt;
    25 perf_event_output(Ctx, ConstMap, Anything, Mem, ConstSizeOrZero) -> Integer, Output;
    26 skb_load_bytes(Ctx, Anything, UninitMem, ConstSize) -> Integer, Skb;
    27 get_stackid(Ctx, ConstMap, Anything) -> Integer, Tracing;
    28 csum_diff(MemOrNull, ConstSizeOrZero, MemOrNull, ConstSizeOrZero, Anything) -> Integer, CsumDiff;
    29 skb_get_tunnel_opt(Ctx, UninitMem, ConstSize) -> Integer, TcLwt;
    30 skb_set_tunnel_opt(Ctx, Mem, ConstSize) -> Integer, TcLwt;
    31 skb_change_proto(Ctx, Anything, Anything) -> Integer, Tc;
    32 skb_change_type(Ctx, Anything) -> Integer, Tc;
    33 skb_under_cgroup(Ctx, ConstMap, Anything) -> Integer, TcLwt;
    34 get_hash_recalc(Ctx) -> Integer, TcLwt;
    35 get_current_task() -> Integer, All;
    36 probe_write_user(Anything, Mem, ConstSize) -> Integer, Never;
    37 current_task_under_cgroup(ConstMap, Anything) -> Integer, All;
    38 skb_change_tail(Ctx, Anything, Anything) -> Integer, TcLwt;
    39 skb_pull_data(Ctx, Anything) -> Integer, SkbWrite;
    40 csum_update(Ctx, Anything) -> Integer, TcLwt;
    41 set_hash_invalid(Ctx) -> Integer, TcLwt;
    42 get_numa_node_id() -> Integer, All;
    43 skb_change_head(Ctx, Anything, Anything) -> Integer, TcLwt;
    44 xdp_adjust_head(Ctx, Anything) -> Integer, Xdp;
    45 probe_read_str(UninitMem, ConstSizeOrZero, Anything) -> Integer, Tracing;
    46 get_socket_cookie(Ctx) -> Integer, SocketCookie;
    47 get_socket_uid(Ctx) -> Integer, SkbNoLwt;
    48 set_hash(Ctx, Anything) -> Integer, Tc;
    49 setsockopt(Ctx, Anything, Anything, Mem, ConstSize) -> Integer, SockOps;
    50 skb_adjust_room(Ctx, Anything, Anything, Anything) -> Integer, Tc;
    51 redirect_map(ConstMap, Anything, Anything) -> Integer, Xdp;
    53 sock_map_update(Ctx, ConstMap, MapKey, Anything) -> Integer, SockOps;
    54 xdp_adjust_meta(Ctx, Anything) -> Integer, Xdp;
    55 perf_event_read_value(ConstMap, Anything, UninitMem, ConstSize) -> Integer, All;
    56 perf_prog_read_value(Ctx, UninitMem, ConstSize) -> Integer, PerfEvent;
    57 getsockopt(Ctx, Anything, Anything, UninitMem, ConstSize) -> Integer, SockOps;
    58 override_return(Ctx, Anything) -> Integer, Never;
    59 sock_ops_cb_flags_set(Ctx, Anything) -> Integer, SockOps;
    65 xdp_adjust_tail(Ctx, Anything) -> Integer, Xdp;
    69 fib_lookup(Ctx, Mem, ConstSize, Anything) -> Integer, Net;
    87 map_push_elem(ConstMap, MapValue, Anything) -> Integer, All;
    88 map_pop_elem(ConstMap, UninitMapValue) -> Integer, All;
    89 map_peek_elem(ConstMap, UninitMapValue) -> Integer, All;
    112 probe_read_user(UninitMem, ConstSizeOrZero, Anything) -> Integer, All;
    113 probe_read_kernel(UninitMem, ConstSizeOrZero, Anything) -> Integer, All;
    114 probe_read_user_str(UninitMem, ConstSizeOrZero, Anything) -> Integer, All;
    115 probe_read_kernel_str(UninitMem, ConstSizeOrZero, Anything) -> Integer, All;
    125 ktime_get_boot_ns() -> Integer, All;
    130 ringbuf_output(ConstMap, Mem, ConstSizeOrZero, Anything) -> Integer, All;
    131 ringbuf_reserve(ConstMap, AllocSize, Anything) -> RingbufMemOrNull, All;
    132 ringbuf_submit(RingbufMem, Anything) -> Void, All;
    133 ringbuf_discard(RingbufMem, Anything) -> Void, All;
    134 ringbuf_query(ConstMap, Anything) -> Integer, All;
    160 ktime_get_coarse_ns() -> Integer, NotTracing;
    164 for_each_map_elem(ConstMap, Func, StackOrNull, Anything) -> Integer, All;
    181 loop(Anything, Func, StackOrNull, Anything) -> Integer, All;
}

/// Helper ids below this exist in the kernel (`__BPF_FUNC_MAX_ID` of
/// Linux 6.18); ids without a prototype here are reported as not
/// supported rather than unknown.
pub const KERNEL_HELPER_COUNT: u32 = 212;

/// The prototype of helper `id`, if known.
pub fn proto(id: u32) -> Option<&'static Proto> {
    PROTOS.iter().find(|p| p.id == id)
}

/// Whether a program of type `t` may call a helper available to `avail`.
pub fn available(avail: Avail, t: ProgType) -> bool {
    use ProgType as P;
    let tracing = matches!(
        t,
        P::Kprobe | P::Tracepoint | P::PerfEvent | P::RawTracepoint | P::RawTracepointWritable
    );
    let tc = matches!(t, P::SchedCls | P::SchedAct);
    match avail {
        Avail::All => true,
        Avail::Tracing => tracing,
        Avail::NotTracing => !tracing,
        Avail::SkbWrite => tc || matches!(t, P::LwtXmit),
        Avail::Skb => {
            tc || matches!(
                t,
                P::SocketFilter | P::CgroupSkb | P::LwtIn | P::LwtOut | P::LwtXmit | P::SkSkb
            )
        }
        Avail::Tc => tc,
        Avail::Xdp => t == P::Xdp,
        Avail::Net => t == P::Xdp || tc,
        Avail::Output => {
            tracing
                || tc
                || matches!(
                    t,
                    P::Xdp
                        | P::SocketFilter
                        | P::CgroupSkb
                        | P::LwtIn
                        | P::LwtOut
                        | P::LwtXmit
                        | P::SockOps
                )
        }
        Avail::SockOps => t == P::SockOps,
        Avail::TcLwt => tc || t == P::LwtXmit,
        Avail::Redirect => tc || matches!(t, P::Xdp | P::LwtXmit),
        Avail::CsumDiff => tc || matches!(t, P::Xdp | P::LwtIn | P::LwtOut | P::LwtXmit),
        Avail::SocketCookie => {
            tc || matches!(t, P::SocketFilter | P::CgroupSkb | P::SkSkb | P::SockOps)
        }
        Avail::SkbNoLwt => tc || matches!(t, P::SocketFilter | P::CgroupSkb | P::SkSkb),
        Avail::PerfEvent => t == P::PerfEvent,
        Avail::Never => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in PROTOS.windows(2) {
            assert!(w[0].id < w[1].id, "{} before {}", w[0].name, w[1].name);
        }
        assert_eq!(proto(1).unwrap().name, "map_lookup_elem");
        assert!(proto(9999).is_none());
        assert!(!available(proto(9).unwrap().avail, ProgType::SocketFilter));
        assert!(available(proto(9).unwrap().avail, ProgType::SchedCls));
    }
}
