/* bpf_perf_event_output from XDP (bpf_xdp_event_output): a sample of the
 * event struct plus the first 32 bytes of the packet (flags bits 32-51).
 * The test attaches no perf event to the map, as BPF_PROG_TEST_RUN has none
 * either, so the calls fail in the kernel's order of checks and the codes are
 * the observable result: flags outside the index/ctx-length masks -EINVAL, a
 * ctx length beyond the packet -EFAULT, an index past max_entries -E2BIG, an
 * empty slot (BPF_F_CURRENT_CPU or an index) -ENOENT. max_entries is 64 so that
 * the current CPU is always in range. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(max_entries, 64);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

/* last return codes: 0 current cpu, 1 explicit index 0, 2 index 100,
 * 3 ctx length too long, 4 bad flags; 5 packets */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 6);
	__type(key, __u32);
	__type(value, __s64);
} perf_ret SEC(".maps");

static __always_inline void put(__u32 k, __s64 v)
{
	__s64 *p = bpf_map_lookup_elem(&perf_ret, &k);

	if (p)
		*p = v;
}

SEC("xdp")
int xdp_perf_event(struct xdp_md *ctx)
{
	__u64 len = pkt_len(ctx);
	struct {
		__u32 len;
		__u32 ifindex;
	} ev = { .len = len, .ifindex = ctx->ingress_ifindex };
	__u64 sample = len < 32 ? len : 32;
	__s64 *n;
	__u32 k = 5;

	put(0, bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU | (sample << 32), &ev, sizeof(ev)));
	put(1, bpf_perf_event_output(ctx, &perf_events, 0, &ev, sizeof(ev)));
	put(2, bpf_perf_event_output(ctx, &perf_events, 100, &ev, sizeof(ev)));
	put(3, bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU | ((len + 1) << 32), &ev, sizeof(ev)));
	put(4, bpf_perf_event_output(ctx, &perf_events, 1ULL << 60, &ev, sizeof(ev)));
	n = bpf_map_lookup_elem(&perf_ret, &k);
	if (n)
		*n += 1;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
