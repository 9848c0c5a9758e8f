// Greedy generation with the llamabind C++ library: load a model, decode a prompt, sample
// the most likely token until n_predict tokens or end of generation, print the text.
//
//   llamabind-simple -m model.gguf [-n n_predict] [-t threads] [--tokens] [prompt ...]
//
// --tokens also prints the generated token ids on stderr, one line.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "llamabind/llamabind.hpp"

namespace lb = llamabind;

namespace {

int usage(const char * argv0) {
    std::fprintf(stderr, "usage: %s -m model.gguf [-n n_predict] [-t threads] [--tokens] [prompt ...]\n", argv0);
    return 2;
}

}  // namespace

int main(int argc, char ** argv) {
    std::string model_path;
    std::string prompt = "Hello my name is";
    int n_predict = 32;
    int n_threads = 4;
    bool print_tokens = false;

    int i = 1;
    for (; i < argc; ++i) {
        const std::string arg = argv[i];
        if ((arg == "-m" || arg == "-n" || arg == "-t") && i + 1 >= argc) {
            return usage(argv[0]);
        }
        if (arg == "-m") {
            model_path = argv[++i];
        } else if (arg == "-n") {
            n_predict = std::atoi(argv[++i]);
        } else if (arg == "-t") {
            n_threads = std::atoi(argv[++i]);
        } else if (arg == "--tokens") {
            print_tokens = true;
        } else {
            break;
        }
    }
    if (model_path.empty() || n_predict <= 0) {
        return usage(argv[0]);
    }
    if (i < argc) {
        prompt = argv[i++];
        for (; i < argc; ++i) {
            prompt += " ";
            prompt += argv[i];
        }
    }

    try {
        lb::set_log_callback({});  // quiet: only our output

        auto model = lb::Model::load(model_path);
        lb::Vocab vocab = model->vocab();
        const std::vector<llama_token> prompt_tokens = vocab.tokenize(prompt, /*add_special=*/true,
                                                                      /*parse_special=*/true);
        if (prompt_tokens.empty()) {
            std::fprintf(stderr, "error: the prompt has no tokens\n");
            return 1;
        }

        lb::ContextParams cparams;
        cparams.n_ctx = static_cast<uint32_t>(prompt_tokens.size() + n_predict);
        cparams.n_batch = static_cast<uint32_t>(prompt_tokens.size());
        cparams.n_threads = n_threads;
        cparams.n_threads_batch = n_threads;
        lb::Context ctx(model, cparams);

        lb::SamplerChain sampler;
        sampler.add_greedy();

        for (llama_token t : prompt_tokens) {
            std::cout << vocab.token_to_piece(t, 0, true);
        }

        lb::Batch batch = lb::Batch::from_tokens(prompt_tokens);
        llama_pos pos = static_cast<llama_pos>(prompt_tokens.size());
        std::vector<llama_token> generated;
        for (int n = 0; n < n_predict; ++n) {
            ctx.decode(batch);
            const llama_token token = sampler.sample(ctx, -1);
            if (vocab.is_eog(token)) {
                break;
            }
            generated.push_back(token);
            std::cout << vocab.token_to_piece(token, 0, true) << std::flush;
            batch.clear();
            batch.add(token, pos++, 0, true);
        }
        std::cout << "\n";

        if (print_tokens) {
            for (std::size_t k = 0; k < generated.size(); ++k) {
                std::fprintf(stderr, "%s%d", k ? " " : "", generated[k]);
            }
            std::fprintf(stderr, "\n");
        }
    } catch (const lb::Error & e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
