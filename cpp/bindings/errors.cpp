// The LlamaError hierarchy, created once as Python classes with the right builtin bases
// (so `except ValueError` and `except FileNotFoundError` work), and one translator that
// maps every llamabind C++ exception onto it.

#include "common.hpp"

#include <cerrno>

#include "llamabind/errors.hpp"

namespace llamabind::bindings {

namespace {

struct ErrorTypes {
    PyObject * base = nullptr;
    PyObject * not_found = nullptr;
    PyObject * permission = nullptr;
    PyObject * model_load = nullptr;
    PyObject * invalid_argument = nullptr;
    PyObject * out_of_range = nullptr;
    PyObject * closed = nullptr;
    PyObject * decode = nullptr;
    PyObject * context_full = nullptr;
    PyObject * aborted = nullptr;
    PyObject * invalid_batch = nullptr;
    PyObject * fatal_decode = nullptr;
    PyObject * state = nullptr;
    PyObject * grammar = nullptr;
    PyObject * adapter = nullptr;
    PyObject * quantize = nullptr;
    PyObject * rpc = nullptr;
};

// The module keeps the classes alive; these are borrowed references.
ErrorTypes g_types;

PyObject * make_type(py::module_ & m, const char * name, std::initializer_list<py::handle> bases, const char * doc) {
    py::tuple base_tuple(bases.size());
    std::size_t i = 0;
    for (const auto & b : bases) {
        base_tuple[i++] = py::reinterpret_borrow<py::object>(b);
    }
    py::dict ns;
    ns["__module__"] = "llamabind";
    ns["__doc__"] = doc;
    py::object cls = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject *>(&PyType_Type))(name, base_tuple, ns);
    m.attr(name) = cls;
    return cls.ptr();
}

void raise(PyObject * type, const std::string & message) {
    py::object exc = py::reinterpret_borrow<py::object>(type)(message);
    PyErr_SetObject(type, exc.ptr());
}

void raise_with_path(PyObject * type, const std::string & message, const std::string & path) {
    py::object exc = py::reinterpret_borrow<py::object>(type)(message);
    exc.attr("filename") = path;
    PyErr_SetObject(type, exc.ptr());
}

// OSError subclasses: OSError(errno, strerror, filename), so str(e) keeps our message and
// e.errno / e.filename are set.
void raise_os_error(PyObject * type, int err, const std::string & message, const std::string & path) {
    py::object exc = py::reinterpret_borrow<py::object>(type)(err, message, path);
    PyErr_SetObject(type, exc.ptr());
}

void raise_decode(PyObject * type, const DecodeError & e) {
    py::object exc = py::reinterpret_borrow<py::object>(type)(e.what());
    exc.attr("code") = e.code();
    PyErr_SetObject(type, exc.ptr());
}

}  // namespace

void init_errors(py::module_ & m) {
    py::handle exc = PyExc_Exception;
    g_types.base = make_type(m, "LlamaError", {exc}, "Base class of every error raised by llamabind.");
    py::handle base = g_types.base;
    g_types.not_found = make_type(m, "LlamaFileNotFoundError", {base, PyExc_FileNotFoundError},
                                  "A model, adapter or state file does not exist.");
    g_types.permission = make_type(m, "LlamaPermissionError", {base, PyExc_PermissionError},
                                   "A file exists but cannot be read.");
    g_types.model_load = make_type(m, "ModelLoadError", {base},
                                   "A model file could not be loaded (corrupt, unsupported, or cancelled).");
    g_types.invalid_argument = make_type(m, "InvalidArgumentError", {base, PyExc_ValueError},
                                         "An argument has an invalid value.");
    g_types.out_of_range = make_type(m, "OutOfRangeError", {base, PyExc_IndexError},
                                     "A token id, sequence id or output index is out of range.");
    g_types.closed = make_type(m, "ClosedError", {base, PyExc_ValueError},
                               "The object was closed; no further operation is possible.");
    g_types.decode = make_type(m, "DecodeError", {base, PyExc_RuntimeError},
                               "llama_decode/llama_encode failed; `code` holds llama.cpp's return value.");
    py::handle decode = g_types.decode;
    g_types.context_full = make_type(m, "ContextFullError", {decode},
                                     "No KV cache slot for the batch (llama_decode returned 1).");
    g_types.aborted = make_type(m, "AbortedError", {decode},
                                "The computation was cancelled (llama_decode returned 2).");
    g_types.invalid_batch = make_type(m, "InvalidBatchError", {decode, PyExc_ValueError},
                                      "llama.cpp rejected the batch (llama_decode returned -1).");
    g_types.fatal_decode = make_type(m, "FatalDecodeError", {decode},
                                     "The computation failed (llama_decode returned < -1).");
    g_types.state = make_type(m, "StateError", {base}, "Saving or restoring state failed.");
    g_types.grammar = make_type(m, "GrammarError", {base, PyExc_ValueError}, "A GBNF grammar did not parse.");
    g_types.adapter = make_type(m, "AdapterError", {base},
                                "A LoRA adapter or control vector could not be loaded or applied.");
    g_types.quantize = make_type(m, "QuantizeError", {base}, "Quantizing or saving a model failed.");
    g_types.rpc = make_type(m, "RpcError", {base, PyExc_ConnectionError},
                            "An RPC server cannot be reached, does not speak the protocol, or went away while holding\n"
                            "part of a model; `endpoint` names it.");

    py::register_exception_translator([](std::exception_ptr p) {
        if (!p) {
            return;
        }
        try {
            std::rethrow_exception(p);
        } catch (const FileNotFound & e) {
            raise_os_error(g_types.not_found, ENOENT, e.what(), e.path());
        } catch (const PermissionDenied & e) {
            raise_os_error(g_types.permission, EACCES, e.what(), e.path());
        } catch (const ModelLoadError & e) {
            raise_with_path(g_types.model_load, e.what(), e.path());
        } catch (const InvalidArgument & e) {
            raise(g_types.invalid_argument, e.what());
        } catch (const OutOfRange & e) {
            raise(g_types.out_of_range, e.what());
        } catch (const Closed & e) {
            raise(g_types.closed, e.what());
        } catch (const NoKvSlot & e) {
            raise_decode(g_types.context_full, e);
        } catch (const Aborted & e) {
            raise_decode(g_types.aborted, e);
        } catch (const InvalidBatch & e) {
            raise_decode(g_types.invalid_batch, e);
        } catch (const FatalDecodeError & e) {
            raise_decode(g_types.fatal_decode, e);
        } catch (const DecodeError & e) {
            raise_decode(g_types.decode, e);
        } catch (const StateError & e) {
            raise(g_types.state, e.what());
        } catch (const GrammarError & e) {
            raise(g_types.grammar, e.what());
        } catch (const AdapterError & e) {
            raise(g_types.adapter, e.what());
        } catch (const QuantizeError & e) {
            raise(g_types.quantize, e.what());
        } catch (const RpcError & e) {
            py::object exc = py::reinterpret_borrow<py::object>(g_types.rpc)(e.what());
            exc.attr("endpoint") = e.endpoint();
            PyErr_SetObject(g_types.rpc, exc.ptr());
        } catch (const Error & e) {
            raise(g_types.base, e.what());
        }
    });
}

}  // namespace llamabind::bindings
