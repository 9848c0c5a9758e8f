"""The C++ library used from a plain C++ program (examples/cpp/simple.cpp, built with CMake
and no Python) generates exactly what llama.cpp's own llama-simple generates."""

from __future__ import annotations

import pytest

from native import run_example, run_reference_simple

N_PREDICT = 64
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["smollm2", "gemma3"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_example_matches_llama_simple(native_build, request, model_name: str, prompt: str) -> None:
    model = request.getfixturevalue(f"{model_name}_path")
    ours, ids = run_example(native_build, model, prompt, N_PREDICT)
    reference = run_reference_simple(native_build, model, prompt, N_PREDICT)
    assert ours == reference
    # Greedy runs of these prompts do not stop early; a short run would compare little.
    assert len(ids) == N_PREDICT


def test_example_reports_missing_model(native_build, tmp_path) -> None:
    import subprocess

    proc = subprocess.run(
        [str(native_build.example), "-m", str(tmp_path / "missing.gguf"), "hello"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "no such file" in proc.stderr and "missing.gguf" in proc.stderr
