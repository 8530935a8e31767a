#include "wrap.h"
#include "../programs/acl.c"
WRAP(acl, struct acl_input, sizeof(struct acl_input))
