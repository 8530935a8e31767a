/* Ring buffer events: every IPv4 packet is announced with bpf_ringbuf_output; a
 * UDP packet whose destination port's low byte n is 1..16 also reserves a 1 KiB
 * record (n in its byte 63), submitted for even n and discarded for odd n.
 * Nobody consumes the 4 KiB ring, so it fills up and reservations and outputs
 * start failing. bpf_ringbuf_query's four values and every return code go to
 * `rb_state`: they are deterministic (record sizes are rounded up to 8 bytes
 * plus an 8-byte header; discarded records keep their space until consumed). */
#include "common.h"

struct event {
	__be32 saddr;
	__be32 daddr;
	__u32 len;
	__u32 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

/* 0 avail_data, 1 ring_size, 2 cons_pos, 3 prod_pos, 4 last output ret,
 * 5 reserve failures, 6 submitted, 7 discarded, 8 seq */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 9);
	__type(key, __u32);
	__type(value, __u64);
} rb_state SEC(".maps");

static __always_inline __u64 *slot(__u32 k)
{
	return bpf_map_lookup_elem(&rb_state, &k);
}

SEC("xdp")
int xdp_ringbuf(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct event ev = {};
	__u64 *s, *seq;
	__u16 vlan;
	int proto;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	proto = parse_ipv4(&c, &ip);
	if (proto < 0)
		return XDP_DROP;
	seq = slot(8);
	if (!seq)
		return XDP_ABORTED;
	ev.saddr = ip->saddr;
	ev.daddr = ip->daddr;
	ev.len = pkt_len(ctx);
	ev.seq = (*seq)++;
	s = slot(4);
	if (s)
		*s = bpf_ringbuf_output(&events, &ev, sizeof(ev), BPF_RB_NO_WAKEUP);

	if (proto == IPPROTO_UDP) {
		struct udphdr *udp = c.pos;
		__u32 units;
		__u8 *rec;

		if ((void *)(udp + 1) > c.end)
			return XDP_DROP;
		units = bpf_ntohs(udp->dest) & 0xff;
		if (units == 0 || units > 16)
			goto out;
		rec = bpf_ringbuf_reserve(&events, 1024, 0);
		if (!rec) {
			s = slot(5);
			if (s)
				*s += 1;
			goto out;
		}
		__builtin_memset(rec, 0, 64);
		__builtin_memcpy(rec, &ev, sizeof(ev));
		rec[63] = units;
		if (units & 1) {
			bpf_ringbuf_discard(rec, BPF_RB_NO_WAKEUP);
			s = slot(7);
		} else {
			bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
			s = slot(6);
		}
		if (s)
			*s += 1;
	}
out:
	s = slot(0);
	if (s)
		*s = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	s = slot(1);
	if (s)
		*s = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	s = slot(2);
	if (s)
		*s = bpf_ringbuf_query(&events, BPF_RB_CONS_POS);
	s = slot(3);
	if (s)
		*s = bpf_ringbuf_query(&events, BPF_RB_PROD_POS);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
