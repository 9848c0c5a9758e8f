"""OpenAI-style request and response types of :class:`llamabind.Llama`.

The names, keys and literal values are those of llama-cpp-python's ``llama_cpp.llama_types``,
so code typed against it type-checks against llamabind unchanged::

    from llamabind.types import CreateCompletionResponse

    def first_text(response: CreateCompletionResponse) -> str:
        return response["choices"][0]["text"]

Everything here is a :class:`typing.TypedDict` (a plain ``dict`` at run time) or an alias of
one. Keys that may be absent are declared in a ``total=False`` subclass of a private base
holding the required keys: the pre-PEP 655 spelling of ``NotRequired``, which keeps the
module free of ``typing_extensions`` on Python 3.9 and 3.10 while giving the same
``__required_keys__``/``__optional_keys__`` and the same checks under mypy.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, TypedDict, Union

__all__ = [
    "ChatCompletion",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionChunkChoice",
    "ChatCompletionChunkDelta",
    "ChatCompletionChunkDeltaEmpty",
    "ChatCompletionFunction",
    "ChatCompletionFunctionCall",
    "ChatCompletionFunctionCallOption",
    "ChatCompletionFunctionParameters",
    "ChatCompletionFunctions",
    "ChatCompletionLogprobToken",
    "ChatCompletionLogprobs",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "ChatCompletionMessageToolCallChunk",
    "ChatCompletionMessageToolCallChunkFunction",
    "ChatCompletionMessageToolCallFunction",
    "ChatCompletionMessageToolCalls",
    "ChatCompletionNamedToolChoice",
    "ChatCompletionNamedToolChoiceFunction",
    "ChatCompletionRequestAssistantMessage",
    "ChatCompletionRequestAssistantMessageFunctionCall",
    "ChatCompletionRequestFunctionCall",
    "ChatCompletionRequestFunctionCallOption",
    "ChatCompletionRequestFunctionMessage",
    "ChatCompletionRequestMessage",
    "ChatCompletionRequestMessageContentPart",
    "ChatCompletionRequestMessageContentPartImage",
    "ChatCompletionRequestMessageContentPartImageImageUrl",
    "ChatCompletionRequestMessageContentPartText",
    "ChatCompletionRequestResponseFormat",
    "ChatCompletionRequestResponseFormatJsonSchema",
    "ChatCompletionRequestSystemMessage",
    "ChatCompletionRequestToolMessage",
    "ChatCompletionRequestUserMessage",
    "ChatCompletionResponseChoice",
    "ChatCompletionResponseFunction",
    "ChatCompletionResponseFunctionCall",
    "ChatCompletionResponseMessage",
    "ChatCompletionStreamResponse",
    "ChatCompletionStreamResponseChoice",
    "ChatCompletionStreamResponseDelta",
    "ChatCompletionStreamResponseDeltaEmpty",
    "ChatCompletionStreamResponseDeltaFunctionCall",
    "ChatCompletionTool",
    "ChatCompletionToolChoiceOption",
    "ChatCompletionToolFunction",
    "ChatCompletionTopLogprobToken",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionLogprobs",
    "CompletionUsage",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateCompletionStreamResponse",
    "CreateEmbeddingResponse",
    "Embedding",
    "EmbeddingData",
    "EmbeddingUsage",
    "JsonType",
]

# Containers are left as ``Any`` rather than recursive: llama-cpp-python does the same, and a
# recursive alias would make every JSON value a type error for callers holding plain dicts.
JsonType = Union[None, int, str, bool, List[Any], Dict[str, Any]]
"""Any JSON value (objects and arrays hold values of any type)."""


# Embeddings


class EmbeddingUsage(TypedDict):
    """Token counts of an embedding request."""

    prompt_tokens: int
    total_tokens: int


class Embedding(TypedDict):
    """One input's embedding: a vector, or one vector per token when pooling is off."""

    index: int
    object: str
    embedding: Union[List[float], List[List[float]]]


class CreateEmbeddingResponse(TypedDict):
    """What ``Llama.create_embedding`` returns: one :class:`Embedding` per input."""

    object: Literal["list"]
    model: str
    data: List[Embedding]
    usage: EmbeddingUsage


# Text completions


class CompletionLogprobs(TypedDict):
    """Per-token log-probabilities of a completion, in the legacy OpenAI layout."""

    text_offset: List[int]
    token_logprobs: List[Optional[float]]
    tokens: List[str]
    top_logprobs: List[Optional[Dict[str, float]]]


class CompletionChoice(TypedDict):
    """One generated continuation; ``finish_reason`` is ``None`` in all but a stream's last chunk."""

    text: str
    index: int
    logprobs: Optional[CompletionLogprobs]
    finish_reason: Optional[Literal["stop", "length"]]


class CompletionUsage(TypedDict):
    """Token counts of a completion or chat completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _CreateCompletionResponseRequired(TypedDict):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: List[CompletionChoice]


class CreateCompletionResponse(_CreateCompletionResponseRequired, total=False):
    """What ``Llama.create_completion``/``Llama.__call__`` return, and each chunk of their
    streams; ``usage`` is present on whole (non-streamed) responses."""

    usage: CompletionUsage


# Chat completions: responses


class ChatCompletionResponseFunctionCall(TypedDict):
    """A (deprecated) function call made by the assistant; ``arguments`` is JSON text."""

    name: str
    arguments: str


class ChatCompletionMessageToolCallFunction(TypedDict):
    """The function a tool call invokes; ``arguments`` is JSON text."""

    name: str
    arguments: str


class ChatCompletionMessageToolCall(TypedDict):
    """One tool call made by the assistant."""

    id: str
    type: Literal["function"]
    function: ChatCompletionMessageToolCallFunction


ChatCompletionMessageToolCalls = List[ChatCompletionMessageToolCall]


class _ChatCompletionResponseMessageRequired(TypedDict):
    content: Optional[str]
    role: Literal["assistant", "function"]


class ChatCompletionResponseMessage(_ChatCompletionResponseMessageRequired, total=False):
    """The assistant's reply in a chat completion: text, tool calls, or both."""

    tool_calls: ChatCompletionMessageToolCalls
    function_call: ChatCompletionResponseFunctionCall  # deprecated by OpenAI for tool_calls


class _ChatCompletionFunctionRequired(TypedDict):
    name: str
    parameters: Dict[str, JsonType]


class ChatCompletionFunction(_ChatCompletionFunctionRequired, total=False):
    """A function the model may call; ``parameters`` is a JSON schema."""

    description: str


class ChatCompletionTopLogprobToken(TypedDict):
    """One candidate token and its log-probability; ``bytes`` is its UTF-8 encoding."""

    token: str
    logprob: float
    bytes: Optional[List[int]]


class ChatCompletionLogprobToken(ChatCompletionTopLogprobToken):
    """A generated token with its log-probability and the most likely alternatives."""

    top_logprobs: List[ChatCompletionTopLogprobToken]


class ChatCompletionLogprobs(TypedDict):
    """Per-token log-probabilities of a chat completion."""

    content: Optional[List[ChatCompletionLogprobToken]]
    refusal: Optional[List[ChatCompletionLogprobToken]]


class ChatCompletionResponseChoice(TypedDict):
    """One generated reply of a chat completion."""

    index: int
    message: ChatCompletionResponseMessage
    logprobs: Optional[ChatCompletionLogprobs]
    finish_reason: Optional[str]


class CreateChatCompletionResponse(TypedDict):
    """What ``Llama.create_chat_completion`` returns when not streaming."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: List[ChatCompletionResponseChoice]
    usage: CompletionUsage


# Chat completions: streamed chunks


class ChatCompletionMessageToolCallChunkFunction(TypedDict):
    """A piece of a streamed tool call; ``arguments`` pieces concatenate to JSON text."""

    name: Optional[str]
    arguments: str


class _ChatCompletionMessageToolCallChunkRequired(TypedDict):
    index: int
    type: Literal["function"]
    function: ChatCompletionMessageToolCallChunkFunction


class ChatCompletionMessageToolCallChunk(_ChatCompletionMessageToolCallChunkRequired, total=False):
    """A piece of a tool call in a streamed chat completion."""

    id: str


class ChatCompletionStreamResponseDeltaEmpty(TypedDict):
    """The empty delta of a stream's final chunk."""


class ChatCompletionStreamResponseDeltaFunctionCall(TypedDict):
    """A piece of a (deprecated) streamed function call."""

    name: str
    arguments: str


class ChatCompletionStreamResponseDelta(TypedDict, total=False):
    """What one chunk of a streamed chat completion adds to the reply."""

    content: Optional[str]
    function_call: Optional[ChatCompletionStreamResponseDeltaFunctionCall]  # deprecated
    tool_calls: Optional[List[ChatCompletionMessageToolCallChunk]]
    role: Optional[Literal["system", "user", "assistant", "tool"]]


class _ChatCompletionStreamResponseChoiceRequired(TypedDict):
    index: int
    delta: Union[ChatCompletionStreamResponseDelta, ChatCompletionStreamResponseDeltaEmpty]
    finish_reason: Optional[Literal["stop", "length", "tool_calls", "function_call"]]


class ChatCompletionStreamResponseChoice(_ChatCompletionStreamResponseChoiceRequired, total=False):
    """One choice of a streamed chat-completion chunk."""

    logprobs: Optional[ChatCompletionLogprobs]


class CreateChatCompletionStreamResponse(TypedDict):
    """Each chunk ``Llama.create_chat_completion(stream=True)`` yields."""

    id: str
    model: str
    object: Literal["chat.completion.chunk"]
    created: int
    choices: List[ChatCompletionStreamResponseChoice]


# Chat completions: requests


class _ChatCompletionFunctionsRequired(TypedDict):
    name: str
    parameters: Dict[str, JsonType]


class ChatCompletionFunctions(_ChatCompletionFunctionsRequired, total=False):
    """A function offered to the model (the deprecated ``functions`` argument)."""

    description: str


class ChatCompletionFunctionCallOption(TypedDict):
    """Forces a call of the named function."""

    name: str


class _ChatCompletionRequestResponseFormatJsonSchemaRequired(TypedDict):
    name: str


class ChatCompletionRequestResponseFormatJsonSchema(
    _ChatCompletionRequestResponseFormatJsonSchemaRequired, total=False
):
    """OpenAI's ``json_schema`` object of ``response_format={"type": "json_schema", ...}``."""

    description: str
    schema: Dict[str, JsonType]
    strict: Optional[bool]


class _ChatCompletionRequestResponseFormatRequired(TypedDict):
    type: Literal["text", "json_object", "json_schema"]


class ChatCompletionRequestResponseFormat(_ChatCompletionRequestResponseFormatRequired, total=False):
    """The ``response_format`` argument of a chat completion.

    ``{"type": "json_object"}`` constrains the reply to JSON, optionally to the JSON schema
    under ``schema`` (llama-cpp-python's form); ``{"type": "json_schema", "json_schema":
    {"name": ..., "schema": ...}}`` is OpenAI's form of the same.
    """

    schema: JsonType
    json_schema: ChatCompletionRequestResponseFormatJsonSchema


class ChatCompletionRequestMessageContentPartText(TypedDict):
    """A text part of a user message."""

    type: Literal["text"]
    text: str


class _ChatCompletionRequestMessageContentPartImageImageUrlRequired(TypedDict):
    url: str


class ChatCompletionRequestMessageContentPartImageImageUrl(
    _ChatCompletionRequestMessageContentPartImageImageUrlRequired, total=False
):
    """The image of an image part: a URL (``data:`` URLs included) and a detail level."""

    detail: Literal["auto", "low", "high"]


class ChatCompletionRequestMessageContentPartImage(TypedDict):
    """An image part of a user message."""

    type: Literal["image_url"]
    image_url: Union[str, ChatCompletionRequestMessageContentPartImageImageUrl]


ChatCompletionRequestMessageContentPart = Union[
    ChatCompletionRequestMessageContentPartText,
    ChatCompletionRequestMessageContentPartImage,
]


class ChatCompletionRequestSystemMessage(TypedDict):
    """A system message."""

    role: Literal["system"]
    content: Optional[str]


class ChatCompletionRequestUserMessage(TypedDict):
    """A user message: text, or a list of text and image parts."""

    role: Literal["user"]
    content: Optional[Union[str, List[ChatCompletionRequestMessageContentPart]]]


class ChatCompletionRequestAssistantMessageFunctionCall(TypedDict):
    """A (deprecated) function call in an assistant message of the history."""

    name: str
    arguments: str


class _ChatCompletionRequestAssistantMessageRequired(TypedDict):
    role: Literal["assistant"]


class ChatCompletionRequestAssistantMessage(_ChatCompletionRequestAssistantMessageRequired, total=False):
    """An assistant message of the history: text, tool calls, or both."""

    content: str
    tool_calls: ChatCompletionMessageToolCalls
    function_call: ChatCompletionRequestAssistantMessageFunctionCall  # deprecated


class ChatCompletionRequestToolMessage(TypedDict):
    """The result of the tool call ``tool_call_id``."""

    role: Literal["tool"]
    content: Optional[str]
    tool_call_id: str


class ChatCompletionRequestFunctionMessage(TypedDict):
    """The result of a (deprecated) function call."""

    role: Literal["function"]
    content: Optional[str]
    name: str


ChatCompletionRequestMessage = Union[
    ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage,
    ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestToolMessage,
    ChatCompletionRequestFunctionMessage,
]


class ChatCompletionRequestFunctionCallOption(TypedDict):
    """Forces a call of the named function (the deprecated ``function_call`` argument)."""

    name: str


ChatCompletionRequestFunctionCall = Union[
    Literal["none", "auto"], ChatCompletionRequestFunctionCallOption
]

ChatCompletionFunctionParameters = Dict[str, JsonType]


class _ChatCompletionToolFunctionRequired(TypedDict):
    name: str
    parameters: ChatCompletionFunctionParameters


class ChatCompletionToolFunction(_ChatCompletionToolFunctionRequired, total=False):
    """The function of a tool; ``parameters`` is a JSON schema of its arguments."""

    description: str


class ChatCompletionTool(TypedDict):
    """A tool offered to the model (the ``tools`` argument)."""

    type: Literal["function"]
    function: ChatCompletionToolFunction


class ChatCompletionNamedToolChoiceFunction(TypedDict):
    """Names the function of a forced tool call."""

    name: str


class ChatCompletionNamedToolChoice(TypedDict):
    """Forces a call of the named tool."""

    type: Literal["function"]
    function: ChatCompletionNamedToolChoiceFunction


ChatCompletionToolChoiceOption = Union[
    Literal["none", "auto", "required"], ChatCompletionNamedToolChoice
]


# Older names, kept because llama-cpp-python still exports them.

EmbeddingData = Embedding
CompletionChunk = CreateCompletionResponse
Completion = CreateCompletionResponse
CreateCompletionStreamResponse = CreateCompletionResponse
ChatCompletionMessage = ChatCompletionResponseMessage
ChatCompletionChoice = ChatCompletionResponseChoice
ChatCompletion = CreateChatCompletionResponse
ChatCompletionChunkDeltaEmpty = ChatCompletionStreamResponseDeltaEmpty
ChatCompletionChunkChoice = ChatCompletionStreamResponseChoice
ChatCompletionChunkDelta = ChatCompletionStreamResponseDelta
ChatCompletionChunk = CreateChatCompletionStreamResponse
ChatCompletionStreamResponse = CreateChatCompletionStreamResponse
ChatCompletionResponseFunction = ChatCompletionFunction
ChatCompletionFunctionCall = ChatCompletionResponseFunctionCall
