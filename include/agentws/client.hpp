// A WebSocket client for the agentws protocol (and the original module's).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace agentws {

// A parsed ws:// URL. (wss:// is recognised so it can be refused clearly.)
struct ws_url {
  bool secure = false;
  std::string host;
  std::string port;
  std::string target = "/";  // path and query

  // nullopt with `error` set when the text is not a usable ws:// URL.
  static std::optional<ws_url> parse(std::string_view text, std::string* error = nullptr);
  std::string to_string() const;
};

// One client connection. All calls must come from the same strand (or one
// thread); sends are queued and written by one writer in order.
class client_connection {
 public:
  explicit client_connection(boost::asio::any_io_executor executor);
  ~client_connection();
  client_connection(const client_connection&) = delete;
  client_connection& operator=(const client_connection&) = delete;

  // Resolves, connects and performs the WebSocket handshake within `timeout`.
  // A non-empty `token` is sent as "Authorization: Bearer <token>".
  boost::asio::awaitable<boost::system::error_code> connect(const ws_url& url,
                                                            std::chrono::milliseconds timeout,
                                                            std::string token = {});

  // Queues one text frame. Never waits; frames go out in call order.
  void send(std::string text);

  // Reads the next message. The view stays valid until the next read(). An
  // error ends the stream: websocket::error::closed after a clean close.
  boost::asio::awaitable<std::pair<boost::system::error_code, std::string_view>> read();

  // Starts a clean close (1000) once queued frames are written; keep reading
  // until read() reports the end.
  void close();

  // Closes the socket at once.
  void abort();

  // The close code the server sent, if any (0 when none).
  unsigned close_code() const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace agentws
