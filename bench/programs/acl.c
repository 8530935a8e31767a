/* Control program (not one of the five): a firewall-style ACL lookup,
 * binary search of each address in a sorted table of non-overlapping
 * [lo, hi] ranges with an action each, as a range-based classifier keeps them
 * in an array map. Added after bpfkit's interpreter had superinstructions
 * matched to the other programs' code, to see whether its speedup carries
 * over to code it was not tuned on.
 *
 * Result: a hash of the action and rule index found for every address (or a
 * miss marker), with the number of hits.
 */
#include "bench.h"

#define MAX_RULES 256
#define MAX_LOOKUPS 64

struct rule {
	__u32 lo;
	__u32 hi;
	__u32 action;
};

struct acl_input {
	__u32 nrules;
	__u32 nlookups;
	struct rule rules[MAX_RULES];
	__u32 addrs[MAX_LOOKUPS];
};

SEC("bench")
__u64 acl(struct acl_input *in)
{
	__u32 n = in->nrules;
	if (n > MAX_RULES)
		n = MAX_RULES;
	__u32 m = in->nlookups;
	if (m > MAX_LOOKUPS)
		m = MAX_LOOKUPS;

	__u32 acc = 0, hits = 0;
	for (__u32 i = 0; i < m; i++) {
		__u32 addr = in->addrs[i];
		__u32 lo = 0, hi = n, found = 0xffff, action = 0;
		/* log2(MAX_RULES) + 1 steps bound the search. */
		for (int step = 0; step < 9 && lo < hi; step++) {
			__u32 mid = (lo + hi) / 2;
			const struct rule *r = &in->rules[mid];
			if (addr < r->lo) {
				hi = mid;
			} else if (addr > r->hi) {
				lo = mid + 1;
			} else {
				found = mid;
				action = r->action;
				hits++;
				break;
			}
		}
		acc = (acc ^ (found << 8 | action)) * 0x9e3779b1;
	}
	return acc ^ hits;
}
