#include "agentws/cli_options.hpp"

#include <array>
#include <charconv>
#include <cmath>

#include "agentws/events.hpp"

namespace agentws {

namespace {

std::string dashed(std::string_view option) {
  std::string out = option.starts_with("--") ? "" : "--";
  out.append(option);
  return out;
}

// "--option: 'text'", the text with control characters made visible: it may
// come from a script's variable that held something unexpected.
std::string option_and_value(std::string_view option, std::string_view text) {
  return dashed(option) + ": '" + printable(text) + "'";
}

// The shortest plain decimal that reads back as `value`: "0.05", "3600",
// never "1e+06".
std::string decimal(double value) {
  std::array<char, 64> digits{};
  const auto [end, ec] =
      std::to_chars(digits.data(), digits.data() + digits.size(), value, std::chars_format::fixed);
  if (ec != std::errc{}) return std::to_string(value);
  return std::string(digits.data(), end);
}

bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}
bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

}  // namespace

std::string out_of_range_message(std::string_view option, std::string_view text,
                                 integer_range range) {
  std::string out = option_and_value(option, text);
  out.append(" is not an integer from ");
  out.append(std::to_string(range.min)).append(" to ").append(std::to_string(range.max));
  return out;
}

std::variant<std::uint64_t, std::string> parse_integer_option(std::string_view option,
                                                              std::string_view text,
                                                              integer_range range) {
  const bool digits_only =
      !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
  if (!digits_only) return out_of_range_message(option, text, range);
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < range.min ||
      value > range.max) {
    return out_of_range_message(option, text, range);
  }
  return value;
}

std::variant<double, std::string> parse_number_option(std::string_view option,
                                                      std::string_view text, number_range range) {
  auto failure = [&] {
    return option_and_value(option, text) + " is not a number from " + decimal(range.min) + " to " +
           decimal(range.max);
  };
  // from_chars would also take "inf", "nan", "1e3" and a leading '-'.
  const std::size_t dot = text.find('.');
  const bool plain_decimal =
      text.find_first_not_of("0123456789.") == std::string_view::npos &&
      (dot == std::string_view::npos || text.find('.', dot + 1) == std::string_view::npos) &&
      text.find_first_of("0123456789") != std::string_view::npos;
  if (!plain_decimal) return failure();
  double value = 0;
  const auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
  if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) ||
      value < range.min || value > range.max) {
    return failure();
  }
  return value;
}

std::optional<std::string> origin_option_error(std::string_view option, std::string_view text) {
  auto refuse = [&](std::string_view why) {
    return option_and_value(option, text) +
           " is not an origin (scheme://host[:port]): " + std::string(why);
  };
  const std::size_t separator = text.find("://");
  if (separator == std::string_view::npos || separator == 0) {
    return refuse("the scheme is missing");
  }
  const std::string_view scheme = text.substr(0, separator);
  const bool scheme_ok = is_alpha(scheme.front()) &&
                         scheme.find_first_not_of(
                             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-") ==
                             std::string_view::npos;
  if (!scheme_ok) return refuse("the scheme is not valid");

  std::string_view authority = text.substr(separator + 3);
  const std::size_t tail = authority.find_first_of("/?#");
  if (tail != std::string_view::npos) {
    return refuse(tail + 1 == authority.size() && authority[tail] == '/'
                      ? "no trailing '/', browsers send none"
                      : "an origin has no path, query or fragment");
  }
  if (authority.find('@') != std::string_view::npos) return refuse("an origin has no user name");

  std::string_view host = authority;
  std::string_view port;
  if (authority.starts_with("[")) {  // [::1]:8000
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return refuse("the IPv6 address has no closing ']'");
    host = authority.substr(0, close + 1);
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return refuse("unexpected text after the host");
      port = rest.substr(1);
      if (port.empty()) return refuse("the port is empty");
    }
    if (host.size() == 2 ||
        host.find_first_not_of("[]0123456789abcdefABCDEF:.") != std::string_view::npos) {
      return refuse("the IPv6 address is not valid");
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (port.empty()) return refuse("the port is empty");
    }
    if (host.empty()) return refuse("the host is missing");
    for (char c : host) {
      if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.' && c != '_') {
        return refuse("the host may hold only letters, digits, '-', '_' and '.'");
      }
    }
  }
  if (!port.empty()) {
    std::uint64_t number = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (ec != std::errc{} || end != port.data() + port.size() || number == 0 || number > 65535 ||
        port.find_first_not_of("0123456789") != std::string_view::npos) {
      return refuse("the port is not a number from 1 to 65535");
    }
    std::string lower(scheme);
    for (char& c : lower)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    const bool http = lower == "http";
    const bool https = lower == "https";
    if ((http && number == 80) || (https && number == 443)) {
      return refuse("browsers leave the default port out, so drop ':" + std::string(port) + "'");
    }
  }
  return std::nullopt;
}

}  // namespace agentws
