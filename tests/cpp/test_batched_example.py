"""The C++ engine used from a plain C++ program (examples/cpp/batched.cpp): several prompts
generated together, two slots for five prompts (so requests wait and take freed slots), give
each prompt exactly the tokens our single-sequence C++ example gives it alone (which
test_example.py checks against llama.cpp's own llama-simple)."""

from __future__ import annotations

import pytest

from native import run_batched, run_example
from testutil import N_THREADS

N_PREDICT = 24
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3,", "Water boils at"]


@pytest.mark.slow
def test_batched_example_matches_each_prompt_alone(native_build, smollm2_path) -> None:
    # SmolLM2 only: Gemma 3's batched decode differs slightly from its one-sequence decode in
    # llama.cpp itself (tests/api/test_llama_parallel.py::test_llama_decode_batched_against_alone).
    model = smollm2_path
    together = run_batched(native_build, model, PROMPTS, N_PREDICT, slots=2, threads=N_THREADS)
    for prompt, ids in zip(PROMPTS, together):
        _, alone = run_example(native_build, model, prompt, N_PREDICT, threads=N_THREADS)
        assert ids == alone, prompt


def test_batched_example_reports_errors(native_build, tmp_path) -> None:
    import subprocess

    proc = subprocess.run([str(native_build.batched), "-m", str(tmp_path / "missing.gguf"), "hi"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "missing.gguf" in proc.stderr
