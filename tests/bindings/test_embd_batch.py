"""Embeddings batches: rows of input embeddings instead of token ids.

Feeding a model the rows of its own token-embedding matrix must give the same logits as
feeding the token ids (the model's first operation is that very lookup). The matrix is
read from the file with the gguf package, not through llamabind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llamabind as lb


def token_embedding_rows(path: Path, tokens: list[int]) -> np.ndarray:
    import gguf

    reader = gguf.GGUFReader(path)
    (tensor,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
    matrix = np.asarray(tensor.data).reshape(-1, int(tensor.shape[0]))  # (n_vocab, n_embd)
    return np.ascontiguousarray(matrix[tokens], dtype=np.float32)


def test_embd_batch_equals_token_batch(tiny: lb.Model, tiny_path: Path, make_tiny_ctx) -> None:
    tokens = tiny.vocab.tokenize("The quick brown fox jumps", add_special=True)
    rows = token_embedding_rows(tiny_path, tokens)
    assert rows.shape == (len(tokens), tiny.n_embd_inp)

    ctx_tokens = make_tiny_ctx()
    ctx_tokens.decode(lb.Batch.from_tokens(tokens, all_logits=True))
    expected = ctx_tokens.logits(copy=True)

    ctx_rows = make_tiny_ctx()
    batch = lb.Batch(len(tokens), embd=tiny.n_embd_inp)
    assert batch.token is None and batch.embd == tiny.n_embd_inp
    batch.set_embd(rows, logits=True)
    assert batch.n_tokens == len(tokens) and batch.n_outputs == len(tokens)
    np.testing.assert_array_equal(batch.embd_rows[: len(tokens)], rows)
    ctx_rows.decode(batch)
    np.testing.assert_allclose(ctx_rows.logits(), expected, rtol=1e-4, atol=1e-4)

    # Row by row with add_embd, continuing the sequence after the first half.
    ctx_mix = make_tiny_ctx()
    half = len(tokens) // 2
    ctx_mix.decode(lb.Batch.from_tokens(tokens[:half]))
    step = lb.Batch(len(tokens), embd=tiny.n_embd_inp)
    for i in range(half, len(tokens)):
        step.add_embd(rows[i], pos=i, seq_ids=0, logits=(i == len(tokens) - 1))
    ctx_mix.decode(step)
    np.testing.assert_allclose(ctx_mix.logits_ith(-1), expected[-1], rtol=1e-4, atol=1e-4)


def test_embd_batch_rejects_wrong_widths(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx()
    wrong = lb.Batch(2, embd=tiny.n_embd_inp + 1)
    wrong.set_embd(np.zeros((2, tiny.n_embd_inp + 1), np.float32))
    with pytest.raises(lb.InvalidArgumentError, match="embeddings batch rows have"):
        ctx.decode(wrong)
    batch = lb.Batch(2, embd=tiny.n_embd_inp)
    with pytest.raises(lb.InvalidArgumentError, match=r"shape \(n, embd="):
        batch.set_embd(np.zeros((2, 3), np.float32))
    with pytest.raises(lb.InvalidArgumentError, match="1-D"):
        batch.add_embd(np.zeros(3, np.float32), pos=0)
    with pytest.raises(lb.InvalidArgumentError, match="embeddings batch"):
        batch.add(1, 0)
    assert lb.Batch(2).embd_rows is None
    assert batch.token is None
    # After the failures the context still decodes.
    ctx.decode(lb.Batch.from_tokens([1, 2]))
    assert ctx.seq_pos_max(0) == 1
