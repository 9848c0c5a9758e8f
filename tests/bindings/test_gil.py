"""GIL release and threads: other Python threads keep running during native work, and a
Context used from several threads at once is serialised (never crashes, never mixes state)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind
from testutil import N_THREADS, greedy_by_sampler

PROMPT = "The quick brown fox jumps over the lazy dog. " * 80


class Heartbeat:
    """A background thread that counts ~1 ms sleeps; it only advances while the GIL is free."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += 1
            time.sleep(0.001)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        time.sleep(0.02)  # let it get going
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def measure(self, fn: Callable[[], object]) -> tuple[int, float]:
        """Beats and seconds that elapsed during one call of fn."""
        before = self.count
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        return self.count - before, elapsed


def expected_min_beats(elapsed: float) -> int:
    # A free-running heartbeat does ~one beat per 1.1 ms; ask for a tenth of that so a loaded
    # machine does not make the test flaky, while a held GIL (0 to 2 beats) still fails it.
    return max(20, int(0.1 * elapsed / 0.001))


def run_threads(targets: list[Callable[[], object]], timeout: float = 60) -> list[object]:
    """Runs targets in threads started together; re-raises the first exception in this thread."""
    results: list[object] = [None] * len(targets)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(i: int, fn: Callable[[], object]) -> None:
        try:
            barrier.wait()
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="module")
def prompt_tokens(smollm2: llamabind.Model) -> list[int]:
    return smollm2.vocab.tokenize(PROMPT)


# ---------------------------------------------------------------------------------------
# GIL heartbeat


def test_heartbeat_runs_during_decode_tokens(smollm2: llamabind.Model, prompt_tokens: list[int]) -> None:
    tokens = prompt_tokens[:300]
    with llamabind.Context(smollm2, n_ctx=512, n_batch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS) as ctx:
        with Heartbeat() as hb:
            beats, elapsed = hb.measure(lambda: ctx.decode_tokens(tokens, pos0=0))
        assert ctx.seq_pos_max(0) == len(tokens) - 1
    assert elapsed > 0.2, f"decode too short ({elapsed:.3f} s) for a meaningful heartbeat test"
    assert beats >= expected_min_beats(elapsed), f"heartbeat advanced {beats} times during a {elapsed:.2f} s decode"


def test_heartbeat_runs_during_batch_decode(smollm2: llamabind.Model, prompt_tokens: list[int]) -> None:
    tokens = prompt_tokens[:300]
    with llamabind.Context(smollm2, n_ctx=512, n_batch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS) as ctx:
        batch = llamabind.Batch.from_tokens(tokens, pos0=0)
        with Heartbeat() as hb:
            beats, elapsed = hb.measure(lambda: ctx.decode(batch))
    assert elapsed > 0.2
    assert beats >= expected_min_beats(elapsed), f"heartbeat advanced {beats} times during a {elapsed:.2f} s decode"


def test_heartbeat_runs_during_an_engine_step(smollm2: llamabind.Model, prompt_tokens: list[int]) -> None:
    from llamabind import _core

    with llamabind.Context(smollm2, n_ctx=2 * 512, n_batch=512, n_seq_max=2, n_threads=N_THREADS,
                           n_threads_batch=N_THREADS) as ctx:
        engine = _core.Engine(ctx)
        for part in (prompt_tokens[:150], prompt_tokens[150:300]):
            engine.submit(part, llamabind.SamplerChain().add_greedy(), max_tokens=1)
        with Heartbeat() as hb:
            beats, elapsed = hb.measure(engine.step)  # both prompts in one decode, then sampling
        assert engine.stats["prompt_tokens_evaluated"] == 300
    assert elapsed > 0.2
    assert beats >= expected_min_beats(elapsed), f"heartbeat advanced {beats} times during a {elapsed:.2f} s step"


def test_heartbeat_runs_during_model_load(gemma3_path: Path) -> None:
    # Without mmap the whole file is read and converted, which takes a measurable time.
    with Heartbeat() as hb:
        holder: list[llamabind.Model] = []
        beats, elapsed = hb.measure(lambda: holder.append(llamabind.Model(gemma3_path, use_mmap=False)))
    holder[0].close()
    assert beats >= expected_min_beats(elapsed), f"heartbeat advanced {beats} times during a {elapsed:.2f} s load"


def test_heartbeat_runs_while_another_thread_waits_for_a_busy_context(
    smollm2: llamabind.Model, prompt_tokens: list[int]
) -> None:
    """A thread that calls into a context another thread is decoding with must wait without
    holding the GIL, or the whole interpreter stalls for the rest of that decode."""
    tokens = prompt_tokens[:500]
    with llamabind.Context(smollm2, n_ctx=512, n_batch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS) as ctx:
        started = threading.Event()
        errors: list[BaseException] = []

        def decode() -> None:
            started.set()
            try:
                ctx.decode_tokens(tokens, pos0=0)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        decoder = threading.Thread(target=decode)
        with Heartbeat() as hb:
            decoder.start()
            started.wait()
            time.sleep(0.15)  # the decoder is now inside llama_decode, holding the context
            beats, waited = hb.measure(lambda: ctx.seq_pos_max(0))
            decoder.join()
        assert not errors, errors
    assert waited > 0.1, f"the decode finished too early ({waited:.3f} s wait) for this test to mean anything"
    assert beats >= expected_min_beats(waited), (
        f"heartbeat advanced {beats} times while the main thread waited {waited:.2f} s for the context: "
        "Context methods block on the context lock with the GIL held"
    )


# ---------------------------------------------------------------------------------------
# One context, several threads


def test_two_threads_decoding_different_sequences_of_one_context(
    smollm2: llamabind.Model, prompt_tokens: list[int]
) -> None:
    chunk = 16
    prompts = [prompt_tokens[:96], prompt_tokens[200:296]]
    kwargs = dict(n_ctx=512, n_batch=64, n_ubatch=8, n_seq_max=2, n_threads=1, n_threads_batch=1)

    def feed(ctx: llamabind.Context, seq: int) -> None:
        toks = prompts[seq]
        for start in range(0, len(toks), chunk):
            ctx.decode_tokens(toks[start : start + chunk], pos0=start, seq_id=seq)

    def probe(ctx: llamabind.Context) -> list[np.ndarray]:
        # One more token per sequence, serially, then that token's logits.
        rows = []
        for seq in (0, 1):
            ctx.decode_tokens([prompts[seq][-1]], pos0=len(prompts[seq]), seq_id=seq)
            rows.append(ctx.logits_ith(-1, copy=True))
        return rows

    with llamabind.Context(smollm2, **kwargs) as ref:
        feed(ref, 0)
        feed(ref, 1)
        expected = probe(ref)

    with llamabind.Context(smollm2, **kwargs) as ctx:
        run_threads([lambda: feed(ctx, 0), lambda: feed(ctx, 1)])
        assert ctx.seq_pos_max(0) == len(prompts[0]) - 1
        assert ctx.seq_pos_max(1) == len(prompts[1]) - 1
        got = probe(ctx)
    for seq in (0, 1):
        np.testing.assert_allclose(got[seq], expected[seq], atol=1e-3, rtol=1e-3)


def test_reader_thread_sees_only_whole_decodes(smollm2: llamabind.Model, prompt_tokens: list[int]) -> None:
    """seq_pos_max/logits from one thread while another decodes: never a half-done decode."""
    chunk = 16
    tokens = prompt_tokens[:160]
    done = threading.Event()
    seen: list[int] = []
    shapes: set[tuple[int, ...]] = set()

    with llamabind.Context(
        smollm2, n_ctx=512, n_batch=64, n_ubatch=4, n_threads=N_THREADS, n_threads_batch=N_THREADS
    ) as ctx:
        ctx.decode_tokens(tokens[:chunk], pos0=0)

        def writer() -> None:
            try:
                for start in range(chunk, len(tokens), chunk):
                    ctx.decode_tokens(tokens[start : start + chunk], pos0=start)
            finally:
                done.set()

        def reader() -> None:
            while not done.is_set():
                seen.append(ctx.seq_pos_max(0))
                shapes.add(ctx.logits(copy=True).shape)
                row = ctx.logits_ith(-1, copy=True)
                assert row.shape == (ctx.n_vocab,)
                assert np.isfinite(row).all()
                time.sleep(0)

        run_threads([writer, reader])
        assert ctx.seq_pos_max(0) == len(tokens) - 1

    assert seen, "the reader never ran"
    # n_ubatch=4 splits each 16-token decode into 4 ubatches: a reader that could see into a
    # running decode would catch a position that is not at a chunk boundary.
    assert all((p + 1) % chunk == 0 for p in seen), sorted(set(seen))
    assert seen == sorted(seen)
    assert shapes == {(1, smollm2.n_vocab)}


def test_four_threads_four_contexts_one_model_match_serial_generation(smollm2: llamabind.Model) -> None:
    vocab = smollm2.vocab
    prompts = [
        vocab.tokenize("The capital of France is"),
        vocab.tokenize("def fibonacci(n):"),
        vocab.tokenize("Once upon a time, in a small village,"),
        vocab.tokenize("1, 2, 3, 4, 5,"),
    ]
    expected = [greedy_by_sampler(smollm2, p, 16) for p in prompts]
    assert len({tuple(e) for e in expected}) == 4  # the prompts lead to different outputs

    got = run_threads([lambda p=p: greedy_by_sampler(smollm2, p, 16) for p in prompts])
    assert got == expected


@pytest.fixture
def closing_contexts() -> Iterator[list[llamabind.Context]]:
    made: list[llamabind.Context] = []
    yield made
    for c in made:
        c.close()


def test_close_from_another_thread_during_decode_waits_and_is_safe(
    smollm2: llamabind.Model, prompt_tokens: list[int], closing_contexts: list[llamabind.Context]
) -> None:
    ctx = llamabind.Context(smollm2, n_ctx=512, n_batch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    closing_contexts.append(ctx)
    started = threading.Event()
    outcome: list[object] = []

    def decode() -> None:
        started.set()
        try:
            ctx.decode_tokens(prompt_tokens[:200], pos0=0)
            outcome.append("ok")
        except llamabind.ClosedError as e:  # closed before the decode took the context
            outcome.append(e)

    t = threading.Thread(target=decode)
    t.start()
    started.wait()
    time.sleep(0.05)
    ctx.close()
    t.join(30)
    assert not t.is_alive()
    assert len(outcome) == 1
    assert ctx.closed
    with pytest.raises(llamabind.ClosedError):
        ctx.seq_pos_max(0)
