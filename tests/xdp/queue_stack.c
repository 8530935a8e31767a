/* Queue and stack maps driven by UDP commands: the destination port selects
 * the operation and the first 4 payload bytes are the operand.
 *   port 1 push to both (BPF_ANY: full -> -E2BIG), 2 push with BPF_EXIST (full ->
 *   the queue drops its oldest, the stack its bottom), 3 pop both, 4 peek both,
 *   5 drain both into `drained` (up to 8 each).
 * Return codes and values land in `qs_out`; queue and stack contents are only
 * visible through these results (a map dump cannot list them). */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4);
	__type(value, __u32);
} fifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 4);
	__type(value, __u32);
} lifo SEC(".maps");

/* 0 queue ret, 1 stack ret, 2 queue value, 3 stack value, 4 ops */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __s64);
} qs_out SEC(".maps");

/* 0-7 queue order, 8-15 stack order (0xffffffff where empty) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
} drained SEC(".maps");

static __always_inline void out(__u32 k, __s64 v)
{
	__s64 *p = bpf_map_lookup_elem(&qs_out, &k);

	if (p)
		*p = v;
}

static __always_inline void drain_to(__u32 base, void *map)
{
	for (__u32 i = 0; i < 8; i++) {
		__u32 k = base + i, v = 0xffffffff, *d;

		bpf_map_pop_elem(map, &v);
		d = bpf_map_lookup_elem(&drained, &k);
		if (d)
			*d = v;
	}
}

SEC("xdp")
int xdp_queue_stack(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 operand, qv = 0, sv = 0;
	__u16 vlan;
	__s64 *ops;
	__u32 k = 4;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	if (parse_ipv4(&c, &ip) != IPPROTO_UDP)
		return XDP_PASS;
	udp = c.pos;
	if ((void *)(udp + 1) + 4 > c.end)
		return XDP_DROP;
	__builtin_memcpy(&operand, udp + 1, 4);
	ops = bpf_map_lookup_elem(&qs_out, &k);
	if (ops)
		*ops += 1;

	switch (bpf_ntohs(udp->dest)) {
	case 1:
		out(0, bpf_map_push_elem(&fifo, &operand, BPF_ANY));
		out(1, bpf_map_push_elem(&lifo, &operand, BPF_ANY));
		break;
	case 2:
		out(0, bpf_map_push_elem(&fifo, &operand, BPF_EXIST));
		out(1, bpf_map_push_elem(&lifo, &operand, BPF_EXIST));
		break;
	case 3:
		out(0, bpf_map_pop_elem(&fifo, &qv));
		out(1, bpf_map_pop_elem(&lifo, &sv));
		out(2, qv);
		out(3, sv);
		break;
	case 4:
		out(0, bpf_map_peek_elem(&fifo, &qv));
		out(1, bpf_map_peek_elem(&lifo, &sv));
		out(2, qv);
		out(3, sv);
		break;
	case 5:
		drain_to(0, &fifo);
		drain_to(8, &lifo);
		break;
	default:
		return XDP_PASS;
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
