/* TCP connection tracking in a small hash map (4 entries, preallocated):
 * SYN creates the connection (BPF_NOEXIST: a duplicate SYN gets -EEXIST, a
 * full table -E2BIG), other segments update it (BPF_EXIST: -ENOENT for an
 * unknown connection, which is dropped), FIN/RST delete it (-ENOENT when
 * absent). Every return code is recorded in `ct_codes`. */
#include "common.h"

struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

struct ct_val {
	__u32 state;	/* 1 syn seen, 2 established */
	__u32 segments;
	__u32 last_seq;
	__u32 last_flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
} conns SEC(".maps");

/* 0 last create, 1 last update, 2 last delete, 3 creates ok, 4 rejected */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __s64);
} ct_codes SEC(".maps");

static __always_inline void code(__u32 k, __s64 v, int add)
{
	__s64 *p = bpf_map_lookup_elem(&ct_codes, &k);

	if (p) {
		if (add)
			*p += v;
		else
			*p = v;
	}
}

SEC("xdp")
int xdp_conntrack(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct ct_key key = {};
	struct ct_val val = {}, *cur;
	__u16 vlan;
	__u8 flags;
	long ret;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	if (parse_ipv4(&c, &ip) != IPPROTO_TCP)
		return XDP_PASS;
	tcp = c.pos;
	if ((void *)(tcp + 1) > c.end)
		return XDP_DROP;
	key.saddr = ip->saddr;
	key.daddr = ip->daddr;
	key.sport = tcp->source;
	key.dport = tcp->dest;
	flags = ((__u8 *)tcp)[13];

	if (flags & 0x05) {	/* FIN, RST */
		ret = bpf_map_delete_elem(&conns, &key);
		code(2, ret, 0);
		return XDP_PASS;
	}
	if ((flags & 0x12) == 0x02) {	/* SYN without ACK */
		val.state = 1;
		val.segments = 1;
		val.last_seq = bpf_ntohl(tcp->seq);
		val.last_flags = flags;
		ret = bpf_map_update_elem(&conns, &key, &val, BPF_NOEXIST);
		code(0, ret, 0);
		code(ret ? 4 : 3, 1, 1);
		return ret ? XDP_DROP : XDP_PASS;
	}
	cur = bpf_map_lookup_elem(&conns, &key);
	val.state = 2;
	val.segments = cur ? cur->segments + 1 : 1;
	val.last_seq = bpf_ntohl(tcp->seq);
	val.last_flags = flags;
	ret = bpf_map_update_elem(&conns, &key, &val, BPF_EXIST);
	code(1, ret, 0);
	return ret ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
