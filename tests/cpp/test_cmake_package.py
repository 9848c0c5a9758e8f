"""The C++ library as an installed CMake package: `cmake --install` of the plain-CMake build
into a temporary prefix, then examples/cpp-package, a separate project that only does
find_package(llamabind) and links llamabind::llamabind, configured against that prefix,
built and run on SmolLM2. Its greedy output must be llama.cpp's own llama-simple's.

The install reuses the build of the other C++ tests (build/cpp-tests): nothing of llama.cpp
is compiled again; only the example's main.cpp is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from native import ROOT, run_reference_simple
from testutil import N_THREADS

EXAMPLE = ROOT / "examples" / "cpp-package"
N_PREDICT = 32


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    return proc


def generator() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


@pytest.fixture(scope="module")
def prefix(native_build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed from the C++ tests' build into a fresh prefix."""
    out = tmp_path_factory.mktemp("prefix")
    start = time.monotonic()
    proc = run(["cmake", "--install", str(native_build.build_dir), "--prefix", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"cmake --install: {time.monotonic() - start:.1f} s")
    return out


def configure(project: Path, build: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["cmake", "-S", str(project), "-B", str(build), *generator(), "-DCMAKE_BUILD_TYPE=Release",
           f"-DCMAKE_PREFIX_PATH={prefix}"]
    if shutil.which("ccache"):
        cmd.append("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
    # Only the prefix given: no build tree or source tree of llamabind may leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_PREFIX_PATH", "llamabind_DIR", "llama_DIR")}
    return run(cmd, env=env)


@pytest.fixture(scope="module")
def app(prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/cpp-package built against the installed package."""
    build = tmp_path_factory.mktemp("app-build")
    start = time.monotonic()
    proc = configure(EXAMPLE, build, prefix)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = run(["cmake", "--build", str(build)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"example configure + build: {time.monotonic() - start:.1f} s")
    exe = build / ("generate.exe" if os.name == "nt" else "generate")
    assert exe.is_file()
    return exe


def test_install_has_headers_library_and_package(prefix: Path) -> None:
    headers = sorted(p.name for p in (ROOT / "cpp" / "include" / "llamabind").glob("*.hpp"))
    installed = sorted(p.name for p in (prefix / "include" / "llamabind").glob("*.hpp"))
    assert installed == headers
    # llama.h and the ggml headers it includes come with it.
    for name in ("llama.h", "ggml.h", "ggml-backend.h", "ggml-cpu.h"):
        assert (prefix / "include" / name).is_file(), name
    (config,) = prefix.rglob("llamabindConfig.cmake")
    package = config.parent
    assert (package / "llamabindConfigVersion.cmake").is_file()
    assert (package / "llamabindTargets.cmake").is_file()
    libs = {p.name for p in prefix.rglob("*.a")}
    assert {"libllamabind.a", "libllama.a", "libggml.a", "libggml-base.a", "libggml-cpu.a"} <= libs, libs
    # The package is relocatable: nothing in it points back into the build or source tree.
    for f in package.glob("*.cmake"):
        text = f.read_text()
        assert str(ROOT) not in text, f"{f.name} refers to the source tree"


def test_outside_project_matches_llama_simple(app: Path, native_build, smollm2_path: Path) -> None:
    prompt = "The capital of France is"
    proc = subprocess.run([str(app), "-m", str(smollm2_path), "-n", str(N_PREDICT), "-t", str(N_THREADS), prompt],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    reference = run_reference_simple(native_build, smollm2_path, prompt, N_PREDICT)
    assert proc.stdout.decode("utf-8") == reference
    assert "Paris" in reference


def test_outside_project_reports_errors(app: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(app), "-m", str(tmp_path / "missing.gguf"), "hello"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "missing.gguf" in proc.stderr


def test_package_version_is_checked(prefix: Path, tmp_path: Path) -> None:
    """find_package(llamabind 99) fails and names the version that is installed."""
    project = tmp_path / "src"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.21)\n"
        "project(wants_a_newer_llamabind LANGUAGES CXX)\n"
        "find_package(llamabind 99 CONFIG REQUIRED)\n"
    )
    proc = configure(project, tmp_path / "build", prefix)
    assert proc.returncode != 0
    import llamabind

    assert llamabind.__version__ in proc.stderr and "99" in proc.stderr
