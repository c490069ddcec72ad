// A WebSocket client for the agentws protocol (and the original module's).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_category.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace agentws {

// A parsed ws:// or wss:// URL.
struct ws_url {
  bool secure = false;
  std::string host;
  std::string port;
  std::string target = "/";  // path and query

  // nullopt with `error` set when the text is not a usable ws:// or wss:// URL.
  static std::optional<ws_url> parse(std::string_view text, std::string* error = nullptr);
  std::string to_string() const;
};

// How a wss:// connection checks the server. Always: TLS 1.2 or later, a
// certificate chain that verifies, issued for the URL's host (name or IP).
struct tls_options {
  // PEM file of the CA certificates (or the server's self-signed certificate)
  // to trust *instead of* the system's roots. Empty: the system's roots.
  std::string ca_file;
};

// Empty when `tls` is usable (the CA file loads), otherwise why not. Check
// once up front: connect() reports the same problem as a failure to connect.
std::string check_tls_options(const tls_options& tls);

// The category of the errors connect() returns when the server's certificate
// fails verification; the value is OpenSSL's X509_V_ERR_* code and message()
// says why ("certificate verification failed: hostname mismatch").
const boost::system::error_category& certificate_category() noexcept;

// One client connection. All calls must come from the same strand (or one
// thread); sends are queued and written by one writer in order.
class client_connection {
 public:
  explicit client_connection(boost::asio::any_io_executor executor);
  ~client_connection();
  client_connection(const client_connection&) = delete;
  client_connection& operator=(const client_connection&) = delete;

  // Resolves, connects and performs the TLS (for wss://) and WebSocket
  // handshakes, all within `timeout`. A non-empty `token` is sent as
  // "Authorization: Bearer <token>". `tls` is used only for wss:// URLs.
  boost::asio::awaitable<boost::system::error_code> connect(const ws_url& url,
                                                            std::chrono::milliseconds timeout,
                                                            std::string token = {},
                                                            tls_options tls = {});

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
