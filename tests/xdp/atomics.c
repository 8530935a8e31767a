/* Atomic operations on map values (BPF_ATOMIC, -mcpu=v3): add, or, and, xor,
 * exchange and compare-and-exchange, 64- and 32-bit, with and without fetching
 * the old value. Each packet applies every operation with operands from its
 * first payload bytes (after Ethernet) and stores the fetched old values. */
#include "common.h"

struct cells {
	__u64 add;
	__u64 or;
	__u64 and;
	__u64 xor;
	__u64 xchg;
	__u64 cmpxchg;
	__u32 add32;
	__u32 or32;
	__u32 and32;
	__u32 xor32;
	__u32 xchg32;
	__u32 cmpxchg32;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);	/* 0: the cells, 1: old values fetched by the last packet */
	__type(key, __u32);
	__type(value, struct cells);
} cells SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hash_cells SEC(".maps");

SEC("xdp")
int xdp_atomics(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct cells *c, *old;
	__u32 k0 = 0, k1 = 1;
	__u64 a, b, *h;
	__u8 *p = data + sizeof(struct ethhdr);

	if ((void *)(p + 16) > end)
		return XDP_DROP;
	__builtin_memcpy(&a, p, 8);
	__builtin_memcpy(&b, p + 8, 8);
	c = bpf_map_lookup_elem(&cells, &k0);
	old = bpf_map_lookup_elem(&cells, &k1);
	if (!c || !old)
		return XDP_ABORTED;

	__sync_fetch_and_add(&c->add, a);		/* no fetch: BPF_ADD */
	old->or = __sync_fetch_and_or(&c->or, a);
	old->and = __sync_fetch_and_and(&c->and, ~b);
	old->xor = __sync_fetch_and_xor(&c->xor, b);
	old->xchg = __sync_lock_test_and_set(&c->xchg, a ^ b);
	old->cmpxchg = __sync_val_compare_and_swap(&c->cmpxchg, a, b);
	old->add = __sync_fetch_and_add(&c->add, 1);
	old->add32 = __sync_fetch_and_add(&c->add32, (__u32)a);
	old->or32 = __sync_fetch_and_or(&c->or32, (__u32)b);
	old->and32 = __sync_fetch_and_and(&c->and32, (__u32)(a >> 32));
	old->xor32 = __sync_fetch_and_xor(&c->xor32, (__u32)(b >> 32));
	old->xchg32 = __sync_lock_test_and_set(&c->xchg32, (__u32)a);
	old->cmpxchg32 = __sync_val_compare_and_swap(&c->cmpxchg32, (__u32)a, (__u32)b);

	h = bpf_map_lookup_elem(&hash_cells, &k0);
	if (h)
		__sync_fetch_and_add(h, a & 0xff);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
