// SPDX-License-Identifier: MIT OR Apache-2.0
// Callbacks from C: bpf_loop summing into the caller's stack, filling a
// stack array with and without a bound on the index, a callback returning
// out of [0, 1], and bpf_for_each_map_elem summing a map's values.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} values SEC(".maps");

struct sum_ctx {
	__u64 sum;
};

static int add_index(__u32 index, void *data)
{
	struct sum_ctx *c = data;

	c->sum += index;
	return 0;
}

SEC("xdp")
int loop_sum(struct xdp_md *ctx)
{
	struct sum_ctx c = { 0 };

	bpf_loop(100, add_index, &c, 0);
	return c.sum > 1000 ? XDP_PASS : XDP_DROP;
}

struct fill_ctx {
	__u32 n;
	__u32 slots[8];
};

static int fill_bounded(__u32 index, void *data)
{
	struct fill_ctx *c = data;

	if (c->n >= 8)
		return 1;
	c->slots[c->n] = index;
	c->n++;
	return 0;
}

SEC("xdp")
int loop_fill_bounded(struct xdp_md *ctx)
{
	struct fill_ctx c = { 0 };

	bpf_loop(32, fill_bounded, &c, 0);
	return c.slots[7] ? XDP_PASS : XDP_DROP;
}

static int fill_unbounded(__u32 index, void *data)
{
	struct fill_ctx *c = data;

	c->slots[c->n] = index;
	c->n++;
	return 0;
}

SEC("xdp")
int loop_fill_unbounded(struct xdp_md *ctx)
{
	struct fill_ctx c = { 0 };

	bpf_loop(32, fill_unbounded, &c, 0);
	return c.slots[7] ? XDP_PASS : XDP_DROP;
}

static int returns_two(__u32 index, void *data)
{
	return 2;
}

SEC("xdp")
int loop_bad_return(struct xdp_md *ctx)
{
	bpf_loop(4, returns_two, 0, 0);
	return XDP_PASS;
}

static long add_value(void *map, __u32 *key, __u64 *value, struct sum_ctx *c)
{
	c->sum += *value + *key;
	return 0;
}

SEC("xdp")
int each_sum(struct xdp_md *ctx)
{
	struct sum_ctx c = { 0 };

	bpf_for_each_map_elem(&values, add_value, &c, 0);
	return c.sum > 1000 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
