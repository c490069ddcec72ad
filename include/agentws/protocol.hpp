// The agentws wire protocol, version 1: commands in, events out.
//
// Everything here is pure and deterministic (no sockets, no clocks, no Asio):
// the server and the client feed it bytes and times and send what it returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace agentws {

inline constexpr int protocol_version = 1;

// Bounds a server enforces on what peers send. Announced in `connected`.
struct protocol_limits {
  std::size_t max_message_bytes = 1024 * 1024;
  std::size_t max_run_id_bytes = 256;
  std::size_t max_request_id_bytes = 256;
  std::size_t max_active_runs = 256;
  std::uint64_t max_steps = 10'000'000;
  std::uint64_t max_interval_ms = 3'600'000;
  // JSON nesting accepted in a command; deeper documents are refused before
  // parsing, so nothing recursive ever walks them.
  std::size_t max_json_depth = 64;
};

// How the demo agent paces a run when the command carries no `params`.
struct run_params {
  std::uint64_t steps = 5;
  std::uint64_t interval_ms = 1000;
};

// Machine-readable error codes (`payload.code`). Stable: clients switch on them.
enum class protocol_error_code {
  invalid_json,        // not one JSON document, nested too deep, or a key twice in an object
  invalid_command,     // JSON that is not an object
  missing_run_id,      // start/cancel without a non-empty string run_id
  invalid_run_id,      // run_id longer than the limit
  invalid_request_id,  // request_id present but not a short string
  unknown_command,     // `command` missing, not a string, or not known
  run_already_active,  // start_run for a run_id that is still running
  run_not_active,      // cancel_run for a run_id with no active run
  invalid_params,      // params of the wrong type or out of bounds
  too_many_runs,       // the connection's active-run limit is reached
  unsupported_frame,   // a binary frame
};

inline constexpr std::size_t protocol_error_code_count = 11;

// The code as sent on the wire, e.g. "run_not_active".
std::string_view to_string(protocol_error_code code) noexcept;

// A refused command: becomes one `error` event. Never closes the connection.
struct protocol_error {
  protocol_error_code code{};
  std::string message;
  std::optional<std::string> run_id;
  std::optional<std::string> request_id;
  // For unknown_command: the command object as compact JSON, bounded in size.
  std::optional<std::string> received_json;
};

// What a start_run may override; unset fields take the server's defaults.
struct run_params_override {
  std::optional<std::uint64_t> steps;
  std::optional<std::uint64_t> interval_ms;

  run_params apply_to(run_params defaults) const noexcept {
    return {steps.value_or(defaults.steps), interval_ms.value_or(defaults.interval_ms)};
  }
};

struct start_run_command {
  std::string run_id;
  run_params_override params;
  std::optional<std::string> request_id;
};

struct cancel_run_command {
  std::string run_id;
  std::optional<std::string> request_id;
};

using command = std::variant<start_run_command, cancel_run_command>;
using parse_result = std::variant<command, protocol_error>;

// Reads one text frame as a command. Never throws on peer input: every way
// the text can be wrong yields a protocol_error with its exact message.
parse_result parse_command(std::string_view text, const protocol_limits& limits);

// The error a server answers to a binary frame.
protocol_error binary_frame_error();

// Errors that depend on the connection's state, not on the command's text.
protocol_error run_already_active_error(std::string run_id, std::optional<std::string> request_id);
protocol_error run_not_active_error(std::string run_id, std::optional<std::string> request_id);
protocol_error too_many_runs_error(std::string run_id, std::optional<std::string> request_id,
                                   std::size_t limit);

// True when `text` nests arrays/objects deeper than `max_depth`. Linear,
// iterative, tolerant of invalid JSON (it only counts brackets outside strings).
bool json_nesting_exceeds(std::string_view text, std::size_t max_depth) noexcept;

}  // namespace agentws
