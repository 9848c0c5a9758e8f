"""Generated files are current, the package is typed, and the docs' commands are real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import llamabind

ROOT = Path(__file__).resolve().parents[2]


def test_core_stub_is_current() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_stubs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_passes_mypy() -> None:
    from mypy import api

    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, stdout + stderr


def test_all_names_exist_and_are_documented() -> None:
    import typing

    for name in llamabind.__all__:
        obj = getattr(llamabind, name)
        if typing.get_origin(obj) is not None:
            continue  # a type alias (LogitsProcessor, StoppingCriteria): documented where defined
        if callable(obj) or isinstance(obj, type):
            assert obj.__doc__, f"llamabind.{name} has no docstring"


def test_versions_and_pin() -> None:
    import re

    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(rf"project\(llamabind VERSION {re.escape(llamabind.__version__)}\b", cmake)
    assert "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e" in llamabind.llama_cpp_pin()
    assert "0c1e57098" in llamabind.llama_cpp_pin()
    assert "CPU : " in llamabind.system_info()  # GPU backends, when loaded, come first


def test_python_dash_m_generates_text(smollm2_path: Path) -> None:
    """The README's first command ends in `python -m llamabind run PROMPT`."""
    from testutil import N_THREADS

    proc = subprocess.run(
        [sys.executable, "-m", "llamabind", "run", "The capital of France is", "-n", "8", "--temp", "0",
         "-t", str(N_THREADS), "-m", str(smollm2_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The capital of France is")
    assert "Paris" in proc.stdout


def test_python_dash_m_reports_errors_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "llamabind", "run", "-m", str(tmp_path / "nope.gguf"), "hi"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "nope.gguf" in proc.stderr
