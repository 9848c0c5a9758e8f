"""Helpers shared by test modules (importable; conftest.py files are not meant for imports)."""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llamabind as lb

# Threads for every context in the tests: the CI machine has 2 cores. LLAMABIND_TEST_THREADS=1
# keeps a test run usable while other work shares the machine (llama.cpp's worker threads spin
# while they wait, so two busy processes with two threads each slow each other down badly).
N_THREADS = int(os.environ.get("LLAMABIND_TEST_THREADS", "0")) or min(2, os.cpu_count() or 1)


def make_llama(path: Path, **kw: Any) -> lb.Llama:
    """A Llama on the test thread count, quiet unless verbose is given; n_ctx 512 unless given."""
    kw.setdefault("n_ctx", 512)
    kw.setdefault("verbose", False)
    return lb.Llama(str(path), n_threads=N_THREADS, n_threads_batch=N_THREADS, **kw)


def llama_fixture(path_fixture: str, **kw: Any) -> Any:
    """A module-scoped fixture: make_llama(<the value of fixture `path_fixture`>, **kw), closed
    after the module's last test. In a test module: ``smol = llama_fixture("smollm2_path")``."""

    @pytest.fixture(scope="module")
    def llama(request: pytest.FixtureRequest) -> Iterator[lb.Llama]:
        with make_llama(request.getfixturevalue(path_fixture), **kw) as llm:
            yield llm

    return llama


def greedy_reference_rows(model: lb.Model, tokens: list[int], n: int, *,
                          stop_at_eog: bool = True) -> tuple[list[int], list[np.ndarray]]:
    """Greedy tokens by the low-level API (argmax of the raw logits, one decode per token, as
    llama-simple does), with the logits row each was chosen from (float64 copies). Stops before
    an end-of-generation token unless stop_at_eog is False."""
    out: list[int] = []
    rows: list[np.ndarray] = []
    with lb.Context(model, n_ctx=512, n_batch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                    flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
        ctx.decode_tokens(tokens, pos0=0)
        for i in range(n):
            row = ctx.logits_ith(-1, copy=True).astype(np.float64)
            token = int(np.argmax(row))
            if stop_at_eog and model.vocab.is_eog(token):
                break
            out.append(token)
            rows.append(row)
            ctx.decode_tokens([token], pos0=len(tokens) + i)
    return out, rows


def greedy_reference(model: lb.Model, tokens: list[int], n: int, *, stop_at_eog: bool = True) -> list[int]:
    """The tokens of greedy_reference_rows."""
    return greedy_reference_rows(model, tokens, n, stop_at_eog=stop_at_eog)[0]


def greedy_by_sampler(model: lb.Model, prompt: list[int], n: int, *, n_ctx: int = 256,
                      n_batch: int = 256) -> list[int]:
    """n tokens after `prompt` chosen by a greedy SamplerChain in a fresh one-thread context,
    end-of-generation tokens included."""
    out: list[int] = []
    with lb.Context(model, n_ctx=n_ctx, n_batch=n_batch, n_threads=1, n_threads_batch=1) as ctx, (
        lb.SamplerChain().add_greedy()
    ) as sampler:
        ctx.decode_tokens(prompt, pos0=0)
        pos = len(prompt)
        for _ in range(n):
            tok = sampler.sample(ctx)
            out.append(tok)
            ctx.decode_tokens([tok], pos0=pos)
            pos += 1
    return out


def run_in_threads(work: Callable[[int], object], n: int, timeout: float | None = None) -> list[BaseException]:
    """Runs work(0) ... work(n - 1), each in a thread of its own, waits for them (`timeout`
    seconds for each join) and returns what they raised, for the test to report."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return errors


def hub_cache(root: Path, model: Path) -> Path:
    """A Hugging Face cache in `root` holding `model` as someone/smollm2 (as huggingface_hub
    lays it out); returns the model's path in it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "models--someone--smollm2"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / model.name).symlink_to(model)
    return snapshot / model.name


# The start of a child script, run as `python -c SCRIPT MODEL_PATH`, that makes llama.cpp fail
# to allocate its output buffer: the model, 300 tokens of text, a 512-token context, and
# cap_address_space(), which leaves the process 16 MiB more address space than it uses now
# (250 rows of logits, ~47 MiB, no longer fit), undone by uncap_address_space().
OOM_CHILD_PRELUDE = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import llamabind as lb

    model = lb.Model(sys.argv[1])
    toks = model.vocab.tokenize("The quick brown fox jumps over the lazy dog. " * 40)[:300]
    ctx = lb.Context(model, n_ctx=512, n_batch=512, n_threads=2, n_threads_batch=2)

    def vm_bytes():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    def cap_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + 16 * 2**20, resource.RLIM_INFINITY))

    def uncap_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    """
)
