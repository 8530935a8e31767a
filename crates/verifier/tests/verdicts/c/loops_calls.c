// SPDX-License-Identifier: MIT OR Apache-2.0
// A bounded loop over packet bytes and a bpf-to-bpf call (accepted), and a
// loop whose last iteration reads one byte past the checked range (rejected).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __noinline int sum_bytes(unsigned char *p, unsigned char *end)
{
	int sum = 0;
	for (int i = 0; i < 16; i++) {
		if (p + i + 1 > end)
			break;
		sum += p[i];
	}
	return sum;
}

SEC("xdp")
int loop_call(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	return sum_bytes(data, end) & 1 ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int loop_off_by_one(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	int sum = 0;
	if (data + 16 > end)
		return XDP_PASS;
	for (int i = 0; i <= 16; i++)
		sum += ((volatile unsigned char *)data)[i];
	return sum & 1 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
