"""Bad calls get their exact exception type and message, and the object they were made on
keeps working for valid input afterwards.

The binding-level cases that tests/bindings/test_errors.py and test_batch/test_decode/
test_memory/test_state/test_samplers already pin
down (decode codes, batch > n_batch, decode token ids, malformed batches, n_seq_max in the
memory operations, truncated and foreign state bytes) are not repeated here; this file covers
the rest of the list: token ids in the vocabulary lookups and samplers, sequence ids in the
per-sequence calls, positions out of order, prompts longer than n_ctx through Llama, zero or
negative sizes and thread counts, wrong dtypes and shapes, empty inputs, invalid UTF-8 in and
out, session files of another version, adapters for another architecture, and use after
close() / double close() of every closable object.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from testutil import N_THREADS

TEXT = "The quick brown fox jumps over the lazy dog"


def exact(message: str) -> str:
    """A pytest.raises(match=...) pattern for exactly this message."""
    return "^" + re.escape(message) + "$"


def starts(message: str) -> str:
    """A pattern for this message followed by llama.cpp's reason (or nothing)."""
    return "^" + re.escape(message)


@pytest.fixture(scope="module")
def toks(tiny: lb.Model) -> list[int]:
    return tiny.vocab.tokenize(TEXT, add_special=True)


def greedy_after(ctx: lb.Context, tokens: list[int]) -> int:
    """Decodes `tokens` into an empty sequence 0 and returns the greedy next token."""
    ctx.memory_clear()
    ctx.decode_tokens(tokens, pos0=0)
    return int(np.argmax(ctx.logits_ith(-1)))


# ---------------------------------------------------------------------------------------
# Token ids out of range


@pytest.mark.parametrize("bad", [-1, 32000, 2**31 - 1])
def test_vocab_lookups_reject_token_ids_outside_the_vocabulary(tiny: lb.Model, toks: list[int], bad: int) -> None:
    vocab = tiny.vocab
    n = vocab.n_tokens
    assert n == 32000
    for name in ("text", "score", "attr", "is_eog", "is_control", "token_to_piece"):
        with pytest.raises(lb.OutOfRangeError,
                           match=exact(f"[Vocab.{name}] token {bad} is outside the vocabulary (n_vocab={n})")):
            getattr(vocab, name)(bad)
    with pytest.raises(lb.OutOfRangeError, match=exact(
            f"[Vocab.detokenize] token {bad} at index 2 is outside the vocabulary (n_vocab={n})")):
        vocab.detokenize([toks[1], toks[2], bad])
    assert vocab.detokenize(toks[1:]) == TEXT.encode()


def test_token_ids_beyond_int32_are_out_of_range(tiny: lb.Model) -> None:
    with pytest.raises(lb.OutOfRangeError, match="int32"):
        tiny.vocab.detokenize([2**40])
    with pytest.raises((OverflowError, TypeError)):
        tiny.vocab.token_to_piece(2**40)


@pytest.mark.parametrize("bad", [-1, 32000])
def test_logit_bias_rejects_token_ids_outside_the_vocabulary(decoded_tiny: lb.Context, bad: int) -> None:
    chain = lb.SamplerChain()
    with pytest.raises(lb.OutOfRangeError, match=exact(
            f"[SamplerChain.add_logit_bias] token {bad} is outside the vocabulary (n_vocab=32000)")):
        chain.add_logit_bias(32000, [(5, 1.0), (bad, 2.0)])
    assert len(chain) == 0, "a rejected sampler is not added"
    forced = int(np.argmin(decoded_tiny.logits_ith(-1)))
    chain.add_logit_bias(32000, [(forced, 1e9)]).add_greedy()
    assert chain.sample(decoded_tiny) == forced


def test_samplers_reject_token_ids_outside_the_vocabulary(tiny: lb.Model, decoded_tiny: lb.Context) -> None:
    chain = lb.SamplerChain().add_penalties(32000, last_n=16, repeat=1.3).add_greedy()
    for bad in (-1, 32000):
        with pytest.raises(lb.OutOfRangeError, match=exact(
                f"[SamplerChain.accept] token {bad} is outside the vocabulary (n_vocab=32000)")):
            chain.accept(bad)
    cands = np.zeros(3, dtype=lb.token_data_dtype)
    cands["id"] = [1, 32000, 2]
    with pytest.raises(lb.OutOfRangeError, match=exact(
            "[SamplerChain.apply] candidate 1 has token id 32000 outside the vocabulary")):
        chain.apply(cands)
    expected = int(np.argmax(decoded_tiny.logits_ith(-1)))
    chain.accept(3)
    assert chain.sample(decoded_tiny) == expected


def test_llama_logit_bias_with_a_bad_token_id(tiny_path: Path) -> None:
    llm = lb.Llama(str(tiny_path), n_ctx=64, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    try:
        for bad in (-1, 32000):
            with pytest.raises(lb.OutOfRangeError, match=exact(
                    f"[SamplerChain.add_logit_bias] token {bad} is outside the vocabulary (n_vocab=32000)")):
                llm.create_completion("Hello", max_tokens=2, temperature=0.0, logit_bias={bad: 5.0})
        out = llm.create_completion("Hello", max_tokens=2, temperature=0.0)
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


# ---------------------------------------------------------------------------------------
# Sequence ids and positions


def test_per_sequence_calls_reject_sequence_ids_outside_n_seq_max(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    ctx.decode_tokens(toks, pos0=0, seq_id=1)
    for bad in (2, -1):
        suffix = f"sequence id {bad} is outside [0, 2) (n_seq_max=2)"
        with pytest.raises(lb.OutOfRangeError, match=exact(f"[Context.decode] {suffix}")):
            ctx.decode_tokens(toks[:2], pos0=0, seq_id=bad)
        with pytest.raises(lb.OutOfRangeError, match=exact(f"[Context.state_seq_get] {suffix}")):
            ctx.state_seq_get(bad)
        with pytest.raises(lb.OutOfRangeError, match=exact(f"[Context.seq_pos_max] {suffix}")):
            ctx.seq_pos_max(bad)
    with pytest.raises(lb.InvalidArgumentError, match=exact(
            "[Batch.add] a token needs 1 to 1 sequence ids, got 2")):
        lb.Batch(4).add(toks[0], 0, [0, 1])
    assert ctx.seq_pos_max(1) == len(toks) - 1
    assert ctx.seq_pos_max(0) == -1
    ctx.decode_tokens(toks, pos0=0, seq_id=0)
    assert ctx.seq_pos_max(0) == len(toks) - 1


def test_positions_out_of_order_are_an_invalid_batch(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    expected = greedy_after(ctx, toks[:4])
    ctx.memory_clear()
    batch = lb.Batch(4)
    for tok, pos in zip(toks[:4], [0, 2, 1, 3]):
        batch.add(tok, pos, 0, logits=pos == 3)
    with pytest.raises(lb.InvalidBatchError, match=starts("[Context.decode] llama_decode rejected the batch (code -1)")) as info:
        ctx.decode(batch)
    assert info.value.code == -1
    assert ctx.seq_pos_max(0) == -1
    assert greedy_after(ctx, toks[:4]) == expected


# ---------------------------------------------------------------------------------------
# Sizes and thread counts


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_ctx": -1}, "[Context] n_ctx must be >= 0 (0 = the training context), got -1"),
        ({"n_batch": 0}, "[Context] n_batch must be > 0, got 0"),
        ({"n_batch": -8}, "[Context] n_batch must be > 0, got -8"),
        ({"n_ubatch": 0}, "[Context] n_ubatch must be > 0, got 0"),
        ({"n_seq_max": 0}, "[Context] n_seq_max must be > 0, got 0"),
        ({"n_threads": 0}, "[Context] n_threads must be > 0, got 0"),
        ({"n_threads": -2}, "[Context] n_threads must be > 0, got -2"),
        ({"n_threads_batch": 0}, "[Context] n_threads_batch must be > 0, got 0"),
    ],
)
def test_context_sizes_and_threads_must_be_positive(tiny: lb.Model, kwargs: dict[str, int], message: str) -> None:
    params = {"n_ctx": 64, "n_threads": N_THREADS, "n_threads_batch": N_THREADS, **kwargs}
    with pytest.raises(lb.InvalidArgumentError, match=exact(message)):
        lb.Context(tiny, **params)


def test_set_threads_rejects_zero_and_keeps_the_old_counts(tiny_ctx: lb.Context, toks: list[int]) -> None:
    before = (tiny_ctx.n_threads, tiny_ctx.n_threads_batch)
    for args in ((0,), (-1, 1), (1, 0)):
        with pytest.raises(lb.InvalidArgumentError, match=starts("[Context.set_threads] thread counts must be > 0")):
            tiny_ctx.set_threads(*args)
    assert (tiny_ctx.n_threads, tiny_ctx.n_threads_batch) == before
    tiny_ctx.decode_tokens(toks, pos0=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_ctx": -1}, "[Context] n_ctx must be >= 0 (0 = the training context), got -1"),
        ({"n_batch": 0}, "[Context] n_batch must be > 0, got 0"),
        ({"n_threads": -3}, "[Context] n_threads must be > 0, got -3"),
    ],
)
def test_llama_with_bad_sizes_raises_and_frees_the_model(tiny_path: Path, kwargs: dict[str, int],
                                                          message: str) -> None:
    with pytest.raises(lb.InvalidArgumentError, match=exact(message)):
        lb.Llama(str(tiny_path), verbose=False, **kwargs)


def test_prompt_longer_than_n_ctx(tiny_path: Path) -> None:
    llm = lb.Llama(str(tiny_path), n_ctx=32, n_batch=32, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    try:
        n_ctx = llm.n_ctx()  # llama.cpp rounds the context up (to 256 cells)
        long_prompt = list(range(100, 100 + n_ctx + 8))
        message = f"Requested tokens ({n_ctx + 8}) exceed context window of {n_ctx}"
        with pytest.raises(ValueError, match=exact(message)):
            llm.create_completion(long_prompt, max_tokens=1)
        with pytest.raises(ValueError, match=exact(message)):
            llm.eval(long_prompt)
        out = llm.create_completion(long_prompt[:8], max_tokens=2, temperature=0.0)
        assert out["usage"]["prompt_tokens"] == 8
    finally:
        llm.close()


def test_decode_past_n_ctx_is_context_full_and_keeps_the_prefix(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_ctx=256, n_batch=256)
    n_ctx = ctx.n_ctx
    long = (toks * (n_ctx // len(toks) + 2))[: n_ctx + 1]
    with pytest.raises(lb.ContextFullError) as info:
        ctx.decode_tokens(long, pos0=0)
    assert info.value.code == 1
    # decode_tokens splits the tokens into n_batch chunks: the second chunk finds no slot, and
    # the first one is taken out of the KV cache again.
    assert str(info.value) == (
        f"[Context.decode] no KV cache slot for a batch of 1 tokens: the context is full (n_ctx={n_ctx}). "
        "Remove tokens (seq_rm), use a larger n_ctx, or a smaller batch")
    assert ctx.seq_pos_max(0) == -1
    ctx.decode_tokens(long[:n_ctx], pos0=0)
    assert ctx.seq_pos_max(0) == n_ctx - 1


# ---------------------------------------------------------------------------------------
# Wrong dtypes and shapes, empty inputs


def test_wrong_dtypes_and_shapes(tiny_ctx: lb.Context, toks: list[int]) -> None:
    with pytest.raises(TypeError, match=exact(
            "[Context.decode_tokens] token array must hold integers, got dtype float32")):
        tiny_ctx.decode_tokens(np.array(toks, dtype=np.float32), pos0=0)
    with pytest.raises(lb.InvalidArgumentError, match=exact(
            "[Context.decode_tokens] token array must be 1-D, got 2 dimensions")):
        tiny_ctx.decode_tokens(np.array([toks[:2], toks[2:4]]), pos0=0)
    batch = lb.Batch(8)
    with pytest.raises(TypeError, match="integers"):
        batch.set_tokens(np.array([1.5, 2.5]))
    with pytest.raises(lb.InvalidArgumentError, match=exact(
            "[Batch.assign] 9 tokens do not fit in capacity 8")):
        batch.set_tokens(np.arange(9, dtype=np.int32))
    embd = lb.Batch(4, embd=64)
    with pytest.raises(lb.InvalidArgumentError, match=r"^\[Batch\.set_embd\] "):
        embd.set_embd(np.zeros((2, 63), dtype=np.float32))
    chain = lb.SamplerChain().add_greedy()
    with pytest.raises(lb.InvalidArgumentError, match=exact(
            "[SamplerChain.apply] candidates must be a contiguous 1-D array of llamabind.token_data_dtype")):
        chain.apply(np.zeros(4, dtype=np.float32))
    with pytest.raises(lb.InvalidArgumentError, match=r"^\[Context\.set_control_vector\] "):
        tiny_ctx.set_control_vector(np.zeros(63, dtype=np.float32), 1, 1)
    assert tiny_ctx.seq_pos_max(0) == -1
    tiny_ctx.decode_tokens(np.array(toks, dtype=np.int64), pos0=0)
    assert tiny_ctx.seq_pos_max(0) == len(toks) - 1


def test_empty_inputs(tiny: lb.Model, tiny_ctx: lb.Context, tiny_path: Path) -> None:
    vocab = tiny.vocab
    assert vocab.tokenize("", add_special=False) == []
    assert vocab.tokenize("", add_special=True) == [vocab.bos]
    assert vocab.tokenize(b"", add_special=False) == []
    assert vocab.detokenize([]) == b""
    with pytest.raises(lb.InvalidArgumentError, match=exact("[Context.decode_tokens] no tokens given")):
        tiny_ctx.decode_tokens([], pos0=0)
    with pytest.raises(lb.InvalidArgumentError, match=exact("[Batch.from_tokens] no tokens given")):
        lb.Batch.from_tokens([])
    with pytest.raises(lb.StateError, match=exact("[Context.state_set] empty state")):
        tiny_ctx.state_set(b"")
    chain = lb.SamplerChain().add_top_k(3).add_dist(1)
    with pytest.raises(lb.InvalidArgumentError, match=exact("[SamplerChain.apply] no candidates: the array is empty")):
        chain.apply(np.zeros(0, dtype=lb.token_data_dtype))
    cands = np.zeros(4, dtype=lb.token_data_dtype)
    cands["id"] = [7, 8, 9, 10]
    cands["logit"] = [0.0, 5.0, 1.0, 0.5]
    _, selected = chain.apply(cands)
    assert 0 <= selected < 4
    llm = lb.Llama(str(tiny_path), n_ctx=64, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    try:
        assert llm.tokenize(b"", add_bos=False) == []
        assert llm.detokenize([]) == b""
        out_empty = llm.create_completion("", max_tokens=2, temperature=0.0)
        assert out_empty["usage"]["prompt_tokens"] == 1  # the BOS token alone
    finally:
        llm.close()
    tiny_ctx.decode_tokens([vocab.bos], pos0=0)
    # An empty grammar is llama.cpp's "no grammar": it constrains nothing.
    unconstrained = lb.SamplerChain().add_grammar(vocab, "").add_greedy()
    assert unconstrained.sample(tiny_ctx) == int(np.argmax(tiny_ctx.logits_ith(-1)))


# ---------------------------------------------------------------------------------------
# Invalid UTF-8 in and out


def test_invalid_utf8_in(tiny: lb.Model) -> None:
    vocab = tiny.vocab
    bad = b"abc \xff\xfe \xc3( \xed\xa0\x80 end"
    ids = vocab.tokenize(bad, add_special=False)
    assert ids and all(0 <= t < vocab.n_tokens for t in ids)
    # Byte fallback keeps the valid parts; the bytes around the invalid ones come back as bytes.
    out = vocab.detokenize(ids)
    assert out.startswith(b"abc \xff\xfe") and out.endswith(b" end"), out
    with pytest.raises(lb.InvalidArgumentError, match=exact(
            "[Vocab.tokenize] text is not valid Unicode (it holds lone surrogates)")):
        vocab.tokenize("lone surrogate \ud800")
    assert vocab.tokenize("ok", add_special=False) == vocab.tokenize(b"ok", add_special=False)


def test_invalid_utf8_out(smollm2: lb.Model) -> None:
    """A byte token alone is not valid UTF-8: detokenize gives the raw bytes, text() and the
    high-level API replace them, and nothing raises."""
    vocab = smollm2.vocab
    euro = "€".encode()
    ids = vocab.tokenize(euro, add_special=False)
    assert b"".join(vocab.token_to_piece(t) for t in ids) == euro
    # The byte-level BPE vocabulary has a token for the lone lead byte 0xE2.
    lone = [t for t in range(vocab.n_tokens) if vocab.token_to_piece(t) == b"\xe2"]
    assert len(lone) == 1
    assert vocab.detokenize(lone) == b"\xe2"
    assert vocab.detokenize(lone + ids) == b"\xe2" + euro
    assert isinstance(vocab.text(lone[0]), str)
    # Invalid UTF-8 given to the byte-level BPE tokenizer becomes U+FFFD first.
    assert vocab.detokenize(vocab.tokenize(b"\xe2", add_special=False)) == "\ufffd".encode()


def test_llama_output_that_is_not_utf8(tiny_path: Path) -> None:
    """Forcing lone UTF-8 lead bytes (SPM byte tokens <0xE2>) into a completion: the text is a
    str (the partial character replaced), streamed or not, and the Llama keeps working."""
    llm = lb.Llama(str(tiny_path), n_ctx=64, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    try:
        byte_e2 = [3 + 0xE2]  # the SPM vocabulary's byte tokens <0x00>..<0xFF> are ids 3..258
        assert llm.detokenize(byte_e2) == b"\xe2"
        out = llm.create_completion("Hi", max_tokens=3, temperature=0.0, logit_bias={byte_e2[0]: 1000.0})
        assert isinstance(out["choices"][0]["text"], str)
        assert out["usage"]["completion_tokens"] == 3
        chunks = list(llm.create_completion("Hi", max_tokens=3, temperature=0.0, stream=True,
                                            logit_bias={byte_e2[0]: 1000.0}))
        assert all(isinstance(c["choices"][0]["text"], str) for c in chunks)
        again = llm.create_completion("Hi", max_tokens=2, temperature=0.0)
        assert again["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


# ---------------------------------------------------------------------------------------
# Session files of another version


def _session_file(ctx: lb.Context, toks: list[int], path: Path) -> bytes:
    ctx.decode_tokens(toks, pos0=0)
    ctx.state_save_file(path, toks)
    return path.read_bytes()


@pytest.mark.parametrize("field", ["magic", "version"])
def test_session_file_of_another_version_is_state_error(make_tiny_ctx, toks: list[int], tmp_path: Path,
                                                        field: str) -> None:
    src = make_tiny_ctx()
    good = tmp_path / "good.session"
    data = _session_file(src, toks, good)
    magic, version = struct.unpack_from("<II", data, 0)
    patched = bytearray(data)
    if field == "magic":
        struct.pack_into("<I", patched, 0, magic ^ 0x01010101)
    else:
        struct.pack_into("<I", patched, 4, version + 1)
    bad = tmp_path / f"bad-{field}.session"
    bad.write_bytes(bytes(patched))
    ctx = make_tiny_ctx()
    with pytest.raises(lb.StateError, match=starts(f"[Context.state_load_file] could not load '{bad}'")):
        ctx.state_load_file(bad)
    assert ctx.seq_pos_max(0) == -1
    assert ctx.state_load_file(good) == toks
    assert ctx.seq_pos_max(0) == len(toks) - 1


def test_truncated_session_file_is_state_error(make_tiny_ctx, toks: list[int], tmp_path: Path) -> None:
    src = make_tiny_ctx()
    good = tmp_path / "good.session"
    data = _session_file(src, toks, good)
    ctx = make_tiny_ctx()
    for n in (0, 3, 8, 12, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut-{n}.session"
        cut.write_bytes(data[:n])
        with pytest.raises(lb.StateError, match=starts(f"[Context.state_load_file] could not load '{cut}'")):
            ctx.state_load_file(cut)
        assert ctx.seq_pos_max(0) == -1
    assert ctx.state_load_file(good) == toks


# ---------------------------------------------------------------------------------------
# Adapters for another architecture


def test_lora_for_another_architecture(tiny: lb.Model, tiny_ctx: lb.Context, toks: list[int], tmp_path: Path) -> None:
    from tiny_model import write_lora_adapter

    other = write_lora_adapter(tmp_path / "gemma3-lora.gguf", {"blk.0.attn_q.weight": (64, 64)}, arch="gemma3")
    with pytest.raises(lb.AdapterError, match=starts(f"[LoraAdapter.load] failed to load adapter '{other}'")) as info:
        lb.LoraAdapter(tiny, other)
    assert "gemma3" in str(info.value) and "llama" in str(info.value)
    good = write_lora_adapter(tmp_path / "llama-lora.gguf", {"blk.0.attn_q.weight": (64, 64)})
    with lb.LoraAdapter(tiny, good) as adapter:
        tiny_ctx.set_lora_adapters([(adapter, 1.0)])
        tiny_ctx.decode_tokens(toks, pos0=0)
        assert np.isfinite(tiny_ctx.logits_ith(-1)).all()


# ---------------------------------------------------------------------------------------
# Use after close(), double close()


def test_use_after_close_and_double_close_of_every_object(tiny_path: Path, toks: list[int], tmp_path: Path) -> None:
    from tiny_model import write_lora_adapter

    model = lb.Model(tiny_path)
    ctx = lb.Context(model, n_ctx=64, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    chain = lb.SamplerChain().add_greedy()
    batch = lb.Batch.from_tokens(toks)
    adapter = lb.LoraAdapter(model, write_lora_adapter(tmp_path / "a.gguf", {"blk.0.attn_q.weight": (64, 64)}))
    vocab = model.vocab
    closed = [
        (adapter, lambda: adapter.metadata, "[LoraAdapter] the adapter is closed"),
        (chain, lambda: chain.sample(ctx), "[SamplerChain] the sampler chain is closed"),
        (batch, lambda: ctx.decode(batch), "[Batch] the batch is closed"),
        (ctx, lambda: ctx.decode_tokens(toks, pos0=0), "[Context] the context is closed"),
        (model, lambda: model.n_vocab, "[Model] the model is closed"),
    ]
    for obj, use, message in closed:
        obj.close()
        obj.close()  # idempotent
        assert obj.closed
        with pytest.raises(lb.ClosedError, match=exact(message)):
            use()
    # A Vocab holds its own reference to the weights: it outlives Model.close().
    assert vocab.detokenize(toks[1:]) == TEXT.encode()

    llm = lb.Llama(str(tiny_path), n_ctx=64, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    llm.close()
    llm.close()
    with pytest.raises(lb.ClosedError, match=exact("[Llama] the model is closed")):
        llm.create_completion("Hello", max_tokens=1)


# ---------------------------------------------------------------------------------------
# kv_overrides that would make llama.cpp abort


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"llama.block_count": 0}, "llama.block_count is 0 (must be 1 to 512)"),
        ({"llama.block_count": 600}, "llama.block_count is 600 (must be 1 to 512)"),
        ({"llama.rope.scaling.type": "bogus"}, "unknown llama.rope.scaling.type 'bogus'"),
        ({"llama.expert_used_count": 2},
         "inconsistent experts (llama.expert_count 0, expert_used_count 2, expert_group_count 0, "
         "expert_group_used_count 0): more experts used than exist"),
    ],
)
def test_kv_overrides_that_would_abort_llama_cpp_raise(tiny_path: Path, overrides: dict[str, object],
                                                       reason: str) -> None:
    with pytest.raises(lb.ModelLoadError, match=exact(
            f"[Model.load] '{tiny_path}' is not a valid GGUF file (with the given kv_overrides): {reason}")) as info:
        lb.Model(tiny_path, kv_overrides=overrides)
    assert info.value.filename == str(tiny_path)
    with lb.Model(tiny_path, kv_overrides={"llama.context_length": 64}) as model:
        assert model.n_ctx_train == 64


# ---------------------------------------------------------------------------------------
# A model without a tokenizer


def test_model_without_a_tokenizer_raises_instead_of_aborting(tiny_path: Path, tmp_path: Path) -> None:
    """llama.cpp asserts (aborts the process) when a vocabulary of type NONE is asked to
    tokenize or to describe a token; llamabind raises."""
    from hostile_gguf import STRING, parse

    path = tmp_path / "no-tokenizer.gguf"
    image = parse(tiny_path).image()
    image.set("tokenizer.ggml.model", STRING, "none")
    image.write(path)
    with lb.Model(path, vocab_only=True) as model:
        vocab = model.vocab
        assert vocab.type == lb.VocabType.NONE
        message = "this model has no tokenizer (tokenizer.ggml.model is 'none')"
        with pytest.raises(lb.InvalidArgumentError, match=exact(f"[Vocab.tokenize] {message}")):
            vocab.tokenize("hello")
        if vocab.n_tokens > 0:
            with pytest.raises(lb.InvalidArgumentError, match=exact(f"[Vocab.token_to_piece] {message}")):
                vocab.token_to_piece(0)
            with pytest.raises(lb.InvalidArgumentError, match=exact(f"[Vocab.detokenize] {message}")):
                vocab.detokenize([0])
            with pytest.raises(lb.InvalidArgumentError, match=exact(f"[Vocab.attr] {message}")):
                vocab.attr(0)
        assert vocab.n_tokens >= 0


# ---------------------------------------------------------------------------------------


@pytest.fixture
def decoded_tiny(make_tiny_ctx, toks: list[int]) -> lb.Context:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks, pos0=0)
    return ctx
