"""A small BERT-family reranker GGUF for the tests, and llama.cpp's own scores for it.

No reranker GGUF is on PyPI, so one is derived from all-MiniLM-L6-v2 (tests/minilm_model.py):
its weights and WordPiece vocabulary unchanged, plus what llama.cpp's convert_hf_to_gguf.py
writes for a BertForSequenceClassification cross-encoder: a classification head (``cls``, a
dense layer followed by tanh, and ``cls.output``, the projection to the labels; tensor names and
shapes from ``llama_model_bert::load_arch_tensors`` in the pinned src/models/bert.cpp) and
``bert.pooling_type`` = rank. The head's weights are random with a fixed seed, so the scores
mean nothing but are always the same; the reference is llama.cpp's ``llama-embedding
--pooling rank`` on the same file and inputs.

Variants: several labels (``bert.classifier.output_labels``: n_cls_out values per pair), and a
``tokenizer.chat_template.rerank`` template. llama-server tokenizes a filled template with
add_special=false, llama-embedding with add_special=true, which for a WordPiece vocabulary
always adds [CLS] and [SEP] around it; llamabind builds pairs as llama-server does, so for a
template the reference is llama-embedding's rank scores of the filled template given as a plain
input (``native_rank_texts``), without the [CLS]/[SEP] it adds itself.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tiny_model import _copy_field

ROOT = Path(__file__).resolve().parent.parent
LLAMA_EMBEDDING = ROOT / "build" / "bench" / "bin" / "llama-embedding"
RANK = 4  # LLAMA_POOLING_TYPE_RANK
# Separators for llama-embedding's -p: between inputs, and between a query and its document.
EMBD_SEP = "<#sep#>"
CLS_SEP = "<#seq#>"


def write_reranker(minilm: Path, dst: Path, *, labels: Sequence[str] = (), rerank_template: str | None = None,
                   seed: int = 0) -> Path:
    """Writes the reranker derived from the MiniLM GGUF `minilm` to `dst`. `labels` (two or
    more) gives that many outputs per pair; `rerank_template` stores a rerank template."""
    import gguf

    reader = gguf.GGUFReader(minilm)
    arch = reader.fields["general.architecture"].contents()
    assert arch == "bert", arch
    writer = gguf.GGUFWriter(dst, arch)
    replaced = {f"{arch}.pooling_type", "general.name"}
    n_embd = 0
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in replaced:
            continue
        _copy_field(writer, field)
        if key == f"{arch}.embedding_length":
            n_embd = int(field.contents())
    assert n_embd > 0
    writer.add_name("llamabind test reranker (all-MiniLM-L6-v2 + random classification head)")
    writer.add_uint32(f"{arch}.pooling_type", RANK)
    if labels:
        writer.add_array(f"{arch}.classifier.output_labels", list(labels))
    if rerank_template is not None:
        writer.add_string("tokenizer.chat_template.rerank", rerank_template)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=tensor.tensor_type)
    rng = np.random.default_rng(seed)
    n_out = max(1, len(labels))
    # numpy shape = ggml ne reversed: cls {n_embd, n_embd}, cls.output {n_embd, n_cls_out}.
    # The dense layer is scaled up so tanh works away from its linear part; the projection
    # spreads the scores over a few units.
    writer.add_tensor("cls.weight", (3.0 * rng.standard_normal((n_embd, n_embd)) / np.sqrt(n_embd)).astype(np.float32))
    writer.add_tensor("cls.bias", (0.1 * rng.standard_normal(n_embd)).astype(np.float32))
    writer.add_tensor("cls.output.weight", (rng.standard_normal((n_out, n_embd)) / np.sqrt(n_embd) * 4.0)
                      .astype(np.float32))
    writer.add_tensor("cls.output.bias", (0.1 * rng.standard_normal(n_out)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def llama_embedding() -> Path:
    """llama.cpp's llama-embedding built from the pinned source in build/bench, building it
    (bench/run.py's build_native) when it is not there."""
    if not LLAMA_EMBEDDING.is_file():
        spec = importlib.util.spec_from_file_location("_bench_run", ROOT / "bench" / "run.py")
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bench
        spec.loader.exec_module(bench)
        bench.build_native()
    return LLAMA_EMBEDDING


class NativeRank(NamedTuple):
    tokens: list[list[int]]  # each pair's tokens, as llama-embedding --verbose-prompt lists them
    scores: list[list[float]]  # each pair's n_cls_out outputs


_TOKEN_LINE = re.compile(r"^\s*(\d+) -> '")
_NUMBER = r"[-+]?(?:\d+\.\d*|nan|inf)"
_SCORE_LINE = re.compile(rf"^{_NUMBER}(?: {_NUMBER})*$")


def native_rank(model: Path, query: str, documents: Sequence[str], *, threads: int, n_ctx: int = 512) -> NativeRank:
    """Runs ``llama-embedding --pooling rank`` on one (query, document) pair per document,
    all in one batch, without normalisation, and reads its raw output (7 decimals)."""
    return native_rank_texts(model, [query + CLS_SEP + d for d in documents], threads=threads, n_ctx=n_ctx)


def native_rank_texts(model: Path, texts: Sequence[str], *, threads: int, n_ctx: int = 512) -> NativeRank:
    """llama-embedding --pooling rank on `texts` (a pair is ``query + CLS_SEP + document``;
    any other text is tokenized whole, with the vocabulary's special tokens added)."""
    prompt = EMBD_SEP.join(texts)
    cmd = [str(llama_embedding()), "-m", str(model), "-p", prompt, "--embd-separator", EMBD_SEP,
           "--cls-separator", CLS_SEP, "--pooling", "rank", "--embd-normalize", "-1", "--embd-output-format", "raw",
           "--verbose-prompt", "-fa", "off", "-c", str(n_ctx), "-b", str(n_ctx), "-ub", str(n_ctx), "-t", str(threads),
           "-tb", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-embedding failed ({proc.returncode}): {proc.stderr[-3000:]}")
    tokens: list[list[int]] = []
    scores: list[list[float]] = []
    in_prompt = False
    for line in proc.stdout.splitlines():
        m = _TOKEN_LINE.match(line)
        if m:
            if not in_prompt:
                tokens.append([])
                in_prompt = True
            tokens[-1].append(int(m.group(1)))
            continue
        in_prompt = False
        if _SCORE_LINE.match(line.strip()):
            scores.append([float(v) for v in line.split()])
    if len(tokens) != len(texts) or len(scores) != len(texts):
        raise RuntimeError(f"llama-embedding printed {len(tokens)} token lists and {len(scores)} score rows for "
                           f"{len(texts)} inputs:\n{proc.stdout[-3000:]}")
    return NativeRank(tokens, scores)
