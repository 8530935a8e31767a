/* Fixture of crates/bpfkit/tests/tail_calls_jit.rs: tail calls between
 * kprobe programs (context: a struct pt_regs whose first u32 words the
 * test sets). Rebuild with ./build.sh in this folder. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} progs SEC(".maps");

/* Runs of each program: 0 head, 1 leaf, 2 chain, 3 unknown. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} runs SEC(".maps");

static __always_inline void ran(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&runs, &k);

	if (v)
		*v += 1;
}

/* Tail-calls slot word 0; 1000 + word 2 when the call does not happen. */
SEC("kprobe/head")
long head(void *ctx)
{
	__u32 slot = ((__u32 *)ctx)[0];
	__u32 extra = ((__u32 *)ctx)[2];

	ran(0);
	bpf_tail_call(ctx, &progs, slot);
	return 1000 + extra;
}

/* 42 + word 1 (a value read from the context the head was given). */
SEC("kprobe/leaf")
long leaf(void *ctx)
{
	ran(1);
	return 42 + ((__u32 *)ctx)[1];
}

/* Tail-calls slot 1 (itself, when the test puts it there) until the limit:
 * the 34th tail call of a run fails and the 33rd run of chain returns 7. */
SEC("kprobe/chain")
long chain(void *ctx)
{
	__u32 slot = ((__u32 *)ctx)[3];

	ran(2);
	bpf_tail_call(ctx, &progs, slot);
	return 7;
}

/* Calls a helper bpfkit does not have: a trap at its call. */
SEC("kprobe/unknown")
long unknown(void *ctx)
{
	ran(3);
	return bpf_get_current_pid_tgid();
}

char LICENSE[] SEC("license") = "GPL";
