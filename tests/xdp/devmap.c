/* Port forwarding through device maps: the low byte of the destination MAC
 * selects a port; ports 0-7 redirect through the devmap `tx_ports`, others
 * through the devmap_hash `tx_by_id` keyed by the VLAN id when the packet has
 * a tag. bpf_redirect_map's flags give the action for a missing entry (XDP_PASS
 * for ports, XDP_DROP for VLANs). A lookup of the port from the program checks
 * the stored interface index. The spec fills the maps with ifindex 1 (lo):
 * BPF_PROG_TEST_RUN only returns XDP_REDIRECT, nothing is transmitted. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} tx_by_id SEC(".maps");

/* index = port (0-7): redirects; 8: missing port; 9: vlan redirects; 10 ifindex seen */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 11);
	__type(key, __u32);
	__type(value, __u64);
} port_stats SEC(".maps");

static __always_inline void count(__u32 k, __u64 v, int set)
{
	__u64 *p = bpf_map_lookup_elem(&port_stats, &k);

	if (p) {
		if (set)
			*p = v;
		else
			*p += v;
	}
}

SEC("xdp")
int xdp_devmap(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	__u32 port, *ifindex;
	__u16 vlan;
	long ret;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) < 0)
		return XDP_DROP;
	if (vlan) {
		__u32 id = vlan;

		ret = bpf_redirect_map(&tx_by_id, id, XDP_DROP);
		if (ret == XDP_REDIRECT)
			count(9, 1, 0);
		return ret;
	}
	port = eth->h_dest[5];
	if (port >= 8) {
		/* out of range: the missing-entry action comes back */
		ret = bpf_redirect_map(&tx_ports, port, XDP_PASS);
		count(8, 1, 0);
		return ret;
	}
	ifindex = bpf_map_lookup_elem(&tx_ports, &port);
	if (!ifindex) {
		count(8, 1, 0);
		return bpf_redirect_map(&tx_ports, port, XDP_PASS);
	}
	count(10, *ifindex, 1);
	count(port, 1, 0);
	return bpf_redirect_map(&tx_ports, port, 0);
}

char LICENSE[] SEC("license") = "GPL";
