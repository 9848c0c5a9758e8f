"""Speculative decoding through Llama: greedy output checked against llama.cpp's own
llama-speculative-simple (draft models) and against plain decoding (prompt lookup), the
sampled distribution unchanged (chi-square over fixed seeds), grammars / stop strings /
logprobs / streaming / stopping criteria / logits processors / logit bias / cancellation /
interleaved streams under speculation, llama-cpp-python's draft model classes, the vocabulary
check and the CLI.

Why draft-model output is held to llama-speculative-simple rather than to plain decoding:
llama.cpp's CPU kernels compute a batch of several tokens with other rounding than one token
at a time (logits of a verification batch differ from one-token decodes by up to ~0.9 on
SmolLM2 and ~0.35 on Qwen 0.5B, measured), so where the two best tokens are nearly tied the
speculative greedy choice can differ from the plain one. llama.cpp's tool diverges there
exactly as llamabind does (SmolLM2 on EDIT: "generator function" instead of "generator
expression"): with the same draft model, draft length and batching (the prompt but its last
token encoded, then [last token, drafts...] per step) the outputs are the same. Tests that
compare with plain decoding use prompts whose greedy continuation has no near tie (they check
that the top-2 logit gap stays above GAP_MIN at every token first)."""

from __future__ import annotations

import importlib.util
import logging
import math
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import llamabind as lb
from llamabind import LlamaDraftModel, LlamaPromptLookupDecoding, LogitsProcessorList, StoppingCriteriaList
from testutil import N_THREADS, greedy_reference_rows, llama_fixture, make_llama

ROOT = Path(__file__).resolve().parents[2]
SPEC_SIMPLE = ROOT / "build" / "bench" / "bin" / "llama-speculative-simple"


def _chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


# An edit whose answer repeats most of the prompt (prompt lookup's case), and a question.
EDIT = _chat("Rename the function total to sum_all and change nothing else:\ndef total(values):\n    result = 0\n"
             "    for value in values:\n        result += value\n    return result\n")
QUESTION = _chat("What is the capital of France? Answer in one sentence.")
PALINDROME = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a Python "
              "function that checks whether a string is a palindrome.<|im_end|>\n<|im_start|>assistant\n")
# Prompts without near ties in their greedy answers (on the models they are used with), which
# repeat the prompt: prompt lookup drafts most of them.
RECODE = _chat("Rewrite this code with the variable name count instead of n:\n```python\nn = 0\nfor item in items:\n"
               "    n += 1\nprint(n)\n```")
REPEAT = _chat("Repeat this sentence exactly: The cat sat on the mat and looked at the bird in the tree.")
FIX = _chat("Fix the typo in this sentence and write it again: The quick brwn fox jumps over the lazy dog.")
# The smallest top-2 logit gap (plain decoding) for which a comparison with plain decoding is
# meaningful: well above the batched-rounding differences measured on Qwen 0.5B (<= 0.35).
GAP_MIN = 1.0

qwen = llama_fixture("qwen05_path", flash_attn=False)


@pytest.fixture(scope="module")
def qwen_lookup(qwen05_path: Path) -> Any:
    with make_llama(qwen05_path, flash_attn=False, draft_model=LlamaPromptLookupDecoding(max_ngram_size=3,
                    num_pred_tokens=4), draft_adaptive=False) as llm:
        yield llm


@pytest.fixture(scope="session")
def speculative_simple() -> Path:
    """llama.cpp's llama-speculative-simple from the pinned source, built with bench/run.py's
    build_native when it is not there yet."""
    if not SPEC_SIMPLE.exists():
        spec = importlib.util.spec_from_file_location("llamabind_bench_run", ROOT / "bench" / "run.py")
        assert spec is not None and spec.loader is not None
        harness = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(harness)
        try:
            harness.build_native(("llama-speculative-simple",))
        except SystemExit as exc:
            pytest.fail(f"could not build llama-speculative-simple: {exc}")
    return SPEC_SIMPLE


def native_speculative(exe: Path, target: Path, draft: Path, prompt: str, n: int, n_draft: int) -> str:
    """The text llama-speculative-simple generates after `prompt` (greedy, draft-simple with
    `draft` drafting exactly n_draft tokens per step, flash attention off, n_ctx 512)."""
    threads = str(N_THREADS)
    proc = subprocess.run(
        [str(exe), "-m", str(target), "-md", str(draft), "--spec-type", "draft-simple", "--spec-draft-n-max",
         str(n_draft), "--spec-draft-n-min", "0", "--spec-draft-p-min", "0", "-p", prompt, "-n", str(n), "-c", "512",
         "-t", threads, "-tb", threads, "-td", threads, "-tbd", threads, "-fa", "off", "--temp", "0", "--no-escape"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    marker = "<|im_start|>assistant\n"  # the tool prints the prompt (special tokens as text), then the tokens
    assert marker in proc.stdout, proc.stdout[-2000:]
    return proc.stdout[proc.stdout.rindex(marker) + len(marker):]


def _min_gap(model_path: Path, prompt: str, n: int) -> tuple[float, str]:
    """The smallest top-2 logit gap along plain greedy decoding (one token per decode) of n
    tokens, and where."""
    with lb.Model(str(model_path)) as model:
        tokens, rows = greedy_reference_rows(model, model.vocab.tokenize(prompt, parse_special=True), n)
        gaps = [float(np.diff(np.sort(r)[-2:])[0]) for r in rows]
        i = int(np.argmin(gaps))
        return gaps[i], model.vocab.detokenize(tokens[:i]).decode(errors="replace")


def _text(llm: lb.Llama, prompt: str, **kw: Any) -> str:
    out: str = llm(prompt, **{"max_tokens": 48, "temperature": 0.0, **kw})["choices"][0]["text"]
    return out


def _stats(llm: lb.Llama) -> dict[str, Any]:
    assert llm._speculation is not None
    stats: dict[str, Any] = llm._speculation.speculator.stats
    return stats


@pytest.mark.parametrize("path, prompt", [("qwen05_path", RECODE), ("qwen05_path", REPEAT), ("qwen15_path", FIX)],
                         ids=["qwen05-recode", "qwen05-repeat", "qwen15-fix"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_prompt_lookup_greedy_equals_plain(request: pytest.FixtureRequest, path: str, prompt: str,
                                           adaptive: bool) -> None:
    """Prompt lookup drafts differently from every llama.cpp n-gram mode, so its batches are
    its own: the prompts are ones without near ties (checked first), where any batching gives
    plain decoding's tokens. Each emitted token is also the argmax of the verification row it
    was drawn from (its top-1 log-probability is its own)."""
    model = request.getfixturevalue(path)
    gap, where = _min_gap(model, prompt, 48)
    assert gap >= GAP_MIN, f"near tie after {where!r} (gap {gap:.3f}): not a prompt to compare with plain decoding"
    with make_llama(model, flash_attn=False) as plain:
        expected = _text(plain, prompt)
    with make_llama(model, flash_attn=False, draft_model=LlamaPromptLookupDecoding(max_ngram_size=3,
                    num_pred_tokens=6), draft_adaptive=adaptive) as llm:
        out = llm(prompt, max_tokens=48, temperature=0.0, logprobs=1)["choices"][0]
        stats = _stats(llm)
        assert llm._speculation is not None and llm._speculation.speculator.n_draft == 6
    assert out["text"] == expected
    lp = out["logprobs"]
    assert all(max(top, key=top.__getitem__) == tok for tok, top in zip(lp["tokens"], lp["top_logprobs"]))
    if not adaptive:
        assert stats["n_accepted"] >= 5, stats  # the answer repeats the prompt


@pytest.mark.slow
@pytest.mark.parametrize("target, draft, prompt, n", [
    ("smollm2_path", "smollm2_path", EDIT, 48),
    ("qwen05_path", "qwen05_path", EDIT, 48),
    ("qwen15_path", "qwen05_path", PALINDROME, 40),
], ids=["smollm2-self", "qwen05-self", "qwen15-qwen05"])
def test_draft_model_greedy_equals_llama_speculative_simple(request: pytest.FixtureRequest, speculative_simple: Path,
                                                            target: str, draft: str, prompt: str, n: int) -> None:
    """Greedy output with a draft model (fixed length 4) is llama-speculative-simple's with the
    same draft model and length (see the module docstring: on SmolLM2's EDIT answer both differ
    from plain decoding at a near tie, in the same way)."""
    target_path, draft_path = request.getfixturevalue(target), request.getfixturevalue(draft)
    native = native_speculative(speculative_simple, target_path, draft_path, prompt, n, 4)
    with make_llama(target_path, flash_attn=False, draft_model_path=str(draft_path), n_draft=4,
                    draft_adaptive=False) as llm:
        out = llm(prompt, max_tokens=n, temperature=0.0)["choices"][0]
        stats = _stats(llm)
    assert len(out["text"]) > 20 and native.startswith(out["text"]), (out["text"], native)
    if out["finish_reason"] == "stop":  # both met the end-of-generation token there
        assert native[len(out["text"]):].strip() == ""
    # (A model drafting for itself still has drafts rejected: near ties rounded the other way
    # in the batch, and the drafts past the end of the answer.)
    assert stats["acceptance"] > (0.8 if target == draft else 0.6), stats


@pytest.mark.slow
def test_qwen15_with_adaptive_qwen05_draft(qwen15_path: Path, qwen05_path: Path) -> None:
    """The adaptive mode chooses draft lengths from this machine's timings, so its batches are
    not reproducible: on a prompt without near ties (checked) it gives plain decoding's text."""
    gap, where = _min_gap(qwen15_path, FIX, 32)
    assert gap >= GAP_MIN, f"near tie after {where!r} (gap {gap:.3f})"
    with make_llama(qwen15_path, flash_attn=False) as plain:
        expected = _text(plain, FIX, max_tokens=32)
    with make_llama(qwen15_path, flash_attn=False, draft_model_path=str(qwen05_path), n_draft=4) as llm:
        assert _text(llm, FIX, max_tokens=32) == expected
        assert _stats(llm)["n_emitted"] > 0


def _chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for a chi-square variable with `dof` degrees of freedom (closed forms)."""
    h = x / 2.0
    if dof % 2 == 0:
        return float(math.exp(-h) * sum(h ** j / math.factorial(j) for j in range(dof // 2)))
    tail = math.erfc(math.sqrt(h))
    return float(tail + math.exp(-h) * sum(h ** (j - 0.5) / math.gamma(j + 0.5) for j in range(1, (dof + 1) // 2)))


def test_chi2_sf_matches_known_values() -> None:
    assert _chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert _chi2_sf(5.991465, 2) == pytest.approx(0.05, abs=1e-6)
    assert _chi2_sf(16.918978, 9) == pytest.approx(0.05, abs=1e-6)


def test_sampled_distribution_is_unchanged(smollm2_path: Path) -> None:
    """The first three tokens sampled (temperature 1) for seeds 0..299, without speculation and
    with SmolLM2 drafting for itself (two drafts per step, so tokens 2 and 3 come from a
    verification batch): a chi-square test of homogeneity over the 3-token texts (those seen
    fewer than 10 times pooled) must not reject at p < 0.001. Fixed seeds: deterministic."""
    n_seeds = 300
    sampling = dict(max_tokens=3, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    counts: list[Counter[str]] = []
    same = 0
    with make_llama(smollm2_path) as plain, \
            make_llama(smollm2_path, draft_model_path=str(smollm2_path), n_draft=2, draft_adaptive=False) as spec:
        outs = []
        for llm in (plain, spec):
            outs.append([_text(llm, QUESTION, seed=seed, **sampling) for seed in range(n_seeds)])
            counts.append(Counter(outs[-1]))
        same = sum(a == b for a, b in zip(*outs))
        assert _stats(spec)["n_drafted"] >= n_seeds
    total = counts[0] + counts[1]
    keep = [k for k, n in total.items() if n >= 10]
    table = np.array([[c[k] for k in keep] + [sum(n for k, n in c.items() if k not in keep)] for c in counts], float)
    table = table[:, table.sum(axis=0) > 0]
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    assert dof >= 3, table  # enough distinct outcomes for the test to mean something
    p = _chi2_sf(chi2, dof)
    assert p >= 0.001, (chi2, dof, p, table)
    # Same seed, same logits: nearly always the very same tokens (a seed can differ only
    # where batched and one-token decoding round a probability differently).
    assert same >= 0.9 * n_seeds


def test_grammar_stop_logprobs_stream(qwen: lb.Llama, qwen_lookup: lb.Llama) -> None:
    grammar = lb.LlamaGrammar.from_string('root ::= "```python\\n" [^`]* "```"')
    kw: dict[str, Any] = dict(max_tokens=60, temperature=0.0, grammar=grammar, logprobs=3, stop=["print("])
    expected = qwen(RECODE, **kw)["choices"][0]
    chunks = list(qwen_lookup(RECODE, stream=True, **kw))
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == expected["text"] and text.startswith("```python\ncount = 0")
    assert chunks[-1]["choices"][0]["finish_reason"] == expected["finish_reason"] == "stop"
    got = [lp for c in chunks if c["choices"][0]["logprobs"] for lp in c["choices"][0]["logprobs"]["token_logprobs"]]
    tokens = [t for c in chunks if c["choices"][0]["logprobs"] for t in c["choices"][0]["logprobs"]["tokens"]]
    assert tokens == expected["logprobs"]["tokens"]
    np.testing.assert_allclose(got, expected["logprobs"]["token_logprobs"], atol=0.3)
    assert _stats(qwen_lookup)["n_accepted"] > 0


def test_processors_bias_and_stopping_criteria(qwen: lb.Llama, qwen_lookup: lb.Llama) -> None:
    """A logits processor sees input_ids ending with the tokens its draw follows; logit bias and
    a stopping criterion (given each token's logits row) act as without speculation."""
    banned = qwen.tokenize(b"print", add_bos=False)[0]
    seen: dict[str, list[npt.NDArray[np.intc]]] = {"plain": [], "spec": []}
    rows_seen: dict[str, list[float]] = {"plain": [], "spec": []}

    def run(llm: lb.Llama, key: str) -> str:
        def processor(ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
            seen[key].append(ids.copy())
            return scores

        def stop_after(ids: npt.NDArray[np.intc], row: npt.NDArray[np.single]) -> bool:
            rows_seen[key].append(float(row[int(ids[-1])]))
            return len(rows_seen[key]) >= 20

        return _text(llm, RECODE, max_tokens=40, logit_bias={banned: -100.0},
                     logits_processor=LogitsProcessorList([processor]),
                     stopping_criteria=StoppingCriteriaList([stop_after]))

    spec = run(qwen_lookup, "spec")
    assert spec == run(qwen, "plain") and "print" not in spec
    assert len(rows_seen["spec"]) == len(rows_seen["plain"]) == 20
    np.testing.assert_allclose(rows_seen["spec"], rows_seen["plain"], atol=0.5)
    assert [len(ids) for ids in seen["spec"]] == [len(ids) for ids in seen["plain"]]
    assert all(np.array_equal(a, b) for a, b in zip(seen["spec"], seen["plain"]))


class _Oracle(LlamaDraftModel):
    """Drafts the answer it was given (as a draft model that is always right would)."""

    def __init__(self, answer: list[int]) -> None:
        self.answer = answer
        self.calls: list[int] = []

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        self.calls.append(len(input_ids))
        n = len(input_ids)
        return np.array(self.answer[n: n + 5], dtype=np.intc)


def test_llama_draft_model_subclass(qwen: lb.Llama, qwen05_path: Path) -> None:
    """A LlamaDraftModel that drafts plain decoding's answer (a prompt without near ties) has
    every draft accepted."""
    out = qwen(RECODE, max_tokens=30, temperature=0.0, logprobs=0)["choices"][0]
    answer = qwen.tokenize(RECODE.encode(), special=True) + [qwen.tokenize(t.encode(), add_bos=False, special=True)[0]
                                                             for t in out["logprobs"]["tokens"]]
    oracle = _Oracle(answer)
    with make_llama(qwen05_path, flash_attn=False, draft_model=oracle, draft_adaptive=False) as llm:
        assert _text(llm, RECODE, max_tokens=30) == out["text"]
        stats = _stats(llm)
    assert stats["acceptance"] == 1.0 and stats["n_steps"] <= 8
    assert oracle.calls and all(n > len(answer) - 31 for n in oracle.calls)


def test_incompatible_draft_vocabulary(qwen05_path: Path, gemma3_path: Path, smollm2_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot draft for"):
        make_llama(qwen05_path, draft_model_path=str(gemma3_path))
    with pytest.raises(ValueError, match=r"cannot draft for"):
        make_llama(smollm2_path, draft_model_path=str(qwen05_path))
    with pytest.raises(ValueError, match="n_draft"):
        make_llama(smollm2_path, draft_model_path=str(smollm2_path), n_draft=0)
    with pytest.raises(TypeError, match="draft_model must be"):
        make_llama(smollm2_path, draft_model=42)


def test_interleaved_streams_and_cancel(qwen: lb.Llama, qwen_lookup: lb.Llama) -> None:
    """Two streams of one speculating Llama read in turns each give their own text (a stream
    that lost the sequence evaluates its tokens again, the draft following); a cancelled
    stream ends with AbortedError and the next call is unaffected."""
    expected = [_text(qwen, p) for p in (RECODE, REPEAT)]
    a = qwen_lookup(RECODE, max_tokens=48, temperature=0.0, stream=True)
    b = qwen_lookup(REPEAT, max_tokens=48, temperature=0.0, stream=True)
    texts = ["", ""]
    pending = [a, b]
    while pending:
        for i, stream in enumerate((a, b)):
            if stream in pending:
                chunk = next(stream, None)
                if chunk is None:
                    pending.remove(stream)
                else:
                    texts[i] += chunk["choices"][0]["text"]
    assert texts == expected
    cancel = threading.Event()
    stream = qwen_lookup(RECODE, max_tokens=48, temperature=0.0, stream=True, cancel=cancel)
    next(stream)
    cancel.set()
    with pytest.raises(lb.AbortedError):
        for _ in stream:
            pass
    assert _text(qwen_lookup, RECODE) == expected[0]


def test_logits_all_scores(qwen05_path: Path) -> None:
    with make_llama(qwen05_path, n_ctx=256, flash_attn=False, logits_all=True) as plain, \
            make_llama(qwen05_path, n_ctx=256, flash_attn=False, logits_all=True,
                       draft_model=LlamaPromptLookupDecoding(3, 4), draft_adaptive=False) as llm:
        assert _text(llm, RECODE, max_tokens=24) == _text(plain, RECODE, max_tokens=24)
        assert _stats(llm)["n_accepted"] > 0
        assert llm.n_tokens == plain.n_tokens or abs(llm.n_tokens - plain.n_tokens) <= 4
        n = min(llm.n_tokens, plain.n_tokens)
        assert np.array_equal(llm.input_ids[:n], plain.input_ids[:n])
        np.testing.assert_allclose(llm.scores[:n], plain.scores[:n], atol=0.5)


def test_parallel_engine_does_not_speculate(smollm2_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llamabind"):
        with make_llama(smollm2_path, n_parallel=2, draft_model=LlamaPromptLookupDecoding()) as llm:
            assert llm._speculation is None
            assert _text(llm, QUESTION, max_tokens=8)
    assert any("does not speculate" in r.getMessage() for r in caplog.records)


def test_cli_draft_model(smollm2_path: Path) -> None:
    def run(*extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "llamabind", "run", "The capital of France is", "-n", "12", "--temp", "0",
             "-t", str(N_THREADS), "-m", str(smollm2_path), *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert run("--draft-model", str(smollm2_path), "--n-draft", "3") == run()
