/* Time, randomness and the CPU id, kept out of the compared results.
 *
 * The raw values go to `raw` (normalised by the spec: ignored), and only their
 * properties go to `props`, which is compared exactly:
 *   0 ktime_get_ns nonzero, 1 boot_ns >= ns read before it, 2 ns >= coarse
 *   read before it, 3 ns >= the previous packet's ns, 4 prandom sampled 1 in 1
 *   (always), 5 cpu < 64, 6 packets.
 * The packet itself is stamped with a field that depends on random only through
 * `rand & 0` (zero) to show how a sampling decision stays deterministic. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);	/* 0 ns, 1 boot, 2 coarse, 3 rand, 4 cpu */
	__type(key, __u32);
	__type(value, __u64);
} raw SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 7);
	__type(key, __u32);
	__type(value, __u64);
} props SEC(".maps");

static __always_inline void prop(__u32 k, int cond)
{
	__u64 *p = bpf_map_lookup_elem(&props, &k);

	if (p && cond)
		*p += 1;
}

static __always_inline __u64 *raw_slot(__u32 k)
{
	return bpf_map_lookup_elem(&raw, &k);
}

SEC("xdp")
int xdp_time_rand(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 coarse = bpf_ktime_get_coarse_ns();
	__u64 ns = bpf_ktime_get_ns();
	__u64 boot = bpf_ktime_get_boot_ns();
	__u32 rand = bpf_get_prandom_u32();
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 *prev = raw_slot(0), *p;
	struct ethhdr *eth = data;

	prop(0, ns != 0);
	prop(1, boot >= ns);
	prop(2, ns >= coarse);
	prop(3, !prev || ns >= *prev);
	prop(4, rand % 1 == 0);
	prop(5, cpu < 64);
	prop(6, 1);
	if (prev)
		*prev = ns;
	p = raw_slot(1);
	if (p)
		*p = boot;
	p = raw_slot(2);
	if (p)
		*p = coarse;
	p = raw_slot(3);
	if (p)
		*p = rand;
	p = raw_slot(4);
	if (p)
		*p = cpu;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	/* mark the packet as sampled: the locally administered bit of the source */
	if ((rand & 0) == 0)
		eth->h_source[0] |= 0x02;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
