#!/bin/sh
# Rebuilds every tests/xdp/*.o from its .c. The objects are committed, so the
# differential tests need no compiler; run this after changing a source.
#   tests/xdp/build.sh            # all
#   tests/xdp/build.sh lb_tx      # one
#   OUT=/tmp/x tests/xdp/build.sh # elsewhere (the freshness test compares)
# Debug info names the sources relative to the repository root
# (-fdebug-prefix-map), so the objects do not depend on the checkout's path.
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
OUT=${OUT:-.}
ARCH_INC=/usr/include/$(uname -m)-linux-gnu
if [ "$#" -gt 0 ]; then srcs=$(for n in "$@"; do echo "${n%.c}.c"; done); else srcs=$(ls *.c); fi
for src in $srcs; do
	obj=$OUT/${src%.c}.o
	"$CLANG" -O2 -g -target bpf -mcpu=v3 -Wall -Werror -I"$ARCH_INC" \
		-fdebug-prefix-map="$PWD"=tests/xdp -c "$src" -o "$obj"
	echo "built $obj"
done
