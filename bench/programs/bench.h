/* Shared conventions of the bpfkit benchmark programs.
 *
 * Every program is a single entry function in section "bench" that takes one
 * argument: r1 points at the input buffer. Neither VM passes the buffer length,
 * so each input starts with a small header that carries it. The entry returns a
 * 64-bit value in r0 (a checksum or hash, zero-extended from 32 bits) that the
 * bench compares with a Rust reference implementation.
 *
 * No maps, no helpers, no global data: the objects hold only code, so that the
 * bench can link them without a loader.
 */
#ifndef BPFKIT_BENCH_H
#define BPFKIT_BENCH_H

#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))
#define __noinline __attribute__((noinline))

/* Length-prefixed packet: the checksum, CRC and call-heavy programs read
 * data[0..len], len clamped to MAX_PKT. */
#define MAX_PKT 1500

struct pkt {
	__u32 len;
	__u32 seed;
	__u8 data[MAX_PKT];
};

static __always_inline __u16 load_be16(const __u8 *p)
{
	return (__u16)(p[0] << 8 | p[1]);
}

#endif
