#!/usr/bin/env python3
"""Flash attention through `Llama`: off (llama-cpp-python's default) against auto (llama.cpp's).

    python bench/flash_attn.py                      # both models, 3 interleaved rounds
    python bench/flash_attn.py --rounds 5 --write-results

Speed: bench/worker.py's greedy `Llama.create_completion` path (pp, tg, time to first token),
each setting in a fresh process, the two settings alternating within every round (bench/run.py's
interleave); ratios are paired per round, then the median. Quality: the mean negative
log-likelihood per token of a fixed English text under each setting (one evaluation with
logits for every position), and the largest difference between the two settings' logits.
Results: bench/results/flash-attn-<time>.json; with --write-results also bench/FLASH_ATTN.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import run as harness  # noqa: E402  (bench/run.py: interleave, paired ratios, medians, save, machine)

SETTINGS = {"off": 0, "auto": -1}  # worker.py's --flash-attn: 0 off, 1 on, -1 auto
TEXT = (
    "The lighthouse stood at the end of a narrow spit of rock, and for forty years the same family had "
    "kept its lamp burning. Every evening the keeper climbed the spiral stairs, trimmed the wick, wound "
    "the clockwork that turned the lens, and wrote the weather in a leather book: wind from the west, "
    "light rain, three ships passing before midnight. In winter the storms came in from the open sea "
    "and threw spray against the lantern glass, and the whole tower hummed like a struck bell. The "
    "keeper's daughter learned to read from the logbooks, and later she kept them herself, adding notes "
    "about the birds that rested on the gallery rail and the seals that hauled out on the rocks below. "
    "When the light was finally automated, she carried the books down the stairs one armful at a time "
    "and gave them to the harbour museum, where they still sit in a glass case beside the old lens."
)


def worker(model: str, setting: str, args: argparse.Namespace) -> dict[str, float]:
    """bench/run.py's fresh-process measurement of the `llama` path with this setting."""
    settings = argparse.Namespace(**vars(args), n_sentences=0)
    settings.flash_attn = SETTINGS[setting]
    return harness.worker(sys.executable, "llama", model, settings)


def nll_here(model: str, setting: str, threads: int) -> None:
    """--nll MODEL SETTING: prints the text's mean NLL and the logits (as a .npy path) as JSON."""
    import llamabind as lb

    flash = None if setting == "auto" else bool(SETTINGS[setting])
    with lb.Llama(model, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                  logits_all=True, flash_attn=flash, verbose=False) as llm:
        tokens = llm.tokenize(TEXT.encode(), add_bos=True)
        llm.eval(tokens)
        logits = np.asarray(llm.scores[: len(tokens) - 1], dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        nll = -log_probs[np.arange(len(tokens) - 1), tokens[1:]]
        path = Path(tempfile.gettempdir()) / f"llamabind-flash-attn-{Path(model).stem}-{setting}.npy"
        np.save(path, logits.astype(np.float32))
        print(json.dumps({"nll": float(nll.mean()), "nll_sem": float(nll.std(ddof=1) / np.sqrt(len(nll))),
                          "n_tokens": len(tokens) - 1, "logits": str(path)}))


def quality(model: str, threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting in SETTINGS:
        proc = subprocess.run([sys.executable, __file__, "--nll", model, setting, "--threads", str(threads)],
                              capture_output=True, text=True, check=True)
        out[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = (np.load(out[s]["logits"]) for s in SETTINGS)
    out["max_abs_logit_diff"] = float(np.abs(a - b).max())
    out["same_argmax"] = float((a.argmax(axis=1) == b.argmax(axis=1)).mean())
    return out


def report(raw: dict[str, harness.Runs], qual: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    fmt = harness.fmt
    lines = [f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, Python "
             f"{meta['machine']['python']}; {meta['date']}; {meta['rounds']} interleaved rounds, medians; "
             f"{meta['threads']} threads; pp{meta['n_prompt']}/tg{meta['n_gen']}, greedy "
             "`Llama.create_completion` (bench/worker.py's `llama` path).", "",
             "'auto/off' is paired per round (auto's run against the same round's off run), then the median. "
             "NLL: mean negative log-likelihood per token of a fixed English text (± its standard error); "
             "'same argmax' is the share of positions whose most likely next token is the same under both "
             "settings.", ""]
    for model, runs in raw.items():
        med = harness.medians(runs)
        lines += [f"### {model}", "", "| flash attention | pp tok/s | tg tok/s | TTFT ms | tg auto/off | pp auto/off |",
                  "|---|---|---|---|---|---|"]
        for setting in SETTINGS:
            m = med[setting]
            tg_r = harness.paired(runs[setting], runs["off"], "tg_tps")
            pp_r = harness.paired(runs[setting], runs["off"], "pp_tps")
            lines.append(f"| {setting} | {fmt(m.get('pp_tps'))} | {fmt(m.get('tg_tps'))} | {fmt(m.get('ttft_ms'), 0)} "
                         f"| {fmt(tg_r, 3)} | {fmt(pp_r, 3)} |")
        q = qual[model]
        lines += ["", "| flash attention | NLL per token | tokens |", "|---|---|---|"]
        for setting in SETTINGS:
            lines.append(f"| {setting} | {q[setting]['nll']:.4f} ± {q[setting]['nll_sem']:.4f} | {q[setting]['n_tokens']} |")
        lines += ["", f"Largest logit difference between the settings: {q['max_abs_logit_diff']:.4f}; same argmax at "
                      f"{q['same_argmax']:.1%} of positions.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_common_arguments(parser, n_prompt=256, n_gen=128)
    parser.add_argument("--write-results", action="store_true", help="also rewrite bench/FLASH_ATTN.md")
    parser.add_argument("--nll", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nll:
        nll_here(args.nll[0], args.nll[1], args.threads)
        return 0
    table = {setting: (lambda m, s=setting: worker(m, s, args)) for setting in SETTINGS}
    raw = harness.interleave(args.models, table, args.rounds)
    from llamabind import models

    qual = {name: quality(str(models.model_path(name)), args.threads) for name in args.models}
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": harness.machine(),
            "rounds": args.rounds, "threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen}
    heading = ("# Flash attention: off against auto\n\nWritten by `python bench/flash_attn.py --write-results`: "
               "llamabind's `Llama` with `flash_attn=False` (llama-cpp-python's default) and `flash_attn=None` "
               "(llama.cpp's `auto`: on where the backend supports it).")
    markdown = ROOT / "bench" / "FLASH_ATTN.md" if args.write_results else None
    harness.save(report(raw, qual, meta), {"meta": meta, "raw": raw, "quality": qual}, "flash-attn-", markdown,
                 heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
