// Who may use the server: pure checks on a request's headers, made before any
// WebSocket upgrade (and for the HTTP pages), so a refusal is a plain status.
#pragma once

#include <boost/beast/http/status.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentws/server.hpp"
#include "server/http_routes.hpp"

namespace agentws::detail {

struct access_policy {
  // Origins (scheme://host[:port]) browsers may connect from, besides the
  // server's own origin. "*" allows any. No Origin header (CLI clients) is
  // always allowed: only browsers send one, and only they can be abused.
  std::vector<std::string> allowed_origins;
  // On a loopback bind, only loopback Host names are answered (DNS rebinding).
  bool require_loopback_host = true;
  // When not empty, /ws and /metrics need "Authorization: Bearer <token>" or
  // "?token=<token>" with one of these tokens; its name owns the runs.
  std::vector<named_token> tokens;
};

struct access_refusal {
  boost::beast::http::status status;
  std::string reason;
};

// nullopt: the request may proceed.
std::optional<access_refusal> check_access(const http_request& request, const access_policy& policy,
                                           bool needs_token);

// The name of the token the request presents ("" when the policy checks no
// tokens, or none matches).
std::string token_owner(const http_request& request, const access_policy& policy);

// True for "localhost", "*.localhost", 127.0.0.0/8 and ::1 (with or without a port).
bool is_loopback_host(std::string_view host_header) noexcept;

// Equal strings, in time that depends only on the lengths.
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

}  // namespace agentws::detail
