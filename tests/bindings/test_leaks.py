"""Native memory is given back: creating and closing a model, a context and a sampler chain
200 times leaves the resident set size (RSS) where it was after the first few rounds.

Each measurement runs in a fresh interpreter so that the test suite's own allocations do
not blur it. The first rounds (warm-up) grow RSS once: glibc's arenas, ggml's thread pool,
llama.cpp's one-time tables. After that a leak of even one context per round would add
its KV cache and output buffers (~hundreds of KiB on the tiny model, MiBs on SmolLM2) each
time, i.e. hundreds of MiB over 200 rounds; the bound allows a few MiB of allocator noise.
``pytest -s`` prints the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testutil import N_THREADS

ROUNDS = 200
WARMUP = 20

CHILD = textwrap.dedent(
    """
    import gc, json, sys
    import llamabind as lb

    path, rounds, warmup, n_threads, variant = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

    def rss_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def one_round(i):
        if variant == "llama":
            llm = lb.Llama(path, n_ctx=128, n_batch=64, n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
            llm.create_completion("Hello", max_tokens=2, temperature=0.0)
            llm.close()
            return
        model = lb.Model(path)
        ctx = lb.Context(model, n_ctx=128, n_batch=64, n_threads=n_threads, n_threads_batch=n_threads)
        chain = lb.SamplerChain().add_top_k(40).add_temp(0.8).add_dist(i)
        toks = model.vocab.tokenize("Hello world")
        ctx.decode_tokens(toks, pos0=0)
        chain.accept(chain.sample(ctx))
        state = ctx.state_get()
        ctx.state_set(state)
        chain.close()
        ctx.close()
        model.close()

    samples = []
    for i in range(rounds):
        one_round(i)
        if i + 1 == warmup or (i + 1) % 20 == 0:
            gc.collect()
            samples.append((i + 1, rss_kib()))
    print(json.dumps({"samples": samples}), flush=True)
    """
)


def _measure(path: Path, variant: str, rounds: int = ROUNDS) -> list[tuple[int, int]]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(rounds), str(WARMUP), str(N_THREADS), variant],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"child failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return [tuple(s) for s in json.loads(proc.stdout.strip().splitlines()[-1])["samples"]]  # type: ignore[misc]


def _report(name: str, samples: list[tuple[int, int]]) -> tuple[int, int]:
    base = next(kib for n, kib in samples if n == WARMUP)
    last = samples[-1][1]
    peak = max(kib for n, kib in samples if n >= WARMUP)
    print(f"\n{name}: RSS after {WARMUP} rounds {base / 1024:.1f} MiB, after {samples[-1][0]} rounds "
          f"{last / 1024:.1f} MiB (growth {(last - base) / 1024:+.1f} MiB, peak {peak / 1024:.1f} MiB); "
          f"samples {[(n, round(k / 1024, 1)) for n, k in samples]}")
    return base, peak


@pytest.mark.slow
def test_model_context_sampler_200_times_keeps_rss_flat(tiny_path: Path) -> None:
    samples = _measure(tiny_path, "core")
    base, peak = _report("Model+Context+SamplerChain (tiny model)", samples)
    # A leaked context keeps its KV cache, output and compute buffers (MiBs on this model), a
    # leaked model its weights (16 MiB, read by each decode): 180 rounds of either are
    # hundreds of MiB. 8 MiB covers allocator noise with a margin.
    assert peak - base < 8 * 1024, samples


@pytest.mark.slow
def test_llama_200_times_keeps_rss_flat(tiny_path: Path) -> None:
    """The high-level object: model, context, sampler chain and generation state together."""
    samples = _measure(tiny_path, "llama")
    base, peak = _report("Llama (tiny model)", samples)
    # Leaking one round's model or context is MiBs per round, hundreds over 180 rounds. Since the
    # RPC/speculation/server changes the Python objects' allocations add a one-time step of ~7 MiB
    # between rounds 20 and 40 (then ~15 KiB per round at most); 16 MiB still catches any leak of
    # 90 KiB or more per round.
    assert peak - base < 16 * 1024, samples
