"""Vocab of the real models against gguf-py's reading of the same file and the token-text
rules of SentencePiece and byte-level BPE; tokenization of long, odd and partial input."""

from __future__ import annotations

import threading
import time

import gguf
import numpy as np
import pytest

import llamabind as lb
from gguf_ref import (
    BYTE,
    CONTROL,
    EOG_TEXTS,
    NORMAL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    GGUFRef,
    byte_token_text,
    expected_piece,
)

# Defaults of llama_vocab::impl::load when the file has no key, per tokenizer.ggml.model.
DEFAULT_IDS = {
    "llama": {"bos": 1, "eos": 2, "pad": -1, "sep": -1, "mask": -1},  # SPM
    "gpt2": {"bos": 11, "eos": 11, "pad": -1, "sep": -1, "mask": -1},  # BPE
}
DEFAULT_ADD = {"llama": {"bos": True, "eos": False}, "gpt2": {"bos": False, "eos": False}}
ID_KEYS = {
    "bos": gguf.Keys.Tokenizer.BOS_ID,
    "eos": gguf.Keys.Tokenizer.EOS_ID,
    "pad": gguf.Keys.Tokenizer.PAD_ID,
    "sep": gguf.Keys.Tokenizer.SEP_ID,
    "mask": gguf.Keys.Tokenizer.MASK_ID,
}
VOCAB_TYPE = {"llama": lb.VocabType.SPM, "gpt2": lb.VocabType.BPE}
# Texts llama.cpp takes for the end-of-turn token when the file names none.
EOT_TEXTS = {b"<|eot_id|>", b"<|im_end|>", b"<|end|>", b"<end_of_turn>", b"<|endoftext|>", b"<|end_of_text|>", b"<EOT>"}
# The base attribute of each tokenizer.ggml.token_type (llama.cpp may add flags, e.g. CONTROL
# for end-of-generation texts or UNUSED for control tokens named "unused").
TYPE_ATTR = {
    NORMAL: lb.TokenAttr.NORMAL,
    UNKNOWN: lb.TokenAttr.UNKNOWN,
    CONTROL: lb.TokenAttr.CONTROL,
    USER_DEFINED: lb.TokenAttr.USER_DEFINED,
    UNUSED: lb.TokenAttr.UNUSED,
    BYTE: lb.TokenAttr.BYTE,
}
# A special token written out in each model's chat format.
SPECIAL_TEXT = {"smollm2": "<|im_start|>", "gemma3": "<start_of_turn>"}


def tokenizer_model(ref: GGUFRef) -> str:
    return str(ref.get("tokenizer.ggml.model"))


def sample_ids(n_vocab: int, extra: tuple[int, ...] = ()) -> list[int]:
    rng = np.random.default_rng(1234)
    ids = {0, 1, 2, n_vocab // 2, n_vocab - 2, n_vocab - 1, *extra}
    ids.update(int(i) for i in rng.integers(0, n_vocab, 300))
    return sorted(i for i in ids if 0 <= i < n_vocab)


# ---------------------------------------------------------------------------------------
# Special tokens and per-token data


def test_vocab_type_follows_tokenizer_model(real) -> None:
    assert real.model.vocab.type == VOCAB_TYPE[tokenizer_model(real.ref)]


def test_special_token_ids_match_the_file(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    defaults = DEFAULT_IDS[tokenizer_model(ref)]
    for name, key in ID_KEYS.items():
        assert getattr(vocab, name) == ref.get(key, defaults[name]), name
    assert ref.has(ID_KEYS["bos"]) and ref.has(ID_KEYS["eos"])  # the files do name them


def test_eot_is_the_files_or_found_by_its_text(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    if ref.has(gguf.Keys.Tokenizer.EOT_ID):
        assert vocab.eot == ref.get(gguf.Keys.Tokenizer.EOT_ID)
    else:
        candidates = {i for i, text in enumerate(ref.tokens) if text in EOT_TEXTS}
        assert candidates
        assert vocab.eot in candidates


def test_newline_token(real) -> None:
    # SPM: the byte token <0x0A>; BPE: what "\n" tokenizes to, GPT-2's "Ċ".
    ref = real.ref
    assert real.model.vocab.nl == ref.token_ids[byte_token_text(tokenizer_model(ref), 0x0A)]


def test_add_bos_and_add_eos_match_the_file(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    defaults = DEFAULT_ADD[tokenizer_model(ref)]
    assert vocab.add_bos is ref.get("tokenizer.ggml.add_bos_token", defaults["bos"])
    assert vocab.add_eos is ref.get("tokenizer.ggml.add_eos_token", defaults["eos"])


def test_text_and_score_match_the_file(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    for i in sample_ids(len(ref.tokens), (vocab.bos, vocab.eos)):
        assert vocab.text(i) == ref.tokens[i].decode("utf-8", errors="replace"), i
        expected = 0.0 if ref.scores is None else float(ref.scores[i])
        assert vocab.score(i) == expected, i
    with pytest.raises(lb.OutOfRangeError):
        vocab.text(len(ref.tokens))
    with pytest.raises(lb.OutOfRangeError):
        vocab.score(-1)


def test_attr_agrees_with_token_type(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    types = ref.token_types
    attrs = np.array([int(vocab.attr(i)) for i in range(len(types))])
    for ttype, flag in TYPE_ATTR.items():
        of_type = types == ttype
        assert np.all(attrs[of_type] & int(flag)), f"{flag!r} missing on tokens of type {ttype}"
    control = np.flatnonzero(types == CONTROL)
    assert len(control) > 0
    assert all(vocab.is_control(int(i)) for i in control[:200])
    assert isinstance(vocab.attr(0), lb.TokenAttr)


def test_eos_ends_generation_and_bos_is_control(real) -> None:
    vocab = real.model.vocab
    assert vocab.is_eog(vocab.eos)
    assert vocab.is_eog(vocab.eot)
    assert vocab.is_control(vocab.bos)
    word = vocab.tokenize("Hello", add_special=False)[0]
    assert not vocab.is_eog(word)
    assert not vocab.is_control(word)


# ---------------------------------------------------------------------------------------
# Tokenize and detokenize


def test_add_special_adds_bos_exactly_when_the_model_asks(real) -> None:
    vocab = real.model.vocab
    text = "The capital of France is Paris."
    plain = vocab.tokenize(text, add_special=False)
    with_special = vocab.tokenize(text, add_special=True)
    assert with_special == ([vocab.bos] if vocab.add_bos else []) + plain
    assert vocab.bos not in plain


def test_parse_special_makes_one_token_of_a_special_text(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    special = SPECIAL_TEXT[real.name]
    special_id = ref.token_ids[special.encode()]
    text = f"{special}user\nHi"
    parsed = vocab.tokenize(text, add_special=False, parse_special=True)
    literal = vocab.tokenize(text, add_special=False, parse_special=False)
    assert parsed[0] == special_id
    assert special_id not in literal
    assert len(literal) > len(parsed)
    # Both detokenize back to the text once the special token is rendered as text.
    assert vocab.detokenize(parsed, unparse_special=True) == text.encode()
    assert vocab.detokenize(literal) == text.encode()
    assert vocab.detokenize(parsed) == b"user\nHi"


def test_token_to_piece_follows_the_token_text(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    types = ref.token_types
    ids = sample_ids(len(ref.tokens))
    ids += [int(i) for i in np.flatnonzero(types == CONTROL)[:50]]
    ids += [int(i) for i in np.flatnonzero(types == BYTE)[:50]]
    ids += [i for text, i in ref.token_ids.items() if text in EOG_TEXTS]  # e.g. Gemma's user-defined "</s>"
    for i in ids:
        assert vocab.token_to_piece(i) == expected_piece(ref, i), i
        assert vocab.token_to_piece(i, special=True) == expected_piece(ref, i, special=True), i


def test_token_to_piece_lstrip_skips_up_to_that_many_spaces(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    spaces = byte_token_text(tokenizer_model(ref), 0x20) if tokenizer_model(ref) == "gpt2" else "\u2581".encode()
    word = ref.token_ids[spaces + b"the"]
    assert vocab.token_to_piece(word) == b" the"
    assert vocab.token_to_piece(word, lstrip=1) == b"the"
    assert vocab.token_to_piece(word, lstrip=5) == b"the"
    # A run of three spaces: "ĠĠĠ" in BPE; Gemma's SPM vocabulary stores such runs verbatim.
    run = ref.token_ids.get(spaces * 3, ref.token_ids.get(b"   "))
    assert run is not None
    assert vocab.token_to_piece(run) == b"   "
    assert vocab.token_to_piece(run, lstrip=2) == b" "
    with pytest.raises(lb.InvalidArgumentError):
        vocab.token_to_piece(word, lstrip=-1)


def test_detokenize_remove_special_and_unparse_special(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    text = b"Hello world"
    bos_text = ref.tokens[vocab.bos]
    ids = [vocab.bos] + vocab.tokenize(text, add_special=False)
    assert vocab.detokenize(ids) == text  # control tokens render as nothing
    assert vocab.detokenize(ids, unparse_special=True) == bos_text + text
    # remove_special drops the BOS only when the model adds one itself.
    kept = b"" if vocab.add_bos else bos_text
    assert vocab.detokenize(ids, remove_special=True, unparse_special=True) == kept + text
    assert vocab.detokenize([]) == b""


def test_str_bytes_and_buffers_tokenize_alike(real) -> None:
    vocab = real.model.vocab
    text = "Grüße, 世界! 🙂 naïve café\n\ttabs"
    data = text.encode()
    expected = vocab.tokenize(text)
    assert vocab.tokenize(data) == expected
    assert vocab.tokenize(bytearray(data)) == expected
    assert vocab.tokenize(memoryview(data)) == expected
    assert vocab.detokenize(vocab.tokenize(text, add_special=False)) == data
    with pytest.raises(TypeError):
        vocab.tokenize(12345)


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe abc \xc3", b"\xc3(", b"\xe2\x82", b"\x80\x80\x80", b"\xed\xa0\x80", b"ok\x00nul"],
    ids=["ff-fe", "bad-continuation", "truncated", "lone-continuations", "surrogate", "nul"],
)
def test_invalid_utf8_bytes_tokenize_without_crashing(real, data: bytes) -> None:
    vocab = real.model.vocab
    ids = vocab.tokenize(data, add_special=False)
    assert ids and all(0 <= i < vocab.n_tokens for i in ids)
    assert isinstance(vocab.detokenize(ids), bytes)


def test_code_point_beyond_unicode_raises_a_llamabind_error(real) -> None:
    # F4 90 80 80 would be U+110000. Either tokenized (as bytes) or refused with llamabind's
    # own ValueError, never a bare exception from inside llama.cpp.
    vocab = real.model.vocab
    try:
        ids = vocab.tokenize(b"x \xf4\x90\x80\x80 y", add_special=False)
    except ValueError as e:
        assert isinstance(e, lb.InvalidArgumentError), f"{type(e).__module__}.{type(e).__qualname__}: {e}"
    else:
        assert all(0 <= i < vocab.n_tokens for i in ids)


def test_lone_surrogate_str_is_invalid_argument(real) -> None:
    with pytest.raises(lb.InvalidArgumentError):
        real.model.vocab.tokenize("abc\udc80")


def test_partial_utf8_detokenizes_to_bytes(real) -> None:
    # "€" is E2 82 AC; every byte has its own token (<0xNN> in SPM, GPT-2's map in BPE).
    vocab, ref = real.model.vocab, real.ref
    e2, x82, xac = (ref.token_ids[byte_token_text(tokenizer_model(ref), b)] for b in (0xE2, 0x82, 0xAC))
    assert vocab.token_to_piece(e2) == b"\xe2"
    head = vocab.detokenize([e2, x82])
    assert head == b"\xe2\x82"
    assert head.decode("utf-8", errors="replace") == "\ufffd"
    assert vocab.detokenize([e2, x82, xac]).decode() == "€"


def test_longest_piece_round_trips(real) -> None:
    vocab, ref = real.model.vocab, real.ref
    normal = np.flatnonzero(ref.token_types == NORMAL)
    longest = int(max(normal, key=lambda i: len(expected_piece(ref, int(i)))))
    piece = expected_piece(ref, longest)
    assert len(piece) > 32  # longer than the first buffer token_to_piece tries
    assert vocab.token_to_piece(longest) == piece
    assert vocab.detokenize([longest]) == piece
    assert vocab.tokenize(piece, add_special=False) == [longest]


@pytest.mark.parametrize(("name", "n_bytes"), [("smollm2", 2 << 20), ("gemma3", 256 << 10)])
def test_long_text_tokenizes_linearly_and_round_trips(name: str, n_bytes: int, request: pytest.FixtureRequest) -> None:
    vocab = request.getfixturevalue(name).vocab
    unit = "hello world "
    n = n_bytes // len(unit)
    # Every repetition adds the same tokens, so the count is linear in the repetitions.
    small, double = (len(vocab.tokenize(unit * k, add_special=False)) for k in (10, 20))
    per_unit = (double - small) // 10
    assert per_unit > 0

    beats = 0
    stop = threading.Event()

    def heartbeat() -> None:
        nonlocal beats
        while not stop.is_set():
            beats += 1
            time.sleep(0.001)

    text = unit * n
    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    time.sleep(0.02)
    before = beats
    start = time.perf_counter()
    ids = vocab.tokenize(text, add_special=False)
    elapsed = time.perf_counter() - start
    during = beats - before
    stop.set()
    thread.join(5)

    assert len(ids) == small + (n - 10) * per_unit
    assert vocab.detokenize(ids) == text.encode()
    if elapsed > 0.05:
        # The GIL is released for long texts: a held GIL would allow at most a beat or two.
        assert during >= max(5, int(0.05 * elapsed / 0.001)), (during, elapsed)
