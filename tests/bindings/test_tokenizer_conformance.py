"""Tokenizer conformance against llama.cpp's own test vectors.

Mirrors two of the pinned llama.cpp's tests:

- tests/test-tokenizer-0.cpp: for every models/ggml-vocab-*.gguf with .inp/.out files, each
  input text tokenizes (add_special=false, parse_special=false) to the expected ids;
- tests/test-tokenizer-1-spm.cpp (enabled by llama.cpp's CMake for ggml-vocab-llama-spm.gguf
  only): every token and every Unicode code point survives detokenize -> tokenize ->
  detokenize.

The expected values are llama.cpp's files, never our own output.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import llamabind as lb

ROOT = Path(__file__).resolve().parent.parent.parent
LLAMA_CPP_DIR = Path(os.environ.get("LLAMABIND_LLAMA_CPP_DIR", ROOT / "extern" / "llama.cpp"))
MODELS_DIR = LLAMA_CPP_DIR / "models"

# test-tokenizer-0.cpp's separator between the inputs of an .inp file.
SEPARATOR = b"\n__ggml_vocab_test__\n"

# The pinned tree ships 15 vocabularies with test vectors; fewer means files went missing.
MIN_VOCABS_WITH_VECTORS = 15


def vocabs_with_vectors() -> list[Path]:
    return sorted(
        p
        for p in MODELS_DIR.glob("ggml-vocab-*.gguf")
        if p.with_name(p.name + ".inp").is_file() and p.with_name(p.name + ".out").is_file()
    )


def _strip(line: bytes) -> bytes:
    # common's string_strip: std::isspace in the C locale.
    return line.strip(b" \t\n\v\f\r")


def read_tests(vocab_path: Path) -> dict[bytes, list[int]]:
    """read_tests() of test-tokenizer-0.cpp, byte for byte.

    The .inp file is split on SEPARATOR until the position reaches the end (so a trailing
    separator adds no empty case); the .out file has one line per case (std::getline: a
    final newline adds no line) of space-separated ids, stripped. Like the std::map there,
    a repeated input keeps the ids of its last occurrence.
    """
    raw = vocab_path.with_name(vocab_path.name + ".inp").read_bytes()
    out = vocab_path.with_name(vocab_path.name + ".out").read_bytes()

    sout = out.split(b"\n")
    if sout and sout[-1] == b"":
        sout.pop()

    sinp: list[bytes] = []
    pos = 0
    while pos < len(raw):
        nxt = raw.find(SEPARATOR, pos)
        if nxt == -1:
            sinp.append(raw[pos:])
            break
        sinp.append(raw[pos:nxt])
        pos = nxt + len(SEPARATOR)

    assert len(sinp) == len(sout), (
        f"{vocab_path.name}: {len(sinp)} inputs but {len(sout)} expected outputs"
    )

    tests: dict[bytes, list[int]] = {}
    for s, line in zip(sinp, sout):
        o = _strip(line)
        toks: list[int] = []
        p = 0
        while p < len(o):
            nxt = o.find(b" ", p)
            if nxt == -1:
                nxt = len(o)
            toks.append(int(o[p:nxt]))  # std::stoi
            p = nxt + 1
        tests[s] = toks
    return tests


VOCABS = vocabs_with_vectors()


def test_every_vocab_with_vectors_is_present(llama_cpp_dir: Path) -> None:
    found = [p.name for p in vocabs_with_vectors()]
    assert len(found) >= MIN_VOCABS_WITH_VECTORS, (
        f"only {len(found)} ggml-vocab-*.gguf with .inp/.out in {MODELS_DIR}: {found}"
    )
    # Spot checks of tokenizer families that must be among them.
    for name in ("llama-spm", "llama-bpe", "bert-bge", "gpt-2", "qwen2", "phi-3"):
        assert f"ggml-vocab-{name}.gguf" in found


def test_read_tests_parses_like_test_tokenizer_0(tmp_path: Path) -> None:
    # The parser itself: a trailing separator adds no case, an empty input is a case, the
    # .out lines are stripped and an empty line means no tokens, repeated inputs keep the last.
    vocab = tmp_path / "v.gguf"
    vocab.with_name("v.gguf.inp").write_bytes(
        b"a" + SEPARATOR + b"" + SEPARATOR + b" b\n" + SEPARATOR + b"a" + SEPARATOR
    )
    vocab.with_name("v.gguf.out").write_bytes(b" 1 2 \n\n 3\t\n4\n")
    assert read_tests(vocab) == {b"a": [4], b"": [], b" b\n": [3]}


@pytest.mark.parametrize("vocab_path", VOCABS, ids=lambda p: p.name.removeprefix("ggml-vocab-").removesuffix(".gguf"))
def test_tokenize_matches_llama_cpp_vectors(vocab_path: Path) -> None:
    tests = read_tests(vocab_path)
    assert tests, f"{vocab_path.name}: no test cases"
    model = lb.Model(vocab_path, vocab_only=True)
    vocab = model.vocab

    failures = []
    for text, expected in tests.items():
        got = vocab.tokenize(text, add_special=False, parse_special=False)
        if got != expected:
            failures.append(
                f"  case {text.decode('utf-8', 'backslashreplace')!r}:\n"
                f"    expected {expected}\n"
                f"    got      {got}"
            )
    assert not failures, f"{vocab_path.name}: {len(failures)} of {len(tests)} cases differ:\n" + "\n".join(failures)


@pytest.fixture(scope="module")
def spm_vocab() -> lb.Vocab:
    path = MODELS_DIR / "ggml-vocab-llama-spm.gguf"
    model = lb.Model(path, vocab_only=True)
    vocab = model.vocab
    assert vocab.type == lb.VocabType.SPM
    assert vocab.n_tokens == 32000
    return vocab


def test_spm_every_token_round_trips(spm_vocab: lb.Vocab) -> None:
    # test-tokenizer-1-spm.cpp, first loop. common_detokenize's `special` defaults to true,
    # i.e. llama_detokenize(remove_special=false, unparse_special=true).
    tokenize, detokenize = spm_vocab.tokenize, spm_vocab.detokenize
    failures = []
    for i in range(spm_vocab.n_tokens):
        s = detokenize([i], remove_special=False, unparse_special=True)
        tokens = tokenize(s, add_special=False, parse_special=True)
        check = detokenize(tokens, remove_special=False, unparse_special=True)
        if check != s:
            failures.append(f"token {i}: {s!r} -> {tokens} -> {check!r}")
    assert not failures, f"{len(failures)} tokens do not round-trip:\n" + "\n".join(failures[:20])


def test_spm_every_code_point_round_trips(spm_vocab: lb.Vocab) -> None:
    # test-tokenizer-1-spm.cpp, second loop: all code points but surrogates and the
    # unassigned planes 0x40000-0xE0000; U+2581 (9601, SentencePiece's space marker) is
    # exempt from the comparison. ~460k points, about a second: not marked slow.
    tokenize, detokenize = spm_vocab.tokenize, spm_vocab.detokenize
    failures = []
    n_checked = 0
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or 0x40000 <= cp <= 0xE0000:
            continue
        s = chr(cp).encode("utf-8")
        check = detokenize(tokenize(s, False, True), False, True)
        n_checked += 1
        if cp != 9601 and check != s:
            failures.append(f"U+{cp:04X}: {s!r} -> {check!r}")
    assert n_checked == 0x110000 - 0x800 - (0xE0000 - 0x40000 + 1)
    assert not failures, f"{len(failures)} code points do not round-trip:\n" + "\n".join(failures[:20])
