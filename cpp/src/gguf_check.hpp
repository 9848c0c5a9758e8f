#pragma once

// Validation of GGUF files before llama.cpp reads them (see gguf_check.cpp).

#include <cstdint>
#include <string>
#include <vector>

#include "detail.hpp"

namespace llamabind::detail {

struct GgufCheck {
    // Check the metadata llama.cpp consumes (vocabulary, hyperparameters), not only the
    // container: true for a model's first (or only) file, false for adapters and the
    // later files of a split model.
    bool metadata = true;
    // The load reads only the vocabulary, so hyperparameters are not checked.
    bool vocab_only = false;
    // The load's kv_overrides: llama.cpp uses them instead of the file's values.
    const std::vector<KvOverride> * overrides = nullptr;
};

// Throws the kind's error (ModelLoadError, AdapterError, QuantizeError) naming `path`
// and the defect when the file is not a well-formed GGUF file whose header stays within
// the file, or when its metadata would make llama.cpp abort. A file that cannot be opened
// is left to check_readable_file.
// Returns the file's split.count (uint16, 0 when absent), so that a load from the first
// split can validate the others before llama.cpp opens them.
uint32_t check_gguf(const std::string & path, const char * where, FileKind kind, const GgufCheck & what);

}  // namespace llamabind::detail
