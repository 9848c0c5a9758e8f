"""Hostile and broken model files: every malformed GGUF of ``tests/hostile_gguf.py`` fails to
load with a ``LlamaError`` that names the file, through ``Model``, ``Llama`` and a vocab-only
``Model``, and never crashes, aborts or hangs the process.

The files are loaded in child processes (a batch of cases per child), so an abort inside
llama.cpp fails its case instead of the test run; a child that dies is restarted after the
case it was loading, which is then re-run alone to confirm. ``pytest -s`` prints the tally.
Real models (SmolLM2, Gemma 3, the tiny model, every ``ggml-vocab-*.gguf``) must still load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import llamabind
from hostile_gguf import CASES, CASES_BY_ID, MODES, check_base, iter_results, parse

HOSTILE = Path(__file__).resolve().parent.parent / "hostile_gguf.py"
BATCH = 40
WORKERS = 2
CASE_TIMEOUT_S = 60  # one case alone
BATCH_TIMEOUT_S = 240


def _run_batch(ids: list[str], bases: dict[str, Path], workdir: Path, tag: str,
               timeout: float) -> tuple[dict[str, dict[str, Any]], str | None, str]:
    """Runs ``ids`` in one child. Returns the finished cases, the case the child died in
    (or None) and what killed it."""
    results = workdir / f"results-{tag}.jsonl"
    cmd = [sys.executable, str(HOSTILE), "--results", str(results), "--workdir", str(workdir)]
    for name, p in bases.items():
        cmd += ["--base", f"{name}={p}"]
    cmd += ids
    # No gdb backtrace from ggml's abort handler: the assertion line stays in the tail.
    env = dict(os.environ, PYTHONFAULTHANDLER="1", GGML_NO_BACKTRACE="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        died = proc.returncode != 0
        why = f"exit status {proc.returncode}; stderr tail: {proc.stderr[-1500:]}"
    except subprocess.TimeoutExpired as e:
        died = True
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        why = f"timed out after {timeout:.0f} s; stderr tail: {err[-1500:]}"
    done: dict[str, dict[str, Any]] = {}
    last_start: str | None = None
    last_mode = ""
    for rec in iter_results(results):
        if rec["stage"] == "start":
            last_start = str(rec["id"])
            last_mode = ""
        elif rec["stage"] == "mode":
            last_mode = str(rec["mode"])
        elif rec["stage"] == "done":
            done[str(rec["id"])] = rec  # type: ignore[assignment]
            last_start = None
    if not died:
        return done, None, ""
    culprit = last_start if last_start is not None else next((i for i in ids if i not in done), None)
    return done, culprit, f"while loading through {last_mode or '?'}: {why}"


def _run_all(ids: list[str], bases: dict[str, Path], workdir: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    counter = iter(range(1_000_000))

    def worker(chunk: list[str]) -> None:
        pending = list(chunk)
        while pending:
            done, culprit, why = _run_batch(pending, bases, workdir, f"{next(counter)}", BATCH_TIMEOUT_S)
            results.update(done)
            if culprit is None:
                pending = [i for i in pending if i not in done]
                if pending:  # a clean exit that skipped cases: should not happen
                    for i in pending:
                        results[i] = {"id": i, "crash": "the child exited without running it"}
                    pending = []
                continue
            # Confirm alone, so that one crash is attributed to exactly one case.
            alone, culprit2, why2 = _run_batch([culprit], bases, workdir, f"{next(counter)}-alone", CASE_TIMEOUT_S)
            if culprit in alone:
                results[culprit] = dict(alone[culprit], flaky_crash=why)
            else:
                results[culprit] = {"id": culprit, "crash": why2 or why}
            pending = [i for i in pending if i not in done and i != culprit]

    chunks = [ids[k : k + BATCH] for k in range(0, len(ids), BATCH)]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(worker, chunks))
    return results


@pytest.fixture(scope="module")
def hostile_results(tiny_path: Path, smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> dict[str, dict[str, Any]]:
    bases = {"tiny": tiny_path, "smollm2": smollm2_path}
    for name, p in bases.items():
        check_base(parse(p), name)
    workdir = tmp_path_factory.mktemp("hostile")
    t0 = time.perf_counter()
    results = _run_all([c.id for c in CASES], bases, workdir)
    results["__elapsed__"] = {"seconds": time.perf_counter() - t0}
    return results


def _verdict(case_id: str, rec: dict[str, Any]) -> list[str]:
    """What is wrong with a case's outcome (empty when it failed or loaded as it should)."""
    case = CASES_BY_ID[case_id]
    if "crash" in rec:
        return [f"crashed {rec['crash']}"]
    problems = []
    if "flaky_crash" in rec:
        problems.append(f"crashed in a batch but not alone: {rec['flaky_crash']}")
    for mode in MODES:
        r = rec["modes"][mode]
        outcome = r["outcome"]
        if outcome == "error":
            if case.expect == "load":
                problems.append(f"{mode}: expected to load, raised {r['type']}: {r['message']}")
            elif not r["names_path"]:
                problems.append(f"{mode}: the message does not name the file: {r['message']}")
        elif outcome == "loaded":
            must_fail = case.expect == "error" or (case.expect == "error_full" and mode != "Model(vocab_only)")
            if must_fail:
                problems.append(f"{mode}: loaded ({r['info']}) but should have failed")
        else:
            problems.append(f"{mode}: {outcome} {r['type']}: {r['message']}")
    return problems


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_hostile_file(case_id: str, hostile_results: dict[str, dict[str, Any]]) -> None:
    rec = hostile_results.get(case_id)
    assert rec is not None, f"{case_id} was not run"
    problems = _verdict(case_id, rec)
    assert not problems, f"{case_id} ({CASES_BY_ID[case_id].description}):\n  " + "\n  ".join(problems)


def test_hostile_summary(hostile_results: dict[str, dict[str, Any]]) -> None:
    tried = [c.id for c in CASES]
    clean = [i for i in tried if i in hostile_results and not _verdict(i, hostile_results[i])]
    crashed = [i for i in tried if "crash" in hostile_results.get(i, {})]
    loads = Counter()
    for i in tried:
        rec = hostile_results.get(i, {})
        for mode, r in rec.get("modes", {}).items():
            loads[(mode, r["outcome"])] += 1
    elapsed = hostile_results["__elapsed__"]["seconds"]
    print(f"\nhostile GGUF files: {len(tried)} tried, {len(clean)} handled cleanly, {len(crashed)} crashed "
          f"({len(tried) * len(MODES)} loads in {elapsed:.1f} s)")
    for (mode, outcome), n in sorted(loads.items()):
        print(f"  {mode:18s} {outcome:22s} {n}")
    bad = {i: _verdict(i, hostile_results[i]) if i in hostile_results else ["not run"]
           for i in tried if i not in clean}
    assert not bad, json.dumps(bad, indent=1)[:8000]


# ---------------------------------------------------------------------------- real models


def _vocab_files(llama_cpp_dir: Path) -> list[Path]:
    return sorted((llama_cpp_dir / "models").glob("ggml-vocab-*.gguf"))


def test_real_models_are_accepted(tiny_path: Path, smollm2_path: Path, gemma3_path: Path, llama_cpp_dir: Path
                                  ) -> None:
    """The validation before llama.cpp must never reject a real model."""
    for p in (tiny_path, smollm2_path, gemma3_path):
        with llamabind.Model(p) as m:
            assert m.n_vocab > 0
        with llamabind.Model(p, vocab_only=True) as m:
            assert m.n_vocab > 0
    vocabs = _vocab_files(llama_cpp_dir)
    assert len(vocabs) >= 13
    for p in vocabs:
        with llamabind.Model(p, vocab_only=True) as m:
            assert m.n_vocab > 0, p


def test_real_models_split_and_adapter_still_load(tiny_path: Path, tmp_path: Path) -> None:
    """Split files and LoRA adapters go through the same validation."""
    from tiny_model import copy_gguf, write_lora_adapter

    parts = copy_gguf(tiny_path, tmp_path / "tiny.gguf", split_max_tensors=8)
    assert len(parts) > 1
    with llamabind.Model([str(p) for p in parts]) as m:
        assert m.n_vocab == 32000
    with llamabind.Model(tiny_path) as m:
        adapter_path = write_lora_adapter(tmp_path / "lora.gguf", {"blk.0.attn_q.weight": (64, 64)})
        with llamabind.LoraAdapter(m, adapter_path) as a:
            assert a.meta_val("adapter.type") == "lora"


def test_broken_adapter_is_adapter_error(tiny_path: Path, tmp_path: Path) -> None:
    from tiny_model import write_lora_adapter

    good = write_lora_adapter(tmp_path / "lora.gguf", {"blk.0.attn_q.weight": (64, 64)})
    data = good.read_bytes()
    cut = tmp_path / "lora-cut.gguf"
    cut.write_bytes(data[: len(data) - 100])
    with llamabind.Model(tiny_path) as m:
        with pytest.raises(llamabind.AdapterError) as info:
            llamabind.LoraAdapter(m, cut)
        assert str(cut) in str(info.value)
        bad = tmp_path / "lora-count.gguf"
        bad.write_bytes(data[:8] + (1 << 62).to_bytes(8, "little") + data[16:])
        with pytest.raises(llamabind.AdapterError) as info:
            llamabind.LoraAdapter(m, bad)
        assert str(bad) in str(info.value)
