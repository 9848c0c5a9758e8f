#include "llamabind/lora.hpp"

#include <atomic>

#include "detail.hpp"
#include "gguf_check.hpp"
#include "llamabind/backend.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/model.hpp"

namespace llamabind {

std::shared_ptr<LoraAdapter> LoraAdapter::load(const std::shared_ptr<Model> & model, const std::string & path) {
    if (!model) {
        throw InvalidArgument("[LoraAdapter.load] model is None");
    }
    std::shared_ptr<llama_model> model_handle = model->handle();
    detail::check_readable_file(path, "LoraAdapter.load", detail::FileKind::Adapter);
    detail::GgufCheck what;
    what.metadata = false;
    detail::check_gguf(path, "LoraAdapter.load", detail::FileKind::Adapter, what);
    clear_last_error_log();
    llama_adapter_lora * raw = llama_adapter_lora_init(model_handle.get(), path.c_str());
    if (raw == nullptr) {
        throw AdapterError(detail::with_reason("[LoraAdapter.load] failed to load adapter '" + path + "'"));
    }
    // Freed before the model it belongs to: the deleter holds the model.
    std::shared_ptr<llama_adapter_lora> handle(raw, [model_handle](llama_adapter_lora * a) { llama_adapter_lora_free(a); });
    return std::make_shared<LoraAdapter>(std::move(handle), path);
}

LoraAdapter::LoraAdapter(std::shared_ptr<llama_adapter_lora> handle, std::string path)
    : handle_(std::move(handle)), path_(std::move(path)) {}

void LoraAdapter::close() noexcept { std::atomic_store(&handle_, std::shared_ptr<llama_adapter_lora>()); }

bool LoraAdapter::closed() const noexcept { return !std::atomic_load(&handle_); }

std::shared_ptr<llama_adapter_lora> LoraAdapter::handle() const {
    return detail::open_handle(handle_, "[LoraAdapter] the adapter is closed");
}

std::map<std::string, std::string> LoraAdapter::metadata() const {
    auto h = handle();
    return detail::read_metadata(h.get(), llama_adapter_meta_count, llama_adapter_meta_key_by_index,
                                 llama_adapter_meta_val_str_by_index);
}

std::optional<std::string> LoraAdapter::meta_val(const std::string & key) const {
    auto h = handle();
    return detail::read_meta_val(h.get(), key, llama_adapter_meta_val_str);
}

std::vector<llama_token> LoraAdapter::alora_invocation_tokens() const {
    auto h = handle();
    const uint64_t n = llama_adapter_get_alora_n_invocation_tokens(h.get());
    const llama_token * tokens = llama_adapter_get_alora_invocation_tokens(h.get());
    if (n == 0 || tokens == nullptr) {
        return {};
    }
    return std::vector<llama_token>(tokens, tokens + n);
}

}  // namespace llamabind
