"""Independent references for the API tests: what gguf-py's ``GGUFReader`` reads from a GGUF
file, and the token-text rules of llama.cpp's tokenizer families written out from their specs
(SentencePiece's U+2581 space marker and ``<0xNN>`` byte tokens, GPT-2's byte-to-unicode map).

Nothing here calls llamabind: the tests compare llamabind's answers with these.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np

# tokenizer.ggml.token_type values (gguf.TokenType, llama.h's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (int(t) for t in gguf.TokenType)

SPM_SPACE = "\u2581".encode()  # SentencePiece writes a space as U+2581 LOWER ONE EIGHTH BLOCK

# Texts llama.cpp's vocabulary loader treats as end-of-generation tokens whatever their type,
# marking them CONTROL (llama_vocab::impl::load, "maintain a list of tokens that cause
# end-of-generation").
EOG_TEXTS = frozenset(
    t.encode()
    for t in (
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[",
    )
)  # fmt: skip


class GGUFRef:
    """A GGUF file as gguf-py reads it.

        ref = GGUFRef(path)
        ref.arch, ref.get("llama.block_count"), ref.tokens[42], ref.scalars()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.reader = gguf.GGUFReader(self.path)
        self.fields = self.reader.fields

    @property
    def arch(self) -> str:
        return str(self.get("general.architecture"))

    def has(self, key: str) -> bool:
        return key in self.fields

    def get(self, key: str, default: Any = None) -> Any:
        """A scalar as int/float/bool/str, an array as a list (of bytes for strings)."""
        field = self.fields.get(key)
        if field is None:
            return default
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            if field.types[-1] == gguf.GGUFValueType.STRING:
                return [bytes(field.parts[i]) for i in field.data]
            return field.contents()
        return field.contents()

    def scalars(self) -> dict[str, Any]:
        """Every non-array key of the file (the GGUF.* header pseudo-fields excluded)."""
        return {
            key: field.contents()
            for key, field in self.fields.items()
            if not key.startswith("GGUF.") and field.types[0] != gguf.GGUFValueType.ARRAY
        }

    @functools.cached_property
    def tokens(self) -> list[bytes]:
        """tokenizer.ggml.tokens as raw bytes."""
        return self.get("tokenizer.ggml.tokens")

    @functools.cached_property
    def token_ids(self) -> dict[bytes, int]:
        ids: dict[bytes, int] = {}
        for i, text in enumerate(self.tokens):
            ids.setdefault(text, i)
        return ids

    @functools.cached_property
    def token_types(self) -> np.ndarray:
        field = self.fields["tokenizer.ggml.token_type"]
        return np.array([field.parts[i][0] for i in field.data], dtype=np.int32)

    @functools.cached_property
    def scores(self) -> np.ndarray | None:
        field = self.fields.get("tokenizer.ggml.scores")
        if field is None:
            return None
        return np.array([field.parts[i][0] for i in field.data], dtype=np.float32)

    def tensor_data(self) -> dict[str, np.ndarray]:
        """Tensor name -> numpy data (shape = ggml ne reversed)."""
        return {t.name: np.array(t.data) for t in self.reader.tensors}


def metadata_text_matches(text: str, value: Any) -> bool:
    """Whether llama.cpp's string form of a GGUF scalar (gguf_kv_to_str: strings verbatim,
    booleans as true/false, integers in decimal, floats with %f) stands for ``value``."""
    if isinstance(value, str):
        return text == value
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, int):
        return int(text) == value
    return abs(float(text) - float(value)) <= max(1e-6, 1e-5 * abs(float(value)))


@functools.cache
def gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode``: each byte-level BPE character to its byte.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are mapped, in order, to
    U+0100 and up (so ' ' is 'Ġ' and '\\n' is 'Ċ').
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars)}


def gpt2_token_text(data: bytes) -> bytes:
    """The byte-level BPE token text that stands for ``data`` (UTF-8 encoded, as in the GGUF)."""
    encoder = {b: c for c, b in gpt2_byte_decoder().items()}
    return "".join(encoder[b] for b in data).encode()


def byte_token_text(tokenizer_model: str, byte: int) -> bytes:
    """The vocabulary entry of a single byte: ``<0xNN>`` for SentencePiece, GPT-2's map for BPE."""
    if tokenizer_model == "llama":
        return f"<0x{byte:02X}>".encode()
    if tokenizer_model == "gpt2":
        return gpt2_token_text(bytes([byte]))
    raise ValueError(f"no byte-token rule for tokenizer model {tokenizer_model!r}")


def expected_piece(ref: GGUFRef, token: int, *, special: bool = False) -> bytes:
    """The bytes a token stands for, from its vocabulary entry and type alone: control and
    unknown tokens (and end-of-generation texts, which llama.cpp makes control) render only
    when ``special``; user-defined tokens verbatim; byte tokens as their byte; normal
    SentencePiece tokens with U+2581 as a space; normal byte-level BPE tokens through GPT-2's
    byte map."""
    text = ref.tokens[token]
    ttype = int(ref.token_types[token])
    model = ref.get("tokenizer.ggml.model")
    if ttype in (CONTROL, UNKNOWN) or text in EOG_TEXTS:
        return text if special else b""
    if ttype == USER_DEFINED:
        return text
    if ttype == BYTE:
        return bytes([int(text[3:5], 16)])  # <0xNN>
    if model == "llama":
        return text.replace(SPM_SPACE, b" ")
    if model == "gpt2":
        decoder = gpt2_byte_decoder()
        return bytes(decoder[c] for c in text.decode())
    raise ValueError(f"no piece rule for tokenizer model {model!r}")
