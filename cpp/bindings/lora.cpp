// LoraAdapter.

#include "common.hpp"

#include "llamabind/lora.hpp"
#include "llamabind/model.hpp"

namespace llamabind::bindings {

void init_lora(py::module_ & m) {
    py::class_<LoraAdapter, std::shared_ptr<LoraAdapter>>(m, "LoraAdapter", R"doc(
A LoRA (or activated LoRA) adapter for one model. Apply it with
`context.set_lora_adapters([(adapter, 1.0)])`.
)doc")
        .def(py::init([](const std::shared_ptr<Model> & model, const py::object & path) {
                 const std::string p = path_str(path);
                 return call_released([&](const std::atomic<bool> *) { return LoraAdapter::load(model, p); });
             }),
             py::arg("model"), py::arg("path"), "Loads an adapter GGUF made for `model`.")
        .def("close", &LoraAdapter::close, "Drops this object's claim on the adapter. Idempotent.")
        .def_property_readonly("closed", &LoraAdapter::closed)
        .def("__enter__", [](const std::shared_ptr<LoraAdapter> & self) { return self; })
        .def("__exit__", [](LoraAdapter & self, const py::args &) { self.close(); })
        .def_property_readonly("path", &LoraAdapter::path)
        .def_property_readonly(
            "metadata",
            [](const LoraAdapter & self) { return to_dict(self.metadata()); },
            "The adapter's scalar GGUF metadata.")
        .def(
            "meta_val",
            [](const LoraAdapter & self, const std::string & key) -> py::object {
                return to_str_or_none(self.meta_val(key));
            },
            py::arg("key"))
        .def_property_readonly("alora_invocation_tokens", &LoraAdapter::alora_invocation_tokens,
                               "Invocation tokens of an activated LoRA (empty for a plain LoRA).")
        .def("__repr__", [](const LoraAdapter & self) {
            return "<llamabind.LoraAdapter '" + self.path() + "'" + (self.closed() ? " closed>" : ">");
        });
}

}  // namespace llamabind::bindings
