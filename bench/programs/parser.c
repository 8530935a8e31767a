/* Ethernet / 802.1Q / IPv4 / TCP-UDP parser hashing the 5-tuple of each
 * packet of a receive burst, as an XDP load balancer or RSS steering program
 * does per packet.
 *
 * Input: a burst header, COUNT descriptors (offset and length of each packet
 * from the start of the buffer), then the packet bytes. Every header access is
 * bounds-checked against the packet length the way the kernel verifier demands
 * of XDP programs. Each packet gets a 32-bit flow hash (0 for packets that are
 * not IPv4 or are malformed); the result folds the hashes of the burst with
 * per-class counters.
 */
#include "bench.h"

#define MAX_BURST 32
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88a8
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct desc {
	__u16 off;
	__u16 len;
};

struct burst {
	__u32 count;
	__u32 seed;
	struct desc desc[MAX_BURST];
	/* packet bytes follow, addressed by desc[i].off from the buffer start */
};

/* Bytes after the descriptors that the packets may use. */
#define BURST_BYTES 8192

static __always_inline __u32 rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

/* Bob Jenkins' lookup3 final mix of three words (what the kernel's
 * jhash_3words ends with). */
static __always_inline __u32 mix3(__u32 a, __u32 b, __u32 c)
{
	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

static __always_inline __u32 hash_5tuple(__u32 saddr, __u32 daddr, __u32 ports,
					 __u32 proto, __u32 seed)
{
	__u32 init = 0xdeadbeef + (5 << 2) + seed;
	return mix3(saddr + init, daddr + init, (ports ^ (proto << 24)) + init);
}

enum verdict { V_DROP, V_OTHER, V_FRAG, V_TCP, V_UDP, V_L3 };

static __always_inline int parse(const __u8 *data, __u32 len, __u32 seed, __u32 *hash)
{
	__u32 off = ETH_HLEN;
	if (len < ETH_HLEN)
		return V_DROP;
	__u16 proto = load_be16(data + 12);

	/* Up to two VLAN tags (QinQ). */
	for (int i = 0; i < 2; i++) {
		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if (off + 4 > len)
			return V_DROP;
		proto = load_be16(data + off + 2);
		off += 4;
	}
	if (proto != ETH_P_IP)
		return V_OTHER;

	if (off + 20 > len)
		return V_DROP;
	const __u8 *ip = data + off;
	if ((ip[0] >> 4) != 4)
		return V_DROP;
	__u32 ihl = (ip[0] & 0xf) * 4;
	if (ihl < 20 || off + ihl > len)
		return V_DROP;
	__u32 tot_len = load_be16(ip + 2);
	if (tot_len < ihl || off + tot_len > len)
		return V_DROP;
	__u32 saddr = *(const __u32 *)(ip + 12);
	__u32 daddr = *(const __u32 *)(ip + 16);
	__u32 l4proto = ip[9];

	/* Fragments hash on addresses only: later fragments carry no ports. */
	if (load_be16(ip + 6) & (IP_MF | IP_OFFSET)) {
		*hash = hash_5tuple(saddr, daddr, 0, l4proto, seed);
		return V_FRAG;
	}

	__u32 l4 = off + ihl;
	__u32 ports;
	if (l4proto == IPPROTO_TCP) {
		if (l4 + 20 > off + tot_len)
			return V_DROP;
		__u32 doff = (data[l4 + 12] >> 4) * 4;
		if (doff < 20 || l4 + doff > off + tot_len)
			return V_DROP;
		ports = *(const __u32 *)(data + l4);
		*hash = hash_5tuple(saddr, daddr, ports, l4proto, seed);
		return V_TCP;
	}
	if (l4proto == IPPROTO_UDP) {
		if (l4 + 8 > off + tot_len)
			return V_DROP;
		__u32 ulen = load_be16(data + l4 + 4);
		if (ulen < 8 || l4 + ulen > off + tot_len)
			return V_DROP;
		ports = *(const __u32 *)(data + l4);
		*hash = hash_5tuple(saddr, daddr, ports, l4proto, seed);
		return V_UDP;
	}
	*hash = hash_5tuple(saddr, daddr, 0, l4proto, seed);
	return V_L3;
}

SEC("bench")
__u64 parser(struct burst *b)
{
	__u32 n = b->count;
	if (n > MAX_BURST)
		n = MAX_BURST;
	__u32 acc = 0;
	__u32 counts[6] = {};

	for (__u32 i = 0; i < n; i++) {
		__u32 off = b->desc[i].off;
		__u32 len = b->desc[i].len;
		if (off < sizeof(*b) || off + len > sizeof(*b) + BURST_BYTES)
			continue;
		__u32 hash = 0;
		int v = parse((const __u8 *)b + off, len, b->seed, &hash);
		counts[v]++;
		acc = rol32(acc, 5) ^ hash;
	}
	for (int v = 0; v < 6; v++)
		acc = acc * 31 + counts[v];
	return acc;
}
