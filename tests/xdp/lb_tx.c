/* Layer-4 load balancer: a VIP table (hash) maps (vip, port, proto) to a range
 * of backends (array); the backend is chosen by a hash of the source address and
 * port. The packet is rewritten in place (MACs, destination address, IPv4 and
 * TCP/UDP checksums via bpf_csum_diff) and sent back out with XDP_TX. */
#include "common.h"

struct vip_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct vip {
	__u32 first;	/* first backend index */
	__u32 count;	/* number of backends */
};

struct backend {
	__be32 addr;
	unsigned char mac[ETH_ALEN];
	__u16 pad;
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct vip_key);
	__type(value, struct vip);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

static __always_inline __u32 flow_hash(__be32 saddr, __be16 sport)
{
	__u32 h = bpf_ntohl(saddr) * 2654435761u;

	h ^= bpf_ntohs(sport);
	h ^= h >> 16;
	return h * 0x45d9f3bu;
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct vip_key key = {};
	struct vip *v;
	struct backend *be;
	__sum16 *l4sum = 0;
	__be16 sport = 0, dport = 0;
	__be32 old;
	__u32 idx;
	__u16 vlan;
	int proto;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	proto = parse_ipv4(&c, &ip);
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = c.pos;

		if ((void *)(tcp + 1) > c.end)
			return XDP_DROP;
		sport = tcp->source;
		dport = tcp->dest;
		l4sum = &tcp->check;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp = c.pos;

		if ((void *)(udp + 1) > c.end)
			return XDP_DROP;
		sport = udp->source;
		dport = udp->dest;
		if (udp->check)
			l4sum = &udp->check;
	} else {
		return XDP_PASS;
	}
	key.addr = ip->daddr;
	key.port = dport;
	key.proto = proto;
	v = bpf_map_lookup_elem(&vips, &key);
	if (!v || !v->count)
		return XDP_PASS;
	idx = v->first + flow_hash(ip->saddr, sport) % v->count;
	be = bpf_map_lookup_elem(&backends, &idx);
	if (!be)
		return XDP_ABORTED;

	old = ip->daddr;
	ip->daddr = be->addr;
	csum_replace4(&ip->check, old, be->addr);
	if (l4sum)
		csum_replace4(l4sum, old, be->addr);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
	__sync_fetch_and_add(&be->packets, 1);
	__sync_fetch_and_add(&be->bytes, pkt_len(ctx));
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
