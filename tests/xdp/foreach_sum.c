/* bpf_for_each_map_elem (kernel >= 5.13): every packet adds its IPv4 source's
 * last byte to a hash map (one element per source), then walks the hash map
 * (a count, a sum of keys, every value incremented in place), an array (each
 * value bumped by its index + 1, early stop at an index from the packet), an
 * empty hash map, and the array again from a bpf_loop callback (nested
 * callbacks). flags != 0 gives -EINVAL. Everything stored is independent of
 * the hash map's order, which differs between bpfkit and the kernel. */
#include "common.h"

struct fe_out {
	__s64 n_hash;		/* for_each_map_elem's return values */
	__s64 n_arr;
	__s64 n_stop;
	__s64 n_empty;
	__s64 n_nested;
	__s64 einval;
	__u64 hash_keys;	/* sum of the hash map's keys */
	__u64 hash_vals;	/* sum of its values after the increment */
	__u64 arr_sum;		/* sum of the array's values after the bump */
	__u64 nested;		/* elements the nested walks visited */
	__u64 packets;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fe_out);
} fe_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 6);
	__type(key, __u32);
	__type(value, __u64);
} fe_arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} fe_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} fe_empty SEC(".maps");

struct wctx {
	__u64 keys;
	__u64 vals;
	__u64 limit;
	__u64 visits;
};

static long hash_elem(void *map, __u32 *key, __u64 *val, struct wctx *c)
{
	*val += 1;
	c->keys += *key;
	c->vals += *val;
	return 0;
}

static long arr_elem(void *map, __u32 *key, __u64 *val, struct wctx *c)
{
	*val += *key + 1;
	c->vals += *val;
	return 0;
}

static long stop_at(void *map, __u32 *key, __u64 *val, struct wctx *c)
{
	c->visits++;
	return *key >= c->limit;
}

static long walk_again(__u64 i, struct wctx *c)
{
	c->limit = i;
	bpf_for_each_map_elem(&fe_arr, stop_at, c, 0);
	return 0;
}

SEC("xdp")
int xdp_foreach_sum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct wctx c = {};
	struct fe_out *out;
	__u32 zero = 0, src;
	__u64 one = 0;

	out = bpf_map_lookup_elem(&fe_out, &zero);
	if (!out)
		return XDP_ABORTED;
	out->packets++;
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	src = bpf_ntohl(ip->saddr) & 0xff;
	bpf_map_update_elem(&fe_hash, &src, &one, BPF_NOEXIST);

	out->n_hash = bpf_for_each_map_elem(&fe_hash, hash_elem, &c, 0);
	out->hash_keys = c.keys;
	out->hash_vals = c.vals;
	c.vals = 0;
	out->n_arr = bpf_for_each_map_elem(&fe_arr, arr_elem, &c, 0);
	out->arr_sum = c.vals;
	c.limit = ip->ttl % 8;
	out->n_stop = bpf_for_each_map_elem(&fe_arr, stop_at, &c, 0);
	out->n_empty = bpf_for_each_map_elem(&fe_empty, hash_elem, &c, 0);
	c.visits = 0;
	out->n_nested = bpf_loop(4, walk_again, &c, 0);
	out->nested = c.visits;
	out->einval = bpf_for_each_map_elem(&fe_arr, arr_elem, &c, 1);
	return out->n_stop > 3 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
