#!/usr/bin/env bash
# Readies the GPU check (run.sh beside this) here, where the package registries answer: the device machine
# reaches nothing, so .gpu/ (ignored by git) brings what its image lacks: wheels for its Python 3.12 at the
# versions this checkout's venv runs, and llama.cpp's source as llama-cpp-python pins it, trimmed to what
# llama-server and the engines' libraries build from (under the 64 MiB a device call carries).
# Run: bash tests/bench/gpu/prepare.sh [PYTHON]   (PYTHON: the venv's, .venv/bin/python by default)
# Then: the device tool's run, command "bash tests/bench/gpu/run.sh", carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/../../.."
python=${1:-.venv/bin/python}
# What `python -m runtime` and the benchmarks import that the device's image (the device README's KINDS.md)
# does not hold, or holds at another version.
missing=(fastapi starlette pydantic pydantic-core annotated-types annotated-doc typing-inspection uvicorn
         httptools platformdirs python-multipart gguf diskcache opentelemetry-api)
pins=$("$python" -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${missing[@]}")
llama_version=$("$python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/sdist
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# shellcheck disable=SC2086  # one argument per pin
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .gpu/wheels $pins
"$python" -m pip download -q --no-deps --no-binary=:all: -d .gpu/sdist "llama-cpp-python==$llama_version"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar xzf .gpu/sdist/llama_cpp_python-*.tar.gz -C "$work"
src=$(echo "$work"/llama_cpp_python-*)
# Off in run.sh's build, or not code: the vocabularies, docs, tests, examples and converters.
(cd "$src/vendor/llama.cpp" && rm -rf models docs media tests benches examples pocs gguf-py conversion .github)
tar cJf .gpu/llama-cpp-python.tar.xz -C "$src" llama_cpp vendor
rm -rf .gpu/sdist
du -sh .gpu
