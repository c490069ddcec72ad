#include "agentws/cli_options.hpp"

#include <charconv>
#include <cmath>
#include <sstream>

namespace agentws {

namespace {

std::string quoted_option(std::string_view option) {
  std::string out = "--";
  out.append(option);
  return out;
}

}  // namespace

std::string out_of_range_message(std::string_view option, std::string_view text,
                                 integer_range range) {
  std::string out = quoted_option(option);
  out.append(": '").append(text).append("' is not an integer from ");
  out.append(std::to_string(range.min)).append(" to ").append(std::to_string(range.max));
  return out;
}

std::variant<std::uint64_t, std::string> parse_integer_option(std::string_view option,
                                                              std::string_view text,
                                                              integer_range range) {
  std::uint64_t value = 0;
  const bool digits_only =
      !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
  if (!digits_only) return out_of_range_message(option, text, range);
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
    std::ostringstream out;
    out << quoted_option(option) << ": '" << text << "' is not a number from " << range.min
        << " to " << range.max;
    return out.str();
  };
  if (text.empty() || text.find_first_not_of("0123456789.") != std::string_view::npos) {
    return failure();
  }
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) ||
      value < range.min || value > range.max) {
    return failure();
  }
  return value;
}

}  // namespace agentws
