"""all-MiniLM-L6-v2, a real embedding model (BERT: WordPiece vocabulary, non-causal, mean
pooling), against sentence-transformers on the same weights: scripts/convert_minilm.py converts
the model and writes that reference for varied sentences. The mechanics of embed and
create_embedding are tested on SmolLM2 in test_llama_embeddings.py; this file checks that the
numbers of an embedding model are right, through Llama and through the low-level Context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llamabind as lb
from llamabind import Llama
from minilm_model import MiniLMReference
from testutil import N_THREADS, make_llama

# llama.cpp (f16 weights) and sentence-transformers (float32) agree to ~3e-4 per component.
ATOL = 2e-3
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> Iterator[Llama]:
    with make_llama(minilm_path, embedding=True) as llm:
        yield llm


def assert_matches(got: Any, want: Any, label: str, atol: float = ATOL) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, label
    diff = float(np.max(np.abs(got - want)))
    cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert diff <= atol and cosine > MIN_COSINE, f"{label!r}: max |difference| {diff:.2e}, cosine {cosine:.7f}"


def unit(v: Any) -> np.ndarray:
    a = np.asarray(v, np.float64)
    out: np.ndarray = a / np.linalg.norm(a)
    return out


def test_the_model_is_a_mean_pooled_bert(minilm: Llama) -> None:
    assert minilm.metadata["general.architecture"] == "bert"
    assert minilm.pooling_type() == lb.PoolingType.MEAN
    assert minilm.n_embd() == 384


def test_tokens_are_the_reference_tokenizers(minilm: Llama, minilm_reference: MiniLMReference) -> None:
    for text, ids in zip(minilm_reference.sentences, minilm_reference.token_ids):
        assert minilm.tokenize(text.encode()) == ids, text


def test_embed_matches_sentence_transformers(minilm: Llama, minilm_reference: MiniLMReference) -> None:
    for text, want in zip(minilm_reference.sentences, minilm_reference.vectors):
        got = minilm.embed(text, normalize=True)
        assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)
        assert_matches(got, want, text)


def test_context_embeddings_match_sentence_transformers(minilm_path: Path,
                                                        minilm_reference: MiniLMReference) -> None:
    """The low-level API: one sentence per decode, then all of them as the sequences of one
    encode; the context pools by the model's own type (mean)."""
    sentences, vectors = minilm_reference.sentences, minilm_reference.vectors
    model = lb.Model(minilm_path)
    tokens = [model.vocab.tokenize(s) for s in sentences]
    # n_seq_max divides n_ubatch (512): otherwise the pinned llama.cpp aborts while it reserves
    # a pooled non-causal graph (GGML_ASSERT ggml_can_mul_mat), e.g. n_seq_max=13.
    assert len(sentences) <= 16
    with lb.Context(model, n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=16, n_threads=N_THREADS,
                    n_threads_batch=N_THREADS, embeddings=True) as ctx:
        assert ctx.pooling_type == lb.PoolingType.MEAN
        for text, ids, want in zip(sentences, tokens, vectors):
            ctx.decode_tokens(ids, pos0=0)
            assert_matches(unit(ctx.embeddings_seq(0)), want, text)
        n = sum(len(t) for t in tokens)
        batch = lb.Batch(n, n_seq_max=1)
        batch.set_tokens(np.concatenate([np.asarray(t, np.int32) for t in tokens]),
                         pos=np.concatenate([np.arange(len(t), dtype=np.int32) for t in tokens]),
                         seq_ids=np.concatenate([np.full(len(t), s, np.int32) for s, t in enumerate(tokens)]),
                         logits=True)
        ctx.encode(batch)
        for s, (text, want) in enumerate(zip(sentences, vectors)):
            assert_matches(unit(ctx.embeddings_seq(s)), want, text)


def test_many_sentences_in_one_call_equal_one_at_a_time(minilm: Llama, minilm_reference: MiniLMReference) -> None:
    sentences = minilm_reference.sentences
    alone = [np.asarray(minilm.embed(s, normalize=True)) for s in sentences]
    # Five rounds: more inputs than one decode takes (64 sequences, 512 tokens), so several.
    texts = sentences * 5
    together = minilm.embed(texts, normalize=True)
    assert len(together) == len(texts)
    for i, (text, got) in enumerate(zip(texts, together)):
        # Same tokens, same weights; only the kernels' blocking differs between batch shapes.
        assert_matches(got, alone[i % len(sentences)], f"{i}: {text}", atol=1e-4)
        assert_matches(got, minilm_reference.vectors[i % len(sentences)], f"{i}: {text}")


def test_create_embedding_counts_the_tokens(minilm: Llama, minilm_reference: MiniLMReference) -> None:
    sentences = minilm_reference.sentences
    out = minilm.create_embedding(sentences)
    assert out["object"] == "list" and out["model"] == minilm.model_path
    assert [(d["object"], d["index"], len(d["embedding"])) for d in out["data"]] == [
        ("embedding", i, 384) for i in range(len(sentences))]
    n = sum(len(minilm.tokenize(s.encode())) for s in sentences)
    assert n == sum(len(ids) for ids in minilm_reference.token_ids)  # [CLS] and [SEP] count
    assert out["usage"] == {"prompt_tokens": n, "total_tokens": n}
    for d, text, want in zip(out["data"], sentences, minilm_reference.vectors):
        assert_matches(unit(d["embedding"]), want, text)


def test_pooling_none_gives_one_row_per_token(minilm_path: Path, minilm_reference: MiniLMReference) -> None:
    """Rows for every token, [CLS] and [SEP] included, whose mean is sentence-transformers'
    embedding (mean pooling over the same tokens)."""
    with make_llama(minilm_path, embedding=True, pooling_type=lb.PoolingType.NONE) as llm:
        assert llm.pooling_type() == lb.PoolingType.NONE
        rows = llm.embed(minilm_reference.sentences)
    for text, ids, got, want in zip(minilm_reference.sentences, minilm_reference.token_ids, rows,
                                    minilm_reference.vectors):
        got = np.asarray(got, np.float64)
        assert got.shape == (len(ids), 384), text
        assert_matches(unit(got.mean(axis=0)), want, text)
