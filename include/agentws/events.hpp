// Server-to-client events: building them (server) and reading them (client).
//
// Builders append one complete event to a caller-owned buffer, so a hot path
// can reuse its memory. The envelope is written in the contract's own form:
//   {"event_type": "run_event", "ts": "...", "payload": {"run_id": ..., ...}}
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agentws/protocol.hpp"

namespace agentws {

using wall_clock = std::chrono::system_clock;

// Formats UTC times as RFC 3339 with microseconds and "+00:00", the form of
// Python's datetime.now(timezone.utc).isoformat(). The date and time part is
// cached per second, so a stream of events costs no strftime per event.
class timestamp_formatter {
 public:
  static constexpr std::size_t size = 32;  // "2026-11-25T17:36:10.123456+00:00"

  void append(std::string& out, wall_clock::time_point when);
  std::string format(wall_clock::time_point when);

 private:
  std::int64_t cached_second_ = INT64_MIN;
  char prefix_[20] = {};  // "YYYY-MM-DDTHH:MM:SS"
};

// Appends `text` as a JSON string literal (quotes included). Control
// characters, quotes and backslashes are escaped; valid UTF-8 passes through
// and invalid bytes become U+FFFD, so the result is always valid UTF-8.
void append_json_string(std::string& out, std::string_view text);

// Replaces control characters (C0, DEL, C1) and invalid UTF-8 bytes with
// visible \xNN escapes, so nothing a peer sends can drive a terminal or forge
// a log line.
std::string printable(std::string_view text);

// Writes one event envelope; payload fields are added in call order. Keys
// are written as given (they are protocol identifiers); values are escaped.
class event_writer {
 public:
  event_writer(std::string& out, std::string_view event_type, std::string_view ts);
  event_writer& field(std::string_view key, std::string_view value);
  // Without this, a string literal would pick the bool overload.
  event_writer& field(std::string_view key, const char* value) {
    return field(key, std::string_view(value));
  }
  event_writer& field(std::string_view key, std::uint64_t value);
  event_writer& field(std::string_view key, int value) {
    return field(key, static_cast<std::uint64_t>(value));
  }
  event_writer& field(std::string_view key, bool value);
  // `json` must already be valid JSON (an object, array or scalar).
  event_writer& raw_field(std::string_view key, std::string_view json);
  // Optional string fields are written only when present.
  event_writer& optional_field(std::string_view key, const std::optional<std::string>& value) {
    if (value) field(key, *value);
    return *this;
  }
  // Members already written as `, "key": value` pairs, after at least one field.
  event_writer& raw_members(std::string_view members) {
    out_.append(members);
    return *this;
  }
  void finish();

 private:
  void key(std::string_view name);
  std::string& out_;
  bool first_field_ = true;
};

// Why a run was cancelled (payload.reason).
enum class cancel_reason { client, shutdown, disconnect, timeout };
std::string_view to_string(cancel_reason reason) noexcept;

// Where a run is in its life (run_attached's and runs' "state").
enum class run_state_name { running, done, cancelled };
std::string_view to_string(run_state_name state) noexcept;

struct server_identity {
  std::string name = "agentws";
  std::string version;
};

// The session a connection belongs to (see docs/protocol.md, "resume").
struct session_announcement {
  std::string_view key;
  bool resumed = false;
};

// An agent the server offers, as `connected` lists it.
struct agent_listing {
  std::string name;
  std::string description;
  bool accepts_input = false;
};

// The complete event builders of the protocol. Every run-scoped event
// carries the run's `seq` (run_started is 0).
// With `agents`, the agents section is announced (features "agents" and
// "input", the list, and their limits).
void append_connected(std::string& out, std::string_view ts, const server_identity& server,
                      const protocol_limits& limits, const run_params& defaults,
                      const session_announcement& session = {},
                      const std::vector<agent_listing>& agents = {});
void append_run_started(std::string& out, std::string_view ts, std::string_view run_id,
                        const std::optional<std::string>& request_id);
void append_run_event(std::string& out, std::string_view ts, std::string_view run_id,
                      std::uint64_t step, std::uint64_t seq, std::string_view text);
// An agent's structured event: `fields` (a JSON object) after the server's
// run_id, step and seq; keys of those names in `fields` are dropped, so an
// agent cannot forge them. Written with the envelope's separators.
void append_run_event_fields(std::string& out, std::string_view ts, std::string_view run_id,
                             std::uint64_t step, std::uint64_t seq, const nlohmann::json& fields);
// A send_input reached the run's agent's queue.
void append_input_received(std::string& out, std::string_view ts, std::string_view run_id,
                           std::uint64_t seq, const std::optional<std::string>& request_id);
// `failure` set: the agent failed; still the run's one terminal event.
// `failure_details`' members follow "error" (a program's exit_code or
// signal); run_id, seq, ok and error among them are dropped.
void append_run_done(std::string& out, std::string_view ts, std::string_view run_id,
                     std::uint64_t seq, std::string_view failure = {},
                     const nlohmann::json* failure_details = nullptr);
// `last_step`: the last step this connection was sent (absent: none was).
void append_run_cancelled(std::string& out, std::string_view ts, std::string_view run_id,
                          std::uint64_t seq, cancel_reason reason,
                          const std::optional<std::string>& request_id,
                          std::optional<std::uint64_t> last_step = std::nullopt);
void append_error(std::string& out, std::string_view ts, const protocol_error& error);
void append_run_attached(std::string& out, std::string_view ts, std::string_view run_id,
                         run_state_name state, std::uint64_t last_seq,
                         const std::optional<std::string>& request_id);
void append_run_gap(std::string& out, std::string_view ts, std::string_view run_id,
                    std::int64_t after_seq, std::uint64_t first_seq);
void append_run_detached(std::string& out, std::string_view ts, std::string_view run_id,
                         const std::optional<std::string>& request_id);
// One entry of a `runs` answer.
struct run_listing {
  std::string run_id;
  std::string agent;
  run_state_name state = run_state_name::running;
  std::uint64_t last_seq = 0;
  bool attached = false;
};
void append_runs(std::string& out, std::string_view ts, const std::vector<run_listing>& runs,
                 const std::optional<std::string>& request_id);

// --- Reading events (client side) ---

enum class event_kind {
  connected,
  run_started,
  run_event,
  run_done,
  run_cancelled,
  error,
  run_attached,
  run_gap,
  run_detached,
  runs,
  unknown
};

event_kind event_kind_from(std::string_view event_type) noexcept;
bool is_terminal(event_kind kind) noexcept;

// One received event, with the fields the client library routes on. Fields a
// peer did not send stay empty: only the core protocol is ever required.
struct received_event {
  event_kind kind = event_kind::unknown;
  std::string event_type;
  std::string ts;
  std::string run_id;                 // payload.run_id, empty if absent
  std::optional<std::uint64_t> step;  // run_event
  std::optional<std::uint64_t> seq;   // run-scoped events (version 2)
  std::string text;                   // run_event
  std::string message;                // error / connected
  std::string code;                   // error (extension)
  std::string reason;                 // run_cancelled (extension)
  std::string request_id;             // extension
  std::string failure;                // run_done with "ok": false (extension)
  std::string payload_json;           // the whole payload, compact JSON
  // connected (version 2): the session to present on reconnecting, whether
  // this connection resumed one, and the server's features.
  std::string session;
  bool resumed = false;
  std::vector<std::string> features;
  // run_attached: "running", "done" or "cancelled"; run_gap: the first seq
  // the history still holds; run_attached's last_seq.
  std::string state;
  std::optional<std::uint64_t> first_seq;
  std::optional<std::uint64_t> last_seq;
};

// Parses one event frame. nullopt if the text is not an event envelope.
std::optional<received_event> parse_event(std::string_view text);

// Builds the JSON text of a command (client side).
std::string make_start_run(std::string_view run_id, const run_params_override& params = {},
                           std::string_view request_id = {});
std::string make_cancel_run(std::string_view run_id, std::string_view request_id = {});
// `after_seq` -1: from the start.
std::string make_attach_run(std::string_view run_id, std::int64_t after_seq = -1,
                            std::string_view request_id = {});
std::string make_detach_run(std::string_view run_id, std::string_view request_id = {});
std::string make_list_runs(std::string_view request_id = {});

}  // namespace agentws
