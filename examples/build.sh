#!/usr/bin/env bash
# Rebuilds the committed example objects from their C sources.
# Needs clang-19 (or CLANG=...). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")"
CLANG="${CLANG:-clang-19}"
for src in *.c; do
  obj="${src%.c}.o"
  "$CLANG" -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$src" -o "$obj"
  echo "built $obj"
done
