"""SamplingParams: every llama.cpp sampler behind one reusable object.

    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, dry_multiplier=0.8, seed=1)
    llm.create_completion("Once upon a time", sampling=params)

The chain follows llama.cpp's own order (common/sampling.cpp): logit bias, Python logits
processors, penalties, DRY, grammar, top-n-sigma, top-k, typical, top-p, min-p, XTC,
temperature, then the selecting sampler (dist, mirostat, adaptive-p, or greedy when the
temperature is 0).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._core import DEFAULT_SEED, Model, SamplerChain

if TYPE_CHECKING:
    from .llama_grammar import LlamaGrammar

logger = logging.getLogger("llamabind")

LogitsProcessor = Callable[[npt.NDArray[np.intc], npt.NDArray[np.single]], npt.NDArray[np.single]]


@dataclass
class SamplingParams:
    """How the next token is chosen. Defaults are llama-cpp-python's create_completion
    defaults; samplers at their neutral value (1.0 for top_p/typical_p/repeat_penalty, 0 for
    the others, -1 for top_n_sigma/adaptive_p_target) are left out of the chain."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: Sequence[str] = ("\n", ":", '"', "*")
    top_n_sigma: float = -1.0
    adaptive_p_target: float = -1.0
    adaptive_p_decay: float = 0.9
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    min_keep: int = 1
    seed: int | None = None
    logit_bias: dict[int, float] | None = None
    grammar: LlamaGrammar | None = None
    logits_processor: Sequence[LogitsProcessor] | None = None
    # Accepted for llama-cpp-python compatibility; the pinned llama.cpp has no such samplers.
    tfs_z: float = 1.0
    penalize_nl: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def build(self, model: Model, history: Sequence[int] = (),
              input_ids: Callable[[], npt.NDArray[np.intc]] | None = None, n_ctx: int | None = None) -> SamplerChain:
        """A fresh SamplerChain for `model`. `history` (usually the prompt) seeds the
        penalty and DRY samplers, as llama.cpp's server does; `input_ids` gives logits
        processors the tokens so far; `n_ctx` is what a last_n of -1 ("the whole context")
        means (default: the model's training context)."""
        window = n_ctx or model.n_ctx_train
        if self.tfs_z != 1.0:
            logger.warning("tfs_z is ignored: llama.cpp removed tail-free sampling")
        vocab = model.vocab
        n_vocab = vocab.n_tokens
        seed = DEFAULT_SEED if self.seed is None or self.seed < 0 else int(self.seed) & 0xFFFFFFFF
        chain = SamplerChain()
        if self.logit_bias:
            chain.add_logit_bias(n_vocab, {int(k): float(v) for k, v in self.logit_bias.items()})
        if self.logits_processor:
            chain.add_custom(_ProcessorSampler(self.logits_processor, input_ids))
        penalties = self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0
        if penalties and self.penalty_last_n != 0:
            chain.add_penalties(n_vocab, window if self.penalty_last_n < 0 else self.penalty_last_n,
                                self.repeat_penalty, self.frequency_penalty, self.presence_penalty)
        if self.dry_multiplier > 0.0 and self.dry_penalty_last_n != 0:
            chain.add_dry(vocab, self.dry_multiplier, self.dry_base, self.dry_allowed_length,
                          window if self.dry_penalty_last_n < 0 else self.dry_penalty_last_n,
                          list(self.dry_sequence_breakers))
        # Only the history-aware samplers above see the prompt.
        for token in history:
            chain.accept(int(token))
        if self.grammar is not None:
            g = self.grammar
            if g.lazy_patterns or g.lazy_tokens:
                chain.add_grammar_lazy(vocab, g.grammar, g.root, list(g.lazy_patterns), list(g.lazy_tokens))
            else:
                chain.add_grammar(vocab, g.grammar, g.root)
        if self.temperature <= 0.0:
            chain.add_greedy()
            return chain
        if self.mirostat_mode == 1:
            chain.add_temp(self.temperature)
            chain.add_mirostat(n_vocab, seed, self.mirostat_tau, self.mirostat_eta, 100)
            return chain
        if self.mirostat_mode == 2:
            chain.add_temp(self.temperature)
            chain.add_mirostat_v2(seed, self.mirostat_tau, self.mirostat_eta)
            return chain
        if self.mirostat_mode not in (0, 1, 2):
            raise ValueError(f"mirostat_mode must be 0, 1 or 2, got {self.mirostat_mode}")
        keep = max(1, self.min_keep)
        if self.top_n_sigma > 0.0:
            chain.add_top_n_sigma(self.top_n_sigma)
        if self.top_k > 0:
            chain.add_top_k(self.top_k)
        if self.typical_p < 1.0:
            chain.add_typical(self.typical_p, keep)
        if self.top_p < 1.0:
            chain.add_top_p(self.top_p, keep)
        if self.min_p > 0.0:
            chain.add_min_p(self.min_p, keep)
        if self.xtc_probability > 0.0:
            chain.add_xtc(self.xtc_probability, self.xtc_threshold, keep, seed)
        if self.dynatemp_range > 0.0:
            chain.add_temp_ext(self.temperature, self.dynatemp_range, self.dynatemp_exponent)
        else:
            chain.add_temp(self.temperature)
        if self.adaptive_p_target >= 0.0:
            chain.add_adaptive_p(self.adaptive_p_target, self.adaptive_p_decay, seed)
        else:
            chain.add_dist(seed)
        return chain


class _ProcessorSampler:
    """Runs llama-cpp-python style logits processors, f(input_ids, scores) -> scores, as the
    first stage of the chain, where the candidates are still the whole vocabulary."""

    name = "logits_processor"

    def __init__(self, processors: Sequence[LogitsProcessor],
                 input_ids: Callable[[], npt.NDArray[np.intc]] | None) -> None:
        self._processors = list(processors)
        self._input_ids = input_ids

    def apply(self, candidates: npt.NDArray[Any]) -> None:
        ids = candidates["id"]
        scores = np.empty(int(ids.max()) + 1 if len(ids) else 0, dtype=np.single)
        scores[ids] = candidates["logit"]
        input_ids = self._input_ids() if self._input_ids else np.empty(0, dtype=np.intc)
        for processor in self._processors:
            scores = processor(input_ids, scores)
        candidates["logit"] = np.asarray(scores, dtype=np.single)[ids]
