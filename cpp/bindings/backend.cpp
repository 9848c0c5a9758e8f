// Process-level functions: versions, capabilities, devices, logging, built-in chat templates.

#include "common.hpp"

#include "llamabind/backend.hpp"
#include "llamabind/errors.hpp"

namespace llamabind::bindings {

void init_backend(py::module_ & m) {
    m.def("version", &version, "Version of llamabind.");
    m.def("llama_cpp_version", &llama_cpp_version, "Version string of the llama.cpp built into this module.");
    m.def("llama_cpp_pin", &llama_cpp_pin,
          "The pinned llama.cpp source this module was built from (package, sdist sha256, upstream commit).");
    m.def("system_info", &system_info, "llama.cpp's system info: backends and CPU features in use.");
    m.def("supports_mmap", &supports_mmap, "Whether models can be memory-mapped.");
    m.def("supports_mlock", &supports_mlock, "Whether model memory can be locked in RAM.");
    m.def("supports_gpu_offload", &supports_gpu_offload, "Whether a GPU backend is compiled in and usable.");
    m.def("supports_rpc", &supports_rpc, "Whether the RPC backend is compiled in.");
    m.def("max_devices", &max_devices, "Most devices a model can be split across.");
    m.def("max_parallel_sequences", &max_parallel_sequences, "Largest n_seq_max a context accepts.");
    m.def("time_us", &time_us, "llama.cpp's monotonic clock in microseconds.");
    m.def("release_thread_workers", &release_thread_workers,
          "Lets go of the CPU worker threads kept for the calling thread (OpenMP builds); a thread that is\n"
          "done generating calls it so that its idle workers do not slow other threads' decoding.");
    m.def(
        "devices",
        [] {
            py::list out;
            for (const auto & d : devices()) {
                py::dict item;
                item["name"] = d.name;
                item["description"] = d.description;
                item["type"] = d.type;
                item["memory_free"] = d.memory_free;
                item["memory_total"] = d.memory_total;
                out.append(item);
            }
            return out;
        },
        "Compute devices known to ggml, as dicts (name, description, type, memory_free, memory_total).");
    m.def(
        "backends",
        [] {
            py::list out;
            for (const auto & b : backends()) {
                py::dict item;
                item["name"] = b.name;
                item["library"] = b.library.empty() ? py::object(py::none()) : py::object(to_str(b.library));
                item["variant"] = b.variant.empty() ? py::object(py::none()) : py::object(py::str(b.variant));
                py::dict features;
                for (const auto & [key, value] : b.features) {
                    features[to_str(key)] = to_str(value);
                }
                item["features"] = features;
                item["devices"] = b.device_count;
                out.append(item);
            }
            return out;
        },
        "Backends registered with ggml, as dicts: name ('CPU', 'CUDA', 'Metal', ...), library (the module file\n"
        "it was loaded from, None when built into llamabind), variant (the CPU build variant such as\n"
        "'haswell' when the library is one of several, else None), features (dict) and devices (count).");
    m.def("dynamic_backends", &dynamic_backends,
          "Whether ggml's backends are modules loaded at run time (the portable build) rather than built in.");
    m.def("backend_directory", &backend_directory,
          "The directory backend modules were loaded from; '' when they are built in.");
    m.def("numa_init", &numa_init, py::arg("strategy"), "Sets up NUMA placement once per process.");
    m.def("builtin_chat_templates", &builtin_chat_templates, "Names of llama.cpp's built-in chat templates.");
    m.def(
        "chat_apply_template",
        [](const std::string & tmpl, const py::iterable & messages, bool add_assistant) {
            std::vector<ChatMessage> chat;
            for (const auto & item : messages) {
                ChatMessage msg;
                if (py::isinstance<py::dict>(item)) {
                    auto d = py::reinterpret_borrow<py::dict>(item);
                    if (!d.contains("role") || !d.contains("content")) {
                        throw InvalidArgument("[chat_apply_template] each message needs 'role' and 'content'");
                    }
                    msg.role = to_bytes(d["role"], "chat_apply_template");
                    py::object content = d["content"];
                    msg.content = content.is_none() ? std::string() : to_bytes(content, "chat_apply_template");
                } else {
                    auto pair = item.cast<std::pair<py::object, py::object>>();
                    msg.role = to_bytes(pair.first, "chat_apply_template");
                    msg.content = to_bytes(pair.second, "chat_apply_template");
                }
                chat.push_back(std::move(msg));
            }
            return to_str(chat_apply_template(tmpl, chat, add_assistant));
        },
        py::arg("template"), py::arg("messages"), py::arg("add_assistant") = true,
        "Formats messages (dicts with 'role' and 'content', or (role, content) pairs) with one of llama.cpp's\n"
        "built-in templates, given by name (see builtin_chat_templates()) or by Jinja source it recognises.");
    m.def("split_path", &split_path, py::arg("prefix"), py::arg("split_no"), py::arg("split_count"),
          "File name of one split of a model: <prefix>-0000N-of-0000M.gguf.");
    m.def("split_prefix", &split_prefix, py::arg("path"), py::arg("split_no"), py::arg("split_count"),
          "The prefix of a split file name, or '' when it does not match split_no/split_count.");
    m.def("flush_logs", &flush_logs, "Emits llama.cpp log lines queued while the GIL was released.");
    m.def(
        "set_native_stderr_logging",
        [](bool enabled) {
            if (enabled) {
                reset_log_callback();
            } else {
                install_logging();
            }
        },
        py::arg("enabled"),
        "True: llama.cpp writes its log to stderr itself (as its own tools do). False (the default):\n"
        "log lines go to the Python logger 'llamabind'.");
}

}  // namespace llamabind::bindings
