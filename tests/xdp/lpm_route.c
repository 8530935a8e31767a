/* Longest-prefix-match router: IPv4 and IPv6 routes in LPM tries. A hit
 * rewrites the MACs, decrements the TTL / hop limit (IPv4 checksum updated
 * incrementally, RFC 1624) and redirects to the route's interface with
 * bpf_redirect (XDP_REDIRECT). TTL expiry and misses go to the stack
 * (XDP_PASS); route values count their packets. */
#include "common.h"

struct lpm4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct route {
	__u32 ifindex;
	unsigned char dmac[ETH_ALEN];
	unsigned char smac[ETH_ALEN];
	__u16 pad;
	__u64 packets;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm4);
	__type(value, struct route);
} routes4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm6);
	__type(value, struct route);
} routes6 SEC(".maps");

/* 0 misses, 1 ttl expired, 2 last redirect return value */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} route_stats SEC(".maps");

static __always_inline void stat(__u32 k, __u64 v, int set)
{
	__u64 *p = bpf_map_lookup_elem(&route_stats, &k);

	if (!p)
		return;
	if (set)
		*p = v;
	else
		*p += v;
}

static __always_inline int forward(struct ethhdr *eth, struct route *r)
{
	long ret;

	__builtin_memcpy(eth->h_dest, r->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, r->smac, ETH_ALEN);
	__sync_fetch_and_add(&r->packets, 1);
	ret = bpf_redirect(r->ifindex, 0);
	stat(2, ret, 1);
	return ret;
}

SEC("xdp")
int xdp_lpm_route(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct ipv6hdr *ip6;
	struct route *r;
	__u16 vlan;
	int proto;

	cursor_init(&c, ctx);
	proto = parse_eth(&c, &eth, &vlan);
	if (proto == ETH_P_IP) {
		struct lpm4 key = { .prefixlen = 32 };

		if (parse_ipv4(&c, &ip) < 0)
			return XDP_DROP;
		__builtin_memcpy(key.addr, &ip->daddr, 4);
		r = bpf_map_lookup_elem(&routes4, &key);
		if (!r) {
			stat(0, 1, 0);
			return XDP_PASS;
		}
		if (ip->ttl <= 1) {
			stat(1, 1, 0);
			return XDP_PASS;
		}
		ip->ttl--;
		/* RFC 1624: the TTL is the high byte of its 16-bit word. */
		__u32 sum = (__u32)ip->check + bpf_htons(0x0100);
		ip->check = (__sum16)(sum + (sum >> 16));
		return forward(eth, r);
	}
	if (proto == ETH_P_IPV6) {
		struct lpm6 key = { .prefixlen = 128 };

		if (parse_ipv6(&c, &ip6) < 0)
			return XDP_DROP;
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		r = bpf_map_lookup_elem(&routes6, &key);
		if (!r) {
			stat(0, 1, 0);
			return XDP_PASS;
		}
		if (ip6->hop_limit <= 1) {
			stat(1, 1, 0);
			return XDP_PASS;
		}
		ip6->hop_limit--;
		return forward(eth, r);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
