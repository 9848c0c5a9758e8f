#pragma once

// The llamabind C++ library: RAII classes over llama.h. Include this one header.

#include "llamabind/backend.hpp"
#include "llamabind/batch.hpp"
#include "llamabind/context.hpp"
#include "llamabind/engine.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/lora.hpp"
#include "llamabind/model.hpp"
#include "llamabind/sampler.hpp"
#include "llamabind/vocab.hpp"
