#pragma once

// Native calls that run without the GIL: Ctrl-C that interrupts them, interpreter exit while
// daemon threads are inside them, and call_released, which binds the two together.

#include <pybind11/pybind11.h>

#ifdef __GLIBCXX__
#include <cxxabi.h>
#endif

#include <atomic>
#include <type_traits>

#include "logging.hpp"

namespace py = pybind11;

namespace llamabind::bindings {

// Called once from module.cpp.
void init_interrupts();

// Ctrl-C during a native call that runs with the GIL released. Construct with the GIL held
// before the call: on the main thread it chains a SIGINT handler in front of Python's, so
// the signal both reaches Python (as usual) and sets a flag that abort callbacks poll.
class InterruptScope {
public:
    InterruptScope();
    ~InterruptScope();
    InterruptScope(const InterruptScope &) = delete;
    InterruptScope & operator=(const InterruptScope &) = delete;

    // True once SIGINT arrived during this scope (safe from any thread).
    bool interrupted() const noexcept;
    // The flag to hand to Context::decode as its stop flag: Ctrl-C's on the main thread,
    // the interpreter-exit flag (see begin_shutdown) on any other.
    const std::atomic<bool> * flag() const noexcept;
    // After an abort caused by SIGINT: runs Python's signal handlers (raising
    // KeyboardInterrupt as error_already_set). Call with the GIL held.
    void raise_if_interrupted() const;

private:
    bool installed_ = false;
};

// Releases the GIL for its lifetime, like py::gil_scoped_release, with two rules for
// interpreter exit:
// - Once exit has begun (see begin_shutdown), a thread other than the main thread that would
//   enter native code, or that comes back from it, is parked (sleeps until the process ends)
//   instead: native code must not run while the C runtime's exit handlers tear down
//   llama.cpp's libraries and backend modules, and the thread has nothing left to return to.
// - When it ends during finalization: a daemon thread that takes the GIL back then is ended
//   by CPython with pthread_exit, and that forced unwinding cannot pass a destructor (the
//   process aborts with "terminate called without an active exception"). Such a thread is
//   parked as well; the process is exiting anyway.
class GilRelease {
public:
    GilRelease();
    // Not noexcept: a daemon thread that blocks on re-taking the GIL while the interpreter
    // finalizes is ended by Python with pthread_exit, whose forced unwinding must pass through
    // here (and through pybind11, which rethrows it) instead of hitting std::terminate.
    ~GilRelease() noexcept(false);
    GilRelease(const GilRelease &) = delete;
    GilRelease & operator=(const GilRelease &) = delete;

private:
    PyThreadState * state_;
    bool counted_ = false;  // a thread other than the main one, counted as inside native code
};

// Registered with atexit at import: from then on native calls on other threads stop at the
// next abort check (their stop flag is raised) and every such thread parks when it leaves
// native code; waits (GIL released, at most a few seconds) until none is inside. Python's
// atexit runs after non-daemon threads have been joined and before the C runtime unloads
// anything, so what is still running then is a daemon thread.
void begin_shutdown();

// Runs `fn` with the GIL released inside an InterruptScope and flushes queued log lines
// afterwards. If the call was aborted by Ctrl-C, Python's signal handlers run and their
// exception (KeyboardInterrupt) replaces the native one.
template <class Fn>
auto call_released(Fn && fn) -> decltype(fn(static_cast<const std::atomic<bool> *>(nullptr))) {
    InterruptScope scope;
    try {
        if constexpr (std::is_void_v<decltype(fn(scope.flag()))>) {
            {
                GilRelease release;
                fn(scope.flag());
            }
            flush_logs();
        } else {
            auto result = [&] {
                GilRelease release;
                return fn(scope.flag());
            }();
            flush_logs();
            return result;
        }
#ifdef __GLIBCXX__
    } catch (abi::__forced_unwind &) {
        throw;  // thread exit at interpreter shutdown (see GilRelease): no GIL, touch nothing
#endif
    } catch (...) {
        // Check for Ctrl-C before emitting logs: running Python logging code would run the
        // pending signal handler and its KeyboardInterrupt would surface there instead.
        scope.raise_if_interrupted();
        flush_logs();
        throw;
    }
}

}  // namespace llamabind::bindings
