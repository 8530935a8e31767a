/* Fixture of crates/bpfkit/tests/lookup_hint.rs: lookups in hash, LRU
 * hash, LPM trie and per-CPU hash maps that are not first in the map
 * table (the JIT's unchecked mode passes the helper the map's table index
 * as a hint in r3). Rebuild with ./build.sh in this folder. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct val {
	__u32 a;
	__u32 b;
};

struct lpm_key {
	__u32 prefixlen;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} first SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct val);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, struct val);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct val);
} pch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct val);
} copies SEC(".maps");

/* r1 holds two u32 words: a key and an operation.
 * 0: flows: lookup twice (the same pointer, else 1), a += 1 through it,
 *    the value copied into `copies` by a helper reading the pointer
 *    (else 2); the pointer (0 on a miss).
 * 1: lru: the same on the LRU hash (a lookup marks the element used);
 *    the pointer.
 * 2: routes: the longest prefix of the address `key`: the pointer.
 * 3: pch: a += 1 in this CPU's slot; the pointer.
 * 4: flows: update of `key` between two lookups (a plain hash replaces
 *    the element: the first pointer keeps the old value), then a delete
 *    (the memory stays readable for the run): old a * 1000 + new a,
 *    plus 1000000 when the lookup after the delete misses. */
SEC("kprobe/lookup")
long lookup(void *ctx)
{
	__u32 key = ((__u32 *)ctx)[0];
	__u32 op = ((__u32 *)ctx)[1];
	struct val *v, *w;

	if (op == 0 || op == 1) {
		void *m = op == 0 ? (void *)&flows : (void *)&lru;

		if (op == 0)
			v = bpf_map_lookup_elem(&flows, &key);
		else
			v = bpf_map_lookup_elem(&lru, &key);
		if (!v)
			return 0;
		v->a += 1;
		if (op == 0)
			w = bpf_map_lookup_elem(&flows, &key);
		else
			w = bpf_map_lookup_elem(&lru, &key);
		if (w != v)
			return 1;
		(void)m;
		if (bpf_map_update_elem(&copies, &key, v, BPF_ANY))
			return 2;
		return (long)v;
	}
	if (op == 2) {
		struct lpm_key k = { 32, key };

		return (long)bpf_map_lookup_elem(&routes, &k);
	}
	if (op == 3) {
		v = bpf_map_lookup_elem(&pch, &key);
		if (v)
			v->a += 1;
		return (long)v;
	}
	if (op == 4) {
		struct val nv = { 77, 0 };
		long r;

		v = bpf_map_lookup_elem(&flows, &key);
		if (!v)
			return 0;
		bpf_map_update_elem(&flows, &key, &nv, BPF_ANY);
		w = bpf_map_lookup_elem(&flows, &key);
		if (!w)
			return 3;
		r = v->a * 1000 + w->a;
		bpf_map_delete_elem(&flows, &key);
		if (!bpf_map_lookup_elem(&flows, &key))
			r += 1000000;
		return r + v->b + w->b;
	}
	return 0;
}

char _license[] SEC("license") = "GPL";
