#pragma once

// Process-wide state: backend initialisation, logging, versions and capabilities.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ggml-cpu.h"
#include "ggml.h"

namespace llamabind {

// Initialises llama.cpp's backends exactly once per process (thread-safe). Every entry
// point that needs it (model load, quantize, device listing) calls it; calling it again
// is free. In a build with dynamic backends (see dynamic_backends()) it first loads the
// backend modules and throws Error when no CPU backend can be loaded; a later call tries again.
void ensure_backend();

// Optional NUMA setup (llama_numa_init); only the first call has an effect.
void numa_init(ggml_numa_strategy strategy);

// Receives every log line of llama.cpp and ggml: level and text (with its newline).
// It may be called from any thread, including llama.cpp's worker threads, and must not
// throw. An empty function silences logging.
using LogCallback = std::function<void(ggml_log_level level, const std::string & text)>;

// Routes llama.cpp/ggml logging to `callback`. Until this is first called, log lines go to
// stderr as in llama.cpp itself. Thread-safe.
void set_log_callback(LogCallback callback);

// Restores llama.cpp's own stderr logging.
void reset_log_callback();

// The most recent error-level log text emitted on the calling thread since the last
// call to clear_last_error_log(); llama.cpp reports failure reasons this way, and
// llamabind appends them to exception messages.
std::string last_error_log();
void clear_last_error_log();

// Versions: of llamabind, of the llama.cpp it was built against (llama_version()), and the
// pin string (package, sdist hash, upstream commit) recorded at build time.
std::string version();
std::string llama_cpp_version();
std::string llama_cpp_pin();

// llama_print_system_info(): the CPU features and backends compiled in and in use.
std::string system_info();

// What this build and machine support: memory-mapped and locked model files, offloading
// layers to a GPU, the RPC backend; the most devices a model may be split across and the
// most sequences a context may hold; llama.cpp's monotonic clock in microseconds.
bool supports_mmap();
bool supports_mlock();
bool supports_gpu_offload();
bool supports_rpc();
std::size_t max_devices();
std::size_t max_parallel_sequences();
int64_t time_us();

// Lets go of the worker threads ggml's CPU backend (built with OpenMP) keeps for the calling
// thread. libgomp keeps a team of workers for every thread that ever ran a graph, and once
// there are more of them than CPUs it barely spins at barriers, so one idle thread's team
// slows every other thread's decoding (3x on 2 cores). Call it from a thread that is done
// generating; its next decode makes the team again. A no-op without OpenMP.
void release_thread_workers();

// One backend registered with ggml (CPU, CUDA, Metal, ...): where it came from and the
// features it was compiled with.
struct BackendInfo {
    std::string name;     // ggml's registry name: "CPU", "CUDA", "Metal", ...
    std::string library;  // the module file it was loaded from; empty when compiled into this program
    std::string variant;  // the build variant named in the module file (libggml-cpu-<variant>), else empty
    std::vector<std::pair<std::string, std::string>> features;  // e.g. {"AVX2", "1"}, {"ARCHS", "900"}
    std::size_t device_count = 0;
};

// The backends in use, in ggml's registry order.
std::vector<BackendInfo> backends();

// True when ggml was built with GGML_BACKEND_DL (the portable build, see LLAMABIND_PORTABLE):
// backends are separate modules, loaded when the process first needs them from the
// directory of the ggml library itself, or from the environment variable
// LLAMABIND_BACKEND_DIR when it is set. Among the CPU modules ggml picks the one built for
// the best instruction set this CPU supports.
bool dynamic_backends();

// The directory backend modules were loaded from; empty for a build without GGML_BACKEND_DL.
std::string backend_directory();

// One compute device known to ggml (CPU, GPU, accelerator).
struct DeviceInfo {
    std::string name;
    std::string description;
    std::string type;  // "cpu", "gpu", "igpu", "accel" or "meta"
    std::size_t memory_free = 0;
    std::size_t memory_total = 0;
};

// Every device ggml's backends registered, in registration order.
std::vector<DeviceInfo> devices();

// Names of llama.cpp's built-in chat templates (llama_chat_builtin_templates()).
std::vector<std::string> builtin_chat_templates();

struct ChatMessage {
    std::string role;
    std::string content;
};

// llama_chat_apply_template(): formats `messages` with a built-in template, given by
// name ("chatml", "llama3", ...) or as the Jinja source of a template llama.cpp
// recognises. Throws InvalidArgument when the template is not supported.
std::string chat_apply_template(const std::string & tmpl, const std::vector<ChatMessage> & messages,
                                bool add_assistant);

// Split-file helpers: llama_split_path() and llama_split_prefix().
std::string split_path(const std::string & prefix, int split_no, int split_count);
std::string split_prefix(const std::string & path, int split_no, int split_count);

}  // namespace llamabind
