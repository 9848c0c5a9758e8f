// Prompt processing and generation speed through the llamabind C++ layer, measured the way
// llama-bench measures them: pp = one decode of n_prompt tokens, tg = n_gen single-token
// decodes. With --sample the tg loop also samples greedily (what a real generation does).
//
//   llamabind-bench -m model.gguf [-p 512] [-n 128] [-t 2] [-r 3] [--sample] [-fa 0|1]
//
// Prints one JSON object per repetition: {"pp_tps": ..., "tg_tps": ..., "load_ms": ...}.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "llamabind/llamabind.hpp"

namespace lb = llamabind;
using clock_type = std::chrono::steady_clock;

static double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

int main(int argc, char ** argv) {
    std::string model_path;
    int n_prompt = 512;
    int n_gen = 128;
    int threads = 2;
    int reps = 3;
    int flash_attn = 0;
    bool sample = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> const char * { return i + 1 < argc ? argv[++i] : ""; };
        if (a == "-m") model_path = next();
        else if (a == "-p") n_prompt = std::atoi(next());
        else if (a == "-n") n_gen = std::atoi(next());
        else if (a == "-t") threads = std::atoi(next());
        else if (a == "-r") reps = std::atoi(next());
        else if (a == "-fa") flash_attn = std::atoi(next());
        else if (a == "--sample") sample = true;
        else {
            std::fprintf(stderr, "unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    if (model_path.empty()) {
        std::fprintf(stderr, "usage: %s -m model.gguf [-p N] [-n N] [-t N] [-r N] [-fa 0|1] [--sample]\n", argv[0]);
        return 2;
    }
    try {
        lb::set_log_callback({});
        const auto t_load = clock_type::now();
        auto model = lb::Model::load(model_path);
        const double load_ms = seconds_since(t_load) * 1e3;
        const int n_vocab = model->n_vocab();

        lb::ContextParams cp;
        cp.n_ctx = static_cast<uint32_t>(n_prompt + n_gen + 16);
        cp.n_batch = static_cast<uint32_t>(std::max(n_prompt, 1));
        cp.n_ubatch = 512;
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
        cp.flash_attn_type = flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        lb::Context ctx(model, cp);
        lb::SamplerChain greedy;
        greedy.add_greedy();

        // Random tokens, as llama-bench uses.
        std::mt19937 rng(42);
        std::uniform_int_distribution<int> dist(0, n_vocab - 1);
        std::vector<llama_token> prompt(static_cast<std::size_t>(n_prompt));
        for (auto & t : prompt) {
            t = dist(rng);
        }
        // Warm-up, as llama-bench does: one pp batch and one tg token.
        ctx.decode_tokens(prompt.data(), prompt.size(), 0);
        llama_token t0 = prompt.back();
        ctx.decode_tokens(&t0, 1, static_cast<llama_pos>(prompt.size()));

        for (int r = 0; r < reps; ++r) {
            ctx.memory_clear();
            double pp_tps = 0;
            if (n_prompt > 0) {
                const auto t = clock_type::now();
                ctx.decode_tokens(prompt.data(), prompt.size(), 0);
                pp_tps = n_prompt / seconds_since(t);
            }
            ctx.memory_clear();
            llama_token token = dist(rng);
            const auto t = clock_type::now();
            for (int i = 0; i < n_gen; ++i) {
                ctx.decode_tokens(&token, 1, i);
                if (sample) {
                    token = greedy.sample(ctx, -1);
                    if (token < 0 || token >= n_vocab) token = 0;
                }
            }
            const double tg_tps = n_gen / seconds_since(t);
            std::printf("{\"pp_tps\": %.3f, \"tg_tps\": %.3f, \"load_ms\": %.1f}\n", pp_tps, tg_tps, load_ms);
            std::fflush(stdout);
        }
    } catch (const lb::Error & e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
