#pragma once

// The llamabind C++ library: RAII classes over llama.h. Include this one header.
//
//   auto model = llamabind::Model::load("model.gguf");       // shared_ptr<Model>
//   llamabind::Vocab vocab = model->vocab();
//   llamabind::Context ctx(model, {});                        // keeps the model alive
//   llamabind::SamplerChain sampler;
//   sampler.add_top_k(40).add_temp(0.8f).add_dist(1234);
//   auto tokens = vocab.tokenize("Once upon a time");
//   ctx.decode_tokens(tokens.data(), tokens.size(), 0);
//   llama_token next = sampler.sample(ctx);                   // then decode it at pos = tokens.size()
//
// Every failure is an exception derived from llamabind::Error (errors.hpp); handles are
// owned by unique_ptr/shared_ptr and freed in the right order whatever order objects are
// destroyed in. From CMake: find_package(llamabind CONFIG REQUIRED) and link
// llamabind::llamabind (or add_subdirectory of the source tree).
//
//   backend.hpp  process-wide: backend init, logging, versions, devices, chat templates
//   model.hpp    Model, ModelParams, quantize()
//   vocab.hpp    Vocab: special tokens, tokenize, detokenize
//   context.hpp  Context, ContextParams: decode/encode, logits, embeddings, KV memory, state
//   batch.hpp    Batch: an owned llama_batch
//   sampler.hpp  SamplerChain, CustomSampler
//   lora.hpp     LoraAdapter
//   draft.hpp    Drafter, ModelDrafter (a draft model), NgramDrafter (prompt lookup)
//   speculative.hpp  Speculator (speculative decoding), DraftTuner
//   errors.hpp   the exception hierarchy

#include "llamabind/backend.hpp"
#include "llamabind/batch.hpp"
#include "llamabind/context.hpp"
#include "llamabind/draft.hpp"
#include "llamabind/engine.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/lora.hpp"
#include "llamabind/model.hpp"
#include "llamabind/rpc.hpp"
#include "llamabind/sampler.hpp"
#include "llamabind/speculative.hpp"
#include "llamabind/vocab.hpp"
