"""Draft models for speculative decoding, with llama-cpp-python's interface.

``Llama(draft_model=...)`` speculates with them: a LlamaPromptLookupDecoding runs as llamabind's
native prompt lookup (`_core.NgramDrafter`, with its max_ngram_size and num_pred_tokens), any
other LlamaDraftModel is called for drafts that the model then verifies. Both also work on
their own: called with the tokens so far, they return draft tokens.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import numpy.typing as npt


class LlamaDraftModel(abc.ABC):
    """Proposes tokens that are likely to follow `input_ids`."""

    @abc.abstractmethod
    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        """Draft tokens (possibly none) continuing input_ids."""


class LlamaPromptLookupDecoding(LlamaDraftModel):
    """Prompt lookup: finds the latest earlier occurrence of the last n-gram (n from
    max_ngram_size down to 1) and proposes the tokens that followed it."""

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10) -> None:
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens

    @staticmethod
    def find_candidate_pred_tokens(input_ids: npt.NDArray[np.intc], max_ngram_size: int,
                                   num_pred_tokens: int) -> npt.NDArray[np.intc]:
        ids = np.asarray(input_ids, dtype=np.intc)
        n_ids = len(ids)
        for n in range(min(max_ngram_size, n_ids - 1), 0, -1):
            tail = ids[n_ids - n:]
            # Windows over everything but the tail itself, newest first.
            windows = np.lib.stride_tricks.sliding_window_view(ids[: n_ids - 1], n)
            hits = np.flatnonzero((windows == tail).all(axis=1))
            for start in hits[::-1]:
                follow = ids[start + n: start + n + num_pred_tokens]
                if len(follow):
                    return follow.copy()
        return np.zeros(0, dtype=np.intc)

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        return self.find_candidate_pred_tokens(input_ids, self.max_ngram_size, self.num_pred_tokens)
