#include "net.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(_WIN32)
#include <winsock2.h>  // (after <algorithm>: its min/max macros come too late to matter)
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

namespace llamabind::detail::net {

namespace {

#if defined(_WIN32)
using socket_handle = SOCKET;
constexpr int kWouldBlock = WSAEWOULDBLOCK;
const socket_handle kNoSocket = INVALID_SOCKET;

bool startup() {
    static const bool ok = [] {
        WSADATA data;
        return WSAStartup(MAKEWORD(2, 2), &data) == 0;
    }();
    return ok;
}

int last_error() { return WSAGetLastError(); }
void close_socket(socket_handle s) { closesocket(s); }
int poll_one(socket_handle s, short events, int timeout_ms, short & revents) {
    WSAPOLLFD p{};
    p.fd = s;
    p.events = events;
    const int rc = WSAPoll(&p, 1, timeout_ms);
    revents = p.revents;
    return rc;
}
std::string error_text(int err) { return "socket error " + std::to_string(err); }
#else
using socket_handle = int;
constexpr int kWouldBlock = EINPROGRESS;
constexpr socket_handle kNoSocket = -1;

bool startup() { return true; }
int last_error() { return errno; }
void close_socket(socket_handle s) { ::close(s); }
int poll_one(socket_handle s, short events, int timeout_ms, short & revents) {
    pollfd p{};
    p.fd = s;
    p.events = events;
    int rc;
    do {
        rc = ::poll(&p, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);
    revents = p.revents;
    return rc;
}
std::string error_text(int err) { return std::strerror(err); }
#endif

void set_nonblocking(socket_handle s, bool on) {
#if defined(_WIN32)
    u_long mode = on ? 1 : 0;
    ioctlsocket(s, FIONBIO, &mode);
#else
    const int flags = fcntl(s, F_GETFL, 0);
    fcntl(s, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
#endif
}

int remaining_ms(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(left);
}

// host:port as llama.cpp's client resolves it (gethostbyname: the first IPv4 address).
bool resolve(const std::string & host, int port, sockaddr_in & out, std::string & error) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo * found = nullptr;
    const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
    if (rc != 0 || found == nullptr) {
        error = "cannot resolve host '" + host + "'";
        return false;
    }
    std::memcpy(&out, found->ai_addr, sizeof(out));
    out.sin_port = htons(static_cast<uint16_t>(port));
    freeaddrinfo(found);
    return true;
}

}  // namespace

Connection Connection::open(const std::string & host, int port, std::chrono::milliseconds timeout, std::string & error) {
    if (!startup()) {
        error = "the socket library did not start";
        return {};
    }
    sockaddr_in addr{};
    if (!resolve(host, port, addr, error)) {
        return {};
    }
    const socket_handle s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (s == kNoSocket) {
        error = "cannot create a socket: " + error_text(last_error());
        return {};
    }
    Connection conn(static_cast<std::intptr_t>(s));
    set_nonblocking(s, true);
    if (::connect(s, reinterpret_cast<const sockaddr *>(&addr), sizeof(addr)) != 0) {
        const int err = last_error();
        if (err != kWouldBlock
#if !defined(_WIN32)
            && err != EINTR
#endif
        ) {
            error = error_text(err);
            return {};
        }
        short revents = 0;
        const int rc = poll_one(s, POLLOUT, static_cast<int>(timeout.count()), revents);
        if (rc == 0) {
            error = "no answer within " + std::to_string(timeout.count()) + " ms";
            return {};
        }
        int so_error = 0;
        socklen_t len = sizeof(so_error);
        getsockopt(s, SOL_SOCKET, SO_ERROR, reinterpret_cast<char *>(&so_error), &len);
        if (rc < 0 || so_error != 0) {
            error = error_text(so_error != 0 ? so_error : last_error());
            return {};
        }
    }
    set_nonblocking(s, false);
    return conn;
}

Connection::Connection(Connection && other) noexcept : fd_(other.fd_) { other.fd_ = kInvalid; }

Connection & Connection::operator=(Connection && other) noexcept {
    if (this != &other) {
        if (valid()) {
            close_socket(static_cast<socket_handle>(fd_));
        }
        fd_ = other.fd_;
        other.fd_ = kInvalid;
    }
    return *this;
}

Connection::~Connection() {
    if (valid()) {
        close_socket(static_cast<socket_handle>(fd_));
    }
}

bool Connection::send_all(const void * data, std::size_t size) {
    const char * p = static_cast<const char *>(data);
    while (size > 0) {
#if defined(_WIN32)
        const int n = ::send(static_cast<socket_handle>(fd_), p, static_cast<int>(size), 0);
#elif defined(MSG_NOSIGNAL)
        const ssize_t n = ::send(static_cast<socket_handle>(fd_), p, size, MSG_NOSIGNAL);
#else
        const ssize_t n = ::send(static_cast<socket_handle>(fd_), p, size, 0);
#endif
        if (n <= 0) {
            return false;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

Connection::Read Connection::recv_all(void * data, std::size_t size, Clock::time_point deadline) {
    char * p = static_cast<char *>(data);
    while (size > 0) {
        short revents = 0;
        const int rc = poll_one(static_cast<socket_handle>(fd_), POLLIN, remaining_ms(deadline), revents);
        if (rc == 0) {
            return Read::Timeout;
        }
        if (rc < 0) {
            return Read::Failed;
        }
#if defined(_WIN32)
        const int n = ::recv(static_cast<socket_handle>(fd_), p, static_cast<int>(size), 0);
#else
        const ssize_t n = ::recv(static_cast<socket_handle>(fd_), p, size, 0);
#endif
        if (n == 0) {
            return Read::Closed;
        }
        if (n < 0) {
            return Read::Failed;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return Read::Ok;
}

bool is_ipv4_address(const std::string & host) {
    in_addr out{};
    return inet_pton(AF_INET, host.c_str(), &out) == 1;
}

bool can_listen(const std::string & host, int port, std::string & error) {
    if (!startup()) {
        error = "the socket library did not start";
        return false;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
        error = "'" + host + "' is not an IPv4 address";
        return false;
    }
    const socket_handle s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (s == kNoSocket) {
        error = "cannot create a socket: " + error_text(last_error());
        return false;
    }
    // As llama.cpp's server does, so a port in TIME_WAIT counts as free.
    int flag = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const char *>(&flag), sizeof(flag));
    const bool ok = ::bind(s, reinterpret_cast<const sockaddr *>(&addr), sizeof(addr)) == 0;
    if (!ok) {
        error = error_text(last_error());
    }
    close_socket(s);
    return ok;
}

#if defined(_WIN32)
std::vector<std::intptr_t> sockets_connected_to(const std::string &, int) { return {}; }

bool peer_closed(std::intptr_t) { return false; }

void shutdown_both(std::intptr_t fd) { ::shutdown(static_cast<SOCKET>(fd), SD_BOTH); }
#else
namespace {

std::vector<int> open_descriptors() {
    std::vector<int> out;
    if (DIR * dir = opendir("/proc/self/fd")) {
        while (const dirent * entry = readdir(dir)) {
            if (entry->d_name[0] >= '0' && entry->d_name[0] <= '9') {
                out.push_back(std::atoi(entry->d_name));
            }
        }
        closedir(dir);
        return out;
    }
    rlimit limit{};
    int n = 1024;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
        n = static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 65536));
    }
    for (int fd = 0; fd < n; ++fd) {
        if (fcntl(fd, F_GETFD) != -1) {
            out.push_back(fd);
        }
    }
    return out;
}

}  // namespace

std::vector<std::intptr_t> sockets_connected_to(const std::string & host, int port) {
    sockaddr_in target{};
    std::string error;
    if (!resolve(host, port, target, error)) {
        return {};
    }
    std::vector<std::intptr_t> out;
    for (int fd : open_descriptors()) {
        int type = 0;
        socklen_t len = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
            continue;
        }
        sockaddr_storage peer{};
        socklen_t peer_len = sizeof(peer);
        if (getpeername(fd, reinterpret_cast<sockaddr *>(&peer), &peer_len) != 0 || peer.ss_family != AF_INET) {
            continue;
        }
        const auto & in = reinterpret_cast<const sockaddr_in &>(peer);
        if (in.sin_port == target.sin_port && in.sin_addr.s_addr == target.sin_addr.s_addr) {
            out.push_back(fd);
        }
    }
    return out;
}

bool peer_closed(std::intptr_t fd) {
    char byte;
    const ssize_t n = ::recv(static_cast<int>(fd), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) {
        return true;  // end of file: the peer closed its end
    }
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

void shutdown_both(std::intptr_t fd) { ::shutdown(static_cast<int>(fd), SHUT_RDWR); }
#endif

}  // namespace llamabind::detail::net
