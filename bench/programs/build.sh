#!/bin/sh
# Rebuilds the committed benchmark objects from their C sources.
# Needs clang-19 (any clang with the BPF target works; the committed .o files
# were made with clang-19). Run from anywhere: ./bench/programs/build.sh
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
ARCH_INC=/usr/include/$(uname -m)-linux-gnu
for src in *.c; do
	obj=${src%.c}.o
	"$CLANG" -O2 -g0 -target bpf -mcpu=v3 -I"$ARCH_INC" -c "$src" -o "$obj"
	echo "built $obj"
done
