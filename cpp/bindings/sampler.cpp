// SamplerChain, including samplers written in Python.

#include "common.hpp"

#include <cstring>

#include "llamabind/context.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/model.hpp"
#include "llamabind/sampler.hpp"
#include "llamabind/vocab.hpp"

namespace llamabind::bindings {

namespace {

// numpy dtype matching llama_token_data {int32 id; float logit; float p;}.
py::dtype token_data_dtype() {
    static auto * dtype = [] {
        py::list fields;
        fields.append(py::make_tuple("id", "<i4"));
        fields.append(py::make_tuple("logit", "<f4"));
        fields.append(py::make_tuple("p", "<f4"));
        return new py::dtype(py::dtype::from_args(fields));  // leaked: lives as long as the module
    }();
    return *dtype;
}

// A sampler implemented by a Python object with apply(candidates) and optionally
// accept(token), reset(), clone() and a `name` attribute. apply() receives a writable
// structured array over the candidates (fields id, logit, p) and may edit it in place and
// return the index of a selected candidate (or None).
class PySampler : public CustomSampler {
public:
    explicit PySampler(py::object obj) : obj_(std::make_shared<py::object>(std::move(obj))) {}

    ~PySampler() override {
        py::gil_scoped_acquire gil;
        obj_.reset();
    }

    std::string name() const override {
        py::gil_scoped_acquire gil;
        if (py::hasattr(*obj_, "name")) {
            return py::str((*obj_).attr("name"));
        }
        return "python";
    }

    void apply(llama_token_data_array & cur) override {
        py::gil_scoped_acquire gil;
        py::array view(token_data_dtype(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(cur.size)},
                       std::vector<py::ssize_t>{static_cast<py::ssize_t>(sizeof(llama_token_data))}, cur.data,
                       py::none());
        py::object selected = (*obj_).attr("apply")(view);
        if (!selected.is_none()) {
            const auto i = selected.cast<int64_t>();
            if (i < 0 || i >= static_cast<int64_t>(cur.size)) {
                throw OutOfRange("[SamplerChain] Python sampler selected index " + std::to_string(i) + " of " +
                                 std::to_string(cur.size) + " candidates");
            }
            cur.selected = i;
        }
    }

    void accept(llama_token token) override {
        py::gil_scoped_acquire gil;
        if (py::hasattr(*obj_, "accept")) {
            (*obj_).attr("accept")(token);
        }
    }

    void reset() override {
        py::gil_scoped_acquire gil;
        if (py::hasattr(*obj_, "reset")) {
            (*obj_).attr("reset")();
        }
    }

    std::unique_ptr<CustomSampler> clone() const override {
        py::gil_scoped_acquire gil;
        if (!py::hasattr(*obj_, "clone")) {
            return nullptr;
        }
        return std::make_unique<PySampler>((*obj_).attr("clone")());
    }

private:
    std::shared_ptr<py::object> obj_;
};

const Vocab & vocab_of(const py::handle & obj, std::optional<Vocab> & holder) {
    if (py::isinstance<Vocab>(obj)) {
        return obj.cast<const Vocab &>();
    }
    holder = obj.cast<const Model &>().vocab();
    return *holder;
}

std::vector<std::string> to_strings(const py::handle & seq, const char * where) {
    std::vector<std::string> out;
    for (const auto & item : seq) {
        out.push_back(to_bytes(item, where));
    }
    return out;
}

}  // namespace

void init_sampler(py::module_ & m) {
    m.attr("token_data_dtype") = token_data_dtype();
    m.attr("DEFAULT_SEED") = LLAMA_DEFAULT_SEED;

    py::class_<SamplerChain>(m, "SamplerChain", R"doc(
A chain of llama.cpp samplers, applied in order; the last one selects the token.

    sampler = SamplerChain().add_top_k(40).add_top_p(0.95).add_temp(0.8).add_dist(seed=42)
    token = sampler.sample(ctx)       # from the last output of ctx's last decode

Every add_* returns the chain. Samplers that read a vocabulary take a Vocab or a Model.
)doc")
        .def(py::init<bool>(), py::kw_only(), py::arg("no_perf") = true)
        .def("close", &SamplerChain::close, "Frees the chain. Idempotent.")
        .def_property_readonly("closed", &SamplerChain::closed)
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](SamplerChain & self, const py::args &) { self.close(); })
        .def("add_greedy", &SamplerChain::add_greedy, py::return_value_policy::reference_internal,
             "Selects the most likely token.")
        .def("add_dist", &SamplerChain::add_dist, py::arg("seed") = LLAMA_DEFAULT_SEED,
             py::return_value_policy::reference_internal, "Samples from the distribution (seed: reproducible).")
        .def("add_top_k", &SamplerChain::add_top_k, py::arg("k"), py::return_value_policy::reference_internal)
        .def("add_top_p", &SamplerChain::add_top_p, py::arg("p"), py::arg("min_keep") = 1,
             py::return_value_policy::reference_internal)
        .def("add_min_p", &SamplerChain::add_min_p, py::arg("p"), py::arg("min_keep") = 1,
             py::return_value_policy::reference_internal)
        .def("add_typical", &SamplerChain::add_typical, py::arg("p"), py::arg("min_keep") = 1,
             py::return_value_policy::reference_internal)
        .def("add_temp", &SamplerChain::add_temp, py::arg("t"), py::return_value_policy::reference_internal)
        .def("add_temp_ext", &SamplerChain::add_temp_ext, py::arg("t"), py::arg("delta"), py::arg("exponent"),
             py::return_value_policy::reference_internal)
        .def("add_xtc", &SamplerChain::add_xtc, py::arg("p"), py::arg("t"), py::arg("min_keep") = 1,
             py::arg("seed") = LLAMA_DEFAULT_SEED, py::return_value_policy::reference_internal)
        .def("add_top_n_sigma", &SamplerChain::add_top_n_sigma, py::arg("n"), py::return_value_policy::reference_internal)
        .def("add_mirostat", &SamplerChain::add_mirostat, py::arg("n_vocab"), py::arg("seed"), py::arg("tau"),
             py::arg("eta"), py::arg("m") = 100, py::return_value_policy::reference_internal)
        .def("add_mirostat_v2", &SamplerChain::add_mirostat_v2, py::arg("seed"), py::arg("tau"), py::arg("eta"),
             py::return_value_policy::reference_internal)
        .def(
            "add_grammar",
            [](SamplerChain & self, const py::handle & vocab, const py::handle & grammar,
               const std::string & root) -> SamplerChain & {
                std::optional<Vocab> holder;
                return self.add_grammar(vocab_of(vocab, holder), to_bytes(grammar, "SamplerChain.add_grammar"), root);
            },
            py::arg("vocab"), py::arg("grammar"), py::arg("root") = "root", py::return_value_policy::reference_internal,
            "Constrains tokens to a GBNF grammar. Raises GrammarError with llama.cpp's reason if it does\n"
            "not parse.")
        .def(
            "add_grammar_lazy",
            [](SamplerChain & self, const py::handle & vocab, const py::handle & grammar, const std::string & root,
               const py::handle & trigger_patterns, const py::handle & trigger_tokens) -> SamplerChain & {
                std::optional<Vocab> holder;
                const auto patterns = to_strings(trigger_patterns, "SamplerChain.add_grammar_lazy");
                const auto tokens = to_tokens(trigger_tokens, "SamplerChain.add_grammar_lazy");
                return self.add_grammar_lazy(vocab_of(vocab, holder), to_bytes(grammar, "SamplerChain.add_grammar_lazy"),
                                             root, patterns, tokens);
            },
            py::arg("vocab"), py::arg("grammar"), py::arg("root") = "root", py::arg("trigger_patterns") = py::tuple(),
            py::arg("trigger_tokens") = py::tuple(), py::return_value_policy::reference_internal,
            "A grammar that applies only after a trigger pattern (regex) or token appears.")
        .def("add_penalties", &SamplerChain::add_penalties, py::arg("n_vocab"), py::arg("last_n") = 64,
             py::arg("repeat") = 1.0f, py::arg("freq") = 0.0f, py::arg("present") = 0.0f,
             py::return_value_policy::reference_internal,
             "Repetition, frequency and presence penalties over the last last_n tokens (0 disables).")
        .def(
            "add_dry",
            [](SamplerChain & self, const py::handle & vocab, float multiplier, float base, int32_t allowed_length,
               int32_t penalty_last_n, const py::handle & seq_breakers) -> SamplerChain & {
                std::optional<Vocab> holder;
                return self.add_dry(vocab_of(vocab, holder), multiplier, base, allowed_length, penalty_last_n,
                                    to_strings(seq_breakers, "SamplerChain.add_dry"));
            },
            py::arg("vocab"), py::arg("multiplier") = 0.8f, py::arg("base") = 1.75f, py::arg("allowed_length") = 2,
            py::arg("penalty_last_n") = 64, py::arg("seq_breakers") = std::vector<std::string>{"\n", ":", "\"", "*"},
            py::return_value_policy::reference_internal,
            "DRY (don't repeat yourself) penalty over the last penalty_last_n tokens (0 disables).")
        .def("add_adaptive_p", &SamplerChain::add_adaptive_p, py::arg("target"), py::arg("decay") = 0.9f,
             py::arg("seed") = LLAMA_DEFAULT_SEED, py::return_value_policy::reference_internal,
             "Adaptive-p: picks tokens near a target probability (selects the token; put it last).")
        .def(
            "add_logit_bias",
            [](SamplerChain & self, int32_t n_vocab, const py::handle & biases) -> SamplerChain & {
                std::vector<std::pair<llama_token, float>> list;
                if (py::isinstance<py::dict>(biases)) {
                    for (const auto & [k, v] : py::reinterpret_borrow<py::dict>(biases)) {
                        list.emplace_back(k.cast<llama_token>(), v.cast<float>());
                    }
                } else {
                    for (const auto & item : biases) {
                        list.push_back(item.cast<std::pair<llama_token, float>>());
                    }
                }
                return self.add_logit_bias(n_vocab, list);
            },
            py::arg("n_vocab"), py::arg("biases"), py::return_value_policy::reference_internal,
            "Adds a bias to the logits of given tokens: {token: bias} or [(token, bias), ...].")
        .def(
            "add_infill",
            [](SamplerChain & self, const py::handle & vocab) -> SamplerChain & {
                std::optional<Vocab> holder;
                return self.add_infill(vocab_of(vocab, holder));
            },
            py::arg("vocab"), py::return_value_policy::reference_internal, "Fill-in-the-middle sampler.")
        .def(
            "add_custom",
            [](SamplerChain & self, const py::object & sampler) -> SamplerChain & {
                if (!py::hasattr(sampler, "apply")) {
                    throw py::type_error("[SamplerChain.add_custom] the sampler needs an apply(candidates) method");
                }
                return self.add_custom(std::make_unique<PySampler>(sampler));
            },
            py::arg("sampler"), py::return_value_policy::reference_internal,
            "Adds a sampler written in Python: an object with apply(candidates) (a structured array with\n"
            "fields id, logit, p, edited in place; may return a selected index) and optionally accept(token),\n"
            "reset(), clone() and name.")
        .def("__len__", &SamplerChain::size)
        .def("name", &SamplerChain::name, py::arg("i"))
        .def_property_readonly("names", &SamplerChain::names, "Names of the samplers, in order.")
        .def("remove", &SamplerChain::remove, py::arg("i"), "Removes sampler i.")
        .def(
            "sample",
            [](SamplerChain & self, Context & ctx, int32_t idx) {
                if (self.has_custom()) {
                    // A Python sampler needs the GIL while the context lock is held; keep it
                    // throughout so no thread can hold the GIL while waiting for that lock.
                    return self.sample(ctx, idx);
                }
                GilRelease release;
                return self.sample(ctx, idx);
            },
            py::arg("ctx"), py::arg("idx") = -1,
            "Samples a token from entry idx of ctx's last batch (negative: from the last output) and\n"
            "accepts it.")
        .def("accept", &SamplerChain::accept, py::arg("token"), "Tells stateful samplers a token was chosen.")
        .def(
            "apply",
            [](SamplerChain & self, const py::array & candidates) {
                if (!candidates.dtype().equal(token_data_dtype()) || candidates.ndim() != 1 ||
                    !(candidates.flags() & py::array::c_style)) {
                    throw InvalidArgument("[SamplerChain.apply] candidates must be a contiguous 1-D array of "
                                          "llamabind.token_data_dtype");
                }
                std::vector<llama_token_data> data(static_cast<std::size_t>(candidates.size()));
                if (!data.empty()) {  // memcpy from an empty array's null pointer is undefined
                    std::memcpy(data.data(), candidates.data(), sizeof(llama_token_data) * data.size());
                }
                llama_token_data_array cur{data.data(), data.size(), -1, false};
                self.apply(cur);
                py::array out(token_data_dtype(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(cur.size)},
                              std::vector<py::ssize_t>{});
                std::memcpy(out.mutable_data(), cur.data, sizeof(llama_token_data) * cur.size);
                return py::make_tuple(out, cur.selected);
            },
            py::arg("candidates"),
            "Runs the chain on candidates (an array of token_data_dtype) without accepting; returns\n"
            "(resulting candidates, selected index or -1).")
        .def("reset", &SamplerChain::reset, "Resets the state of every sampler (RNG, penalties, grammar).")
        .def("clone", &SamplerChain::clone, "An independent copy of the chain with its state.")
        .def_property_readonly("seed", &SamplerChain::seed)
        .def(
            "perf",
            [](const SamplerChain & self) {
                const auto p = self.perf();
                py::dict d;
                d["t_sample_ms"] = p.t_sample_ms;
                d["n_sample"] = p.n_sample;
                return d;
            },
            "Sampling time and count (needs no_perf=False).")
        .def("perf_reset", &SamplerChain::perf_reset)
        .def("__repr__", [](const SamplerChain & self) {
            if (self.closed()) {
                return std::string("<llamabind.SamplerChain closed>");
            }
            std::string s = "<llamabind.SamplerChain [";
            const auto names = self.names();
            for (std::size_t i = 0; i < names.size(); ++i) {
                s += (i ? ", " : "") + names[i];
            }
            return s + "]>";
        });
}

}  // namespace llamabind::bindings
