// Access control decisions are pure functions of a request: tested without sockets.
#include <catch2/catch.hpp>

#include "server/access.hpp"

using namespace agentws::detail;
namespace http = boost::beast::http;

namespace {

http_request request(std::string target, std::string host, std::string origin = {},
                     std::string authorization = {}) {
  http_request r{http::verb::get, target, 11};
  r.set(http::field::host, host);
  if (!origin.empty()) r.set(http::field::origin, origin);
  if (!authorization.empty()) r.set(http::field::authorization, authorization);
  return r;
}

std::optional<http::status> status_of(const http_request& r, const access_policy& policy,
                                      bool needs_token = true) {
  auto refusal = check_access(r, policy, needs_token);
  return refusal ? std::optional(refusal->status) : std::nullopt;
}

}  // namespace

TEST_CASE("loopback host names are recognised", "[protocol][access]") {
  for (const char* host : {"localhost", "localhost:8000", "LOCALHOST:1", "app.localhost:80",
                           "127.0.0.1", "127.0.0.1:8000", "127.1.2.3:9", "[::1]", "[::1]:8000"}) {
    INFO(host);
    CHECK(is_loopback_host(host));
  }
  for (const char* host : {"", "example.com", "127.evil.com", "127.0.0.1.nip.io", "10.0.0.1:80",
                           "localhost.example.com", "[::2]:80", "evil-localhost"}) {
    INFO(host);
    CHECK_FALSE(is_loopback_host(host));
  }
}

TEST_CASE("a loopback server refuses foreign Host names (DNS rebinding)", "[protocol][access]") {
  access_policy policy;
  CHECK_FALSE(status_of(request("/ws", "127.0.0.1:8000"), policy));
  CHECK(status_of(request("/ws", "attacker.example:8000"), policy) == http::status::forbidden);
  CHECK(status_of(request("/health", "attacker.example"), policy, false) ==
        http::status::forbidden);
  policy.require_loopback_host = false;
  CHECK_FALSE(status_of(request("/ws", "agents.example.com"), policy));
}

TEST_CASE("browser origins: same origin and the allow-list pass and others get 403",
          "[protocol][access]") {
  access_policy policy;
  CHECK_FALSE(status_of(request("/ws", "localhost:8000"), policy));  // no Origin: a CLI client
  CHECK_FALSE(status_of(request("/ws", "localhost:8000", "http://localhost:8000"), policy));
  CHECK(status_of(request("/ws", "localhost:8000", "https://evil.example"), policy) ==
        http::status::forbidden);
  CHECK(status_of(request("/ws", "localhost:8000", "http://localhost:9999"), policy) ==
        http::status::forbidden);
  CHECK(status_of(request("/ws", "localhost:8000", "null"), policy) == http::status::forbidden);
  policy.allowed_origins = {"https://app.example"};
  CHECK_FALSE(status_of(request("/ws", "localhost:8000", "https://app.example"), policy));
  CHECK(status_of(request("/ws", "localhost:8000", "https://app.example.evil"), policy) ==
        http::status::forbidden);
  policy.allowed_origins = {"*"};
  CHECK_FALSE(status_of(request("/ws", "localhost:8000", "https://anything.example"), policy));
}

TEST_CASE("a token is required by header or query when configured", "[protocol][access]") {
  access_policy policy;
  policy.tokens = {{"default", "s3cret"}};
  CHECK(status_of(request("/ws", "localhost"), policy) == http::status::unauthorized);
  CHECK_FALSE(status_of(request("/ws", "localhost", {}, "Bearer s3cret"), policy));
  CHECK_FALSE(status_of(request("/ws", "localhost", {}, "bearer s3cret"), policy));
  CHECK(status_of(request("/ws", "localhost", {}, "Bearer s3cre"), policy) ==
        http::status::unauthorized);
  CHECK(status_of(request("/ws", "localhost", {}, "Basic s3cret"), policy) ==
        http::status::unauthorized);
  CHECK_FALSE(status_of(request("/ws?token=s3cret", "localhost"), policy));
  CHECK_FALSE(status_of(request("/ws?a=1&token=s3cret", "localhost"), policy));
  CHECK(status_of(request("/ws?token=s3cret2", "localhost"), policy) == http::status::unauthorized);
  CHECK(status_of(request("/ws?xtoken=s3cret", "localhost"), policy) == http::status::unauthorized);
  // Pages that need no token stay open.
  CHECK_FALSE(status_of(request("/health", "localhost"), policy, false));
}

TEST_CASE("any of several named tokens is accepted", "[protocol][access]") {
  access_policy policy;
  policy.tokens = {{"alice", "tok-a"}, {"bob", "tok-b"}, {"carol", "longer-token-c"}};
  CHECK_FALSE(status_of(request("/ws", "localhost", {}, "Bearer tok-a"), policy));
  CHECK_FALSE(status_of(request("/ws", "localhost", {}, "Bearer tok-b"), policy));
  CHECK_FALSE(status_of(request("/ws?token=longer-token-c", "localhost"), policy));
  for (const char* wrong : {"tok-c", "tok-", "tok-ab", "alice", "alice:tok-a", "longer-token-"}) {
    INFO(wrong);
    CHECK(status_of(request("/ws", "localhost", {}, std::string("Bearer ") + wrong), policy) ==
          http::status::unauthorized);
  }
  CHECK(status_of(request("/ws", "localhost"), policy) == http::status::unauthorized);
  CHECK(status_of(request("/metrics", "localhost"), policy) == http::status::unauthorized);
  CHECK_FALSE(status_of(request("/health", "localhost"), policy, false));
  // A token does not get past the other checks.
  CHECK(status_of(request("/ws", "example.com", {}, "Bearer tok-a"), policy) ==
        http::status::forbidden);
}

TEST_CASE("token_owner names the token presented", "[protocol][access]") {
  access_policy policy;
  CHECK(token_owner(request("/ws", "localhost", {}, "Bearer anything"), policy).empty());
  policy.tokens = {{"alice", "tok-a"}, {"bob", "tok-b"}};
  CHECK(token_owner(request("/ws", "localhost", {}, "Bearer tok-a"), policy) == "alice");
  CHECK(token_owner(request("/ws", "localhost", {}, "bearer tok-b"), policy) == "bob");
  CHECK(token_owner(request("/ws?x=1&token=tok-b", "localhost"), policy) == "bob");
  CHECK(token_owner(request("/ws?token=tok-a", "localhost"), policy) == "alice");
  CHECK(token_owner(request("/ws", "localhost", {}, "Bearer tok-c"), policy).empty());
  CHECK(token_owner(request("/ws", "localhost", {}, "Bearer alice"), policy).empty());
  CHECK(token_owner(request("/ws", "localhost"), policy).empty());
  // The header wins over the query, as check_access reads it.
  CHECK(token_owner(request("/ws?token=tok-a", "localhost", {}, "Bearer tok-b"), policy) == "bob");
}

TEST_CASE("constant_time_equal compares whole strings", "[protocol][access]") {
  CHECK(constant_time_equal("", ""));
  CHECK(constant_time_equal("abc", "abc"));
  CHECK_FALSE(constant_time_equal("abc", "abd"));
  CHECK_FALSE(constant_time_equal("abc", "ab"));
  CHECK_FALSE(constant_time_equal("xbc", "abc"));
}
