/* Bounded loops (kernel >= 5.3): walks up to four stacked VLAN tags, walks the
 * IPv4 options (at most 10, with their lengths), verifies the IPv4 header
 * checksum over up to 30 16-bit words, and sums up to 64 payload bytes. A bad
 * header checksum drops the packet. Results per packet go to `loop_out`. */
#include "common.h"

struct loop_out {
	__u32 vlan_depth;
	__u32 options_seen;	/* bit n: option type n & 31 seen */
	__u32 option_count;
	__u32 header_sum;	/* folded header checksum (0 if valid) */
	__u64 payload_sum;
	__u64 packets;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loop_out);
} loop_out SEC(".maps");

SEC("xdp")
int xdp_loops(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct loop_out *out;
	struct iphdr *ip;
	__u32 zero = 0, off, depth = 0, sum = 0;
	__u16 proto;
	__u8 *p;
	int i;

	out = bpf_map_lookup_elem(&loop_out, &zero);
	if (!out)
		return XDP_ABORTED;
	out->packets++;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	proto = eth->h_proto;
	off = sizeof(*eth);
	for (i = 0; i < 4; i++) {
		struct vlan_hdr *v;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		v = data + off;
		if ((void *)(v + 1) > end)
			return XDP_DROP;
		proto = v->proto;
		off += sizeof(*v);
		depth++;
	}
	out->vlan_depth = depth;
	if (proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = data + off;
	if ((void *)(ip + 1) > end)
		return XDP_DROP;

	/* header checksum, one 16-bit word at a time */
	for (i = 0; i < 30; i++) {
		__u16 *w = (void *)ip + i * 2;

		if (i >= ip->ihl * 2)
			break;
		if ((void *)(w + 1) > end)
			return XDP_DROP;
		sum += *w;
	}
	out->header_sum = csum_fold(sum);

	/* options: type, length, data; 0 ends the list, 1 is a one-byte no-op */
	out->option_count = 0;
	__u32 opt = sizeof(*ip);
	for (i = 0; i < 10; i++) {
		__u8 type, len;

		if (opt >= ip->ihl * 4 || opt > 60)
			break;
		p = (void *)ip + opt;
		if ((void *)(p + 1) > end)
			return XDP_DROP;
		type = *p;
		if (type == 0)
			break;
		out->options_seen |= 1u << (type & 31);
		out->option_count++;
		if (type == 1) {
			opt++;
			continue;
		}
		if ((void *)(p + 2) > end)
			return XDP_DROP;
		len = p[1];
		if (len < 2)
			return XDP_DROP;
		opt += len;
	}

	/* payload bytes after the header */
	off += ip->ihl * 4;
	for (i = 0; i < 64; i++) {
		if (off + i > 1500)
			break;
		p = data + off + i;
		if ((void *)(p + 1) > end)
			break;
		out->payload_sum += *p;
	}
	return out->header_sum ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
