/* ICMP echo responder: answers IPv4 echo requests in place (swap MACs and
 * addresses, type 8 -> 0, ICMP checksum updated with bpf_csum_diff over the
 * changed word, TTL reset to 64 and the IP header checksum recomputed with
 * bpf_csum_diff) and sends them back with XDP_TX. Other packets (and requests
 * with IP options) pass; requests to a broadcast or multicast destination are
 * dropped. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);	/* 0 replies, 1 non-echo icmp, 2 dropped */
	__type(key, __u32);
	__type(value, __u64);
} icmp_stats SEC(".maps");

static __always_inline void bump(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&icmp_stats, &k);

	if (v)
		*v += 1;
}

SEC("xdp")
int xdp_icmp_echo(struct xdp_md *ctx)
{
	struct cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct icmphdr *icmp;
	__be32 tmp, old_word, new_word;
	__u16 vlan;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) != ETH_P_IP)
		return XDP_PASS;
	if (parse_ipv4(&c, &ip) != IPPROTO_ICMP || ip->ihl != 5)
		return XDP_PASS;
	icmp = c.pos;
	if ((void *)(icmp + 1) > c.end)
		return XDP_DROP;
	if (icmp->type != ICMP_ECHO || icmp->code != 0) {
		bump(1);
		return XDP_PASS;
	}
	if ((bpf_ntohl(ip->daddr) >> 28) == 0xe || ip->daddr == 0xffffffff || (eth->h_dest[0] & 1)) {
		bump(2);
		return XDP_DROP;
	}
	swap_mac(eth);
	tmp = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = tmp;
	__builtin_memcpy(&old_word, icmp, 4);
	icmp->type = ICMP_ECHOREPLY;
	icmp->checksum = 0;
	__builtin_memcpy(&new_word, icmp, 4);
	/* the old checksum sits in bytes 2-3 of the first word: fold the word's change
	 * (type and checksum field, the latter now zero) into it */
	{
		__u16 old_sum;
		__be32 a = old_word, b = new_word;

		__builtin_memcpy(&old_sum, (char *)&old_word + 2, 2);
		__builtin_memset((char *)&a + 2, 0, 2);
		icmp->checksum = csum_fold(bpf_csum_diff(&a, 4, &b, 4, ~((__u32)old_sum) & 0xffff));
	}
	ip->ttl = 64;
	{
		/* the ttl changed too: recompute the header checksum over 20 bytes */
		ip->check = 0;
		if ((void *)ip + 20 > c.end)
			return XDP_DROP;
		ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, 20, 0));
	}
	bump(0);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
