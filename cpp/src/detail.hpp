#pragma once

// Helpers shared by the implementation files; not part of the public headers.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llama.h"
#include "llamabind/errors.hpp"
#include "llamabind/model.hpp"

namespace llamabind::detail {

// llama_model_kv_override array ending with an empty key; empty when there are none.
std::vector<llama_model_kv_override> make_kv_overrides(const std::vector<KvOverride> & overrides, const char * where);

// What a file is for: picks the exception for one that exists but cannot be used.
enum class FileKind { Model, Adapter, Quantize, State };

// Throws the kind's own error (ModelLoadError naming `path`, AdapterError, QuantizeError,
// StateError) with `message`.
[[noreturn]] void throw_unusable(FileKind kind, const std::string & message, const std::string & path);

// Throws FileNotFound / PermissionDenied, or the kind's own error (ModelLoadError,
// AdapterError, QuantizeError, StateError), unless `path` is a readable file that starts
// with the GGUF magic number (not checked for State files) and holds no NUL byte.
void check_readable_file(const std::string & path, const char * where, FileKind kind);

// Throws InvalidArgument when `s` holds a NUL byte: llama.cpp takes C strings and would
// silently cut it there.
void check_no_nul(const std::string & s, const char * where, const char * what);

// Appends llama.cpp's most recent error log line (this thread) to `message`.
std::string with_reason(std::string message);

// Replaces this thread's error log (backend.hpp's last_error_log) with `text`: a llama.cpp
// call made on another thread for this one hands its failure reasons over.
void set_last_error_log(const std::string & text);

// Calls a llama.cpp "write into buf, return the length" function, growing the buffer.
std::string read_meta_string(const std::function<int32_t(char *, std::size_t)> & read);

// The GGUF metadata of a llama.cpp handle (a model or an adapter) through its
// meta_count / meta_key_by_index / meta_val_str_by_index functions.
template <class T>
std::map<std::string, std::string> read_metadata(const T * h, int32_t (*count)(const T *),
                                                 int32_t (*key_by_index)(const T *, int32_t, char *, std::size_t),
                                                 int32_t (*val_by_index)(const T *, int32_t, char *, std::size_t)) {
    std::map<std::string, std::string> out;
    const int32_t n = count(h);
    for (int32_t i = 0; i < n; ++i) {
        std::string key = read_meta_string([&](char * buf, std::size_t size) { return key_by_index(h, i, buf, size); });
        std::string val = read_meta_string([&](char * buf, std::size_t size) { return val_by_index(h, i, buf, size); });
        out.emplace(std::move(key), std::move(val));
    }
    return out;
}

// One metadata value of a llama.cpp handle through its meta_val_str function; nullopt
// when the key is absent.
template <class T>
std::optional<std::string> read_meta_val(const T * h, const std::string & key,
                                         int32_t (*val_str)(const T *, const char *, char *, std::size_t)) {
    bool found = true;
    std::string val = read_meta_string([&](char * buf, std::size_t size) {
        const int32_t n = val_str(h, key.c_str(), buf, size);
        found = n >= 0;
        return n;
    });
    if (!found) {
        return std::nullopt;
    }
    return val;
}

// The handle an object holds until close() (which another thread may call at any time);
// throws Closed with `closed_message` once it is gone.
template <class T>
std::shared_ptr<T> open_handle(const std::shared_ptr<T> & handle, const char * closed_message) {
    auto h = std::atomic_load(&handle);
    if (!h) {
        throw Closed(closed_message);
    }
    return h;
}

}  // namespace llamabind::detail
