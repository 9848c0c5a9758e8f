"""Embeddings of many texts: packed into each decode as separate sequences sharing the
context's cells, then read per sequence (pooled) or per token (pooling NONE)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ._core import Batch, Context, PoolingType


def _normalized(v: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def tokenize_inputs(texts: list[str], tokenize: Callable[[str], list[int]], limit: int,
                    truncate: bool) -> list[list[int]]:
    """Each text's tokens, cut to `limit` with truncate, else a ValueError for a longer one."""
    tokenized = []
    for t in texts:
        ids = tokenize(t)
        if len(ids) > limit:
            if not truncate:
                raise ValueError(f"input of {len(ids)} tokens exceeds the batch size {limit}")
            ids = ids[:limit]
        tokenized.append(ids)
    return tokenized


def embed_all(ctx: Context, tokenized: list[list[int]], limit: int, normalize: bool) -> tuple[list[Any], int]:
    """The embeddings of every input (a vector, or with pooling NONE a row per token) and the
    number of tokens evaluated. Inputs go into each decode as long as they fit `limit` tokens
    and the context's sequences; the context is left empty."""
    pooled = ctx.pooling_type != PoolingType.NONE
    results: list[Any] = []
    total = 0
    n_seq_max = ctx.n_seq_max
    i = 0
    try:
        while i < len(tokenized):
            group: list[list[int]] = []
            used = 0
            while i < len(tokenized) and len(group) < n_seq_max and used + len(tokenized[i]) <= limit:
                group.append(tokenized[i])
                used += len(tokenized[i])
                i += 1
            results.extend(_embed_group(ctx, group, pooled, normalize))
            total += used
    finally:
        ctx.memory_clear()
    return results, total


def _embed_group(ctx: Context, group: list[list[int]], pooled: bool, normalize: bool) -> list[Any]:
    ctx.memory_clear()
    n = sum(len(g) for g in group)
    batch = Batch(max(n, 1), n_seq_max=1)
    tokens = np.concatenate([np.asarray(g, np.int32) for g in group]) if n else np.zeros(0, np.int32)
    pos = np.concatenate([np.arange(len(g), dtype=np.int32) for g in group]) if n else tokens
    seqs = np.concatenate([np.full(len(g), s, np.int32) for s, g in enumerate(group)]) if n else tokens
    empty = [s for s, g in enumerate(group) if not g]
    if n:
        batch.set_tokens(tokens, pos=pos, seq_ids=seqs, logits=True)
        ctx.decode(batch)
    out: list[Any] = []
    if pooled:
        for s in range(len(group)):
            v = np.zeros(ctx.n_embd, np.single) if s in empty else ctx.embeddings_seq(s)
            out.append(_normalized(v).tolist() if normalize else v.tolist())
    else:
        rows = ctx.embeddings(copy=True) if n else np.zeros((0, ctx.n_embd), np.single)
        start = 0
        for g in group:
            block = rows[start:start + len(g)]
            start += len(g)
            out.append([(_normalized(r) if normalize else r).tolist() for r in block])
    return out
