/* Tail-call dispatch through a program array: xdp_dispatch classifies by
 * ethertype and jumps to a per-protocol program (slot 0 IPv4, 1 IPv6, 2 ARP);
 * xdp_ipv4 jumps on to slot 3 (TCP) for TCP. A missing slot makes bpf_tail_call
 * return and the caller counts the miss. Slot 7 holds xdp_chain, which tail-calls
 * itself until the kernel's limit (33 tail calls) stops it: `chain` counts
 * its runs. Counters: `hits` index = slot (or 6 = miss, 5 = chain packets). */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} jump_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} chain SEC(".maps");

static __always_inline void hit(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &k);

	if (v)
		*v += 1;
}

SEC("xdp")
int xdp_dispatch(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	__u16 vlan;
	int proto;

	cursor_init(&c, ctx);
	proto = parse_eth(&c, &eth, &vlan);
	if (proto < 0)
		return XDP_DROP;
	switch (proto) {
	case ETH_P_IP:
		bpf_tail_call(ctx, &jump_table, 0);
		break;
	case ETH_P_IPV6:
		bpf_tail_call(ctx, &jump_table, 1);
		break;
	case ETH_P_ARP:
		bpf_tail_call(ctx, &jump_table, 2);
		break;
	case 0x88b5: /* IEEE local experimental: the chain test */
		hit(5);
		bpf_tail_call(ctx, &jump_table, 7);
		break;
	default:
		break;
	}
	hit(6);
	return XDP_PASS;
}

SEC("xdp")
int xdp_ipv4(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u16 vlan;

	hit(0);
	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_ABORTED;
	if (parse_ipv4(&c, &ip) == IPPROTO_TCP)
		bpf_tail_call(ctx, &jump_table, 3);
	return XDP_PASS;
}

SEC("xdp")
int xdp_ipv6(struct xdp_md *ctx)
{
	hit(1);
	return XDP_DROP;
}

SEC("xdp")
int xdp_arp(struct xdp_md *ctx)
{
	hit(2);
	return XDP_PASS;
}

SEC("xdp")
int xdp_tcp(struct xdp_md *ctx)
{
	hit(3);
	return XDP_TX;
}

SEC("xdp")
int xdp_chain(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&chain, &zero);

	if (n)
		*n += 1;
	bpf_tail_call(ctx, &jump_table, 7);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
