"""Cancellation: Ctrl-C during a long decode surfaces promptly as KeyboardInterrupt, and
Context.cancel() from another thread stops a running decode; either way the context is left
exactly as before the call."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import llamabind
from testutil import N_THREADS

N_PROMPT = 2000

CTRL_C_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    import numpy as np
    import llamabind as lb

    # A test runner started in the background (bash `cmd &`) hands its children SIGINT
    # ignored, and Python then leaves it ignored; a user at a terminal has it delivered.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    model = lb.Model(sys.argv[1])
    n_prompt = int(sys.argv[2])
    toks = model.vocab.tokenize("The quick brown fox jumps over the lazy dog. " * 250)[:n_prompt]
    assert len(toks) == n_prompt
    ctx = lb.Context(model, n_ctx=2048, n_batch=2048, n_ubatch=512, n_threads=2, n_threads_batch=2)
    out = {}

    # How long would the whole decode take? Time a 128-token prefix and scale it: attention
    # makes longer prompts cost more per token, so this is a lower bound.
    t = time.perf_counter()
    ctx.decode_tokens(toks[:128], pos0=0)
    out["projected_s"] = (time.perf_counter() - t) * n_prompt / 128
    ctx.memory_clear()

    sent = []
    def ctrl_c():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.3, ctrl_c)
    start = time.perf_counter()
    timer.start()
    try:
        ctx.decode_tokens(toks, pos0=0)
        out["outcome"] = "finished"
    except KeyboardInterrupt:
        out["outcome"] = "KeyboardInterrupt"
    except lb.LlamaError as e:
        out["outcome"] = type(e).__name__
    end = time.perf_counter()
    timer.join()
    out["ran_s"] = end - start
    out["latency_s"] = end - sent[0] if sent else None

    # A Ctrl-C must not be lost: if the decode did not raise it, it is not raised later either.
    try:
        time.sleep(0.3)
        out["late_interrupt"] = False
    except KeyboardInterrupt:
        out["late_interrupt"] = True

    out["pos_max_after"] = ctx.seq_pos_max(0)
    ctx.decode_tokens(toks[:8], pos0=0)
    out["pos_max_after_decode"] = ctx.seq_pos_max(0)
    out["finite"] = bool(np.isfinite(ctx.logits_ith(-1)).all())
    print(json.dumps(out), flush=True)
    """
)


@pytest.fixture(scope="module")
def ctrl_c_result(smollm2_path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CTRL_C_CHILD, str(smollm2_path), str(N_PROMPT)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"child failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The test is only meaningful if the decode really is long.
    assert result["projected_s"] > 1.0, result
    return result


def test_ctrl_c_during_decode_raises_keyboard_interrupt(ctrl_c_result: dict) -> None:
    r = ctrl_c_result
    assert r["outcome"] == "KeyboardInterrupt", (
        f"Ctrl-C during decode gave {r['outcome']!r} (late KeyboardInterrupt: {r['late_interrupt']}): {r}"
    )
    assert not r["late_interrupt"]


def test_ctrl_c_stops_the_decode_promptly_and_leaves_the_context_usable(ctrl_c_result: dict) -> None:
    r = ctrl_c_result
    assert r["outcome"] != "finished", f"the decode ran to the end despite Ctrl-C: {r}"
    assert r["latency_s"] is not None and r["latency_s"] < 0.5, f"took {r['latency_s']} s to stop: {r}"
    assert r["ran_s"] >= 0.3  # it was interrupted mid-decode, not before it started
    assert r["pos_max_after"] == -1, "the interrupted decode left tokens in the KV cache"
    assert r["pos_max_after_decode"] == 7
    assert r["finite"]


def test_cancel_from_another_thread_stops_a_running_decode(smollm2: llamabind.Model) -> None:
    toks = smollm2.vocab.tokenize("The quick brown fox jumps over the lazy dog. " * 250)[:N_PROMPT]
    with llamabind.Context(
        smollm2, n_ctx=2048, n_batch=2048, n_ubatch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS
    ) as ctx:
        ctx.decode_tokens(toks[:4], pos0=0)
        fired: list[float] = []

        def cancel() -> None:
            fired.append(time.perf_counter())
            ctx.cancel()

        timer = threading.Timer(0.2, cancel)
        start = time.perf_counter()
        timer.start()
        with pytest.raises(llamabind.AbortedError) as info:
            ctx.decode_tokens(toks[4:], pos0=4)
        end = time.perf_counter()
        timer.join()
        assert info.value.code == 2
        assert fired, "the decode ended before cancel() was called"
        assert end - start >= 0.2
        assert end - fired[0] < 0.5, f"cancel took {end - fired[0]:.3f} s to stop the decode"
        assert not ctx.cancel_requested
        assert ctx.seq_pos_max(0) == 3, "the cancelled decode left tokens in the KV cache"
        ctx.decode_tokens(toks[4:8], pos0=4)
        assert ctx.seq_pos_max(0) == 7
