#pragma once

// Speculative decoding over sequence 0 of a target Context: a Drafter (draft.hpp) proposes
// tokens, the target evaluates the pending token and the drafts in one batch, and its own
// sampler decides every emitted token. Output is exactly what plain decoding with the same
// sampler gives (for sampling too: the chain's random state, penalties and grammar advance
// as they would without speculation); only the speed differs. DraftTuner picks each step's
// draft length from measured costs and acceptance, down to 0 (plain decoding).

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "llama.h"

namespace llamabind {

class Context;
class Drafter;
class SamplerChain;

struct SpeculativeParams {
    // Most tokens drafted per step.
    int32_t n_draft = 8;
    // Choose each step's draft length from measured costs and acceptance (DraftTuner);
    // false drafts n_draft tokens every step (as llama.cpp's speculative examples do).
    bool adaptive = true;
};

// What one step emitted.
struct StepResult {
    // The target sampler's draws, in order (drafted tokens it confirmed, then its own).
    std::vector<llama_token> tokens;
    // For each token, the entry of the target's last batch whose logits it was sampled from
    // (Context::logits_ith takes it; -1: the last output, for the step that sampled from the
    // logits the sequence already had).
    std::vector<int32_t> rows;
    // An end-of-generation token was drawn after `tokens` (it is not among them).
    bool eog = false;
    int32_t n_drafted = 0;   // tokens the drafter proposed (and the target evaluated)
    int32_t n_accepted = 0;  // of those, how many the target's sampler drew too
    int32_t n_evaluated = 0; // tokens sequence 0 holds after the step (the pending one not counted)
};

// Running totals of a Speculator.
struct SpeculativeStats {
    int64_t n_steps = 0;        // verification steps (each one target decode)
    int64_t n_drafted = 0;      // drafted tokens evaluated by the target
    int64_t n_accepted = 0;     // drafted tokens accepted
    int64_t n_emitted = 0;      // tokens emitted (accepted drafts + the target's own draws)
    int64_t n_draft_steps = 0;  // steps that verified at least one drafted token
    double t_draft_s = 0.0;     // time spent drafting
    double t_verify_s = 0.0;    // time spent in target decodes
    double acceptance() const { return n_drafted > 0 ? double(n_accepted) / double(n_drafted) : 0.0; }
};

// Chooses draft lengths that maximise tokens per second. Per step with draft length k the
// target emits E(k) = 1 + a1 + a1*a2 + ... + a1*...*ak tokens on average (ai: the chance that
// drafted token i is accepted once the ones before it were) and takes D(k) + V(k + 1) seconds
// (D: drafting; V(n): one target decode of n tokens). Both are measured as generation goes:
// V(n) as a line fitted through the batch sizes measured, D per drafted token (a draft model)
// or per call (a lookup), the acceptance per position with exponential forgetting. The length
// with the highest E(k) / (D(k) + V(k + 1)) wins, 0 (plain decoding) unless a draft beats it by
// a margin. A draft model starts with a short draft and a plain step; while few drafts have
// been verified, acceptance is assumed somewhat likelier than measured (the doubt fades with
// each draft). While plain decoding wins, a draft is tried now and then (less and less often
// while it keeps losing; every kProbeMax steps only, to measure the costs again, if even perfect
// acceptance could not pay) so that a change of text (a stretch the draft predicts well) is
// noticed; a try accepted in full brings the doubt back.
class DraftTuner {
public:
    explicit DraftTuner(int32_t n_max);

    int32_t n_max() const noexcept { return n_max_; }

    // The draft length for the next step, at most `limit`. per_token: drafting costs per
    // drafted token (Drafter::cost_per_token), and is decided before drafting; otherwise the
    // draft is already made and `limit` is its length (how much of it to verify).
    int32_t choose(int32_t limit, bool per_token);

    // Measurements: a target decode of n tokens took `seconds`; drafting took `seconds` for
    // `units` (drafted tokens, or 1 call); a step verified n_drafted tokens and accepted the
    // first n_accepted (stopping early for another reason, e.g. the token budget, counts as
    // n_tested = the positions that were compared).
    void record_verify(int32_t n_tokens, double seconds);
    void record_draft(int32_t units, double seconds);
    void record_acceptance(int32_t n_tested, int32_t n_accepted);
    // Acceptance learnt in hindsight (Drafter::last_hindsight: whether the drafter would have
    // proposed each of consecutive tokens): the drafts it would have made there, as counts.
    void record_hindsight(const std::vector<uint8_t> & matches);

    // Estimates: seconds of a target decode of n tokens, of drafting k tokens, the expected
    // tokens emitted by a step with draft length k, and its tokens per second.
    double verify_cost(int32_t n) const;
    double draft_cost(int32_t k, bool per_token) const;
    double expected_tokens(int32_t k, double optimism = 0.0) const;
    double rate(int32_t k, bool per_token, double optimism = 0.0) const;

private:
    int32_t best(int32_t limit, bool per_token, double optimism, double * rate_out, int32_t from = 0) const;
    double acceptance(int32_t position) const;
    bool hopeless(int32_t limit, bool per_token) const;
    void count_acceptance(int32_t n_tested, int32_t n_accepted);

    int32_t n_max_;
    std::vector<double> verify_s_;    // EWMA of decode seconds by batch size (index n)
    std::vector<int32_t> verify_n_;   // measurements per batch size
    double draft_s_ = 0.0;            // EWMA of drafting seconds per unit
    int32_t draft_n_ = 0;
    std::vector<double> tested_;      // decayed counts per draft position (index i >= 1)
    std::vector<double> accepted_;
    int32_t n_explored_ = 0;          // drafts verified since exploring (re)started
    bool probing_ = false;            // the last choice was a try while plain decoding won
    int32_t since_probe_ = 0;         // plain steps since the last draft
    int32_t probe_every_ = 16;        // plain steps between tries while plain decoding wins
};

// Speculative decoding of sequence 0 of `target`.
//
//   auto drafter = std::make_shared<llamabind::NgramDrafter>(3);   // or a ModelDrafter
//   llamabind::Speculator spec(ctx, drafter, {});
//   ctx->decode_tokens(prompt.data(), prompt.size(), 0);            // the prompt, as usual
//   spec.begin(prompt);
//   for (int n = 0; n < 200;) {
//       llamabind::StepResult r = spec.step(sampler, 200 - n);
//       n += r.tokens.size();                                       // print r.tokens
//       if (r.eog) break;
//   }
//
// The sequence holds the tokens given to begin() (evaluated, the last one's logits being the
// context's last output). A step emits at least one token; the last emitted token is
// pending: it is evaluated by the next step, together with the next draft. Cells of rejected
// drafts are removed again, so sequence 0 holds exactly tokens() but the pending token.
class Speculator {
public:
    // drafter may be null: then only step_with() (drafts handed in) drafts.
    Speculator(std::shared_ptr<Context> target, std::shared_ptr<Drafter> drafter, const SpeculativeParams & params = {});
    ~Speculator();

    Speculator(const Speculator &) = delete;
    Speculator & operator=(const Speculator &) = delete;

    // Starts (or resumes) a sequence: sequence 0 of the target holds `evaluated`; `pending`
    // is a token already emitted after them but not evaluated (LLAMA_TOKEN_NULL for none:
    // the next step samples from the context's last output). Measurements are kept.
    void begin(const std::vector<llama_token> & evaluated, llama_token pending = LLAMA_TOKEN_NULL);

    // One step: draft (as the tuner or n_draft says), evaluate, sample; emits at most
    // max_tokens tokens (>= 1). `stop` is polled during decodes like Context::cancel().
    StepResult step(SamplerChain & sampler, int32_t max_tokens, const std::atomic<bool> * stop = nullptr);
    // The same with drafts handed in by the caller instead of the drafter (the adaptive
    // length still caps how many are verified).
    StepResult step_with(SamplerChain & sampler, int32_t max_tokens, const std::vector<llama_token> & drafts,
                         const std::atomic<bool> * stop = nullptr);

    // step() in two halves, for callers that must hold a lock (e.g. the GIL for samplers
    // written in Python) while sampling but not while decoding: prepare() drafts and
    // evaluates (no sampling), finish() samples and keeps what was accepted. drafts: null to
    // ask the drafter.
    void prepare(int32_t max_tokens, const std::vector<llama_token> * drafts, const std::atomic<bool> * stop);
    StepResult finish(SamplerChain & sampler);

    // The sequence: evaluated tokens then the pending token (if any). A sampler callback
    // (e.g. a logits processor) running during finish() sees the tokens its draw follows.
    const std::vector<llama_token> & tokens() const noexcept { return tokens_; }
    bool has_pending() const noexcept { return pending_; }
    int32_t n_evaluated() const noexcept { return static_cast<int32_t>(tokens_.size()) - (pending_ ? 1 : 0); }

    const SpeculativeParams & params() const noexcept { return params_; }
    const SpeculativeStats & stats() const noexcept { return stats_; }
    void reset_stats() { stats_ = {}; }
    const DraftTuner & tuner() const noexcept { return tuner_; }
    const std::shared_ptr<Drafter> & drafter() const noexcept { return drafter_; }
    const std::shared_ptr<Context> & target() const noexcept { return target_; }

private:
    void draft(int32_t limit, const std::vector<llama_token> * given);
    void verify(const std::atomic<bool> * stop);

    std::shared_ptr<Context> target_;
    std::shared_ptr<Drafter> drafter_;
    SpeculativeParams params_;
    DraftTuner tuner_;
    SpeculativeStats stats_;
    std::vector<llama_token> tokens_;
    bool pending_ = false;
    // The entry of the target's last batch holding the logits after the last evaluated token
    // (-1: its last output), for a step without a pending token.
    int32_t last_row_ = -1;
    // The step prepare() set up: its draft, the budget, whether it decoded.
    std::vector<llama_token> draft_;
    int32_t max_tokens_ = 0;
    bool prepared_ = false;
    bool decoded_ = false;
};

}  // namespace llamabind
