#pragma once

// The client side of ggml's RPC backend for one model (see rpc.cpp for why it looks like this).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "ggml-backend.h"

namespace llamabind::detail {

struct RpcHelper;

// The RPC servers a model's layers live on, the devices llama.cpp loads it onto, and whether
// llama.cpp's connection to one of the servers was lost.
class RpcLink {
public:
    // Checks that every server answers (ModelLoadError naming the first that does not, and
    // why), adds them to llama.cpp's RPC backend and collects the devices a model loaded over
    // them uses: each server's devices in the order given, then this machine's GPUs as
    // llama.cpp picks them by default. `endpoints` come from parse_rpc_servers.
    static std::shared_ptr<RpcLink> open(const std::vector<std::string> & endpoints, const std::string & model_path,
                                         const char * where);

    RpcLink(const RpcLink &) = delete;
    RpcLink & operator=(const RpcLink &) = delete;
    ~RpcLink();

    const std::vector<std::string> & endpoints() const noexcept { return endpoints_; }
    // The devices, ending with nullptr, for llama_model_params::devices.
    ggml_backend_dev_t * devices() noexcept { return devices_.data(); }

    bool lost() const noexcept { return lost_.load(); }
    // Throws RpcError saying which server went away, once lost().
    void check(const char * where) const;

    // Runs `fn`, a llama.cpp call that may talk to the servers, on a helper thread and waits
    // for it: returns when it returns (rethrowing what it threw, with llama.cpp's error log
    // carried over to this thread); throws RpcError when a server goes away meanwhile, and
    // then leaves the helper blocked inside llama.cpp for good. Helpers are kept for the next
    // call (a new thread per decode would also start a new OpenMP thread team each time).
    void run(const char * where, const std::function<void()> & fn);

    // For a deleter: runs `fn` (llama_free, llama_model_free) like run(), or not at all once
    // the link is lost: freeing memory held on a server that is gone would wait forever, so
    // that memory is leaked instead.
    void release(const std::function<void()> & fn) noexcept;

private:
    explicit RpcLink(std::vector<std::string> endpoints) : endpoints_(std::move(endpoints)) {}
    std::string find_lost_endpoint() const;
    void mark_lost(const std::string & endpoint, const std::string & reason);

    std::vector<std::string> endpoints_;  // canonical "host:port"
    std::vector<std::string> wire_;       // as handed to llama.cpp (see spelled() in rpc.cpp)
    std::vector<ggml_backend_dev_t> devices_;
    std::atomic<bool> lost_{false};
    // How many failures of RPC connections in this process (rpc.cpp, Failures) this link
    // has looked at: a failure while no call of the link ran is looked at by the next call.
    std::atomic<uint64_t> checked_{0};
    mutable std::mutex mutex_;
    std::string lost_message_;
    std::string lost_endpoint_;
    std::mutex helpers_mutex_;
    std::vector<std::shared_ptr<RpcHelper>> idle_helpers_;  // threads waiting for a call
};

// fn(), through `link` when the model has one.
template <class Fn>
auto rpc_guarded(const std::shared_ptr<RpcLink> & link, const char * where, Fn && fn) -> decltype(fn()) {
    if (!link) {
        return fn();
    }
    if constexpr (std::is_void_v<decltype(fn())>) {
        link->run(where, std::function<void()>(fn));
    } else {
        decltype(fn()) result{};
        link->run(where, [&result, fn] { result = fn(); });
        return result;
    }
}

}  // namespace llamabind::detail
