/* Per-source byte quotas in an LRU per-CPU hash: a source over its quota (from
 * the config array) is dropped. The quota is checked against this CPU's value
 * only, like per-CPU rate limiters in production do; the test thread stays on
 * one CPU per packet, and values are compared as the sum over CPUs (see
 * percpu.c), which equals the single CPU's value when every packet ran on the
 * same CPU, and otherwise still counts every byte once. Pass/drop verdicts are
 * only CPU-independent while the sum stays under the quota on each CPU: the
 * spec keeps below the quota except for one jumbo packet that exceeds it
 * alone. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, __be32);
	__type(value, __u64);
} quota_used SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} quota SEC(".maps");

SEC("xdp")
int xdp_lru_percpu(struct xdp_md *ctx)
{
	__u64 len = pkt_len(ctx);
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u64 *used, *limit;
	__u32 zero = 0;
	__u16 vlan;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	if (parse_ipv4(&c, &ip) < 0)
		return XDP_DROP;
	limit = bpf_map_lookup_elem(&quota, &zero);
	if (!limit)
		return XDP_ABORTED;
	used = bpf_map_lookup_elem(&quota_used, &ip->saddr);
	if (!used) {
		if (len > *limit)
			return XDP_DROP;
		bpf_map_update_elem(&quota_used, &ip->saddr, &len, BPF_ANY);
		return XDP_PASS;
	}
	if (*used + len > *limit)
		return XDP_DROP;
	*used += len;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
