// Context: decode/encode, zero-copy logits and embeddings, KV memory, state, adapters.

#include "batch.hpp"
#include "common.hpp"

#include <cstdint>
#include <cstring>

#include "llamabind/context.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/lora.hpp"
#include "llamabind/model.hpp"

namespace llamabind::bindings {

namespace {

// Logits or embeddings as numpy. A view is read-only and its capsule holds an OutputLease:
// the lease keeps the llama_context's memory alive (even after close()) and makes a decode
// that would reallocate that buffer raise instead of leaving the view dangling. A copy owns
// its vector. Rows are taken under the context lock with the GIL released, so a decode in
// another thread can neither block Python nor tear the result.
py::array_t<float> outputs(const Context & self, bool logits, std::optional<int32_t> row, bool copy) {
    auto shape = [&](int32_t rows, int32_t cols) {
        return row ? std::vector<py::ssize_t>{cols} : std::vector<py::ssize_t>{rows, cols};
    };
    if (copy) {
        std::vector<float> data;
        int32_t cols = 0;
        {
            GilRelease release;
            data = logits ? self.logits_copy(row) : self.embeddings_copy(row);
            cols = logits ? self.n_vocab() : self.n_embd();
        }
        const auto rows = static_cast<int32_t>(cols > 0 ? data.size() / static_cast<std::size_t>(cols) : 0);
        auto * owned = new std::vector<float>(std::move(data));
        py::capsule base(owned, [](void * p) { delete static_cast<std::vector<float> *>(p); });
        return py::array_t<float>(shape(rows, cols), owned->data(), base);
    }
    Context::OutputView view;
    {
        GilRelease release;
        view = logits ? self.logits_view(row) : self.embeddings_view(row);
    }
    auto * lease = new OutputLease(std::move(view.lease));
    py::capsule base(lease, [](void * p) { delete static_cast<OutputLease *>(p); });
    py::array_t<float> arr(shape(view.rows, view.cols), view.data, base);
    py::detail::array_proxy(arr.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return arr;
}

py::bytes to_py_bytes(const std::vector<uint8_t> & data) {
    return py::bytes(reinterpret_cast<const char *>(data.data()), data.size());
}

std::string buffer_bytes(const py::handle & data, const char * where) {
    if (py::isinstance<py::str>(data)) {
        throw py::type_error(std::string("[") + where + "] state must be bytes, not str");
    }
    return to_bytes(data, where);
}

// Context::decode or Context::encode of a Python batch, with the GIL released.
void run_batch(Context & self, const PyBatch & batch, void (Context::*op)(const Batch &, const std::atomic<bool> *)) {
    batch.get();
    std::shared_ptr<Batch> keep = batch.batch;  // another thread may close the batch
    call_released([&](const std::atomic<bool> * stop) { (self.*op)(*keep, stop); });
}

py::dict perf_dict(const llama_perf_context_data & p) {
    py::dict d;
    d["t_start_ms"] = p.t_start_ms;
    d["t_load_ms"] = p.t_load_ms;
    d["t_p_eval_ms"] = p.t_p_eval_ms;
    d["t_eval_ms"] = p.t_eval_ms;
    d["n_p_eval"] = p.n_p_eval;
    d["n_eval"] = p.n_eval;
    d["n_reused"] = p.n_reused;
    return d;
}

}  // namespace

namespace {

uint32_t context_size(int64_t value, const char * name, int64_t min, const char * note) {
    if (value < min) {
        throw llamabind::InvalidArgument(std::string("[Context] ") + name + " must be " +
                                         (min == 0 ? ">= 0" : "> 0") + note + ", got " + std::to_string(value));
    }
    if (value > int64_t(UINT32_MAX)) {
        throw llamabind::InvalidArgument(std::string("[Context] ") + name + " must be < 2**32, got " +
                                         std::to_string(value));
    }
    return static_cast<uint32_t>(value);
}

}  // namespace

void init_context(py::module_ & m) {
    const ContextParams d;
    py::class_<Context, std::shared_ptr<Context>>(m, "Context", R"doc(
An inference context over a Model: KV cache, threads, outputs.

    ctx = Context(model, n_ctx=2048, n_threads=4)
    ctx.decode_tokens(model.vocab.tokenize("Hello"), pos0=0)
    row = ctx.logits_ith(-1)          # read-only numpy view, no copy

decode/encode release the GIL; Ctrl-C aborts a running decode with KeyboardInterrupt and
leaves the context as it was before the call. Logits and embeddings are views of the
context's memory, valid until the next decode (pass copy=True for an independent array).
A context is serialised: two threads using it at once take turns.
)doc")
        .def(py::init([](const std::shared_ptr<Model> & model, int64_t n_ctx, int64_t n_batch, int64_t n_ubatch,
                         int64_t n_seq_max, int64_t n_rs_seq, int32_t n_threads, int32_t n_threads_batch,
                         llama_rope_scaling_type rope_scaling_type, enum llama_pooling_type pooling_type,
                         llama_attention_type attention_type, llama_flash_attn_type flash_attn_type,
                         float rope_freq_base, float rope_freq_scale, float yarn_ext_factor, float yarn_attn_factor,
                         float yarn_beta_fast, float yarn_beta_slow, uint32_t yarn_orig_ctx, ggml_type type_k,
                         ggml_type type_v, bool embeddings, bool offload_kqv, bool no_perf, bool op_offload,
                         bool swa_full, bool kv_unified) {
                 ContextParams p;
                 // Python ints may be negative or huge: say so instead of a TypeError from the
                 // unsigned conversion (or a silent wrap-around).
                 p.n_ctx = context_size(n_ctx, "n_ctx", 0, " (0 = the training context)");
                 p.n_batch = context_size(n_batch, "n_batch", 1, "");
                 p.n_ubatch = context_size(n_ubatch, "n_ubatch", 1, "");
                 p.n_seq_max = context_size(n_seq_max, "n_seq_max", 1, "");
                 p.n_rs_seq = context_size(n_rs_seq, "n_rs_seq", 0, "");
                 p.n_threads = n_threads;
                 p.n_threads_batch = n_threads_batch;
                 p.rope_scaling_type = rope_scaling_type;
                 p.pooling_type = pooling_type;
                 p.attention_type = attention_type;
                 p.flash_attn_type = flash_attn_type;
                 p.rope_freq_base = rope_freq_base;
                 p.rope_freq_scale = rope_freq_scale;
                 p.yarn_ext_factor = yarn_ext_factor;
                 p.yarn_attn_factor = yarn_attn_factor;
                 p.yarn_beta_fast = yarn_beta_fast;
                 p.yarn_beta_slow = yarn_beta_slow;
                 p.yarn_orig_ctx = yarn_orig_ctx;
                 p.type_k = type_k;
                 p.type_v = type_v;
                 p.embeddings = embeddings;
                 p.offload_kqv = offload_kqv;
                 p.no_perf = no_perf;
                 p.op_offload = op_offload;
                 p.swa_full = swa_full;
                 p.kv_unified = kv_unified;
                 return call_released([&](const std::atomic<bool> *) { return std::make_shared<Context>(model, p); });
             }),
             py::arg("model"), py::kw_only(), py::arg("n_ctx") = d.n_ctx, py::arg("n_batch") = d.n_batch,
             py::arg("n_ubatch") = d.n_ubatch, py::arg("n_seq_max") = d.n_seq_max, py::arg("n_rs_seq") = d.n_rs_seq,
             py::arg("n_threads") = d.n_threads, py::arg("n_threads_batch") = d.n_threads_batch,
             py::arg("rope_scaling_type") = d.rope_scaling_type, py::arg("pooling_type") = d.pooling_type,
             py::arg("attention_type") = d.attention_type, py::arg("flash_attn_type") = d.flash_attn_type,
             py::arg("rope_freq_base") = d.rope_freq_base, py::arg("rope_freq_scale") = d.rope_freq_scale,
             py::arg("yarn_ext_factor") = d.yarn_ext_factor, py::arg("yarn_attn_factor") = d.yarn_attn_factor,
             py::arg("yarn_beta_fast") = d.yarn_beta_fast, py::arg("yarn_beta_slow") = d.yarn_beta_slow,
             py::arg("yarn_orig_ctx") = d.yarn_orig_ctx, py::arg("type_k") = d.type_k, py::arg("type_v") = d.type_v,
             py::arg("embeddings") = d.embeddings, py::arg("offload_kqv") = d.offload_kqv,
             py::arg("no_perf") = d.no_perf, py::arg("op_offload") = d.op_offload, py::arg("swa_full") = d.swa_full,
             py::arg("kv_unified") = d.kv_unified,
             "Creates a context; every llama_context_params field is a keyword with llama.cpp's default.\n"
             "n_ctx=0 uses the model's training context.")
        .def("close", &Context::close, py::call_guard<GilRelease>(), "Frees the context (views keep its output memory). Idempotent.")
        .def_property_readonly("closed", &Context::closed)
        .def("__enter__", [](const std::shared_ptr<Context> & self) { return self; })
        .def("__exit__", [](Context & self, const py::args &) {
            GilRelease release;
            self.close();
        })
        .def_property_readonly("model", &Context::model, "The Model this context runs.")
        .def_property_readonly("n_ctx", &Context::n_ctx, "Context size in tokens.")
        .def_property_readonly("n_ctx_seq", &Context::n_ctx_seq, "Context size per sequence.")
        .def_property_readonly("n_batch", &Context::n_batch)
        .def_property_readonly("n_ubatch", &Context::n_ubatch)
        .def_property_readonly("n_seq_max", &Context::n_seq_max)
        .def_property_readonly("n_vocab", &Context::n_vocab)
        .def_property_readonly("n_embd", &Context::n_embd, "Width of embedding rows.")
        .def_property_readonly("pooling_type", &Context::pooling_type)
        .def_property_readonly("n_outputs", &Context::n_outputs, "Output rows of the last decode.")
        .def(
            "decode",
            [](Context & self, const PyBatch & batch) { run_batch(self, batch, &Context::decode); },
            py::arg("batch"),
            "Runs the model on a batch. Raises ContextFullError (code 1), AbortedError (2),\n"
            "InvalidBatchError (-1) or FatalDecodeError (< -1); on failure the context is unchanged.")
        .def(
            "encode",
            [](Context & self, const PyBatch & batch) { run_batch(self, batch, &Context::encode); },
            py::arg("batch"), "Runs an encoder (or a non-causal embedding pass) on a batch.")
        .def(
            "decode_tokens",
            [](Context & self, const py::handle & tokens, llama_pos pos0, llama_seq_id seq_id, bool all_logits) {
                const std::vector<int32_t> ids = to_tokens(tokens, "Context.decode_tokens");
                call_released([&](const std::atomic<bool> * stop) {
                    self.decode_tokens(ids.data(), ids.size(), pos0, seq_id, all_logits, stop);
                });
            },
            py::arg("tokens"), py::arg("pos0"), py::arg("seq_id") = 0, py::arg("all_logits") = false,
            "Decodes tokens of one sequence at positions pos0.. in chunks of n_batch, with logits for the\n"
            "last token (or all). On failure every chunk of the call is removed again.")
        .def(
            "logits", [](const Context & self, bool copy) { return outputs(self, true, std::nullopt, copy); },
            py::kw_only(), py::arg("copy") = false,
            "Logits of the last decode, shape (n_outputs, n_vocab): a read-only view, valid until the next\n"
            "decode, or an independent array with copy=True.")
        .def(
            "logits_ith", [](const Context & self, int32_t i, bool copy) { return outputs(self, true, i, copy); },
            py::arg("i"), py::kw_only(), py::arg("copy") = false,
            "Logits for entry i of the last batch (which must have requested outputs); negative i counts\n"
            "outputs from the end. A view unless copy=True.")
        .def(
            "embeddings", [](const Context & self, bool copy) { return outputs(self, false, std::nullopt, copy); },
            py::kw_only(), py::arg("copy") = false,
            "Per-token embeddings of the last decode, shape (n_outputs, n_embd) (pooling NONE).")
        .def(
            "embeddings_ith", [](const Context & self, int32_t i, bool copy) { return outputs(self, false, i, copy); },
            py::arg("i"), py::kw_only(), py::arg("copy") = false, "Embedding row for entry i of the last batch.")
        .def(
            "embeddings_seq",
            [](const Context & self, llama_seq_id seq_id) {
                std::vector<float> v;
                {
                    GilRelease release;
                    v = self.embeddings_seq(seq_id);
                }
                py::array_t<float> out(static_cast<py::ssize_t>(v.size()));
                std::memcpy(out.mutable_data(), v.data(), sizeof(float) * v.size());
                return out;
            },
            py::arg("seq_id"),
            "Pooled embedding of a sequence (a copy: llama.cpp rebuilds that storage on every decode).")
        .def("memory_clear", &Context::memory_clear, py::arg("data") = true, py::call_guard<GilRelease>(), "Empties the KV memory.")
        .def("seq_rm", &Context::seq_rm, py::arg("seq_id"), py::arg("p0") = -1, py::arg("p1") = -1, py::call_guard<GilRelease>(),
             "Removes positions [p0, p1) of a sequence (seq_id < 0: all sequences; p < 0: open end).\n"
             "Returns False when a partial removal is impossible (e.g. recurrent models).")
        .def("seq_cp", &Context::seq_cp, py::arg("src"), py::arg("dst"), py::arg("p0") = -1, py::arg("p1") = -1, py::call_guard<GilRelease>(),
             "Shares positions [p0, p1) of sequence src with sequence dst.")
        .def("seq_keep", &Context::seq_keep, py::arg("seq_id"), py::call_guard<GilRelease>(), "Removes every sequence but this one.")
        .def("seq_add", &Context::seq_add, py::arg("seq_id"), py::arg("p0"), py::arg("p1"), py::arg("delta"), py::call_guard<GilRelease>(),
             "Shifts positions [p0, p1) of a sequence by delta.")
        .def("seq_div", &Context::seq_div, py::arg("seq_id"), py::arg("p0"), py::arg("p1"), py::arg("d"), py::call_guard<GilRelease>(),
             "Divides positions [p0, p1) of a sequence by d.")
        .def("seq_pos_min", &Context::seq_pos_min, py::arg("seq_id"), py::call_guard<GilRelease>(), "Smallest position held (-1 if empty).")
        .def("seq_pos_max", &Context::seq_pos_max, py::arg("seq_id"), py::call_guard<GilRelease>(), "Largest position held (-1 if empty).")
        .def_property_readonly("can_shift", py::cpp_function(&Context::can_shift, py::call_guard<GilRelease>()), "Whether seq_add/seq_div are supported.")
        .def(
            "state_get",
            [](Context & self) {
                auto data = call_released([&](const std::atomic<bool> *) { return self.state_get(); });
                return to_py_bytes(data);
            },
            "The whole context state (KV memory, outputs) as bytes.")
        .def(
            "state_set",
            [](Context & self, const py::handle & data) {
                const std::string bytes = buffer_bytes(data, "Context.state_set");
                call_released([&](const std::atomic<bool> *) {
                    self.state_set(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
                });
            },
            py::arg("data"),
            "Restores a state from state_get(). Raises StateError (and clears the memory) when it does not\n"
            "fit this context.")
        .def(
            "state_save_file",
            [](Context & self, const py::object & path, const py::handle & tokens) {
                const std::string p = path_str(path);
                const std::vector<int32_t> ids = to_tokens(tokens, "Context.state_save_file");
                call_released([&](const std::atomic<bool> *) { self.state_save_file(p, ids); });
            },
            py::arg("path"), py::arg("tokens") = py::tuple(), "Writes a session file: the state plus `tokens`.")
        .def(
            "state_load_file",
            [](Context & self, const py::object & path, std::optional<std::size_t> token_capacity) {
                const std::string p = path_str(path);
                const std::size_t cap = token_capacity.value_or(self.n_ctx());
                return call_released([&](const std::atomic<bool> *) { return self.state_load_file(p, cap); });
            },
            py::arg("path"), py::arg("token_capacity") = py::none(),
            "Loads a session file; returns its tokens (at most token_capacity, default n_ctx).")
        .def(
            "state_seq_get",
            [](Context & self, llama_seq_id seq_id, llama_state_seq_flags flags) {
                auto data = call_released([&](const std::atomic<bool> *) { return self.state_seq_get(seq_id, flags); });
                return to_py_bytes(data);
            },
            py::arg("seq_id"), py::arg("flags") = 0, "The state of one sequence as bytes.")
        .def(
            "state_seq_set",
            [](Context & self, const py::handle & data, llama_seq_id seq_id, llama_state_seq_flags flags) {
                const std::string bytes = buffer_bytes(data, "Context.state_seq_set");
                call_released([&](const std::atomic<bool> *) {
                    self.state_seq_set(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), seq_id, flags);
                });
            },
            py::arg("data"), py::arg("seq_id"), py::arg("flags") = 0,
            "Restores one sequence from state_seq_get() into seq_id.")
        .def(
            "state_seq_save_file",
            [](Context & self, const py::object & path, llama_seq_id seq_id, const py::handle & tokens) {
                const std::string p = path_str(path);
                const std::vector<int32_t> ids = to_tokens(tokens, "Context.state_seq_save_file");
                call_released([&](const std::atomic<bool> *) { self.state_seq_save_file(p, seq_id, ids); });
            },
            py::arg("path"), py::arg("seq_id"), py::arg("tokens") = py::tuple())
        .def(
            "state_seq_load_file",
            [](Context & self, const py::object & path, llama_seq_id seq_id, std::optional<std::size_t> token_capacity) {
                const std::string p = path_str(path);
                const std::size_t cap = token_capacity.value_or(self.n_ctx());
                return call_released(
                    [&](const std::atomic<bool> *) { return self.state_seq_load_file(p, seq_id, cap); });
            },
            py::arg("path"), py::arg("seq_id"), py::arg("token_capacity") = py::none())
        .def(
            "set_threads",
            [](Context & self, int32_t n_threads, std::optional<int32_t> n_threads_batch) {
                GilRelease release;
                self.set_threads(n_threads, n_threads_batch.value_or(n_threads));
            },
            py::arg("n_threads"), py::arg("n_threads_batch") = py::none(),
            "Threads for generation and for batches (default: the same).")
        .def_property_readonly("n_threads", &Context::n_threads)
        .def_property_readonly("n_threads_batch", &Context::n_threads_batch)
        .def_property("embeddings_enabled", &Context::embeddings_enabled,
                      py::cpp_function(&Context::set_embeddings, py::call_guard<GilRelease>()),
                      "Whether decode also extracts embeddings.")
        .def_property("causal_attn", &Context::causal_attn, py::cpp_function(&Context::set_causal_attn, py::call_guard<GilRelease>()),
                      "Whether attention is causal (False for embedding passes of some models).")
        .def("cancel", &Context::cancel,
             "Makes the running decode (or the next one) stop with AbortedError. Safe from any thread.")
        .def_property_readonly("cancel_requested", &Context::cancel_requested)
        .def("clear_cancel", &Context::clear_cancel, "Withdraws a cancel() no decode has consumed yet.")
        .def(
            "perf", [](const Context & self) { return perf_dict(self.perf()); },
            "llama.cpp's timings (needs no_perf=False): load, prompt and generation time and counts.")
        .def("perf_reset", &Context::perf_reset, py::call_guard<GilRelease>())
        .def(
            "set_lora_adapters",
            [](Context & self, const py::handle & adapters) {
                std::vector<std::pair<std::shared_ptr<LoraAdapter>, float>> list;
                if (py::isinstance<py::dict>(adapters)) {
                    for (const auto & [k, v] : py::reinterpret_borrow<py::dict>(adapters)) {
                        list.emplace_back(k.cast<std::shared_ptr<LoraAdapter>>(), v.cast<float>());
                    }
                } else {
                    for (const auto & item : adapters) {
                        if (py::isinstance<LoraAdapter>(item)) {
                            list.emplace_back(item.cast<std::shared_ptr<LoraAdapter>>(), 1.0f);
                        } else {
                            auto pair = item.cast<std::pair<std::shared_ptr<LoraAdapter>, float>>();
                            list.push_back(pair);
                        }
                    }
                }
                GilRelease release;
                self.set_lora_adapters(list);
            },
            py::arg("adapters"),
            "Replaces the active LoRA adapters: a dict {adapter: scale}, or a list of adapters or\n"
            "(adapter, scale) pairs.")
        .def("clear_lora_adapters", &Context::clear_lora_adapters, py::call_guard<GilRelease>())
        .def(
            "set_control_vector",
            [](Context & self, const py::array_t<float, py::array::c_style | py::array::forcecast> & data, int32_t il_start,
               int32_t il_end) {
                if (data.ndim() != 2) {
                    throw InvalidArgument("[Context.set_control_vector] data must have shape (n_layers, n_embd)");
                }
                std::vector<float> v(data.data(), data.data() + data.size());
                const auto n_embd = static_cast<int32_t>(data.shape(1));
                GilRelease release;
                self.set_control_vector(v, n_embd, il_start, il_end);
            },
            py::arg("data"), py::arg("il_start"), py::arg("il_end"),
            "Applies a control vector: rows of n_embd floats starting at layer 1, used for layers\n"
            "il_start..il_end (inclusive).")
        .def("clear_control_vector", &Context::clear_control_vector, py::call_guard<GilRelease>())
        .def("__repr__", [](const Context & self) {
            if (self.closed()) {
                return std::string("<llamabind.Context closed>");
            }
            return "<llamabind.Context n_ctx=" + std::to_string(self.n_ctx()) +
                   " n_seq_max=" + std::to_string(self.n_seq_max()) + ">";
        });
}

}  // namespace llamabind::bindings
