"""Fixtures of the RPC tests: `llamabind rpc-server` workers and llama.cpp's own rpc-server,
as real processes on free loopback ports."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import rpc_workers
from testutil import N_THREADS


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[rpc_workers.Worker]]:
    """Two `llamabind rpc-server` workers, stopped with SIGTERM after the module (which must
    end them cleanly: exit status 0)."""
    logs = tmp_path_factory.mktemp("workers")
    started: list[rpc_workers.Worker] = []
    try:
        for i in range(2):
            started.append(rpc_workers.start(rpc_workers.llamabind_command(N_THREADS), logs / f"worker{i}.log"))
        yield started
    finally:
        statuses = [w.stop() for w in started]
    assert statuses == [0] * len(started), [w.output() for w in started]


@pytest.fixture(scope="session")
def reference_rpc_server(native_build) -> Path:
    """llama.cpp's rpc-server built from the pinned source (tests/native.py)."""
    from native import build_rpc_server

    try:
        return build_rpc_server(native_build)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"llama.cpp's rpc-server (tools/rpc/rpc-server.cpp) did not build: {exc}")
