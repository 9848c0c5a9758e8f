#!/usr/bin/env python3
"""Speed of two llamabind installations side by side, e.g. the portable wheel against the
native source build: prompt processing and greedy generation on the same model and threads.

    python scripts/compare_wheel_speed.py native=.venv/bin/python wheel=/tmp/wheel-venv/bin/python \\
        [--model smollm2] [--threads 2] [--rounds 5] [--n-prompt 256] [--n-gen 128]

Each measurement is bench/worker.py's `core` path (a decode loop on llamabind._core) in a fresh
process; the installations alternate (A B A B ...), so drift of a shared machine hits both,
and medians are compared. Run it on a quiet machine for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def model_path(name: str) -> Path:
    spec = importlib.util.spec_from_file_location("_llamabind_models", ROOT / "python" / "llamabind" / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return Path(module.model_path(name))


def describe(python: str) -> str:
    code = ("import llamabind; i = llamabind.backend_info(); "
            "print(llamabind.__file__, i['cpu_variant'] or 'built-in CPU backend')")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout.strip()


def measure(python: str, model: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [python, str(ROOT / "bench" / "worker.py"), "core", str(model), "--threads", str(args.threads),
           "--n-prompt", str(args.n_prompt), "--n-gen", str(args.n_gen)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd="/")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("installations", nargs=2, metavar="NAME=PYTHON")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-prompt", type=int, default=256)
    parser.add_argument("--n-gen", type=int, default=128)
    args = parser.parse_args()
    pairs = [item.split("=", 1) for item in args.installations]
    model = model_path(args.model)
    for name, python in pairs:
        print(f"{name}: {describe(python)}", flush=True)
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in pairs}
    for r in range(args.rounds):
        for name, python in pairs:
            m = measure(python, model, args)
            results[name].append(m)
            print(f"round {r + 1} {name}: pp {m['pp_tps']:.1f} tok/s, tg {m['tg_tps']:.1f} tok/s", flush=True)
    (a, _), (b, _) = pairs
    summary = {}
    for key in ("pp_tps", "tg_tps"):
        med = {name: statistics.median(x[key] for x in results[name]) for name, _ in pairs}
        summary[key] = {**med, f"{b}/{a}": med[b] / med[a]}
        print(f"{key}: {a} {med[a]:.1f}, {b} {med[b]:.1f}, {b}/{a} = {med[b] / med[a]:.3f}")
    print(json.dumps({"model": args.model, "threads": args.threads, "rounds": args.rounds,
                      "n_prompt": args.n_prompt, "n_gen": args.n_gen, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
