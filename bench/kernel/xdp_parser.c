#include "wrap.h"
#include "../programs/parser.c"
WRAP(parser, struct burst, sizeof(struct burst) + BURST_BYTES)
