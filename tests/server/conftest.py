"""The servers the server tests talk to, one process per module that needs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

# scripts/test.sh installs the server extra; an environment without it (a wheel's test run
# with only the "test" extra) skips these tests, saying why.
pytest.importorskip("fastapi", reason='the server tests need pip install "llamabind[server]" httpx prometheus-client')
pytest.importorskip("prometheus_client", reason="the server tests read /metrics with prometheus-client")

from live_server import MINILM, SMOL, LiveServer, start  # noqa: E402


@pytest.fixture(scope="module")
def server(smollm2_path: Path, minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """SmolLM2 with 8 slots and MiniLM for embeddings, from a config file."""
    folder = tmp_path_factory.mktemp("server")
    config = {"models": [{"model": str(smollm2_path), "alias": SMOL, "n_parallel": 8, "n_ctx": 512},
                         {"model": str(minilm_path), "alias": MINILM, "embedding": True}]}
    (folder / "config.json").write_text(json.dumps(config))
    live = start(["--config", str(folder / "config.json"), "--no-access-log"], folder / "server.log")
    yield live
    assert live.stop() == 0, live.log()
