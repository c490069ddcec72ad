// One client connection, as the rest of the server sees it: something to
// start, to stop gracefully and to close hard. The work is in basic_session
// (basic_session.hpp), one instantiation per transport (TCP, TLS).
#pragma once

#include <boost/asio/ip/tcp.hpp>

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

  // The id the server's socket table counts this connection under (0: not
  // counted); set before start().
  void set_socket_id(std::uint64_t id) noexcept { socket_id_ = id; }

 protected:
  std::uint64_t socket_id_ = 0;
};

// A session for an accepted socket: plain WebSocket, or over TLS when `tls`
// is given (the TLS handshake then comes first, under the handshake timeout).
std::shared_ptr<session> make_session(boost::asio::ip::tcp::socket socket,
                                      std::shared_ptr<server_state> state,
                                      boost::asio::ssl::context* tls);

}  // namespace agentws::detail
