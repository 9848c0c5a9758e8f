#include "llamabind/vocab.hpp"

#include <climits>
#include <exception>

#include "llamabind/errors.hpp"

namespace llamabind {

Vocab::Vocab(std::shared_ptr<llama_model> model)
    : model_(std::move(model)), vocab_(llama_model_get_vocab(model_.get())), n_tokens_(llama_vocab_n_tokens(vocab_)) {}

enum llama_vocab_type Vocab::type() const { return llama_vocab_type(vocab_); }

llama_token Vocab::bos() const { return llama_vocab_bos(vocab_); }
llama_token Vocab::eos() const { return llama_vocab_eos(vocab_); }
llama_token Vocab::eot() const { return llama_vocab_eot(vocab_); }
llama_token Vocab::sep() const { return llama_vocab_sep(vocab_); }
llama_token Vocab::nl() const { return llama_vocab_nl(vocab_); }
llama_token Vocab::pad() const { return llama_vocab_pad(vocab_); }
llama_token Vocab::mask() const { return llama_vocab_mask(vocab_); }
llama_token Vocab::fim_pre() const { return llama_vocab_fim_pre(vocab_); }
llama_token Vocab::fim_suf() const { return llama_vocab_fim_suf(vocab_); }
llama_token Vocab::fim_mid() const { return llama_vocab_fim_mid(vocab_); }
llama_token Vocab::fim_pad() const { return llama_vocab_fim_pad(vocab_); }
llama_token Vocab::fim_rep() const { return llama_vocab_fim_rep(vocab_); }
llama_token Vocab::fim_sep() const { return llama_vocab_fim_sep(vocab_); }
bool Vocab::add_bos() const { return llama_vocab_get_add_bos(vocab_); }
bool Vocab::add_eos() const { return llama_vocab_get_add_eos(vocab_); }
bool Vocab::add_sep() const { return llama_vocab_get_add_sep(vocab_); }

void Vocab::check_token(llama_token token, const char * where) const {
    if (token < 0 || token >= n_tokens_) {
        throw OutOfRange(std::string("[") + where + "] token " + std::to_string(token) +
                         " is outside the vocabulary (n_vocab=" + std::to_string(n_tokens_) + ")");
    }
}

void Vocab::check_tokens(const llama_token * tokens, std::size_t n, const char * where) const {
    for (std::size_t i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= n_tokens_) {
            throw OutOfRange(std::string("[") + where + "] token " + std::to_string(tokens[i]) + " at index " +
                             std::to_string(i) + " is outside the vocabulary (n_vocab=" + std::to_string(n_tokens_) +
                             ")");
        }
    }
}

// llama.cpp asserts (aborts) in tokenize, detokenize and the attribute lookups of a
// vocabulary without a tokenizer (tokenizer.ggml.model = "none").
void Vocab::check_tokenizer(const char * where) const {
    if (llama_vocab_type(vocab_) == LLAMA_VOCAB_TYPE_NONE) {
        throw InvalidArgument(std::string("[") + where + "] this model has no tokenizer (tokenizer.ggml.model is 'none')");
    }
}

std::string Vocab::text(llama_token token) const {
    check_token(token, "Vocab.text");
    const char * t = llama_vocab_get_text(vocab_, token);
    return t ? t : "";
}

float Vocab::score(llama_token token) const {
    check_token(token, "Vocab.score");
    return llama_vocab_get_score(vocab_, token);
}

llama_token_attr Vocab::attr(llama_token token) const {
    check_tokenizer("Vocab.attr");
    check_token(token, "Vocab.attr");
    return llama_vocab_get_attr(vocab_, token);
}

bool Vocab::is_eog(llama_token token) const {
    check_token(token, "Vocab.is_eog");
    return llama_vocab_is_eog(vocab_, token);
}

bool Vocab::is_control(llama_token token) const {
    check_tokenizer("Vocab.is_control");
    check_token(token, "Vocab.is_control");
    return llama_vocab_is_control(vocab_, token);
}

std::vector<llama_token> Vocab::tokenize(std::string_view text, bool add_special, bool parse_special) const {
    check_tokenizer("Vocab.tokenize");
    if (text.size() > static_cast<std::size_t>(INT32_MAX)) {
        throw InvalidArgument("[Vocab.tokenize] text of " + std::to_string(text.size()) +
                              " bytes is longer than llama.cpp accepts (2 GiB)");
    }
    const auto len = static_cast<int32_t>(text.size());
    // A token covers at least one byte, plus BOS/EOS/SEP when add_special.
    std::size_t guess = text.size() + 4;
    if (guess > static_cast<std::size_t>(INT32_MAX)) {
        guess = INT32_MAX;
    }
    std::vector<llama_token> tokens(guess);
    // llama.cpp's UTF-8 decoder throws std::invalid_argument for code points beyond Unicode.
    auto call = [&](std::vector<llama_token> & out) {
        try {
            return llama_tokenize(vocab_, text.data(), len, out.data(), static_cast<int32_t>(out.size()), add_special,
                                  parse_special);
        } catch (const std::exception & e) {
            throw InvalidArgument(std::string("[Vocab.tokenize] cannot tokenize this text: ") + e.what());
        }
    };
    int32_t n = call(tokens);
    if (n == INT32_MIN) {
        throw InvalidArgument("[Vocab.tokenize] the token count overflows int32");
    }
    if (n < 0) {
        tokens.resize(static_cast<std::size_t>(-static_cast<int64_t>(n)));
        n = call(tokens);
        if (n < 0) {
            throw Error("[Vocab.tokenize] llama_tokenize failed twice");
        }
    }
    tokens.resize(static_cast<std::size_t>(n));
    return tokens;
}

std::string Vocab::token_to_piece(llama_token token, int32_t lstrip, bool special) const {
    check_tokenizer("Vocab.token_to_piece");
    check_token(token, "Vocab.token_to_piece");
    if (lstrip < 0) {
        throw InvalidArgument("[Vocab.token_to_piece] lstrip must be >= 0, got " + std::to_string(lstrip));
    }
    std::string piece(32, '\0');
    // llama.cpp throws std::out_of_range for a byte token whose text is not '<0xXX>'.
    auto call = [&]() {
        try {
            return llama_token_to_piece(vocab_, token, piece.data(), static_cast<int32_t>(piece.size()), lstrip,
                                        special);
        } catch (const std::exception & e) {
            throw InvalidArgument("[Vocab.token_to_piece] token " + std::to_string(token) +
                                  " has no valid piece in this vocabulary: " + e.what());
        }
    };
    int32_t n = call();
    if (n < 0) {
        piece.resize(static_cast<std::size_t>(-static_cast<int64_t>(n)));
        n = call();
        if (n < 0) {
            throw Error("[Vocab.token_to_piece] llama_token_to_piece failed twice for token " + std::to_string(token));
        }
    }
    piece.resize(static_cast<std::size_t>(n));
    return piece;
}

std::string Vocab::detokenize(const llama_token * tokens, std::size_t n_tokens, bool remove_special,
                              bool unparse_special) const {
    if (n_tokens == 0) {
        return {};
    }
    if (n_tokens > static_cast<std::size_t>(INT32_MAX)) {
        throw InvalidArgument("[Vocab.detokenize] too many tokens");
    }
    check_tokens(tokens, n_tokens, "Vocab.detokenize");
    check_tokenizer("Vocab.detokenize");
    const auto n = static_cast<int32_t>(n_tokens);
    std::string text(n_tokens * 8 + 16, '\0');
    if (text.size() > static_cast<std::size_t>(INT32_MAX)) {
        text.resize(INT32_MAX);
    }
    auto call = [&]() {
        try {
            return llama_detokenize(vocab_, tokens, n, text.data(), static_cast<int32_t>(text.size()), remove_special,
                                    unparse_special);
        } catch (const std::exception & e) {
            throw InvalidArgument(std::string("[Vocab.detokenize] these tokens have no valid text in this vocabulary: ") +
                                  e.what());
        }
    };
    int32_t got = call();
    if (got < 0) {
        if (got == INT32_MIN) {
            throw InvalidArgument("[Vocab.detokenize] the text would be longer than 2 GiB");
        }
        text.resize(static_cast<std::size_t>(-static_cast<int64_t>(got)));
        got = call();
        if (got < 0) {
            throw Error("[Vocab.detokenize] llama_detokenize failed twice");
        }
    }
    text.resize(static_cast<std::size_t>(got));
    return text;
}

}  // namespace llamabind
