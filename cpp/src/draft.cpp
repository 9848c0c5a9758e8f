#include "llamabind/draft.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "llamabind/context.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/model.hpp"
#include "llamabind/sampler.hpp"
#include "llamabind/vocab.hpp"

namespace llamabind {

namespace {

// llama.cpp's limits (common/speculative.cpp): vocabularies may differ in size by this much,
// and token texts are compared from this id on (the first ids are special tokens that models
// of one family are allowed to name differently).
constexpr int32_t kVocabMaxSizeDifference = 128;
constexpr int32_t kVocabCheckStartTokenId = 5;
// Hindsight compares the draft model's choices only where it has at least this many tokens
// of context (a window restarted after a pause starts with none).
constexpr std::size_t kHindsightContext = 16;

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void check_draft_vocab(const Model & target, const Model & draft) {
    const Vocab vt = target.vocab();
    const Vocab vd = draft.vocab();
    const std::string head = "[ModelDrafter] the draft model " + draft.path() + " cannot draft for " + target.path() + ": ";
    if (vt.type() != vd.type()) {
        throw InvalidArgument(head + "its vocabulary type (" + std::to_string(static_cast<int>(vd.type())) +
                              ") is not the target's (" + std::to_string(static_cast<int>(vt.type())) + ")");
    }
    if (vt.add_bos() != vd.add_bos() || (vt.add_bos() && vt.bos() != vd.bos())) {
        throw InvalidArgument(head + "BOS differs (add_bos " + std::to_string(vd.add_bos()) + ", id " +
                              std::to_string(vd.bos()) + " in the draft; add_bos " + std::to_string(vt.add_bos()) +
                              ", id " + std::to_string(vt.bos()) + " in the target)");
    }
    if (vt.add_eos() != vd.add_eos() || (vt.add_eos() && vt.eos() != vd.eos())) {
        throw InvalidArgument(head + "EOS differs (add_eos " + std::to_string(vd.add_eos()) + ", id " +
                              std::to_string(vd.eos()) + " in the draft; add_eos " + std::to_string(vt.add_eos()) +
                              ", id " + std::to_string(vt.eos()) + " in the target)");
    }
    const int32_t nt = vt.n_tokens();
    const int32_t nd = vd.n_tokens();
    if (std::abs(nt - nd) > kVocabMaxSizeDifference) {
        throw InvalidArgument(head + "its vocabulary has " + std::to_string(nd) + " tokens, the target's " +
                              std::to_string(nt) + " (llama.cpp allows a difference of at most " +
                              std::to_string(kVocabMaxSizeDifference) + ")");
    }
    for (int32_t i = kVocabCheckStartTokenId; i < std::min(nt, nd); ++i) {
        const char * a = llama_vocab_get_text(vt.get(), i);
        const char * b = llama_vocab_get_text(vd.get(), i);
        if (std::strcmp(a ? a : "", b ? b : "") != 0) {
            throw InvalidArgument(head + "token " + std::to_string(i) + " is '" + (b ? b : "") + "' in the draft and '" +
                                  (a ? a : "") + "' in the target");
        }
    }
}

ModelDrafter::ModelDrafter(std::shared_ptr<Context> ctx, const Model & target, float p_min, int32_t max_catch_up)
    : ctx_(std::move(ctx)), p_min_(p_min), max_catch_up_(max_catch_up) {
    if (!ctx_) {
        throw InvalidArgument("[ModelDrafter] no draft context given");
    }
    if (!(p_min >= 0.0f && p_min <= 1.0f)) {
        throw InvalidArgument("[ModelDrafter] p_min must be in [0, 1], got " + std::to_string(p_min));
    }
    if (max_catch_up < 0) {
        throw InvalidArgument("[ModelDrafter] max_catch_up must be >= 0, got " + std::to_string(max_catch_up));
    }
    if (ctx_->embeddings_enabled()) {
        throw InvalidArgument("[ModelDrafter] the draft context computes embeddings; create it without embeddings");
    }
    check_draft_vocab(target, *ctx_->model());
    n_vocab_ = ctx_->n_vocab();
    greedy_ = std::make_unique<SamplerChain>();
    greedy_->add_greedy();
    ctx_->seq_rm(0, -1, -1);
}

ModelDrafter::~ModelDrafter() = default;

// The probability the draft model gives its most likely next token.
float ModelDrafter::top_probability() const {
    const float * logits = ctx_->logits_ith(-1);
    const float top = *std::max_element(logits, logits + n_vocab_);
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab_; ++i) {
        sum += std::exp(static_cast<double>(logits[i] - top));
    }
    return static_cast<float>(1.0 / sum);
}

// Makes the draft context hold `tokens` (from offset_ on) with the last one's logits as its
// last output, evaluating only what it lacks.
void ModelDrafter::sync(const std::vector<llama_token> & tokens) {
    const std::size_t n = tokens.size();
    std::size_t common = 0;
    if (offset_ < n) {
        while (common < held_.size() && offset_ + common < n && held_[common] == tokens[offset_ + common]) {
            ++common;
        }
    }
    if (common == 0 && offset_ > 0) {
        offset_ = 0;  // a window that no longer matches: start over from the beginning
    }
    if (offset_ + common == n) {
        --common;  // evaluate the last token again: its logits are needed
    }
    const std::size_t frontier = offset_ + common;
    if (max_catch_up_ > 0 && common > 0 && frontier >= begin_len_ &&
        n - frontier > static_cast<std::size_t>(max_catch_up_)) {
        // Drafting was paused for a while: start over from the recent tokens.
        common = 0;
        offset_ = n - static_cast<std::size_t>(max_catch_up_);
    }
    if (common < held_.size()) {
        if (!ctx_->seq_rm(0, static_cast<llama_pos>(common), -1)) {
            ctx_->seq_rm(0, -1, -1);
            common = 0;
            offset_ = 0;
        }
        held_.resize(common);
    }
    const std::size_t from = offset_ + common;
    const std::size_t count = n - from;
    // Rows from `lo` on are compared in hindsight: row i predicts tokens[from + i + 1], a
    // generated token, with kHindsightContext tokens or more before it.
    std::size_t lo = count;
    if (max_catch_up_ > 0 && count > 2) {
        const std::size_t first_generated = begin_len_ > from + 1 ? begin_len_ - from - 1 : 0;
        const std::size_t enough_context = kHindsightContext > common + 1 ? kHindsightContext - common - 1 : 0;
        lo = std::max(first_generated, enough_context);
        if (lo + 1 >= count || count - lo > static_cast<std::size_t>(ctx_->n_batch())) {
            lo = count;
        }
    }
    hindsight_.clear();
    if (lo < count) {
        if (lo > 0) {
            ctx_->decode_tokens(tokens.data() + from, lo, static_cast<llama_pos>(common));
        }
        ctx_->decode_tokens(tokens.data() + from + lo, count - lo, static_cast<llama_pos>(common + lo), 0, true);
        for (std::size_t i = 0; i + 1 < count - lo; ++i) {
            const float * row = ctx_->logits_ith(static_cast<int32_t>(i));
            const auto best = static_cast<llama_token>(std::max_element(row, row + n_vocab_) - row);
            hindsight_.push_back(best == tokens[from + lo + i + 1] ? 1 : 0);
        }
    } else {
        ctx_->decode_tokens(tokens.data() + from, count, static_cast<llama_pos>(common));
    }
    held_.insert(held_.end(), tokens.begin() + static_cast<std::ptrdiff_t>(from), tokens.end());
    last_decodes_ = 1;
}

void ModelDrafter::draft(const std::vector<llama_token> & tokens, int32_t n_max, std::vector<llama_token> & out) {
    last_decodes_ = 0;
    last_catch_up_s_ = 0.0;
    hindsight_.clear();
    if (tokens.empty() || n_max <= 0) {
        return;
    }
    for (llama_token t : tokens) {
        if (t < 0 || t >= n_vocab_) {
            return;  // a token the draft model does not have (vocabularies may differ a little)
        }
    }
    const auto t0 = std::chrono::steady_clock::now();
    const std::size_t before = held_.size() + offset_;
    sync(tokens);
    if (tokens.size() > before + 2) {
        // More than the usual one or two new tokens: a catch-up, not a cost of this draft.
        last_catch_up_s_ = seconds_since(t0);
        last_decodes_ = 0;
    }
    const auto room = static_cast<int64_t>(ctx_->n_ctx()) - static_cast<int64_t>(held_.size());
    n_max = static_cast<int32_t>(std::min<int64_t>(n_max, room));
    for (int32_t i = 0; i < n_max; ++i) {
        if (p_min_ > 0.0f && top_probability() < p_min_) {
            break;
        }
        const llama_token t = greedy_->sample(*ctx_, -1);
        out.push_back(t);
        if (i + 1 == n_max) {
            break;
        }
        ctx_->decode_tokens(&t, 1, static_cast<llama_pos>(held_.size()));
        held_.push_back(t);
        ++last_decodes_;
    }
}

NgramDrafter::NgramDrafter(int32_t max_ngram, int32_t min_ngram) : max_ngram_(max_ngram), min_ngram_(min_ngram) {
    if (min_ngram < 1 || max_ngram < min_ngram) {
        throw InvalidArgument("[NgramDrafter] need 1 <= min_ngram <= max_ngram, got min_ngram=" +
                              std::to_string(min_ngram) + ", max_ngram=" + std::to_string(max_ngram));
    }
}

void NgramDrafter::draft(const std::vector<llama_token> & tokens, int32_t n_max, std::vector<llama_token> & out) {
    const std::size_t n = tokens.size();
    if (n_max <= 0 || n < 2) {
        length_ = 0;
        return;
    }
    auto propose = [&](std::size_t from) {
        const std::size_t end = std::min(n, from + static_cast<std::size_t>(n_max));
        out.assign(tokens.begin() + static_cast<std::ptrdiff_t>(from), tokens.begin() + static_cast<std::ptrdiff_t>(end));
        source_ = from;
        length_ = n;
    };
    // Still copying the stretch the last draft came from: the tokens since then repeat it.
    if (length_ > 0 && length_ < n && source_ + (n - length_) < n) {
        bool follows = true;
        for (std::size_t j = 0; j < n - length_ && follows; ++j) {
            follows = tokens[source_ + j] == tokens[length_ + j];
        }
        if (follows) {
            propose(source_ + (n - length_));
            return;
        }
    }
    length_ = 0;
    for (int32_t size = std::min<int32_t>(max_ngram_, static_cast<int32_t>(n) - 1); size >= min_ngram_; --size) {
        const auto m = static_cast<std::size_t>(size);
        const llama_token * tail = tokens.data() + (n - m);
        // Latest occurrence first, the tail itself excluded.
        for (std::size_t start = n - m; start-- > 0;) {
            if (tokens[start] == tail[0] && std::equal(tail, tail + m, tokens.begin() + static_cast<std::ptrdiff_t>(start))) {
                propose(start + m);
                return;
            }
        }
    }
}

}  // namespace llamabind
