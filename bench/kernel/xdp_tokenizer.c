#include "wrap.h"
#include "../programs/tokenizer.c"
WRAP(tokenizer, struct pkt, sizeof(struct pkt))
