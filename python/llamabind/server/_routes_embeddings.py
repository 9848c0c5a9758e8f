"""POST /v1/embeddings: one vector per input text, L2-normalised as OpenAI's are, as floats
or base64 (little-endian float32, what the openai client asks for by default)."""

from __future__ import annotations

import base64
import functools

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from .._responses import embedding_response
from ._arguments import embedding_texts
from ._http import JSONResponse, context, serving
from ._schemas import EmbeddingBody

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", summary="Embed texts (a model served with --embedding)")
@router.post("/embeddings", include_in_schema=False)
async def embeddings(body: EmbeddingBody, request: Request) -> Response:
    ctx = context(request)
    served = serving(request, ctx.registry.get(body.model, embedding=True))
    llm = served.llm
    texts = embedding_texts(body, llm.n_embd())
    # Every input goes into as few decodes as the batch allows (Llama.embed packs them).
    vectors, n_tokens = await served.call(functools.partial(llm.embed, texts, normalize=True, return_count=True))
    ctx.metrics.tokens(served.name, n_tokens, 0)
    response = embedding_response(vectors, n_tokens, served.name)
    if body.encoding_format == "base64":
        for item in response["data"]:
            item["embedding"] = base64.b64encode(np.asarray(item["embedding"], dtype="<f4").tobytes()).decode("ascii")
    return JSONResponse(response)
