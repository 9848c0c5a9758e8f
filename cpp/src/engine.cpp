#include "llamabind/engine.hpp"

#include <algorithm>
#include <utility>

#include "llamabind/context.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/model.hpp"

namespace llamabind {

struct Engine::Request {
    explicit Request(SamplerChain && s) : sampler(std::move(s)) {}

    int64_t id = 0;
    std::vector<llama_token> tokens;  // the prompt, then every sampled token
    std::size_t n_prompt = 0;
    SamplerChain sampler;
    RequestOptions options;
    llama_seq_id seq = -1;
    int32_t n_past = 0;        // tokens whose KV cells the sequence holds
    int32_t n_generated = 0;
    int32_t batch_idx = -1;    // entry of this step's batch whose logits it samples
    int32_t n_in_batch = 0;    // tokens of this step's batch that are its own
    int64_t donor = -1;        // request whose cells it waits to copy
    int32_t share_len = 0;
    bool finished = false;

    bool generating() const { return tokens.size() > n_prompt; }
};

namespace {

int32_t batch_capacity(const std::shared_ptr<Context> & ctx) {
    if (!ctx) {
        throw InvalidArgument("[Engine] context is None");
    }
    return static_cast<int32_t>(ctx->n_batch());
}

}  // namespace

Engine::Engine(std::shared_ptr<Context> ctx, const EngineParams & params)
    : ctx_(std::move(ctx)), params_(params), batch_(batch_capacity(ctx_)) {
    if (params_.max_prompt_tokens_per_step < 0) {
        throw InvalidArgument("[Engine] max_prompt_tokens_per_step must be >= 0, got " +
                              std::to_string(params_.max_prompt_tokens_per_step));
    }
    if (params_.min_shared_prefix < 0) {
        throw InvalidArgument("[Engine] min_shared_prefix must be >= 0, got " +
                              std::to_string(params_.min_shared_prefix));
    }
    model_ = ctx_->model()->handle();
    vocab_ = llama_model_get_vocab(model_.get());
    n_vocab_ = ctx_->n_vocab();
    n_slots_ = static_cast<int32_t>(ctx_->n_seq_max());
    n_ctx_seq_ = static_cast<int32_t>(ctx_->n_ctx_seq());
    n_batch_ = static_cast<int32_t>(ctx_->n_batch());
    n_swa_ = llama_model_n_swa(model_.get());
    slot_used_.assign(static_cast<std::size_t>(n_slots_), false);
    slot_cache_.resize(static_cast<std::size_t>(n_slots_));
}

Engine::~Engine() {
    try {
        close();
    } catch (...) {
    }
}

void Engine::check_prompt(const std::vector<llama_token> & prompt) const {
    if (prompt.empty()) {
        throw InvalidArgument("[Engine.submit] the prompt is empty");
    }
    if (prompt.size() > static_cast<std::size_t>(n_ctx_seq_)) {
        throw InvalidArgument("[Engine.submit] the prompt of " + std::to_string(prompt.size()) +
                              " tokens does not fit the context of one sequence (n_ctx_seq=" +
                              std::to_string(n_ctx_seq_) + ")");
    }
    for (std::size_t i = 0; i < prompt.size(); ++i) {
        if (prompt[i] < 0 || prompt[i] >= n_vocab_) {
            throw OutOfRange("[Engine.submit] token " + std::to_string(prompt[i]) + " at index " + std::to_string(i) +
                             " is outside the vocabulary (n_vocab=" + std::to_string(n_vocab_) + ")");
        }
    }
}

int64_t Engine::submit(std::vector<llama_token> prompt, SamplerChain sampler, const RequestOptions & options) {
    check_prompt(prompt);
    if (sampler.closed()) {
        throw Closed("[Engine.submit] the sampler chain is closed (was it given to another request?)");
    }
    if (sampler.size() == 0) {
        throw InvalidArgument("[Engine.submit] the sampler chain is empty; add a sampler that selects a token");
    }
    auto r = std::make_unique<Request>(std::move(sampler));
    r->tokens = std::move(prompt);
    r->n_prompt = r->tokens.size();
    r->options = options;
    {
        std::lock_guard<std::mutex> lock(incoming_mutex_);
        if (!closed_) {
            r->id = next_id_++;
            const int64_t id = r->id;
            submitted_.push_back(std::move(r));
            ++n_queued_;
            return id;
        }
    }
    // Thrown outside the lock: dropping the request may run a binding's sampler destructor.
    throw Closed("[Engine.submit] the engine is closed");
}

void Engine::cancel(int64_t request) {
    std::lock_guard<std::mutex> lock(incoming_mutex_);
    cancels_.push_back(request);
}

void Engine::cancel_all() {
    std::lock_guard<std::mutex> lock(incoming_mutex_);
    cancel_all_ = true;
}

bool Engine::has_work() const {
    std::lock_guard<std::mutex> lock(incoming_mutex_);
    return n_queued_.load() > 0 || n_active_.load() > 0 || !cancels_.empty() || cancel_all_;
}

std::size_t Engine::n_waiting() const { return n_queued_.load(); }

EngineStats Engine::stats() const {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    return stats_;
}

Engine::Request * Engine::find_active(int64_t id) {
    for (auto & r : active_) {
        if (r->id == id && !r->finished) {
            return r.get();
        }
    }
    return nullptr;
}

std::vector<int32_t> Engine::cached_tokens() {
    std::lock_guard<std::mutex> lock(step_mutex_);
    std::vector<int32_t> out;
    for (std::size_t s = 0; s < slot_cache_.size(); ++s) {
        out.push_back(slot_used_[s] ? 0 : static_cast<int32_t>(slot_cache_[s].size()));
    }
    return out;
}

void Engine::clear_cache() {
    std::lock_guard<std::mutex> lock(step_mutex_);
    drop_cache();
}

void Engine::drop_cache() {
    for (std::size_t s = 0; s < slot_cache_.size(); ++s) {
        if (slot_used_[s] || slot_cache_[s].empty()) {
            continue;
        }
        slot_cache_[s].clear();
        try {
            ctx_->seq_rm(static_cast<llama_seq_id>(s), -1, -1);
        } catch (const Closed &) {
            // The context is gone, and its cells with it.
        }
    }
}

void Engine::free_slot(Request & r, bool keep_cells) {
    if (r.seq < 0) {
        return;
    }
    auto & cache = slot_cache_[static_cast<std::size_t>(r.seq)];
    cache.clear();
    if (keep_cells && params_.cache_finished && r.n_past > 0) {
        cache.assign(r.tokens.begin(), r.tokens.begin() + r.n_past);
    } else {
        try {
            ctx_->seq_rm(r.seq, -1, -1);
        } catch (const Closed &) {
            // The context is gone, and its cells with it.
        }
    }
    slot_used_[static_cast<std::size_t>(r.seq)] = false;
    r.seq = -1;
}

namespace {

// Length of the common prefix of a and b, at most limit.
std::size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b, std::size_t limit) {
    const std::size_t n = std::min({limit, a.size(), b.size()});
    std::size_t k = 0;
    while (k < n && a[k] == b[k]) {
        ++k;
    }
    return k;
}

}  // namespace

int32_t Engine::reuse_cache(Request & r) {
    auto & cache = slot_cache_[static_cast<std::size_t>(r.seq)];
    // The last prompt token is always evaluated: its logits give the first sampled token.
    auto n = static_cast<int32_t>(common_prefix(cache, r.tokens, r.n_prompt - 1));
    cache.clear();
    // Partial removal fails for recurrent memory; then nothing is kept.
    if (n == 0 || !ctx_->seq_rm(r.seq, n, -1)) {
        ctx_->seq_rm(r.seq, -1, -1);
        return 0;
    }
    // The cells must be exactly positions 0..n-1 (a sliding-window cache keeps the last
    // n_swa of them), or something else changed the sequence since.
    const llama_pos lowest = n_swa_ > 0 ? std::max(0, n - n_swa_) : 0;
    if (ctx_->seq_pos_max(r.seq) != n - 1 || ctx_->seq_pos_min(r.seq) > lowest) {
        ctx_->seq_rm(r.seq, -1, -1);
        return 0;
    }
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.prompt_tokens_cached += n;
    return n;
}

void Engine::finish(Request & r, FinishReason reason, std::string error) {
    if (r.finished) {
        return;
    }
    r.finished = true;
    // After a failed or aborted decode the sequence's cells are not worth keeping.
    free_slot(r, error.empty());
    EngineEvent ev;
    ev.request = r.id;
    ev.finish = reason;
    ev.error = std::move(error);
    events_.push_back(std::move(ev));
}

void Engine::take_incoming(std::vector<std::unique_ptr<Request>> & dropped) {
    std::vector<std::unique_ptr<Request>> fresh;
    std::vector<int64_t> cancels;
    bool all = false;
    {
        std::lock_guard<std::mutex> lock(incoming_mutex_);
        fresh.swap(submitted_);
        cancels.swap(cancels_);
        all = cancel_all_;
        cancel_all_ = false;
    }
    for (auto & r : fresh) {
        waiting_.push_back(std::move(r));
    }
    auto drop_waiting = [&](auto it) {
        EngineEvent ev;
        ev.request = (*it)->id;
        ev.finish = FinishReason::Cancelled;
        events_.push_back(std::move(ev));
        dropped.push_back(std::move(*it));
        --n_queued_;
        return waiting_.erase(it);
    };
    if (all) {
        for (auto it = waiting_.begin(); it != waiting_.end();) {
            it = drop_waiting(it);
        }
        for (auto & r : active_) {
            finish(*r, FinishReason::Cancelled);
        }
    }
    for (const int64_t id : cancels) {
        auto it = std::find_if(waiting_.begin(), waiting_.end(), [id](const auto & r) { return r->id == id; });
        if (it != waiting_.end()) {
            drop_waiting(it);
        } else if (Request * r = find_active(id)) {
            finish(*r, FinishReason::Cancelled);
        }
    }
}

void Engine::pick_donor(Request & r, bool independent_only) {
    r.donor = -1;
    r.share_len = 0;
    if (params_.min_shared_prefix <= 0 || r.n_prompt < 2) {
        return;
    }
    const std::size_t limit = r.n_prompt - 1;
    std::size_t best = 0;
    for (const auto & a : active_) {
        if (a.get() == &r || a->finished || a->seq < 0 || (independent_only && a->donor >= 0)) {
            continue;
        }
        const std::size_t k = common_prefix(a->tokens, r.tokens, limit);
        if (k > best) {
            best = k;
            r.donor = a->id;
        }
    }
    // Worth a copy only beyond what the slot already holds.
    if (best < static_cast<std::size_t>(params_.min_shared_prefix) || best <= static_cast<std::size_t>(r.n_past)) {
        r.donor = -1;
        return;
    }
    r.share_len = static_cast<int32_t>(best);
}

std::size_t Engine::choose_slot(const Request & r) const {
    // The lowest free slot, unless another free slot holds a worthwhile part of the prompt
    // (a higher slot costs a stream copy in compact() while lower ones are free).
    std::size_t first = slot_used_.size();
    std::size_t best = first;
    std::size_t best_len = 0;
    for (std::size_t s = 0; s < slot_used_.size(); ++s) {
        if (slot_used_[s]) {
            continue;
        }
        first = std::min(first, s);
        const std::size_t k = common_prefix(slot_cache_[s], r.tokens, r.n_prompt - 1);
        if (k > best_len) {
            best_len = k;
            best = s;
        }
    }
    const auto worth = static_cast<std::size_t>(std::max(1, params_.min_shared_prefix));
    return best_len > 0 && (best == first || best_len >= worth) ? best : first;
}

void Engine::admit() {
    while (!waiting_.empty()) {
        const std::size_t slot = choose_slot(*waiting_.front());
        if (slot == slot_used_.size()) {
            break;
        }
        std::unique_ptr<Request> r = std::move(waiting_.front());
        waiting_.pop_front();
        --n_queued_;
        r->seq = static_cast<llama_seq_id>(slot);
        slot_used_[slot] = true;
        {
            std::lock_guard<std::mutex> lock(stats_mutex_);
            stats_.prompt_tokens += static_cast<int64_t>(r->n_prompt);
        }
        // Keeps the part of the slot's cells the prompt starts with; anything else there
        // (another prompt, direct use of the context) would be read as part of this sequence.
        r->n_past = reuse_cache(*r);
        // Donors admitted earlier never wait on a later request, so no cycle can form.
        pick_donor(*r, false);
        active_.push_back(std::move(r));
    }
}

void Engine::share_prefixes() {
    for (auto & r : active_) {
        if (r->finished || r->donor < 0) {
            continue;
        }
        Request * d = find_active(r->donor);
        if (d == nullptr) {
            // The donor ended before evaluating the shared part; find another or go alone.
            pick_donor(*r, true);
            d = r->donor >= 0 ? find_active(r->donor) : nullptr;
            if (d == nullptr) {
                continue;
            }
        }
        if (d->n_past < r->share_len) {
            continue;  // the donor is still evaluating the shared tokens
        }
        const int32_t n = r->share_len;
        r->donor = -1;
        r->share_len = 0;
        // Without kv_unified each sequence has its own KV stream and llama.cpp copies whole
        // streams only: copy everything, then cut it back to the shared prefix. What the
        // slot kept from its last request (a shorter prefix) goes first.
        const int32_t kept = r->n_past;
        r->n_past = 0;
        ctx_->seq_rm(r->seq, -1, -1);
        ctx_->seq_cp(d->seq, r->seq, -1, -1);
        ctx_->seq_rm(r->seq, n, -1);
        const llama_pos pmin = ctx_->seq_pos_min(r->seq);
        const llama_pos pmax = ctx_->seq_pos_max(r->seq);
        // A sliding-window cache may already have dropped cells the next positions attend to
        // (the test llama-server uses); a full cache must hold the prefix from position 0.
        const llama_pos lowest = n_swa_ > 0 ? std::max(0, n - n_swa_) : 0;
        std::lock_guard<std::mutex> lock(stats_mutex_);
        stats_.prompt_tokens_cached -= kept;
        if (pmax != n - 1 || pmin > lowest) {
            ctx_->seq_rm(r->seq, -1, -1);
            continue;
        }
        r->n_past = n;
        stats_.prompt_tokens_shared += n;
    }
}

void Engine::compact() {
    // Without kv_unified llama.cpp puts only consecutive sequence ids into one ubatch, so a
    // gap left by a finished sequence would split every step into several graph
    // computations. Move the highest sequences down into the gaps (a copy of their KV stream).
    for (;;) {
        const auto slot = std::find(slot_used_.begin(), slot_used_.end(), false);
        if (slot == slot_used_.end()) {
            return;
        }
        const auto gap = static_cast<llama_seq_id>(slot - slot_used_.begin());
        Request * top = nullptr;
        for (auto & r : active_) {
            if (!r->finished && r->seq > gap && (top == nullptr || r->seq > top->seq)) {
                top = r.get();
            }
        }
        if (top == nullptr) {
            return;
        }
        slot_cache_[static_cast<std::size_t>(gap)].clear();
        ctx_->seq_rm(gap, -1, -1);
        ctx_->seq_cp(top->seq, gap, -1, -1);
        ctx_->seq_rm(top->seq, -1, -1);
        slot_used_[static_cast<std::size_t>(top->seq)] = false;
        slot_used_[static_cast<std::size_t>(gap)] = true;
        top->seq = gap;
    }
}

void Engine::release_finished(std::vector<std::unique_ptr<Request>> & dropped) {
    for (auto it = active_.begin(); it != active_.end();) {
        if ((*it)->finished) {
            dropped.push_back(std::move(*it));
            it = active_.erase(it);
        } else {
            ++it;
        }
    }
    n_active_ = active_.size();
}

void Engine::decode_step(const std::atomic<bool> * stop) {
    std::vector<std::unique_ptr<Request>> dropped;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(step_mutex_);
    decoded_ = false;
    take_incoming(dropped);
    admit();
    compact();
    share_prefixes();

    // Plan: generation first, one token per sequence (a rotating start keeps it fair when
    // n_batch is smaller than the number of sequences), then prompt chunks, oldest request
    // first, in the room left.
    for (auto & r : active_) {
        r->batch_idx = -1;
        r->n_in_batch = 0;
    }
    int32_t room = n_batch_;
    const std::size_t n = active_.size();
    for (std::size_t k = 0; k < n && room > 0; ++k) {
        Request & r = *active_[(rotate_ + k) % n];
        if (!r.finished && r.generating()) {
            r.n_in_batch = 1;
            --room;
        }
    }
    rotate_ = n > 0 ? (rotate_ + 1) % n : 0;
    int32_t budget = room;
    if (params_.max_prompt_tokens_per_step > 0) {
        budget = std::min(budget, params_.max_prompt_tokens_per_step);
    }
    int32_t n_prompt_tokens = 0;
    for (auto & rp : active_) {
        Request & r = *rp;
        if (budget <= 0) {
            break;
        }
        if (r.finished || r.generating() || r.donor >= 0) {
            continue;
        }
        r.n_in_batch = std::min(static_cast<int32_t>(r.n_prompt) - r.n_past, budget);
        budget -= r.n_in_batch;
        n_prompt_tokens += r.n_in_batch;
    }

    // Fill the batch in sequence order: with one KV stream per sequence, llama.cpp puts only
    // consecutive sequence ids into one ubatch (one graph computation).
    std::vector<Request *> by_seq(static_cast<std::size_t>(n_slots_), nullptr);
    for (auto & r : active_) {
        if (r->n_in_batch > 0) {
            by_seq[static_cast<std::size_t>(r->seq)] = r.get();
        }
    }
    batch_.clear();
    for (Request * r : by_seq) {
        if (r == nullptr) {
            continue;
        }
        if (r->generating()) {
            r->batch_idx = batch_.size();
            batch_.add(r->tokens.back(), r->n_past, r->seq, true);
            continue;
        }
        for (int32_t i = 0; i < r->n_in_batch; ++i) {
            batch_.add(r->tokens[static_cast<std::size_t>(r->n_past + i)], r->n_past + i, r->seq, false);
        }
        if (r->n_past + r->n_in_batch == static_cast<int32_t>(r->n_prompt)) {
            r->batch_idx = batch_.size() - 1;
            batch_.logits()[r->batch_idx] = 1;
        }
    }

    if (batch_.size() > 0) {
        try {
            ctx_->decode(batch_, stop);
            decoded_ = true;
            int32_t n_seqs = 0;
            for (auto & r : active_) {
                if (r->n_in_batch > 0) {
                    r->n_past += r->n_in_batch;
                    ++n_seqs;
                }
            }
            std::lock_guard<std::mutex> stats_lock(stats_mutex_);
            ++stats_.steps;
            stats_.prompt_tokens_evaluated += n_prompt_tokens;
            stats_.max_active = std::max(stats_.max_active, n_seqs);
        } catch (const Aborted & e) {
            for (auto & r : active_) {
                if (r->n_in_batch > 0) {
                    finish(*r, FinishReason::Cancelled, e.what());
                }
            }
        } catch (const Error & e) {
            // The batch failed as a whole; its sequences end, the others go on.
            for (auto & r : active_) {
                if (r->n_in_batch > 0) {
                    finish(*r, FinishReason::Error, e.what());
                }
            }
        }
    }
    release_finished(dropped);
}

std::vector<EngineEvent> Engine::sample_step() {
    std::vector<std::unique_ptr<Request>> dropped;
    std::vector<EngineEvent> out;
    std::lock_guard<std::mutex> lock(step_mutex_);
    if (decoded_) {
        decoded_ = false;
        int64_t n_sampled = 0;
        for (auto & rp : active_) {
            Request & r = *rp;
            if (r.finished || r.batch_idx < 0) {
                continue;
            }
            const int32_t idx = r.batch_idx;
            r.batch_idx = -1;
            EngineEvent ev;
            ev.request = r.id;
            try {
                ev.token = r.sampler.sample(*ctx_, idx);
                if (r.options.return_logits) {
                    ev.logits = ctx_->logits_copy(idx);
                }
            } catch (const std::exception & e) {
                finish(r, FinishReason::Error, e.what());
                continue;
            }
            ++n_sampled;
            ++r.n_generated;
            if (llama_vocab_is_eog(vocab_, ev.token)) {
                ev.finish = FinishReason::Stop;
            } else if (r.options.max_tokens > 0 && r.n_generated >= r.options.max_tokens) {
                ev.finish = FinishReason::Length;
            } else if (r.n_past >= n_ctx_seq_) {
                // No position left to evaluate this token at.
                ev.finish = FinishReason::Length;
            }
            if (ev.finish != FinishReason::None) {
                r.finished = true;
                free_slot(r, true);
            } else {
                r.tokens.push_back(ev.token);
            }
            events_.push_back(std::move(ev));
        }
        std::lock_guard<std::mutex> stats_lock(stats_mutex_);
        stats_.tokens_generated += n_sampled;
    }
    release_finished(dropped);
    out.swap(events_);
    return out;
}

std::vector<EngineEvent> Engine::step(const std::atomic<bool> * stop) {
    decode_step(stop);
    return sample_step();
}

bool Engine::sampling_needs_callbacks() {
    std::lock_guard<std::mutex> lock(step_mutex_);
    if (!decoded_) {
        return false;
    }
    return std::any_of(active_.begin(), active_.end(), [](const auto & r) {
        return !r->finished && r->batch_idx >= 0 && r->sampler.has_custom();
    });
}

void Engine::close() {
    std::vector<std::unique_ptr<Request>> dropped;
    {
        std::lock_guard<std::mutex> lock(incoming_mutex_);
        closed_ = true;
        for (auto & r : submitted_) {
            dropped.push_back(std::move(r));
        }
        submitted_.clear();
        cancels_.clear();
        cancel_all_ = false;
    }
    std::lock_guard<std::mutex> lock(step_mutex_);
    for (auto & r : waiting_) {
        dropped.push_back(std::move(r));
    }
    waiting_.clear();
    for (auto & r : active_) {
        free_slot(*r, false);
        dropped.push_back(std::move(r));
    }
    active_.clear();
    drop_cache();
    events_.clear();
    decoded_ = false;
    n_active_ = 0;
    n_queued_ = 0;
}

}  // namespace llamabind
