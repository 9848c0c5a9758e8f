#pragma once

// Engine: many sequences generated at once over one Context (continuous batching).
//
//     auto ctx = std::make_shared<llamabind::Context>(model, params);  // n_seq_max = N
//     llamabind::Engine engine(ctx);
//     for (const auto & prompt : prompts) {
//         llamabind::SamplerChain chain;
//         chain.add_greedy();
//         engine.submit(prompt, std::move(chain), {/*max_tokens=*/64});
//     }
//     while (engine.has_work()) {
//         for (const llamabind::EngineEvent & ev : engine.step()) {
//             // ev.request, ev.token, ev.finish
//         }
//     }
//
// Every step() builds one batch holding the next token of every generating sequence and,
// in the room left (n_batch), chunks of the prompts still being evaluated; it decodes that
// batch once and samples each sequence with its own SamplerChain. A sequence that finishes
// (end-of-generation token, max_tokens, its context full, cancelled, failed) gives up its
// slot at once, and a waiting request takes it in the next step.
//
// Prompt cache: a finished sequence's KV cells stay in its slot (unless cache_finished is
// off or the sequence failed). A later request whose prompt starts with the same tokens is
// put in that slot and evaluates only the rest, as a chat client resending its conversation
// would want; any other request cuts the cells back to what it shares (often nothing).
// Call clear_cache() after touching the context's sequences yourself.
//
// Shared prefixes: a request whose prompt starts with at least min_shared_prefix tokens
// already evaluated (or being evaluated) for a live sequence copies those KV cells
// (llama_memory_seq_cp) instead of evaluating them again.
//
// Threads: submit(), cancel(), cancel_all() and the counters may be called from any thread
// while another thread runs step(); step() itself runs in one thread at a time. While an
// engine runs, the Context must not be decoded by anyone else.

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"
#include "llamabind/batch.hpp"
#include "llamabind/sampler.hpp"

namespace llamabind {

class Context;

// Why a request ended (None: the event carries a token and the request goes on).
enum class FinishReason : int32_t {
    None = 0,
    Stop = 1,       // the sampled token is an end-of-generation token (it is in the event)
    Length = 2,     // max_tokens reached, or the sequence's context (n_ctx_seq) is full
    Cancelled = 3,  // cancel()/cancel_all(), or the context's cancel flag aborted the decode
    Error = 4,      // sampling or decoding failed; EngineEvent::error says why
};

struct EngineParams {
    // Most prompt tokens one step evaluates (0: as many as n_batch leaves room for). Smaller
    // values keep generating sequences fluent while long prompts arrive.
    int32_t max_prompt_tokens_per_step = 0;
    // Shortest common prefix worth copying from another sequence's KV cells (0: never copy).
    int32_t min_shared_prefix = 8;
    // Keep a finished sequence's cells in its slot for the next prompt that starts the same way.
    bool cache_finished = true;
};

struct RequestOptions {
    // Tokens to generate at most; <= 0 generates until the sequence's context is full.
    int32_t max_tokens = -1;
    // Events carry the logits row each token was sampled from (for log-probabilities).
    bool return_logits = false;
};

struct EngineEvent {
    int64_t request = 0;
    llama_token token = -1;  // the sampled token; -1 for Cancelled and Error events
    FinishReason finish = FinishReason::None;
    std::string error;           // for FinishReason::Error
    std::vector<float> logits;   // n_vocab floats, with RequestOptions::return_logits
};

struct EngineStats {
    int64_t steps = 0;                    // decodes run
    int64_t tokens_generated = 0;         // tokens sampled
    int64_t prompt_tokens = 0;            // prompt tokens of admitted requests
    int64_t prompt_tokens_evaluated = 0;  // of those, decoded by this engine
    int64_t prompt_tokens_shared = 0;     // of those, copied from another sequence
    int64_t prompt_tokens_cached = 0;     // of those, left in the slot by an earlier request
    int32_t max_active = 0;               // most sequences that shared one batch
};

class Engine {
public:
    // ctx: its n_seq_max is the number of slots. A context with kv_unified=false (llama.cpp's
    // default) gives every sequence its own n_ctx_seq cells, so one sequence filling its
    // context never disturbs another.
    explicit Engine(std::shared_ptr<Context> ctx, const EngineParams & params = {});
    ~Engine();

    Engine(const Engine &) = delete;
    Engine & operator=(const Engine &) = delete;

    // Queues a request; returns its id. The chain becomes the engine's. Throws
    // InvalidArgument for an empty prompt or one longer than the context of a sequence, and
    // OutOfRange for token ids outside the vocabulary.
    int64_t submit(std::vector<llama_token> prompt, SamplerChain sampler, const RequestOptions & options = {});
    // The checks submit() makes of a prompt, without submitting it.
    void check_prompt(const std::vector<llama_token> & prompt) const;

    // Ends a request at the next step (its slot and KV cells are freed then, and a Cancelled
    // event reports it). Unknown or finished ids are ignored.
    void cancel(int64_t request);
    void cancel_all();

    // Whether step() has anything to do (requests waiting or running, cancellations pending).
    bool has_work() const;
    std::size_t n_active() const noexcept { return n_active_.load(); }
    std::size_t n_waiting() const;
    int32_t n_slots() const noexcept { return n_slots_; }
    int32_t n_ctx_seq() const noexcept { return n_ctx_seq_; }
    EngineStats stats() const;
    // Tokens whose cells each free slot keeps from its last request (0 for slots in use).
    std::vector<int32_t> cached_tokens();
    // Forgets (and removes the cells of) what finished requests left in their slots.
    void clear_cache();

    // One decode with every active sequence, then sampling; returns what happened.
    std::vector<EngineEvent> step(const std::atomic<bool> * stop = nullptr);

    // The two halves of step(), for callers (bindings) that need different locking around
    // them: decode_step() admits, cancels and decodes; sample_step() samples and returns the
    // events of both halves.
    void decode_step(const std::atomic<bool> * stop = nullptr);
    std::vector<EngineEvent> sample_step();

    // Whether a sequence about to be sampled has a CustomSampler in its chain.
    bool sampling_needs_callbacks();

    // Ends every request and frees their cells. Idempotent; submit() throws Closed after.
    void close();

private:
    struct Request;

    void take_incoming(std::vector<std::unique_ptr<Request>> & dropped);
    void admit();
    void share_prefixes();
    void compact();
    void finish(Request & r, FinishReason reason, std::string error = {});
    void free_slot(Request & r, bool keep_cells);
    int32_t reuse_cache(Request & r);
    std::size_t choose_slot(const Request & r) const;
    void drop_cache();  // clear_cache() with step_mutex_ held
    void pick_donor(Request & r, bool independent_only);
    void release_finished(std::vector<std::unique_ptr<Request>> & dropped);
    Request * find_active(int64_t id);

    std::shared_ptr<Context> ctx_;
    EngineParams params_;
    std::shared_ptr<llama_model> model_;  // keeps vocab_ valid whatever is closed first
    const llama_vocab * vocab_ = nullptr;
    int32_t n_vocab_ = 0;
    int32_t n_slots_ = 1;
    int32_t n_ctx_seq_ = 0;
    int32_t n_batch_ = 0;
    int32_t n_swa_ = 0;

    // Filled by any thread, drained by step().
    mutable std::mutex incoming_mutex_;
    std::vector<std::unique_ptr<Request>> submitted_;
    std::vector<int64_t> cancels_;
    bool cancel_all_ = false;
    int64_t next_id_ = 1;
    bool closed_ = false;

    // Owned by the stepping thread.
    std::mutex step_mutex_;
    std::deque<std::unique_ptr<Request>> waiting_;
    std::vector<std::unique_ptr<Request>> active_;
    std::vector<bool> slot_used_;
    std::vector<std::vector<llama_token>> slot_cache_;  // tokens a free slot's cells hold
    std::vector<EngineEvent> events_;
    Batch batch_;
    bool decoded_ = false;
    std::size_t rotate_ = 0;
    std::atomic<std::size_t> n_active_{0};
    std::atomic<std::size_t> n_queued_{0};  // waiting_ plus submitted_

    mutable std::mutex stats_mutex_;
    EngineStats stats_;
};

}  // namespace llamabind
