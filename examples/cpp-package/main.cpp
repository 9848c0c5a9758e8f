// Greedy generation with the installed llamabind library: prints the prompt, then the most
// likely continuation, token by token, then a newline (as llama.cpp's llama-simple does).
//
//   generate -m model.gguf [-n n_predict] [-t threads] prompt ...

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <llamabind/llamabind.hpp>

namespace lb = llamabind;

int main(int argc, char ** argv) {
    std::string model_path;
    std::string prompt;
    int n_predict = 32;
    int n_threads = 4;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if ((arg == "-m" || arg == "-n" || arg == "-t") && i + 1 < argc) {
            const char * value = argv[++i];
            if (arg == "-m") {
                model_path = value;
            } else if (arg == "-n") {
                n_predict = std::atoi(value);
            } else {
                n_threads = std::atoi(value);
            }
        } else {
            prompt += (prompt.empty() ? "" : " ") + arg;
        }
    }
    if (model_path.empty() || prompt.empty() || n_predict <= 0) {
        std::fprintf(stderr, "usage: %s -m model.gguf [-n n_predict] [-t threads] prompt ...\n", argv[0]);
        return 2;
    }

    try {
        lb::set_log_callback({});  // silence llama.cpp's log

        std::shared_ptr<lb::Model> model = lb::Model::load(model_path);
        lb::Vocab vocab = model->vocab();
        std::vector<llama_token> tokens = vocab.tokenize(prompt, /*add_special=*/true, /*parse_special=*/true);

        lb::ContextParams params;
        params.n_ctx = static_cast<uint32_t>(tokens.size() + n_predict);
        params.n_batch = static_cast<uint32_t>(tokens.size());
        params.n_threads = n_threads;
        params.n_threads_batch = n_threads;
        lb::Context ctx(model, params);

        lb::SamplerChain sampler;
        sampler.add_greedy();

        for (llama_token t : tokens) {
            std::cout << vocab.token_to_piece(t, 0, /*special=*/true);
        }
        ctx.decode_tokens(tokens.data(), tokens.size(), 0);
        auto pos = static_cast<llama_pos>(tokens.size());
        for (int i = 0; i < n_predict; ++i, ++pos) {
            llama_token next = sampler.sample(ctx);
            if (vocab.is_eog(next)) {
                break;
            }
            std::cout << vocab.token_to_piece(next, 0, /*special=*/true) << std::flush;
            if (i + 1 < n_predict) {
                ctx.decode_tokens(&next, 1, pos);
            }
        }
        std::cout << "\n";
    } catch (const lb::Error & e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
