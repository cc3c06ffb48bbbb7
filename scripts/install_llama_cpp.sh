#!/usr/bin/env bash
# Installs llama-cpp-python into a venv from a wheel built here with portable CPU flags.
#
#   scripts/install_llama_cpp.sh .venv/bin/python
#
# The PyPI package is an sdist whose default build compiles for the build machine's CPU (GGML_NATIVE): a wheel
# built on an AMX/AVX-512 host crashes in decode on a machine without them, and pip's own wheel cache is keyed
# by the sdist, not by CMAKE_ARGS, so an earlier build with other flags would be picked up silently. So the wheel
# is built with pip's cache off into our own folder keyed by version, flags, platform and Python:
#   ${XDG_CACHE_HOME:-~/.cache}/rsuper/wheels/<version>-<key>/
# A second venv (or CI on a machine that built once) installs from that folder in seconds.
#
# Environment:
#   LLAMA_CPP_VERSION   the pinned release (default: the one in pyproject.toml's `local` extra)
#   LLAMA_CMAKE_ARGS    CMake flags; default: x86-64 AVX2/FMA/F16C without GGML_NATIVE (any x86 CPU since 2013);
#                       e.g. "-DGGML_CUDA=on" for an NVIDIA build, "-DGGML_METAL=on" on Apple silicon.
#   RSUPER_WHEEL_CACHE  the cache root (default ${XDG_CACHE_HOME:-~/.cache}/rsuper/wheels)
#   RSUPER_LLAMA_REBUILD=1  build again even when the cache holds a wheel for these flags
set -euo pipefail

python=${1:?usage: $0 VENV_PYTHON}
here=$(cd "$(dirname "$0")/.." && pwd)
version=${LLAMA_CPP_VERSION:-$(sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' "$here/pyproject.toml")}
[[ -n $version ]] || { echo "no llama-cpp-python pin found in $here/pyproject.toml" >&2; exit 2; }

if [[ -z ${LLAMA_CMAKE_ARGS:-} ]]; then
    case $(uname -m) in
        x86_64|amd64) LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" ;;
        *) LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF" ;;  # aarch64 baseline; Apple builds add Metal by themselves
    esac
fi

platform=$("$python" -c 'import sys, sysconfig; print(sysconfig.get_platform(), sys.implementation.cache_tag)')
key=$(printf '%s\n%s\n%s\n' "$version" "$LLAMA_CMAKE_ARGS" "$platform" | sha256sum | cut -c1-12)
cache_root=${RSUPER_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rsuper/wheels}
dir=$cache_root/llama-cpp-python-$version-$key

wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)
[[ ${RSUPER_LLAMA_REBUILD:-0} == 1 ]] && wheel=
if [[ -z $wheel ]]; then
    echo "building llama-cpp-python $version with CMAKE_ARGS=\"$LLAMA_CMAKE_ARGS\" (about 4-6 min on 2 cores, once per machine)"
    tmp=$(mktemp -d "$cache_root.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$cache_root"; mktemp -d "$cache_root.tmp.XXXXXX"; })
    trap 'rm -rf "$tmp"' EXIT
    start=$(date +%s)
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
        "$python" -m pip wheel --disable-pip-version-check -q --no-cache-dir --no-deps \
        --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$version"
    printf 'version=%s\ncmake_args=%s\nplatform=%s\nbuild_seconds=%s\n' \
        "$version" "$LLAMA_CMAKE_ARGS" "$platform" "$(( $(date +%s) - start ))" > "$tmp/BUILD_INFO"
    mkdir -p "$cache_root"
    rm -rf "$dir"
    mv "$tmp" "$dir"  # the folder appears only complete, so a killed build is rebuilt next time
    trap - EXIT
    wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl | head -n1)
fi

# --no-deps on the wheel: its dependencies (and the server extra's) come with the project's extras afterwards.
"$python" -m pip install --disable-pip-version-check -q --no-cache-dir --force-reinstall --no-deps "$wheel"
echo "llama-cpp-python $version installed from $dir"
