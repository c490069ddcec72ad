// Command parsing: one case per row of the contract's error table, the params
// extension, and the JSON edge cases a peer can send. No sockets.
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agentws/protocol.hpp"

namespace Catch {
template <>
struct StringMaker<agentws::protocol_error_code> {
  static std::string convert(agentws::protocol_error_code code) {
    return std::string(agentws::to_string(code));
  }
};
}  // namespace Catch

namespace {

using agentws::cancel_run_command;
using agentws::protocol_error;
using agentws::protocol_error_code;
using agentws::protocol_limits;
using agentws::start_run_command;
using json = nlohmann::json;

const protocol_limits default_limits{};

std::string shorten(std::string_view text) {
  return text.size() <= 200
             ? std::string(text)
             : std::string(text.substr(0, 200)) + "... (" + std::to_string(text.size()) + " bytes)";
}

// A command as the server reads it for the demo agent: a start_run whose
// params the demo agent refuses is refused with that error.
agentws::parse_result parse_for_demo(std::string_view text, const protocol_limits& limits) {
  agentws::parse_result result = agentws::parse_command(text, limits);
  auto* parsed = std::get_if<agentws::command>(&result);
  auto* start = parsed ? std::get_if<start_run_command>(parsed) : nullptr;
  if (start && start->demo_params_error) return *start->demo_params_error;
  return result;
}

protocol_error parse_error(std::string_view text, const protocol_limits& limits = default_limits) {
  INFO("command: " << shorten(text));
  const agentws::parse_result result = parse_for_demo(text, limits);
  REQUIRE(std::holds_alternative<protocol_error>(result));
  return std::get<protocol_error>(result);
}

agentws::command parse_ok(std::string_view text, const protocol_limits& limits = default_limits) {
  INFO("command: " << shorten(text));
  const agentws::parse_result result = parse_for_demo(text, limits);
  if (const auto* error = std::get_if<protocol_error>(&result)) {
    FAIL("refused with " << agentws::to_string(error->code) << ": " << error->message);
  }
  return std::get<agentws::command>(result);
}

start_run_command parse_start(std::string_view text,
                              const protocol_limits& limits = default_limits) {
  const agentws::command command = parse_ok(text, limits);
  REQUIRE(std::holds_alternative<start_run_command>(command));
  return std::get<start_run_command>(command);
}

cancel_run_command parse_cancel(std::string_view text,
                                const protocol_limits& limits = default_limits) {
  const agentws::command command = parse_ok(text, limits);
  REQUIRE(std::holds_alternative<cancel_run_command>(command));
  return std::get<cancel_run_command>(command);
}

// A start_run whose params object is `params_json`, verbatim.
std::string start_with_params(std::string_view params_json) {
  return R"({"command": "start_run", "run_id": "r", "request_id": "q", "params": )" +
         std::string(params_json) + "}";
}

// `depth` nested arrays: "[[[]]]" has depth 3.
std::string nested_arrays(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

}  // namespace

// The run_id of a parsed command ("" for list_runs, which names none).
std::string run_id_of(const agentws::command& parsed) {
  return std::visit(
      [](const auto& c) -> std::string {
        if constexpr (requires { c.run_id; }) {
          return c.run_id;
        } else {
          return {};
        }
      },
      parsed);
}

TEST_CASE("to_string gives the wire name of every error code", "[protocol][errors]") {
  CHECK(to_string(protocol_error_code::invalid_json) == "invalid_json");
  CHECK(to_string(protocol_error_code::invalid_command) == "invalid_command");
  CHECK(to_string(protocol_error_code::missing_run_id) == "missing_run_id");
  CHECK(to_string(protocol_error_code::invalid_run_id) == "invalid_run_id");
  CHECK(to_string(protocol_error_code::invalid_request_id) == "invalid_request_id");
  CHECK(to_string(protocol_error_code::unknown_command) == "unknown_command");
  CHECK(to_string(protocol_error_code::run_already_active) == "run_already_active");
  CHECK(to_string(protocol_error_code::run_not_active) == "run_not_active");
  CHECK(to_string(protocol_error_code::invalid_params) == "invalid_params");
  CHECK(to_string(protocol_error_code::too_many_runs) == "too_many_runs");
  CHECK(to_string(protocol_error_code::unsupported_frame) == "unsupported_frame");
}

TEST_CASE("Error table: start_run/cancel_run without a non-empty string run_id",
          "[protocol][errors][run_id]") {
  const std::string command = GENERATE(std::string("start_run"), std::string("cancel_run"));
  const std::string run_id_member =
      GENERATE(std::string(""),  // missing
               std::string(R"(, "run_id": "")"), std::string(R"(, "run_id": 7)"),
               std::string(R"(, "run_id": null)"), std::string(R"(, "run_id": {"id": "r"})"),
               std::string(R"(, "run_id": ["r"])"), std::string(R"(, "run_id": true)"));
  const std::string text = R"({"command": ")" + command + "\"" + run_id_member + "}";
  CAPTURE(text);

  const protocol_error error = parse_error(text);
  CHECK(error.code == protocol_error_code::missing_run_id);
  CHECK(error.message == "run_id is required");
  CHECK(error.run_id == std::nullopt);
  CHECK(error.request_id == std::nullopt);
  CHECK(error.received_json == std::nullopt);

  SECTION("a valid request_id is carried into the error") {
    const std::string with_request_id =
        R"({"request_id": "req-1", "command": ")" + command + "\"" + run_id_member + "}";
    const protocol_error answered = parse_error(with_request_id);
    CHECK(answered.code == protocol_error_code::missing_run_id);
    CHECK(answered.message == "run_id is required");
    CHECK(answered.request_id == std::optional<std::string>("req-1"));
  }
}

TEST_CASE("Error table: start_run for a run that is still active", "[protocol][errors]") {
  const protocol_error error = agentws::run_already_active_error("run-001", "req-7");
  CHECK(error.code == protocol_error_code::run_already_active);
  CHECK(error.message == "Run already in progress");
  CHECK(error.run_id == std::optional<std::string>("run-001"));
  CHECK(error.request_id == std::optional<std::string>("req-7"));
  CHECK(error.received_json == std::nullopt);

  const protocol_error plain = agentws::run_already_active_error("run-002", std::nullopt);
  CHECK(plain.message == "Run already in progress");
  CHECK(plain.run_id == std::optional<std::string>("run-002"));
  CHECK(plain.request_id == std::nullopt);
}

TEST_CASE("Error table: cancel_run for a run that is not active", "[protocol][errors]") {
  const protocol_error error = agentws::run_not_active_error("run-009", "req-8");
  CHECK(error.code == protocol_error_code::run_not_active);
  CHECK(error.message == "No active run to cancel");
  CHECK(error.run_id == std::optional<std::string>("run-009"));
  CHECK(error.request_id == std::optional<std::string>("req-8"));
  CHECK(error.received_json == std::nullopt);

  const protocol_error plain = agentws::run_not_active_error("run-010", std::nullopt);
  CHECK(plain.message == "No active run to cancel");
  CHECK(plain.request_id == std::nullopt);
}

TEST_CASE("Error table: too many active runs names the limit", "[protocol][errors]") {
  const protocol_error error = agentws::too_many_runs_error("run-257", "req-9", 256);
  CHECK(error.code == protocol_error_code::too_many_runs);
  CHECK(error.message == "Too many active runs on this connection (limit 256)");
  CHECK(error.run_id == std::optional<std::string>("run-257"));
  CHECK(error.request_id == std::optional<std::string>("req-9"));

  const protocol_error other = agentws::too_many_runs_error("x", std::nullopt, 3);
  CHECK(other.message == "Too many active runs on this connection (limit 3)");
  CHECK(other.request_id == std::nullopt);
}

TEST_CASE("Binary frames are answered with unsupported_frame", "[protocol][errors]") {
  const protocol_error error = agentws::binary_frame_error();
  CHECK(error.code == protocol_error_code::unsupported_frame);
  CHECK(error.message == "Binary frames are not supported: send each command as a JSON text frame");
  CHECK(error.run_id == std::nullopt);
  CHECK(error.request_id == std::nullopt);
  CHECK(error.received_json == std::nullopt);
}

TEST_CASE("Error table: unknown or missing command echoes the command object",
          "[protocol][errors][unknown_command]") {
  struct row {
    std::string text;
    std::string received;  // the compact dump: no spaces, keys sorted
  };
  const row r = GENERATE(
      row{R"({"command": "pause_run", "run_id": "r"})", R"({"command":"pause_run","run_id":"r"})"},
      row{R"({"run_id": "r", "command": "nope"})", R"({"command":"nope","run_id":"r"})"},
      row{R"({})", R"({})"}, row{R"({"run_id": "r"})", R"({"run_id":"r"})"},
      row{R"({"command": 1})", R"({"command":1})"},
      row{R"({"command": null, "run_id": "r"})", R"({"command":null,"run_id":"r"})"},
      row{R"({"command": ["start_run"]})", R"({"command":["start_run"]})"},
      row{R"({"command": "START_RUN", "run_id": "r"})", R"({"command":"START_RUN","run_id":"r"})"},
      row{R"({"command": " start_run", "run_id": "r"})",
          R"({"command":" start_run","run_id":"r"})"},
      row{R"({"command": "", "run_id": "r"})", R"({"command":"","run_id":"r"})"},
      row{R"({"command": "x", "n": 1.5, "b": false, "o": {"k": [1, "\u00e9\n"]}})",
          "{\"b\":false,\"command\":\"x\",\"n\":1.5,\"o\":{\"k\":[1,\"\xc3\xa9\\n\"]}}"});
  CAPTURE(r.text);

  const protocol_error error = parse_error(r.text);
  CHECK(error.code == protocol_error_code::unknown_command);
  CHECK(error.message == "Unknown command");
  CHECK(error.received_json == std::optional<std::string>(r.received));
  CHECK(error.run_id == std::nullopt);
  CHECK(error.request_id == std::nullopt);
  // The echo is valid JSON equal to what was sent.
  CHECK(json::parse(*error.received_json) == json::parse(r.text));
}

TEST_CASE("Unknown command carries the request_id and echoes it inside received",
          "[protocol][errors][unknown_command]") {
  const protocol_error error = parse_error(R"({"command": "stop", "request_id": "q-1"})");
  CHECK(error.code == protocol_error_code::unknown_command);
  CHECK(error.request_id == std::optional<std::string>("q-1"));
  CHECK(error.received_json ==
        std::optional<std::string>(R"({"command":"stop","request_id":"q-1"})"));

  // An invalid request_id cannot be carried, but the command is still unknown.
  const protocol_error bad_id = parse_error(R"({"command": "stop", "request_id": 5})");
  CHECK(bad_id.code == protocol_error_code::unknown_command);
  CHECK(bad_id.request_id == std::nullopt);
  CHECK(bad_id.received_json == std::optional<std::string>(R"({"command":"stop","request_id":5})"));
}

TEST_CASE("The echo of an unknown command is bounded to 4096 bytes",
          "[protocol][errors][unknown_command]") {
  // {"command":"nope","pad":"<n>"} dumps to 27 + n bytes.
  auto command_with_pad = [](std::size_t n) {
    return R"({"command": "nope", "pad": ")" + std::string(n, 'p') + "\"}";
  };

  SECTION("a dump of exactly 4096 bytes is echoed whole") {
    const protocol_error error = parse_error(command_with_pad(4096 - 27));
    REQUIRE(error.received_json);
    CHECK(error.received_json->size() == 4096);
    CHECK(*error.received_json ==
          R"({"command":"nope","pad":")" + std::string(4096 - 27, 'p') + "\"}");
  }
  SECTION("one byte more keeps only the command name") {
    const protocol_error error = parse_error(command_with_pad(4096 - 26));
    CHECK(error.code == protocol_error_code::unknown_command);
    CHECK(error.message == "Unknown command");
    CHECK(error.received_json ==
          std::optional<std::string>(R"({"command":"nope","truncated":true})"));
  }
  SECTION("a near-limit message is bounded the same way") {
    const protocol_error error = parse_error(command_with_pad(1000 * 1000));
    CHECK(error.received_json ==
          std::optional<std::string>(R"({"command":"nope","truncated":true})"));
  }
  SECTION("a command name that fits the bound is kept") {
    const std::string name(4096 - 31, 'c');  // {"command":"...","truncated":true}
    const protocol_error error =
        parse_error(R"({"command": ")" + name + R"(", "pad": ")" + std::string(5000, 'p') + "\"}");
    CHECK(error.received_json ==
          std::optional<std::string>(R"({"command":")" + name + R"(","truncated":true})"));
  }
  SECTION("a command name too long for the bound is dropped too") {
    const protocol_error error = parse_error(R"({"command": ")" + std::string(4096 - 30, 'c') +
                                             R"(", "pad": ")" + std::string(5000, 'p') + "\"}");
    CHECK(error.received_json == std::optional<std::string>(R"({"truncated":true})"));
  }
  SECTION("a large command that is not a string is dropped") {
    const protocol_error error = parse_error(R"({"command": [")" + std::string(5000, 'c') + "\"]}");
    CHECK(error.received_json == std::optional<std::string>(R"({"truncated":true})"));
  }
  SECTION("a large object without command") {
    const protocol_error error = parse_error(R"({"pad": ")" + std::string(5000, 'p') + "\"}");
    CHECK(error.code == protocol_error_code::unknown_command);
    CHECK(error.received_json == std::optional<std::string>(R"({"truncated":true})"));
  }
}

TEST_CASE("Text that is not one JSON document is refused as invalid_json",
          "[protocol][errors][json]") {
  const std::string text =
      GENERATE(std::string(""), std::string(" \t\r\n "),
               std::string(R"({"command": "start_run", "run_id": "r")"),
               std::string(R"({"command": "start_run", "run_id": ")"),
               std::string(R"({"command": "start_run", "run_id": "r"} x)"),
               std::string(R"({"command": "start_run", "run_id": "r"},)"),
               std::string(R"({"command":"cancel_run","run_id":"a"})"
                           R"({"command":"cancel_run","run_id":"b"})"),
               std::string(R"({"command": "start_run", "run_id": "r"}])"),
               std::string(R"({command: "start_run", run_id: "r"})"),
               std::string(R"({'command': 'start_run', 'run_id': 'r'})"),
               std::string(R"({"command": "start_run", "run_id": "r",})"),
               std::string(R"({"command": "start_run" "run_id": "r"})"),
               std::string(R"(/* c */ {"command": "cancel_run", "run_id": "r"})"),
               std::string(R"({"command": "cancel_run", "run_id": "\x"})"),
               std::string(R"({"command": "cancel_run", "run_id": "\ud800"})"),
               std::string(R"({"command": "cancel_run", "run_id": "\udc00"})"),
               std::string("{\"command\": \"cancel_run\", \"run_id\": \"\xff\"}"),
               std::string("{\"command\": \"cancel_run\", \"run_id\": \"\xc3\"}"),
               std::string("{\"command\": \"cancel_run\", \"run_id\": \"a\nb\"}"),
               std::string(R"({"command": "start_run", "run_id": "r", "x": NaN})"),
               std::string("nul"), std::string("{"), std::string("}"), std::string("\""));
  CAPTURE(text);

  const protocol_error error = parse_error(text);
  CHECK(error.code == protocol_error_code::invalid_json);
  CHECK(error.message == "Invalid JSON");
  CHECK(error.run_id == std::nullopt);
  CHECK(error.request_id == std::nullopt);
  CHECK(error.received_json == std::nullopt);
}

TEST_CASE("JSON that is not an object is refused as invalid_command", "[protocol][errors][json]") {
  const std::string text = GENERATE(
      std::string("[]"), std::string(R"([{"command": "start_run", "run_id": "r"}])"),
      std::string(R"("start_run")"), std::string("42"), std::string("-1.5e3"), std::string("null"),
      std::string("true"), std::string("false"), std::string("  \"x\"  \n"));
  CAPTURE(text);

  const protocol_error error = parse_error(text);
  CHECK(error.code == protocol_error_code::invalid_command);
  CHECK(error.message == "Command must be a JSON object");
  CHECK(error.run_id == std::nullopt);
  CHECK(error.request_id == std::nullopt);
  CHECK(error.received_json == std::nullopt);
}

TEST_CASE("start_run is parsed with its run_id, request_id and params", "[protocol][start_run]") {
  SECTION("the original module's form") {
    const start_run_command start = parse_start(R"({"command": "start_run", "run_id": "run-001"})");
    CHECK(start.run_id == "run-001");
    CHECK(start.request_id == std::nullopt);
    CHECK(start.params.steps == std::nullopt);
    CHECK(start.params.interval_ms == std::nullopt);
  }
  SECTION("every extension set, keys in any order, any whitespace") {
    const start_run_command start = parse_start(
        "{\n  \"params\" : { \"interval_ms\" : 250 , \"steps\" : 12 },\r\n"
        "\t\"request_id\":\"req-42\", \"run_id\": \"run-xyz\",\"command\":\"start_run\" }  \n");
    CHECK(start.run_id == "run-xyz");
    CHECK(start.request_id == std::optional<std::string>("req-42"));
    CHECK(start.params.steps == std::optional<std::uint64_t>(12));
    CHECK(start.params.interval_ms == std::optional<std::uint64_t>(250));
  }
  SECTION("an empty request_id is still a request_id") {
    const start_run_command start =
        parse_start(R"({"command": "start_run", "run_id": "r", "request_id": ""})");
    CHECK(start.request_id == std::optional<std::string>(""));
  }
  SECTION("unknown top-level members are ignored") {
    const start_run_command start = parse_start(
        R"({"command": "start_run", "run_id": "r", "extra": {"deep": [1, 2, {"x": null}]}, "v": 2})");
    CHECK(start.run_id == "r");
  }
  SECTION("an escaped command name is the same name") {
    const start_run_command start =
        parse_start(R"({"command": "start\u005frun", "run_id": "r\u002d1"})");
    CHECK(start.run_id == "r-1");
  }
}

TEST_CASE("cancel_run is parsed with its run_id and request_id", "[protocol][cancel_run]") {
  const cancel_run_command plain =
      parse_cancel(R"({"command": "cancel_run", "run_id": "run-002"})");
  CHECK(plain.run_id == "run-002");
  CHECK(plain.request_id == std::nullopt);

  const cancel_run_command tagged =
      parse_cancel(R"({"request_id": "c-1", "run_id": "run-002", "command": "cancel_run"})");
  CHECK(tagged.run_id == "run-002");
  CHECK(tagged.request_id == std::optional<std::string>("c-1"));

  // params mean nothing to cancel_run: they are not read, even when malformed.
  const cancel_run_command with_params =
      parse_cancel(R"({"command": "cancel_run", "run_id": "r", "params": "nonsense"})");
  CHECK(with_params.run_id == "r");
}

TEST_CASE("params: each bound is an unsigned integer within the limit", "[protocol][params]") {
  struct row {
    std::string value;                      // JSON text of the parameter
    std::optional<std::uint64_t> accepted;  // nullopt: refused with invalid_params
  };
  const std::string name = GENERATE(std::string("steps"), std::string("interval_ms"));
  const std::uint64_t max =
      name == "steps" ? default_limits.max_steps : default_limits.max_interval_ms;
  REQUIRE(max == (name == "steps" ? 10'000'000u : 3'600'000u));
  const std::string max_text = std::to_string(max);
  const std::string over_text = std::to_string(max + 1);
  const row r = GENERATE_COPY(
      row{"0", 0}, row{"1", 1}, row{max_text, max}, row{over_text, std::nullopt},
      row{"-1", std::nullopt}, row{"-0", std::nullopt}, row{"1.5", std::nullopt},
      row{"3.0", std::nullopt}, row{"3e0", std::nullopt}, row{"1e-400", std::nullopt},
      row{R"("3")", std::nullopt}, row{"true", std::nullopt}, row{"false", std::nullopt},
      row{"null", std::nullopt}, row{"[3]", std::nullopt}, row{R"({"n": 3})", std::nullopt},
      row{"18446744073709551615", std::nullopt}, row{"18446744073709551616", std::nullopt},
      row{"-9223372036854775808", std::nullopt});
  const std::string params = "{\"" + name + "\": " + r.value + "}";
  const std::string text = start_with_params(params);
  CAPTURE(text);

  if (r.accepted) {
    const start_run_command start = parse_start(text);
    CHECK(start.run_id == "r");
    CHECK(start.request_id == std::optional<std::string>("q"));
    if (name == "steps") {
      CHECK(start.params.steps == r.accepted);
      CHECK(start.params.interval_ms == std::nullopt);
    } else {
      CHECK(start.params.interval_ms == r.accepted);
      CHECK(start.params.steps == std::nullopt);
    }
  } else {
    const protocol_error error = parse_error(text);
    CHECK(error.code == protocol_error_code::invalid_params);
    CHECK(error.message == "params." + name + " must be an integer from 0 to " + max_text);
    CHECK(error.run_id == std::optional<std::string>("r"));
    CHECK(error.request_id == std::optional<std::string>("q"));
    CHECK(error.received_json == std::nullopt);
  }
}

TEST_CASE("params: numbers nlohmann cannot represent are invalid JSON",
          "[protocol][params][json]") {
  // A number that overflows a double is a parse error, not a parameter error.
  const std::string value =
      GENERATE(std::string("1e400"), std::string("-1e400"), std::string("1e99999999999999999999"),
               std::string("1" + std::string(400, '0') + ".5"));
  const std::string text = start_with_params("{\"steps\": " + value + "}");
  CAPTURE(text);
  const protocol_error error = parse_error(text);
  CHECK(error.code == protocol_error_code::invalid_json);
  CHECK(error.message == "Invalid JSON");
}

TEST_CASE("params: 2^64 and beyond are refused, never wrapped", "[protocol][params]") {
  // nlohmann reads integers past uint64 as doubles: 2^64 must not become 0.
  for (const char* value :
       {"18446744073709551616", "36893488147419103232", "100000000000000000000000000000"}) {
    CAPTURE(value);
    const protocol_error error =
        parse_error(start_with_params(std::string(R"({"interval_ms": )") + value + "}"));
    CHECK(error.code == protocol_error_code::invalid_params);
    CHECK(error.message == "params.interval_ms must be an integer from 0 to 3600000");
  }
}

TEST_CASE("params: absent, null, empty, non-object and unknown keys", "[protocol][params]") {
  SECTION("null params are the same as no params") {
    const start_run_command start = parse_start(start_with_params("null"));
    CHECK(start.run_id == "r");
    CHECK(start.request_id == std::optional<std::string>("q"));
    CHECK(start.params.steps == std::nullopt);
    CHECK(start.params.interval_ms == std::nullopt);
  }
  SECTION("an empty object sets nothing") {
    const start_run_command start = parse_start(start_with_params("{}"));
    CHECK(start.params.steps == std::nullopt);
    CHECK(start.params.interval_ms == std::nullopt);
  }
  SECTION("unknown keys are ignored, known ones still read") {
    const start_run_command start =
        parse_start(start_with_params(R"({"speed": "fast", "steps": 2, "seed": -1})"));
    CHECK(start.params.steps == std::optional<std::uint64_t>(2));
    CHECK(start.params.interval_ms == std::nullopt);
  }
  SECTION("both at their maximum") {
    const start_run_command start =
        parse_start(start_with_params(R"({"steps": 10000000, "interval_ms": 3600000})"));
    CHECK(start.params.steps == std::optional<std::uint64_t>(10'000'000));
    CHECK(start.params.interval_ms == std::optional<std::uint64_t>(3'600'000));
  }
  SECTION("when both are wrong, steps is reported") {
    const protocol_error error =
        parse_error(start_with_params(R"({"interval_ms": -1, "steps": -1})"));
    CHECK(error.message == "params.steps must be an integer from 0 to 10000000");
  }
  SECTION("a good steps does not hide a bad interval_ms") {
    const protocol_error error =
        parse_error(start_with_params(R"({"steps": 3, "interval_ms": 3600001})"));
    CHECK(error.code == protocol_error_code::invalid_params);
    CHECK(error.message == "params.interval_ms must be an integer from 0 to 3600000");
  }
  SECTION("params that are not an object are refused") {
    const std::string value = GENERATE(std::string("5"), std::string(R"("steps=3")"),
                                       std::string("[]"), std::string("[3, 100]"),
                                       std::string("true"), std::string("false"), std::string("0"));
    CAPTURE(value);
    const protocol_error error = parse_error(start_with_params(value));
    CHECK(error.code == protocol_error_code::invalid_params);
    CHECK(error.message == "params must be an object");
    CHECK(error.run_id == std::optional<std::string>("r"));
    CHECK(error.request_id == std::optional<std::string>("q"));
  }
}

TEST_CASE("params are checked against the limits the caller passes", "[protocol][params]") {
  protocol_limits limits;
  limits.max_steps = 10;
  limits.max_interval_ms = 50;

  const start_run_command start =
      parse_start(start_with_params(R"({"steps": 10, "interval_ms": 50})"), limits);
  CHECK(start.params.steps == std::optional<std::uint64_t>(10));
  CHECK(start.params.interval_ms == std::optional<std::uint64_t>(50));

  const protocol_error steps = parse_error(start_with_params(R"({"steps": 11})"), limits);
  CHECK(steps.code == protocol_error_code::invalid_params);
  CHECK(steps.message == "params.steps must be an integer from 0 to 10");

  const protocol_error interval = parse_error(start_with_params(R"({"interval_ms": 51})"), limits);
  CHECK(interval.message == "params.interval_ms must be an integer from 0 to 50");
}

TEST_CASE("run_id length is limited in bytes", "[protocol][errors][run_id]") {
  const std::string command = GENERATE(std::string("start_run"), std::string("cancel_run"));
  auto text_for = [&](const std::string& run_id) {
    return R"({"command": ")" + command + R"(", "request_id": "q", "run_id": ")" + run_id + "\"}";
  };
  CAPTURE(command);

  SECTION("256 bytes are accepted") {
    const std::string run_id(256, 'a');
    const agentws::command parsed = parse_ok(text_for(run_id));
    if (command == "start_run") {
      CHECK(std::get<start_run_command>(parsed).run_id == run_id);
    } else {
      CHECK(std::get<cancel_run_command>(parsed).run_id == run_id);
    }
  }
  SECTION("257 bytes are refused") {
    const protocol_error error = parse_error(text_for(std::string(257, 'a')));
    CHECK(error.code == protocol_error_code::invalid_run_id);
    CHECK(error.message == "run_id is longer than 256 bytes");
    CHECK(error.request_id == std::optional<std::string>("q"));
  }
  SECTION("bytes, not characters: 128 two-byte characters fit, 129 do not") {
    std::string fits;
    for (int i = 0; i < 128; ++i)
      fits += "\xc3\xa9";  // é
    const agentws::command parsed = parse_ok(text_for(fits));
    CHECK(run_id_of(parsed) == fits);

    const protocol_error error = parse_error(text_for(fits + "\xc3\xa9"));
    CHECK(error.code == protocol_error_code::invalid_run_id);
  }
  SECTION("the length counts decoded bytes, not escapes") {
    // 64 escapes of 6 characters each decode to 64 bytes.
    std::string escaped;
    for (int i = 0; i < 64; ++i)
      escaped += "\\u0041";
    const agentws::command parsed = parse_ok(text_for(escaped));
    CHECK(run_id_of(parsed) == std::string(64, 'A'));
  }
  SECTION("the limit comes from the caller") {
    protocol_limits limits;
    limits.max_run_id_bytes = 8;
    CHECK(run_id_of(parse_ok(text_for("12345678"), limits)) == "12345678");
    const protocol_error error = parse_error(text_for("123456789"), limits);
    CHECK(error.code == protocol_error_code::invalid_run_id);
    CHECK(error.message == "run_id is longer than 8 bytes");
  }
}

TEST_CASE("Control characters and NUL in run_id are accepted and kept byte for byte",
          "[protocol][run_id]") {
  SECTION("escaped control characters") {
    const start_run_command start =
        parse_start(R"({"command": "start_run", "run_id": "a\u0001b\n\t\u001b[31mred\u007f"})");
    CHECK(start.run_id ==
          "a\x01"
          "b\n\t\x1b[31mred\x7f");
  }
  SECTION("an escaped NUL") {
    const cancel_run_command cancel =
        parse_cancel(R"({"command": "cancel_run", "run_id": "x\u0000y"})");
    CHECK(cancel.run_id == std::string("x\0y", 3));
  }
  SECTION("a lone NUL is a non-empty run_id") {
    const start_run_command start = parse_start(R"({"command": "start_run", "run_id": "\u0000"})");
    CHECK(start.run_id == std::string(1, '\0'));
  }
  SECTION("escaped and raw UTF-8, including a surrogate pair") {
    const start_run_command start = parse_start(
        "{\"command\": \"start_run\", \"run_id\": \"\\u00e9\xe6\x97\xa5\\ud83d\\ude00\"}");
    CHECK(start.run_id == "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80");
  }
  SECTION("quotes and backslashes") {
    const start_run_command start =
        parse_start(R"({"command": "start_run", "run_id": "say \"hi\" \\o/"})");
    CHECK(start.run_id == R"(say "hi" \o/)");
  }
}

TEST_CASE("request_id must be a string of at most 256 bytes", "[protocol][errors][request_id]") {
  const std::string command = GENERATE(std::string("start_run"), std::string("cancel_run"));
  const std::string request_id =
      GENERATE(std::string("5"), std::string("-1"), std::string("1.5"), std::string("null"),
               std::string("true"), std::string(R"({"id": "q"})"), std::string(R"(["q"])"),
               "\"" + std::string(257, 'q') + "\"");
  const std::string text =
      R"({"command": ")" + command + R"(", "run_id": "run-1", "request_id": )" + request_id + "}";
  CAPTURE(text);

  const protocol_error error = parse_error(text);
  CHECK(error.code == protocol_error_code::invalid_request_id);
  CHECK(error.message == "request_id must be a string of at most 256 bytes");
  CHECK(error.run_id == std::optional<std::string>("run-1"));
  CHECK(error.request_id == std::nullopt);
  CHECK(error.received_json == std::nullopt);
}

TEST_CASE("request_id: limits and precedence", "[protocol][request_id]") {
  SECTION("256 bytes are accepted") {
    const std::string request_id(256, 'q');
    const cancel_run_command cancel = parse_cancel(
        R"({"command": "cancel_run", "run_id": "r", "request_id": ")" + request_id + "\"}");
    CHECK(cancel.request_id == std::optional<std::string>(request_id));
  }
  SECTION("the limit comes from the caller") {
    protocol_limits limits;
    limits.max_request_id_bytes = 4;
    CHECK(parse_cancel(R"({"command": "cancel_run", "run_id": "r", "request_id": "1234"})", limits)
              .request_id == std::optional<std::string>("1234"));
    const protocol_error error =
        parse_error(R"({"command": "cancel_run", "run_id": "r", "request_id": "12345"})", limits);
    CHECK(error.code == protocol_error_code::invalid_request_id);
    CHECK(error.message == "request_id must be a string of at most 4 bytes");
  }
  SECTION("a missing run_id is reported before a bad request_id") {
    const protocol_error error = parse_error(R"({"command": "start_run", "request_id": 5})");
    CHECK(error.code == protocol_error_code::missing_run_id);
    CHECK(error.request_id == std::nullopt);
  }
  SECTION("an over-long run_id is reported before a bad request_id") {
    const protocol_error error = parse_error(
        R"({"command": "start_run", "request_id": 5, "run_id": ")" + std::string(300, 'r') + "\"}");
    CHECK(error.code == protocol_error_code::invalid_run_id);
  }
  SECTION("a bad request_id is reported before bad params") {
    const protocol_error error = parse_error(
        R"({"command": "start_run", "run_id": "r", "request_id": 5, "params": {"steps": -1}})");
    CHECK(error.code == protocol_error_code::invalid_request_id);
  }
}

TEST_CASE("Nesting depth: 64 levels are parsed, 65 are refused before parsing",
          "[protocol][json][depth]") {
  // The command object itself is level 1.
  auto start_with_nested = [](std::size_t inner_depth) {
    return R"({"command": "start_run", "run_id": "r", "extra": )" + nested_arrays(inner_depth) +
           "}";
  };
  const std::string deep_message = "Invalid JSON: nested deeper than 64 levels";

  SECTION("exactly 64 levels") {
    CHECK(parse_start(start_with_nested(63)).run_id == "r");
  }
  SECTION("65 levels") {
    const protocol_error error = parse_error(start_with_nested(64));
    CHECK(error.code == protocol_error_code::invalid_json);
    CHECK(error.message == deep_message);
    CHECK(error.run_id == std::nullopt);
    CHECK(error.received_json == std::nullopt);
  }
  SECTION("objects count like arrays") {
    std::string objects;
    for (int i = 0; i < 63; ++i)
      objects += R"({"k": )";
    objects += "1" + std::string(63, '}');
    const std::string at_limit = R"({"command": "start_run", "run_id": "r", "x": )" + objects + "}";
    CHECK(parse_start(at_limit).run_id == "r");

    const std::string over =
        R"({"command": "start_run", "run_id": "r", "x": {"k": )" + objects + "}}";
    CHECK(parse_error(over).message == deep_message);
  }
  SECTION("a deep unknown command is refused as too deep, not echoed") {
    const protocol_error error = parse_error(R"({"command": "x", "a": )" + nested_arrays(80) + "}");
    CHECK(error.code == protocol_error_code::invalid_json);
    CHECK(error.message == deep_message);
    CHECK(error.received_json == std::nullopt);
  }
  SECTION("a bare array nested 65 deep is refused for depth, not for its type") {
    CHECK(parse_error(nested_arrays(64)).code == protocol_error_code::invalid_command);
    const protocol_error error = parse_error(nested_arrays(65));
    CHECK(error.code == protocol_error_code::invalid_json);
    CHECK(error.message == deep_message);
  }
  SECTION("the limit comes from the caller") {
    protocol_limits limits;
    limits.max_json_depth = 2;
    CHECK(parse_start(start_with_params(R"({"steps": 1})"), limits).params.steps ==
          std::optional<std::uint64_t>(1));
    const protocol_error error = parse_error(start_with_params(R"({"steps": [1]})"), limits);
    CHECK(error.code == protocol_error_code::invalid_json);
    CHECK(error.message == "Invalid JSON: nested deeper than 2 levels");
  }
}

TEST_CASE("100000 nested brackets are refused quickly and without recursion",
          "[protocol][json][depth]") {
  const std::string text =
      GENERATE(std::string(100'000, '['), std::string(100'000, '{'), nested_arrays(100'000),
               R"({"command": "start_run", "run_id": "r", "x": )" + std::string(100'000, '['));
  const auto started = std::chrono::steady_clock::now();
  const protocol_error error = parse_error(text);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  CHECK(error.code == protocol_error_code::invalid_json);
  CHECK(error.message == "Invalid JSON: nested deeper than 64 levels");
  // A linear scan of 200 KB; generous for sanitizer builds.
  CHECK(elapsed < std::chrono::seconds(1));
}

TEST_CASE("json_nesting_exceeds counts only brackets outside strings", "[protocol][json][depth]") {
  using agentws::json_nesting_exceeds;
  CHECK_FALSE(json_nesting_exceeds("", 0));
  CHECK_FALSE(json_nesting_exceeds("42", 0));
  CHECK(json_nesting_exceeds("[]", 0));
  CHECK_FALSE(json_nesting_exceeds("[]", 1));
  CHECK_FALSE(json_nesting_exceeds("[][][]{}", 1));
  CHECK(json_nesting_exceeds("[[]]", 1));
  CHECK_FALSE(json_nesting_exceeds("[[]]", 2));
  CHECK(json_nesting_exceeds("{\"a\": [{}]}", 2));
  CHECK_FALSE(json_nesting_exceeds("{\"a\": [{}]}", 3));

  SECTION("brackets inside strings do not count") {
    CHECK_FALSE(json_nesting_exceeds(R"({"run_id": "[[[[{{{{"})", 1));
    CHECK_FALSE(json_nesting_exceeds("\"" + std::string(100'000, '[') + "\"", 0));
    CHECK_FALSE(json_nesting_exceeds(R"(["]]]]"])", 1));
  }
  SECTION("escaped quotes do not end a string") {
    CHECK_FALSE(json_nesting_exceeds(R"({"a": "\"[[[[\""})", 1));
    CHECK_FALSE(json_nesting_exceeds(R"({"a": "\\\"[[["})", 1));
  }
  SECTION("an escaped backslash does end a string") {
    CHECK(json_nesting_exceeds(R"({"a": "\\", "b": [[]]})", 2));
    CHECK_FALSE(json_nesting_exceeds(R"({"a": "\\", "b": [[]]})", 3));
  }
  SECTION("invalid JSON is tolerated") {
    CHECK_FALSE(json_nesting_exceeds("]]]]]]", 0));
    CHECK_FALSE(json_nesting_exceeds("]]]][[", 2));
    CHECK(json_nesting_exceeds("]]]][[[", 2));
    CHECK_FALSE(json_nesting_exceeds("[[[\"", 3));  // an unterminated string
    CHECK(json_nesting_exceeds("[[[\"", 2));
    CHECK_FALSE(json_nesting_exceeds("\"[[[[", 0));
  }
  SECTION("parse_command uses the same rule") {
    const std::string in_string =
        R"({"command": "start_run", "run_id": ")" + std::string(200, '[') + R"(", "x": 1})";
    CHECK(parse_start(in_string).run_id == std::string(200, '['));
    const std::string bracket_run_id =
        "{\"command\": \"start_run\", \"run_id\": \"" + std::string(100'000, '{') + "\"}";
    const protocol_error error = parse_error(bracket_run_id);
    CHECK(error.code == protocol_error_code::invalid_run_id);  // too long, but not too deep
  }
}

TEST_CASE("Duplicate keys are refused as invalid_json naming the key", "[protocol][json]") {
  // I-JSON (RFC 7493): a proxy or logger reading the first of two keys must
  // never see a different command than the server acts on.
  auto check_duplicate = [](std::string_view text, std::string_view message) {
    const protocol_error error = parse_error(text);
    CHECK(error.code == protocol_error_code::invalid_json);
    CHECK(error.message == message);
    // Nothing of the refused command is echoed back besides the key.
    CHECK_FALSE(error.run_id);
    CHECK_FALSE(error.request_id);
    CHECK_FALSE(error.received_json);
  };
  SECTION("at the top level") {
    check_duplicate(R"({"command": "cancel_run", "command": "start_run", "run_id": "r"})",
                    R"(Invalid JSON: duplicate key "command")");
    check_duplicate(R"({"command": "start_run", "run_id": "first", "run_id": "second"})",
                    R"(Invalid JSON: duplicate key "run_id")");
    check_duplicate(
        R"({"command": "start_run", "run_id": "r", "request_id": "1", "request_id": 2})",
        R"(Invalid JSON: duplicate key "request_id")");
    check_duplicate(R"({"command": "start_run", "run_id": "r", "x": 1, "x": 1})",
                    R"(Invalid JSON: duplicate key "x")");
  }
  SECTION("nested in params or in an ignored key") {
    check_duplicate(
        R"({"command": "start_run", "run_id": "r", "params": {"steps": 1, "steps": 2}})",
        R"(Invalid JSON: duplicate key "steps")");
    check_duplicate(
        R"({"command": "start_run", "run_id": "r", "params": {"steps": -1}, "params": {"steps": 4}})",
        R"(Invalid JSON: duplicate key "params")");
    check_duplicate(R"({"command": "start_run", "run_id": "r", "x": [1, {"a": {"b": 1, "b": 2}}]})",
                    R"(Invalid JSON: duplicate key "b")");
  }
  SECTION("escapes that decode to the same key are the same key") {
    check_duplicate(R"({"command": "start_run", "run_id": "r", "a": 1, "\u0061": 2})",
                    R"(Invalid JSON: duplicate key "a")");
    check_duplicate(R"({"\u0063ommand": "cancel_run", "command": "start_run", "run_id": "r"})",
                    R"(Invalid JSON: duplicate key "command")");
    check_duplicate(
        R"({"command": "start_run", "run_id": "r", "\ud83d\ude00": 1, "\ud83d\ude00": 2})",
        "Invalid JSON: duplicate key \"\xf0\x9f\x98\x80\"");
  }
  SECTION("the key is shown escaped, and a long one is cut at a character boundary") {
    check_duplicate(R"({"a\"b\u0001": 1, "a\"b\u0001": 2})",
                    R"(Invalid JSON: duplicate key "a\"b\u0001")");
    const std::string long_key = std::string(63, 'k') + "\xc3\xa9" + std::string(100, 'k');
    check_duplicate(R"({")" + long_key + R"(": 1, ")" + long_key + R"(": 2})",
                    R"(Invalid JSON: duplicate key ")" + std::string(63, 'k') + R"("...)");
  }
  SECTION("the first problem in the text decides") {
    // A duplicate before a syntax error is reported as the duplicate...
    check_duplicate(R"({"a": 1, "a": 2, )", R"(Invalid JSON: duplicate key "a")");
    // ...a syntax error before it as plain invalid JSON.
    CHECK(parse_error(R"({"a": x, "a": 2})").message == "Invalid JSON");
    // Not a command at all, but still not I-JSON.
    check_duplicate(R"([{"a": 1, "a": 2}])", R"(Invalid JSON: duplicate key "a")");
  }
  SECTION("the same key in sibling or nested objects is fine") {
    const start_run_command start = parse_start(
        R"({"command": "start_run", "run_id": "r", "params": {"steps": 2, "x": {"steps": 3}},)"
        R"( "a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}], "run": {"run_id": "s"}})");
    CHECK(start.run_id == "r");
    CHECK(start.params.steps == std::optional<std::uint64_t>(2));
    CHECK(parse_cancel(R"({"command": "cancel_run", "run_id": "r", "A": 1, "a": 2, "a ": 3})")
              .run_id == "r");
  }
}

TEST_CASE("An object with 100000 keys and a valid command parses", "[protocol][json]") {
  std::string text = R"({"command": "start_run", "run_id": "wide")";
  text.reserve(2'000'000);
  for (int i = 0; i < 100'000; ++i)
    text += ", \"k" + std::to_string(i) + "\": " + std::to_string(i);
  text += R"(, "params": {"steps": 3}})";
  const start_run_command start = parse_start(text);
  CHECK(start.run_id == "wide");
  CHECK(start.params.steps == std::optional<std::uint64_t>(3));
}

TEST_CASE("run_params_override::apply_to takes each set field over the default",
          "[protocol][params]") {
  const agentws::run_params defaults{7, 300};

  const agentws::run_params none = agentws::run_params_override{}.apply_to(defaults);
  CHECK(none.steps == 7);
  CHECK(none.interval_ms == 300);

  const agentws::run_params steps_only =
      agentws::run_params_override{2, std::nullopt}.apply_to(defaults);
  CHECK(steps_only.steps == 2);
  CHECK(steps_only.interval_ms == 300);

  const agentws::run_params interval_only =
      agentws::run_params_override{std::nullopt, 25}.apply_to(defaults);
  CHECK(interval_only.steps == 7);
  CHECK(interval_only.interval_ms == 25);

  // 0 is a value, not "unset": interval_ms 0 streams as fast as possible.
  const agentws::run_params zeros = agentws::run_params_override{0, 0}.apply_to(defaults);
  CHECK(zeros.steps == 0);
  CHECK(zeros.interval_ms == 0);

  // The built-in defaults reproduce the original module: 5 steps, 1 s apart.
  const agentws::run_params original = agentws::run_params_override{}.apply_to({});
  CHECK(original.steps == 5);
  CHECK(original.interval_ms == 1000);

  SECTION("from a parsed command") {
    const start_run_command start = parse_start(start_with_params(R"({"interval_ms": 0})"));
    const agentws::run_params applied = start.params.apply_to(defaults);
    CHECK(applied.steps == 7);
    CHECK(applied.interval_ms == 0);
  }
}

TEST_CASE("Default limits are the documented ones", "[protocol][limits]") {
  CHECK(agentws::protocol_version == 2);
  CHECK(default_limits.max_message_bytes == 1024u * 1024u);
  CHECK(default_limits.max_run_id_bytes == 256);
  CHECK(default_limits.max_request_id_bytes == 256);
  CHECK(default_limits.max_active_runs == 256);
  CHECK(default_limits.max_steps == 10'000'000u);
  CHECK(default_limits.max_interval_ms == 3'600'000u);
  CHECK(default_limits.max_json_depth == 64);
}

// nlohmann's lexer reads a NUL byte as the end of input, so parse_command
// must refuse such frames itself rather than ignore what follows.
TEST_CASE("A NUL byte after the object makes the frame invalid JSON", "[protocol][errors][json]") {
  const std::string text = std::string(R"({"command": "cancel_run", "run_id": "a"})") +
                           std::string(1, '\0') + R"({"command": "start_run", "run_id": "b"})";
  const agentws::parse_result result = agentws::parse_command(text, default_limits);
  REQUIRE(std::holds_alternative<protocol_error>(result));
  CHECK(std::get<protocol_error>(result).code == protocol_error_code::invalid_json);
}

// The echo holds the command name escaped, up to six bytes per raw byte:
// the bound applies to what is sent.
TEST_CASE("The echo of an unknown command never exceeds 4096 bytes",
          "[protocol][errors][unknown_command]") {
  std::string name;
  for (int i = 0; i < 2048; ++i)
    name += "\\u0001";
  const protocol_error error =
      parse_error(R"({"command": ")" + name + R"(", "pad": ")" + std::string(5000, 'p') + "\"}");
  REQUIRE(error.received_json);
  CHECK(error.received_json->size() <= 4096);
}
