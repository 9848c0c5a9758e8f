// Vocab: tokenization and token metadata.

#include "common.hpp"

#include "llamabind/vocab.hpp"

namespace llamabind::bindings {

namespace {

// Texts longer than this are tokenized with the GIL released.
constexpr std::size_t kReleaseGilBytes = 1 << 16;

}  // namespace

void init_vocab(py::module_ & m) {
    py::class_<Vocab>(m, "Vocab", R"doc(
A model's vocabulary: special tokens, token texts and attributes, tokenization. It keeps
its model alive; obtain it as `model.vocab`.

    ids = model.vocab.tokenize("Hello world", add_special=True)
    text = model.vocab.detokenize(ids).decode()
)doc")
        .def_property_readonly("n_tokens", &Vocab::n_tokens, "Number of tokens in the vocabulary.")
        .def("__len__", &Vocab::n_tokens)
        .def_property_readonly("type", &Vocab::type, "Tokenizer family (VocabType).")
        .def_property_readonly("bos", &Vocab::bos, "Beginning-of-sequence token (-1 if none).")
        .def_property_readonly("eos", &Vocab::eos, "End-of-sequence token (-1 if none).")
        .def_property_readonly("eot", &Vocab::eot, "End-of-turn token (-1 if none).")
        .def_property_readonly("sep", &Vocab::sep, "Separator token (-1 if none).")
        .def_property_readonly("nl", &Vocab::nl, "Newline token (-1 if none).")
        .def_property_readonly("pad", &Vocab::pad, "Padding token (-1 if none).")
        .def_property_readonly("mask", &Vocab::mask, "Mask token (-1 if none).")
        .def_property_readonly("fim_pre", &Vocab::fim_pre)
        .def_property_readonly("fim_suf", &Vocab::fim_suf)
        .def_property_readonly("fim_mid", &Vocab::fim_mid)
        .def_property_readonly("fim_pad", &Vocab::fim_pad)
        .def_property_readonly("fim_rep", &Vocab::fim_rep)
        .def_property_readonly("fim_sep", &Vocab::fim_sep)
        .def_property_readonly("add_bos", &Vocab::add_bos, "Whether tokenize(add_special=True) prepends BOS.")
        .def_property_readonly("add_eos", &Vocab::add_eos, "Whether tokenize(add_special=True) appends EOS.")
        .def_property_readonly("add_sep", &Vocab::add_sep, "Whether tokenize(add_special=True) appends SEP.")
        .def(
            "text", [](const Vocab & self, llama_token token) { return to_str(self.text(token)); }, py::arg("token"),
            "The token's text as stored in the vocabulary.")
        .def("score", &Vocab::score, py::arg("token"))
        .def("attr", &Vocab::attr, py::arg("token"), "The token's attribute flags (TokenAttr).")
        .def("is_eog", &Vocab::is_eog, py::arg("token"), "Whether the token ends generation (EOS, EOT, ...).")
        .def("is_control", &Vocab::is_control, py::arg("token"))
        .def(
            "tokenize",
            [](const Vocab & self, const py::handle & text, bool add_special, bool parse_special) {
                const std::string bytes = to_bytes(text, "Vocab.tokenize");
                std::vector<llama_token> tokens;
                if (bytes.size() >= kReleaseGilBytes) {
                    GilRelease release;
                    tokens = self.tokenize(bytes, add_special, parse_special);
                } else {
                    tokens = self.tokenize(bytes, add_special, parse_special);
                }
                return tokens;
            },
            py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false,
            "Text (str or UTF-8 bytes) to a list of token ids. add_special adds BOS/EOS as the model\n"
            "asks; parse_special turns special-token text such as '<|im_start|>' into its token.")
        .def(
            "token_to_piece",
            [](const Vocab & self, llama_token token, int32_t lstrip, bool special) {
                return py::bytes(self.token_to_piece(token, lstrip, special));
            },
            py::arg("token"), py::arg("lstrip") = 0, py::arg("special") = false,
            "The bytes of one token (possibly part of a UTF-8 character). lstrip skips up to that many\n"
            "leading spaces; special renders control tokens.")
        .def(
            "detokenize",
            [](const Vocab & self, const py::handle & tokens, bool remove_special, bool unparse_special) {
                const std::vector<llama_token> ids = to_tokens(tokens, "Vocab.detokenize");
                std::string text;
                if (ids.size() * 4 >= kReleaseGilBytes) {
                    GilRelease release;
                    text = self.detokenize(ids, remove_special, unparse_special);
                } else {
                    text = self.detokenize(ids, remove_special, unparse_special);
                }
                return py::bytes(text);
            },
            py::arg("tokens"), py::arg("remove_special") = false, py::arg("unparse_special") = false,
            "Token ids back to bytes. remove_special drops BOS/EOS the model adds; unparse_special renders\n"
            "special tokens as text.")
        .def("__repr__", [](const Vocab & self) {
            return "<llamabind.Vocab n_tokens=" + std::to_string(self.n_tokens()) + ">";
        });
}

}  // namespace llamabind::bindings
