// Native calls that run without the GIL: Ctrl-C that interrupts them, and interpreter exit
// while daemon threads are inside them.

#include "gil.hpp"

#include <chrono>
#include <csignal>
#include <thread>

namespace llamabind::bindings {

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
