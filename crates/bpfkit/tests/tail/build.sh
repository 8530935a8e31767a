#!/bin/sh
# Rebuilds the fixtures of crates/bpfkit/tests/tail_calls_jit.rs (committed, so the
# tests need no compiler).
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
ARCH_INC=/usr/include/$(uname -m)-linux-gnu
for src in *.c; do
	"$CLANG" -O2 -g -target bpf -mcpu=v3 -Wall -Werror -I"$ARCH_INC" \
		-fdebug-prefix-map="$PWD"=crates/bpfkit/tests/tail -c "$src" -o "${src%.c}.o"
done
