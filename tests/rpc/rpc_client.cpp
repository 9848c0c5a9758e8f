// The C++ side of the RPC client (test_rpc_split.py): half of a model's layers on the RPC
// servers given, 24 greedy tokens.
//
//   rpc_client model.gguf host:port,host:port     (an empty list: everything here)

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "llamabind/llamabind.hpp"

namespace lb = llamabind;

int main(int argc, char ** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s model.gguf host:port,...\n", argv[0]);
        return 2;
    }
    try {
        lb::set_log_callback({});
        lb::ModelParams params;
        params.rpc_servers = lb::parse_rpc_servers(std::string(argv[2]));
        params.n_gpu_layers = 15;
        auto model = lb::Model::load(argv[1], params);
        std::string servers;
        for (const auto & s : model->rpc_servers()) {
            servers += (servers.empty() ? "" : ",") + s;
        }
        std::cout << "servers: " << servers << "\n";

        lb::Vocab vocab = model->vocab();
        const auto prompt = vocab.tokenize("The capital of France is", true, true);
        lb::ContextParams cparams;
        cparams.n_ctx = 256;
        cparams.n_threads = 1;
        cparams.n_threads_batch = 1;
        lb::Context ctx(model, cparams);
        lb::SamplerChain sampler;
        sampler.add_greedy();
        lb::Batch batch = lb::Batch::from_tokens(prompt);
        auto pos = static_cast<llama_pos>(prompt.size());
        for (int n = 0; n < 24; ++n) {
            ctx.decode(batch);
            const llama_token token = sampler.sample(ctx, -1);
            std::cout << token << " " << vocab.token_to_piece(token, 0, true) << "\n";
            batch.clear();
            batch.add(token, pos++, 0, true);
        }
    } catch (const lb::Error & e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
