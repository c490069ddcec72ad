// Plain HTTP answers on the server's port: pure functions of the request.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <functional>
#include <string>
#include <string_view>

namespace agentws::detail {

// The browser console (web/console.html), embedded at build time.
extern const std::string_view console_page;

// Dynamic pages the router cannot compute itself.
struct http_pages {
  std::function<std::string()> metrics;  // Prometheus text format
};

using http_request = boost::beast::http::request<boost::beast::http::string_body>;
using http_response = boost::beast::http::response<boost::beast::http::string_body>;

// The path part of a request target ("/ws?token=x" -> "/ws").
std::string_view target_path(std::string_view target) noexcept;

// The raw value of `name` in the target's query ("/ws?a=1&session=k" ->
// "k"); empty when absent. Not percent-decoded: the values read this way
// (session keys) never need it.
std::string_view query_parameter(std::string_view target, std::string_view name) noexcept;

// True for the WebSocket endpoint's path.
bool is_websocket_path(std::string_view target) noexcept;

// The answer to a request that is not a WebSocket upgrade: / (the console),
// /health, /metrics, 404, 405, 426.
http_response answer_http(const http_request& request, std::string_view server_name,
                          const http_pages& pages);

// A short error answer (status line, text body, Connection: close).
http_response make_status_response(boost::beast::http::status status, unsigned version,
                                   std::string_view server_name, std::string_view body);

}  // namespace agentws::detail
