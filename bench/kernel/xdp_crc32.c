#include "wrap.h"
#include "../programs/crc32.c"
WRAP(crc32, struct pkt, sizeof(struct pkt))
