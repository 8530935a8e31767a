// SPDX-License-Identifier: MIT OR Apache-2.0
// Map lookups from C: a checked counter (accepted), a lookup used without
// its NULL check (rejected), and an array value indexed by a packet byte
// with and without a bound.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[64]);
} table SEC(".maps");

SEC("xdp")
int count_checked(struct xdp_md *ctx)
{
	__u32 key = ctx->ingress_ifindex;
	__u64 *v = bpf_map_lookup_elem(&counts, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return XDP_PASS;
}

SEC("xdp")
int count_unchecked(struct xdp_md *ctx)
{
	__u32 key = ctx->ingress_ifindex;
	__u64 *v = bpf_map_lookup_elem(&counts, &key);
	*(volatile __u64 *)v += 1;
	return XDP_PASS;
}

static __always_inline int first_byte(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	if (data + 1 > end)
		return -1;
	return data[0];
}

SEC("xdp")
int index_bounded(struct xdp_md *ctx)
{
	__u32 zero = 0;
	int i = first_byte(ctx);
	__u8 *t = bpf_map_lookup_elem(&table, &zero);
	if (!t || i < 0)
		return XDP_PASS;
	return t[i & 63] ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int index_unbounded(struct xdp_md *ctx)
{
	__u32 zero = 0;
	int i = first_byte(ctx);
	__u8 *t = bpf_map_lookup_elem(&table, &zero);
	if (!t || i < 0)
		return XDP_PASS;
	return t[i] ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
