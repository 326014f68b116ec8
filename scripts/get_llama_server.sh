#!/usr/bin/env bash
# Build llama.cpp's llama-server once into a cache outside the repository and
# print its path. Later calls print the cached binary's path at once.
#
#   scripts/get_llama_server.sh            # prints e.g. ~/.cache/pyworker/llama-server-0.3.36/llama-server
#
# The sources are those vendored in the llama-cpp-python sdist on PyPI (the
# only registry this project may use). CPU only, static, GGML_NATIVE=OFF so
# the cached binary runs on any x86-64; no curl, no OpenSSL, no web UI (which
# would otherwise be downloaded). About 8 minutes on 2 cores.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${PYWORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pyworker}"
DEST="$CACHE/llama-server-$VERSION"
BIN="$DEST/llama-server"

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

for tool in cmake make cc c++; do
    command -v "$tool" >/dev/null || { echo "get_llama_server: $tool is needed to build llama-server" >&2; exit 1; }
done
PYTHON="${PYTHON:-python3}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/build.log"
echo "get_llama_server: building llama-server from llama-cpp-python $VERSION (log: $CACHE/build-$VERSION.log)" >&2
mkdir -p "$CACHE"

"$PYTHON" -m pip download --quiet --no-deps --no-binary=:all: -d "$work" "llama-cpp-python==$VERSION" >&2
tar -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz -C "$work"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"

{
    cmake -S "$src" -B "$work/build" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF \
        -DGGML_OPENMP=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_CURL=OFF
    cmake --build "$work/build" --target llama-server -j "$(nproc)"
} >"$log" 2>&1 || {
    cp "$log" "$CACHE/build-$VERSION.log"
    echo "get_llama_server: the build failed; the last lines of $CACHE/build-$VERSION.log:" >&2
    tail -20 "$log" >&2
    exit 1
}
cp "$log" "$CACHE/build-$VERSION.log"

mkdir -p "$DEST"
cp "$work/build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
"$BIN" --version >&2 || true
echo "$BIN"
