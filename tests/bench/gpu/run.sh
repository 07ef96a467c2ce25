#!/usr/bin/env bash
# Issue 20's GPU check, on the device machine (an NVIDIA H200, nothing reachable): builds llama.cpp once with
# CUDA, as llama-cpp-python 0.3.36 pins it, into llama-server and the libraries the engines load; then
# check.py measures stacklet against that llama-server on a random-weight Llama-3-8B-shaped GGUF.
# Ready it here first with prepare.sh; then the device tool's run, command "bash tests/bench/gpu/run.sh",
# carry [".gpu"], timeout 600. A second run on the same (warm) machine skips the build, which lives outside
# the checkout because each call replaces the carried .gpu/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
gpu=$PWD/.gpu
work=/tmp/stacklet-gpu
export PATH=$PATH:/usr/local/cuda/bin
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$gpu"/wheels/*.whl
if [ ! -x "$work/build/bin/llama-server" ]; then
    rm -rf "$work" && mkdir -p "$work/src"
    tar xJf "$gpu/llama-cpp-python.tar.xz" -C "$work/src"
    cmake -S "$work/src/vendor/llama.cpp" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >/dev/null
    time cmake --build "$work/build" --target llama-server llama mtmd -j "$(nproc)" >/dev/null
fi
# llama-cpp-python laid out as its wheel is, its libraries the CUDA build's
cp -r "$work/src/llama_cpp" /tmp/site/ && mkdir -p /tmp/site/llama_cpp/lib
cp -a "$work"/build/bin/lib*.so* /tmp/site/llama_cpp/lib/
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 tests/bench/gpu/check.py --llama-server "$work/build/bin/llama-server" --out "${OUT:-/tmp}"
