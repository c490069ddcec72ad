// The HTTP phase of a connection: the TLS handshake, then HTTP requests
// (the console, /health, /metrics) with their access checks, until one asks
// for the WebSocket and may have it. The WebSocket session (basic_session)
// takes the connection from there. Runs on the connection's strand; one
// deadline, from the accept, covers the whole phase.
#pragma once

#include <spdlog/spdlog.h>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "server/http_routes.hpp"
#include "server/server_state.hpp"
#include "server/transport_ops.hpp"

namespace agentws::detail {

template <class Transport>
class http_phase {
 public:
  http_phase(server_state& state, Transport& stream, boost::beast::flat_buffer& buffer,
             std::uint64_t connection_id)
      : state_(state), stream_(stream), buffer_(buffer), id_(connection_id) {}

  // Serves requests until the connection ends (nullopt: the socket is
  // closed, every refusal answered) or a WebSocket upgrade is admitted: its
  // request, with a WebSocket slot taken for it (try_open_websocket), which
  // the caller gives back.
  boost::asio::awaitable<std::optional<http_request>> serve();

 private:
  using lowest = lowest_layer_ops<boost::beast::lowest_layer_type<Transport>>;

  boost::asio::awaitable<bool> tls_handshake();
  // Writes `response` and closes the socket: the phase ends with a refusal.
  boost::asio::awaitable<void> refuse(http_response response);
  void note_handshake_deadline();
  void close_socket() { lowest::close(boost::beast::get_lowest_layer(stream_)); }

  server_state& state_;
  Transport& stream_;
  boost::beast::flat_buffer& buffer_;
  std::uint64_t id_;
};

template <class Transport>
boost::asio::awaitable<std::optional<http_request>> http_phase<Transport>::serve() {
  namespace beast = boost::beast;
  namespace http = beast::http;
  namespace websocket = beast::websocket;
  lowest::expires_after(beast::get_lowest_layer(stream_), state_.config.handshake_timeout);
  if constexpr (is_tls_transport<Transport>) {
    const bool secured = co_await tls_handshake();
    if (!secured) co_return std::nullopt;
  }
  const server_config& config = state_.config;
  const std::string server_name = server_header(config);
  for (std::size_t requests = 1;; ++requests) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(16 * 1024);
    auto [read_error, read_bytes] = co_await http::async_read(stream_, buffer_, parser, nothrow);
    if (read_error) {
      if (read_error == http::error::header_limit) {
        co_await refuse(make_status_response(http::status::request_header_fields_too_large, 11,
                                             server_name, "Request Header Fields Too Large"));
      } else if (read_error == http::error::body_limit) {
        co_await refuse(make_status_response(http::status::payload_too_large, 11, server_name,
                                             "Content Too Large"));
      } else if (read_error == beast::error::timeout) {
        note_handshake_deadline();
        close_socket();
      } else if (!is_expected_end(read_error)) {
        spdlog::debug("conn {}: bad HTTP request: {}", id_, read_error.message());
        co_await refuse(
            make_status_response(http::status::bad_request, 11, server_name, "Bad Request"));
      } else {
        close_socket();
      }
      co_return std::nullopt;
    }

    http_request& request = parser.get();
    const bool upgrade = websocket::is_upgrade(request) && is_websocket_path(request.target());
    const bool needs_token = upgrade || target_path(request.target()) == "/metrics";
    if (auto refusal = check_access(request, state_.access, needs_token)) {
      spdlog::info("conn {}: refused {} {}: {}", id_, std::string(request.method_string()),
                   std::string(target_path(request.target())), refusal->reason);
      auto response =
          make_status_response(refusal->status, request.version(), server_name, refusal->reason);
      if (refusal->status == http::status::unauthorized) {
        response.set(http::field::www_authenticate, "Bearer");
      }
      co_await refuse(std::move(response));
      co_return std::nullopt;
    }
    if (upgrade) {
      if (state_.stopping() || !state_.try_open_websocket()) {
        auto response =
            make_status_response(http::status::service_unavailable, request.version(), server_name,
                                 "Service Unavailable: connection limit reached");
        response.set(http::field::retry_after, "1");
        co_await refuse(std::move(response));
        co_return std::nullopt;
      }
      co_return std::move(request);
    }

    http_response response =
        answer_http(request, server_name, {[this] { return state_.counters.render_metrics(); }});
    if (requests >= config.max_requests_per_connection) response.keep_alive(false);
    const bool keep_alive = response.keep_alive();
    auto [write_error, written] = co_await http::async_write(stream_, response, nothrow);
    if (write_error || !keep_alive) {
      lowest::shutdown_send(beast::get_lowest_layer(stream_));
      close_socket();
      co_return std::nullopt;
    }
  }
}

template <class Transport>
boost::asio::awaitable<bool> http_phase<Transport>::tls_handshake() {
  auto [ec] = co_await stream_.async_handshake(boost::asio::ssl::stream_base::server, nothrow);
  if (ec) {
    // Port scanners, plain-HTTP clients and clients that do not trust our
    // certificate all end here: normal on a public port, so not a warning.
    if (ec == boost::beast::error::timeout) {
      note_handshake_deadline();
    } else {
      spdlog::debug("conn {}: TLS handshake failed: {}", id_, ec.message());
    }
    close_socket();
    co_return false;
  }
  co_return true;
}

template <class Transport>
boost::asio::awaitable<void> http_phase<Transport>::refuse(http_response response) {
  co_await boost::beast::http::async_write(stream_, response, nothrow);
  close_socket();
}

template <class Transport>
void http_phase<Transport>::note_handshake_deadline() {
  spdlog::info("conn {}: closed before the upgrade: {} ms since the accept", id_,
               state_.config.handshake_timeout.count());
  state_.counters.count_close(close_cause::handshake_deadline);
}

}  // namespace agentws::detail
