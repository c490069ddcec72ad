#include "agentws/events.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <initializer_list>

namespace agentws {
namespace {

using json = nlohmann::json;

void append_uint(std::string& out, std::uint64_t value) {
  char digits[20];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, end);
}

void write_digits(char* at, unsigned value, int width) {
  for (int i = width - 1; i >= 0; --i) {
    at[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

// Characters that need escaping inside a JSON string, as a lookup table.
constexpr bool needs_escape(unsigned char c) {
  return c < 0x20 || c == '"' || c == '\\';
}

// Length of the valid UTF-8 sequence at `text[i]`, or 0 if it is not one.
std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  const auto lead = static_cast<unsigned char>(text[i]);
  std::size_t length = 0;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  for (std::size_t k = 1; k < length; ++k) {
    if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) return 0;
  }
  // The second byte's range rules out overlong forms, surrogates and code
  // points past U+10FFFF (RFC 3629), which lenient decoders might still read.
  const auto second = static_cast<unsigned char>(text[i + 1]);
  if ((lead == 0xe0 && second < 0xa0) || (lead == 0xed && second > 0x9f) ||
      (lead == 0xf0 && second < 0x90) || (lead == 0xf4 && second > 0x8f)) {
    return 0;
  }
  return length;
}

}  // namespace

void timestamp_formatter::append(std::string& out, wall_clock::time_point when) {
  using namespace std::chrono;
  const auto micros = duration_cast<microseconds>(when.time_since_epoch()).count();
  std::int64_t second = micros / 1'000'000;
  std::int64_t fraction = micros % 1'000'000;
  if (fraction < 0) {  // times before 1970 round toward the past
    fraction += 1'000'000;
    second -= 1;
  }
  if (second != cached_second_) {
    const sys_seconds at{seconds{second}};
    const auto day = floor<days>(at);
    const year_month_day date{day};
    const hh_mm_ss<seconds> time{at - day};
    write_digits(prefix_, static_cast<unsigned>(static_cast<int>(date.year())), 4);
    prefix_[4] = '-';
    write_digits(prefix_ + 5, static_cast<unsigned>(date.month()), 2);
    prefix_[7] = '-';
    write_digits(prefix_ + 8, static_cast<unsigned>(date.day()), 2);
    prefix_[10] = 'T';
    write_digits(prefix_ + 11, static_cast<unsigned>(time.hours().count()), 2);
    prefix_[13] = ':';
    write_digits(prefix_ + 14, static_cast<unsigned>(time.minutes().count()), 2);
    prefix_[16] = ':';
    write_digits(prefix_ + 17, static_cast<unsigned>(time.seconds().count()), 2);
    prefix_[19] = '.';
    cached_second_ = second;
  }
  char buffer[size];
  std::memcpy(buffer, prefix_, 20);
  write_digits(buffer + 20, static_cast<unsigned>(fraction), 6);
  std::memcpy(buffer + 26, "+00:00", 6);
  out.append(buffer, size);
}

std::string timestamp_formatter::format(wall_clock::time_point when) {
  std::string out;
  append(out, when);
  return out;
}

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t run_start = 0;
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      // Agent text is not validated upstream: invalid UTF-8 becomes U+FFFD,
      // so a frame is always valid text and valid JSON.
      if (const std::size_t length = utf8_sequence_length(text, i)) {
        i += length;
        continue;
      }
      out.append(text.data() + run_start, i - run_start);
      out.append("\xef\xbf\xbd");
      run_start = ++i;
      continue;
    }
    if (!needs_escape(c)) {
      ++i;
      continue;
    }
    out.append(text.data() + run_start, i - run_start);
    run_start = ++i;
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      default: {
        const char escape[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
        out.append(escape, 6);
      }
    }
  }
  out.append(text.data() + run_start, text.size() - run_start);
  out.push_back('"');
}

event_writer::event_writer(std::string& out, std::string_view event_type, std::string_view ts)
    : out_(out) {
  out_.append("{\"event_type\": ");
  append_json_string(out_, event_type);
  out_.append(", \"ts\": \"");
  out_.append(ts);  // produced by timestamp_formatter: nothing to escape
  out_.append("\", \"payload\": {");
}

void event_writer::key(std::string_view name) {
  // Keys are the protocol's own identifiers: nothing to escape.
  out_.append(first_field_ ? "\"" : ", \"");
  first_field_ = false;
  out_.append(name);
  out_.append("\": ");
}

event_writer& event_writer::field(std::string_view key_name, std::string_view value) {
  key(key_name);
  append_json_string(out_, value);
  return *this;
}

event_writer& event_writer::field(std::string_view key_name, std::uint64_t value) {
  key(key_name);
  append_uint(out_, value);
  return *this;
}

event_writer& event_writer::field(std::string_view key_name, bool value) {
  key(key_name);
  out_.append(value ? "true" : "false");
  return *this;
}

event_writer& event_writer::raw_field(std::string_view key_name, std::string_view json_text) {
  key(key_name);
  out_.append(json_text);
  return *this;
}

void event_writer::finish() {
  out_.append("}}");
}

std::string_view to_string(cancel_reason reason) noexcept {
  switch (reason) {
    case cancel_reason::client:
      return "client";
    case cancel_reason::shutdown:
      return "shutdown";
    case cancel_reason::disconnect:
      return "disconnect";
    case cancel_reason::timeout:
      return "timeout";
  }
  return "client";
}

std::string_view to_string(run_state_name state) noexcept {
  switch (state) {
    case run_state_name::running:
      return "running";
    case run_state_name::done:
      return "done";
    case run_state_name::cancelled:
      return "cancelled";
  }
  return "running";
}

void append_connected(std::string& out, std::string_view ts, const server_identity& server,
                      const protocol_limits& limits, const run_params& defaults,
                      const session_announcement& session,
                      const std::vector<agent_listing>& agents) {
  std::string limits_json;
  const auto limit = [&](std::string_view name, std::uint64_t value) {
    limits_json.append(limits_json.empty() ? "{\"" : ", \"");
    limits_json.append(name);
    limits_json.append("\": ");
    append_uint(limits_json, value);
  };
  limit("max_message_bytes", limits.max_message_bytes);
  limit("max_run_id_bytes", limits.max_run_id_bytes);
  limit("max_active_runs", limits.max_active_runs);
  limit("max_steps", limits.max_steps);
  limit("max_interval_ms", limits.max_interval_ms);
  limit("max_json_depth", limits.max_json_depth);
  limit("history_events", limits.history_events);
  limit("history_bytes", limits.history_bytes);
  limit("retention_ms", limits.retention_ms);
  limit("max_runs_per_owner", limits.max_runs_per_owner);
  limit("max_detached_runs", limits.max_detached_runs);
  limit("max_detach_grace_ms", limits.max_detach_grace_ms);
  if (!agents.empty()) {
    limit("max_timeout_ms", limits.max_timeout_ms);
    limit("default_timeout_ms", limits.default_timeout_ms);
    limit("max_event_bytes", limits.max_event_bytes);
    limit("max_input_queue", limits.max_input_queue);
  }
  limits_json.append("}");

  std::string defaults_json = "{\"steps\": ";
  append_uint(defaults_json, defaults.steps);
  defaults_json.append(", \"interval_ms\": ");
  append_uint(defaults_json, defaults.interval_ms);
  defaults_json.append("}");

  std::string features = R"(["params", "request_id")";
  if (!agents.empty()) features.append(R"(, "agents", "input")");
  if (!session.key.empty()) features.append(R"(, "resume")");
  features.append("]");
  std::string agents_json = "[";
  for (const agent_listing& agent : agents) {
    if (agents_json.size() > 1) agents_json.append(", ");
    agents_json.append("{\"name\": ");
    append_json_string(agents_json, agent.name);
    agents_json.append(", \"description\": ");
    append_json_string(agents_json, agent.description);
    agents_json.append(agent.accepts_input ? ", \"accepts_input\": true}"
                                           : ", \"accepts_input\": false}");
  }
  agents_json.append("]");

  std::string server_name = server.name;
  if (!server.version.empty()) server_name += "/" + server.version;
  event_writer writer(out, "connected", ts);
  writer.field("message", "Connected")
      .field("protocol", protocol_version)
      .field("server", server_name)
      .raw_field("features", features)
      .raw_field("limits", limits_json)
      .raw_field("defaults", defaults_json);
  if (!agents.empty()) writer.raw_field("agents", agents_json);
  if (!session.key.empty()) writer.field("session", session.key).field("resumed", session.resumed);
  writer.finish();
}

namespace {

// A JSON value with the envelope's separators (", " and ": "), the way
// Python's json.dumps writes it.
void append_json_value(std::string& out, const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [key, member] : value.items()) {
        if (!first) out.append(", ");
        first = false;
        append_json_string(out, key);
        out.append(": ");
        append_json_value(out, member);
      }
      out.push_back('}');
      return;
    }
    case nlohmann::json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& member : value) {
        if (!first) out.append(", ");
        first = false;
        append_json_value(out, member);
      }
      out.push_back(']');
      return;
    }
    case nlohmann::json::value_t::string:
      append_json_string(out, value.get_ref<const std::string&>());
      return;
    default:
      out.append(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      return;
  }
}

// An agent's object as members to follow the server's own (`, "key": value`
// each), without the keys the server writes itself.
std::string members_except(const nlohmann::json& object,
                           std::initializer_list<std::string_view> servers_keys) {
  std::string members;
  for (const auto& [key, member] : object.items()) {
    if (std::find(servers_keys.begin(), servers_keys.end(), key) != servers_keys.end()) continue;
    members.append(", ");
    append_json_string(members, key);
    members.append(": ");
    append_json_value(members, member);
  }
  return members;
}

}  // namespace

void append_run_event_fields(std::string& out, std::string_view ts, std::string_view run_id,
                             std::uint64_t step, std::uint64_t seq, const nlohmann::json& fields) {
  const std::string members = members_except(fields, {"run_id", "step", "seq"});
  event_writer(out, "run_event", ts)
      .field("run_id", run_id)
      .field("step", step)
      .field("seq", seq)
      .raw_members(members)
      .finish();
}

void append_input_received(std::string& out, std::string_view ts, std::string_view run_id,
                           std::uint64_t seq, const std::optional<std::string>& request_id) {
  event_writer(out, "input_received", ts)
      .field("run_id", run_id)
      .field("seq", seq)
      .optional_field("request_id", request_id)
      .finish();
}

void append_run_started(std::string& out, std::string_view ts, std::string_view run_id,
                        const std::optional<std::string>& request_id) {
  event_writer(out, "run_started", ts)
      .field("run_id", run_id)
      .field("seq", std::uint64_t{0})
      .optional_field("request_id", request_id)
      .finish();
}

void append_run_event(std::string& out, std::string_view ts, std::string_view run_id,
                      std::uint64_t step, std::uint64_t seq, std::string_view text) {
  event_writer(out, "run_event", ts)
      .field("run_id", run_id)
      .field("step", step)
      .field("seq", seq)
      .field("text", text)
      .finish();
}

void append_run_done(std::string& out, std::string_view ts, std::string_view run_id,
                     std::uint64_t seq, std::string_view failure,
                     const nlohmann::json* failure_details) {
  event_writer writer(out, "run_done", ts);
  writer.field("run_id", run_id).field("seq", seq);
  if (!failure.empty()) {
    writer.field("ok", false).field("error", failure);
    if (failure_details && failure_details->is_object()) {
      writer.raw_members(members_except(*failure_details, {"run_id", "seq", "ok", "error"}));
    }
  }
  writer.finish();
}

void append_run_cancelled(std::string& out, std::string_view ts, std::string_view run_id,
                          std::uint64_t seq, cancel_reason reason,
                          const std::optional<std::string>& request_id,
                          std::optional<std::uint64_t> last_step) {
  event_writer writer(out, "run_cancelled", ts);
  writer.field("run_id", run_id)
      .field("seq", seq)
      .field("reason", to_string(reason))
      .optional_field("request_id", request_id);
  if (last_step) writer.field("last_step", *last_step);
  writer.finish();
}

void append_error(std::string& out, std::string_view ts, const protocol_error& error) {
  event_writer writer(out, "error", ts);
  writer.field("message", error.message).field("code", to_string(error.code));
  writer.optional_field("run_id", error.run_id);
  if (error.received_json) writer.raw_field("received", *error.received_json);
  writer.optional_field("request_id", error.request_id).finish();
}

void append_run_attached(std::string& out, std::string_view ts, std::string_view run_id,
                         run_state_name state, std::uint64_t last_seq,
                         const std::optional<std::string>& request_id) {
  event_writer(out, "run_attached", ts)
      .field("run_id", run_id)
      .field("state", to_string(state))
      .field("last_seq", last_seq)
      .optional_field("request_id", request_id)
      .finish();
}

void append_run_gap(std::string& out, std::string_view ts, std::string_view run_id,
                    std::int64_t after_seq, std::uint64_t first_seq) {
  event_writer writer(out, "run_gap", ts);
  writer.field("run_id", run_id);
  if (after_seq < 0) {
    writer.raw_field("after_seq", "-1");
  } else {
    writer.field("after_seq", static_cast<std::uint64_t>(after_seq));
  }
  writer.field("first_seq", first_seq).finish();
}

void append_run_detached(std::string& out, std::string_view ts, std::string_view run_id,
                         const std::optional<std::string>& request_id) {
  event_writer(out, "run_detached", ts)
      .field("run_id", run_id)
      .optional_field("request_id", request_id)
      .finish();
}

void append_runs(std::string& out, std::string_view ts, const std::vector<run_listing>& runs,
                 const std::optional<std::string>& request_id) {
  std::string list = "[";
  for (const run_listing& run : runs) {
    if (list.size() > 1) list.append(", ");
    list.append("{\"run_id\": ");
    append_json_string(list, run.run_id);
    list.append(", \"agent\": ");
    append_json_string(list, run.agent);
    list.append(", \"state\": \"");
    list.append(to_string(run.state));
    list.append("\", \"last_seq\": ");
    append_uint(list, run.last_seq);
    list.append(run.attached ? ", \"attached\": true}" : ", \"attached\": false}");
  }
  list.append("]");
  event_writer(out, "runs", ts)
      .raw_field("runs", list)
      .optional_field("request_id", request_id)
      .finish();
}

std::string printable(std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (const std::size_t length = utf8_sequence_length(text, i)) {
        // C1 control characters (U+0080..U+009F) are escaped as well.
        const bool c1_control = c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0;
        if (!c1_control) {
          out.append(text.substr(i, length));
          i += length;
          continue;
        }
      }
    }
    out.append("\\x");
    out.push_back(hex[c >> 4]);
    out.push_back(hex[c & 0xf]);
    ++i;
  }
  return out;
}

event_kind event_kind_from(std::string_view event_type) noexcept {
  if (event_type == "run_event") return event_kind::run_event;
  if (event_type == "run_started") return event_kind::run_started;
  if (event_type == "run_done") return event_kind::run_done;
  if (event_type == "run_cancelled") return event_kind::run_cancelled;
  if (event_type == "error") return event_kind::error;
  if (event_type == "connected") return event_kind::connected;
  if (event_type == "run_attached") return event_kind::run_attached;
  if (event_type == "run_gap") return event_kind::run_gap;
  if (event_type == "run_detached") return event_kind::run_detached;
  if (event_type == "runs") return event_kind::runs;
  return event_kind::unknown;
}

bool is_terminal(event_kind kind) noexcept {
  return kind == event_kind::run_done || kind == event_kind::run_cancelled;
}

std::optional<received_event> parse_event(std::string_view text) {
  // Events come from a server we chose to trust less than fully: the same
  // depth guard as for commands keeps a hostile peer from exhausting the stack.
  if (json_nesting_exceeds(text, protocol_limits{}.max_json_depth) ||
      text.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  json document = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!document.is_object()) return std::nullopt;
  auto type_it = document.find("event_type");
  if (type_it == document.end() || !type_it->is_string()) return std::nullopt;

  received_event event;
  event.event_type = type_it->get<std::string>();
  event.kind = event_kind_from(event.event_type);
  if (auto it = document.find("ts"); it != document.end() && it->is_string()) {
    event.ts = it->get<std::string>();
  }
  auto payload_it = document.find("payload");
  if (payload_it == document.end() || !payload_it->is_object()) return event;
  const json& payload = *payload_it;
  auto read_string = [&](const char* key, std::string& out) {
    if (auto it = payload.find(key); it != payload.end() && it->is_string()) {
      out = it->get<std::string>();
    }
  };
  read_string("run_id", event.run_id);
  read_string("text", event.text);
  read_string("message", event.message);
  read_string("code", event.code);
  read_string("reason", event.reason);
  read_string("request_id", event.request_id);
  if (auto it = payload.find("ok"); it != payload.end() && *it == false) {
    event.failure = "failed";
    read_string("error", event.failure);
  }
  const auto read_uint = [&](const char* key, std::optional<std::uint64_t>& out) {
    if (auto it = payload.find(key); it != payload.end() && it->is_number_unsigned()) {
      out = it->get<std::uint64_t>();
    }
  };
  read_uint("step", event.step);
  read_uint("seq", event.seq);
  read_uint("first_seq", event.first_seq);
  read_uint("last_seq", event.last_seq);
  read_string("session", event.session);
  read_string("state", event.state);
  if (auto it = payload.find("resumed"); it != payload.end() && it->is_boolean()) {
    event.resumed = it->get<bool>();
  }
  if (auto it = payload.find("features"); it != payload.end() && it->is_array()) {
    for (const json& feature : *it) {
      if (feature.is_string()) event.features.push_back(feature.get<std::string>());
    }
  }
  event.payload_json = payload.dump(-1, ' ', false, json::error_handler_t::replace);
  return event;
}

std::string make_start_run(std::string_view run_id, const run_params_override& params,
                           std::string_view request_id) {
  json message = {{"command", "start_run"}, {"run_id", run_id}};
  if (params.steps || params.interval_ms) {
    json p = json::object();
    if (params.steps) p["steps"] = *params.steps;
    if (params.interval_ms) p["interval_ms"] = *params.interval_ms;
    message["params"] = std::move(p);
  }
  if (!request_id.empty()) message["request_id"] = request_id;
  return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string make_cancel_run(std::string_view run_id, std::string_view request_id) {
  json message = {{"command", "cancel_run"}, {"run_id", run_id}};
  if (!request_id.empty()) message["request_id"] = request_id;
  return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string make_attach_run(std::string_view run_id, std::int64_t after_seq,
                            std::string_view request_id) {
  json message = {{"command", "attach_run"}, {"run_id", run_id}};
  if (after_seq >= 0) message["after_seq"] = after_seq;
  if (!request_id.empty()) message["request_id"] = request_id;
  return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string make_detach_run(std::string_view run_id, std::string_view request_id) {
  json message = {{"command", "detach_run"}, {"run_id", run_id}};
  if (!request_id.empty()) message["request_id"] = request_id;
  return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string make_list_runs(std::string_view request_id) {
  json message = {{"command", "list_runs"}};
  if (!request_id.empty()) message["request_id"] = request_id;
  return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace agentws
