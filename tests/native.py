"""Builds the C++ side with plain CMake (no Python involved): the llamabind library, the
example program examples/cpp/simple.cpp, and llama.cpp's own llama-simple compiled from the
pinned source against the same static libraries (the reference for generation tests)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class NativeBuild:
    build_dir: Path
    example: Path  # llamabind-simple (our C++ example)
    reference_simple: Path  # llama.cpp's examples/simple/simple.cpp
    batched: Path  # llamabind-batched (our C++ engine example)
    reference_cwd: Path | None = None  # where llama-simple runs (None: anywhere)


def build_dir() -> Path:
    return Path(os.environ.get("LLAMABIND_CPP_BUILD_DIR", ROOT / "build" / "cpp-tests"))


def build(target_dir: Path | None = None) -> NativeBuild:
    """Configures and builds (incrementally) the C++ tree; raises CalledProcessError on failure."""
    out = target_dir or build_dir()
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [
        "cmake", "-S", str(ROOT), "-B", str(out), *generator,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMABIND_BUILD_EXAMPLES=ON",
        "-DLLAMABIND_BUILD_REFERENCE_TOOLS=ON",
        "-DLLAMABIND_BUILD_PYTHON=OFF",
    ]
    targets = ["llamabind-simple", "llamabind-ref-simple", "llamabind-batched"]
    _run(configure)
    _build_targets(out, targets)
    exe = ".exe" if os.name == "nt" else ""
    return NativeBuild(
        build_dir=out,
        example=out / "examples" / "cpp" / f"llamabind-simple{exe}",
        reference_simple=out / f"llamabind-ref-simple{exe}",
        batched=out / "examples" / "cpp" / f"llamabind-batched{exe}",
    )


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        proc.check_returncode()


def _build_targets(out: Path, targets: list[str]) -> None:
    _run(["cmake", "--build", str(out), "-j", str(os.cpu_count() or 2), "--target", *targets])


def build_rpc_server(native: NativeBuild) -> Path:
    """llama.cpp's RPC worker (tools/rpc/rpc-server.cpp, which llama.cpp installs as
    ggml-rpc-server) compiled from the pinned source in `native`'s build, against the same
    static libraries; raises CalledProcessError when it does not build."""
    _build_targets(native.build_dir, ["llamabind-ref-rpc-server"])
    exe = ".exe" if os.name == "nt" else ""
    return native.build_dir / f"llamabind-ref-rpc-server{exe}"


def build_reference_for_installed(native: NativeBuild, library_dir: Path) -> NativeBuild:
    """`native` with llama-simple compiled from the pinned source against the shared llama.cpp
    libraries of an installed portable llamabind (a wheel), in `library_dir`: the reference
    then runs the very kernels the wheel picked for this CPU, instead of a native build's
    (whose instruction set, e.g. AVX512-FP16, may round differently). It runs in
    `library_dir`, where llama.cpp's own module search finds the wheel's CPU backends."""
    src = ROOT / "extern" / "llama.cpp"
    out = native.build_dir / "reference-for-installed"
    out.mkdir(parents=True, exist_ok=True)
    exe = out / "llama-simple"
    libs = ["libllama.so", "libggml.so", "libggml-base.so"]
    cmd = [
        os.environ.get("CXX", "c++"), "-std=c++17", "-O2", str(src / "examples" / "simple" / "simple.cpp"),
        "-I", str(src / "include"), "-I", str(src / "ggml" / "include"), "-o", str(exe),
        *(str(library_dir / lib) for lib in libs), f"-Wl,-rpath,{library_dir}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        proc.check_returncode()
    return dataclasses.replace(native, reference_simple=exe, reference_cwd=library_dir)


def run_reference_simple(native: NativeBuild, model: Path, prompt: str, n_predict: int) -> str:
    """Runs llama.cpp's llama-simple; returns its stdout (prompt + generated text)."""
    proc = subprocess.run(
        [str(native.reference_simple), "-m", str(Path(model).resolve()), "-n", str(n_predict), prompt],
        capture_output=True, timeout=600, cwd=native.reference_cwd,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"llama-simple failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout.decode("utf-8")


def run_example(native: NativeBuild, model: Path, prompt: str, n_predict: int, threads: int = 2) -> tuple[str, list[int]]:
    """Runs our C++ example; returns (stdout text, generated token ids)."""
    proc = subprocess.run(
        [str(native.example), "-m", str(model), "-n", str(n_predict), "-t", str(threads), "--tokens", prompt],
        capture_output=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"llamabind-simple failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    ids = [int(t) for t in proc.stderr.decode().strip().splitlines()[-1].split()]
    return proc.stdout.decode("utf-8"), ids


def run_batched(native: NativeBuild, model: Path, prompts: list[str], n_predict: int, slots: int,
                threads: int = 2) -> list[list[int]]:
    """Runs our C++ engine example; returns the generated token ids of each prompt."""
    proc = subprocess.run(
        [str(native.batched), "-m", str(model), "-n", str(n_predict), "-t", str(threads), "-s", str(slots), *prompts],
        capture_output=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"llamabind-batched failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    rows = [line.split(":", 1) for line in proc.stdout.decode().strip().splitlines()]
    assert [int(i) for i, _ in rows] == list(range(len(prompts)))
    return [[int(t) for t in ids.split()] for _, ids in rows]
