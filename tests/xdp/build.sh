#!/bin/sh
# Rebuilds every tests/xdp/*.o from its .c. The objects are committed, so the
# differential tests need no compiler; run this after changing a source.
#   tests/xdp/build.sh            # all
#   tests/xdp/build.sh lb_tx      # one
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
ARCH_INC=/usr/include/$(uname -m)-linux-gnu
if [ "$#" -gt 0 ]; then srcs=$(for n in "$@"; do echo "${n%.c}.c"; done); else srcs=$(ls *.c); fi
for src in $srcs; do
	obj=${src%.c}.o
	"$CLANG" -O2 -g -target bpf -mcpu=v3 -Wall -Werror -I"$ARCH_INC" -c "$src" -o "$obj"
	echo "built $obj"
done
