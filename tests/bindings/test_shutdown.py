"""Interpreter shutdown, reference cycles and drop order never crash or print anything.

Each scenario runs in a fresh interpreter that exits on its own with llamabind objects
still alive; the test wants exit status 0, the expected last line on stdout, and an empty
stderr (no "Exception ignored in", no llama.cpp message, no sanitizer or abort output).
Also here: one model shared by four threads, each with its own context, repeated, against
the single-threaded greedy outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from testutil import N_THREADS, greedy_by_sampler, run_in_threads

PRELUDE = """
import gc, sys, threading
import numpy as np
import llamabind as lb
path = sys.argv[1]
T = int(sys.argv[2])
"""

SCENARIOS = {
    "everything_alive_at_exit": """
        model = lb.Model(path)
        ctx = lb.Context(model, n_ctx=64, n_threads=T, n_threads_batch=T)
        ctx.decode_tokens(model.vocab.tokenize("Hello world"), pos0=0)
        logits = ctx.logits_ith(-1)          # a view owned by the context
        chain = lb.SamplerChain().add_top_k(5).add_dist(1)
        chain.sample(ctx)
        batch = lb.Batch.from_tokens([1, 2, 3])
        tokens_view = batch.token
        vocab = model.vocab
        llm = lb.Llama(path, n_ctx=64, n_threads=T, n_threads_batch=T, verbose=False)
        stream = llm.create_completion("Hello", max_tokens=8, stream=True)
        next(stream)                          # a generation left half-way
        print("done")
    """,
    "model_dropped_before_its_contexts": """
        model = lb.Model(path)
        contexts = [lb.Context(model, n_ctx=64, n_threads=T, n_threads_batch=T) for _ in range(3)]
        vocab = model.vocab
        model.close()
        del model
        gc.collect()
        for c in contexts:
            c.decode_tokens(vocab.tokenize("Hello"), pos0=0)
        del vocab
        print("done")
    """,
    "reference_cycles": """
        class Holder:
            pass
        for i in range(5):
            h = Holder()
            h.self = h
            h.model = lb.Model(path)
            h.ctx = lb.Context(h.model, n_ctx=64, n_threads=T, n_threads_batch=T)
            h.ctx.decode_tokens(h.model.vocab.tokenize("Hello"), pos0=0)
            h.view = h.ctx.logits_ith(-1)
            # A Python sampler owned by the chain that refers back to the chain and the holder.
            class Back:
                name = "back"
                def __init__(self, holder):
                    self.holder = holder
                def apply(self, cands):
                    return None
                def accept(self, token):
                    pass
                def reset(self):
                    pass
            h.chain = lb.SamplerChain().add_custom(Back(h)).add_greedy()
            h.chain.sample(h.ctx)
            del h
        gc.collect()
        h = Holder()
        h.self = h
        h.llm = lb.Llama(path, n_ctx=64, n_threads=T, n_threads_batch=T, verbose=False)
        h.llm.create_completion("Hi", max_tokens=2, temperature=0.0)
        print("done")
    """,
    "decode_running_in_a_daemon_thread_at_exit": """
        model = lb.Model(path)
        ctx = lb.Context(model, n_ctx=512, n_batch=512, n_threads=T, n_threads_batch=T)
        toks = (model.vocab.tokenize("The quick brown fox jumps over the lazy dog. ") * 40)[:500]
        started = threading.Event()
        def work():
            started.set()
            while True:
                ctx.memory_clear()
                ctx.decode_tokens(toks, pos0=0)
        threading.Thread(target=work, daemon=True).start()
        started.wait()
        print("done")
    """,
    "objects_in_module_globals_and_closed_twice": """
        model = lb.Model(path)
        ctx = lb.Context(model, n_ctx=64, n_threads=T, n_threads_batch=T)
        ctx.close(); ctx.close()
        model.close(); model.close()
        llm = lb.Llama(path, n_ctx=64, n_threads=T, n_threads_batch=T, verbose=False)
        llm.close(); llm.close()
        import atexit
        survivor = lb.Model(path)
        atexit.register(lambda: survivor.vocab.tokenize("at exit"))
        print("done")
    """,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_shutdown_is_silent_and_clean(name: str, tiny_path: Path) -> None:
    code = PRELUDE + textwrap.dedent(SCENARIOS[name])
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_path), str(N_THREADS)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{name}: exit status {proc.returncode}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().splitlines()[-1:] == ["done"], proc.stdout[-2000:]
    assert proc.stderr == "", f"{name} printed to stderr:\n{proc.stderr[-3000:]}"


DAEMON_STOPPED_AT_EXIT = """
import sys, threading, time
import llamabind as lb
model = lb.Model(sys.argv[1])
ctx = lb.Context(model, n_ctx=4096, n_batch=4096, n_ubatch=512, n_threads=1, n_threads_batch=1)
toks = (model.vocab.tokenize("The quick brown fox jumps over the lazy dog. ") * 400)[:4000]
t = time.perf_counter()
ctx.decode_tokens(toks[:256], pos0=0)
projected = (time.perf_counter() - t) * len(toks) / 256
ctx.memory_clear()
started = threading.Event()
def work():
    started.set()
    ctx.decode_tokens(toks, pos0=0)
    print("the decode finished", flush=True)  # must not happen: stopped at exit
threading.Thread(target=work, daemon=True).start()
started.wait()
time.sleep(0.2)
print(f"projected {projected:.3f}", flush=True)
print("done", flush=True)
"""


@pytest.mark.slow
def test_daemon_thread_inside_a_long_decode_is_stopped_at_exit(smollm2_path: Path) -> None:
    # A daemon thread still decoding when the interpreter exits is stopped at llama.cpp's next
    # abort check, before the C runtime's exit handlers unload llama.cpp (in the portable
    # wheel, its CPU backend module: running code there during exit crashed the process).
    # The process exits cleanly and long before the decode would have finished.
    proc = subprocess.Popen([sys.executable, "-c", DAEMON_STOPPED_AT_EXIT, str(smollm2_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "done":
                break
        done_at = time.perf_counter()  # the main thread is about to exit
        rest, err = proc.communicate(timeout=300)
        exit_s = time.perf_counter() - done_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert err == "", err[-3000:]
    assert lines[-1] == "done" and "the decode finished" not in rest, rest
    projected = float(lines[-2].split()[1])
    assert projected > 8.0, f"the decode ({projected:.1f} s) is too short to tell a stop from its end"
    # Exit waits for the thread to leave llama.cpp: one graph node, not the rest of the decode
    # (nor the 10 s safety limit of that wait).
    assert exit_s < 4.0, f"exit took {exit_s:.1f} s; the decode alone needs {projected:.1f} s"


# ---------------------------------------------------------------------------------------
# One model, four threads, own contexts, repeated


@pytest.mark.slow
def test_four_threads_share_one_model_repeatedly(smollm2: lb.Model) -> None:
    vocab = smollm2.vocab
    prompts = [vocab.tokenize(t) for t in ("The capital of France is", "def add(a, b):",
                                            "Roses are red,", "1, 1, 2, 3, 5,")]
    expected = [greedy_by_sampler(smollm2, p, 8, n_ctx=128, n_batch=64) for p in prompts]
    assert len({tuple(e) for e in expected}) == 4
    for round_ in range(3):
        got: list[list[int] | None] = [None] * 4
        barrier = threading.Barrier(4)

        def run(i: int) -> None:
            barrier.wait()
            got[i] = greedy_by_sampler(smollm2, prompts[i], 8, n_ctx=128, n_batch=64)

        errors = run_in_threads(run, 4, timeout=300)
        assert not errors, errors
        assert got == expected, f"round {round_}"
    assert np.isfinite(np.array(expected)).all()
