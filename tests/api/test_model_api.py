"""Model: properties against gguf-py's reading of the same file, loading parameters against
llama.cpp's documented behaviour, and split/saved/quantized copies of the tiny model against
the original's logits."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

import llamabind as lb
from gguf_ref import GGUFRef, metadata_text_matches
from tiny_model import copy_gguf

LogitsOf = Callable[[lb.Model], np.ndarray]

# llama_model_rope_type(): llama rotates pairs of consecutive values (NORM), gemma3 the two
# halves of the head (NEOX).
ROPE_TYPE = {"llama": lb.RopeType.NORM, "gemma3": lb.RopeType.NEOX}


# ---------------------------------------------------------------------------------------
# Properties of the real models


def test_hyperparameters_match_the_file(real) -> None:
    model, ref = real.model, real.ref
    arch = ref.arch
    assert model.n_ctx_train == ref.get(f"{arch}.context_length")
    assert model.n_embd == ref.get(f"{arch}.embedding_length")
    assert model.n_layer == ref.get(f"{arch}.block_count")
    assert model.n_head == ref.get(f"{arch}.attention.head_count")
    assert model.n_head_kv == ref.get(f"{arch}.attention.head_count_kv")
    assert model.n_vocab == len(ref.tokens) == model.vocab.n_tokens == len(model.vocab)


def test_sliding_window_matches_the_file(real) -> None:
    window = real.ref.get(f"{real.ref.arch}.attention.sliding_window", 0)
    assert real.model.n_swa == window
    if real.name == "gemma3":
        assert window > 0  # the file does use sliding-window attention
    else:
        assert window == 0


def test_n_params_and_size_count_every_tensor_in_the_file(real) -> None:
    # llama_model_loader adds ggml_nelements / ggml_nbytes of every tensor of every file.
    tensors = real.ref.reader.tensors
    assert real.model.n_params == sum(int(t.n_elements) for t in tensors)
    assert real.model.size == sum(int(t.n_bytes) for t in tensors)


def test_metadata_is_every_scalar_key_of_the_file(real) -> None:
    scalars = real.ref.scalars()
    metadata = real.model.metadata
    assert set(metadata) == set(scalars)  # arrays (tokens, merges, ...) are left out
    for key, value in scalars.items():
        assert metadata_text_matches(metadata[key], value), (key, metadata[key], value)
        assert real.model.meta_val(key) == metadata[key]


def test_meta_val_of_a_missing_key_is_none(real) -> None:
    assert real.model.meta_val("no.such.key") is None
    assert real.model.meta_val("") is None
    assert real.model.meta_val("tokenizer.ggml.tokens") is None  # an array, not a scalar


def test_chat_template_is_the_files(real) -> None:
    expected = real.ref.get("tokenizer.chat_template")
    if real.name == "smollm2":
        assert isinstance(expected, str) and "<|im_start|>" in expected
    else:
        assert expected is None  # Gemma 3's GGUF carries no template
    assert real.model.chat_template() == expected
    assert real.model.chat_template("tool_use") == real.ref.get("tokenizer.chat_template.tool_use")


def test_description_names_the_architecture(real) -> None:
    assert real.ref.arch in real.model.desc
    assert real.model.path in repr(real.model)


def test_ftype_is_general_file_type(real) -> None:
    file_type = real.ref.get("general.file_type")
    assert int(real.model.ftype) == file_type
    assert real.model.ftype.name == gguf.LlamaFileType(file_type).name  # same names in llama.h
    assert real.model.ftype_name


def test_architecture_flags(real) -> None:
    model = real.model
    assert model.rope_type == ROPE_TYPE[real.ref.arch]
    assert model.has_encoder is False
    assert model.has_decoder is True
    assert model.is_recurrent is False
    assert model.is_hybrid is False
    assert model.is_diffusion is False
    assert model.decoder_start_token == -1
    # No <arch>.rope.scaling.factor in either file: the training frequency scale is 1.
    assert not real.ref.has(f"{real.ref.arch}.rope.scaling.factor")
    assert model.rope_freq_scale_train == 1.0


# ---------------------------------------------------------------------------------------
# Loading parameters


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_kv_override_of_add_bos_changes_the_vocab(name: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(f"{name}_path")
    in_file = request.getfixturevalue(f"{name}_ref").get("tokenizer.ggml.add_bos_token")
    assert isinstance(in_file, bool)
    model = lb.Model(path, vocab_only=True, kv_overrides={"tokenizer.ggml.add_bos_token": not in_file})
    vocab = model.vocab
    assert vocab.add_bos is (not in_file)
    ids = vocab.tokenize("Hello", add_special=True)
    assert (ids[0] == vocab.bos) is (not in_file)
    assert ids[-1] == vocab.tokenize("Hello", add_special=False)[-1]


def test_kv_override_of_an_integer_key(tiny_path: Path, tiny_ref: GGUFRef) -> None:
    assert tiny_ref.get("llama.context_length") != 64
    assert lb.Model(tiny_path, kv_overrides={"llama.context_length": 64}).n_ctx_train == 64


def test_kv_override_of_the_wrong_gguf_type_is_ignored_with_a_warning(
    tiny_path: Path, tiny_ref: GGUFRef, caplog: pytest.LogCaptureFixture
) -> None:
    # llama.cpp's validate_override: a type mismatch logs a warning and keeps the file's value.
    caplog.set_level("WARNING", logger="llamabind")
    model = lb.Model(tiny_path, kv_overrides={"llama.context_length": "64"})
    assert model.n_ctx_train == tiny_ref.get("llama.context_length")
    warnings = [r.getMessage() for r in caplog.records if r.name == "llamabind" and r.levelname == "WARNING"]
    assert any("llama.context_length" in w for w in warnings), warnings


@pytest.mark.parametrize(
    "overrides",
    [
        ["tokenizer.ggml.add_bos_token"],
        {1: True},
        {"tokenizer.ggml.add_bos_token": None},
        {"tokenizer.ggml.add_bos_token": [True]},
        {"general.name": b"bytes"},
    ],
    ids=["not-a-dict", "int-key", "none-value", "list-value", "bytes-value"],
)
def test_kv_overrides_of_the_wrong_python_type_raise_type_error(tiny_path: Path, overrides: object) -> None:
    with pytest.raises(TypeError):
        lb.Model(tiny_path, vocab_only=True, kv_overrides=overrides)


def test_kv_override_sizes_follow_llama_model_kv_override(tiny_path: Path) -> None:
    # llama_model_kv_override has char key[128] and char val_str[128], both NUL-terminated.
    lb.Model(tiny_path, vocab_only=True, kv_overrides={"k" * 127: True})
    for key in ("k" * 128, "é" * 64, ""):  # "é" * 64 is 128 bytes
        with pytest.raises(lb.InvalidArgumentError):
            lb.Model(tiny_path, vocab_only=True, kv_overrides={key: True})
    lb.Model(tiny_path, vocab_only=True, kv_overrides={"general.name": "n" * 127})
    with pytest.raises(lb.InvalidArgumentError):
        lb.Model(tiny_path, vocab_only=True, kv_overrides={"general.name": "n" * 128})


def test_progress_callback_rises_to_one(tiny_path: Path) -> None:
    seen: list[float] = []
    lb.Model(tiny_path, use_mmap=False, progress_callback=seen.append)  # None means go on
    assert len(seen) >= 3
    assert seen == sorted(seen)
    assert all(0.0 <= p <= 1.0 for p in seen)
    assert seen[-1] == 1.0


@pytest.mark.parametrize("callback", [lambda p: False, lambda p: p < 0.5], ids=["at-once", "half-way"])
def test_progress_callback_returning_false_cancels(tiny_path: Path, callback: Callable[[float], bool]) -> None:
    with pytest.raises(lb.ModelLoadError, match="(?i)cancel"):
        lb.Model(tiny_path, use_mmap=False, progress_callback=callback)


class ProgressBoom(Exception):
    pass


def test_progress_callback_exception_propagates(tiny_path: Path, logits_of: LogitsOf, tiny_logits: np.ndarray) -> None:
    def boom(progress: float) -> bool:
        if progress > 0.3:
            raise ProgressBoom(f"stop at {progress}")
        return True

    with pytest.raises(ProgressBoom, match="stop at"):
        lb.Model(tiny_path, use_mmap=False, progress_callback=boom)
    with pytest.raises(TypeError):
        lb.Model(tiny_path, progress_callback=42)
    np.testing.assert_array_equal(logits_of(lb.Model(tiny_path, use_mmap=False)), tiny_logits)


@pytest.mark.parametrize(
    "params",
    [{"use_mmap": False}, {"use_mmap": True}, {"use_mlock": True}, {"use_mmap": False, "use_mlock": False}]
    + [{"load_mode": mode} for mode in lb.LoadMode],
    ids=lambda p: ",".join(f"{k}={getattr(v, 'name', v)}" for k, v in p.items()),
)
def test_load_modes_give_the_same_model(
    tiny_path: Path, params: dict[str, object], logits_of: LogitsOf, tiny_logits: np.ndarray
) -> None:
    np.testing.assert_array_equal(logits_of(lb.Model(tiny_path, **params)), tiny_logits)


def test_vocab_only_model_has_a_vocab_but_no_context(smollm2_path: Path, smollm2_ref: GGUFRef) -> None:
    model = lb.Model(smollm2_path, vocab_only=True)
    assert model.vocab.n_tokens == len(smollm2_ref.tokens)
    assert model.vocab.text(model.vocab.tokenize("Hello", add_special=False)[0]) == "Hello"
    with pytest.raises(lb.InvalidArgumentError):
        lb.Context(model, n_ctx=64)


def test_tensor_split_longer_than_max_devices_is_invalid(tiny_path: Path) -> None:
    lb.Model(tiny_path, tensor_split=[1.0] * lb.max_devices())
    with pytest.raises(lb.InvalidArgumentError, match=str(lb.max_devices())):
        lb.Model(tiny_path, tensor_split=[1.0] * (lb.max_devices() + 1))
    with pytest.raises(lb.InvalidArgumentError):
        lb.Model(tiny_path, tensor_split=[-1.0])


def test_path_may_be_str_pathlib_or_bytes(tiny_path: Path) -> None:
    assert lb.Model(tiny_path, vocab_only=True).path == str(tiny_path)
    assert lb.Model(str(tiny_path), vocab_only=True).path == str(tiny_path)
    assert lb.Model(os.fsencode(tiny_path), vocab_only=True).path == str(tiny_path)


def test_path_with_an_embedded_nul_is_rejected(tiny_path: Path) -> None:
    # As open() does: "x.gguf\0y" must not silently load "x.gguf".
    with pytest.raises(ValueError):
        lb.Model(str(tiny_path) + "\0.missing", vocab_only=True)


# ---------------------------------------------------------------------------------------
# Split files


@pytest.fixture(scope="module")
def tiny_splits(tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny model split by gguf-py's writer into <dir>/tiny-0000i-of-0000n.gguf."""
    return copy_gguf(tiny_path, tmp_path_factory.mktemp("splits") / "tiny.gguf", split_max_tensors=8)


def test_split_files_are_named_as_llama_split_path_says(tiny_splits: list[Path]) -> None:
    n = len(tiny_splits)
    assert n >= 3
    prefix = str(tiny_splits[0].parent / "tiny")
    assert [str(p) for p in tiny_splits] == [lb.split_path(prefix, i, n) for i in range(n)]
    assert all(lb.split_prefix(str(p), i, n) == prefix for i, p in enumerate(tiny_splits))


def test_split_model_loads_from_its_first_file(
    tiny_splits: list[Path], tiny: lb.Model, logits_of: LogitsOf, tiny_logits: np.ndarray
) -> None:
    model = lb.Model(tiny_splits[0])
    assert (model.n_params, model.size) == (tiny.n_params, tiny.size)
    np.testing.assert_array_equal(logits_of(model), tiny_logits)


def test_split_model_loads_from_a_list_of_any_names(
    tiny_splits: list[Path], tmp_path: Path, logits_of: LogitsOf, tiny_logits: np.ndarray
) -> None:
    np.testing.assert_array_equal(logits_of(lb.Model([str(p) for p in tiny_splits])), tiny_logits)
    renamed = [tmp_path / f"part-{chr(ord('a') + i)}.gguf" for i in range(len(tiny_splits))]
    for src, dst in zip(tiny_splits, renamed):
        shutil.copyfile(src, dst)
    np.testing.assert_array_equal(logits_of(lb.Model(renamed)), tiny_logits)
    np.testing.assert_array_equal(logits_of(lb.Model(tuple(renamed))), tiny_logits)
    with pytest.raises(lb.ModelLoadError):
        lb.Model(renamed[0])  # the other parts cannot be found from a non-standard name


def test_split_model_in_the_wrong_order_or_from_a_later_part_fails(tiny_splits: list[Path]) -> None:
    with pytest.raises(lb.ModelLoadError):
        lb.Model(list(reversed(tiny_splits)))
    with pytest.raises(lb.ModelLoadError):
        lb.Model(tiny_splits[1])


# ---------------------------------------------------------------------------------------
# Saving and quantizing


def test_save_to_file_round_trip(
    tiny: lb.Model, tiny_ref: GGUFRef, tmp_path: Path, logits_of: LogitsOf, tiny_logits: np.ndarray
) -> None:
    out = tmp_path / "saved.gguf"
    tiny.save_to_file(out)
    saved = GGUFRef(out).tensor_data()
    original = tiny_ref.tensor_data()
    assert saved.keys() == original.keys()
    for name, data in original.items():
        np.testing.assert_array_equal(saved[name], data, err_msg=name)
    np.testing.assert_array_equal(logits_of(lb.Model(out)), tiny_logits)
    with pytest.raises(lb.LlamaFileNotFoundError):
        tiny.save_to_file(tmp_path / "no" / "such" / "dir" / "saved.gguf")


def test_quantize_to_q8_0(tiny_path: Path, tmp_path: Path, logits_of: LogitsOf, tiny_logits: np.ndarray) -> None:
    out = tmp_path / "tiny-q8_0.gguf"
    lb.quantize(tiny_path, out, ftype=lb.FType.MOSTLY_Q8_0, nthread=1)
    ref = GGUFRef(out)
    assert ref.get("general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    types = {t.name: t.tensor_type for t in ref.reader.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32  # 1-D stays f32

    model = lb.Model(out)
    assert model.ftype == lb.FType.MOSTLY_Q8_0
    logits = logits_of(model)
    assert not np.array_equal(logits, tiny_logits)
    # Q8_0 keeps ~8 bits per weight: the logits stay within a few percent of f32.
    rel = np.linalg.norm(logits - tiny_logits) / np.linalg.norm(tiny_logits)
    assert 0 < rel < 0.05, rel


def test_quantize_missing_input_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(lb.LlamaFileNotFoundError):
        lb.quantize(tmp_path / "missing.gguf", tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_quantize_non_gguf_input_is_quantize_error(tmp_path: Path) -> None:
    # model.hpp: quantize "Throws FileNotFound or QuantizeError".
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(lb.QuantizeError):
        lb.quantize(text, tmp_path / "out.gguf")


def test_vocab_only_model_hyperparameters_are_zero(llama_cpp_dir: Path) -> None:
    """llama.cpp aborts reading the head counts of a model without layers; we answer 0."""
    with lb.Model(llama_cpp_dir / "models" / "ggml-vocab-llama-spm.gguf", vocab_only=True) as m:
        assert (m.n_layer, m.n_head, m.n_head_kv, m.n_embd) == (0, 0, 0, 0)
        assert m.n_vocab == 32000
