/* Fixture of crates/bpfkit/tests/inline_inner.rs: lookups in an inner
 * array of an array of maps (which the JIT's unchecked mode computes from
 * the map's header) whose pointer is written through, handed to a helper
 * and returned. Rebuild with ./build.sh in this folder. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct inner_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} in0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner_array);
} outer SEC(".maps") = {
	.values = { [0] = &in0 },
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} copies SEC(".maps");

/* r1 holds the outer slot (u32 at offset 0) and the inner key (u32 at
 * offset 4). Returns 0 when the slot is empty, 1 when the inner lookup
 * failed, otherwise the value's pointer after adding 1 to the value and
 * copying it into `copies` (the helper reads it through the pointer). */
SEC("kprobe/inner")
long lookup(void *ctx)
{
	__u32 slot = *(__u32 *)ctx, key = *((__u32 *)ctx + 1), zero = 0;
	void *inner = bpf_map_lookup_elem(&outer, &slot);
	__u64 *v;

	if (!inner)
		return 0;
	v = bpf_map_lookup_elem(inner, &key);
	if (!v)
		return 1;
	*v += 1;
	bpf_map_update_elem(&copies, &zero, v, BPF_ANY);
	return (long)v;
}

char LICENSE[] SEC("license") = "GPL";
