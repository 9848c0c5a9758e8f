"""Tiny random-weight llama-architecture GGUF models for fast mechanics tests.

The weights are random (so the output is meaningless), but the model is a genuine
llama.cpp ``llama`` model: it loads, decodes, has a KV cache and state like any other.
The vocabulary is the real 32000-token SentencePiece vocabulary of llama.cpp's
``models/ggml-vocab-llama-spm.gguf``, copied key by key, so tokenization behaves as for
LLaMA 1/2.

Tensor names and shapes follow ``llama_model_llama::load_arch_tensors`` in the pinned
``src/models/llama.cpp``; numpy shapes are ggml's ``ne`` reversed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LLAMA_CPP_DIR = Path(os.environ.get("LLAMABIND_LLAMA_CPP_DIR", ROOT / "extern" / "llama.cpp"))
SPM_VOCAB = LLAMA_CPP_DIR / "models" / "ggml-vocab-llama-spm.gguf"

ARCH = "llama"


def _copy_tokenizer_fields(writer, vocab_path: Path) -> int:
    """Copies every ``tokenizer.*`` key of ``vocab_path`` into ``writer``; returns n_vocab."""
    import gguf

    reader = gguf.GGUFReader(vocab_path)
    n_vocab = 0
    copied = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main_type = field.types[0]
        if main_type == gguf.GGUFValueType.ARRAY:
            sub_type = field.types[-1]
            if sub_type == gguf.GGUFValueType.STRING:
                # Raw bytes, so no token text is re-encoded on the way.
                value = [bytes(field.parts[i]) for i in field.data]
            else:
                value = field.contents()
            writer.add_key_value(key, value, main_type, sub_type=sub_type)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(value)
        elif main_type == gguf.GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[-1]), main_type)
        else:
            writer.add_key_value(key, field.contents(), main_type)
        copied += 1
    if n_vocab == 0 or copied == 0:
        raise RuntimeError(f"{vocab_path} has no tokenizer.ggml.tokens")
    return n_vocab


def write_tiny_llama(
    path: str | os.PathLike[str],
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    n_ctx_train: int = 256,
    seed: int = 0,
) -> Path:
    """Writes a random-weight llama model with the llama SPM vocabulary to ``path``.

    All tensors are f32. ``n_embd`` must be a multiple of ``n_head`` and ``n_head`` of
    ``n_head_kv`` (grouped-query attention); the head size must be even (RoPE).

        path = write_tiny_llama(tmp_path / "tiny.gguf")
        model = llamabind.Model(path)
    """
    import gguf

    if n_embd % n_head != 0 or n_head % n_head_kv != 0:
        raise ValueError("n_embd must be a multiple of n_head, and n_head of n_head_kv")
    head_dim = n_embd // n_head
    if head_dim % 2 != 0:
        raise ValueError("the head size n_embd // n_head must be even for RoPE")

    path = Path(path)
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        # Scaled like a standard init so activations stay in a sane range.
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_name("llamabind tiny random llama")
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer_fields(writer, SPM_VOCAB)
    writer.add_vocab_size(n_vocab)

    # numpy shape = reversed ggml ne: ne {n_embd, n_vocab} is (n_vocab, n_embd).
    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm(n_embd))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(n_head * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(n_embd, n_head * head_dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm(n_embd))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", norm(n_embd))
    # Larger output weights give peaked, well-separated logits (greedy is unambiguous).
    writer.add_tensor("output.weight", 4.0 * weight(n_vocab, n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
