#pragma once

// Model: a loaded GGUF model. Shared (std::shared_ptr) by everything made from it, so a
// Context, Vocab or LoraAdapter keeps the weights alive whatever order they are dropped in.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "llama.h"

namespace llamabind {

class Vocab;

namespace detail {
class RpcLink;
}

// One metadata override applied at load time (llama_model_kv_override).
struct KvOverride {
    std::string key;
    std::variant<int64_t, double, bool, std::string> value;
};

// Everything in llama_model_params a binding user can set. Defaults are llama.cpp's own
// (llama_model_default_params()).
struct ModelParams {
    ModelParams();

    int32_t n_gpu_layers;            // layers to offload; negative = all
    llama_split_mode split_mode;     // how to split across GPUs
    int32_t main_gpu;                // GPU for the whole model when split_mode is NONE
    std::vector<float> tensor_split; // per-device proportions, at most max_devices() entries
    llama_load_mode load_mode;       // how to read the file (auto, mmap, mlock, direct I/O, ...)
    // Convenience switches mapped onto load_mode when set: mmap on/off, mlock on/off.
    std::optional<bool> use_mmap;
    std::optional<bool> use_mlock;
    bool vocab_only;                 // load only the vocabulary
    bool check_tensors;              // validate tensor data while loading
    bool use_extra_bufts;            // allow repacked weight buffers
    bool no_host;                    // bypass the host buffer
    std::vector<KvOverride> kv_overrides;
    // Called with progress in [0, 1]; returning false cancels the load (ModelLoadError).
    std::function<bool(float)> progress_callback;
    // RPC servers ("host:port", see rpc.hpp) whose devices hold layers of the model, in
    // front of this machine's GPUs: n_gpu_layers layers are spread over those devices (by
    // free memory, or by tensor_split, one entry per device in that order), the rest stays
    // on this machine's CPU. Each server is checked before loading (ModelLoadError naming
    // one that does not answer). Without servers, llama.cpp's own device choice applies.
    std::vector<std::string> rpc_servers;

    // The load_mode that results from load_mode, use_mmap and use_mlock.
    llama_load_mode effective_load_mode() const;
};

// Owns a llama_model. Create with Model::load / Model::load_splits.
//
//   llamabind::ModelParams params;
//   params.n_gpu_layers = -1;                       // all layers on the GPU, if there is one
//   std::shared_ptr<llamabind::Model> model = llamabind::Model::load("model.gguf", params);
//   std::cout << model->desc() << ", " << model->n_params() << " parameters\n";
class Model {
public:
    // Loads a GGUF file (a split model may be given by its first part named
    // <name>-00001-of-0000N.gguf). Throws FileNotFound, PermissionDenied or ModelLoadError.
    static std::shared_ptr<Model> load(const std::string & path, const ModelParams & params = {});

    // Loads a model whose splits do not follow llama.cpp's naming; paths in order.
    static std::shared_ptr<Model> load_splits(const std::vector<std::string> & paths,
                                              const ModelParams & params = {});

    Model(std::shared_ptr<llama_model> handle, std::string path, std::shared_ptr<detail::RpcLink> rpc = nullptr);

    Model(const Model &) = delete;
    Model & operator=(const Model &) = delete;

    // Drops this object's ownership. The weights are freed once every Context, Vocab and
    // adapter made from the model is gone too. Idempotent.
    void close() noexcept;
    bool closed() const noexcept;

    // The shared handle; throws Closed after close().
    std::shared_ptr<llama_model> handle() const;
    llama_model * get() const { return handle().get(); }

    const std::string & path() const noexcept { return path_; }

    // The RPC servers the model was loaded over ("host:port"; empty without).
    std::vector<std::string> rpc_servers() const;
    // Internal: the connection state of those servers (null without).
    const std::shared_ptr<detail::RpcLink> & rpc_link() const noexcept { return rpc_; }

    Vocab vocab() const;

    // A one-line description, e.g. "llama 135M Q4_1".
    std::string desc() const;
    // Bytes of all weight tensors.
    uint64_t size() const;
    // Number of parameters.
    uint64_t n_params() const;
    // Hyperparameters: training context length, embedding widths (input, hidden, output),
    // layers, attention heads (query and key/value), sliding-window size (0 = none) and
    // vocabulary size. A vocab_only model reports 0 for all but n_vocab.
    int32_t n_ctx_train() const;
    int32_t n_embd() const;
    int32_t n_embd_inp() const;
    int32_t n_embd_out() const;
    int32_t n_layer() const;
    int32_t n_head() const;
    int32_t n_head_kv() const;
    int32_t n_swa() const;
    int32_t n_vocab() const;
    // RoPE type and the frequency scale the model was trained with.
    llama_rope_type rope_type() const;
    float rope_freq_scale_train() const;
    // The weights' file type (quantization), as an enum and as llama.cpp names it ("Q4_1").
    llama_ftype ftype() const;
    std::string ftype_name() const;
    // Encoder-decoder models (T5): has_encoder(), and the token decoding starts from
    // (LLAMA_TOKEN_NULL when the model names none).
    bool has_encoder() const;
    bool has_decoder() const;
    llama_token decoder_start_token() const;
    // Architecture kinds: recurrent (Mamba, RWKV), hybrid attention/recurrent, diffusion.
    bool is_recurrent() const;
    bool is_hybrid() const;
    bool is_diffusion() const;

    // All scalar GGUF metadata as strings (arrays are summarised by llama.cpp).
    std::map<std::string, std::string> metadata() const;
    std::optional<std::string> meta_val(const std::string & key) const;

    // The chat template stored in the file (tokenizer.chat_template, or
    // tokenizer.chat_template.<name>); nullopt when absent.
    std::optional<std::string> chat_template(const std::optional<std::string> & name = std::nullopt) const;

    // Classifier heads: number of outputs (llama.cpp reports 1 for other models) and their
    // labels (empty strings where the file names none).
    uint32_t n_cls_out() const;
    std::vector<std::string> classifier_labels() const;

    // Writes the model as GGUF.
    void save_to_file(const std::string & path) const;

private:
    std::shared_ptr<llama_model> handle_;
    std::string path_;
    std::shared_ptr<detail::RpcLink> rpc_;
};

// Parameters of llama_model_quantize (defaults: llama_model_quantize_default_params()).
struct QuantizeParams {
    QuantizeParams();

    int32_t nthread;
    llama_ftype ftype;
    ggml_type output_tensor_type;
    ggml_type token_embedding_type;
    bool allow_requantize;
    bool quantize_output_tensor;
    bool only_copy;
    bool pure;
    bool keep_split;
    bool dry_run;
    std::vector<KvOverride> kv_overrides;
};

// Quantizes a GGUF model file into another. Throws FileNotFound or QuantizeError.
void quantize(const std::string & input_path, const std::string & output_path,
              const QuantizeParams & params = {});

}  // namespace llamabind
