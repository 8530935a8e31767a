/* IPIP tunnel: xdp_encap wraps IPv4 packets for configured destinations in an
 * outer IPv4 header (bpf_xdp_adjust_head with a negative delta), strips
 * Ethernet padding beyond the IP total length first (bpf_xdp_adjust_tail with a
 * negative delta), and leaves 8 bytes of metadata for the next stage
 * (bpf_xdp_adjust_meta): the tunnel id and the inner length. xdp_decap removes
 * the outer header again (positive adjust_head) and reads metadata handed in
 * through ctx_in when there is some. */
#include "common.h"

struct tunnel {
	__be32 local;
	__be32 remote;
	unsigned char dmac[ETH_ALEN];
	__u16 id;
};

struct meta {
	__u32 tunnel_id;
	__u32 inner_len;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __be32);		/* inner destination */
	__type(value, struct tunnel);
} tunnels SEC(".maps");

/* 0 encapsulated, 1 trimmed, 2 adjust failures, 3 decapsulated, 4 meta seen,
 * 5 last tail delta (two's complement), 6 last meta tunnel id seen by decap */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} encap_stats SEC(".maps");

static __always_inline void bump(__u32 k, __u64 by)
{
	__u64 *v = bpf_map_lookup_elem(&encap_stats, &k);

	if (v)
		*v += by;
}

static __always_inline void set(__u32 k, __u64 val)
{
	__u64 *v = bpf_map_lookup_elem(&encap_stats, &k);

	if (v)
		*v = val;
}

SEC("xdp")
int xdp_encap(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth, eth_copy;
	struct iphdr *ip, outer = {};
	struct tunnel *t, tun;
	struct meta *m;
	__u16 vlan, tot;
	int excess;
	void *data, *end;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP || vlan)
		return XDP_PASS;
	if (parse_ipv4(&c, &ip) < 0)
		return XDP_DROP;
	t = bpf_map_lookup_elem(&tunnels, &ip->daddr);
	if (!t)
		return XDP_PASS;
	tun = *t;
	tot = bpf_ntohs(ip->tot_len);
	excess = (int)(pkt_len(ctx)) - (int)sizeof(struct ethhdr) - tot;
	if (excess < 0)
		return XDP_DROP;
	__builtin_memcpy(&eth_copy, eth, sizeof(eth_copy));
	if (excess > 0) {
		set(5, (__u64)(__s64)-excess);
		if (bpf_xdp_adjust_tail(ctx, -excess)) {
			bump(2, 1);
			return XDP_ABORTED;
		}
		bump(1, 1);
	}

	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr))) {
		bump(2, 1);
		return XDP_ABORTED;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	ip = data + sizeof(*eth);
	if ((void *)(ip + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_dest, tun.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth_copy.h_dest, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);

	outer.version = 4;
	outer.ihl = 5;
	outer.ttl = 64;
	outer.protocol = IPPROTO_IPIP;
	outer.tot_len = bpf_htons(tot + sizeof(struct iphdr));
	outer.id = bpf_htons(tun.id);
	outer.saddr = tun.local;
	outer.daddr = tun.remote;
	outer.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&outer, sizeof(outer), 0));
	__builtin_memcpy(ip, &outer, sizeof(outer));

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct meta))) {
		bump(2, 1);
		return XDP_ABORTED;
	}
	m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return XDP_ABORTED;
	m->tunnel_id = tun.id;
	m->inner_len = tot;
	bump(0, 1);
	return XDP_TX;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct meta *m = (void *)(long)ctx->data_meta;
	struct ethhdr *eth = data, eth_copy;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(m + 1) <= data) {
		bump(4, 1);
		set(6, m->tunnel_id);
	}
	if ((void *)(ip + 1) > end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_IPIP || ip->ihl != 5)
		return XDP_PASS;
	__builtin_memcpy(&eth_copy, eth, sizeof(eth_copy));
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct iphdr))) {
		bump(2, 1);
		return XDP_ABORTED;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth, &eth_copy, sizeof(*eth));
	bump(3, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
