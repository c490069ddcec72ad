// ws-client's command line: the option table, the range of every number and
// the checks between options, all made before anything connects. Parsing
// touches no network and reads no file but --input @FILE's (the
// environment's token is passed in), so the tests call it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agentws/cli_options.hpp"
#include "agentws/scenario.hpp"

namespace agentws {

// What ws-client runs with once its command line is accepted.
struct client_options {
  // url, token, headers, TLS, runs, cancels, attaches, session, params,
  // timeout, reconnect
  scenario plan;
  bool interactive = false;
  bool reconnect = false;      // the same as plan.reconnect
  bool timeout_given = false;  // -i applies --timeout only when it is given
  bool json = false;
  std::string color = "auto";  // auto, always or never
};

// The outcome of reading the command line: options to run with, or an exit
// status with the text for stdout (--help, --version) or for stderr (every
// problem found, one line each, ready to print).
struct client_command_line {
  std::optional<client_options> options;
  int exit_status = 0;
  std::string output;
  std::string errors;
};

// The ranges ws-client accepts, both ends included; --help and the README
// state the same numbers.
namespace client_ranges {
// 2^53 - 1: the largest params.steps any ws-server accepts (--max-steps).
inline constexpr integer_range steps{0, 9'007'199'254'740'991};
// A day: the largest params.interval_ms any ws-server accepts (--max-interval-ms).
inline constexpr integer_range interval_ms{0, 86'400'000};
// Seconds: from a millisecond to a year.
inline constexpr number_range timeout_seconds{0.001, 31'536'000};
// Seconds after the start at which a planned cancel is sent: up to a year.
inline constexpr number_range cancel_seconds{0, 31'536'000};
// start_run's timeout_ms: the protocol's max_timeout_ms (a day).
inline constexpr integer_range timeout_ms{1, 86'400'000};
}  // namespace client_ranges

// Checks "Name: value" for --header: nullopt with `name` and `value` set, or
// the message for the user. Names the WebSocket handshake sets itself (Host,
// Upgrade, Connection, Sec-WebSocket-*) are refused.
std::optional<std::string> header_option_error(std::string_view text, std::string* name,
                                               std::string* value);

// The largest file --input @FILE reads.
inline constexpr std::size_t max_input_file_bytes = 16 * 1024 * 1024;

// Why `name` cannot name an agent (empty, or longer than any server takes),
// or nullopt.
std::optional<std::string> agent_name_problem(std::string_view name);

// --input's value: a JSON value, or @FILE for the JSON in FILE (at most
// max_input_file_bytes). The value as compact JSON, or nullopt with
// `problem` set ("--input: 'hello' is not JSON: ...").
std::optional<std::string> read_input_option(std::string_view value, std::string* problem);

// Reads ws-client's arguments (argv[0] is skipped). `version` is printed by
// --version; `env_token` is $AGENTWS_TOKEN (nullptr when unset), used when
// --token is not given. Exit status 0 for --help and --version, 2 for any
// bad option or value.
client_command_line parse_client_command_line(int argc, const char* const* argv,
                                              std::string_view version, const char* env_token);

}  // namespace agentws
