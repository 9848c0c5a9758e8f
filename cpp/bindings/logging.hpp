#pragma once

// llama.cpp's log lines, routed to Python's `logging` without ever blocking on the GIL: a
// line logged by a thread that holds no GIL is queued and emitted at the next flush.

#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace llamabind::bindings {

// Called once from module.cpp.
void install_logging();

// Emits log lines queued while the GIL was released. Call with the GIL held.
void flush_logs();

}  // namespace llamabind::bindings
