#!/usr/bin/env python3
"""Tokens/s with a model split over RPC workers against the same model all local, through
llamabind's client and llama.cpp's own (llama-bench --rpc), on the same workers.

    python bench/rpc.py                          # two `llamabind rpc-server` workers on loopback
    python bench/rpc.py --rpc 10.0.0.2:50052,10.0.0.3:50052 --models smollm2
    python bench/rpc.py --write-results          # also rewrite bench/RPC.md
    llamabind bench --rpc HOST:PORT,...           # the same, through the command line

Paths, each measured in a fresh process, interleaved over the rounds (bench/run.py's helpers):
llama-bench without and with --rpc, llamabind's _core decode loop (decode_tokens + greedy
sampler, the closest to llama-bench's tg) and Llama.create_completion (greedy), each without
and with rpc_servers. Split runs put --ngl-fraction of the layers on the workers, shared
equally (tensor split 1/1/...), and the rest on this machine's CPU. The ratio that matters:
llamabind's split tok/s over llama.cpp's split tok/s on the same workers (target >= 0.95).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "rpc"))

import run as harness  # noqa: E402  (bench/run.py: native build, interleaving, medians, saving)
import worker as measure  # noqa: E402  (bench/worker.py: the measurements of one Llama / Model)

LLAMA_BENCH = harness.BUILD / "bin" / "llama-bench"


def n_layers(model: str) -> int:
    import llamabind as lb

    with lb.Model(model, vocab_only=True) as m:
        return int(m.metadata[f"{m.metadata['general.architecture']}.block_count"])


def split_settings(model: str, args: argparse.Namespace, servers: list[str]) -> dict[str, Any]:
    """n_gpu_layers and tensor_split of a split run; {} for a local one."""
    if not servers:
        return {}
    return {"n_gpu_layers": max(1, round(n_layers(model) * args.ngl_fraction)),
            "tensor_split": [1.0] * len(servers), "rpc_servers": ",".join(servers)}


def llama_bench(model: str, args: argparse.Namespace, servers: list[str]) -> dict[str, float]:
    split = split_settings(model, args, servers)
    cmd = [str(LLAMA_BENCH), "-m", model, "-p", str(args.n_prompt), "-n", str(args.n_gen), "-t", str(args.threads),
           "-r", "1", "-o", "json", "-fa", "on" if args.flash_attn else "off", "-b", "512", "-ub", "512",
           "-ngl", str(split.get("n_gpu_layers", 0))]
    if split:
        cmd += ["--rpc", split["rpc_servers"], "-ts", "/".join("1" for _ in servers)]
    out, _, rss = harness.run_with_rss(cmd)
    result = {"maxrss_mb": rss}
    for row in json.loads(out):
        result["pp_tps" if row["n_prompt"] > 0 else "tg_tps"] = float(row["avg_ts"])
    return result


def llamabind_run(path: str, model: str, args: argparse.Namespace, servers: list[str]) -> dict[str, float]:
    """One measurement of `path` (core or llama) in a fresh process (this script, --measure)."""
    cmd = [sys.executable, __file__, "--measure", path, model, "--threads", str(args.threads), "--n-prompt",
           str(args.n_prompt), "--n-gen", str(args.n_gen), "--flash-attn", str(args.flash_attn),
           "--ngl-fraction", str(args.ngl_fraction)]
    if servers:
        cmd += ["--rpc", ",".join(servers)]
    out, _, rss = harness.run_with_rss(cmd)
    return dict(json.loads(out.strip().splitlines()[-1])) | {"maxrss_mb": rss}


def measure_here(args: argparse.Namespace) -> None:
    """--measure PATH MODEL: bench/worker.py's measurement of a Llama or a Model loaded with
    this run's split settings; prints one JSON line."""
    import llamabind as lb

    path, model = args.measure
    servers = args.rpc or []
    split = split_settings(model, args, servers)
    ns = argparse.Namespace(path="llama", model=model, threads=args.threads, n_prompt=args.n_prompt,
                            n_gen=args.n_gen, flash_attn=args.flash_attn, n_sentences=0)
    if path == "core":
        loaded, load = measure.timed_load(lambda: lb.Model(model, **split))
        result = measure.core_loop(lb, loaded, ns) | load
    else:
        loaded, load = measure.timed_load(lambda: lb.Llama(
            model, n_ctx=args.n_prompt + args.n_gen + 64, n_batch=512, n_ubatch=512, n_threads=args.threads,
            n_threads_batch=args.threads, verbose=False, flash_attn=bool(args.flash_attn), **split))
        result = measure.high_level(loaded, ns, sample=False, stream=False) | load
    print(json.dumps(result))


def paths(args: argparse.Namespace, servers: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for where, rpc in (("local", []), ("split", servers)):
        table[f"llama.cpp (llama-bench) {where}"] = lambda m, rpc=rpc: llama_bench(m, args, rpc)
        table[f"llamabind _core loop {where}"] = lambda m, rpc=rpc: llamabind_run("core", m, args, rpc)
        table[f"llamabind Llama greedy {where}"] = lambda m, rpc=rpc: llamabind_run("llama", m, args, rpc)
    return table


def report(raw: dict[str, harness.Runs], meta: dict[str, Any]) -> str:
    fmt = harness.fmt
    m = meta["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; {meta['date']}; {meta['rounds']} "
             f"interleaved rounds, medians; {meta['threads']} threads here and {meta['worker_threads']} per worker, "
             f"pp{meta['n_prompt']}/tg{meta['n_gen']}, flash attention {'on' if meta['flash_attn'] else 'off'}.",
             "", f"Workers: {meta['workers']}. Split runs: {meta['split']}.", "",
             "Ratios are paired (each round against the same round's other run, then the median). "
             "'vs llama.cpp' compares with llama-bench in the same placement (local or split, the same "
             "workers); 'split/local' is what the split costs each client. llama-bench's tg decodes without "
             "sampling; the _core loop adds a greedy sampler, Llama.create_completion also detokenization.", ""]
    for model, runs in raw.items():
        med = harness.medians(runs)
        lines += [f"### {model}", "",
                  "| path | placement | pp tok/s | tg tok/s | tg vs llama.cpp | pp vs llama.cpp | tg split/local |",
                  "|---|---|---|---|---|---|---|"]
        for name in runs:
            client, where = name.rsplit(" ", 1)
            base = runs[f"llama.cpp (llama-bench) {where}"]
            local = runs[f"{client} local"]
            lines.append(f"| {client} | {where} | {fmt(med[name].get('pp_tps'))} | {fmt(med[name].get('tg_tps'))} | "
                         f"{fmt(harness.paired(runs[name], base, 'tg_tps'), 3)} | {fmt(harness.paired(runs[name], base, 'pp_tps'), 3)} | "
                         f"{fmt(harness.paired(runs[name], local, 'tg_tps'), 3) if where == 'split' else '–'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_common_arguments(parser, n_prompt=128, n_gen=64)
    parser.add_argument("--rpc", type=lambda v: [s for s in v.split(",") if s], default=None,
                        metavar="HOST:PORT,...", help="use these workers (default: start two on loopback)")
    parser.add_argument("--worker-threads", type=int, default=None, help="threads per loopback worker (default --threads)")
    parser.add_argument("--ngl-fraction", type=float, default=0.67,
                        help="share of the layers on the workers in split runs (default 0.67)")
    parser.add_argument("--write-results", action="store_true", help="also rewrite bench/RPC.md")
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_here(args)
        return 0

    import rpc_workers

    harness.build_native()
    started: list[rpc_workers.Worker] = []
    worker_threads = args.worker_threads or args.threads
    try:
        if args.rpc:
            servers = args.rpc
        else:
            logs = Path(tempfile.mkdtemp(prefix="llamabind-rpc-bench-"))
            started = [rpc_workers.start(rpc_workers.llamabind_command(worker_threads), logs / f"worker{i}.log")
                       for i in range(2)]
            servers = [w.endpoint for w in started]
        raw = harness.interleave(args.models, paths(args, servers), args.rounds)
    finally:
        for w in started:
            w.stop(signal.SIGTERM)
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": harness.machine(),
            "rounds": args.rounds, "threads": args.threads, "worker_threads": worker_threads if started else "theirs",
            "n_prompt": args.n_prompt, "n_gen": args.n_gen, "flash_attn": args.flash_attn,
            "workers": (f"two `llamabind rpc-server` processes on loopback ({', '.join(servers)})" if started
                        else ", ".join(servers)),
            "split": f"{args.ngl_fraction:.0%} of the layers on the workers, tensor split "
                     f"{'/'.join('1' for _ in servers)}, the rest (and the output layer) on this machine's CPU"}
    heading = ("# RPC: local against split over loopback workers\n\nWritten by `python bench/rpc.py "
               "--write-results`: llamabind's RPC client and llama.cpp's (llama-bench --rpc) on the same "
               "`llamabind rpc-server` workers, built from the same pinned source and flags.")
    markdown = ROOT / "bench" / "RPC.md" if args.write_results else None
    harness.save(report(raw, meta), {"meta": meta, "raw": raw}, "rpc-", markdown, heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
