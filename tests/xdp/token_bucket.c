/* S12: the seed's two-colour token bucket (tbpoc-bpf), per IPv4 source.
 *
 * Each source has a bucket of byte tokens that refills at `rate` bytes per
 * second up to `burst`. A packet that finds enough tokens is green and passes,
 * otherwise it is red and dropped. Colour counters live in an array.
 *
 * Determinism: the refill depends on bpf_ktime_get_ns(). The spec sets a rate
 * of 1 byte/s, so during a test (well under a second) no whole token is added
 * and the colours depend only on the packet sizes. `last_ns` (offset 8 of a
 * bucket) holds a time stamp: the spec normalises it to "nonzero". */
#include "common.h"

struct bucket {
	__u64 tokens;
	__u64 last_ns;
};

struct config {
	__u64 rate;	/* bytes per second */
	__u64 burst;	/* bucket size in bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __be32);
	__type(value, struct bucket);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

/* 0: green packets, 1: red packets, 2: green bytes, 3: red bytes */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} colours SEC(".maps");

static __always_inline void account(__u32 colour, __u64 len)
{
	__u32 k = colour;
	__u64 *v = bpf_map_lookup_elem(&colours, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
	k = colour + 2;
	v = bpf_map_lookup_elem(&colours, &k);
	if (v)
		__sync_fetch_and_add(v, len);
}

SEC("xdp")
int xdp_token_bucket(struct xdp_md *ctx)
{
	__u64 len = pkt_len(ctx);
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct bucket *b;
	struct config *cfg;
	__u32 zero = 0;
	__u16 vlan;
	__u64 now, add;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	if (parse_ipv4(&c, &ip) < 0)
		return XDP_DROP;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_ABORTED;

	now = bpf_ktime_get_ns();
	b = bpf_map_lookup_elem(&buckets, &ip->saddr);
	if (!b) {
		struct bucket fresh = { .tokens = cfg->burst, .last_ns = now };

		if (bpf_map_update_elem(&buckets, &ip->saddr, &fresh, BPF_NOEXIST))
			return XDP_DROP;
		b = bpf_map_lookup_elem(&buckets, &ip->saddr);
		if (!b)
			return XDP_DROP;
	}
	add = (now - b->last_ns) * cfg->rate / 1000000000ULL;
	if (add) {
		b->tokens += add;
		if (b->tokens > cfg->burst)
			b->tokens = cfg->burst;
		b->last_ns = now;
	}
	if (b->tokens >= len) {
		b->tokens -= len;
		account(0, len);
		return XDP_PASS;
	}
	account(1, len);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
