#include "wrap.h"
#include "../programs/csum.c"
WRAP(csum, struct pkt, sizeof(struct pkt))
