"""Inputs found by the fuzzer (scripts/fuzz.py) stay fixed: every file kept under
tests/fuzz_regressions/<target>/ is replayed with ``scripts/fuzz.py --replay`` in a fresh
interpreter and must come out clean (no crash, hang, wrong exception type, or rejected
converter output). A few seed inputs of every target are replayed too, so the harness
itself is exercised by the suite and cannot rot unnoticed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "scripts" / "fuzz.py"
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"
TARGETS = ("tokenize", "grammar", "json_schema", "chat_template", "gguf_load")
SEEDS_PER_TARGET = 4


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("llamabind_fuzz", FUZZ)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["llamabind_fuzz"] = module
    spec.loader.exec_module(module)
    return module


def _replay(target: str, files: list[Path]) -> list[dict]:
    proc = subprocess.run([sys.executable, str(FUZZ), "--replay", target, *map(str, files)],
                          capture_output=True, text=True, timeout=600)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(files), f"replay died (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return results


def _kept(target: str) -> list[Path]:
    return sorted((REGRESSIONS / target).glob("*.bin"))


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_harness_replays_seed_inputs(target: str, tmp_path: Path, tiny_path: Path, llama_cpp_dir: Path) -> None:
    fuzz = _fuzz_module()
    seeds = []
    for data in fuzz.TARGETS[target]().seeds():
        seeds.append(data)
        if len(seeds) == SEEDS_PER_TARGET:
            break
    assert len(seeds) == SEEDS_PER_TARGET
    files = []
    for i, data in enumerate(seeds):
        f = tmp_path / f"seed-{i}.bin"
        f.write_bytes(data)
        files.append(f)
    # Crashers the fuzzer found and kept (tests/fuzz_regressions/<target>/*.bin, none so far)
    # are replayed in the same child process as the seeds and must stay fixed.
    kept = _kept(target)
    results = _replay(target, files + kept)
    assert [r["outcome"] for r in results[:len(files)]] == ["ok"] * len(files), json.dumps(results, indent=1)[:6000]
    bad = [r for r in results[len(files):] if r["outcome"] not in ("ok", "seed-changed")]
    assert not bad, json.dumps(bad, indent=1)[:6000]
