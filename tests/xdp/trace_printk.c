/* bpf_trace_printk (S7, with %i): logs the packet's length, protocol and
 * addresses with each supported conversion and stores the return values (the
 * number of bytes written, which depends only on the formatted text) in
 * `printk_ret`. A format with an unsupported conversion (%n) fails with
 * -EINVAL. The formats are on the stack (char arrays), as without global
 * data; one also comes from bpf_printk, whose format lands in .rodata. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 6);
	__type(key, __u32);
	__type(value, __s64);
} printk_ret SEC(".maps");

static __always_inline void put(__u32 k, __s64 v)
{
	__s64 *p = bpf_map_lookup_elem(&printk_ret, &k);

	if (p)
		*p = v;
}

SEC("xdp")
int xdp_trace_printk(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	int len = (int)(pkt_len(ctx));
	char f0[] = "xdp len=%i proto=%x\n";
	char f1[] = "xdp neg=%d u=%u\n";
	char f2[] = "xdp saddr=%x ttl=%i\n";
	char f3[] = "xdp bad %n\n";
	char f4[] = "xdp %llx %lld %%\n";

	put(0, bpf_trace_printk(f0, sizeof(f0), len, (__u32)bpf_ntohs((void *)(eth + 1) <= end ? eth->h_proto : 0)));
	put(1, bpf_trace_printk(f1, sizeof(f1), -len, len));
	if ((void *)(ip + 1) <= end && eth->h_proto == bpf_htons(ETH_P_IP))
		put(2, bpf_trace_printk(f2, sizeof(f2), bpf_ntohl(ip->saddr), ip->ttl - 100));
	put(3, bpf_trace_printk(f3, sizeof(f3), 1));
	put(4, bpf_trace_printk(f4, sizeof(f4), 0x1234567890ULL, -(__s64)len));
	put(5, bpf_printk("xdp %i bytes", len));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
