/* bpf_loop (kernel >= 5.17): the first 64 packet bytes are copied to the stack,
 * then summed by a callback (index-weighted), searched for 0xff by a callback
 * that stops early, walked by a nested bpf_loop (a callback that calls
 * bpf_loop), and a counter callback runs a number of times taken from the
 * packet. The helper's refusals are recorded too: flags != 0 (-EINVAL),
 * nr_loops above 1 << 23 (-E2BIG) and nr_loops 0. Results per packet go to
 * `loop_out`; a packet holding 0xff is dropped. */
#include "common.h"

struct loop_out {
	__s64 n_sum;		/* bpf_loop's return values */
	__s64 n_find;
	__s64 n_nested;
	__s64 n_count;
	__s64 einval;
	__s64 e2big;
	__s64 zero;
	__u64 sum;		/* sum of (i + 1) * byte[i] */
	__u64 found;		/* index of the first 0xff, or 64 */
	__u64 nested;		/* sum over i < 4, j <= i of (i * 8 + j + 1) * byte[i * 8 + j] */
	__u64 count;		/* a mixing function iterated n_count times */
	__u64 kept;		/* values held in r6-r9 across the calls */
	__u64 packets;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loop_out);
} loop_out SEC(".maps");

struct lctx {
	__u8 buf[64];
	__u64 len;
	__u64 sum;
	__u64 found;
	__u64 i;
	__u64 acc;
	__u64 x;
};

static long sum_byte(__u64 i, void *data)
{
	struct lctx *c = data;

	if (i >= c->len)
		return 1;
	c->sum += (i + 1) * c->buf[i & 63];
	return 0;
}

static long find_ff(__u64 i, void *data)
{
	struct lctx *c = data;

	if (c->buf[i & 63] == 0xff) {
		c->found = i;
		return 1;
	}
	return 0;
}

static long inner(__u64 j, void *data)
{
	struct lctx *c = data;
	__u64 k = c->i * 8 + j;

	c->acc += (k + 1) * c->buf[k & 63];
	return 0;
}

static long outer(__u64 i, void *data)
{
	struct lctx *c = data;

	c->i = i;
	bpf_loop(i + 1, inner, c, 0);
	return 0;
}

static long mix(__u64 i, void *data)
{
	struct lctx *c = data;

	c->x = (c->x ^ i) * 31 + 7;
	return 0;
}

static long never(__u64 i, void *data)
{
	struct lctx *c = data;

	c->x = 0xdead;
	return 1;
}

SEC("xdp")
int xdp_loop_sum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct loop_out *out;
	struct lctx c = {};
	__u32 zero = 0, i;
	__u64 a, b;

	out = bpf_map_lookup_elem(&loop_out, &zero);
	if (!out)
		return XDP_ABORTED;
	out->packets++;
	for (i = 0; i < 64; i++) {
		__u8 *p = data + i;

		if ((void *)(p + 1) > end)
			break;
		c.buf[i] = *p;
	}
	c.len = i;
	c.found = 64;
	/* live across every bpf_loop below: the callbacks must not clobber them */
	a = out->packets * 1000003;
	b = c.len ^ 0x5555;

	out->n_sum = bpf_loop(64, sum_byte, &c, 0);
	out->sum = c.sum;
	out->n_find = bpf_loop(c.len, find_ff, &c, 0);
	out->found = c.found;
	out->n_nested = bpf_loop(4, outer, &c, 0);
	out->nested = c.acc;
	c.x = 1;
	out->n_count = bpf_loop(c.buf[14] * 16 + c.buf[15], mix, &c, 0);
	out->count = c.x;
	out->einval = bpf_loop(3, never, &c, 1);
	out->e2big = bpf_loop((1 << 23) + 1, never, &c, 0);
	out->zero = bpf_loop(0, never, &c, 0);
	out->kept = a * 3 + b + c.x;
	return c.found < 64 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
