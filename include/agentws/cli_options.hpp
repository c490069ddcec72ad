// Command-line option values checked before a program starts, for ws-server
// and ws-client. Boost.Program_options reads "-3" into an unsigned as
// 2^64 - 3; these read the text themselves and refuse anything outside the
// stated range, so a typo never becomes a huge thread count or an instant
// timeout. Every message names the option, the value as given and the range.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace agentws {

// The values one option accepts, both ends included.
struct integer_range {
  std::uint64_t min;
  std::uint64_t max;
};

// Reads `text` (decimal digits only: no sign, no spaces, no suffix) as an
// integer within `range`. `option` is the option's long name, with or without
// its leading "--". On failure returns the message for the user, e.g.
// "--threads: '-3' is not an integer from 1 to 1024".
std::variant<std::uint64_t, std::string> parse_integer_option(std::string_view option,
                                                              std::string_view text,
                                                              integer_range range);

// The same for a decimal number such as "2.5" (seconds), within [min, max]:
// digits with at most one '.', no sign, no exponent, finite.
struct number_range {
  double min;
  double max;
};
std::variant<double, std::string> parse_number_option(std::string_view option,
                                                      std::string_view text, number_range range);

// The message for a value that is outside its range, in the same words.
std::string out_of_range_message(std::string_view option, std::string_view text,
                                 integer_range range);

// Checks `text` as a browser origin, the form a browser sends in its Origin
// header: "scheme://host" or "scheme://host:port", nothing after it (no
// path, not even "/"), no user name, no default port (browsers leave
// ":80" out of http and ":443" out of https origins, so such an entry would
// never match). nullopt when it is one; otherwise the message for the user.
std::optional<std::string> origin_option_error(std::string_view option, std::string_view text);

}  // namespace agentws
