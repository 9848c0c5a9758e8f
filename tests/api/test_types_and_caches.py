"""llamabind.types against llama-cpp-python's llama_types interface, and the state caches of
llamabind.llama_cache: LRU eviction by size, longest-common-prefix lookups, and a disk cache
that persists, survives damaged files and never unpickles."""

from __future__ import annotations

import ast
import dataclasses
import os
import random
import sys
import types as pytypes
import typing
from pathlib import Path
from typing import Any, Callable, get_args, get_type_hints

import numpy as np
import pytest

import llamabind.llama_types
import llamabind.types as lt
from llamabind.llama_cache import (
    BaseLlamaCache,
    LlamaCache,
    LlamaDiskCache,
    LlamaRAMCache,
)

# ---------------------------------------------------------------------------------------
# Types

# Every name llama-cpp-python 0.3.x's llama_cpp/llama_types.py defines: the interface spec.
LLAMA_CPP_PYTHON_NAMES = [
    "JsonType", "EmbeddingUsage", "Embedding", "CreateEmbeddingResponse", "CompletionLogprobs",
    "CompletionChoice", "CompletionUsage", "CreateCompletionResponse",
    "ChatCompletionResponseFunctionCall", "ChatCompletionResponseMessage",
    "ChatCompletionFunction", "ChatCompletionTopLogprobToken", "ChatCompletionLogprobToken",
    "ChatCompletionLogprobs", "ChatCompletionResponseChoice", "CreateChatCompletionResponse",
    "ChatCompletionMessageToolCallChunkFunction", "ChatCompletionMessageToolCallChunk",
    "ChatCompletionStreamResponseDeltaEmpty", "ChatCompletionStreamResponseDeltaFunctionCall",
    "ChatCompletionStreamResponseDelta", "ChatCompletionStreamResponseChoice",
    "CreateChatCompletionStreamResponse", "ChatCompletionFunctions",
    "ChatCompletionFunctionCallOption", "ChatCompletionRequestResponseFormat",
    "ChatCompletionRequestMessageContentPartText",
    "ChatCompletionRequestMessageContentPartImageImageUrl",
    "ChatCompletionRequestMessageContentPartImage", "ChatCompletionRequestMessageContentPart",
    "ChatCompletionRequestSystemMessage", "ChatCompletionRequestUserMessage",
    "ChatCompletionMessageToolCallFunction", "ChatCompletionMessageToolCall",
    "ChatCompletionMessageToolCalls", "ChatCompletionRequestAssistantMessageFunctionCall",
    "ChatCompletionRequestAssistantMessage", "ChatCompletionRequestToolMessage",
    "ChatCompletionRequestFunctionMessage", "ChatCompletionRequestMessage",
    "ChatCompletionRequestFunctionCallOption", "ChatCompletionRequestFunctionCall",
    "ChatCompletionFunctionParameters", "ChatCompletionToolFunction", "ChatCompletionTool",
    "ChatCompletionNamedToolChoiceFunction", "ChatCompletionNamedToolChoice",
    "ChatCompletionToolChoiceOption", "EmbeddingData", "CompletionChunk", "Completion",
    "CreateCompletionStreamResponse", "ChatCompletionMessage", "ChatCompletionChoice",
    "ChatCompletion", "ChatCompletionChunkDeltaEmpty", "ChatCompletionChunkChoice",
    "ChatCompletionChunkDelta", "ChatCompletionChunk", "ChatCompletionStreamResponse",
    "ChatCompletionResponseFunction", "ChatCompletionFunctionCall",
]

# The legacy aliases and what they name.
ALIASES = {
    "EmbeddingData": "Embedding",
    "CompletionChunk": "CreateCompletionResponse",
    "Completion": "CreateCompletionResponse",
    "CreateCompletionStreamResponse": "CreateCompletionResponse",
    "ChatCompletionMessage": "ChatCompletionResponseMessage",
    "ChatCompletionChoice": "ChatCompletionResponseChoice",
    "ChatCompletion": "CreateChatCompletionResponse",
    "ChatCompletionChunkDeltaEmpty": "ChatCompletionStreamResponseDeltaEmpty",
    "ChatCompletionChunkChoice": "ChatCompletionStreamResponseChoice",
    "ChatCompletionChunkDelta": "ChatCompletionStreamResponseDelta",
    "ChatCompletionChunk": "CreateChatCompletionStreamResponse",
    "ChatCompletionStreamResponse": "CreateChatCompletionStreamResponse",
    "ChatCompletionResponseFunction": "ChatCompletionFunction",
    "ChatCompletionFunctionCall": "ChatCompletionResponseFunctionCall",
}

# (required keys, optional keys) of llama-cpp-python's types, plus the json_schema extension.
FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "CreateCompletionResponse": ({"id", "object", "created", "model", "choices"}, {"usage"}),
    "CompletionChoice": ({"text", "index", "logprobs", "finish_reason"}, set()),
    "CompletionLogprobs": ({"text_offset", "token_logprobs", "tokens", "top_logprobs"}, set()),
    "CompletionUsage": ({"prompt_tokens", "completion_tokens", "total_tokens"}, set()),
    "CreateChatCompletionResponse": ({"id", "object", "created", "model", "choices", "usage"}, set()),
    "ChatCompletionResponseChoice": ({"index", "message", "logprobs", "finish_reason"}, set()),
    "ChatCompletionResponseMessage": ({"content", "role"}, {"tool_calls", "function_call"}),
    "ChatCompletionLogprobs": ({"content", "refusal"}, set()),
    "ChatCompletionLogprobToken": ({"token", "logprob", "bytes", "top_logprobs"}, set()),
    "ChatCompletionTopLogprobToken": ({"token", "logprob", "bytes"}, set()),
    "CreateChatCompletionStreamResponse": ({"id", "model", "object", "created", "choices"}, set()),
    "ChatCompletionStreamResponseChoice": ({"index", "delta", "finish_reason"}, {"logprobs"}),
    "ChatCompletionStreamResponseDelta": (set(), {"content", "function_call", "tool_calls", "role"}),
    "ChatCompletionStreamResponseDeltaEmpty": (set(), set()),
    "ChatCompletionMessageToolCallChunk": ({"index", "type", "function"}, {"id"}),
    "ChatCompletionMessageToolCallChunkFunction": ({"name", "arguments"}, set()),
    "ChatCompletionMessageToolCall": ({"id", "type", "function"}, set()),
    "ChatCompletionMessageToolCallFunction": ({"name", "arguments"}, set()),
    "CreateEmbeddingResponse": ({"object", "model", "data", "usage"}, set()),
    "Embedding": ({"index", "object", "embedding"}, set()),
    "EmbeddingUsage": ({"prompt_tokens", "total_tokens"}, set()),
    "ChatCompletionFunction": ({"name", "parameters"}, {"description"}),
    "ChatCompletionFunctions": ({"name", "parameters"}, {"description"}),
    "ChatCompletionToolFunction": ({"name", "parameters"}, {"description"}),
    "ChatCompletionTool": ({"type", "function"}, set()),
    "ChatCompletionNamedToolChoice": ({"type", "function"}, set()),
    "ChatCompletionRequestSystemMessage": ({"role", "content"}, set()),
    "ChatCompletionRequestUserMessage": ({"role", "content"}, set()),
    "ChatCompletionRequestAssistantMessage": ({"role"}, {"content", "tool_calls", "function_call"}),
    "ChatCompletionRequestToolMessage": ({"role", "content", "tool_call_id"}, set()),
    "ChatCompletionRequestFunctionMessage": ({"role", "content", "name"}, set()),
    "ChatCompletionRequestMessageContentPartText": ({"type", "text"}, set()),
    "ChatCompletionRequestMessageContentPartImage": ({"type", "image_url"}, set()),
    "ChatCompletionRequestMessageContentPartImageImageUrl": ({"url"}, {"detail"}),
    "ChatCompletionRequestResponseFormat": ({"type"}, {"schema", "json_schema"}),
    "ChatCompletionRequestResponseFormatJsonSchema": ({"name"}, {"description", "schema", "strict"}),
}


def _literal_values(tp: Any) -> set[Any]:
    """The values of a Literal, looking through Optional and Union."""
    if typing.get_origin(tp) is typing.Literal:
        return set(get_args(tp))
    return set().union(*(_literal_values(arg) for arg in get_args(tp)))


def test_every_llama_cpp_python_name_exists() -> None:
    missing = [n for n in LLAMA_CPP_PYTHON_NAMES if not hasattr(lt, n)]
    assert not missing
    assert set(LLAMA_CPP_PYTHON_NAMES) <= set(lt.__all__)
    assert set(lt.__all__) - set(LLAMA_CPP_PYTHON_NAMES) == {"ChatCompletionRequestResponseFormatJsonSchema"}
    assert all(hasattr(lt, n) for n in lt.__all__)


def test_llama_types_module_reexports_everything() -> None:
    from llamabind.llama_types import CreateCompletionResponse

    assert CreateCompletionResponse is lt.CreateCompletionResponse
    assert llamabind.llama_types.__all__ == lt.__all__
    for name in lt.__all__:
        assert getattr(llamabind.llama_types, name) is getattr(lt, name)


def test_legacy_aliases_name_the_same_objects() -> None:
    for alias, target in ALIASES.items():
        assert getattr(lt, alias) is getattr(lt, target), alias


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_typeddict_fields_match(name: str) -> None:
    cls = getattr(lt, name)
    required, optional = FIELDS[name]
    assert set(cls.__annotations__) | set(get_type_hints(cls)) == required | optional
    assert set(cls.__required_keys__) == required
    assert set(cls.__optional_keys__) == optional


def test_every_typeddict_resolves_and_is_documented() -> None:
    for name in lt.__all__:
        obj = getattr(lt, name)
        if isinstance(obj, type):
            get_type_hints(obj)  # no dangling forward references
            assert obj.__doc__, name


def test_literal_values_match() -> None:
    def hint(cls: Any, key: str) -> Any:
        return get_type_hints(cls)[key]

    assert _literal_values(hint(lt.CreateCompletionResponse, "object")) == {"text_completion"}
    assert _literal_values(hint(lt.CreateChatCompletionResponse, "object")) == {"chat.completion"}
    assert _literal_values(hint(lt.CreateChatCompletionStreamResponse, "object")) == {"chat.completion.chunk"}
    assert _literal_values(hint(lt.CreateEmbeddingResponse, "object")) == {"list"}
    assert _literal_values(hint(lt.CompletionChoice, "finish_reason")) == {"stop", "length"}
    assert _literal_values(hint(lt.ChatCompletionStreamResponseChoice, "finish_reason")) == {
        "stop", "length", "tool_calls", "function_call"}
    assert _literal_values(hint(lt.ChatCompletionResponseMessage, "role")) == {"assistant", "function"}
    assert _literal_values(hint(lt.ChatCompletionStreamResponseDelta, "role")) == {
        "system", "user", "assistant", "tool"}
    assert _literal_values(hint(lt.ChatCompletionRequestMessageContentPartImageImageUrl, "detail")) == {
        "auto", "low", "high"}
    assert _literal_values(hint(lt.ChatCompletionRequestResponseFormat, "type")) == {
        "text", "json_object", "json_schema"}
    assert set(get_args(get_args(lt.ChatCompletionToolChoiceOption)[0])) == {"none", "auto", "required"}
    assert set(get_args(get_args(lt.ChatCompletionRequestFunctionCall)[0])) == {"none", "auto"}
    for role_cls, role in [(lt.ChatCompletionRequestSystemMessage, "system"),
                           (lt.ChatCompletionRequestUserMessage, "user"),
                           (lt.ChatCompletionRequestAssistantMessage, "assistant"),
                           (lt.ChatCompletionRequestToolMessage, "tool"),
                           (lt.ChatCompletionRequestFunctionMessage, "function")]:
        assert _literal_values(hint(role_cls, "role")) == {role}
        assert role_cls in get_args(lt.ChatCompletionRequestMessage)


def test_response_format_accepts_openai_json_schema() -> None:
    assert get_type_hints(lt.ChatCompletionRequestResponseFormat)["json_schema"] is (
        lt.ChatCompletionRequestResponseFormatJsonSchema)
    fmt: lt.ChatCompletionRequestResponseFormat = {
        "type": "json_schema",
        "json_schema": {"name": "point", "schema": {"type": "object"}, "strict": True},
    }
    legacy: lt.ChatCompletionRequestResponseFormat = {"type": "json_object", "schema": {"type": "object"}}
    assert fmt["type"] == "json_schema" and legacy["type"] == "json_object"


def test_types_need_nothing_but_typing() -> None:
    """NotRequired is spelled with total=False subclasses so Python 3.9/3.10 need no
    typing_extensions: the module imports nothing outside the standard typing module."""
    source = Path(lt.__file__).read_text(encoding="utf-8")
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    assert modules <= {"__future__", "typing"}


# ---------------------------------------------------------------------------------------
# States: the real LlamaState when llamabind.llama has it, else a stand-in with its shape


@dataclasses.dataclass
class _StandInState:
    input_ids: np.ndarray
    scores: np.ndarray
    n_tokens: int
    llama_state: bytes
    llama_state_size: int
    seed: int


@pytest.fixture
def state_cls(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    try:
        from llamabind.llama import LlamaState
    except ImportError:
        # llama_cache imports LlamaState from llamabind.llama when it loads from disk.
        stand_in = pytypes.ModuleType("llamabind.llama")
        stand_in.LlamaState = _StandInState
        monkeypatch.setitem(sys.modules, "llamabind.llama", stand_in)
        return _StandInState
    return LlamaState


@pytest.fixture
def make_state(state_cls: Callable[..., Any]) -> Callable[..., Any]:
    """make_state(size, ...): a state whose llama_state is `size` random bytes."""

    def make(size: int = 100, n_tokens: int = 3, n_vocab: int = 8, seed: int = 1234) -> Any:
        rng = np.random.default_rng(size * 7919 + n_tokens)
        return state_cls(
            input_ids=np.arange(n_tokens, dtype=np.intc),
            scores=rng.standard_normal((n_tokens, n_vocab)).astype(np.float32),
            n_tokens=n_tokens,
            llama_state=rng.integers(0, 256, size, dtype=np.uint8).tobytes(),
            llama_state_size=size,
            seed=seed,
        )

    return make


def _same_state(a: Any, b: Any) -> bool:
    return (
        a.input_ids.dtype == b.input_ids.dtype
        and np.array_equal(a.input_ids, b.input_ids)
        and a.scores.dtype == b.scores.dtype
        and a.scores.shape == b.scores.shape
        and np.array_equal(a.scores, b.scores)
        and a.llama_state == b.llama_state
        and isinstance(b.llama_state, bytes)
        and (a.n_tokens, a.llama_state_size, a.seed) == (b.n_tokens, b.llama_state_size, b.seed)
    )


# ---------------------------------------------------------------------------------------
# Shared behaviour of both caches


@pytest.fixture(params=["ram", "disk"])
def new_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., BaseLlamaCache]:
    """new_cache(capacity_bytes): an empty cache of the kind under test."""
    count = iter(range(1000))

    def new(capacity_bytes: int = 2 << 30) -> BaseLlamaCache:
        if request.param == "ram":
            return LlamaRAMCache(capacity_bytes=capacity_bytes)
        return LlamaDiskCache(cache_dir=str(tmp_path / f"cache{next(count)}"), capacity_bytes=capacity_bytes)

    return new


def test_names_and_hierarchy() -> None:
    assert LlamaCache is LlamaRAMCache
    assert issubclass(LlamaRAMCache, BaseLlamaCache) and issubclass(LlamaDiskCache, BaseLlamaCache)
    with pytest.raises(TypeError):
        BaseLlamaCache()
    assert LlamaRAMCache().capacity_bytes == 2 << 30


def test_lookup_finds_the_longest_common_prefix(new_cache: Callable[..., BaseLlamaCache], make_state: Callable[..., Any]) -> None:
    cache = new_cache()
    a, b, c = make_state(10, seed=1), make_state(11, seed=2), make_state(12, seed=3)
    cache[(1, 2, 3)] = a
    cache[[1, 2, 9, 9]] = b
    cache[np.array([5], dtype=np.intc)] = c
    seed_of = {(1, 2, 3): 1, (1, 2, 9, 9): 2, (5,): 3}

    assert _same_state(a, cache[(1, 2, 3, 4, 5)])  # a stored key that prefixes the query
    assert _same_state(b, cache[[1, 2, 9, 7]])  # shares 3 tokens with b, 2 with a
    assert _same_state(a, cache[(1, 2, 3)])  # exact
    assert _same_state(c, cache[np.array([5, 6], dtype=np.int64)])
    assert _same_state(b, cache[(1, 2, 9, 9)])
    # The query is a prefix of two stored keys, a tie: either one serves, the same as found.
    tied = cache._find_longest_prefix_key((1, 2))
    assert tied in {(1, 2, 3), (1, 2, 9, 9)}
    assert cache[(1, 2)].seed == seed_of[tied]

    assert (1, 7) in cache and [5] in cache and (1, 2, 3, 4) in cache
    assert (7,) not in cache and () not in cache and (2, 1) not in cache
    with pytest.raises(KeyError):
        cache[(7, 1, 2)]
    with pytest.raises(KeyError):
        cache[()]
    assert cache._find_longest_prefix_key((1, 2, 9)) == (1, 2, 9, 9)
    assert cache._find_longest_prefix_key((3,)) is None


def test_an_empty_cache_is_still_true(new_cache: Callable[..., BaseLlamaCache]) -> None:
    # Llama tests `if self.cache:` to mean "a cache is set"; an empty one must count.
    assert bool(new_cache())


def test_setting_a_key_again_replaces_its_entry(new_cache: Callable[..., BaseLlamaCache], make_state: Callable[..., Any]) -> None:
    cache = new_cache()
    cache[(1, 2)] = make_state(10, seed=1)
    size = cache.cache_size
    cache[(1, 2)] = make_state(10, seed=2)
    assert cache[(1, 2)].seed == 2
    assert cache.cache_size == size


def test_eviction_drops_the_least_recently_used(new_cache: Callable[..., BaseLlamaCache], make_state: Callable[..., Any]) -> None:
    probe = new_cache()
    probe[(0,)] = make_state(1000)
    one = probe.cache_size  # bytes one entry counts (RAM: 1000; disk: its file)
    cache = new_cache(capacity_bytes=3 * one + one // 2)

    for t in (1, 2, 3):
        cache[(t,)] = make_state(1000, seed=t)
    assert cache.cache_size == 3 * one
    cache[(1, 5)]  # reading (1,) makes (2,) the least recently used
    cache[(4,)] = make_state(1000, seed=4)
    assert cache.cache_size == 3 * one
    assert (2,) not in cache
    assert [cache[(t,)].seed for t in (1, 3, 4)] == [1, 3, 4]

    # An entry larger than the capacity evicts everything, itself included.
    cache[(9,)] = make_state(10_000, seed=9)
    assert cache.cache_size == 0
    assert all((t,) not in cache for t in (1, 3, 4, 9))


def test_ram_cache_counts_llama_state_size(make_state: Callable[..., Any]) -> None:
    cache = LlamaRAMCache(capacity_bytes=250)
    state = make_state(100)
    cache[(1,)] = state
    cache[(2,)] = make_state(100)
    assert cache.cache_size == 200
    assert cache[(1,)] is state  # the stored object, not a copy
    assert list(cache.cache_state) == [(2,), (1,)]
    cache[(3,)] = make_state(100)
    assert list(cache.cache_state) == [(1,), (3,)]
    assert all(type(t) is int for t in next(iter(cache.cache_state)))


# ---------------------------------------------------------------------------------------
# Disk cache


def test_disk_round_trip_is_exact(tmp_path: Path, state_cls: Callable[..., Any]) -> None:
    cache = LlamaDiskCache(cache_dir=str(tmp_path), capacity_bytes=1 << 20)
    rng = np.random.default_rng(0)
    states = {
        (1, 2, 3): state_cls(
            input_ids=np.array([1, 2, 3], dtype=np.intc),
            scores=rng.standard_normal((3, 16)).astype(np.float32),
            n_tokens=3,
            llama_state=b"\x00\x01\xff" * 50 + b"\x00",
            llama_state_size=151,
            seed=0xFFFFFFFF,  # LLAMA_DEFAULT_SEED
        ),
        (7,): state_cls(  # no logits kept: scores of shape (0, n_vocab)
            input_ids=np.array([7], dtype=np.intc),
            scores=np.zeros((0, 16), dtype=np.float32),
            n_tokens=1,
            llama_state=b"",
            llama_state_size=0,
            seed=0,
        ),
    }
    for key, state in states.items():
        cache[key] = state
    for key, state in states.items():
        loaded = cache[key]
        assert isinstance(loaded, state_cls)
        assert _same_state(state, loaded)
        assert loaded.input_ids.dtype == np.intc and loaded.scores.dtype == np.float32
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".npz")]  # no temp files left


def test_disk_cache_persists_across_instances(tmp_path: Path, make_state: Callable[..., Any]) -> None:
    first = LlamaDiskCache(cache_dir=tmp_path / "c")
    a, b = make_state(300, seed=11), make_state(200, seed=22)
    first[(4, 5, 6)] = a
    first[(4, 8)] = b
    size = first.cache_size
    del first

    second = LlamaDiskCache(cache_dir=str(tmp_path / "c"))
    assert second.cache_size == size
    assert _same_state(a, second[(4, 5, 6, 7)])
    assert _same_state(b, second[(4, 8, 1)])
    assert (5,) not in second


def test_disk_lru_order_survives_a_restart(tmp_path: Path, make_state: Callable[..., Any]) -> None:
    cache = LlamaDiskCache(cache_dir=tmp_path)
    for t in (1, 2, 3):
        cache[(t,)] = make_state(500, seed=t)
    one = cache.cache_size // 3
    # Reading touches the file; pin the times so coarse filesystem clocks cannot tie.
    files = {t: tmp_path / next(p.name for p in tmp_path.iterdir() if _key_of(p) == (t,)) for t in (1, 2, 3)}
    for age, t in enumerate((2, 3, 1)):  # (2,) oldest, then (3,), then (1,)
        os.utime(files[t], ns=(10**18 + age * 10**9, 10**18 + age * 10**9))

    reopened = LlamaDiskCache(cache_dir=tmp_path, capacity_bytes=3 * one + one // 2)
    reopened[(4,)] = make_state(500, seed=4)
    assert (2,) not in reopened and not files[2].exists()
    assert [reopened[(t,)].seed for t in (1, 3, 4)] == [1, 3, 4]

    before = files[3].stat().st_mtime_ns
    reopened[(3,)]
    assert files[3].stat().st_mtime_ns > before  # read = touched


def _key_of(path: Path) -> tuple[int, ...]:
    with np.load(path, allow_pickle=False) as npz:
        return tuple(int(t) for t in npz["key"])


def _valid_file(tmp_path: Path, make_state: Callable[..., Any], key: tuple[int, ...]) -> Path:
    """A file the disk cache wrote for `key`, alone in a fresh folder."""
    folder = tmp_path / f"valid{len(list(tmp_path.iterdir()))}"
    cache = LlamaDiskCache(cache_dir=folder)
    cache[key] = make_state(64, n_tokens=2, n_vocab=4)
    (path,) = folder.iterdir()
    return path


def _survives(folder: Path, key: tuple[int, ...], make_state: Callable[..., Any]) -> None:
    """A cache over `folder` opens, reads and writes without raising anything but KeyError."""
    cache = LlamaDiskCache(cache_dir=folder)
    assert cache.cache_size >= 0
    if key in cache:
        try:
            cache[key]
        except KeyError:
            pass
    cache[(99,)] = make_state(1)
    assert cache[(99,)].llama_state_size == 1


def test_damaged_files_are_skipped(tmp_path: Path, make_state: Callable[..., Any]) -> None:
    key = (3, 1, 4, 1, 5)
    good = _valid_file(tmp_path, make_state, key)
    data = good.read_bytes()
    folder = tmp_path / "damaged"
    folder.mkdir()
    target = folder / good.name  # the name the cache would look for

    # Truncated at many lengths (crash mid-write of a foreign writer, full disk).
    for n in [0, 1, 3, 4, 30, *range(0, len(data), 37), len(data) - 1]:
        target.write_bytes(data[:n])
        _survives(folder, key, make_state)
        for p in folder.iterdir():
            if p != target:
                p.unlink()

    # Flipped bytes (CRC errors, broken headers, broken zip directory).
    rng = random.Random(1)
    for _ in range(150):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(damaged))
        _survives(folder, key, make_state)
        for p in folder.iterdir():
            if p != target:
                p.unlink()

    # Not an .npz at all: text, a bare .npy, an empty folder named like an entry.
    target.write_text("hello")
    _survives(folder, key, make_state)
    with open(target, "wb") as f:
        np.save(f, np.arange(10))
    _survives(folder, key, make_state)
    target.unlink()
    target.mkdir()
    _survives(folder, key, make_state)


def test_a_file_deleted_behind_the_cache_falls_back(tmp_path: Path, make_state: Callable[..., Any]) -> None:
    cache = LlamaDiskCache(cache_dir=tmp_path)
    cache[(1, 2)] = make_state(10, seed=1)
    cache[(1, 2, 3)] = make_state(10, seed=2)
    for p in tmp_path.iterdir():
        if _key_of(p) == (1, 2, 3):
            p.unlink()
    assert cache[(1, 2, 3, 4)].seed == 1  # next best
    for p in tmp_path.iterdir():
        p.unlink()
    with pytest.raises(KeyError):
        cache[(1, 2, 3, 4)]
    assert cache.cache_size == 0


def test_files_with_wrong_fields_are_skipped(tmp_path: Path, make_state: Callable[..., Any]) -> None:
    key = (10, 20)
    good = _valid_file(tmp_path, make_state, key)
    with np.load(good, allow_pickle=False) as npz:
        fields = {name: npz[name] for name in npz.files}
    variants = {
        "missing llama_state": {k: v for k, v in fields.items() if k != "llama_state"},
        "float key": {**fields, "key": fields["key"].astype(np.float64)},
        "other key": {**fields, "key": np.array([10, 21])},
        "2-d key": {**fields, "key": fields["key"].reshape(1, 2)},
        "float input_ids": {**fields, "input_ids": fields["input_ids"].astype(np.float32)},
        "int scores": {**fields, "scores": fields["scores"].astype(np.int32)},
        "int16 state": {**fields, "llama_state": fields["llama_state"].astype(np.int16)},
        "array seed": {**fields, "seed": np.array([1, 2])},
        "future format": {**fields, "format_version": np.int64(99)},
        "string n_tokens": {**fields, "n_tokens": np.array("3")},
    }
    for what, arrays in variants.items():
        folder = tmp_path / what.replace(" ", "_")
        folder.mkdir()
        with open(folder / good.name, "wb") as f:
            np.savez(f, **arrays)
        cache = LlamaDiskCache(cache_dir=folder)
        if key in cache:  # indexed by its key, refused when loaded
            with pytest.raises(KeyError):
                cache[key]


class _Payload:
    """Unpickling this creates `marker`: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_pickled_payloads_are_never_loaded(tmp_path: Path, make_state: Callable[..., Any]) -> None:
    key = (6, 6, 6)
    good = _valid_file(tmp_path, make_state, key)
    with np.load(good, allow_pickle=False) as npz:
        fields = {name: npz[name] for name in npz.files}
    marker = tmp_path / "pwned"

    def object_array() -> np.ndarray:
        arr = np.empty(1, dtype=object)
        arr[0] = _Payload(marker)
        return arr

    for member in ["key", "llama_state", "input_ids", "seed"]:
        folder = tmp_path / f"pickle_in_{member}"
        folder.mkdir()
        with open(folder / good.name, "wb") as f:
            np.savez(f, **{**fields, member: object_array()})  # numpy pickles object arrays
        cache = LlamaDiskCache(cache_dir=folder)
        if key in cache:
            with pytest.raises(KeyError):
                cache[key]
        assert not marker.exists(), f"a pickle in {member!r} was executed"

    # A raw pickle stream under an entry's name.
    import pickle

    folder = tmp_path / "raw_pickle"
    folder.mkdir()
    (folder / good.name).write_bytes(pickle.dumps(_Payload(marker)))
    cache = LlamaDiskCache(cache_dir=folder)
    assert key not in cache
    assert not marker.exists()


def test_disk_cache_rejects_non_numeric_arrays(tmp_path: Path, state_cls: Callable[..., Any]) -> None:
    cache = LlamaDiskCache(cache_dir=tmp_path)
    bad = state_cls(input_ids=np.array(["a"]), scores=np.zeros((0, 2), np.float32), n_tokens=0,
                    llama_state=b"", llama_state_size=0, seed=0)
    with pytest.raises(TypeError, match="input_ids"):
        cache[(1,)] = bad
    assert list(tmp_path.iterdir()) == []
