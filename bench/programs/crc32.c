/* Bitwise CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) over one
 * packet of up to 1500 bytes: the table-free form, eight shift-and-xor steps
 * per byte, as used where a 1 KiB table does not fit (or is not wanted in a
 * map). crc32("123456789") == 0xCBF43926.
 */
#include "bench.h"

SEC("bench")
__u64 crc32(struct pkt *p)
{
	__u32 len = p->len;
	if (len > MAX_PKT)
		len = MAX_PKT;

	__u32 crc = ~p->seed;
	for (__u32 i = 0; i < len; i++) {
		crc ^= p->data[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
	}
	return ~crc;
}
