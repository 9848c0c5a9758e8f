// llama.cpp's enums as Python enum.IntEnum / enum.IntFlag classes.

#include "common.hpp"

#include <pybind11/native_enum.h>

#include "ggml-cpu.h"
#include "llama.h"

namespace llamabind::bindings {

void init_enums(py::module_ & m) {
    py::native_enum<enum llama_vocab_type>(m, "VocabType", "enum.IntEnum", "Tokenizer family of a vocabulary.")
        .value("NONE", LLAMA_VOCAB_TYPE_NONE)
        .value("SPM", LLAMA_VOCAB_TYPE_SPM)
        .value("BPE", LLAMA_VOCAB_TYPE_BPE)
        .value("WPM", LLAMA_VOCAB_TYPE_WPM)
        .value("UGM", LLAMA_VOCAB_TYPE_UGM)
        .value("RWKV", LLAMA_VOCAB_TYPE_RWKV)
        .value("PLAMO2", LLAMA_VOCAB_TYPE_PLAMO2)
        .value("TEST", LLAMA_VOCAB_TYPE_TEST)
        .finalize();

    py::native_enum<llama_rope_type>(m, "RopeType", "enum.IntEnum", "RoPE variant a model uses.")
        .value("NONE", LLAMA_ROPE_TYPE_NONE)
        .value("NORM", LLAMA_ROPE_TYPE_NORM)
        .value("NEOX", LLAMA_ROPE_TYPE_NEOX)
        .value("MROPE", LLAMA_ROPE_TYPE_MROPE)
        .value("IMROPE", LLAMA_ROPE_TYPE_IMROPE)
        .value("VISION", LLAMA_ROPE_TYPE_VISION)
        .finalize();

    py::native_enum<llama_token_attr>(m, "TokenAttr", "enum.IntFlag", "Attribute flags of a vocabulary token.")
        .value("UNDEFINED", LLAMA_TOKEN_ATTR_UNDEFINED)
        .value("UNKNOWN", LLAMA_TOKEN_ATTR_UNKNOWN)
        .value("UNUSED", LLAMA_TOKEN_ATTR_UNUSED)
        .value("NORMAL", LLAMA_TOKEN_ATTR_NORMAL)
        .value("CONTROL", LLAMA_TOKEN_ATTR_CONTROL)
        .value("USER_DEFINED", LLAMA_TOKEN_ATTR_USER_DEFINED)
        .value("BYTE", LLAMA_TOKEN_ATTR_BYTE)
        .value("NORMALIZED", LLAMA_TOKEN_ATTR_NORMALIZED)
        .value("LSTRIP", LLAMA_TOKEN_ATTR_LSTRIP)
        .value("RSTRIP", LLAMA_TOKEN_ATTR_RSTRIP)
        .value("SINGLE_WORD", LLAMA_TOKEN_ATTR_SINGLE_WORD)
        .finalize();

    py::native_enum<llama_ftype>(m, "FType", "enum.IntEnum", "Model file type (quantization).")
        .value("ALL_F32", LLAMA_FTYPE_ALL_F32)
        .value("MOSTLY_F16", LLAMA_FTYPE_MOSTLY_F16)
        .value("MOSTLY_Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0)
        .value("MOSTLY_Q4_1", LLAMA_FTYPE_MOSTLY_Q4_1)
        .value("MOSTLY_Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0)
        .value("MOSTLY_Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0)
        .value("MOSTLY_Q5_1", LLAMA_FTYPE_MOSTLY_Q5_1)
        .value("MOSTLY_Q2_K", LLAMA_FTYPE_MOSTLY_Q2_K)
        .value("MOSTLY_Q3_K_S", LLAMA_FTYPE_MOSTLY_Q3_K_S)
        .value("MOSTLY_Q3_K_M", LLAMA_FTYPE_MOSTLY_Q3_K_M)
        .value("MOSTLY_Q3_K_L", LLAMA_FTYPE_MOSTLY_Q3_K_L)
        .value("MOSTLY_Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S)
        .value("MOSTLY_Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M)
        .value("MOSTLY_Q5_K_S", LLAMA_FTYPE_MOSTLY_Q5_K_S)
        .value("MOSTLY_Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M)
        .value("MOSTLY_Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K)
        .value("MOSTLY_IQ2_XXS", LLAMA_FTYPE_MOSTLY_IQ2_XXS)
        .value("MOSTLY_IQ2_XS", LLAMA_FTYPE_MOSTLY_IQ2_XS)
        .value("MOSTLY_Q2_K_S", LLAMA_FTYPE_MOSTLY_Q2_K_S)
        .value("MOSTLY_IQ3_XS", LLAMA_FTYPE_MOSTLY_IQ3_XS)
        .value("MOSTLY_IQ3_XXS", LLAMA_FTYPE_MOSTLY_IQ3_XXS)
        .value("MOSTLY_IQ1_S", LLAMA_FTYPE_MOSTLY_IQ1_S)
        .value("MOSTLY_IQ4_NL", LLAMA_FTYPE_MOSTLY_IQ4_NL)
        .value("MOSTLY_IQ3_S", LLAMA_FTYPE_MOSTLY_IQ3_S)
        .value("MOSTLY_IQ3_M", LLAMA_FTYPE_MOSTLY_IQ3_M)
        .value("MOSTLY_IQ2_S", LLAMA_FTYPE_MOSTLY_IQ2_S)
        .value("MOSTLY_IQ2_M", LLAMA_FTYPE_MOSTLY_IQ2_M)
        .value("MOSTLY_IQ4_XS", LLAMA_FTYPE_MOSTLY_IQ4_XS)
        .value("MOSTLY_IQ1_M", LLAMA_FTYPE_MOSTLY_IQ1_M)
        .value("MOSTLY_BF16", LLAMA_FTYPE_MOSTLY_BF16)
        .value("MOSTLY_TQ1_0", LLAMA_FTYPE_MOSTLY_TQ1_0)
        .value("MOSTLY_TQ2_0", LLAMA_FTYPE_MOSTLY_TQ2_0)
        .value("MOSTLY_MXFP4_MOE", LLAMA_FTYPE_MOSTLY_MXFP4_MOE)
        .value("MOSTLY_NVFP4", LLAMA_FTYPE_MOSTLY_NVFP4)
        .value("MOSTLY_Q1_0", LLAMA_FTYPE_MOSTLY_Q1_0)
        .value("MOSTLY_Q2_0", LLAMA_FTYPE_MOSTLY_Q2_0)
        .value("GUESSED", LLAMA_FTYPE_GUESSED)
        .finalize();

    py::native_enum<llama_rope_scaling_type>(m, "RopeScalingType", "enum.IntEnum", "RoPE context scaling.")
        .value("UNSPECIFIED", LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED)
        .value("NONE", LLAMA_ROPE_SCALING_TYPE_NONE)
        .value("LINEAR", LLAMA_ROPE_SCALING_TYPE_LINEAR)
        .value("YARN", LLAMA_ROPE_SCALING_TYPE_YARN)
        .value("LONGROPE", LLAMA_ROPE_SCALING_TYPE_LONGROPE)
        .finalize();

    py::native_enum<enum llama_pooling_type>(m, "PoolingType", "enum.IntEnum", "How embeddings are pooled per sequence.")
        .value("UNSPECIFIED", LLAMA_POOLING_TYPE_UNSPECIFIED)
        .value("NONE", LLAMA_POOLING_TYPE_NONE)
        .value("MEAN", LLAMA_POOLING_TYPE_MEAN)
        .value("CLS", LLAMA_POOLING_TYPE_CLS)
        .value("LAST", LLAMA_POOLING_TYPE_LAST)
        .value("RANK", LLAMA_POOLING_TYPE_RANK)
        .finalize();

    py::native_enum<llama_attention_type>(m, "AttentionType", "enum.IntEnum", "Attention used for embeddings.")
        .value("UNSPECIFIED", LLAMA_ATTENTION_TYPE_UNSPECIFIED)
        .value("CAUSAL", LLAMA_ATTENTION_TYPE_CAUSAL)
        .value("NON_CAUSAL", LLAMA_ATTENTION_TYPE_NON_CAUSAL)
        .finalize();

    py::native_enum<llama_flash_attn_type>(m, "FlashAttnType", "enum.IntEnum", "When to use Flash Attention.")
        .value("AUTO", LLAMA_FLASH_ATTN_TYPE_AUTO)
        .value("DISABLED", LLAMA_FLASH_ATTN_TYPE_DISABLED)
        .value("ENABLED", LLAMA_FLASH_ATTN_TYPE_ENABLED)
        .finalize();

    py::native_enum<llama_split_mode>(m, "SplitMode", "enum.IntEnum", "How a model is split across GPUs.")
        .value("NONE", LLAMA_SPLIT_MODE_NONE)
        .value("LAYER", LLAMA_SPLIT_MODE_LAYER)
        .value("ROW", LLAMA_SPLIT_MODE_ROW)
        .value("TENSOR", LLAMA_SPLIT_MODE_TENSOR)
        .finalize();

    py::native_enum<llama_load_mode>(m, "LoadMode", "enum.IntEnum", "How model weights are read from disk.")
        .value("AUTO", LLAMA_LOAD_MODE_AUTO)
        .value("NONE", LLAMA_LOAD_MODE_NONE)
        .value("MMAP", LLAMA_LOAD_MODE_MMAP)
        .value("MLOCK", LLAMA_LOAD_MODE_MLOCK)
        .value("MMAP_MLOCK", LLAMA_LOAD_MODE_MMAP_MLOCK)
        .value("DIRECT_IO", LLAMA_LOAD_MODE_DIRECT_IO)
        .finalize();

    py::native_enum<ggml_type>(m, "GGMLType", "enum.IntEnum", "ggml tensor data types (KV cache types, quantization).")
        .value("F32", GGML_TYPE_F32)
        .value("F16", GGML_TYPE_F16)
        .value("Q4_0", GGML_TYPE_Q4_0)
        .value("Q4_1", GGML_TYPE_Q4_1)
        .value("Q5_0", GGML_TYPE_Q5_0)
        .value("Q5_1", GGML_TYPE_Q5_1)
        .value("Q8_0", GGML_TYPE_Q8_0)
        .value("Q8_1", GGML_TYPE_Q8_1)
        .value("Q2_K", GGML_TYPE_Q2_K)
        .value("Q3_K", GGML_TYPE_Q3_K)
        .value("Q4_K", GGML_TYPE_Q4_K)
        .value("Q5_K", GGML_TYPE_Q5_K)
        .value("Q6_K", GGML_TYPE_Q6_K)
        .value("Q8_K", GGML_TYPE_Q8_K)
        .value("IQ2_XXS", GGML_TYPE_IQ2_XXS)
        .value("IQ2_XS", GGML_TYPE_IQ2_XS)
        .value("IQ3_XXS", GGML_TYPE_IQ3_XXS)
        .value("IQ1_S", GGML_TYPE_IQ1_S)
        .value("IQ4_NL", GGML_TYPE_IQ4_NL)
        .value("IQ3_S", GGML_TYPE_IQ3_S)
        .value("IQ2_S", GGML_TYPE_IQ2_S)
        .value("IQ4_XS", GGML_TYPE_IQ4_XS)
        .value("I8", GGML_TYPE_I8)
        .value("I16", GGML_TYPE_I16)
        .value("I32", GGML_TYPE_I32)
        .value("I64", GGML_TYPE_I64)
        .value("F64", GGML_TYPE_F64)
        .value("IQ1_M", GGML_TYPE_IQ1_M)
        .value("BF16", GGML_TYPE_BF16)
        .value("TQ1_0", GGML_TYPE_TQ1_0)
        .value("TQ2_0", GGML_TYPE_TQ2_0)
        .value("MXFP4", GGML_TYPE_MXFP4)
        .value("NVFP4", GGML_TYPE_NVFP4)
        .value("Q1_0", GGML_TYPE_Q1_0)
        .value("Q2_0", GGML_TYPE_Q2_0)
        .value("COUNT", GGML_TYPE_COUNT)  // "unset": quantize() then keeps its default type
        .finalize();

    py::native_enum<ggml_numa_strategy>(m, "NumaStrategy", "enum.IntEnum", "NUMA placement of compute threads.")
        .value("DISABLED", GGML_NUMA_STRATEGY_DISABLED)
        .value("DISTRIBUTE", GGML_NUMA_STRATEGY_DISTRIBUTE)
        .value("ISOLATE", GGML_NUMA_STRATEGY_ISOLATE)
        .value("NUMACTL", GGML_NUMA_STRATEGY_NUMACTL)
        .value("MIRROR", GGML_NUMA_STRATEGY_MIRROR)
        .finalize();
}

}  // namespace llamabind::bindings
