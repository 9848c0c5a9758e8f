#pragma once

// Helpers shared by the implementation files; not part of the public headers.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llama.h"
#include "llamabind/model.hpp"

namespace llamabind::detail {

// llama_model_kv_override array ending with an empty key; empty when there are none.
std::vector<llama_model_kv_override> make_kv_overrides(const std::vector<KvOverride> & overrides, const char * where);

// What a file is for: picks the exception for one that exists but cannot be used.
enum class FileKind { Model, Adapter, Quantize, State };

// Throws FileNotFound / PermissionDenied, or the kind's own error (ModelLoadError,
// AdapterError, QuantizeError, StateError), unless `path` is a readable file that starts
// with the GGUF magic number (not checked for State files) and holds no NUL byte.
void check_readable_file(const std::string & path, const char * where, FileKind kind);

// Throws InvalidArgument when `s` holds a NUL byte: llama.cpp takes C strings and would
// silently cut it there.
void check_no_nul(const std::string & s, const char * where, const char * what);

// Appends llama.cpp's most recent error log line (this thread) to `message`.
std::string with_reason(std::string message);

// Calls a llama.cpp "write into buf, return the length" function, growing the buffer.
std::string read_meta_string(const std::function<int32_t(char *, std::size_t)> & read);

}  // namespace llamabind::detail
