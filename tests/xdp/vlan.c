/* VLAN tagging at a trunk port: untagged frames get the port's default VLAN
 * tag pushed (bpf_xdp_adjust_head -4, MACs moved to the new front), tagged
 * frames whose VLAN is configured to be stripped lose their tag
 * (adjust_head +4), other tagged frames have their priority bits rewritten.
 * The per-VLAN action table is a hash; the port's default is in `port_cfg`. */
#include "common.h"

enum { VLAN_KEEP = 0, VLAN_STRIP = 1, VLAN_REPRIO = 2 };

struct vlan_action {
	__u32 action;
	__u32 prio;	/* 0-7 for VLAN_REPRIO */
	__u64 packets;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct vlan_action);
} vlan_actions SEC(".maps");

struct port_cfg {
	__u32 pvid;	/* 0: do not tag */
	__u32 pushed;
	__u32 popped;
	__u32 errors;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_cfg);
} port_cfg SEC(".maps");

SEC("xdp")
int xdp_vlan(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data, copy;
	struct vlan_hdr *vh;
	struct port_cfg *cfg;
	struct vlan_action *act;
	__u32 zero = 0, vid;

	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	cfg = bpf_map_lookup_elem(&port_cfg, &zero);
	if (!cfg)
		return XDP_ABORTED;
	__builtin_memcpy(&copy, eth, sizeof(copy));

	if (eth->h_proto != bpf_htons(ETH_P_8021Q)) {
		if (!cfg->pvid)
			return XDP_PASS;
		if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct vlan_hdr))) {
			cfg->errors++;
			return XDP_ABORTED;
		}
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		eth = data;
		vh = data + sizeof(*eth);
		if ((void *)(vh + 1) > end)
			return XDP_ABORTED;
		__builtin_memcpy(eth, &copy, 2 * ETH_ALEN);
		eth->h_proto = bpf_htons(ETH_P_8021Q);
		vh->tci = bpf_htons(cfg->pvid & 0x0fff);
		vh->proto = copy.h_proto;
		cfg->pushed++;
		return XDP_PASS;
	}

	vh = data + sizeof(*eth);
	if ((void *)(vh + 1) > end)
		return XDP_DROP;
	vid = bpf_ntohs(vh->tci) & 0x0fff;
	act = bpf_map_lookup_elem(&vlan_actions, &vid);
	if (!act)
		return XDP_DROP;	/* VLAN not allowed on this port */
	act->packets++;
	if (act->action == VLAN_REPRIO) {
		vh->tci = bpf_htons((bpf_ntohs(vh->tci) & 0x1fff) | ((act->prio & 7) << 13));
		return XDP_PASS;
	}
	if (act->action != VLAN_STRIP)
		return XDP_PASS;
	copy.h_proto = vh->proto;
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct vlan_hdr))) {
		cfg->errors++;
		return XDP_ABORTED;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth, &copy, sizeof(*eth));
	cfg->popped++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
