#pragma once

// Plain TCP for the RPC layer (rpc.cpp): connections with timeouts, and a look at the sockets
// llama.cpp's RPC client holds in this process. No system headers leak from here.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llamabind::detail::net {

using Clock = std::chrono::steady_clock;

// One TCP connection, closed by the destructor.
class Connection {
public:
    // Connects to host:port (IPv4, resolved as llama.cpp's client resolves it) within
    // `timeout`. On failure the connection is not valid() and `error` says why.
    static Connection open(const std::string & host, int port, std::chrono::milliseconds timeout, std::string & error);

    Connection() = default;
    Connection(Connection && other) noexcept;
    Connection & operator=(Connection && other) noexcept;
    Connection(const Connection &) = delete;
    Connection & operator=(const Connection &) = delete;
    ~Connection();

    bool valid() const noexcept { return fd_ != kInvalid; }
    bool send_all(const void * data, std::size_t size);

    enum class Read { Ok, Closed, Timeout, Failed };
    // Reads exactly `size` bytes before `deadline`.
    Read recv_all(void * data, std::size_t size, Clock::time_point deadline);

private:
    static constexpr std::intptr_t kInvalid = -1;
    explicit Connection(std::intptr_t fd) : fd_(fd) {}
    std::intptr_t fd_ = kInvalid;
};

// Whether host is an IPv4 address in dotted form (what llama.cpp's server binds to).
bool is_ipv4_address(const std::string & host);

// Whether a listening socket could be bound to host:port now; `error` says why not.
bool can_listen(const std::string & host, int port, std::string & error);

// The TCP sockets of this process whose peer is host:port (after resolving host). Empty
// where the platform gives no way to list them (Windows).
std::vector<std::intptr_t> sockets_connected_to(const std::string & host, int port);

// Whether the peer of a connected socket has closed or reset it (without reading from it).
bool peer_closed(std::intptr_t fd);

// Shuts a connected socket down in both directions: whoever reads from it sees end of file,
// and the peer sees the connection end.
void shutdown_both(std::intptr_t fd);

}  // namespace llamabind::detail::net
