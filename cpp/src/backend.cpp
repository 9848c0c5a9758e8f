#include "llamabind/backend.hpp"

#include <memory>
#include <mutex>

#include "ggml-backend.h"
#include "llama.h"
#include "llamabind/errors.hpp"

#ifndef LLAMABIND_VERSION
#define LLAMABIND_VERSION "0.0.0"
#endif
#ifndef LLAMABIND_LLAMA_CPP_PIN
#define LLAMABIND_LLAMA_CPP_PIN "unknown"
#endif

namespace llamabind {

namespace {

// The user's callback is swapped under a mutex and called through a shared_ptr copy, so
// a log line racing with set_log_callback() never sees a destroyed function.
struct LogState {
    std::mutex mutex;
    std::shared_ptr<const LogCallback> callback;
    bool routed = false;  // false: llama.cpp's default stderr output
};

LogState & log_state() {
    static LogState * state = new LogState();  // leaked: log lines may arrive during exit
    return *state;
}

struct ThreadErrors {
    std::string text;
    bool last_was_error = false;
};

ThreadErrors & thread_errors() {
    thread_local ThreadErrors errors;
    return errors;
}

void record_error(ggml_log_level level, const char * text) {
    auto & errors = thread_errors();
    if (level == GGML_LOG_LEVEL_ERROR) {
        if (!errors.text.empty() && errors.text.back() != '\n') {
            errors.text += '\n';
        }
        errors.text += text;
        errors.last_was_error = true;
        constexpr std::size_t keep = 4096;
        if (errors.text.size() > keep) {
            errors.text.erase(0, errors.text.size() - keep);
        }
    } else if (level == GGML_LOG_LEVEL_CONT && errors.last_was_error) {
        errors.text += text;
    } else {
        errors.last_was_error = false;
    }
}

void log_trampoline(ggml_log_level level, const char * text, void * /*user_data*/) {
    if (text == nullptr) {
        return;
    }
    record_error(level, text);
    auto & state = log_state();
    std::shared_ptr<const LogCallback> callback;
    bool routed;
    {
        std::lock_guard<std::mutex> lock(state.mutex);
        callback = state.callback;
        routed = state.routed;
    }
    if (!routed) {
        fputs(text, stderr);
        fflush(stderr);
        return;
    }
    if (callback && *callback) {
        try {
            (*callback)(level, text);
        } catch (...) {
            // A logger must never take the process down.
        }
    }
}

std::once_flag g_backend_once;
std::once_flag g_numa_once;

}  // namespace

void ensure_backend() {
    std::call_once(g_backend_once, [] {
        // Our trampoline is installed before anything logs, so failure reasons are captured
        // even while output still goes to stderr.
        llama_log_set(log_trampoline, nullptr);
        llama_backend_init();
    });
}

void numa_init(ggml_numa_strategy strategy) {
    ensure_backend();
    std::call_once(g_numa_once, [strategy] { llama_numa_init(strategy); });
}

void set_log_callback(LogCallback callback) {
    ensure_backend();
    auto & state = log_state();
    auto shared = std::make_shared<const LogCallback>(std::move(callback));
    std::lock_guard<std::mutex> lock(state.mutex);
    state.callback = std::move(shared);
    state.routed = true;
}

void reset_log_callback() {
    ensure_backend();
    auto & state = log_state();
    std::lock_guard<std::mutex> lock(state.mutex);
    state.callback.reset();
    state.routed = false;
}

std::string last_error_log() {
    return thread_errors().text;
}

void clear_last_error_log() {
    auto & errors = thread_errors();
    errors.text.clear();
    errors.last_was_error = false;
}

std::string version() { return LLAMABIND_VERSION; }
std::string llama_cpp_version() { return llama_version(); }
std::string llama_cpp_pin() { return LLAMABIND_LLAMA_CPP_PIN; }

std::string system_info() {
    ensure_backend();
    return llama_print_system_info();
}

bool supports_mmap() { return llama_supports_mmap(); }
bool supports_mlock() { return llama_supports_mlock(); }

bool supports_gpu_offload() {
    ensure_backend();
    return llama_supports_gpu_offload();
}

bool supports_rpc() {
    ensure_backend();
    return llama_supports_rpc();
}

std::size_t max_devices() { return llama_max_devices(); }
std::size_t max_parallel_sequences() { return llama_max_parallel_sequences(); }
int64_t time_us() { return llama_time_us(); }

std::vector<DeviceInfo> devices() {
    ensure_backend();
    std::vector<DeviceInfo> out;
    const std::size_t n = ggml_backend_dev_count();
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        DeviceInfo info;
        const char * name = ggml_backend_dev_name(dev);
        const char * desc = ggml_backend_dev_description(dev);
        info.name = name ? name : "";
        info.description = desc ? desc : "";
        switch (ggml_backend_dev_type(dev)) {
            case GGML_BACKEND_DEVICE_TYPE_CPU: info.type = "cpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_GPU: info.type = "gpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_IGPU: info.type = "igpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_ACCEL: info.type = "accel"; break;
            case GGML_BACKEND_DEVICE_TYPE_META: info.type = "meta"; break;
        }
        ggml_backend_dev_memory(dev, &info.memory_free, &info.memory_total);
        out.push_back(std::move(info));
    }
    return out;
}

std::vector<std::string> builtin_chat_templates() {
    const int32_t n = llama_chat_builtin_templates(nullptr, 0);
    std::vector<const char *> names(n > 0 ? static_cast<std::size_t>(n) : 0);
    if (n > 0) {
        llama_chat_builtin_templates(names.data(), names.size());
    }
    return std::vector<std::string>(names.begin(), names.end());
}

std::string chat_apply_template(const std::string & tmpl, const std::vector<ChatMessage> & messages,
                                bool add_assistant) {
    std::vector<llama_chat_message> chat;
    chat.reserve(messages.size());
    std::size_t total = 0;
    for (const auto & m : messages) {
        if (m.role.find('\0') != std::string::npos || m.content.find('\0') != std::string::npos) {
            throw InvalidArgument("[chat_apply_template] a message contains a NUL byte");
        }
        chat.push_back({m.role.c_str(), m.content.c_str()});
        total += m.role.size() + m.content.size();
    }
    std::string buf(2 * total + 256, '\0');
    for (int attempt = 0; attempt < 2; ++attempt) {
        const int32_t n = llama_chat_apply_template(tmpl.c_str(), chat.data(), chat.size(), add_assistant,
                                                    buf.data(), static_cast<int32_t>(buf.size()));
        if (n < 0) {
            throw InvalidArgument("[chat_apply_template] template is not one of llama.cpp's built-in templates: '" +
                                  tmpl.substr(0, 80) + (tmpl.size() > 80 ? "...'" : "'"));
        }
        if (static_cast<std::size_t>(n) <= buf.size()) {
            buf.resize(static_cast<std::size_t>(n));
            return buf;
        }
        buf.assign(static_cast<std::size_t>(n), '\0');
    }
    throw Error("[chat_apply_template] output size changed between calls");
}

std::string split_path(const std::string & prefix, int split_no, int split_count) {
    if (prefix.find('\0') != std::string::npos) {
        throw InvalidArgument("[split_path] the prefix contains a NUL byte");
    }
    char buf[4096];
    const int32_t n = llama_split_path(buf, sizeof(buf), prefix.c_str(), split_no, split_count);
    if (n <= 0 || static_cast<std::size_t>(n) >= sizeof(buf)) {
        throw InvalidArgument("[split_path] cannot build a split path for '" + prefix + "'");
    }
    return std::string(buf, static_cast<std::size_t>(n));
}

std::string split_prefix(const std::string & path, int split_no, int split_count) {
    char buf[4096];
    const int32_t n = llama_split_prefix(buf, sizeof(buf), path.c_str(), split_no, split_count);
    if (n <= 0) {
        return {};
    }
    return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace llamabind
