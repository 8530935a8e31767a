/* Fixture of crates/bpfkit/tests/inline_devhash.rs: lookups in a
 * devmap_hash (which the JIT's unchecked mode probes itself, from the
 * map's entry table) whose pointer is read, handed to a helper and
 * returned. Rebuild with ./build.sh in this folder. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} copies SEC(".maps");

/* r1 holds a u32 key at offset 0. Returns 0 when the key is absent; 1
 * when the entry changed under the program (read before and after a
 * helper copied it through the pointer); 2 when two lookups of the same
 * key gave different pointers; otherwise the pointer. */
SEC("kprobe/devhash")
long lookup(void *ctx)
{
	__u32 key = *(__u32 *)ctx;
	__u32 zero = 0;
	__u32 *p = bpf_map_lookup_elem(&ports, &key);
	__u32 *q = bpf_map_lookup_elem(&ports, &key);
	__u32 before, *c;

	if (!p || !q)
		return 0;
	before = *p;
	bpf_map_update_elem(&copies, &zero, p, BPF_ANY);
	c = bpf_map_lookup_elem(&copies, &zero);
	if (!c || *c != before || *p != before)
		return 1;
	if (p != q)
		return 2;
	return (long)p;
}

char LICENSE[] SEC("license") = "GPL";
