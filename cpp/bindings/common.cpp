// Helpers shared by the binding files: string conversion, log routing to Python's
// `logging`, and Ctrl-C handling around calls that run without the GIL.

#include "common.hpp"

#include <chrono>
#include <climits>
#include <csignal>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "llamabind/backend.hpp"
#include "llamabind/errors.hpp"

namespace llamabind::bindings {

py::str to_str(const std::string & s) {
    PyObject * obj = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (obj == nullptr) {
        throw py::error_already_set();
    }
    return py::reinterpret_steal<py::str>(obj);
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

// ---------------------------------------------------------------------------------------
// Logging. llama.cpp logs from any thread, often while we hold no GIL and another thread
// may be waiting on a lock we hold, so the callback never blocks on the GIL: it emits
// directly when its thread already holds the GIL, and queues otherwise; binding calls
// flush the queue when they get the GIL back.

namespace {

struct Record {
    int level;
    std::string text;
};

struct LogQueue {
    std::mutex mutex;
    std::deque<Record> records;
    std::atomic<bool> nonempty{false};
    std::size_t dropped = 0;
};

LogQueue & log_queue() {
    static auto * q = new LogQueue();  // leaked: logging may happen during interpreter exit
    return *q;
}

py::object * g_logger = nullptr;  // leaked reference to logging.getLogger("llamabind")

int python_level(ggml_log_level level) {
    switch (level) {
        case GGML_LOG_LEVEL_DEBUG: return 10;
        case GGML_LOG_LEVEL_INFO: return 20;
        case GGML_LOG_LEVEL_WARN: return 30;
        case GGML_LOG_LEVEL_ERROR: return 40;
        default: return 20;
    }
}

bool interpreter_alive() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsInitialized() && !Py_IsFinalizing();
#else
    return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

void emit(const Record & r) {
    if (g_logger == nullptr) {
        return;
    }
    try {
        if (g_logger->attr("isEnabledFor")(r.level).cast<bool>()) {
            g_logger->attr("log")(r.level, "%s", to_str(r.text));
        }
    } catch (py::error_already_set & e) {
        // Logging must not raise into llama.cpp, but a Ctrl-C that arrived while Python code
        // ran here must not be lost: re-arm it so Python raises it at its next check.
        if (e.matches(PyExc_KeyboardInterrupt)) {
            PyErr_SetInterrupt();
        }
    }
}

void route(Record record) {
    if (!interpreter_alive()) {
        return;
    }
    if (PyGILState_Check()) {
        flush_logs();
        emit(record);
        return;
    }
    auto & q = log_queue();
    std::lock_guard<std::mutex> lock(q.mutex);
    constexpr std::size_t cap = 10000;
    if (q.records.size() >= cap) {
        q.records.pop_front();
        ++q.dropped;
    }
    q.records.push_back(std::move(record));
    q.nonempty.store(true, std::memory_order_release);
}

// llama.cpp writes a line in pieces (level CONT continues the last one); hand whole lines
// to Python.
struct PendingLine {
    int level = 20;
    std::string text;
};

void on_log(ggml_log_level level, const std::string & text) {
    thread_local PendingLine pending;
    if (level != GGML_LOG_LEVEL_CONT) {
        if (!pending.text.empty()) {
            route({pending.level, std::move(pending.text)});
            pending.text.clear();
        }
        pending.level = python_level(level);
    }
    pending.text += text;
    std::size_t nl;
    while ((nl = pending.text.find('\n')) != std::string::npos) {
        std::string line = pending.text.substr(0, nl);
        pending.text.erase(0, nl + 1);
        if (!line.empty()) {
            route({pending.level, std::move(line)});
        }
    }
}

}  // namespace

void flush_logs() {
    auto & q = log_queue();
    if (!q.nonempty.load(std::memory_order_acquire)) {
        return;
    }
    std::deque<Record> records;
    std::size_t dropped = 0;
    {
        std::lock_guard<std::mutex> lock(q.mutex);
        records.swap(q.records);
        dropped = q.dropped;
        q.dropped = 0;
        q.nonempty.store(false, std::memory_order_release);
    }
    if (dropped > 0) {
        emit({30, "llamabind: " + std::to_string(dropped) + " llama.cpp log lines were dropped"});
    }
    for (const auto & r : records) {
        emit(r);
    }
}

void install_logging() {
    if (g_logger == nullptr) {
        g_logger = new py::object(py::module_::import("logging").attr("getLogger")("llamabind"));
    }
    set_log_callback(on_log);
}

// ---------------------------------------------------------------------------------------
// Ctrl-C.

namespace {

std::atomic<bool> g_sigint{false};
std::atomic<bool> g_shutdown{false};  // set once by begin_shutdown
std::atomic<int> g_in_native{0};      // threads other than the main one inside a GilRelease
int g_depth = 0;  // scopes open on the main thread (only touched with the GIL held)
unsigned long g_main_thread = 0;

#ifndef _WIN32
struct sigaction g_prev_action;

extern "C" void on_sigint(int sig, siginfo_t * info, void * uctx) {
    g_sigint.store(true, std::memory_order_relaxed);
    // Hand the signal on to whoever was installed (normally Python's own handler, which
    // schedules KeyboardInterrupt).
    if (g_prev_action.sa_flags & SA_SIGINFO) {
        if (g_prev_action.sa_sigaction != nullptr) {
            g_prev_action.sa_sigaction(sig, info, uctx);
        }
    } else if (g_prev_action.sa_handler == SIG_DFL) {
        sigaction(SIGINT, &g_prev_action, nullptr);
        raise(sig);
    } else if (g_prev_action.sa_handler != SIG_IGN && g_prev_action.sa_handler != nullptr) {
        g_prev_action.sa_handler(sig);
    }
}

void install_handler() {
    struct sigaction action {};
    action.sa_sigaction = on_sigint;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &g_prev_action);
}

void restore_handler() { sigaction(SIGINT, &g_prev_action, nullptr); }
#else
// Windows: Python's own console handler still raises KeyboardInterrupt once the call returns;
// decodes are not interrupted early there.
void install_handler() {}
void restore_handler() {}
#endif

}  // namespace

void init_interrupts() {
    g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
}

InterruptScope::InterruptScope() {
    if (PyThread_get_thread_ident() != g_main_thread) {
        return;
    }
    installed_ = true;
    if (g_depth++ == 0) {
        g_sigint.store(false, std::memory_order_relaxed);
        install_handler();
    }
}

InterruptScope::~InterruptScope() {
    if (installed_ && --g_depth == 0) {
        restore_handler();
    }
}

const std::atomic<bool> * InterruptScope::flag() const noexcept { return installed_ ? &g_sigint : &g_shutdown; }

bool InterruptScope::interrupted() const noexcept { return installed_ && g_sigint.load(std::memory_order_relaxed); }

void InterruptScope::raise_if_interrupted() const {
    if (interrupted() && PyErr_CheckSignals() != 0) {
        throw py::error_already_set();
    }
}

namespace {

[[noreturn]] void park() {
    for (;;) {
        std::this_thread::sleep_for(std::chrono::hours(1));
    }
}

}  // namespace

GilRelease::GilRelease() : state_(PyEval_SaveThread()) {
    if (PyThread_get_thread_ident() == g_main_thread) {
        return;
    }
    // Announce first, then look: begin_shutdown raises the flag first, then looks at the
    // count, so one of the two always sees the other (sequentially consistent atomics).
    g_in_native.fetch_add(1);
    counted_ = true;
    if (g_shutdown.load()) {
        g_in_native.fetch_sub(1);
        park();
    }
}

GilRelease::~GilRelease() noexcept(false) {
    if (counted_) {
        g_in_native.fetch_sub(1);
        if (g_shutdown.load()) {
            park();
        }
    }
#if PY_VERSION_HEX >= 0x030D0000
    const bool finalizing = Py_IsFinalizing() != 0;
#else
    const bool finalizing = _Py_IsFinalizing() != 0;
#endif
    if (finalizing) {
        park();
    }
    PyEval_RestoreThread(state_);
}

void begin_shutdown() {
    g_shutdown.store(true);
    py::gil_scoped_release release;  // the main thread: not counted, never parked
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (g_in_native.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

}  // namespace llamabind::bindings
