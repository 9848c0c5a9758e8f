"""The server as a process: SIGTERM while models load, the command line's errors, the
optional dependencies, the default model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from live_server import LiveServer, environment_without, start


def test_sigterm_during_load_exits_0(gemma3_path: Path, tmp_path: Path) -> None:
    # Several copies of Gemma 3 read into memory: seconds of loading to interrupt.
    models = [{"model": str(gemma3_path), "alias": f"g{i}", "use_mmap": False, "n_parallel": 1, "n_ctx": 256}
              for i in range(8)]
    (tmp_path / "config.json").write_text(json.dumps({"models": models}))
    server = LiveServer(["--config", str(tmp_path / "config.json")], tmp_path / "server.log")
    try:
        loading = server.wait(503, timeout=60).json()
        assert loading["status"] == "loading" and "loading" in loading["models"].values()
    except BaseException:
        server.stop()
        raise
    t0 = time.monotonic()
    status = server.stop(timeout=60)
    assert status == 0, server.log()
    assert time.monotonic() - t0 < 15, server.log()
    assert "Traceback" not in server.log()


def test_command_line_errors(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "llamabind.server"]
    missing = subprocess.run([*run, "-m", str(tmp_path / "nothing.gguf")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such model file" in missing.stderr
    (tmp_path / "bad.json").write_text('{"models": [{"model": "x.gguf", "n_paralel": 2}]}')
    typo = subprocess.run([*run, "--config", str(tmp_path / "bad.json")], capture_output=True, text=True, timeout=60)
    assert typo.returncode == 2 and "n_paralel" in typo.stderr
    usage = subprocess.run([*run, "--port", "many"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--port" in usage.stderr
    helped = subprocess.run([*run, "--n_ctx", "64", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--n-parallel" in helped.stdout


def test_port_taken_exits_1(smollm2_path: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "llamabind.server", "-m", str(smollm2_path), "--port", str(port),
                               "-t", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr


def test_without_the_server_extra(tmp_path: Path) -> None:
    env = environment_without("fastapi", tmp_path)
    code = ("import llamabind, llamabind.server as s\n"
            "try:\n    s.create_app()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "llamabind[server]"' in out.stdout and "fastapi" in out.stdout
    cli = subprocess.run([sys.executable, "-m", "llamabind.server"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert cli.returncode == 1 and 'pip install "llamabind[server]"' in cli.stderr


@pytest.mark.parametrize("extra", [[], ["--embedding"]])
def test_default_model_alias(extra: list[str]) -> None:
    from llamabind.server import ServerSettings, parse_args

    settings, _ = parse_args(extra)
    assert isinstance(settings, ServerSettings)
    assert [m.name for m in settings.models] == ["SmolLM2-135M-Instruct.Q4_1"]
    assert settings.models[0].path is None and settings.models[0].embedding == bool(extra)


def test_default_model_is_served(tmp_path: Path, smollm2_path: Path) -> None:
    """Without -m: the default model (already in the test cache, so nothing is fetched)."""
    server = start(["-c", "256", "-np", "2"], tmp_path / "server.log")
    try:
        assert server.openai().models.list().data[0].id == "SmolLM2-135M-Instruct.Q4_1"
    finally:
        assert server.stop() == 0
