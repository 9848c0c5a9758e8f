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

import concurrent.futures
import contextlib
import fnmatch
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, Union, overload

import numpy as np
import numpy.typing as npt

from . import _async, _chat, _completion, _core, _embedding, _generation, _request, _rerank, _responses, _sequence, _speculation
from ._core import (
    DEFAULT_SEED,
    AbortedError,
    AttentionType,
    ClosedError,
    Context,
    FlashAttnType,
    GGMLType,
    LoraAdapter,
    Model,
    NumaStrategy,
    PoolingType,
    RopeScalingType,
    SplitMode,
)
from ._engine import EngineRunner
from ._processors import LogitsProcessorList, MinTokensLogitsProcessor, StoppingCriteria, StoppingCriteriaList
from ._state import LlamaState
from . import llama_chat_format as _chat_format
from .llama_grammar import LlamaGrammar
from .llama_tokenizer import LlamaTokenizer
from .sampling import LogitsProcessor, SamplingParams

logger = logging.getLogger("llamabind")


_T = TypeVar("_T")


class _OnSequence(Generic[_T]):
    """An attribute llama-cpp-python has on Llama that lives on the Llama's SingleSequence."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _OnSequence[_T]: ...
    @overload
    def __get__(self, obj: Llama, objtype: type | None = None) -> _T: ...

    def __get__(self, obj: Llama | None, objtype: type | None = None) -> _T | _OnSequence[_T]:
        if obj is None:
            return self
        value: _T = getattr(obj._seq, self._name)
        return value

    def __set__(self, obj: Llama, value: _T) -> None:
        setattr(obj._seq, self._name, value)


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Accepted for compatibility: arguments of older llama-cpp-python releases.
_CONSTRUCTOR_EXTRAS = {"n_gqa", "rms_norm_eps", "mul_mat_q", "f16_kv", "low_vram", "use_mlock_all"}


class Llama:
    """A model with one inference context, serving completions, chat and embeddings.

    Every keyword of llama-cpp-python's constructor is accepted. Differences, all logged
    as warnings when they matter: `tfs_z` and `penalize_nl` have no effect (llama.cpp
    removed them); `lora_base` is ignored (llama.cpp applies adapters to the loaded weights);
    `verbose` does not print llama.cpp's log, which always goes to the `logging` logger
    "llamabind" (configure logging to see it). `flash_attn=None` is llama.cpp's "auto".

    Speculative decoding (same output, faster where drafts are right): `draft_model` takes a
    LlamaPromptLookupDecoding (native prompt lookup) or any LlamaDraftModel; `draft_model_path`
    a draft GGUF with the target's vocabulary. Up to `n_draft` tokens are drafted per step;
    `draft_adaptive` (default) picks the length that measures fastest, 0 when drafts do not pay.
    Not used with n_parallel > 1.

    `n_parallel` (llamabind only, default 1) is how many sequences are generated at once.
    With n_parallel=N > 1 the context holds N sequences of n_ctx tokens each (its KV cache
    is N times as large) and an engine serves every completion, chat completion and their
    async variants: each step decodes one batch holding the next token of every running
    request plus chunks of new prompts, so calls from several threads or asyncio tasks, and
    create_completion with a list of prompts, run together instead of one after another.
    Prompts that start like a running request (a shared system prompt) copy its KV cells, and
    like a finished one (a chat's next turn) continue from what it left in its slot. Requests beyond N wait for a free
    slot. Breaking out of a stream, cancelling its task or its `cancel` event frees the
    slot at once. Not available with n_parallel > 1: echo=True together with logprobs,
    and set_cache (the engine's prefix sharing takes its place); the low-level eval /
    sample / generate / save_state / load_state work while no completion runs.

    `rpc_servers` spreads the model over other machines running llama.cpp's RPC worker
    (``llamabind rpc-server``, or llama.cpp's own ``rpc-server``): ``"host:port,host:port"``
    as in llama-cpp-python, or a list. `n_gpu_layers` layers go to the servers' devices (then
    to this machine's GPUs), spread by their free memory or by `tensor_split` (one entry per
    device, in that order); the other layers run here::

        llm = Llama("model.gguf", rpc_servers="10.0.0.2:50052,10.0.0.3:50052", n_gpu_layers=-1)

    Each server is checked while the model loads: one that cannot be reached, does not speak
    the protocol or is busy with another client raises ModelLoadError naming it. If a server
    goes away later, the running call raises ``RpcError`` (a LlamaError and ConnectionError)
    naming it within seconds, and this Llama cannot be used again: every later call raises
    the same error. close() it (the memory it held there is left allocated, since llama.cpp
    cannot free it without the server) and create a new Llama once the server is back. The
    protocol has no authentication: keep workers on a private network or behind an SSH tunnel.
    """

    def __init__(
        self,
        model_path: str,
        *,
        n_gpu_layers: int = 0,
        split_mode: int = SplitMode.LAYER,
        main_gpu: int = 0,
        tensor_split: list[float] | None = None,
        rpc_servers: str | Sequence[str] | None = None,
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
        flash_attn: bool | None = False,
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
        draft_model_path: str | None = None, n_draft: int | None = None, draft_adaptive: bool = True,
        **kwargs: Any,
    ) -> None:
        self._init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        self._init_kwargs.update(kwargs)
        self._closed = False
        self._lock = threading.RLock()
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
        if rpc_servers is not None and n_gpu_layers == 0:
            logger.warning("rpc_servers is set but n_gpu_layers=0 keeps every layer on this machine; "
                           "n_gpu_layers=-1 puts every layer on the servers")
        if kwargs:
            logger.warning("Llama(): ignoring obsolete argument(s) %s", ", ".join(sorted(kwargs)))
        if numa:
            _core.numa_init(NumaStrategy.DISTRIBUTE if numa is True else NumaStrategy(int(numa)))
        if lora_base is not None:
            logger.warning("lora_base is ignored: llama.cpp applies LoRA adapters to the loaded weights")
        self.draft_model = draft_model

        self._model = Model(
            self.model_path, n_gpu_layers=n_gpu_layers, split_mode=SplitMode(int(split_mode)), main_gpu=main_gpu,
            tensor_split=tensor_split, use_mmap=use_mmap, use_mlock=use_mlock, vocab_only=vocab_only,
            kv_overrides=kv_overrides, progress_callback=progress_callback, rpc_servers=rpc_servers,
        )
        self._vocab_obj: _core.Vocab | None = self._model.vocab
        self._n_vocab = self._vocab.n_tokens
        self.tokenizer_ = tokenizer
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
            flash_attn_type=FlashAttnType.AUTO if flash_attn is None else FlashAttnType(int(bool(flash_attn))),
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
            # Many inputs go into one decode as separate sequences sharing the cells. llama.cpp
            # reserves one output row per sequence within the batch's outputs, so there are no
            # more sequences than the batch has tokens.
            self.context_params.update(n_seq_max=min(64, _core.max_parallel_sequences(), self.n_batch),
                                       kv_unified=True)
        if self.n_parallel > 1:
            # n_ctx stays the window of one sequence: each slot gets its own n_ctx cells (its own
            # KV stream), so one request filling its context never disturbs another. A step
            # decodes a token of every slot, so the batch holds at least one per slot.
            self.context_params.update(n_ctx=(n_ctx or self._model.n_ctx_train) * self.n_parallel,
                                       n_seq_max=self.n_parallel,
                                       n_batch=max(self.n_batch, self.n_parallel))
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
        self._speculation = _speculation.setup(
            draft_model, draft_model_path, n_draft=n_draft, adaptive=draft_adaptive, model=self._model,
            target=None if self._runner else self._ctx, context_params=self.context_params, n_parallel=self.n_parallel,
            model_kwargs=dict(n_gpu_layers=n_gpu_layers, main_gpu=main_gpu, use_mmap=use_mmap, use_mlock=use_mlock))
        self._n_ctx = (self._ctx.n_ctx_seq if self._runner else self._ctx.n_ctx) if self._ctx else \
            (n_ctx or self._model.n_ctx_train)
        self._seq = _sequence.SingleSequence(self._ctx, n_ctx=self._n_ctx, n_batch=self.n_batch,
                                             n_vocab=self._n_vocab, logits_all=logits_all, seed=seed, lock=self._lock)
        # A prompt that extends a cached state loads it through load_state, as llama-cpp-python's does.
        self._seq.load_cached = lambda state: self.load_state(state)
        self._completer = _completion.Completer(
            model=self._model, vocab=lambda: self._vocab, seq=self._seq, runner=self._runner, lock=self._lock,
            prompts=_completion.PromptBuilder(vocab=lambda: self._vocab, tokenize=self.tokenize, detokenize=self.detokenize,
                                  spm_infill=spm_infill),
            model_name=self.model_path, check_open=self._context,
            speculator=self._speculation.speculator if self._speculation else None)
        self.metadata: dict[str, str] = self._model.metadata
        # llama-cpp-python's names; its own tests read them.
        self._is_recurrent = self._model.is_recurrent
        self._is_hybrid = self._model.is_hybrid
        self.chat_format = chat_format
        self.chat_handler = chat_handler
        self._formatter: Any = None
        if verbose:
            logger.info("Llama: loaded %s (%s), n_ctx=%d", self.model_path, self._model.desc, self._n_ctx)

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
            if self._speculation is not None:
                self._speculation.close()
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

    input_ids = _OnSequence[npt.NDArray[np.intc]](
        "The evaluated tokens of the context, in the first n_tokens entries (n_ctx long).")
    scores = _OnSequence[npt.NDArray[np.single]](
        "With logits_all: the logits of every evaluated token, in the first n_tokens rows.")
    n_tokens = _OnSequence[int]("How many tokens the context holds.")
    cache = _OnSequence[Any]("The state cache set with set_cache (None without one).")

    @property
    def _input_ids(self) -> npt.NDArray[np.intc]:
        return self._seq.tokens

    @property
    def _scores(self) -> npt.NDArray[np.single]:
        """Logits kept so far: one row per evaluated token with logits_all, else the last row."""
        if not self._logits_all:
            self._context()
        return self._seq.last_scores()

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

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Text (bytes or str) to token ids. add_bos adds BOS/EOS as the model asks."""
        if self.tokenizer_ is not None:
            return list(self.tokenizer_.tokenize(text, add_bos=add_bos, special=special))
        return self._vocab.tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None, special: bool = False) -> bytes:
        """Token ids to bytes. With prev_tokens, only the text the tokens add after them."""
        tokenizer = self.tokenizer_ if self.tokenizer_ is not None else LlamaTokenizer(self)
        return bytes(tokenizer.detokenize(tokens, prev_tokens=prev_tokens, special=special))

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
        self._seq.seed = seed

    def reset(self) -> None:
        """Forgets the evaluated tokens (the KV cache is reused or cleared lazily)."""
        with self._turn(None):
            self.n_tokens = 0

    def save_state(self) -> LlamaState:
        """A snapshot of the context, restorable with load_state (also into another Llama
        on the same model)."""
        with self._turn("save_state"):
            self._context()
            return self._seq.snapshot()

    def load_state(self, state: LlamaState) -> None:
        """Restores a snapshot from save_state. Raises StateError (leaving an empty context)
        when it does not fit this model and context."""
        with self._turn("load_state"):
            self._context()
            self._seq.restore(state)

    def __getstate__(self) -> dict[str, Any]:
        """Pickling keeps the constructor arguments (as llama-cpp-python does): unpickling loads
        the model again with a fresh context. Use save_state() to keep the context too."""
        if self.chat_handler is not None or self.tokenizer_ is not None or self.draft_model is not None:
            raise TypeError("a Llama with a chat_handler, tokenizer or draft_model object cannot be pickled")
        return dict(self._init_kwargs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @contextlib.contextmanager
    def _turn(self, where: str | None) -> Iterator[None]:
        """One low-level call on the sequence (named `where`, checked against a running engine):
        it waits for another thread's generation to end and takes over from a stream this
        thread left unfinished, unless it is made from inside a step of one (a callback)."""
        with self._seq.step() as outermost:
            if where is not None:
                self._check_engine_idle(where)
            owner = self._seq.claim(None) if outermost else None
            try:
                yield
            finally:
                if owner is not None:
                    self._seq.release(owner, idle=where is None)

    def _check_engine_idle(self, where: str) -> None:
        """The low-level API (eval, sample, generate, state) uses sequence 0, as the engine's requests do."""
        if self._runner is not None:
            if self._runner.busy:
                raise RuntimeError(f"[Llama.{where}] completions are running on this Llama's engine (n_parallel="
                                   f"{self.n_parallel}); the low-level API shares their context, so wait until they finish")
            self._runner.engine.clear_cache()  # what it kept in sequence 0 is about to change

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluates tokens after the ones already evaluated, in chunks of n_batch."""
        with self._turn("eval"):
            self._context()
            self._seq.eval(list(tokens))

    def _sampling(self, **kw: Any) -> SamplingParams:
        """SamplingParams from llama-cpp-python style keywords, this Llama's seed and penalty
        window filling in what they leave open."""
        seed = kw.pop("seed", None)
        sampling = kw.pop("sampling", None)
        return _request.sampling_params(kw, seed=seed, sampling=sampling, default_seed=self._seq.seed,
                               last_n_tokens_size=self.last_n_tokens_size)

    def _chain(self, params: SamplingParams) -> _core.SamplerChain:
        return _completion.build_chain(params, self._model, self._seq.tokens.tolist(), self._n_ctx, lambda: self._seq.tokens)

    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
               temp: float = 0.8, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
               presence_penalty: float = 0.0, tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_eta: float = 0.1,
               mirostat_tau: float = 5.0, penalize_nl: bool = True, logits_processor: LogitsProcessorList | None = None,
               grammar: LlamaGrammar | None = None, idx: int | None = None) -> int:
        """Samples one token from the logits of the last evaluation (or batch entry idx)."""
        with self._turn("sample"):
            ctx = self._context()
            params = self._sampling(top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p, temp=temp,
                                    repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                                    presence_penalty=presence_penalty, tfs_z=tfs_z, mirostat_mode=mirostat_mode,
                                    mirostat_eta=mirostat_eta, mirostat_tau=mirostat_tau,
                                    logits_processor=logits_processor, grammar=grammar)
            chain = self._chain(params)
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
        seq = self._seq
        with seq.step():
            self._check_engine_idle("generate")
            ctx = self._context()
            owner = seq.claim(cancel)
        try:
            with seq.step():
                if reset:
                    seq.prepare(list(tokens), cancel=cancel)
                else:
                    seq.eval(list(tokens), cancel=cancel)
                history = seq.tokens.tolist()  # what the context holds for this generator
                chain = self._chain(params)
            while True:
                with seq.step():
                    if cancel.is_set():
                        raise AbortedError("[Llama] generation was cancelled")
                    seq.keep(owner, history, cancel)
                    token = chain.sample(ctx, -1)
                    if stopping_criteria is not None:
                        ids = np.append(seq.tokens, token).astype(np.intc)
                        if stopping_criteria(ids, ctx.logits_ith(-1)):
                            return
                extra = yield token
                with seq.step():
                    seq.keep(owner, history, cancel)
                    added = [token, *(extra or [])]
                    seq.eval(added, cancel=cancel)
                    history += added
        finally:
            with seq.step():
                seq.release(owner)

    def create_embedding(self, input: str | list[str], model: str | None = None) -> dict[str, Any]:
        """OpenAI-style embeddings response for one text or a list of texts."""
        texts = [input] if isinstance(input, str) else list(input)
        embeddings, n_tokens = self.embed(texts, return_count=True)
        return _responses.embedding_response(embeddings, n_tokens, model or self.model_path)

    def embed(self, input: str | list[str], normalize: bool = False, truncate: bool = True,
              return_count: bool = False) -> Any:
        """Embeddings of one text or many (needs Llama(embedding=True)). Many texts are packed
        into each decode as separate sequences. With pooling NONE each text gives one row per
        token. normalize: L2-normalise; truncate: cut texts longer than n_batch (else raise)."""
        if not self._embedding:
            raise ValueError("Llama.embed needs a model created with embedding=True")
        single = isinstance(input, str)
        texts: list[str] = [input] if isinstance(input, str) else list(input)
        with self._turn(None):
            ctx = self._context()
            # Non-causal models need each decode in one ubatch.
            limit = min(self.n_batch, int(self.context_params["n_ubatch"]), self._n_ctx)
            tokenized = _embedding.tokenize_inputs(texts, lambda t: self.tokenize(t.encode("utf-8"), add_bos=True), limit,
                                        truncate)
            try:
                results, total = _embedding.embed_all(ctx, tokenized, limit, normalize)
            finally:
                self.n_tokens = 0
        out: Any = results[0] if single else results
        return (out, total) if return_count else out

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None, return_documents: bool = False) -> Any:
        """Each document's relevance to `query` by a reranker (rank pooling, embedding=True): see llamabind._rerank."""
        with self._turn(None):
            return _rerank.rerank(self._context(), self._seq, query, documents, top_n, return_documents, self.model_path)

    def _request(self, arguments: dict[str, Any]) -> _request.CompletionRequest:
        """The request of a completion call's keywords, with the call's seed (which moves this
        Llama's seed on)."""
        sampling = arguments.get("sampling")
        explicit = arguments.get("seed")
        if explicit is None and sampling is not None:
            explicit = sampling.seed
        return _request.CompletionRequest.from_arguments(arguments, default_seed=self._seq.next_seed(explicit),
                                                         last_n_tokens_size=self.last_n_tokens_size)

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
        arguments = dict(locals())  # the keywords above, as one value
        del arguments["self"]
        if _request.is_prompt_list(prompt):
            template = self._request(arguments | {"prompt": ""})
            requests = [template.with_prompt(_request.as_prompt(p)) for p in prompt]
            if stream:
                return self._completer.stream_many(requests)
            return _responses.merge_completions(self._completer.complete_many(requests))
        request = self._request(arguments)
        if stream:
            return _responses.strip_private(self._completer.chunks(request))
        return self._completer.complete(request)

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
        template = self._request({"prompt": "", **kwargs})
        return self._completer.complete_many([template.with_prompt(_request.as_prompt(p)) for p in prompts])

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
        arguments = dict(locals())
        del arguments["self"]
        return self.create_completion(**arguments)

    def _chat_formatter(self) -> Any:
        if self._formatter is None:
            self._formatter = _chat_format.get_chat_formatter(self._model, self.chat_format)
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
        arguments = dict(locals())  # the keywords above, as one value
        del arguments["self"]
        if self.chat_handler is not None:
            del arguments["sampling"], arguments["cancel"]
            return self.chat_handler(llama=self, **arguments)
        plan = _chat.plan_chat(arguments, formatter=self._chat_formatter(), template=self._template_source(),
                         vocab=self._vocab, make_request=self._request)
        return _chat.chat_response(plan, self._completer.chunks(plan.request), stream)

    def _template_source(self) -> str | None:
        if self.chat_format is not None:
            return None
        template: str | None = self._model.chat_template()
        return template

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

    def cancel(self) -> None:
        """Stops the running generation (from any thread): the call raises AbortedError, or
        the stream ends with it. A prompt evaluation in progress stops mid-batch. The object
        stays usable. With n_parallel > 1 every running and waiting request is stopped at the
        engine's next step."""
        if self._runner is not None:
            # Every request of the engine ends at its next step.
            self._runner.cancel_all()
            return
        if not self._closed:
            self._seq.cancel()

    def _cancel_call(self, token: threading.Event) -> None:
        """Stops the call started with this cancel event (an abandoned async call)."""
        token.set()
        if self._runner is not None:
            self._runner.cancel_matching(token)
        elif not self._closed:
            self._seq.cancel_if(token)

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
        return await _async.run_in_thread(lambda: self.create_embedding(*args, **kwargs), None, self._executor,
                                   self._cancel_call)

    async def _async_call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = kwargs.pop("cancel", None) or threading.Event()
        kwargs["cancel"] = token
        if kwargs.get("stream"):
            return _async.AsyncStream(lambda: fn(*args, **kwargs), token, self._executor, self._cancel_call)
        return await _async.run_in_thread(lambda: fn(*args, **kwargs), token, self._executor, self._cancel_call)

    logits_to_logprobs = staticmethod(_generation.logits_to_logprobs)
    longest_token_prefix = staticmethod(_sequence.longest_token_prefix)

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


# llama-cpp-python names for the response types.
CompletionChunk = dict[str, Any]
JsonValue = Union[None, int, float, str, bool, list[Any], dict[str, Any]]
LogitsProcessorType = LogitsProcessor
