#!/usr/bin/env python3
"""Many sequences at once: llamabind's engine against llama.cpp's llama-batched-bench.

    python bench/batched.py                              # both models, 3 interleaved rounds
    python bench/batched.py --models smollm2 --rounds 5 --write-results
    python bench/batched.py --models smollm2 --rounds 1 --n-prompt 16 --n-gen 8 --parallel 1 2   # smoke test

For B = 1, 2, 4, 8 sequences (pp prompt tokens and tg generated tokens each), measured
side by side in every round (fresh process per measurement, paths interleaved):

  llama.cpp (llama-batched-bench)   S_PP and S_TG from the pinned source, same flags as the extension
  llamabind Engine (_core)          the C++ engine stepped from Python: one batch per step, greedy
                                    sampling of every sequence, event per token
  llamabind Llama(n_parallel=8)     create_completion with B prompts, streamed: the whole user path
  llamabind Llama single stream     Llama(n_parallel=1), B=1 only (today's single-sequence path)

S_TG (aggregate generated tokens/s once every sequence has its first token) is reported with
its ratio to llama-batched-bench at the same B (target >= 0.90) and to B=1 of the same path.
The context is sized as llama-batched-bench sizes it (8 sequences of pp+tg tokens, one KV
stream each) for every path.

Time to first token while 7 sequences generate: a Llama(n_parallel=8) runs 7 endless greedy
streams; once all have produced tokens, an 8th request with a pp-token prompt arrives and the
time to its first streamed token is measured, against the same request on the idle engine.

Results: bench/results/batched-<time>.json; with --write-results also bench/BATCHED.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as harness  # noqa: E402  (bench/run.py: native build, machine info)

N_SLOTS = 8


def prompt_tokens(n_vocab: int, n: int, count: int, seed: int = 1) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, n_vocab, n)] for _ in range(count)]


def no_eog_bias(vocab: Any) -> dict[int, float]:
    return {t: -1e9 for t in range(vocab.n_tokens) if vocab.is_eog(t)}


# --------------------------------------------------------------------------- workers


def work_engine(model_path: str, args: argparse.Namespace) -> dict[str, Any]:
    import llamabind as lb
    from llamabind import _core

    model = lb.Model(model_path)
    vocab = model.vocab
    bias = no_eog_bias(vocab)
    pp, tg = args.n_prompt, args.n_gen
    out: dict[str, Any] = {}
    with lb.Context(model, n_ctx=N_SLOTS * (pp + tg), n_batch=2048, n_ubatch=512, n_seq_max=N_SLOTS,
                    n_threads=args.threads, n_threads_batch=args.threads,
                    flash_attn_type=lb.FlashAttnType.ENABLED if args.flash_attn else lb.FlashAttnType.DISABLED) as ctx:
        engine = _core.Engine(ctx, min_shared_prefix=0)
        # Warm-up, as llama-batched-bench does.
        engine.submit(prompt_tokens(vocab.n_tokens, 16, 1, seed=99)[0], lb.SamplerChain().add_greedy(), max_tokens=2)
        while engine.has_work:
            engine.step()
        for b in args.parallel:
            prompts = prompt_tokens(vocab.n_tokens, pp, b)
            chains = [lb.SamplerChain().add_logit_bias(vocab.n_tokens, bias).add_greedy() for _ in prompts]
            first: dict[int, float] = {}
            done: dict[int, float] = {}
            t0 = time.perf_counter()
            for p, chain in zip(prompts, chains):
                engine.submit(p, chain, max_tokens=tg)
            while engine.has_work:
                events = engine.step()
                now = time.perf_counter()
                for ev in events:
                    first.setdefault(ev.request, now)
                    if ev.finish != _core.FinishReason.NONE:
                        done[ev.request] = now
            t_first, t_end = max(first.values()), max(done.values())
            out[f"s_pp@{b}"] = b * pp / (t_first - t0)
            out[f"s_tg@{b}"] = b * (tg - 1) / (t_end - t_first) if tg > 1 else None
        engine.close()
    return out


def _streamed(llm: Any, prompts: list[list[int]], tg: int, bias: dict[int, float]) -> tuple[float, float, float]:
    """Streams a prompt list; returns (start, time every choice had text, time all ended)."""
    first: dict[int, float] = {}
    t0 = time.perf_counter()
    end = t0
    for chunk in llm.create_completion(prompts, max_tokens=tg, temperature=0.0, logit_bias=bias, stream=True):
        now = time.perf_counter()
        first.setdefault(chunk["choices"][0]["index"], now)
        end = now
    return t0, max(first.values()), end


def work_llama(model_path: str, args: argparse.Namespace) -> dict[str, Any]:
    from llamabind import Llama

    pp, tg = args.n_prompt, args.n_gen
    out: dict[str, Any] = {}
    with Llama(model_path, n_ctx=pp + tg, n_batch=2048, n_ubatch=512, n_threads=args.threads,
               n_threads_batch=args.threads, flash_attn=bool(args.flash_attn), n_parallel=N_SLOTS,
               verbose=False) as llm:
        bias = no_eog_bias(llm.model.vocab)
        _streamed(llm, prompt_tokens(llm.n_vocab(), 16, 1, seed=99), 2, bias)
        for b in args.parallel:
            t0, t_first, t_end = _streamed(llm, prompt_tokens(llm.n_vocab(), pp, b), tg, bias)
            out[f"s_pp@{b}"] = b * pp / (t_first - t0)
            out[f"s_tg@{b}"] = b * (tg - 1) / (t_end - t_first) if tg > 1 else None
    return out


def work_single(model_path: str, args: argparse.Namespace) -> dict[str, Any]:
    from llamabind import Llama

    pp, tg = args.n_prompt, args.n_gen
    with Llama(model_path, n_ctx=N_SLOTS * (pp + tg), n_batch=2048, n_ubatch=512, n_threads=args.threads,
               n_threads_batch=args.threads, flash_attn=bool(args.flash_attn), verbose=False) as llm:
        bias = no_eog_bias(llm.model.vocab)
        _streamed(llm, prompt_tokens(llm.n_vocab(), 16, 1, seed=99), 2, bias)
        t0, t_first, t_end = _streamed(llm, prompt_tokens(llm.n_vocab(), pp, 1), tg, bias)
    return {"s_pp@1": pp / (t_first - t0), "s_tg@1": (tg - 1) / (t_end - t_first) if tg > 1 else None}


def work_ttft(model_path: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time to first token of a request arriving while 7 others generate, and on an idle engine."""
    from llamabind import Llama

    pp = args.n_prompt
    busy_tokens = 4 * args.n_gen + 64
    with Llama(model_path, n_ctx=pp + busy_tokens, n_batch=2048, n_ubatch=512, n_threads=args.threads,
               n_threads_batch=args.threads, flash_attn=bool(args.flash_attn), n_parallel=N_SLOTS,
               verbose=False) as llm:
        bias = no_eog_bias(llm.model.vocab)
        newcomer = prompt_tokens(llm.n_vocab(), pp, 1, seed=7)[0]

        def ttft() -> float:
            t0 = time.perf_counter()
            for _ in llm.create_completion(newcomer, max_tokens=1, temperature=0.0, logit_bias=bias, stream=True):
                return time.perf_counter() - t0
            raise RuntimeError("no token")

        ttft()  # warm-up
        idle = ttft()
        started = threading.Barrier(N_SLOTS)  # 7 streams + this thread
        stop = threading.Event()

        def background(tokens: list[int]) -> None:
            n = 0
            for _ in llm.create_completion(tokens, max_tokens=busy_tokens, temperature=0.0, logit_bias=bias,
                                           stream=True):
                n += 1
                if n == 3:
                    started.wait()
                if stop.is_set():
                    break

        threads = [threading.Thread(target=background, args=(p,))
                   for p in prompt_tokens(llm.n_vocab(), 32, N_SLOTS - 1, seed=3)]
        for t in threads:
            t.start()
        started.wait()
        busy = ttft()
        stop.set()
        for t in threads:
            t.join()
    return {"ttft_idle_ms": idle * 1e3, "ttft_busy_ms": busy * 1e3}


WORKERS = {"engine": work_engine, "llama": work_llama, "single": work_single, "ttft": work_ttft}


def run_worker(kind: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--model-path", model, "--threads", str(args.threads),
           "--n-prompt", str(args.n_prompt), "--n-gen", str(args.n_gen), "--flash-attn", str(args.flash_attn),
           "--parallel", *map(str, args.parallel)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_native(model: str, args: argparse.Namespace) -> dict[str, Any]:
    exe = harness.BUILD / "bin" / "llama-batched-bench"
    cmd = [str(exe), "-m", model, "-c", str(N_SLOTS * (args.n_prompt + args.n_gen)), "-b", "2048", "-ub", "512",
           "-npp", str(args.n_prompt), "-ntg", str(args.n_gen), "-npl", ",".join(map(str, args.parallel)),
           "-t", str(args.threads), "-tb", str(args.threads), "-fa", "on" if args.flash_attn else "off",
           "--output-format", "jsonl"]
    out, _, _ = harness.run_with_rss(cmd)
    result: dict[str, Any] = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            row = json.loads(line)
            result[f"s_pp@{row['pl']}"] = float(row["speed_pp"])
            result[f"s_tg@{row['pl']}"] = float(row["speed_tg"])
    if not result:
        raise RuntimeError("llama-batched-bench printed no results")
    return result


# --------------------------------------------------------------------------- report


def report(results: dict[str, dict[str, dict[str, float | None]]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; {meta['date']}; {meta['rounds']} "
             f"interleaved rounds, medians; {meta['threads']} threads, pp{meta['n_prompt']}/tg{meta['n_gen']} per "
             f"sequence, flash attention {'on' if meta['flash_attn'] else 'off'}.", ""]
    native_name = "llama.cpp (llama-batched-bench)"
    for model, rows in results.items():
        native = rows.get(native_name, {})
        lines += [f"### {model}", "", "| path | B | S_PP tok/s | S_TG tok/s | S_TG vs batched-bench | S_TG vs B=1 |",
                  "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            if name == "ttft":
                continue
            for b in meta["parallel"]:
                tg = r.get(f"s_tg@{b}")
                if tg is None and r.get(f"s_pp@{b}") is None:
                    continue
                base = native.get(f"s_tg@{b}")
                one = r.get("s_tg@1")
                lines.append(f"| {name} | {b} | {harness.fmt(r.get(f's_pp@{b}'))} | {harness.fmt(tg)} | "
                             f"{harness.fmt(tg / base if tg and base else None, 3)} | {harness.fmt(tg / one if tg and one else None, 2)} |")
        t = rows.get("ttft", {})
        lines += ["", f"Time to first token of a {meta['n_prompt']}-token prompt (Llama(n_parallel=8)): "
                      f"{harness.fmt(t.get('ttft_busy_ms'), 0)} ms while 7 sequences generate, "
                      f"{harness.fmt(t.get('ttft_idle_ms'), 0)} ms on the idle engine.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_common_arguments(parser, n_prompt=128, n_gen=64)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--skip-native-build", action="store_true", help="use build/bench as it is")
    parser.add_argument("--skip-native", action="store_true",
                        help="leave llama-batched-bench out (smoke tests without the native tools)")
    parser.add_argument("--write-results", action="store_true", help="also rewrite bench/BATCHED.md")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if any(b < 1 or b > N_SLOTS for b in args.parallel):
        parser.error(f"--parallel values must be in [1, {N_SLOTS}]")

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.model_path, args)))
        return 0

    if not args.skip_native_build and not args.skip_native:
        harness.build_native()
    paths = {
        "llama.cpp (llama-batched-bench)": lambda m: run_native(m, args),
        "llamabind Engine (_core)": lambda m: run_worker("engine", m, args),
        "llamabind Llama(n_parallel=8)": lambda m: run_worker("llama", m, args),
        "llamabind Llama single stream": lambda m: run_worker("single", m, args),
        "ttft": lambda m: run_worker("ttft", m, args),
    }
    if args.skip_native:
        del paths["llama.cpp (llama-batched-bench)"]
    raw = harness.interleave(args.models, paths, args.rounds)
    results = {name: harness.medians(raw[name]) for name in raw}
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": harness.machine(),
            "rounds": args.rounds, "threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen,
            "parallel": args.parallel, "flash_attn": args.flash_attn}
    harness.save(report(results, meta), {"meta": meta, "results": results, "raw": raw}, json_prefix="batched-",
                 markdown=ROOT / "bench" / "BATCHED.md" if args.write_results else None,
                 heading="# Many sequences at once: benchmark results\n\nWritten by `python bench/batched.py "
                         "--write-results`; S_TG ratios are against llama.cpp's llama-batched-bench built from the "
                         "same pinned source and flags (target >= 0.90).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
