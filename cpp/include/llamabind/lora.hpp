#pragma once

// LoraAdapter: a LoRA (or aLoRA) adapter loaded for one model.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llama.h"

namespace llamabind {

class Model;

// Apply with Context::set_lora_adapters({{adapter, scale}}). The adapter keeps its model
// alive; a context keeps the adapters it uses alive.
//
//   auto adapter = llamabind::LoraAdapter::load(model, "adapter.gguf");
//   ctx.set_lora_adapters({{adapter, 1.0f}});
class LoraAdapter {
public:
    // Loads an adapter GGUF for `model`. Throws FileNotFound or AdapterError.
    static std::shared_ptr<LoraAdapter> load(const std::shared_ptr<Model> & model, const std::string & path);

    LoraAdapter(std::shared_ptr<llama_adapter_lora> handle, std::string path);

    // Drops this object's ownership (contexts using the adapter keep it); later calls throw
    // Closed. Idempotent.
    void close() noexcept;
    bool closed() const noexcept;
    std::shared_ptr<llama_adapter_lora> handle() const;
    const std::string & path() const noexcept { return path_; }

    // The adapter file's GGUF metadata, all of it and one key.
    std::map<std::string, std::string> metadata() const;
    std::optional<std::string> meta_val(const std::string & key) const;
    // Invocation tokens of an activated LoRA (empty for a plain LoRA).
    std::vector<llama_token> alora_invocation_tokens() const;

private:
    std::shared_ptr<llama_adapter_lora> handle_;
    std::string path_;
};

}  // namespace llamabind
