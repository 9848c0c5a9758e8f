#pragma once

// Exception types thrown by the llamabind C++ layer. Every failure reported by llama.cpp
// (a null handle, a non-zero return code) becomes one of these; nothing is reported
// through return values.

#include <cstdint>
#include <stdexcept>
#include <string>

namespace llamabind {

// Base of every llamabind error.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// An error about one file; path() names it.
class FileError : public Error {
public:
    FileError(const std::string & message, std::string path)
        : Error(message), path_(std::move(path)) {}
    const std::string & path() const noexcept { return path_; }

private:
    std::string path_;
};

// A model, adapter or session file does not exist.
class FileNotFound : public FileError {
public:
    using FileError::FileError;
};

// A file exists but the process may not read it.
class PermissionDenied : public FileError {
public:
    using FileError::FileError;
};

// A model file exists but could not be loaded (corrupt, unsupported, cancelled).
class ModelLoadError : public FileError {
public:
    using FileError::FileError;
};

// An argument has an invalid value (a bad size, an empty input, a wrong combination).
class InvalidArgument : public Error {
public:
    using Error::Error;
};

// An index is outside its valid range: token ids, sequence ids, output rows.
class OutOfRange : public Error {
public:
    using Error::Error;
};

// The object was closed; nothing can be done with it any more.
class Closed : public Error {
public:
    using Error::Error;
};

// llama_decode / llama_encode failed. code() is llama.cpp's return value.
class DecodeError : public Error {
public:
    DecodeError(const std::string & message, int32_t code) : Error(message), code_(code) {}
    int32_t code() const noexcept { return code_; }

private:
    int32_t code_;
};

// Return code 1: no KV cache slot for the batch (the context is full).
class NoKvSlot : public DecodeError {
public:
    using DecodeError::DecodeError;
};

// Return code 2: the abort callback (cancel()) stopped the computation.
class Aborted : public DecodeError {
public:
    using DecodeError::DecodeError;
};

// Return code -1: llama.cpp rejected the batch.
class InvalidBatch : public DecodeError {
public:
    using DecodeError::DecodeError;
};

// Return code < -1: computation failed.
class FatalDecodeError : public DecodeError {
public:
    using DecodeError::DecodeError;
};

// Saving or restoring state failed (wrong model, truncated data, bad file).
class StateError : public Error {
public:
    using Error::Error;
};

// A GBNF grammar did not parse.
class GrammarError : public Error {
public:
    using Error::Error;
};

// A LoRA adapter or control vector could not be loaded or applied.
class AdapterError : public Error {
public:
    using Error::Error;
};

// Quantization or model saving failed.
class QuantizeError : public Error {
public:
    using Error::Error;
};

// The connection to an RPC server (ggml's RPC backend) failed: it cannot be reached, does not
// speak the protocol, or went away while holding part of a model. endpoint() names it.
class RpcError : public Error {
public:
    RpcError(const std::string & message, std::string endpoint) : Error(message), endpoint_(std::move(endpoint)) {}
    const std::string & endpoint() const noexcept { return endpoint_; }

private:
    std::string endpoint_;
};

}  // namespace llamabind
