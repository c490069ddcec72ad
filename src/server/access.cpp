#include "server/access.hpp"

#include <boost/asio/ip/address.hpp>

#include <algorithm>

#include "agentws/server.hpp"

namespace agentws::detail {

namespace http = boost::beast::http;

namespace {

std::string_view strip_port(std::string_view host) noexcept {
  if (host.starts_with("[")) {  // [::1]:8000
    const std::size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  const std::size_t colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// The token from "Authorization: Bearer X" or from the query "?token=X".
std::optional<std::string_view> presented_token(const http_request& request) {
  const auto authorization = request[http::field::authorization];
  constexpr std::string_view bearer = "Bearer ";
  if (authorization.size() > bearer.size() &&
      iequals(authorization.substr(0, bearer.size()), bearer)) {
    return authorization.substr(bearer.size());
  }
  const std::string_view target = request.target();
  const std::size_t query = target.find('?');
  if (query == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(query + 1);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    if (pair.starts_with("token=")) return pair.substr(6);
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

// The policy's token the request presents, or null. Every token is compared,
// each in constant time, so the time taken does not tell which one matched.
const named_token* matching_token(const http_request& request, const access_policy& policy) {
  const auto presented = presented_token(request);
  if (!presented) return nullptr;
  const named_token* match = nullptr;
  for (const named_token& candidate : policy.tokens) {
    const bool equal = constant_time_equal(*presented, candidate.token);
    if (equal && !match) match = &candidate;
  }
  return match;
}

}  // namespace

bool is_loopback_host(std::string_view host_header) noexcept {
  const std::string_view host = strip_port(host_header);
  if (iequals(host, "localhost") || host == "[::1]") return true;
  if (host.size() > 10 && iequals(host.substr(host.size() - 10), ".localhost")) return true;
  if (!host.starts_with("127.")) return false;
  // 127.a.b.c with only digits and dots: a name like 127.evil.com is not loopback.
  return std::all_of(host.begin(), host.end(),
                     [](char c) { return c == '.' || (c >= '0' && c <= '9'); }) &&
         std::count(host.begin(), host.end(), '.') == 3;
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return difference == 0;
}

std::optional<access_refusal> check_access(const http_request& request, const access_policy& policy,
                                           bool needs_token) {
  const std::string_view host = request[http::field::host];
  if (policy.require_loopback_host && !is_loopback_host(host)) {
    return access_refusal{http::status::forbidden,
                          "Forbidden: this server only answers to loopback host names"};
  }
  const std::string_view origin = request[http::field::origin];
  if (!origin.empty()) {
    const bool same_origin = iequals(origin, "http://" + std::string(host)) ||
                             iequals(origin, "https://" + std::string(host));
    const bool listed = std::any_of(
        policy.allowed_origins.begin(), policy.allowed_origins.end(),
        [&](const std::string& allowed) { return allowed == "*" || iequals(allowed, origin); });
    if (!same_origin && !listed) {
      return access_refusal{http::status::forbidden, "Forbidden: origin not allowed"};
    }
  }
  if (needs_token && !policy.tokens.empty() && !matching_token(request, policy)) {
    return access_refusal{http::status::unauthorized, "Unauthorized: a valid token is required"};
  }
  return std::nullopt;
}

std::string token_owner(const http_request& request, const access_policy& policy) {
  const named_token* match = matching_token(request, policy);
  return match ? match->name : std::string();
}

}  // namespace agentws::detail

namespace agentws {

bool is_loopback_address(const std::string& host) {
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(host, ec);
  return !ec && address.is_loopback();
}

}  // namespace agentws
