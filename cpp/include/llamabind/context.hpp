#pragma once

// Context: an inference context (KV cache, outputs, threads) over a Model.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace llamabind {

class Batch;
class LoraAdapter;
class Model;

namespace detail {
class RpcLink;
}

// Everything in llama_context_params a binding user can set. Defaults are llama.cpp's own
// (llama_context_default_params()).
struct ContextParams {
    ContextParams();

    uint32_t n_ctx;           // 0 = the model's training context
    uint32_t n_batch;         // most tokens one decode() may take
    uint32_t n_ubatch;        // physical batch size
    uint32_t n_seq_max;       // distinct sequences
    uint32_t n_rs_seq;        // recurrent-state snapshots per sequence
    int32_t n_threads;        // threads for generation
    int32_t n_threads_batch;  // threads for prompt / batch processing
    llama_rope_scaling_type rope_scaling_type;
    enum llama_pooling_type pooling_type;
    llama_attention_type attention_type;
    llama_flash_attn_type flash_attn_type;
    float rope_freq_base;
    float rope_freq_scale;
    float yarn_ext_factor;
    float yarn_attn_factor;
    float yarn_beta_fast;
    float yarn_beta_slow;
    uint32_t yarn_orig_ctx;
    ggml_type type_k;
    ggml_type type_v;
    bool embeddings;
    bool offload_kqv;
    bool no_perf;
    bool op_offload;
    bool swa_full;
    bool kv_unified;
};

// Releases one claim on a context's output buffer (see Context::acquire_outputs).
class OutputLease {
public:
    OutputLease() = default;
    OutputLease(std::shared_ptr<llama_context> handle, std::shared_ptr<std::atomic<int>> counter);
    OutputLease(OutputLease &&) noexcept = default;
    OutputLease & operator=(OutputLease &&) noexcept = default;
    OutputLease(const OutputLease &) = delete;
    OutputLease & operator=(const OutputLease &) = delete;
    ~OutputLease();

private:
    std::shared_ptr<llama_context> handle_;
    std::shared_ptr<std::atomic<int>> counter_;
};

// An inference context: KV memory, output buffers and threads over a shared Model. One
// thread at a time uses it (methods lock mutex()); several contexts may share one model.
//
//   llamabind::ContextParams params;
//   params.n_ctx = 2048;
//   params.n_threads = 4;
//   llamabind::Context ctx(model, params);
//   ctx.decode_tokens(tokens.data(), tokens.size(), 0);
//   const float * row = ctx.logits_ith(-1);       // n_vocab() logits of the last token
class Context {
public:
    // Creates the context; throws InvalidArgument for impossible parameters (a vocab-only
    // model, too many sequences, ...) and Error when llama.cpp cannot create it. The context
    // keeps `model` alive.
    Context(std::shared_ptr<Model> model, const ContextParams & params = {});
    ~Context();

    Context(const Context &) = delete;
    Context & operator=(const Context &) = delete;

    // Frees the context (its memory goes once no output view holds it). Idempotent; every
    // other method throws Closed afterwards. Waits for a decode running in another thread.
    void close();
    bool closed() const noexcept;

    // The raw llama_context (throws Closed after close()), its shared handle, and the model.
    llama_context * get() const;
    std::shared_ptr<llama_context> handle() const;
    const std::shared_ptr<Model> & model() const;

    // Serialises use from several threads: every method below takes this lock.
    std::mutex & mutex() noexcept { return mutex_; }

    // The sizes in effect (as llama.cpp set them from the parameters; n_ctx_seq is the
    // context of one sequence), the model's n_vocab and output embedding width, the pooling
    // in effect and whether embeddings are computed.
    uint32_t n_ctx() const;
    uint32_t n_ctx_seq() const;
    uint32_t n_batch() const;
    uint32_t n_ubatch() const;
    uint32_t n_seq_max() const;
    int32_t n_threads() const;
    int32_t n_threads_batch() const;
    int32_t n_vocab() const;
    int32_t n_embd() const;
    enum llama_pooling_type pooling_type() const;
    bool embeddings_enabled() const;

    // Runs the model on a batch. Errors keep llama.cpp's codes apart: NoKvSlot (1),
    // Aborted (2), InvalidBatch (-1), FatalDecodeError (< -1). The batch is checked first
    // (token ids, sequence ids, size against n_batch) so llama.cpp never asserts on it. On
    // abort or failure the cells the call added are removed again, so the context is as
    // before the call. `stop`, if given, is polled like cancel() for this call only.
    void decode(const Batch & batch, const std::atomic<bool> * stop = nullptr);
    void encode(const Batch & batch, const std::atomic<bool> * stop = nullptr);

    // Decodes n tokens of one sequence at positions pos0, pos0+1, ..., in chunks of at most
    // n_batch. Logits are requested for the last token, or for every token when all_logits
    // (then the tokens must fit in one batch, since each chunk replaces the outputs).
    void decode_tokens(const llama_token * tokens, std::size_t n, llama_pos pos0, llama_seq_id seq_id = 0,
                       bool all_logits = false, const std::atomic<bool> * stop = nullptr);

    // Number of output rows of the last decode/encode.
    int32_t n_outputs() const;

    // Checks an index as llama_get_logits_ith takes it: a position in the last batch whose
    // output flag was set, or a negative row counted from the last output. Returns it.
    int32_t check_output_index(int32_t i, const char * where) const;

    // Logits of the last decode: n_outputs() rows of n_vocab() floats, valid until the next
    // decode. ith: row i (negative counts from the end). Throws OutOfRange for bad rows.
    const float * logits() const;
    const float * logits_ith(int32_t i) const;

    // Embeddings of the last decode (needs embeddings enabled): per output row, and per
    // sequence when pooling is on (copied, since llama.cpp rebuilds that storage per decode).
    const float * embeddings() const;
    const float * embeddings_ith(int32_t i) const;
    std::vector<float> embeddings_seq(llama_seq_id seq_id) const;
    int32_t n_embd_seq() const;  // length of embeddings_seq rows (n_cls_out for rank pooling)

    // Rows of the last decode's logits or embeddings, taken under the context lock so they
    // are consistent with each other even while other threads decode: `row` selects one
    // entry (as logits_ith takes it), nullopt all n_outputs rows. The view variants hold an
    // OutputLease; the copy variants return rows*cols floats.
    struct OutputView {
        const float * data = nullptr;
        int32_t rows = 0;
        int32_t cols = 0;
        OutputLease lease;
    };
    OutputView logits_view(std::optional<int32_t> row = std::nullopt) const;
    OutputView embeddings_view(std::optional<int32_t> row = std::nullopt) const;
    std::vector<float> logits_copy(std::optional<int32_t> row = std::nullopt) const;
    std::vector<float> embeddings_copy(std::optional<int32_t> row = std::nullopt) const;

    // Claims the output buffer for a caller holding pointers into it (e.g. a numpy view).
    // While any claim is alive, a decode that would make llama.cpp reallocate the buffer
    // throws InvalidArgument instead of leaving those pointers dangling.
    OutputLease acquire_outputs() const;
    int live_output_leases() const noexcept { return leases_->load(); }

    // KV memory. Positions p0..p1 are half-open, [p0, p1); -1 means "from the start" for p0
    // and "to the end" for p1; seq_id -1 (where llama.h allows it) means every sequence.
    // memory_clear: forget everything (data=true also zeroes the buffers). seq_rm: remove
    // cells; false when the memory cannot remove part of a sequence (recurrent models).
    void memory_clear(bool data = true);
    bool seq_rm(llama_seq_id seq_id, llama_pos p0 = -1, llama_pos p1 = -1);
    // Without kv_unified, sequences live in separate KV streams: copying to another sequence
    // then replaces that sequence's contents and only whole sequences can be copied.
    void seq_cp(llama_seq_id src, llama_seq_id dst, llama_pos p0 = -1, llama_pos p1 = -1);
    // seq_keep: drop every other sequence. seq_add / seq_div: shift or divide the positions
    // of [p0, p1) (context shifting, self-extend). seq_pos_min / seq_pos_max: the smallest
    // and largest position held (-1 when empty). can_shift: whether seq_add/seq_div work.
    void seq_keep(llama_seq_id seq_id);
    void seq_add(llama_seq_id seq_id, llama_pos p0, llama_pos p1, llama_pos delta);
    void seq_div(llama_seq_id seq_id, llama_pos p0, llama_pos p1, int d);
    llama_pos seq_pos_min(llama_seq_id seq_id) const;
    llama_pos seq_pos_max(llama_seq_id seq_id) const;
    bool can_shift() const;

    // State: whole context and per sequence, in memory and as files. The files also hold
    // the tokens given when saving; loading returns them (at most token_capacity). Loading
    // state of another model or a truncated buffer throws StateError.
    std::vector<uint8_t> state_get();
    void state_set(const uint8_t * data, std::size_t size);
    void state_save_file(const std::string & path, const std::vector<llama_token> & tokens);
    std::vector<llama_token> state_load_file(const std::string & path, std::size_t token_capacity);
    std::vector<uint8_t> state_seq_get(llama_seq_id seq_id, llama_state_seq_flags flags = 0);
    void state_seq_set(const uint8_t * data, std::size_t size, llama_seq_id dest_seq_id,
                       llama_state_seq_flags flags = 0);
    void state_seq_save_file(const std::string & path, llama_seq_id seq_id,
                             const std::vector<llama_token> & tokens);
    std::vector<llama_token> state_seq_load_file(const std::string & path, llama_seq_id dest_seq_id,
                                                 std::size_t token_capacity);

    // Threads for generation and for batches; whether decode computes embeddings; causal
    // or bidirectional attention (for embedding with a decoder model).
    void set_threads(int32_t n_threads, int32_t n_threads_batch);
    void set_embeddings(bool embeddings);
    void set_causal_attn(bool causal);
    bool causal_attn() const;

    // Cancellation. cancel() may be called from any thread: the running (or next) decode
    // stops at the next graph node and throws Aborted; the flag is then cleared.
    void cancel() noexcept { cancel_flag_.store(true, std::memory_order_relaxed); }
    bool cancel_requested() const noexcept { return cancel_flag_.load(std::memory_order_relaxed); }
    void clear_cancel() noexcept { cancel_flag_.store(false, std::memory_order_relaxed); }

    // llama.cpp's timings of this context (needs ContextParams::no_perf = false).
    llama_perf_context_data perf() const;
    void perf_reset();

    // LoRA adapters with scales (replacing the current set), and control vectors.
    void set_lora_adapters(const std::vector<std::pair<std::shared_ptr<LoraAdapter>, float>> & adapters);
    void clear_lora_adapters();
    void set_control_vector(const std::vector<float> & data, int32_t n_embd, int32_t il_start,
                            int32_t il_end);
    void clear_control_vector();

    // Waits until the backend has finished the work queued by the last decode.
    void synchronize();

private:
    std::shared_ptr<detail::RpcLink> rpc_;  // the model's RPC servers (null without)
    static bool abort_trampoline(void * data);
    void check_batch(const Batch & batch, const char * where) const;
    void check_seq(llama_seq_id seq_id, const char * where, bool allow_negative) const;
    std::size_t output_bytes_for(int64_t n_outputs) const;
    // Logits or embeddings: what the output accessors differ in (see context.cpp).
    struct OutputKind;
    static const OutputKind kLogits;
    static const OutputKind kEmbeddings;
    const float * output_locked(const OutputKind & kind, std::optional<int32_t> row, int32_t & rows) const;
    const float * output(const OutputKind & kind, std::optional<int32_t> row) const;
    OutputView output_view(const OutputKind & kind, std::optional<int32_t> row) const;
    std::vector<float> output_copy(const OutputKind & kind, std::optional<int32_t> row) const;
    void run(const Batch & batch, bool encode, const std::atomic<bool> * stop);
    void run_locked(const Batch & batch, bool encode, const std::atomic<bool> * stop);
    llama_context * require() const;
    // `member`, once require() has found the context open.
    template <class T>
    const T & open_member(const T & member) const {
        require();
        return member;
    }

    std::shared_ptr<Model> model_;
    std::shared_ptr<llama_context> ctx_;
    std::vector<std::shared_ptr<llama_adapter_lora>> adapters_;
    std::unique_ptr<Batch> scratch_;  // reused by decode_tokens
    mutable std::mutex mutex_;
    std::atomic<bool> cancel_flag_{false};
    std::atomic<const std::atomic<bool> *> stop_{nullptr};
    std::shared_ptr<std::atomic<int>> leases_;

    int32_t n_vocab_ = 0;
    int32_t n_embd_out_ = 0;
    uint32_t n_seq_max_ = 1;
    uint32_t n_batch_ = 0;
    uint32_t n_ubatch_ = 0;
    bool embeddings_ = false;
    bool causal_ = true;
    bool kv_unified_ = false;
    int32_t n_outputs_ = 0;
    std::vector<int8_t> last_output_flags_;
    std::size_t output_capacity_bytes_ = 0;
};

}  // namespace llamabind
