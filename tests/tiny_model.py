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
        _copy_field(writer, field)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(field.data)
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


def _copy_field(writer, field) -> None:
    """Writes one ``GGUFReader`` field into ``writer`` unchanged (raw bytes for strings)."""
    import gguf

    main_type = field.types[0]
    if main_type == gguf.GGUFValueType.ARRAY:
        sub_type = field.types[-1]
        if sub_type == gguf.GGUFValueType.STRING:
            value = [bytes(field.parts[i]) for i in field.data]
        else:
            value = field.contents()
        writer.add_key_value(field.name, value, main_type, sub_type=sub_type)
    elif main_type == gguf.GGUFValueType.STRING:
        writer.add_key_value(field.name, bytes(field.parts[-1]), main_type)
    else:
        writer.add_key_value(field.name, field.contents(), main_type)


def copy_gguf(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    split_max_tensors: int = 0,
    replace_tensors: dict[str, np.ndarray] | None = None,
    set_uint32: dict[str, int] | None = None,
) -> list[Path]:
    """Rewrites the GGUF file ``src`` as ``dst`` key by key and tensor by tensor with the gguf
    writer. With ``split_max_tensors > 0`` the writer splits the model into files named
    ``<dst stem>-0000i-of-0000n.gguf`` (its ``SHARD_NAME_FORMAT``) that carry the ``split.*``
    keys llama.cpp's loader reads. ``replace_tensors`` swaps in new data (same shape, f32) for
    the named tensors; ``set_uint32`` adds or replaces uint32 metadata keys. Returns the
    written paths, first split first.

        parts = copy_gguf(tiny_path, tmp_path / "tiny.gguf", split_max_tensors=8)
    """
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(Path(dst), arch, split_max_tensors=split_max_tensors)
    for key, field in reader.fields.items():
        # GGUF.* are header pseudo-fields; the writer adds general.architecture itself.
        if key.startswith("GGUF.") or key == "general.architecture" or key in (set_uint32 or {}):
            continue
        _copy_field(writer, field)
    for key, value in (set_uint32 or {}).items():
        writer.add_uint32(key, value)
    replace_tensors = replace_tensors or {}
    for tensor in reader.tensors:
        if tensor.name in replace_tensors:
            data = np.ascontiguousarray(replace_tensors[tensor.name], dtype=np.float32)
            if data.shape != tuple(tensor.data.shape):
                raise ValueError(f"{tensor.name}: shape {data.shape}, expected {tuple(tensor.data.shape)}")
            writer.add_tensor(tensor.name, data)
            continue
        # numpy shape = reversed ggml ne; quantized data comes as raw bytes per row.
        writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=tensor.tensor_type)
    paths = writer.format_shard_names(Path(dst))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return paths


def write_lora_adapter(
    path: str | os.PathLike[str],
    targets: dict[str, tuple[int, int]],
    *,
    arch: str = ARCH,
    rank: int = 4,
    alpha: float = 8.0,
    magnitude: float = 1.0,
    invocation_tokens: list[int] | None = None,
    seed: int = 1,
) -> Path:
    """Writes a LoRA adapter GGUF as llama.cpp's ``llama_adapter_lora_init`` reads it.

    ``targets`` maps base-model weight names to their numpy shape ``(n_out, n_in)`` (ggml ne
    ``{n_in, n_out}``). For each, ``<name>.lora_a`` has ne ``{n_in, rank}`` (numpy
    ``(rank, n_in)``) and ``<name>.lora_b`` ne ``{rank, n_out}`` (numpy ``(n_out, rank)``), so
    ``W x + scale * B (A x)`` with scale ``alpha / rank`` (see ``build_lora_mm``). Metadata:
    ``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha`` and, for
    an activated LoRA, ``adapter.alora.invocation_tokens`` (uint32 array).
    """
    import gguf

    path = Path(path)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    if invocation_tokens is not None:
        writer.add_key_value(
            gguf.Keys.Adapter.ALORA_INVOCATION_TOKENS,
            [int(t) for t in invocation_tokens],
            gguf.GGUFValueType.ARRAY,
            sub_type=gguf.GGUFValueType.UINT32,
        )
    for name, (n_out, n_in) in targets.items():
        a = (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32)
        b = (magnitude * rng.standard_normal((n_out, rank)) / np.sqrt(rank)).astype(np.float32)
        writer.add_tensor(f"{name}.lora_a", a)
        writer.add_tensor(f"{name}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
