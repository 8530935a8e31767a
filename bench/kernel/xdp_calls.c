#include "wrap.h"
#include "../programs/calls.c"
/* Padded by 16 bytes: the verifier does not tie the tail's offset (4 *
 * blocks) to its length (len & 3), so it sees reads up to 3 bytes past
 * MAX_PKT. The program never reads the padding. */
WRAP(calls, struct pkt, sizeof(struct pkt) + 16)
