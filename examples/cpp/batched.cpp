// Several prompts generated at once with llamabind::Engine (continuous batching): every
// step decodes one batch holding the next token of each sequence, greedy sampling.
//
//   llamabind-batched -m model.gguf [-n n_predict] [-t threads] [-s slots] prompt [prompt ...]
//
// Prints, per prompt in the order given, "<index>: <generated token ids>" on stdout and the
// text on stderr.

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "llamabind/llamabind.hpp"

namespace lb = llamabind;

namespace {

int usage(const char * argv0) {
    std::fprintf(stderr, "usage: %s -m model.gguf [-n n_predict] [-t threads] [-s slots] prompt [prompt ...]\n",
                 argv0);
    return 2;
}

}  // namespace

int main(int argc, char ** argv) {
    std::string model_path;
    int n_predict = 32;
    int n_threads = 4;
    int n_slots = 4;
    std::vector<std::string> prompts;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool takes_value = arg == "-m" || arg == "-n" || arg == "-t" || arg == "-s";
        if (takes_value && i + 1 >= argc) {
            return usage(argv[0]);
        }
        if (arg == "-m") {
            model_path = argv[++i];
        } else if (arg == "-n") {
            n_predict = std::atoi(argv[++i]);
        } else if (arg == "-t") {
            n_threads = std::atoi(argv[++i]);
        } else if (arg == "-s") {
            n_slots = std::atoi(argv[++i]);
        } else {
            prompts.push_back(arg);
        }
    }
    if (model_path.empty() || n_predict <= 0 || n_slots <= 0 || prompts.empty()) {
        return usage(argv[0]);
    }

    try {
        lb::set_log_callback({});

        auto model = lb::Model::load(model_path);
        lb::Vocab vocab = model->vocab();

        lb::ContextParams cparams;
        cparams.n_seq_max = static_cast<uint32_t>(n_slots);
        cparams.n_ctx = static_cast<uint32_t>(n_slots) * 512;  // 512 tokens per sequence
        cparams.n_threads = n_threads;
        cparams.n_threads_batch = n_threads;
        auto ctx = std::make_shared<lb::Context>(model, cparams);
        lb::Engine engine(ctx);

        std::map<int64_t, std::size_t> index;  // request id -> prompt index
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            lb::SamplerChain sampler;
            sampler.add_greedy();
            lb::RequestOptions options;
            options.max_tokens = n_predict;
            const auto tokens = vocab.tokenize(prompts[i], /*add_special=*/true, /*parse_special=*/true);
            index[engine.submit(tokens, std::move(sampler), options)] = i;
        }

        std::vector<std::vector<llama_token>> generated(prompts.size());
        while (engine.has_work()) {
            for (const lb::EngineEvent & ev : engine.step()) {
                if (ev.finish == lb::FinishReason::Error) {
                    std::fprintf(stderr, "error: prompt %zu: %s\n", index[ev.request], ev.error.c_str());
                    return 1;
                }
                if (ev.token >= 0 && !vocab.is_eog(ev.token)) {
                    generated[index[ev.request]].push_back(ev.token);
                }
            }
        }

        for (std::size_t i = 0; i < prompts.size(); ++i) {
            std::printf("%zu:", i);
            std::string text;
            for (llama_token t : generated[i]) {
                std::printf(" %d", t);
                text += vocab.token_to_piece(t, 0, true);
            }
            std::printf("\n");
            std::fprintf(stderr, "%zu: %s%s\n", i, prompts[i].c_str(), text.c_str());
        }
    } catch (const lb::Error & e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
