#include "llamabind/speculative.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "llamabind/context.hpp"
#include "llamabind/draft.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/model.hpp"
#include "llamabind/sampler.hpp"
#include "llamabind/vocab.hpp"

namespace llamabind {

namespace {

// Weight of a new timing in the running estimate, and how far above the estimate one timing
// may pull it (a hiccup of a shared machine is not a new cost level).
constexpr double kTimingWeight = 0.3;
constexpr double kTimingClamp = 2.0;
// Acceptance counts fade by this factor per verified draft: about the last 20 drafts count.
constexpr double kAcceptanceDecay = 0.95;
// A draft must promise this much more speed than plain decoding to be used.
constexpr double kMargin = 0.03;
// Plain steps between tries while plain decoding wins: starts at the first, doubles while
// tries keep losing, up to the second (also the interval at which costs are measured again
// when not even perfect acceptance could pay).
constexpr int32_t kProbeFirst = 16;
constexpr int32_t kProbeMax = 256;
// How much likelier than estimated a try assumes acceptance to be (a try is for noticing a
// change of text, so it drafts what would pay if the text had become easier).
constexpr double kProbeOptimism = 0.3;
constexpr double kMaxAcceptance = 0.99;
// A batch size's weight in the fitted line of decode costs is its count of timings, up to this.
constexpr int32_t kFitWeightCap = 8;
// Timings of a batch size that make its own estimate (fewer: the fitted line's).
constexpr int32_t kOwnTimings = 3;
// A model's first draft is this short (it pays per drafted token): longer ones follow once it
// and a plain step show that they may pay.
constexpr int32_t kFirstModelDraft = 2;
// While few drafts have been verified, acceptance is assumed likelier than measured by
// kDoubt * (1/sqrt(n) - 1/sqrt(kDoubtDrafts)) after n drafts (nothing from kDoubtDrafts on).
// A few unlucky drafts say little (the estimate's spread shrinks like 1/sqrt(n)), and turning
// drafting off on them would give away the gain where it pays.
constexpr double kDoubt = 0.4;
constexpr int32_t kDoubtDrafts = 16;
// Drafts verified before plain decoding may win (unless no draft could pay): the first ones
// can all be unlucky, a truncated one (a call's last token) included.
constexpr int32_t kExploreDrafts = 4;
// A lookup's draft is made already and costs nothing: only verifying it does, and a token
// verified in vain costs a fraction of one decoded alone. Its acceptance keeps this much
// benefit of the doubt (a lookup that copies a stretch is right for long runs, and one miss
// before such a run says little).
constexpr double kLookupDoubt = 0.15;
// ... as long as its first drafted token is accepted this often (a lookup that is never right
// gets no doubt: verifying its drafts would cost something for nothing).
constexpr double kLookupHopeful = 0.3;

double doubt(int32_t n_drafts) {
    if (n_drafts >= kDoubtDrafts) {
        return 0.0;
    }
    return kDoubt * (1.0 / std::sqrt(std::max(1.0, double(n_drafts))) - 1.0 / std::sqrt(double(kDoubtDrafts)));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double blend(double old, int32_t n_old, double value) {
    if (n_old == 0) {
        return value;
    }
    if (n_old >= 3) {
        value = std::min(value, kTimingClamp * old);
    }
    return (1.0 - kTimingWeight) * old + kTimingWeight * value;
}

}  // namespace

DraftTuner::DraftTuner(int32_t n_max)
    : n_max_(std::max<int32_t>(0, n_max)),
      verify_s_(static_cast<std::size_t>(n_max_) + 2, 0.0),
      verify_n_(static_cast<std::size_t>(n_max_) + 2, 0),
      tested_(static_cast<std::size_t>(n_max_) + 1, 0.0),
      accepted_(static_cast<std::size_t>(n_max_) + 1, 0.0) {}

void DraftTuner::record_verify(int32_t n_tokens, double seconds) {
    if (n_tokens < 1 || n_tokens >= static_cast<int32_t>(verify_s_.size()) || !(seconds >= 0.0)) {
        return;
    }
    const auto i = static_cast<std::size_t>(n_tokens);
    verify_s_[i] = blend(verify_s_[i], verify_n_[i], seconds);
    ++verify_n_[i];
}

void DraftTuner::record_draft(int32_t units, double seconds) {
    if (units < 1 || !(seconds >= 0.0)) {
        return;
    }
    draft_s_ = blend(draft_s_, draft_n_, seconds / units);
    ++draft_n_;
}

void DraftTuner::record_acceptance(int32_t n_tested, int32_t n_accepted) {
    if (std::min(n_tested, n_max_) < 1) {
        return;
    }
    ++n_explored_;
    if (probing_ && n_accepted >= n_tested) {
        n_explored_ = 1;  // a try accepted in full: the text may have changed, look again
    }
    probing_ = false;
    count_acceptance(n_tested, n_accepted);
}

void DraftTuner::record_hindsight(const std::vector<uint8_t> & matches) {
    // A draft starting at each token would have had the run of matches from there accepted
    // (each drafted token following the ones before it, as the tokens that came did).
    if (n_max_ < 1) {
        return;
    }
    std::size_t run_end = matches.size();
    std::vector<int32_t> runs(matches.size(), 0);
    for (std::size_t j = matches.size(); j-- > 0;) {
        if (matches[j] == 0) {
            run_end = j;
        }
        runs[j] = static_cast<int32_t>(run_end - j);
    }
    for (std::size_t j = 0; j < matches.size(); ++j) {
        const int32_t run = std::min(runs[j], n_max_);
        const bool open = j + static_cast<std::size_t>(runs[j]) == matches.size() && run < n_max_;
        // A run reaching the end says nothing about the position after it.
        const int32_t tested = open ? run : std::min(run + 1, n_max_);
        if (tested > 0) {
            count_acceptance(tested, run);
        }
    }
}

void DraftTuner::count_acceptance(int32_t n_tested, int32_t n_accepted) {
    n_tested = std::min(n_tested, n_max_);
    for (std::size_t i = 1; i < tested_.size(); ++i) {
        tested_[i] *= kAcceptanceDecay;
        accepted_[i] *= kAcceptanceDecay;
    }
    for (int32_t i = 1; i <= n_tested; ++i) {
        tested_[static_cast<std::size_t>(i)] += 1.0;
        if (i <= n_accepted) {
            accepted_[static_cast<std::size_t>(i)] += 1.0;
        }
    }
}

// Acceptance at a draft position: its own counts, shrunk towards the rate over all positions
// (itself shrunk towards 1/2), so a position rarely drafted borrows from the others.
double DraftTuner::acceptance(int32_t position) const {
    double tested = 0.0;
    double accepted = 0.0;
    for (std::size_t i = 1; i < tested_.size(); ++i) {
        tested += tested_[i];
        accepted += accepted_[i];
    }
    const double pooled = (accepted + 1.0) / (tested + 2.0);
    const auto i = static_cast<std::size_t>(std::clamp<int32_t>(position, 1, n_max_));
    return (accepted_[i] + 2.0 * pooled) / (tested_[i] + 2.0);
}

// A size measured kOwnTimings times or more (V(1): once) costs what it measured; the costs
// of CPU kernels are not linear in the batch size (on a 2-core Xeon V(3) and V(5) differ by
// a tenth). Other sizes lie on the line fitted (least squares, weighted by how often each
// size was measured, up to a cap) through the sizes of 2 and more measured: single timings
// of a shared machine are noisy, and a size measured once must not decide alone. With one
// such size measured, the line through it and V(1).
double DraftTuner::verify_cost(int32_t n) const {
    if (n < 1) {
        return 0.0;
    }
    const auto size = static_cast<int32_t>(verify_s_.size());
    if (n < size && verify_n_[static_cast<std::size_t>(n)] >= (n == 1 ? 1 : kOwnTimings)) {
        return verify_s_[static_cast<std::size_t>(n)];  // measured often enough on its own
    }
    double sw = 0.0;
    double sx = 0.0;
    double sy = 0.0;
    double sxx = 0.0;
    double sxy = 0.0;
    int32_t sizes = 0;
    for (std::size_t i = 2; i < verify_s_.size(); ++i) {
        if (verify_n_[i] == 0) {
            continue;
        }
        const double w = std::min<int32_t>(verify_n_[i], kFitWeightCap);
        const double x = double(i);
        sw += w;
        sx += w * x;
        sy += w * verify_s_[i];
        sxx += w * x * x;
        sxy += w * x * verify_s_[i];
        ++sizes;
    }
    const double v1 = verify_n_[1] > 0 ? verify_s_[1] : 0.0;
    if (sizes == 0) {
        return v1 * n;
    }
    double slope = 0.0;
    const double mean = sx / sw;
    const double at = sy / sw;  // the line's value at x = mean size
    if (sizes >= 2) {
        slope = std::max(0.0, (sxy - sx * sy / sw) / (sxx - sx * sx / sw));
    } else if (verify_n_[1] > 0) {
        slope = std::max(0.0, (at - v1) / (mean - 1.0));
    } else {
        slope = at / mean;
    }
    const double v = at + slope * (double(n) - mean);
    return std::max(v, v1);  // a batch costs no less than one token
}

double DraftTuner::draft_cost(int32_t k, bool per_token) const {
    if (k <= 0) {
        return 0.0;
    }
    return per_token ? draft_s_ * k : draft_s_;
}

double DraftTuner::expected_tokens(int32_t k, double optimism) const {
    double expected = 1.0;
    double all_accepted = 1.0;
    for (int32_t i = 1; i <= k; ++i) {
        all_accepted *= std::min(kMaxAcceptance, acceptance(i) + optimism);
        expected += all_accepted;
    }
    return expected;
}

double DraftTuner::rate(int32_t k, bool per_token, double optimism) const {
    double verify = verify_cost(k + 1);
    if (optimism > 0.0) {
        // Hopeful about costs too: a batch larger than any measured costs what the largest
        // measured one does (the line from a few small sizes is steeper than the costs of
        // larger ones turn out), so that a longer draft gets tried and measured.
        int32_t largest = 1;
        for (int32_t n = 2; n < static_cast<int32_t>(verify_n_.size()); ++n) {
            largest = verify_n_[static_cast<std::size_t>(n)] > 0 ? n : largest;
        }
        verify = std::min(verify, verify_cost(std::max(largest, 1)));
        verify = std::max(verify, verify_cost(1));
    }
    const double seconds = draft_cost(k, per_token) + verify;
    return seconds > 0.0 ? expected_tokens(k, optimism) / seconds : 0.0;
}

int32_t DraftTuner::best(int32_t limit, bool per_token, double optimism, double * rate_out, int32_t from) const {
    int32_t best_k = from;
    double best_rate = rate(from, per_token, optimism);
    for (int32_t k = from + 1; k <= std::min(limit, n_max_); ++k) {
        const double r = rate(k, per_token, optimism);
        if (r > best_rate) {
            best_rate = r;
            best_k = k;
        }
    }
    if (rate_out != nullptr) {
        *rate_out = best_rate;
    }
    return best_k;
}

// Not even a draft that is always right would pay.
bool DraftTuner::hopeless(int32_t limit, bool per_token) const {
    double perfect = 0.0;
    best(limit, per_token, 1.0, &perfect, 1);
    return perfect <= rate(0, per_token) * (1.0 + kMargin);
}

int32_t DraftTuner::choose(int32_t limit, bool per_token) {
    limit = std::min(limit, n_max_);
    if (limit <= 0) {
        return 0;
    }
    bool measured_batch = false;
    for (std::size_t n = 2; n < verify_n_.size(); ++n) {
        measured_batch = measured_batch || verify_n_[n] > 0;
    }
    if (!measured_batch || (per_token && draft_n_ == 0)) {
        // First measure what a draft costs and how much of it is accepted: short where the
        // draft is paid per token, so that an expensive draft model costs little to rule out.
        return per_token ? std::min(limit, kFirstModelDraft) : limit;
    }
    if (verify_n_[1] == 0) {
        return 0;  // then what plain decoding costs
    }
    const bool no_hope = hopeless(limit, per_token);
    if (n_explored_ < kExploreDrafts && !no_hope) {
        // Still exploring: the length that would pay best if the text were easier than it
        // looks so far (a draft of one token says nothing about the positions after it).
        return best(limit, per_token, kProbeOptimism, nullptr, 1);
    }
    // The draft length that pays best, with the benefit of the doubt while drafts are few.
    double drafted = 0.0;
    const double hope = per_token || acceptance(1) < kLookupHopeful ? doubt(n_explored_)
                                                                     : std::max(doubt(n_explored_), kLookupDoubt);
    const int32_t k = best(limit, per_token, hope, &drafted, 1);
    const double plain = rate(0, per_token);
    if (drafted > plain * (1.0 + kMargin)) {
        since_probe_ = 0;
        probe_every_ = kProbeFirst;
        return k;
    }
    // Not even a draft that is always right would pay: only measure the costs again now and
    // then, with the cheapest draft.
    if (no_hope) {
        probe_every_ = kProbeMax;
    }
    if (++since_probe_ < probe_every_) {
        return 0;
    }
    since_probe_ = 0;
    probing_ = true;
    if (no_hope) {
        return 1;
    }
    probe_every_ = std::min(2 * probe_every_, kProbeMax);
    return best(limit, per_token, kProbeOptimism, nullptr, 1);
}

Speculator::Speculator(std::shared_ptr<Context> target, std::shared_ptr<Drafter> drafter,
                       const SpeculativeParams & params)
    : target_(std::move(target)), drafter_(std::move(drafter)), params_(params), tuner_(params.n_draft) {
    if (!target_) {
        throw InvalidArgument("[Speculator] no target context given");
    }
    if (params.n_draft < 0) {
        throw InvalidArgument("[Speculator] n_draft must be >= 0, got " + std::to_string(params.n_draft));
    }
    if (target_->embeddings_enabled()) {
        throw InvalidArgument("[Speculator] the target context computes embeddings; speculative decoding needs logits");
    }
    const Model & model = *target_->model();
    if (model.is_recurrent() || model.is_hybrid()) {
        throw InvalidArgument("[Speculator] " + model.desc() +
                              " keeps a recurrent state, which cannot drop rejected drafts; use plain decoding");
    }
}

Speculator::~Speculator() = default;

void Speculator::begin(const std::vector<llama_token> & evaluated, llama_token pending) {
    tokens_ = evaluated;
    pending_ = pending != LLAMA_TOKEN_NULL;
    if (pending_) {
        tokens_.push_back(pending);
    }
    prepared_ = false;
    decoded_ = false;
    last_row_ = -1;
    draft_.clear();
    if (drafter_) {
        drafter_->begin(tokens_);
    }
}

StepResult Speculator::step(SamplerChain & sampler, int32_t max_tokens, const std::atomic<bool> * stop) {
    prepare(max_tokens, nullptr, stop);
    return finish(sampler);
}

StepResult Speculator::step_with(SamplerChain & sampler, int32_t max_tokens, const std::vector<llama_token> & drafts,
                                 const std::atomic<bool> * stop) {
    prepare(max_tokens, &drafts, stop);
    return finish(sampler);
}

void Speculator::prepare(int32_t max_tokens, const std::vector<llama_token> * drafts, const std::atomic<bool> * stop) {
    if (max_tokens < 1) {
        throw InvalidArgument("[Speculator.step] max_tokens must be >= 1, got " + std::to_string(max_tokens));
    }
    target_->get();  // throws Closed
    prepared_ = false;
    decoded_ = false;
    draft_.clear();
    max_tokens_ = max_tokens;
    if (pending_) {
        const int64_t room = int64_t(target_->n_ctx_seq()) - n_evaluated() - 1;
        if (room < 0) {
            throw NoKvSlot("[Speculator.step] the context is full (n_ctx=" + std::to_string(target_->n_ctx_seq()) + ")",
                           1);
        }
        const int64_t limit = std::min<int64_t>({int64_t(max_tokens) - 1, int64_t(params_.n_draft), room,
                                                 int64_t(target_->n_batch()) - 1});
        draft(static_cast<int32_t>(limit), drafts);
        verify(stop);
    }
    prepared_ = true;
}

void Speculator::draft(int32_t limit, const std::vector<llama_token> * given) {
    if (limit <= 0 || (given == nullptr && !drafter_)) {
        return;
    }
    const bool per_token = given == nullptr && drafter_->cost_per_token();
    if (per_token) {
        // A model pays per drafted token: decide the length first.
        const int32_t cap = params_.adaptive ? tuner_.choose(limit, true) : limit;
        if (cap <= 0) {
            return;
        }
        const auto t0 = std::chrono::steady_clock::now();
        drafter_->draft(tokens_, cap, draft_);
        const double seconds = seconds_since(t0);
        stats_.t_draft_s += seconds;
        tuner_.record_draft(drafter_->last_decodes(), seconds - drafter_->last_catch_up_seconds());
        if (params_.adaptive) {
            tuner_.record_hindsight(drafter_->last_hindsight());
        }
        if (static_cast<int32_t>(draft_.size()) > cap) {
            draft_.resize(static_cast<std::size_t>(cap));
        }
    } else {
        // A lookup (or drafts handed in) costs next to nothing: draft first, then verify the
        // part that pays.
        if (given != nullptr) {
            draft_.assign(given->begin(),
                          given->begin() + std::min<std::ptrdiff_t>(limit, static_cast<std::ptrdiff_t>(given->size())));
        } else {
            const auto t0 = std::chrono::steady_clock::now();
            drafter_->draft(tokens_, limit, draft_);
            const double seconds = seconds_since(t0);
            stats_.t_draft_s += seconds;
            tuner_.record_draft(1, seconds);
            if (static_cast<int32_t>(draft_.size()) > limit) {
                draft_.resize(static_cast<std::size_t>(limit));
            }
        }
        if (params_.adaptive && !draft_.empty()) {
            draft_.resize(static_cast<std::size_t>(tuner_.choose(static_cast<int32_t>(draft_.size()), false)));
        }
    }
    const int32_t n_vocab = target_->n_vocab();
    for (llama_token t : draft_) {
        if (t < 0 || t >= n_vocab) {
            draft_.clear();
            throw OutOfRange("[Speculator.step] drafted token " + std::to_string(t) +
                             " is outside the vocabulary (n_vocab=" + std::to_string(n_vocab) + ")");
        }
    }
}

void Speculator::verify(const std::atomic<bool> * stop) {
    std::vector<llama_token> batch;
    batch.reserve(draft_.size() + 1);
    batch.push_back(tokens_.back());
    batch.insert(batch.end(), draft_.begin(), draft_.end());
    const auto pos0 = static_cast<llama_pos>(n_evaluated());
    const auto t0 = std::chrono::steady_clock::now();
    try {
        target_->decode_tokens(batch.data(), batch.size(), pos0, 0, true, stop);
    } catch (const InvalidArgument &) {
        // More output rows than ever before, under a live logits view (Context::decode refuses
        // to reallocate the buffer then): verify nothing, decode the pending token alone.
        if (draft_.empty() || target_->live_output_leases() == 0) {
            throw;
        }
        draft_.clear();
        batch.resize(1);
        target_->decode_tokens(batch.data(), 1, pos0, 0, true, stop);
    }
    const double seconds = seconds_since(t0);
    stats_.t_verify_s += seconds;
    tuner_.record_verify(static_cast<int32_t>(batch.size()), seconds);
    decoded_ = true;
}

StepResult Speculator::finish(SamplerChain & sampler) {
    if (!prepared_) {
        throw InvalidArgument("[Speculator.finish] no step prepared: call prepare() first");
    }
    prepared_ = false;
    const Vocab vocab = target_->model()->vocab();
    StepResult r;
    if (!decoded_) {
        // The first token of a sequence (or the next after an end-of-generation token): from
        // the logits it already has.
        const llama_token t = sampler.sample(*target_, last_row_);
        if (vocab.is_eog(t)) {
            r.eog = true;
        } else {
            r.tokens.push_back(t);
            r.rows.push_back(last_row_);
            tokens_.push_back(t);
            pending_ = true;
            ++stats_.n_emitted;
        }
        r.n_evaluated = n_evaluated();
        return r;
    }
    decoded_ = false;
    const auto base = static_cast<llama_pos>(n_evaluated());
    const auto n_draft = static_cast<int32_t>(draft_.size());
    int32_t confirmed = 0;  // drafted tokens drawn too, now part of the evaluated sequence
    int32_t tested = 0;
    int32_t accepted = 0;
    llama_token next = LLAMA_TOKEN_NULL;
    try {
        for (int32_t i = 0; i <= n_draft; ++i) {
            const llama_token t = sampler.sample(*target_, i);
            const bool match = i < n_draft && t == draft_[static_cast<std::size_t>(i)];
            tested += i < n_draft ? 1 : 0;
            accepted += match ? 1 : 0;
            if (vocab.is_eog(t)) {
                r.eog = true;
                last_row_ = i;
                break;
            }
            r.tokens.push_back(t);
            r.rows.push_back(i);
            if (match && static_cast<int32_t>(r.tokens.size()) < max_tokens_) {
                tokens_.push_back(t);
                ++confirmed;
                continue;
            }
            next = t;
            break;
        }
    } catch (...) {
        target_->seq_rm(0, base + 1 + confirmed, -1);
        pending_ = false;  // the pending token and the confirmed drafts are evaluated
        last_row_ = confirmed;
        throw;
    }
    if (confirmed < n_draft) {
        target_->seq_rm(0, base + 1 + confirmed, -1);
    }
    if (next != LLAMA_TOKEN_NULL) {
        tokens_.push_back(next);
        pending_ = true;
    } else {
        pending_ = false;
    }
    if (n_draft > 0) {
        tuner_.record_acceptance(tested, accepted);
        ++stats_.n_draft_steps;
    }
    ++stats_.n_steps;
    stats_.n_drafted += n_draft;
    stats_.n_accepted += accepted;
    stats_.n_emitted += static_cast<int64_t>(r.tokens.size());
    r.n_drafted = n_draft;
    r.n_accepted = accepted;
    r.n_evaluated = n_evaluated();
    return r;
}

}  // namespace llamabind
