"""llama-cpp-python's own tests, run against llamabind.

Its sdist (the one scripts/fetch_llama_cpp.py downloads for the pinned llama.cpp) carries
tests/test_llama.py and tests/test_llama_grammar.py. They are extracted into a temporary
folder next to a shim package named ``llama_cpp`` that is llamabind, their model downloads
from the Hugging Face hub are pointed at our local models, and pytest runs them in a child
process. Every test that uses only the public high-level API must pass; the few that cannot
run here are deselected below, each with its reason.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from native import run_reference_simple

ROOT = Path(__file__).resolve().parents[2]
PIN = json.loads((ROOT / "scripts" / "pin.json").read_text())
SDIST = (Path(os.environ.get("LLAMABIND_CACHE") or Path.home() / ".cache" / "llamabind") / "sdist"
         / f"{PIN['package'].replace('-', '_')}-{PIN['version']}.tar.gz")
FILES = ("test_llama.py", "test_llama_grammar.py")

# Hub models of the suite -> the local model that stands in for it (None: no stand-in on PyPI).
STAND_INS = {
    "lmstudio-community/Qwen3.5-0.8B-GGUF": "smollm2",  # the generation model
    "ggml-org/models": "smollm2",  # tinyllamas/stories15M, a small llama model
    "CompendiumLabs/bge-small-en-v1.5-gguf": "minilm",  # a BERT sentence-embedding model
    "QuantFactory/mamba-130m-hf-GGUF": None,
    "tiiuae/Falcon-H1-Tiny-90M-Instruct-GGUF": None,
}

NOT_RUN = {
    "test_llama.py::test_real_model":
        "llama-cpp-python's ctypes layer (llama_model_default_params, _internals.LlamaModel/LlamaContext/"
        "LlamaBatch/LlamaSampler); llamabind's Model/Context/Batch/SamplerChain replace it",
    "test_llama.py::test_recurrent_model_prompt_cache_reset": "mamba-130m (recurrent) exists only on the hub",
    "test_llama.py::test_hybrid_model_prompt_cache_reset": "Falcon-H1-Tiny (hybrid) exists only on the hub",
    **{f"test_llama.py::{name}[{fixture}-{flags}]": reason
       for name in ("test_exact_cached_prompt_reuse_matches_fresh", "test_loaded_exact_cached_prompt_reuse_matches_fresh",
                    "test_ram_cache_exact_prompt_hit_matches_fresh", "test_shorter_prompt_prefix_reuse_matches_fresh")
       for fixture, flags, reason in (
           ("llama_cpp_recurrent_model_path", "True-False", "mamba-130m (recurrent) exists only on the hub"),
           ("llama_cpp_hybrid_model_path", "False-True", "Falcon-H1-Tiny (hybrid) exists only on the hub"))},
}

# Edits of the suite's text, each with its reason (besides the model paths above and the
# expected greedy text below).
EDITS = [
    (r"MODEL = \"\./vendor/llama\.cpp/models/ggml-vocab-llama-spm\.gguf\"",
     "MODEL = os.environ['LLAMA_CPP_VOCAB_SPM']", "the vocabulary file sits in extern/llama.cpp here"),
    (r"from huggingface_hub import hf_hub_download", "from llama_cpp_stand_ins import hf_hub_download",
     "hub downloads become the local stand-in models (STAND_INS)"),
    (r"\n    assert llama\._ctx\.ctx is not None\n", "\n",
     "llama._ctx.ctx is llama-cpp-python's ctypes context pointer (a vocab-only llamabind.Llama has no context)"),
    (r"^import ctypes$", "import ctypes\nimport os", "MODEL above reads the environment"),
]
# The greedy continuation the suite expects is its hub model's; for the stand-in it is what
# llama.cpp's own llama-simple generates from the same prompt (FOX_EXPECTED, twice).
FOX_PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox"
FOX_EXPECTED = '== " jumps over the lazy dog."'


SHIM = '''"""llamabind under llama-cpp-python's package name."""
from llamabind import *  # noqa: F403
from llamabind import __version__, llama_cache, llama_chat_format, llama_grammar, llama_speculative
from llamabind import llama_tokenizer, llama_types
from llamabind.llama import Llama, LlamaState
'''

INTERNALS = '''"""llama-cpp-python's ctypes internals (LlamaModel, LlamaContext, ...): llamabind has its own
Model, Context, Batch and SamplerChain instead, so the suite's tests of these are not run."""
'''

STAND_IN_MODULE = '''import json, os

_PATHS = json.loads(os.environ["LLAMA_CPP_STAND_INS"])


def hf_hub_download(repo_id, filename, **kwargs):
    path = _PATHS.get(repo_id)
    if path is None:
        raise RuntimeError(f"{repo_id} exists only on the Hugging Face hub; no local stand-in")
    return path
'''


def _extract(dest: Path) -> dict[str, str]:
    if not SDIST.is_file():
        pytest.fail(f"{SDIST} is missing; run python scripts/fetch_llama_cpp.py")
    sources = {}
    with tarfile.open(SDIST, "r:gz") as tar:
        for name in FILES:
            member = tar.extractfile(f"{SDIST.name[:-len('.tar.gz')]}/tests/{name}")
            assert member is not None
            sources[name] = member.read().decode("utf-8")
    return sources


def _edit(source: str) -> str:
    for pattern, replacement, _reason in EDITS:
        source, n = re.subn(pattern, replacement, source, count=1, flags=re.M)
        assert n == 1, f"the suite changed: {pattern!r} not found"
    assert source.count(FOX_EXPECTED) == 2, "the suite changed: its expected greedy text is not where it was"
    return source.replace(FOX_EXPECTED, '== os.environ["LLAMA_CPP_FOX_CONTINUATION"]')


@pytest.mark.slow
def test_llama_cpp_python_suite_passes(tmp_path: Path, smollm2_path: Path, minilm_path: Path,
                                       llama_cpp_dir: Path, reference_build: Any) -> None:
    reference = run_reference_simple(reference_build, smollm2_path, FOX_PROMPT, 6)
    assert reference.startswith(FOX_PROMPT)
    sources = _extract(tmp_path)
    (tmp_path / "test_llama.py").write_text(_edit(sources["test_llama.py"]))
    (tmp_path / "test_llama_grammar.py").write_text(sources["test_llama_grammar.py"])
    shim = tmp_path / "shim" / "llama_cpp"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(SHIM)
    (shim / "_internals.py").write_text(INTERNALS)
    (tmp_path / "shim" / "llama_cpp_stand_ins.py").write_text(STAND_IN_MODULE)
    local = {"smollm2": str(smollm2_path), "minilm": str(minilm_path)}
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")]),
               LLAMA_CPP_STAND_INS=json.dumps({repo: local[name] for repo, name in STAND_INS.items() if name}),
               LLAMA_CPP_VOCAB_SPM=str(llama_cpp_dir / "models" / "ggml-vocab-llama-spm.gguf"),
               LLAMA_CPP_FOX_CONTINUATION=reference[len(FOX_PROMPT):].rstrip("\n"))
    report = tmp_path / "report.xml"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path),
           "-c", os.devnull, f"--junitxml={report}", *(f"--deselect={k}" for k in NOT_RUN), *FILES]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = ET.parse(report).getroot().iter("testcase")
    outcome = {}
    for case in cases:
        name = f"{case.get('classname', '')}.py::{case.get('name')}"
        bad = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome[name] = bad[0] if bad else "passed"
    failed = {k: v for k, v in outcome.items() if v != "passed"}
    assert not failed, f"{failed}\n{proc.stdout[-6000:]}"
    # What ran: every test of the two files that is not listed in NOT_RUN.
    assert len(outcome) == 12, sorted(outcome)
    print(f"llama-cpp-python suite: {len(outcome)} passed, {len(NOT_RUN)} not run (listed with reasons)")


def _exported(tar: tarfile.TarFile, prefix: str, module: str) -> set[str]:
    """The public names `from llama_cpp.<module> import *` gives, read from the source: what the
    module defines and what it imports from the package (following its star imports); names
    it imports from elsewhere (typing, numpy, the standard library) are not its surface."""
    member = tar.extractfile(f"{prefix}/llama_cpp/{module}.py")
    assert member is not None
    names: set[str] = set()
    for node in ast.parse(member.read().decode("utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("llama_cpp.")):
            source = (node.module or "").rpartition(".")[2] if node.level == 0 else node.module or ""
            for alias in node.names:
                names |= _exported(tar, prefix, source) if alias.name == "*" else {alias.asname or alias.name}
        elif isinstance(node, ast.Import):
            names.update(a.asname or a.name for a in node.names if a.name.startswith("llama_cpp."))
    return {n for n in names if not n.startswith("_")}


# llama-cpp-python's top level is `from .llama_cpp import *` (the ctypes binding of llama.h:
# llama_model_default_params, llama_decode, LLAMA_* constants, ...) plus `from .llama import *`.
# llamabind replaces the ctypes layer with its own classes; of the rest, these differ on purpose.
NOT_AT_TOP_LEVEL = {
    "llama_cpp": "llama-cpp-python's ctypes module (llamabind._core is llamabind's compiled layer)",
    "internals": "llama-cpp-python's ctypes wrappers (_internals)",
}


def test_top_level_names_of_llama_cpp_python_exist() -> None:
    """Code that switches with `import llamabind as llama_cpp` finds every name of
    llama-cpp-python's high-level API (Llama, the caches, grammars, tokenizers and the 60-odd
    OpenAI-style types its llama.py star-imports) at llamabind's top level."""
    import llamabind

    if not SDIST.is_file():
        pytest.fail(f"{SDIST} is missing; run python scripts/fetch_llama_cpp.py")
    with tarfile.open(SDIST, "r:gz") as tar:
        high_level = _exported(tar, SDIST.name[:-len(".tar.gz")], "llama")
        ctypes_layer = _exported(tar, SDIST.name[:-len(".tar.gz")], "llama_cpp")
    assert len(high_level) > 80 and len(ctypes_layer) > 400
    missing = sorted(n for n in high_level - set(NOT_AT_TOP_LEVEL) if not hasattr(llamabind, n))
    assert not missing, missing
    assert {"ChatCompletion", "ChatCompletionRequestMessage", "CreateCompletionResponse"} <= set(llamabind.__all__)
