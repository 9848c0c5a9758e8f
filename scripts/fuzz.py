#!/usr/bin/env python3
"""Fuzz harness for llamabind: model loading, tokenization, grammar parsing, JSON-schema
conversion and chat-template rendering, seeded from the real files.

    python scripts/fuzz.py --target grammar --seconds 300     # one target, time-boxed
    python scripts/fuzz.py --all --seconds 120                # every target, 120 s each
    python scripts/fuzz.py --replay grammar tests/fuzz_regressions/grammar/*.bin

Targets
-------
tokenize       arbitrary bytes through ``Vocab.tokenize`` of every ``ggml-vocab-*.gguf``
               (vocab_only), then ``detokenize``; arbitrary token lists through
               ``detokenize``, ``token_to_piece`` and the per-token lookups. Only
               InvalidArgumentError/OutOfRangeError may come out, and only for bad input.
grammar        arbitrary text through ``LlamaGrammar.from_string`` (the pure-Python
               validator); a text it accepts then goes to llama.cpp's own parser,
               ``SamplerChain().add_grammar(vocab, text)`` plus one sampling step, in a
               forked child: a crash, a hang or a rejection there is a finding.
json_schema    arbitrary JSON through ``json_schema_to_gbnf``: a clean ValueError/TypeError,
               or a grammar that ``LlamaGrammar`` and llama.cpp (forked child) accept.
chat_template  arbitrary templates and messages through ``render_chat_template``: only
               ChatTemplateError may escape, within the render time limit.
gguf_load      the header of a real GGUF file (vocab files, the tiny test model) mutated at
               its structural fields (counts, lengths, types, dims, offsets, special token
               ids), truncated or spliced, loaded in a forked child (then tokenize, and for
               full models a decode): a crash, a hang, or an error that is not a
               LlamaError naming the file, is a finding.

How it runs
-----------
``--target``/``--all`` supervise: each target runs in a worker process driven by atheris
(libFuzzer; Python coverage of llamabind's pure-Python modules and jinja2 guides it), with a
working corpus in ``build/fuzz/corpus/<target>`` seeded from the real files. When the worker
stops on a finding, the supervisor replays the input in a fresh process to confirm it, keeps it
as ``tests/fuzz_regressions/<target>/<hash>.bin`` with a ``.json`` note (what went wrong), and
restarts the worker for the rest of the time; a finding whose kind is already kept is counted
and skipped, so one bug does not eat the budget. Without atheris the worker falls back to a
small random mutator over the same corpus (said in the summary). Summaries (executions,
time, findings) go to ``build/fuzz/results/<target>.json``.

``--replay`` runs inputs once, no fuzzing, and prints a JSON line per input; exit status 1
when any input still produces a finding. tests/bindings/test_fuzz_regressions.py uses it.

``--isolate`` copies the installed llamabind (Python files and the compiled ``_core``) to
``build/fuzz/snapshot`` first and fuzzes that copy, so a long campaign is not disturbed by a
rebuild of the editable install.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime
import hashlib
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "fuzz"
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"
LLAMA_CPP = Path(os.environ.get("LLAMABIND_LLAMA_CPP_DIR", ROOT / "extern" / "llama.cpp"))
MODELS_DIR = LLAMA_CPP / "models"
SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


class Finding(Exception):
    """An input that made llamabind misbehave. `kind` is short and stable (it identifies the
    bug for deduplication); `detail` says what happened for this input."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


def normalize_kind(kind: str) -> str:
    """Numbers, addresses and paths out, so one bug maps to one kind."""
    kind = re.sub(r"(/[\w.+-]+)+", "<path>", kind)
    kind = re.sub(r"0x[0-9a-fA-F]+", "N", kind)
    kind = re.sub(r"\d+", "N", kind)
    return kind[:300]


class Reader:
    """Deterministic choices from fuzz bytes (atheris' FuzzedDataProvider is not needed to
    replay an input: the regression tests run without atheris)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def uint(self, n_bytes: int) -> int:
        return int.from_bytes(self.take(n_bytes).ljust(n_bytes, b"\0"), "little")

    def below(self, n: int) -> int:
        if n <= 1:
            return 0
        return self.uint(4 if n > 65535 else 2 if n > 255 else 1) % n

    def pick(self, seq: list[Any]) -> Any:
        return seq[self.below(len(seq))]


# --------------------------------------------------------------------------- forked children


def run_forked(fn: Callable[[], dict[str, Any]], timeout: float, *, as_limit: int | None = None) -> dict[str, Any]:
    """Runs fn() in a forked child (so a crash or an abort is a result, not the end of the
    fuzzer). Returns fn's dict, or {"status": "exception"|"signal"|"timeout"|"exit", ...} with
    the tail of the child's stderr."""
    err = tempfile.TemporaryFile()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the fuzzer
        code = 0
        try:
            os.close(r)
            os.dup2(err.fileno(), 2)
            if as_limit:
                resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
            try:
                out = fn()
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                out = {"status": "exception", "type": f"{type(e).__module__}.{type(e).__qualname__}",
                       "message": str(e)[:2000]}
            os.write(w, json.dumps(out).encode()[:60000])
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(r)
    err.seek(0, os.SEEK_END)
    size = err.tell()
    err.seek(max(0, size - 4000))
    stderr = err.read().decode("utf-8", "replace")
    err.close()
    if timed_out:
        return {"status": "timeout", "stderr": stderr}
    if os.WIFSIGNALED(status):
        return {"status": "signal", "signal": signal.Signals(os.WTERMSIG(status)).name, "stderr": stderr}
    payload = b"".join(chunks)
    if not payload:
        return {"status": "exit", "code": os.WEXITSTATUS(status), "stderr": stderr}
    out = json.loads(payload)
    out.setdefault("stderr", stderr)
    return out


def last_native_line(stderr: str) -> str:
    """The line of a child's stderr that says why it died (GGML_ASSERT, terminate, ...)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if any(k in ln for k in ("GGML_ASSERT", "GGML_ABORT", "terminate", "error", "Error", "assert", "fault")):
            return ln[:200]
    return lines[-1][:200] if lines else ""


def child_failure(res: dict[str, Any], what: str) -> Finding | None:
    """A Finding for a child that crashed, hung or exited oddly; None when it reported back."""
    status = res["status"]
    if status == "signal":
        line = last_native_line(res.get("stderr", ""))
        return Finding(f"{what}: crash ({res['signal']}) {normalize_kind(line)}", res.get("stderr", "")[-1500:])
    if status == "timeout":
        return Finding(f"{what}: hang", res.get("stderr", "")[-1500:])
    if status == "exit":
        return Finding(f"{what}: child exited with code {res['code']}", res.get("stderr", "")[-1500:])
    return None


@contextlib.contextmanager
def cpu_budget(name: str, seconds: float = 5.0) -> Iterator[None]:
    """Runs the body, a call to `name`: more than `seconds` of CPU time is a Finding, whatever
    the call did. CPU time, not wall time: a starved (niced) fuzzer must not report slowness."""
    t0 = time.process_time()
    try:
        yield
    finally:
        if time.process_time() - t0 > seconds:
            raise Finding(f"{name} took longer than {seconds:g} s", f"{time.process_time() - t0:.1f} s of CPU")


# --------------------------------------------------------------------------- targets


class Target:
    name = ""
    max_len = 4096
    timeout = 30  # seconds for one input before libFuzzer calls it a hang

    def seeds(self) -> Iterable[bytes]:
        raise NotImplementedError

    def one(self, data: bytes) -> None:
        raise NotImplementedError

    def note(self) -> dict[str, Any]:
        """Extra facts a kept finding needs to be replayed (e.g. the seed file's hash)."""
        return {}


def vocab_paths() -> list[Path]:
    return sorted(MODELS_DIR.glob("ggml-vocab-*.gguf"))


def vocab_test_texts(path: Path) -> list[str]:
    inp = Path(str(path) + ".inp")
    if not inp.is_file():
        return []
    return [t for t in inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n") if t]


class TokenizeTarget(Target):
    """data[0]: which vocab; data[1]: flags (bit 0 add_special / remove_special, bit 1
    parse_special / unparse_special, bits 2-3 mode, bit 4 fold ids into the vocabulary,
    bit 5 str instead of bytes); the rest: text or little-endian int32 token ids."""

    name = "tokenize"
    max_len = 8192
    timeout = 30

    def __init__(self) -> None:
        self.paths = vocab_paths()
        if not self.paths:
            raise SystemExit(f"no ggml-vocab-*.gguf under {MODELS_DIR}")
        self.vocabs: dict[int, Any] = {}

    def vocab(self, i: int) -> Any:
        if i not in self.vocabs:
            import llamabind as lb

            self.vocabs[i] = lb.Model(self.paths[i], vocab_only=True).vocab
        return self.vocabs[i]

    def seeds(self) -> Iterable[bytes]:
        for i, path in enumerate(self.paths):
            for j, text in enumerate(vocab_test_texts(path)[:12]):
                yield bytes([i, (j % 4) | ((j & 4) << 3)]) + text.encode()
            yield bytes([i, 0x01]) + "Hello world! <|im_start|>user\n<s></s>[INST] 🙂 ü \t\n".encode()
            yield bytes([i, 0x02]) + b"\xff\xfe abc \xc3 \xed\xa0\x80 \xf4\x90\x80\x80 ok\x00nul"
            yield bytes([i, 0x08 | 0x10]) + struct.pack("<8i", 0, 1, 2, 3, 100, 1000, 30000, -1)
            yield bytes([i, 0x08 | 0x03]) + struct.pack("<4i", -5, 2**31 - 1, 7, 49152)
            yield bytes([i, 0x0C | 0x10, 1]) + struct.pack("<6i", 0, 1, 2, 3, 29871, 13)

    def one(self, data: bytes) -> None:
        import llamabind as lb

        if len(data) < 2:
            return
        i = data[0] % len(self.paths)
        flags = data[1]
        body = data[2:]
        vocab = self.vocab(i)
        n = vocab.n_tokens
        mode = (flags >> 2) & 3
        where = f"vocab {self.paths[i].name}"
        if mode <= 1:
            text: str | bytes = body.decode("utf-8", "replace") if flags & 0x20 else body
            try:
                ids = vocab.tokenize(text, add_special=bool(flags & 1), parse_special=bool(flags & 2))
            except lb.InvalidArgumentError as e:
                if isinstance(text, str):
                    raise Finding("tokenize rejected valid UTF-8 text", f"{where}: {e}") from None
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    return  # refusing invalid UTF-8 with InvalidArgumentError is clean
                raise Finding("tokenize rejected valid UTF-8 bytes", f"{where}: {e}") from None
            except Exception as e:
                raise Finding(f"tokenize raised {type(e).__name__}", f"{where}: {e}") from None
            bad = [t for t in ids if not (0 <= t < n)]
            if bad:
                raise Finding("tokenize produced ids outside the vocabulary", f"{where}: {bad[:5]}")
            try:
                again = vocab.tokenize(text, add_special=bool(flags & 1), parse_special=bool(flags & 2))
                out = vocab.detokenize(ids, remove_special=bool(flags & 1), unparse_special=bool(flags & 2))
            except Exception as e:
                raise Finding(f"detokenize of tokenize's ids raised {type(e).__name__}", f"{where}: {e}") from None
            if again != ids:
                raise Finding("tokenize is not deterministic", where)
            if not isinstance(out, bytes):
                raise Finding("detokenize returned a non-bytes value", where)
            return
        ids = list(array.array("i", body[: len(body) // 4 * 4]))
        if mode == 3:  # lstrip comes first
            lstrip = struct.unpack("<b", body[:1])[0] if body else 0
            ids = list(array.array("i", body[1:][: (len(body) - 1) // 4 * 4])) if body else []
        if flags & 0x10:
            ids = [t % n for t in ids]
        out_of_range = any(not (0 <= t < n) for t in ids)
        try:
            if mode == 2:
                out = vocab.detokenize(ids, remove_special=bool(flags & 1), unparse_special=bool(flags & 2))
                if not isinstance(out, bytes):
                    raise Finding("detokenize returned a non-bytes value", where)
            else:
                for t in ids[:64]:
                    piece = vocab.token_to_piece(t, lstrip=lstrip, special=bool(flags & 2))
                    if not isinstance(piece, bytes):
                        raise Finding("token_to_piece returned a non-bytes value", where)
                    vocab.text(t)
                    vocab.attr(t)
                    vocab.score(t)
                    vocab.is_eog(t)
                    vocab.is_control(t)
        except lb.OutOfRangeError as e:
            if not out_of_range:
                raise Finding("OutOfRangeError for ids inside the vocabulary", f"{where}: {e}") from None
            return
        except lb.InvalidArgumentError as e:
            if mode == 3 and lstrip < 0:
                return
            raise Finding(f"InvalidArgumentError from {'detokenize' if mode == 2 else 'token_to_piece'}",
                          f"{where}: {e}") from None
        except Finding:
            raise
        except Exception as e:
            raise Finding(f"{'detokenize' if mode == 2 else 'token_to_piece'} raised {type(e).__name__}",
                          f"{where}: {e}") from None
        if out_of_range and (mode == 2 or any(not (0 <= t < n) for t in ids[:64])):
            raise Finding("out-of-vocabulary ids accepted", f"{where}: {[t for t in ids if not 0 <= t < n][:5]}")
        if mode == 3 and lstrip < 0 and ids:
            raise Finding("negative lstrip accepted", where)


SEED_GRAMMARS = [
    'root ::= "yes" | "no"',
    'root ::= [a-z]+ ("," [a-z]+)*',
    'root ::= item{2,5}\nitem ::= [0-9] | "x"',
    'root ::= "a"{0,3} "b"? "c"* "d"+',
    'root ::= [^\\n\\x00-\\x1F"] [\\u00e9-\\U0001F600]',
    'root ::= <[1]> "hi" !<[2]>',
    'root ::= "<s>" | <s>',
    'root ::= ( ( "a" ) | "b" )\n# comment\nother ::= root "x"',
    'root ::= . | [\\]\\[\\-]',
    'root   ::= expr\nexpr   ::= term ([-+*/] term)*\nterm   ::= [0-9]+ | "(" expr ")"',
    'root ::= x\nx ::= "a" x | "b"',
    'root ::= "\\x41\\u00e9\\U0001F600\\t\\n\\r\\\\\\"\\[\\]"',
]


def grammar_in_child(vocab: Any, text: str, root: str = "root") -> dict[str, Any]:
    """llama.cpp's parser on `text`, then one constrained sampling step (forked child)."""
    import numpy as np

    import llamabind as lb

    try:
        chain = lb.SamplerChain().add_grammar(vocab, text, root)
    except lb.GrammarError as e:
        return {"status": "rejected", "message": str(e)[:2000]}
    chain.add_greedy()
    n = vocab.n_tokens
    cands = np.zeros(min(n, 4096), dtype=lb.token_data_dtype)
    cands["id"] = np.arange(len(cands))
    cands["logit"] = np.linspace(0.0, 1.0, len(cands), dtype=np.float32)
    out, selected = chain.apply(cands)
    if selected >= 0 and np.isfinite(out[selected]["logit"]):
        chain.accept(int(out[selected]["id"]))
    return {"status": "ok"}


class GrammarSamplerTarget(Target):
    """A target whose inputs end up as grammars for llama.cpp's grammar sampler, run in a
    forked child over the llama SPM vocabulary."""

    timeout = 60
    child_timeout = 10.0

    def __init__(self) -> None:
        self.vocab_path = MODELS_DIR / "ggml-vocab-llama-spm.gguf"
        self._vocab: Any = None

    @property
    def vocab(self) -> Any:
        if self._vocab is None:
            import llamabind as lb

            self._vocab = lb.Model(self.vocab_path, vocab_only=True).vocab
        return self._vocab

    def sample_in_child(self, text: str, what: str) -> dict[str, Any]:
        """grammar_in_child's result for the GBNF `text`; a crash, hang or exit of the child
        raises a Finding that names `what`."""
        vocab = self.vocab  # loaded here, once, not in every child
        res = run_forked(lambda: grammar_in_child(vocab, text), self.child_timeout, as_limit=8 << 30)
        failure = child_failure(res, what)
        if failure:
            raise failure
        return res


class GrammarTarget(GrammarSamplerTarget):
    """The input is GBNF text (UTF-8, invalid bytes replaced)."""

    name = "grammar"

    def seeds(self) -> Iterable[bytes]:
        for g in SEED_GRAMMARS:
            yield g.encode()
        for path in sorted((LLAMA_CPP / "grammars").glob("*.gbnf")):
            yield path.read_bytes()

    def one(self, data: bytes) -> None:
        from llamabind import GrammarParseError, LlamaGrammar

        text = data.decode("utf-8", "replace")
        with cpu_budget("LlamaGrammar"):
            try:
                LlamaGrammar.from_string(text, verbose=False, vocab=self.vocab)
            except GrammarParseError:
                return
            except Exception as e:
                raise Finding(f"LlamaGrammar raised {type(e).__name__}", str(e)[:500]) from None
        res = self.sample_in_child(text, "llama.cpp on a grammar LlamaGrammar accepts")
        if res["status"] == "rejected":
            reason = re.sub(r"^.*?\] ", "", res["message"]).split("\n")[0]
            raise Finding(f"LlamaGrammar accepts, llama.cpp rejects: {normalize_kind(reason)}", res["message"])
        if res["status"] == "exception":
            raise Finding(f"llama.cpp grammar sampler raised {res['type']}", res["message"])


SEED_SCHEMAS: list[Any] = [
    True, {}, {"type": "string"}, {"type": "integer", "minimum": -5, "maximum": 100},
    {"type": "number", "exclusiveMinimum": 0}, {"type": "boolean"}, {"type": "null"},
    {"type": ["string", "null"]}, {"enum": ["a", 1, None, True, {"x": [1]}]}, {"const": "fixed"},
    {"type": "string", "minLength": 2, "maxLength": 5}, {"type": "string", "pattern": "^[a-z]{2,4}-\\d+$"},
    {"type": "string", "format": "date-time"}, {"type": "string", "format": "uuid"},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "items": False},
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name"], "additionalProperties": False},
    {"type": "object", "additionalProperties": {"type": "number"}},
    {"anyOf": [{"type": "string"}, {"type": "integer"}]}, {"oneOf": [{"const": 1}, {"const": 2}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}},
               {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
    {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
     "$ref": "#/$defs/node"},
    {"type": "integer", "multipleOf": 3}, {"not": {"type": "string"}},
    {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
    {"type": "array", "uniqueItems": True, "items": {"enum": [1, 2, 3]}},
]


class JsonSchemaTarget(GrammarSamplerTarget):
    """The input is JSON text (a schema); non-JSON inputs are skipped."""

    name = "json_schema"

    def seeds(self) -> Iterable[bytes]:
        for s in SEED_SCHEMAS:
            yield json.dumps(s).encode()
        corpus = ROOT / "tests" / "api" / "test_json_schema.py"
        if corpus.is_file():  # the schemas the converter's own tests use, where they are literal
            for m in re.finditer(r"^\s*\(?(\{.*\})\)?,?\s*$", corpus.read_text(encoding="utf-8"), re.M):
                try:
                    yield json.dumps(json.loads(m.group(1))).encode()
                except ValueError:
                    pass

    def one(self, data: bytes) -> None:
        import warnings

        from llamabind import GrammarError, GrammarParseError, LlamaGrammar, json_schema_to_gbnf

        try:
            schema = json.loads(data)
        except (ValueError, RecursionError):
            return
        for strict in (True, False):
            with cpu_budget("json_schema_to_gbnf"):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        gbnf = json_schema_to_gbnf(schema, strict=strict)
                except GrammarError as e:
                    raise Finding("json_schema_to_gbnf raised GrammarError", str(e)[:500]) from None
                except (ValueError, TypeError):
                    if not isinstance(schema, (dict, bool)):
                        return
                    continue
                except Exception as e:
                    raise Finding(f"json_schema_to_gbnf raised {type(e).__name__}", str(e)[:500]) from None
            if not isinstance(schema, (dict, bool)):
                raise Finding("json_schema_to_gbnf accepted a schema that is not an object or boolean",
                              repr(schema)[:200])
            try:
                LlamaGrammar(gbnf)
            except GrammarParseError as e:
                raise Finding(f"converter output rejected by LlamaGrammar: {normalize_kind(e.reason)}",
                              f"{e}\n--- schema: {json.dumps(schema)[:1000]}") from None
            res = self.sample_in_child(gbnf, "llama.cpp on a converted schema")
            if res["status"] == "rejected":
                raise Finding("converter output rejected by llama.cpp", res["message"])
            if res["status"] == "exception":
                raise Finding(f"llama.cpp grammar sampler raised {res['type']} on a converted schema",
                              res["message"])
            return


class ChatTemplateTarget(Target):
    """The input is template text, then NUL-separated message contents (UTF-8, invalid
    bytes replaced). The template's length picks a variant: tools, tool calls, no
    generation prompt."""

    name = "chat_template"
    max_len = 32768
    timeout = 60
    max_seconds = 2.0
    roles = ["system", "user", "assistant", "user", "tool", "assistant", "user", "developer"]

    def seeds(self) -> Iterable[bytes]:
        base = b"\0You are helpful.\0Hello!\0Hi, how can I help?\0What is 2+2?"
        for path in sorted((MODELS_DIR / "templates").glob("*.jinja")):
            yield path.read_bytes() + base
        yield b"{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}" + base
        yield b"{{ raise_exception('no') }}\0x"
        yield b"{% set ns = namespace(a=1) %}{% for i in range(10) %}{% set ns.a = ns.a * 2 %}{% endfor %}{{ ns.a }}"

    def one(self, data: bytes) -> None:
        from llamabind.llama_chat_format import ChatTemplateError, RenderLimits, render_chat_template

        parts = data.decode("utf-8", "replace").split("\0")
        template, contents = parts[0], parts[1:9]
        variant = len(template) % 4
        messages: list[dict[str, Any]] = []
        for k, content in enumerate(contents):
            role = self.roles[k % len(self.roles)] if variant != 0 else ("user", "assistant")[k % 2]
            msg: dict[str, Any] = {"role": role, "content": content}
            if variant == 2 and role == "assistant":
                msg["tool_calls"] = [{"id": "call_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": {"city": content[:20]}}}]
            if role == "tool":
                msg["tool_call_id"] = "call_1"
                msg["name"] = "get_weather"
            messages.append(msg)
        tools = None
        if variant in (1, 2):
            tools = [{"type": "function", "function": {
                "name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
        limits = RenderLimits(max_seconds=self.max_seconds)
        # CPU time, not wall time: under nice -n 19 on a busy machine a render's wall time says
        # nothing about runaway templates.
        t0 = time.process_time()
        try:
            out = render_chat_template(template, messages, add_generation_prompt=variant != 3, tools=tools,
                                       bos_token="<s>", eos_token="</s>", limits=limits)
        except ChatTemplateError:
            out = ""
        except Exception as e:
            raise Finding(f"render_chat_template raised {type(e).__name__}", str(e)[:500]) from None
        finally:
            took = time.process_time() - t0
            if took > self.max_seconds + 3.0:
                raise Finding("render_chat_template ran past its time limit", f"{took:.1f} s of CPU")
        if not isinstance(out, str):
            raise Finding("render_chat_template returned a non-str value", type(out).__name__)


# GGUF value types: size of the scalars; 8 is string, 9 array.
_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class GGUFSeed:
    """A real GGUF file and the places of its structural fields (offset, size, kind)."""

    def __init__(self, path: Path, vocab_only: bool) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.vocab_only = vocab_only
        self.struct: list[tuple[int, int, str]] = []  # counts, lengths, types, dims, offsets, scalar values
        self.items: list[tuple[int, int, str]] = []  # array elements and their string lengths
        self.header_end = self._walk()

    def _walk(self) -> int:
        d = self.data
        pos = 0
        fields = self.struct

        def u(n: int) -> int:
            return int.from_bytes(d[pos:pos + n], "little")

        fields += [(0, 4, "magic"), (4, 4, "version"), (8, 8, "n_tensors"), (16, 8, "n_kv")]
        n_tensors, n_kv = int.from_bytes(d[8:16], "little"), int.from_bytes(d[16:24], "little")
        pos = 24
        alignment = 32
        for _ in range(n_kv):
            klen = u(8)
            fields.append((pos, 8, "key-len"))
            key = d[pos + 8:pos + 8 + klen].decode("utf-8", "replace")
            pos += 8 + klen
            vtype = u(4)
            fields.append((pos, 4, f"type:{key}"))
            pos += 4
            if vtype in _GGUF_SCALAR:
                size = _GGUF_SCALAR[vtype]
                fields.append((pos, size, f"value:{key}"))
                if key == "general.alignment":
                    alignment = u(size)
                pos += size
            elif vtype == 8:
                fields.append((pos, 8, f"str-len:{key}"))
                pos += 8 + u(8)
            elif vtype == 9:
                atype = u(4)
                fields.append((pos, 4, f"array-type:{key}"))
                n = int.from_bytes(d[pos + 4:pos + 12], "little")
                fields.append((pos + 4, 8, f"array-len:{key}"))
                pos += 12
                for _k in range(n):
                    if atype == 8:
                        self.items.append((pos, 8, f"item-len:{key}"))
                        pos += 8 + u(8)
                    else:
                        size = _GGUF_SCALAR[atype]
                        self.items.append((pos, size, f"item:{key}"))
                        pos += size
            else:
                raise ValueError(f"{self.path}: unknown GGUF type {vtype}")
        for _ in range(n_tensors):
            fields.append((pos, 8, "tensor-name-len"))
            pos += 8 + u(8)
            n_dims = u(4)
            fields.append((pos, 4, "n_dims"))
            pos += 4
            for _k in range(n_dims):
                fields.append((pos, 8, "dim"))
                pos += 8
            fields.append((pos, 4, "tensor-type"))
            fields.append((pos + 4, 8, "tensor-offset"))
            pos += 12
        return min(len(d), (pos + alignment - 1) // alignment * alignment)


def interesting_values(size: int, orig: int, file_size: int) -> list[int]:
    top = (1 << (8 * size)) - 1
    vals = [0, 1, 2, 3, 7, 8, 13, 255, 256, top, top - 1, top >> 1, (top >> 1) + 1,
            orig + 1, orig - 1, orig * 2, orig + 1000, orig >> 1, file_size, file_size - orig]
    if size >= 4:
        vals += [0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 49152, 32000, 1 << 20]
    if size == 8:
        vals += [1 << 32, (1 << 32) + 1, 1 << 40, 1 << 62, 1 << 63]
    return [v & top for v in vals]


def load_in_child(path: str, vocab_only: bool) -> dict[str, Any]:
    """Loads a (mutated) file and uses what loaded: tokenize, and for a full model a decode."""
    import numpy as np

    import llamabind as lb

    try:
        model = lb.Model(path, vocab_only=vocab_only, use_mmap=False)
    except lb.LlamaError as e:
        message = str(e)
        if path not in message:
            return {"status": "unnamed-error", "type": type(e).__name__, "message": message[:1000]}
        return {"status": "error", "type": type(e).__name__, "message": message[:300]}
    try:
        vocab = model.vocab
        ids = vocab.tokenize("Hello world! 123 ünïcode <s> 🙂", add_special=True, parse_special=True)
        vocab.detokenize(ids, unparse_special=True)
        for t in (vocab.bos, vocab.eos, vocab.eot, vocab.nl, vocab.pad, vocab.sep):
            if 0 <= t < vocab.n_tokens:
                vocab.token_to_piece(t, special=True)
        _ = model.metadata, model.desc, model.n_params
        model.chat_template()
        if not vocab_only:
            with lb.Context(model, n_ctx=64, n_batch=64, n_threads=1, n_threads_batch=1) as ctx:
                ctx.decode_tokens(ids[:8] or [0], pos0=0)
                np.asarray(ctx.logits_ith(-1))
                lb.SamplerChain().add_greedy().sample(ctx)
    except lb.LlamaError as e:
        return {"status": "loaded-then-error", "type": type(e).__name__, "message": str(e)[:300]}
    return {"status": "ok"}


class GGUFLoadTarget(Target):
    """The input drives mutations of a seed file: which seed, then 1-4 mutations (set a
    structural field to an interesting value, overwrite bytes in the header, truncate,
    delete or insert bytes in the header), and for the tiny model whether to load it
    vocab_only."""

    name = "gguf_load"
    max_len = 256
    timeout = 120
    child_timeout = 30.0
    seed_names = ["ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-bert-bge.gguf",
                  "ggml-vocab-phi-3.gguf"]

    def __init__(self) -> None:
        self._seeds: list[GGUFSeed] | None = None

    @property
    def gguf_seeds(self) -> list[GGUFSeed]:
        if self._seeds is None:
            seeds = [GGUFSeed(MODELS_DIR / n, True) for n in self.seed_names if (MODELS_DIR / n).is_file()]
            seeds.append(GGUFSeed(tiny_model_path(), False))
            self._seeds = seeds
        return self._seeds

    def note(self) -> dict[str, Any]:
        return {"seeds": {s.path.name: s.sha256 for s in self.gguf_seeds}}

    def seeds(self) -> Iterable[bytes]:
        rng = random.Random(1)
        for _ in range(64):
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(8, 40)))

    def mutate(self, data: bytes) -> tuple[GGUFSeed, bytes, bool, list[str]]:
        rd = Reader(data)
        seed = rd.pick(self.gguf_seeds)
        buf = bytearray(seed.data)
        vocab_only = seed.vocab_only or bool(rd.uint(1) & 1)
        done: list[str] = []
        for _ in range(1 + rd.below(4)):
            op = rd.below(10)
            if op <= 5:
                pool = seed.items if (op == 5 and seed.items) else seed.struct
                off, size, kind = pool[rd.below(len(pool))]
                if off + size > len(buf):
                    continue
                orig = int.from_bytes(buf[off:off + size], "little")
                vals = interesting_values(size, orig, len(buf))
                val = vals[rd.below(len(vals))]
                buf[off:off + size] = val.to_bytes(size, "little")
                done.append(f"set {kind}@{off} {orig}->{val}")
            elif op == 6:
                end = min(seed.header_end, len(buf))
                off = rd.below(max(end, 1))
                chunk = rd.take(1 + rd.below(8))
                buf[off:off + len(chunk)] = chunk
                done.append(f"overwrite @{off} {chunk.hex()}")
            elif op == 7:
                f_off, f_size, kind = seed.struct[rd.below(len(seed.struct))]
                cut = min(len(buf), f_off + rd.below(f_size + 1)) if rd.uint(1) & 1 else rd.below(len(buf))
                del buf[cut:]
                done.append(f"truncate at {cut} ({kind})")
            elif op == 8:
                off = rd.below(max(min(seed.header_end, len(buf)), 1))
                n = 1 + rd.below(64)
                del buf[off:off + n]
                done.append(f"delete {n} @{off}")
            else:
                off = rd.below(max(min(seed.header_end, len(buf)), 1))
                chunk = rd.take(1 + rd.below(16)) or b"\xff"
                buf[off:off] = chunk
                done.append(f"insert {chunk.hex()} @{off}")
        return seed, bytes(buf), vocab_only, done

    def one(self, data: bytes) -> None:
        seed, buf, vocab_only, done = self.mutate(data)
        path = SHM / f"llamabind-fuzz-{os.getpid()}.gguf"
        path.write_bytes(buf)
        try:
            res = run_forked(lambda: load_in_child(str(path), vocab_only), self.child_timeout, as_limit=6 << 30)
        finally:
            path.unlink(missing_ok=True)
        what = f"loading a mutated {seed.path.name}"
        detail = f"mutations: {done}; vocab_only={vocab_only}"
        failure = child_failure(res, "loading a mutated GGUF")
        if failure:
            failure.detail = f"{what}; {detail}\n{failure.detail}"
            raise failure
        if res["status"] == "unnamed-error":
            raise Finding(f"load error does not name the file: {res['type']}",
                          f"{what}; {detail}; {res['message']}")
        if res["status"] == "exception":
            raise Finding(f"loading a mutated GGUF raised {res['type']}", f"{what}; {detail}; {res['message']}")


def tiny_model_path() -> Path:
    """The tests' tiny random-weight llama model, written once (deterministic) under build/fuzz."""
    path = WORK / "seeds" / "tiny-llama.gguf"
    if not path.is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_model import write_tiny_llama

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        write_tiny_llama(tmp)
        tmp.replace(path)
    return path


TARGETS: dict[str, type[Target]] = {
    t.name: t for t in (TokenizeTarget, GrammarTarget, JsonSchemaTarget, ChatTemplateTarget, GGUFLoadTarget)
}


# --------------------------------------------------------------------------- kept findings


def known_kinds(name: str) -> set[str]:
    kinds = set()
    for note in (REGRESSIONS / name).glob("*.json"):
        kinds.add(json.loads(note.read_text())["kind"])
    return kinds


def keep_finding(name: str, data: bytes, outcome: dict[str, Any], note: dict[str, Any]) -> Path | None:
    """Stores a confirmed finding as a regression input unless its kind is already kept."""
    kind = normalize_kind(outcome["kind"])
    if kind in known_kinds(name):
        return None
    folder = REGRESSIONS / name
    folder.mkdir(parents=True, exist_ok=True)
    stem = hashlib.sha1(data).hexdigest()[:16]
    (folder / f"{stem}.bin").write_bytes(data)
    info = {"kind": kind, "detail": outcome.get("detail", "")[:4000],
            "found": datetime.date.today().isoformat(), **note}
    (folder / f"{stem}.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return folder / f"{stem}.bin"


# --------------------------------------------------------------------------- replay


def replay(name: str, files: list[Path]) -> int:
    target = TARGETS[name]()
    bad = 0
    for f in files:
        data = f.read_bytes()
        note_path = f.with_suffix(".json")
        if name == "gguf_load" and note_path.is_file():
            want = json.loads(note_path.read_text()).get("seeds", {})
            have = target.note()["seeds"]
            changed = [k for k, v in want.items() if have.get(k) not in (None, v)]
            if changed:
                print(json.dumps({"file": str(f), "outcome": "seed-changed", "seeds": changed}), flush=True)
                continue

        def on_alarm(signum: int, frame: Any) -> None:
            raise Finding("hang in-process", f"over {target.timeout} s")

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(target.timeout)
        try:
            target.one(data)
            result = {"file": str(f), "outcome": "ok"}
        except Finding as e:
            result = {"file": str(f), "outcome": "finding", "kind": normalize_kind(e.kind), "detail": e.detail[:4000]}
            bad += 1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        print(json.dumps(result), flush=True)
    return 1 if bad else 0


def replay_in_subprocess(name: str, path: Path, timeout: float) -> dict[str, Any]:
    """The authoritative outcome of one input: a fresh interpreter, so in-process crashes and
    hangs show as such."""
    try:
        proc = subprocess.run([sys.executable, __file__, "--replay", name, str(path)], capture_output=True,
                              text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {"outcome": "finding", "kind": f"{name}: hang in-process", "detail": f"over {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        line = last_native_line(proc.stderr)
        return {"outcome": "finding", "kind": f"{name}: in-process crash ({sig}) {normalize_kind(line)}",
                "detail": proc.stderr[-3000:]}
    return {"outcome": "error", "detail": proc.stderr[-3000:]}


# --------------------------------------------------------------------------- worker


def worker(name: str, seconds: int, engine: str) -> None:
    corpus = WORK / "corpus" / name
    artifacts = WORK / "artifacts" / name
    known = known_kinds(name)
    counts = {"skipped_known": 0}

    def make_test(target: Target) -> Callable[[bytes], None]:
        def test_one(data: bytes) -> None:
            try:
                target.one(data)
            except Finding as e:
                if normalize_kind(e.kind) in known:
                    counts["skipped_known"] += 1
                    return
                raise
        return test_one

    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["llamabind", "jinja2"]):
            import jinja2  # noqa: F401
            import llamabind  # noqa: F401
            import llamabind.json_schema  # noqa: F401
            import llamabind.llama_chat_format  # noqa: F401
            import llamabind.llama_grammar  # noqa: F401
        target = TARGETS[name]()
        if name == "gguf_load":
            target.gguf_seeds  # noqa: B018 - parse the seeds before the clock starts
        test_one = make_test(target)
        atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}", f"-timeout={target.timeout}",
                       f"-max_len={target.max_len}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
                       "-rss_limit_mb=8192", "-report_slow_units=60"], test_one)
        try:
            atheris.Fuzz()
        finally:
            print(f"skipped_known: {counts['skipped_known']}", flush=True)
        return
    # Fallback: a small random mutator over the same corpus (no coverage guidance).
    target = TARGETS[name]()
    test_one = make_test(target)
    rng = random.Random()
    pool = [p.read_bytes() for p in sorted(corpus.iterdir())] or [b""]
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        data = bytearray(rng.choice(pool))
        for _ in range(rng.randrange(1, 6)):
            r = rng.randrange(5)
            if r == 0 and data:
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
            elif r == 1:
                data[rng.randrange(len(data) + 1):0] = bytes([rng.randrange(256)])
            elif r == 2 and data:
                i = rng.randrange(len(data))
                del data[i:i + rng.randrange(1, 8)]
            elif r == 3:
                other = rng.choice(pool)
                i = rng.randrange(len(other) + 1)
                data[rng.randrange(len(data) + 1):0] = other[i:i + rng.randrange(1, 64)]
            elif data:
                i = rng.randrange(len(data))
                data[i] = rng.choice([0, 0xFF, 0x7F, 0x80, ord("\\"), ord("{"), ord("%"), ord("["), ord('"')])
        data = bytes(data[: target.max_len])
        n += 1
        try:
            test_one(data)
        except Finding as e:
            path = artifacts / f"crash-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            print(f"finding: {e}\nstat::number_of_executed_units: {n}", flush=True)
            sys.exit(1)
    print(f"stat::number_of_executed_units: {n}\nskipped_known: {counts['skipped_known']}", flush=True)


# --------------------------------------------------------------------------- supervisor


def executions_in(log: str) -> int:
    m = re.findall(r"stat::number_of_executed_units: (\d+)", log)
    if m:
        return int(m[-1])
    m = re.findall(r"^#(\d+)\s", log, re.M)
    return int(m[-1]) if m else 0


def campaign(name: str, seconds: int, engine: str) -> dict[str, Any]:
    corpus = WORK / "corpus" / name
    artifacts = WORK / "artifacts" / name
    logs = WORK / "logs"
    for d in (corpus, artifacts, logs, WORK / "results"):
        d.mkdir(parents=True, exist_ok=True)
    target = TARGETS[name]()
    if not any(corpus.iterdir()):
        for data in target.seeds():
            (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    n_seeds = sum(1 for _ in corpus.iterdir())
    note = target.note()
    start = time.monotonic()
    deadline = start + seconds
    execs = 0
    skipped = 0
    runs = 0
    new_findings: list[dict[str, Any]] = []
    repeats: list[str] = []
    failures_in_a_row = 0
    while deadline - time.monotonic() > 5:
        left = int(deadline - time.monotonic())
        log_path = logs / f"{name}-{runs}.log"
        before = set(artifacts.iterdir())
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run([sys.executable, __file__, "--worker", name, "--seconds", str(left),
                                       "--engine", engine], stdout=log, stderr=subprocess.STDOUT,
                                      timeout=left + 600, env=os.environ.copy())
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = -9
        runs += 1
        text = log_path.read_text(errors="replace")
        execs += executions_in(text)
        skipped += sum(int(x) for x in re.findall(r"^skipped_known: (\d+)", text, re.M))
        new = sorted(set(artifacts.iterdir()) - before)
        for art in new:
            outcome = replay_in_subprocess(name, art, timeout=target.timeout * 3 + 60)
            if outcome.get("outcome") != "finding":
                repeats.append(f"{art.name}: did not reproduce ({outcome.get('outcome')})")
                continue
            kept = keep_finding(name, art.read_bytes(), outcome, note)
            entry = {"kind": normalize_kind(outcome["kind"]), "input": str(kept or art)}
            if kept:
                new_findings.append(entry)
                print(f"[{name}] FINDING kept as {kept.relative_to(ROOT)}: {entry['kind']}", flush=True)
            else:
                repeats.append(f"{art.name}: known kind {entry['kind']}")
        if rc == 0:
            break
        failures_in_a_row = 0 if new else failures_in_a_row + 1
        if failures_in_a_row >= 3:
            print(f"[{name}] the worker keeps failing without a finding; see {log_path}", flush=True)
            break
    took = time.monotonic() - start
    summary = {
        "target": name, "engine": engine, "seconds": round(took, 1), "executions": execs,
        "exec_per_s": round(execs / took, 1) if took else 0.0, "worker_runs": runs, "seed_inputs": n_seeds,
        "corpus_after": sum(1 for _ in corpus.iterdir()), "new_findings": new_findings,
        "known_kind_hits": skipped, "not_kept": repeats, "kept_kinds": sorted(known_kinds(name)),
    }
    (WORK / "results" / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2), flush=True)
    return summary


def isolate() -> None:
    """Copies the installed llamabind to build/fuzz/snapshot and re-executes from there."""
    import importlib.util

    spec = importlib.util.find_spec("llamabind._core")
    if spec is None or spec.origin is None:
        raise SystemExit("llamabind is not installed")
    snap = WORK / "snapshot"
    shutil.rmtree(snap, ignore_errors=True)
    pkg = snap / "llamabind"
    shutil.copytree(ROOT / "python" / "llamabind", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy2(spec.origin, pkg / Path(spec.origin).name)
    # The editable install's finder sits first in sys.meta_path; sitecustomize runs after the
    # .pth files and takes it out, so `import llamabind` finds the snapshot on PYTHONPATH.
    (snap / "sitecustomize.py").write_text(
        "import sys\nsys.meta_path[:] = [f for f in sys.meta_path"
        " if not type(f).__module__.startswith('_editable_skbc_llamabind')]\n")
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(snap)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["LLAMABIND_FUZZ_ISOLATED"] = "1"
    args = [a for a in sys.argv[1:] if a != "--isolate"]
    os.execve(sys.executable, [sys.executable, __file__, *args], env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=sorted(TARGETS))
    ap.add_argument("--all", action="store_true", help="run every target for --seconds each")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    ap.add_argument("--isolate", action="store_true", help="fuzz a snapshot copy of the installed llamabind")
    ap.add_argument("--replay", metavar="TARGET", choices=sorted(TARGETS))
    ap.add_argument("--worker", metavar="TARGET", choices=sorted(TARGETS), help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args()
    if args.replay:
        return replay(args.replay, args.files)
    if args.worker:
        worker(args.worker, args.seconds, args.engine)
        return 0
    if args.isolate and not os.environ.get("LLAMABIND_FUZZ_ISOLATED"):
        isolate()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
            print("atheris is not installed (pip install atheris): using the random mutator", flush=True)
    names = sorted(TARGETS) if args.all else [args.target] if args.target else []
    if not names:
        ap.error("give --target, --all or --replay")
    import llamabind

    print(f"llamabind from {Path(llamabind.__file__).parent}", flush=True)
    summaries = [campaign(n, args.seconds, engine) for n in names]
    if len(summaries) > 1:
        for s in summaries:
            print(f"{s['target']:>14}: {s['executions']} executions in {s['seconds']} s, "
                  f"{len(s['new_findings'])} new findings, kept kinds: {len(s['kept_kinds'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
