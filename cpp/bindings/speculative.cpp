// Speculative decoding: drafters (a draft model, prompt lookup, a Python callable) and the
// Speculator that verifies their drafts on a target context.

#include "common.hpp"

#include <optional>

#include "llamabind/context.hpp"
#include "llamabind/draft.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/model.hpp"
#include "llamabind/sampler.hpp"
#include "llamabind/speculative.hpp"

namespace llamabind::bindings {

namespace {

py::array_t<int32_t> token_array(const std::vector<llama_token> & tokens) {
    py::array_t<int32_t> out(static_cast<py::ssize_t>(tokens.size()));
    std::copy(tokens.begin(), tokens.end(), out.mutable_data());
    return out;
}

// A drafter written in Python: a callable taking the tokens so far (a numpy int32 array, its
// last token not yet evaluated) and returning draft tokens, as llama-cpp-python's
// LlamaDraftModel does. Called with the GIL taken, from inside Speculator.step().
class PyDrafter : public Drafter {
public:
    explicit PyDrafter(py::object fn) : fn_(std::make_shared<py::object>(std::move(fn))) {}

    ~PyDrafter() override {
        py::gil_scoped_acquire gil;
        fn_.reset();
    }

    void draft(const std::vector<llama_token> & tokens, int32_t n_max, std::vector<llama_token> & out) override {
        py::gil_scoped_acquire gil;
        py::object proposed = (*fn_)(token_array(tokens));
        if (proposed.is_none()) {
            return;
        }
        for (const auto & t : to_tokens(proposed, "Speculator: the draft model's result")) {
            if (static_cast<int32_t>(out.size()) >= n_max) {
                break;
            }
            out.push_back(t);
        }
    }

    const py::object & callable() const { return *fn_; }

private:
    std::shared_ptr<py::object> fn_;
};

// A Speculator that can be closed (it holds the target and draft contexts).
struct PySpeculator {
    std::unique_ptr<Speculator> spec;

    Speculator & get() {
        if (!spec) {
            throw Closed("[Speculator] closed");
        }
        return *spec;
    }
};

std::shared_ptr<Drafter> to_drafter(const py::object & obj) {
    if (obj.is_none()) {
        return nullptr;
    }
    if (py::isinstance<Drafter>(obj)) {
        return obj.cast<std::shared_ptr<Drafter>>();
    }
    if (!PyCallable_Check(obj.ptr())) {
        throw py::type_error("[Speculator] drafter must be a ModelDrafter, an NgramDrafter, a callable returning draft "
                             "tokens (e.g. a LlamaDraftModel) or None, not " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    }
    return std::make_shared<PyDrafter>(obj);
}

py::dict stats_dict(const SpeculativeStats & s) {
    py::dict d;
    d["n_steps"] = s.n_steps;
    d["n_drafted"] = s.n_drafted;
    d["n_accepted"] = s.n_accepted;
    d["n_emitted"] = s.n_emitted;
    d["n_draft_steps"] = s.n_draft_steps;
    d["t_draft_s"] = s.t_draft_s;
    d["t_verify_s"] = s.t_verify_s;
    d["acceptance"] = s.acceptance();
    return d;
}

py::dict estimates_dict(const DraftTuner & t, bool per_token) {
    py::list verify;
    py::list expected;
    py::list rates;
    for (int32_t k = 0; k <= t.n_max(); ++k) {
        verify.append(t.verify_cost(k + 1));
        expected.append(t.expected_tokens(k));
        rates.append(t.rate(k, per_token));
    }
    py::dict d;
    d["verify_s"] = verify;
    d["draft_s_per_token"] = t.draft_cost(1, true);
    d["expected_tokens"] = expected;
    d["tokens_per_s"] = rates;
    return d;
}

}  // namespace

void init_speculative(py::module_ & m) {
    py::class_<Drafter, std::shared_ptr<Drafter>>(m, "Drafter", R"doc(
Proposes tokens for a Speculator to verify: ModelDrafter (a draft model) or NgramDrafter
(prompt lookup). Any callable taking the tokens so far (int32 array) and returning draft
tokens can be given to Speculator as well.
)doc")
        .def(
            "draft",
            [](Drafter & self, const py::handle & tokens, int32_t n_max) {
                std::vector<llama_token> ids = to_tokens(tokens, "Drafter.draft");
                std::vector<llama_token> out;
                {
                    GilRelease release;
                    self.draft(ids, n_max, out);
                }
                flush_logs();
                return out;
            },
            py::arg("tokens"), py::arg("n_max"),
            "Up to n_max tokens likely to follow `tokens` (whose last token the target has not evaluated).")
        .def_property_readonly(
            "last_hindsight",
            [](const Drafter & self) {
                const auto & h = self.last_hindsight();
                return std::vector<int>(h.begin(), h.end());
            },
            "What the last draft() learnt while catching up: for consecutive generated tokens, 1 where\n"
            "the drafter would have proposed the token that came, 0 where not (empty if nothing).");

    py::class_<ModelDrafter, Drafter, std::shared_ptr<ModelDrafter>>(m, "ModelDrafter", R"doc(
A draft model with the target's vocabulary: drafts greedily in its own context, kept in
step with the target's tokens (only what it lacks is evaluated; cells of rejected drafts are
removed).

    draft_ctx = Context(draft_model, n_ctx=4096)
    drafter = ModelDrafter(draft_ctx, target_model)

Raises ValueError when the vocabularies differ as llama.cpp checks them (type, BOS/EOS,
size within 128 tokens, the text of every token from id 5 on). p_min > 0 ends a draft at the
first token the draft model gives less than that probability. max_catch_up > 0: after a
pause in drafting longer than that many generated tokens, the draft context starts over
from the last max_catch_up tokens instead of evaluating all of them.
)doc")
        .def(py::init([](const std::shared_ptr<Context> & ctx, const Model & target, float p_min, int32_t max_catch_up) {
                 GilRelease release;
                 return std::make_shared<ModelDrafter>(ctx, target, p_min, max_catch_up);
             }),
             py::arg("ctx"), py::arg("target"), py::kw_only(), py::arg("p_min") = 0.0f, py::arg("max_catch_up") = 0)
        .def_property_readonly("context", &ModelDrafter::context, "The draft model's context.")
        .def_property_readonly(
            "held", [](const ModelDrafter & self) { return token_array(self.held()); },
            "The tokens the draft context holds in sequence 0.");

    py::class_<NgramDrafter, Drafter, std::shared_ptr<NgramDrafter>>(m, "NgramDrafter", R"doc(
Prompt lookup: proposes what followed the latest earlier occurrence of the last n tokens (n
from max_ngram down to min_ngram), and keeps following a stretch the output reproduces.
)doc")
        .def(py::init<int32_t, int32_t>(), py::arg("max_ngram") = 3, py::arg("min_ngram") = 1)
        .def_property_readonly("max_ngram", &NgramDrafter::max_ngram)
        .def_property_readonly("min_ngram", &NgramDrafter::min_ngram);

    m.def(
        "check_draft_vocab",
        [](const Model & target, const Model & draft) {
            GilRelease release;
            check_draft_vocab(target, draft);
        },
        py::arg("target"), py::arg("draft"),
        "Raises ValueError unless `draft` can propose tokens for `target` (llama.cpp's vocabulary checks).");

    py::class_<DraftTuner>(m, "DraftTuner", R"doc(
The adaptive mode's choice of draft lengths (the one a Speculator with adaptive=True keeps),
on its own: feed it timings and acceptance, ask it for the next length.

    tuner = DraftTuner(8)
    k = tuner.choose(8, per_token=True)     # before drafting with a draft model
    tuner.record_draft(k, seconds)          # drafting k tokens took `seconds`
    tuner.record_verify(k + 1, seconds)     # the target's decode of the pending token + k
    tuner.record_acceptance(tested, accepted)

It picks the k in 0..n_max with the most expected tokens per second (0: plain decoding),
trying drafts again now and then while plain decoding wins.
)doc")
        .def(py::init<int32_t>(), py::arg("n_max"))
        .def_property_readonly("n_max", &DraftTuner::n_max)
        .def("choose", &DraftTuner::choose, py::arg("limit"), py::arg("per_token"),
             "The draft length for the next step, at most `limit`. per_token: drafting costs per drafted\n"
             "token (a draft model) and is decided before drafting; otherwise `limit` is the length of a\n"
             "draft already made (a lookup).")
        .def("record_verify", &DraftTuner::record_verify, py::arg("n_tokens"), py::arg("seconds"),
             "A target decode of n_tokens took `seconds`.")
        .def("record_draft", &DraftTuner::record_draft, py::arg("units"), py::arg("seconds"),
             "Drafting took `seconds` for `units` (drafted tokens, or 1 lookup call).")
        .def("record_acceptance", &DraftTuner::record_acceptance, py::arg("n_tested"), py::arg("n_accepted"),
             "A verified draft: n_tested positions compared, the first n_accepted of them accepted.")
        .def("record_hindsight", &DraftTuner::record_hindsight, py::arg("matches"),
             "Acceptance learnt in hindsight: for consecutive tokens, whether the drafter would have\n"
             "proposed each (1) or not (0); counted as the drafts it would have made there.")
        .def(
            "estimates", [](const DraftTuner & self, bool per_token) { return estimates_dict(self, per_token); },
            py::arg("per_token"), "As Speculator.estimates().");

    py::class_<StepResult>(m, "StepResult", "What one Speculator step emitted.")
        .def_readonly("tokens", &StepResult::tokens, "The target sampler's draws, in order.")
        .def_readonly("rows", &StepResult::rows,
                      "For each token, the entry of the target's last batch its logits are at (-1: the last output).")
        .def_readonly("eog", &StepResult::eog, "An end-of-generation token was drawn after `tokens` (not among them).")
        .def_readonly("n_drafted", &StepResult::n_drafted, "Drafted tokens the target evaluated.")
        .def_readonly("n_accepted", &StepResult::n_accepted, "Of those, how many the target's sampler drew too.")
        .def_readonly("n_evaluated", &StepResult::n_evaluated,
                      "Tokens sequence 0 holds after the step (the pending token not counted).")
        .def("__repr__", [](const StepResult & r) {
            return "<llamabind.StepResult tokens=" + std::to_string(r.tokens.size()) + " drafted=" +
                   std::to_string(r.n_drafted) + " accepted=" + std::to_string(r.n_accepted) +
                   (r.eog ? " eog" : "") + ">";
        });

    py::class_<PySpeculator>(m, "Speculator", R"doc(
Speculative decoding of sequence 0 of a target Context: each step evaluates the pending token
and a draft in one batch, and the target's own sampler draws every emitted token (a drafted
token is kept when the draw equals it). The output is what plain decoding with the same
sampler gives, with sampling too; cells of rejected drafts are removed.

    spec = Speculator(ctx, NgramDrafter(3), n_draft=8)
    ctx.decode_tokens(prompt, pos0=0)
    spec.begin(prompt)
    while n < 100:
        r = spec.step(sampler, 100 - n)       # GIL released
        n += len(r.tokens)
        if r.eog: break

drafter: a ModelDrafter, an NgramDrafter, a callable returning draft tokens for the tokens so
far (a LlamaDraftModel), or None (then step() drafts only what it is given). adaptive=True
chooses each step's draft length (0 to n_draft) from the measured cost of drafting and
verifying and the acceptance so far, for the most tokens per second; False always drafts
n_draft tokens.
)doc")
        .def(py::init([](const std::shared_ptr<Context> & target, const py::object & drafter, int32_t n_draft,
                         bool adaptive) {
                 SpeculativeParams p;
                 p.n_draft = n_draft;
                 p.adaptive = adaptive;
                 auto d = to_drafter(drafter);
                 return PySpeculator{std::make_unique<Speculator>(target, std::move(d), p)};
             }),
             py::arg("target"), py::arg("drafter") = py::none(), py::kw_only(), py::arg("n_draft") = 8,
             py::arg("adaptive") = true)
        .def(
            "begin",
            [](PySpeculator & self, const py::handle & tokens, std::optional<llama_token> pending) {
                std::vector<llama_token> ids = to_tokens(tokens, "Speculator.begin");
                self.get().begin(ids, pending.value_or(LLAMA_TOKEN_NULL));
            },
            py::arg("tokens"), py::arg("pending") = py::none(),
            "Starts (or resumes) a sequence: sequence 0 of the target holds `tokens` (evaluated, the last\n"
            "one's logits its last output); `pending`: a token emitted after them, not yet evaluated.")
        .def(
            "step",
            [](PySpeculator & self, SamplerChain & sampler, int32_t max_tokens,
               std::optional<std::vector<llama_token>> drafts) {
                Speculator & s = self.get();
                const std::vector<llama_token> * given = drafts ? &*drafts : nullptr;
                if (!sampler.has_custom()) {
                    return call_released([&](const std::atomic<bool> * stop) {
                        s.prepare(max_tokens, given, stop);
                        return s.finish(sampler);
                    });
                }
                call_released([&](const std::atomic<bool> * stop) { s.prepare(max_tokens, given, stop); });
                // A Python sampler runs under the context lock; keep the GIL throughout sampling
                // so no thread holds the GIL while waiting for that lock.
                StepResult r = s.finish(sampler);
                flush_logs();
                return r;
            },
            py::arg("sampler"), py::arg("max_tokens"), py::arg("drafts") = py::none(),
            "One step: draft, evaluate the pending token with the draft in one batch (GIL released),\n"
            "sample. Emits 1 to max_tokens tokens. drafts: tokens to verify instead of the drafter's.")
        .def_property_readonly(
            "tokens", [](PySpeculator & self) { return token_array(self.get().tokens()); },
            "The sequence: evaluated tokens, then the pending one (an int32 array, a copy).")
        .def_property_readonly("n_evaluated", [](PySpeculator & self) { return self.get().n_evaluated(); })
        .def_property_readonly("has_pending", [](PySpeculator & self) { return self.get().has_pending(); })
        .def_property_readonly("n_draft", [](PySpeculator & self) { return self.get().params().n_draft; })
        .def_property_readonly("adaptive", [](PySpeculator & self) { return self.get().params().adaptive; })
        .def_property_readonly(
            "drafter",
            [](PySpeculator & self) -> py::object {
                const auto & d = self.get().drafter();
                if (auto * py_drafter = dynamic_cast<PyDrafter *>(d.get())) {
                    return py_drafter->callable();
                }
                return d ? py::cast(d) : py::none();
            },
            "The drafter (the callable itself for one written in Python).")
        .def_property_readonly(
            "stats", [](PySpeculator & self) { return stats_dict(self.get().stats()); },
            "Totals: n_steps, n_drafted, n_accepted, n_emitted, n_draft_steps, t_draft_s, t_verify_s and\n"
            "acceptance (n_accepted / n_drafted).")
        .def("reset_stats", [](PySpeculator & self) { self.get().reset_stats(); })
        .def(
            "estimates",
            [](PySpeculator & self) {
                Speculator & s = self.get();
                return estimates_dict(s.tuner(), s.drafter() && s.drafter()->cost_per_token());
            },
            "What the adaptive mode knows: verify_s (seconds of a target decode of k + 1 tokens, for\n"
            "k = 0..n_draft), draft_s_per_token, expected_tokens and tokens_per_s per draft length k.")
        .def(
            "close", [](PySpeculator & self) { self.spec.reset(); },
            "Drops the contexts and the drafter. Idempotent; other methods raise ClosedError after.")
        .def_property_readonly("closed", [](const PySpeculator & self) { return !self.spec; })
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PySpeculator & self, const py::args &) { self.spec.reset(); });
}

}  // namespace llamabind::bindings
