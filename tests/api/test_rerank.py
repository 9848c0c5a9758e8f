"""Llama.rerank and `llamabind rerank` on a BERT reranker built for the tests (tests/rerank_model.py),
held to llama.cpp's own `llama-embedding --pooling rank` on the same file and inputs: the same
tokens for every (query, document) pair, the same scores.

Tolerance: both sides run the same llama.cpp kernels on the same batch (every pair in one
decode, flash attention off, f16 weights), so the scores agree to float32 rounding of numbers
of a few units (~5e-7) plus llama-embedding's printing to 7 decimals (5e-8); measured: 4.6e-8,
with 1 or 2 threads on either side. ATOL = 1e-6. The same pairs split over several decodes (a
smaller batch) go through matrix products of another shape, whose CPU kernels round
differently: measured up to 1.2e-3 on scores of about 4, so REGROUP_ATOL = 5e-3 there. Both are
far below the spread of the scores (checked: over 1000 × ATOL), so a wrong token, a wrong
pooled row or mixed-up sequences cannot pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from llamabind import _embedding, _rerank
from rerank_model import native_rank, native_rank_texts, write_reranker
from testutil import N_THREADS, make_llama

ATOL = 1e-6
REGROUP_ATOL = 5e-3
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "The giant panda is a bear species endemic to China.",
    "France is a country in Western Europe; its capital is Paris.",
    "Photosynthesis turns light into chemical energy.",
    "Berlin is the capital of Germany.",
    "",
    "capital",
]
TEMPLATE = "[CLS]query: {query}[SEP]document: {document}[SEP]"
# The filled template as llama-embedding takes a plain input: it adds [CLS] and [SEP] itself.
TEMPLATE_TEXT = "query: {query}[SEP]document: {document}"


@pytest.fixture(scope="module")
def models(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rerank")
    return {"plain": write_reranker(minilm_path, folder / "reranker.gguf"),
            "labels": write_reranker(minilm_path, folder / "reranker-2.gguf", labels=["no", "yes"], seed=1),
            "template": write_reranker(minilm_path, folder / "reranker-t.gguf", rerank_template=TEMPLATE, seed=2)}


@pytest.fixture(scope="module")
def reranker(models: dict[str, Path]) -> Iterator[lb.Llama]:
    with make_llama(models["plain"], embedding=True) as llm:
        yield llm


@pytest.fixture(scope="module")
def native(models: dict[str, Path]) -> dict[str, object]:
    out: dict[str, object] = {name: native_rank(models[name], QUERY, DOCUMENTS, threads=N_THREADS)
                              for name in ("plain", "labels")}
    texts = [TEMPLATE_TEXT.replace("{query}", QUERY).replace("{document}", d) for d in DOCUMENTS]
    out["template"] = native_rank_texts(models["template"], texts, threads=N_THREADS)
    return out


def _pairs(path: Path) -> list[list[int]]:
    model = lb.Model(str(path), vocab_only=True)
    with model:
        return [_rerank.pair_tokens(model.vocab, model.chat_template("rerank"), QUERY, d) for d in DOCUMENTS]


def test_pairs_are_llama_cpps_tokens(models: dict[str, Path], native: dict) -> None:
    """BERT without a template: [CLS] query [SEP] document [SEP], token for token as llama.cpp
    builds it; with a template: the filled template, special tokens parsed, nothing added."""
    plain = _pairs(models["plain"])
    assert plain == native["plain"].tokens
    vocab = lb.Model(str(models["plain"]), vocab_only=True).vocab
    assert plain[0][0] == vocab.bos and plain[0][-1] == vocab.eos and plain[0].count(vocab.eos) == 2
    assert plain[5] == [vocab.bos, *vocab.tokenize(QUERY, add_special=False), vocab.eos, vocab.eos]
    assert _pairs(models["template"]) == native["template"].tokens


def test_scores_match_llama_embedding(reranker: lb.Llama, native: dict) -> None:
    out = reranker.rerank(QUERY, DOCUMENTS)
    expected = [row[0] for row in native["plain"].scores]
    assert all(len(row) == 1 for row in native["plain"].scores)
    np.testing.assert_allclose(out["scores"], expected, rtol=0, atol=ATOL)
    assert np.ptp(expected) > 1000 * ATOL, "the head gives scores too close together to test anything"
    assert out["object"] == "list" and out["model"] == reranker.model_path
    n_tokens = sum(len(t) for t in native["plain"].tokens)
    assert out["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}


def test_ranking_is_sorted_and_complete(reranker: lb.Llama, native: dict) -> None:
    out = reranker.rerank(QUERY, DOCUMENTS)
    results = out["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    assert [r["relevance_score"] for r in results] == sorted(out["scores"], reverse=True)
    assert all(r["relevance_score"] == out["scores"][r["index"]] for r in results)
    assert all(set(r) == {"index", "relevance_score"} for r in results)
    native_order = list(np.argsort([-row[0] for row in native["plain"].scores], kind="stable"))
    assert [r["index"] for r in results] == native_order


def test_top_n_and_documents(reranker: lb.Llama) -> None:
    full = reranker.rerank(QUERY, DOCUMENTS)
    top = reranker.rerank(QUERY, DOCUMENTS, top_n=3, return_documents=True)
    assert [r["index"] for r in top["results"]] == [r["index"] for r in full["results"][:3]]
    assert all(r["document"] == {"text": DOCUMENTS[r["index"]]} for r in top["results"])
    assert top["scores"] == full["scores"]  # every document's score, whatever top_n
    assert len(reranker.rerank(QUERY, DOCUMENTS, top_n=100)["results"]) == len(DOCUMENTS)
    assert reranker.rerank(QUERY, tuple(DOCUMENTS[:2]), top_n=1)["results"][0]["index"] == \
        int(np.argmax(full["scores"][:2]))


def test_one_decode_or_several_give_the_same_scores(models: dict[str, Path], reranker: lb.Llama,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pair goes into one decode when they fit; pairs that do not fit one (a 64-token
    batch here) go into several, and each score is the one it gets in the single decode."""
    decodes: list[int] = []
    group = _embedding._embed_group

    def counted(ctx: lb.Context, pairs: list[list[int]], *args: object) -> list:
        decodes.append(len(pairs))
        return group(ctx, pairs, *args)

    monkeypatch.setattr(_embedding, "_embed_group", counted)
    one = reranker.rerank(QUERY, DOCUMENTS)["scores"]
    assert decodes == [len(DOCUMENTS)]
    with make_llama(models["plain"], embedding=True, n_batch=64, n_ubatch=64) as small:
        decodes.clear()
        many = small.rerank(QUERY, DOCUMENTS)["scores"]
        assert len(decodes) > 1 and sum(decodes) == len(DOCUMENTS)
    np.testing.assert_allclose(many, one, rtol=0, atol=REGROUP_ATOL)
    # Each score depends on its own pair only: alone, a document scores as in the batch.
    alone = [reranker.rerank(QUERY, [d])["scores"][0] for d in DOCUMENTS[:3]]
    np.testing.assert_allclose(alone, one[:3], rtol=0, atol=REGROUP_ATOL)


def test_several_labels_give_n_cls_out_values(models: dict[str, Path], native: dict) -> None:
    """With labels, rank pooling gives n_cls_out values per sequence: Context.embeddings_seq
    returns all of them, and Llama.rerank's score is the first (as llama-server's)."""
    expected = np.asarray(native["labels"].scores)
    assert expected.shape == (len(DOCUMENTS), 2)
    model = lb.Model(str(models["labels"]))
    assert model.n_cls_out == 2
    pairs = _pairs(models["labels"])
    with model, lb.Context(model, n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=8, kv_unified=True,
                           embeddings=True, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                           flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
        assert ctx.pooling_type == lb.PoolingType.RANK
        batch = lb.Batch(sum(len(p) for p in pairs), n_seq_max=1)
        for s, p in enumerate(pairs):
            batch.add_sequence(p, 0, seq_id=s, all_logits=True)
        ctx.decode(batch)
        rows = np.asarray([ctx.embeddings_seq(s) for s in range(len(pairs))])
    np.testing.assert_allclose(rows, expected, rtol=0, atol=ATOL)
    with make_llama(models["labels"], embedding=True) as llm:
        np.testing.assert_allclose(llm.rerank(QUERY, DOCUMENTS)["scores"], expected[:, 0], rtol=0, atol=ATOL)


def test_rerank_template(models: dict[str, Path], native: dict) -> None:
    with make_llama(models["template"], embedding=True) as llm:
        out = llm.rerank(QUERY, DOCUMENTS)
    np.testing.assert_allclose(out["scores"], [row[0] for row in native["template"].scores], rtol=0, atol=ATOL)


def test_a_query_with_a_placeholder_stays_as_written(models: dict[str, Path]) -> None:
    model = lb.Model(str(models["template"]), vocab_only=True)
    with model:
        vocab, template = model.vocab, model.chat_template("rerank")
        got = _rerank.pair_tokens(vocab, template, "a {document} b", "doc")
        want = vocab.tokenize("[CLS]query: a {document} b[SEP]document: doc[SEP]", add_special=False,
                              parse_special=True)
    assert got == want


def test_a_model_without_rank_pooling_is_refused(minilm_path: Path, models: dict[str, Path]) -> None:
    with make_llama(minilm_path, embedding=True) as llm:
        with pytest.raises(ValueError, match="reranking model.*MEAN"):
            llm.rerank(QUERY, DOCUMENTS)
        assert len(llm.embed("still usable")) == 384
    with make_llama(models["plain"]) as llm:  # a reranker, but without embedding=True
        with pytest.raises(ValueError, match="embedding=True"):
            llm.rerank(QUERY, DOCUMENTS)


def test_bad_arguments(reranker: lb.Llama, models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="documents is empty"):
        reranker.rerank(QUERY, [])
    with pytest.raises(TypeError, match="documents must be a list of str, got str"):
        reranker.rerank(QUERY, "one document")
    with pytest.raises(TypeError, match=r"documents\[1\] must be a str, got int"):
        reranker.rerank(QUERY, ["a", 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="query must be a str, got bytes"):
        reranker.rerank(b"query", DOCUMENTS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_n must be at least 1"):
        reranker.rerank(QUERY, DOCUMENTS, top_n=0)
    with pytest.raises(TypeError, match="top_n must be an int"):
        reranker.rerank(QUERY, DOCUMENTS, top_n="2")  # type: ignore[arg-type]
    with make_llama(models["plain"], embedding=True, n_ctx=32) as small:
        with pytest.raises(ValueError, match=r"documents\[1\] take \d+ tokens, more than the 32"):
            small.rerank("short", ["fits", "word " * 40])
        assert len(small.rerank("short", ["fits"])["scores"]) == 1  # usable after the error
    assert reranker.rerank(QUERY, DOCUMENTS[:2])["results"]  # and the shared one too


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamabind", "rerank", *args, "-t", str(N_THREADS)],
                          input=stdin, capture_output=True, text=True, timeout=300)


def test_cli(models: dict[str, Path], reranker: lb.Llama, minilm_path: Path) -> None:
    expected = reranker.rerank(QUERY, DOCUMENTS[:4], top_n=2)
    proc = _cli("-m", str(models["plain"]), QUERY, *DOCUMENTS[:4], "--top-n", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert [r["index"] for r in got["results"]] == [r["index"] for r in expected["results"]]
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=0, atol=ATOL)
    assert [r["document"]["text"] for r in got["results"]] == [DOCUMENTS[r["index"]] for r in expected["results"]]

    proc = _cli("-m", str(models["plain"]), QUERY, stdin="\n".join(DOCUMENTS[:4]) + "\n")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [int(r[1]) for r in rows] == [r["index"] for r in reranker.rerank(QUERY, DOCUMENTS[:4])["results"]]
    assert [r[2] for r in rows] == [DOCUMENTS[int(r[1])] for r in rows]
    assert [float(r[0]) for r in rows] == sorted((float(r[0]) for r in rows), reverse=True)

    proc = _cli("-m", str(minilm_path), QUERY, "a document")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "reranking model" in proc.stderr
