"""The constructor sweep: context settings tried one case at a time, in child processes that an
abort or a hang cannot take the test run down with.

Each case builds a context (the C++ layer's `Context`, or `Llama`) from a dict of settings and,
if that works, uses it for what the settings are for: a short decode and two sampled tokens,
or embeddings. The outcome is "ok", "invalid:<message>" (InvalidArgumentError, the accepted
way to refuse), "error:<type>:<message>" (anything else raised), "garbage:<what>" (non-finite
logits or embeddings), "abort" (the child died) or "hang" (no answer within the time limit).

    python tests/constructor_sweep.py MODEL CASES.json START   # the child: runs cases from START

The parent side is `run_cases`, which restarts the child after the case that killed it.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CASE_TIMEOUT_S = 60.0

# Enum-valued settings travel as names.
ENUMS = {"rope_scaling_type": "RopeScalingType", "pooling_type": "PoolingType", "attention_type": "AttentionType",
         "flash_attn_type": "FlashAttnType", "type_k": "GGMLType", "type_v": "GGMLType"}


def _prompt(vocab: Any, n: int) -> list[int]:
    ids = vocab.tokenize("The quick brown fox jumps over the lazy dog and runs far away", add_special=True)
    while len(ids) < n:
        ids = ids + ids
    return ids[:max(1, n)]


def _use_context(lb: Any, model: Any, settings: dict[str, Any]) -> str:
    kwargs = {k: getattr(lb, ENUMS[k])[v] if k in ENUMS else v for k, v in settings.items() if k != "layer"}
    with lb.Context(model, n_threads=1, n_threads_batch=1, **kwargs) as ctx:
        # Prompt: a few tokens that fit the context and (for non-causal models) one ubatch.
        n = min(6, ctx.n_ctx, ctx.n_ubatch if not ctx.causal_attn else ctx.n_batch)
        tokens = _prompt(model.vocab, n)
        embeddings = bool(settings.get("embeddings"))
        if embeddings:
            ctx.decode_tokens(tokens, pos0=0, all_logits=True)
            rows = (ctx.embeddings_seq(0)[None, :] if ctx.pooling_type != lb.PoolingType.NONE
                    else ctx.embeddings(copy=True))
            if rows.size == 0 or not np.all(np.isfinite(rows)):
                return "garbage:embeddings"
            return "ok"
        ctx.decode_tokens(tokens, pos0=0)
        chain = lb.SamplerChain().add_top_k(40).add_temp(0.8).add_dist(7)
        pos = len(tokens)
        for _ in range(2):
            logits = ctx.logits_ith(-1)
            if not np.all(np.isfinite(logits)):
                return "garbage:logits"
            if pos >= ctx.n_ctx:
                break
            token = chain.sample(ctx, -1)
            ctx.decode_tokens([token], pos0=pos)
            pos += 1
    return "ok"


def _use_llama(lb: Any, path: str, settings: dict[str, Any]) -> str:
    with lb.Llama(path, n_threads=1, n_threads_batch=1, verbose=False, **settings) as llm:
        if settings.get("embedding"):
            out = np.asarray(llm.embed(["Hello world", "A second text"]), dtype=object)
            flat = np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in out])
            return "ok" if flat.size and np.all(np.isfinite(flat)) else "garbage:embeddings"
        text = llm.create_completion("The capital of France is", max_tokens=3, temperature=0.7, seed=3)
        return "ok" if isinstance(text["choices"][0]["text"], str) else "garbage:completion"


def child(model_path: str, cases_file: str, start: int) -> None:
    import llamabind as lb

    cases = json.loads(Path(cases_file).read_text())
    model = None
    for i in range(start, len(cases)):
        case = cases[i]
        print(f"START {i}", flush=True)
        try:
            if case["layer"] == "llama":
                outcome = _use_llama(lb, model_path, case["settings"])
            else:
                if model is None:
                    model = lb.Model(model_path, n_gpu_layers=0)
                outcome = _use_context(lb, model, case["settings"])
        except lb.InvalidArgumentError as exc:
            outcome = f"invalid:{exc}"
        except Exception as exc:  # reported to the parent
            outcome = f"error:{type(exc).__name__}:{exc}"
        print(f"DONE {i} {json.dumps(outcome)}", flush=True)


def run_cases(model_path: Path, cases: list[dict[str, Any]], work: Path) -> list[str]:
    """Every case's outcome, in order. A child that dies marks its current case "abort"; one
    that says nothing for CASE_TIMEOUT_S marks it "hang"; either way the next child goes on
    from the following case."""
    cases_file = work / "cases.json"
    cases_file.write_text(json.dumps(cases))
    outcomes: list[str | None] = [None] * len(cases)
    start = 0
    while start < len(cases):
        proc = subprocess.Popen([sys.executable, str(Path(__file__)), str(model_path), str(cases_file), str(start)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=dict(os.environ, PYTHONFAULTHANDLER="0"))
        assert proc.stdout is not None
        current = start
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + CASE_TIMEOUT_S
        while True:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                proc.kill()
                proc.wait()
                outcomes[current] = "hang"
                break
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                if current < len(cases) and outcomes[current] is None:
                    outcomes[current] = "abort"
                break
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "START":
                current = int(rest)
                deadline = time.monotonic() + CASE_TIMEOUT_S
            elif kind == "DONE":
                index, _, outcome = rest.partition(" ")
                outcomes[int(index)] = json.loads(outcome)
        selector.close()
        proc.stdout.close()
        start = next((i for i in range(len(cases)) if outcomes[i] is None), len(cases))
    return [o or "abort" for o in outcomes]


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
