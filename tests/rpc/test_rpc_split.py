"""A model split across two RPC workers and this process's CPU generates what the all-local
model generates: `llamabind rpc-server` workers, llama.cpp's own rpc-server as a worker, the
C++ API, and llama.cpp's own client path (llama.h and ggml-rpc without llamabind) against our
workers."""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any
from pathlib import Path

import pytest

import llamabind as lb
import rpc_workers
from testutil import N_THREADS, make_llama

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The capital of France is"
N_TOKENS = 24

pytestmark = pytest.mark.slow


def greedy(path: Path, **kw: object) -> str:
    with make_llama(path, n_ctx=256, **kw) as llm:
        return str(llm.create_completion(PROMPT, max_tokens=N_TOKENS, temperature=0.0)["choices"][0]["text"])


def layers(path: Path) -> int:
    with lb.Model(path, vocab_only=True) as m:
        return int(m.metadata[f"{m.metadata['general.architecture']}.block_count"])


def rpc_buffers(records: list[logging.LogRecord]) -> dict[str, float]:
    """llama.cpp's 'RPC<n>[host:port] model buffer size = X MiB' load lines: endpoint -> MiB."""
    out: dict[str, float] = {}
    for r in records:
        text = r.getMessage()
        if "model buffer size" in text and "RPC" in text:
            host, port = text[text.index("[") + 1:text.index("]")].rsplit(":", 1)
            out[f"{host}:{int(port)}"] = float(text.split("=")[1].split()[0])
    return out


@pytest.mark.parametrize("model", ["smollm2_path", "gemma3_path"])
def test_split_over_two_workers_generates_the_local_text(model: str, request: pytest.FixtureRequest,
                                                         workers: list[rpc_workers.Worker],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    path: Path = request.getfixturevalue(model)
    local = greedy(path)
    endpoints = [w.endpoint for w in workers]
    with caplog.at_level(logging.INFO, logger="llamabind"):
        # Half the layers on the workers (spread by their free memory), the rest and the
        # output layer here.
        split = greedy(path, rpc_servers=",".join(endpoints), n_gpu_layers=layers(path) // 2)
    buffers = rpc_buffers(caplog.records)
    assert sorted(buffers) == sorted(endpoints) and all(mib > 1 for mib in buffers.values()), buffers
    assert split == local
    assert len(local) > 20


def test_tensor_split_and_every_layer_on_the_workers(smollm2_path: Path, workers: list[rpc_workers.Worker],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    local = greedy(smollm2_path)
    endpoints = [w.endpoint for w in workers]
    with caplog.at_level(logging.INFO, logger="llamabind"):
        split = greedy(smollm2_path, rpc_servers=endpoints, n_gpu_layers=-1, tensor_split=[1.0, 3.0])
    buffers = rpc_buffers(caplog.records)
    # A quarter of the layers on the first worker; three quarters and the output layer on the second.
    assert buffers[endpoints[1]] > 3 * buffers[endpoints[0]] > 0, buffers
    assert split == local


def test_model_reports_its_servers(smollm2_path: Path, workers: list[rpc_workers.Worker]) -> None:
    endpoints = [w.endpoint for w in workers]
    with lb.Model(smollm2_path, rpc_servers=endpoints, n_gpu_layers=4) as model:
        assert model.rpc_servers == endpoints
    with lb.Model(smollm2_path, n_gpu_layers=4) as model:
        assert model.rpc_servers == []


@pytest.mark.parametrize("model", ["smollm2_path", "gemma3_path"])
def test_llama_cpp_rpc_server_as_a_worker(model: str, request: pytest.FixtureRequest, reference_rpc_server: Path,
                                          workers: list[rpc_workers.Worker], tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """Our client with llama.cpp's own worker (and one of ours) holding the layers."""
    path: Path = request.getfixturevalue(model)
    theirs = rpc_workers.start(rpc_workers.reference_command(reference_rpc_server, N_THREADS), tmp_path / "ref.log")
    try:
        endpoints = [theirs.endpoint, workers[0].endpoint]
        with caplog.at_level(logging.INFO, logger="llamabind"):
            split = greedy(path, rpc_servers=endpoints, n_gpu_layers=layers(path) // 2)
        assert sorted(rpc_buffers(caplog.records)) == sorted(endpoints)
        assert split == greedy(path)
        assert "Accepted client connection" in theirs.output()
    finally:
        theirs.stop()


def compile_client(native_build: Any, source: str, exe: Path) -> None:
    """Builds tests/rpc/`source` against every static library of the plain-CMake build (one
    group: the linker takes what it needs)."""
    archives = sorted(str(a) for a in native_build.build_dir.rglob("*.a"))
    headers = ["cpp/include", "extern/llama.cpp/include", "extern/llama.cpp/ggml/include"]
    proc = subprocess.run([os.environ.get("CXX", "c++"), "-std=c++17", "-O1", "-o", str(exe),
                           str(Path(__file__).with_name(source)), *(f"-I{ROOT / h}" for h in headers),
                           "-Wl,--start-group", *archives, "-Wl,--end-group", "-fopenmp", "-lpthread", "-ldl"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def run_client(exe: Path, model: Path, *servers: str) -> str:
    out = subprocess.run([str(exe), str(model), ",".join(servers)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_cpp_api_loads_over_workers(native_build: Any, smollm2_path: Path, workers: list[rpc_workers.Worker],
                                    tmp_path: Path) -> None:
    """Model::load with ModelParams::rpc_servers from a C++ program (tests/rpc/rpc_client.cpp)
    generates the text of the same program without servers."""
    exe = tmp_path / "rpc_client"
    compile_client(native_build, "rpc_client.cpp", exe)
    split = run_client(exe, smollm2_path, *[w.endpoint for w in workers])
    assert split.startswith("servers: " + ",".join(w.endpoint for w in workers))
    assert split.splitlines()[1:] == run_client(exe, smollm2_path).splitlines()[1:]


def test_llama_cpp_client_with_our_workers(native_build: Any, smollm2_path: Path, workers: list[rpc_workers.Worker],
                                           tmp_path: Path) -> None:
    """llama.cpp's client path on `llamabind rpc-server` workers (tests/rpc/ref_rpc_client.cpp:
    ggml_backend_rpc_add_server and llama_model_params.devices, as llama.cpp's --rpc does, with
    no llamabind code in the client) generates what it generates all local."""
    exe = tmp_path / "ref_rpc_client"
    compile_client(native_build, "ref_rpc_client.cpp", exe)
    split = run_client(exe, smollm2_path, *[w.endpoint for w in workers])
    assert split.splitlines()[0] == f"devices: {len(workers)}"
    assert split.splitlines()[1:] == run_client(exe, smollm2_path).splitlines()[1:]
