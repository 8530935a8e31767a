/* Per-CPU statistics: a per-CPU array of packet/byte counters by protocol and
 * a per-CPU hash of counters by IPv4 source. bpf_get_smp_processor_id() picks
 * nothing observable: it is only checked against the number of possible CPUs
 * given in the config array (the flag is stored).
 *
 * Normalisation: per-CPU values are compared as the lane-wise sum (u64 lanes,
 * wrapping) over CPUs, because the kernel runs each packet on whichever CPU the
 * test thread is on. */
#include "common.h"

struct pc {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);	/* 0 other, 1 ipv4, 2 ipv6, 3 arp */
	__type(key, __u32);
	__type(value, struct pc);
} proto_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16);
	__type(key, __be32);
	__type(value, struct pc);
} src_stats SEC(".maps");

/* 0: max CPUs (set by the spec), 1: packets where cpu < max (by the program) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} cpu_check SEC(".maps");

SEC("xdp")
int xdp_percpu(struct xdp_md *ctx)
{
	__u64 len;
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct pc *s, init;
	__u32 k = 0, cpu = bpf_get_smp_processor_id();
	__u32 *max, *ok;
	__u16 vlan;
	int proto;

	cursor_init(&c, ctx);
	len = c.end - c.pos;
	max = bpf_map_lookup_elem(&cpu_check, &k);
	k = 1;
	ok = bpf_map_lookup_elem(&cpu_check, &k);
	if (max && ok && cpu < *max)
		*ok += 1;

	proto = parse_eth(&c, &eth, &vlan);
	k = proto == ETH_P_IP ? 1 : proto == ETH_P_IPV6 ? 2 : proto == ETH_P_ARP ? 3 : 0;
	s = bpf_map_lookup_elem(&proto_stats, &k);
	if (s) {
		s->packets++;
		s->bytes += len;
	}
	if (proto != ETH_P_IP || parse_ipv4(&c, &ip) < 0)
		return XDP_PASS;
	s = bpf_map_lookup_elem(&src_stats, &ip->saddr);
	if (s) {
		s->packets++;
		s->bytes += len;
	} else {
		init.packets = 1;
		init.bytes = len;
		bpf_map_update_elem(&src_stats, &ip->saddr, &init, BPF_NOEXIST);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
