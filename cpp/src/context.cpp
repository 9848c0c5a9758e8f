#include "llamabind/context.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <thread>

#include "detail.hpp"
#include "llamabind/backend.hpp"
#include "llamabind/batch.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/lora.hpp"
#include "llamabind/model.hpp"
#include "ggml.h"
#include "rpc_link.hpp"

namespace llamabind {

namespace fs = std::filesystem;

ContextParams::ContextParams() {
    const llama_context_params d = llama_context_default_params();
    n_ctx = d.n_ctx;
    n_batch = d.n_batch;
    n_ubatch = d.n_ubatch;
    n_seq_max = d.n_seq_max;
    n_rs_seq = d.n_rs_seq;
    n_threads = d.n_threads;
    n_threads_batch = d.n_threads_batch;
    rope_scaling_type = d.rope_scaling_type;
    pooling_type = d.pooling_type;
    attention_type = d.attention_type;
    flash_attn_type = d.flash_attn_type;
    rope_freq_base = d.rope_freq_base;
    rope_freq_scale = d.rope_freq_scale;
    yarn_ext_factor = d.yarn_ext_factor;
    yarn_attn_factor = d.yarn_attn_factor;
    yarn_beta_fast = d.yarn_beta_fast;
    yarn_beta_slow = d.yarn_beta_slow;
    yarn_orig_ctx = d.yarn_orig_ctx;
    type_k = d.type_k;
    type_v = d.type_v;
    embeddings = d.embeddings;
    offload_kqv = d.offload_kqv;
    no_perf = d.no_perf;
    op_offload = d.op_offload;
    swa_full = d.swa_full;
    kv_unified = d.kv_unified;
}

OutputLease::OutputLease(std::shared_ptr<llama_context> handle, std::shared_ptr<std::atomic<int>> counter)
    : handle_(std::move(handle)), counter_(std::move(counter)) {
    counter_->fetch_add(1);
}

OutputLease::~OutputLease() {
    if (counter_) {
        counter_->fetch_sub(1);
    }
}

namespace {

void check_positive(int64_t value, const char * name) {
    if (value <= 0) {
        throw InvalidArgument(std::string("[Context] ") + name + " must be > 0, got " + std::to_string(value));
    }
}

std::string meta(const llama_model * model, const std::string & key) {
    char buf[256];
    const int32_t n = llama_model_meta_val_str(model, key.c_str(), buf, sizeof(buf));
    return n < 0 ? std::string() : std::string(buf, static_cast<std::size_t>(std::min<int32_t>(n, sizeof(buf) - 1)));
}

// Whether the model attends causally unless told otherwise: llama.cpp's hparams.causal_attn,
// which is the GGUF key <arch>.attention.causal (default true) except for the architectures
// that set it off in code.
bool model_is_causal(const llama_model * model) {
    const std::string arch = meta(model, "general.architecture");
    static const char * const non_causal[] = {"dream", "gemma-embedding", "llada", "llada-moe", "rnd1"};
    for (const char * name : non_causal) {
        if (arch == name) {
            return false;
        }
    }
    return meta(model, arch + ".attention.causal") != "false";
}

const char * type_name(ggml_type type) {
    return type >= 0 && type < GGML_TYPE_COUNT ? ggml_type_name(type) : "unknown";
}

// The settings llama.cpp cannot serve and reaches a GGML_ASSERT with (or computes garbage
// with) instead of refusing; each message names the parameter and llama.cpp's rule.
void check_supported(const llama_model * model, const ContextParams & params) {
    for (const auto & [type, name] : {std::pair{params.type_k, "type_k"}, std::pair{params.type_v, "type_v"}}) {
        const bool usable = type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 ||
                            (type >= 0 && type < GGML_TYPE_COUNT && ggml_is_quantized(type));
        if (!usable) {
            throw InvalidArgument(std::string("[Context] ") + name + "=" + type_name(type) +
                                  " cannot hold a KV cache: use F32, F16, BF16 or a quantized type");
        }
    }
    if (ggml_is_quantized(params.type_v) && params.flash_attn_type == LLAMA_FLASH_ATTN_TYPE_DISABLED) {
        throw InvalidArgument(std::string("[Context] type_v=") + type_name(params.type_v) +
                              " (a quantized V cache) needs flash attention (llama.cpp's rule): set "
                              "flash_attn_type ENABLED or AUTO, or an unquantized type_v");
    }
    if (params.rope_freq_base < 0.0f || params.rope_freq_scale < 0.0f) {
        throw InvalidArgument("[Context] rope_freq_base and rope_freq_scale must be >= 0 (0: the model's own), got " +
                              std::to_string(params.rope_freq_base) + " and " + std::to_string(params.rope_freq_scale) +
                              " (negative values give NaN logits)");
    }
    // llama.cpp reserves one output row per sequence at creation, within the batch's outputs,
    // and asserts that they fit (llama_context::output_reserve). With causal attention the
    // batch is at most the context.
    const bool causal = params.attention_type == LLAMA_ATTENTION_TYPE_UNSPECIFIED
                            ? model_is_causal(model)
                            : params.attention_type == LLAMA_ATTENTION_TYPE_CAUSAL;
    const uint32_t n_ctx = params.n_ctx != 0 ? params.n_ctx : static_cast<uint32_t>(llama_model_n_ctx_train(model));
    const uint32_t n_batch = causal ? std::min(n_ctx, params.n_batch) : params.n_batch;
    if (params.n_seq_max > n_batch) {
        throw InvalidArgument("[Context] n_seq_max=" + std::to_string(params.n_seq_max) + " exceeds n_batch=" +
                              std::to_string(n_batch) + (causal && n_ctx < params.n_batch ? " (n_batch is capped at n_ctx)" : "") +
                              ": llama.cpp keeps an output row per sequence within the batch's outputs");
    }
    // Without causal attention a whole sequence is one ubatch, and the pooled embeddings graph
    // splits the ubatch equally among the sequences (ggml_can_mul_mat otherwise asserts).
    const uint32_t n_ubatch = std::min(n_batch, params.n_ubatch);
    if (!causal && params.embeddings && n_ubatch % params.n_seq_max != 0) {
        throw InvalidArgument("[Context] n_ubatch=" + std::to_string(n_ubatch) + " is not a multiple of n_seq_max=" +
                              std::to_string(params.n_seq_max) + ": with non-causal attention and embeddings llama.cpp "
                              "splits each ubatch equally among the sequences");
    }
}

}  // namespace

Context::Context(std::shared_ptr<Model> model, const ContextParams & params) : model_(std::move(model)) {
    if (!model_) {
        throw InvalidArgument("[Context] model is None");
    }
    std::shared_ptr<llama_model> model_handle = model_->handle();
    if (llama_model_n_layer(model_handle.get()) == 0 && llama_model_n_embd(model_handle.get()) == 0) {
        throw InvalidArgument("[Context] the model was loaded with vocab_only=True; it has no weights to run");
    }
    check_positive(params.n_batch, "n_batch");
    check_positive(params.n_ubatch, "n_ubatch");
    check_positive(params.n_seq_max, "n_seq_max");
    check_positive(params.n_threads, "n_threads");
    check_positive(params.n_threads_batch, "n_threads_batch");
    const std::size_t max_seq = llama_max_parallel_sequences();
    if (params.n_seq_max > max_seq) {
        throw InvalidArgument("[Context] n_seq_max must be <= " + std::to_string(max_seq) + ", got " +
                              std::to_string(params.n_seq_max));
    }
    if (params.n_ctx == 0 && llama_model_n_ctx_train(model_handle.get()) <= 0) {
        throw InvalidArgument("[Context] n_ctx=0 asks for the training context, but the model does not declare one");
    }
    check_supported(model_handle.get(), params);
    rpc_ = model_->rpc_link();
    if (rpc_) {
        rpc_->check("Context");
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = params.n_ctx;
    cp.n_batch = params.n_batch;
    cp.n_ubatch = params.n_ubatch;
    cp.n_seq_max = params.n_seq_max;
    cp.n_rs_seq = params.n_rs_seq;
    cp.n_threads = params.n_threads;
    cp.n_threads_batch = params.n_threads_batch;
    cp.rope_scaling_type = params.rope_scaling_type;
    cp.pooling_type = params.pooling_type;
    cp.attention_type = params.attention_type;
    cp.flash_attn_type = params.flash_attn_type;
    cp.rope_freq_base = params.rope_freq_base;
    cp.rope_freq_scale = params.rope_freq_scale;
    cp.yarn_ext_factor = params.yarn_ext_factor;
    cp.yarn_attn_factor = params.yarn_attn_factor;
    cp.yarn_beta_fast = params.yarn_beta_fast;
    cp.yarn_beta_slow = params.yarn_beta_slow;
    cp.yarn_orig_ctx = params.yarn_orig_ctx;
    cp.type_k = params.type_k;
    cp.type_v = params.type_v;
    cp.embeddings = params.embeddings;
    cp.offload_kqv = params.offload_kqv;
    cp.no_perf = params.no_perf;
    cp.op_offload = params.op_offload;
    cp.swa_full = params.swa_full;
    cp.kv_unified = params.kv_unified;
    cp.abort_callback = &Context::abort_trampoline;
    cp.abort_callback_data = this;

    clear_last_error_log();
    llama_context * raw = detail::rpc_guarded(rpc_, "Context", [&] { return llama_init_from_model(model_handle.get(), cp); });
    if (raw == nullptr) {
        const std::string reason = last_error_log();
        const std::string message =
            detail::with_reason("[Context] llama.cpp could not create a context for '" + model_->path() + "'");
        // Settings llama.cpp checks itself (a cache type's block size against the head size, ...).
        if (reason.find("cache type") != std::string::npos || reason.find("flash_attn") != std::string::npos) {
            throw InvalidArgument(message + " (type_k/type_v, flash_attn_type)");
        }
        throw Error(message);
    }
    // The deleter keeps the model alive until the context is gone, whoever goes first.
    // A context on a lost RPC server is leaked (RpcLink::release), not freed.
    ctx_ = std::shared_ptr<llama_context>(raw, [model_handle, rpc = rpc_](llama_context * c) {
        if (rpc) {
            rpc->release([c] { llama_free(c); });
        } else {
            llama_free(c);
        }
    });
    leases_ = std::make_shared<std::atomic<int>>(0);

    n_vocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model_handle.get()));
    n_embd_out_ = llama_model_n_embd_out(model_handle.get());
    n_seq_max_ = llama_n_seq_max(raw);
    n_batch_ = llama_n_batch(raw);
    n_ubatch_ = llama_n_ubatch(raw);
    embeddings_ = params.embeddings;
    kv_unified_ = params.kv_unified;
    causal_ = llama_get_causal_attn(raw);
    output_capacity_bytes_ = output_bytes_for(n_seq_max_);
}

Context::~Context() {
    try {
        close();
    } catch (...) {
    }
}

void Context::close() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ctx_) {
        // The llama_context may outlive this object through output leases; it must not call
        // back into a destroyed Context.
        llama_set_abort_callback(ctx_.get(), nullptr, nullptr);
        ctx_.reset();
    }
    adapters_.clear();
}

bool Context::closed() const noexcept { return !ctx_; }

llama_context * Context::require() const {
    if (!ctx_) {
        throw Closed("[Context] the context is closed");
    }
    if (rpc_) {
        rpc_->check("Context");
    }
    return ctx_.get();
}

llama_context * Context::get() const { return require(); }

std::shared_ptr<llama_context> Context::handle() const { return open_member(ctx_); }
const std::shared_ptr<Model> & Context::model() const { return open_member(model_); }
int32_t Context::n_vocab() const { return open_member(n_vocab_); }
int32_t Context::n_embd() const { return open_member(n_embd_out_); }
bool Context::embeddings_enabled() const { return open_member(embeddings_); }
int32_t Context::n_outputs() const { return open_member(n_outputs_); }

uint32_t Context::n_ctx() const { return llama_n_ctx(require()); }
uint32_t Context::n_ctx_seq() const { return llama_n_ctx_seq(require()); }
uint32_t Context::n_batch() const { return llama_n_batch(require()); }
uint32_t Context::n_ubatch() const { return llama_n_ubatch(require()); }
uint32_t Context::n_seq_max() const { return llama_n_seq_max(require()); }
int32_t Context::n_threads() const { return llama_n_threads(require()); }
int32_t Context::n_threads_batch() const { return llama_n_threads_batch(require()); }
enum llama_pooling_type Context::pooling_type() const { return llama_pooling_type(require()); }

bool Context::abort_trampoline(void * data) {
    auto * self = static_cast<Context *>(data);
    if (self->cancel_flag_.load(std::memory_order_relaxed)) {
        return true;
    }
    const std::atomic<bool> * stop = self->stop_.load(std::memory_order_relaxed);
    return stop != nullptr && stop->load(std::memory_order_relaxed);
}

std::size_t Context::output_bytes_for(int64_t n_outputs) const {
    const int64_t rows = std::max<int64_t>(n_outputs, n_seq_max_);
    const int64_t per_row = n_vocab_ + (embeddings_ ? n_embd_out_ : 0);
    return static_cast<std::size_t>(rows * per_row) * sizeof(float);
}

void Context::check_seq(llama_seq_id seq_id, const char * where, bool allow_negative) const {
    if ((allow_negative && seq_id < 0) || (seq_id >= 0 && static_cast<uint32_t>(seq_id) < n_seq_max_)) {
        return;
    }
    throw OutOfRange(std::string("[") + where + "] sequence id " + std::to_string(seq_id) + " is outside [0, " +
                     std::to_string(n_seq_max_) + ") (n_seq_max=" + std::to_string(n_seq_max_) + ")");
}

void Context::check_batch(const Batch & batch, const char * where) const {
    const llama_batch & b = batch.raw();
    if (b.n_tokens <= 0) {
        throw InvalidArgument(std::string("[") + where + "] the batch is empty");
    }
    if (static_cast<uint32_t>(b.n_tokens) > n_batch_) {
        throw InvalidArgument(std::string("[") + where + "] batch of " + std::to_string(b.n_tokens) +
                              " tokens is larger than n_batch=" + std::to_string(n_batch_) +
                              "; split it or create the context with a larger n_batch");
    }
    const bool needs_single_ubatch = !causal_ || std::string(where) == "Context.encode";
    if (needs_single_ubatch && static_cast<uint32_t>(b.n_tokens) > n_ubatch_) {
        throw InvalidArgument(std::string("[") + where + "] batch of " + std::to_string(b.n_tokens) +
                              " tokens is larger than n_ubatch=" + std::to_string(n_ubatch_) +
                              "; non-causal attention and encoders need the whole batch in one ubatch");
    }
    if (batch.is_embd()) {
        const int32_t n_embd_inp = llama_model_n_embd_inp(llama_get_model(ctx_.get()));
        if (batch.embd() != n_embd_inp) {
            throw InvalidArgument(std::string("[") + where + "] embeddings batch rows have " +
                                  std::to_string(batch.embd()) + " floats, the model takes " +
                                  std::to_string(n_embd_inp));
        }
    } else {
        for (int32_t i = 0; i < b.n_tokens; ++i) {
            if (b.token[i] < 0 || b.token[i] >= n_vocab_) {
                throw OutOfRange(std::string("[") + where + "] token " + std::to_string(b.token[i]) + " at index " +
                                 std::to_string(i) + " is outside the vocabulary (n_vocab=" +
                                 std::to_string(n_vocab_) + ")");
            }
        }
    }
    for (int32_t i = 0; i < b.n_tokens; ++i) {
        if (b.n_seq_id[i] < 1 || b.n_seq_id[i] > batch.n_seq_max()) {
            throw InvalidArgument(std::string("[") + where + "] token " + std::to_string(i) + " has " +
                                  std::to_string(b.n_seq_id[i]) + " sequence ids; 1 to " +
                                  std::to_string(batch.n_seq_max()) + " allowed");
        }
        for (int32_t s = 0; s < b.n_seq_id[i]; ++s) {
            check_seq(b.seq_id[i][s], where, false);
        }
        if (b.n_seq_id[i] > 1 && !kv_unified_ && n_seq_max_ > 1) {
            // llama.cpp reports this as "no KV slot" (code 1), which reads like a full context.
            throw InvalidArgument(std::string("[") + where + "] token " + std::to_string(i) +
                                  " belongs to several sequences; that needs a context created with kv_unified=True");
        }
        if (b.pos[i] < 0) {
            throw InvalidArgument(std::string("[") + where + "] position " + std::to_string(b.pos[i]) +
                                  " at index " + std::to_string(i) + " is negative");
        }
    }
}

void Context::run(const Batch & batch, bool encode, const std::atomic<bool> * stop) {
    std::lock_guard<std::mutex> lock(mutex_);
    run_locked(batch, encode, stop);
}

void Context::run_locked(const Batch & batch, bool encode, const std::atomic<bool> * stop) {
    const char * where = encode ? "Context.encode" : "Context.decode";
    llama_context * ctx = require();
    check_batch(batch, where);

    const llama_batch & b = batch.raw();
    const int32_t n_out = (embeddings_ || encode) ? b.n_tokens : batch.n_outputs();
    const std::size_t needed = output_bytes_for(n_out);
    if (needed > output_capacity_bytes_ && leases_->load() > 0) {
        throw InvalidArgument(std::string("[") + where + "] this batch asks for " + std::to_string(n_out) +
                              " output rows, more than any earlier one, so llama.cpp would reallocate the output "
                              "buffer under " + std::to_string(leases_->load()) +
                              " live logits/embeddings view(s). Drop those views (or take copies) first.");
    }

    // Lowest position each sequence gets in this batch, to undo a partial decode.
    std::map<llama_seq_id, llama_pos> first_pos;
    if (!encode) {
        for (int32_t i = 0; i < b.n_tokens; ++i) {
            for (int32_t s = 0; s < b.n_seq_id[i]; ++s) {
                auto it = first_pos.find(b.seq_id[i][s]);
                if (it == first_pos.end()) {
                    first_pos.emplace(b.seq_id[i][s], b.pos[i]);
                } else {
                    it->second = std::min(it->second, b.pos[i]);
                }
            }
        }
    }

    clear_last_error_log();
    n_outputs_ = 0;
    stop_.store(stop, std::memory_order_relaxed);
    int32_t rc = 0;
    try {
        rc = detail::rpc_guarded(rpc_, where, [&] { return encode ? llama_encode(ctx, b) : llama_decode(ctx, b); });
    } catch (...) {
        stop_.store(nullptr, std::memory_order_relaxed);
        throw;
    }
    stop_.store(nullptr, std::memory_order_relaxed);
    if (rc == 0) {
        n_outputs_ = n_out;
        output_capacity_bytes_ = std::max(output_capacity_bytes_, needed);
        last_output_flags_.assign(b.logits, b.logits + b.n_tokens);
        if (embeddings_ || encode) {
            std::fill(last_output_flags_.begin(), last_output_flags_.end(), 1);
        }
        return;
    }
    last_output_flags_.clear();
    // llama.cpp may have freed or replaced its output buffer on the way to the failure; assume
    // the smallest one (underestimating only makes later decodes with live views refuse).
    output_capacity_bytes_ = output_bytes_for(0);

    // Aborted and fatal decodes leave the ubatches they finished in memory; remove them so
    // the context is exactly as before the call.
    const bool partial = rc == 2 || rc < -1;
    if (partial && !encode) {
        llama_memory_t mem = llama_get_memory(ctx);
        for (const auto & [seq, pos] : first_pos) {
            llama_memory_seq_rm(mem, seq, pos, -1);
        }
    }
    const std::string op = encode ? "llama_encode" : "llama_decode";
    if (rc == 2) {
        clear_cancel();
        throw Aborted(std::string("[") + where + "] cancelled; the context is unchanged", rc);
    }
    if (rc == 1) {
        throw NoKvSlot(std::string("[") + where + "] no KV cache slot for a batch of " + std::to_string(b.n_tokens) +
                           " tokens: the context is full (n_ctx=" + std::to_string(llama_n_ctx(ctx)) +
                           "). Remove tokens (seq_rm), use a larger n_ctx, or a smaller batch",
                       rc);
    }
    if (rc == -1) {
        throw InvalidBatch(detail::with_reason(std::string("[") + where + "] " + op + " rejected the batch (code -1)"),
                           rc);
    }
    throw FatalDecodeError(detail::with_reason(std::string("[") + where + "] " + op + " failed with code " +
                                               std::to_string(rc)),
                           rc);
}

void Context::decode(const Batch & batch, const std::atomic<bool> * stop) { run(batch, false, stop); }

void Context::encode(const Batch & batch, const std::atomic<bool> * stop) {
    if (!llama_model_has_encoder(llama_get_model(require())) && causal_) {
        // llama_encode on a decoder-only model with causal attention is meaningless.
        throw InvalidArgument("[Context.encode] the model has no encoder; use decode (or set causal_attn=False "
                              "for embedding models)");
    }
    run(batch, true, stop);
}

void Context::decode_tokens(const llama_token * tokens, std::size_t n, llama_pos pos0, llama_seq_id seq_id,
                            bool all_logits, const std::atomic<bool> * stop) {
    if (n == 0) {
        throw InvalidArgument("[Context.decode_tokens] no tokens given");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    require();
    const std::size_t chunk = n_batch_;
    if (all_logits && n > chunk) {
        throw InvalidArgument("[Context.decode_tokens] all_logits needs the tokens in one batch: " + std::to_string(n) +
                              " tokens > n_batch=" + std::to_string(n_batch_));
    }
    if (!scratch_) {
        scratch_ = std::make_unique<Batch>(static_cast<int32_t>(n_batch_));
    }
    for (std::size_t start = 0; start < n; start += chunk) {
        const std::size_t count = std::min(chunk, n - start);
        const bool last = start + count == n;
        scratch_->clear();
        scratch_->add_sequence(tokens + start, static_cast<int32_t>(count), pos0 + static_cast<llama_pos>(start), seq_id,
                               all_logits);
        if (!last) {
            // Intermediate chunks need no outputs; skipping them saves a logits row each.
            scratch_->logits()[count - 1] = 0;
        }
        try {
            run_locked(*scratch_, false, stop);
        } catch (const DecodeError &) {
            // Earlier chunks succeeded; take them out too so the call leaves no trace.
            if (start > 0) {
                llama_memory_seq_rm(llama_get_memory(ctx_.get()), seq_id, pos0, -1);
            }
            throw;
        }
    }
}

int32_t Context::check_output_index(int32_t i, const char * where) const {
    if (n_outputs_ == 0) {
        throw OutOfRange(std::string("[") + where + "] the last decode produced no outputs");
    }
    if (i < 0) {
        if (-static_cast<int64_t>(i) > n_outputs_) {
            throw OutOfRange(std::string("[") + where + "] output index " + std::to_string(i) + " is outside [-" +
                             std::to_string(n_outputs_) + ", -1]");
        }
        return i;
    }
    const auto n_tokens = static_cast<int32_t>(last_output_flags_.size());
    if (i >= n_tokens) {
        throw OutOfRange(std::string("[") + where + "] batch index " + std::to_string(i) +
                         " is outside the last batch of " + std::to_string(n_tokens) + " tokens");
    }
    if (last_output_flags_[static_cast<std::size_t>(i)] == 0) {
        throw OutOfRange(std::string("[") + where + "] token " + std::to_string(i) +
                         " of the last batch did not request outputs (set its logits flag)");
    }
    return i;
}

namespace {

void require_token_embeddings(llama_context * ctx, bool enabled, const char * where) {
    if (!enabled) {
        throw InvalidArgument(std::string("[") + where + "] embeddings are off; create the context with "
                                                         "embeddings=True or call set_embeddings(True)");
    }
    if (llama_pooling_type(ctx) != LLAMA_POOLING_TYPE_NONE) {
        throw InvalidArgument(std::string("[") + where + "] the context pools embeddings per sequence; use "
                                                         "embeddings_seq, or pooling_type NONE for per-token rows");
    }
}

}  // namespace

struct Context::OutputKind {
    const char * where;      // names the accessor of all rows in errors
    const char * ith_where;  // and the accessor of one row
    const char * missing;    // the error when llama.cpp has no such output
    bool token_embeddings;   // needs per-token embeddings (require_token_embeddings)
    float * (*all)(llama_context *);
    float * (*ith)(llama_context *, int32_t);
    int32_t Context::*cols;  // floats per row
};

const Context::OutputKind Context::kLogits{"Context.logits",
                                           "Context.logits_ith",
                                           "[Context.logits] llama.cpp has no logits for this request",
                                           false,
                                           llama_get_logits,
                                           llama_get_logits_ith,
                                           &Context::n_vocab_};

const Context::OutputKind Context::kEmbeddings{"Context.embeddings",
                                               "Context.embeddings_ith",
                                               "[Context.embeddings] llama.cpp has no embeddings for this request",
                                               true,
                                               llama_get_embeddings,
                                               llama_get_embeddings_ith,
                                               &Context::n_embd_out_};

const float * Context::output_locked(const OutputKind & kind, std::optional<int32_t> row, int32_t & rows) const {
    llama_context * ctx = require();
    if (kind.token_embeddings) {
        require_token_embeddings(ctx, embeddings_, row ? kind.ith_where : kind.where);
    }
    const float * p = nullptr;
    if (row) {
        check_output_index(*row, kind.ith_where);
        p = kind.ith(ctx, *row);
        rows = 1;
    } else {
        p = kind.all(ctx);
        rows = n_outputs_;
    }
    if (p == nullptr) {
        throw OutOfRange(detail::with_reason(kind.missing));
    }
    return p;
}

const float * Context::output(const OutputKind & kind, std::optional<int32_t> row) const {
    std::lock_guard<std::mutex> lock(mutex_);
    int32_t rows = 0;
    return output_locked(kind, row, rows);
}

Context::OutputView Context::output_view(const OutputKind & kind, std::optional<int32_t> row) const {
    std::lock_guard<std::mutex> lock(mutex_);
    OutputView v;
    v.data = output_locked(kind, row, v.rows);
    v.cols = this->*kind.cols;
    v.lease = OutputLease(ctx_, leases_);
    return v;
}

std::vector<float> Context::output_copy(const OutputKind & kind, std::optional<int32_t> row) const {
    std::lock_guard<std::mutex> lock(mutex_);
    int32_t rows = 0;
    const float * p = output_locked(kind, row, rows);
    return std::vector<float>(p, p + static_cast<std::size_t>(rows) * static_cast<std::size_t>(this->*kind.cols));
}

const float * Context::logits() const { return output(kLogits, std::nullopt); }
const float * Context::logits_ith(int32_t i) const { return output(kLogits, i); }
const float * Context::embeddings() const { return output(kEmbeddings, std::nullopt); }
const float * Context::embeddings_ith(int32_t i) const { return output(kEmbeddings, i); }

Context::OutputView Context::logits_view(std::optional<int32_t> row) const { return output_view(kLogits, row); }
std::vector<float> Context::logits_copy(std::optional<int32_t> row) const { return output_copy(kLogits, row); }

Context::OutputView Context::embeddings_view(std::optional<int32_t> row) const {
    return output_view(kEmbeddings, row);
}

std::vector<float> Context::embeddings_copy(std::optional<int32_t> row) const {
    return output_copy(kEmbeddings, row);
}

int32_t Context::n_embd_seq() const {
    llama_context * ctx = require();
    if (llama_pooling_type(ctx) == LLAMA_POOLING_TYPE_RANK) {
        return static_cast<int32_t>(llama_model_n_cls_out(llama_get_model(ctx)));
    }
    return n_embd_out_;
}

std::vector<float> Context::embeddings_seq(llama_seq_id seq_id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    if (!embeddings_) {
        throw InvalidArgument("[Context.embeddings_seq] embeddings are off; create the context with embeddings=True");
    }
    if (llama_pooling_type(ctx) == LLAMA_POOLING_TYPE_NONE) {
        throw InvalidArgument("[Context.embeddings_seq] pooling_type is NONE: there are no per-sequence embeddings; "
                              "use embeddings() for per-token rows");
    }
    check_seq(seq_id, "Context.embeddings_seq", false);
    const float * p = llama_get_embeddings_seq(ctx, seq_id);
    if (p == nullptr) {
        throw OutOfRange("[Context.embeddings_seq] sequence " + std::to_string(seq_id) +
                         " had no tokens in the last decode");
    }
    return std::vector<float>(p, p + n_embd_seq());
}

OutputLease Context::acquire_outputs() const {
    require();
    return OutputLease(ctx_, leases_);
}

void Context::memory_clear(bool data) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    detail::rpc_guarded(rpc_, "Context.memory_clear", [&] { llama_memory_clear(llama_get_memory(ctx), data); });
}

bool Context::seq_rm(llama_seq_id seq_id, llama_pos p0, llama_pos p1) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(seq_id, "Context.seq_rm", true);
    // llama.cpp means "every sequence" by -1 exactly and asserts on other negatives.
    return llama_memory_seq_rm(llama_get_memory(ctx), seq_id < 0 ? -1 : seq_id, p0, p1);
}

void Context::seq_cp(llama_seq_id src, llama_seq_id dst, llama_pos p0, llama_pos p1) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(src, "Context.seq_cp", false);
    check_seq(dst, "Context.seq_cp", false);
    if (!kv_unified_ && n_seq_max_ > 1 && src != dst) {
        // Separate streams per sequence: llama.cpp copies whole buffers and asserts on ranges.
        const auto size = static_cast<llama_pos>(llama_n_ctx_seq(ctx));
        if (p0 > 0 || (p1 >= 0 && p1 + 1 < size)) {
            throw InvalidArgument("[Context.seq_cp] copying part of a sequence ([" + std::to_string(p0) + ", " +
                                  std::to_string(p1) + ")) needs a context created with kv_unified=True; "
                                  "without it only whole sequences can be copied (p0=-1, p1=-1)");
        }
    }
    llama_memory_seq_cp(llama_get_memory(ctx), src, dst, p0, p1);
}

void Context::seq_keep(llama_seq_id seq_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(seq_id, "Context.seq_keep", false);
    llama_memory_t mem = llama_get_memory(ctx);
    llama_memory_seq_keep(mem, seq_id);
    if (!kv_unified_) {
        // Workaround: with one KV stream per sequence llama.cpp's seq_keep only clears the
        // stream of seq_id, leaving the other sequences in place.
        for (uint32_t s = 0; s < n_seq_max_; ++s) {
            if (static_cast<llama_seq_id>(s) != seq_id) {
                llama_memory_seq_rm(mem, static_cast<llama_seq_id>(s), -1, -1);
            }
        }
    }
}

namespace {

void require_shiftable(llama_context * ctx, const char * where) {
    const llama_rope_type rope = llama_model_rope_type(llama_get_model(ctx));
    if (rope == LLAMA_ROPE_TYPE_MROPE || rope == LLAMA_ROPE_TYPE_IMROPE || rope == LLAMA_ROPE_TYPE_VISION) {
        throw InvalidArgument(std::string("[") + where + "] positions of multi-dimensional RoPE models cannot be shifted");
    }
    if (!llama_memory_can_shift(llama_get_memory(ctx))) {
        throw InvalidArgument(std::string("[") + where + "] this context's memory cannot shift positions");
    }
}

}  // namespace

void Context::seq_add(llama_seq_id seq_id, llama_pos p0, llama_pos p1, llama_pos delta) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(seq_id, "Context.seq_add", false);
    require_shiftable(ctx, "Context.seq_add");
    llama_memory_seq_add(llama_get_memory(ctx), seq_id, p0, p1, delta);
}

void Context::seq_div(llama_seq_id seq_id, llama_pos p0, llama_pos p1, int d) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(seq_id, "Context.seq_div", false);
    if (d < 1) {
        throw InvalidArgument("[Context.seq_div] divisor must be >= 1, got " + std::to_string(d));
    }
    require_shiftable(ctx, "Context.seq_div");
    llama_memory_seq_div(llama_get_memory(ctx), seq_id, p0, p1, d);
}

llama_pos Context::seq_pos_min(llama_seq_id seq_id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(seq_id, "Context.seq_pos_min", false);
    return llama_memory_seq_pos_min(llama_get_memory(ctx), seq_id);
}

llama_pos Context::seq_pos_max(llama_seq_id seq_id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(seq_id, "Context.seq_pos_max", false);
    return llama_memory_seq_pos_max(llama_get_memory(ctx), seq_id);
}

bool Context::can_shift() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return llama_memory_can_shift(llama_get_memory(require()));
}

std::vector<uint8_t> Context::state_get() {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    std::vector<uint8_t> data(llama_state_get_size(ctx));
    const std::size_t n =
        detail::rpc_guarded(rpc_, "Context.state_get", [&] { return llama_state_get_data(ctx, data.data(), data.size()); });
    data.resize(n);
    return data;
}

void Context::state_set(const uint8_t * data, std::size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    if (size == 0) {
        throw StateError("[Context.state_set] empty state");
    }
    clear_last_error_log();
    const std::size_t n =
        detail::rpc_guarded(rpc_, "Context.state_set", [&] { return llama_state_set_data(ctx, data, size); });
    if (n == 0) {
        // A failed read may have loaded part of the state; leave an empty, valid context.
        detail::rpc_guarded(rpc_, "Context.state_set", [&] { llama_memory_clear(llama_get_memory(ctx), true); });
        n_outputs_ = 0;
        last_output_flags_.clear();
        throw StateError(detail::with_reason("[Context.state_set] the state does not fit this context (another "
                                             "model, other settings, or truncated data); memory was cleared"));
    }
    n_outputs_ = 0;
    last_output_flags_.clear();
}

void Context::state_save_file(const std::string & path, const std::vector<llama_token> & tokens) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    detail::check_no_nul(path, "Context.state_save_file", "the path");
    clear_last_error_log();
    if (!detail::rpc_guarded(rpc_, "Context.state_save_file",
                             [&] { return llama_state_save_file(ctx, path.c_str(), tokens.data(), tokens.size()); })) {
        throw StateError(detail::with_reason("[Context.state_save_file] could not write '" + path + "'"));
    }
}

std::vector<llama_token> Context::state_load_file(const std::string & path, std::size_t token_capacity) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    detail::check_readable_file(path, "Context.state_load_file", detail::FileKind::State);
    std::vector<llama_token> tokens(token_capacity);
    std::size_t n = 0;
    clear_last_error_log();
    if (!detail::rpc_guarded(rpc_, "Context.state_load_file",
                             [&] { return llama_state_load_file(ctx, path.c_str(), tokens.data(), tokens.size(), &n); })) {
        detail::rpc_guarded(rpc_, "Context.state_load_file", [&] { llama_memory_clear(llama_get_memory(ctx), true); });
        n_outputs_ = 0;
        last_output_flags_.clear();
        throw StateError(detail::with_reason("[Context.state_load_file] could not load '" + path +
                                             "' into this context; memory was cleared"));
    }
    n_outputs_ = 0;
    last_output_flags_.clear();
    tokens.resize(n);
    return tokens;
}

std::vector<uint8_t> Context::state_seq_get(llama_seq_id seq_id, llama_state_seq_flags flags) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(seq_id, "Context.state_seq_get", false);
    std::vector<uint8_t> data(llama_state_seq_get_size_ext(ctx, seq_id, flags));
    if (data.empty()) {
        throw StateError(detail::with_reason("[Context.state_seq_get] could not size the state of sequence " +
                                             std::to_string(seq_id)));
    }
    const std::size_t n = detail::rpc_guarded(rpc_, "Context.state_seq_get", [&] {
        return llama_state_seq_get_data_ext(ctx, data.data(), data.size(), seq_id, flags);
    });
    if (n == 0) {
        throw StateError(detail::with_reason("[Context.state_seq_get] could not read the state of sequence " +
                                             std::to_string(seq_id)));
    }
    data.resize(n);
    return data;
}

void Context::state_seq_set(const uint8_t * data, std::size_t size, llama_seq_id dest_seq_id,
                            llama_state_seq_flags flags) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(dest_seq_id, "Context.state_seq_set", false);
    if (size == 0) {
        throw StateError("[Context.state_seq_set] empty state");
    }
    clear_last_error_log();
    if (detail::rpc_guarded(rpc_, "Context.state_seq_set",
                            [&] { return llama_state_seq_set_data_ext(ctx, data, size, dest_seq_id, flags); }) == 0) {
        llama_memory_seq_rm(llama_get_memory(ctx), dest_seq_id, -1, -1);
        throw StateError(detail::with_reason("[Context.state_seq_set] the state does not fit sequence " +
                                             std::to_string(dest_seq_id) + " of this context; the sequence was cleared"));
    }
}

void Context::state_seq_save_file(const std::string & path, llama_seq_id seq_id, const std::vector<llama_token> & tokens) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(seq_id, "Context.state_seq_save_file", false);
    detail::check_no_nul(path, "Context.state_seq_save_file", "the path");
    clear_last_error_log();
    if (detail::rpc_guarded(rpc_, "Context.state_seq_save_file", [&] {
            return llama_state_seq_save_file(ctx, path.c_str(), seq_id, tokens.data(), tokens.size());
        }) == 0) {
        throw StateError(detail::with_reason("[Context.state_seq_save_file] could not write '" + path + "'"));
    }
}

std::vector<llama_token> Context::state_seq_load_file(const std::string & path, llama_seq_id dest_seq_id,
                                                      std::size_t token_capacity) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    check_seq(dest_seq_id, "Context.state_seq_load_file", false);
    detail::check_readable_file(path, "Context.state_seq_load_file", detail::FileKind::State);
    std::vector<llama_token> tokens(std::max<std::size_t>(token_capacity, 1));
    std::size_t n = 0;
    clear_last_error_log();
    if (detail::rpc_guarded(rpc_, "Context.state_seq_load_file", [&] {
            return llama_state_seq_load_file(ctx, path.c_str(), dest_seq_id, tokens.data(), token_capacity, &n);
        }) == 0) {
        llama_memory_seq_rm(llama_get_memory(ctx), dest_seq_id, -1, -1);
        throw StateError(detail::with_reason("[Context.state_seq_load_file] could not load '" + path +
                                             "' into sequence " + std::to_string(dest_seq_id) +
                                             "; the sequence was cleared"));
    }
    tokens.resize(n);
    return tokens;
}

void Context::set_threads(int32_t n_threads, int32_t n_threads_batch) {
    if (n_threads <= 0 || n_threads_batch <= 0) {
        throw InvalidArgument("[Context.set_threads] thread counts must be > 0, got " + std::to_string(n_threads) +
                              " and " + std::to_string(n_threads_batch));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    llama_set_n_threads(require(), n_threads, n_threads_batch);
}

void Context::set_embeddings(bool embeddings) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_set_embeddings(require(), embeddings);
    embeddings_ = embeddings;
}

void Context::set_causal_attn(bool causal) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_set_causal_attn(require(), causal);
    causal_ = causal;
}

bool Context::causal_attn() const { return llama_get_causal_attn(require()); }

llama_perf_context_data Context::perf() const {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    // llama.cpp adds a decode to its counters only when it synchronizes.
    detail::rpc_guarded(rpc_, "Context.perf", [&] { llama_synchronize(ctx); });
    return llama_perf_context(ctx);
}

void Context::perf_reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_perf_context_reset(require());
}

void Context::set_lora_adapters(const std::vector<std::pair<std::shared_ptr<LoraAdapter>, float>> & adapters) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    // The native adapters themselves are kept: closing a LoraAdapter only drops its own claim.
    std::vector<std::shared_ptr<llama_adapter_lora>> keep;
    std::vector<llama_adapter_lora *> raw;
    std::vector<float> scales;
    for (const auto & [adapter, scale] : adapters) {
        if (!adapter) {
            throw InvalidArgument("[Context.set_lora_adapters] adapter is None");
        }
        keep.push_back(adapter->handle());
        raw.push_back(keep.back().get());
        scales.push_back(scale);
    }
    clear_last_error_log();
    if (detail::rpc_guarded(rpc_, "Context.set_lora_adapters",
                            [&] { return llama_set_adapters_lora(ctx, raw.data(), raw.size(), scales.data()); }) != 0) {
        throw AdapterError(detail::with_reason("[Context.set_lora_adapters] llama.cpp refused the adapters"));
    }
    adapters_ = std::move(keep);
}

void Context::clear_lora_adapters() {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_set_adapters_lora(require(), nullptr, 0, nullptr);
    adapters_.clear();
}

void Context::set_control_vector(const std::vector<float> & data, int32_t n_embd, int32_t il_start, int32_t il_end) {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    const int32_t model_embd = llama_model_n_embd(llama_get_model(ctx));
    const int32_t n_layer = llama_model_n_layer(llama_get_model(ctx));
    if (n_embd != model_embd) {
        throw InvalidArgument("[Context.set_control_vector] n_embd=" + std::to_string(n_embd) +
                              " does not match the model's " + std::to_string(model_embd));
    }
    if (data.empty() || data.size() % static_cast<std::size_t>(n_embd) != 0) {
        throw InvalidArgument("[Context.set_control_vector] data must hold whole rows of n_embd floats");
    }
    if (il_start < 1 || il_end < il_start || il_end > n_layer) {
        throw InvalidArgument("[Context.set_control_vector] layer range [" + std::to_string(il_start) + ", " +
                              std::to_string(il_end) + "] is outside [1, " + std::to_string(n_layer) + "]");
    }
    clear_last_error_log();
    if (detail::rpc_guarded(rpc_, "Context.set_control_vector", [&] {
            return llama_set_adapter_cvec(ctx, data.data(), data.size(), n_embd, il_start, il_end);
        }) != 0) {
        throw AdapterError(detail::with_reason("[Context.set_control_vector] llama.cpp refused the control vector"));
    }
}

void Context::clear_control_vector() {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_set_adapter_cvec(require(), nullptr, 0, 0, 0, 0);
}

void Context::synchronize() {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_context * ctx = require();
    detail::rpc_guarded(rpc_, "Context.synchronize", [&] { llama_synchronize(ctx); });
}

}  // namespace llamabind
