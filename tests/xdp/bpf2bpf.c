/* bpf-to-bpf calls: header parsing, flow hashing and accounting are separate
 * non-inlined functions (static, in .text), with arguments in registers, a
 * pointer into the caller's stack, five arguments, and a call chain three
 * deep. The loader appends .text to the program and fixes the call offsets. */
#include "common.h"

struct flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u32);	/* flow hash */
	__type(value, __u64);	/* packets */
} flow_counts SEC(".maps");

static __noinline int parse_flow(struct xdp_md *ctx, struct flow *f)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *l4;

	if ((void *)(ip + 1) > end)
		return -1;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return -2;
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->proto = ip->protocol;
	l4 = (void *)(ip + 1);
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		if ((void *)(l4 + 1) > end)
			return -3;
		f->sport = l4->source;
		f->dport = l4->dest;
	}
	return 0;
}

static __noinline __u32 mix(__u32 h, __u32 v)
{
	h ^= v;
	h *= 0x01000193;
	return h;
}

static __noinline __u32 hash5(__be32 s, __be32 d, __be16 sp, __be16 dp, __u8 proto)
{
	__u32 h = 0x811c9dc5;

	h = mix(h, s);
	h = mix(h, d);
	h = mix(h, ((__u32)sp << 16) | dp);
	return mix(h, proto);
}

static __noinline int account(__u32 h)
{
	__u64 one = 1, *v = bpf_map_lookup_elem(&flow_counts, &h);

	if (v) {
		*v += 1;
		return 1;
	}
	return bpf_map_update_elem(&flow_counts, &h, &one, BPF_NOEXIST) == 0 ? 0 : -1;
}

SEC("xdp")
int xdp_bpf2bpf(struct xdp_md *ctx)
{
	struct flow f = {};
	int ret = parse_flow(ctx, &f);

	if (ret == -1 || ret == -3)
		return XDP_DROP;
	if (ret < 0)
		return XDP_PASS;
	if (account(hash5(f.saddr, f.daddr, f.sport, f.dport, f.proto)) < 0)
		return XDP_ABORTED;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
