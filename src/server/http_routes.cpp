#include "server/http_routes.hpp"

#include <string>

namespace agentws::detail {

namespace http = boost::beast::http;

std::string_view target_path(std::string_view target) noexcept {
  return target.substr(0, target.find('?'));
}

std::string_view query_parameter(std::string_view target, std::string_view name) noexcept {
  const std::size_t query = target.find('?');
  if (query == std::string_view::npos) return {};
  std::string_view rest = target.substr(query + 1);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    if (pair.size() > name.size() && pair.starts_with(name) && pair[name.size()] == '=') {
      return pair.substr(name.size() + 1);
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return {};
}

bool is_websocket_path(std::string_view target) noexcept {
  return target_path(target) == "/ws";
}

http_response make_status_response(http::status status, unsigned version,
                                   std::string_view server_name, std::string_view body) {
  http_response response{status, version};
  response.set(http::field::server, server_name);
  response.set(http::field::content_type, "text/plain; charset=utf-8");
  response.keep_alive(false);
  response.body() = std::string(body);
  response.body().push_back('\n');
  response.prepare_payload();
  return response;
}

namespace {

http_response make_page(const http_request& request, std::string_view server_name,
                        std::string_view content_type, std::string body) {
  http_response response{http::status::ok, request.version()};
  response.set(http::field::server, server_name);
  response.set(http::field::content_type, content_type);
  response.set(http::field::cache_control, "no-store");
  response.set("X-Content-Type-Options", "nosniff");
  response.keep_alive(request.keep_alive());
  response.body() = std::move(body);
  response.prepare_payload();
  if (request.method() == http::verb::head) response.body().clear();
  return response;
}

}  // namespace

http_response answer_http(const http_request& request, std::string_view server_name,
                          const http_pages& pages) {
  const std::string_view path = target_path(request.target());
  const bool known = path == "/" || path == "/health" || path == "/metrics" || path == "/ws";
  if (!known) {
    return make_status_response(http::status::not_found, request.version(), server_name,
                                "Not Found");
  }
  if (path == "/ws") {
    // The endpoint exists but only speaks WebSocket.
    http_response response =
        make_status_response(http::status::upgrade_required, request.version(), server_name,
                             "Upgrade Required: connect with a WebSocket client");
    response.set(http::field::upgrade, "websocket");
    response.set(http::field::sec_websocket_version, "13");
    return response;
  }
  if (request.method() != http::verb::get && request.method() != http::verb::head) {
    http_response response = make_status_response(
        http::status::method_not_allowed, request.version(), server_name, "Method Not Allowed");
    response.set(http::field::allow, "GET, HEAD");
    return response;
  }
  if (path == "/health") {
    return make_page(request, server_name, "application/json", R"({"ok": true})");
  }
  if (path == "/metrics") {
    return make_page(request, server_name, "text/plain; version=0.0.4; charset=utf-8",
                     pages.metrics ? pages.metrics() : std::string());
  }
  http_response page =
      make_page(request, server_name, "text/html; charset=utf-8", std::string(console_page));
  // The page is self-contained: inline script and style, WebSocket to anywhere
  // the user points it, nothing else.
  page.set("Content-Security-Policy",
           "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
           "connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'");
  page.set("X-Frame-Options", "DENY");
  return page;
}

}  // namespace agentws::detail
