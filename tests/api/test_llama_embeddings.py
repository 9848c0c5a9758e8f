"""Llama(embedding=True): embed/create_embedding against the per-token embeddings of the
low-level Context (pooled with numpy), normalisation, truncation, counts, and many inputs
packed into one decode against one input at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from llamabind import Llama
from testutil import N_THREADS, make_llama

TEXTS = ["hello world", "The cat sat on the mat.", "Embeddings map text to vectors of numbers.", "x"]


def _llama(path: Path, **kw) -> Llama:
    return make_llama(path, embedding=True, **kw)


@pytest.fixture(scope="module")
def mean(smollm2_path: Path) -> Iterator[Llama]:
    with _llama(smollm2_path, n_ctx=256, pooling_type=lb.PoolingType.MEAN) as llm:
        yield llm


@pytest.fixture(scope="module")
def none(smollm2_path: Path) -> Iterator[Llama]:
    with _llama(smollm2_path, pooling_type=lb.PoolingType.NONE) as llm:
        yield llm


def token_rows(model: lb.Model, text: str) -> np.ndarray:
    """Per-token embeddings of `text` by the low-level API."""
    tokens = model.vocab.tokenize(text)
    with lb.Context(model, n_ctx=512, n_threads=N_THREADS, n_threads_batch=N_THREADS, embeddings=True,
                    pooling_type=lb.PoolingType.NONE, flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
        ctx.decode_tokens(tokens, pos0=0, all_logits=True)
        return ctx.embeddings(copy=True).astype(np.float64)


def close(a, b, rel: float = 1e-3) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= rel * max(1.0, float(np.max(np.abs(b))))


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_pooling_none_gives_the_per_token_rows(none: Llama, smollm2: lb.Model) -> None:
    assert none.pooling_type() == lb.PoolingType.NONE
    for text in TEXTS[:2]:
        got = np.array(none.embed(text))
        ref = token_rows(smollm2, text)
        assert got.shape == (len(smollm2.vocab.tokenize(text)), none.n_embd())
        assert close(got, ref)


def test_pooling_mean_is_the_mean_of_the_token_rows(mean: Llama, smollm2: lb.Model) -> None:
    assert mean.pooling_type() == lb.PoolingType.MEAN
    for text in TEXTS:
        got = np.array(mean.embed(text))
        assert got.shape == (mean.n_embd(),)
        assert close(got, token_rows(smollm2, text).mean(axis=0))


def test_pooling_last_is_the_last_token_row(smollm2_path: Path, smollm2: lb.Model) -> None:
    with _llama(smollm2_path, n_ctx=128, pooling_type=lb.PoolingType.LAST) as llm:
        assert close(llm.embed(TEXTS[1]), token_rows(smollm2, TEXTS[1])[-1])


def test_normalize_gives_unit_vectors_in_the_same_direction(mean: Llama, none: Llama) -> None:
    raw = np.array(mean.embed(TEXTS[1]))
    unit = np.array(mean.embed(TEXTS[1], normalize=True))
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
    assert close(unit, raw / np.linalg.norm(raw))
    rows = np.array(none.embed(TEXTS[1], normalize=True))
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_many_inputs_in_one_decode_equal_one_at_a_time(mean: Llama, none: Llama) -> None:
    # More inputs than sequences fit in one decode (64): several groups.
    texts = [f"{TEXTS[i % len(TEXTS)].split()[0]} {i}" for i in range(70)]
    together = mean.embed(texts)
    assert len(together) == 70
    for i in (0, 1, 2, 33, 63, 64, 69):
        # Sequences share the decode's kernels (and the attention's blocking), so the
        # values agree to rounding, not bit for bit.
        one = np.asarray(mean.embed(texts[i]))
        assert close(together[i], one, rel=5e-3), i
        assert cosine(together[i], one) > 0.9999, i
    rows = none.embed(TEXTS)
    for text, got in zip(TEXTS, rows):
        assert close(got, none.embed(text), rel=5e-3)


def test_return_count_and_truncate(mean: Llama) -> None:
    vectors, count = mean.embed(TEXTS, return_count=True)
    assert len(vectors) == len(TEXTS)
    assert count == sum(len(mean.tokenize(t.encode())) for t in TEXTS)
    vector, count = mean.embed(TEXTS[0], return_count=True)
    assert count == len(mean.tokenize(TEXTS[0].encode())) and len(vector) == mean.n_embd()
    long_text = "word " * (mean.n_ctx() + 20)
    assert len(mean.tokenize(long_text.encode())) > mean.n_ctx()
    with pytest.raises(ValueError, match=r"\d+ tokens"):
        mean.embed(long_text, truncate=False)
    vector, count = mean.embed(long_text, truncate=True, return_count=True)
    assert count == min(mean.n_batch, mean.n_ctx()) and len(vector) == mean.n_embd()


def test_create_embedding_response(mean: Llama) -> None:
    out = mean.create_embedding(TEXTS[:3])
    assert out["object"] == "list" and out["model"] == mean.model_path
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in out["data"])
    n = sum(len(mean.tokenize(t.encode())) for t in TEXTS[:3])
    assert out["usage"] == {"prompt_tokens": n, "total_tokens": n}
    for d, text in zip(out["data"], TEXTS[:3]):
        assert close(d["embedding"], mean.embed(text))
    single = mean.create_embedding(TEXTS[0], model="emb")
    assert len(single["data"]) == 1 and single["model"] == "emb"


def test_embedding_needs_embedding_true(smollm2_path: Path) -> None:
    with Llama(str(smollm2_path), n_ctx=128, n_threads=N_THREADS, verbose=False) as llm:
        with pytest.raises(ValueError, match="embedding=True"):
            llm.embed("hello")
        with pytest.raises(ValueError, match="embedding=True"):
            llm.create_embedding("hello")
