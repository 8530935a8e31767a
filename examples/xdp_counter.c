// SPDX-License-Identifier: MIT OR Apache-2.0
//
// xdp_counter: counts packets per IP protocol and drops UDP to port 9
// (the "discard" service).
//
// - Parses Ethernet and IPv4 (with IP options); everything that is not
//   IPv4 passes uncounted.
// - counts[ip->protocol] += 1 in an array map of 256 u64 counters, done
//   in a subprogram (count_proto) to show a bpf-to-bpf call.
// - UDP packets to destination port 9 are dropped; all others pass.
//
// Self-contained on purpose (no libbpf headers), so that it builds with
// nothing but clang: see build.sh.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

enum { XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };
enum { BPF_MAP_TYPE_ARRAY = 2 };

#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17
#define DISCARD_PORT 9

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

struct ethhdr {
	__u8 h_dest[6];
	__u8 h_source[6];
	__u16 h_proto;
} __attribute__((packed));

struct iphdr {
	__u8 ihl_version; // ihl in the low nibble (little-endian bitfield order)
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct udphdr {
	__u16 source;
	__u16 dest;
	__u16 len;
	__u16 check;
};

// Helper 1 (BPF_FUNC_map_lookup_elem).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

// A separate (bpf-to-bpf) function, so that the object also shows a
// subprogram call and its relocation.
static __attribute__((noinline)) void count_proto(__u32 proto)
{
	__u32 key = proto;
	__u64 *count = bpf_map_lookup_elem(&counts, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
}

SEC("xdp")
int xdp_counter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != __builtin_bswap16(ETH_P_IP))
		return XDP_PASS;

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;

	count_proto(ip->protocol);

	if (ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	__u32 ihl = (ip->ihl_version & 0x0f) * 4;
	if (ihl < sizeof(*ip))
		return XDP_PASS;
	struct udphdr *udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	if (udp->dest == __builtin_bswap16(DISCARD_PORT))
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
