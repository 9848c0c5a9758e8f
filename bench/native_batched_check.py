#!/usr/bin/env python3
"""Does llama.cpp's own batched decoding give the same greedy text as one-sequence decoding?

    python bench/native_batched_check.py                 # both models
    python bench/native_batched_check.py --models gemma3 --exe path/to/llama-batched

Runs llama.cpp's llama-batched (built from the pinned source with the extension's flags, in
build/bench) on each prompt with greedy sampling (--top-k 1), once with one sequence and once
with eight parallel sequences of the same prompt, and reports whether the eight texts equal
the one-sequence text. Where they do not, llama.cpp itself rounds batched decodes differently,
and llamabind's engine is held to llama.cpp's batched behaviour instead of to single runs
(tests/api/test_llama_parallel.py).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as harness  # noqa: E402

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,", "1, 2, 3, 4, 5,",
           "The three primary colours are", "Water boils at", "My favourite book is", "SELECT name FROM"]


def batched(exe: Path, model: str, prompt: str, n_parallel: int, n_predict: int, threads: int) -> list[str]:
    cmd = [str(exe), "-m", model, "-p", prompt, "-n", str(n_predict), "-np", str(n_parallel), "--top-k", "1",
           "-t", str(threads), "-fa", "off", "-c", "2048"]
    if n_parallel > 1:
        cmd.append("-kvu")  # llama-batched gives the prompt tokens every sequence id
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-batched failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = proc.stdout + proc.stderr
    if n_parallel == 1:
        return [out]
    return [text for _, text in re.findall(r"sequence (\d+):\n\n(.*?)\n\n", out, flags=re.S)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2", "gemma3"])
    parser.add_argument("--exe", type=Path, default=harness.BUILD / "bin" / "llama-batched")
    parser.add_argument("--n-predict", type=int, default=40, help="prompt plus generated tokens (llama-batched -n)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.exe.exists():
        if not (harness.BUILD / "CMakeCache.txt").exists():
            harness.build_native()  # configures build/bench as bench/run.py does
        subprocess.run(["cmake", "--build", str(harness.BUILD), "--target", "llama-batched"], check=True)
    from llamabind import models

    for name in args.models:
        model = str(models.model_path(name))
        differ = 0
        for prompt in PROMPTS:
            (alone,) = batched(args.exe, model, prompt, 1, args.n_predict, args.threads)
            together = batched(args.exe, model, prompt, 8, args.n_predict, args.threads)
            same = all(text in alone for text in together)
            differ += not same
            print(f"{name}: {prompt!r}: 8 parallel sequences give {len(set(together))} distinct text(s); "
                  f"{'same as' if same else 'DIFFERENT from'} one sequence")
        print(f"{name}: {differ} of {len(PROMPTS)} prompts differ between batched and one-sequence decoding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
