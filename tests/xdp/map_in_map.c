/* Maps of maps (S8): `tenants` is an array of per-tenant counter arrays,
 * selected by the last byte of the IPv4 destination; `vlan_tables` is a hash
 * of per-VLAN hashes keyed by destination address, selected by the VLAN id,
 * whose values are verdicts. The inner maps are named maps of the object, so
 * their contents are compared directly; a dump of an outer map shows inner map
 * ids, which differ between the kernel and bpfkit and are renumbered by the
 * normalisation. The flat `seen` array mirrors what the program read. */
#include "common.h"

struct tenant_counters {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);	/* 0 packets, 1 bytes, 2 tcp, 3 udp */
	__type(key, __u32);
	__type(value, __u64);
} tenant0 SEC(".maps"), tenant1 SEC(".maps"), tenant3 SEC(".maps");

struct vlan_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __be32);
	__type(value, __u32);	/* verdict: an XDP action */
} vlan10 SEC(".maps"), vlan20 SEC(".maps");

/* Slot 2 is left empty: its tenant's packets are dropped. The inner maps are
 * put in place by the loader from these initialisers (libbpf's `.values`). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct tenant_counters);
} tenants SEC(".maps") = {
	.values = { [0] = &tenant0, [1] = &tenant1, [3] = &tenant3 },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 32);	/* initialiser slots must be below it */
	__type(key, __u32);
	__array(values, struct vlan_table);
} vlan_tables SEC(".maps") = {
	.values = { [10] = &vlan10, [20] = &vlan20 },
};

/* index t*4+i: tenant t's counter i after the packet; 16: verdict lookups hit */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 17);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

static __always_inline void mirror(__u32 idx, __u64 v)
{
	__u64 *s = bpf_map_lookup_elem(&seen, &idx);

	if (s)
		*s = v;
}

SEC("xdp")
int xdp_map_in_map(struct xdp_md *ctx)
{
	__u64 len = pkt_len(ctx);
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	void *inner;
	__u32 tenant, vid, k;
	__u16 vlan;
	int proto;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	proto = parse_ipv4(&c, &ip);
	if (proto < 0)
		return XDP_DROP;

	vid = vlan;
	inner = bpf_map_lookup_elem(&vlan_tables, &vid);
	if (inner) {
		__u32 *verdict = bpf_map_lookup_elem(inner, &ip->daddr);

		if (verdict) {
			mirror(16, *verdict);
			if (*verdict <= XDP_TX)
				return *verdict;
		}
	}

	tenant = bpf_ntohl(ip->daddr) & 0xff;
	if (tenant >= 4)
		return XDP_PASS;
	inner = bpf_map_lookup_elem(&tenants, &tenant);
	if (!inner)
		return XDP_DROP;
	for (k = 0; k < 4; k++) {
		__u64 *v = bpf_map_lookup_elem(inner, &k);
		__u64 by = 1;

		if (k == 1)
			by = len;
		else if (k == 2)
			by = proto == IPPROTO_TCP;
		else if (k == 3)
			by = proto == IPPROTO_UDP;
		if (!v)
			return XDP_ABORTED;
		*v += by;
		mirror(tenant * 4 + k, *v);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
