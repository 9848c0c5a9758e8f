"""The README's first command starts with `python3 scripts/fetch_llama_cpp.py`; on a fresh
machine that runs in a bare virtual environment (nothing but pip in it) with an empty cache,
so the script may need nothing beyond the standard library."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fetch_step_works_in_a_bare_venv_with_an_empty_cache(tmp_path: Path) -> None:
    env_dir = tmp_path / "v"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("fetch_llama_cpp.py", "pin.json"):
        shutil.copy(ROOT / "scripts" / name, checkout / "scripts" / name)
    # Only the venv's interpreter: no site-packages of the test run, an empty cache.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["LLAMABIND_CACHE"] = str(tmp_path / "cache")
    probe = subprocess.run([str(python), "-c", "import scikit_build_core"], capture_output=True, env=env)
    assert probe.returncode != 0, "the venv is not bare"
    start = time.monotonic()
    proc = subprocess.run([str(python), "scripts/fetch_llama_cpp.py"], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (checkout / "extern" / "llama.cpp" / "include" / "llama.h").is_file()
    check = subprocess.run([str(python), "scripts/fetch_llama_cpp.py", "--check"], cwd=checkout, env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    print(f"fetch step in a bare venv: {took:.1f} s", file=sys.stderr)
