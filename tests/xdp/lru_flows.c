/* Flow table in an LRU hash: each new 5-tuple gets an entry with its first
 * packet's size and a sequence number (from a counter in an array), existing
 * flows count packets and bytes; TCP FIN or RST deletes the flow. The map is
 * large enough that nothing is evicted: the kernel's LRU eviction order depends
 * on per-CPU free lists, which a differential test cannot pin down. */
#include "common.h"

struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 proto;
};

struct flow_val {
	__u64 seq;
	__u64 packets;
	__u64 bytes;
	__u32 first_len;
	__u32 flags;	/* TCP flags seen (byte 13 of the header) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);	/* 0 next seq, 1 deletes, 2 delete failures */
	__type(key, __u32);
	__type(value, __u64);
} flow_meta SEC(".maps");

SEC("xdp")
int xdp_lru_flows(struct xdp_md *ctx)
{
	__u32 len = pkt_len(ctx);
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct flow_key key = {};
	struct flow_val *v;
	__u8 tcp_flags = 0;
	__u32 k = 0;
	__u64 *seq;
	__u16 vlan;
	int proto;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	proto = parse_ipv4(&c, &ip);
	if (proto < 0)
		return XDP_DROP;
	key.saddr = ip->saddr;
	key.daddr = ip->daddr;
	key.proto = proto;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		struct udphdr *l4 = c.pos;

		if ((void *)(l4 + 1) > c.end)
			return XDP_DROP;
		key.sport = l4->source;
		key.dport = l4->dest;
		if (proto == IPPROTO_TCP) {
			__u8 *f = c.pos + 13;

			if ((void *)(f + 1) > c.end)
				return XDP_DROP;
			tcp_flags = *f;
		}
	}
	if (tcp_flags & 0x05) { /* FIN or RST */
		k = bpf_map_delete_elem(&flows, &key) ? 2 : 1;
		seq = bpf_map_lookup_elem(&flow_meta, &k);
		if (seq)
			*seq += 1;
		return XDP_PASS;
	}
	v = bpf_map_lookup_elem(&flows, &key);
	if (v) {
		v->packets++;
		v->bytes += len;
		v->flags |= tcp_flags;
		return XDP_PASS;
	}
	seq = bpf_map_lookup_elem(&flow_meta, &k);
	if (!seq)
		return XDP_ABORTED;
	struct flow_val fresh = {
		.seq = __sync_fetch_and_add(seq, 1),
		.packets = 1,
		.bytes = len,
		.first_len = len,
		.flags = tcp_flags,
	};
	bpf_map_update_elem(&flows, &key, &fresh, BPF_NOEXIST);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
