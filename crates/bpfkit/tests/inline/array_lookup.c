/* Fixture of crates/bpfkit/tests/inline.rs: lookups in plain arrays (which
 * the JIT's unchecked mode computes inline) whose pointers are written
 * through, handed to helpers and returned, next to a per-CPU array (which
 * keeps the helper call). Rebuild with ./build.sh in this folder. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct val {
	__u32 a;
	__u32 b;
	__u32 c;
};				/* 12 bytes: a stride of 16 */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, struct val);
} arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct val);
} copies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} pcpu SEC(".maps");

/* r1 holds a u32 key at offset 0: value[key].a += 1, value[key].c =
 * 3 * key + 1, a copy of the value into `copies` (the helper reads it
 * through the lookup's pointer), and the pointer itself as the result (0
 * when the key is out of range, 1 when the copy failed). */
SEC("kprobe/lookup")
long lookup(void *ctx)
{
	__u32 key = *(__u32 *)ctx;
	__u32 zero = 0;
	struct val *v = bpf_map_lookup_elem(&arr, &key);
	__u64 *n;

	if (!v)
		return 0;
	v->a += 1;
	v->c = key * 3 + 1;
	if (bpf_map_update_elem(&copies, &key, v, BPF_ANY))
		return 1;
	n = bpf_map_lookup_elem(&pcpu, &zero);
	if (n)
		*n += 1;
	return (long)v;
}

char _license[] SEC("license") = "GPL";
