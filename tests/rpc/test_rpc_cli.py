"""The command line: `llamabind rpc-server` (starts, warns when exposed, stops cleanly on
Ctrl-C and SIGTERM, fails in one line) and `--rpc` on the model commands."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llamabind as lb
import rpc_workers
from testutil import N_THREADS

LLAMABIND = [sys.executable, "-m", "llamabind"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LLAMABIND, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_rpc_server_stops_cleanly(sig: int, tmp_path: Path) -> None:
    worker = rpc_workers.start(rpc_workers.llamabind_command(1), tmp_path / "w.log")
    start = time.monotonic()
    assert worker.stop(sig) == 0
    assert time.monotonic() - start < 5.0
    out = worker.output()
    assert "Starting RPC server v" in out and f"rpc-server on {worker.endpoint} stopped" in out
    assert "WARNING" not in out
    with pytest.raises(lb.LlamaError):  # the port is closed
        lb._core.check_rpc_server(worker.endpoint, timeout=2.0)


def test_rpc_server_stops_while_a_client_is_connected(tmp_path: Path) -> None:
    worker = rpc_workers.start(rpc_workers.llamabind_command(1), tmp_path / "w.log")
    with socket.create_connection(("127.0.0.1", worker.port)) as conn:
        conn.sendall(bytes([14]) + (24).to_bytes(8, "little") + bytes(24))  # a client's handshake
        assert len(conn.recv(64)) > 0
        assert worker.stop(signal.SIGTERM) == 0
        conn.settimeout(10)
        try:
            while conn.recv(4096):  # the rest of the reply, then the connection ends (a timeout fails)
                pass
        except ConnectionResetError:
            pass  # ended by a reset: the client sees the end too


def test_exposed_address_prints_llama_cpps_warning(tmp_path: Path) -> None:
    worker = rpc_workers.start(rpc_workers.llamabind_command(1), tmp_path / "w.log", host="0.0.0.0")
    try:
        out = worker.output()
    finally:
        assert worker.stop() == 0
    assert "WARNING: Host ('0.0.0.0') is != '127.0.0.1'" in out
    assert "Never expose the RPC server to an open network!" in out


def test_port_in_use_fails_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = run_cli("rpc-server", "--port", str(port), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("llamabind: error: ") and proc.stderr.count("\n") == 1
    assert f"127.0.0.1:{port}" in proc.stderr and "in use" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--device", "NoSuchDevice"], "unknown device 'NoSuchDevice'"),
    (["--host", "::1"], "not an IPv4 address"),
    (["--port", "0"], "--port must be from 1 to 65535"),
])
def test_bad_worker_options_fail_in_one_line(args: list[str], message: str) -> None:
    proc = run_cli("rpc-server", *args, timeout=60)
    assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_bad_rpc_option_is_a_usage_error(smollm2_path: Path) -> None:
    proc = run_cli("run", "-m", str(smollm2_path), "--rpc", "127.0.0.1:99999", "hi", timeout=60)
    assert proc.returncode == 2 and "--rpc" in proc.stderr and "65535" in proc.stderr


@pytest.mark.slow
def test_run_with_rpc_prints_the_local_text(smollm2_path: Path, workers: list[rpc_workers.Worker]) -> None:
    common = ["run", "-m", str(smollm2_path), "-n", "16", "--temp", "0", "-t", str(N_THREADS),
              "--threads-batch", str(N_THREADS), "-c", "256", "The capital of France is"]
    local = run_cli(*common)
    split = run_cli(*common, "--rpc", ",".join(w.endpoint for w in workers), "-ngl", "20", "-ts", "1,1")
    assert local.returncode == 0 and split.returncode == 0, split.stderr
    assert split.stdout == local.stdout and "Paris" in local.stdout


@pytest.mark.slow
def test_embed_with_rpc(smollm2_path: Path, workers: list[rpc_workers.Worker]) -> None:
    common = ["embed", "-m", str(smollm2_path), "-t", str(N_THREADS), "--threads-batch", str(N_THREADS), "hello"]
    local = run_cli(*common)
    split = run_cli(*common, "--rpc", workers[0].endpoint)
    assert local.returncode == 0 and split.returncode == 0, split.stderr
    assert split.stdout == local.stdout


def test_unreachable_rpc_server_fails_in_one_line(smollm2_path: Path) -> None:
    endpoint = f"127.0.0.1:{rpc_workers.free_port()}"
    proc = run_cli("run", "-m", str(smollm2_path), "--rpc", endpoint, "hi", timeout=60)
    assert proc.returncode == 1 and endpoint in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
