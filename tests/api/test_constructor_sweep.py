"""No valid configuration aborts: the constructor space of Context and Llama, tried on all three
test models (SmolLM2: causal llama; Gemma 3: sliding-window attention; MiniLM: encoder-only
BERT) in child processes (tests/constructor_sweep.py). Every case either works (a short
generation or embedding then succeeds with finite numbers) or raises InvalidArgumentError that
names the parameter; none aborts, hangs or returns garbage."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from constructor_sweep import run_cases

CONTEXT_NAMES = ("n_ctx", "n_batch", "n_ubatch", "n_seq_max", "n_rs_seq", "rope_scaling_type", "pooling_type",
                 "attention_type", "flash_attn_type", "rope_freq_base", "rope_freq_scale", "yarn_ext_factor",
                 "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_orig_ctx", "type_k", "type_v",
                 "embeddings", "offload_kqv", "op_offload", "swa_full", "kv_unified")
LLAMA_NAMES = ("n_ctx", "n_batch", "n_ubatch", "n_parallel", "embedding", "pooling_type", "flash_attn", "type_k",
               "type_v", "swa_full", "offload_kqv", "logits_all", "rope_scaling_type", "rope_freq_base",
               "rope_freq_scale", "yarn_ext_factor", "yarn_orig_ctx")


def context_cases() -> list[dict[str, Any]]:
    cases = []
    # The sizes, all combinations (with embeddings and a unified KV cache alternating).
    sizes = itertools.product((1, 8, 33, 256), (1, 7, 64, 2048), (1, 5, 64, 2048), (1, 3, 64))
    for i, (n_ctx, n_batch, n_ubatch, n_seq_max) in enumerate(sizes):
        cases.append(dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_seq_max=n_seq_max,
                          embeddings=bool(i % 2), kv_unified=bool((i // 2) % 2)))
    base = dict(n_ctx=64, n_batch=64, n_ubatch=64)
    cases.append(dict(base, n_ctx=0))  # the training context
    cache_types = ("F16", "F32", "BF16", "Q8_0", "Q4_0", "Q5_1", "IQ4_NL", "Q4_K", "I32")
    for fa in ("AUTO", "DISABLED", "ENABLED"):
        for k in cache_types:
            cases.append(dict(base, flash_attn_type=fa, type_k=k, type_v=k))
        cases += [dict(base, flash_attn_type=fa, type_k="F16", type_v="Q8_0"),
                  dict(base, flash_attn_type=fa, type_k="Q8_0", type_v="F16")]
    for swa_full, n_seq_max, unified in itertools.product((True, False), (1, 4), (True, False)):
        cases.append(dict(base, swa_full=swa_full, n_seq_max=n_seq_max, kv_unified=unified))
    for offload_kqv, op_offload in itertools.product((True, False), (True, False)):
        cases.append(dict(base, offload_kqv=offload_kqv, op_offload=op_offload))
    for n_rs_seq in (1, 8):
        cases.append(dict(base, n_rs_seq=n_rs_seq))
    for scaling, scale in itertools.product(("UNSPECIFIED", "NONE", "LINEAR", "YARN", "LONGROPE"), (0.0, 0.25, 4.0)):
        cases.append(dict(base, rope_scaling_type=scaling, rope_freq_scale=scale))
    for name, values in (("rope_freq_base", (1.0, 1e9, -1.0)), ("rope_freq_scale", (-1.0, 1e-9)),
                         ("yarn_ext_factor", (0.0, 1.0, 1000.0)), ("yarn_attn_factor", (0.0, 2.0)),
                         ("yarn_beta_fast", (0.0, 64.0)), ("yarn_beta_slow", (0.0, 64.0)),
                         ("yarn_orig_ctx", (1, 10**9))):
        for value in values:
            cases.append(dict(base, rope_scaling_type="YARN", **{name: value}))
    for pooling, embeddings in itertools.product(("UNSPECIFIED", "NONE", "MEAN", "CLS", "LAST", "RANK"), (True, False)):
        cases.append(dict(base, pooling_type=pooling, embeddings=embeddings))
    for attention, embeddings in itertools.product(("UNSPECIFIED", "CAUSAL", "NON_CAUSAL"), (True, False)):
        cases.append(dict(base, attention_type=attention, embeddings=embeddings))
    return [{"layer": "context", "settings": c} for c in cases]


def llama_cases() -> list[dict[str, Any]]:
    cases = []
    for i, (n_ctx, n_batch, n_ubatch, n_parallel) in enumerate(
            itertools.product((16, 32, 64), (8, 32, 512), (8, 512), (1, 4, 64))):
        cases.append(dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_parallel=n_parallel,
                          logits_all=bool(i % 3 == 0)))
    for n_ctx, n_batch in itertools.product((8, 32, 64), (8, 32, 512)):
        cases.append(dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, embedding=True))
    for pooling in (-1, 0, 1, 2, 3, 4):
        cases.append(dict(n_ctx=64, embedding=True, pooling_type=pooling))
    for flash_attn, cache in itertools.product((False, True), (1, 8, 2)):  # F16, Q8_0, Q4_0
        cases.append(dict(n_ctx=64, flash_attn=flash_attn, type_k=cache, type_v=cache))
    cases += [dict(n_ctx=64, swa_full=True), dict(n_ctx=64, swa_full=False, n_parallel=4),
              dict(n_ctx=64, offload_kqv=False), dict(n_ctx=64, rope_scaling_type=2, rope_freq_scale=0.5),
              dict(n_ctx=64, rope_freq_base=1e6), dict(n_ctx=64, yarn_ext_factor=1.0, yarn_orig_ctx=16)]
    return [{"layer": "llama", "settings": c} for c in cases]


def _names_a_parameter(message: str, case: dict[str, Any]) -> bool:
    names = CONTEXT_NAMES if case["layer"] == "context" else LLAMA_NAMES + CONTEXT_NAMES
    return any(re.search(rf"\b{n}\b", message) for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["smollm2", "gemma3", "minilm"])
def test_no_configuration_aborts(model_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path: Path = request.getfixturevalue(f"{model_name}_path")
    cases = context_cases() + llama_cases()
    outcomes = run_cases(path, cases, tmp_path)
    bad = []
    counts: dict[str, int] = {}
    for case, outcome in zip(cases, outcomes):
        kind = outcome.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "ok":
            continue
        if kind == "invalid" and _names_a_parameter(outcome, case):
            continue
        bad.append(f"{case['layer']} {case['settings']}: {outcome}")
    print(f"{model_name}: {len(cases)} cases: {counts}")
    assert not bad, f"{len(bad)} of {len(cases)} cases:\n" + "\n".join(bad[:60])
    # The sweep is not vacuous: most settings work.
    assert counts.get("ok", 0) > len(cases) // 2
