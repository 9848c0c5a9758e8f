#pragma once

// Drafters: what proposes tokens for speculative decoding (speculative.hpp) to verify. A
// smaller model with the target's vocabulary (ModelDrafter), prompt lookup over the tokens so
// far (NgramDrafter), or anything else that implements Drafter.

#include <cstdint>
#include <memory>
#include <vector>

#include "llama.h"

namespace llamabind {

class Context;
class Model;
class SamplerChain;

// Proposes tokens likely to follow a sequence. Drafts only change speed, never output: the
// target verifies every drafted token with its own sampler.
class Drafter {
public:
    virtual ~Drafter() = default;

    // Appends up to n_max tokens likely to follow `tokens` (the target's sequence so far, its
    // last token sampled but not yet evaluated) to `out`, which arrives empty. Proposing
    // fewer, or none, is always allowed.
    virtual void draft(const std::vector<llama_token> & tokens, int32_t n_max, std::vector<llama_token> & out) = 0;

    // A new sequence starts (or one resumes) with these tokens; the next draft() continues it.
    virtual void begin(const std::vector<llama_token> & /*tokens*/) {}

    // Whether drafting costs time per drafted token (a model decodes once per token) rather
    // than per call (a lookup). Speculator's adaptive mode budgets drafts accordingly.
    virtual bool cost_per_token() const { return false; }

    // Model evaluations the last draft() made (for the cost per token), and the tokens it
    // evaluated only to catch up with the sequence (the time of such a catch-up is not a
    // cost per drafted token; see last_catch_up_seconds).
    virtual int32_t last_decodes() const { return 0; }
    virtual double last_catch_up_seconds() const { return 0.0; }

    // What the last draft() learnt in hindsight while catching up: for consecutive generated
    // tokens, whether the drafter would have proposed each one after the tokens before it
    // (1) or not (0). Empty when it caught up with nothing (or cannot tell).
    virtual const std::vector<uint8_t> & last_hindsight() const { return no_hindsight_; }

private:
    std::vector<uint8_t> no_hindsight_;
};

// Throws InvalidArgument unless a draft model can propose tokens for `target`: the checks of
// llama.cpp's common/speculative.cpp (same vocabulary type, same BOS/EOS handling, sizes
// within 128 tokens, the same text for every token from id 5 on), with the first difference
// in the message.
void check_draft_vocab(const Model & target, const Model & draft);

// A smaller model with the target's vocabulary drafts greedily in its own context (sequence
// 0), which it keeps in step with the target's tokens: it evaluates only what it does not
// hold yet (the tokens accepted since its last draft) and removes the cells of tokens the
// target rejected.
//
//   auto draft_ctx = std::make_shared<llamabind::Context>(draft_model, params);
//   auto drafter = std::make_shared<llamabind::ModelDrafter>(draft_ctx, *target_model);
class ModelDrafter : public Drafter {
public:
    // Throws InvalidArgument when the vocabularies do not match (check_draft_vocab).
    // p_min > 0 stops a draft at the first token the draft model gives less than that
    // probability (llama.cpp's --draft-p-min); 0 drafts n_max tokens every time.
    // max_catch_up > 0: when the context lags behind by more than that many tokens generated
    // since begin() (drafting was paused), it starts over from the last max_catch_up tokens
    // instead of evaluating them all; 0 always catches up in full. The tokens given to
    // begin() (the prompt) are always evaluated in full.
    ModelDrafter(std::shared_ptr<Context> ctx, const Model & target, float p_min = 0.0f, int32_t max_catch_up = 0);
    ~ModelDrafter() override;

    void draft(const std::vector<llama_token> & tokens, int32_t n_max, std::vector<llama_token> & out) override;
    void begin(const std::vector<llama_token> & tokens) override { begin_len_ = tokens.size(); }
    bool cost_per_token() const override { return true; }
    int32_t last_decodes() const override { return last_decodes_; }
    double last_catch_up_seconds() const override { return last_catch_up_s_; }
    // When max_catch_up > 0 (the adaptive mode), a catch-up over generated tokens compares
    // the draft model's greedy choice at each of them with the token that came.
    const std::vector<uint8_t> & last_hindsight() const override { return hindsight_; }

    const std::shared_ptr<Context> & context() const noexcept { return ctx_; }
    // The tokens the draft context holds in sequence 0.
    const std::vector<llama_token> & held() const noexcept { return held_; }
    void set_max_catch_up(int32_t n) noexcept { max_catch_up_ = n; }

private:
    void sync(const std::vector<llama_token> & tokens);
    float top_probability() const;

    std::shared_ptr<Context> ctx_;
    std::unique_ptr<SamplerChain> greedy_;
    float p_min_;
    int32_t max_catch_up_;
    int32_t n_vocab_;
    std::vector<llama_token> held_;  // evaluated into the draft context, in order
    std::size_t offset_ = 0;         // held_[0]'s index in the sequence (after a windowed restart)
    std::size_t begin_len_ = 0;      // tokens given to begin()
    int32_t last_decodes_ = 0;
    double last_catch_up_s_ = 0.0;
    std::vector<uint8_t> hindsight_;
};

// Prompt lookup: finds the latest earlier occurrence of the sequence's last n tokens (n from
// max_ngram down to min_ngram) and proposes what followed it. While the sequence keeps
// reproducing one earlier stretch (an edit of the prompt, code quoted back), it follows that
// stretch instead of searching again.
class NgramDrafter : public Drafter {
public:
    // Throws InvalidArgument unless 1 <= min_ngram <= max_ngram.
    explicit NgramDrafter(int32_t max_ngram = 3, int32_t min_ngram = 1);

    void draft(const std::vector<llama_token> & tokens, int32_t n_max, std::vector<llama_token> & out) override;

    int32_t max_ngram() const noexcept { return max_ngram_; }
    int32_t min_ngram() const noexcept { return min_ngram_; }

private:
    int32_t max_ngram_;
    int32_t min_ngram_;
    // Where the last draft was copied from: tokens[source_] was proposed to follow the
    // sequence when it had `length_` tokens.
    std::size_t source_ = 0;
    std::size_t length_ = 0;
};

}  // namespace llamabind
