// ws-client's interactive mode: commands typed at a terminal or piped in,
//   start r1 steps=3 interval_ms=100 | cancel r1 | list | help | quit
// parsed purely here, run against a connection by run_interactive().
#pragma once

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>
#include <string>
#include <variant>

#include "agentws/protocol.hpp"
#include "agentws/scenario.hpp"

namespace agentws {

struct interactive_start {
  std::string run_id;
  run_params_override params;
};
struct interactive_cancel {
  std::string run_id;
};
struct interactive_list {};
struct interactive_help {};
struct interactive_quit {};
struct interactive_blank {};
struct interactive_mistake {
  std::string message;
};

using interactive_command =
    std::variant<interactive_start, interactive_cancel, interactive_list, interactive_help,
                 interactive_quit, interactive_blank, interactive_mistake>;

// Parses one input line. Never throws.
interactive_command parse_interactive_line(std::string_view line);

// The help text listing the commands.
std::string_view interactive_help_text();

// Lines from the user, delivered on the connection's executor. Call
// `deliver(line)` for each line and `deliver(nullopt)` at end of input.
class interactive_input {
 public:
  virtual ~interactive_input() = default;
  virtual void start(std::function<void(std::optional<std::string>)> deliver) = 0;
};

struct interactive_options {
  std::string url;
  std::string token;
  bool reconnect = false;  // on connection loss: retry with back-off
  std::chrono::milliseconds connect_timeout{5000};
  tls_options tls;  // for wss:// URLs
};

// Runs until `quit`, or end of input once every started run has ended.
// Exit status as for scenarios: ok, unexpected (protocol violations seen),
// connection (could not connect, or lost it without --reconnect).
boost::asio::awaitable<scenario_exit> run_interactive(const interactive_options& options,
                                                      interactive_input& input,
                                                      const scenario_output& output);

}  // namespace agentws
