// Batch: token / embedding batches, with writable numpy views of their arrays.

#include "batch.hpp"

#include "llamabind/errors.hpp"

namespace llamabind::bindings {

Batch & PyBatch::get() const {
    if (!batch) {
        throw Closed("[Batch] the batch is closed");
    }
    return *batch;
}

namespace {

template <class T>
py::array_t<T> view(const std::shared_ptr<Batch> & owner, T * data, std::vector<py::ssize_t> shape) {
    auto * keep = new std::shared_ptr<Batch>(owner);
    py::capsule base(keep, [](void * p) { delete static_cast<std::shared_ptr<Batch> *>(p); });
    return py::array_t<T>(shape, data, base);
}

std::vector<llama_seq_id> to_seq_ids(const py::handle & obj, const char * where) {
    if (PyIndex_Check(obj.ptr()) && !PySequence_Check(obj.ptr())) {
        // One id: a Python int or any integer-like scalar (numpy.int32, ...).
        return to_tokens(py::make_tuple(obj), where);
    }
    std::vector<int32_t> ids = to_tokens(obj, where);
    return std::vector<llama_seq_id>(ids.begin(), ids.end());
}

// Optional per-token int32 array (positions, sequence ids) of length n.
std::vector<int32_t> optional_array(const py::object & obj, std::size_t n, const char * what, const char * where) {
    if (obj.is_none()) {
        return {};
    }
    std::vector<int32_t> v = to_tokens(obj, where);
    if (v.size() != n) {
        throw InvalidArgument(std::string("[") + where + "] " + what + " has " + std::to_string(v.size()) +
                              " entries for " + std::to_string(n) + " tokens");
    }
    return v;
}

std::vector<int8_t> optional_flags(const py::object & obj, std::size_t n, const char * where) {
    if (obj.is_none()) {
        return {};
    }
    std::vector<int8_t> flags;
    if (py::isinstance<py::bool_>(obj)) {
        flags.assign(n, obj.cast<bool>() ? 1 : 0);
        return flags;
    }
    auto arr = py::array_t<int8_t, py::array::c_style | py::array::forcecast>::ensure(obj);
    if (!arr) {
        throw py::type_error(std::string("[") + where + "] logits must be a bool, or one flag per token");
    }
    if (static_cast<std::size_t>(arr.size()) != n || arr.ndim() != 1) {
        throw InvalidArgument(std::string("[") + where + "] logits has " + std::to_string(arr.size()) +
                              " flags for " + std::to_string(n) + " tokens");
    }
    flags.assign(arr.data(), arr.data() + n);
    return flags;
}

}  // namespace

void init_batch(py::module_ & m) {
    py::class_<PyBatch>(m, "Batch", R"doc(
Input for Context.decode: tokens (or embedding rows) with their positions, sequence ids and
output flags.

    batch = Batch(512)
    batch.set_tokens(np.array(ids, dtype=np.int32))   # positions 0.., sequence 0, logits for the last
    ctx.decode(batch)

`token`, `pos`, `logits` and `n_seq_id` are writable numpy views of the batch's arrays
(capacity entries); after writing them directly set `n_tokens`. Views stay valid after
close().
)doc")
        .def(py::init([](int32_t capacity, int32_t embd, int32_t n_seq_max) {
                 return PyBatch{std::make_shared<Batch>(capacity, embd, n_seq_max)};
             }),
             py::arg("capacity"), py::kw_only(), py::arg("embd") = 0, py::arg("n_seq_max") = 1,
             "capacity tokens; embd > 0 makes an embeddings batch of rows of that width; n_seq_max is how\n"
             "many sequences one token may belong to.")
        .def_static(
            "from_tokens",
            [](const py::handle & tokens, llama_pos pos0, llama_seq_id seq_id, bool all_logits) {
                std::vector<int32_t> ids = to_tokens(tokens, "Batch.from_tokens");
                return PyBatch{std::make_shared<Batch>(Batch::from_tokens(ids, pos0, seq_id, all_logits))};
            },
            py::arg("tokens"), py::arg("pos0") = 0, py::arg("seq_id") = 0, py::arg("all_logits") = false,
            "A batch holding `tokens` at positions pos0.. in one sequence, logits for the last (or all).")
        .def("close", [](PyBatch & self) { self.batch.reset(); }, "Releases the batch. Idempotent.")
        .def_property_readonly("closed", [](const PyBatch & self) { return !self.batch; })
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyBatch & self, const py::args &) { self.batch.reset(); })
        .def_property_readonly("capacity", [](const PyBatch & self) { return self.get().capacity(); })
        .def_property_readonly("embd", [](const PyBatch & self) { return self.get().embd(); })
        .def_property_readonly("n_seq_max", [](const PyBatch & self) { return self.get().n_seq_max(); })
        .def_property(
            "n_tokens", [](const PyBatch & self) { return self.get().size(); },
            [](PyBatch & self, int32_t n) { self.get().set_size(n); }, "Number of valid entries.")
        .def("__len__", [](const PyBatch & self) { return self.get().size(); })
        .def_property_readonly("n_outputs", [](const PyBatch & self) { return self.get().n_outputs(); },
                               "Entries with their output flag set.")
        .def("clear", [](PyBatch & self) { self.get().clear(); }, "Empties the batch (keeps its memory).")
        .def(
            "add",
            [](PyBatch & self, llama_token token, llama_pos pos, const py::handle & seq_ids, bool logits) {
                self.get().add(token, pos, to_seq_ids(seq_ids, "Batch.add"), logits);
            },
            py::arg("token"), py::arg("pos"), py::arg("seq_ids") = 0, py::arg("logits") = false,
            "Appends a token at `pos` for one sequence id or a list of them.")
        .def(
            "add_embd",
            [](PyBatch & self, const py::array_t<float, py::array::c_style | py::array::forcecast> & row, llama_pos pos,
               const py::handle & seq_ids, bool logits) {
                Batch & b = self.get();
                if (row.ndim() != 1 || row.size() != b.embd()) {
                    throw InvalidArgument("[Batch.add_embd] row must be 1-D with embd=" + std::to_string(b.embd()) +
                                          " floats");
                }
                b.add_embd(row.data(), pos, to_seq_ids(seq_ids, "Batch.add_embd"), logits);
            },
            py::arg("row"), py::arg("pos"), py::arg("seq_ids") = 0, py::arg("logits") = false,
            "Appends one embedding row (embeddings batches only).")
        .def(
            "add_sequence",
            [](PyBatch & self, const py::handle & tokens, llama_pos pos0, llama_seq_id seq_id, bool all_logits) {
                std::vector<int32_t> ids = to_tokens(tokens, "Batch.add_sequence");
                self.get().add_sequence(ids.data(), static_cast<int32_t>(ids.size()), pos0, seq_id, all_logits);
            },
            py::arg("tokens"), py::arg("pos0"), py::arg("seq_id") = 0, py::arg("all_logits") = false,
            "Appends tokens at pos0, pos0+1, ... of one sequence; logits for the last (or all).")
        .def(
            "set_tokens",
            [](PyBatch & self, const py::handle & tokens, const py::object & pos, const py::object & seq_ids,
               const py::object & logits) {
                const std::vector<int32_t> ids = to_tokens(tokens, "Batch.set_tokens");
                const std::size_t n = ids.size();
                const auto p = optional_array(pos, n, "pos", "Batch.set_tokens");
                const auto s = optional_array(seq_ids, n, "seq_ids", "Batch.set_tokens");
                const auto l = optional_flags(logits, n, "Batch.set_tokens");
                self.get().assign(ids.data(), p.empty() ? nullptr : p.data(), s.empty() ? nullptr : s.data(),
                                  l.empty() ? nullptr : l.data(), static_cast<int32_t>(n));
            },
            py::arg("tokens"), py::arg("pos") = py::none(), py::arg("seq_ids") = py::none(),
            py::arg("logits") = py::none(),
            "Replaces the contents in one call: tokens, optional per-token positions (default 0..n-1),\n"
            "sequence ids (default 0) and output flags (default: last token only; True/False for all).")
        .def(
            "set_embd",
            [](PyBatch & self, const py::array_t<float, py::array::c_style | py::array::forcecast> & rows,
               const py::object & pos, const py::object & seq_ids, const py::object & logits) {
                Batch & b = self.get();
                if (rows.ndim() != 2 || rows.shape(1) != b.embd()) {
                    throw InvalidArgument("[Batch.set_embd] rows must have shape (n, embd=" + std::to_string(b.embd()) +
                                          ")");
                }
                const auto n = static_cast<std::size_t>(rows.shape(0));
                const auto p = optional_array(pos, n, "pos", "Batch.set_embd");
                const auto s = optional_array(seq_ids, n, "seq_ids", "Batch.set_embd");
                const auto l = optional_flags(logits, n, "Batch.set_embd");
                b.assign_embd(rows.data(), p.empty() ? nullptr : p.data(), s.empty() ? nullptr : s.data(),
                              l.empty() ? nullptr : l.data(), static_cast<int32_t>(n));
            },
            py::arg("rows"), py::arg("pos") = py::none(), py::arg("seq_ids") = py::none(),
            py::arg("logits") = py::none(), "Replaces the contents of an embeddings batch with `rows` (n, embd).")
        .def(
            "seq_ids",
            [](const PyBatch & self, int32_t i) {
                Batch & b = self.get();
                if (i < 0 || i >= b.size()) {
                    throw OutOfRange("[Batch.seq_ids] index " + std::to_string(i) + " is outside the batch of " +
                                     std::to_string(b.size()));
                }
                const llama_batch & raw = b.raw();
                return std::vector<llama_seq_id>(raw.seq_id[i], raw.seq_id[i] + raw.n_seq_id[i]);
            },
            py::arg("i"), "The sequence ids of entry i.")
        .def_property_readonly(
            "token",
            [](const PyBatch & self) -> py::object {
                Batch & b = self.get();
                if (b.is_embd()) {
                    return py::none();
                }
                return view<llama_token>(self.batch, b.token(), {b.capacity()});
            },
            "Writable int32 view of the token ids (None for embeddings batches).")
        .def_property_readonly(
            "embd_rows",
            [](const PyBatch & self) -> py::object {
                Batch & b = self.get();
                if (!b.is_embd()) {
                    return py::none();
                }
                return view<float>(self.batch, b.embd_data(), {b.capacity(), b.embd()});
            },
            "Writable float32 view (capacity, embd) of the rows (None for token batches).")
        .def_property_readonly(
            "pos", [](const PyBatch & self) { return view<llama_pos>(self.batch, self.get().pos(), {self.get().capacity()}); },
            "Writable int32 view of the positions.")
        .def_property_readonly(
            "logits",
            [](const PyBatch & self) { return view<int8_t>(self.batch, self.get().logits(), {self.get().capacity()}); },
            "Writable int8 view of the output flags.")
        .def_property_readonly(
            "n_seq_id",
            [](const PyBatch & self) { return view<int32_t>(self.batch, self.get().n_seq_id(), {self.get().capacity()}); },
            "Writable int32 view of how many sequence ids each entry has (their ids: seq_ids(i)).")
        .def("__repr__", [](const PyBatch & self) {
            if (!self.batch) {
                return std::string("<llamabind.Batch closed>");
            }
            return "<llamabind.Batch n_tokens=" + std::to_string(self.batch->size()) +
                   " capacity=" + std::to_string(self.batch->capacity()) + ">";
        });
}

}  // namespace llamabind::bindings
