#pragma once

#include <memory>

#include "common.hpp"
#include "llamabind/batch.hpp"

namespace llamabind::bindings {

// The Python Batch: shares its llamabind::Batch with the numpy views it hands out, so
// close() never frees memory a view still points to.
struct PyBatch {
    std::shared_ptr<Batch> batch;

    Batch & get() const;
};

}  // namespace llamabind::bindings
