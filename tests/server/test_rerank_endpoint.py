"""POST /v1/rerank of a real server (the test reranker of tests/rerank_model.py served with
"reranking": true, MiniLM for embeddings), in llama-server's shapes: Jina's body and answer,
TEI's with "texts", the /rerank, /reranking and /v1/reranking aliases; the scores are the
in-process Llama.rerank's (the same code on the same file), which tests/api/test_rerank.py
holds to llama.cpp's llama-embedding."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from live_server import MINILM, LiveServer, start
from rerank_model import write_reranker
from testutil import make_llama

RERANK = "rerank"
QUERY = "What is the capital of France?"
DOCUMENTS = ["Paris is the capital of France.", "Pandas eat bamboo.", "Berlin is in Germany.", "France"]
ATOL = 1e-5  # the same code, file and batch in both processes


@pytest.fixture(scope="module")
def reranker_path(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reranker(minilm_path, tmp_path_factory.mktemp("rerank-model") / "reranker.gguf")


@pytest.fixture(scope="module")
def server(reranker_path: Path, minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("rerank-server")
    config = {"models": [{"model": str(minilm_path), "alias": MINILM, "embedding": True},
                         {"model": str(reranker_path), "alias": RERANK, "reranking": True, "n_ctx": 512}]}
    (folder / "config.json").write_text(json.dumps(config))
    live = start(["--config", str(folder / "config.json"), "--no-access-log"], folder / "server.log")
    yield live
    assert live.stop() == 0, live.log()


@pytest.fixture(scope="module")
def expected(reranker_path: Path) -> dict:
    with make_llama(reranker_path, embedding=True) as llm:
        return llm.rerank(QUERY, DOCUMENTS)


def test_rerank_matches_in_process(server: LiveServer, expected: dict) -> None:
    with server.http() as client:
        r = client.post("/v1/rerank", json={"model": RERANK, "query": QUERY, "documents": DOCUMENTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model", "object", "usage", "results"}
    assert body["model"] == RERANK and body["object"] == "list"
    assert body["usage"] == expected["usage"]
    assert [x["index"] for x in body["results"]] == [x["index"] for x in expected["results"]]
    np.testing.assert_allclose([x["relevance_score"] for x in body["results"]],
                               [x["relevance_score"] for x in expected["results"]], rtol=0, atol=ATOL)
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert server.metric("llamabind_prompt_tokens_total", model=RERANK) >= expected["usage"]["prompt_tokens"]


def test_top_n_documents_and_aliases(server: LiveServer, expected: dict) -> None:
    with server.http() as client:
        for path in ("/rerank", "/reranking", "/v1/reranking"):
            # No "model": the first reranking model answers, not the embedding model before it.
            r = client.post(path, json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": True})
            assert r.status_code == 200, (path, r.text)
            results = r.json()["results"]
            assert [x["index"] for x in results] == [x["index"] for x in expected["results"][:2]]
            assert all(x["document"] == {"text": DOCUMENTS[x["index"]]} for x in results)


def test_tei_shape(server: LiveServer, expected: dict) -> None:
    with server.http() as client:
        r = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert r.status_code == 200, r.text
    items = r.json()
    assert isinstance(items, list) and [x["index"] for x in items] == [x["index"] for x in expected["results"]]
    assert all(set(x) == {"index", "score", "text"} and x["text"] == DOCUMENTS[x["index"]] for x in items)
    np.testing.assert_allclose([x["score"] for x in items], [x["relevance_score"] for x in expected["results"]],
                               rtol=0, atol=ATOL)


@pytest.mark.parametrize("body, status, needle", [
    ({"query": QUERY, "documents": []}, 400, "non-empty"),
    ({"query": QUERY}, 400, "non-empty"),
    ({"documents": DOCUMENTS}, 400, "query"),
    ({"query": 3, "documents": DOCUMENTS}, 400, "query"),
    ({"query": QUERY, "documents": ["a", 2]}, 400, "documents"),
    ({"query": QUERY, "documents": DOCUMENTS, "top_n": 0}, 400, "top_n"),
    ({"model": MINILM, "query": QUERY, "documents": DOCUMENTS}, 400, "does not serve reranking"),
    ({"model": "nope", "query": QUERY, "documents": DOCUMENTS}, 404, "nope"),
])
def test_errors(server: LiveServer, body: dict, status: int, needle: str) -> None:
    with server.http() as client:
        r = client.post("/v1/rerank", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_the_reranker_serves_no_embeddings(server: LiveServer) -> None:
    with server.http() as client:
        r = client.post("/v1/embeddings", json={"model": RERANK, "input": "text"})
        assert r.status_code == 400 and "reranker" in r.json()["error"]["message"]
        # Without "model", the embedding model answers, though the reranker is served too.
        r = client.post("/v1/embeddings", json={"input": "text", "encoding_format": "float"})
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384


def test_a_model_that_is_no_reranker_fails_to_load(minilm_path: Path, tmp_path: Path) -> None:
    live = LiveServer(["-m", str(minilm_path), "--reranking", "--no-access-log"], tmp_path / "server.log")
    try:
        status = live.proc.wait(120)
    finally:
        live.stop()
    assert status == 1
    assert "is not a reranking model: it pools with mean, not rank" in live.log()


def test_a_server_without_a_reranker_says_so(tmp_path: Path, minilm_path: Path) -> None:
    live = start(["-m", str(minilm_path), "--embedding", "--no-access-log"], tmp_path / "server.log")
    try:
        r = httpx.post(live.url + "/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=60)
        assert r.status_code == 404 and "no reranking model" in r.json()["error"]["message"]
    finally:
        assert live.stop() == 0, live.log()
