"""Errors are typed: every llama_decode code has its own exception (with .code), the hierarchy
has the right builtin bases, bad arguments raise TypeError/ValueError/IndexError, and a failed
call leaves the context as it was."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind
from testutil import N_THREADS, OOM_CHILD_PRELUDE

TEXT = "The quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture(scope="module")
def tokens(smollm2: llamabind.Model) -> list[int]:
    toks = smollm2.vocab.tokenize(TEXT)
    assert len(toks) > 300
    return toks


@pytest.fixture
def ctx(smollm2: llamabind.Model) -> Iterator[llamabind.Context]:
    with llamabind.Context(smollm2, n_ctx=256, n_batch=64, n_threads=N_THREADS, n_threads_batch=N_THREADS) as c:
        yield c


def assert_still_usable(ctx: llamabind.Context, tokens: list[int], seq: int = 0) -> None:
    """A valid decode right after a failure works and produces finite logits."""
    pos = ctx.seq_pos_max(seq) + 1
    ctx.decode_tokens([tokens[pos % len(tokens)]], pos0=pos, seq_id=seq)
    assert ctx.seq_pos_max(seq) == pos
    assert np.isfinite(ctx.logits_ith(-1)).all()


# ---------------------------------------------------------------------------------------
# The hierarchy


def test_exception_hierarchy() -> None:
    lb = llamabind
    expected_bases = {
        lb.LlamaError: (Exception,),
        lb.DecodeError: (lb.LlamaError, RuntimeError),
        lb.ContextFullError: (lb.DecodeError, lb.LlamaError, RuntimeError),
        lb.AbortedError: (lb.DecodeError, lb.LlamaError, RuntimeError),
        lb.InvalidBatchError: (lb.DecodeError, lb.LlamaError, RuntimeError, ValueError),
        lb.FatalDecodeError: (lb.DecodeError, lb.LlamaError, RuntimeError),
        lb.InvalidArgumentError: (lb.LlamaError, ValueError),
        lb.OutOfRangeError: (lb.LlamaError, IndexError),
        lb.ClosedError: (lb.LlamaError,),
        lb.LlamaFileNotFoundError: (lb.LlamaError, FileNotFoundError, OSError),
        lb.LlamaPermissionError: (lb.LlamaError, PermissionError, OSError),
        lb.ModelLoadError: (lb.LlamaError,),
        lb.StateError: (lb.LlamaError,),
        lb.GrammarError: (lb.LlamaError, ValueError),
        lb.AdapterError: (lb.LlamaError,),
        lb.QuantizeError: (lb.LlamaError,),
    }
    for cls, bases in expected_bases.items():
        for base in bases:
            assert issubclass(cls, base), f"{cls.__name__} should derive from {base.__name__}"
        assert cls.__module__ == "llamabind"
        assert cls.__doc__
    # The four decode outcomes are told apart by type, not only by code.
    decode_kinds = [lb.ContextFullError, lb.AbortedError, lb.InvalidBatchError, lb.FatalDecodeError]
    for a in decode_kinds:
        for b in decode_kinds:
            assert a is b or not issubclass(a, b)
    assert not issubclass(lb.ContextFullError, ValueError)
    assert not issubclass(lb.OutOfRangeError, ValueError)


# ---------------------------------------------------------------------------------------
# Every llama_decode code


def test_context_full_is_code_1(ctx: llamabind.Context, tokens: list[int]) -> None:
    n_ctx = ctx.n_ctx  # llama.cpp may round the requested size up
    assert n_ctx >= 256
    ctx.decode_tokens(tokens[: n_ctx - 6], pos0=0)
    before = ctx.seq_pos_max(0)
    with pytest.raises(llamabind.ContextFullError) as info:
        ctx.decode_tokens(tokens[:10], pos0=n_ctx - 6)
    assert info.value.code == 1
    assert isinstance(info.value, RuntimeError)
    assert f"n_ctx={n_ctx}" in str(info.value)
    assert ctx.seq_pos_max(0) == before
    # What still fits, fits.
    ctx.decode_tokens(tokens[:6], pos0=n_ctx - 6)
    assert ctx.seq_pos_max(0) == n_ctx - 1


def test_context_full_in_a_later_chunk_removes_the_earlier_chunks(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:10], pos0=0)
    n = ctx.n_ctx  # n_batch=64: the call runs in chunks, the last of which does not fit
    with pytest.raises(llamabind.ContextFullError) as info:
        ctx.decode_tokens(tokens[: n], pos0=10)
    assert info.value.code == 1
    assert ctx.seq_pos_max(0) == 9, "a failed decode_tokens left earlier chunks in the KV cache"
    assert_still_usable(ctx, tokens)


def test_aborted_is_code_2(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:5], pos0=0)
    ctx.cancel()
    assert ctx.cancel_requested
    with pytest.raises(llamabind.AbortedError) as info:
        ctx.decode_tokens(tokens[5:40], pos0=5)
    assert info.value.code == 2
    assert not ctx.cancel_requested, "the cancel flag should be consumed by the aborted decode"
    assert ctx.seq_pos_max(0) == 4
    assert_still_usable(ctx, tokens)


def test_clear_cancel_withdraws_a_pending_cancel(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.cancel()
    ctx.clear_cancel()
    ctx.decode_tokens(tokens[:5], pos0=0)
    assert ctx.seq_pos_max(0) == 4


def test_invalid_batch_is_code_minus_1(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:5], pos0=0)
    with pytest.raises(llamabind.InvalidBatchError) as info:
        ctx.decode_tokens([tokens[5]], pos0=20)  # positions must continue the sequence
    assert info.value.code == -1
    assert isinstance(info.value, ValueError)
    assert "consecutive" in str(info.value)  # llama.cpp's reason is in the message
    assert ctx.seq_pos_max(0) == 4

    batch = llamabind.Batch(4)
    batch.add(tokens[5], 5)
    batch.add(tokens[6], 7, logits=True)  # a gap inside the batch
    with pytest.raises(llamabind.InvalidBatchError, match="not continuous") as info:
        ctx.decode(batch)
    assert info.value.code == -1
    assert ctx.seq_pos_max(0) == 4

    with pytest.raises(llamabind.InvalidBatchError) as info:
        ctx.decode_tokens(tokens[3:5], pos0=3)  # positions the sequence already holds
    assert info.value.code == -1
    assert ctx.seq_pos_max(0) == 4
    assert_still_usable(ctx, tokens)


FATAL_CHILD = OOM_CHILD_PRELUDE + textwrap.dedent(
    """
    ctx.decode_tokens(toks[:4], pos0=0)
    out = {"before": ctx.seq_pos_max(0)}

    # The output buffer for 250 rows of logits (~47 MiB) cannot be allocated under this
    # address-space limit, so llama.cpp's output_reserve fails and llama_decode returns -2.
    cap_address_space()
    try:
        ctx.decode_tokens(toks[4:254], pos0=4, all_logits=True)
        out["error"] = None
    except lb.DecodeError as e:
        out["error"] = type(e).__name__
        out["code"] = e.code
        out["message"] = str(e)
        out["is_runtime_error"] = isinstance(e, RuntimeError)
    uncap_address_space()
    out["after"] = ctx.seq_pos_max(0)
    ctx.decode_tokens(toks[4:6], pos0=4)
    out["after_decode"] = ctx.seq_pos_max(0)
    out["finite"] = bool(np.isfinite(ctx.logits_ith(-1)).all())
    print(json.dumps(out), flush=True)
    """
)


def test_fatal_decode_is_code_below_minus_1(smollm2_path: Path) -> None:
    """llama_decode returns -2 when its output buffer cannot be allocated; reached here through
    the public API by capping the child process's address space (RLIMIT_AS)."""
    proc = subprocess.run(
        [sys.executable, "-c", FATAL_CHILD, str(smollm2_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] == "FatalDecodeError", result
    assert result["code"] < -1
    assert result["code"] == -2
    assert result["is_runtime_error"]
    assert "code -2" in result["message"] and "output buffer" in result["message"]
    assert result["after"] == result["before"] == 3, "the failed decode changed the KV cache"
    assert result["after_decode"] == 5
    assert result["finite"]


# ---------------------------------------------------------------------------------------
# Argument checking before llama.cpp sees the batch


def test_batch_larger_than_n_batch_is_invalid_argument(ctx: llamabind.Context, tokens: list[int]) -> None:
    n = ctx.n_batch + 1
    batch = llamabind.Batch.from_tokens(tokens[:n])
    with pytest.raises(llamabind.InvalidArgumentError, match="n_batch"):
        ctx.decode(batch)
    with pytest.raises(llamabind.InvalidArgumentError, match="n_batch"):
        ctx.decode_tokens(tokens[:n], pos0=0, all_logits=True)  # all rows need one batch
    assert ctx.seq_pos_max(0) == -1
    ctx.decode_tokens(tokens[:n], pos0=0)  # without all_logits it is split into chunks
    assert ctx.seq_pos_max(0) == n - 1


def test_out_of_vocabulary_token_is_out_of_range(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:3], pos0=0)
    n_vocab = ctx.n_vocab
    for bad in (n_vocab, -1, 10**6):
        with pytest.raises(llamabind.OutOfRangeError) as info:
            ctx.decode_tokens([tokens[3], bad], pos0=3)
        assert isinstance(info.value, IndexError)
        assert str(bad) in str(info.value) and f"n_vocab={n_vocab}" in str(info.value)
    with pytest.raises(llamabind.OutOfRangeError):
        ctx.decode(llamabind.Batch.from_tokens([n_vocab], pos0=3))
    with pytest.raises(llamabind.OutOfRangeError, match="int32"):
        ctx.decode_tokens([2**40], pos0=3)
    assert ctx.seq_pos_max(0) == 2
    assert_still_usable(ctx, tokens)


def test_bad_sequence_id_and_position(ctx: llamabind.Context, tokens: list[int]) -> None:
    with pytest.raises(llamabind.OutOfRangeError, match="sequence id 1"):
        ctx.decode_tokens(tokens[:3], pos0=0, seq_id=1)  # n_seq_max=1
    with pytest.raises(llamabind.OutOfRangeError):
        ctx.decode_tokens(tokens[:3], pos0=0, seq_id=-1)
    with pytest.raises(llamabind.OutOfRangeError):
        ctx.seq_pos_max(5)
    with pytest.raises(llamabind.InvalidArgumentError, match="negative"):
        ctx.decode_tokens(tokens[:3], pos0=-3)
    with pytest.raises(llamabind.InvalidArgumentError):
        ctx.decode_tokens([], pos0=0)
    with pytest.raises(llamabind.InvalidArgumentError):
        ctx.decode(llamabind.Batch(4))  # empty batch
    assert ctx.seq_pos_max(0) == -1


def test_bad_output_index(ctx: llamabind.Context, tokens: list[int]) -> None:
    with pytest.raises(llamabind.OutOfRangeError):
        ctx.logits_ith(-1)  # nothing decoded yet
    ctx.decode_tokens(tokens[:4], pos0=0)
    with pytest.raises(llamabind.OutOfRangeError):
        ctx.logits_ith(-2)
    with pytest.raises(llamabind.OutOfRangeError):
        ctx.logits_ith(4)
    with pytest.raises(llamabind.OutOfRangeError, match="did not request outputs"):
        ctx.logits_ith(0)
    with pytest.raises(llamabind.InvalidArgumentError):
        ctx.embeddings()  # embeddings are off


def test_wrong_argument_types_raise_type_error(ctx: llamabind.Context, tokens: list[int]) -> None:
    with pytest.raises(TypeError, match="tokenize"):
        ctx.decode_tokens("some text", pos0=0)
    with pytest.raises(TypeError):
        ctx.decode_tokens(b"some bytes", pos0=0)
    with pytest.raises(TypeError, match="not an integer"):
        ctx.decode_tokens([1.0, 2.0], pos0=0)
    with pytest.raises(TypeError):
        ctx.decode_tokens(np.array([1.0, 2.0]), pos0=0)
    with pytest.raises(TypeError):
        ctx.decode_tokens([1, None], pos0=0)
    with pytest.raises(TypeError):
        ctx.decode_tokens(42, pos0=0)
    with pytest.raises(TypeError):
        ctx.decode_tokens(tokens[:3], pos0="0")
    with pytest.raises(TypeError):
        ctx.decode_tokens(tokens[:3], pos0=0.0)
    with pytest.raises(TypeError):
        ctx.decode_tokens(tokens[:3])  # pos0 is required
    with pytest.raises(TypeError):
        ctx.decode(tokens[:3])  # a list is not a Batch
    with pytest.raises(TypeError):
        llamabind.Context("model.gguf")
    with pytest.raises(TypeError):
        llamabind.Context(ctx.model, 512)  # everything but the model is keyword-only
    with pytest.raises(TypeError):
        ctx.logits(True)  # copy is keyword-only
    with pytest.raises(TypeError):
        ctx.state_set("text state")
    assert ctx.seq_pos_max(0) == -1

    # Integer-like inputs are fine.
    ctx.decode_tokens(np.array(tokens[:3], dtype=np.int64), pos0=np.int32(0))
    ctx.decode_tokens(tuple(tokens[3:5]), pos0=3)
    assert ctx.seq_pos_max(0) == 4


def test_invalid_context_parameters(smollm2: llamabind.Model) -> None:
    with pytest.raises(llamabind.InvalidArgumentError, match="n_batch"):
        llamabind.Context(smollm2, n_ctx=128, n_batch=0)
    with pytest.raises(llamabind.InvalidArgumentError, match="n_seq_max"):
        llamabind.Context(smollm2, n_ctx=128, n_seq_max=10**6)
    with pytest.raises(llamabind.InvalidArgumentError, match="n_threads"):
        llamabind.Context(smollm2, n_ctx=128, n_threads=0)


# ---------------------------------------------------------------------------------------
# Model files


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.gguf"
    with pytest.raises(llamabind.LlamaFileNotFoundError) as info:
        llamabind.Model(path)
    err = info.value
    assert isinstance(err, FileNotFoundError)
    assert isinstance(err, llamabind.LlamaError)
    assert err.filename == str(path)
    with pytest.raises(FileNotFoundError):
        llamabind.Model(str(path))


def test_missing_file_message_names_the_operation(tmp_path: Path) -> None:
    """str() of the error is what a traceback shows: it must carry llamabind's message."""
    path = tmp_path / "missing.gguf"
    with pytest.raises(llamabind.LlamaFileNotFoundError) as info:
        llamabind.Model(path)
    text = str(info.value)
    assert "[Errno None] None" not in text, f"uninformative message: {text!r}"
    assert "Model" in text and "no such file" in text and str(path) in text, text
    assert info.value.errno == errno.ENOENT  # like the builtin FileNotFoundError


def test_not_a_gguf_file_is_model_load_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("these are not the weights you are looking for\n" * 10)
    with pytest.raises(llamabind.ModelLoadError) as info:
        llamabind.Model(path)
    assert info.value.filename == str(path)
    assert str(path) in str(info.value) and "not a GGUF file" in str(info.value)

    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(llamabind.ModelLoadError, match="not a GGUF file"):
        llamabind.Model(empty)

    with pytest.raises(llamabind.ModelLoadError, match="directory"):
        llamabind.Model(tmp_path)


def test_truncated_model_is_model_load_error(smollm2_path: Path, tmp_path: Path) -> None:
    data = smollm2_path.read_bytes()
    half = tmp_path / "truncated-smollm2.gguf"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(llamabind.ModelLoadError) as info:
        llamabind.Model(half)
    msg = str(info.value)
    assert str(half) in msg
    # llamabind's own GGUF check catches this before llama.cpp reads the file.
    assert "is not a valid GGUF file" in msg and "ends past the end of the file" in msg, msg
    assert info.value.filename == str(half)

    head = tmp_path / "header-only.gguf"
    head.write_bytes(data[:4096])
    with pytest.raises(llamabind.ModelLoadError) as info:
        llamabind.Model(head)
    assert str(head) in str(info.value)


def test_model_load_error_leaves_the_interpreter_usable(smollm2_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(smollm2_path, copy)
    with open(copy, "r+b") as f:
        f.seek(8)
        f.write(b"\xff" * 64)  # garbage where the tensor and metadata counts are
    with pytest.raises(llamabind.ModelLoadError):
        llamabind.Model(copy)
    # A good model still loads afterwards.
    with llamabind.Model(smollm2_path) as model:
        assert model.n_vocab == 49152
