// A bounds-checked reader of GGUF headers that runs before a file is handed to llama.cpp.
//
// llama.cpp's own GGUF parser (ggml/src/gguf.cpp) checks the container well, but the code
// that consumes the metadata afterwards trusts it: a vocabulary with two equal token texts,
// a block count above LLAMA_MAX_LAYERS, inconsistent expert counts or an unknown rope
// scaling type end in GGML_ASSERT, which aborts the whole process. This reader walks the
// header with every count and length checked against the bytes left in the file, then
// checks the metadata that llama.cpp would assert on, and throws a typed error naming the
// file and the defect instead.

#include "gguf_check.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_set>
#include <variant>
#include <vector>

#if !defined(_WIN32)
#include <sys/types.h>
#endif

#include "ggml.h"
#include "llamabind/errors.hpp"

namespace llamabind::detail {

namespace {

// gguf.h enum gguf_type
enum : uint32_t {
    T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY,
    T_UINT64, T_INT64, T_FLOAT64, T_COUNT
};

constexpr uint64_t kMaxString = uint64_t(1) << 30;  // gguf.cpp GGUF_MAX_STRING_LENGTH
constexpr uint64_t kMaxArray = uint64_t(1) << 30;   // gguf.cpp GGUF_MAX_ARRAY_ELEMENTS
constexpr uint32_t kMaxLayers = 512;                // llama-hparams.h LLAMA_MAX_LAYERS
constexpr uint32_t kMaxExperts = 1024;              // llama-hparams.h LLAMA_MAX_EXPERTS
constexpr std::size_t kMaxName = 64;                // GGML_MAX_NAME
constexpr uint64_t kTensorAlignment = 32;           // ggml-backend-impl.h TENSOR_ALIGNMENT
// Numeric arrays up to this size are kept for the semantic checks; larger ones are skipped.
constexpr uint64_t kKeepArrayBytes = uint64_t(16) << 20;
// A vocabulary with no tokenizer gets this many dummy tokens (the vocab_size key): more than
// any real model has, well below what would exhaust memory (each dummy token costs ~40 bytes).
constexpr uint64_t kMaxDummyVocab = uint64_t(1) << 24;

std::size_t scalar_size(uint32_t t) {
    switch (t) {
        case T_UINT8: case T_INT8: case T_BOOL: return 1;
        case T_UINT16: case T_INT16: return 2;
        case T_UINT32: case T_INT32: case T_FLOAT32: return 4;
        case T_UINT64: case T_INT64: case T_FLOAT64: return 8;
        default: return 0;
    }
}

const char * type_name(uint32_t t) {
    static const char * names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                   "bool", "string", "array", "uint64", "int64", "float64"};
    return t < T_COUNT ? names[t] : "invalid";
}

struct Invalid {
    std::string reason;
};

[[noreturn]] void fail(std::string reason) { throw Invalid{std::move(reason)}; }

struct Kv {
    std::string key;
    uint32_t type = 0;
    uint32_t arr_type = 0;
    uint64_t n = 0;                  // array length
    uint64_t scalar = 0;             // raw bits of a scalar value
    std::string str;                 // a string value
    std::vector<std::string> strs;   // the elements of tokenizer.ggml.tokens
    std::vector<unsigned char> arr;  // a numeric array's payload (when kept)
    bool arr_kept = false;
};

struct TensorInfo {
    std::string name;
    int64_t ne[4] = {1, 1, 1, 1};
    uint32_t type = 0;
    uint64_t offset = 0;
};

bool seek_to(std::FILE * f, uint64_t pos) {
#if defined(_WIN32)
    return _fseeki64(f, static_cast<__int64>(pos), SEEK_SET) == 0;
#else
    return fseeko(f, static_cast<off_t>(pos), SEEK_SET) == 0;
#endif
}

uint64_t file_size_of(std::FILE * f) {
#if defined(_WIN32)
    if (_fseeki64(f, 0, SEEK_END) != 0) return 0;
    const __int64 end = _ftelli64(f);
#else
    if (fseeko(f, 0, SEEK_END) != 0) return 0;
    const off_t end = ftello(f);
#endif
    seek_to(f, 0);
    return end < 0 ? 0 : static_cast<uint64_t>(end);
}

class Reader {
public:
    Reader(std::FILE * f, uint64_t size) : f_(f), size_(size) {}

    uint64_t pos() const { return pos_; }
    uint64_t left() const { return size_ - pos_; }

    void read(void * dst, uint64_t n, const char * what) {
        if (n > left()) {
            fail(std::string("the file ends inside ") + what + " (at byte " + std::to_string(pos_) + " of " +
                 std::to_string(size_) + ")");
        }
        if (n > 0 && std::fread(dst, 1, static_cast<std::size_t>(n), f_) != n) {
            fail(std::string("read error inside ") + what);
        }
        pos_ += n;
    }

    void skip(uint64_t n, const char * what) {
        if (n > left()) {
            fail(std::string("the file ends inside ") + what + " (needs " + std::to_string(n) + " bytes at byte " +
                 std::to_string(pos_) + ", " + std::to_string(left()) + " left)");
        }
        if (!seek_to(f_, pos_ + n)) {
            fail(std::string("seek error inside ") + what);
        }
        pos_ += n;
    }

    uint32_t u32(const char * what) {
        unsigned char b[4];
        read(b, 4, what);
        return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
    }

    uint64_t u64(const char * what) {
        unsigned char b[8];
        read(b, 8, what);
        uint64_t v = 0;
        for (int i = 7; i >= 0; --i) {
            v = v << 8 | b[i];
        }
        return v;
    }

    std::string string(const std::string & what) {
        const uint64_t n = u64(("the length of " + what).c_str());
        if (n > kMaxString) {
            fail("the length of " + what + " is " + std::to_string(n) + " bytes (more than 1 GiB)");
        }
        if (n > left()) {
            fail("the length of " + what + " is " + std::to_string(n) + " bytes but only " + std::to_string(left()) +
                 " bytes are left in the file");
        }
        std::string s(static_cast<std::size_t>(n), '\0');
        read(s.data(), n, what.c_str());
        return s;
    }

    void skip_string(const std::string & what) {
        const uint64_t n = u64(("the length of " + what).c_str());
        if (n > kMaxString || n > left()) {
            fail("the length of " + what + " is " + std::to_string(n) + " bytes but only " + std::to_string(left()) +
                 " bytes are left in the file");
        }
        skip(n, what.c_str());
    }

private:
    std::FILE * f_;
    uint64_t size_;
    uint64_t pos_ = 0;
};

struct Header {
    uint32_t version = 0;
    std::vector<Kv> kvs;
    std::map<std::string, std::size_t> index;
    std::vector<TensorInfo> tensors;
    uint64_t alignment = 32;
    uint64_t data_offset = 0;
    uint64_t file_size = 0;

    const Kv * find(const std::string & key) const {
        auto it = index.find(key);
        return it == index.end() ? nullptr : &kvs[it->second];
    }
};

std::string printable(const std::string & s) {
    std::string out;
    for (unsigned char c : s.substr(0, 80)) {
        if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\x%02x", c);
            out += buf;
        }
    }
    return s.size() > 80 ? out + "..." : out;
}

void read_value(Reader & r, Kv & kv, bool keep_strings) {
    const std::string what = "the value of '" + printable(kv.key) + "'";
    if (kv.type == T_STRING) {
        kv.str = r.string(what);
        return;
    }
    if (kv.type == T_ARRAY) {
        kv.arr_type = r.u32(("the element type of " + what).c_str());
        kv.n = r.u64(("the length of " + what).c_str());
        if (kv.arr_type == T_ARRAY) {
            fail(what + " is an array of arrays (not supported by GGUF readers)");
        }
        if (kv.arr_type >= T_COUNT) {
            fail(what + " is an array with invalid element type " + std::to_string(kv.arr_type));
        }
        if (kv.n > kMaxArray) {
            fail(what + " is an array of " + std::to_string(kv.n) + " elements (more than 2**30)");
        }
        if (kv.arr_type == T_STRING) {
            // Each element needs at least its 8-byte length.
            if (kv.n > r.left() / 8) {
                fail(what + " is an array of " + std::to_string(kv.n) + " strings but only " +
                     std::to_string(r.left()) + " bytes are left in the file");
            }
            if (keep_strings) {
                // Counts come from the file: reserve no more than a real vocabulary needs.
                kv.strs.reserve(static_cast<std::size_t>(std::min<uint64_t>(kv.n, 1 << 20)));
            }
            for (uint64_t i = 0; i < kv.n; ++i) {
                const std::string elem = "element " + std::to_string(i) + " of " + what;
                if (keep_strings) {
                    kv.strs.push_back(r.string(elem));
                } else {
                    r.skip_string(elem);
                }
            }
            return;
        }
        const std::size_t size = scalar_size(kv.arr_type);
        if (kv.n > r.left() / size) {
            fail(what + " is an array of " + std::to_string(kv.n) + " " + type_name(kv.arr_type) +
                 " values but only " + std::to_string(r.left()) + " bytes are left in the file");
        }
        const uint64_t bytes = kv.n * size;
        if (bytes <= kKeepArrayBytes) {
            kv.arr.resize(static_cast<std::size_t>(bytes));
            r.read(kv.arr.data(), bytes, what.c_str());
            kv.arr_kept = true;
        } else {
            r.skip(bytes, what.c_str());
        }
        return;
    }
    const std::size_t size = scalar_size(kv.type);
    if (size == 0) {
        fail("key '" + printable(kv.key) + "' has invalid value type " + std::to_string(kv.type));
    }
    unsigned char b[8] = {0};
    r.read(b, size, what.c_str());
    for (std::size_t i = size; i-- > 0;) {
        kv.scalar = kv.scalar << 8 | b[i];
    }
}

Header parse(std::FILE * f, uint64_t file_size, bool keep_tokens) {
    Header h;
    h.file_size = file_size;
    Reader r(f, file_size);
    char magic[4];
    r.read(magic, 4, "the magic number");
    if (std::memcmp(magic, "GGUF", 4) != 0) {
        fail("wrong magic number (not a GGUF file)");
    }
    h.version = r.u32("the version");
    if (h.version == 1) {
        fail("GGUF version 1 is no longer supported");
    }
    if (h.version != 2 && h.version != 3) {
        fail("unsupported GGUF version " + std::to_string(h.version) +
             ((h.version & 0xFFFF) == 0 ? " (a file of the other byte order?)" : ""));
    }
    const uint64_t n_tensors = r.u64("the tensor count");
    const uint64_t n_kv = r.u64("the key-value count");
    // A key-value pair takes at least 13 bytes (key length, one key byte, type, one value
    // byte), a tensor info at least 24 (name length, n_dims, type, offset).
    if (n_kv > r.left() / 13) {
        fail("the header says " + std::to_string(n_kv) + " key-value pairs, more than the " +
             std::to_string(r.left()) + " bytes left in the file can hold");
    }
    if (n_tensors > r.left() / 24) {
        fail("the header says " + std::to_string(n_tensors) + " tensors, more than the " + std::to_string(r.left()) +
             " bytes left in the file can hold");
    }
    for (uint64_t i = 0; i < n_kv; ++i) {
        Kv kv;
        kv.key = r.string("key " + std::to_string(i));
        if (kv.key.empty()) {
            fail("key " + std::to_string(i) + " is empty");
        }
        kv.type = r.u32(("the type of '" + printable(kv.key) + "'").c_str());
        if (kv.type >= T_COUNT) {
            fail("key '" + printable(kv.key) + "' has invalid value type " + std::to_string(kv.type));
        }
        read_value(r, kv, keep_tokens && kv.key == "tokenizer.ggml.tokens");
        if (!h.index.emplace(kv.key, h.kvs.size()).second) {
            fail("duplicate key '" + printable(kv.key) + "'");
        }
        h.kvs.push_back(std::move(kv));
    }
    if (const Kv * a = h.find("general.alignment")) {
        if (a->type != T_UINT32) {
            fail(std::string("general.alignment must be a uint32, not ") + type_name(a->type));
        }
        if (a->scalar == 0 || (a->scalar & (a->scalar - 1)) != 0) {
            fail("general.alignment " + std::to_string(a->scalar) + " is not a power of 2");
        }
        h.alignment = a->scalar;
    }
    std::unordered_set<std::string> names;
    for (uint64_t i = 0; i < n_tensors; ++i) {
        TensorInfo t;
        const std::string what = "tensor info " + std::to_string(i);
        t.name = r.string("the name of " + what);
        if (t.name.size() >= kMaxName) {
            fail("the name of " + what + " has " + std::to_string(t.name.size()) + " bytes (at most " +
                 std::to_string(kMaxName - 1) + ")");
        }
        if (!names.insert(t.name).second) {
            fail("duplicate tensor name '" + printable(t.name) + "'");
        }
        const std::string tw = "tensor '" + printable(t.name) + "'";
        const uint32_t n_dims = r.u32(("the dimension count of " + tw).c_str());
        if (n_dims > 4) {
            fail(tw + " has " + std::to_string(n_dims) + " dimensions (at most 4)");
        }
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t ne = r.u64(("a dimension of " + tw).c_str());
            if (ne > uint64_t(std::numeric_limits<int64_t>::max())) {
                fail(tw + " has a negative dimension");
            }
            t.ne[d] = static_cast<int64_t>(ne);
        }
        int64_t n_el = t.ne[0];
        for (int d = 1; d < 4; ++d) {
            if (t.ne[d] > 1 && n_el > std::numeric_limits<int64_t>::max() / t.ne[d]) {
                fail(tw + " has more elements than fit in int64");
            }
            n_el *= t.ne[d];
        }
        t.type = r.u32(("the type of " + tw).c_str());
        if (t.type >= GGML_TYPE_COUNT || ggml_blck_size(static_cast<ggml_type>(t.type)) == 0) {
            fail(tw + " has invalid ggml type " + std::to_string(t.type));
        }
        const int64_t blck = ggml_blck_size(static_cast<ggml_type>(t.type));
        if (t.ne[0] % blck != 0) {
            fail(tw + " has rows of " + std::to_string(t.ne[0]) + " elements, not a multiple of the " +
                 ggml_type_name(static_cast<ggml_type>(t.type)) + " block size " + std::to_string(blck));
        }
        t.offset = r.u64(("the data offset of " + tw).c_str());
        h.tensors.push_back(std::move(t));
    }
    h.data_offset = r.pos();
    if (!h.tensors.empty()) {
        h.data_offset = (r.pos() + h.alignment - 1) / h.alignment * h.alignment;
    }
    // Tensors are laid out back to back, each padded to the alignment, in header order
    // (gguf.cpp insists on exactly this layout); all of them must lie within the file.
    uint64_t expected = 0;
    for (const auto & t : h.tensors) {
        const std::string tw = "tensor '" + printable(t.name) + "'";
        if (t.offset != expected) {
            fail(tw + " has data offset " + std::to_string(t.offset) + ", expected " + std::to_string(expected));
        }
        const uint64_t row = ggml_type_size(static_cast<ggml_type>(t.type));
        const uint64_t blocks = uint64_t(t.ne[0]) / uint64_t(ggml_blck_size(static_cast<ggml_type>(t.type)));
        uint64_t rows = 1;
        bool overflow = false;
        for (int d = 1; d < 4; ++d) {
            if (t.ne[d] != 0 && rows > std::numeric_limits<uint64_t>::max() / uint64_t(t.ne[d])) {
                overflow = true;
            }
            rows *= uint64_t(t.ne[d]);
        }
        if (overflow || (blocks != 0 && row > std::numeric_limits<uint64_t>::max() / blocks) ||
            (rows != 0 && blocks * row > std::numeric_limits<uint64_t>::max() / rows)) {
            fail(tw + " is larger than any file can be");
        }
        const uint64_t nbytes = blocks * row * rows;
        const uint64_t padded = nbytes + (h.alignment - nbytes % h.alignment) % h.alignment;
        // llama.cpp maps tensors in place (mmap) and ggml asserts that tensor data is aligned
        // to TENSOR_ALIGNMENT (32 bytes) in memory, i.e. at a file offset that is a multiple of 32.
        if ((h.data_offset + t.offset) % kTensorAlignment != 0) {
            fail(tw + " starts at file offset " + std::to_string(h.data_offset + t.offset) +
                 ", not a multiple of " + std::to_string(kTensorAlignment) + " (general.alignment " +
                 std::to_string(h.alignment) + ")");
        }
        // One-dimensional tensors (norms, biases, scales) are combined with F32 activations by
        // ggml's add/mul, which abort on any other type.
        if (t.ne[1] == 1 && t.ne[2] == 1 && t.ne[3] == 1 && t.type != GGML_TYPE_F32 && t.ne[0] > 0) {
            fail(tw + " is one-dimensional but of type " + ggml_type_name(static_cast<ggml_type>(t.type)) +
                 " (norm and bias vectors must be F32)");
        }
        const uint64_t room = h.data_offset > file_size ? 0 : file_size - h.data_offset;
        if (padded < nbytes || t.offset > room || nbytes > room - t.offset) {
            fail(tw + " (" + std::to_string(nbytes) + " bytes at data offset " + std::to_string(t.offset) +
                 ") ends past the end of the file (" + std::to_string(file_size) + " bytes, data from byte " +
                 std::to_string(h.data_offset) + ")");
        }
        expected = t.offset + padded;
    }
    return h;
}

// ------------------------------------------------------------------ metadata checks

bool get_u32(const Header & h, const std::string & key, uint32_t & out) {
    const Kv * kv = h.find(key);
    if (kv == nullptr || kv->type != T_UINT32) {
        return false;  // absent, or a type llama.cpp rejects itself with an exception
    }
    out = static_cast<uint32_t>(kv->scalar);
    return true;
}

// A per-layer value stored as a uint32 or an array of u32/i32 (llama.cpp's get_key_or_arr):
// the largest of the first n_layer entries; false when absent or not readable.
bool get_u32_or_arr_max(const Header & h, const std::string & key, uint32_t n_layer, uint32_t & out,
                        uint32_t * min_out = nullptr) {
    const Kv * kv = h.find(key);
    if (kv == nullptr) {
        return false;
    }
    if (kv->type == T_UINT32) {
        out = static_cast<uint32_t>(kv->scalar);
        if (min_out) {
            *min_out = out;
        }
        return true;
    }
    if (kv->type != T_ARRAY || (kv->arr_type != T_UINT32 && kv->arr_type != T_INT32) || !kv->arr_kept) {
        return false;
    }
    if (kv->n > kMaxLayers || kv->n != n_layer) {
        return false;  // llama.cpp throws on these itself
    }
    uint32_t mx = 0;
    uint32_t mn = std::numeric_limits<uint32_t>::max();
    for (uint64_t i = 0; i < kv->n; ++i) {
        uint32_t v;
        std::memcpy(&v, kv->arr.data() + i * 4, 4);
        mx = std::max(mx, v);
        mn = std::min(mn, v);
    }
    out = mx;
    if (min_out) {
        *min_out = kv->n ? mn : 0;
    }
    return true;
}

// Names llama.cpp reads as C strings: a NUL inside would silently cut them ("llama\0x"
// would load as "llama").
void check_identifiers(const Header & h) {
    for (const char * key : {"general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre"}) {
        const Kv * kv = h.find(key);
        if (kv != nullptr && kv->type == T_STRING && kv->str.find('\0') != std::string::npos) {
            fail(std::string(key) + " '" + printable(kv->str) + "' contains a NUL byte");
        }
    }
}

void check_vocab(const Header & h) {
    const Kv * model = h.find("tokenizer.ggml.model");
    const Kv * tokens = h.find("tokenizer.ggml.tokens");
    if (model != nullptr && model->type == T_STRING && (model->str == "none" || model->str == "no_vocab")) {
        std::string arch;
        if (const Kv * a = h.find("general.architecture"); a && a->type == T_STRING) {
            arch = a->str;
        }
        uint32_t n = 0;
        if (get_u32(h, arch + ".vocab_size", n) && n > kMaxDummyVocab) {
            fail("the model has no tokenizer and asks for " + std::to_string(n) + " placeholder tokens (" + arch +
                 ".vocab_size; at most " + std::to_string(kMaxDummyVocab) + ")");
        }
        return;
    }
    if (tokens == nullptr || tokens->type != T_ARRAY || tokens->arr_type != T_STRING) {
        return;  // llama.cpp reports a missing or mistyped token list itself
    }
    if (tokens->n == 0) {
        fail("tokenizer.ggml.tokens is empty");
    }
    if (tokens->n > uint64_t(std::numeric_limits<int32_t>::max())) {
        fail("tokenizer.ggml.tokens has " + std::to_string(tokens->n) + " entries (token ids are int32)");
    }
    // A WordPiece vocabulary has no byte tokens: llama.cpp aborts when it is asked for the
    // piece of a token typed BYTE (6) in one.
    if (model != nullptr && model->type == T_STRING && model->str == "bert") {
        const Kv * types = h.find("tokenizer.ggml.token_type");
        if (types != nullptr && types->type == T_ARRAY && types->arr_type == T_INT32 && types->arr_kept) {
            for (uint64_t i = 0; i < types->n; ++i) {
                int32_t v;
                std::memcpy(&v, types->arr.data() + i * 4, 4);
                if (v == 6) {
                    fail("token " + std::to_string(i) +
                         " is a byte token (token_type 6), which the 'bert' (WordPiece) tokenizer does not have");
                }
            }
        }
    }
    // llama.cpp maps text -> id and asserts that the map is as large as the list; empty
    // texts are renamed "[EMPTY_<id>]" first.
    std::unordered_set<std::string> seen;
    seen.reserve(tokens->strs.size());
    for (std::size_t i = 0; i < tokens->strs.size(); ++i) {
        // llama.cpp reads each text as a C string: it ends at the first NUL.
        const std::string t = tokens->strs[i].substr(0, tokens->strs[i].find('\0'));
        const std::string text = t.empty() ? "[EMPTY_" + std::to_string(i) + "]" : t;
        if (!seen.insert(text).second) {
            fail("tokenizer.ggml.tokens holds the text '" + printable(text) + "' twice (token " + std::to_string(i) +
                 ")");
        }
    }
}

void check_hparams(const Header & h) {
    const Kv * a = h.find("general.architecture");
    if (a == nullptr || a->type != T_STRING) {
        return;
    }
    const std::string & arch = a->str;
    if (arch == "clip") {
        return;
    }
    const std::string p = arch + ".";
    uint32_t n_layer = 0;
    if (!get_u32(h, p + "block_count", n_layer)) {
        return;
    }
    if (n_layer == 0 || n_layer > kMaxLayers) {
        fail(p + "block_count is " + std::to_string(n_layer) + " (must be 1 to " + std::to_string(kMaxLayers) + ")");
    }
    uint32_t v = 0;
    if (get_u32(h, p + "nextn_predict_layers", v) && v > n_layer) {
        fail(p + "nextn_predict_layers " + std::to_string(v) + " is more than block_count " + std::to_string(n_layer));
    }
    for (const char * k : {"posnet.block_count", "convnext.block_count"}) {
        if (get_u32(h, p + k, v) && v > n_layer) {
            fail(p + k + " " + std::to_string(v) + " is more than block_count " + std::to_string(n_layer));
        }
    }
    uint32_t n_expert = 0;
    uint32_t used_max = 0;
    uint32_t groups = 0;
    uint32_t group_used = 0;
    get_u32(h, p + "expert_count", n_expert);
    get_u32_or_arr_max(h, p + "expert_used_count", n_layer, used_max);
    get_u32(h, p + "expert_group_count", groups);
    get_u32(h, p + "expert_group_used_count", group_used);
    if (arch == "hunyuan-vl" || arch == "hunyuan-dense") {
        if (n_expert <= 1) {  // llama.cpp ignores the expert keys of these dense models
            n_expert = 0;
            used_max = 0;
        }
    }
    const std::string experts = "experts (" + p + "expert_count " + std::to_string(n_expert) +
                                ", expert_used_count " + std::to_string(used_max) + ", expert_group_count " +
                                std::to_string(groups) + ", expert_group_used_count " + std::to_string(group_used) + ")";
    if (n_expert > kMaxExperts) {
        fail("too many " + experts + "; at most " + std::to_string(kMaxExperts));
    }
    if (used_max > n_expert) {
        fail("inconsistent " + experts + ": more experts used than exist");
    }
    if (n_expert > 0) {
        if (used_max == 0) {
            fail("inconsistent " + experts + ": no expert used");
        }
        if (groups >= n_expert) {
            fail("inconsistent " + experts + ": as many groups as experts");
        }
        if (groups > 1 && (n_expert % groups != 0 || group_used == 0 || group_used >= groups)) {
            fail("inconsistent " + experts);
        }
    } else if (groups != 0) {
        fail("inconsistent " + experts + ": expert groups without experts");
    }
    if (const Kv * rs = h.find(p + "rope.scaling.type"); rs && rs->type == T_STRING) {
        static const std::set<std::string> known = {"none", "linear", "yarn", "longrope"};
        if (known.count(rs->str) == 0) {
            fail("unknown " + p + "rope.scaling.type '" + printable(rs->str) + "'");
        }
    }
    // Normalisation epsilons: ggml asserts eps >= 0 in every norm it computes.
    for (const char * k : {"attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"}) {
        const Kv * eps = h.find(p + k);
        if (eps != nullptr && eps->type == T_FLOAT32) {
            float v;
            const auto bits = static_cast<uint32_t>(eps->scalar);
            std::memcpy(&v, &bits, 4);
            if (!(v >= 0.0f) || v == std::numeric_limits<float>::infinity()) {
                fail(p + k + " is " + std::to_string(v) + " (must be a finite number >= 0)");
            }
        }
    }
    // Head counts: llama.cpp divides by them (n_embd / n_head, n_head / n_head_kv).
    uint32_t n_head = 0;
    uint32_t n_head_min = 0;
    const bool have_head = get_u32_or_arr_max(h, p + "attention.head_count", n_layer, n_head, &n_head_min);
    uint32_t n_head_kv = 0;
    uint32_t n_head_kv_min = 0;
    const bool have_head_kv = get_u32_or_arr_max(h, p + "attention.head_count_kv", n_layer, n_head_kv, &n_head_kv_min);
    if (have_head && n_head > 0) {
        uint32_t n_embd = 0;
        if (get_u32(h, p + "embedding_length", n_embd) && n_embd == 0) {
            fail(p + "embedding_length is 0");
        }
    }
    if (have_head && have_head_kv && n_head_min > 0 && n_head_kv_min == 0 && n_head_kv > 0) {
        fail(p + "attention.head_count_kv is 0 for some layers");
    }
}

// llama.cpp reads an override instead of the file's value whatever the file's type, and
// converts an integer override to the key's C++ type (uint32 for every key checked here).
void apply_overrides(Header & h, const std::vector<KvOverride> & overrides) {
    for (const auto & ov : overrides) {
        Kv kv;
        kv.key = ov.key;
        if (const auto * i = std::get_if<int64_t>(&ov.value)) {
            kv.type = T_UINT32;
            kv.scalar = static_cast<uint32_t>(*i);
        } else if (const auto * b = std::get_if<bool>(&ov.value)) {
            kv.type = T_BOOL;
            kv.scalar = *b ? 1 : 0;
        } else if (const auto * s = std::get_if<std::string>(&ov.value)) {
            kv.type = T_STRING;
            kv.str = *s;
        } else {
            kv.type = T_FLOAT32;
        }
        auto it = h.index.find(kv.key);
        if (it == h.index.end()) {
            h.index.emplace(kv.key, h.kvs.size());
            h.kvs.push_back(std::move(kv));
        } else {
            h.kvs[it->second] = std::move(kv);
        }
    }
}

struct FileCloser {
    void operator()(std::FILE * f) const { std::fclose(f); }
};

}  // namespace

uint32_t check_gguf(const std::string & path, const char * where, FileKind kind, const GgufCheck & what) {
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
    if (!f) {
        return 0;  // check_readable_file has reported why
    }
    const uint64_t size = file_size_of(f.get());
    try {
        Header h = parse(f.get(), size, what.metadata);
        if (what.overrides != nullptr) {
            apply_overrides(h, *what.overrides);
        }
        if (what.metadata) {
            check_identifiers(h);
            check_vocab(h);
            if (!what.vocab_only) {
                check_hparams(h);
            }
        }
        const Kv * split = h.find("split.count");
        return split != nullptr && split->type == T_UINT16 ? static_cast<uint32_t>(split->scalar) : 0;
    } catch (const Invalid & e) {
        const bool overridden = what.overrides != nullptr && !what.overrides->empty();
        throw_unusable(kind,
                       std::string("[") + where + "] '" + path + "' is not a valid GGUF file" +
                           (overridden ? " (with the given kv_overrides)" : "") + ": " + e.reason,
                       path);
    } catch (const std::bad_alloc &) {
        throw_unusable(kind, std::string("[") + where + "] '" + path + "': out of memory while reading its header", path);
    }
}

}  // namespace llamabind::detail
