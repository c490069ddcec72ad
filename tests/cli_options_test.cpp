// Option values read with a stated range: pure functions, one row per case.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <variant>

#include "agentws/cli_options.hpp"

using agentws::integer_range;
using agentws::number_range;
using agentws::origin_option_error;
using agentws::parse_integer_option;
using agentws::parse_number_option;

namespace {

std::string integer_error(std::string_view text, integer_range range) {
  auto result = parse_integer_option("threads", text, range);
  return std::holds_alternative<std::string>(result) ? std::get<std::string>(result) : "";
}

std::string number_error(std::string_view text, number_range range) {
  auto result = parse_number_option("timeout", text, range);
  return std::holds_alternative<std::string>(result) ? std::get<std::string>(result) : "";
}

}  // namespace

TEST_CASE("integer options: values inside the range, both ends included",
          "[protocol][cli_options]") {
  const integer_range range{1, 1024};
  for (auto [text, value] : {std::pair{"1", 1}, {"1024", 1024}, {"8", 8}, {"0008", 8}}) {
    INFO(text);
    auto result = parse_integer_option("threads", text, range);
    REQUIRE(std::holds_alternative<std::uint64_t>(result));
    CHECK(std::get<std::uint64_t>(result) == static_cast<std::uint64_t>(value));
  }
  auto top = parse_integer_option("steps", "18446744073709551615",
                                  {0, std::numeric_limits<std::uint64_t>::max()});
  REQUIRE(std::holds_alternative<std::uint64_t>(top));
  CHECK(std::get<std::uint64_t>(top) == std::numeric_limits<std::uint64_t>::max());
}

TEST_CASE("integer options: everything else is refused with the option, value and range",
          "[protocol][cli_options]") {
  const integer_range range{1, 1024};
  // Signs (the wrap-around of Program_options), out of range, junk, blanks,
  // suffixes, other notations, and a number past 2^64.
  for (const char* text :
       {"-3", "-0", "+3", "0", "1025", "abc", "1x", "", " 8", "8 ", "1e3", "0x10", "8.0", "1,024",
        "18446744073709551616", "99999999999999999999"}) {
    INFO(text);
    CHECK(integer_error(text, range) ==
          "--threads: '" + std::string(text) + "' is not an integer from 1 to 1024");
  }
}

TEST_CASE("integer options: the option may be named with or without its dashes",
          "[protocol][cli_options]") {
  auto plain = parse_integer_option("port", "-1", {0, 65535});
  auto dashed = parse_integer_option("--port", "-1", {0, 65535});
  CHECK(std::get<std::string>(plain) == "--port: '-1' is not an integer from 0 to 65535");
  CHECK(std::get<std::string>(dashed) == std::get<std::string>(plain));
  CHECK(agentws::out_of_range_message("--port", "x", {0, 1}) ==
        "--port: 'x' is not an integer from 0 to 1");
}

TEST_CASE("integer options: control characters in a value are shown, not printed",
          "[protocol][cli_options]") {
  CHECK(integer_error("1\x1b[2J", {1, 2}) ==
        "--threads: '1\\x1b[2J' is not an integer from 1 to 2");
}

TEST_CASE("number options: plain decimals inside the range", "[protocol][cli_options]") {
  const number_range range{0.001, 3600};
  for (auto [text, value] : {std::pair{"2.5", 2.5},
                             {"3600", 3600.0},
                             {"0.001", 0.001},
                             {".5", 0.5},
                             {"5.", 5.0},
                             {"007", 7.0}}) {
    INFO(text);
    auto result = parse_number_option("timeout", text, range);
    REQUIRE(std::holds_alternative<double>(result));
    CHECK(std::get<double>(result) == Approx(value));
  }
}

TEST_CASE("number options: signs, notations and values outside are refused",
          "[protocol][cli_options]") {
  const number_range range{0.001, 3600};
  for (const char* text : {"-1", "+1", "0", "0.0001", "3600.5", "1e3", "inf", "nan", "", ".",
                           "1.2.3", "2.5s", " 1", "1,5", "0x1p3"}) {
    INFO(text);
    CHECK(number_error(text, range) ==
          "--timeout: '" + std::string(text) + "' is not a number from 0.001 to 3600");
  }
}

TEST_CASE("number options: the range is written as plain decimals", "[protocol][cli_options]") {
  CHECK(number_error("x", {0, 1'000'000}) == "--timeout: 'x' is not a number from 0 to 1000000");
  CHECK(number_error("x", {0.05, 86400}) == "--timeout: 'x' is not a number from 0.05 to 86400");
}

TEST_CASE("origins: scheme://host[:port] as browsers send them", "[protocol][cli_options]") {
  for (const char* origin :
       {"http://localhost:3000", "https://app.example.com", "http://127.0.0.1:8000",
        "https://[::1]:8443", "HTTPS://Example.COM", "chrome-extension://abcdefghij",
        "http://my_host.internal:1", "http://x:65535", "https://a.b:80", "http://a.b:443"}) {
    INFO(origin);
    CHECK(origin_option_error("allow-origin", origin) == std::nullopt);
  }
}

TEST_CASE("origins: paths, missing schemes, trailing slashes and the like are refused",
          "[protocol][cli_options]") {
  const std::string prefix = "is not an origin (scheme://host[:port]): ";
  struct row {
    const char* text;
    const char* why;
  };
  for (const row& r : {
           row{"example.com", "the scheme is missing"},
           row{"localhost:3000", "the scheme is missing"},
           row{"", "the scheme is missing"},
           row{"://example.com", "the scheme is missing"},
           row{"1http://example.com", "the scheme is not valid"},
           row{"ht tp://example.com", "the scheme is not valid"},
           row{"https://example.com/", "no trailing '/', browsers send none"},
           row{"https://example.com/app", "an origin has no path, query or fragment"},
           row{"https://example.com?x=1", "an origin has no path, query or fragment"},
           row{"https://example.com#top", "an origin has no path, query or fragment"},
           row{"https://user@example.com", "an origin has no user name"},
           row{"https://", "the host is missing"},
           row{"https://:8000", "the host is missing"},
           row{"https://example.com:", "the port is empty"},
           row{"https://example.com:0", "the port is not a number from 1 to 65535"},
           row{"https://example.com:65536", "the port is not a number from 1 to 65535"},
           row{"https://example.com:8o", "the port is not a number from 1 to 65535"},
           row{"https://exa mple.com", "the host may hold only letters, digits, '-', '_' and '.'"},
           row{"https://[::1", "the IPv6 address has no closing ']'"},
           row{"https://[]", "the IPv6 address is not valid"},
           row{"https://[::1]x", "unexpected text after the host"},
           row{"https://example.com:443", "browsers leave the default port out, so drop ':443'"},
           row{"http://example.com:80", "browsers leave the default port out, so drop ':80'"},
       }) {
    INFO(r.text);
    CHECK(origin_option_error("allow-origin", r.text) ==
          "--allow-origin: '" + std::string(r.text) + "' " + prefix + r.why);
  }
}
