// What a connection needs of its transport beyond reading and writing, and
// the helpers its HTTP phase and its WebSocket session share.
#pragma once

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/error.hpp>

#include <chrono>
#include <cstddef>
#include <string>

#include "server/server_state.hpp"

namespace agentws::detail {

// What a session needs of the lowest layer (the TCP stream, or the fuzzer's
// in-memory one), beyond reading and writing.
template <class Lowest>
struct lowest_layer_ops;

template <>
struct lowest_layer_ops<boost::beast::tcp_stream> {
  static void close(boost::beast::tcp_stream& stream) {
    boost::system::error_code ignored;
    stream.socket().close(ignored);
  }
  static void shutdown_send(boost::beast::tcp_stream& stream) {
    boost::system::error_code ignored;
    stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
  }
  static void expires_after(boost::beast::tcp_stream& stream, std::chrono::milliseconds timeout) {
    stream.expires_after(timeout);
  }
  static void expires_never(boost::beast::tcp_stream& stream) { stream.expires_never(); }
  // Bytes in the kernel's send queue not yet acknowledged by the peer: when
  // it shrinks, the peer is taking what we sent.
  static std::size_t unacked_bytes(boost::beast::tcp_stream& stream) {
    int bytes = 0;
    if (::ioctl(stream.socket().native_handle(), SIOCOUTQ, &bytes) != 0 || bytes < 0) return 0;
    return static_cast<std::size_t>(bytes);
  }
  // Bytes received from the peer that no read has taken yet.
  static std::size_t readable_bytes(boost::beast::tcp_stream& stream) {
    int bytes = 0;
    if (::ioctl(stream.socket().native_handle(), FIONREAD, &bytes) != 0 || bytes < 0) return 0;
    return static_cast<std::size_t>(bytes);
  }
  // "address:port" of the peer for the logs ("[v6]:port"); "unknown" once closed.
  static std::string peer_address(boost::beast::tcp_stream& stream) {
    boost::system::error_code ec;
    const auto endpoint = stream.socket().remote_endpoint(ec);
    if (ec) return "unknown";
    const auto address = endpoint.address();
    const std::string host =
        address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
    return host + ":" + std::to_string(endpoint.port());
  }
};

// Whether the transport needs a TLS handshake before HTTP.
template <class Transport>
inline constexpr bool is_tls_transport = false;
template <class Next>
inline constexpr bool is_tls_transport<boost::beast::ssl_stream<Next>> = true;

namespace session_detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using boost::system::error_code;

inline constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

// Ends of a connection that are part of normal life: logged at debug only.
inline bool is_expected_end(const error_code& ec) {
  return ec == websocket::error::closed || ec == asio::error::eof ||
         ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == beast::error::timeout ||
         ec == http::error::end_of_stream;
}

inline std::string server_header(const server_config& config) {
  return config.identity.name + "/" + config.identity.version;
}

}  // namespace session_detail

using session_detail::is_expected_end;
using session_detail::nothrow;
using session_detail::server_header;

}  // namespace agentws::detail
