#!/usr/bin/env bash
# Builds llamabind._core with AddressSanitizer + UndefinedBehaviorSanitizer and runs tests
# under it:
#   bash scripts/sanitize.sh [pytest arguments]     (default: tests/bindings tests/api)
#
# What is instrumented (CMake options LLAMABIND_SANITIZE and LLAMABIND_SANITIZE_LLAMA_CPP, see
# CMakeLists.txt): llamabind's C++ layer and the pybind11 module; with SANITIZE_LLAMA_CPP=1
# also llama.cpp's libllama and ggml-base (model loading, gguf.cpp, the vocabulary, the
# samplers), which takes much longer to build. ggml-cpu's compute kernels never (speed). The
# ASan runtime's malloc and string/memory interceptors check every library either way.
# The build is kept apart from the editable install: CMake build dir build/asan, the wheel
# unpacked into build/asan-site, put first on PYTHONPATH; build/asan-site/sitecustomize.py
# takes the editable install's import hook out of sys.meta_path so that `import llamabind`
# finds the sanitized copy. The script checks that it did before running anything.
#
# Environment:
#   SANITIZE_SKIP_BUILD=1   reuse build/asan-site
#   SANITIZE_JOBS=N         parallel compile jobs (default: number of CPUs)
#   SANITIZE_LLAMA_CPP=1    instrument libllama and ggml-base too
#   PYTHON                  interpreter to build for and run with (default: python3)
#
# Runtime options: ASan's leak checker is off (CPython keeps objects alive until exit by
# design, so every run would "leak"; tests/bindings/test_leaks.py measures leaks instead);
# the first ASan or UBSan report stops the process (the test that caused it fails with the
# report on its stderr). Suppressions (scripts/sanitize.*.supp) are for documented
# third-party issues only. Tests that cannot work under ASan are deselected below, each with
# its reason. The summary line of pytest and any report found in the log are printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PY=${PYTHON:-python3}
BUILD_DIR=build/asan
WHEEL_DIR=build/asan-wheel
SITE=build/asan-site
JOBS=${SANITIZE_JOBS:-$(nproc)}

if [[ "${SANITIZE_SKIP_BUILD:-0}" != 1 ]]; then
    rm -rf "$WHEEL_DIR"
    echo "== building the sanitized wheel in $BUILD_DIR ($JOBS jobs)"
    # A plain release build of everything else, so ccache can reuse the normal build's
    # objects for ggml-cpu.
    CMAKE_BUILD_PARALLEL_LEVEL=$JOBS "$PY" -m pip wheel . --no-build-isolation --no-deps -q -w "$WHEEL_DIR" \
        -Cbuild-dir="$BUILD_DIR" \
        -Ccmake.define.LLAMABIND_SANITIZE=address,undefined \
        -Ccmake.define.LLAMABIND_SANITIZE_LLAMA_CPP="$([[ "${SANITIZE_LLAMA_CPP:-0}" == 1 ]] && echo ON || echo OFF)" \
        -Ccmake.define.LLAMABIND_BUILD_EXAMPLES=OFF
    rm -rf "$SITE"
    mkdir -p "$SITE"
    "$PY" -m zipfile -e "$WHEEL_DIR"/llamabind-*.whl "$SITE"
    # sitecustomize runs after the .pth files, so it can take the editable install's finder
    # (which would otherwise win over PYTHONPATH) out of sys.meta_path.
    cat > "$SITE/sitecustomize.py" <<'PYEOF'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_llamabind_editable")
                    and not type(f).__module__.startswith("_editable_skbc_llamabind")
                    and "scikit_build_core" not in type(f).__module__]
PYEOF
fi

ASAN_LIB=$(readlink -f "$(gcc -print-file-name=libasan.so)")
UBSAN_LIB=$(readlink -f "$(gcc -print-file-name=libubsan.so)")
export PYTHONPATH="$ROOT/$SITE${PYTHONPATH:+:$PYTHONPATH}"
export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB"
# Reports go to files (one per process, children included): pytest's output capture would
# swallow a report written to stderr by a process that then dies.
REPORTS=build/asan-reports
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
export ASAN_OPTIONS="log_path=$ROOT/$REPORTS/asan:detect_leaks=0:halt_on_error=1:abort_on_error=0:symbolize=1:print_summary=1:detect_stack_use_after_return=0:check_initialization_order=1:allocator_may_return_null=1:suppressions=$ROOT/scripts/sanitize.asan.supp"
export UBSAN_OPTIONS="log_path=$ROOT/$REPORTS/ubsan:print_stacktrace=1:halt_on_error=1:report_error_type=1:suppressions=$ROOT/scripts/sanitize.ubsan.supp"
# Python's small-object allocator hides heap errors from ASan: malloc everywhere.
export PYTHONMALLOC=malloc

CORE=$("$PY" -c 'import importlib.util as u; print(u.find_spec("llamabind._core").origin)')
case "$CORE" in
    "$ROOT/$SITE"/*) ;;
    *) echo "llamabind._core resolves to $CORE, not the sanitized build in $SITE" >&2; exit 1 ;;
esac
# (grep -c, not -q: with pipefail, grep -q closing the pipe early fails nm with SIGPIPE)
if [[ $(nm -D "$CORE" | grep -c "__asan_report") -eq 0 ]]; then
    echo "$CORE is not instrumented with AddressSanitizer" >&2
    exit 1
fi
echo "== sanitized module: $CORE"

if [[ $# -eq 0 ]]; then
    set -- tests/bindings tests/api
fi

LOG=build/asan-pytest.log
# Deselected under ASan (not bugs):
# - test_fatal_decode_is_code_below_minus_1: caps RLIMIT_AS at the current VmSize + 16 MiB;
#   ASan reserves terabytes of address space for its shadow memory.
# - test_close_frees_the_weights, test_leaks.py: measure RSS, which ASan's quarantine and
#   shadow memory distort.
# - test_native_generation.py, test_greedy_equals_llama_simple: build and run the native C++
#   programs, which are not the sanitized module.
set +e
"$PY" -m pytest -p no:cacheprovider -o addopts="-ra --strict-markers --strict-config" \
    --deselect tests/bindings/test_errors.py::test_fatal_decode_is_code_below_minus_1 \
    --deselect tests/api/test_llama_construct.py::test_close_frees_the_weights \
    --ignore tests/bindings/test_leaks.py \
    --ignore tests/bindings/test_native_generation.py \
    -k "not test_greedy_equals_llama_simple" \
    "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
# UBSan does not always honour log_path; its reports in children end up in the pytest log.
reports=$(cat "$REPORTS"/* "$LOG" 2>/dev/null | grep -cE "ERROR: AddressSanitizer|runtime error:" || true)
echo "== sanitizer reports: $reports (files in $REPORTS; pytest log: $LOG)"
for f in "$REPORTS"/*; do
    [[ -f "$f" ]] || continue
    echo "--- $f"
    grep -E "ERROR: AddressSanitizer|runtime error:|SUMMARY" "$f" | head -5
done
if [[ "$reports" -ne 0 && $rc -eq 0 ]]; then
    rc=1
fi
exit $rc
