/* Shared packet parsing for the differential XDP programs.
 *
 * Everything here is `static __always_inline`, so each program carries its own copy
 * and the objects stay independent of each other. */
#ifndef DIFFTEST_COMMON_H
#define DIFFTEST_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* linux/icmp.h pulls in libc socket headers, so the ICMP header is spelled here. */
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* A cursor over the packet, as in the kernel's samples/bpf and xdp-tutorial. */
struct cursor {
	void *pos;
	void *end;
};

static __always_inline void cursor_init(struct cursor *c, struct xdp_md *ctx)
{
	c->pos = (void *)(long)ctx->data;
	c->end = (void *)(long)ctx->data_end;
}

/* The packet length. Written with pointers: `ctx->data_end - ctx->data` on the
 * u32 fields can compile to 32-bit arithmetic on packet pointers, which the
 * verifier refuses. */
static __always_inline __u32 pkt_len(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	return end - data;
}

/* Parses Ethernet and up to two VLAN tags; returns the inner ethertype in host
 * order, or -1 when the packet is too short. */
static __always_inline int parse_eth(struct cursor *c, struct ethhdr **eth, __u16 *vlan_id)
{
	struct ethhdr *e = c->pos;
	__u16 proto;

	if ((void *)(e + 1) > c->end)
		return -1;
	c->pos = e + 1;
	*eth = e;
	proto = bpf_ntohs(e->h_proto);
	*vlan_id = 0;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct vlan_hdr *v = c->pos;

		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if ((void *)(v + 1) > c->end)
			return -1;
		*vlan_id = bpf_ntohs(v->tci) & 0x0fff;
		proto = bpf_ntohs(v->proto);
		c->pos = v + 1;
	}
	return proto;
}

/* Parses an IPv4 header including its options; returns the L4 protocol or -1. */
static __always_inline int parse_ipv4(struct cursor *c, struct iphdr **ip)
{
	struct iphdr *h = c->pos;
	int len;

	if ((void *)(h + 1) > c->end)
		return -1;
	len = h->ihl * 4;
	if (len < (int)sizeof(*h))
		return -1;
	if (c->pos + len > c->end)
		return -1;
	c->pos += len;
	*ip = h;
	return h->protocol;
}

static __always_inline int parse_ipv6(struct cursor *c, struct ipv6hdr **ip6)
{
	struct ipv6hdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return -1;
	c->pos = h + 1;
	*ip6 = h;
	return h->nexthdr;
}

/* Folds a 32-bit one's complement sum (as bpf_csum_diff returns) to 16 bits. */
static __always_inline __u16 csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* Updates a checksum field after 4 bytes changed from `from` to `to`, using
 * bpf_csum_diff as the kernel's l3/l4 csum_replace helpers do. */
static __always_inline void csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	__u32 csum = bpf_csum_diff(&from, sizeof(from), &to, sizeof(to), ~((__u32)*sum) & 0xffff);

	*sum = csum_fold(csum);
}

static __always_inline void swap_mac(struct ethhdr *eth)
{
	unsigned char tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

#endif
