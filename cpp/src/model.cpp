#include "llamabind/model.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>

#include "detail.hpp"
#include "gguf_check.hpp"
#include "llamabind/backend.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/rpc.hpp"
#include "llamabind/vocab.hpp"
#include "rpc_link.hpp"

namespace llamabind {

namespace fs = std::filesystem;

ModelParams::ModelParams() {
    const llama_model_params d = llama_model_default_params();
    n_gpu_layers = d.n_gpu_layers;
    split_mode = d.split_mode;
    main_gpu = d.main_gpu;
    load_mode = d.load_mode;
    vocab_only = d.vocab_only;
    check_tensors = d.check_tensors;
    use_extra_bufts = d.use_extra_bufts;
    no_host = d.no_host;
}

llama_load_mode ModelParams::effective_load_mode() const {
    if (!use_mmap && !use_mlock) {
        return load_mode;
    }
    const bool mmap = use_mmap.value_or(load_mode == LLAMA_LOAD_MODE_AUTO || load_mode == LLAMA_LOAD_MODE_MMAP ||
                                        load_mode == LLAMA_LOAD_MODE_MMAP_MLOCK);
    const bool mlock = use_mlock.value_or(load_mode == LLAMA_LOAD_MODE_MLOCK || load_mode == LLAMA_LOAD_MODE_MMAP_MLOCK);
    if (mmap) {
        return mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP;
    }
    return mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE;
}

namespace detail {

std::vector<llama_model_kv_override> make_kv_overrides(const std::vector<KvOverride> & overrides,
                                                       const char * where) {
    std::vector<llama_model_kv_override> out;
    if (overrides.empty()) {
        return out;
    }
    out.reserve(overrides.size() + 1);
    for (const auto & ov : overrides) {
        llama_model_kv_override o{};
        check_no_nul(ov.key, where, "a kv_overrides key");
        if (ov.key.empty() || ov.key.size() >= sizeof(o.key)) {
            throw InvalidArgument(std::string("[") + where + "] kv_overrides key must have 1 to " +
                                  std::to_string(sizeof(o.key) - 1) + " bytes, got '" + ov.key + "'");
        }
        std::memcpy(o.key, ov.key.c_str(), ov.key.size() + 1);
        if (const auto * i = std::get_if<int64_t>(&ov.value)) {
            o.tag = LLAMA_KV_OVERRIDE_TYPE_INT;
            o.val_i64 = *i;
        } else if (const auto * f = std::get_if<double>(&ov.value)) {
            o.tag = LLAMA_KV_OVERRIDE_TYPE_FLOAT;
            o.val_f64 = *f;
        } else if (const auto * b = std::get_if<bool>(&ov.value)) {
            o.tag = LLAMA_KV_OVERRIDE_TYPE_BOOL;
            o.val_bool = *b;
        } else {
            const auto & s = std::get<std::string>(ov.value);
            check_no_nul(s, where, "a kv_overrides string value");
            if (s.size() >= sizeof(o.val_str)) {
                throw InvalidArgument(std::string("[") + where + "] kv_overrides string value for '" + ov.key +
                                      "' is longer than " + std::to_string(sizeof(o.val_str) - 1) + " bytes");
            }
            o.tag = LLAMA_KV_OVERRIDE_TYPE_STR;
            std::memcpy(o.val_str, s.c_str(), s.size() + 1);
        }
        out.push_back(o);
    }
    llama_model_kv_override end{};
    end.key[0] = '\0';
    out.push_back(end);
    return out;
}

void check_no_nul(const std::string & s, const char * where, const char * what) {
    if (s.find('\0') != std::string::npos) {
        throw InvalidArgument(std::string("[") + where + "] " + what + " contains a NUL byte");
    }
}

void throw_unusable(FileKind kind, const std::string & message, const std::string & path) {
    switch (kind) {
        case FileKind::Adapter: throw AdapterError(message);
        case FileKind::Quantize: throw QuantizeError(message);
        case FileKind::State: throw StateError(message);
        case FileKind::Model: break;
    }
    throw ModelLoadError(message, path);
}

void check_readable_file(const std::string & path, const char * where, FileKind kind) {
    check_no_nul(path, where, "the path");
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) {
        throw FileNotFound(std::string("[") + where + "] no such file: '" + path + "'", path);
    }
    if (fs::is_directory(status)) {
        throw_unusable(kind, std::string("[") + where + "] '" + path + "' is a directory, not a file", path);
    }
    FILE * f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
        const int err = errno;
        if (err == EACCES || err == EPERM) {
            throw PermissionDenied(std::string("[") + where + "] permission denied: '" + path + "'", path);
        }
        throw_unusable(kind, std::string("[") + where + "] cannot open '" + path + "': " + std::strerror(err), path);
    }
    char magic[4] = {0, 0, 0, 0};
    const std::size_t got = std::fread(magic, 1, sizeof(magic), f);
    std::fclose(f);
    if (kind != FileKind::State && (got != sizeof(magic) || std::memcmp(magic, "GGUF", 4) != 0)) {
        throw_unusable(kind,
                       std::string("[") + where + "] '" + path + "' is not a GGUF file (" +
                           (got < sizeof(magic) ? "shorter than its magic number" : "wrong magic number") + ")",
                       path);
    }
}

std::string with_reason(std::string message) {
    std::string reason = last_error_log();
    while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) {
        reason.pop_back();
    }
    if (!reason.empty()) {
        message += ": ";
        message += reason;
    }
    return message;
}

std::string read_meta_string(const std::function<int32_t(char *, std::size_t)> & read) {
    std::string buf(256, '\0');
    int32_t n = read(buf.data(), buf.size());
    if (n < 0) {
        return {};
    }
    if (static_cast<std::size_t>(n) >= buf.size()) {
        buf.assign(static_cast<std::size_t>(n) + 1, '\0');
        n = read(buf.data(), buf.size());
        if (n < 0) {
            return {};
        }
    }
    buf.resize(static_cast<std::size_t>(n));
    return buf;
}

}  // namespace detail

namespace {

struct ProgressState {
    const std::function<bool(float)> * callback = nullptr;
    std::exception_ptr error;
    bool cancelled = false;
};

bool progress_trampoline(float progress, void * user_data) {
    auto * state = static_cast<ProgressState *>(user_data);
    try {
        if (!(*state->callback)(progress)) {
            state->cancelled = true;
            return false;
        }
        return true;
    } catch (...) {
        state->error = std::current_exception();
        return false;
    }
}

// llama_tokenize asserts (aborts) when it must add a special token the model lacks, e.g. a
// file with add_bos_token = true whose BOS token was cleared or is out of range: such a
// file is refused at load time.
void check_special_tokens(const llama_model * model, const std::string & path, const char * where) {
    const llama_vocab * v = llama_model_get_vocab(model);
    const auto type = llama_vocab_type(v);
    std::string missing;
    if (type == LLAMA_VOCAB_TYPE_WPM) {
        if (llama_vocab_bos(v) == LLAMA_TOKEN_NULL) {
            missing = "a BOS ([CLS]) token";
        } else if (llama_vocab_sep(v) == LLAMA_TOKEN_NULL) {
            missing = "a SEP token";
        }
    } else if (type != LLAMA_VOCAB_TYPE_NONE) {
        if (llama_vocab_get_add_bos(v) && llama_vocab_bos(v) == LLAMA_TOKEN_NULL) {
            missing = "the BOS token it asks to add (add_bos_token)";
        } else if (llama_vocab_get_add_eos(v) && llama_vocab_eos(v) == LLAMA_TOKEN_NULL) {
            missing = "the EOS token it asks to add (add_eos_token)";
        }
    }
    if (!missing.empty()) {
        throw ModelLoadError(std::string("[") + where + "] '" + path + "' is not a usable model: its vocabulary lacks " +
                                 missing,
                             path);
    }
}

std::shared_ptr<Model> load_impl(const std::vector<std::string> & paths, const ModelParams & params,
                                 const char * where) {
    if (paths.empty()) {
        throw InvalidArgument(std::string("[") + where + "] no model path given");
    }
    for (const auto & p : paths) {
        detail::check_readable_file(p, where, detail::FileKind::Model);
    }
    // llama.cpp aborts on some malformed metadata: validate every file first (the
    // vocabulary and hyperparameters live in the first one).
    std::vector<std::string> files = paths;
    for (std::size_t i = 0; i < files.size(); ++i) {
        detail::GgufCheck what;
        what.metadata = i == 0;
        what.vocab_only = params.vocab_only;
        what.overrides = &params.kv_overrides;
        const uint32_t n_split = detail::check_gguf(files[i], where, detail::FileKind::Model, what);
        if (i == 0 && paths.size() == 1 && n_split > 1) {
            // Given the first split only, llama.cpp finds the others by name: check those too.
            std::vector<char> prefix(files[0].size() + 1, '\0');
            if (llama_split_prefix(prefix.data(), prefix.size(), files[0].c_str(), 0, static_cast<int>(n_split)) > 0) {
                for (uint32_t k = 1; k < n_split; ++k) {
                    std::vector<char> name(files[0].size() + 32, '\0');
                    std::error_code ec;
                    if (llama_split_path(name.data(), name.size(), prefix.data(), static_cast<int>(k),
                                         static_cast<int>(n_split)) > 0 &&
                        fs::exists(name.data(), ec)) {
                        files.emplace_back(name.data());
                    }
                }
            }
        }
    }
    ensure_backend();

    llama_model_params mp = llama_model_default_params();
    std::shared_ptr<detail::RpcLink> rpc;
    if (!params.rpc_servers.empty() && !params.vocab_only) {
        rpc = detail::RpcLink::open(parse_rpc_servers(params.rpc_servers), paths[0], where);
        mp.devices = rpc->devices();
    }
    mp.n_gpu_layers = params.n_gpu_layers;
    mp.split_mode = params.split_mode;
    mp.main_gpu = params.main_gpu;
    mp.load_mode = params.effective_load_mode();
    mp.vocab_only = params.vocab_only;
    mp.check_tensors = params.check_tensors;
    mp.use_extra_bufts = params.use_extra_bufts;
    mp.no_host = params.no_host;

    // llama.cpp reads llama_max_devices() floats from tensor_split.
    std::vector<float> split;
    if (!params.tensor_split.empty()) {
        const std::size_t n_dev = llama_max_devices();
        if (params.tensor_split.size() > n_dev) {
            throw InvalidArgument(std::string("[") + where + "] tensor_split has " +
                                  std::to_string(params.tensor_split.size()) + " entries, this build supports at most " +
                                  std::to_string(n_dev) + " devices");
        }
        for (float v : params.tensor_split) {
            if (!(v >= 0.0f)) {
                throw InvalidArgument(std::string("[") + where + "] tensor_split entries must be >= 0");
            }
        }
        split = params.tensor_split;
        split.resize(n_dev, 0.0f);
        mp.tensor_split = split.data();
    }

    const auto overrides = detail::make_kv_overrides(params.kv_overrides, where);
    if (!overrides.empty()) {
        mp.kv_overrides = overrides.data();
    }

    ProgressState progress;
    if (params.progress_callback) {
        progress.callback = &params.progress_callback;
        mp.progress_callback = progress_trampoline;
        mp.progress_callback_user_data = &progress;
    }

    clear_last_error_log();
    llama_model * raw = nullptr;
    std::vector<const char *> cpaths;
    for (const auto & p : paths) {
        cpaths.push_back(p.c_str());
    }
    try {
        detail::rpc_guarded(rpc, where, [&] {
            raw = cpaths.size() == 1 ? llama_model_load_from_file(cpaths[0], mp)
                                     : llama_model_load_from_splits(cpaths.data(), cpaths.size(), mp);
        });
    } catch (const RpcError & e) {
        throw ModelLoadError(std::string("[") + where + "] cannot load '" + paths[0] + "': " + e.what(), paths[0]);
    }
    // Frees through the RPC guard: a model on a server that went away is leaked, not freed.
    auto free_model = [rpc](llama_model * m) {
        if (rpc) {
            rpc->release([m] { llama_model_free(m); });
        } else {
            llama_model_free(m);
        }
    };
    if (progress.error) {
        if (raw) {
            free_model(raw);
        }
        std::rethrow_exception(progress.error);
    }
    if (raw == nullptr) {
        if (progress.cancelled) {
            throw ModelLoadError(std::string("[") + where + "] loading '" + paths[0] +
                                     "' was cancelled by the progress callback",
                                 paths[0]);
        }
        throw ModelLoadError(detail::with_reason(std::string("[") + where + "] failed to load model from '" +
                                                 paths[0] + "'"),
                             paths[0]);
    }
    std::shared_ptr<llama_model> handle(raw, free_model);
    check_special_tokens(raw, paths[0], where);
    return std::make_shared<Model>(std::move(handle), paths[0], std::move(rpc));
}

}  // namespace

std::shared_ptr<Model> Model::load(const std::string & path, const ModelParams & params) {
    return load_impl({path}, params, "Model.load");
}

std::shared_ptr<Model> Model::load_splits(const std::vector<std::string> & paths, const ModelParams & params) {
    return load_impl(paths, params, "Model.load_splits");
}

Model::Model(std::shared_ptr<llama_model> handle, std::string path, std::shared_ptr<detail::RpcLink> rpc)
    : handle_(std::move(handle)), path_(std::move(path)), rpc_(std::move(rpc)) {}

std::vector<std::string> Model::rpc_servers() const { return rpc_ ? rpc_->endpoints() : std::vector<std::string>{}; }

void Model::close() noexcept { std::atomic_store(&handle_, std::shared_ptr<llama_model>()); }

bool Model::closed() const noexcept { return !std::atomic_load(&handle_); }

std::shared_ptr<llama_model> Model::handle() const { return detail::open_handle(handle_, "[Model] the model is closed"); }

Vocab Model::vocab() const { return Vocab(handle()); }

std::string Model::desc() const {
    auto h = handle();
    return detail::read_meta_string([&](char * buf, std::size_t n) { return llama_model_desc(h.get(), buf, n); });
}

uint64_t Model::size() const { return llama_model_size(get()); }
uint64_t Model::n_params() const { return llama_model_n_params(get()); }
int32_t Model::n_ctx_train() const { return llama_model_n_ctx_train(get()); }
int32_t Model::n_embd() const { return llama_model_n_embd(get()); }
int32_t Model::n_embd_inp() const { return llama_model_n_embd_inp(get()); }
int32_t Model::n_embd_out() const { return llama_model_n_embd_out(get()); }
int32_t Model::n_layer() const { return llama_model_n_layer(get()); }
// llama_model_n_head / _n_head_kv read layer 0's value and abort (GGML_ABORT) when the model
// has no layers, as a vocab_only model has none: answer 0 for it instead.
int32_t Model::n_head() const { return n_layer() > 0 ? llama_model_n_head(get()) : 0; }
int32_t Model::n_head_kv() const { return n_layer() > 0 ? llama_model_n_head_kv(get()) : 0; }
int32_t Model::n_swa() const { return llama_model_n_swa(get()); }
int32_t Model::n_vocab() const { return llama_vocab_n_tokens(llama_model_get_vocab(get())); }
llama_rope_type Model::rope_type() const { return llama_model_rope_type(get()); }
float Model::rope_freq_scale_train() const { return llama_model_rope_freq_scale_train(get()); }
llama_ftype Model::ftype() const { return llama_model_ftype(get()); }

std::string Model::ftype_name() const {
    const char * name = llama_ftype_name(ftype());
    return name ? name : "";
}

bool Model::has_encoder() const { return llama_model_has_encoder(get()); }
bool Model::has_decoder() const { return llama_model_has_decoder(get()); }
llama_token Model::decoder_start_token() const { return llama_model_decoder_start_token(get()); }
bool Model::is_recurrent() const { return llama_model_is_recurrent(get()); }
bool Model::is_hybrid() const { return llama_model_is_hybrid(get()); }
bool Model::is_diffusion() const { return llama_model_is_diffusion(get()); }

std::map<std::string, std::string> Model::metadata() const {
    auto h = handle();
    return detail::read_metadata(h.get(), llama_model_meta_count, llama_model_meta_key_by_index,
                                 llama_model_meta_val_str_by_index);
}

std::optional<std::string> Model::meta_val(const std::string & key) const {
    auto h = handle();
    return detail::read_meta_val(h.get(), key, llama_model_meta_val_str);
}

std::optional<std::string> Model::chat_template(const std::optional<std::string> & name) const {
    const char * tmpl = llama_model_chat_template(get(), name ? name->c_str() : nullptr);
    if (tmpl == nullptr) {
        return std::nullopt;
    }
    return std::string(tmpl);
}

uint32_t Model::n_cls_out() const { return llama_model_n_cls_out(get()); }

std::vector<std::string> Model::classifier_labels() const {
    auto h = handle();
    const uint32_t n = llama_model_n_cls_out(h.get());
    std::vector<std::string> labels;
    labels.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
        const char * label = llama_model_cls_label(h.get(), i);
        labels.emplace_back(label ? label : "");
    }
    return labels;
}

void Model::save_to_file(const std::string & path) const {
    auto h = handle();
    detail::check_no_nul(path, "Model.save_to_file", "the path");
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty() && !fs::is_directory(parent)) {
        throw FileNotFound("[Model.save_to_file] directory does not exist: '" + parent.string() + "'", parent.string());
    }
    llama_model_save_to_file(h.get(), path.c_str());
    if (!fs::exists(path)) {
        throw QuantizeError("[Model.save_to_file] llama.cpp did not write '" + path + "'");
    }
}

QuantizeParams::QuantizeParams() {
    const llama_model_quantize_params d = llama_model_quantize_default_params();
    nthread = d.nthread;
    ftype = d.ftype;
    output_tensor_type = d.output_tensor_type;
    token_embedding_type = d.token_embedding_type;
    allow_requantize = d.allow_requantize;
    quantize_output_tensor = d.quantize_output_tensor;
    only_copy = d.only_copy;
    pure = d.pure;
    keep_split = d.keep_split;
    dry_run = d.dry_run;
}

void quantize(const std::string & input_path, const std::string & output_path, const QuantizeParams & params) {
    detail::check_readable_file(input_path, "quantize", detail::FileKind::Quantize);
    detail::check_gguf(input_path, "quantize", detail::FileKind::Quantize, detail::GgufCheck{});
    detail::check_no_nul(output_path, "quantize", "the output path");
    ensure_backend();
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.nthread = params.nthread;
    qp.ftype = params.ftype;
    qp.output_tensor_type = params.output_tensor_type;
    qp.token_embedding_type = params.token_embedding_type;
    qp.allow_requantize = params.allow_requantize;
    qp.quantize_output_tensor = params.quantize_output_tensor;
    qp.only_copy = params.only_copy;
    qp.pure = params.pure;
    qp.keep_split = params.keep_split;
    qp.dry_run = params.dry_run;
    const auto overrides = detail::make_kv_overrides(params.kv_overrides, "quantize");
    if (!overrides.empty()) {
        qp.kv_overrides = overrides.data();
    }
    clear_last_error_log();
    const uint32_t rc = llama_model_quantize(input_path.c_str(), output_path.c_str(), &qp);
    if (rc != 0) {
        throw QuantizeError(detail::with_reason("[quantize] failed to quantize '" + input_path + "' to '" +
                                                output_path + "'"));
    }
}

}  // namespace llamabind
