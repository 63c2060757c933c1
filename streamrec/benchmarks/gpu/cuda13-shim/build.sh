#!/bin/bash
# Builds the two stand-in libraries that let the faiss-gpu-cu12 wheel load where only CUDA 13's
# cuBLAS exists (see benchmarks/gpu/README.md, "On a CUDA 13 machine"). Output: ./lib/
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p lib
gcc -O2 -shared -fPIC -Wl,-soname,libcublas.so.12 -Wl,--version-script=cublas12.map -o lib/libcublas.so.12 cublas12_shim.c -ldl
gcc -O2 -shared -fPIC -Wl,-soname,libcublasLt.so.12 -Wl,--version-script=cublasLt12.map -o lib/libcublasLt.so.12 lt.c
echo "built $(ls lib)"
