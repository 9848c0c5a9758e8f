"""Reranking: how relevant each of many documents is to one query, scored by a model with rank
pooling (a cross-encoder with a classification head: llama.cpp's LLAMA_POOLING_TYPE_RANK).

Each (query, document) pair is one sequence, built as llama.cpp's llama-server builds rerank
inputs: the model's ``rerank`` template (``tokenizer.chat_template.rerank``, with ``{query}``
and ``{document}``) when it has one, else ``BOS query EOS SEP document EOS`` where the
vocabulary adds those tokens (BERT: ``[CLS] query [SEP] document [SEP]``). The pairs are
packed into one decode as separate sequences (as many as fit the batch and the context's
sequences, then the next), and each pair's score is the first of the n_cls_out values rank
pooling gives per sequence, as llama-server's /v1/rerank reads it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, List, Literal, Optional, TypedDict

from ._core import Context, PoolingType, Vocab
from ._embedding import embed_all
from ._sequence import SingleSequence

_PLACEHOLDER = re.compile(r"\{query\}|\{document\}")


class RerankDocument(TypedDict):
    """A ranked document's text (with ``return_documents=True``)."""

    text: str


class _RerankResultKeys(TypedDict):
    index: int
    relevance_score: float


class RerankResult(_RerankResultKeys, total=False):
    """One document's place in the ranking: its index in the `documents` given, its score
    (higher: more relevant) and, with ``return_documents=True``, the document itself."""

    document: RerankDocument


class RerankUsage(TypedDict):
    """Tokens evaluated: every (query, document) pair, special tokens included."""

    prompt_tokens: int
    total_tokens: int


class RerankResponse(TypedDict):
    """What ``Llama.rerank`` returns: llama-server's /v1/rerank response (``results`` best
    first, cut to ``top_n``) plus ``scores``, every document's score in document order."""

    object: Literal["list"]
    model: str
    results: List[RerankResult]
    scores: List[float]
    usage: RerankUsage


def check_arguments(query: Any, documents: Any, top_n: Any) -> tuple[str, list[str], int]:
    """The query, the documents as a list and top_n (None: every document) once checked;
    TypeError for a value of the wrong type, ValueError for no documents or top_n < 1."""
    if not isinstance(query, str):
        raise TypeError(f"rerank: query must be a str, got {type(query).__name__}")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"rerank: documents must be a list of str, got {type(documents).__name__}")
    docs = list(documents)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise TypeError(f"rerank: documents[{i}] must be a str, got {type(d).__name__}")
    if not docs:
        raise ValueError("rerank: documents is empty; give at least one document to rank")
    if top_n is None:
        return query, docs, len(docs)
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise TypeError(f"rerank: top_n must be an int or None, got {type(top_n).__name__}")
    if top_n < 1:
        raise ValueError(f"rerank: top_n must be at least 1, got {top_n}")
    return query, docs, min(top_n, len(docs))


def pair_tokens(vocab: Vocab, template: Optional[str], query: str, document: str) -> list[int]:
    """The tokens of one (query, document) sequence, as llama-server's format_prompt_rerank
    makes them."""
    if template is not None:
        # One pass over the template: a query that contains "{document}" stays as written
        # (llama.cpp replaces the placeholders one after the other).
        text = _PLACEHOLDER.sub(lambda m: query if m.group(0) == "{query}" else document, template)
        return list(vocab.tokenize(text, add_special=False, parse_special=True))
    eos = vocab.eos if vocab.eos != -1 else vocab.sep
    tokens = [vocab.bos] if vocab.add_bos else []
    tokens += vocab.tokenize(query, add_special=False, parse_special=False)
    if vocab.add_eos:
        tokens.append(eos)
    if vocab.add_sep:
        tokens.append(vocab.sep)
    tokens += vocab.tokenize(document, add_special=False, parse_special=False)
    if vocab.add_eos:
        tokens.append(eos)
    return tokens


def check_reranker(ctx: Context) -> None:
    """A ValueError that says what is missing unless `ctx` scores pairs (embeddings on, rank pooling)."""
    if ctx.pooling_type != PoolingType.RANK:
        raise ValueError(f"rerank needs a reranking model (rank pooling and a classification head); this context "
                         f"pools with {ctx.pooling_type.name}. A reranker GGUF declares rank pooling itself; "
                         "Llama(pooling_type=PoolingType.RANK) forces it")
    if not ctx.embeddings_enabled:
        raise ValueError("rerank needs the model's pooled outputs: create the Llama with embedding=True")


def rerank(ctx: Context, seq: SingleSequence, query: str, documents: Sequence[str], top_n: Optional[int] = None,
           return_documents: bool = False, model: str = "") -> RerankResponse:
    """Scores every document against `query` (see the module docstring for how pairs are
    built). Raises ValueError for a model that is not a reranker, for no documents and for
    a pair longer than one decode holds (min of n_batch, n_ubatch and n_ctx); TypeError for
    arguments of the wrong type. The context's memory is left empty."""
    query, docs, top_n = check_arguments(query, documents, top_n)
    check_reranker(ctx)
    vocab = ctx.model.vocab
    template = ctx.model.chat_template("rerank")
    limit = min(ctx.n_batch, ctx.n_ubatch, ctx.n_ctx)
    pairs = [pair_tokens(vocab, template, query, d) for d in docs]
    for i, p in enumerate(pairs):
        if len(p) > limit:
            raise ValueError(f"rerank: the query and documents[{i}] take {len(p)} tokens, more than the {limit} "
                             "one decode holds (raise n_ctx, n_batch and n_ubatch, or shorten them)")
    try:
        rows, n_tokens = embed_all(ctx, pairs, limit, normalize=False)
    finally:
        seq.n_tokens = 0  # embed_all leaves the memory empty
    scores = [float(r[0]) for r in rows]
    order = sorted(range(len(docs)), key=lambda i: -scores[i])[:top_n]
    results: list[RerankResult] = []
    for i in order:
        item: RerankResult = {"index": i, "relevance_score": scores[i]}
        if return_documents:
            item["document"] = {"text": docs[i]}
        results.append(item)
    return {"object": "list", "model": model, "results": results, "scores": scores,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
