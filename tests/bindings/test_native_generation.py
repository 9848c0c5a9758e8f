"""Greedy generation through the Python module gives exactly the tokens of llama.cpp's own
llama-simple (built from the same pinned source) and of our C++ layer."""

from __future__ import annotations

from pathlib import Path

import pytest

import llamabind as lb
from testutil import N_THREADS
from native import run_example, run_reference_simple

N_PREDICT = 64
PROMPT = "The capital of France is"


def greedy_python(model_path: Path, prompt: str, n_predict: int) -> tuple[list[int], list[int], lb.Vocab]:
    """The decode -> sample -> piece loop written against the binding's Batch API."""
    model = lb.Model(model_path)
    vocab = model.vocab
    prompt_ids = vocab.tokenize(prompt, add_special=True, parse_special=True)
    ctx = lb.Context(model, n_ctx=len(prompt_ids) + n_predict, n_batch=len(prompt_ids),
                     n_threads=N_THREADS, n_threads_batch=N_THREADS)
    sampler = lb.SamplerChain().add_greedy()
    batch = lb.Batch.from_tokens(prompt_ids)
    generated: list[int] = []
    pos = len(prompt_ids)
    for _ in range(n_predict):
        ctx.decode(batch)
        token = sampler.sample(ctx, -1)
        if vocab.is_eog(token):
            break
        generated.append(token)
        batch.clear()
        batch.add(token, pos, 0, True)
        pos += 1
    return prompt_ids, generated, vocab


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["smollm2", "gemma3"])
def test_python_greedy_matches_llama_simple_and_cpp(native_build, reference_build, request, model_name: str) -> None:
    path = request.getfixturevalue(f"{model_name}_path")
    prompt_ids, generated, vocab = greedy_python(path, PROMPT, N_PREDICT)
    assert len(generated) == N_PREDICT

    # llama-simple prints every prompt and generated token as token_to_piece(special=True).
    pieces = b"".join(vocab.token_to_piece(t, special=True) for t in prompt_ids + generated)
    reference = run_reference_simple(reference_build, path, PROMPT, N_PREDICT)
    assert pieces.decode("utf-8") + "\n" == reference

    _, cpp_ids = run_example(native_build, path, PROMPT, N_PREDICT)
    assert generated == cpp_ids
