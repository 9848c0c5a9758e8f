// Routing llama.cpp's log to Python's `logging` (logger "llamabind").

#include "logging.hpp"

#include <atomic>
#include <deque>
#include <mutex>
#include <string>
#include <utility>

#include "convert.hpp"
#include "llamabind/backend.hpp"

namespace llamabind::bindings {

// llama.cpp logs from any thread, often while we hold no GIL and another thread
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

}  // namespace llamabind::bindings
