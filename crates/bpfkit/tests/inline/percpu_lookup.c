/* Fixture of crates/bpfkit/tests/inline_percpu.rs: lookups in a per-CPU
 * array (which the JIT's unchecked mode computes inline, with the run's
 * CPU) whose pointers are written through, handed to a helper and
 * returned, and bpf_get_smp_processor_id (also inline). Rebuild with
 * ./build.sh in this folder. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct val {
	__u32 a;
	__u32 b;
	__u32 c;
};				/* 12 bytes: a CPU stride of 16 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, struct val);
} pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct val);
} copies SEC(".maps");

/* r1 holds a u32 key at offset 0: value[key].a += 1 and value[key].b =
 * the CPU + 100 on the run's CPU, a copy of the value into `copies` at
 * key * 16 + cpu (the helper reads it through the lookup's pointer), and
 * the pointer itself as the result (0 when the key is out of range, 1
 * when the copy failed). */
SEC("kprobe/lookup")
long lookup(void *ctx)
{
	__u32 key = *(__u32 *)ctx;
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 at = key * 16 + cpu;
	struct val *v = bpf_map_lookup_elem(&pcpu, &key);

	if (!v)
		return 0;
	v->a += 1;
	v->b = cpu + 100;
	if (bpf_map_update_elem(&copies, &at, v, BPF_ANY))
		return 1;
	return (long)v;
}

char _license[] SEC("license") = "GPL";
