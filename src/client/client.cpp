#include "agentws/client.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "common/outbox.hpp"

namespace agentws {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using boost::system::error_code;

namespace {
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
// Commands are small and rare; the bound only guards against a runaway caller.
constexpr std::size_t client_outbox_bytes = 1024 * 1024;
}  // namespace

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

struct client_connection::impl : std::enable_shared_from_this<impl> {
  explicit impl(asio::any_io_executor executor)
      : ws(executor), outbox(executor, client_outbox_bytes) {}

  asio::awaitable<void> write_frames([[maybe_unused]] std::shared_ptr<impl> self) {
    detail::frame_batch batch;
    for (;;) {
      co_await outbox.wait_for_frames();
      if (outbox.empty()) break;
      outbox.take(batch);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        const std::string_view frame = batch.frame(i);
        auto [ec, n] = co_await ws.async_write(asio::buffer(frame.data(), frame.size()), nothrow);
        if (ec) {
          outbox.close();
          co_return;
        }
      }
    }
    if (closing && ws.is_open()) co_await ws.async_close(websocket::close_code::normal, nothrow);
  }

  websocket::stream<beast::tcp_stream> ws;
  detail::outbox outbox;
  beast::flat_buffer buffer;
  bool closing = false;
};

client_connection::client_connection(asio::any_io_executor executor)
    : impl_(std::make_shared<impl>(std::move(executor))) {}

client_connection::~client_connection() {
  impl_->outbox.close();
  abort();
}

asio::awaitable<error_code> client_connection::connect(const ws_url& url,
                                                       std::chrono::milliseconds timeout,
                                                       std::string token) {
  if (url.secure) co_return error_code(asio::error::operation_not_supported);
  auto& stream = beast::get_lowest_layer(impl_->ws);
  asio::ip::tcp::resolver resolver(impl_->ws.get_executor());
  auto [resolve_error, endpoints] = co_await resolver.async_resolve(url.host, url.port, nothrow);
  if (resolve_error) co_return resolve_error;
  stream.expires_after(timeout);
  auto [connect_error, endpoint] = co_await stream.async_connect(endpoints, nothrow);
  if (connect_error) co_return connect_error;
  error_code ignored;
  stream.socket().set_option(asio::ip::tcp::no_delay(true), ignored);

  // The Host header names what the user typed, with the port, as browsers do.
  const bool bracket = url.host.find(':') != std::string::npos;
  const std::string host = (bracket ? "[" + url.host + "]" : url.host) + ":" + url.port;
  impl_->ws.set_option(websocket::stream_base::decorator([token](websocket::request_type& request) {
    request.set(beast::http::field::user_agent, "agentws-client/0.1.0");
    if (!token.empty()) request.set(beast::http::field::authorization, "Bearer " + token);
  }));
  auto [handshake_error] = co_await impl_->ws.async_handshake(host, url.target, nothrow);
  if (handshake_error) co_return handshake_error;
  stream.expires_never();
  websocket::stream_base::timeout timeouts =
      websocket::stream_base::timeout::suggested(beast::role_type::client);
  impl_->ws.set_option(timeouts);
  impl_->ws.text(true);
  impl_->ws.auto_fragment(false);
  asio::co_spawn(impl_->ws.get_executor(), impl_->write_frames(impl_), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& failure) {
      spdlog::error("client writer failed: {}", failure.what());
    }
  });
  co_return error_code{};
}

void client_connection::send(std::string text) {
  impl_->outbox.push_text(text);
}

asio::awaitable<std::pair<error_code, std::string_view>> client_connection::read() {
  impl_->buffer.consume(impl_->buffer.size());
  auto [ec, n] = co_await impl_->ws.async_read(impl_->buffer, nothrow);
  if (ec) co_return std::pair{ec, std::string_view{}};
  const auto data = impl_->buffer.cdata();
  co_return std::pair{ec, std::string_view(static_cast<const char*>(data.data()), data.size())};
}

void client_connection::close() {
  impl_->closing = true;
  impl_->outbox.close();
}

void client_connection::abort() {
  error_code ignored;
  beast::get_lowest_layer(impl_->ws).socket().close(ignored);
}

unsigned client_connection::close_code() const noexcept {
  return static_cast<unsigned>(impl_->ws.reason().code);
}

}  // namespace agentws
