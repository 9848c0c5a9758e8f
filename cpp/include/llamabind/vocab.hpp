#pragma once

// Vocab: a view of a model's vocabulary that keeps the model alive.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llama.h"

namespace llamabind {

// Obtain one with Model::vocab(). Cheap to copy; every copy shares the model.
//
//   llamabind::Vocab vocab = model->vocab();
//   std::vector<llama_token> ids = vocab.tokenize("Hello world");
//   std::string text = vocab.detokenize(ids);        // "Hello world"
class Vocab {
public:
    explicit Vocab(std::shared_ptr<llama_model> model);

    // The raw llama_vocab (valid while this Vocab, or any owner of the model, lives).
    const llama_vocab * get() const noexcept { return vocab_; }
    const std::shared_ptr<llama_model> & model_handle() const noexcept { return model_; }

    // Number of tokens and the tokenizer family (SPM, BPE, WPM, UGM, RWKV, ...).
    int32_t n_tokens() const noexcept { return n_tokens_; }
    enum llama_vocab_type type() const;

    // Special tokens; LLAMA_TOKEN_NULL (-1) when the model has none of that kind. The fim_*
    // tokens are fill-in-the-middle markers (prefix, suffix, middle, pad, repo, separator).
    llama_token bos() const;
    llama_token eos() const;
    llama_token eot() const;
    llama_token sep() const;
    llama_token nl() const;
    llama_token pad() const;
    llama_token mask() const;
    llama_token fim_pre() const;
    llama_token fim_suf() const;
    llama_token fim_mid() const;
    llama_token fim_pad() const;
    llama_token fim_rep() const;
    llama_token fim_sep() const;
    // Whether tokenize(add_special=true) adds BOS / EOS / SEP, as the model asks.
    bool add_bos() const;
    bool add_eos() const;
    bool add_sep() const;

    // Per token: its text in the vocabulary, its score, its attribute flags, whether it ends
    // generation (EOS, EOT, ...) and whether it is a control token. Throw OutOfRange for ids
    // outside the vocabulary.
    std::string text(llama_token token) const;
    float score(llama_token token) const;
    llama_token_attr attr(llama_token token) const;
    bool is_eog(llama_token token) const;
    bool is_control(llama_token token) const;

    // Text to tokens, any length. add_special adds BOS/EOS as the model asks;
    // parse_special turns special-token text (e.g. "<|im_start|>") into the token.
    std::vector<llama_token> tokenize(std::string_view text, bool add_special = true,
                                      bool parse_special = false) const;

    // The bytes of one token, any length. lstrip skips up to that many leading spaces;
    // special renders control tokens. The result may be an incomplete UTF-8 sequence.
    std::string token_to_piece(llama_token token, int32_t lstrip = 0, bool special = false) const;

    // Tokens back to text (bytes), any length.
    std::string detokenize(const llama_token * tokens, std::size_t n_tokens, bool remove_special = false,
                           bool unparse_special = false) const;
    std::string detokenize(const std::vector<llama_token> & tokens, bool remove_special = false,
                           bool unparse_special = false) const {
        return detokenize(tokens.data(), tokens.size(), remove_special, unparse_special);
    }

    // Throws OutOfRange naming `where` unless 0 <= token < n_tokens().
    void check_token(llama_token token, const char * where) const;
    void check_tokens(const llama_token * tokens, std::size_t n, const char * where) const;
    // Throws InvalidArgument naming `where` when the vocabulary has no tokenizer (type NONE).
    void check_tokenizer(const char * where) const;

private:
    std::shared_ptr<llama_model> model_;
    const llama_vocab * vocab_;
    int32_t n_tokens_;
};

}  // namespace llamabind
