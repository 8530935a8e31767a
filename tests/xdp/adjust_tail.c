/* Trailer handling with bpf_xdp_adjust_tail: frames longer than `max_len`
 * (config) are truncated to it; UDP frames to port 9 (discard) get an 8-byte
 * trailer appended (magic and a sequence number from .bss); a shrink below the
 * Ethernet header is attempted for frames of exactly 15 bytes and must fail
 * (-EINVAL). The last return code and the length after each step are recorded. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);	/* max_len */
} tail_cfg SEC(".maps");

/* 0 last ret, 1 length after, 2 truncated, 3 extended, 4 failures */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __s64);
} tail_out SEC(".maps");

__u32 trailer_seq;

static __always_inline void put(__u32 k, __s64 v, int add)
{
	__s64 *p = bpf_map_lookup_elem(&tail_out, &k);

	if (p) {
		if (add)
			*p += v;
		else
			*p = v;
	}
}

SEC("xdp")
int xdp_adjust_tail(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 len = end - data, zero = 0, *max;
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	__u16 vlan;
	long ret;

	max = bpf_map_lookup_elem(&tail_cfg, &zero);
	if (!max)
		return XDP_ABORTED;
	if (len == 15) {
		ret = bpf_xdp_adjust_tail(ctx, -2);
		put(0, ret, 0);
		put(4, ret != 0, 1);
		put(1, pkt_len(ctx), 0);
		return XDP_DROP;
	}
	if (len > *max) {
		ret = bpf_xdp_adjust_tail(ctx, (int)*max - (int)len);
		put(0, ret, 0);
		put(ret ? 4 : 2, 1, 1);
		put(1, pkt_len(ctx), 0);
		return XDP_PASS;
	}

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP || parse_ipv4(&c, &ip) != IPPROTO_UDP)
		return XDP_PASS;
	udp = c.pos;
	if ((void *)(udp + 1) > c.end || udp->dest != bpf_htons(9))
		return XDP_PASS;
	ret = bpf_xdp_adjust_tail(ctx, 8);
	put(0, ret, 0);
	if (ret) {
		put(4, 1, 1);
		return XDP_ABORTED;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	/* the new 8 bytes are the last ones: re-derive their position */
	{
		__u32 newlen = end - data;
		__u8 *t;

		if (newlen < 8 || newlen > 4000)
			return XDP_ABORTED;
		t = data + (newlen - 8);
		if ((void *)(t + 8) > end)
			return XDP_ABORTED;
		t[0] = 0xde;
		t[1] = 0xad;
		t[2] = 0xbe;
		t[3] = 0xef;
		__u32 seq = bpf_htonl(++trailer_seq);
		__builtin_memcpy(t + 4, &seq, 4);
		put(1, newlen, 0);
	}
	put(3, 1, 1);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
