#!/bin/sh
# Rebuilds the committed parser objects (*.o) from their C sources with clang's BPF target,
# exactly as a kernel-KCM user would compile a parser. Needs clang (Debian: apt-get install
# clang llvm; llvm-mc assembles the .s sources). The objects are committed so that tests do not need clang.
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang}
LLVM_MC=${LLVM_MC:-llvm-mc}
for src in *.c; do
	obj=${src%.c}.o
	"$CLANG" -O2 -target bpf -g0 -c "$src" -o "$obj"
	echo "built $obj"
done
for src in *.s; do
	obj=${src%.s}.o
	"$LLVM_MC" -triple bpfel -filetype=obj "$src" -o "$obj"
	echo "built $obj"
done
