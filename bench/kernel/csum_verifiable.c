/* bench/programs/csum.c with one change for the kernel's verifier, which
 * does not learn len >= 1 from (len & 1) != 0 and so sees data[len - 1] at
 * offset 0xffffffff: the odd trailing byte is read at len & ~1, which is
 * len - 1 for odd len (one ALU instruction either way). Used by xdp_csum.c
 * only; every other column runs the original. */
/* RFC 1071 Internet checksum over one packet of up to 1500 bytes.
 *
 * Sums the data as big-endian 16-bit words (section 4.1 of the RFC: "adjacent
 * octets to be checksummed are paired to form 16-bit integers"), pads an odd
 * trailing byte with zero, folds the carries back in and returns the one's
 * complement, as a NIC or the kernel's csum_partial + csum_fold would.
 */
#include "../programs/bench.h"

SEC("bench")
__u64 csum(struct pkt *p)
{
	__u32 len = p->len;
	if (len > MAX_PKT)
		len = MAX_PKT;

	__u64 sum = p->seed;
	__u32 words = len / 2;
	for (__u32 i = 0; i < words; i++)
		sum += load_be16(&p->data[2 * i]);
	if (len & 1)
		sum += (__u32)p->data[len & ~1u] << 8; /* = len - 1: len is odd */

	/* A 64-bit accumulator of at most 750 words needs two folds. */
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}
