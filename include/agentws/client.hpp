// A WebSocket client for the agentws protocol (and the original module's).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_category.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// What the WebSocket upgrade request carries besides the handshake's own headers.
struct handshake_options {
  std::string token;   // sent as "Authorization: Bearer <token>" when not empty
  std::string origin;  // the Origin header, when not empty
  // Extra headers, added in order after the above (one may replace them).
  std::vector<std::pair<std::string, std::string>> headers;
};

// The server's HTTP answer when it declined the WebSocket upgrade.
struct upgrade_refusal {
  unsigned status = 0;  // 401, 403, 404, 503...
  std::string reason;   // "Unauthorized"
};

// The line ws-client prints for a connect() that failed, e.g.
//   "server refused the WebSocket upgrade: 401 Unauthorized (...--token...)"
//   "cannot connect to ws://127.0.0.1:8000/ws: Connection refused"
// `token_sent` chooses the hint for a 401.
std::string describe_connect_failure(const ws_url& url, const boost::system::error_code& ec,
                                     const std::optional<upgrade_refusal>& refusal,
                                     bool token_sent);

// Whether connecting again may succeed: not after a certificate that failed
// verification, nor after a 4xx answer to the upgrade (5xx: maybe later).
bool worth_retrying(const boost::system::error_code& ec,
                    const std::optional<upgrade_refusal>& refusal);

// A close frame the server sent on its own (not the answer to ours).
struct server_close {
  unsigned code = 0;
  std::string reason;
};

// "server closed the connection (1001 server shutdown)": the code and the
// reason the server gave, escaped.
std::string describe_server_close(const server_close& close);

// A name lookup: calls `done` once, on any thread, with the endpoints or the
// error. connect() waits for it only until its timeout, so a lookup that never
// answers costs the timeout, not a hang.
using resolve_function = std::function<void(
    const std::string& host, const std::string& port,
    std::function<void(boost::system::error_code, boost::asio::ip::tcp::resolver::results_type)>
        done)>;

// One client connection. All calls must come from the same strand (or one
// thread); sends are queued and written by one writer in order.
class client_connection {
 public:
  // The most bytes of frames queued and not yet written: send() refuses a
  // frame that would go past it (commands are small; this guards against a
  // caller that sends faster than the server reads, or before connecting).
  static constexpr std::size_t max_queued_send_bytes = 1024 * 1024;

  explicit client_connection(boost::asio::any_io_executor executor);
  ~client_connection();
  client_connection(const client_connection&) = delete;
  client_connection& operator=(const client_connection&) = delete;

  // Resolves the host, connects and performs the TLS (for wss://) and
  // WebSocket handshakes, all within `timeout`: one deadline for the lot, the
  // name lookup included (past it: beast::error::timeout). `handshake` adds the
  // token, Origin and extra headers to the upgrade request. `tls` is used only
  // for wss:// URLs. When the server declines the upgrade, refusal() says how.
  boost::asio::awaitable<boost::system::error_code> connect(const ws_url& url,
                                                            std::chrono::milliseconds timeout,
                                                            handshake_options handshake = {},
                                                            tls_options tls = {});

  // The server's answer when connect() failed because it declined the upgrade.
  const std::optional<upgrade_refusal>& refusal() const noexcept;

  // Replaces the system's name lookup (getaddrinfo on a thread of its own)
  // for the next connect().
  void set_resolver(resolve_function resolve);

  // Queues one text frame. Never waits; frames go out in call order. Fails,
  // queueing nothing, with boost::asio::error::no_buffer_space when the frame
  // would take the queue past max_queued_send_bytes, and with
  // boost::asio::error::shut_down after close() or abort() (or a failed write).
  [[nodiscard]] boost::system::error_code send(std::string text);

  // Reads the next message. The view stays valid until the next read(). An
  // error ends the stream: websocket::error::closed after a clean close.
  boost::asio::awaitable<std::pair<boost::system::error_code, std::string_view>> read();

  // Starts a clean close (1000) once queued frames are written; keep reading
  // until read() reports the end.
  void close();

  // Closes the socket at once; frames not yet written are dropped.
  void abort();

  // The close code the server sent, if any (0 when none).
  unsigned close_code() const noexcept;

  // After read() reported websocket::error::closed: the server's close frame
  // when the server closed first (or closed with another code than our 1000
  // while ours was under way), nullopt when it only answered our close.
  std::optional<server_close> closed_by_server() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace agentws
