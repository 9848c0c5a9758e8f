#pragma once

// Batch: an owned llama_batch with a fixed capacity.

#include <cstdint>
#include <memory>
#include <vector>

#include "llama.h"

namespace llamabind {

// Holds tokens (or embedding rows) with their positions, sequence ids and output flags for
// Context::decode. For one sequence, Context::decode_tokens needs no Batch at all.
//
//   llamabind::Batch batch(512);                     // room for 512 tokens
//   for (int32_t i = 0; i < n; ++i) {
//       batch.add(tokens[i], i, 0, i == n - 1);      // sequence 0, logits for the last token
//   }
//   ctx.decode(batch);
class Batch {
public:
    // capacity: tokens the batch can hold. embd > 0 makes an embeddings batch (rows of
    // `embd` floats instead of token ids). n_seq_max: sequence ids one token may carry.
    explicit Batch(int32_t capacity, int32_t embd = 0, int32_t n_seq_max = 1);

    // A token batch holding `tokens` at positions pos0, pos0+1, ... in sequence seq_id,
    // with logits requested for the last token only (or for all when all_logits).
    static Batch from_tokens(const std::vector<llama_token> & tokens, llama_pos pos0 = 0,
                             llama_seq_id seq_id = 0, bool all_logits = false);

    Batch(Batch &&) noexcept = default;
    Batch & operator=(Batch &&) noexcept = default;

    // Limits given to the constructor, and the entries currently held (size()).
    int32_t capacity() const noexcept { return capacity_; }
    int32_t size() const noexcept { return batch_->n_tokens; }
    int32_t embd() const noexcept { return embd_; }
    int32_t n_seq_max() const noexcept { return n_seq_max_; }
    bool is_embd() const noexcept { return embd_ > 0; }

    // Empties the batch (capacity stays).
    void clear() noexcept { batch_->n_tokens = 0; }

    // Appends a token. Throws InvalidArgument when full, when seq_ids is empty or longer
    // than n_seq_max, or on an embeddings batch.
    void add(llama_token token, llama_pos pos, const std::vector<llama_seq_id> & seq_ids, bool logits);
    void add(llama_token token, llama_pos pos, llama_seq_id seq_id, bool logits);

    // Appends one row of `embd` floats (embeddings batches only).
    void add_embd(const float * row, llama_pos pos, const std::vector<llama_seq_id> & seq_ids, bool logits);

    // Appends n tokens at pos0.. in one sequence; logits for the last one (or all).
    void add_sequence(const llama_token * tokens, int32_t n, llama_pos pos0, llama_seq_id seq_id,
                      bool all_logits = false);

    // Bulk fill, replacing the contents: n tokens with their positions, one sequence id
    // each and per-token output flags (null flags: last token only).
    void assign(const llama_token * tokens, const llama_pos * pos, const llama_seq_id * seq_ids,
                const int8_t * logits, int32_t n);

    // Bulk fill for an embeddings batch: n rows of embd floats.
    void assign_embd(const float * rows, const llama_pos * pos, const llama_seq_id * seq_ids,
                     const int8_t * logits, int32_t n);

    // Sets the number of valid entries after the arrays were written directly.
    void set_size(int32_t n);

    // Number of entries with their output flag set.
    int32_t n_outputs() const noexcept;

    // Raw arrays, `capacity()` entries each (token is null for embeddings batches).
    llama_token * token() noexcept { return batch_->token; }
    float * embd_data() noexcept { return batch_->embd; }
    llama_pos * pos() noexcept { return batch_->pos; }
    int32_t * n_seq_id() noexcept { return batch_->n_seq_id; }
    llama_seq_id ** seq_id() noexcept { return batch_->seq_id; }
    int8_t * logits() noexcept { return batch_->logits; }

    // The llama_batch itself, for calling llama.h directly.
    const llama_batch & raw() const noexcept { return *batch_; }

private:
    struct Deleter {
        void operator()(llama_batch * batch) const noexcept;
    };

    std::unique_ptr<llama_batch, Deleter> batch_;
    int32_t capacity_;
    int32_t embd_;
    int32_t n_seq_max_;
};

}  // namespace llamabind
