#!/usr/bin/env python3
"""OpenAI-compatible servers under load: `llamabind serve` against llama.cpp's `llama-server`
(and llama-cpp-python's server, when build/bench-lcp has it).

    python bench/server.py                                  # both models, 3 interleaved rounds
    python bench/server.py --models smollm2 --rounds 5 --write-results
    python bench/server.py --models smollm2 --rounds 1 --clients 1 4 --requests-per-client 2   # smoke test

Every server gets the same slots, context per slot, threads and flash attention setting
(8 slots of 1024 tokens, 2 threads, flash attention off by default) and the same request mix:
streamed /v1/completions of 64 greedy tokens each (end-of-generation tokens banned through
logit_bias, so every answer is whole), prompts of a few to ~100 tokens, each made unique so
no server answers from a prompt cache. For 1, 4, 8 and 16 concurrent clients (each sending
its requests one after another) it measures aggregate output tokens/s and requests/s over the
level's wall time, time to first token (request sent -> first text) and inter-token latency
(gaps between streamed tokens), p50 and p99.

Each measurement is a fresh server process, started and warmed up, then every client count in
turn; servers alternate within each round (bench/run.py's interleave), medians over rounds.
The load generator (async httpx) runs in this process and shares the machine with the server.
Results: bench/results/server-<time>.json; with --write-results also bench/SERVER.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as harness  # noqa: E402  (bench/run.py: native build, interleave, medians, save, machine)

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "List some facts about the planet Jupiter:",
    "The history of the printing press begins",
    "def merge_sort(items):\n    \"\"\"Sort a list with merge sort.\"\"\"\n",
    "Q: What are the main causes of the French Revolution?\nA:",
    "Translate into French: The weather is nice today and we are going to the beach.",
    "Once upon a time in a small village at the edge of a great forest, there lived an old woodcutter and his "
    "three children. Every morning the woodcutter walked into the forest with his axe, and every evening he "
    "came home with a bundle of wood on his back. One day, deep among the oldest trees, he heard a voice",
]


@dataclass
class Level:
    """What one client count measured."""

    clients: int
    wall_s: float = 0.0
    tokens: int = 0
    requests: int = 0
    complete: int = 0
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0

        c = self.clients
        out = {f"c{c}_tps": self.tokens / self.wall_s, f"c{c}_rps": self.requests / self.wall_s,
               f"c{c}_complete": self.complete / max(1, self.requests), f"c{c}_errors": float(len(self.errors))}
        for name, values in (("ttft", self.ttft_s), ("itl", self.itl_s)):
            for q, label in ((0.5, "p50"), (0.99, "p99")):
                v = pct(values, q)
                if v is not None:
                    out[f"c{c}_{name}_{label}_ms"] = v
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eog_bias(model_path: str) -> dict[str, float]:
    """logit_bias that bans every end-of-generation token (both servers take it)."""
    import llamabind as lb

    with lb.Model(model_path, vocab_only=True) as model:
        vocab = model.vocab
        return {str(t): -100.0 for t in range(vocab.n_tokens) if vocab.is_eog(t)}


async def one_request(client: Any, body: dict[str, Any], level: Level, n_gen: int) -> None:
    sent = time.perf_counter()
    first: float | None = None
    last = sent
    tokens = 0
    usage: int | None = None
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                level.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"].get("completion_tokens")
                choices = chunk.get("choices") or []
                if not choices or not choices[0].get("text"):
                    continue
                now = time.perf_counter()
                if first is None:
                    first = now
                    level.ttft_s.append(now - sent)
                else:
                    level.itl_s.append(now - last)
                last = now
                tokens += 1
    except Exception as exc:  # noqa: BLE001 - reported as an error of this request
        level.errors.append(f"{type(exc).__name__}: {exc}")
        return
    n = usage if usage is not None else tokens
    level.tokens += n
    level.requests += 1
    level.complete += int(n >= n_gen)


async def run_level(url: str, clients: int, per_client: int, body: dict[str, Any], n_gen: int, tag: str) -> Level:
    import httpx

    level = Level(clients)
    # A connection per request: llama-server closes kept-alive connections after a few requests
    # (cpp-httplib's limit), which a reusing client would see as failures.
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker(w: int) -> None:
            for i in range(per_client):
                prompt = f"[{tag} {clients}.{w}.{i}] {PROMPTS[(w * per_client + i) % len(PROMPTS)]}"
                await one_request(client, {**body, "prompt": prompt}, level, n_gen)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        level.wall_s = time.perf_counter() - t0
    return level


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the server did not become ready")


Command = Callable[[str, int, argparse.Namespace], list[str]]  # (model, port, args) -> the server's command line


def measure(command: Command, model: str, args: argparse.Namespace, tag: str) -> dict[str, float]:
    """Starts a server, warms it up, runs every client count, stops it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(ROOT / "build" / f"bench-server-{tag}.log", "wb")
    proc = subprocess.Popen(command(model, port, args), stdout=log, stderr=subprocess.STDOUT)
    body = {"model": "bench", "max_tokens": args.n_gen, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": eog_bias(model)}
    out: dict[str, float] = {}
    try:
        wait_ready(url, proc)
        asyncio.run(run_level(url, 1, 1, body, args.n_gen, f"warm-{tag}"))
        for clients in args.clients:
            level = asyncio.run(run_level(url, clients, args.requests_per_client, body, args.n_gen, tag))
            if level.errors:
                print(f"  {tag}: {len(level.errors)} failed requests at {clients} clients: {level.errors[0]}",
                      file=sys.stderr)
            out.update(level.summary())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return out


def llamabind_cmd(model: str, port: int, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "llamabind.server", "-m", model, "--alias", "bench", "--port", str(port),
            "-np", str(args.slots), "-c", str(args.ctx_per_slot), "-t", str(args.threads),
            "--threads-batch", str(args.threads), "--max-queue", str(4 * max(args.clients)), "--no-access-log",
            *(["--flash-attn"] if args.flash_attn else [])]


def llama_server_cmd(model: str, port: int, args: argparse.Namespace) -> list[str]:
    # -c is the whole cache, shared out among the slots (one KV stream each, as our engine has).
    return [str(harness.BUILD / "bin" / "llama-server"), "-m", model, "--alias", "bench", "--port", str(port),
            "-np", str(args.slots), "-c", str(args.slots * args.ctx_per_slot), "-t", str(args.threads),
            "-tb", str(args.threads), "-fa", "on" if args.flash_attn else "off", "--no-webui"]


def lcp_cmd(model: str, port: int, args: argparse.Namespace) -> list[str]:
    return [args.lcp_python, "-m", "llama_cpp.server", "--model", model, "--model_alias", "bench", "--port", str(port),
            "--n_ctx", str(args.ctx_per_slot), "--n_threads", str(args.threads),
            "--n_threads_batch", str(args.threads), "--flash_attn", str(bool(args.flash_attn))]


def lcp_server_python() -> str | None:
    python = harness.lcp_python()
    if python and subprocess.run([python, "-c", "import llama_cpp.server.app"], capture_output=True).returncode == 0:
        return python
    return None


def paired_ratios(raw: dict[str, list[dict[str, Any]]], base: str) -> dict[str, dict[str, float]]:
    """Each server's tokens/s and p99 TTFT against the base server of the same round, median
    over rounds."""
    out: dict[str, dict[str, float]] = {}
    for path, runs in raw.items():
        for key in {k for run in runs for k in run if k.endswith("_tps") or k.endswith("_ttft_p99_ms")}:
            pairs = [run[key] / b[key] for run, b in zip(runs, raw[base]) if run.get(key) and b.get(key)]
            if pairs:
                out.setdefault(path, {})[key + "_ratio"] = statistics.median(pairs)
    return out


# The table's measured columns: (key after "c<clients>_", decimals).
_COLUMNS = (("tps", 1), ("tps_ratio", 3), ("rps", 2), ("ttft_p50_ms", 0), ("ttft_p99_ms", 0),
            ("ttft_p99_ms_ratio", 2), ("itl_p50_ms", 1), ("itl_p99_ms", 1), ("complete", 2))


def report(results: dict[str, dict[str, dict[str, float | None]]], meta: dict[str, Any]) -> str:
    fmt = harness.fmt
    lines = [f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, Python "
             f"{meta['machine']['python']}; {meta['date']}; {meta['rounds']} interleaved rounds, medians; "
             f"{meta['threads']} threads, {meta['slots']} slots of {meta['ctx_per_slot']} tokens, flash attention "
             f"{'on' if meta['flash_attn'] else 'off'}; {meta['n_gen']} greedy tokens per request, streamed; "
             f"{meta['requests_per_client']} requests per client.", "",
             "tok/s: aggregate output tokens per second over the wall time of a client count; ratios are paired "
             "with llama-server's run of the same round (median over rounds). TTFT: request sent to first "
             "streamed text. ITL: gap between streamed tokens. 'whole' is the share of requests answered with "
             "all their tokens.", ""]
    for model, rows in results.items():
        lines += [f"### {model}", "",
                  "| server | clients | tok/s | vs llama-server | req/s | TTFT p50 ms | TTFT p99 ms | p99 TTFT vs "
                  "llama-server | ITL p50 ms | ITL p99 ms | whole |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            for c in meta["clients"]:
                cells = [fmt(r.get(f"c{c}_{key}"), digits) for key, digits in _COLUMNS]
                lines.append(f"| {name} | {c} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_common_arguments(parser, n_prompt=0, n_gen=64)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--ctx-per-slot", type=int, default=1024)
    parser.add_argument("--skip-native-build", action="store_true", help="use build/bench as it is")
    parser.add_argument("--skip-lcp", action="store_true", help="leave llama-cpp-python's server out")
    parser.add_argument("--write-results", action="store_true", help="also rewrite bench/SERVER.md")
    args = parser.parse_args()

    if not args.skip_native_build:
        harness.build_native(("llama-server",))
    (ROOT / "build").mkdir(exist_ok=True)
    servers: dict[str, tuple[Command, str]] = {"llama.cpp (llama-server)": (llama_server_cmd, "llama-server"),
                                               "llamabind serve": (llamabind_cmd, "llamabind")}
    args.lcp_python = lcp = None if args.skip_lcp else lcp_server_python()
    if lcp is not None:
        servers["llama-cpp-python server"] = (lcp_cmd, "lcp")
    elif not args.skip_lcp:
        print("llama-cpp-python's server not found in build/bench-lcp (bench/run.py --install-lcp, then "
              "build/bench-lcp/bin/pip install 'llama-cpp-python[server]'); comparing without it", file=sys.stderr)
    paths = {name: functools.partial(measure, command, args=args, tag=tag) for name, (command, tag) in servers.items()}
    raw = harness.interleave(args.models, paths, args.rounds)
    results = {name: harness.medians(raw[name]) for name in raw}
    for name in raw:
        for path, ratios in paired_ratios(raw[name], "llama.cpp (llama-server)").items():
            results[name][path].update(ratios)
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": harness.machine(),
            "rounds": args.rounds, "threads": args.threads, "n_gen": args.n_gen, "flash_attn": args.flash_attn,
            "clients": args.clients, "requests_per_client": args.requests_per_client, "slots": args.slots,
            "ctx_per_slot": args.ctx_per_slot, "llama_cpp_python": lcp is not None}
    harness.save(report(results, meta), {"meta": meta, "results": results, "raw": raw}, json_prefix="server-",
                 markdown=ROOT / "bench" / "SERVER.md" if args.write_results else None,
                 heading="# OpenAI-compatible servers under load\n\nWritten by `python bench/server.py "
                         "--write-results`: `llamabind serve` against llama.cpp's `llama-server` built from the "
                         "same pinned source and flags (targets at 8 clients: >= 0.9x its tokens/s, p99 TTFT "
                         "<= 1.5x its; at 1 client within 5% of its tokens/s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
