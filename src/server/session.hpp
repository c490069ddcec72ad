// One client connection, as the rest of the server sees it: something to
// start, to stop gracefully and to close hard. The work is in basic_session
// (basic_session.hpp), one instantiation per transport (TCP, TLS).
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace boost::asio::ssl {
class context;
}

namespace agentws::detail {

class server_state;

class session : public std::enable_shared_from_this<session> {
 public:
  virtual ~session() = default;

  // Registers with the server state and starts serving.
  virtual void start() = 0;
  // Thread-safe. Cancels runs (reason "shutdown") and closes with 1001.
  virtual void shutdown() = 0;
  // Thread-safe. Closes the socket now.
  virtual void force_close() = 0;
  // Thread-safe. Closes the socket now if it has not upgraded to a WebSocket
  // (the server needs its slot for a new connection).
  virtual void evict() = 0;

  // Thread-safe. Closes the connection as a slow consumer: the memory
  // budget stayed reached and its client took nothing (see server.hpp).
  virtual void close_for_memory_budget() = 0;

  // The id the server's socket table counts this connection under (0: not
  // counted); set before start().
  void set_socket_id(std::uint64_t id) noexcept { socket_id_ = id; }

  // What the server's memory-budget watch reads from any thread: the bytes
  // of the budget this connection holds, and since when its client has
  // taken no write while output waited for it (time_point::max() when
  // nothing waits: a connection with nothing to send is never behind).
  std::size_t budget_held() const noexcept { return budget_held_.load(std::memory_order_relaxed); }
  std::chrono::steady_clock::time_point behind_since() const noexcept {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(behind_since_.load(std::memory_order_relaxed)));
  }

 protected:
  // The writer: output waits, or a write was just taken, at `at`.
  void note_write_taken(std::chrono::steady_clock::time_point at) noexcept {
    behind_since_.store(at.time_since_epoch().count(), std::memory_order_relaxed);
  }
  // The writer: everything queued was written.
  void note_caught_up() noexcept {
    behind_since_.store(std::chrono::steady_clock::time_point::max().time_since_epoch().count(),
                        std::memory_order_relaxed);
  }

  std::uint64_t socket_id_ = 0;
  std::atomic<std::size_t> budget_held_{0};
  std::atomic<std::chrono::steady_clock::rep> behind_since_{
      std::chrono::steady_clock::time_point::max().time_since_epoch().count()};
};

// A session for an accepted socket: plain WebSocket, or over TLS when `tls`
// is given (the TLS handshake then comes first, under the handshake timeout).
std::shared_ptr<session> make_session(boost::asio::ip::tcp::socket socket,
                                      std::shared_ptr<server_state> state,
                                      boost::asio::ssl::context* tls);

}  // namespace agentws::detail
