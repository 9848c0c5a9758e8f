"""RPC worker processes on loopback for the tests and bench/rpc.py: ``llamabind rpc-server``
and llama.cpp's own rpc-server, each on a free port, started as real processes and polled
until they answer the protocol's handshake."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from llamabind import _core


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def llamabind_command(threads: int) -> list[str]:
    """`llamabind rpc-server` of this interpreter."""
    return [sys.executable, "-m", "llamabind", "rpc-server", "--threads", str(threads)]


def reference_command(executable: Path, threads: int) -> list[str]:
    """llama.cpp's rpc-server (tools/rpc/rpc-server.cpp), built from the pinned source."""
    return [str(executable), "--threads", str(threads)]


@dataclass
class Worker:
    """A running worker: its process, port and log file (stdout and stderr)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    stopped: list[int] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Sends `sig` and waits for the exit; returns the exit status (negative: a signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"worker on {self.endpoint} ignored signal {sig} for {timeout} s") from None
        self.stopped.append(self.proc.returncode)
        return self.proc.returncode


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(command: list[str], log: Path, port: int | None = None, timeout: float = 120.0,
          host: str = "127.0.0.1") -> Worker:
    """Starts `command --host HOST --port PORT` and waits until it answers the handshake on
    127.0.0.1 (HOST is loopback or every interface)."""
    port = port or free_port()
    with open(log, "wb") as out:
        # A shell without job control starts background commands with SIGINT ignored, and the
        # worker would inherit that: give it the default, as a terminal would.
        proc = subprocess.Popen([*command, "--host", host, "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_default_sigint)
    worker = Worker(proc, port, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{command[0]} on port {port} exited with {proc.returncode}:\n{worker.output()}")
        try:
            _core.check_rpc_server(worker.endpoint, timeout=2.0)
            return worker
        except _core.RpcError:
            if time.monotonic() > deadline:
                worker.stop(signal.SIGKILL)
                raise RuntimeError(f"{command[0]} on port {port} did not answer within {timeout} s:\n"
                                   f"{worker.output()}") from None
            time.sleep(0.05)  # refused at once while it starts; poll again shortly
