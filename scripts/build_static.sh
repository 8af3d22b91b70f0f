#!/usr/bin/env bash
# Builds the fully static Linux binary (x86_64-unknown-linux-musl, Cargo's dist profile: LTO, one
# codegen unit, stripped), checks that it is static and runs, and prints its size.
#
#   bash scripts/build_static.sh    # -> target/x86_64-unknown-linux-musl/dist/onnx-prune
#
# Needs rustup (for the target's standard library; Rust links musl statically on its own) and a
# C compiler for musl, with which tract-linalg assembles its x86_64 kernels: musl-gcc (Debian and
# Ubuntu: apt-get install musl-tools). Without it, cc-rs stops the build with
# `failed to find tool "x86_64-linux-musl-gcc"`.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
binary=target/$target/dist/onnx-prune

export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
if ! command -v "$CC_x86_64_unknown_linux_musl" >/dev/null; then
    echo "FAIL: no $CC_x86_64_unknown_linux_musl: apt-get install musl-tools" >&2
    exit 1
fi
rustup target add "$target"
cargo build --locked --profile dist --target "$target"

# A static executable has no interpreter (ld.so) and needs no shared library.
if readelf --program-headers "$binary" | grep -q INTERP; then
    echo "FAIL: $binary is dynamically linked" >&2
    exit 1
fi
"$binary" --version
"$binary" inspect fixtures/mlp_gemm.onnx >/dev/null
echo "static: $binary, $(stat -c %s "$binary") bytes"
