"""A real ``python -m llamabind.server`` in a child process on a free port, for the server
tests: started and waited for through /health (never a blind sleep), stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from testutil import N_THREADS

SMOL = "smol"  # the aliases of the shared server's models
MINILM = "minilm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``python -m llamabind.server ARGS --port P -t N`` with its log in `log_path`."""

    def __init__(self, args: list[str], log_path: Path, api_key: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log_path = log_path
        cmd = [sys.executable, "-m", "llamabind.server", *args, "--port", str(self.port),
               "-t", str(N_THREADS), "--threads-batch", str(N_THREADS)]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def health(self) -> httpx.Response | None:
        """GET /health, or None while nothing listens yet."""
        try:
            return httpx.get(self.url + "/health", timeout=5)
        except httpx.TransportError:
            return None

    def wait(self, status: int = 200, timeout: float = 120) -> httpx.Response:
        """Polls /health until it answers `status`; fails (with the log) if the server dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            r = self.health()
            if r is not None and r.status_code == status:
                return r
            time.sleep(0.02)
        raise AssertionError(f"/health did not answer {status} within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def http(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=120, **kw)

    def openai(self) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.api_key or "none", max_retries=0, timeout=120)

    def async_openai(self) -> Any:
        import openai

        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=self.api_key or "none", max_retries=0,
                                  timeout=120)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent), read with prometheus_client's own parser."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics", headers=self.headers(), timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def wait_metric(self, name: str, value: float, timeout: float = 10, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        while True:
            got = self.metric(name, **labels)
            if got == value or time.monotonic() > deadline:
                return got
            time.sleep(0.02)


def start(args: list[str], log_path: Path, api_key: str | None = None, timeout: float = 120) -> LiveServer:
    server = LiveServer(args, log_path, api_key)
    try:
        server.wait(200, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def environment_without(package: str, tmp: Path) -> dict[str, str]:
    """An environment whose Python cannot import `package` (a meta-path finder refuses it)."""
    shim = tmp / "no_package"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {package!r} or name.startswith({package!r} + '.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Refuse())\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")])
    return env
