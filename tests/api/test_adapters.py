"""LoRA adapters and control vectors on the tiny model. The reference for a LoRA is the model
with the adapter merged into its weights by numpy (W + scale * alpha / rank * B @ A), written
as a second GGUF; the adapter file itself is read back with gguf-py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from gguf_ref import GGUFRef, metadata_text_matches
from testutil import N_THREADS
from tiny_model import copy_gguf, write_lora_adapter

LogitsOf = Callable[[lb.Model], np.ndarray]

RANK = 4
ALPHA = 8.0
TARGETS = ("attn_q.weight", "attn_v.weight", "ffn_up.weight")


@pytest.fixture(scope="module")
def lora_targets(tiny_ref: GGUFRef) -> dict[str, tuple[int, int]]:
    """Base weights the adapter changes, with their numpy shapes (n_out, n_in)."""
    return {t.name: tuple(int(d) for d in t.data.shape) for t in tiny_ref.reader.tensors if t.name.endswith(TARGETS)}


@pytest.fixture(scope="module")
def lora_path(lora_targets: dict[str, tuple[int, int]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lora_adapter(tmp_path_factory.mktemp("lora") / "lora.gguf", lora_targets, rank=RANK, alpha=ALPHA)


@pytest.fixture
def adapter(tiny: lb.Model, lora_path: Path) -> lb.LoraAdapter:
    return lb.LoraAdapter(tiny, lora_path)


@pytest.fixture
def ctx(tiny: lb.Model):
    with lb.Context(tiny, n_ctx=128, n_threads=N_THREADS, n_threads_batch=N_THREADS) as ctx:
        yield ctx


def decode_all(ctx: lb.Context, tokens: list[int]) -> np.ndarray:
    ctx.memory_clear()
    ctx.decode_tokens(tokens, 0, all_logits=True)
    return ctx.logits(copy=True)


def merged_model(tiny_path: Path, tiny_ref: GGUFRef, lora_path: Path, scale: float, out: Path) -> lb.Model:
    """The tiny model with the adapter folded into its weights at `scale` (llama.cpp's
    build_lora_mm adds scale * alpha / rank * B (A x) to W x)."""
    weights = tiny_ref.tensor_data()
    ab = GGUFRef(lora_path).tensor_data()
    merged = {}
    for name in {n[: -len(".lora_a")] for n in ab if n.endswith(".lora_a")}:
        a, b = ab[f"{name}.lora_a"].astype(np.float64), ab[f"{name}.lora_b"].astype(np.float64)
        assert a.shape[0] == b.shape[1] == RANK
        merged[name] = weights[name] + scale * ALPHA / RANK * (b @ a)
    return lb.Model(copy_gguf(tiny_path, out, replace_tensors=merged)[0])


# ---------------------------------------------------------------------------------------
# LoRA


def test_adapter_metadata_is_the_files(adapter: lb.LoraAdapter, lora_path: Path) -> None:
    ref = GGUFRef(lora_path)
    metadata = adapter.metadata
    assert set(metadata) == set(ref.scalars())
    for key, value in ref.scalars().items():
        assert metadata_text_matches(metadata[key], value), key
    assert metadata["general.type"] == "adapter"
    assert metadata["adapter.type"] == "lora"
    assert metadata["general.architecture"] == "llama"
    assert float(metadata["adapter.lora.alpha"]) == ALPHA
    assert adapter.meta_val("adapter.type") == "lora"
    assert adapter.meta_val("no.such.key") is None
    assert adapter.path == str(lora_path)
    assert adapter.alora_invocation_tokens == []


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_lora_matches_the_merged_weights(
    ctx: lb.Context,
    adapter: lb.LoraAdapter,
    scale: float,
    tiny_path: Path,
    tiny_ref: GGUFRef,
    lora_path: Path,
    tmp_path: Path,
    tiny_tokens: list[int],
    logits_of: LogitsOf,
    tiny_logits: np.ndarray,
) -> None:
    ctx.set_lora_adapters([(adapter, scale)])
    adapted = decode_all(ctx, tiny_tokens)
    merged = logits_of(merged_model(tiny_path, tiny_ref, lora_path, scale, tmp_path / "merged.gguf"))
    assert np.abs(adapted - tiny_logits).max() > 1.0  # the adapter does change the output
    np.testing.assert_allclose(adapted, merged, atol=2e-3 * np.abs(merged).max(), rtol=0)


def test_lora_scale_zero_and_clear_restore_the_base_logits(
    ctx: lb.Context, adapter: lb.LoraAdapter, tiny_tokens: list[int], tiny_logits: np.ndarray
) -> None:
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), tiny_logits)
    ctx.set_lora_adapters([(adapter, 1.0)])
    adapted = decode_all(ctx, tiny_tokens)
    assert not np.allclose(adapted, tiny_logits)
    ctx.set_lora_adapters([(adapter, 0.0)])
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), tiny_logits)
    ctx.set_lora_adapters({adapter: 1.0})
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), adapted)
    ctx.set_lora_adapters([adapter])  # a bare adapter means scale 1
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), adapted)
    ctx.clear_lora_adapters()
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), tiny_logits)
    ctx.set_lora_adapters([])
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), tiny_logits)


def test_alora_exposes_its_invocation_tokens(
    tiny: lb.Model, lora_targets: dict[str, tuple[int, int]], tmp_path: Path, ctx: lb.Context, tiny_tokens: list[int]
) -> None:
    invocation = tiny.vocab.tokenize("<|assistant|>", add_special=False)
    path = write_lora_adapter(tmp_path / "alora.gguf", lora_targets, invocation_tokens=invocation)
    assert GGUFRef(path).get("adapter.alora.invocation_tokens") == invocation
    alora = lb.LoraAdapter(tiny, path)
    assert alora.alora_invocation_tokens == invocation
    ctx.set_lora_adapters([(alora, 1.0)])
    assert np.isfinite(decode_all(ctx, tiny_tokens)).all()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"arch": "gemma3"}, "arch"),
        ({"targets": {"blk.0.attn_q.weight": (64, 96)}}, "shape"),
        ({"targets": {"blk.7.attn_q.weight": (64, 64)}}, "does not exist"),
    ],
    ids=["other-architecture", "wrong-shape", "missing-tensor"],
)
def test_adapter_for_another_model_raises_adapter_error(
    tiny: lb.Model, lora_targets: dict[str, tuple[int, int]], tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    params: dict[str, object] = {"targets": lora_targets, **change}
    path = write_lora_adapter(tmp_path / "bad.gguf", **params)  # type: ignore[arg-type]
    with pytest.raises(lb.AdapterError, match=reason):
        lb.LoraAdapter(tiny, path)


def test_a_model_file_is_not_an_adapter(tiny: lb.Model, tiny_path: Path) -> None:
    with pytest.raises(lb.AdapterError, match="general.type"):
        lb.LoraAdapter(tiny, tiny_path)


def test_missing_or_non_gguf_adapter_file(tiny: lb.Model, tmp_path: Path) -> None:
    with pytest.raises(lb.LlamaFileNotFoundError):
        lb.LoraAdapter(tiny, tmp_path / "missing.gguf")
    text = tmp_path / "adapter.gguf"
    text.write_text("not a gguf file")
    # lora.hpp: LoraAdapter::load "Throws FileNotFound or AdapterError".
    with pytest.raises(lb.AdapterError):
        lb.LoraAdapter(tiny, text)


def test_closed_adapter_cannot_be_applied(ctx: lb.Context, adapter: lb.LoraAdapter) -> None:
    adapter.close()
    assert adapter.closed
    with pytest.raises(lb.ClosedError):
        ctx.set_lora_adapters([(adapter, 1.0)])
    with pytest.raises(lb.ClosedError):
        adapter.metadata


def test_context_keeps_a_dropped_adapter_alive(
    ctx: lb.Context, tiny: lb.Model, lora_path: Path, tiny_tokens: list[int]
) -> None:
    adapter = lb.LoraAdapter(tiny, lora_path)
    ctx.set_lora_adapters([(adapter, 1.0)])
    adapted = decode_all(ctx, tiny_tokens)
    del adapter
    junk = [np.random.default_rng(i).random(200_000) for i in range(10)]  # reuse freed memory
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), adapted)
    del junk


CLOSE_WHILE_ACTIVE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import llamabind as lb

    model = lb.Model(sys.argv[1])
    tokens = model.vocab.tokenize("The quick brown fox jumps over the lazy dog")
    ctx = lb.Context(model, n_ctx=128, n_threads=1, n_threads_batch=1)

    def run():
        ctx.memory_clear()
        ctx.decode_tokens(tokens, 0, all_logits=True)
        return ctx.logits(copy=True)

    adapter = lb.LoraAdapter(model, sys.argv[2])
    ctx.set_lora_adapters([(adapter, 1.0)])
    adapted = run()
    adapter.close()
    junk = [np.random.default_rng(i).random(200_000) for i in range(10)]
    after = run()
    print("same" if np.array_equal(after, adapted) else f"differ max={np.nanmax(np.abs(after - adapted))}")
    """
)


def test_context_keeps_an_adapter_alive_after_its_close(tiny_path: Path, lora_path: Path) -> None:
    # close() drops the Python object's claim only (as Model.close does); an adapter still set
    # on a context must stay valid. Run in a child: a freed adapter is a use-after-free.
    proc = subprocess.run(
        [sys.executable, "-c", CLOSE_WHILE_ACTIVE, str(tiny_path), str(lora_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    died = f"child exited with {proc.returncode} (negative: killed by that signal)"
    assert proc.returncode == 0, f"{died}\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "same"


# ---------------------------------------------------------------------------------------
# Control vectors


def test_control_vector_changes_logits_and_clear_restores(
    ctx: lb.Context, tiny: lb.Model, tiny_tokens: list[int], tiny_logits: np.ndarray
) -> None:
    rows = np.ones((tiny.n_layer, tiny.n_embd), dtype=np.float32)
    ctx.set_control_vector(rows * 0.5, 1, tiny.n_layer)
    steered = decode_all(ctx, tiny_tokens)
    assert np.abs(steered - tiny_logits).max() > 1e-2
    ctx.set_control_vector(rows * 0.0, 1, tiny.n_layer)  # adding zeros changes nothing
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), tiny_logits)
    ctx.set_control_vector(rows * 0.5, 1, tiny.n_layer)
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), steered)
    ctx.clear_control_vector()
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), tiny_logits)


def test_control_vector_rows_start_at_layer_one(
    ctx: lb.Context, tiny: lb.Model, tiny_tokens: list[int], tiny_logits: np.ndarray
) -> None:
    # llama.cpp has no control vector for layer 0: row j steers layer j + 1. The tiny model's
    # layers are 0 and 1, so only the first row matters and float64 input is converted.
    rng = np.random.default_rng(3)
    first = rng.standard_normal(tiny.n_embd)
    ctx.set_control_vector(np.stack([first, rng.standard_normal(tiny.n_embd)]), 1, tiny.n_layer)
    both = decode_all(ctx, tiny_tokens)
    ctx.set_control_vector(first[np.newaxis, :], 1, 1)
    np.testing.assert_array_equal(decode_all(ctx, tiny_tokens), both)
    assert not np.allclose(both, tiny_logits)


@pytest.mark.parametrize(
    ("shape", "il_start", "il_end"),
    [((64,), 1, 2), ((2, 65), 1, 2), ((0, 64), 1, 2), ((2, 64), 0, 2), ((2, 64), 1, 3), ((2, 64), 2, 1)],
    ids=["1-d", "wrong-n_embd", "no-rows", "layer-0", "past-last-layer", "reversed-range"],
)
def test_control_vector_with_a_wrong_shape_or_range_is_invalid(
    ctx: lb.Context, tiny: lb.Model, shape: tuple[int, ...], il_start: int, il_end: int
) -> None:
    assert (tiny.n_layer, tiny.n_embd) == (2, 64)
    with pytest.raises(lb.InvalidArgumentError):
        ctx.set_control_vector(np.ones(shape, dtype=np.float32), il_start, il_end)
