"""What goes wrong with RPC servers becomes an exception, never an abort or a hang: a worker
killed while the client generates (RpcError within 10 s, the Llama unusable, a new one works
once the worker is back), and servers that cannot be used at load time (ModelLoadError naming
them, within a bounded time)."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llamabind as lb
import rpc_workers
from llamabind._core import RpcError
from testutil import N_THREADS, make_llama


class Lines:
    """The JSON lines a child process writes, read by a thread so reads can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[dict | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                if line.startswith("{"):
                    self.queue.put(json.loads(line))
            self.queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float) -> dict:
        item = self.queue.get(timeout=timeout)
        assert item is not None, "the client ended early"
        return item


@pytest.mark.slow
def test_killing_a_worker_mid_generation_raises_within_10s(smollm2_path: Path, tmp_path: Path) -> None:
    started = [rpc_workers.start(rpc_workers.llamabind_command(N_THREADS), tmp_path / f"w{i}.log") for i in range(2)]
    victim, survivor = started
    client = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("lose_worker.py")), str(smollm2_path),
         f"{victim.endpoint},{survivor.endpoint}", str(N_THREADS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(client)
        assert lines.next(timeout=120)["event"] == "generating"
        killed_at = time.time()
        victim.stop(signal.SIGKILL)

        raised = lines.next(timeout=30)
        assert raised["event"] == "raised"
        assert raised["type"] == "RpcError" and raised["is_llama_error"], raised
        assert raised["endpoint"] == victim.endpoint and victim.endpoint in raised["message"]
        assert raised["at"] - killed_at < 10.0
        # The Llama is done for: later calls say so, close() returns at once.
        again = lines.next(timeout=30)
        assert again["type"] == "RpcError" and victim.endpoint in again["message"]
        assert lines.next(timeout=30)["seconds"] < 5.0

        # The surviving worker was let go (it serves one client at a time: it answers a
        # handshake again), and with the killed one back on its port a new Llama over both works.
        lb._core.check_rpc_server(survivor.endpoint, timeout=5.0)
        started.append(rpc_workers.start(rpc_workers.llamabind_command(N_THREADS), tmp_path / "w0-again.log",
                                         port=victim.port))
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        reloaded = lines.next(timeout=120)
        with make_llama(smollm2_path) as local:
            expected = local.create_completion("The capital of France is", max_tokens=12, temperature=0.0)
        assert reloaded["text"] == expected["choices"][0]["text"]
        assert client.wait(timeout=60) == 0
    finally:
        if client.poll() is None:
            client.kill()
        _, err = client.communicate()
        for w in started:
            w.stop(signal.SIGKILL)
    # Exit status 0 above means no abort and no core dump; llama.cpp's abort message never printed.
    assert "Remote RPC server crashed" not in err and "GGML_ABORT" not in err, err[-2000:]


def test_unreachable_server_is_a_load_error_naming_it(smollm2_path: Path) -> None:
    endpoint = f"127.0.0.1:{rpc_workers.free_port()}"
    start = time.monotonic()
    with pytest.raises(lb.ModelLoadError, match=endpoint) as info:
        make_llama(smollm2_path, rpc_servers=endpoint, n_gpu_layers=-1)
    assert time.monotonic() - start < 10.0
    assert "cannot be reached" in str(info.value) and str(smollm2_path) in str(info.value)


def test_one_bad_server_among_good_ones(smollm2_path: Path, workers: list[rpc_workers.Worker]) -> None:
    bad = f"127.0.0.1:{rpc_workers.free_port()}"
    with pytest.raises(lb.ModelLoadError, match=bad):
        lb.Model(smollm2_path, rpc_servers=[workers[0].endpoint, bad], n_gpu_layers=-1)
    # The good worker was not left attached to a failed load.
    lb._core.check_rpc_server(workers[0].endpoint, timeout=5.0)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    yield s
    s.close()


def test_server_that_never_answers_is_a_load_error(smollm2_path: Path, listener: socket.socket) -> None:
    """A port that accepts connections but never answers the handshake, as an RPC server busy
    with another client does: a ModelLoadError after the check's timeout, not a hang."""
    endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(lb.ModelLoadError, match="did not answer the handshake") as info:
        lb.Model(smollm2_path, rpc_servers=endpoint, n_gpu_layers=-1)
    assert endpoint in str(info.value) and time.monotonic() - start < 15.0


def test_not_an_rpc_server_is_a_load_error(smollm2_path: Path, listener: socket.socket) -> None:
    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(64)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
    with pytest.raises(lb.ModelLoadError, match=f"'{endpoint}' is not an RPC server"):
        lb.Model(smollm2_path, rpc_servers=endpoint, n_gpu_layers=-1)


@pytest.mark.parametrize("servers, message", [
    ("127.0.0.1:0", "port must be a number from 1 to 65535"),
    ("127.0.0.1:70000", "port must be a number from 1 to 65535"),
    (":50052", "names no host"),
    ("[::1]:50052", "IPv6"),
    ("10.0.0.2:50052, 10.0.0.2:50052", "given twice"),
])
def test_bad_endpoints_are_value_errors(smollm2_path: Path, servers: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lb.Model(smollm2_path, rpc_servers=servers, n_gpu_layers=-1)


def test_endpoint_parsing() -> None:
    assert lb._core.parse_rpc_servers(" a:1, b ,c:65535") == ["a:1", "b:50052", "c:65535"]
    assert lb._core.parse_rpc_servers(["a:1,b:2", "c:3"]) == ["a:1", "b:2", "c:3"]
    with pytest.raises(TypeError):
        lb._core.parse_rpc_servers(5)


def test_check_rpc_server_names_the_endpoint() -> None:
    endpoint = f"127.0.0.1:{rpc_workers.free_port()}"
    with pytest.raises(RpcError, match=endpoint) as info:
        lb._core.check_rpc_server(endpoint, timeout=2.0)
    assert info.value.endpoint == endpoint
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, lb.LlamaError)


def test_the_build_has_the_rpc_backend() -> None:
    info = lb.backend_info()
    assert info["rpc"] and lb.supports_rpc()
    assert info["rpc_protocol"] == lb._core.rpc_protocol_version()
    assert info["rpc_protocol"].split(".")[0] == "7"  # the pinned llama.cpp's protocol
    assert f"RPC : PROTOCOL = {info['rpc_protocol']}" in lb.system_info()
    assert "RPC" in [b["name"] for b in info["backends"]]
