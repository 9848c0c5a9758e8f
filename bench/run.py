#!/usr/bin/env python3
"""llamabind's benchmark harness: the same work through llama.cpp's own tools, the llamabind
C++ layer, its Python paths and (when installed) llama-cpp-python, side by side.

    python bench/run.py                      # both models, 3 interleaved rounds
    python bench/run.py --models smollm2 --rounds 5
    python bench/run.py --install-lcp        # first build llama-cpp-python 0.3.36 into build/bench-lcp

Every measurement runs in a fresh process; the paths of one round run one after the other
(A B C ... A B C ...), so drift of this shared machine hits all of them alike; medians over
the rounds are reported with ratios against the native tools. Results go to
bench/results/<time>.json and, with --write-results, to bench/RESULTS.md.

The native tools (llama-bench, llama-batched-bench, llama-embedding) and bench/cpp are built
from the pinned extern/llama.cpp with the same flags as the extension, in build/bench.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
LCP_VENV = ROOT / "build" / "bench-lcp"
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "python"))

# llama-cpp-python's own build would enable the AMX kernels that crash at this llama.cpp
# commit on AMX Xeons (see CMakeLists.txt); spell out the same ISA without them.
LCP_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
                  "-DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON "
                  "-DGGML_AVX512_BF16=ON")


def sh(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def build_native(extra_targets: tuple[str, ...] = ()) -> None:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    steps = [
        ["cmake", "-S", str(ROOT), "-B", str(BUILD), *generator, "-DCMAKE_BUILD_TYPE=Release",
         "-DLLAMABIND_BUILD_BENCH_TOOLS=ON", "-DLLAMABIND_BUILD_PYTHON=OFF", "-DLLAMABIND_BUILD_EXAMPLES=OFF"],
        ["cmake", "--build", str(BUILD), "-j", str(os.cpu_count() or 2), "--target", "llama-bench",
         "llama-batched-bench", "llama-embedding", "llamabind-bench", *extra_targets],
    ]
    for cmd in steps:
        proc = sh(cmd)
        if proc.returncode != 0:
            sys.exit(f"building the native tools failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def lcp_python() -> str | None:
    python = LCP_VENV / "bin" / "python"
    if python.exists() and sh([str(python), "-c", "import llama_cpp"]).returncode == 0:
        return str(python)
    return None


def install_lcp() -> None:
    if not (LCP_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(LCP_VENV)], check=True)
    env = dict(os.environ, CMAKE_ARGS=LCP_CMAKE_ARGS)
    subprocess.run([str(LCP_VENV / "bin" / "pip"), "install", "--no-binary", "llama-cpp-python",
                    "llama-cpp-python==0.3.36"], check=True, env=env)


def run_with_rss(cmd: list[str]) -> tuple[str, str, float]:
    """Runs cmd; returns its stdout, stderr and peak RSS in MiB (from wait4, for this child only)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    def pump(stream: Any, sink: list[str]) -> None:
        sink.append(stream.read())

    threads = [threading.Thread(target=pump, args=(proc.stdout, out_chunks)),
               threading.Thread(target=pump, args=(proc.stderr, err_chunks))]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = "".join(out_chunks), "".join(err_chunks)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {err[-2000:]}")
    return out, err, usage.ru_maxrss / 1024.0


def native_bench(model: str, threads: int, n_prompt: int, n_gen: int, fa: int) -> dict[str, float]:
    out, _, rss = run_with_rss([str(BUILD / "bin" / "llama-bench"), "-m", model, "-p", str(n_prompt), "-n",
                                str(n_gen), "-t", str(threads), "-r", "1", "-o", "json", "-fa",
                                "on" if fa else "off", "-b", "512", "-ub", "512"])
    rows = json.loads(out)
    result = {"maxrss_mb": rss}
    for row in rows:
        key = "pp_tps" if row["n_prompt"] > 0 else "tg_tps"
        result[key] = float(row["avg_ts"])
    return result


def cpp_bench(model: str, threads: int, n_prompt: int, n_gen: int, fa: int, sample: bool) -> dict[str, float]:
    cmd = [str(BUILD / "bench" / "cpp" / "llamabind-bench"), "-m", model, "-p", str(n_prompt), "-n", str(n_gen),
           "-t", str(threads), "-r", "1", "-fa", str(fa)]
    out, _, rss = run_with_rss(cmd + (["--sample"] if sample else []))
    row = json.loads(out.strip().splitlines()[-1])
    return {"pp_tps": row["pp_tps"], "tg_tps": row["tg_tps"], "load_ms": row["load_ms"], "maxrss_mb": rss}


def native_embed(model: str, threads: int, n_sentences: int) -> dict[str, float]:
    from worker import sentences

    # llama.cpp's perf counters do not time this tool's decode (they report ~0 ms), so the time
    # is taken from its log timestamps (-v): from the first batch_decode line (just before the
    # first decode) to the final perf line (after pooling, normalization and printing the JSON).
    _, err, rss = run_with_rss([str(BUILD / "bin" / "llama-embedding"), "-m", model, "-t", str(threads), "-v",
                                "--pooling", "mean", "-b", "512", "-ub", "512", "-c", "2048",
                                "--embd-output-format", "json", "-p", "\n".join(sentences(n_sentences))])

    def stamp(line: str) -> float:
        minutes, seconds, millis, micros = line.split()[0].split(".")  # "M.SS.mmm.uuu"
        return int(minutes) * 60 + int(seconds) + int(millis) / 1e3 + int(micros) / 1e6

    lines = err.splitlines()
    start = next((stamp(x) for x in lines if " batch_decode: " in x), None)
    end = next((stamp(x) for x in lines if "llama_perf_context_print:" in x), None)
    if start is None or end is None:
        raise RuntimeError("llama-embedding's log has no batch_decode/perf lines to time")
    seconds = end - start
    return {"embed_per_s": n_sentences / seconds, "maxrss_mb": rss}


def worker(python: str, path: str, model: str, args: argparse.Namespace) -> dict[str, float]:
    out, _, rss = run_with_rss([python, str(ROOT / "bench" / "worker.py"), path, model, "--threads",
                                str(args.threads), "--n-prompt", str(args.n_prompt), "--n-gen", str(args.n_gen),
                                "--n-sentences", str(args.n_sentences), "--flash-attn", str(args.flash_attn)])
    return dict(json.loads(out.strip().splitlines()[-1])) | {"maxrss_mb": rss}


def paths(args: argparse.Namespace, lcp: str | None) -> dict[str, Any]:
    py = sys.executable
    table: dict[str, Any] = {
        "llama.cpp (llama-bench)": lambda m: native_bench(m, args.threads, args.n_prompt, args.n_gen, args.flash_attn),
        "llamabind C++ (decode)": lambda m: cpp_bench(m, args.threads, args.n_prompt, args.n_gen, args.flash_attn, False),
        "llamabind C++ (decode+greedy)": lambda m: cpp_bench(m, args.threads, args.n_prompt, args.n_gen,
                                                             args.flash_attn, True),
        "llamabind _core loop": lambda m: worker(py, "core", m, args),
        "llamabind Llama greedy": lambda m: worker(py, "llama", m, args),
        "llamabind Llama sampled": lambda m: worker(py, "llama-sample", m, args),
        "llamabind Llama stream": lambda m: worker(py, "llama-stream", m, args),
    }
    if lcp:
        table |= {
            "llama-cpp-python greedy": lambda m: worker(lcp, "lcp", m, args),
            "llama-cpp-python sampled": lambda m: worker(lcp, "lcp-sample", m, args),
            "llama-cpp-python stream": lambda m: worker(lcp, "lcp-stream", m, args),
        }
    if not args.no_embed:
        table["llama.cpp (llama-embedding)"] = lambda m: native_embed(m, args.threads, args.n_sentences)
        table["llamabind Llama.embed"] = lambda m: worker(py, "embed", m, args)
        if lcp:
            table["llama-cpp-python embed"] = lambda m: worker(lcp, "lcp-embed", m, args)
    return table


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


Runs = dict[str, list[dict[str, Any]]]  # path -> one measurement dict per round


def interleave(model_names: list[str], table: dict[str, Callable[[str], dict[str, Any]]],
               rounds: int) -> dict[str, Runs]:
    """Runs every path of `table` (name -> function of the model's file) on each model, the
    paths one after the other and that `rounds` times (A B C ... A B C ...), so drift of the
    machine hits them alike. Returns model -> path -> the measurements, in round order."""
    from llamabind import models

    raw: dict[str, Runs] = {}
    for name in model_names:
        model = str(models.model_path(name))
        raw[name] = {p: [] for p in table}
        for r in range(rounds):
            for path, fn in table.items():
                print(f"[{name} round {r + 1}/{rounds}] {path}", file=sys.stderr, flush=True)
                raw[name][path].append(fn(model))
    return raw


def paired(runs: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> float | None:
    """The median over rounds of runs[i][key] / base[i][key] (rounds where both measured it)."""
    pairs = [r[key] / b[key] for r, b in zip(runs, base) if r.get(key) and b.get(key)]
    return statistics.median(pairs) if pairs else None


def medians(runs: Runs) -> dict[str, dict[str, float | None]]:
    """path -> key -> the median over the rounds that measured it."""
    return {p: {k: median([one.get(k) for one in measured]) for k in {k for one in measured for k in one}}
            for p, measured in runs.items()}


def save(text: str, data: dict[str, Any], json_prefix: str, markdown: Path | None, heading: str) -> None:
    """Prints the report, writes bench/results/<prefix><time>.json and, when asked, the
    markdown file committed with the latest results."""
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{json_prefix}{stamp}.json").write_text(json.dumps(data, indent=1))
    if markdown is not None:
        markdown.write_text(f"{heading}\n\n{text}\n")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import llamabind

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "llama_cpp": llamabind.llama_cpp_pin(),
            "llamabind": llamabind.__version__}


def fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def report(results: dict[str, dict[str, dict[str, float | None]]], meta: dict[str, Any]) -> str:
    lines = [f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, Python "
             f"{meta['machine']['python']}; {meta['date']}; {meta['rounds']} interleaved rounds, medians; "
             f"{meta['threads']} threads, pp{meta['n_prompt']}/tg{meta['n_gen']}, flash attention "
             f"{'on' if meta['flash_attn'] else 'off'}.",
             "",
             "Ratios are against llama.cpp's llama-bench (pp/tg) and llama-embedding, built from the same "
             "pinned source and flags: the median over rounds of each round's ratio (paired runs). Overhead µs/token = 1e6/tg − 1e6/tg(native), across processes (noisy); in-process overhead = wall time of the generation call minus llama.cpp's own decode time (its perf counters), per token: the cost of the binding and Python, sampling included. llama-bench's tg "
             "decodes without sampling; the llamabind/llama-cpp-python rows include sampling and "
             "detokenization. 'RSS beyond interpreter' subtracts the resident memory the Python process "
             "had after importing the library, before loading the model.", ""]
    for model, rows in results.items():
        native = rows.get("llama.cpp (llama-bench)", {})
        lcp_tg = {k.split()[-1]: v.get("tg_tps") for k, v in rows.items() if k.startswith("llama-cpp-python")}
        lines += [f"### {model}", "",
                  "| path | pp tok/s | vs native | tg tok/s | vs native | overhead µs/token | in-process overhead µs/token | TTFT ms | load ms | peak RSS MiB | RSS beyond interpreter, vs native | vs llama-cpp-python (tg) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            if "embed_per_s" in r:
                continue
            pp, tg = r.get("pp_tps"), r.get("tg_tps")
            pp_ratio, tg_ratio = r.get("pp_tps_ratio"), r.get("tg_tps_ratio")
            overhead = (1e6 / tg - 1e6 / native["tg_tps"]) if tg and native.get("tg_tps") else None
            kind = name.split()[-1]
            vs_lcp = None
            if name.startswith("llamabind Llama") and lcp_tg.get(kind) and tg:
                vs_lcp = tg / lcp_tg[kind]
            rss, base, native_rss = r.get("maxrss_mb"), r.get("base_rss_mb") or 0.0, native.get("maxrss_mb")
            rss_ratio = (rss - base) / native_rss if rss and native_rss else None
            lines.append(f"| {name} | {fmt(pp)} | {fmt(pp_ratio, 3)} | {fmt(tg)} | {fmt(tg_ratio, 3)} | "
                         f"{fmt(overhead, 0)} | {fmt(r.get('inproc_overhead_us'), 0)} | {fmt(r.get('ttft_ms'), 0)} | {fmt(r.get('load_ms'), 0)} | "
                         f"{fmt(rss, 0)} | {fmt(rss_ratio, 3)} | {fmt(vs_lcp, 3)} |")
        embeds = {k: v for k, v in rows.items() if "embed_per_s" in v}
        if embeds:
            lines += ["", "| embeddings (mean pooling) | sentences/s | vs native | peak RSS MiB |", "|---|---|---|---|"]
            for name, r in embeds.items():
                ratio = r.get("embed_per_s_ratio")
                lines.append(f"| {name} | {fmt(r.get('embed_per_s'))} | {fmt(ratio, 3)} | {fmt(r.get('maxrss_mb'), 0)} |")
        lines.append("")
    return "\n".join(lines)


def add_common_arguments(parser: argparse.ArgumentParser, n_prompt: int, n_gen: int) -> None:
    """The options of every benchmark script: models, rounds and what each measurement runs."""
    parser.add_argument("--models", nargs="+", default=["smollm2", "gemma3"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-prompt", type=int, default=n_prompt)
    parser.add_argument("--n-gen", type=int, default=n_gen)
    parser.add_argument("--flash-attn", type=int, default=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, n_prompt=512, n_gen=128)
    parser.add_argument("--n-sentences", type=int, default=64)
    parser.add_argument("--no-embed", action="store_true")
    parser.add_argument("--skip-lcp", action="store_true", help="do not compare with llama-cpp-python")
    parser.add_argument("--install-lcp", action="store_true", help="build llama-cpp-python 0.3.36 into build/bench-lcp")
    parser.add_argument("--write-results", action="store_true", help="also rewrite bench/RESULTS.md")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "bench"))

    build_native()
    if args.install_lcp:
        install_lcp()
    lcp = None if args.skip_lcp else lcp_python()
    if lcp is None and not args.skip_lcp:
        print("llama-cpp-python not found in build/bench-lcp (use --install-lcp); comparing without it",
              file=sys.stderr)
    raw = interleave(args.models, paths(args, lcp), args.rounds)
    results = {name: medians(raw[name]) for name in raw}
    for name in raw:
        # Paired ratios: each round's measurement against the native tool's measurement of the
        # same round (they ran back to back), then the median over rounds. Less sensitive to
        # this shared machine's drift than a ratio of medians.
        for base_path, keys in (("llama.cpp (llama-bench)", ("pp_tps", "tg_tps")),
                                ("llama.cpp (llama-embedding)", ("embed_per_s",))):
            base_runs = raw[name].get(base_path)
            if not base_runs:
                continue
            for p, runs in raw[name].items():
                for k in keys:
                    pairs = [run[k] / b[k] for run, b in zip(runs, base_runs) if run.get(k) and b.get(k)]
                    if pairs:
                        results[name][p][k + "_ratio"] = statistics.median(pairs)
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "rounds": args.rounds, "threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen,
            "flash_attn": args.flash_attn, "llama_cpp_python": bool(lcp)}
    text = report(results, meta)
    save(text, {"meta": meta, "results": results, "raw": raw}, json_prefix="",
         markdown=ROOT / "bench" / "RESULTS.md" if args.write_results else None,
         heading="# Benchmark results\n\nWritten by `python bench/run.py --write-results`; ratios are against "
                 "llama.cpp's own tools built from the same pinned source and flags.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
