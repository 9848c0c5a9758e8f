"""Llama: the high-level API, a drop-in replacement for llama-cpp-python's ``llama_cpp.Llama``.

    from llamabind import Llama            # was: from llama_cpp import Llama

    llm = Llama(model_path="SmolLM2-135M-Instruct.Q4_1.gguf", n_ctx=2048)
    out = llm("Q: Name the planets in the solar system. A:", max_tokens=32, stop=["Q:", "\\n"])
    print(out["choices"][0]["text"])

Same constructor keywords, methods and OpenAI-style return dicts as llama-cpp-python, plus:
every llama.cpp sampler (``SamplingParams``), async variants (``acreate_completion``,
``acreate_chat_completion``, ``acreate_embedding``), cancellation from another thread
(``cancel()`` or a ``threading.Event``), Ctrl-C that stops a running prompt evaluation,
prompt-prefix reuse, and streams that never split a UTF-8 character or leak part of a stop
sequence.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fnmatch
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, cast

import numpy as np
import numpy.typing as npt

from . import _core, _tools
from ._engine import EngineRequest, EngineRunner
from ._core import (
    DEFAULT_SEED,
    AbortedError,
    AttentionType,
    Batch,
    ClosedError,
    Context,
    FinishReason,
    FlashAttnType,
    GGMLType,
    LoraAdapter,
    Model,
    NumaStrategy,
    PoolingType,
    RopeScalingType,
    SplitMode,
)
from ._text import StopMatcher, Utf8Stream
from .llama_grammar import JSON_GBNF, LlamaGrammar
from .llama_tokenizer import LlamaTokenizer
from .sampling import LogitsProcessor, SamplingParams

logger = logging.getLogger("llamabind")

StoppingCriteria = Callable[[npt.NDArray[np.intc], npt.NDArray[np.single]], bool]


class LogitsProcessorList(list):  # type: ignore[type-arg]
    """A list of logits processors f(input_ids, scores) -> scores, applied in order."""

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class StoppingCriteriaList(list):  # type: ignore[type-arg]
    """A list of stopping criteria f(input_ids, logits) -> bool; generation stops when any is true."""

    def __call__(self, input_ids: npt.NDArray[np.intc], logits: npt.NDArray[np.single]) -> bool:
        return any(criterion(input_ids, logits) for criterion in self)


class MinTokensLogitsProcessor:
    """Forbids the end-of-sequence token until `min_tokens` tokens were generated."""

    def __init__(self, min_tokens: int, token_eos: int) -> None:
        self.min_tokens = min_tokens
        self.token_eos = token_eos
        self.prompt_tokens: int | None = None

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        if len(input_ids) - self.prompt_tokens < self.min_tokens:
            scores[self.token_eos] = -np.inf
        return scores


class LlamaState:
    """A snapshot of a Llama's context: tokens, logits kept, and llama.cpp's state bytes."""

    def __init__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single], n_tokens: int,
                 llama_state: bytes, llama_state_size: int, seed: int) -> None:
        self.input_ids = input_ids
        self.scores = scores
        self.n_tokens = n_tokens
        self.llama_state = llama_state
        self.llama_state_size = llama_state_size
        self.seed = seed


@dataclass
class _TokenRecord:
    """One generated (or echoed) token as the logprobs output describes it."""

    token: int
    text: str
    offset: int
    logprob: float | None = None
    top: dict[str, float] | None = None
    raw_top: list[tuple[int, float]] | None = None


@dataclass
class _Chunk:
    text: str
    records: list[_TokenRecord] = field(default_factory=list)
    finish_reason: str | None = None
    generated: int = 0  # generated (not echoed) tokens this chunk accounts for


class _ChunkMaker:
    """Turns generated tokens into text chunks for both generation loops (the single
    sequence and the engine's): UTF-8 pieces reassembled across tokens, stop strings that
    never leak, logprob records with text offsets counted from the start of the prompt text."""

    def __init__(self, llm: Llama, stop: str | Sequence[str], logprobs: int | None, offset: int) -> None:
        self._llm = llm
        self._want_logprobs = logprobs is not None
        self._k = int(logprobs or 0)
        self._offset = offset
        self._utf8 = Utf8Stream()
        self._stops = StopMatcher([stop] if isinstance(stop, str) else list(stop or []))
        self._pending: list[_TokenRecord] = []

    def push(self, token: int, row: npt.NDArray[np.single] | None) -> tuple[str, bool]:
        """Adds a token (with its logits row when logprobs are wanted); returns the text now
        safe to release and whether a stop string ended it."""
        piece = self._llm._vocab.token_to_piece(token)
        record = _TokenRecord(token, piece.decode("utf-8", errors="ignore"), self._offset)
        if self._want_logprobs and row is not None:
            lp, top = self._llm._top_logprobs(row, self._k)
            record.logprob = float(lp[token])
            record.raw_top = top
        self._offset += len(record.text)
        self._pending.append(record)
        return self._stops.push(self._utf8.push(piece))

    def chunk(self, text: str, finish: str | None = None) -> _Chunk:
        """A chunk with `text` that accounts for the tokens pushed since the last one."""
        pending, self._pending = self._pending, []
        return _Chunk(text, pending, finish, len(pending))

    def tail(self, finish: str) -> _Chunk:
        """The last chunk: text held back for UTF-8 or a possible stop string."""
        text, stopped = self._stops.push(self._utf8.flush())
        if stopped:
            finish = "stop"
        else:
            text += self._stops.flush()
        return self.chunk(text, finish)


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Accepted for compatibility: rpc_servers (None only) and arguments of older llama-cpp-python releases.
_CONSTRUCTOR_EXTRAS = {"rpc_servers", "n_gqa", "rms_norm_eps", "mul_mat_q", "f16_kv", "low_vram", "use_mlock_all"}


class Llama:
    """A model with one inference context, serving completions, chat and embeddings.

    Every keyword of llama-cpp-python's constructor is accepted. Differences, all logged
    as warnings when they matter: `tfs_z` and `penalize_nl` have no effect (llama.cpp
    removed them); `draft_model` is accepted but speculative decoding is not used, which
    changes speed only; `lora_base` is ignored (llama.cpp applies adapters to the loaded
    weights); `verbose` does not print llama.cpp's log, which always goes to the `logging`
    logger "llamabind" (configure logging to see it).

    `n_parallel` (llamabind only, default 1) is how many sequences are generated at once.
    With n_parallel=N > 1 the context holds N sequences of n_ctx tokens each (its KV cache
    is N times as large) and an engine serves every completion, chat completion and their
    async variants: each step decodes one batch holding the next token of every running
    request plus chunks of new prompts, so calls from several threads or asyncio tasks, and
    create_completion with a list of prompts, run together instead of one after another.
    Prompts that start with the same tokens as a running request (a shared system prompt)
    copy its KV cells instead of evaluating them again. Requests beyond N wait for a free
    slot. Breaking out of a stream, cancelling its task or its `cancel` event frees the
    slot at once. Not available with n_parallel > 1: echo=True together with logprobs,
    and set_cache (the engine's prefix sharing takes its place); the low-level eval /
    sample / generate / save_state / load_state work while no completion runs.
    """

    def __init__(
        self,
        model_path: str,
        *,
        n_gpu_layers: int = 0,
        split_mode: int = SplitMode.LAYER,
        main_gpu: int = 0,
        tensor_split: list[float] | None = None,
        vocab_only: bool = False,
        use_mmap: bool = True,
        use_mlock: bool = False,
        kv_overrides: dict[str, bool | int | float | str] | None = None,
        seed: int = DEFAULT_SEED,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        rope_scaling_type: int | None = RopeScalingType.UNSPECIFIED,
        pooling_type: int = PoolingType.UNSPECIFIED,
        attention_type: int = AttentionType.UNSPECIFIED,
        rope_freq_base: float = 0.0,
        rope_freq_scale: float = 0.0,
        yarn_ext_factor: float = -1.0,
        yarn_attn_factor: float = 1.0,
        yarn_beta_fast: float = 32.0,
        yarn_beta_slow: float = 1.0,
        yarn_orig_ctx: int = 0,
        logits_all: bool = False,
        embedding: bool = False,
        offload_kqv: bool = True,
        flash_attn: bool = False,
        op_offload: bool | None = None,
        swa_full: bool | None = None,
        no_perf: bool = False,
        last_n_tokens_size: int = 64,
        lora_base: str | None = None,
        lora_scale: float = 1.0,
        lora_path: str | None = None,
        numa: bool | int = False,
        chat_format: str | None = None,
        chat_handler: Any = None,
        draft_model: Any = None,
        tokenizer: Any = None,
        type_k: int | None = None,
        type_v: int | None = None,
        spm_infill: bool = False,
        verbose: bool = True,
        progress_callback: Callable[[float], bool | None] | None = None,
        n_parallel: int = 1,
        **kwargs: Any,
    ) -> None:
        self._init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        self._init_kwargs.update(kwargs)
        self._closed = False
        self._lock = threading.RLock()
        self._active_cancel: threading.Event | None = None
        self._generating = False
        self._runner: EngineRunner | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.n_parallel = int(n_parallel)
        if self.n_parallel < 1 or self.n_parallel > _core.max_parallel_sequences():
            raise ValueError(f"n_parallel must be in [1, {_core.max_parallel_sequences()}], got {n_parallel}")
        if self.n_parallel > 1 and embedding:
            raise ValueError("n_parallel is for generation; with embedding=True, embed() already packs many inputs "
                             "into each decode")
        self.verbose = verbose
        self.model_path = os.fspath(model_path)
        unknown = sorted(set(kwargs) - _CONSTRUCTOR_EXTRAS)
        if unknown:
            raise TypeError(f"Llama() got unexpected keyword argument(s): {', '.join(unknown)}")
        if kwargs.get("rpc_servers") is not None:
            raise ValueError("rpc_servers is not supported: this llamabind build adds no RPC devices")
        kwargs.pop("rpc_servers", None)
        if kwargs:
            logger.warning("Llama(): ignoring obsolete argument(s) %s", ", ".join(sorted(kwargs)))
        if numa:
            _core.numa_init(NumaStrategy.DISTRIBUTE if numa is True else NumaStrategy(int(numa)))
        if lora_base is not None:
            logger.warning("lora_base is ignored: llama.cpp applies LoRA adapters to the loaded weights")
        if draft_model is not None:
            logger.warning("draft_model is accepted but speculative decoding is not used; output is unchanged")
        self.draft_model = draft_model

        self._model = Model(
            self.model_path, n_gpu_layers=n_gpu_layers, split_mode=SplitMode(int(split_mode)), main_gpu=main_gpu,
            tensor_split=tensor_split, use_mmap=use_mmap, use_mlock=use_mlock, vocab_only=vocab_only,
            kv_overrides=kv_overrides, progress_callback=progress_callback,
        )
        self._vocab_obj: _core.Vocab | None = self._model.vocab
        self._n_vocab = self._vocab.n_tokens
        self.tokenizer_ = tokenizer
        self._seed = seed
        self.last_n_tokens_size = last_n_tokens_size
        self.spm_infill = spm_infill
        self.lora_base = lora_base
        self.lora_path = lora_path
        self.lora_scale = lora_scale
        self._logits_all = logits_all
        self._embedding = embedding
        threads = n_threads or _default_threads()
        threads_batch = n_threads_batch or _default_threads()
        self.n_batch = min(n_ctx or self._model.n_ctx_train, n_batch) if n_ctx else n_batch
        self.context_params: dict[str, Any] = dict(
            n_ctx=n_ctx, n_batch=self.n_batch, n_ubatch=min(n_ubatch, self.n_batch), n_threads=threads,
            n_threads_batch=threads_batch,
            rope_scaling_type=RopeScalingType(int(rope_scaling_type if rope_scaling_type is not None else -1)),
            pooling_type=PoolingType(int(pooling_type)), attention_type=AttentionType(int(attention_type)),
            flash_attn_type=FlashAttnType.ENABLED if flash_attn else FlashAttnType.DISABLED,
            rope_freq_base=rope_freq_base, rope_freq_scale=rope_freq_scale, yarn_ext_factor=yarn_ext_factor,
            yarn_attn_factor=yarn_attn_factor, yarn_beta_fast=yarn_beta_fast, yarn_beta_slow=yarn_beta_slow,
            yarn_orig_ctx=yarn_orig_ctx, embeddings=embedding, offload_kqv=offload_kqv, no_perf=no_perf,
            type_k=GGMLType(type_k) if type_k is not None else GGMLType.F16,
            type_v=GGMLType(type_v) if type_v is not None else GGMLType.F16,
        )
        if op_offload is not None:
            self.context_params["op_offload"] = op_offload
        if swa_full is not None:
            self.context_params["swa_full"] = swa_full
        if embedding:
            # Many inputs go into one decode as separate sequences sharing the cells.
            self.context_params.update(n_seq_max=min(64, _core.max_parallel_sequences()), kv_unified=True)
        if self.n_parallel > 1:
            # n_ctx stays the window of one sequence: each slot gets its own n_ctx cells (its own
            # KV stream), so one request filling its context never disturbs another.
            self.context_params.update(n_ctx=(n_ctx or self._model.n_ctx_train) * self.n_parallel,
                                       n_seq_max=self.n_parallel)
        self._ctx: Context | None = None
        self._adapter: LoraAdapter | None = None
        if not vocab_only:
            self._ctx = Context(self._model, **self.context_params)
            if lora_path:
                self._adapter = LoraAdapter(self._model, lora_path)
                self._ctx.set_lora_adapters([(self._adapter, lora_scale)])
        if self._ctx is not None and self.n_parallel > 1:
            self._runner = EngineRunner(self._ctx)
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4 * self.n_parallel + 4,
                                                                   thread_name_prefix="llamabind-call")
        self._n_ctx = (self._ctx.n_ctx_seq if self._runner else self._ctx.n_ctx) if self._ctx else \
            (n_ctx or self._model.n_ctx_train)
        self.input_ids: npt.NDArray[np.intc] = np.zeros(self._n_ctx, dtype=np.intc)
        self.scores: npt.NDArray[np.single] = (
            np.zeros((self._n_ctx, self._n_vocab), dtype=np.single) if logits_all else np.zeros((0, self._n_vocab), np.single)
        )
        self.n_tokens = 0
        self.cache: Any = None
        self.metadata: dict[str, str] = self._model.metadata
        self.chat_format = chat_format
        self.chat_handler = chat_handler
        self._formatter: Any = None
        if verbose:
            logger.info("Llama: loaded %s (%s), n_ctx=%d", self.model_path, self._model.desc, self._n_ctx)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Frees the context and the model. Idempotent; later calls raise ClosedError."""
        if self._runner is not None:
            self._runner.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        with self._lock:
            self._closed = True
            self._vocab_obj = None
            self._formatter = None
            if self._ctx is not None:
                self._ctx.close()
            if self._adapter is not None:
                self._adapter.close()
            self._model.close()

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _context(self) -> Context:
        if self._closed:
            raise ClosedError("[Llama] the model is closed")
        if self._ctx is None:
            raise ValueError("[Llama] the model was loaded with vocab_only=True; it cannot evaluate tokens")
        return self._ctx

    # ------------------------------------------------------------------ properties

    @property
    def _vocab(self) -> _core.Vocab:
        vocab = self._vocab_obj
        if vocab is None:
            raise ClosedError("[Llama] the model is closed")
        return vocab

    @property
    def ctx(self) -> Context:
        """The llamabind Context (llama-cpp-python returns a raw pointer here)."""
        return self._context()

    @property
    def model(self) -> Model:
        """The llamabind Model."""
        if self._closed:
            raise ClosedError("[Llama] the model is closed")
        return self._model

    @property
    def _input_ids(self) -> npt.NDArray[np.intc]:
        return self.input_ids[: self.n_tokens]

    @property
    def _scores(self) -> npt.NDArray[np.single]:
        """Logits kept so far: one row per evaluated token with logits_all, else the last row."""
        if self._logits_all:
            return self.scores[: self.n_tokens]
        ctx = self._context()
        if ctx.n_outputs == 0:
            return np.zeros((0, self._n_vocab), np.single)
        return ctx.logits_ith(-1)[None, :]

    @property
    def eval_tokens(self) -> deque[int]:
        return deque(self.input_ids[: self.n_tokens].tolist(), maxlen=self._n_ctx)

    @property
    def eval_logits(self) -> deque[list[float]]:
        return deque(self._scores.tolist(), maxlen=self._n_ctx if self._logits_all else 1)

    def n_ctx(self) -> int:
        """Context size in tokens."""
        return self._n_ctx

    def n_embd(self) -> int:
        return self._model.n_embd

    def n_vocab(self) -> int:
        return self._n_vocab

    def token_bos(self) -> int:
        return self._vocab.bos

    def token_eos(self) -> int:
        return self._vocab.eos

    def token_nl(self) -> int:
        return self._vocab.nl

    def pooling_type(self) -> int:
        return int(self._context().pooling_type)

    def tokenizer(self) -> LlamaTokenizer:
        """A LlamaTokenizer bound to this model."""
        return LlamaTokenizer(self)

    # ------------------------------------------------------------------ tokens

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Text (bytes or str) to token ids. add_bos adds BOS/EOS as the model asks."""
        if self.tokenizer_ is not None:
            return list(self.tokenizer_.tokenize(text, add_bos=add_bos, special=special))
        return self._vocab.tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None, special: bool = False) -> bytes:
        """Token ids to bytes. With prev_tokens, only the text the tokens add after them."""
        tokenizer = self.tokenizer_ if self.tokenizer_ is not None else LlamaTokenizer(self)
        return bytes(tokenizer.detokenize(tokens, prev_tokens=prev_tokens, special=special))

    # ------------------------------------------------------------------ state

    def set_cache(self, cache: Any) -> None:
        """Sets a LlamaRAMCache / LlamaDiskCache (or None): prompts that extend a cached one
        restore its state instead of evaluating it again. With n_parallel > 1 the cache is not
        used: the engine shares prompt prefixes between running requests instead."""
        if cache is not None and self._runner is not None:
            logger.warning("Llama.set_cache: the cache is not used with n_parallel > 1 (the engine shares "
                           "prompt prefixes between running requests instead)")
        self.cache = cache

    def set_seed(self, seed: int) -> None:
        """The seed used when a call gives none."""
        self._seed = seed

    def reset(self) -> None:
        """Forgets the evaluated tokens (the KV cache is reused or cleared lazily)."""
        self.n_tokens = 0

    def save_state(self) -> LlamaState:
        """A snapshot of the context, restorable with load_state (also into another Llama
        on the same model)."""
        with self._lock:
            self._check_engine_idle("save_state")
            ctx = self._context()
            data = ctx.state_get()
            scores = self.scores[: self.n_tokens].copy() if self._logits_all else self._scores.copy()
            return LlamaState(self.input_ids.copy(), scores, self.n_tokens, data, len(data), self._seed)

    def load_state(self, state: LlamaState) -> None:
        """Restores a snapshot from save_state. Raises StateError (leaving an empty context)
        when it does not fit this model and context."""
        with self._lock:
            self._check_engine_idle("load_state")
            ctx = self._context()
            if state.n_tokens > self._n_ctx:
                raise ValueError(f"state holds {state.n_tokens} tokens, more than n_ctx={self._n_ctx}")
            try:
                ctx.state_set(state.llama_state)
            except Exception:
                self.n_tokens = 0
                raise
            self.input_ids[: state.n_tokens] = state.input_ids[: state.n_tokens]
            self.n_tokens = state.n_tokens
            if self._logits_all and len(state.scores) == state.n_tokens:
                self.scores[: state.n_tokens] = state.scores
            self._seed = state.seed
            if self.n_tokens > 0:
                # llama.cpp restores the logits, but which rows they belong to is not exposed;
                # evaluating the last token again makes them addressable (one token's work).
                last = int(self.input_ids[self.n_tokens - 1])
                self.n_tokens -= 1
                self._eval([last])

    def __getstate__(self) -> dict[str, Any]:
        """Pickling keeps the constructor arguments (as llama-cpp-python does): unpickling loads
        the model again with a fresh context. Use save_state() to keep the context too."""
        if self.chat_handler is not None or self.tokenizer_ is not None or self.draft_model is not None:
            raise TypeError("a Llama with a chat_handler, tokenizer or draft_model object cannot be pickled")
        return dict(self._init_kwargs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # ------------------------------------------------------------------ evaluation

    def _check_engine_idle(self, where: str) -> None:
        """The low-level API (eval, sample, generate, state) works on sequence 0 of the context;
        with n_parallel > 1 the engine's requests use it too."""
        if self._runner is not None and self._runner.busy:
            raise RuntimeError(f"[Llama.{where}] completions are running on this Llama's engine "
                               f"(n_parallel={self.n_parallel}); the low-level API shares their context, so "
                               "wait until they finish")

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluates tokens after the ones already evaluated, in chunks of n_batch."""
        with self._lock:
            self._check_engine_idle("eval")
            self._eval(list(tokens))

    def _eval(self, tokens: list[int], *, cancel: threading.Event | None = None) -> None:
        ctx = self._context()
        if not tokens:
            return
        if self.n_tokens + len(tokens) > self._n_ctx:
            raise ValueError(
                f"Requested tokens ({self.n_tokens + len(tokens)}) exceed context window of {self._n_ctx}")
        if ctx.seq_pos_max(0) >= self.n_tokens:
            # Cells past n_tokens are stale (after reset(), or a rolled-back generation).
            if not ctx.seq_rm(0, self.n_tokens, -1):
                ctx.memory_clear()
                self.n_tokens = 0
        for start in range(0, len(tokens), self.n_batch):
            if cancel is not None and cancel.is_set():
                raise AbortedError("[Llama] generation was cancelled")
            chunk = tokens[start:start + self.n_batch]
            ctx.decode_tokens(chunk, pos0=self.n_tokens, all_logits=self._logits_all)
            self.input_ids[self.n_tokens:self.n_tokens + len(chunk)] = chunk
            if self._logits_all:
                self.scores[self.n_tokens:self.n_tokens + len(chunk)] = ctx.logits()
            self.n_tokens += len(chunk)

    def _prepare(self, tokens: list[int], *, cancel: threading.Event | None = None) -> None:
        """Makes the context hold exactly `tokens`, evaluating only what is not already there
        (the longest common prefix with the current tokens, or with a cached state)."""
        ctx = self._context()
        if len(tokens) > self._n_ctx:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {self._n_ctx}")
        keep = self.longest_token_prefix(self.input_ids[: self.n_tokens], tokens)
        if self.cache is not None and keep < len(tokens) - 1:
            key = tuple(tokens)
            try:
                cached_key = self.cache._find_longest_prefix_key(key)
            except Exception:
                cached_key = None
            if cached_key is not None and self.longest_token_prefix(cached_key, tokens) > keep:
                self.load_state(self.cache[key])
                keep = self.longest_token_prefix(self.input_ids[: self.n_tokens], tokens)
        # The last token is always evaluated again so its logits are fresh.
        keep = min(keep, len(tokens) - 1)
        if keep < self.n_tokens and not ctx.seq_rm(0, keep, -1):
            ctx.memory_clear()
            keep = 0
        self.n_tokens = keep
        self._eval(tokens[keep:], cancel=cancel)

    def _begin_generation(self, token: threading.Event | None) -> None:
        """Marks a generation as running (the lock is already held). A stream left
        unfinished holds the context; starting another generation on this thread meanwhile
        would interleave two token sequences in one KV cache, so it is refused."""
        if self._generating:
            raise RuntimeError("[Llama] another generation on this Llama is unfinished (an open stream or "
                               "generator); exhaust or close() it first")
        self._generating = True
        self._active_cancel = token

    def _end_generation(self) -> None:
        self._generating = False
        self._active_cancel = None
        if self._ctx is not None and not self._closed:
            # A cancel noticed between decodes leaves the context's flag set; clear it so the
            # next call does not abort at once.
            self._ctx.clear_cancel()

    # ------------------------------------------------------------------ sampling

    def _sampling(self, **kw: Any) -> SamplingParams:
        """SamplingParams from llama-cpp-python style keywords. An explicit `sampling` object
        replaces the individual sampler keywords (whose defaults cannot be told apart from
        explicit values); seed, grammar, logits processors and logit bias still apply."""
        seed = kw.pop("seed", None)
        given: SamplingParams | None = kw.pop("sampling", None)
        if "temp" in kw:
            kw["temperature"] = kw.pop("temp")
        if given is not None:
            keep = ("grammar", "logits_processor", "logit_bias")
            params = given.replace(**{k: kw[k] for k in keep if kw.get(k) is not None})
        else:
            params = SamplingParams().replace(**{k: v for k, v in kw.items() if v is not None})
        if params.seed is None:
            params = params.replace(seed=seed if seed is not None else self._seed)
        if params.penalty_last_n == 64 and self.last_n_tokens_size != 64:
            params = params.replace(penalty_last_n=self.last_n_tokens_size)
        return params

    def _chain(self, params: SamplingParams, history: Sequence[int],
               input_ids: Callable[[], npt.NDArray[np.intc]] | None = None) -> _core.SamplerChain:
        n = params.penalty_last_n if params.penalty_last_n >= 0 else len(history)
        return params.build(self._model, list(history)[-n:] if n else [],
                            input_ids or (lambda: self.input_ids[: self.n_tokens]), n_ctx=self._n_ctx)

    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
               temp: float = 0.8, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
               presence_penalty: float = 0.0, tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_eta: float = 0.1,
               mirostat_tau: float = 5.0, penalize_nl: bool = True, logits_processor: LogitsProcessorList | None = None,
               grammar: LlamaGrammar | None = None, idx: int | None = None) -> int:
        """Samples one token from the logits of the last evaluation (or batch entry idx)."""
        with self._lock:
            self._check_engine_idle("sample")
            ctx = self._context()
            params = self._sampling(top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p, temp=temp,
                                    repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                                    presence_penalty=presence_penalty, tfs_z=tfs_z, mirostat_mode=mirostat_mode,
                                    mirostat_eta=mirostat_eta, mirostat_tau=mirostat_tau,
                                    logits_processor=logits_processor, grammar=grammar)
            chain = self._chain(params, self.input_ids[: self.n_tokens].tolist())
            return chain.sample(ctx, -1 if idx is None else idx)

    def generate(self, tokens: Sequence[int], top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 typical_p: float = 1.0, temp: float = 0.8, repeat_penalty: float = 1.0, reset: bool = True,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0, tfs_z: float = 1.0,
                 mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                 penalize_nl: bool = True, logits_processor: LogitsProcessorList | None = None,
                 stopping_criteria: StoppingCriteriaList | None = None, grammar: LlamaGrammar | None = None,
                 *, seed: int | None = None, sampling: SamplingParams | None = None,
                 cancel: threading.Event | None = None) -> Generator[int, Sequence[int] | None, None]:
        """Yields sampled tokens forever (stop when you have enough). With reset, tokens that
        extend what is already evaluated reuse it. `send()` extra tokens to append them."""
        params = self._sampling(top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p, temp=temp,
                                repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                                presence_penalty=presence_penalty, tfs_z=tfs_z, mirostat_mode=mirostat_mode,
                                mirostat_eta=mirostat_eta, mirostat_tau=mirostat_tau,
                                logits_processor=logits_processor, grammar=grammar, seed=seed, sampling=sampling)
        cancel = cancel or threading.Event()
        with self._lock:
            self._check_engine_idle("generate")
            self._begin_generation(cancel)
            try:
                tokens = list(tokens)
                if reset:
                    self._prepare(tokens, cancel=cancel)
                else:
                    self._eval(tokens, cancel=cancel)
                ctx = self._context()
                chain = self._chain(params, self.input_ids[: self.n_tokens].tolist())
                while True:
                    if cancel is not None and cancel.is_set():
                        raise AbortedError("[Llama] generation was cancelled")
                    token = chain.sample(ctx, -1)
                    if stopping_criteria is not None:
                        ids = np.append(self.input_ids[: self.n_tokens], token).astype(np.intc)
                        if stopping_criteria(ids, ctx.logits_ith(-1)):
                            return
                    extra = yield token
                    self._eval([token, *(extra or [])], cancel=cancel)
            finally:
                self._end_generation()

    # ------------------------------------------------------------------ embeddings

    def create_embedding(self, input: str | list[str], model: str | None = None) -> dict[str, Any]:
        """OpenAI-style embeddings response for one text or a list of texts."""
        texts = [input] if isinstance(input, str) else list(input)
        embeddings, n_tokens = self.embed(texts, return_count=True)
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(embeddings)],
            "model": model or self.model_path,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }

    def embed(self, input: str | list[str], normalize: bool = False, truncate: bool = True,
              return_count: bool = False) -> Any:
        """Embeddings of one text or many (needs Llama(embedding=True)). Many texts are packed
        into each decode as separate sequences. With pooling NONE each text gives one row per
        token. normalize: L2-normalise; truncate: cut texts longer than n_batch (else raise)."""
        if not self._embedding:
            raise ValueError("Llama.embed needs a model created with embedding=True")
        single = isinstance(input, str)
        texts: list[str] = [input] if isinstance(input, str) else list(input)
        with self._lock:
            ctx = self._context()
            pooled = ctx.pooling_type != PoolingType.NONE
            # Non-causal models need each decode in one ubatch.
            limit = min(self.n_batch, int(self.context_params["n_ubatch"]), self._n_ctx)
            tokenized = []
            for t in texts:
                ids = self.tokenize(t.encode("utf-8"), add_bos=True)
                if len(ids) > limit:
                    if not truncate:
                        raise ValueError(f"input of {len(ids)} tokens exceeds the batch size {limit}")
                    ids = ids[:limit]
                tokenized.append(ids)
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
                    results.extend(self._embed_group(ctx, group, pooled, normalize))
                    total += used
            finally:
                ctx.memory_clear()
                self.n_tokens = 0
        out: Any = results[0] if single else results
        return (out, total) if return_count else out

    def _embed_group(self, ctx: Context, group: list[list[int]], pooled: bool, normalize: bool) -> list[Any]:
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

    # ------------------------------------------------------------------ completions

    def _completion_prompt(self, prompt: str | bytes | Sequence[int], suffix: str | None) -> tuple[list[int], str]:
        """Prompt tokens (FIM-arranged when there is a suffix; BOS alone for an empty prompt)
        and the prompt's text."""
        ids, text = self._prompt_ids(prompt, suffix)
        if not ids:
            if self._vocab.bos < 0:
                raise ValueError("the prompt is empty and the model has no BOS token to start from")
            ids = [self._vocab.bos]
        return ids, text

    def _prompt_ids(self, prompt: str | bytes | Sequence[int], suffix: str | None) -> tuple[list[int], str]:
        if isinstance(prompt, (str, bytes)):
            raw = prompt.encode("utf-8") if isinstance(prompt, str) else prompt
            text = prompt if isinstance(prompt, str) else prompt.decode("utf-8", errors="replace")
            if suffix is None:
                return (self.tokenize(raw, add_bos=True, special=True) if raw else
                        ([self._vocab.bos] if self._vocab.add_bos and self._vocab.bos >= 0 else [])), text
            prefix_ids = self.tokenize(raw, add_bos=False, special=False)
        else:
            prefix_ids = [int(t) for t in prompt]
            text = self.detokenize(prefix_ids).decode("utf-8", errors="replace")
            if suffix is None:
                return prefix_ids, text
        v = self._vocab
        if min(v.fim_pre, v.fim_suf, v.fim_mid) < 0:
            raise ValueError("suffix (fill-in-the-middle) needs a model with FIM tokens; this model has none")
        suffix_ids = self.tokenize(suffix.encode("utf-8"), add_bos=False, special=False)
        head = [v.bos] if v.add_bos and v.bos >= 0 else []
        if self.spm_infill:
            ids = head + [v.fim_suf] + suffix_ids + [v.fim_pre] + prefix_ids + [v.fim_mid]
        else:
            ids = head + [v.fim_pre] + prefix_ids + [v.fim_suf] + suffix_ids + [v.fim_mid]
        return ids, text

    def _top_logprobs(self, row: npt.NDArray[np.single], k: int) -> tuple[npt.NDArray[np.single], list[tuple[int, float]]]:
        logprobs = self.logits_to_logprobs(row)
        if k <= 0:
            return logprobs, []
        k = min(k, len(logprobs))
        top = np.argpartition(-logprobs, k - 1)[:k]
        top = top[np.argsort(-logprobs[top], kind="stable")]
        return logprobs, [(int(t), float(logprobs[t])) for t in top]

    def _piece_text(self, token: int) -> str:
        return self._vocab.token_to_piece(token).decode("utf-8", errors="ignore")

    def _records(self, tokens: list[int], start_offset: int) -> list[_TokenRecord]:
        records = []
        offset = start_offset
        for t in tokens:
            text = self._piece_text(t)
            records.append(_TokenRecord(t, text, offset))
            offset += len(text)
        return records

    def _echo_logprobs(self, tokens: list[int], k: int) -> list[_TokenRecord]:
        """Log-probabilities of each prompt token given the ones before it (the first has
        none), from a fresh evaluation of the prompt with logits for every position."""
        ctx = self._context()
        records = self._records(tokens, 0)
        ctx.memory_clear()
        self.n_tokens = 0
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            ctx.decode_tokens(chunk, pos0=start, all_logits=True)
            rows = ctx.logits()
            for j in range(len(chunk)):
                nxt = start + j + 1
                if nxt < len(tokens):
                    logprobs, top = self._top_logprobs(rows[j], k)
                    records[nxt].logprob = float(logprobs[tokens[nxt]])
                    records[nxt].raw_top = top
            self.input_ids[start:start + len(chunk)] = chunk
            if self._logits_all:
                self.scores[start:start + len(chunk)] = rows
            self.n_tokens = start + len(chunk)
        return records

    def _completion_params(self, logprobs: int | None, **sampling: Any) -> SamplingParams:
        """Checks the arguments both completion paths share; the SamplingParams for the rest."""
        if logprobs is not None and logprobs < 0:
            raise ValueError("logprobs must be >= 0")
        grammar = sampling.get("grammar")
        if grammar is not None and not isinstance(grammar, LlamaGrammar):
            raise TypeError(f"grammar must be a LlamaGrammar, got {type(grammar).__name__}")
        return self._sampling(**sampling)

    def _token_budget(self, n_prompt: int, max_tokens: int | None) -> int:
        """How many tokens a completion may generate: max_tokens, or (None / <= 0 / too many)
        what the context leaves after the prompt. A prompt longer than the context raises."""
        if n_prompt > self._n_ctx:
            raise ValueError(f"Requested tokens ({n_prompt}) exceed context window of {self._n_ctx}")
        budget = self._n_ctx - n_prompt
        if max_tokens is None or max_tokens <= 0 or max_tokens > budget:
            return budget
        return max_tokens

    def _generate_chunks(self, prompt_tokens: list[int], prompt_text: str, *, max_tokens: int | None,
                         params: SamplingParams, stop: Sequence[str], logprobs: int | None, echo: bool,
                         stopping_criteria: StoppingCriteriaList | None, cancel: threading.Event) -> Iterator[_Chunk]:
        """The generation loop shared by every completion entry point."""
        ctx = self._context()
        max_tokens = self._token_budget(len(prompt_tokens), max_tokens)
        want_logprobs = logprobs is not None
        k = int(logprobs or 0)
        echo_records: list[_TokenRecord] = []
        if echo and want_logprobs:
            echo_records = self._echo_logprobs(prompt_tokens, k)
        else:
            self._prepare(prompt_tokens, cancel=cancel)
            if echo:
                echo_records = self._records(prompt_tokens, 0)
        if echo:
            yield _Chunk(prompt_text, echo_records if want_logprobs else [])
        # As in llama-cpp-python, offsets count from the start of the prompt text.
        out = _ChunkMaker(self, stop, logprobs, len(prompt_text))
        chain = self._chain(params, prompt_tokens)
        finish = "length"
        produced = 0
        while produced < max_tokens:
            if cancel.is_set():
                raise AbortedError("[Llama] generation was cancelled")
            token = chain.sample(ctx, -1)
            if self._vocab.is_eog(token):
                finish = "stop"
                break
            produced += 1
            text, stopped = out.push(token, ctx.logits_ith(-1) if want_logprobs else None)
            if stopped:
                yield out.chunk(text, "stop")
                return
            stop_now = False
            if stopping_criteria is not None:
                ids = np.append(self.input_ids[: self.n_tokens], token).astype(np.intc)
                stop_now = bool(stopping_criteria(ids, ctx.logits_ith(-1)))
            if produced < max_tokens and not stop_now:
                self._eval([token], cancel=cancel)
            if text or stop_now:
                yield out.chunk(text)
            if stop_now:
                finish = "stop"
                break
        yield out.tail(finish)

    def _completion_id(self) -> str:
        return f"cmpl-{uuid.uuid4()}"

    def _logprobs_dict(self, records: list[_TokenRecord], text_len: int, base: int) -> dict[str, Any]:
        kept = [r for r in records if r.offset - base < text_len or r.offset == base]
        return {
            "tokens": [r.text for r in kept],
            "text_offset": [r.offset for r in kept],
            "token_logprobs": [r.logprob for r in kept],
            "top_logprobs": [None if r.raw_top is None else {self._piece_text(t): lp for t, lp in r.raw_top}
                             for r in kept],
        }

    def _create_completion(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Completion chunks (the streamed form of every completion), from the engine when
        n_parallel > 1 (the request is queued at once), else from the single sequence (when
        iterated). Arguments as _completion_single."""
        if self._runner is not None:
            return self._completion_engine(*args, **kwargs)[1]
        return self._completion_single(*args, **kwargs)

    def _completion_dicts(self, chunks: Iterator[_Chunk], cid: str, created: int, model_name: str, n_prompt: int,
                          base: int, logprobs: int | None, _object: str) -> Iterator[dict[str, Any]]:
        for chunk in chunks:
            lp = None
            if logprobs is not None:
                lp = self._logprobs_dict(chunk.records, len(chunk.text), base) if chunk.records or chunk.text \
                    else {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
            base += len(chunk.text)
            yield {
                "id": cid, "object": _object, "created": created, "model": model_name,
                "choices": [{"text": chunk.text, "index": 0, "logprobs": lp, "finish_reason": chunk.finish_reason}],
                "_n": (n_prompt, chunk.generated),
            }

    def _completion_single(self, prompt: str | bytes | Sequence[int], suffix: str | None = None,
                           max_tokens: int | None = 16, temperature: float = 0.8, top_p: float = 0.95,
                           min_p: float = 0.05, typical_p: float = 1.0, logprobs: int | None = None,
                           echo: bool = False, stop: str | list[str] | None = None, frequency_penalty: float = 0.0,
                           presence_penalty: float = 0.0, repeat_penalty: float = 1.0, top_k: int = 40,
                           stream: bool = False, seed: int | None = None, tfs_z: float = 1.0,
                           mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                           model: str | None = None, stopping_criteria: StoppingCriteriaList | None = None,
                           logits_processor: LogitsProcessorList | None = None, grammar: LlamaGrammar | None = None,
                           logit_bias: dict[int, float] | None = None, sampling: SamplingParams | None = None,
                           cancel: threading.Event | None = None, _object: str = "text_completion",
                           ) -> Iterator[dict[str, Any]]:
        """Completion chunks from the single-sequence path (n_parallel=1)."""
        params = self._completion_params(logprobs, temperature=temperature, top_p=top_p, min_p=min_p,
                                         typical_p=typical_p, frequency_penalty=frequency_penalty,
                                         presence_penalty=presence_penalty, repeat_penalty=repeat_penalty, top_k=top_k,
                                         tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
                                         mirostat_eta=mirostat_eta, logits_processor=logits_processor, grammar=grammar,
                                         logit_bias=logit_bias, seed=seed, sampling=sampling)
        cid = self._completion_id()
        created = int(time.time())
        model_name = model or self.model_path
        token = cancel or threading.Event()
        with self._lock:
            self._context()
            prompt_tokens, prompt_text = self._completion_prompt(prompt, suffix)
            self._begin_generation(token)
            try:
                chunks = self._generate_chunks(prompt_tokens, prompt_text, max_tokens=max_tokens, params=params,
                                               stop=stop or [], logprobs=logprobs, echo=echo,
                                               stopping_criteria=stopping_criteria, cancel=token)
                yield from self._completion_dicts(chunks, cid, created, model_name, len(prompt_tokens),
                                                  0 if echo else len(prompt_text), logprobs, _object)
            finally:
                self._end_generation()
                if self.cache is not None and self.n_tokens > 0:
                    with contextlib.suppress(Exception):
                        self.cache[tuple(self.input_ids[: self.n_tokens].tolist())] = self.save_state()

    def _completion_engine(self, prompt: str | bytes | Sequence[int], suffix: str | None = None,
                           max_tokens: int | None = 16, temperature: float = 0.8, top_p: float = 0.95,
                           min_p: float = 0.05, typical_p: float = 1.0, logprobs: int | None = None,
                           echo: bool = False, stop: str | list[str] | None = None, frequency_penalty: float = 0.0,
                           presence_penalty: float = 0.0, repeat_penalty: float = 1.0, top_k: int = 40,
                           stream: bool = False, seed: int | None = None, tfs_z: float = 1.0,
                           mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                           model: str | None = None, stopping_criteria: StoppingCriteriaList | None = None,
                           logits_processor: LogitsProcessorList | None = None, grammar: LlamaGrammar | None = None,
                           logit_bias: dict[int, float] | None = None, sampling: SamplingParams | None = None,
                           cancel: threading.Event | None = None, _object: str = "text_completion",
                           ) -> tuple[EngineRequest | None, Iterator[dict[str, Any]]]:
        """Queues a completion with the engine; returns the request (None when there is
        nothing to generate) and its chunks, produced as the engine delivers tokens."""
        runner = self._runner
        assert runner is not None
        params = self._completion_params(logprobs, temperature=temperature, top_p=top_p, min_p=min_p,
                                         typical_p=typical_p, frequency_penalty=frequency_penalty,
                                         presence_penalty=presence_penalty, repeat_penalty=repeat_penalty, top_k=top_k,
                                         tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
                                         mirostat_eta=mirostat_eta, logits_processor=logits_processor, grammar=grammar,
                                         logit_bias=logit_bias, seed=seed, sampling=sampling)
        if echo and logprobs is not None:
            raise ValueError("echo=True with logprobs needs the logits of every prompt token, which "
                             "Llama(n_parallel>1) does not compute; use a Llama with n_parallel=1 for it")
        self._context()
        prompt_tokens, prompt_text = self._completion_prompt(prompt, suffix)
        n_prompt = len(prompt_tokens)
        max_tokens = self._token_budget(n_prompt, max_tokens)
        cid = self._completion_id()
        created = int(time.time())
        request: EngineRequest | None = None
        if max_tokens > 0:
            with self._lock:
                # Low-level calls (eval, generate, ...) hold the lock and use sequence 0; the
                # engine may now overwrite it, so they start afresh afterwards.
                self.n_tokens = 0
                holder: list[EngineRequest] = []

                def input_ids() -> npt.NDArray[np.intc]:
                    return np.asarray(holder[0].tokens if holder else prompt_tokens, dtype=np.intc)

                chain = self._chain(params, prompt_tokens, input_ids)
                request = runner.submit(prompt_tokens, chain, max_tokens=max_tokens,
                                        return_logits=logprobs is not None or stopping_criteria is not None,
                                        cancel=cancel)
                holder.append(request)
        chunks = self._engine_chunks(request, prompt_tokens, prompt_text, max_tokens=max_tokens, stop=stop or [],
                                     logprobs=logprobs, echo=echo, stopping_criteria=stopping_criteria)
        return request, self._completion_dicts(chunks, cid, created, model or self.model_path, n_prompt,
                                               0 if echo else len(prompt_text), logprobs, _object)

    def _engine_chunks(self, request: EngineRequest | None, prompt_tokens: list[int], prompt_text: str, *,
                       max_tokens: int, stop: str | Sequence[str], logprobs: int | None, echo: bool,
                       stopping_criteria: StoppingCriteriaList | None) -> Iterator[_Chunk]:
        """_generate_chunks for a request the engine runs: the same text, stop, logprobs and
        stopping-criteria handling over the tokens it delivers."""
        try:
            if echo:
                yield _Chunk(prompt_text, [])
            out = _ChunkMaker(self, stop, logprobs, len(prompt_text))
            ids = None  # prompt + generated tokens, for stopping criteria
            n_ids = len(prompt_tokens)
            if stopping_criteria is not None:
                ids = np.empty(n_ids + max_tokens, dtype=np.intc)
                ids[:n_ids] = prompt_tokens
            finish = "length"
            for ev in request.events() if request is not None else ():
                if ev.finish == FinishReason.STOP:
                    finish = "stop"
                    break
                token = int(ev.token)
                row = ev.logits
                text, stopped = out.push(token, row)
                if stopped:
                    yield out.chunk(text, "stop")
                    return
                stop_now = False
                if stopping_criteria is not None and ids is not None and row is not None and n_ids < len(ids):
                    ids[n_ids] = token
                    n_ids += 1
                    stop_now = bool(stopping_criteria(ids[:n_ids], row))
                if text or stop_now:
                    yield out.chunk(text)
                if stop_now:
                    finish = "stop"
                    break
            yield out.tail(finish)
        finally:
            if request is not None:
                request.close()

    def create_completion(self, prompt: str | list[int] | list[str] | list[list[int]], suffix: str | None = None,
                          max_tokens: int | None = 16,
                          temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
                          logprobs: int | None = None, echo: bool = False, stop: str | list[str] | None = [],
                          frequency_penalty: float = 0.0, presence_penalty: float = 0.0, repeat_penalty: float = 1.0,
                          top_k: int = 40, stream: bool = False, seed: int | None = None, tfs_z: float = 1.0,
                          mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                          model: str | None = None, stopping_criteria: StoppingCriteriaList | None = None,
                          logits_processor: LogitsProcessorList | None = None, grammar: LlamaGrammar | None = None,
                          logit_bias: dict[int, float] | None = None, *, sampling: SamplingParams | None = None,
                          cancel: threading.Event | None = None) -> Any:
        """Completes a prompt (text or token ids). Returns an OpenAI-style completion dict, or
        with stream=True an iterator of chunks. max_tokens None or <= 0 fills the context.
        `sampling` (a SamplingParams) reaches every llama.cpp sampler; `cancel` (an Event)
        stops the generation from another thread, as does llm.cancel().

        A list of prompts (strings, or lists of token ids) gives one choice per prompt, choice i
        for prompt i. With Llama(n_parallel=N) they are generated together, N at a time, in
        shared batches; streamed chunks then come in the order the tokens are made, each with
        its choice's index."""
        if _is_prompt_list(prompt):
            call: dict[str, Any] = dict(
                suffix=suffix, max_tokens=max_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                typical_p=typical_p, logprobs=logprobs, echo=echo, stop=stop, frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty, repeat_penalty=repeat_penalty, top_k=top_k, stream=True, seed=seed,
                tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
                model=model, stopping_criteria=stopping_criteria, logits_processor=logits_processor, grammar=grammar,
                logit_bias=logit_bias, sampling=sampling, cancel=cancel)
            if stream:
                return self._stream_many(list(prompt), call)
            return _merge_completions(self._complete_many(list(prompt), call))
        chunks = self._create_completion(
            prompt, suffix, max_tokens, temperature, top_p, min_p, typical_p, logprobs, echo, stop, frequency_penalty,
            presence_penalty, repeat_penalty, top_k, stream, seed, tfs_z, mirostat_mode, mirostat_tau, mirostat_eta,
            model, stopping_criteria, logits_processor, grammar, logit_bias, sampling, cancel)
        if stream:
            return _strip_private(chunks)
        return _collect_completion(chunks, logprobs is not None)

    def generate_batch(self, prompts: Sequence[str | Sequence[int]], **kwargs: Any) -> list[dict[str, Any]]:
        """Completes many prompts; returns one completion dict per prompt, in order, as
        create_completion(prompt, **kwargs) would for each. With Llama(n_parallel=N), N run at
        a time in shared batches (the rest wait for a free slot), else one after another.

            llm = Llama(model_path, n_parallel=4)
            outs = llm.generate_batch(["The capital of France is", "2 + 2 ="], max_tokens=8, temperature=0)
            texts = [o["choices"][0]["text"] for o in outs]
        """
        if kwargs.pop("stream", False):
            raise ValueError("generate_batch returns whole completions; use create_completion(prompts, stream=True)")
        call = {"stream": True, **kwargs}
        return self._complete_many([_as_prompt(p) for p in prompts], call)

    def _complete_many(self, prompts: list[Any], call: dict[str, Any]) -> list[dict[str, Any]]:
        with_logprobs = call.get("logprobs") is not None
        if self._runner is None:
            return [_collect_completion(self._create_completion(p, **call), with_logprobs) for p in prompts]
        started: list[tuple[EngineRequest | None, Iterator[dict[str, Any]]]] = []
        try:
            # Everything is queued first, so the engine batches the prompts together.
            for p in prompts:
                started.append(self._completion_engine(p, **call))
            return [_collect_completion(chunks, with_logprobs) for _, chunks in started]
        finally:
            for request, _ in started:
                if request is not None:
                    request.close()

    def _stream_many(self, prompts: list[Any], call: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if self._runner is None:
            for i, p in enumerate(prompts):
                for chunk in _strip_private(self._create_completion(p, **call)):
                    chunk["choices"][0]["index"] = i
                    yield chunk
            return
        started = [self._completion_engine(p, **call) for p in prompts]
        merged: queue.SimpleQueue[tuple[int, dict[str, Any] | BaseException | None]] = queue.SimpleQueue()
        stop = threading.Event()

        def pump(i: int, chunks: Iterator[dict[str, Any]]) -> None:
            try:
                for chunk in chunks:
                    merged.put((i, chunk))
                    if stop.is_set():
                        return
            except BaseException as exc:  # handed to the consumer
                merged.put((i, exc))
            else:
                merged.put((i, None))

        threads = [threading.Thread(target=pump, args=(i, chunks), daemon=True) for i, (_, chunks) in enumerate(started)]
        for t in threads:
            t.start()
        try:
            remaining = len(started)
            while remaining:
                i, item = merged.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    item.pop("_n", None)
                    item["choices"][0]["index"] = i
                    yield item
        finally:
            stop.set()
            for request, _ in started:
                if request is not None:
                    request.close()

    def __call__(self, prompt: str, suffix: str | None = None, max_tokens: int | None = 16, temperature: float = 0.8,
                 top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0, logprobs: int | None = None,
                 echo: bool = False, stop: str | list[str] | None = [], frequency_penalty: float = 0.0,
                 presence_penalty: float = 0.0, repeat_penalty: float = 1.0, top_k: int = 40, stream: bool = False,
                 seed: int | None = None, tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_tau: float = 5.0,
                 mirostat_eta: float = 0.1, model: str | None = None,
                 stopping_criteria: StoppingCriteriaList | None = None,
                 logits_processor: LogitsProcessorList | None = None, grammar: LlamaGrammar | None = None,
                 logit_bias: dict[int, float] | None = None, *, sampling: SamplingParams | None = None,
                 cancel: threading.Event | None = None) -> Any:
        """Same as create_completion."""
        return self.create_completion(
            prompt, suffix, max_tokens, temperature, top_p, min_p, typical_p, logprobs, echo, stop, frequency_penalty,
            presence_penalty, repeat_penalty, top_k, stream, seed, tfs_z, mirostat_mode, mirostat_tau, mirostat_eta,
            model, stopping_criteria, logits_processor, grammar, logit_bias, sampling=sampling, cancel=cancel)

    # ------------------------------------------------------------------ chat

    def _chat_formatter(self) -> Any:
        if self._formatter is None:
            from .llama_chat_format import get_chat_formatter

            self._formatter = get_chat_formatter(self._model, self.chat_format)
        return self._formatter

    def create_chat_completion(self, messages: list[dict[str, Any]], functions: list[dict[str, Any]] | None = None,
                               function_call: Any = None, tools: list[dict[str, Any]] | None = None,
                               tool_choice: Any = None, temperature: float = 0.2, top_p: float = 0.95, top_k: int = 40,
                               min_p: float = 0.05, typical_p: float = 1.0, stream: bool = False,
                               stop: str | list[str] | None = [], seed: int | None = None,
                               response_format: Any = None, max_tokens: int | None = None,
                               presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                               repeat_penalty: float = 1.0, tfs_z: float = 1.0, mirostat_mode: int = 0,
                               mirostat_tau: float = 5.0, mirostat_eta: float = 0.1, model: str | None = None,
                               logits_processor: LogitsProcessorList | None = None,
                               grammar: LlamaGrammar | None = None, logit_bias: dict[int, float] | None = None,
                               logprobs: bool | None = None, top_logprobs: int | None = None, *,
                               sampling: SamplingParams | None = None, cancel: threading.Event | None = None) -> Any:
        """Chat completion from OpenAI-style messages, formatted with the model's own chat
        template (or chat_format / chat_handler). Returns a chat.completion dict, or with
        stream=True an iterator of chat.completion.chunk dicts."""
        if self.chat_handler is not None:
            return self.chat_handler(
                llama=self, messages=messages, functions=functions, function_call=function_call, tools=tools,
                tool_choice=tool_choice, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                typical_p=typical_p, stream=stream, stop=stop, seed=seed, response_format=response_format,
                max_tokens=max_tokens, presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                repeat_penalty=repeat_penalty, tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
                mirostat_eta=mirostat_eta, model=model, logits_processor=logits_processor, grammar=grammar,
                logit_bias=logit_bias, logprobs=logprobs, top_logprobs=top_logprobs)
        tools, tool_choice, legacy = _tools.normalize(tools, tool_choice, functions, function_call)
        template_format = _tools.detect_format(self._template_source())
        tool_format = template_format or _tools.HERMES
        tool_plan = (_tools.plan(tools, tool_choice, tool_format)
                     if grammar is None and response_format is None else None)
        messages = _tools.prepare_messages(messages, renders_tools=template_format is not None)
        if tool_plan is not None and template_format is None:
            messages = _tools.with_system_prompt(messages, _tools.system_prompt(tools, tool_plan.forced))
        formatted = self._chat_formatter()(messages=messages, tools=tools or None, tool_choice=tool_choice)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if formatted.stop:
            stops += [formatted.stop] if isinstance(formatted.stop, str) else list(formatted.stop)
        if response_format is not None and grammar is None:
            grammar = _grammar_for_response_format(response_format)
        if tool_plan is not None:
            grammar = tool_plan.grammar
        prompt_tokens = self._chat_prompt_tokens(formatted.prompt)
        chunks = self._create_completion(
            prompt_tokens, None, max_tokens, temperature, top_p, min_p, typical_p,
            (top_logprobs or 0) if logprobs else None, False, stops, frequency_penalty, presence_penalty,
            repeat_penalty, top_k, True, seed, tfs_z, mirostat_mode, mirostat_tau, mirostat_eta, model,
            formatted.stopping_criteria, logits_processor, grammar, logit_bias, sampling, cancel)
        if tool_plan is not None:
            response = _chat_with_tools(_chat_collect(chunks, bool(logprobs)), tool_plan.format, legacy)
            return _chat_response_as_stream(response) if stream else response
        if stream:
            return _chat_stream(chunks, bool(logprobs))
        return _chat_collect(chunks, bool(logprobs))

    def _template_source(self) -> str | None:
        if self.chat_format is not None:
            return None
        template: str | None = self._model.chat_template()
        return template

    def _chat_prompt_tokens(self, prompt: str) -> list[int]:
        """Chat prompts carry their special tokens as text; BOS is added only if the
        template did not already write it."""
        bos = self._vocab.bos
        starts_with_bos = bos >= 0 and prompt.startswith(self._vocab.text(bos))
        return self._vocab.tokenize(prompt, add_special=not starts_with_bos, parse_special=True)

    def create_chat_completion_openai_v1(self, *args: Any, **kwargs: Any) -> Any:
        """create_chat_completion returning the `openai` package's types."""
        try:
            from openai.types.chat import ChatCompletion, ChatCompletionChunk
        except ImportError as exc:
            raise ImportError("create_chat_completion_openai_v1 needs the openai package: pip install openai") from exc
        stream = kwargs.get("stream", False)
        result = self.create_chat_completion(*args, **kwargs)
        if stream:
            return (ChatCompletionChunk(**chunk) for chunk in result)
        return ChatCompletion(**result)

    # ------------------------------------------------------------------ async and cancellation

    def cancel(self) -> None:
        """Stops the running generation (from any thread): the call raises AbortedError, or
        the stream ends with it. A prompt evaluation in progress stops mid-batch. The object
        stays usable. With n_parallel > 1 every running and waiting request is stopped at the
        engine's next step."""
        if self._runner is not None:
            # Every request of the engine ends at its next step.
            self._runner.cancel_all()
            return
        token = self._active_cancel
        if token is not None:
            token.set()
            if self._ctx is not None and not self._closed:
                self._ctx.cancel()

    def _cancel_call(self, token: threading.Event) -> None:
        """Stops the call started with this cancel event (an abandoned async call)."""
        token.set()
        if self._runner is not None:
            self._runner.cancel_matching(token)
        elif self._active_cancel is token:
            self.cancel()

    async def acreate_completion(self, *args: Any, **kwargs: Any) -> Any:
        """create_completion without blocking the event loop. With stream=True returns an
        async iterator of chunks. Cancelling the awaiting task stops the generation. With
        Llama(n_parallel=N), concurrent calls from many tasks are generated together."""
        return await self._async_call(self.create_completion, args, kwargs)

    async def acreate_chat_completion(self, *args: Any, **kwargs: Any) -> Any:
        """create_chat_completion without blocking the event loop (stream=True: async iterator)."""
        return await self._async_call(self.create_chat_completion, args, kwargs)

    async def acreate_embedding(self, *args: Any, **kwargs: Any) -> Any:
        """create_embedding without blocking the event loop."""
        return await _run_in_thread(lambda: self.create_embedding(*args, **kwargs), None, self)

    async def _async_call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = kwargs.pop("cancel", None) or threading.Event()
        kwargs["cancel"] = token
        if kwargs.get("stream"):
            return _AsyncStream(lambda: fn(*args, **kwargs), token, self)
        return await _run_in_thread(lambda: fn(*args, **kwargs), token, self)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def logits_to_logprobs(logits: npt.NDArray[np.single] | list[float], axis: int = -1) -> npt.NDArray[np.single]:
        """log_softmax of logits, computed stably."""
        x = np.asarray(logits, dtype=np.single)
        shifted = x - np.max(x, axis=axis, keepdims=True)
        with np.errstate(divide="ignore"):
            return cast(npt.NDArray[np.single],
                        shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True)))

    @staticmethod
    def longest_token_prefix(a: Sequence[int] | npt.NDArray[Any], b: Sequence[int] | npt.NDArray[Any]) -> int:
        """Length of the longest common prefix of two token sequences."""
        n = min(len(a), len(b))
        if n == 0:
            return 0
        x = np.asarray(a[:n], dtype=np.int64)
        y = np.asarray(b[:n], dtype=np.int64)
        diff = np.flatnonzero(x != y)
        return int(diff[0]) if len(diff) else n

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None, additional_files: list[str] | None = None,
                        local_dir: str | os.PathLike[str] | None = None,
                        local_dir_use_symlinks: bool | str = "auto",
                        cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Llama:
        """Downloads (or finds in the Hugging Face cache) `filename` of `repo_id` and loads it.
        `filename` may be a glob pattern matching one file. Needs `huggingface_hub`; with
        HF_HUB_OFFLINE=1 only the local cache is used."""
        try:
            from huggingface_hub import snapshot_download
            from huggingface_hub.constants import HF_HUB_OFFLINE
        except ImportError as exc:
            raise ImportError("Llama.from_pretrained needs huggingface_hub: pip install huggingface_hub") from exc
        if not filename:
            raise ValueError("filename (a file name or glob pattern in the repository) is required")
        patterns = [filename, *(additional_files or [])]
        root = Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns,
                                      local_dir=os.fspath(local_dir) if local_dir is not None else None,
                                      cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
                                      local_files_only=bool(HF_HUB_OFFLINE)))
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        matches = [f for f in files if fnmatch.fnmatch(f, filename) or fnmatch.fnmatch(Path(f).name, filename)]
        if not matches:
            raise ValueError(f"no file matching {filename!r} in {repo_id}; files: {files}")
        if len(matches) > 1:
            raise ValueError(f"{filename!r} matches several files in {repo_id}: {matches}")
        return cls(model_path=str(root / matches[0]), **kwargs)


def _is_prompt_list(prompt: Any) -> bool:
    """Whether create_completion got several prompts (strings or token lists), not one
    prompt given as token ids."""
    return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and \
        all(isinstance(p, (str, bytes, list, tuple, np.ndarray)) for p in prompt)


def _as_prompt(prompt: Any) -> Any:
    if isinstance(prompt, (str, bytes)):
        return prompt
    return [int(t) for t in prompt]


def _merge_completions(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """One completion dict with a choice per prompt (choice i for prompt i)."""
    choices = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for i, out in enumerate(outs):
        choice = dict(out["choices"][0])
        choice["index"] = i
        choices.append(choice)
        for key in usage:
            usage[key] += out["usage"][key]
    first = outs[0]
    return {"id": first["id"], "object": "text_completion", "created": first["created"], "model": first["model"],
            "choices": choices, "usage": usage}


def _normalized(v: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _grammar_for_response_format(response_format: Any) -> LlamaGrammar | None:
    """The grammar a response_format asks for: {"type": "json_object"} (any JSON object),
    {"type": "json_object", "schema": ...} (llama-cpp-python), {"type": "json_schema",
    "json_schema": {"schema": ...}} (OpenAI), or a pydantic model class itself."""
    if isinstance(response_format, type):
        return LlamaGrammar.from_json_schema(response_format)
    if not isinstance(response_format, dict):
        raise TypeError(f"response_format must be a dict or a pydantic model class, got {type(response_format).__name__}")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    schema = response_format.get("schema")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is None:
            raise ValueError("response_format type 'json_schema' needs json_schema.schema")
    elif kind != "json_object":
        raise ValueError(f"unknown response_format type {kind!r} (text, json_object or json_schema)")
    if schema is None:
        return LlamaGrammar(JSON_GBNF)
    return LlamaGrammar.from_json_schema(schema)


def _strip_private(chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for chunk in chunks:
        chunk.pop("_n", None)
        yield chunk


def _collect_completion(chunks: Iterator[dict[str, Any]], with_logprobs: bool) -> dict[str, Any]:
    text: list[str] = []
    lp: dict[str, list[Any]] = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
    first: dict[str, Any] | None = None
    finish = None
    n_prompt = n_completion = 0
    for chunk in chunks:
        first = first or chunk
        n_prompt, n = chunk.pop("_n")
        n_completion += n
        choice = chunk["choices"][0]
        text.append(choice["text"])
        if with_logprobs and choice["logprobs"]:
            for key in lp:
                lp[key].extend(choice["logprobs"][key])
        finish = choice["finish_reason"] or finish
    assert first is not None
    return {
        "id": first["id"], "object": "text_completion", "created": first["created"], "model": first["model"],
        "choices": [{"text": "".join(text), "index": 0, "logprobs": lp if with_logprobs else None,
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                  "total_tokens": n_prompt + n_completion},
    }


def _chat_logprobs(choice: dict[str, Any]) -> dict[str, Any] | None:
    lp = choice.get("logprobs")
    if not lp:
        return None
    content = []
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        content.append({
            "token": token, "logprob": logprob, "bytes": list(token.encode("utf-8")),
            "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode("utf-8"))}
                             for t, p in (top or {}).items()],
        })
    return {"content": content, "refusal": None}


def _chat_collect(chunks: Iterator[dict[str, Any]], with_logprobs: bool) -> dict[str, Any]:
    completion = _collect_completion(chunks, with_logprobs)
    choice = completion["choices"][0]
    return {
        "id": "chat" + completion["id"], "object": "chat.completion", "created": completion["created"],
        "model": completion["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": choice["text"]},
                     "logprobs": _chat_logprobs(choice) if with_logprobs else None,
                     "finish_reason": choice["finish_reason"]}],
        "usage": completion["usage"],
    }


def _chat_stream(chunks: Iterator[dict[str, Any]], with_logprobs: bool) -> Iterator[dict[str, Any]]:
    first = True
    for chunk in _strip_private(chunks):
        base = {"id": "chat" + chunk["id"], "model": chunk["model"], "object": "chat.completion.chunk",
                "created": chunk["created"]}
        choice = chunk["choices"][0]
        if first:
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None,
                                        "finish_reason": None}]}
            first = False
        if choice["text"] or (with_logprobs and choice["logprobs"] and choice["logprobs"]["tokens"]):
            yield {**base, "choices": [{"index": 0, "delta": {"content": choice["text"]},
                                        "logprobs": _chat_logprobs(choice) if with_logprobs else None,
                                        "finish_reason": None}]}
        if choice["finish_reason"] is not None:
            yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": choice["finish_reason"]}]}


def _chat_with_tools(response: dict[str, Any], fmt: _tools.ToolFormat, legacy: bool) -> dict[str, Any]:
    """Turns a reply that calls tools into tool_calls (or a legacy function_call)."""
    choice = response["choices"][0]
    content, calls = _tools.parse(choice["message"]["content"] or "", fmt)
    if not calls:
        return response
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if legacy:
        message["function_call"] = dict(calls[0]["function"])
        choice["finish_reason"] = "function_call"
    else:
        message["tool_calls"] = calls
        choice["finish_reason"] = "tool_calls"
    choice["message"] = message
    return response


def _chat_response_as_stream(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The chunks of a finished chat response (tool calls are parsed from the whole reply)."""
    base = {k: response[k] for k in ("id", "model", "created")} | {"object": "chat.completion.chunk"}
    choice = response["choices"][0]
    message = choice["message"]
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}]}
    if message.get("content"):
        yield {**base, "choices": [{"index": 0, "delta": {"content": message["content"]}, "logprobs": None,
                                    "finish_reason": None}]}
    for i, call in enumerate(message.get("tool_calls") or []):
        yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, **call}]}, "logprobs": None,
                                    "finish_reason": None}]}
    if message.get("function_call"):
        yield {**base, "choices": [{"index": 0, "delta": {"function_call": message["function_call"]},
                                    "logprobs": None, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}]}


async def _run_in_thread(fn: Callable[[], Any], token: threading.Event | None, llama: Llama) -> Any:
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(llama._executor, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if token is not None:
            llama._cancel_call(token)
        with contextlib.suppress(BaseException):
            await future
        raise


class _AsyncStream:
    """An async iterator over a synchronous chunk iterator produced in a worker thread."""

    def __init__(self, make: Callable[[], Iterator[dict[str, Any]]], token: threading.Event, llama: Llama) -> None:
        self._make = make
        self._token = token
        self._llama = llama
        self._queue: asyncio.Queue[tuple[str, Any]] | None = None
        self._task: asyncio.Future[Any] | None = None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def produce() -> None:
            try:
                for chunk in self._make():
                    loop.call_soon_threadsafe(queue.put_nowait, ("chunk", chunk))
                    if self._token.is_set():
                        break
            except BaseException as exc:  # handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

        future = loop.run_in_executor(self._llama._executor, produce)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "chunk":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    break
        finally:
            if not future.done():
                self._llama._cancel_call(self._token)
                with contextlib.suppress(BaseException):
                    await asyncio.shield(future)


# llama-cpp-python names for the response types.
CompletionChunk = dict[str, Any]
JsonValue = Union[None, int, float, str, bool, list[Any], dict[str, Any]]
LogitsProcessorType = LogitsProcessor
