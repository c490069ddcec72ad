// The agentws wire protocol: commands in, events out (version 1, and the
// version 2 commands that make runs outlive their connection).
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

inline constexpr int protocol_version = 2;

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
  // How long a start_run may ask its run to wait for its owner after the
  // connection closed (detach_grace_ms).
  std::uint64_t max_detach_grace_ms = 3'600'000;
  // Durable runs: each run's history holds its latest `history_events`
  // events and at most `history_bytes` of them (the newest event always);
  // a run is forgotten `retention_ms` after it ended. An owner has at most
  // `max_runs_per_owner` runs going; the server at most `max_detached_runs`
  // runs going that no connection follows.
  std::size_t history_events = 1024;
  std::size_t history_bytes = 64 * 1024;
  std::uint64_t retention_ms = 600'000;
  std::size_t max_runs_per_owner = 1024;
  std::size_t max_detached_runs = 10'000;
  // Agents: a run's deadline (timeout_ms) may be at most `max_timeout_ms`;
  // `default_timeout_ms` applies when a start_run names none (0: no
  // deadline). One event of an agent is at most `max_event_bytes`; a run
  // holds at most `max_input_queue` inputs its agent has not taken yet.
  std::uint64_t max_timeout_ms = 86'400'000;
  std::uint64_t default_timeout_ms = 0;
  std::size_t max_event_bytes = 64 * 1024;
  std::size_t max_input_queue = 16;
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
  run_not_found,       // attach_run/detach_run for a run this owner does not have
  already_attached,    // attach_run for a run this connection already follows
  not_attached,        // detach_run for a run this connection does not follow
  invalid_option,      // on_disconnect, detach_grace_ms or after_seq of the wrong type or range
  unknown_agent,       // start_run naming no agent this server offers
  invalid_input,       // input missing (send_input) or refused by the agent
  invalid_timeout,     // timeout_ms of the wrong type or range
  input_not_accepted,  // send_input to a run whose agent takes no input
  input_queue_full,    // send_input while the run's input queue is full
  unavailable,         // the server cannot take the run now (a resource it needs is missing)
  too_many_processes,  // the server's limit of live agent processes is reached
};

inline constexpr std::size_t protocol_error_code_count = 22;

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

// What happens to a run when the connections that follow it are gone.
enum class disconnect_policy {
  cancel,        // "cancel" (the default, version 1): cancelled after detach_grace_ms
  keep_running,  // "continue": it runs on, attachable
};

struct start_run_command {
  std::string run_id;
  // The demo agent's reading of `params` (steps, interval_ms), or why it
  // refuses them (version 1's bounds and messages). Not an error of the
  // command: only agents that read demo params refuse it (see agent.hpp).
  run_params_override params;
  std::optional<protocol_error> demo_params_error;
  std::optional<std::string> request_id;
  disconnect_policy on_disconnect = disconnect_policy::cancel;
  std::uint64_t detach_grace_ms = 0;
  // Version 2 agents: the agent's name (empty: the server's default), its
  // params as a JSON object (compact; empty: none), the run's input (any
  // JSON value, compact; none when absent or null) and its deadline (0:
  // the server's default).
  std::string agent;
  std::string params_json;
  std::optional<std::string> input_json;
  std::uint64_t timeout_ms = 0;
};

struct cancel_run_command {
  std::string run_id;
  std::optional<std::string> request_id;
};

// Follow a run of this owner: its events after `after_seq` (-1: all), then live.
struct attach_run_command {
  std::string run_id;
  std::int64_t after_seq = -1;
  std::optional<std::string> request_id;
};

struct detach_run_command {
  std::string run_id;
  std::optional<std::string> request_id;
};

struct list_runs_command {
  std::optional<std::string> request_id;
};

// Input for a running run's agent: any JSON value (compact).
struct send_input_command {
  std::string run_id;
  std::string input_json;
  std::optional<std::string> request_id;
};

using command = std::variant<start_run_command, cancel_run_command, attach_run_command,
                             detach_run_command, list_runs_command, send_input_command>;
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
// attach_run/detach_run of a run this owner does not have (another owner's
// included: it gets exactly what an unknown id gets).
protocol_error run_not_found_error(std::string run_id, std::optional<std::string> request_id);
protocol_error already_attached_error(std::string run_id, std::optional<std::string> request_id);
protocol_error not_attached_error(std::string run_id, std::optional<std::string> request_id);
// A limit of the owner's or the server's runs (`what` says which).
protocol_error run_limit_error(std::string run_id, std::optional<std::string> request_id,
                               std::string message);
// Any other refusal of a command on `run_id`.
protocol_error run_error(protocol_error_code code, std::string message, std::string run_id,
                         std::optional<std::string> request_id);

// True when `text` nests arrays/objects deeper than `max_depth`. Linear,
// iterative, tolerant of invalid JSON (it only counts brackets outside strings).
bool json_nesting_exceeds(std::string_view text, std::size_t max_depth) noexcept;

}  // namespace agentws
