"""all-MiniLM-L6-v2 for the tests: the GGUF and sentence-transformers' reference embeddings that
scripts/convert_minilm.py makes (once; later runs find them in the cache)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "convert_minilm.py"


class MiniLMReference(NamedTuple):
    sentences: list[str]
    vectors: npt.NDArray[np.float32]  # (len(sentences), 384): mean-pooled, L2-normalised
    token_ids: list[list[int]]  # the Hugging Face tokenizer's ids, [CLS] and [SEP] included


class Prepared(NamedTuple):
    gguf: Path
    reference: MiniLMReference


def prepare() -> Prepared:
    """The converted model and its reference, converting first if the cache lacks them. Raises
    RuntimeError (the script's ConvertError) with the reason when that fails."""
    spec = importlib.util.spec_from_file_location("_convert_minilm", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    paths = script.prepare()
    info = json.loads(paths.reference_json.read_text(encoding="utf-8"))
    reference = MiniLMReference(info["sentences"], np.load(paths.reference_npy), info["token_ids"])
    return Prepared(paths.gguf, reference)
