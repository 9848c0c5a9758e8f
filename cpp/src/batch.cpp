#include "llamabind/batch.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "llamabind/errors.hpp"

namespace llamabind {

void Batch::Deleter::operator()(llama_batch * batch) const noexcept {
    if (batch != nullptr) {
        // llama_batch_free does not free the struct itself, only the arrays it owns.
        llama_batch_free(*batch);
        delete batch;
    }
}

Batch::Batch(int32_t capacity, int32_t embd, int32_t n_seq_max) : capacity_(capacity), embd_(embd), n_seq_max_(n_seq_max) {
    if (capacity <= 0) {
        throw InvalidArgument("[Batch] capacity must be > 0, got " + std::to_string(capacity));
    }
    if (embd < 0) {
        throw InvalidArgument("[Batch] embd must be >= 0, got " + std::to_string(embd));
    }
    if (n_seq_max <= 0) {
        throw InvalidArgument("[Batch] n_seq_max must be > 0, got " + std::to_string(n_seq_max));
    }
    batch_.reset(new llama_batch(llama_batch_init(capacity, embd, n_seq_max)));
    batch_->n_tokens = 0;
    // llama_batch_init leaves the arrays uninitialised; zero them so a view shows no garbage.
    if (batch_->token) {
        std::memset(batch_->token, 0, sizeof(llama_token) * capacity);
    }
    if (batch_->embd) {
        std::memset(batch_->embd, 0, sizeof(float) * static_cast<std::size_t>(capacity) * embd);
    }
    std::memset(batch_->pos, 0, sizeof(llama_pos) * capacity);
    std::memset(batch_->logits, 0, sizeof(int8_t) * capacity);
    for (int32_t i = 0; i < capacity; ++i) {
        batch_->n_seq_id[i] = 1;
        std::fill(batch_->seq_id[i], batch_->seq_id[i] + n_seq_max, 0);
    }
}

Batch Batch::from_tokens(const std::vector<llama_token> & tokens, llama_pos pos0, llama_seq_id seq_id, bool all_logits) {
    if (tokens.empty()) {
        throw InvalidArgument("[Batch.from_tokens] no tokens given");
    }
    Batch batch(static_cast<int32_t>(tokens.size()));
    batch.add_sequence(tokens.data(), static_cast<int32_t>(tokens.size()), pos0, seq_id, all_logits);
    return batch;
}

void Batch::add(llama_token token, llama_pos pos, const std::vector<llama_seq_id> & seq_ids, bool logits) {
    if (is_embd()) {
        throw InvalidArgument("[Batch.add] this is an embeddings batch; use add_embd");
    }
    if (batch_->n_tokens >= capacity_) {
        throw InvalidArgument("[Batch.add] batch is full (capacity " + std::to_string(capacity_) + ")");
    }
    if (seq_ids.empty() || static_cast<int32_t>(seq_ids.size()) > n_seq_max_) {
        throw InvalidArgument("[Batch.add] a token needs 1 to " + std::to_string(n_seq_max_) + " sequence ids, got " +
                              std::to_string(seq_ids.size()));
    }
    const int32_t i = batch_->n_tokens;
    batch_->token[i] = token;
    batch_->pos[i] = pos;
    batch_->n_seq_id[i] = static_cast<int32_t>(seq_ids.size());
    std::copy(seq_ids.begin(), seq_ids.end(), batch_->seq_id[i]);
    batch_->logits[i] = logits ? 1 : 0;
    batch_->n_tokens = i + 1;
}

void Batch::add(llama_token token, llama_pos pos, llama_seq_id seq_id, bool logits) {
    if (is_embd()) {
        throw InvalidArgument("[Batch.add] this is an embeddings batch; use add_embd");
    }
    if (batch_->n_tokens >= capacity_) {
        throw InvalidArgument("[Batch.add] batch is full (capacity " + std::to_string(capacity_) + ")");
    }
    const int32_t i = batch_->n_tokens;
    batch_->token[i] = token;
    batch_->pos[i] = pos;
    batch_->n_seq_id[i] = 1;
    batch_->seq_id[i][0] = seq_id;
    batch_->logits[i] = logits ? 1 : 0;
    batch_->n_tokens = i + 1;
}

void Batch::add_embd(const float * row, llama_pos pos, const std::vector<llama_seq_id> & seq_ids, bool logits) {
    if (!is_embd()) {
        throw InvalidArgument("[Batch.add_embd] this is a token batch; use add");
    }
    if (batch_->n_tokens >= capacity_) {
        throw InvalidArgument("[Batch.add_embd] batch is full (capacity " + std::to_string(capacity_) + ")");
    }
    if (seq_ids.empty() || static_cast<int32_t>(seq_ids.size()) > n_seq_max_) {
        throw InvalidArgument("[Batch.add_embd] a row needs 1 to " + std::to_string(n_seq_max_) +
                              " sequence ids, got " + std::to_string(seq_ids.size()));
    }
    const int32_t i = batch_->n_tokens;
    std::memcpy(batch_->embd + static_cast<std::size_t>(i) * embd_, row, sizeof(float) * embd_);
    batch_->pos[i] = pos;
    batch_->n_seq_id[i] = static_cast<int32_t>(seq_ids.size());
    std::copy(seq_ids.begin(), seq_ids.end(), batch_->seq_id[i]);
    batch_->logits[i] = logits ? 1 : 0;
    batch_->n_tokens = i + 1;
}

void Batch::add_sequence(const llama_token * tokens, int32_t n, llama_pos pos0, llama_seq_id seq_id, bool all_logits) {
    if (is_embd()) {
        throw InvalidArgument("[Batch.add_sequence] this is an embeddings batch");
    }
    if (n < 0 || batch_->n_tokens + n > capacity_) {
        throw InvalidArgument("[Batch.add_sequence] " + std::to_string(n) + " tokens do not fit: " +
                              std::to_string(batch_->n_tokens) + " of " + std::to_string(capacity_) + " used");
    }
    const int32_t start = batch_->n_tokens;
    for (int32_t k = 0; k < n; ++k) {
        const int32_t i = start + k;
        batch_->token[i] = tokens[k];
        batch_->pos[i] = pos0 + k;
        batch_->n_seq_id[i] = 1;
        batch_->seq_id[i][0] = seq_id;
        batch_->logits[i] = all_logits ? 1 : 0;
    }
    if (n > 0 && !all_logits) {
        batch_->logits[start + n - 1] = 1;
    }
    batch_->n_tokens = start + n;
}

namespace {

void fill_common(llama_batch & b, const llama_pos * pos, const llama_seq_id * seq_ids, const int8_t * logits, int32_t n) {
    b.n_tokens = 0;
    if (n <= 0) {
        return;
    }
    const auto count = static_cast<std::size_t>(n);
    for (int32_t i = 0; i < n; ++i) {
        b.pos[i] = pos ? pos[i] : i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = seq_ids ? seq_ids[i] : 0;
    }
    if (logits) {
        std::memcpy(b.logits, logits, count);
    } else {
        std::memset(b.logits, 0, count);
        b.logits[n - 1] = 1;
    }
    b.n_tokens = n;
}

}  // namespace

void Batch::assign(const llama_token * tokens, const llama_pos * pos, const llama_seq_id * seq_ids, const int8_t * logits,
                   int32_t n) {
    if (is_embd()) {
        throw InvalidArgument("[Batch.assign] this is an embeddings batch; use assign_embd");
    }
    if (n < 0 || n > capacity_) {
        throw InvalidArgument("[Batch.assign] " + std::to_string(n) + " tokens do not fit in capacity " +
                              std::to_string(capacity_));
    }
    if (n > 0) {
        std::memcpy(batch_->token, tokens, sizeof(llama_token) * static_cast<std::size_t>(n));
    }
    fill_common(*batch_, pos, seq_ids, logits, n);
}

void Batch::assign_embd(const float * rows, const llama_pos * pos, const llama_seq_id * seq_ids, const int8_t * logits,
                        int32_t n) {
    if (!is_embd()) {
        throw InvalidArgument("[Batch.assign_embd] this is a token batch; use assign");
    }
    if (n < 0 || n > capacity_) {
        throw InvalidArgument("[Batch.assign_embd] " + std::to_string(n) + " rows do not fit in capacity " +
                              std::to_string(capacity_));
    }
    if (n > 0) {
        std::memcpy(batch_->embd, rows, sizeof(float) * static_cast<std::size_t>(n) * static_cast<std::size_t>(embd_));
    }
    fill_common(*batch_, pos, seq_ids, logits, n);
}

void Batch::set_size(int32_t n) {
    if (n < 0 || n > capacity_) {
        throw InvalidArgument("[Batch.set_size] size must be in [0, " + std::to_string(capacity_) + "], got " +
                              std::to_string(n));
    }
    batch_->n_tokens = n;
}

int32_t Batch::n_outputs() const noexcept {
    int32_t n = 0;
    for (int32_t i = 0; i < batch_->n_tokens; ++i) {
        n += batch_->logits[i] != 0 ? 1 : 0;
    }
    return n;
}

}  // namespace llamabind
