"""Tokenizer objects with llama-cpp-python's interface (``Llama(tokenizer=...)``)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from ._core import Model, Vocab, VocabType


def _detokenize(vocab: Vocab, tokens: list[int], special: bool) -> bytes:
    if vocab.type != VocabType.SPM or not tokens:
        return vocab.detokenize(tokens, unparse_special=special)
    # SentencePiece: the pieces as they are (llama.cpp would also drop the leading space of
    # a first word without BOS), less the space after BOS, as llama-cpp-python gives them.
    text = b"".join(vocab.token_to_piece(t, 0, special) for t in tokens)
    return text[1:] if tokens[0] == vocab.bos and text.startswith(b" ") else text


class BaseLlamaTokenizer(abc.ABC):
    """What Llama needs from a custom tokenizer."""

    @abc.abstractmethod
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        """Text to token ids."""

    @abc.abstractmethod
    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """Token ids to bytes; with prev_tokens, only the text the tokens add after them."""


class LlamaTokenizer(BaseLlamaTokenizer):
    """The model's own tokenizer (what Llama.tokenizer() returns), bound to a Llama, a Model
    or a Vocab."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama

    def _vocab(self) -> Vocab:
        source = self.llama
        if isinstance(source, Vocab):
            return source
        if isinstance(source, Model):
            return source.vocab
        vocab: Vocab = source._vocab  # a Llama's; ClosedError once it is closed
        return vocab

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        return self._vocab().tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """Token ids to bytes. With a SentencePiece vocabulary, as in llama-cpp-python, the
        space before the first word is dropped only after BOS, so detokenize(tokenize(text))
        gives the text back and tokens of a text's middle keep their leading space."""
        vocab = self._vocab()
        if prev_tokens:
            before = _detokenize(vocab, list(prev_tokens), special)
            both = _detokenize(vocab, list(prev_tokens) + list(tokens), special)
            return both[len(before):] if both.startswith(before) else both
        return _detokenize(vocab, list(tokens), special)

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        return self.tokenize(text.encode("utf-8", errors="ignore"), add_bos=add_bos, special=special)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.detokenize(tokens).decode("utf-8", errors="ignore")

    @classmethod
    def from_ggml_file(cls, path: str) -> LlamaTokenizer:
        """A tokenizer from a GGUF file's vocabulary alone (no weights are loaded)."""
        return cls(Model(path, vocab_only=True))


class LlamaHFTokenizer(BaseLlamaTokenizer):
    """Wraps a Hugging Face `transformers` tokenizer (needs transformers)."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf_tokenizer = hf_tokenizer

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        ids = self.hf_tokenizer.encode(text.decode("utf-8", errors="ignore"), add_special_tokens=special)
        return [int(t) for t in ids]

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        skip = not special
        if prev_tokens:
            before = self.hf_tokenizer.decode(list(prev_tokens), skip_special_tokens=skip).encode("utf-8", "ignore")
            both = self.hf_tokenizer.decode(list(prev_tokens) + list(tokens), skip_special_tokens=skip)
            both_b = str(both).encode("utf-8", "ignore")
            return both_b[len(before):]
        return str(self.hf_tokenizer.decode(list(tokens), skip_special_tokens=skip)).encode("utf-8", "ignore")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str) -> LlamaHFTokenizer:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ImportError("LlamaHFTokenizer needs transformers: pip install transformers") from exc
        return cls(AutoTokenizer.from_pretrained(pretrained_model_name_or_path))
