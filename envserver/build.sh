#!/usr/bin/env bash
# Builds envserver/build/beast-envserver. Called by `make envserver` as
#   PYTHON=/abs/.venv/bin/python bash envserver/build.sh
# Idempotent: every stage is skipped when its output is already there, and the CMake builds are incremental, so a
# second run costs a few seconds.
#
# Stages:
#   1. fetch the vizdoom sdist from PyPI once (the only download; the engine binary comes from the installed wheel);
#   2. build only ViZDoom's C++ client library from it, against Debian's Boost (ViZDoom's own CMake, engine and
#      Python binding switched off; its configure step writes ViZDoomVersion.h with the sdist's version id, e.g. 132,
#      which the engine checks at init());
#   3. configure and build our CMake project into envserver/build/.
set -euo pipefail

VIZDOOM_VERSION=1.3.2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
THIRD_PARTY="$HERE/third_party"
SDIST_DIR="$THIRD_PARTY/vizdoom-$VIZDOOM_VERSION"
VIZDOOM_BUILD="$THIRD_PARTY/vizdoom-$VIZDOOM_VERSION-build"
BUILD_DIR="$HERE/build"
JOBS="${JOBS:-$(nproc)}"

die() { echo "envserver/build.sh: error: $*" >&2; exit 2; }

: "${PYTHON:?set PYTHON to the venv interpreter, e.g. PYTHON=\$PWD/.venv/bin/python (make envserver does this)}"
[ -x "$PYTHON" ] || die "PYTHON=$PYTHON is not an executable; run 'make venv' first."
for tool in cmake pkg-config g++; do
    command -v "$tool" >/dev/null || die "'$tool' not found; run 'make apt' (installs the Debian build packages)."
done

# The engine binary we drive must be the wheel's, of exactly the version whose client library we build.
installed="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("vizdoom"))' 2>/dev/null || true)"
[ "$installed" = "$VIZDOOM_VERSION" ] ||
    die "the venv has vizdoom '${installed:-none}', the env server needs $VIZDOOM_VERSION; run 'make venv'."

# 1. Source distribution. Build isolation is off because pip's isolated build env would itself try to build
#    setuptools from source under --no-binary=:all: and stall; the venv already has wheel and setuptools.
if [ ! -f "$SDIST_DIR/CMakeLists.txt" ]; then
    mkdir -p "$THIRD_PARTY"
    if [ ! -f "$THIRD_PARTY/vizdoom-$VIZDOOM_VERSION.tar.gz" ]; then
        echo "envserver: downloading the vizdoom $VIZDOOM_VERSION sdist from PyPI"
        "$PYTHON" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation \
            "vizdoom==$VIZDOOM_VERSION" -d "$THIRD_PARTY"
    fi
    tar -xzf "$THIRD_PARTY/vizdoom-$VIZDOOM_VERSION.tar.gz" -C "$THIRD_PARTY"
fi

# 2. ViZDoom's client library only (static, position-independent). Configured once; rebuilt incrementally.
if [ ! -f "$VIZDOOM_BUILD/CMakeCache.txt" ]; then
    echo "envserver: configuring the ViZDoom $VIZDOOM_VERSION client library"
    cmake -S "$SDIST_DIR" -B "$VIZDOOM_BUILD" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_ENGINE=OFF -DBUILD_PYTHON=OFF -DCREATE_PYTHON_STUBS=OFF >"$VIZDOOM_BUILD.configure.log" 2>&1 ||
        { cat "$VIZDOOM_BUILD.configure.log" >&2; die "configuring ViZDoom failed (log above); missing Boost packages? run 'make apt'."; }
fi
cmake --build "$VIZDOOM_BUILD" --target libvizdoom_static -j "$JOBS" >"$VIZDOOM_BUILD.build.log" 2>&1 ||
    { tail -50 "$VIZDOOM_BUILD.build.log" >&2; die "building the ViZDoom client library failed (log above)."; }
grep -q "VIZDOOM_LIB_VERSION ${VIZDOOM_VERSION//./}$" "$SDIST_DIR/src/lib/ViZDoomVersion.h" ||
    die "ViZDoomVersion.h does not carry version id ${VIZDOOM_VERSION//./}; delete $VIZDOOM_BUILD and rerun."

# 3. Our project. The client library's location is passed in so CMakeLists.txt holds no third-party path logic.
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S "$HERE" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
        -DVIZDOOM_SOURCE_DIR="$SDIST_DIR" -DVIZDOOM_LIBRARY="$VIZDOOM_BUILD/bin/libvizdoom.a" >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$JOBS"
[ -x "$BUILD_DIR/beast-envserver" ] || die "the build finished without $BUILD_DIR/beast-envserver."
