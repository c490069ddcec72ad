#include "agentws/client.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/verify_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <variant>

#include "agentws/events.hpp"
#include "common/outbox.hpp"

namespace agentws {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = asio::ssl;
namespace websocket = beast::websocket;
using boost::system::error_code;

namespace {
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
// send() enforces the bound itself, exactly; the outbox gets it as well.
constexpr std::size_t client_outbox_bytes = client_connection::max_queued_send_bytes;

using plain_websocket = websocket::stream<beast::tcp_stream>;
using tls_websocket = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;

// error_category's destructor is protected and non-virtual by design (categories
// are never deleted through a base pointer), which -Wnon-virtual-dtor flags.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class certificate_error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "agentws.certificate"; }
  std::string message(int value) const override {
    return std::string("certificate verification failed: ") + X509_verify_cert_error_string(value);
  }
};
#pragma GCC diagnostic pop

error_code last_ssl_error() {
  return error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
}

// A client context: TLS 1.2 or later, the peer's certificate verified against
// the CA file, or the system's roots when there is none.
std::unique_ptr<ssl::context> make_tls_context(const tls_options& tls, error_code& ec) {
  auto context = std::make_unique<ssl::context>(ssl::context::tls_client);
  if (::SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION) != 1) {
    ec = last_ssl_error();
    return nullptr;
  }
  context->set_verify_mode(ssl::verify_peer, ec);
  if (!ec) {
    if (tls.ca_file.empty()) {
      context->set_default_verify_paths(ec);
    } else {
      context->load_verify_file(tls.ca_file, ec);
    }
  }
  if (ec) return nullptr;
  return context;
}

// The system's lookup, on a thread of its own: getaddrinfo cannot be
// cancelled, and asio's resolver would keep its io_context (and the process)
// waiting for one that hangs.
void system_resolve(const std::string& host, const std::string& port,
                    std::function<void(error_code, asio::ip::tcp::resolver::results_type)> done) {
  std::thread([host, port, done = std::move(done)] {
    asio::io_context own;
    asio::ip::tcp::resolver resolver(own);
    error_code ec;
    auto results = resolver.resolve(host, port, ec);
    done(ec, std::move(results));
  }).detach();
}

// A lookup's answer, shared with its callback, which may run on another
// thread, and after connect() gave up on it (then it only drops the answer).
struct pending_lookup {
  std::mutex mutex;
  bool answered = false;
  bool abandoned = false;  // connect() is gone: touch nothing of it
  error_code error;
  asio::ip::tcp::resolver::results_type endpoints;
  asio::any_io_executor executor;
  std::weak_ptr<asio::steady_timer> wakeup;  // connect()'s, which waits on it

  void answer(error_code ec, asio::ip::tcp::resolver::results_type results) {
    const std::lock_guard<std::mutex> lock(mutex);
    if (abandoned || answered) return;
    answered = true;
    error = ec;
    endpoints = std::move(results);
    asio::post(executor, [wakeup = wakeup] {
      if (auto timer = wakeup.lock()) timer->cancel();
    });
  }
  void abandon() {
    const std::lock_guard<std::mutex> lock(mutex);
    abandoned = true;
  }
};

bool is_ip_address(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}
}  // namespace

const boost::system::error_category& certificate_category() noexcept {
  static const certificate_error_category category;
  return category;
}

std::string check_tls_options(const tls_options& tls) {
  if (!tls.ca_file.empty() && !std::ifstream(tls.ca_file)) {
    return "cannot read the CA file " + tls.ca_file + ": " + std::strerror(errno);
  }
  error_code ec;
  if (!make_tls_context(tls, ec)) {
    if (tls.ca_file.empty()) return "cannot load the system's CA certificates: " + ec.message();
    return "no usable CA certificate in " + tls.ca_file + ": " + ec.message();
  }
  return {};
}

std::optional<ws_url> ws_url::parse(std::string_view text, std::string* error) {
  auto fail = [&](const char* why) -> std::optional<ws_url> {
    if (error) *error = why;
    return std::nullopt;
  };
  ws_url url;
  if (text.starts_with("ws://")) {
    text.remove_prefix(5);
  } else if (text.starts_with("wss://")) {
    url.secure = true;
    text.remove_prefix(6);
  } else {
    return fail("the URL must start with ws:// or wss://");
  }
  const std::size_t path_start = text.find_first_of("/?");
  std::string_view authority = text.substr(0, path_start);
  if (path_start != std::string_view::npos) {
    url.target = std::string(text.substr(path_start));
    if (url.target.front() == '?') url.target.insert(0, "/");
  }
  if (authority.find('@') != std::string_view::npos) return fail("user info is not supported");
  std::string_view port;
  if (authority.starts_with("[")) {  // [::1]:8000
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return fail("unclosed [ in the host");
    url.host = std::string(authority.substr(1, close - 1));
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return fail("unexpected text after the host");
      port = rest.substr(1);
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (url.host.empty()) return fail("the URL has no host");
  if (port.empty()) {
    url.port = url.secure ? "443" : "80";
  } else {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos ||
        std::stoul(std::string(port)) > 65535) {
      return fail("the port must be a number from 0 to 65535");
    }
    url.port = std::string(port);
  }
  return url;
}

std::string ws_url::to_string() const {
  const bool bracket = host.find(':') != std::string::npos;
  return std::string(secure ? "wss://" : "ws://") + (bracket ? "[" + host + "]" : host) + ":" +
         port + target;
}

// The stream is plain or TLS, chosen by connect(); every operation goes
// through visit() so the rest of the connection (one writer, one reader) is
// the same for both.
struct client_connection::impl : std::enable_shared_from_this<impl> {
  explicit impl(asio::any_io_executor ex)
      : executor(ex),
        ws(std::in_place_type<plain_websocket>, ex),
        outbox(ex, detail::outbox_limits{client_outbox_bytes}) {}

  template <class Function>
  decltype(auto) visit(Function&& function) {
    return std::visit(std::forward<Function>(function), ws);
  }

  asio::awaitable<void> write_frames([[maybe_unused]] std::shared_ptr<impl> self) {
    std::string frame;
    for (;;) {
      co_await outbox.wait_for_frames();
      if (outbox.empty()) break;
      // One frame at a time, in order (commands are few and small).
      outbox.take(1, [&frame](std::string_view next) { frame.assign(next); });
      auto [ec, n] = co_await visit([&](auto& stream) {
        return stream.async_write(asio::buffer(frame.data(), frame.size()), nothrow);
      });
      if (ec) {
        outbox.close();
        co_return;
      }
    }
    if (closing && visit([](auto& stream) { return stream.is_open(); })) {
      close_started = true;
      co_await visit(
          [](auto& stream) { return stream.async_close(websocket::close_code::normal, nothrow); });
    }
  }

  asio::any_io_executor executor;
  std::unique_ptr<ssl::context> tls_context;  // declared before the stream: outlives it
  std::variant<plain_websocket, tls_websocket> ws;
  detail::outbox outbox;
  beast::flat_buffer buffer;
  bool closing = false;
  bool close_started = false;  // our close frame is on its way
  bool close_received = false;
  bool close_received_first = false;  // the server's close came before ours went out
  std::optional<upgrade_refusal> refusal;
  resolve_function resolve = system_resolve;
};

client_connection::client_connection(asio::any_io_executor executor)
    : impl_(std::make_shared<impl>(std::move(executor))) {}

client_connection::~client_connection() {
  impl_->outbox.close();
  abort();
}

asio::awaitable<error_code> client_connection::connect(const ws_url& url,
                                                       std::chrono::milliseconds timeout,
                                                       handshake_options handshake,
                                                       tls_options tls) {
  impl_->refusal.reset();
  // One deadline for the name lookup, the TCP connect, the TLS handshake and
  // the WebSocket handshake.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (url.secure) {
    error_code context_error;
    impl_->tls_context = make_tls_context(tls, context_error);
    if (!impl_->tls_context) co_return context_error;
    impl_->ws.emplace<tls_websocket>(impl_->executor, *impl_->tls_context);
  }
  auto& stream =
      impl_->visit([](auto& ws) -> beast::tcp_stream& { return beast::get_lowest_layer(ws); });
  auto wakeup = std::make_shared<asio::steady_timer>(impl_->executor, deadline);
  auto lookup = std::make_shared<pending_lookup>();
  lookup->executor = impl_->executor;
  lookup->wakeup = wakeup;
  // However connect() ends (even destroyed while it waits), the callback
  // will not post to its executor afterwards.
  const std::unique_ptr<pending_lookup, void (*)(pending_lookup*)> abandon_on_exit(
      lookup.get(), [](pending_lookup* pending) { pending->abandon(); });
  impl_->resolve(url.host, url.port,
                 [lookup](error_code ec, asio::ip::tcp::resolver::results_type results) {
                   lookup->answer(ec, std::move(results));
                 });
  for (;;) {
    {
      const std::lock_guard<std::mutex> lock(lookup->mutex);
      if (lookup->answered) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        co_return make_error_code(beast::error::timeout);
      }
    }
    co_await wakeup->async_wait(nothrow);  // the deadline, or the answer's cancel()
  }
  if (lookup->error) co_return lookup->error;
  const auto endpoints = lookup->endpoints;
  stream.expires_at(deadline);
  auto [connect_error, endpoint] = co_await stream.async_connect(endpoints, nothrow);
  if (connect_error) co_return connect_error;
  error_code ignored;
  stream.socket().set_option(asio::ip::tcp::no_delay(true), ignored);

  if (auto* tls_ws = std::get_if<tls_websocket>(&impl_->ws)) {
    auto& tls_stream = tls_ws->next_layer();
    const bool address = is_ip_address(url.host);
    // SNI carries host names only (RFC 6066), never an IP address.
    // (SSL_set_tlsext_host_name() spelled out: the macro's C cast trips -Wold-style-cast.)
    if (!address &&
        ::SSL_ctrl(tls_stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME,
                   TLSEXT_NAMETYPE_host_name, const_cast<char*>(url.host.c_str())) != 1) {
      co_return last_ssl_error();
    }
    error_code callback_error;
    tls_stream.set_verify_callback(
        [check = ssl::host_name_verification(url.host), address](bool preverified,
                                                                 ssl::verify_context& context) {
          const bool ok = check(preverified, context);
          // host_name_verification refuses without saying why: record it, so
          // the handshake's failure names the reason.
          if (preverified && !ok) {
            X509_STORE_CTX_set_error(context.native_handle(), address
                                                                  ? X509_V_ERR_IP_ADDRESS_MISMATCH
                                                                  : X509_V_ERR_HOSTNAME_MISMATCH);
          }
          return ok;
        },
        callback_error);
    if (callback_error) co_return callback_error;
    auto [tls_error] = co_await tls_stream.async_handshake(ssl::stream_base::client, nothrow);
    if (tls_error) {
      const long verify_result = ::SSL_get_verify_result(tls_stream.native_handle());
      if (verify_result != X509_V_OK) {
        co_return error_code(static_cast<int>(verify_result), certificate_category());
      }
      co_return tls_error;
    }
  }

  // The Host header names what the user typed, with the port, as browsers do.
  const bool bracket = url.host.find(':') != std::string::npos;
  const std::string host = (bracket ? "[" + url.host + "]" : url.host) + ":" + url.port;
  impl_->visit([&handshake](auto& ws) {
    ws.set_option(websocket::stream_base::decorator([handshake](websocket::request_type& request) {
      request.set(beast::http::field::user_agent, "agentws-client/0.1.0");
      if (!handshake.token.empty()) {
        request.set(beast::http::field::authorization, "Bearer " + handshake.token);
      }
      if (!handshake.origin.empty()) request.set(beast::http::field::origin, handshake.origin);
      for (const auto& [name, value] : handshake.headers)
        request.set(name, value);
    }));
  });
  websocket::response_type response;
  auto [handshake_error] = co_await impl_->visit(
      [&](auto& ws) { return ws.async_handshake(response, host, url.target, nothrow); });
  if (handshake_error) {
    // A complete HTTP answer other than 101: the server said no, and why.
    if (handshake_error == websocket::error::upgrade_declined && response.result_int() != 0 &&
        response.result() != beast::http::status::switching_protocols) {
      impl_->refusal = upgrade_refusal{response.result_int(), std::string(response.reason())};
    }
    co_return handshake_error;
  }
  stream.expires_never();
  impl_->visit([](auto& ws) {
    ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
    ws.text(true);
    ws.auto_fragment(false);
  });
  asio::co_spawn(impl_->executor, impl_->write_frames(impl_), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& failure) {
      spdlog::error("client writer failed: {}", failure.what());
    }
  });
  co_return error_code{};
}

void client_connection::set_resolver(resolve_function resolve) {
  impl_->resolve = std::move(resolve);
}

error_code client_connection::send(std::string text) {
  if (impl_->outbox.closed()) return asio::error::shut_down;
  if (text.size() >
      max_queued_send_bytes - std::min(impl_->outbox.queued_bytes(), max_queued_send_bytes)) {
    return asio::error::no_buffer_space;
  }
  impl_->outbox.push_event([&text](std::string& out) { out.append(text); }, {});
  return {};
}

asio::awaitable<std::pair<error_code, std::string_view>> client_connection::read() {
  impl_->buffer.consume(impl_->buffer.size());
  auto [ec, n] =
      co_await impl_->visit([this](auto& ws) { return ws.async_read(impl_->buffer, nothrow); });
  if (ec) {
    // A close frame from the server: reason() is set (whether this read or
    // our own close took it in, which may end this read otherwise).
    const bool close_frame =
        impl_->visit([](auto& ws) { return ws.reason().code != websocket::close_code::none; });
    if (close_frame && !impl_->close_received) {
      impl_->close_received = true;
      impl_->close_received_first = !impl_->close_started;
    }
    co_return std::pair{ec, std::string_view{}};
  }
  const auto data = impl_->buffer.cdata();
  co_return std::pair{ec, std::string_view(static_cast<const char*>(data.data()), data.size())};
}

void client_connection::close() {
  impl_->closing = true;
  impl_->outbox.close();
}

void client_connection::abort() {
  impl_->outbox.close();  // the writer ends too
  error_code ignored;
  impl_->visit([&ignored](auto& ws) { beast::get_lowest_layer(ws).socket().close(ignored); });
}

const std::optional<upgrade_refusal>& client_connection::refusal() const noexcept {
  return impl_->refusal;
}

std::optional<server_close> client_connection::closed_by_server() const {
  if (!impl_->close_received) return std::nullopt;
  const websocket::close_reason reason =
      std::visit([](const auto& ws) { return ws.reason(); }, impl_->ws);
  const unsigned code = static_cast<unsigned>(reason.code);
  if (!impl_->close_received_first &&
      code == static_cast<unsigned>(websocket::close_code::normal)) {
    return std::nullopt;
  }
  return server_close{code, std::string(reason.reason.data(), reason.reason.size())};
}

std::string describe_connect_failure(const ws_url& url, const error_code& ec,
                                     const std::optional<upgrade_refusal>& refusal,
                                     bool token_sent) {
  if (!refusal) return "cannot connect to " + url.to_string() + ": " + ec.message();
  std::string line = "server refused the WebSocket upgrade: " + std::to_string(refusal->status);
  if (!refusal->reason.empty()) line += " " + printable(refusal->reason);
  if (refusal->status == 401) {
    line += token_sent ? " (the token sent was not accepted: check --token or AGENTWS_TOKEN)"
                       : " (the server wants a token: pass it with --token or AGENTWS_TOKEN)";
  } else if (refusal->status == 403) {
    line += " (the server does not accept this Origin or Host)";
  } else if (refusal->status == 404) {
    line += " (no WebSocket at " + printable(url.target) + ": check the URL's path)";
  } else if (refusal->status == 503) {
    line += " (the server is at its connection limit: try again later)";
  }
  return line;
}

bool worth_retrying(const error_code& ec, const std::optional<upgrade_refusal>& refusal) {
  if (ec.category() == certificate_category()) return false;
  return !refusal || refusal->status >= 500;
}

std::string describe_server_close(const server_close& close) {
  std::string line = "server closed the connection (" + std::to_string(close.code);
  if (!close.reason.empty()) line += " " + printable(close.reason);
  return line + ")";
}

unsigned client_connection::close_code() const noexcept {
  return static_cast<unsigned>(
      std::visit([](const auto& ws) { return ws.reason().code; }, impl_->ws));
}

}  // namespace agentws
