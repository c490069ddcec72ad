#include "server/http_routes.hpp"

#include <string>

namespace agentws::detail {

namespace http = boost::beast::http;

std::string_view target_path(std::string_view target) noexcept {
  return target.substr(0, target.find('?'));
}

bool is_websocket_path(std::string_view target) noexcept { return target_path(target) == "/ws"; }

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

http_response answer_http(const http_request& request, std::string_view server_name) {
  const std::string_view path = target_path(request.target());
  if (path == "/health") {
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      http_response response = make_status_response(http::status::method_not_allowed,
                                                    request.version(), server_name,
                                                    "Method Not Allowed");
      response.set(http::field::allow, "GET, HEAD");
      return response;
    }
    http_response response{http::status::ok, request.version()};
    response.set(http::field::server, server_name);
    response.set(http::field::content_type, "application/json");
    response.keep_alive(request.keep_alive());
    response.body() = R"({"ok": true})";
    response.prepare_payload();
    if (request.method() == http::verb::head) response.body().clear();
    return response;
  }
  if (path == "/ws") {
    // The endpoint exists but only speaks WebSocket.
    http_response response = make_status_response(
        http::status::upgrade_required, request.version(), server_name,
        "Upgrade Required: connect with a WebSocket client");
    response.set(http::field::upgrade, "websocket");
    response.set(http::field::sec_websocket_version, "13");
    return response;
  }
  return make_status_response(http::status::not_found, request.version(), server_name,
                              "Not Found");
}

}  // namespace agentws::detail
