"""The README's "Serving over HTTP" section runs as written: the openai-client example against
a real server, the create_app example as an application with the API mounted under /llm, and
the config file example as settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from live_server import free_port, start

ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Serving over HTTP", 1)[1].split("\n## ", 1)[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(), flags=re.S)


def test_openai_client_example(smollm2_path: Path, tmp_path: Path) -> None:
    (code,) = [b for b in _blocks("python") if "from openai import OpenAI" in b]
    server = start(["-m", str(smollm2_path), "-np", "2", "-c", "512", "--api-key", "secret"], tmp_path / "server.log",
                   api_key="secret")
    try:
        code = code.replace("http://127.0.0.1:8000", server.url)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    finally:
        assert server.stop() == 0
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) >= 2 and lines[0].strip() and lines[-1].strip()


def test_create_app_example(smollm2_path: Path, tmp_path: Path) -> None:
    """The app is mounted under /llm (its own lifespan never runs: the first request loads)."""
    (code,) = [b for b in _blocks("python") if "create_app" in b]
    script = tmp_path / "app.py"
    script.write_text(code)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "app.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/llm/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "app.log").read_text()
                time.sleep(0.05)
            assert httpx.get(base + "/llm/hello").json() == {"hello": "world"}
            out = httpx.post(base + "/llm/v1/chat/completions", timeout=120, json={
                "model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0})
            assert out.status_code == 200 and out.json()["choices"][0]["message"]["content"]
        finally:
            proc.terminate()
            proc.wait(30)


def test_config_file_example(tmp_path: Path) -> None:
    from llamabind.server import parse_args

    (text,) = _blocks("json")
    config = json.loads(text)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    settings, _ = parse_args(["--config", str(path)])
    assert (settings.host, settings.port, settings.api_keys) == ("0.0.0.0", 8000, ("secret",))
    assert [(m.name, m.slots, m.embedding) for m in settings.models] == [("chat", 8, False), ("gemma", 4, False),
                                                                         ("minilm", 1, True)]
    assert settings.models[0].path == str(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert settings.models[1].llama_kwargs("x.gguf")["flash_attn"] is True
