// ggml's RPC backend from llamabind: endpoints, the handshake check, the server, and the
// client-side guard (RpcLink) that keeps a lost server from taking the process down.
//
// What llama.cpp's RPC client does when a server is not there (pinned source,
// ggml/src/ggml-rpc/ggml-rpc.cpp), and what this file does about it:
// - Connecting: rpc_dispatcher::start() calls GGML_ABORT("Failed to connect to ...") when the
//   TCP connection fails, and again when the handshake fails (another protocol version, not
//   an RPC server). The process dies. So a model's servers are checked first (check_rpc_server:
//   connection and handshake, each with a timeout) and a bad one is a ModelLoadError.
// - Serving: every request goes through one dispatcher thread per server. When a send or a
//   receive fails (the server died, the network broke), that thread calls
//   GGML_ABORT("Remote RPC server crashed or returned malformed response"). ggml_abort calls
//   the process's abort callback (ggml_set_abort_callback) and then abort(). Ours never
//   returns for an abort raised in ggml-rpc: it wakes the waiting calls and parks the thread
//   for good, so abort() is never reached. The thread that was waiting for the dispatcher
//   (inside llama_decode) would then wait forever; so every llama.cpp call on a model with
//   RPC devices runs on a helper thread (RpcLink::run), and the caller, woken by the abort,
//   finds which of its servers went away (its socket to it was closed by the peer, or it can
//   no longer be reached) and throws RpcError. The helper stays blocked in llama.cpp; the
//   model and its contexts are leaked on purpose (freeing them would send requests to the
//   server that is gone, and wait forever).
// - llama.cpp keeps one dispatcher per endpoint string for as long as any buffer uses it, and
//   the leaked buffers keep the parked one alive. A later model on the same server gets a new
//   one by handing llama.cpp another spelling of the same endpoint (leading zeros in the port,
//   which its parser reads as the same number).

#include "llamabind/rpc.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "detail.hpp"
#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "ggml.h"
#include "llama.h"
#include "llamabind/backend.hpp"
#include "llamabind/errors.hpp"
#include "net.hpp"
#include "rpc_link.hpp"

namespace llamabind {

namespace net = detail::net;

namespace {

struct HostPort {
    std::string host;
    int port = 0;
};

HostPort split(const std::string & endpoint) {
    const auto colon = endpoint.rfind(':');
    return {endpoint.substr(0, colon), std::stoi(endpoint.substr(colon + 1))};
}

std::string trim(const std::string & s) {
    const auto first = s.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) {
        return {};
    }
    return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

std::string canonical_endpoint(const std::string & entry) {
    const std::string e = trim(entry);
    const auto colon = e.find(':');
    if (colon != std::string::npos && e.find(':', colon + 1) != std::string::npos) {
        throw InvalidArgument("[rpc_servers] '" + e +
                              "': IPv6 addresses are not supported by llama.cpp's RPC client; use a host name "
                              "or an IPv4 address");
    }
    const std::string host = trim(e.substr(0, colon));
    if (host.empty()) {
        throw InvalidArgument("[rpc_servers] '" + e + "' names no host (expected host:port)");
    }
    int port = kRpcDefaultPort;
    if (colon != std::string::npos) {
        const std::string digits = trim(e.substr(colon + 1));
        if (digits.empty() || digits.size() > 5 ||
            !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            std::stoi(digits) < 1 || std::stoi(digits) > 65535) {
            throw InvalidArgument("[rpc_servers] '" + e + "': the port must be a number from 1 to 65535");
        }
        port = std::stoi(digits);
    }
    return host + ":" + std::to_string(port);
}

ggml_backend_reg_t rpc_registry(const char * where) {
    ensure_backend();
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    if (reg == nullptr) {
        throw Error(std::string("[") + where +
                    "] this build of llamabind has no RPC backend (it was built with LLAMABIND_RPC=OFF)");
    }
    return reg;
}

template <class Fn>
Fn rpc_function(ggml_backend_reg_t reg, const char * name) {
    void * proc = ggml_backend_reg_get_proc_address(reg, name);
    Fn fn = nullptr;
    static_assert(sizeof(fn) == sizeof(proc), "function and data pointers differ in size");
    std::memcpy(&fn, &proc, sizeof(proc));
    if (fn == nullptr) {
        throw Error(std::string("[llamabind] ggml's RPC backend has no ") + name);
    }
    return fn;
}

// Where a failing ggml-rpc thread reports before it parks, and where RpcLink::run waits.
struct Failures {
    std::mutex mutex;
    std::condition_variable cv;
    uint64_t count = 0;
    std::string message;
};

Failures & failures() {
    static Failures * f = new Failures();  // leaked: parked threads outlive static destruction
    return *f;
}

// The call a helper thread runs (RpcLink::run).
struct Call {
    std::function<void()> fn;
    std::exception_ptr error;
    std::string error_log;
    bool done = false;  // guarded by failures().mutex
};

}  // namespace

namespace detail {

// A thread that runs one RpcLink call after another (RpcLink::run). It owns itself through
// the shared_ptr its thread holds, so one left blocked inside llama.cpp by a lost server
// outlives the link.
struct RpcHelper {
    void post(std::shared_ptr<Call> call) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            next_ = std::move(call);
        }
        cv_.notify_one();
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        cv_.notify_one();
    }

    void serve() {
        for (;;) {
            std::shared_ptr<Call> call;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                cv_.wait(lock, [this] { return next_ != nullptr || stopping_; });
                if (next_ == nullptr) {
                    return;
                }
                call = std::move(next_);
            }
            clear_last_error_log();
            std::exception_ptr error;
            try {
                call->fn();
            } catch (...) {
                error = std::current_exception();
            }
            auto & fs = failures();
            {
                std::lock_guard<std::mutex> lock(fs.mutex);
                call->error = error;
                call->error_log = last_error_log();
                call->done = true;
            }
            fs.cv.notify_all();
        }
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::shared_ptr<Call> next_;
    bool stopping_ = false;
};

}  // namespace detail

namespace {

ggml_abort_callback_t g_previous_abort = nullptr;

[[noreturn]] void park_forever() {
    for (;;) {
        std::this_thread::sleep_for(std::chrono::hours(1));
    }
}

void on_ggml_abort(const char * message) {
    if (message != nullptr && std::strstr(message, "ggml-rpc") != nullptr) {
        auto & f = failures();
        {
            std::lock_guard<std::mutex> lock(f.mutex);
            ++f.count;
            const char * text = std::strstr(message, ": ");  // after "<file>:<line>"
            f.message = text != nullptr ? trim(text + 2) : message;
        }
        f.cv.notify_all();
        park_forever();
    }
    // Any other abort goes on as ggml's would (which also prints a backtrace, when no callback
    // is set; ggml offers no way to call that part from here).
    if (g_previous_abort != nullptr) {
        g_previous_abort(message);
    } else if (message != nullptr) {
        std::fprintf(stderr, "%s\n", message);
    }
}

void install_abort_hook() {
    static std::once_flag once;
    std::call_once(once, [] { g_previous_abort = ggml_set_abort_callback(&on_ggml_abort); });
}

// Live links, and how many times connections to each server were abandoned.
struct Registry {
    std::mutex mutex;
    std::vector<std::weak_ptr<detail::RpcLink>> links;
    std::map<std::string, int> abandoned;
    std::set<std::intptr_t> dead_sockets;  // sockets of lost links (leaked, so never reused)
};

Registry & registry() {
    static Registry * r = new Registry();
    return *r;
}

// The endpoint as llama.cpp gets it: with one leading zero in the port per abandoned
// connection, so it is a new key in llama.cpp's table of connections.
std::string spelled(const std::string & endpoint, int abandoned) {
    const HostPort hp = split(endpoint);
    return hp.host + ":" + std::string(static_cast<std::size_t>(abandoned), '0') + std::to_string(hp.port);
}

std::string describe_read(net::Connection::Read r) {
    switch (r) {
        case net::Connection::Read::Closed: return "it closed the connection during the handshake";
        case net::Connection::Read::Timeout: return "";
        case net::Connection::Read::Failed:
        case net::Connection::Read::Ok: break;
    }
    return "the connection failed during the handshake";
}

// GPUs and integrated GPUs of this machine, as llama.cpp's default device selection takes
// them (src/llama.cpp, llama_prepare_model_devices): discrete GPUs (one per device id),
// integrated ones only when there is no discrete one.
std::vector<ggml_backend_dev_t> local_gpus() {
    std::vector<ggml_backend_dev_t> gpus;
    std::vector<ggml_backend_dev_t> igpus;
    for (std::size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        const auto type = ggml_backend_dev_type(dev);
        ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
        if (reg != nullptr && std::string(ggml_backend_reg_name(reg)) == "RPC") {
            continue;  // servers another part of the program registered: not this model's
        }
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU) {
            ggml_backend_dev_props props{};
            ggml_backend_dev_get_props(dev, &props);
            const bool seen = std::any_of(gpus.begin(), gpus.end(), [&](ggml_backend_dev_t other) {
                ggml_backend_dev_props p{};
                ggml_backend_dev_get_props(other, &p);
                return props.device_id != nullptr && p.device_id != nullptr && std::strcmp(props.device_id, p.device_id) == 0;
            });
            if (!seen) {
                gpus.push_back(dev);
            }
        } else if (type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
            if (igpus.empty() || ggml_backend_dev_backend_reg(dev) == ggml_backend_dev_backend_reg(igpus.back())) {
                igpus.push_back(dev);
            }
        }
    }
    return gpus.empty() ? igpus : gpus;
}

std::vector<ggml_backend_dev_t> server_devices(const std::vector<std::string> & names) {
    ensure_backend();
    std::vector<ggml_backend_dev_t> out;
    for (const auto & name : names) {
        ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.c_str());
        if (dev == nullptr) {
            std::string known;
            for (std::size_t i = 0; i < ggml_backend_dev_count(); ++i) {
                known += (known.empty() ? "" : ", ") + std::string(ggml_backend_dev_name(ggml_backend_dev_get(i)));
            }
            throw InvalidArgument("[rpc-server] unknown device '" + name + "' (devices here: " + known + ")");
        }
        out.push_back(dev);
    }
    if (out.empty()) {
        for (std::size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            const auto type = ggml_backend_dev_type(dev);
            if (type != GGML_BACKEND_DEVICE_TYPE_CPU && type != GGML_BACKEND_DEVICE_TYPE_ACCEL) {
                out.push_back(dev);
            }
        }
    }
    if (out.empty()) {
        if (ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)) {
            out.push_back(cpu);
        }
    }
    return out;
}

}  // namespace

std::vector<std::string> parse_rpc_servers(const std::vector<std::string> & servers) {
    std::vector<std::string> out;
    for (const auto & item : servers) {
        detail::check_no_nul(item, "rpc_servers", "an endpoint");
        std::size_t start = 0;
        while (start <= item.size()) {
            const auto comma = std::min(item.find(',', start), item.size());
            const std::string entry = trim(item.substr(start, comma - start));
            start = comma + 1;
            if (entry.empty()) {
                continue;
            }
            std::string endpoint = canonical_endpoint(entry);
            if (std::find(out.begin(), out.end(), endpoint) != out.end()) {
                throw InvalidArgument("[rpc_servers] '" + endpoint + "' is given twice");
            }
            out.push_back(std::move(endpoint));
        }
    }
    if (out.size() > GGML_RPC_MAX_SERVERS) {
        throw InvalidArgument("[rpc_servers] " + std::to_string(out.size()) + " servers given; ggml's RPC backend takes at most " +
                              std::to_string(GGML_RPC_MAX_SERVERS));
    }
    return out;
}

std::vector<std::string> parse_rpc_servers(const std::string & servers) {
    return parse_rpc_servers(std::vector<std::string>{servers});
}

std::string rpc_protocol_version() {
    return std::to_string(RPC_PROTO_MAJOR_VERSION) + "." + std::to_string(RPC_PROTO_MINOR_VERSION) + "." +
           std::to_string(RPC_PROTO_PATCH_VERSION);
}

void check_rpc_server(const std::string & endpoint, std::chrono::milliseconds timeout) {
    const std::string ep = canonical_endpoint(endpoint);
    const HostPort hp = split(ep);
    std::string error;
    net::Connection conn = net::Connection::open(hp.host, hp.port, timeout, error);
    if (!conn.valid()) {
        throw RpcError("RPC server '" + ep + "' cannot be reached: " + error, ep);
    }
    // The handshake as llama.cpp's client sends it (ggml-rpc.cpp, negotiate_hello): command
    // byte HELLO (14), the request size, a request of RPC_CONN_CAPS_SIZE (24) zero bytes (no
    // RDMA); the reply is its size and {major, minor, patch, padding, 24 bytes of caps}.
    unsigned char request[1 + 8 + 24] = {};
    request[0] = 14;
    const uint64_t request_size = 24;
    std::memcpy(request + 1, &request_size, sizeof(request_size));
    if (!conn.send_all(request, sizeof(request))) {
        throw RpcError("RPC server '" + ep + "' accepted the connection but the handshake could not be sent", ep);
    }
    const auto deadline = net::Clock::now() + timeout;
    uint64_t reply_size = 0;
    auto r = conn.recv_all(&reply_size, sizeof(reply_size), deadline);
    unsigned char reply[28] = {};
    if (r == net::Connection::Read::Ok && reply_size == sizeof(reply)) {
        r = conn.recv_all(reply, sizeof(reply), deadline);
    } else if (r == net::Connection::Read::Ok) {
        throw RpcError("'" + ep + "' is not an RPC server of llama.cpp's protocol " + rpc_protocol_version() +
                           " (its handshake reply has the wrong size)",
                       ep);
    }
    if (r == net::Connection::Read::Timeout) {
        throw RpcError("RPC server '" + ep + "' accepted the connection but did not answer the handshake within " +
                           std::to_string(timeout.count()) +
                           " ms; a server serves one client at a time: is another client using it?",
                       ep);
    }
    if (r != net::Connection::Read::Ok) {
        throw RpcError("'" + ep + "' does not answer like an RPC server: " + describe_read(r), ep);
    }
    if (reply[0] != RPC_PROTO_MAJOR_VERSION || reply[1] > RPC_PROTO_MINOR_VERSION) {
        throw RpcError("RPC server '" + ep + "' speaks protocol " + std::to_string(reply[0]) + "." +
                           std::to_string(reply[1]) + "." + std::to_string(reply[2]) + ", this build speaks " +
                           rpc_protocol_version() + " (build both from the same llama.cpp)",
                       ep);
    }
}

RpcServerParams::RpcServerParams()
    : host("127.0.0.1"),
      port(kRpcDefaultPort),
      n_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency() / 2))) {}

std::vector<std::string> rpc_server_devices(const std::vector<std::string> & names) {
    std::vector<std::string> out;
    for (ggml_backend_dev_t dev : server_devices(names)) {
        out.emplace_back(ggml_backend_dev_name(dev));
    }
    return out;
}

void serve_rpc(const RpcServerParams & params) {
    const char * where = "serve_rpc";
    if (!net::is_ipv4_address(params.host)) {
        throw InvalidArgument(std::string("[") + where + "] host must be an IPv4 address (llama.cpp's server binds "
                              "IPv4 only), got '" + params.host + "'");
    }
    if (params.port < 1 || params.port > 65535) {
        throw InvalidArgument(std::string("[") + where + "] port must be from 1 to 65535, got " + std::to_string(params.port));
    }
    if (params.n_threads < 1) {
        throw InvalidArgument(std::string("[") + where + "] n_threads must be >= 1, got " + std::to_string(params.n_threads));
    }
    auto start = rpc_function<decltype(&ggml_backend_rpc_start_server)>(rpc_registry(where), "ggml_backend_rpc_start_server");
    std::vector<ggml_backend_dev_t> devs = server_devices(params.devices);
    if (devs.empty()) {
        throw Error(std::string("[") + where + "] this machine has no device to serve");
    }
    if (!params.cache_dir.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(params.cache_dir, ec);
        if (ec) {
            throw InvalidArgument(std::string("[") + where + "] cannot create the cache directory '" + params.cache_dir +
                                  "': " + ec.message());
        }
    }
    const std::string endpoint = params.host + ":" + std::to_string(params.port);
    std::string error;
    if (!net::can_listen(params.host, params.port, error)) {
        throw RpcError(std::string("[") + where + "] cannot listen on " + endpoint + ": " + error, endpoint);
    }
    // llama.cpp's server prints what it serves and each client it accepts to stdout, meant for
    // a person watching it: line by line, also into a pipe or a file (a process that serves is
    // ended by a signal, so a full buffer would never be written).
    std::setvbuf(stdout, nullptr, _IOLBF, BUFSIZ);
    start(endpoint.c_str(), params.cache_dir.empty() ? nullptr : params.cache_dir.c_str(),
          static_cast<std::size_t>(params.n_threads), devs.size(), devs.data());
    // It returns only when it could not set up or accept (it has printed why).
    throw RpcError(std::string("[") + where + "] llama.cpp's RPC server on " + endpoint + " stopped", endpoint);
}

namespace detail {

std::shared_ptr<RpcLink> RpcLink::open(const std::vector<std::string> & endpoints, const std::string & model_path,
                                       const char * where) {
    ggml_backend_reg_t reg = rpc_registry(where);
    using add_server_fn = ggml_backend_reg_t (*)(const char *);
    auto add_server = rpc_function<add_server_fn>(reg, "ggml_backend_rpc_add_server");
    install_abort_hook();

    std::shared_ptr<RpcLink> link(new RpcLink(endpoints));
    {
        auto & f = failures();
        std::lock_guard<std::mutex> lock(f.mutex);
        link->checked_ = f.count;
    }
    for (const auto & endpoint : endpoints) {
        // A server this process already uses (another model) shares llama.cpp's connection
        // to it: checking it again would wait for a handshake it cannot answer while it
        // serves that connection.
        std::string wire;
        bool shared = false;
        {
            auto & r = registry();
            std::lock_guard<std::mutex> lock(r.mutex);
            for (const auto & weak : r.links) {
                auto other = weak.lock();
                if (!other || other->lost()) {
                    continue;
                }
                const auto it = std::find(other->endpoints_.begin(), other->endpoints_.end(), endpoint);
                if (it != other->endpoints_.end()) {
                    wire = other->wire_[static_cast<std::size_t>(it - other->endpoints_.begin())];
                    shared = true;
                    break;
                }
            }
            if (!shared) {
                wire = spelled(endpoint, r.abandoned[endpoint]);
            }
        }
        if (!shared) {
            try {
                check_rpc_server(endpoint);
            } catch (const RpcError & e) {
                throw ModelLoadError(std::string("[") + where + "] cannot load '" + model_path + "': " + e.what(), model_path);
            }
        }
        // Asks the server for its devices: llama.cpp's own connection (it aborts if the server
        // went away since the check above; a narrow window this layer cannot close).
        ggml_backend_reg_t server = add_server(wire.c_str());
        if (server == nullptr || ggml_backend_reg_dev_count(server) == 0) {
            throw ModelLoadError(std::string("[") + where + "] cannot load '" + model_path + "': RPC server '" +
                                     endpoint + "' offers no device",
                                 model_path);
        }
        for (std::size_t i = 0; i < ggml_backend_reg_dev_count(server); ++i) {
            link->devices_.push_back(ggml_backend_reg_dev_get(server, i));
        }
        link->wire_.push_back(wire);
    }
    for (ggml_backend_dev_t dev : local_gpus()) {
        link->devices_.push_back(dev);
    }
    if (link->devices_.size() > llama_max_devices()) {
        throw InvalidArgument(std::string("[") + where + "] " + std::to_string(link->devices_.size()) +
                              " devices (RPC servers' and this machine's GPUs); llama.cpp takes at most " +
                              std::to_string(llama_max_devices()));
    }
    link->devices_.push_back(nullptr);
    {
        auto & r = registry();
        std::lock_guard<std::mutex> lock(r.mutex);
        r.links.erase(std::remove_if(r.links.begin(), r.links.end(), [](const auto & w) { return w.expired(); }),
                      r.links.end());
        r.links.push_back(link);
    }
    return link;
}

void RpcLink::check(const char * where) const {
    if (!lost()) {
        return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    throw RpcError(std::string("[") + where + "] " + lost_message_, lost_endpoint_);
}

void RpcLink::run(const char * where, const std::function<void()> & fn) {
    check(where);
    auto call = std::make_shared<Call>();
    call->fn = fn;
    auto & f = failures();
    // Failures since this link last looked count too: a connection llama.cpp finds broken
    // while it finishes asynchronous work of an earlier call fails before this call begins.
    uint64_t seen = checked_.load();
    std::shared_ptr<RpcHelper> helper;
    {
        std::lock_guard<std::mutex> lock(helpers_mutex_);
        if (!idle_helpers_.empty()) {
            helper = std::move(idle_helpers_.back());
            idle_helpers_.pop_back();
        }
    }
    if (!helper) {
        helper = std::make_shared<RpcHelper>();
        std::thread([helper] { helper->serve(); }).detach();
    }
    helper->post(call);

    std::unique_lock<std::mutex> lock(f.mutex);
    for (;;) {
        f.cv.wait(lock, [&] { return call->done || f.count != seen; });
        if (call->done) {
            break;
        }
        // Some RPC connection of this process failed: is it one of ours?
        seen = f.count;
        const std::string reason = f.message;
        lock.unlock();
        const std::string endpoint = find_lost_endpoint();
        if (!endpoint.empty()) {
            mark_lost(endpoint, reason);
            check(where);
        }
        checked_.store(seen);
        lock.lock();
    }
    lock.unlock();
    {
        std::lock_guard<std::mutex> helpers(helpers_mutex_);
        idle_helpers_.push_back(std::move(helper));
    }
    set_last_error_log(call->error_log);
    if (call->error) {
        std::rethrow_exception(call->error);
    }
}

RpcLink::~RpcLink() {
    for (auto & helper : idle_helpers_) {
        helper->stop();
    }
}

void RpcLink::release(const std::function<void()> & fn) noexcept {
    try {
        if (!lost()) {
            run("release", fn);
        }
    } catch (...) {
        // Lost meanwhile: leaked (see run).
    }
}

std::string RpcLink::find_lost_endpoint() const {
    std::set<std::intptr_t> dead;
    {
        auto & r = registry();
        std::lock_guard<std::mutex> lock(r.mutex);
        dead = r.dead_sockets;
    }
    for (const auto & endpoint : endpoints_) {
        const HostPort hp = split(endpoint);
        bool connected = false;
        for (std::intptr_t fd : net::sockets_connected_to(hp.host, hp.port)) {
            if (dead.count(fd) != 0) {
                continue;
            }
            connected = true;
            if (net::peer_closed(fd)) {
                return endpoint;
            }
        }
        if (!connected) {
            // No connection to look at (or a platform that cannot list them): a server that
            // no longer takes connections is gone.
            std::string error;
            if (!net::Connection::open(hp.host, hp.port, std::chrono::seconds(2), error).valid()) {
                return endpoint;
            }
        }
    }
    return {};
}

void RpcLink::mark_lost(const std::string & endpoint, const std::string & reason) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (lost_.load()) {
            return;
        }
        lost_endpoint_ = endpoint;
        lost_message_ = "lost the connection to RPC server '" + endpoint + "' (llama.cpp: " + reason +
                        "). The model's layers there are gone: this model and its contexts cannot be used any more "
                        "(their memory is left allocated, since llama.cpp cannot free it without the server); load "
                        "the model again once the server is back";
        lost_.store(true);
    }
    // llama.cpp's connections for this model are abandoned: later models get new ones, and
    // servers still alive are let go (they serve one client at a time) unless another live
    // model shares the connection.
    auto & r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    for (std::size_t i = 0; i < endpoints_.size(); ++i) {
        const bool shared = std::any_of(r.links.begin(), r.links.end(), [&](const std::weak_ptr<RpcLink> & w) {
            auto other = w.lock();
            return other && other.get() != this && !other->lost() &&
                   std::find(other->endpoints_.begin(), other->endpoints_.end(), endpoints_[i]) != other->endpoints_.end();
        });
        if (shared) {
            continue;
        }
        ++r.abandoned[endpoints_[i]];
        const HostPort hp = split(endpoints_[i]);
        for (std::intptr_t fd : net::sockets_connected_to(hp.host, hp.port)) {
            if (r.dead_sockets.insert(fd).second) {
                net::shutdown_both(fd);
            }
        }
    }
}

}  // namespace detail

}  // namespace llamabind
