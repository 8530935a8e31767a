#include "wrap.h"
#include "../programs/calls.c"
WRAP(calls, struct pkt, sizeof(struct pkt))
