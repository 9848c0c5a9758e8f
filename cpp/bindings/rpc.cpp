// ggml's RPC backend: endpoint parsing, the server check, and this machine's devices served
// to RPC clients. (Models use servers through Model(rpc_servers=...), in model.cpp.)

#include "common.hpp"

#include <chrono>

#include "llamabind/errors.hpp"
#include "llamabind/rpc.hpp"

namespace llamabind::bindings {

std::vector<std::string> to_rpc_servers(const py::handle & obj) {
    std::vector<std::string> out;
    if (obj.is_none()) {
        return out;
    }
    if (py::isinstance<py::str>(obj)) {
        out.push_back(to_bytes(obj, "rpc_servers"));
        return out;
    }
    if (!py::isinstance<py::iterable>(obj) || py::isinstance<py::bytes>(obj)) {
        throw py::type_error("[rpc_servers] expected 'host:port,...' or a list of 'host:port' strings");
    }
    for (const auto & item : obj) {
        if (!py::isinstance<py::str>(item)) {
            throw py::type_error("[rpc_servers] every server must be a 'host:port' string");
        }
        out.push_back(to_bytes(item, "rpc_servers"));
    }
    return out;
}

void init_rpc(py::module_ & m) {
    m.def("rpc_protocol_version", &rpc_protocol_version,
          "The version of ggml's RPC protocol this build speaks ('7.0.0'); servers must share the major version.");
    m.def(
        "parse_rpc_servers", [](const py::object & servers) { return parse_rpc_servers(to_rpc_servers(servers)); },
        py::arg("servers"),
        "RPC endpoints from 'host:port,host:port' or a list of them, as 'host:port' (port 50052 when\n"
        "missing). Raises InvalidArgumentError for an empty host, an IPv6 address, a bad port, a repeat.");
    m.def(
        "check_rpc_server",
        [](const std::string & endpoint, double timeout) {
            if (!(timeout > 0)) {
                throw InvalidArgument("[check_rpc_server] timeout must be > 0 seconds");
            }
            const auto ms = std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000.0));
            call_released([&](const std::atomic<bool> *) { check_rpc_server(endpoint, ms); });
        },
        py::arg("endpoint"), py::kw_only(), py::arg("timeout") = 5.0,
        "Checks that an RPC server answers at 'host:port' (connection and protocol handshake, each within\n"
        "`timeout` seconds). Raises RpcError naming it and saying why not.");
    m.def(
        "rpc_server_devices", [](const std::vector<std::string> & names) { return rpc_server_devices(names); },
        py::arg("names") = std::vector<std::string>{},
        "The devices serve_rpc serves for these names: the named ones, else every GPU of this machine, else\n"
        "its CPU. Raises InvalidArgumentError for an unknown name.");
    const RpcServerParams d;
    m.def(
        "serve_rpc",
        [](const std::string & host, int port, std::optional<int> n_threads, const std::optional<py::object> & cache_dir,
           const std::vector<std::string> & devices) {
            RpcServerParams params;
            params.host = host;
            params.port = port;
            if (n_threads) {
                params.n_threads = *n_threads;
            }
            if (cache_dir && !cache_dir->is_none()) {
                params.cache_dir = path_str(*cache_dir);
            }
            params.devices = devices;
            // Not a GilRelease: this call never comes back, so it must not hold interpreter
            // exit up (see gil.hpp); a process that serves ends with its server.
            py::gil_scoped_release release;
            serve_rpc(params);
        },
        py::arg("host") = d.host, py::arg("port") = d.port, py::kw_only(), py::arg("n_threads") = py::none(),
        py::arg("cache_dir") = py::none(), py::arg("devices") = std::vector<std::string>{},
        "Serves this machine's devices to RPC clients on host:port (llama.cpp's rpc-server; n_threads CPU\n"
        "threads, by default half the hardware threads, as there) and never returns: llama.cpp's server\n"
        "loop has no exit, so end the process to stop it (run it in a thread of\n"
        "a process you can end, as `llamabind rpc-server` does). The GIL is released. Raises RpcError when\n"
        "it cannot start (the port is in use, ...). The protocol has no authentication: bind to a private\n"
        "address only.");
}

}  // namespace llamabind::bindings
