/* Call-heavy program: MurmurHash3 (x86_32) over a packet of up to 1500 bytes,
 * written the way a program structured into small subprograms is, with every
 * step a separate non-inlined function so that clang emits bpf-to-bpf calls:
 * per 4-byte block load_le32, hash_block -> scramble -> rotl32 and
 * hash_block -> rotl32 (five calls a block, 1877 for a full 1500-byte packet
 * with the tail and finalizer calls).
 * What it measures is the cost of call/exit (frame push and pop, callee-saved
 * registers) next to short bodies.
 *
 * murmur3_32("", 0) == 0; murmur3_32("hello", 0) == 0x248bfa47.
 */
#include "bench.h"

static __noinline __u32 rotl32(__u32 x, __u32 r)
{
	return (x << r) | (x >> (32 - r));
}

static __noinline __u32 load_le32(const __u8 *p)
{
	return (__u32)p[0] | (__u32)p[1] << 8 | (__u32)p[2] << 16 | (__u32)p[3] << 24;
}

static __noinline __u32 scramble(__u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	return k * 0x1b873593;
}

static __noinline __u32 hash_block(__u32 h, __u32 k)
{
	h ^= scramble(k);
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __noinline __u32 hash_tail(__u32 h, const __u8 *tail, __u32 rem)
{
	__u32 k = 0;
	if (rem >= 3)
		k ^= (__u32)tail[2] << 16;
	if (rem >= 2)
		k ^= (__u32)tail[1] << 8;
	if (rem >= 1) {
		k ^= tail[0];
		h ^= scramble(k);
	}
	return h;
}

static __noinline __u32 fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

SEC("bench")
__u64 calls(struct pkt *p)
{
	__u32 len = p->len;
	if (len > MAX_PKT)
		len = MAX_PKT;

	__u32 h = p->seed;
	__u32 blocks = len / 4;
	for (__u32 i = 0; i < blocks; i++)
		h = hash_block(h, load_le32(&p->data[4 * i]));
	h = hash_tail(h, &p->data[4 * blocks], len & 3);
	h ^= len;
	return fmix32(h);
}
