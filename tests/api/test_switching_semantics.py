"""Behaviour a program switching from llama-cpp-python relies on: an abandoned stream does not
block its Llama, seeds move on from call to call, and SentencePiece detokenization drops only
the space after BOS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamabind import Llama
from testutil import llama_fixture, make_llama

smol = llama_fixture("smollm2_path", n_ctx=512)

CAPITAL = "The capital of France is"
STORY = "Once upon a time"


def text(out: dict) -> str:
    return out["choices"][0]["text"]


def greedy(llm: Llama, prompt: str, n: int) -> str:
    return text(llm.create_completion(prompt, max_tokens=n, temperature=0.0))


def test_a_new_call_takes_over_from_an_abandoned_stream(smol: Llama) -> None:
    expected = greedy(smol, CAPITAL, 8)
    story = greedy(smol, STORY, 16)
    it = smol.create_completion(STORY, max_tokens=16, temperature=0.0, stream=True)
    head = []
    for i, chunk in enumerate(it):
        head.append(chunk["choices"][0]["text"])
        if i == 2:
            break
    # The README's pattern: stop reading, then use the same Llama again.
    assert greedy(smol, CAPITAL, 8) == expected
    # The abandoned stream is not corrupted: resumed, it ends exactly as it would have.
    rest = [chunk["choices"][0]["text"] for chunk in it]
    assert "".join(head + rest) == story
    assert greedy(smol, CAPITAL, 8) == expected


def test_a_call_from_another_thread_waits_for_the_stream(smol: Llama) -> None:
    expected = greedy(smol, CAPITAL, 8)
    story = greedy(smol, STORY, 16)
    it = smol.create_completion(STORY, max_tokens=16, temperature=0.0, stream=True)
    first = next(it)["choices"][0]["text"]
    result: dict[str, str] = {}
    worker = threading.Thread(target=lambda: result.setdefault("text", greedy(smol, CAPITAL, 8)))
    worker.start()
    worker.join(1.0)
    assert worker.is_alive(), "the other thread's call must wait while the stream holds the context"
    rest = "".join(chunk["choices"][0]["text"] for chunk in it)
    worker.join(60)
    assert first + rest == story
    assert result["text"] == expected


def test_closing_an_abandoned_stream_lets_other_threads_in(smol: Llama) -> None:
    expected = greedy(smol, CAPITAL, 8)
    it = smol.create_completion(STORY, max_tokens=16, temperature=0.0, stream=True)
    next(it)
    it.close()
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(greedy(smol, CAPITAL, 8)))
    worker.start()
    worker.join(60)
    assert result == [expected]


def sample_numbers(llm: Llama) -> str:
    return text(llm.create_completion("Pick a number from 1 to 10:", max_tokens=6, temperature=1.0, top_k=0,
                                      top_p=1.0, min_p=0.0))


def test_seed_moves_on_and_state_carries_it(smol: Llama) -> None:
    smol.set_seed(1337)
    state = smol.save_state()
    draws = [sample_numbers(smol) for _ in range(4)]
    assert len(set(draws)) > 1, "unseeded calls must not repeat one sample"
    smol.load_state(state)
    assert [sample_numbers(smol) for _ in range(4)] == draws
    smol.set_seed(1337)
    assert sample_numbers(smol) == draws[0]
    # An explicit seed gives the same sample every time and leaves the sequence reproducible.
    once = text(smol.create_completion("Pick a number from 1 to 10:", max_tokens=6, temperature=1.0, seed=99))
    again = text(smol.create_completion("Pick a number from 1 to 10:", max_tokens=6, temperature=1.0, seed=99))
    assert once == again


def test_fresh_llamas_with_one_seed_agree(smollm2_path: Path) -> None:
    def run() -> list[str]:
        with make_llama(smollm2_path, n_ctx=256, seed=5) as llm:
            return [sample_numbers(llm) for _ in range(3)]

    assert run() == run()


@pytest.fixture(scope="module")
def spm(llama_cpp_dir: Path) -> Iterator[Llama]:
    with Llama(str(llama_cpp_dir / "models" / "ggml-vocab-llama-spm.gguf"), vocab_only=True, verbose=False) as llm:
        yield llm


def test_spm_detokenize_drops_only_the_space_after_bos(spm: Llama) -> None:
    tokens = spm.tokenize(b"Hello World")
    assert tokens[0] == spm.token_bos()
    assert spm.detokenize(tokens) == b"Hello World"
    # Without BOS the tokens are a text's middle: their leading space is real.
    assert spm.detokenize(tokens[1:]) == b" Hello World"
    assert spm.detokenize(spm.tokenize(b"")) == b""
    assert spm.detokenize(spm.tokenize(b"Hello World</s>", special=True), special=True) == b"<s> Hello World</s>"
    assert spm.tokenizer().detokenize(tokens[2:], prev_tokens=tokens[:2]) == b" World"
