"""The request bodies, as pydantic models that follow OpenAI's shapes (and llama-server's and
llama-cpp-python's for the token endpoints). FastAPI validates every body against them (a
mismatch is a 400 naming the field) and shows them at /docs. Fields OpenAI has that change
nothing here (user, store, metadata, parallel_tool_calls, ...) are accepted and ignored;
llama.cpp's samplers beyond OpenAI's (top_k, min_p, repeat_penalty, mirostat, xtc, dry, ...)
may be given at the top level, as llama-server takes them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

# Annotations are evaluated by pydantic at run time: typing's Optional/Union/List keep them
# readable on every Python llamabind supports (3.9 has no `X | None`).
Stop = Union[str, List[str], None]
Prompt = Union[str, List[int], List[str], List[List[int]]]


class _Body(BaseModel):
    # Extra fields are kept (and read only for llama.cpp's samplers), never an error: clients
    # send OpenAI fields that have no meaning here.
    model_config = ConfigDict(extra="allow")


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(_Body):
    model: Optional[str] = Field(None, description="the model's alias (default: the server's first model)")
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    typical_p: Optional[float] = Field(None, ge=0, le=1)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    repeat_penalty: Optional[float] = Field(None, ge=0)
    mirostat_mode: Optional[int] = Field(None, ge=0, le=2)
    mirostat_tau: Optional[float] = None
    mirostat_eta: Optional[float] = None
    seed: Optional[int] = None
    stop: Stop = Field(None, description="up to 16 strings; the output ends before the first one")
    logit_bias: Optional[Dict[str, float]] = Field(None, description="token id (as a string) -> bias")
    grammar: Optional[str] = Field(None, description="a GBNF grammar the output must follow (llama.cpp)")
    n: int = Field(1, ge=1, le=16, description="how many choices to generate")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None


class CompletionBody(_Sampling):
    """POST /v1/completions"""

    prompt: Prompt = Field("", description="text, token ids, or a list of either (one choice per prompt)")
    suffix: Optional[str] = None
    max_tokens: Optional[int] = Field(16, ge=0, description="null or 0: until the context is full")
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    echo: bool = False
    best_of: Optional[int] = Field(None, ge=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, List[Dict[str, Any]], None] = None
    name: Optional[str] = None
    tool_calls: Optional[List[Dict[str, Any]]] = None
    tool_call_id: Optional[str] = None


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: Optional[str] = None
    parameters: Optional[Dict[str, Any]] = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ResponseFormat(BaseModel):
    """{"type": "json_object"} (any JSON object; llama-cpp-python's "schema" key may add a
    schema) or {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[Dict[str, Any]] = None


class ChatCompletionBody(_Sampling):
    """POST /v1/chat/completions"""

    messages: List[ChatMessage] = Field(..., min_length=1)
    max_tokens: Optional[int] = Field(None, ge=0, description="null or 0: until the context is full")
    max_completion_tokens: Optional[int] = Field(None, ge=0, description="the same as max_tokens")
    tools: Optional[List[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], Dict[str, Any], None] = None
    functions: Optional[List[FunctionDefinition]] = None
    function_call: Union[Literal["none", "auto"], Dict[str, Any], None] = None
    response_format: Optional[ResponseFormat] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)


class EmbeddingBody(_Body):
    """POST /v1/embeddings"""

    model: Optional[str] = Field(None, description="the model's alias (default: the first embedding model)")
    input: Union[str, List[str], List[int], List[List[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)


class RerankBody(_Body):
    """POST /v1/rerank (llama-server's shape: Jina's "documents", or TEI's "texts")"""

    model: Optional[str] = Field(None, description="the model's alias (default: the first reranking model)")
    query: str
    documents: Optional[List[str]] = Field(None, description="the texts to rank")
    texts: Optional[List[str]] = Field(None, description="the texts to rank (TEI's name: the answer is TEI's list)")
    top_n: Optional[int] = Field(None, ge=1, description="how many of the best to return (default: all)")
    return_documents: bool = Field(False, description="include each document's text in its result")
    return_text: bool = Field(False, description="TEI's return_documents")


class TokenizeBody(_Body):
    """POST /tokenize (llama-server's shape)"""

    content: str
    model: Optional[str] = None
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeBody(_Body):
    """POST /detokenize (llama-server's shape) and /extras/detokenize (llama-cpp-python's)"""

    tokens: List[int]
    model: Optional[str] = None


class TokenizeInputBody(_Body):
    """POST /extras/tokenize and /extras/tokenize/count (llama-cpp-python's shape)"""

    input: str
    model: Optional[str] = None
