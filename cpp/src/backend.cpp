#include "llamabind/backend.hpp"

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <dlfcn.h>
#endif

#include "ggml-backend.h"
#include "llama.h"
#include "detail.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/rpc.hpp"

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
    // While backend modules load (before any callback can be set), ggml reports each module it
    // loads at INFO level; those lines are kept here and handed to the first callback set,
    // instead of appearing on stderr at every import.
    bool holding = false;
    std::vector<std::pair<ggml_log_level, std::string>> held;
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
        if (state.holding && level != GGML_LOG_LEVEL_ERROR && level != GGML_LOG_LEVEL_WARN) {
            state.held.emplace_back(level, text);
            return;
        }
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
std::string g_backend_dir;  // written once, inside g_backend_once

// The file of the executable or shared library that contains `address` (code or data);
// empty when the platform cannot tell.
std::string module_file_of(const void * address) {
#if defined(_WIN32)
    HMODULE module = nullptr;
    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            static_cast<LPCWSTR>(address), &module)) {
        return {};
    }
    std::wstring wide(32768, L'\0');
    const DWORD n = GetModuleFileNameW(module, wide.data(), static_cast<DWORD>(wide.size()));
    if (n == 0 || n >= wide.size()) {
        return {};
    }
    const int len = WideCharToMultiByte(CP_UTF8, 0, wide.data(), static_cast<int>(n), nullptr, 0, nullptr, nullptr);
    std::string out(static_cast<std::size_t>(len > 0 ? len : 0), '\0');
    if (len > 0) {
        WideCharToMultiByte(CP_UTF8, 0, wide.data(), static_cast<int>(n), out.data(), len, nullptr, nullptr);
    }
    return out;
#else
    Dl_info info{};
    if (dladdr(address, &info) == 0 || info.dli_fname == nullptr) {
        return {};
    }
    return info.dli_fname;
#endif
}

std::string parent_directory(const std::string & file) {
    const auto slash = file.find_last_of("/\\");
    return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

std::string file_name(const std::string & path) {
    const auto slash = path.find_last_of("/\\");
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

#ifdef GGML_BACKEND_DL
// ggml's own default search (llama_backend_init -> ggml_backend_load_all) looks next to the
// executable and in the current directory: for a Python extension that is the interpreter's
// directory and wherever the user happens to be. The modules belong to the ggml library we
// were linked with, so they are loaded from its directory (or LLAMABIND_BACKEND_DIR).
void load_backend_modules() {
    const char * env = std::getenv("LLAMABIND_BACKEND_DIR");
    std::string dir;
    if (env != nullptr && *env != '\0') {
        dir = env;
    } else {
        void (*probe)(const char *) = &ggml_backend_load_all_from_path;  // lives in the ggml library
        const void * address = nullptr;
        static_assert(sizeof(probe) == sizeof(address), "function and data pointers differ in size");
        std::memcpy(&address, &probe, sizeof(address));
        const std::string ggml_file = module_file_of(address);
        dir = ggml_file.empty() ? std::string(".") : parent_directory(ggml_file);
    }
    ggml_backend_load_all_from_path(dir.c_str());
    if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == nullptr) {
        throw Error("[llamabind] no usable CPU backend in '" + dir +
                    "': this build loads ggml's backends at run time and expects the libggml-cpu-*"
                    " modules it was built with there (set LLAMABIND_BACKEND_DIR to their directory)");
    }
    g_backend_dir = dir;
}
#endif

}  // namespace

void ensure_backend() {
    std::call_once(g_backend_once, [] {
        // Our trampoline is installed before anything logs, so failure reasons are captured
        // even while output still goes to stderr.
        llama_log_set(log_trampoline, nullptr);
#ifdef GGML_BACKEND_DL
        auto & state = log_state();
        {
            std::lock_guard<std::mutex> lock(state.mutex);
            state.holding = true;
        }
        try {
            load_backend_modules();  // before llama_backend_init, which would search elsewhere
        } catch (...) {
            std::lock_guard<std::mutex> lock(state.mutex);
            state.holding = false;
            throw;
        }
        {
            std::lock_guard<std::mutex> lock(state.mutex);
            state.holding = false;
        }
#endif
        llama_backend_init();
    });
}

bool dynamic_backends() {
#ifdef GGML_BACKEND_DL
    return true;
#else
    return false;
#endif
}

std::string backend_directory() {
    ensure_backend();
    return g_backend_dir;
}

std::vector<BackendInfo> backends() {
    ensure_backend();
    const std::string self = module_file_of(static_cast<const void *>(&g_backend_dir));
    std::vector<BackendInfo> out;
    const std::size_t n = ggml_backend_reg_count();
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        ggml_backend_reg_t reg = ggml_backend_reg_get(i);
        BackendInfo info;
        const char * name = ggml_backend_reg_name(reg);
        info.name = name ? name : "";
        info.device_count = ggml_backend_reg_dev_count(reg);
        // The registry object is a static inside the backend's own code, so its address
        // names the file the backend came from.
        const std::string file = module_file_of(static_cast<const void *>(reg));
        if (!file.empty() && file != self) {
            info.library = file;
            std::string lower = info.name;
            for (auto & c : lower) {
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            }
            std::string stem = file_name(file);  // libggml-cpu-armv8.2_1.so: variants may hold dots
            for (const char * ext : {".so", ".dll", ".dylib"}) {
                const std::size_t len = std::strlen(ext);
                if (stem.size() > len && stem.compare(stem.size() - len, len, ext) == 0) {
                    stem.resize(stem.size() - len);
                    break;
                }
            }
            for (const std::string prefix : {"libggml-" + lower + "-", "ggml-" + lower + "-"}) {
                if (stem.size() > prefix.size() && stem.compare(0, prefix.size(), prefix) == 0) {
                    info.variant = stem.substr(prefix.size());
                    break;
                }
            }
        }
        void * proc = ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features");
        ggml_backend_get_features_t get_features = nullptr;
        static_assert(sizeof(get_features) == sizeof(proc), "function and data pointers differ in size");
        std::memcpy(&get_features, &proc, sizeof(proc));
        if (get_features != nullptr) {
            for (const ggml_backend_feature * f = get_features(reg); f != nullptr && f->name != nullptr; ++f) {
                info.features.emplace_back(f->name, f->value ? f->value : "");
            }
        }
        out.push_back(std::move(info));
    }
    return out;
}

void numa_init(ggml_numa_strategy strategy) {
    ensure_backend();
    std::call_once(g_numa_once, [strategy] { llama_numa_init(strategy); });
}

void set_log_callback(LogCallback callback) {
    ensure_backend();
    auto & state = log_state();
    auto shared = std::make_shared<const LogCallback>(std::move(callback));
    std::vector<std::pair<ggml_log_level, std::string>> held;
    {
        std::lock_guard<std::mutex> lock(state.mutex);
        state.callback = shared;
        state.routed = true;
        held.swap(state.held);
    }
    if (*shared) {
        for (const auto & [level, text] : held) {
            try {
                (*shared)(level, text);
            } catch (...) {
                // A logger must never take the process down.
            }
        }
    }
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

namespace detail {

void set_last_error_log(const std::string & text) {
    auto & errors = thread_errors();
    errors.text = text;
    errors.last_was_error = false;
}

}  // namespace detail

std::string version() { return LLAMABIND_VERSION; }
std::string llama_cpp_version() { return llama_version(); }
std::string llama_cpp_pin() { return LLAMABIND_LLAMA_CPP_PIN; }

std::string system_info() {
    ensure_backend();
    std::string info = llama_print_system_info();
    // llama.cpp lists the backends that report features; the RPC backend reports none.
    if (ggml_backend_reg_by_name("RPC") != nullptr) {
        info += "RPC : PROTOCOL = " + rpc_protocol_version() + " | ";
    }
    return info;
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

#if defined(__linux__) && defined(__GNUC__)
// OpenMP 5.0; libgomp frees the calling thread's team. Weak: resolved only when ggml-cpu
// brought in an OpenMP runtime.
extern "C" int omp_pause_resource_all(int kind) __attribute__((weak));
#endif

void release_thread_workers() {
#if defined(__linux__) && defined(__GNUC__)
    if (omp_pause_resource_all != nullptr) {
        constexpr int omp_pause_soft = 1;
        omp_pause_resource_all(omp_pause_soft);
    }
#endif
}

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
