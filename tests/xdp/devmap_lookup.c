/* Lookups in device maps from the program (S7). The entry's value is the
 * kernel's own `struct bpf_devmap_val`, read-only: looking the same key up
 * twice gives the same pointer, and an 8-byte value reads back with the
 * program id (0 when the control side gave no program, whatever fd it
 * passed). The low byte of the destination MAC is the key of the
 * devmap_hash `by_id` and, modulo 4, of the devmap `ports`; the packet is
 * then redirected through `by_id` (XDP_PASS when the key is missing). */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} by_id SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct bpf_devmap_val));
} ports SEC(".maps");

/* Per packet, shifted into a history (one byte per packet, newest lowest):
 * 0: by_id's value (0xff: none); 1: by_id gave the same pointer twice;
 * 2: ports' ifindex | program id << 32 (0xff: none); 3: ports gave the same
 * pointer twice; 4: packets seen */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

static __always_inline void put(__u32 k, __u64 v)
{
	__u64 *s = bpf_map_lookup_elem(&seen, &k);

	if (s)
		*s = (*s << 8) ^ v;
}

SEC("xdp")
int xdp_devmap_lookup(struct xdp_md *ctx)
{
	struct bpf_devmap_val *p, *q;
	struct cursor c;
	struct ethhdr *eth;
	__u32 key, port, *a, *b, k = 4;
	__u64 *n;
	__u16 vlan;

	cursor_init(&c, ctx);
	if (parse_eth(&c, &eth, &vlan) < 0)
		return XDP_DROP;
	n = bpf_map_lookup_elem(&seen, &k);
	if (n)
		*n += 1;
	key = eth->h_dest[5];
	a = bpf_map_lookup_elem(&by_id, &key);
	b = bpf_map_lookup_elem(&by_id, &key);
	put(0, a ? *a : 0xff);
	put(1, a == b);
	port = key & 3;
	p = bpf_map_lookup_elem(&ports, &port);
	q = bpf_map_lookup_elem(&ports, &port);
	put(2, p ? p->ifindex | (__u64)p->bpf_prog.id << 32 : 0xff);
	put(3, p == q);
	return bpf_redirect_map(&by_id, key, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
