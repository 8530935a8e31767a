/* XDP wrappers of the benchmark programs, for BPF_PROG_TEST_RUN.
 *
 * The kernel cannot pass an arbitrary buffer in r1, and the programs index
 * their input with bounds from its header, which the verifier accepts for a
 * map value but not for packet pointers. So each wrapper keeps the input in
 * a one-entry array map `input` and its XDP entry does:
 *
 *     in = bpf_map_lookup_elem(&input, &0); if (!in) return XDP_ABORTED;
 *     return fn(in);
 *
 * The benchmark function itself is the program's own source, included
 * unchanged; SEC("bench") is redefined here to `static __noinline`, so it
 * becomes a bpf-to-bpf subprogram in .text, compiled to the same
 * instructions as in bench/programs/<name>.o (checked by
 * crates/bench/tests/kernel.rs). Built by build.sh in this folder.
 */
#include "../programs/bench.h"
#include <linux/bpf.h>

#undef SEC
#define SEC(name) static __noinline

#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

/* WRAP(fn, T, SIZE): the map `input` holds SIZE bytes (at least
 * sizeof(T)); xdp_<fn> runs fn on them. */
#define WRAP(fn, T, SIZE)                                                   \
	struct input_##fn {                                                 \
		__u8 bytes[SIZE];                                           \
	};                                                                  \
	_Static_assert(SIZE >= sizeof(T), "input smaller than its type"); \
	struct {                                                            \
		__uint(type, BPF_MAP_TYPE_ARRAY);                           \
		__uint(max_entries, 1);                                     \
		__type(key, __u32);                                         \
		__type(value, struct input_##fn);                           \
	} input __attribute__((section(".maps"), used));                    \
	__attribute__((section("xdp"), used)) int xdp_##fn(struct xdp_md *ctx) \
	{                                                                   \
		__u32 zero = 0;                                             \
		struct input_##fn *in = bpf_map_lookup_elem(&input, &zero); \
		if (!in)                                                    \
			return XDP_ABORTED;                                 \
		return (int)fn((T *)in);                                    \
	}                                                                   \
	char _license[] __attribute__((section("license"), used)) = "GPL";
