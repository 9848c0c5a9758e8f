"""llamabind: run llama.cpp from Python.

The high-level API is `Llama`, a drop-in replacement for llama-cpp-python's::

    from llamabind import Llama
    llm = Llama(model_path="model.gguf", n_ctx=2048)
    print(llm("The capital of France is", max_tokens=16)["choices"][0]["text"])

The compiled core (``llamabind._core``) wraps the llamabind C++ library; everything public is
re-exported here::

    import llamabind as lb

    model = lb.Model(lb.models.default_model_path())
    ctx = lb.Context(model, n_ctx=512)
    sampler = lb.SamplerChain().add_greedy()
    tokens = model.vocab.tokenize("The capital of France is")
    ctx.decode_tokens(tokens, pos0=0)
    token = sampler.sample(ctx)

llama.cpp's log lines go to the ``logging`` logger ``"llamabind"``, which is silent unless
the application configures logging.
"""

from __future__ import annotations

import logging as _logging

from ._runtime import preload_cuda_libraries as _preload_cuda_libraries

_preload_cuda_libraries()  # CUDA wheels: NVIDIA's runtime wheels, before _core loads the CUDA module

from . import _core, models, types  # noqa: E402
from .types import *  # noqa: E402,F403  (llama-cpp-python has its OpenAI-style types at the top level too)
from ._backends import BackendDescription, BackendInfo, backend_info
from ._processors import LogitsProcessorList, MinTokensLogitsProcessor, StoppingCriteria, StoppingCriteriaList
from ._rerank import RerankResponse, RerankResult
from ._state import LlamaState
from ._stdio import set_verbose, suppress_stdout_stderr
from .llama import Llama
from .llama_cache import BaseLlamaCache, LlamaCache, LlamaDiskCache, LlamaRAMCache
from .llama_chat_format import ChatTemplateError
from .json_schema import json_schema_to_gbnf
from .llama_grammar import GrammarParseError, LlamaGrammar
from .llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding
from .llama_tokenizer import BaseLlamaTokenizer, LlamaHFTokenizer, LlamaTokenizer
from .sampling import LogitsProcessor, SamplingParams
from ._core import (
    AbortedError,
    AdapterError,
    AttentionType,
    Batch,
    ClosedError,
    Context,
    ContextFullError,
    DecodeError,
    Drafter,
    DraftTuner,
    Engine,
    EngineEvent,
    FatalDecodeError,
    FinishReason,
    FlashAttnType,
    FType,
    GGMLType,
    GrammarError,
    InvalidArgumentError,
    InvalidBatchError,
    LlamaError,
    LlamaFileNotFoundError,
    LlamaPermissionError,
    LoadMode,
    LoraAdapter,
    Model,
    ModelDrafter,
    ModelLoadError,
    NgramDrafter,
    NumaStrategy,
    OutOfRangeError,
    PoolingType,
    QuantizeError,
    RopeScalingType,
    RopeType,
    SamplerChain,
    Speculator,
    SplitMode,
    StateError,
    StepResult,
    TokenAttr,
    Vocab,
    VocabType,
    builtin_chat_templates,
    chat_apply_template,
    check_draft_vocab,
    devices,
    llama_cpp_pin,
    llama_cpp_version,
    max_devices,
    max_parallel_sequences,
    numa_init,
    quantize,
    release_thread_workers,
    set_native_stderr_logging,
    split_path,
    split_prefix,
    supports_gpu_offload,
    supports_mlock,
    supports_mmap,
    supports_rpc,
    system_info,
    token_data_dtype,
)

__version__: str = _core.version()

_logging.getLogger("llamabind").addHandler(_logging.NullHandler())

__all__ = [
    "AbortedError",
    "BackendDescription",
    "BackendInfo",
    "BaseLlamaCache",
    "BaseLlamaTokenizer",
    "ChatTemplateError",
    "GrammarParseError",
    "json_schema_to_gbnf",
    "LlamaCache",
    "LlamaDiskCache",
    "LlamaDraftModel",
    "LlamaHFTokenizer",
    "LlamaPromptLookupDecoding",
    "LlamaRAMCache",
    "LlamaTokenizer",
    "types",
    "Llama",
    "LlamaGrammar",
    "LlamaState",
    "LogitsProcessor",
    "LogitsProcessorList",
    "RerankResponse",
    "RerankResult",
    "StoppingCriteria",
    "MinTokensLogitsProcessor",
    "SamplingParams",
    "StoppingCriteriaList",
    "AdapterError",
    "AttentionType",
    "Batch",
    "ClosedError",
    "Context",
    "ContextFullError",
    "DecodeError",
    "Drafter",
    "DraftTuner",
    "Engine",
    "EngineEvent",
    "FinishReason",
    "FType",
    "FatalDecodeError",
    "FlashAttnType",
    "GGMLType",
    "GrammarError",
    "InvalidArgumentError",
    "InvalidBatchError",
    "LlamaError",
    "LlamaFileNotFoundError",
    "LlamaPermissionError",
    "LoadMode",
    "LoraAdapter",
    "Model",
    "ModelDrafter",
    "ModelLoadError",
    "NgramDrafter",
    "NumaStrategy",
    "OutOfRangeError",
    "PoolingType",
    "QuantizeError",
    "RopeScalingType",
    "RopeType",
    "SamplerChain",
    "Speculator",
    "SplitMode",
    "StateError",
    "StepResult",
    "TokenAttr",
    "Vocab",
    "VocabType",
    "__version__",
    "backend_info",
    "builtin_chat_templates",
    "chat_apply_template",
    "check_draft_vocab",
    "devices",
    "llama_cpp_pin",
    "llama_cpp_version",
    "max_devices",
    "max_parallel_sequences",
    "models",
    "numa_init",
    "quantize",
    "release_thread_workers",
    "set_native_stderr_logging",
    "set_verbose",
    "split_path",
    "split_prefix",
    "supports_gpu_offload",
    "supports_mlock",
    "supports_mmap",
    "supports_rpc",
    "suppress_stdout_stderr",
    "system_info",
    "token_data_dtype",
]
# The OpenAI-style TypedDicts, as llama-cpp-python's top level has them.
__all__ += types.__all__
