// Value conversion between Python objects and what the C++ layer takes: UTF-8 text, bytes,
// paths, token id arrays.

#include "convert.hpp"

#include <pybind11/numpy.h>

#include <climits>

#include "llamabind/errors.hpp"

namespace llamabind::bindings {

py::str to_str(const std::string & s) {
    PyObject * obj = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (obj == nullptr) {
        throw py::error_already_set();
    }
    return py::reinterpret_steal<py::str>(obj);
}

py::object to_str_or_none(const std::optional<std::string> & s) {
    return s ? py::object(to_str(*s)) : py::object(py::none());
}

py::dict to_dict(const std::map<std::string, std::string> & m) {
    py::dict d;
    for (const auto & [k, v] : m) {
        d[to_str(k)] = to_str(v);
    }
    return d;
}

std::string to_bytes(const py::handle & obj, const char * what) {
    if (PyUnicode_Check(obj.ptr())) {
        Py_ssize_t size = 0;
        const char * data = PyUnicode_AsUTF8AndSize(obj.ptr(), &size);
        if (data == nullptr) {
            // Lone surrogates cannot be encoded; say which argument held them.
            PyErr_Clear();
            throw InvalidArgument(std::string("[") + what + "] text is not valid Unicode (it holds lone surrogates)");
        }
        return std::string(data, static_cast<std::size_t>(size));
    }
    if (PyBytes_Check(obj.ptr())) {
        return std::string(PyBytes_AS_STRING(obj.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(obj.ptr())));
    }
    if (PyObject_CheckBuffer(obj.ptr())) {
        py::buffer_info info = py::reinterpret_borrow<py::buffer>(obj).request();
        if (info.ndim > 1 || (info.ndim == 1 && info.strides[0] != info.itemsize)) {
            throw InvalidArgument(std::string("[") + what + "] expected str or a contiguous bytes-like object");
        }
        return std::string(static_cast<const char *>(info.ptr), static_cast<std::size_t>(info.size * info.itemsize));
    }
    throw py::type_error(std::string("[") + what + "] expected str or bytes, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
}

std::string path_str(const py::handle & obj) {
    py::object path = py::module_::import("os").attr("fspath")(obj);
    if (py::isinstance<py::bytes>(path)) {
        path = py::module_::import("os").attr("fsdecode")(path);
    }
    return to_bytes(path, "path");
}

std::vector<int32_t> to_tokens(const py::handle & obj, const char * what) {
    std::vector<int32_t> out;
    if (py::isinstance<py::array>(obj)) {
        auto arr = py::reinterpret_borrow<py::array>(obj);
        if (arr.ndim() != 1) {
            throw InvalidArgument(std::string("[") + what + "] token array must be 1-D, got " +
                                  std::to_string(arr.ndim()) + " dimensions");
        }
        const char kind = arr.dtype().kind();
        if (kind != 'i' && kind != 'u') {
            throw py::type_error(std::string("[") + what + "] token array must hold integers, got dtype " +
                                 std::string(py::str(arr.dtype())));
        }
        if (arr.dtype().is(py::dtype::of<int32_t>()) && (arr.flags() & py::array::c_style)) {
            const auto * data = static_cast<const int32_t *>(arr.data());
            out.assign(data, data + arr.size());
            return out;
        }
        auto wide = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
        if (!wide) {
            throw py::error_already_set();
        }
        out.reserve(static_cast<std::size_t>(wide.size()));
        const int64_t * data = wide.data();
        for (py::ssize_t i = 0; i < wide.size(); ++i) {
            if (data[i] < INT32_MIN || data[i] > INT32_MAX) {
                throw OutOfRange(std::string("[") + what + "] token id " + std::to_string(data[i]) + " at index " +
                                 std::to_string(i) + " does not fit in int32");
            }
            out.push_back(static_cast<int32_t>(data[i]));
        }
        if (kind == 'u' && arr.itemsize() == 8) {
            // uint64 values above INT64_MAX were cast to negatives above; reject them by sign.
            for (py::ssize_t i = 0; i < wide.size(); ++i) {
                if (data[i] < 0) {
                    throw OutOfRange(std::string("[") + what + "] token id at index " + std::to_string(i) +
                                     " does not fit in int32");
                }
            }
        }
        return out;
    }
    if (py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj)) {
        throw py::type_error(std::string("[") + what + "] expected a sequence of token ids, got text; tokenize it first");
    }
    if (!PySequence_Check(obj.ptr())) {
        throw py::type_error(std::string("[") + what + "] expected a sequence of token ids, got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    }
    py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    const auto n = static_cast<std::size_t>(py::len(seq));
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        py::object item = seq[i];
        if (!PyIndex_Check(item.ptr()) || PyFloat_Check(item.ptr())) {
            throw py::type_error(std::string("[") + what + "] token at index " + std::to_string(i) +
                                 " is not an integer: " + std::string(py::repr(item)));
        }
        PyObject * index = PyNumber_Index(item.ptr());
        if (index == nullptr) {
            throw py::error_already_set();
        }
        py::object index_obj = py::reinterpret_steal<py::object>(index);
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            throw py::error_already_set();
        }
        if (overflow != 0 || v < INT32_MIN || v > INT32_MAX) {
            throw OutOfRange(std::string("[") + what + "] token id at index " + std::to_string(i) +
                             " does not fit in int32: " + std::string(py::repr(item)));
        }
        out.push_back(static_cast<int32_t>(v));
    }
    return out;
}

}  // namespace llamabind::bindings
