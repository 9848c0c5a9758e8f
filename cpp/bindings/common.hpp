#pragma once

// Shared by the binding files: the init function of each concept, and the helpers every
// binding file uses (value conversion, GIL release with Ctrl-C and shutdown handling).

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "convert.hpp"
#include "gil.hpp"
#include "logging.hpp"

namespace py = pybind11;

namespace llamabind::bindings {

// One per concept, called in dependency order by module.cpp.
void init_errors(py::module_ & m);
void init_enums(py::module_ & m);
void init_backend(py::module_ & m);
void init_model(py::module_ & m);
void init_rpc(py::module_ & m);
void init_vocab(py::module_ & m);
void init_batch(py::module_ & m);
void init_context(py::module_ & m);
void init_sampler(py::module_ & m);
void init_lora(py::module_ & m);
void init_engine(py::module_ & m);
void init_speculative(py::module_ & m);

// rpc_servers as Python takes them: None, 'host:port,host:port', or an iterable of such
// strings (rpc.cpp).
std::vector<std::string> to_rpc_servers(const py::handle & obj);

}  // namespace llamabind::bindings
