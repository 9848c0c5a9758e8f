#!/usr/bin/env python3
"""Speculative decoding: tokens/s of Qwen2.5-Coder-1.5B greedy, alone and with drafts, through
llamabind and llama.cpp's own llama-speculative-simple (built from the pinned source).

    python bench/speculative.py                    # 3 interleaved rounds
    python bench/speculative.py --rounds 2 --write-results   # also rewrite bench/SPECULATIVE.md

Two tasks, greedy, --threads threads (default 2), flash attention off, --n-gen tokens (160):
- "palindrome": the palindrome-function prompt in ChatML, the 0.5B model drafting at n_draft
  4 and 8, llamabind fixed (draft_adaptive=False, the native tool's procedure) and adaptive,
  against llama-speculative-simple --spec-type draft-simple with the same lengths
  (--spec-draft-p-min 0: always the full length);
- "edit": a one-line edit of a 20-line function whose answer repeats the rest of the prompt
  (llama.cpp's n-gram types accept 80% of their drafts there), prompt lookup (llamabind's
  NgramDrafter through LlamaPromptLookupDecoding) at --n-lookup 8 and 16 tokens, against
  llama.cpp's n-gram spec types at their defaults (drafts of up to 48 tokens).

Every run is a fresh process. llamabind's runs first evaluate the prompt (a completion of two
tokens, which also brings the draft context up to the prompt), then time a completion of
n-gen tokens of the same prompt: the generation alone, as the native tool's "decoded ... t/s"
(its prompt is encoded before its timer starts). Plain decoding through llama-bench (tg) is
shown for reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as harness  # noqa: E402  (bench/run.py: native build, interleaving, medians, saving)

SPEC_SIMPLE = harness.BUILD / "bin" / "llama-speculative-simple"
LLAMA_BENCH = harness.BUILD / "bin" / "llama-bench"

PALINDROME = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a Python "
              "function that checks whether a string is a palindrome.<|im_end|>\n<|im_start|>assistant\n")
CODE = """def load_orders(path):
    orders = []
    with open(path) as handle:
        for line in handle:
            fields = line.strip().split(",")
            if len(fields) != 3:
                continue
            customer, item, amount = fields
            orders.append({"customer": customer, "item": item, "amount": float(amount)})
    return orders


def total_by_customer(orders):
    totals = {}
    for order in orders:
        totals[order["customer"]] = totals.get(order["customer"], 0.0) + order["amount"]
    return totals


def largest_customer(orders):
    totals = total_by_customer(orders)
    return max(totals, key=totals.get)
"""
EDIT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nChange the field separator "
        "in `load_orders` from a comma to a semicolon and output the complete code, nothing else:\n"
        f"```python\n{CODE}```<|im_end|>\n<|im_start|>assistant\n")
PROMPTS = {"palindrome": PALINDROME, "edit": EDIT}
NGRAM_TYPES = ("ngram-simple", "ngram-map-k", "ngram-mod")


def spec_simple(target: str, args: argparse.Namespace, task: str, extra: list[str]) -> dict[str, Any]:
    cmd = [str(SPEC_SIMPLE), "-m", target, "-p", PROMPTS[task], "-n", str(args.n_gen), "-t", str(args.threads),
           "-tb", str(args.threads), "-fa", "off", "--temp", "0", "-c", "2048", "--no-escape", *extra]
    out, err, rss = harness.run_with_rss(cmd)
    text = out + err
    found = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.]+) t/s", text)
    drafted = re.search(r"n_drafted\s*=\s*(\d+)", text)
    accepted = re.search(r"n_accept\s*=\s*(\d+)", text)
    if found is None:
        raise RuntimeError(f"llama-speculative-simple failed:\n{text[-3000:]}")
    result: dict[str, Any] = {"tps": float(found.group(3)), "n_gen": int(found.group(1)), "maxrss_mb": rss}
    if drafted and accepted and int(drafted.group(1)) > 0:
        result |= {"n_drafted": int(drafted.group(1)), "n_accepted": int(accepted.group(1)),
                   "acceptance": int(accepted.group(1)) / int(drafted.group(1))}
    return result


def llama_bench(target: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [str(LLAMA_BENCH), "-m", target, "-p", "0", "-n", str(args.n_gen), "-t", str(args.threads), "-r", "1",
           "-o", "json", "-fa", "off"]
    out, _, rss = harness.run_with_rss(cmd)
    return {"tps": float(json.loads(out)[0]["avg_ts"]), "maxrss_mb": rss}


def llamabind_run(target: str, args: argparse.Namespace, task: str, how: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", task, how, target, "--threads", str(args.threads),
           "--n-gen", str(args.n_gen), "--draft", args.draft_path]
    out, err, rss = harness.run_with_rss(cmd)
    lines = out.strip().splitlines()
    if not lines:
        raise RuntimeError(f"measurement {task} {how} failed:\n{err[-3000:]}")
    return dict(json.loads(lines[-1])) | {"maxrss_mb": rss}


def measure_here(args: argparse.Namespace) -> None:
    """--measure TASK HOW MODEL: one timed llamabind completion; prints one JSON line. HOW is
    plain, draftN / draftN-adaptive (the --draft GGUF) or lookupN / lookupN-adaptive."""
    import llamabind as lb

    task, how, model = args.measure
    kw: dict[str, Any] = {}
    if how != "plain":
        found = re.fullmatch(r"(draft|lookup)(\d+)(-adaptive)?", how)
        if found is None:
            raise SystemExit(f"unknown measurement {how}")
        kind, n, adaptive = found.group(1), int(found.group(2)), found.group(3) is not None
        kw = {"n_draft": n, "draft_adaptive": adaptive}
        if kind == "draft":
            kw["draft_model_path"] = args.draft
        else:
            kw["draft_model"] = lb.LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=n)
    prompt = PROMPTS[task]
    with lb.Llama(model, n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=args.threads, n_threads_batch=args.threads,
                  flash_attn=False, verbose=False, **kw) as llm:
        llm(prompt, max_tokens=2, temperature=0.0)  # the prompt (and the draft context) evaluated
        spec = llm._speculation.speculator if llm._speculation is not None else None
        before = dict(spec.stats) if spec is not None else {}
        t0 = time.perf_counter()
        out = llm(prompt, max_tokens=args.n_gen, temperature=0.0)
        seconds = time.perf_counter() - t0
        after = dict(spec.stats) if spec is not None else {}  # read before the Llama closes its Speculator
    n = int(out["usage"]["completion_tokens"])
    result: dict[str, Any] = {"tps": n / seconds, "n_gen": n}
    if spec is not None:
        drafted = after["n_drafted"] - before["n_drafted"]
        accepted = after["n_accepted"] - before["n_accepted"]
        result |= {"n_drafted": drafted, "n_accepted": accepted, "acceptance": accepted / drafted if drafted else None,
                   "n_steps": after["n_steps"] - before["n_steps"]}
    print(json.dumps(result))


def paths(args: argparse.Namespace) -> dict[str, Any]:
    table: dict[str, Any] = {"palindrome | llama.cpp plain (llama-bench tg)": lambda m: llama_bench(m, args)}
    table["palindrome | llamabind plain"] = lambda m: llamabind_run(m, args, "palindrome", "plain")
    for n in args.n_draft:
        draft = ["-md", args.draft_path, "--spec-type", "draft-simple", "--spec-draft-n-max", str(n),
                 "--spec-draft-n-min", "0", "--spec-draft-p-min", "0", "-td", str(args.threads),
                 "-tbd", str(args.threads)]
        table[f"palindrome | llama.cpp draft n={n}"] = lambda m, d=draft: spec_simple(m, args, "palindrome", d)
        table[f"palindrome | llamabind draft n={n}"] = lambda m, n=n: llamabind_run(m, args, "palindrome", f"draft{n}")
        table[f"palindrome | llamabind draft n={n} adaptive"] = \
            lambda m, n=n: llamabind_run(m, args, "palindrome", f"draft{n}-adaptive")
    table["edit | llamabind plain"] = lambda m: llamabind_run(m, args, "edit", "plain")
    for t in NGRAM_TYPES:
        table[f"edit | llama.cpp {t}"] = lambda m, t=t: spec_simple(m, args, "edit", ["--spec-type", t])
    for n in args.n_lookup:
        table[f"edit | llamabind lookup n={n}"] = lambda m, n=n: llamabind_run(m, args, "edit", f"lookup{n}")
        table[f"edit | llamabind lookup n={n} adaptive"] = \
            lambda m, n=n: llamabind_run(m, args, "edit", f"lookup{n}-adaptive")
    return table


def report(raw: dict[str, harness.Runs], meta: dict[str, Any]) -> str:
    fmt = harness.fmt
    m = meta["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; llama.cpp {m['llama_cpp']}; "
             f"{meta['date']}; {meta['rounds']} interleaved rounds, medians (ratios: paired per round, then the "
             f"median); {meta['threads']} threads, flash attention off, greedy, {meta['n_gen']} tokens; target "
             f"Qwen2.5-Coder-1.5B-Instruct Q4_K_M, draft Qwen2.5-Coder-0.5B-Instruct Q4_K_M.", "",
             "'vs plain': against llamabind plain on the same task; 'vs llama.cpp': against "
             "llama-speculative-simple with the same draft settings (for prompt lookup: its best n-gram type).", ""]
    for model, runs in raw.items():
        med = harness.medians(runs)
        best_ngram = max((t for t in NGRAM_TYPES if f"edit | llama.cpp {t}" in runs),
                         key=lambda t: med[f"edit | llama.cpp {t}"].get("tps") or 0.0, default=None)
        lines += ["| task | path | tok/s | accepted | vs plain | vs llama.cpp |", "|---|---|---|---|---|---|"]
        for name in runs:
            task, path = name.split(" | ", 1)
            plain = runs[f"{task} | llamabind plain"]
            native = None
            found = re.match(r"llamabind draft n=(\d+)", path)
            if found:
                native = runs.get(f"{task} | llama.cpp draft n={found.group(1)}")
            elif path.startswith("llamabind lookup") and best_ngram:
                native = runs[f"edit | llama.cpp {best_ngram}"]
            acc = med[name].get("acceptance")
            lines.append(f"| {task} | {path} | {fmt(med[name].get('tps'))} | "
                         f"{'–' if acc is None else f'{acc:.0%}'} | {fmt(harness.paired(runs[name], plain, 'tps'), 2)} | "
                         f"{fmt(harness.paired(runs[name], native, 'tps'), 2) if native else '–'} |")
        lines.append("")
        if best_ngram:
            lines.append(f"llama.cpp's best n-gram type on the edit task: {best_ngram}.")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-gen", type=int, default=160)
    parser.add_argument("--n-draft", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--n-lookup", type=int, nargs="+", default=[8, 16],
                        help="prompt lookup's most drafted tokens (default 8 16)")
    parser.add_argument("--skip-native-build", action="store_true")
    parser.add_argument("--write-results", action="store_true", help="also rewrite bench/SPECULATIVE.md")
    parser.add_argument("--draft", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=3, metavar=("TASK", "HOW", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_here(args)
        return 0
    from llamabind import models

    if not args.skip_native_build or not SPEC_SIMPLE.exists():
        harness.build_native(("llama-speculative-simple",))
    args.draft_path = str(models.model_path("qwen05"))
    raw = harness.interleave(["qwen15"], paths(args), args.rounds)
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": harness.machine(),
            "rounds": args.rounds, "threads": args.threads, "n_gen": args.n_gen, "n_draft": args.n_draft,
            "n_lookup": args.n_lookup}
    heading = ("# Speculative decoding\n\nWritten by `python bench/speculative.py --write-results`: llamabind "
               "against llama.cpp's llama-speculative-simple, built from the same pinned source and flags.")
    markdown = ROOT / "bench" / "SPECULATIVE.md" if args.write_results else None
    harness.save(report(raw, meta), {"meta": meta, "raw": raw}, "speculative-", markdown, heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
