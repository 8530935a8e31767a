/* Protocol classifier: counts packets and bytes per class in an array and
 * drops what cannot be parsed (truncated headers) or must not be forwarded
 * (IPv4 TTL <= 1, IPv6 hop limit <= 1). S4: XDP_DROP / XDP_PASS. */
#include "common.h"

enum class {
	C_SHORT, C_IPV4, C_IPV6, C_ARP, C_VLAN, C_OTHER, C_TRUNC_L3, C_IP_OPTIONS, C_TTL, C_MAX
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} stats SEC(".maps");

static __always_inline int count(__u32 class, __u64 len, int action)
{
	struct counter *c = bpf_map_lookup_elem(&stats, &class);

	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
	return action;
}

SEC("xdp")
int xdp_parse_stats(struct xdp_md *ctx)
{
	__u64 len = pkt_len(ctx);
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct ipv6hdr *ip6;
	__u16 vlan;
	int proto;

	cursor_init(&c, ctx);
	proto = parse_eth(&c, &eth, &vlan);
	if (proto < 0)
		return count(C_SHORT, len, XDP_DROP);
	if (vlan)
		count(C_VLAN, len, 0);
	switch (proto) {
	case ETH_P_IP:
		if (parse_ipv4(&c, &ip) < 0)
			return count(C_TRUNC_L3, len, XDP_DROP);
		if (ip->ihl > 5)
			count(C_IP_OPTIONS, len, 0);
		if (ip->ttl <= 1)
			return count(C_TTL, len, XDP_DROP);
		return count(C_IPV4, len, XDP_PASS);
	case ETH_P_IPV6:
		if (parse_ipv6(&c, &ip6) < 0)
			return count(C_TRUNC_L3, len, XDP_DROP);
		if (ip6->hop_limit <= 1)
			return count(C_TTL, len, XDP_DROP);
		return count(C_IPV6, len, XDP_PASS);
	case ETH_P_ARP:
		return count(C_ARP, len, XDP_PASS);
	default:
		return count(C_OTHER, len, XDP_PASS);
	}
}

char LICENSE[] SEC("license") = "GPL";
