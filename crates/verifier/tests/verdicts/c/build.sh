#!/bin/sh
# Rebuilds the committed objects of the verdict corpus from their C sources.
# Needs clang-19 (the committed .o files were made with clang-19 and libbpf's
# installed headers). Run from anywhere: crates/verifier/tests/verdicts/c/build.sh
# After a rebuild, re-record the expectations from the kernel:
#   BPFKIT_VERDICTS_RECORD=1 cargo test --release -p bpfkit-verifier --test verdicts
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
ARCH_INC=/usr/include/$(uname -m)-linux-gnu
for src in *.c; do
	obj=${src%.c}.o
	"$CLANG" -O2 -g -target bpf -I"$ARCH_INC" -c "$src" -o "$obj"
	echo "built $obj"
done
