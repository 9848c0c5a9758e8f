"""Llama's constructor (every llama-cpp-python keyword, and what the observable ones do),
its model properties and tokenizer against gguf-py's reading of the file, errors (closed,
vocab-only, over-long prompts), and Llama.from_pretrained over a local Hugging Face cache."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from gguf_ref import GGUFRef, expected_piece
from llamabind import Llama
from testutil import N_THREADS, hub_cache, llama_fixture, make_llama

CAPITAL = "The capital of France is"

# llama-cpp-python's Llama.__init__ keywords (llama_cpp/llama.py), newest releases included;
# rpc_servers has its own test below.
LLAMA_CPP_PYTHON_KEYWORDS = (
    "n_gpu_layers", "split_mode", "main_gpu", "tensor_split", "vocab_only", "use_mmap",
    "use_mlock", "kv_overrides", "seed", "n_ctx", "n_batch", "n_ubatch", "n_threads", "n_threads_batch",
    "rope_scaling_type", "pooling_type", "attention_type", "rope_freq_base", "rope_freq_scale",
    "yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_orig_ctx",
    "logits_all", "embedding", "offload_kqv", "flash_attn", "op_offload", "swa_full", "no_perf",
    "last_n_tokens_size", "lora_base", "lora_scale", "lora_path", "numa", "chat_format", "chat_handler",
    "draft_model", "tokenizer", "type_k", "type_v", "spm_infill", "verbose",
)  # fmt: skip


_llama = functools.partial(make_llama, n_ctx=256)
smol = llama_fixture("smollm2_path", n_ctx=256)


@pytest.fixture(scope="module")
def smol_greedy(smol: Llama) -> str:
    return smol.create_completion(CAPITAL, max_tokens=6, temperature=0.0)["choices"][0]["text"]


def text(out: dict) -> str:
    return out["choices"][0]["text"]


def last_logits(llm: Llama, tokens: list[int]) -> np.ndarray:
    llm.create_completion(tokens, max_tokens=1, temperature=0.0)
    return llm.ctx.logits_ith(-1, copy=True)


# ---------------------------------------------------------------------------------------
# Keywords


def test_every_llama_cpp_python_keyword_is_a_parameter() -> None:
    params = inspect.signature(Llama).parameters
    assert [k for k in LLAMA_CPP_PYTHON_KEYWORDS if k not in params] == []
    assert "model_path" in params


def test_every_keyword_at_once(smollm2_path: Path, smol_greedy: str) -> None:
    """Explicit values (llama-cpp-python's ints for the enums) that leave the arithmetic as it
    is: the greedy text is the default instance's."""
    with Llama(
        model_path=str(smollm2_path), n_gpu_layers=0, split_mode=1, main_gpu=0, tensor_split=None,
        vocab_only=False, use_mmap=False, use_mlock=False, kv_overrides=None, seed=123, n_ctx=256,
        n_batch=64, n_ubatch=32, n_threads=N_THREADS, n_threads_batch=N_THREADS, rope_scaling_type=-1,
        pooling_type=-1, attention_type=-1, rope_freq_base=0.0, rope_freq_scale=0.0, yarn_ext_factor=-1.0,
        yarn_attn_factor=1.0, yarn_beta_fast=32.0, yarn_beta_slow=1.0, yarn_orig_ctx=0, logits_all=False,
        embedding=False, offload_kqv=True, flash_attn=False, op_offload=True, swa_full=True, no_perf=True,
        last_n_tokens_size=64, lora_base=None, lora_scale=1.0, lora_path=None, numa=False, chat_format=None,
        chat_handler=None, draft_model=None, tokenizer=None, type_k=1, type_v=1, spm_infill=False,
        verbose=False,
    ) as llm:
        assert llm.ctx.n_batch == 64 and llm.ctx.n_ubatch == 32
        assert llm.ctx.n_threads == N_THREADS and llm.ctx.n_threads_batch == N_THREADS
        assert text(llm.create_completion(CAPITAL, max_tokens=6, temperature=0.0)) == smol_greedy


def test_rpc_servers_keyword_is_accepted(smollm2_path: Path) -> None:
    """llama-cpp-python has had `rpc_servers: Optional[str] = None` since 0.2.77; code
    passing rpc_servers=None must keep working."""
    with _llama(smollm2_path, rpc_servers=None) as llm:
        assert llm.n_ctx() >= 256



def test_flash_attn_none_is_llama_cpps_auto(smollm2_path: Path) -> None:
    """flash_attn=None asks for llama.cpp's auto, which turns flash attention on where the
    backend has it (the CPU does): the same logits as flash_attn=True, unlike off's."""
    rows = {}
    for flash in (None, True, False):
        with make_llama(smollm2_path, n_ctx=256, flash_attn=flash, logits_all=True) as llm:
            want = {None: lb.FlashAttnType.AUTO, True: lb.FlashAttnType.ENABLED, False: lb.FlashAttnType.DISABLED}
            assert llm.context_params["flash_attn_type"] == want[flash]
            llm.eval(llm.tokenize(CAPITAL.encode()))
            rows[flash] = np.array(llm.scores[: llm.n_tokens])
    assert np.array_equal(rows[None], rows[True])
    assert not np.array_equal(rows[None], rows[False])

def test_unknown_keyword_raises_type_error(smollm2_path: Path) -> None:
    with pytest.raises(TypeError, match="n_gqq"):
        _llama(smollm2_path, n_gqq=8)


def test_obsolete_keywords_are_ignored_with_a_warning(smollm2_path: Path, caplog: pytest.LogCaptureFixture,
                                                      smol_greedy: str) -> None:
    with caplog.at_level(logging.WARNING, logger="llamabind"):
        with _llama(smollm2_path, n_gqa=8, rms_norm_eps=1e-5, mul_mat_q=True, f16_kv=True, low_vram=True) as llm:
            assert text(llm.create_completion(CAPITAL, max_tokens=6, temperature=0.0)) == smol_greedy
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name in ("n_gqa", "rms_norm_eps", "mul_mat_q", "f16_kv", "low_vram"):
        assert name in warned


def test_n_ctx_zero_is_the_training_context(smollm2_path: Path, smollm2_ref: GGUFRef) -> None:
    n_train = smollm2_ref.get("llama.context_length")
    with _llama(smollm2_path, n_ctx=0) as llm:
        assert llm.n_ctx() >= n_train == 8192
        assert llm.ctx.n_ctx == llm.n_ctx()


def test_requested_sizes_reach_the_context(smollm2_path: Path) -> None:
    with _llama(smollm2_path, n_ctx=300, n_batch=100, n_ubatch=500) as llm:
        assert 300 <= llm.n_ctx() == llm.ctx.n_ctx
        assert llm.ctx.n_batch == 100
        assert llm.ctx.n_ubatch == 100  # never more than n_batch


def test_kv_overrides_change_what_llama_cpp_reads(smollm2_path: Path) -> None:
    with _llama(smollm2_path, n_ctx=0, vocab_only=False,
                kv_overrides={"llama.context_length": 1024, "tokenizer.ggml.add_bos_token": True}) as llm:
        assert llm.n_ctx() == 1024
        assert llm.tokenize(b"Hi")[0] == llm.token_bos()
    with _llama(smollm2_path, vocab_only=True) as plain:
        assert plain.tokenize(b"Hi")[0] != plain.token_bos()


def test_rope_freq_base_reaches_the_model(smollm2_path: Path, smol: Llama, smollm2_ref: GGUFRef) -> None:
    tokens = smol.tokenize(CAPITAL.encode())
    base = last_logits(smol, tokens)
    own = float(smollm2_ref.get("llama.rope.freq_base"))
    with _llama(smollm2_path, rope_freq_base=own) as same:
        assert np.allclose(last_logits(same, tokens), base, atol=1e-4)
    with _llama(smollm2_path, rope_freq_base=own / 50, rope_freq_scale=0.5) as other:
        assert not np.allclose(last_logits(other, tokens), base, atol=1e-2)


def test_quantized_kv_cache_and_flash_attention(smollm2_path: Path, smol: Llama) -> None:
    tokens = smol.tokenize(CAPITAL.encode())
    base = last_logits(smol, tokens)
    with _llama(smollm2_path, flash_attn=True, type_k=int(lb.GGMLType.Q8_0), type_v=int(lb.GGMLType.Q8_0)) as llm:
        got = last_logits(llm, tokens)
    # Another kernel and an 8-bit cache: close to, not equal to, the f16 result.
    assert int(np.argmax(got)) == int(np.argmax(base))
    assert np.corrcoef(got, base)[0, 1] > 0.99


def test_verbose_logs_the_load(smollm2_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llamabind"):
        _llama(smollm2_path, verbose=True).close()
    assert any("Llama: loaded" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llamabind"):
        _llama(smollm2_path, verbose=False).close()
    assert not any("Llama: loaded" in r.getMessage() for r in caplog.records)


def test_progress_callback(smollm2_path: Path) -> None:
    values: list[float] = []
    _llama(smollm2_path, progress_callback=values.append).close()
    assert values and values == sorted(values) and values[-1] == pytest.approx(1.0)
    with pytest.raises(lb.ModelLoadError, match="cancel"):
        _llama(smollm2_path, progress_callback=lambda p: False)


def test_draft_model_is_used_and_lora_base_warns(smollm2_path: Path, smol_greedy: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from llamabind.llama_speculative import LlamaPromptLookupDecoding

    draft = LlamaPromptLookupDecoding(num_pred_tokens=4)
    with caplog.at_level(logging.WARNING, logger="llamabind"):
        with _llama(smollm2_path, draft_model=draft, lora_base="base.gguf") as llm:
            assert llm.draft_model is draft and llm.lora_base == "base.gguf"
            assert llm._speculation is not None  # prompt lookup drafts natively (test_speculative.py)
            assert text(llm.create_completion(CAPITAL, max_tokens=6, temperature=0.0)) == smol_greedy
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "lora_base" in warned and "draft_model" not in warned


def test_lora_path_and_scale_apply_the_adapter(tiny_path: Path, tiny: lb.Model, tiny_ref: GGUFRef,
                                               tmp_path: Path) -> None:
    from tiny_model import write_lora_adapter

    targets = {t.name: tuple(int(d) for d in t.data.shape) for t in tiny_ref.reader.tensors
               if t.name.endswith(("attn_q.weight", "ffn_up.weight"))}
    lora = write_lora_adapter(tmp_path / "lora.gguf", targets, rank=4, alpha=8.0)
    tokens = tiny.vocab.tokenize("The quick brown fox")

    def reference(scale: float | None) -> np.ndarray:
        with lb.Context(tiny, n_ctx=64, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                        flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
            adapter = lb.LoraAdapter(tiny, lora) if scale is not None else None
            if adapter is not None:
                ctx.set_lora_adapters([(adapter, scale)])
            ctx.decode_tokens(tokens, pos0=0)
            return ctx.logits_ith(-1, copy=True)

    for scale in (1.0, 0.5):
        with _llama(tiny_path, n_ctx=64, lora_path=str(lora), lora_scale=scale) as llm:
            assert llm.lora_path == str(lora) and llm.lora_scale == scale
            got = last_logits(llm, tokens)
        assert np.allclose(got, reference(scale), atol=1e-4)
        assert not np.allclose(got, reference(None), atol=1e-3)


def test_custom_tokenizer_is_used(smollm2_path: Path, smol: Llama, smol_greedy: str) -> None:
    calls: list[str] = []

    class Recording:
        def tokenize(self, text, add_bos=True, special=False):
            calls.append("tokenize")
            return smol.tokenize(text, add_bos=add_bos, special=special)

        def detokenize(self, tokens, prev_tokens=None, special=False):
            calls.append("detokenize")
            return smol.detokenize(tokens, prev_tokens=prev_tokens, special=special)

    with _llama(smollm2_path, tokenizer=Recording()) as llm:
        assert llm.tokenize(b"Hello") == smol.tokenize(b"Hello")
        assert llm.detokenize(smol.tokenize(b"Hello")) == b"Hello"
        assert calls == ["tokenize", "detokenize"]
        assert text(llm.create_completion(CAPITAL, max_tokens=6, temperature=0.0)) == smol_greedy
        assert "tokenize" in calls[2:]


# ---------------------------------------------------------------------------------------
# Properties and tokenizer


def test_properties_match_the_file(smol: Llama, smollm2_ref: GGUFRef) -> None:
    ref = smollm2_ref
    assert smol.n_vocab() == len(ref.tokens)
    assert smol.n_embd() == ref.get("llama.embedding_length")
    assert smol.token_bos() == ref.get("tokenizer.ggml.bos_token_id")
    assert smol.token_eos() == ref.get("tokenizer.ggml.eos_token_id")
    assert smol.tokenize(b"\n", add_bos=False) == [smol.token_nl()]
    assert smol.metadata["general.architecture"] == ref.arch
    assert smol.metadata["llama.block_count"] == str(ref.get("llama.block_count"))
    assert set(smol.metadata) == set(smol.model.metadata)
    assert smol.pooling_type() == int(smol.ctx.pooling_type)
    assert smol.model.n_ctx_train == ref.get("llama.context_length")


def test_tokenize_and_detokenize(smol: Llama, smollm2_ref: GGUFRef) -> None:
    tokens = smol.tokenize(b"Hello world, caf\xc3\xa9!")
    assert b"".join(expected_piece(smollm2_ref, t) for t in tokens) == "Hello world, café!".encode()
    assert smol.detokenize(tokens) == "Hello world, café!".encode()
    assert smol.tokenize("Hello world, café!".encode()) == tokens
    # special: control-token text is parsed as the token, else as plain text.
    assert smol.tokenize(b"<|im_start|>", add_bos=False, special=True) == [smol.token_bos()]
    plain = smol.tokenize(b"<|im_start|>", add_bos=False, special=False)
    assert len(plain) > 1 and smol.detokenize(plain) == b"<|im_start|>"
    assert smol.detokenize([smol.token_bos()]) == b""
    assert smol.detokenize([smol.token_bos()], special=True) == b"<|im_start|>"
    # prev_tokens: only the text the new tokens add.
    head, tail = smol.tokenize(b"Hello"), smol.tokenize(b" world", add_bos=False)
    assert smol.detokenize(tail, prev_tokens=head) == b" world"


def test_gemma_tokenize_adds_bos_and_keeps_spaces_after_prev_tokens(gemma3_path: Path) -> None:
    with _llama(gemma3_path, vocab_only=True) as llm:
        tokens = llm.tokenize(b"Hello world")
        assert tokens[0] == llm.token_bos() == 2
        assert llm.tokenize(b"Hello world", add_bos=False) == tokens[1:]
        assert llm.detokenize(tokens) == b"Hello world"
        # SentencePiece pieces carry their leading space; prev_tokens must not lose it.
        assert llm.detokenize(tokens[2:], prev_tokens=tokens[:2]) == b" world"


def test_tokenizer_object(smol: Llama) -> None:
    tok = smol.tokenizer()
    ids = tok.encode("Hello world")
    assert ids == smol.tokenize(b"Hello world", special=True)
    assert tok.decode(ids) == "Hello world"
    assert tok.tokenize(b"Hi", add_bos=False) == smol.tokenize(b"Hi", add_bos=False)
    assert tok.detokenize(ids) == b"Hello world"


# ---------------------------------------------------------------------------------------
# Errors and lifetime


def test_prompt_longer_than_the_context_names_both_lengths(smol: Llama) -> None:
    n_ctx = smol.n_ctx()
    tokens = smol.tokenize(b"word " * (n_ctx + 10))[: n_ctx + 7]
    with pytest.raises(ValueError, match=rf"{n_ctx + 7}\D.*\D{n_ctx}\b"):
        smol.create_completion(tokens, max_tokens=1)
    with pytest.raises(ValueError, match=rf"{n_ctx + 7}\D.*\D{n_ctx}\b"):
        list(smol.create_completion(tokens, max_tokens=1, stream=True))
    assert text(smol.create_completion(CAPITAL, max_tokens=1, temperature=0.0))


def test_vocab_only_tokenizes_but_cannot_generate(smollm2_path: Path, smol: Llama) -> None:
    with _llama(smollm2_path, vocab_only=True) as llm:
        assert llm.tokenize(b"Hello world") == smol.tokenize(b"Hello world")
        assert llm.detokenize(smol.tokenize(b"Hello world")) == b"Hello world"
        assert llm.n_vocab() == smol.n_vocab()
        with pytest.raises(ValueError, match="vocab_only"):
            llm.create_completion(CAPITAL, max_tokens=1)
        with pytest.raises(ValueError, match="vocab_only"):
            llm.eval([1])
        with pytest.raises(ValueError, match="vocab_only"):
            llm.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=1)


def test_context_manager_and_close(smollm2_path: Path) -> None:
    with _llama(smollm2_path, embedding=True) as llm:
        assert llm.create_completion(CAPITAL, max_tokens=1)
    llm.close()  # idempotent
    calls = {
        "create_completion": lambda: llm.create_completion(CAPITAL, max_tokens=1),
        "__call__": lambda: llm(CAPITAL, max_tokens=1),
        "stream": lambda: next(iter(llm.create_completion(CAPITAL, max_tokens=1, stream=True))),
        "create_chat_completion": lambda: llm.create_chat_completion([{"role": "user", "content": "hi"}]),
        "embed": lambda: llm.embed("hi"),
        "create_embedding": lambda: llm.create_embedding("hi"),
        "eval": lambda: llm.eval([1]),
        "sample": lambda: llm.sample(),
        "generate": lambda: next(llm.generate([1])),
        "save_state": lambda: llm.save_state(),
        "ctx": lambda: llm.ctx,
        "model": lambda: llm.model,
        "pooling_type": lambda: llm.pooling_type(),
        "n_embd": lambda: llm.n_embd(),
    }
    for name, call in calls.items():
        with pytest.raises(lb.ClosedError):
            call()
            pytest.fail(name)


def test_tokenizer_methods_after_close_raise_closed_error(smollm2_path: Path) -> None:
    """close() promises 'later calls raise ClosedError', but tokenize, detokenize and the
    token_* getters keep working through the Vocab the Llama holds (see the next test)."""
    llm = _llama(smollm2_path, vocab_only=True)
    llm.close()
    for call in (lambda: llm.tokenize(b"hi"), lambda: llm.detokenize([1]), llm.token_bos, llm.token_eos,
                 llm.token_nl, lambda: llm.tokenizer().encode("hi")):
        with pytest.raises(lb.ClosedError):
            call()


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident size from /proc")
def test_close_frees_the_weights(smollm2_path: Path) -> None:
    """Llama keeps a Vocab, which holds a shared_ptr to the llama_model: Model.close() drops
    only the Model's own reference, so the weights stay in memory until the Llama object is
    garbage-collected."""

    def resident_mib() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    before = resident_mib()
    llm = _llama(smollm2_path, n_ctx=64, use_mmap=False)  # weights copied into anonymous memory
    loaded = resident_mib()
    size = smollm2_path.stat().st_size / 2**20
    assert loaded - before > 0.7 * size
    llm.close()
    assert resident_mib() - before < 0.3 * size


# ---------------------------------------------------------------------------------------
# from_pretrained

FROM_PRETRAINED_CHILD = textwrap.dedent(
    """
    import json, sys
    import llamabind as lb

    cache_dir, threads = sys.argv[1], int(sys.argv[2])
    out = {}
    llm = lb.Llama.from_pretrained("someone/smollm2", filename="*Q4_1.gguf", cache_dir=cache_dir, n_ctx=128,
                                   n_threads=threads, n_threads_batch=threads, verbose=False, numa=True)
    out["model_path"] = llm.model_path
    out["text"] = llm.create_completion("The capital of France is", max_tokens=6, temperature=0.0)["choices"][0]["text"]
    llm.close()
    try:
        lb.Llama.from_pretrained("someone/smollm2", filename="*Q8_0.gguf", cache_dir=cache_dir)
        out["no_match"] = "loaded"
    except ValueError as exc:
        out["no_match"] = str(exc)
    print(json.dumps(out))
    """
)


def test_from_pretrained_finds_the_file_in_an_offline_hub_cache(smollm2_path: Path, tmp_path: Path,
                                                                smol_greedy: str) -> None:
    pytest.importorskip("huggingface_hub")
    snapshot = hub_cache(tmp_path / "hub", smollm2_path).parent
    (snapshot / "README.md").write_text("a model card")
    # huggingface_hub reads HF_HUB_OFFLINE when it is imported: set it for a fresh process.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    proc = subprocess.run([sys.executable, "-c", FROM_PRETRAINED_CHILD, str(tmp_path / "hub"), str(N_THREADS)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["model_path"]) == snapshot / smollm2_path.name
    assert out["text"] == smol_greedy
    assert out["no_match"].startswith("no file matching '*Q8_0.gguf'")
