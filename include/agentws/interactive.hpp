// ws-client's interactive mode: commands typed at a terminal or piped in,
//   start r1 steps=3 interval_ms=100 agent=echo input={"text": "hi"} |
//   send r1 {"answer": "yes"} | cancel r1 | attach r1 [SEQ] | detach r1 |
//   raw {...} | list | help | quit | quit!
// parsed purely here, run against a connection by run_interactive().
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "agentws/protocol.hpp"
#include "agentws/resume.hpp"
#include "agentws/scenario.hpp"

namespace agentws {

struct interactive_start {
  std::string run_id;
  run_params_override params;
  disconnect_options disconnect;  // on_disconnect=cancel|continue detach_grace_ms=N
  agent_request agent;            // agent=NAME timeout_ms=N input=JSON (the rest of the line)
};
// send_input: a JSON value (not null) for the run's agent.
struct interactive_send {
  std::string run_id;
  std::string input_json;  // compact
};
// Follow a run of this session (or identity) after SEQ (-1: from its start).
struct interactive_attach {
  attach_request request;
};
struct interactive_detach {
  std::string run_id;
};
struct interactive_cancel {
  std::string run_id;
};
// Text sent as one frame, as typed: any text, even invalid JSON.
struct interactive_raw {
  std::string text;
};
struct interactive_list {};
struct interactive_help {};
// quit: close once the started runs have ended. quit!: close at once (the
// server cancels the runs when the connection closes).
struct interactive_quit {
  bool now = false;
};
struct interactive_blank {};
struct interactive_mistake {
  std::string message;
};

using interactive_command =
    std::variant<interactive_start, interactive_send, interactive_cancel, interactive_attach,
                 interactive_detach, interactive_raw, interactive_list, interactive_help,
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
  // On connection loss: retry with back-off; against a server that announces
  // "resume", in the same session, attaching the runs not ended again (runs
  // are then started with a detach grace, resume_grace).
  bool reconnect = false;
  std::string session;  // continue this session (--session)
  // Say the session key once connected (not with --json: the event has it).
  bool announce_session = true;
  std::chrono::milliseconds connect_timeout{5000};
  tls_options tls;     // for wss:// URLs
  std::string origin;  // the Origin header of the upgrade request, when set
  std::vector<std::pair<std::string, std::string>> headers;  // extra request headers
  run_params_override default_params;                        // for a start that does not say
  agent_request default_agent;                               // likewise, field by field
  // The whole session gives up after this (exit timeout); none: no limit.
  std::optional<std::chrono::milliseconds> timeout;
};

// Runs until `quit!`, or `quit` or end of input once every started run has
// ended (also after reconnecting; runs of a lost connection are lost unless
// the server resumes them).
// Exit status as for scenarios: ok, unexpected (protocol violations seen,
// listed at the end), connection (could not connect, the server refused or
// closed the connection, or it was lost without --reconnect), timeout.
boost::asio::awaitable<scenario_exit> run_interactive(const interactive_options& options,
                                                      interactive_input& input,
                                                      const scenario_output& output);

}  // namespace agentws
