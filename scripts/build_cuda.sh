#!/usr/bin/env bash
# Proves that llamabind's CUDA build compiles on a machine with nvcc but without a complete
# CUDA toolkit, and runs the test suite on a GPU when there is one.
#
#   bash scripts/build_cuda.sh            # compile the CUDA backend (portable build, plain CMake)
#   bash scripts/build_cuda.sh --wheel    # build + repair the llamabind-cudaNN wheel instead
#   bash scripts/build_cuda.sh --wheel --test [-- PYTEST ARGS]
#                                         # ... then install it into a fresh venv with NVIDIA's
#                                         # runtime wheels and run the suite, every layer offloaded
#
# nvcc is taken from CUDACXX, else /usr/local/cuda/bin, /usr/local/cuda-*/bin, PATH. cuBLAS,
# which a bare nvcc install lacks, comes from NVIDIA's PyPI wheel for the same CUDA release
# (nvidia-cublas for CUDA 13, nvidia-cublas-cu12 for 12), unpacked into the cache; its headers
# and libraries are handed to CMake's FindCUDAToolkit. When the toolkit has no libcuda.so
# (the driver library, normally in lib64/stubs), an empty stub with the driver's soname is
# linked instead: ggml-cuda is a module loaded at run time, and the real driver provides
# those symbols then.
#
# Environment: LLAMABIND_CUDA_ARCHITECTURES (default 90, i.e. H100/H200; "native" on a GPU
# machine), JOBS (default: all cores), LLAMABIND_CACHE (default ~/.cache/llamabind),
# LLAMABIND_TEST_THREADS for the tests. Run it under `nice` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=compile
TEST=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) MODE=wheel ;;
        --test) TEST=1 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) echo "usage: $0 [--wheel [--test]] [-- PYTEST ARGS]" >&2; exit 2 ;;
    esac
    shift
done
if [ "$TEST" = 1 ] && [ "$MODE" != wheel ]; then
    echo "--test needs --wheel (the tests run against the installed wheel)" >&2; exit 2
fi
PY=${PYTHON:-python3}
ARCHS=${LLAMABIND_CUDA_ARCHITECTURES:-90}
JOBS=${JOBS:-$(nproc)}
CACHE=${LLAMABIND_CACHE:-$HOME/.cache/llamabind}/cuda

# --- the compiler and its release --------------------------------------------------------
NVCC=${CUDACXX:-}
if [ -z "$NVCC" ]; then
    for candidate in /usr/local/cuda/bin/nvcc $(ls -d /usr/local/cuda-*/bin/nvcc 2>/dev/null | sort -V -r) \
                     "$(command -v nvcc || true)"; do
        if [ -x "$candidate" ] && head -c 4 "$candidate" | grep -q ELF; then NVCC=$candidate; break; fi
    done
fi
[ -n "$NVCC" ] || { echo "no nvcc found (set CUDACXX)" >&2; exit 1; }
CUDA_ROOT=$(cd "$(dirname "$NVCC")/.." && pwd)
RELEASE=$("$NVCC" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
MAJOR=${RELEASE%%.*}
echo "[build_cuda] nvcc $RELEASE at $NVCC (toolkit root $CUDA_ROOT)"
case "$MAJOR" in
    13) VARIANT=cuda13; CUBLAS_PKG=nvidia-cublas ;;
    12) VARIANT=cuda12; CUBLAS_PKG=nvidia-cublas-cu12 ;;
    *) echo "CUDA $RELEASE: llamabind ships CUDA 12 and 13 builds only" >&2; exit 1 ;;
esac

# --- cuBLAS from NVIDIA's wheel ----------------------------------------------------------
mkdir -p "$CACHE"
CUBLAS_DIR="$CACHE/$CUBLAS_PKG-$RELEASE"
if [ ! -f "$CUBLAS_DIR/.complete" ]; then
    rm -rf "$CUBLAS_DIR" "$CACHE/download"
    "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$CACHE/download" "$CUBLAS_PKG==$RELEASE.*" \
        || "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$CACHE/download" "$CUBLAS_PKG>=$RELEASE,<$((MAJOR + 1))"
    "$PY" -m zipfile -e "$CACHE"/download/*.whl "$CUBLAS_DIR"
    rm -rf "$CACHE/download"
    touch "$CUBLAS_DIR/.complete"
fi
CUBLAS_INCLUDE=$(dirname "$(find "$CUBLAS_DIR" -name cublas_v2.h | head -1)")
CUBLAS_LIBDIR=$(dirname "$(find "$CUBLAS_DIR" -name 'libcublas.so.*' | head -1)")
echo "[build_cuda] cuBLAS from $(ls "$CUBLAS_DIR" | grep dist-info): $CUBLAS_INCLUDE, $CUBLAS_LIBDIR"

# Link-time names: the wheel has only libcublas.so.NN, the toolkit may lack libcuda.so.
STUBS="$CACHE/link-$RELEASE"
mkdir -p "$STUBS"
ln -sf "$(ls "$CUBLAS_LIBDIR"/libcublas.so.* | head -1)" "$STUBS/libcublas.so"
ln -sf "$(ls "$CUBLAS_LIBDIR"/libcublasLt.so.* | head -1)" "$STUBS/libcublasLt.so"
DRIVER=$(ls "$CUDA_ROOT"/lib64/stubs/libcuda.so "$CUDA_ROOT"/lib/stubs/libcuda.so \
              "$CUDA_ROOT"/targets/*/lib/stubs/libcuda.so 2>/dev/null | head -1 || true)
if [ -z "$DRIVER" ]; then
    DRIVER="$STUBS/libcuda.so"
    if [ ! -f "$DRIVER" ]; then
        echo "/* empty: stands in for the CUDA driver at link time only */" > "$STUBS/stub.c"
        cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$DRIVER" "$STUBS/stub.c"
    fi
    echo "[build_cuda] no libcuda.so stub in the toolkit: linking against an empty one (soname libcuda.so.1)"
fi

CMAKE_CUDA_ARGS=(
    -DGGML_CUDA=ON
    -DCMAKE_CUDA_COMPILER="$NVCC"
    -DCMAKE_CUDA_ARCHITECTURES="$ARCHS"
    -DCUDAToolkit_ROOT="$CUDA_ROOT"
    -DCUDA_cublas_LIBRARY="$STUBS/libcublas.so"
    -DCUDA_cublasLt_LIBRARY="$STUBS/libcublasLt.so"
    -DCUDA_cuda_driver_LIBRARY="$DRIVER"
    -DCMAKE_CUDA_FLAGS="-I$CUBLAS_INCLUDE"
)

"$PY" scripts/fetch_llama_cpp.py
start=$(date +%s)
if [ "$MODE" = compile ]; then
    BUILD="$ROOT/build/cuda-check"
    generator=()
    if command -v ninja >/dev/null; then generator=(-G Ninja); fi
    cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DLLAMABIND_PORTABLE=ON \
        -DLLAMABIND_BUILD_PYTHON=OFF -DLLAMABIND_BUILD_EXAMPLES=OFF "${CMAKE_CUDA_ARGS[@]}"
    cmake --build "$BUILD" -j "$JOBS" --target ggml-cuda
    MODULE=$(find "$BUILD" -name 'libggml-cuda.so' | head -1)
    echo "[build_cuda] built $MODULE in $(( $(date +%s) - start )) s"
    readelf -d "$MODULE" | grep -E 'NEEDED|RUNPATH|RPATH'
    exit 0
fi

# --- the wheel -------------------------------------------------------------------------
# scikit-build-core adds CMAKE_ARGS to its CMake command line.
export CMAKE_ARGS="${CMAKE_CUDA_ARGS[*]}"
export LLAMABIND_CUDA_ARCHITECTURES="$ARCHS"
export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
bash scripts/build_wheel.sh "$VARIANT" --out "dist/$VARIANT"
echo "[build_cuda] wheel built and repaired in $(( $(date +%s) - start )) s"
if [ "$TEST" = 0 ]; then exit 0; fi

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "[build_cuda] --test: no NVIDIA GPU here (nvidia-smi -L failed)" >&2; exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
# All layers on the GPU: llamabind.Model's default already; the suite's Llama objects get it
# from LLAMABIND_TEST_GPU_LAYERS (tests/conftest.py, which also fails fast without a GPU backend).
LLAMABIND_TEST_GPU_LAYERS=-1 bash scripts/build_wheel.sh "$VARIANT" --out "dist/$VARIANT" --test-only -- "${PYTEST_ARGS[@]}"
