// Model and quantize().

#include "common.hpp"

#include "llamabind/errors.hpp"
#include "llamabind/model.hpp"
#include "llamabind/vocab.hpp"

namespace llamabind::bindings {

namespace {

std::vector<KvOverride> to_kv_overrides(const py::object & obj, const char * where) {
    std::vector<KvOverride> out;
    if (obj.is_none()) {
        return out;
    }
    if (!py::isinstance<py::dict>(obj)) {
        throw py::type_error(std::string("[") + where + "] kv_overrides must be a dict of str to int/float/bool/str");
    }
    for (const auto & [k, v] : py::reinterpret_borrow<py::dict>(obj)) {
        KvOverride ov;
        if (!py::isinstance<py::str>(k)) {
            throw py::type_error(std::string("[") + where + "] kv_overrides keys must be str");
        }
        ov.key = to_bytes(k, where);
        if (py::isinstance<py::bool_>(v)) {
            ov.value = v.cast<bool>();
        } else if (py::isinstance<py::int_>(v)) {
            ov.value = v.cast<int64_t>();
        } else if (py::isinstance<py::float_>(v)) {
            ov.value = v.cast<double>();
        } else if (py::isinstance<py::str>(v)) {
            ov.value = to_bytes(v, where);
        } else {
            throw py::type_error(std::string("[") + where + "] kv_overrides['" + ov.key +
                                 "'] must be int, float, bool or str, got " +
                                 std::string(py::str(py::type::handle_of(v).attr("__name__"))));
        }
        out.push_back(std::move(ov));
    }
    return out;
}

std::shared_ptr<Model> load_model(const py::object & path, int32_t n_gpu_layers, llama_split_mode split_mode,
                                  int32_t main_gpu, const std::optional<std::vector<float>> & tensor_split,
                                  llama_load_mode load_mode, std::optional<bool> use_mmap, std::optional<bool> use_mlock,
                                  bool vocab_only, bool check_tensors, bool use_extra_bufts, bool no_host,
                                  const py::object & kv_overrides, const py::object & progress_callback,
                                  const py::object & rpc_servers) {
    std::vector<std::string> paths;
    if (py::isinstance<py::list>(path) || py::isinstance<py::tuple>(path)) {
        for (const auto & p : path) {
            paths.push_back(path_str(p));
        }
    } else {
        paths.push_back(path_str(path));
    }
    ModelParams params;
    params.n_gpu_layers = n_gpu_layers;
    params.split_mode = split_mode;
    params.main_gpu = main_gpu;
    if (tensor_split) {
        params.tensor_split = *tensor_split;
    }
    params.load_mode = load_mode;
    params.use_mmap = use_mmap;
    params.use_mlock = use_mlock;
    params.vocab_only = vocab_only;
    params.check_tensors = check_tensors;
    params.use_extra_bufts = use_extra_bufts;
    params.no_host = no_host;
    params.kv_overrides = to_kv_overrides(kv_overrides, "Model");
    params.rpc_servers = to_rpc_servers(rpc_servers);
    if (!progress_callback.is_none() && !PyCallable_Check(progress_callback.ptr())) {
        throw py::type_error("[Model] progress_callback must be callable");
    }
    // Shared so the lambda copies below never touch Python reference counts without the GIL.
    auto callback = std::make_shared<py::object>(progress_callback);
    std::shared_ptr<Model> model = call_released([&](const std::atomic<bool> * stop) {
        params.progress_callback = [callback, stop](float progress) -> bool {
            if (stop != nullptr && stop->load()) {
                return false;
            }
            if (callback->is_none()) {
                return true;
            }
            py::gil_scoped_acquire gil;
            py::object result = (*callback)(progress);
            return result.is_none() || result.cast<bool>();
        };
        std::shared_ptr<Model> loaded = paths.size() == 1 ? Model::load(paths[0], params) : Model::load_splits(paths, params);
        params.progress_callback = nullptr;
        return loaded;
    });
    params.progress_callback = nullptr;
    return model;
}

}  // namespace

void init_model(py::module_ & m) {
    const ModelParams d;
    py::class_<Model, std::shared_ptr<Model>>(m, "Model", R"doc(
A GGUF model loaded into memory.

    model = Model("SmolLM2-135M-Instruct.Q4_1.gguf")
    with Model(path, n_gpu_layers=0) as model: ...

`path` may be a list of split files. The GIL is released while loading; Ctrl-C cancels the
load. Contexts, vocabularies and adapters made from the model keep it alive, so close()
only drops this object's claim: the weights are freed when the last of them is gone.
)doc")
        .def(py::init(&load_model), py::arg("path"), py::kw_only(), py::arg("n_gpu_layers") = d.n_gpu_layers,
             py::arg("split_mode") = d.split_mode, py::arg("main_gpu") = d.main_gpu,
             py::arg("tensor_split") = py::none(), py::arg("load_mode") = d.load_mode, py::arg("use_mmap") = py::none(),
             py::arg("use_mlock") = py::none(), py::arg("vocab_only") = d.vocab_only,
             py::arg("check_tensors") = d.check_tensors, py::arg("use_extra_bufts") = d.use_extra_bufts,
             py::arg("no_host") = d.no_host, py::arg("kv_overrides") = py::none(),
             py::arg("progress_callback") = py::none(), py::arg("rpc_servers") = py::none(),
             "Loads a model. kv_overrides maps metadata keys to int/float/bool/str values;\n"
             "progress_callback(progress: float) may return False to cancel. rpc_servers ('host:port,...'\n"
             "or a list) puts n_gpu_layers layers on those RPC servers' devices (then this machine's GPUs),\n"
             "spread by free memory or by tensor_split (one entry per device, in that order); the rest\n"
             "stays on the CPU. An unreachable server raises ModelLoadError naming it. If a server goes\n"
             "away later, the call using it raises RpcError and the model cannot be used any more.")
        .def("close", &Model::close, "Drops this object's claim on the weights. Idempotent.")
        .def_property_readonly("closed", &Model::closed)
        .def("__enter__", [](const std::shared_ptr<Model> & self) { return self; })
        .def("__exit__", [](Model & self, const py::args &) { self.close(); })
        .def_property_readonly("path", &Model::path, "The file the model was loaded from.")
        .def_property_readonly("rpc_servers", &Model::rpc_servers,
                               "The RPC servers the model was loaded over ('host:port'), [] without.")
        .def_property_readonly("vocab", &Model::vocab, "The model's vocabulary (keeps the model alive).")
        .def_property_readonly("desc", &Model::desc, "A short description: architecture, size, quantization.")
        .def_property_readonly("size", &Model::size, "Total bytes of all tensors.")
        .def_property_readonly("n_params", &Model::n_params)
        .def_property_readonly("n_ctx_train", &Model::n_ctx_train, "Context length the model was trained with.")
        .def_property_readonly("n_embd", &Model::n_embd)
        .def_property_readonly("n_embd_inp", &Model::n_embd_inp)
        .def_property_readonly("n_embd_out", &Model::n_embd_out)
        .def_property_readonly("n_layer", &Model::n_layer)
        .def_property_readonly("n_head", &Model::n_head)
        .def_property_readonly("n_head_kv", &Model::n_head_kv)
        .def_property_readonly("n_swa", &Model::n_swa, "Sliding-window size (0 without sliding-window attention).")
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("rope_type", &Model::rope_type)
        .def_property_readonly("rope_freq_scale_train", &Model::rope_freq_scale_train)
        .def_property_readonly("ftype", &Model::ftype)
        .def_property_readonly("ftype_name", &Model::ftype_name)
        .def_property_readonly("has_encoder", &Model::has_encoder)
        .def_property_readonly("has_decoder", &Model::has_decoder)
        .def_property_readonly("decoder_start_token", &Model::decoder_start_token,
                               "Token an encoder-decoder model's decoder starts from (-1 for others).")
        .def_property_readonly("is_recurrent", &Model::is_recurrent)
        .def_property_readonly("is_hybrid", &Model::is_hybrid)
        .def_property_readonly("is_diffusion", &Model::is_diffusion)
        .def_property_readonly(
            "metadata", [](const Model & self) { return to_dict(self.metadata()); },
            "All scalar GGUF metadata as a dict of str to str.")
        .def(
            "meta_val",
            [](const Model & self, const std::string & key) -> py::object {
                return to_str_or_none(self.meta_val(key));
            },
            py::arg("key"), "One metadata value as str, or None when the key is absent.")
        .def(
            "chat_template",
            [](const Model & self, std::optional<std::string> name) -> py::object {
                return to_str_or_none(self.chat_template(name));
            },
            py::arg("name") = py::none(),
            "The chat template stored in the file (tokenizer.chat_template or tokenizer.chat_template.<name>),\n"
            "or None.")
        .def_property_readonly("n_cls_out", &Model::n_cls_out, "Classifier outputs (1 for other models).")
        .def_property_readonly(
            "classifier_labels",
            [](const Model & self) {
                py::list out;
                for (const auto & l : self.classifier_labels()) {
                    out.append(to_str(l));
                }
                return out;
            },
            "Labels of the classifier outputs ('' where unnamed).")
        .def(
            "save_to_file", [](const Model & self, const py::object & path) { self.save_to_file(path_str(path)); },
            py::arg("path"), "Writes the model as GGUF.")
        .def("__repr__", [](const Model & self) {
            if (self.closed()) {
                return std::string("<llamabind.Model closed>");
            }
            return "<llamabind.Model '" + self.desc() + "' from '" + self.path() + "'>";
        });

    const QuantizeParams q;
    m.def(
        "quantize",
        [](const py::object & input, const py::object & output, llama_ftype ftype, int32_t nthread,
           ggml_type output_tensor_type, ggml_type token_embedding_type, bool allow_requantize,
           bool quantize_output_tensor, bool only_copy, bool pure, bool keep_split, bool dry_run,
           const py::object & kv_overrides) {
            QuantizeParams p;
            p.ftype = ftype;
            p.nthread = nthread;
            p.output_tensor_type = output_tensor_type;
            p.token_embedding_type = token_embedding_type;
            p.allow_requantize = allow_requantize;
            p.quantize_output_tensor = quantize_output_tensor;
            p.only_copy = only_copy;
            p.pure = pure;
            p.keep_split = keep_split;
            p.dry_run = dry_run;
            p.kv_overrides = to_kv_overrides(kv_overrides, "quantize");
            const std::string in = path_str(input);
            const std::string out = path_str(output);
            call_released([&](const std::atomic<bool> *) { quantize(in, out, p); });
        },
        py::arg("input_path"), py::arg("output_path"), py::kw_only(), py::arg("ftype") = q.ftype,
        py::arg("nthread") = q.nthread, py::arg("output_tensor_type") = q.output_tensor_type,
        py::arg("token_embedding_type") = q.token_embedding_type, py::arg("allow_requantize") = q.allow_requantize,
        py::arg("quantize_output_tensor") = q.quantize_output_tensor, py::arg("only_copy") = q.only_copy,
        py::arg("pure") = q.pure, py::arg("keep_split") = q.keep_split, py::arg("dry_run") = q.dry_run,
        py::arg("kv_overrides") = py::none(),
        "Quantizes a GGUF model file into another file (llama_model_quantize).");
}

}  // namespace llamabind::bindings
