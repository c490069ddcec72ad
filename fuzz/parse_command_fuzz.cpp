// Fuzzes what a peer controls most: the text of a command frame.
//
// Whatever the bytes, parse_command (default limits) must return without
// throwing or crashing, and every event the server would build from its
// result must be one valid JSON object that says what the result says:
// the error event for a protocol_error; run_started, run_event, run_done,
// run_cancelled and the state-dependent errors for a command. The client's
// parse_event must read each of them back. Also checked: a raw NUL byte (never
// valid JSON) is refused, and the depth guard agrees with the real nesting of
// every document nlohmann accepts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentws/events.hpp"
#include "agentws/protocol.hpp"

namespace {

using json = nlohmann::json;

constexpr std::string_view ts = "2026-11-25T17:36:10.123456+00:00";

#define FUZZ_CHECK(condition)                                                            \
  do {                                                                                   \
    if (!(condition)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// Parses one built event, REQUIRing a JSON object with the envelope.
json parse_built(const std::string& text, std::string_view event_type) {
  json event = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!event.is_object()) {
    std::fprintf(stderr, "built event is not a JSON object (%zu bytes)\n", text.size());
    std::abort();
  }
  FUZZ_CHECK(event["event_type"] == event_type);
  FUZZ_CHECK(event["ts"] == ts);
  FUZZ_CHECK(event["payload"].is_object());
  // The client reads it back to the same fields.
  std::optional<agentws::received_event> read = agentws::parse_event(text);
  FUZZ_CHECK(read.has_value());
  FUZZ_CHECK(read->event_type == event_type);
  FUZZ_CHECK(read->kind == agentws::event_kind_from(event_type));
  FUZZ_CHECK(json::parse(read->payload_json, nullptr, false) == event["payload"]);
  return event;
}

void check_optional(const json& payload, const char* key, const std::optional<std::string>& value) {
  if (value) {
    FUZZ_CHECK(payload.contains(key) && payload[key] == *value);
  } else {
    FUZZ_CHECK(!payload.contains(key));
  }
}

void check_error_event(const agentws::protocol_error& error) {
  std::string out;
  agentws::append_error(out, ts, error);
  const json event = parse_built(out, "error");
  const json& payload = event["payload"];
  FUZZ_CHECK(!error.message.empty());
  FUZZ_CHECK(payload["message"] == error.message);
  FUZZ_CHECK(payload["code"] == agentws::to_string(error.code));
  check_optional(payload, "run_id", error.run_id);
  check_optional(payload, "request_id", error.request_id);
  if (error.received_json) {
    FUZZ_CHECK(error.code == agentws::protocol_error_code::unknown_command);
    // Bounded echo: the limit plus a short summary at most.
    FUZZ_CHECK(error.received_json->size() <= 4096 + 64);
    FUZZ_CHECK(payload["received"].is_object());
    FUZZ_CHECK(payload["received"] == json::parse(*error.received_json, nullptr, false));
  } else {
    FUZZ_CHECK(!payload.contains("received"));
  }
}

void check_run_id(const std::string& run_id, const agentws::protocol_limits& limits) {
  FUZZ_CHECK(!run_id.empty());
  FUZZ_CHECK(run_id.size() <= limits.max_run_id_bytes);
}

void check_command(const agentws::command& command, const agentws::protocol_limits& limits) {
  std::string out;
  if (const auto* start = std::get_if<agentws::start_run_command>(&command)) {
    check_run_id(start->run_id, limits);
    if (start->request_id) FUZZ_CHECK(start->request_id->size() <= limits.max_request_id_bytes);
    if (start->params.steps) FUZZ_CHECK(*start->params.steps <= limits.max_steps);
    if (start->params.interval_ms) FUZZ_CHECK(*start->params.interval_ms <= limits.max_interval_ms);

    agentws::append_run_started(out, ts, start->run_id, start->request_id);
    json event = parse_built(out, "run_started");
    FUZZ_CHECK(event["payload"]["run_id"] == start->run_id);
    check_optional(event["payload"], "request_id", start->request_id);

    out.clear();
    const std::uint64_t step = start->params.steps.value_or(0);
    agentws::append_run_event(out, ts, start->run_id, step, step + 1, start->run_id);
    event = parse_built(out, "run_event");
    FUZZ_CHECK(event["payload"]["step"] == step);
    FUZZ_CHECK(event["payload"]["seq"] == step + 1);
    FUZZ_CHECK(event["payload"]["text"] == start->run_id);

    out.clear();
    agentws::append_run_done(out, ts, start->run_id, step, start->request_id.value_or(""));
    event = parse_built(out, "run_done");
    FUZZ_CHECK(event["payload"]["run_id"] == start->run_id);

    check_error_event(agentws::run_already_active_error(start->run_id, start->request_id));
    check_error_event(
        agentws::too_many_runs_error(start->run_id, start->request_id, limits.max_active_runs));
    FUZZ_CHECK(start->detach_grace_ms <= limits.max_detach_grace_ms);
  } else if (const auto* attach = std::get_if<agentws::attach_run_command>(&command)) {
    check_run_id(attach->run_id, limits);
    FUZZ_CHECK(attach->after_seq >= -1);
    out.clear();
    agentws::append_run_attached(out, ts, attach->run_id, agentws::run_state_name::running, 0,
                                 attach->request_id);
    const json event = parse_built(out, "run_attached");
    FUZZ_CHECK(event["payload"]["run_id"] == attach->run_id);
    check_optional(event["payload"], "request_id", attach->request_id);
    check_error_event(agentws::run_not_found_error(attach->run_id, attach->request_id));
    check_error_event(agentws::already_attached_error(attach->run_id, attach->request_id));
  } else if (const auto* detach = std::get_if<agentws::detach_run_command>(&command)) {
    check_run_id(detach->run_id, limits);
    check_error_event(agentws::not_attached_error(detach->run_id, detach->request_id));
  } else if (const auto* list = std::get_if<agentws::list_runs_command>(&command)) {
    out.clear();
    agentws::append_runs(out, ts, {}, list->request_id);
    const json event = parse_built(out, "runs");
    check_optional(event["payload"], "request_id", list->request_id);
  } else {
    const auto& cancel = std::get<agentws::cancel_run_command>(command);
    check_run_id(cancel.run_id, limits);
    if (cancel.request_id) FUZZ_CHECK(cancel.request_id->size() <= limits.max_request_id_bytes);
    for (auto reason : {agentws::cancel_reason::client, agentws::cancel_reason::shutdown}) {
      out.clear();
      agentws::append_run_cancelled(out, ts, cancel.run_id, 1, reason, cancel.request_id);
      const json event = parse_built(out, "run_cancelled");
      FUZZ_CHECK(event["payload"]["run_id"] == cancel.run_id);
      check_optional(event["payload"], "request_id", cancel.request_id);
    }
    check_error_event(agentws::run_not_active_error(cancel.run_id, cancel.request_id));
  }
}

// The real nesting depth of a parsed document, without recursion.
std::size_t depth_of(const json& document) {
  std::size_t deepest = 0;
  std::vector<std::pair<const json*, std::size_t>> stack{{&document, 0}};
  while (!stack.empty()) {
    auto [value, depth] = stack.back();
    stack.pop_back();
    if (!value->is_structured()) continue;
    deepest = std::max(deepest, depth + 1);
    for (const auto& child : *value)
      stack.emplace_back(&child, depth + 1);
  }
  return deepest;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const agentws::protocol_limits limits;

  const bool has_nul = text.find('\0') != std::string_view::npos;

  const agentws::parse_result result = agentws::parse_command(text, limits);
  if (const auto* error = std::get_if<agentws::protocol_error>(&result)) {
    check_error_event(*error);
  } else {
    // nlohmann stops at a NUL byte as if the text ended there: whatever
    // follows must not turn "JSON and then garbage" into a command.
    FUZZ_CHECK(!has_nul);
    check_command(std::get<agentws::command>(result), limits);
  }

  // The depth guard against the real depth of what nlohmann accepts (which,
  // with a NUL inside, is only the text before it).
  if (!has_nul && !agentws::json_nesting_exceeds(text, limits.max_json_depth)) {
    const json document = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!document.is_discarded()) {
      const std::size_t depth = depth_of(document);
      FUZZ_CHECK(!agentws::json_nesting_exceeds(text, depth));
      FUZZ_CHECK(depth == 0 || agentws::json_nesting_exceeds(text, depth - 1));
    }
  }
  return 0;
}
