#include "llamabind/sampler.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <functional>
#include <mutex>

#ifdef _WIN32
#include <io.h>
#define LB_DUP _dup
#define LB_DUP2 _dup2
#define LB_CLOSE _close
#define LB_FILENO _fileno
#else
#include <unistd.h>
#define LB_DUP dup
#define LB_DUP2 dup2
#define LB_CLOSE close
#define LB_FILENO fileno
#endif

#include "detail.hpp"
#include "llamabind/backend.hpp"
#include "llamabind/context.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/vocab.hpp"

namespace llamabind {

namespace {

// llama_sampler_i over a CustomSampler owned through the sampler's ctx pointer.
CustomSampler * custom_of(const llama_sampler * s) { return static_cast<CustomSampler *>(s->ctx); }

const char * custom_name(const llama_sampler * s) {
    // llama.cpp only prints the name; a stable pointer is all it needs.
    thread_local std::string name;
    name = custom_of(s)->name();
    return name.c_str();
}

void custom_accept(llama_sampler * s, llama_token token) { custom_of(s)->accept(token); }
void custom_apply(llama_sampler * s, llama_token_data_array * cur_p) { custom_of(s)->apply(*cur_p); }
void custom_reset(llama_sampler * s) { custom_of(s)->reset(); }
llama_sampler * custom_clone(const llama_sampler * s);
void custom_free(llama_sampler * s) { delete custom_of(s); }

llama_sampler_i make_custom_iface() {
    llama_sampler_i iface{};
    iface.name = custom_name;
    iface.accept = custom_accept;
    iface.apply = custom_apply;
    iface.reset = custom_reset;
    iface.clone = custom_clone;
    iface.free = custom_free;
    return iface;
}

llama_sampler_i g_custom_iface = make_custom_iface();

llama_sampler * custom_clone(const llama_sampler * s) {
    std::unique_ptr<CustomSampler> copy = custom_of(s)->clone();
    if (!copy) {
        return nullptr;
    }
    return llama_sampler_init(&g_custom_iface, copy.release());
}

// llama.cpp's grammar parser reports why a grammar is invalid with fprintf(stderr) rather
// than its logger. Capture file descriptor 2 for the call so the reason can go into the
// exception (and does not leak onto the terminal). Serialised: the descriptor is global.
std::mutex g_stderr_mutex;

std::string run_capturing_stderr(const std::function<void()> & fn) {
    std::lock_guard<std::mutex> lock(g_stderr_mutex);
    std::fflush(stderr);
    FILE * tmp = std::tmpfile();
    const int saved = tmp ? LB_DUP(LB_FILENO(stderr)) : -1;
    if (saved < 0) {
        if (tmp) {
            std::fclose(tmp);
        }
        fn();
        return {};
    }
    LB_DUP2(LB_FILENO(tmp), LB_FILENO(stderr));
    auto restore = [&] {
        std::fflush(stderr);
        LB_DUP2(saved, LB_FILENO(stderr));
        LB_CLOSE(saved);
    };
    try {
        fn();
    } catch (...) {
        restore();
        std::fclose(tmp);
        throw;
    }
    restore();
    std::string out;
    std::rewind(tmp);
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), tmp)) > 0 && out.size() < (1u << 20)) {
        out.append(buf, n);
    }
    std::fclose(tmp);
    return out;
}

// "parse: error parsing grammar: <reason>\n\n<grammar>" -> "<reason>"
std::string grammar_reason(const std::string & captured) {
    const std::string marker = "error parsing grammar: ";
    const auto at = captured.find(marker);
    if (at == std::string::npos) {
        return {};
    }
    const auto start = at + marker.size();
    return captured.substr(start, captured.find('\n', start) - start);
}

llama_sampler * init_grammar_with_reason(const std::function<llama_sampler *()> & init, const char * where) {
    clear_last_error_log();
    llama_sampler * s = nullptr;
    const std::string captured = run_capturing_stderr([&] { s = init(); });
    if (s != nullptr) {
        return s;
    }
    std::string reason = grammar_reason(captured);
    std::string message = std::string("[SamplerChain.") + where + "] invalid grammar";
    if (!reason.empty()) {
        throw GrammarError(message + ": " + reason);
    }
    throw GrammarError(detail::with_reason(message));
}

}  // namespace

SamplerChain::SamplerChain(bool no_perf) {
    llama_sampler_chain_params params = llama_sampler_chain_default_params();
    params.no_perf = no_perf;
    chain_.reset(llama_sampler_chain_init(params));
    if (!chain_) {
        throw Error("[SamplerChain] llama_sampler_chain_init failed");
    }
}

void SamplerChain::close() noexcept {
    chain_.reset();
    models_.clear();
    bias_tables_.clear();
    n_custom_ = 0;
}

llama_sampler * SamplerChain::get() const {
    if (!chain_) {
        throw Closed("[SamplerChain] the sampler chain is closed");
    }
    return chain_.get();
}

void SamplerChain::add_owned(llama_sampler * sampler, const char * what) {
    llama_sampler * chain = get();
    if (sampler == nullptr) {
        throw InvalidArgument(detail::with_reason(std::string("[SamplerChain.") + what + "] llama.cpp refused the parameters"));
    }
    llama_sampler_chain_add(chain, sampler);
}

void SamplerChain::keep_alive(const Vocab & vocab) {
    // Vocab holds its model; remembering the model here keeps vocab-reading samplers valid.
    models_.push_back(vocab.model_handle());
    if (vocab_limit_ < 0 || vocab.n_tokens() < vocab_limit_) {
        vocab_limit_ = vocab.n_tokens();
    }
}

namespace {

void check_prob(float p, const char * what) {
    if (!(p >= 0.0f && p <= 1.0f)) {
        throw InvalidArgument(std::string("[SamplerChain.") + what + "] p must be in [0, 1], got " + std::to_string(p));
    }
}

void check_n_vocab(int32_t n_vocab, const char * what) {
    if (n_vocab <= 0) {
        throw InvalidArgument(std::string("[SamplerChain.") + what + "] n_vocab must be > 0");
    }
}

}  // namespace

SamplerChain & SamplerChain::add_greedy() {
    add_owned(llama_sampler_init_greedy(), "add_greedy");
    return *this;
}

SamplerChain & SamplerChain::add_dist(uint32_t seed) {
    add_owned(llama_sampler_init_dist(seed), "add_dist");
    return *this;
}

SamplerChain & SamplerChain::add_top_k(int32_t k) {
    add_owned(llama_sampler_init_top_k(k), "add_top_k");
    return *this;
}

SamplerChain & SamplerChain::add_top_p(float p, std::size_t min_keep) {
    check_prob(p, "add_top_p");
    add_owned(llama_sampler_init_top_p(p, min_keep), "add_top_p");
    return *this;
}

SamplerChain & SamplerChain::add_min_p(float p, std::size_t min_keep) {
    check_prob(p, "add_min_p");
    add_owned(llama_sampler_init_min_p(p, min_keep), "add_min_p");
    return *this;
}

SamplerChain & SamplerChain::add_typical(float p, std::size_t min_keep) {
    check_prob(p, "add_typical");
    add_owned(llama_sampler_init_typical(p, min_keep), "add_typical");
    return *this;
}

SamplerChain & SamplerChain::add_temp(float t) {
    add_owned(llama_sampler_init_temp(t), "add_temp");
    return *this;
}

SamplerChain & SamplerChain::add_temp_ext(float t, float delta, float exponent) {
    add_owned(llama_sampler_init_temp_ext(t, delta, exponent), "add_temp_ext");
    return *this;
}

SamplerChain & SamplerChain::add_xtc(float p, float t, std::size_t min_keep, uint32_t seed) {
    check_prob(p, "add_xtc");
    add_owned(llama_sampler_init_xtc(p, t, min_keep, seed), "add_xtc");
    return *this;
}

SamplerChain & SamplerChain::add_top_n_sigma(float n) {
    add_owned(llama_sampler_init_top_n_sigma(n), "add_top_n_sigma");
    return *this;
}

SamplerChain & SamplerChain::add_mirostat(int32_t n_vocab, uint32_t seed, float tau, float eta, int32_t m) {
    check_n_vocab(n_vocab, "add_mirostat");
    if (m <= 0) {
        throw InvalidArgument("[SamplerChain.add_mirostat] m must be > 0");
    }
    add_owned(llama_sampler_init_mirostat(n_vocab, seed, tau, eta, m), "add_mirostat");
    return *this;
}

SamplerChain & SamplerChain::add_mirostat_v2(uint32_t seed, float tau, float eta) {
    add_owned(llama_sampler_init_mirostat_v2(seed, tau, eta), "add_mirostat_v2");
    return *this;
}

SamplerChain & SamplerChain::add_grammar(const Vocab & vocab, const std::string & grammar, const std::string & root) {
    get();
    llama_sampler * s = init_grammar_with_reason(
        [&] { return llama_sampler_init_grammar(vocab.get(), grammar.c_str(), root.c_str()); }, "add_grammar");
    llama_sampler_chain_add(chain_.get(), s);
    keep_alive(vocab);
    return *this;
}

SamplerChain & SamplerChain::add_grammar_lazy(const Vocab & vocab, const std::string & grammar, const std::string & root,
                                              const std::vector<std::string> & trigger_patterns,
                                              const std::vector<llama_token> & trigger_tokens) {
    get();
    vocab.check_tokens(trigger_tokens.data(), trigger_tokens.size(), "SamplerChain.add_grammar_lazy");
    std::vector<const char *> patterns;
    for (const auto & p : trigger_patterns) {
        patterns.push_back(p.c_str());
    }
    llama_sampler * s = init_grammar_with_reason(
        [&] {
            return llama_sampler_init_grammar_lazy_patterns(vocab.get(), grammar.c_str(), root.c_str(),
                                                            patterns.data(), patterns.size(), trigger_tokens.data(),
                                                            trigger_tokens.size());
        },
        "add_grammar_lazy");
    llama_sampler_chain_add(chain_.get(), s);
    keep_alive(vocab);
    return *this;
}

SamplerChain & SamplerChain::add_penalties(int32_t n_vocab, int32_t last_n, float repeat, float freq, float present) {
    check_n_vocab(n_vocab, "add_penalties");
    if (last_n < 0) {
        // llama.cpp clamps negatives to 0, which disables the sampler; the caller resolves
        // "the whole context" to a size.
        throw InvalidArgument("[SamplerChain.add_penalties] last_n must be >= 0 (0 disables); pass the context "
                              "size for the whole context");
    }
    if (!(repeat > 0.0f)) {
        throw InvalidArgument("[SamplerChain.add_penalties] repeat penalty must be > 0 (1.0 disables it)");
    }
    add_owned(llama_sampler_init_penalties(n_vocab, last_n, repeat, freq, present), "add_penalties");
    if (vocab_limit_ < 0 || n_vocab < vocab_limit_) {
        vocab_limit_ = n_vocab;
    }
    return *this;
}

SamplerChain & SamplerChain::add_dry(const Vocab & vocab, float multiplier, float base, int32_t allowed_length,
                                     int32_t penalty_last_n, const std::vector<std::string> & seq_breakers) {
    get();
    if (penalty_last_n < 0) {
        throw InvalidArgument("[SamplerChain.add_dry] penalty_last_n must be >= 0 (0 disables); pass the context "
                              "size for the whole context");
    }
    std::vector<const char *> breakers;
    for (const auto & b : seq_breakers) {
        breakers.push_back(b.c_str());
    }
    add_owned(llama_sampler_init_dry(vocab.get(), multiplier, base, allowed_length, penalty_last_n, breakers.data(),
                                     breakers.size()),
              "add_dry");
    keep_alive(vocab);
    return *this;
}

SamplerChain & SamplerChain::add_adaptive_p(float target, float decay, uint32_t seed) {
    if (!(decay >= 0.0f && decay <= 0.99f)) {
        throw InvalidArgument("[SamplerChain.add_adaptive_p] decay must be in [0, 0.99]");
    }
    add_owned(llama_sampler_init_adaptive_p(target, decay, seed), "add_adaptive_p");
    return *this;
}

SamplerChain & SamplerChain::add_logit_bias(int32_t n_vocab, const std::vector<std::pair<llama_token, float>> & biases) {
    check_n_vocab(n_vocab, "add_logit_bias");
    std::vector<llama_logit_bias> raw;
    raw.reserve(biases.size());
    for (const auto & [token, bias] : biases) {
        if (token < 0 || token >= n_vocab) {
            throw OutOfRange("[SamplerChain.add_logit_bias] token " + std::to_string(token) +
                             " is outside the vocabulary (n_vocab=" + std::to_string(n_vocab) + ")");
        }
        raw.push_back({token, bias});
    }
    add_owned(llama_sampler_init_logit_bias(n_vocab, static_cast<int32_t>(raw.size()), raw.data()), "add_logit_bias");
    BiasTable table;
    table.sampler = llama_sampler_chain_get(get(), llama_sampler_chain_n(get()) - 1);
    for (const llama_logit_bias & b : raw) {
        table.tokens.push_back(b.token);
    }
    std::sort(table.tokens.begin(), table.tokens.end());
    table.tokens.erase(std::unique(table.tokens.begin(), table.tokens.end()), table.tokens.end());
    table.biases.resize(table.tokens.size());
    for (const llama_logit_bias & b : raw) {
        const auto at = std::lower_bound(table.tokens.begin(), table.tokens.end(), b.token) - table.tokens.begin();
        table.biases[static_cast<std::size_t>(at)].push_back(b.bias);
    }
    bias_tables_.push_back(std::move(table));
    if (vocab_limit_ < 0 || n_vocab < vocab_limit_) {
        vocab_limit_ = n_vocab;
    }
    return *this;
}

SamplerChain & SamplerChain::add_infill(const Vocab & vocab) {
    get();
    add_owned(llama_sampler_init_infill(vocab.get()), "add_infill");
    keep_alive(vocab);
    return *this;
}

SamplerChain & SamplerChain::add_custom(std::unique_ptr<CustomSampler> sampler) {
    llama_sampler * chain = get();
    if (!sampler) {
        throw InvalidArgument("[SamplerChain.add_custom] sampler is null");
    }
    llama_sampler * s = llama_sampler_init(&g_custom_iface, sampler.release());
    llama_sampler_chain_add(chain, s);
    ++n_custom_;
    return *this;
}

int32_t SamplerChain::size() const { return llama_sampler_chain_n(get()); }

std::string SamplerChain::name(int32_t i) const {
    llama_sampler * chain = get();
    if (i < 0 || i >= llama_sampler_chain_n(chain)) {
        throw OutOfRange("[SamplerChain.name] index " + std::to_string(i) + " is outside the chain of " +
                         std::to_string(llama_sampler_chain_n(chain)));
    }
    const char * n = llama_sampler_name(llama_sampler_chain_get(chain, i));
    return n ? n : "";
}

std::vector<std::string> SamplerChain::names() const {
    std::vector<std::string> out;
    for (int32_t i = 0; i < size(); ++i) {
        out.push_back(name(i));
    }
    return out;
}

void SamplerChain::remove(int32_t i) {
    llama_sampler * chain = get();
    if (i < 0 || i >= llama_sampler_chain_n(chain)) {
        throw OutOfRange("[SamplerChain.remove] index " + std::to_string(i) + " is outside the chain of " +
                         std::to_string(llama_sampler_chain_n(chain)));
    }
    llama_sampler * removed = llama_sampler_chain_remove(chain, i);
    if (removed->iface == &g_custom_iface) {
        --n_custom_;
    }
    // Its address may be reused by a later sampler: forget what it added.
    bias_tables_.erase(std::remove_if(bias_tables_.begin(), bias_tables_.end(),
                                      [removed](const BiasTable & t) { return t.sampler == removed; }),
                       bias_tables_.end());
    llama_sampler_free(removed);
}

llama_token SamplerChain::sample(Context & ctx, int32_t idx) {
    std::lock_guard<std::mutex> lock(ctx.mutex());
    return sample_locked(ctx, idx);
}

namespace {

// The token llama.cpp's greedy sampler would pick: the first index holding the largest logit
// (NaN never wins; all -inf or NaN gives 0). Two passes over the row, both written so the
// compiler vectorizes them (16 independent running maxima; then blocks of 64 tested for the
// maximum before the exact index is looked up), instead of filling an n_vocab-long candidate
// array (3 MB per token for a 262k vocabulary) and scanning that. ~60 us for 262k logits
// here, against ~170 us for a plain scalar scan and ~350 us through the chain.
llama_token argmax_first(const float * logits, int32_t n) {
    constexpr int kLanes = 16;
    float lane[kLanes];
    for (float & v : lane) {
        v = -std::numeric_limits<float>::infinity();
    }
    int32_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
            const float x = logits[i + l];
            lane[l] = x > lane[l] ? x : lane[l];
        }
    }
    float best = lane[0];
    for (int l = 1; l < kLanes; ++l) {
        best = lane[l] > best ? lane[l] : best;
    }
    for (; i < n; ++i) {
        best = logits[i] > best ? logits[i] : best;
    }
    constexpr int kBlock = 64;
    int32_t t = 0;
    for (; t + kBlock <= n; t += kBlock) {
        int hit = 0;
        for (int j = 0; j < kBlock; ++j) {
            hit |= logits[t + j] == best;
        }
        if (hit != 0) {
            break;
        }
    }
    for (; t < n; ++t) {
        if (logits[t] == best) {
            return t;
        }
    }
    return 0;
}

// The token llama.cpp's logit-bias sampler followed by its greedy sampler would pick, without
// their candidate array: greedy keeps the first candidate unless a later one is strictly larger,
// so the row is walked in index order, the stretches between biased tokens by argmax_first and
// each biased token with its biases added one by one, as llama.cpp adds them.
llama_token biased_argmax(const float * logits, int32_t n, const std::vector<llama_token> & tokens,
                          const std::vector<std::vector<float>> & biases) {
    auto biased = [&](std::size_t j) {
        float v = logits[tokens[j]];
        for (float b : biases[j]) {
            v += b;
        }
        return v;
    };
    llama_token best = 0;
    float best_value = !tokens.empty() && tokens[0] == 0 ? biased(0) : logits[0];
    int32_t from = 0;
    for (std::size_t j = 0; j <= tokens.size(); ++j) {
        const int32_t to = j < tokens.size() ? tokens[j] : n;
        if (to > from) {
            const llama_token t = from + argmax_first(logits + from, to - from);
            if (logits[t] > best_value) {
                best = t;
                best_value = logits[t];
            }
        }
        if (j < tokens.size()) {
            const float v = biased(j);
            if (v > best_value) {
                best = tokens[j];
                best_value = v;
            }
            from = tokens[j] + 1;
        }
    }
    return best;
}

bool is_plain_greedy(llama_sampler * chain) {
    return llama_sampler_chain_n(chain) == 1 &&
           std::strcmp(llama_sampler_name(llama_sampler_chain_get(chain, 0)), "greedy") == 0;
}

// k of a top-k sampler, found by applying it to 129 distinct candidates (llama.h has no getter;
// asking the sampler itself keeps this right however the chain was built or edited). Returns 0
// for k <= 0 or k > 128: llama.cpp sorts those differently (no-op / bucket sort).
int32_t probe_top_k(llama_sampler * top_k) {
    constexpr int kProbe = 129;
    llama_token_data probe[kProbe];
    for (int i = 0; i < kProbe; ++i) {
        probe[i] = llama_token_data{i, static_cast<float>(i), 0.0f};
    }
    llama_token_data_array cur{probe, kProbe, -1, false};
    llama_sampler_apply(top_k, &cur);
    return cur.size < static_cast<std::size_t>(kProbe) && cur.sorted ? static_cast<int32_t>(cur.size) : 0;
}

// The k + 1 largest logits, largest first, into `out` (size k + 1). Returns false when the row
// holds a NaN or any two of those k + 1 values are equal: then the order llama.cpp's
// partial_sort gives tied candidates is not reproduced here and the caller takes the long way.
bool top_logits(const float * logits, int32_t n, int32_t k, std::vector<llama_token_data> & out) {
    const int32_t m = k + 1;
    out.clear();
    int32_t t = 0;
    for (; t < n && static_cast<int32_t>(out.size()) < m; ++t) {
        if (logits[t] != logits[t]) {
            return false;
        }
        out.push_back(llama_token_data{t, logits[t], 0.0f});
    }
    auto smallest = [&out] {
        std::size_t at = 0;
        for (std::size_t i = 1; i < out.size(); ++i) {
            if (out[i].logit < out[at].logit) {
                at = i;
            }
        }
        return at;
    };
    std::size_t low = smallest();
    constexpr int kBlock = 16;
    for (; t < n; t += kBlock) {
        const int32_t end = std::min(n, t + kBlock);
        // Most blocks hold nothing above the current threshold: test them in one vectorizable pass.
        int hit = 0;
        for (int32_t i = t; i < end; ++i) {
            hit |= (logits[i] > out[low].logit) | (logits[i] != logits[i]);
        }
        if (hit == 0) {
            continue;
        }
        for (int32_t i = t; i < end; ++i) {
            if (logits[i] != logits[i]) {
                return false;
            }
            if (logits[i] > out[low].logit) {
                out[low] = llama_token_data{i, logits[i], 0.0f};
                low = smallest();
            }
        }
    }
    std::sort(out.begin(), out.end(), [](const llama_token_data & a, const llama_token_data & b) {
        return a.logit > b.logit;
    });
    for (std::size_t i = 1; i < out.size(); ++i) {
        if (!(out[i - 1].logit > out[i].logit)) {
            return false;
        }
    }
    return true;
}

}  // namespace

llama_token SamplerChain::sample_locked(Context & ctx, int32_t idx) {
    llama_sampler * chain = get();
    llama_context * lctx = ctx.get();
    ctx.check_output_index(idx, "SamplerChain.sample");
    if (llama_sampler_chain_n(chain) == 0) {
        throw InvalidArgument("[SamplerChain.sample] the chain is empty; add a sampler that selects a token "
                              "(greedy, dist, mirostat, ...)");
    }
    const float * logits = llama_get_logits_ith(lctx, idx);
    if (logits == nullptr) {
        throw OutOfRange(detail::with_reason("[SamplerChain.sample] no logits for index " + std::to_string(idx)));
    }
    const int32_t n_vocab = ctx.n_vocab();
    if (is_plain_greedy(chain)) {
        // Same choice as the chain would make; accept() keeps the chain's perf counters.
        const llama_token token = argmax_first(logits, n_vocab);
        llama_sampler_accept(chain, token);
        return token;
    }
    if (llama_sampler_chain_n(chain) == 2 &&
        std::strcmp(llama_sampler_name(llama_sampler_chain_get(chain, 1)), "greedy") == 0) {
        // Logit bias then greedy (e.g. banned tokens, or end-of-generation suppressed).
        const llama_sampler * first = llama_sampler_chain_get(chain, 0);
        for (const BiasTable & t : bias_tables_) {
            if (t.sampler == first && (t.tokens.empty() || t.tokens.back() < n_vocab)) {
                const llama_token token = biased_argmax(logits, n_vocab, t.tokens, t.biases);
                llama_sampler_accept(chain, token);
                return token;
            }
        }
    }
    llama_token_data_array cur{nullptr, 0, -1, false};
    // A chain that starts with top-k (llama.cpp's usual sampling chains) only ever sees the k
    // best candidates, sorted. When those are unambiguous (no ties, no NaN) they are found in
    // one pass over the logits row and handed over exactly as top-k would leave them, instead
    // of filling an n_vocab-long array and partial-sorting it (~0.9 ms per token for a 262k
    // vocabulary). The chain, top-k included, then runs unchanged on identical input.
    const int32_t k = llama_sampler_chain_n(chain) > 1 &&
                              std::strcmp(llama_sampler_name(llama_sampler_chain_get(chain, 0)), "top-k") == 0
                          ? probe_top_k(llama_sampler_chain_get(chain, 0))
                          : 0;
    if (k > 0 && k < n_vocab && top_logits(logits, n_vocab, k, candidates_)) {
        cur = llama_token_data_array{candidates_.data(), static_cast<std::size_t>(k), -1, true};
    } else {
        candidates_.resize(static_cast<std::size_t>(n_vocab));
        for (llama_token t = 0; t < n_vocab; ++t) {
            candidates_[static_cast<std::size_t>(t)] = llama_token_data{t, logits[t], 0.0f};
        }
        cur = llama_token_data_array{candidates_.data(), candidates_.size(), -1, false};
    }
    llama_sampler_apply(chain, &cur);
    if (cur.selected < 0 || cur.selected >= static_cast<int64_t>(cur.size)) {
        throw InvalidArgument("[SamplerChain.sample] the chain selected no token; it must end with a sampler that "
                              "selects one (greedy, dist, mirostat, ...)" +
                              std::string(cur.size == 0 ? " (every candidate was removed)" : ""));
    }
    const llama_token token = cur.data[cur.selected].id;
    llama_sampler_accept(chain, token);
    return token;
}

void SamplerChain::accept(llama_token token) {
    llama_sampler * chain = get();
    if (token < 0 || (vocab_limit_ >= 0 && token >= vocab_limit_)) {
        throw OutOfRange("[SamplerChain.accept] token " + std::to_string(token) + " is outside the vocabulary" +
                         (vocab_limit_ >= 0 ? " (n_vocab=" + std::to_string(vocab_limit_) + ")" : std::string()));
    }
    llama_sampler_accept(chain, token);
}

void SamplerChain::apply(llama_token_data_array & candidates) {
    llama_sampler * chain = get();
    // llama.cpp's samplers assume at least one candidate (greedy "selects" index 0 of an empty
    // array; dist reads data[0]).
    if (candidates.size == 0) {
        throw InvalidArgument("[SamplerChain.apply] no candidates: the array is empty");
    }
    for (std::size_t i = 0; i < candidates.size; ++i) {
        const llama_token t = candidates.data[i].id;
        if (t < 0 || (vocab_limit_ >= 0 && t >= vocab_limit_)) {
            throw OutOfRange("[SamplerChain.apply] candidate " + std::to_string(i) + " has token id " +
                             std::to_string(t) + " outside the vocabulary");
        }
    }
    llama_sampler_apply(chain, &candidates);
}

void SamplerChain::reset() { llama_sampler_reset(get()); }

SamplerChain SamplerChain::clone() const {
    llama_sampler * chain = get();
    for (int32_t i = 0; i < llama_sampler_chain_n(chain); ++i) {
        const llama_sampler * s = llama_sampler_chain_get(chain, i);
        if (s->iface == &g_custom_iface && !custom_of(s)->clone()) {
            throw InvalidArgument("[SamplerChain.clone] custom sampler '" + custom_of(s)->name() +
                                  "' cannot be cloned");
        }
    }
    llama_sampler * copy = llama_sampler_clone(chain);
    if (copy == nullptr) {
        throw Error("[SamplerChain.clone] llama_sampler_clone failed");
    }
    SamplerChain out(true);
    out.chain_.reset(copy);
    out.models_ = models_;
    out.vocab_limit_ = vocab_limit_;
    out.n_custom_ = n_custom_;
    // The copy's samplers sit at the same positions as the originals.
    for (int32_t i = 0; i < llama_sampler_chain_n(chain); ++i) {
        const llama_sampler * original = llama_sampler_chain_get(chain, i);
        for (const BiasTable & t : bias_tables_) {
            if (t.sampler == original) {
                BiasTable copied = t;
                copied.sampler = llama_sampler_chain_get(copy, i);
                out.bias_tables_.push_back(std::move(copied));
            }
        }
    }
    return out;
}

uint32_t SamplerChain::seed() const { return llama_sampler_get_seed(get()); }

llama_perf_sampler_data SamplerChain::perf() const { return llama_perf_sampler(get()); }

void SamplerChain::perf_reset() { llama_perf_sampler_reset(get()); }

}  // namespace llamabind
