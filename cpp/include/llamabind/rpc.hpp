#pragma once

// ggml's RPC backend: part of a model on other machines (the client side, through
// ModelParams::rpc_servers), and this machine's devices served to such clients (serve_rpc).
//
// Client, one model split over two workers and this machine:
//
//   llamabind::ModelParams params;
//   params.rpc_servers = llamabind::parse_rpc_servers("10.0.0.2:50052,10.0.0.3:50052");
//   params.n_gpu_layers = -1;                     // every layer that fits goes to the workers
//   auto model = llamabind::Model::load("model.gguf", params);
//
// Worker (blocks for good; end the process to stop it):
//
//   llamabind::RpcServerParams server;
//   server.host = "10.0.0.2";
//   llamabind::serve_rpc(server);
//
// The protocol has no authentication and no encryption: anyone who can reach a worker's port
// can run code on its devices and read what it holds. Keep workers on a private network or
// behind an SSH tunnel.

#include <chrono>
#include <string>
#include <vector>

namespace llamabind {

// The port llama.cpp's rpc-server listens on by default.
inline constexpr int kRpcDefaultPort = 50052;

// Endpoints from "host:port,host:port" (each element of `servers` may itself hold several,
// comma-separated), as "host:port" with the port in decimal; a missing port is
// kRpcDefaultPort. Throws InvalidArgument naming the bad entry: an empty host, an IPv6
// address (llama.cpp's client takes host names and IPv4 addresses only), a port outside
// 1..65535, the same server twice, or more servers than ggml's RPC backend supports.
std::vector<std::string> parse_rpc_servers(const std::vector<std::string> & servers);
std::vector<std::string> parse_rpc_servers(const std::string & servers);

// The RPC protocol version this build speaks ("7.0.0"); client and server must agree on the
// major version.
std::string rpc_protocol_version();

// Checks that an RPC server answers at `endpoint`: a TCP connection and the protocol's
// handshake, each within `timeout`. Throws RpcError naming the endpoint and the reason (not
// reachable, not an RPC server, another protocol version, busy with another client: a server
// serves one client at a time). Throws Error when the build has no RPC backend.
void check_rpc_server(const std::string & endpoint, std::chrono::milliseconds timeout = std::chrono::seconds(5));

// What serve_rpc serves and where.
struct RpcServerParams {
    RpcServerParams();

    std::string host;                  // an IPv4 address to bind ("127.0.0.1"; "0.0.0.0" = every interface)
    int port;                          // kRpcDefaultPort
    int n_threads;                     // CPU threads; default half the hardware threads, at least 1
    std::string cache_dir;             // where to cache tensors clients send (empty: no cache)
    std::vector<std::string> devices;  // device names (devices()); empty: see rpc_server_devices
};

// The devices serve_rpc serves for these names: the named ones, or with none named every
// GPU (and other non-CPU device) of this machine, else its CPU, as llama.cpp's rpc-server
// picks them. Throws InvalidArgument for an unknown name, listing the known ones.
std::vector<std::string> rpc_server_devices(const std::vector<std::string> & names = {});

// Runs llama.cpp's RPC server (ggml_backend_rpc_start_server): binds host:port and serves
// clients, one at a time, for as long as the process lives; it prints what it serves to
// stdout, as llama.cpp's rpc-server does. llama.cpp's server loop has no way out: to stop a
// server, end its process (the `llamabind rpc-server` command does that on Ctrl-C/SIGTERM).
// Throws RpcError when it cannot start (a bad address, the port in use) and InvalidArgument
// for bad parameters.
void serve_rpc(const RpcServerParams & params);

}  // namespace llamabind
