"""LlamaState: a snapshot of a Llama's context, as ``Llama.save_state`` returns it and the
state caches (``llama_cache``) store it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class LlamaState:
    """A snapshot of a Llama's context: tokens, logits kept, and llama.cpp's state bytes."""

    def __init__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single], n_tokens: int,
                 llama_state: bytes, llama_state_size: int, seed: int) -> None:
        self.input_ids = input_ids
        self.scores = scores
        self.n_tokens = n_tokens
        self.llama_state = llama_state
        self.llama_state_size = llama_state_size
        self.seed = seed
