"""llama.cpp's own verdict on grammars and texts, for the grammar and JSON-schema tests."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

import llamabind as lb
from llamabind._gbnf import compile_rules as _compile
from llamabind.llama_grammar import LlamaGrammar


def llama_cpp_parses(vocab: lb.Vocab, grammar: str, root: str = "root") -> str | None:
    """None if llama.cpp builds a grammar sampler from `grammar`, else its error message."""
    try:
        lb.SamplerChain().add_grammar(vocab, grammar, root)
    except lb.GrammarError as err:
        return str(err)
    return None


def _allowed(chain: lb.SamplerChain, token: int) -> bool:
    candidates = np.zeros(1, dtype=lb.token_data_dtype)
    candidates["id"] = token
    out, _ = chain.apply(candidates)
    return bool(np.isfinite(out["logit"][0]))


def llama_cpp_accepts(vocab: lb.Vocab, grammar: str, text: str, root: str = "root") -> bool:
    """Whether llama.cpp's grammar sampler lets `text` through, token by token, and then lets
    generation end: each token is offered alone, as the only candidate, and must keep a finite
    logit; the end-of-generation token must survive after the last one."""
    chain = lb.SamplerChain().add_grammar(vocab, grammar, root)
    tokens = vocab.tokenize(text, add_special=False)
    assert vocab.detokenize(tokens).decode("utf-8") == text, "the text must survive tokenization"
    for token in tokens:
        if not _allowed(chain, token):
            return False
        chain.accept(token)
    return _allowed(chain, vocab.eos)


_POOL = [chr(c) for c in range(0x20, 0x7F)] + ["\t", "\n", "é", "ß", "中", "😀", "\u2028"]


def random_sentence(grammar: LlamaGrammar, rng: random.Random, budget: int = 120) -> str:
    """A random text of `grammar` (white-box: walks its parsed rules). Alternatives are chosen at
    random until the text passes `budget` characters, then the shortest ways out are taken."""
    compiled = _compile(grammar._rules)
    inf = float("inf")
    shortest = dict.fromkeys(compiled.alts, inf)

    def length(alt: tuple[Any, ...]) -> float:
        return sum(shortest[s[1]] if s[0] == "r" else 1 for s in alt)

    changed = True
    while changed:
        changed = False
        for rule, alts in compiled.alts.items():
            best = min((length(a) for a in alts), default=inf)
            if best < shortest[rule]:
                shortest[rule], changed = best, True
    out: list[str] = []
    todo: list[Any] = [("r", grammar._root_id)]
    while todo:
        sym = todo.pop()
        if sym[0] == "r":
            alts = compiled.alts[sym[1]]
            if len(out) < budget:
                alt = rng.choice([a for a in alts if length(a) < inf])
            else:
                alt = min(alts, key=length)
            todo.extend(reversed(alt))
        elif sym[0] == "any":
            out.append(rng.choice(_POOL))
        elif sym[0] == "c":
            ranges, negated = sym[1], sym[2]
            if negated:
                out.append(rng.choice([c for c in _POOL if not any(lo <= ord(c) <= hi for lo, hi in ranges)]))
            else:
                lo, hi = rng.choice(ranges)
                if lo <= 0x7E and hi >= 0x20 and rng.random() < 0.8:
                    lo, hi = max(lo, 0x20), min(hi, 0x7E)
                out.append(chr(rng.randint(lo, hi)))
        else:
            raise ValueError("token references have no text")
    return "".join(out)
