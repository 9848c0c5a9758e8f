// llama.cpp's own RPC client path, without llamabind (test_rpc_split.py): the servers are
// added to ggml's RPC backend and their devices handed to llama_model_load_from_file, as
// llama.cpp's tools do for --rpc; then 24 greedy tokens through llama.h alone.
//
//   ref_rpc_client model.gguf host:port,host:port     (an empty list: everything here)

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "llama.h"

namespace {

void quiet(ggml_log_level, const char *, void *) {}

// Every device of every server, in the order given, then nothing else (no local GPU here).
std::vector<ggml_backend_dev_t> rpc_devices(const std::string & list) {
    std::vector<ggml_backend_dev_t> devices;
    std::stringstream in(list);
    std::string endpoint;
    while (std::getline(in, endpoint, ',')) {
        ggml_backend_reg_t reg = ggml_backend_rpc_add_server(endpoint.c_str());
        if (reg == nullptr) {
            std::fprintf(stderr, "cannot add RPC server %s\n", endpoint.c_str());
            std::exit(1);
        }
        for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); ++i) {
            devices.push_back(ggml_backend_reg_dev_get(reg, i));
        }
    }
    return devices;
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s model.gguf host:port,...\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, nullptr);
    ggml_backend_load_all();
    std::vector<ggml_backend_dev_t> devices = rpc_devices(argv[2]);
    const bool split = !devices.empty();
    devices.push_back(nullptr);

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = split ? 15 : 0;
    mparams.devices = split ? devices.data() : nullptr;
    llama_model * model = llama_model_load_from_file(argv[1], mparams);
    if (model == nullptr) {
        std::fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const std::string prompt = "The capital of France is";
    std::vector<llama_token> tokens(prompt.size() + 8);
    const int n_prompt = llama_tokenize(vocab, prompt.c_str(), static_cast<int32_t>(prompt.size()), tokens.data(),
                                        static_cast<int32_t>(tokens.size()), true, true);
    if (n_prompt < 0) {
        return 1;
    }
    tokens.resize(static_cast<size_t>(n_prompt));

    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = 256;
    cparams.n_threads = 1;
    cparams.n_threads_batch = 1;
    llama_context * ctx = llama_init_from_model(model, cparams);
    llama_sampler * sampler = llama_sampler_init_greedy();

    std::printf("devices: %zu\n", devices.size() - 1);
    llama_batch batch = llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size()));
    llama_token token = 0;
    for (int n = 0; n < 24; ++n) {
        if (llama_decode(ctx, batch) != 0) {
            std::fprintf(stderr, "decode failed\n");
            return 1;
        }
        token = llama_sampler_sample(sampler, ctx, -1);
        char piece[256];
        const int len = llama_token_to_piece(vocab, token, piece, sizeof(piece), 0, true);
        std::printf("%d %.*s\n", token, len > 0 ? len : 0, piece);
        batch = llama_batch_get_one(&token, 1);
    }
    llama_sampler_free(sampler);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
