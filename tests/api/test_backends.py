"""Which backends are in use (llamabind.backend_info), checked against the processor itself
(/proc/cpuinfo) and, for a portable build (the wheels), against llama.cpp's own list of CPU
variants in the pinned source: the module that was loaded is the best one this CPU can run.

The tests marked `portable` need a build with LLAMABIND_PORTABLE=ON: they run when the test
suite runs against an installed wheel (scripts/build_wheel.sh does that) and are skipped,
saying so, in the default build, whose CPU backend is compiled into the extension."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

import llamabind as lb

ROOT = Path(__file__).resolve().parents[2]

# ggml's feature names (the CMake options of ggml_add_cpu_backend_variant, which are also the
# names its CPU backend reports) -> the Linux /proc/cpuinfo flags each one needs.
X86_FLAGS = {
    "SSE42": {"sse4_2"},
    "AVX": {"avx"},
    "F16C": {"f16c"},
    "FMA": {"fma"},
    "AVX2": {"avx2"},
    "BMI2": {"bmi2"},
    "AVX_VNNI": {"avx_vnni"},
    "AVX512": {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"},
    "AVX512_VBMI": {"avx512vbmi"},
    "AVX512_VNNI": {"avx512_vnni"},
    "AVX512_BF16": {"avx512_bf16"},
    "AMX_TILE": {"amx_tile"},
    "AMX_INT8": {"amx_int8"},
}
AMX = {"AMX_TILE", "AMX_INT8", "AMX_BF16"}

IS_LINUX_X86 = sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")
linux_x86 = pytest.mark.skipif(not IS_LINUX_X86, reason="reads x86 feature flags from /proc/cpuinfo")
portable = pytest.mark.skipif(
    not lb.backend_info()["dynamic"],
    reason="default build: the CPU backend is compiled into the extension; these run against the portable "
    "wheel (LLAMABIND_PORTABLE=ON, see scripts/build_wheel.sh)",
)


def cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("no flags line in /proc/cpuinfo")


def cpu_backend() -> lb.BackendDescription:
    (cpu,) = [b for b in lb.backend_info()["backends"] if b["name"] == "CPU"]
    return cpu


def x86_variants() -> dict[str, set[str]]:
    """llama.cpp's x86-64 CPU variants and their features, read from the pinned source."""
    text = (ROOT / "extern" / "llama.cpp" / "ggml" / "src" / "CMakeLists.txt").read_text()
    x86 = text[text.index('if (GGML_SYSTEM_ARCH STREQUAL "x86")'):text.index('elseif(GGML_SYSTEM_ARCH STREQUAL "ARM")')]
    variants = {m[1]: set(m[2].split()) for m in re.finditer(r"ggml_add_cpu_backend_variant\((\w+)([^)]*)\)", x86)}
    assert {"x64", "haswell", "skylakex", "icelake"} <= set(variants), variants
    return variants


def test_backend_info_describes_the_cpu_backend() -> None:
    info = lb.backend_info()
    cpu = cpu_backend()
    assert cpu["devices"] >= 1 and cpu["features"]
    assert any(d["type"] == "cpu" for d in lb.devices())
    # llama.cpp's own one-line summary lists the same features.
    summary = lb.system_info()
    assert "CPU : " in summary
    for name, value in cpu["features"].items():
        assert f"{name} = {value} |" in summary
    assert info["gpu_offload"] == lb.supports_gpu_offload()
    assert info["backends"][-1]["name"] == "CPU"  # ggml registers GPU backends first


@linux_x86
def test_cpu_features_in_use_are_ones_this_processor_has() -> None:
    """Every instruction-set extension the CPU backend was compiled with is one the kernel
    reports for this processor (otherwise it would die with SIGILL)."""
    flags = cpuinfo_flags()
    features = cpu_backend()["features"]
    for name, needed in X86_FLAGS.items():
        if features.get(name) == "1":
            assert needed <= flags, f"{name} in use but /proc/cpuinfo lacks {needed - flags}"


@linux_x86
def test_amx_kernels_are_left_out() -> None:
    """ggml's AMX matmul crashes at the pinned commit (see CMakeLists.txt): neither the native
    build nor any module of the portable one may contain it, even on an AMX processor."""
    assert cpu_backend()["features"].get("AMX_INT8") != "1"


@portable
def test_portable_build_loads_modules_from_the_package() -> None:
    info = lb.backend_info()
    package = Path(lb._core.__file__).resolve().parent
    assert info["directory"] is not None and Path(info["directory"]).resolve() == package
    for backend in info["backends"]:
        assert backend["library"] is not None, backend
        assert Path(backend["library"]).resolve().parent == package
    cpu = cpu_backend()
    assert cpu["variant"] == info["cpu_variant"]
    assert cpu["library"] is not None
    assert Path(cpu["library"]).name.startswith(f"libggml-cpu-{cpu['variant']}.")


@portable
@linux_x86
def test_portable_build_picks_the_best_variant_for_this_cpu() -> None:
    """The loaded module is one this CPU can run, and no shipped module that it could also run
    has a strictly larger feature set."""
    flags = cpuinfo_flags()
    package = Path(lb._core.__file__).resolve().parent
    shipped = {name: feats for name, feats in x86_variants().items() if (package / f"libggml-cpu-{name}.so").is_file()}
    assert len(shipped) >= 10, sorted(shipped)  # the whole x86-64 list, not a generic fallback

    def runnable(feats: set[str]) -> bool:
        return all(X86_FLAGS[f] <= flags for f in feats)

    chosen = lb.backend_info()["cpu_variant"]
    assert chosen in shipped
    assert runnable(shipped[chosen])
    better = [name for name, feats in shipped.items() if runnable(feats) and feats > shipped[chosen]]
    assert not better, f"{chosen} loaded although {better} also run here"
    # The module reports the features its variant is defined with (less AMX: see above).
    features = cpu_backend()["features"]
    for feat in shipped[chosen] - AMX - {"SSE42"}:  # ggml reports SSE3/SSSE3 but not SSE4.2
        assert features.get(feat) == "1", (chosen, feat, features)


@portable
def test_portable_build_without_its_modules_fails_to_import_clearly(tmp_path: Path) -> None:
    env = dict(os.environ, LLAMABIND_BACKEND_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", "import llamabind"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 1
    assert "no usable CPU backend" in proc.stderr and str(tmp_path) in proc.stderr


@portable
def test_portable_build_honours_llamabind_backend_dir(tmp_path: Path) -> None:
    """LLAMABIND_BACKEND_DIR picks the modules: given only the baseline x86-64 (or arm64)
    module, that is the one in use."""
    package = Path(lb._core.__file__).resolve().parent
    baseline = "x64" if IS_LINUX_X86 else None
    if baseline is None or not (package / f"libggml-cpu-{baseline}.so").is_file():
        pytest.skip("the baseline module check is written for Linux x86-64")
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / f"libggml-cpu-{baseline}.so").symlink_to(package / f"libggml-cpu-{baseline}.so")
    # A repaired wheel's modules find the libraries auditwheel grafted (libgomp) at
    # $ORIGIN/../llamabind.libs, and $ORIGIN is the directory of the symlink.
    grafted = package.parent / "llamabind.libs"
    if grafted.is_dir():
        (tmp_path / "llamabind.libs").symlink_to(grafted)
    code = "import llamabind, json; print(json.dumps(llamabind.backend_info()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, LLAMABIND_BACKEND_DIR=str(modules)))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["cpu_variant"] == baseline and info["directory"] == str(modules)
    cpu = [b for b in info["backends"] if b["name"] == "CPU"][0]
    assert cpu["features"].get("AVX") is None and cpu["features"].get("AVX2") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds stand-in shared libraries with cc")
def test_cuda_wheels_load_the_runtime_from_nvidias_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA build finds the CUDA runtime and cuBLAS in NVIDIA's wheel layout (here stand-in
    libraries under the right names), the major version recorded at build time deciding which."""
    from llamabind import _runtime

    nvidia = tmp_path / "site-packages" / "nvidia"
    src = tmp_path / "empty.c"
    src.write_text("int stand_in;\n")
    layout = {"cu13/lib": ["libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13"],
              "cuda_runtime/lib": ["libcudart.so.12"], "cublas/lib": ["libcublasLt.so.12", "libcublas.so.12"]}
    for sub, names in layout.items():
        (nvidia / sub).mkdir(parents=True)
        for name in names:
            subprocess.run(["cc", "-shared", "-fPIC", "-o", str(nvidia / sub / name), str(src)], check=True)
    monkeypatch.setattr(_runtime, "_nvidia_roots", lambda: [nvidia])
    marker = tmp_path / "cuda_runtime.txt"
    monkeypatch.setattr(_runtime, "_MARKER", marker)
    assert _runtime.preload_cuda_libraries() == []  # not a CUDA build
    for major, sub in (("13", "cu13/lib"), ("12", None)):
        marker.write_text(major + "\n")
        loaded = [Path(p) for p in _runtime.preload_cuda_libraries()]
        assert [p.name for p in loaded] == [f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}"]
        if sub is not None:
            assert all(p.parent == nvidia / sub for p in loaded)
        maps = Path("/proc/self/maps").read_text()
        assert all(str(p) in maps for p in loaded)


@portable
def test_portable_build_reports_its_modules_through_logging_only() -> None:
    """ggml announces every module it loads; at import that goes to the `llamabind` logger,
    not to stderr (which stays clean unless logging is configured)."""
    quiet = subprocess.run([sys.executable, "-c", "import llamabind"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == ""
    code = ("import logging; logging.basicConfig(level=logging.INFO); import llamabind; "
            "llamabind._core.flush_logs()")
    logged = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert logged.returncode == 0
    assert f"loaded CPU backend from {lb.backend_info()['backends'][-1]['library']}" in logged.stderr
