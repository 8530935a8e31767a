#!/bin/sh
# Rebuilds the XDP wrappers of the benchmark programs (see wrap.h); the
# objects are committed. Same compiler and flags as bench/programs/build.sh,
# plus -g for the BTF of the `input` map.
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
ARCH_INC=/usr/include/$(uname -m)-linux-gnu
for src in xdp_*.c; do
	obj=${src%.c}.o
	"$CLANG" -O2 -g -target bpf -mcpu=v3 -Wall -Werror -I"$ARCH_INC" \
		-fdebug-prefix-map="$PWD"=bench/kernel -c "$src" -o "$obj"
	echo "built $obj"
done
