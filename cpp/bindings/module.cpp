// llamabind._core: the compiled half of the llamabind package.

#include "common.hpp"

#include "llamabind/backend.hpp"

PYBIND11_MODULE(_core, m) {
    namespace b = llamabind::bindings;
    m.doc() = "llamabind's compiled core: pybind11 bindings over the llamabind C++ library.";
    llamabind::ensure_backend();
    b::install_logging();
    b::init_interrupts();
    // Daemon threads still inside llama.cpp at exit are stopped before the C runtime unloads it.
    py::module_::import("atexit").attr("register")(py::cpp_function(&b::begin_shutdown));
    b::init_errors(m);
    b::init_enums(m);
    b::init_backend(m);
    b::init_vocab(m);  // before Model, whose `vocab` property returns it
    b::init_model(m);
    b::init_rpc(m);
    b::init_lora(m);
    b::init_batch(m);
    b::init_context(m);
    b::init_sampler(m);
    b::init_engine(m);
    b::init_speculative(m);
}
