// Engine: continuous batching of many sequences over one context.

#include "common.hpp"

#include <pybind11/native_enum.h>

#include <cstring>

#include "llamabind/context.hpp"
#include "llamabind/engine.hpp"
#include "llamabind/errors.hpp"
#include "llamabind/sampler.hpp"

namespace llamabind::bindings {

namespace {

py::object event_logits(const EngineEvent & ev) {
    if (ev.logits.empty()) {
        return py::none();
    }
    py::array_t<float> out(static_cast<py::ssize_t>(ev.logits.size()));
    std::memcpy(out.mutable_data(), ev.logits.data(), ev.logits.size() * sizeof(float));
    return std::move(out);
}

}  // namespace

void init_engine(py::module_ & m) {
    py::native_enum<FinishReason>(m, "FinishReason", "enum.IntEnum", "Why an Engine request ended.")
        .value("NONE", FinishReason::None, "the request goes on")
        .value("STOP", FinishReason::Stop, "an end-of-generation token was sampled (it is in the event)")
        .value("LENGTH", FinishReason::Length, "max_tokens reached or the sequence's context is full")
        .value("CANCELLED", FinishReason::Cancelled, "cancel()/cancel_all() or the context's cancel flag")
        .value("ERROR", FinishReason::Error, "sampling or decoding failed (the event's error says why)")
        .finalize();

    py::class_<EngineEvent>(m, "EngineEvent", "What one step did for one request.")
        .def_readonly("request", &EngineEvent::request, "The request id submit() returned.")
        .def_readonly("token", &EngineEvent::token, "The sampled token; -1 for CANCELLED and ERROR events.")
        .def_readonly("finish", &EngineEvent::finish, "FinishReason.NONE while the request goes on.")
        .def_readonly("error", &EngineEvent::error, "Why the request failed (FinishReason.ERROR).")
        .def_property_readonly(
            "logits", [](const EngineEvent & ev) { return event_logits(ev); },
            "The logits row the token was sampled from (with return_logits=True), else None.")
        .def("__repr__", [](const EngineEvent & ev) {
            return "<llamabind.EngineEvent request=" + std::to_string(ev.request) + " token=" +
                   std::to_string(ev.token) + " finish=" + std::to_string(static_cast<int>(ev.finish)) + ">";
        });

    py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine", R"doc(
Generates many sequences at once over one Context (continuous batching).

    ctx = Context(model, n_ctx=4096, n_seq_max=8)
    engine = Engine(ctx)
    ids = [engine.submit(vocab.tokenize(p), SamplerChain().add_greedy(), max_tokens=32) for p in prompts]
    while engine.has_work:
        for ev in engine.step():          # one decode for every active sequence
            ...                           # ev.request, ev.token, ev.finish

Each step puts the next token of every generating sequence and chunks of pending prompts
into one batch, decodes it once (GIL released) and samples every sequence with its own
chain. Finished, cancelled and failed sequences give up their slot at once; waiting
requests take the free slots (n_seq_max of the context). A prompt that starts with at
least min_shared_prefix tokens of a live sequence copies their KV cells instead of
evaluating them. With cache_finished (the default) a finished sequence's cells stay in its
slot, and a later prompt starting with the same tokens goes to that slot and evaluates only
the rest; call clear_cache() after using the context's sequences yourself.
submit/cancel may be called from any thread while one thread steps.
The context must not be decoded by anything else while the engine has work.
)doc")
        .def(py::init([](const std::shared_ptr<Context> & ctx, int32_t max_prompt_tokens_per_step,
                         int32_t min_shared_prefix, bool cache_finished) {
                 EngineParams p;
                 p.max_prompt_tokens_per_step = max_prompt_tokens_per_step;
                 p.min_shared_prefix = min_shared_prefix;
                 p.cache_finished = cache_finished;
                 return std::make_shared<Engine>(ctx, p);
             }),
             py::arg("ctx"), py::kw_only(), py::arg("max_prompt_tokens_per_step") = 0, py::arg("min_shared_prefix") = 8,
             py::arg("cache_finished") = true)
        .def(
            "submit",
            [](Engine & self, const py::handle & tokens, SamplerChain & sampler, int32_t max_tokens,
               bool return_logits) {
                std::vector<int32_t> ids = to_tokens(tokens, "Engine.submit");
                RequestOptions o;
                o.max_tokens = max_tokens;
                o.return_logits = return_logits;
                self.check_prompt(ids);
                if (sampler.closed()) {
                    throw Closed("[Engine.submit] the sampler chain is closed (was it given to another request?)");
                }
                SamplerChain chain = std::move(sampler);
                GilRelease release;
                return self.submit(std::move(ids), std::move(chain), o);
            },
            py::arg("tokens"), py::arg("sampler"), py::kw_only(), py::arg("max_tokens") = -1,
            py::arg("return_logits") = false,
            "Queues a request and returns its id. The sampler chain is taken over (the Python object is\n"
            "closed afterwards). max_tokens <= 0 generates until the sequence's context is full;\n"
            "return_logits puts each token's logits row into its event.")
        .def(
            "cancel",
            [](Engine & self, int64_t request) {
                GilRelease release;
                self.cancel(request);
            },
            py::arg("request"), "Ends a request at the next step (a CANCELLED event reports it).")
        .def(
            "cancel_all",
            [](Engine & self) {
                GilRelease release;
                self.cancel_all();
            },
            "Ends every request submitted so far at the next step.")
        .def_property_readonly(
            "has_work",
            [](const Engine & self) {
                GilRelease release;
                return self.has_work();
            },
            "Whether step() has anything to do.")
        .def_property_readonly("n_active", &Engine::n_active, "Requests holding a slot.")
        .def_property_readonly("n_waiting", &Engine::n_waiting, "Requests waiting for a slot.")
        .def_property_readonly("n_slots", &Engine::n_slots, "Sequences that run at once (n_seq_max).")
        .def_property_readonly("n_ctx_seq", &Engine::n_ctx_seq, "Context size of one sequence.")
        .def_property_readonly(
            "stats",
            [](const Engine & self) {
                const EngineStats s = self.stats();
                py::dict d;
                d["steps"] = s.steps;
                d["tokens_generated"] = s.tokens_generated;
                d["prompt_tokens"] = s.prompt_tokens;
                d["prompt_tokens_evaluated"] = s.prompt_tokens_evaluated;
                d["prompt_tokens_shared"] = s.prompt_tokens_shared;
                d["prompt_tokens_cached"] = s.prompt_tokens_cached;
                d["max_active"] = s.max_active;
                return d;
            },
            "Counters: steps, tokens_generated, prompt_tokens, prompt_tokens_evaluated,\n"
            "prompt_tokens_shared (copied from another sequence), prompt_tokens_cached (kept in the slot from an\n"
            "earlier request) and max_active (most sequences in one batch).")
        .def_property_readonly(
            "cached_tokens",
            [](Engine & self) {
                GilRelease release;
                return self.cached_tokens();
            },
            "Per slot, how many tokens' cells it keeps from its last request (0 while in use).")
        .def(
            "clear_cache",
            [](Engine & self) {
                GilRelease release;
                self.clear_cache();
            },
            "Forgets what finished requests left in their slots and removes those cells.")
        .def(
            "step",
            [](Engine & self) {
                call_released([&](const std::atomic<bool> * stop) { self.decode_step(stop); });
                bool callbacks = false;
                {
                    GilRelease release;
                    callbacks = self.sampling_needs_callbacks();
                }
                std::vector<EngineEvent> events;
                if (callbacks) {
                    // A Python sampler runs under the context lock; keep the GIL throughout so no
                    // thread holds the GIL while waiting for that lock.
                    events = self.sample_step();
                } else {
                    GilRelease release;
                    events = self.sample_step();
                }
                flush_logs();
                return events;
            },
            "Runs one decode with every active sequence and samples them; returns the EngineEvents\n"
            "(tokens, finished, cancelled and failed requests). The GIL is released meanwhile.")
        .def(
            "close",
            [](Engine & self) {
                GilRelease release;
                self.close();
            },
            "Ends every request and frees their KV cells. Idempotent; submit() raises ClosedError after.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](Engine & self, const py::args &) {
            GilRelease release;
            self.close();
        });
}

}  // namespace llamabind::bindings
