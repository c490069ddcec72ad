#include "agentws/protocol.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace agentws {
namespace {

using json = nlohmann::json;

// Echoes of unknown commands are bounded: a peer can make us parse 1 MiB,
// but not send it back to itself.
constexpr std::size_t max_received_echo_bytes = 4096;
// ... and shallow: the echo sits two levels down in the error event, and a
// reader with the same depth limit as ours must still accept that event.
constexpr std::size_t max_received_echo_depth = 16;

struct error_row {
  protocol_error_code code;
  std::string_view wire_name;
};

// The wire names, indexed by protocol_error_code. The exact core messages live in the
// functions below, one place each.
constexpr std::array<error_row, protocol_error_code_count> error_table{{
    {protocol_error_code::invalid_json, "invalid_json"},
    {protocol_error_code::invalid_command, "invalid_command"},
    {protocol_error_code::missing_run_id, "missing_run_id"},
    {protocol_error_code::invalid_run_id, "invalid_run_id"},
    {protocol_error_code::invalid_request_id, "invalid_request_id"},
    {protocol_error_code::unknown_command, "unknown_command"},
    {protocol_error_code::run_already_active, "run_already_active"},
    {protocol_error_code::run_not_active, "run_not_active"},
    {protocol_error_code::invalid_params, "invalid_params"},
    {protocol_error_code::too_many_runs, "too_many_runs"},
    {protocol_error_code::unsupported_frame, "unsupported_frame"},
    {protocol_error_code::run_not_found, "run_not_found"},
    {protocol_error_code::already_attached, "already_attached"},
    {protocol_error_code::not_attached, "not_attached"},
    {protocol_error_code::invalid_option, "invalid_option"},
    {protocol_error_code::unknown_agent, "unknown_agent"},
    {protocol_error_code::invalid_input, "invalid_input"},
    {protocol_error_code::invalid_timeout, "invalid_timeout"},
    {protocol_error_code::input_not_accepted, "input_not_accepted"},
    {protocol_error_code::input_queue_full, "input_queue_full"},
    {protocol_error_code::unavailable, "unavailable"},
    {protocol_error_code::too_many_processes, "too_many_processes"},
}};

constexpr bool table_matches_enum() {
  for (std::size_t i = 0; i < error_table.size(); ++i) {
    if (static_cast<std::size_t>(error_table[i].code) != i) return false;
  }
  return true;
}
static_assert(table_matches_enum(), "error_table must list the codes in enum order");

protocol_error make_error(protocol_error_code code, std::string message) {
  protocol_error error;
  error.code = code;
  error.message = std::move(message);
  return error;
}

// The command object for an "Unknown command" echo, bounded in size and
// depth; `text` is the frame it was parsed from.
std::string dump_bounded(const json& object, std::string_view text) {
  if (text.size() <= 4 * max_received_echo_bytes &&
      !json_nesting_exceeds(text, max_received_echo_depth)) {
    std::string dumped = object.dump(-1, ' ', false, json::error_handler_t::replace);
    if (dumped.size() <= max_received_echo_bytes) return dumped;
  }
  // Too large or deep to echo: keep only the command name if it is a string
  // and the result still fits.
  json summary = json::object();
  if (auto it = object.find("command"); it != object.end() && it->is_string()) {
    summary["command"] = *it;
  }
  summary["truncated"] = true;
  std::string dumped = summary.dump(-1, ' ', false, json::error_handler_t::replace);
  if (dumped.size() <= max_received_echo_bytes) return dumped;
  return R"({"truncated":true})";
}

// An agent's name is short: names come from the server's configuration.
constexpr std::size_t max_agent_name_bytes = 128;

// A value as compact JSON, for agents to read (invalid UTF-8 replaced).
std::string compact(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Reads an optional unsigned integer parameter; nullopt result means "absent".
// Floats, negative numbers, strings and values past `max` are refused.
std::optional<protocol_error> read_bound(const json& params, const char* name, std::uint64_t max,
                                         std::optional<std::uint64_t>& out) {
  auto it = params.find(name);
  if (it == params.end()) return std::nullopt;
  const bool in_range = it->is_number_unsigned() && it->get<std::uint64_t>() <= max;
  if (!in_range) {
    return make_error(
        protocol_error_code::invalid_params,
        std::string("params.") + name + " must be an integer from 0 to " + std::to_string(max));
  }
  out = it->get<std::uint64_t>();
  return std::nullopt;
}

// Builds the document like nlohmann's own DOM parser, but refuses an object
// that repeats a key (I-JSON, RFC 7493 2.3): a proxy or logger that reads the
// first of two "command" keys must never disagree with us about what a
// command does. Keys arrive decoded, so "a" and "\u0061" are the same key.
// The check is the map insertion the DOM parser does anyway: no extra work.
class dom_builder {
 public:
  using string_t = json::string_t;

  json& document() noexcept { return root_; }
  // The repeated key, when that is why parsing stopped.
  const std::optional<std::string>& duplicate_key() const noexcept { return duplicate_key_; }

  bool null() { return value(nullptr); }
  bool boolean(bool v) { return value(v); }
  bool number_integer(json::number_integer_t v) { return value(v); }
  bool number_unsigned(json::number_unsigned_t v) { return value(v); }
  bool number_float(json::number_float_t v, const string_t& /*text*/) { return value(v); }
  // Copies, as nlohmann's DOM parser does: the lexer reuses its buffer.
  bool string(string_t& v) { return value(v); }
  bool binary(json::binary_t& v) { return value(v); }

  bool start_object(std::size_t /*size*/) {
    open_.push_back(place(json::value_t::object));
    return true;
  }
  bool key(string_t& name) {
    auto& members = open_.back()->get_ref<json::object_t&>();
    auto [it, inserted] = members.try_emplace(name);
    if (!inserted) {
      duplicate_key_ = name;
      return false;  // stops the parse
    }
    member_ = &it->second;
    return true;
  }
  bool end_object() {
    open_.pop_back();
    return true;
  }
  bool start_array(std::size_t /*size*/) {
    open_.push_back(place(json::value_t::array));
    return true;
  }
  bool end_array() {
    open_.pop_back();
    return true;
  }
  template <class Exception>
  bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                   const Exception& /*error*/) {
    return false;
  }

 private:
  template <class Value>
  bool value(Value&& v) {
    place(std::forward<Value>(v));
    return true;
  }
  // Where a new value goes: the root, the end of the open array, or the
  // member whose key came last. Pointers stay valid while their container is
  // open: nothing is added to an array while a child of it is being built.
  template <class Value>
  json* place(Value&& v) {
    if (open_.empty()) {
      root_ = json(std::forward<Value>(v));
      return &root_;
    }
    if (json& parent = *open_.back(); parent.is_array()) {
      auto& items = parent.get_ref<json::array_t&>();
      items.emplace_back(std::forward<Value>(v));
      return &items.back();
    }
    *member_ = json(std::forward<Value>(v));
    return member_;
  }

  json root_;
  std::vector<json*> open_;  // the arrays and objects being built, innermost last
  json* member_ = nullptr;   // the value of the key read last
  std::optional<std::string> duplicate_key_;
};

// "Invalid JSON: duplicate key "command"": the key as a JSON string, cut
// (at a character boundary) so that a long key is not echoed whole.
std::string duplicate_key_message(std::string_view key) {
  constexpr std::size_t max_shown = 64;
  std::size_t shown = key.size();
  if (shown > max_shown) {
    shown = max_shown;
    // Back off continuation bytes (10xxxxxx) to the start of a character.
    while (shown > 0 && (static_cast<unsigned char>(key[shown]) & 0xC0) == 0x80)
      --shown;
  }
  std::string message = "Invalid JSON: duplicate key ";
  message +=
      json(std::string(key.substr(0, shown))).dump(-1, ' ', false, json::error_handler_t::replace);
  if (shown < key.size()) message += "...";
  return message;
}

}  // namespace

std::string_view to_string(protocol_error_code code) noexcept {
  return error_table[static_cast<std::size_t>(code)].wire_name;
}

bool json_nesting_exceeds(std::string_view text, std::size_t max_depth) noexcept {
  std::size_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > max_depth) return true;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return false;
}

parse_result parse_command(std::string_view text, const protocol_limits& limits) {
  if (json_nesting_exceeds(text, limits.max_json_depth)) {
    return make_error(
        protocol_error_code::invalid_json,
        "Invalid JSON: nested deeper than " + std::to_string(limits.max_json_depth) + " levels");
  }
  // nlohmann stops at a NUL byte as at the end of input: refuse it outright
  // (JSON allows it nowhere outside an escape).
  if (text.find('\0') != std::string_view::npos) {
    return make_error(protocol_error_code::invalid_json, "Invalid JSON");
  }
  dom_builder builder;
  if (!json::sax_parse(text, &builder, json::input_format_t::json, /*strict=*/true)) {
    if (const auto& key = builder.duplicate_key()) {
      return make_error(protocol_error_code::invalid_json, duplicate_key_message(*key));
    }
    return make_error(protocol_error_code::invalid_json, "Invalid JSON");
  }
  const json& document = builder.document();
  if (!document.is_object()) {
    return make_error(protocol_error_code::invalid_command, "Command must be a JSON object");
  }

  // request_id is read first so that every later error can carry it.
  std::optional<std::string> request_id;
  bool request_id_invalid = false;
  if (auto it = document.find("request_id"); it != document.end()) {
    if (it->is_string() &&
        it->get_ref<const std::string&>().size() <= limits.max_request_id_bytes) {
      request_id = it->get<std::string>();
    } else {
      request_id_invalid = true;
    }
  }
  auto with_request_id = [&](protocol_error error) {
    error.request_id = request_id;
    return error;
  };

  const auto command_it = document.find("command");
  const std::string* command_name = nullptr;
  if (command_it != document.end() && command_it->is_string()) {
    command_name = &command_it->get_ref<const std::string&>();
  }
  const bool is_start = command_name && *command_name == "start_run";
  const bool is_cancel = command_name && *command_name == "cancel_run";
  const bool is_attach = command_name && *command_name == "attach_run";
  const bool is_detach = command_name && *command_name == "detach_run";
  const bool is_list = command_name && *command_name == "list_runs";
  const bool is_input = command_name && *command_name == "send_input";
  if (!is_start && !is_cancel && !is_attach && !is_detach && !is_list && !is_input) {
    protocol_error error =
        with_request_id(make_error(protocol_error_code::unknown_command, "Unknown command"));
    error.received_json = dump_bounded(document, text);
    return error;
  }
  const auto invalid_request_id = [&] {
    return make_error(protocol_error_code::invalid_request_id,
                      "request_id must be a string of at most " +
                          std::to_string(limits.max_request_id_bytes) + " bytes");
  };
  if (is_list) {
    if (request_id_invalid) return invalid_request_id();
    return command{list_runs_command{request_id}};
  }

  const auto run_id_it = document.find("run_id");
  if (run_id_it == document.end() || !run_id_it->is_string() ||
      run_id_it->get_ref<const std::string&>().empty()) {
    return with_request_id(make_error(protocol_error_code::missing_run_id, "run_id is required"));
  }
  const std::string& run_id = run_id_it->get_ref<const std::string&>();
  if (run_id.size() > limits.max_run_id_bytes) {
    return with_request_id(
        make_error(protocol_error_code::invalid_run_id,
                   "run_id is longer than " + std::to_string(limits.max_run_id_bytes) + " bytes"));
  }
  if (request_id_invalid) {
    protocol_error error = invalid_request_id();
    error.run_id = run_id;
    return error;
  }
  const auto invalid_option = [&](std::string message) {
    protocol_error error = make_error(protocol_error_code::invalid_option, std::move(message));
    error.run_id = run_id;
    return with_request_id(std::move(error));
  };

  if (is_cancel) return command{cancel_run_command{run_id, request_id}};
  if (is_input) {
    const auto it = document.find("input");
    if (it == document.end() || it->is_null()) {
      return with_request_id(
          run_error(protocol_error_code::invalid_input, "input is required", run_id, {}));
    }
    return command{send_input_command{run_id, compact(*it), request_id}};
  }
  if (is_detach) return command{detach_run_command{run_id, request_id}};
  if (is_attach) {
    attach_run_command attach{run_id, -1, request_id};
    if (auto it = document.find("after_seq"); it != document.end() && !it->is_null()) {
      if (it->is_number_unsigned() && it->get<std::uint64_t>() <= INT64_MAX) {
        attach.after_seq = static_cast<std::int64_t>(it->get<std::uint64_t>());
      } else if (it->is_number_integer() && it->get<std::int64_t>() == -1) {
        attach.after_seq = -1;
      } else {
        return invalid_option("after_seq must be an integer from -1 up");
      }
    }
    return command{std::move(attach)};
  }

  start_run_command start;
  start.run_id = run_id;
  start.request_id = request_id;
  if (auto it = document.find("params"); it != document.end() && !it->is_null()) {
    if (!it->is_object()) {
      protocol_error error =
          make_error(protocol_error_code::invalid_params, "params must be an object");
      error.run_id = run_id;
      return with_request_id(std::move(error));
    }
    start.params_json = compact(*it);  // the agent validates what is inside
    std::optional<protocol_error> error =
        read_bound(*it, "steps", limits.max_steps, start.params.steps);
    if (!error) {
      error = read_bound(*it, "interval_ms", limits.max_interval_ms, start.params.interval_ms);
    }
    if (error) {
      error->run_id = run_id;
      error->request_id = request_id;
      start.params = {};
      start.demo_params_error = std::move(error);
    }
  }
  if (auto it = document.find("agent"); it != document.end() && !it->is_null()) {
    if (!it->is_string() || it->get_ref<const std::string&>().empty() ||
        it->get_ref<const std::string&>().size() > max_agent_name_bytes) {
      return with_request_id(run_error(protocol_error_code::unknown_agent,
                                       "agent must be the name of an agent this server offers",
                                       run_id, {}));
    }
    start.agent = it->get_ref<const std::string&>();
  }
  if (auto it = document.find("input"); it != document.end() && !it->is_null()) {
    start.input_json = compact(*it);
  }
  if (auto it = document.find("timeout_ms"); it != document.end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<std::uint64_t>() == 0 ||
        it->get<std::uint64_t>() > limits.max_timeout_ms) {
      return with_request_id(run_error(
          protocol_error_code::invalid_timeout,
          "timeout_ms must be an integer from 1 to " + std::to_string(limits.max_timeout_ms),
          run_id, {}));
    }
    start.timeout_ms = it->get<std::uint64_t>();
  }
  if (auto it = document.find("on_disconnect"); it != document.end() && !it->is_null()) {
    if (it->is_string() && it->get_ref<const std::string&>() == "cancel") {
      start.on_disconnect = disconnect_policy::cancel;
    } else if (it->is_string() && it->get_ref<const std::string&>() == "continue") {
      start.on_disconnect = disconnect_policy::keep_running;
    } else {
      return invalid_option("on_disconnect must be \"cancel\" or \"continue\"");
    }
  }
  if (auto it = document.find("detach_grace_ms"); it != document.end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<std::uint64_t>() > limits.max_detach_grace_ms) {
      return invalid_option("detach_grace_ms must be an integer from 0 to " +
                            std::to_string(limits.max_detach_grace_ms));
    }
    start.detach_grace_ms = it->get<std::uint64_t>();
  }
  return command{std::move(start)};
}

protocol_error binary_frame_error() {
  return make_error(protocol_error_code::unsupported_frame,
                    "Binary frames are not supported: send each command as a JSON text frame");
}

protocol_error run_already_active_error(std::string run_id, std::optional<std::string> request_id) {
  protocol_error error =
      make_error(protocol_error_code::run_already_active, "Run already in progress");
  error.run_id = std::move(run_id);
  error.request_id = std::move(request_id);
  return error;
}

protocol_error run_not_active_error(std::string run_id, std::optional<std::string> request_id) {
  protocol_error error = make_error(protocol_error_code::run_not_active, "No active run to cancel");
  error.run_id = std::move(run_id);
  error.request_id = std::move(request_id);
  return error;
}

protocol_error too_many_runs_error(std::string run_id, std::optional<std::string> request_id,
                                   std::size_t limit) {
  protocol_error error =
      make_error(protocol_error_code::too_many_runs,
                 "Too many active runs on this connection (limit " + std::to_string(limit) + ")");
  error.run_id = std::move(run_id);
  error.request_id = std::move(request_id);
  return error;
}

protocol_error run_error(protocol_error_code code, std::string message, std::string run_id,
                         std::optional<std::string> request_id) {
  protocol_error error = make_error(code, std::move(message));
  error.run_id = std::move(run_id);
  error.request_id = std::move(request_id);
  return error;
}

protocol_error run_not_found_error(std::string run_id, std::optional<std::string> request_id) {
  return run_error(protocol_error_code::run_not_found, "No such run", std::move(run_id),
                   std::move(request_id));
}

protocol_error already_attached_error(std::string run_id, std::optional<std::string> request_id) {
  return run_error(protocol_error_code::already_attached, "This connection already follows the run",
                   std::move(run_id), std::move(request_id));
}

protocol_error not_attached_error(std::string run_id, std::optional<std::string> request_id) {
  return run_error(protocol_error_code::not_attached, "This connection does not follow the run",
                   std::move(run_id), std::move(request_id));
}

protocol_error run_limit_error(std::string run_id, std::optional<std::string> request_id,
                               std::string message) {
  return run_error(protocol_error_code::too_many_runs, std::move(message), std::move(run_id),
                   std::move(request_id));
}

}  // namespace agentws
