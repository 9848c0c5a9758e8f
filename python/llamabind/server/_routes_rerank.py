"""POST /v1/rerank (also /v1/reranking, /rerank, /reranking, as llama-server has them): the
documents ranked by their relevance to a query, by a model served with --reranking. The body
and the answer are llama-server's: Jina's ({"query", "documents", "top_n"} → {"results":
[{"index", "relevance_score"}], ...}, best first), or TEI's when the body says "texts" (a
bare list of {"index", "score"}).
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ._errors import bad_request
from ._http import JSONResponse, context, serving
from ._schemas import RerankBody

router = APIRouter(tags=["rerank"])


@router.post("/v1/rerank", summary="Rank documents by relevance to a query (a model served with --reranking)")
@router.post("/v1/reranking", include_in_schema=False)
@router.post("/rerank", include_in_schema=False)
@router.post("/reranking", include_in_schema=False)
async def rerank(body: RerankBody, request: Request) -> Response:
    ctx = context(request)
    served = serving(request, ctx.registry.reranker(body.model))
    llm = served.llm
    tei = body.texts is not None
    documents = body.documents if body.documents is not None else body.texts
    if not documents:
        raise bad_request('"documents" must be a non-empty array of strings', param="documents")
    with_text = body.return_text if tei else body.return_documents
    # Every pair goes into as few decodes as the batch allows (Llama.rerank packs them).
    ranked = await served.call(functools.partial(llm.rerank, body.query, documents, top_n=body.top_n,
                                                 return_documents=with_text))
    n_tokens = ranked["usage"]["prompt_tokens"]
    ctx.metrics.tokens(served.name, n_tokens, 0)
    if tei:
        items: list[dict[str, Any]] = []
        for r in ranked["results"]:
            item: dict[str, Any] = {"index": r["index"], "score": r["relevance_score"]}
            if with_text:
                item["text"] = r["document"]["text"]
            items.append(item)
        return JSONResponse(items)
    return JSONResponse({"model": served.name, "object": "list", "usage": ranked["usage"],
                         "results": ranked["results"]})
