#pragma once

// Value conversion between Python objects and what the C++ layer takes.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;

namespace llamabind::bindings {

// Decodes bytes from llama.cpp as UTF-8, replacing invalid sequences (token texts and
// metadata come from untrusted files).
py::str to_str(const std::string & s);

// to_str of a value that may be absent (None then).
py::object to_str_or_none(const std::optional<std::string> & s);

// A str-to-str dict (metadata), decoded like to_str.
py::dict to_dict(const std::map<std::string, std::string> & m);

// Accepts str (encoded as UTF-8) or bytes-like objects.
std::string to_bytes(const py::handle & obj, const char * what);

// os.fspath(obj) as a str: accepts str, bytes and os.PathLike.
std::string path_str(const py::handle & obj);

// A sequence or 1-D integer array of token ids as int32s. Raises TypeError for non-integers
// and OutOfRange for values outside int32 (range against a vocabulary is checked later).
std::vector<int32_t> to_tokens(const py::handle & obj, const char * what);

}  // namespace llamabind::bindings
