//! Program descriptions: [`ProgType`] and [`XdpAction`].

use crate::UnknownValue;
use std::fmt;

macro_rules! prog_types {
    ($($(#[$doc:meta])* $variant:ident = $num:literal, $alias:literal, $name:literal;)*) => {
        /// A kernel program type (`enum bpf_prog_type`), numbered as the
        /// kernel numbers them. [`ProgType::name`] is the name bpftool
        /// prints (and `bpfkit verify --type` takes).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[repr(u32)]
        pub enum ProgType {
            $($(#[$doc])* #[doc(alias = $alias)] $variant = $num,)*
        }

        impl ProgType {
            /// Every program type, in kernel order.
            pub const ALL: &'static [ProgType] = &[$(ProgType::$variant,)*];

            /// The name bpftool prints (`xdp`, `sched_cls`, `sock_ops`, ...).
            pub fn name(self) -> &'static str {
                match self { $(ProgType::$variant => $name,)* }
            }

            /// The kernel's constant name (`BPF_PROG_TYPE_XDP`).
            pub fn kernel_name(self) -> &'static str {
                match self { $(ProgType::$variant => $alias,)* }
            }

            /// The type whose bpftool name is `name`.
            pub fn from_name(name: &str) -> Option<ProgType> {
                match name { $($name => Some(ProgType::$variant),)* _ => None }
            }
        }

        impl TryFrom<u32> for ProgType {
            type Error = UnknownValue;
            fn try_from(v: u32) -> Result<ProgType, UnknownValue> {
                match v {
                    $($num => Ok(ProgType::$variant),)*
                    _ => Err(UnknownValue { kind: "program type", value: v }),
                }
            }
        }
    };
}

prog_types! {
    /// Not a usable type (0).
    Unspec = 0, "BPF_PROG_TYPE_UNSPEC", "unspec";
    /// Socket filter.
    SocketFilter = 1, "BPF_PROG_TYPE_SOCKET_FILTER", "socket_filter";
    /// kprobe / uprobe.
    Kprobe = 2, "BPF_PROG_TYPE_KPROBE", "kprobe";
    /// tc classifier (`cls_bpf`).
    SchedCls = 3, "BPF_PROG_TYPE_SCHED_CLS", "sched_cls";
    /// tc action (`act_bpf`).
    SchedAct = 4, "BPF_PROG_TYPE_SCHED_ACT", "sched_act";
    /// Tracepoint.
    Tracepoint = 5, "BPF_PROG_TYPE_TRACEPOINT", "tracepoint";
    /// XDP.
    Xdp = 6, "BPF_PROG_TYPE_XDP", "xdp";
    /// Perf event.
    PerfEvent = 7, "BPF_PROG_TYPE_PERF_EVENT", "perf_event";
    /// Cgroup skb.
    CgroupSkb = 8, "BPF_PROG_TYPE_CGROUP_SKB", "cgroup_skb";
    /// Cgroup sock.
    CgroupSock = 9, "BPF_PROG_TYPE_CGROUP_SOCK", "cgroup_sock";
    /// Lightweight tunnel input.
    LwtIn = 10, "BPF_PROG_TYPE_LWT_IN", "lwt_in";
    /// Lightweight tunnel output.
    LwtOut = 11, "BPF_PROG_TYPE_LWT_OUT", "lwt_out";
    /// Lightweight tunnel transmit.
    LwtXmit = 12, "BPF_PROG_TYPE_LWT_XMIT", "lwt_xmit";
    /// TCP socket operations.
    SockOps = 13, "BPF_PROG_TYPE_SOCK_OPS", "sock_ops";
    /// Socket skb (sockmap).
    SkSkb = 14, "BPF_PROG_TYPE_SK_SKB", "sk_skb";
    /// Cgroup device.
    CgroupDevice = 15, "BPF_PROG_TYPE_CGROUP_DEVICE", "cgroup_device";
    /// Socket message (sockmap).
    SkMsg = 16, "BPF_PROG_TYPE_SK_MSG", "sk_msg";
    /// Raw tracepoint.
    RawTracepoint = 17, "BPF_PROG_TYPE_RAW_TRACEPOINT", "raw_tracepoint";
    /// Cgroup sock addr.
    CgroupSockAddr = 18, "BPF_PROG_TYPE_CGROUP_SOCK_ADDR", "cgroup_sock_addr";
    /// seg6 local.
    LwtSeg6local = 19, "BPF_PROG_TYPE_LWT_SEG6LOCAL", "lwt_seg6local";
    /// LIRC mode 2.
    LircMode2 = 20, "BPF_PROG_TYPE_LIRC_MODE2", "lirc_mode2";
    /// SO_REUSEPORT selection.
    SkReuseport = 21, "BPF_PROG_TYPE_SK_REUSEPORT", "sk_reuseport";
    /// Flow dissector.
    FlowDissector = 22, "BPF_PROG_TYPE_FLOW_DISSECTOR", "flow_dissector";
    /// Cgroup sysctl.
    CgroupSysctl = 23, "BPF_PROG_TYPE_CGROUP_SYSCTL", "cgroup_sysctl";
    /// Writable raw tracepoint.
    RawTracepointWritable = 24, "BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE", "raw_tracepoint_writable";
    /// Cgroup sockopt.
    CgroupSockopt = 25, "BPF_PROG_TYPE_CGROUP_SOCKOPT", "cgroup_sockopt";
    /// BTF-based tracing (fentry, fexit, ...).
    Tracing = 26, "BPF_PROG_TYPE_TRACING", "tracing";
    /// Struct ops.
    StructOps = 27, "BPF_PROG_TYPE_STRUCT_OPS", "struct_ops";
    /// Extension (freplace).
    Ext = 28, "BPF_PROG_TYPE_EXT", "ext";
    /// LSM.
    Lsm = 29, "BPF_PROG_TYPE_LSM", "lsm";
    /// Socket lookup.
    SkLookup = 30, "BPF_PROG_TYPE_SK_LOOKUP", "sk_lookup";
    /// Syscall program.
    Syscall = 31, "BPF_PROG_TYPE_SYSCALL", "syscall";
    /// Netfilter.
    Netfilter = 32, "BPF_PROG_TYPE_NETFILTER", "netfilter";
}

/// How a section-name pattern matches.
#[derive(Clone, Copy)]
enum Match {
    /// The whole name.
    Exact,
    /// The whole name, or the name followed by `/` and anything (libbpf's
    /// `type+` definitions).
    ExactOrSlash,
    /// Any name starting with the pattern (libbpf's `type/` definitions,
    /// and legacy loaders' sloppy prefixes such as `socket1`).
    Prefix,
}

/// libbpf's section names (`SEC("...")`), in the order they are tried.
const SECTIONS: &[(&str, Match, ProgType)] = {
    use Match::*;
    use ProgType as P;
    &[
        ("socket", Prefix, P::SocketFilter),
        ("sk_reuseport", ExactOrSlash, P::SkReuseport),
        ("kprobe", ExactOrSlash, P::Kprobe),
        ("uprobe", ExactOrSlash, P::Kprobe),
        ("kretprobe", ExactOrSlash, P::Kprobe),
        ("uretprobe", ExactOrSlash, P::Kprobe),
        ("kprobe.multi", ExactOrSlash, P::Kprobe),
        ("kretprobe.multi", ExactOrSlash, P::Kprobe),
        ("uprobe.multi", ExactOrSlash, P::Kprobe),
        ("uretprobe.multi", ExactOrSlash, P::Kprobe),
        ("ksyscall", ExactOrSlash, P::Kprobe),
        ("kretsyscall", ExactOrSlash, P::Kprobe),
        ("usdt", ExactOrSlash, P::Kprobe),
        ("tc", ExactOrSlash, P::SchedCls),
        ("tcx", ExactOrSlash, P::SchedCls),
        ("netkit", ExactOrSlash, P::SchedCls),
        ("classifier", ExactOrSlash, P::SchedCls),
        ("action", ExactOrSlash, P::SchedAct),
        ("tracepoint", ExactOrSlash, P::Tracepoint),
        ("tp", ExactOrSlash, P::Tracepoint),
        ("raw_tracepoint.w", ExactOrSlash, P::RawTracepointWritable),
        ("raw_tp.w", ExactOrSlash, P::RawTracepointWritable),
        ("raw_tracepoint", ExactOrSlash, P::RawTracepoint),
        ("raw_tp", ExactOrSlash, P::RawTracepoint),
        ("tp_btf", ExactOrSlash, P::Tracing),
        ("fentry", ExactOrSlash, P::Tracing),
        ("fmod_ret", ExactOrSlash, P::Tracing),
        ("fexit", ExactOrSlash, P::Tracing),
        ("fentry.s", ExactOrSlash, P::Tracing),
        ("fmod_ret.s", ExactOrSlash, P::Tracing),
        ("fexit.s", ExactOrSlash, P::Tracing),
        ("iter", ExactOrSlash, P::Tracing),
        ("iter.s", ExactOrSlash, P::Tracing),
        ("freplace", ExactOrSlash, P::Ext),
        ("lsm", ExactOrSlash, P::Lsm),
        ("lsm.s", ExactOrSlash, P::Lsm),
        ("lsm_cgroup", ExactOrSlash, P::Lsm),
        ("xdp.frags", ExactOrSlash, P::Xdp),
        ("xdp", ExactOrSlash, P::Xdp),
        ("perf_event", Exact, P::PerfEvent),
        ("lwt_in", Exact, P::LwtIn),
        ("lwt_out", Exact, P::LwtOut),
        ("lwt_xmit", Exact, P::LwtXmit),
        ("lwt_seg6local", Exact, P::LwtSeg6local),
        ("sockops", Exact, P::SockOps),
        ("sk_skb", ExactOrSlash, P::SkSkb),
        ("sk_msg", Exact, P::SkMsg),
        ("lirc_mode2", Exact, P::LircMode2),
        ("flow_dissector", Exact, P::FlowDissector),
        ("cgroup_skb", Prefix, P::CgroupSkb),
        ("cgroup/skb", Exact, P::CgroupSkb),
        ("cgroup/dev", Exact, P::CgroupDevice),
        ("cgroup/sysctl", Exact, P::CgroupSysctl),
        ("cgroup/getsockopt", Exact, P::CgroupSockopt),
        ("cgroup/setsockopt", Exact, P::CgroupSockopt),
        ("cgroup/sock", Exact, P::CgroupSock),
        ("cgroup/post_bind", Prefix, P::CgroupSock),
        ("cgroup/sock_create", Exact, P::CgroupSock),
        ("cgroup/sock_release", Exact, P::CgroupSock),
        ("cgroup/bind", Prefix, P::CgroupSockAddr),
        ("cgroup/connect", Prefix, P::CgroupSockAddr),
        ("cgroup/sendmsg", Prefix, P::CgroupSockAddr),
        ("cgroup/recvmsg", Prefix, P::CgroupSockAddr),
        ("cgroup/getpeername", Prefix, P::CgroupSockAddr),
        ("cgroup/getsockname", Prefix, P::CgroupSockAddr),
        ("struct_ops", ExactOrSlash, P::StructOps),
        ("struct_ops.s", ExactOrSlash, P::StructOps),
        ("sk_lookup", Exact, P::SkLookup),
        ("syscall", Exact, P::Syscall),
        ("netfilter", Exact, P::Netfilter),
    ]
};

impl ProgType {
    /// The type libbpf gives a program from its ELF section name
    /// (`SEC("xdp")`, `SEC("tc/ingress")`, `SEC("classifier")`,
    /// `SEC("kprobe/tcp_connect")`, ...). Legacy loaders' names such as
    /// `socket1` match by prefix, as in iproute2 and old libbpf.
    ///
    /// ```
    /// use bpfkit_abi::ProgType;
    /// assert_eq!(ProgType::from_section("tc"), Some(ProgType::SchedCls));
    /// assert_eq!(ProgType::from_section("action/police"), Some(ProgType::SchedAct));
    /// assert_eq!(ProgType::from_section("sockops"), Some(ProgType::SockOps));
    /// assert_eq!(ProgType::from_section("tracepoint/syscalls/sys_enter_open"), Some(ProgType::Tracepoint));
    /// assert_eq!(ProgType::from_section("xdpfoo"), None);
    /// ```
    pub fn from_section(section: &str) -> Option<ProgType> {
        SECTIONS.iter().find_map(|&(pat, how, ty)| {
            let hit = match how {
                Match::Exact => section == pat,
                Match::ExactOrSlash => section
                    .strip_prefix(pat)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
                Match::Prefix => section.starts_with(pat),
            };
            hit.then_some(ty)
        })
    }
}

impl fmt::Display for ProgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an XDP program returns (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XdpAction {
    /// An error: drop and trace (`XDP_ABORTED`).
    #[doc(alias = "XDP_ABORTED")]
    Aborted = 0,
    /// Drop the packet (`XDP_DROP`).
    #[doc(alias = "XDP_DROP")]
    Drop = 1,
    /// Hand it to the network stack (`XDP_PASS`).
    #[doc(alias = "XDP_PASS")]
    Pass = 2,
    /// Send it back out of the port it came in on (`XDP_TX`).
    #[doc(alias = "XDP_TX")]
    Tx = 3,
    /// Send it where `bpf_redirect*` said (`XDP_REDIRECT`).
    #[doc(alias = "XDP_REDIRECT")]
    Redirect = 4,
}

impl XdpAction {
    /// The kernel's name (`XDP_PASS`), as `bpfkit run --json` prints it.
    pub fn name(self) -> &'static str {
        match self {
            XdpAction::Aborted => "XDP_ABORTED",
            XdpAction::Drop => "XDP_DROP",
            XdpAction::Pass => "XDP_PASS",
            XdpAction::Tx => "XDP_TX",
            XdpAction::Redirect => "XDP_REDIRECT",
        }
    }
}

impl TryFrom<u32> for XdpAction {
    type Error = UnknownValue;
    fn try_from(v: u32) -> Result<XdpAction, UnknownValue> {
        Ok(match v {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            _ => {
                return Err(UnknownValue {
                    kind: "XDP action",
                    value: v,
                })
            }
        })
    }
}

impl fmt::Display for XdpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_round_trip() {
        for (i, &t) in ProgType::ALL.iter().enumerate() {
            assert_eq!(t as u32, i as u32);
            assert_eq!(ProgType::try_from(t as u32), Ok(t));
            assert_eq!(ProgType::from_name(t.name()), Some(t));
        }
        assert_eq!(ProgType::SockOps as u32, 13);
    }

    #[test]
    fn section_names() {
        let cases = [
            ("xdp", Some(ProgType::Xdp)),
            ("xdp/devmap", Some(ProgType::Xdp)),
            ("xdp.frags", Some(ProgType::Xdp)),
            ("tc/ingress", Some(ProgType::SchedCls)),
            ("tcx/egress", Some(ProgType::SchedCls)),
            ("classifier/foo", Some(ProgType::SchedCls)),
            ("action", Some(ProgType::SchedAct)),
            ("socket", Some(ProgType::SocketFilter)),
            ("socket1", Some(ProgType::SocketFilter)),
            ("sockops", Some(ProgType::SockOps)),
            ("kprobe/sys_open", Some(ProgType::Kprobe)),
            ("tp/sched/sched_switch", Some(ProgType::Tracepoint)),
            ("raw_tp/sys_enter", Some(ProgType::RawTracepoint)),
            ("fentry/tcp_v4_connect", Some(ProgType::Tracing)),
            ("tcp", None),
            (".text", None),
            ("license", None),
        ];
        for (s, t) in cases {
            assert_eq!(ProgType::from_section(s), t, "{s}");
        }
    }

    #[test]
    fn xdp_actions() {
        for v in 0..5 {
            assert_eq!(XdpAction::try_from(v).unwrap() as u32, v);
        }
        assert!(XdpAction::try_from(5).is_err());
    }
}
