/* Global data: initialised variables (.data), zeroed counters (.bss), read-only
 * configuration (.rodata, `const volatile` as libbpf skeletons use it) and a
 * custom section (.data.ports). The loader turns each section into a one-entry
 * array map; programs reach it with BPF_PSEUDO_MAP_VALUE lddws. The output
 * maps are named after their sections. */
#include "common.h"

const volatile __u16 blocked_port = 23;	/* telnet */
const volatile __u8 drop_fragments = 1;

__u64 packets;			/* .bss */
__u64 blocked;			/* .bss */
unsigned char last_src[ETH_ALEN];	/* .bss */

__u32 generation = 7;		/* .data */
__u64 fragments = 100;		/* .data */

__u32 port_hits[4] SEC(".data.ports") = { 1, 2, 3, 4 };
__be16 ports[4] SEC(".data.ports") = { bpf_htons(22), bpf_htons(53), bpf_htons(80), bpf_htons(443) };

SEC("xdp")
int xdp_global_data(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *l4;
	__u16 vlan;
	int proto;

	packets++;
	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) < 0)
		return XDP_DROP;
	__builtin_memcpy(last_src, eth->h_source, ETH_ALEN);
	if (bpf_ntohs(eth->h_proto) != ETH_P_IP)
		return XDP_PASS;
	proto = parse_ipv4(&c, &ip);
	if (proto < 0)
		return XDP_DROP;
	if (ip->frag_off & bpf_htons(0x3fff)) {
		fragments++;
		return drop_fragments ? XDP_DROP : XDP_PASS;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return XDP_PASS;
	/* source and destination ports sit at the same offsets in TCP and UDP */
	l4 = c.pos;
	if ((void *)(l4 + 1) > c.end)
		return XDP_DROP;
	if (l4->dest == bpf_htons(blocked_port)) {
		blocked++;
		generation++;
		return XDP_DROP;
	}
	for (int i = 0; i < 4; i++) {
		if (ports[i] == l4->dest)
			port_hits[i] += 10;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
