#pragma once

// SamplerChain: an owned llama_sampler chain. Samplers added to the chain belong to it.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace llamabind {

class Context;
class Vocab;

// A sampler written in C++ (or by a binding): apply() edits the candidates in place and may
// set `selected`; the others are optional.
class CustomSampler {
public:
    virtual ~CustomSampler() = default;
    virtual std::string name() const { return "custom"; }
    virtual void apply(llama_token_data_array & candidates) = 0;
    virtual void accept(llama_token /*token*/) {}
    virtual void reset() {}
    // A copy for SamplerChain::clone(); returning null makes the chain uncloneable.
    virtual std::unique_ptr<CustomSampler> clone() const { return nullptr; }
};

// Picks the next token from a context's logits through a chain of samplers, applied in the
// order they were added; the last one selects (greedy, dist, mirostat, adaptive_p).
//
//   llamabind::SamplerChain sampler;
//   sampler.add_penalties(vocab.n_tokens(), 64, 1.1f, 0.0f, 0.0f)
//          .add_top_k(40).add_top_p(0.95f).add_temp(0.8f).add_dist(42);
//   llama_token t = sampler.sample(ctx);             // also accepted into the chain's state
class SamplerChain {
public:
    // no_perf = false makes llama.cpp time the chain (perf()).
    explicit SamplerChain(bool no_perf = true);
    SamplerChain(SamplerChain &&) noexcept = default;
    SamplerChain & operator=(SamplerChain &&) noexcept = default;

    // Frees the chain and its samplers; later calls throw Closed. Idempotent.
    void close() noexcept;
    bool closed() const noexcept { return !chain_; }

    // The raw llama_sampler chain (owned by this object).
    llama_sampler * get() const;

    // Every sampler llama.cpp ships. Each returns *this so calls can be chained.
    SamplerChain & add_greedy();
    SamplerChain & add_dist(uint32_t seed = LLAMA_DEFAULT_SEED);
    SamplerChain & add_top_k(int32_t k);
    SamplerChain & add_top_p(float p, std::size_t min_keep = 1);
    SamplerChain & add_min_p(float p, std::size_t min_keep = 1);
    SamplerChain & add_typical(float p, std::size_t min_keep = 1);
    SamplerChain & add_temp(float t);
    SamplerChain & add_temp_ext(float t, float delta, float exponent);
    SamplerChain & add_xtc(float p, float t, std::size_t min_keep = 1, uint32_t seed = LLAMA_DEFAULT_SEED);
    SamplerChain & add_top_n_sigma(float n);
    SamplerChain & add_mirostat(int32_t n_vocab, uint32_t seed, float tau, float eta, int32_t m = 100);
    SamplerChain & add_mirostat_v2(uint32_t seed, float tau, float eta);
    // Throws GrammarError (with llama.cpp's reason) when the grammar does not parse.
    SamplerChain & add_grammar(const Vocab & vocab, const std::string & grammar,
                               const std::string & root = "root");
    SamplerChain & add_grammar_lazy(const Vocab & vocab, const std::string & grammar, const std::string & root,
                                    const std::vector<std::string> & trigger_patterns,
                                    const std::vector<llama_token> & trigger_tokens);
    SamplerChain & add_penalties(int32_t n_vocab, int32_t last_n, float repeat, float freq, float present);
    SamplerChain & add_dry(const Vocab & vocab, float multiplier, float base, int32_t allowed_length,
                           int32_t penalty_last_n, const std::vector<std::string> & seq_breakers);
    SamplerChain & add_adaptive_p(float target, float decay, uint32_t seed = LLAMA_DEFAULT_SEED);
    SamplerChain & add_logit_bias(int32_t n_vocab, const std::vector<std::pair<llama_token, float>> & biases);
    SamplerChain & add_infill(const Vocab & vocab);
    SamplerChain & add_custom(std::unique_ptr<CustomSampler> sampler);

    // Whether a CustomSampler is in the chain (bindings keep the GIL while sampling then).
    bool has_custom() const noexcept { return n_custom_ > 0; }

    // Number of samplers and their llama.cpp names ("top-k", "temp", ...).
    int32_t size() const;
    std::string name(int32_t i) const;
    std::vector<std::string> names() const;
    // Removes sampler i from the chain and frees it.
    void remove(int32_t i);

    // Samples from the logits at idx of ctx's last decode (an index into the last batch, or
    // negative from the last output, as llama_get_logits_ith takes it) and accepts the token.
    // Throws OutOfRange for an index without logits and InvalidArgument when the chain
    // selects nothing.
    llama_token sample(Context & ctx, int32_t idx = -1);
    // Like sample(), for a caller that already holds ctx.mutex().
    llama_token sample_locked(Context & ctx, int32_t idx);

    // accept: feed a token chosen elsewhere to the stateful samplers (penalties, grammar,
    // DRY, mirostat). apply: run the chain on candidates without selecting through a
    // context. reset: forget accepted tokens and restart the random state. clone: an
    // independent copy with the same state (throws InvalidArgument for custom samplers that
    // cannot be cloned).
    void accept(llama_token token);
    void apply(llama_token_data_array & candidates);
    void reset();
    SamplerChain clone() const;
    // The seed of the last sampler that has one, LLAMA_DEFAULT_SEED otherwise.
    uint32_t seed() const;

    // llama.cpp's timings of the chain (needs no_perf = false).
    llama_perf_sampler_data perf() const;
    void perf_reset();

private:
    void add_owned(llama_sampler * sampler, const char * what);
    void keep_alive(const Vocab & vocab);

    struct Deleter {
        void operator()(llama_sampler * s) const noexcept { llama_sampler_free(s); }
    };
    std::unique_ptr<llama_sampler, Deleter> chain_;
    // Samplers that read a vocabulary (grammar, dry, infill) keep its model alive.
    std::vector<std::shared_ptr<llama_model>> models_;
    int32_t vocab_limit_ = -1;  // smallest n_vocab seen, to check accepted tokens
    std::vector<llama_token_data> candidates_;  // reused by sample()
    int32_t n_custom_ = 0;
    // What each logit-bias sampler this chain created adds (llama.h cannot read it back), so
    // sample() can pick greedily under a bias without a candidate array. Keyed by the sampler.
    struct BiasTable {
        const llama_sampler * sampler = nullptr;
        std::vector<llama_token> tokens;                // distinct, ascending
        std::vector<std::vector<float>> biases;         // per token, in the order given
    };
    std::vector<BiasTable> bias_tables_;
};

}  // namespace llamabind
