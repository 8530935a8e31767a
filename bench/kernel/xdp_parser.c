#include "wrap.h"
#include "../programs/parser.c"
/* The map value is padded past the input: the verifier bounds a packet's
 * offset by its u16 descriptor fields (off + len up to 2 * 65535), not by
 * the program's own check against BURST_BYTES. The program never reads
 * the padding. */
WRAP(parser, struct burst, sizeof(struct burst) + 2 * 65536 + 256)
