"""Process-level API: devices and capabilities, built-in chat templates against the published
formats, split-file names, log routing, and a context's perf counters and threads."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path

import gguf
import numpy as np
import pytest

import llamabind as lb
from testutil import N_THREADS

Messages = list[tuple[str, str]]


# ---------------------------------------------------------------------------------------
# Devices and capabilities


def test_devices_include_the_cpu() -> None:
    devices = lb.devices()
    assert any(d["type"] == "cpu" for d in devices), devices
    for d in devices:
        assert set(d) == {"name", "description", "type", "memory_free", "memory_total"}
        assert d["type"] in {"cpu", "gpu", "igpu", "accel", "meta"}
        assert d["name"]


def test_system_info_and_capabilities() -> None:
    assert "CPU" in lb.system_info()
    assert lb.max_devices() >= 1
    assert lb.max_parallel_sequences() >= 1
    assert isinstance(lb.supports_gpu_offload(), bool)
    assert isinstance(lb.supports_rpc(), bool)
    if sys.platform.startswith("linux"):
        assert lb.supports_mmap() is True
        assert lb.supports_mlock() is True


# ---------------------------------------------------------------------------------------
# Chat templates, checked against the formats their authors publish


def chatml(messages: Messages, add_assistant: bool) -> str:
    """ChatML: <|im_start|>{role}\\n{content}<|im_end|>\\n per message."""
    out = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return out + ("<|im_start|>assistant\n" if add_assistant else "")


def llama3(messages: Messages, add_assistant: bool) -> str:
    """Llama 3's header/eot format (its <|begin_of_text|> is the BOS the tokenizer adds)."""
    out = "".join(f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>" for role, content in messages)
    return out + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_assistant else "")


def gemma(messages: Messages, add_assistant: bool) -> str:
    """Gemma's turns, where the assistant is called "model"."""
    out = "".join(
        f"<start_of_turn>{'model' if role == 'assistant' else role}\n{content}<end_of_turn>\n"
        for role, content in messages
    )
    return out + ("<start_of_turn>model\n" if add_assistant else "")


CONVERSATION: Messages = [
    ("system", "You are terse."),
    ("user", "Hi! Ça va? 日本"),
    ("assistant", "Fine."),
    ("user", "And now?"),
]


def test_builtin_templates_include_the_common_ones() -> None:
    names = lb.builtin_chat_templates()
    assert {"chatml", "llama3", "gemma"} <= set(names)
    assert all(isinstance(n, str) and n for n in names)


@pytest.mark.parametrize(
    ("name", "spec", "messages"),
    [("chatml", chatml, CONVERSATION), ("llama3", llama3, CONVERSATION), ("gemma", gemma, CONVERSATION[1:])],
)
@pytest.mark.parametrize("add_assistant", [True, False])
def test_builtin_template_follows_its_published_format(
    name: str, spec: Callable[[Messages, bool], str], messages: Messages, add_assistant: bool
) -> None:
    dicts = [{"role": r, "content": c} for r, c in messages]
    assert lb.chat_apply_template(name, dicts, add_assistant=add_assistant) == spec(messages, add_assistant)
    assert lb.chat_apply_template(name, messages, add_assistant) == spec(messages, add_assistant)


def test_chat_messages_may_be_any_iterable_and_long() -> None:
    def gen() -> Iterable[dict[str, str]]:
        yield {"role": "user", "content": "x" * 100_000}

    assert lb.chat_apply_template("chatml", gen()) == chatml([("user", "x" * 100_000)], True)
    assert lb.chat_apply_template("chatml", []) == "<|im_start|>assistant\n"
    assert lb.chat_apply_template("chatml", [{"role": "user", "content": None}]) == chatml([("user", "")], True)


def test_chat_template_given_as_the_models_jinja_source(smollm2: lb.Model) -> None:
    # SmolLM2's Jinja template is ChatML (it only adds a default system message when there
    # is none; CONVERSATION has one), and llama.cpp recognises it as such.
    source = smollm2.chat_template()
    assert source is not None
    assert lb.chat_apply_template(source, CONVERSATION) == chatml(CONVERSATION, True)


def test_unknown_template_or_malformed_message_is_invalid() -> None:
    with pytest.raises(lb.InvalidArgumentError):
        lb.chat_apply_template("no-such-template", [("user", "hi")])
    with pytest.raises(lb.InvalidArgumentError):
        lb.chat_apply_template("chatml", [{"role": "user"}])


def test_chat_content_with_a_nul_is_not_silently_cut() -> None:
    messages = [("user", "before\0after")]
    try:
        text = lb.chat_apply_template("chatml", messages)
    except ValueError:
        return  # refusing it is fine
    assert text == chatml(messages, True)


# ---------------------------------------------------------------------------------------
# Split file names: llama_split_path formats "%s-%05d-of-%05d.gguf" with split_no + 1


def test_split_path_numbers_splits_from_one() -> None:
    assert lb.split_path("/m/model", 2, 4) == "/m/model-00003-of-00004.gguf"
    assert lb.split_path("/m/model", 0, 1) == "/m/model-00001-of-00001.gguf"
    # gguf-py writes splits with the same pattern.
    assert lb.split_path("/m/model", 2, 4) == "/m/" + gguf.gguf_writer.SHARD_NAME_FORMAT.format("model", 3, 4)


def test_split_prefix_inverts_split_path() -> None:
    for no, count in [(0, 1), (2, 4), (99, 100)]:
        assert lb.split_prefix(lb.split_path("/m/my model", no, count), no, count) == "/m/my model"
    assert lb.split_prefix("/m/model-00003-of-00004.gguf", 1, 4) == ""
    assert lb.split_prefix("/m/model-00003-of-00004.gguf", 2, 5) == ""
    assert lb.split_prefix("/m/model.gguf", 0, 1) == ""


# ---------------------------------------------------------------------------------------
# Logging


def test_llama_cpp_log_lines_reach_the_llamabind_logger(tiny_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llamabind")
    lb.Model(tiny_path)
    records = [r for r in caplog.records if r.name == "llamabind"]
    assert any("llama_model_loader" in r.getMessage() for r in records)
    assert any("print_info" in r.getMessage() for r in records)
    assert logging.INFO in {r.levelno for r in records}


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=120
    )


def test_default_logging_writes_nothing_to_stderr(smollm2_path: Path) -> None:
    proc = run_child(
        """
        import sys
        import llamabind as lb

        # A mistyped override also makes llama.cpp warn.
        model = lb.Model(sys.argv[1], kv_overrides={"llama.context_length": "4096"})
        ctx = lb.Context(model, n_ctx=64, n_threads=1, n_threads_batch=1)
        ctx.decode_tokens(model.vocab.tokenize("Hello world"), 0)
        print(int(ctx.logits_ith(-1).argmax()))
        """,
        str(smollm2_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().isdigit()
    assert proc.stderr == ""


def test_native_stderr_logging_can_be_switched_on_and_off(tiny_path: Path) -> None:
    proc = run_child(
        """
        import logging
        import sys
        import llamabind as lb

        lb.set_native_stderr_logging(True)
        lb.Model(sys.argv[1], vocab_only=True)
        print("--- back to Python logging ---", file=sys.stderr, flush=True)
        lb.set_native_stderr_logging(False)
        seen = []
        handler = logging.Handler()
        handler.emit = seen.append
        logger = logging.getLogger("llamabind")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        lb.Model(sys.argv[1], vocab_only=True)
        print(len(seen))
        """,
        str(tiny_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    native, _, after = proc.stderr.partition("--- back to Python logging ---\n")
    assert "llama_model_loader" in native
    assert after == ""
    assert int(proc.stdout) > 0


# ---------------------------------------------------------------------------------------
# Context performance counters, threads, encode


@pytest.fixture
def perf_ctx(tiny: lb.Model):
    with lb.Context(tiny, n_ctx=128, n_threads=N_THREADS, n_threads_batch=N_THREADS, no_perf=False) as ctx:
        yield ctx


def generate(ctx: lb.Context, prompt: list[int], k: int) -> None:
    """A greedy loop: the prompt in one decode, then k single tokens, reading each output."""
    ctx.decode_tokens(prompt, 0)
    token = int(np.argmax(ctx.logits_ith(-1)))
    for i in range(k):
        ctx.decode_tokens([token], len(prompt) + i)
        token = int(np.argmax(ctx.logits_ith(-1)))


def test_perf_counts_prompt_and_generated_tokens(perf_ctx: lb.Context, tiny_tokens: list[int]) -> None:
    # llama_context::synchronize adds a decode of one token to n_eval and of n > 1 to n_p_eval.
    generate(perf_ctx, tiny_tokens, 4)
    perf = perf_ctx.perf()
    assert perf["n_p_eval"] == len(tiny_tokens)
    assert perf["n_eval"] == 4
    assert perf["t_p_eval_ms"] > 0 and perf["t_eval_ms"] > 0


def test_perf_reset_starts_counting_again(perf_ctx: lb.Context, tiny_tokens: list[int]) -> None:
    generate(perf_ctx, tiny_tokens, 2)
    perf_ctx.perf_reset()
    perf = perf_ctx.perf()
    assert perf["t_p_eval_ms"] == 0 and perf["t_eval_ms"] == 0
    assert perf["n_p_eval"] <= 1 and perf["n_eval"] <= 1  # llama_perf_context reports max(1, n)
    perf_ctx.memory_clear()
    generate(perf_ctx, tiny_tokens[:5], 3)
    perf = perf_ctx.perf()
    assert (perf["n_p_eval"], perf["n_eval"]) == (5, 3)


def test_perf_includes_the_last_decode(perf_ctx: lb.Context, tiny_tokens: list[int]) -> None:
    # A decode that returned has run; perf() right after it must count it, whether or not
    # its logits were read.
    perf_ctx.decode_tokens(tiny_tokens, 0)
    assert perf_ctx.perf()["n_p_eval"] == len(tiny_tokens)
    perf_ctx.decode_tokens([tiny_tokens[-1]], len(tiny_tokens))
    assert perf_ctx.perf()["n_eval"] == 1


def test_set_threads(perf_ctx: lb.Context, tiny_tokens: list[int]) -> None:
    perf_ctx.set_threads(1, 2)
    assert (perf_ctx.n_threads, perf_ctx.n_threads_batch) == (1, 2)
    perf_ctx.set_threads(3)
    assert (perf_ctx.n_threads, perf_ctx.n_threads_batch) == (3, 3)
    with pytest.raises(lb.InvalidArgumentError):
        perf_ctx.set_threads(0)
    perf_ctx.set_threads(1)
    perf_ctx.decode_tokens(tiny_tokens, 0)
    assert np.isfinite(perf_ctx.logits_ith(-1)).all()


def test_encode_on_a_decoder_only_model_is_invalid(perf_ctx: lb.Context, tiny_tokens: list[int]) -> None:
    assert not perf_ctx.model.has_encoder
    with pytest.raises(lb.InvalidArgumentError):
        perf_ctx.encode(lb.Batch.from_tokens(tiny_tokens))
    perf_ctx.decode_tokens(tiny_tokens, 0)  # the context is still usable
