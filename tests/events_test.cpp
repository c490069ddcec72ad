// Events: timestamps, JSON string escaping, the exact bytes of every builder,
// and reading events back on the client side. No sockets.
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agentws/events.hpp"
#include "agentws/protocol.hpp"

namespace {

using agentws::event_kind;
using agentws::received_event;
using agentws::wall_clock;
using json = nlohmann::json;

constexpr std::string_view sample_ts = "2026-11-25T17:36:10.123456+00:00";

wall_clock::time_point at_micros(std::int64_t micros) {
  return wall_clock::time_point(std::chrono::microseconds(micros));
}

// An independent reference: the C library's calendar, not std::chrono's.
std::string reference_timestamp(std::int64_t micros) {
  std::int64_t seconds = micros / 1'000'000;
  std::int64_t fraction = micros % 1'000'000;
  if (fraction < 0) {
    fraction += 1'000'000;
    seconds -= 1;
  }
  const auto when = static_cast<std::time_t>(seconds);
  std::tm fields{};
  gmtime_r(&when, &fields);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &fields);
  char digits[32];
  std::snprintf(digits, sizeof digits, ".%06lld+00:00", static_cast<long long>(fraction));
  return std::string(date) + digits;
}

std::string formatted(std::int64_t micros) {
  agentws::timestamp_formatter formatter;
  return formatter.format(at_micros(micros));
}

std::string json_string(std::string_view text) {
  std::string out;
  agentws::append_json_string(out, text);
  return out;
}

received_event parsed(std::string_view text) {
  INFO("event: " << text);
  std::optional<received_event> event = agentws::parse_event(text);
  REQUIRE(event);
  return *event;
}

json parsed_json(std::string_view text) {
  INFO("event: " << text);
  json document = json::parse(text, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(document.is_discarded());
  REQUIRE(document.is_object());
  return document;
}

// "dddd-dd-ddTdd:dd:dd.dddddd+00:00", d a digit.
bool matches_timestamp_shape(std::string_view text) {
  constexpr std::string_view shape = "dddd-dd-ddTdd:dd:dd.dddddd+00:00";
  if (text.size() != shape.size()) return false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const bool ok = shape[i] == 'd' ? text[i] >= '0' && text[i] <= '9' : text[i] == shape[i];
    if (!ok) return false;
  }
  return true;
}

std::string nested_arrays(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

}  // namespace

TEST_CASE("timestamp_formatter prints known instants like Python's isoformat()",
          "[protocol][timestamp]") {
  struct row {
    std::int64_t micros;
    std::string expected;
  };
  const row r = GENERATE(row{0, "1970-01-01T00:00:00.000000+00:00"},
                         row{1, "1970-01-01T00:00:00.000001+00:00"},
                         row{1'795'628'170'123'456, "2026-11-25T17:36:10.123456+00:00"},
                         row{1'767'225'600'000'000, "2026-01-01T00:00:00.000000+00:00"},
                         row{1'767'225'599'999'999, "2025-12-31T23:59:59.999999+00:00"},
                         row{1'709'210'096'000'001, "2024-02-29T12:34:56.000001+00:00"},
                         row{1'709'164'800'000'000, "2024-02-29T00:00:00.000000+00:00"},
                         row{1'709'251'199'999'999, "2024-02-29T23:59:59.999999+00:00"},
                         row{1'709'251'200'000'000, "2024-03-01T00:00:00.000000+00:00"},
                         row{951'782'400'000'000, "2000-02-29T00:00:00.000000+00:00"},
                         row{4'107'542'400'000'000, "2100-03-01T00:00:00.000000+00:00"},
                         row{-1, "1969-12-31T23:59:59.999999+00:00"},
                         row{-999'999, "1969-12-31T23:59:59.000001+00:00"},
                         row{-1'000'000, "1969-12-31T23:59:59.000000+00:00"},
                         row{-1'000'001, "1969-12-31T23:59:58.999999+00:00"},
                         row{-14'182'940'000'000, "1969-07-20T20:17:40.000000+00:00"});
  CAPTURE(r.micros);
  CHECK(formatted(r.micros) == r.expected);
  CHECK(reference_timestamp(r.micros) == r.expected);  // the reference agrees
}

TEST_CASE("timestamp_formatter agrees with std::chrono's calendar", "[protocol][timestamp]") {
  using namespace std::chrono;
  agentws::timestamp_formatter formatter;
  const auto leap_day_end = sys_days{year{2024} / February / 29} + hours{23} + minutes{59} +
                            seconds{59} + microseconds{999'999};
  CHECK(formatter.format(leap_day_end) == "2024-02-29T23:59:59.999999+00:00");
  const auto sample = sys_days{year{2026} / November / 25} + hours{17} + minutes{36} + seconds{10} +
                      microseconds{123'456};
  CHECK(formatter.format(sample) == sample_ts);
  // Sub-microsecond digits are cut off, as Python has none.
  CHECK(formatter.format(sample + nanoseconds{999}) == sample_ts);
}

TEST_CASE("timestamp_formatter's cache is right when the second moves back and forth",
          "[protocol][timestamp]") {
  agentws::timestamp_formatter formatter;
  const std::int64_t base = 1'795'628'170'000'000;  // 2026-11-25T17:36:10
  const std::vector<std::int64_t> sequence{base + 123'456,
                                           base + 999'999,
                                           base + 1'000'000,
                                           base + 5,
                                           base + 1'000'001,
                                           base - 1,
                                           base,
                                           base + 86'400'000'000,
                                           base + 7,
                                           -1,
                                           0,
                                           -1,
                                           base + 1'000'000,
                                           base + 86'400'000'000,
                                           base + 86'400'000'000 + 1};
  for (const std::int64_t micros : sequence) {
    CAPTURE(micros);
    CHECK(formatter.format(at_micros(micros)) == formatted(micros));
    CHECK(formatter.format(at_micros(micros)) == reference_timestamp(micros));
  }
  CHECK(formatter.format(at_micros(base + 999'999)) == "2026-11-25T17:36:10.999999+00:00");
  CHECK(formatter.format(at_micros(base + 1'000'000)) == "2026-11-25T17:36:11.000000+00:00");
  CHECK(formatter.format(at_micros(base + 999'999)) == "2026-11-25T17:36:10.999999+00:00");
  CHECK(formatter.format(at_micros(base - 1)) == "2026-11-25T17:36:09.999999+00:00");
}

TEST_CASE("timestamp_formatter matches the C library over 1900-2200", "[protocol][timestamp]") {
  agentws::timestamp_formatter formatter;  // shared: the cache sees random jumps
  std::mt19937_64 random(20261125);
  std::uniform_int_distribution<std::int64_t> micros_between(-2'208'988'800'000'000,
                                                             7'258'118'400'000'000);
  std::uniform_int_distribution<std::int64_t> small_step(-2'000'000, 2'000'000);
  std::int64_t micros = 0;
  for (int i = 0; i < 20'000; ++i) {
    micros = i % 2 == 0 ? micros_between(random) : micros + small_step(random);
    const std::string expected = reference_timestamp(micros);
    const std::string actual = formatter.format(at_micros(micros));
    if (actual != expected) {
      CAPTURE(micros);
      CHECK(actual == expected);
    }
  }
  SUCCEED("20000 instants agree");
}

TEST_CASE("timestamp_formatter appends exactly 32 bytes", "[protocol][timestamp]") {
  STATIC_REQUIRE(agentws::timestamp_formatter::size == 32);
  CHECK(sample_ts.size() == agentws::timestamp_formatter::size);

  agentws::timestamp_formatter formatter;
  std::string out = "ts=";
  formatter.append(out, at_micros(1'795'628'170'123'456));
  CHECK(out == "ts=2026-11-25T17:36:10.123456+00:00");
  formatter.append(out, at_micros(0));
  CHECK(out == "ts=2026-11-25T17:36:10.123456+00:001970-01-01T00:00:00.000000+00:00");

  const std::string now = formatter.format(wall_clock::now());
  CHECK(now.size() == 32);
  CHECK(matches_timestamp_shape(now));
  CHECK(matches_timestamp_shape(sample_ts));
  CHECK_FALSE(matches_timestamp_shape("2026-11-25T17:36:10.123456Z"));
  CHECK_FALSE(matches_timestamp_shape("2026-11-25 17:36:10.123456+00:00"));
}

TEST_CASE("append_json_string escapes what JSON requires and nothing else",
          "[protocol][escaping]") {
  CHECK(json_string("") == R"("")");
  CHECK(json_string("run-001") == R"("run-001")");
  CHECK(json_string(R"(say "hi")") == R"("say \"hi\"")");
  CHECK(json_string(R"(a\b)") == R"("a\\b")");
  CHECK(json_string("\n\r\t\b\f") == R"("\n\r\t\b\f")");
  CHECK(json_string(std::string_view("\0", 1)) == R"("\u0000")");
  CHECK(json_string("\x01") == R"("\u0001")");
  CHECK(json_string("\x1b[31m") == R"("\u001b[31m")");
  CHECK(json_string("\x0b") == R"("\u000b")");
  CHECK(json_string("\x1f") == R"("\u001f")");
  CHECK(json_string("\x7f") == "\"\x7f\"");  // DEL needs no escape in JSON
  CHECK(json_string("/") == R"("/")");
  CHECK(json_string("\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80") ==
        "\"\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\"");
  CHECK(json_string("a\"b\\c\nd\x02") == R"("a\"b\\c\nd\u0002")");

  SECTION("it appends to what is already in the buffer") {
    std::string out = "x:";
    agentws::append_json_string(out, "\"");
    agentws::append_json_string(out, "y");
    CHECK(out == R"(x:"\"""y")");
  }
  SECTION("every byte below 0x20 round-trips through a JSON parser") {
    std::string all;
    for (int c = 0; c < 0x20; ++c)
      all.push_back(static_cast<char>(c));
    all += "\"\\ tail";
    const std::string text = json_string(all);
    for (const char c : text)
      CHECK(static_cast<unsigned char>(c) >= 0x20);
    const json back = json::parse(text, nullptr, false);
    REQUIRE(back.is_string());
    CHECK(back.get<std::string>() == all);
  }
}

TEST_CASE("Event builders write the contract's exact bytes", "[protocol][events]") {
  std::string out;
  SECTION("run_event") {
    agentws::append_run_event(out, "T", "r", 3, 4, "agent step 3");
    CHECK(
        out ==
        R"({"event_type": "run_event", "ts": "T", "payload": {"run_id": "r", "step": 3, "seq": 4, "text": "agent step 3"}})");
  }
  SECTION("run_event with the largest step and a text to escape") {
    agentws::append_run_event(out, sample_ts, "run-001", UINT64_MAX, 7, "a \"b\"\n");
    CHECK(
        out ==
        R"({"event_type": "run_event", "ts": "2026-11-25T17:36:10.123456+00:00", )"
        R"("payload": {"run_id": "run-001", "step": 18446744073709551615, "seq": 7, "text": "a \"b\"\n"}})");
  }
  SECTION("run_started") {
    agentws::append_run_started(out, "T", "run-001", std::nullopt);
    CHECK(
        out ==
        R"({"event_type": "run_started", "ts": "T", "payload": {"run_id": "run-001", "seq": 0}})");
  }
  SECTION("run_started with a request_id") {
    agentws::append_run_started(out, "T", "run-001", "req-1");
    CHECK(
        out ==
        R"({"event_type": "run_started", "ts": "T", "payload": {"run_id": "run-001", "seq": 0, "request_id": "req-1"}})");
  }
  SECTION("run_done") {
    agentws::append_run_done(out, "T", "run-001", 6);
    CHECK(out ==
          R"({"event_type": "run_done", "ts": "T", "payload": {"run_id": "run-001", "seq": 6}})");
  }
  SECTION("run_done after a failure") {
    agentws::append_run_done(out, "T", "run-001", 6, "agent crashed: \"oops\"");
    CHECK(out == R"({"event_type": "run_done", "ts": "T", "payload": {"run_id": "run-001", )"
                 R"("seq": 6, "ok": false, "error": "agent crashed: \"oops\""}})");
  }
  SECTION("run_cancelled by the client") {
    agentws::append_run_cancelled(out, "T", "run-002", 3, agentws::cancel_reason::client,
                                  std::nullopt);
    CHECK(
        out ==
        R"({"event_type": "run_cancelled", "ts": "T", "payload": {"run_id": "run-002", "seq": 3, "reason": "client"}})");
  }
  SECTION("run_cancelled by shutdown") {
    agentws::append_run_cancelled(out, "T", "run-002", 3, agentws::cancel_reason::shutdown,
                                  std::nullopt);
    CHECK(
        out ==
        R"({"event_type": "run_cancelled", "ts": "T", "payload": {"run_id": "run-002", "seq": 3, "reason": "shutdown"}})");
  }
  SECTION("run_cancelled with a request_id") {
    agentws::append_run_cancelled(out, "T", "run-002", 3, agentws::cancel_reason::client, "c-9");
    CHECK(out == R"({"event_type": "run_cancelled", "ts": "T", "payload": {"run_id": "run-002", )"
                 R"("seq": 3, "reason": "client", "request_id": "c-9"}})");
  }
  SECTION("run_cancelled with the last step the connection was sent") {
    agentws::append_run_cancelled(out, "T", "run-002", 3, agentws::cancel_reason::client, "c-9",
                                  std::uint64_t{41});
    CHECK(out == R"({"event_type": "run_cancelled", "ts": "T", "payload": {"run_id": "run-002", )"
                 R"("seq": 3, "reason": "client", "request_id": "c-9", "last_step": 41}})");
  }
  SECTION("error with only a message and code") {
    agentws::append_error(out, "T", agentws::binary_frame_error());
    CHECK(
        out ==
        R"({"event_type": "error", "ts": "T", "payload": {"message": "Binary frames are )"
        R"(not supported: send each command as a JSON text frame", "code": "unsupported_frame"}})");
  }
  SECTION("error with run_id and request_id") {
    agentws::append_error(out, "T", agentws::run_not_active_error("run-002", "c-1"));
    CHECK(out ==
          R"({"event_type": "error", "ts": "T", "payload": {"message": "No active run to )"
          R"(cancel", "code": "run_not_active", "run_id": "run-002", "request_id": "c-1"}})");
  }
  SECTION("error with received and request_id") {
    agentws::protocol_error error;
    error.code = agentws::protocol_error_code::unknown_command;
    error.message = "Unknown command";
    error.received_json = R"({"command":"x","request_id":"q"})";
    error.request_id = "q";
    agentws::append_error(out, "T", error);
    CHECK(out == R"({"event_type": "error", "ts": "T", "payload": {"message": "Unknown command", )"
                 R"("code": "unknown_command", "received": {"command":"x","request_id":"q"}, )"
                 R"("request_id": "q"}})");
  }
  SECTION("error with every field, in order") {
    agentws::protocol_error error;
    error.code = agentws::protocol_error_code::invalid_params;
    error.message = "m";
    error.run_id = "r";
    error.received_json = "{}";
    error.request_id = "q";
    agentws::append_error(out, "T", error);
    CHECK(out == R"({"event_type": "error", "ts": "T", "payload": {"message": "m", "code": )"
                 R"("invalid_params", "run_id": "r", "received": {}, "request_id": "q"}})");
  }
  SECTION("connected") {
    agentws::append_connected(out, "T", agentws::server_identity{"agentws", "0.1.0"},
                              agentws::protocol_limits{}, agentws::run_params{});
    CHECK(out == R"({"event_type": "connected", "ts": "T", "payload": {"message": "Connected", )"
                 R"("protocol": 2, "server": "agentws/0.1.0", "features": ["params", )"
                 R"("request_id"], "limits": {"max_message_bytes": )"
                 R"(1048576, "max_run_id_bytes": 256, "max_active_runs": 256, "max_steps": )"
                 R"(10000000, "max_interval_ms": 3600000, "max_json_depth": 64, )"
                 R"("history_events": 1024, "history_bytes": 65536, "retention_ms": 600000, )"
                 R"("max_runs_per_owner": 1024, "max_detached_runs": 10000, )"
                 R"("max_detach_grace_ms": 3600000}, "defaults": )"
                 R"({"steps": 5, "interval_ms": 1000}}})");
  }
  SECTION("connected without a version, with other limits and defaults") {
    agentws::protocol_limits limits;
    limits.max_message_bytes = 1;
    limits.max_run_id_bytes = 2;
    limits.max_active_runs = 3;
    limits.max_steps = 4;
    limits.max_interval_ms = 5;
    limits.max_json_depth = 6;
    agentws::append_connected(out, "T", agentws::server_identity{"srv", ""}, limits,
                              agentws::run_params{7, 0});
    CHECK(out == R"({"event_type": "connected", "ts": "T", "payload": {"message": "Connected", )"
                 R"("protocol": 2, "server": "srv", "features": ["params", "request_id"], )"
                 R"("limits": {"max_message_bytes": 1, )"
                 R"("max_run_id_bytes": 2, "max_active_runs": 3, "max_steps": 4, )"
                 R"("max_interval_ms": 5, "max_json_depth": 6, "history_events": 1024, )"
                 R"("history_bytes": 65536, "retention_ms": 600000, "max_runs_per_owner": )"
                 R"(1024, "max_detached_runs": 10000, "max_detach_grace_ms": 3600000}, )"
                 R"("defaults": {"steps": 7, "interval_ms": 0}}})");
  }
}

TEST_CASE("Builders append to the caller's buffer", "[protocol][events]") {
  std::string out = "previous\n";
  agentws::append_run_started(out, "T", "a", std::nullopt);
  agentws::append_run_done(out, "T", "a", 1);
  CHECK(out ==
        "previous\n"
        R"({"event_type": "run_started", "ts": "T", "payload": {"run_id": "a", "seq": 0}})"
        R"({"event_type": "run_done", "ts": "T", "payload": {"run_id": "a", "seq": 1}})");
}

TEST_CASE("event_writer writes fields in call order", "[protocol][events]") {
  std::string out;
  agentws::event_writer(out, "custom", "T")
      .field("s", "text")
      .field("n", std::uint64_t{42})
      .field("i", 7)
      .field("yes", true)
      .field("no", false)
      .raw_field("raw", R"([1,{"a":null}])")
      .optional_field("present", std::optional<std::string>("p"))
      .finish();
  CHECK(out == R"({"event_type": "custom", "ts": "T", "payload": {"s": "text", "n": 42, "i": 7, )"
               R"("yes": true, "no": false, "raw": [1,{"a":null}], "present": "p"}})");

  std::string empty;
  agentws::event_writer(empty, "bare", "T").finish();
  CHECK(empty == R"({"event_type": "bare", "ts": "T", "payload": {}})");
}

TEST_CASE("Every built event is valid JSON and reads back with parse_event",
          "[protocol][events][parse_event]") {
  agentws::timestamp_formatter formatter;
  const std::string ts = formatter.format(at_micros(1'795'628'170'123'456));
  REQUIRE(ts == sample_ts);
  std::string out;

  SECTION("connected") {
    agentws::append_connected(out, ts, agentws::server_identity{"agentws", "0.1.0"},
                              agentws::protocol_limits{}, agentws::run_params{});
    const json document = parsed_json(out);
    CHECK(document["event_type"] == "connected");
    CHECK(document["ts"] == ts);
    const json& payload = document["payload"];
    CHECK(payload["message"] == "Connected");
    CHECK(payload["protocol"] == 2);
    CHECK(payload["features"] == json{"params", "request_id"});
    CHECK(payload["server"] == "agentws/0.1.0");
    CHECK(payload["limits"]["max_message_bytes"] == 1048576);
    CHECK(payload["limits"]["max_json_depth"] == 64);
    CHECK(payload["defaults"] == json{{"steps", 5}, {"interval_ms", 1000}});

    const received_event event = parsed(out);
    CHECK(event.kind == event_kind::connected);
    CHECK(event.event_type == "connected");
    CHECK(event.ts == ts);
    CHECK(event.message == "Connected");
    CHECK(event.run_id.empty());
    CHECK(json::parse(event.payload_json) == payload);
  }
  SECTION("run_started") {
    agentws::append_run_started(out, ts, "run-001", "req-1");
    const json document = parsed_json(out);
    CHECK(document["payload"] == json{{"run_id", "run-001"}, {"seq", 0}, {"request_id", "req-1"}});

    const received_event event = parsed(out);
    CHECK(event.kind == event_kind::run_started);
    CHECK(event.event_type == "run_started");
    CHECK(event.ts == ts);
    CHECK(event.run_id == "run-001");
    CHECK(event.request_id == "req-1");
    CHECK(event.step == std::nullopt);
    CHECK(event.seq == std::optional<std::uint64_t>(0));
    CHECK(event.payload_json == R"({"request_id":"req-1","run_id":"run-001","seq":0})");
  }
  SECTION("run_event") {
    agentws::append_run_event(out, ts, "run-001", 3, 4, "agent step 3");
    const json document = parsed_json(out);
    CHECK(document["payload"]["step"].is_number_unsigned());

    const received_event event = parsed(out);
    CHECK(event.kind == event_kind::run_event);
    CHECK(event.run_id == "run-001");
    CHECK(event.step == std::optional<std::uint64_t>(3));
    CHECK(event.seq == std::optional<std::uint64_t>(4));
    CHECK(event.text == "agent step 3");
    CHECK(event.failure.empty());
    CHECK(event.payload_json == R"({"run_id":"run-001","seq":4,"step":3,"text":"agent step 3"})");
  }
  SECTION("run_done") {
    agentws::append_run_done(out, ts, "run-001", 5);
    const received_event event = parsed(out);
    CHECK(event.kind == event_kind::run_done);
    CHECK(event.run_id == "run-001");
    CHECK(event.failure.empty());
  }
  SECTION("run_done after a failure") {
    agentws::append_run_done(out, ts, "run-001", 5, "boom");
    const json document = parsed_json(out);
    CHECK(document["payload"]["ok"] == false);
    CHECK(document["payload"]["error"] == "boom");

    const received_event event = parsed(out);
    CHECK(event.kind == event_kind::run_done);
    CHECK(event.failure == "boom");
  }
  SECTION("run_cancelled") {
    agentws::append_run_cancelled(out, ts, "run-002", 3, agentws::cancel_reason::shutdown, "c-2");
    const received_event event = parsed(out);
    CHECK(event.kind == event_kind::run_cancelled);
    CHECK(event.run_id == "run-002");
    CHECK(event.reason == "shutdown");
    CHECK(event.request_id == "c-2");
  }
  SECTION("error answering an unknown command") {
    const std::string command = R"({"command": "nope", "request_id": "q", "n": [1, {"a": "\n"}]})";
    const auto result = agentws::parse_command(command, agentws::protocol_limits{});
    REQUIRE(std::holds_alternative<agentws::protocol_error>(result));
    agentws::append_error(out, ts, std::get<agentws::protocol_error>(result));
    const json document = parsed_json(out);
    CHECK(document["payload"]["received"] == json::parse(command));

    const received_event event = parsed(out);
    CHECK(event.kind == event_kind::error);
    CHECK(event.message == "Unknown command");
    CHECK(event.code == "unknown_command");
    CHECK(event.request_id == "q");
    CHECK(event.run_id.empty());
  }
  SECTION("error naming a run") {
    agentws::append_error(out, ts, agentws::run_already_active_error("run-001", std::nullopt));
    const received_event event = parsed(out);
    CHECK(event.kind == event_kind::error);
    CHECK(event.message == "Run already in progress");
    CHECK(event.code == "run_already_active");
    CHECK(event.run_id == "run-001");
    CHECK(event.request_id.empty());
  }
  SECTION("a run_id with control characters and NUL survives the round trip") {
    const auto result = agentws::parse_command(
        R"({"command": "start_run", "run_id": "a\u0000b\u001b[2J\"\\\u00e9"})",
        agentws::protocol_limits{});
    REQUIRE(std::holds_alternative<agentws::command>(result));
    const std::string run_id =
        std::get<agentws::start_run_command>(std::get<agentws::command>(result)).run_id;
    REQUIRE(run_id == std::string("a\0b\x1b[2J\"\\\xc3\xa9", 11));
    agentws::append_run_started(out, ts, run_id, std::nullopt);
    CHECK(parsed(out).run_id == run_id);
    CHECK(parsed_json(out)["payload"]["run_id"] == run_id);
  }
}

// A command nested as deep as accepted is not echoed whole: the echo sits
// two levels down in the event, and a reader with the same depth limit must
// still read the answer.
TEST_CASE("An error answering a command of the largest accepted depth reads back",
          "[protocol][events][parse_event][depth]") {
  const std::string command = R"({"command": "nope", "x": )" + nested_arrays(63) + "}";
  const auto result = agentws::parse_command(command, agentws::protocol_limits{});
  REQUIRE(std::holds_alternative<agentws::protocol_error>(result));
  const auto& error = std::get<agentws::protocol_error>(result);
  REQUIRE(error.code == agentws::protocol_error_code::unknown_command);
  std::string out;
  agentws::append_error(out, "T", error);
  CHECK(parsed_json(out)["payload"]["received"] ==
        json::parse(R"({"command": "nope", "truncated": true})"));
  const std::optional<received_event> event = agentws::parse_event(out);
  CHECK(event.has_value());
}

TEST_CASE("parse_event refuses what is not an event envelope", "[protocol][parse_event]") {
  const std::string text = GENERATE(
      std::string(""), std::string("not json"), std::string(R"({"event_type": "run_done")"),
      std::string(R"({"event_type": "run_done"} trailing)"),
      std::string(R"([{"event_type": "run_done"}])"), std::string(R"("run_done")"),
      std::string("42"), std::string("null"), std::string("{}"),
      std::string(R"({"payload": {"run_id": "r"}})"),
      std::string(R"({"event_type": 5, "payload": {}})"), std::string(R"({"event_type": null})"),
      std::string(R"({"type": "run_done"})"),
      std::string(R"({"event_type": "run_done", "x": )") + nested_arrays(64) + "}",
      std::string(100'000, '['));
  CAPTURE(text.substr(0, 100));
  CHECK_FALSE(agentws::parse_event(text).has_value());
}

TEST_CASE("parse_event accepts nesting up to 64 levels", "[protocol][parse_event][depth]") {
  const std::string text = R"({"event_type": "run_done", "x": )" + nested_arrays(63) +
                           R"(, "payload": {"run_id": "r"}})";
  const received_event event = parsed(text);
  CHECK(event.kind == event_kind::run_done);
  CHECK(event.run_id == "r");
}

TEST_CASE("parse_event reads unknown types and odd payloads without failing",
          "[protocol][parse_event]") {
  SECTION("an unknown event type keeps its name and run_id") {
    const received_event event = parsed(
        R"({"event_type": "run_progress", "ts": "T", "payload": {"run_id": "r", "pct": 50}})");
    CHECK(event.kind == event_kind::unknown);
    CHECK(event.event_type == "run_progress");
    CHECK(event.run_id == "r");
    CHECK(event.ts == "T");
    CHECK(event.payload_json == R"({"pct":50,"run_id":"r"})");
  }
  SECTION("names are case-sensitive") {
    CHECK(parsed(R"({"event_type": "Run_Done", "payload": {"run_id": "r"}})").kind ==
          event_kind::unknown);
  }
  SECTION("no payload, no ts") {
    const received_event event = parsed(R"({"event_type": "run_done"})");
    CHECK(event.kind == event_kind::run_done);
    CHECK(event.ts.empty());
    CHECK(event.run_id.empty());
    CHECK(event.payload_json.empty());
  }
  SECTION("a payload that is not an object is ignored") {
    const received_event event = parsed(R"({"event_type": "run_done", "payload": ["r"]})");
    CHECK(event.kind == event_kind::run_done);
    CHECK(event.run_id.empty());
  }
  SECTION("fields of the wrong type stay empty") {
    const received_event event = parsed(
        R"({"event_type": "run_event", "ts": 5, "payload": {"run_id": 1, "step": -1, "text": null}})");
    CHECK(event.kind == event_kind::run_event);
    CHECK(event.ts.empty());
    CHECK(event.run_id.empty());
    CHECK(event.step == std::nullopt);
    CHECK(event.text.empty());
  }
  SECTION("a step that is not an unsigned integer is absent") {
    for (const char* step : {"1.5", "\"1\"", "-1", "true", "18446744073709551616"}) {
      CAPTURE(step);
      const received_event event =
          parsed(std::string(R"({"event_type": "run_event", "payload": {"run_id": "r", "step": )") +
                 step + "}}");
      CHECK(event.step == std::nullopt);
    }
  }
  SECTION("ok: false without error reads as a failure") {
    const received_event event =
        parsed(R"({"event_type": "run_done", "payload": {"run_id": "r", "ok": false}})");
    CHECK(event.failure == "failed");
  }
  SECTION("ok: true, or ok that is not a bool, is not a failure") {
    CHECK(parsed(
              R"({"event_type": "run_done", "payload": {"run_id": "r", "ok": true, "error": "x"}})")
              .failure.empty());
    CHECK(parsed(R"({"event_type": "run_done", "payload": {"run_id": "r", "ok": 0}})")
              .failure.empty());
  }
  SECTION("the original module's events, without any extension") {
    const received_event cancelled = parsed(
        R"({"event_type": "run_cancelled", "ts": "2026-11-25T17:36:12.5+00:00", "payload": {"run_id": "run-002"}})");
    CHECK(cancelled.kind == event_kind::run_cancelled);
    CHECK(cancelled.reason.empty());
    CHECK(cancelled.ts == "2026-11-25T17:36:12.5+00:00");
    const received_event error = parsed(
        R"({"event_type": "error", "ts": "T", "payload": {"message": "Unknown command", "received": {"command": "x"}}})");
    CHECK(error.kind == event_kind::error);
    CHECK(error.message == "Unknown command");
    CHECK(error.code.empty());
  }
}

TEST_CASE("make_start_run and make_cancel_run write the exact command JSON",
          "[protocol][commands]") {
  CHECK(agentws::make_start_run("run-001") == R"({"command":"start_run","run_id":"run-001"})");
  CHECK(agentws::make_cancel_run("run-002") == R"({"command":"cancel_run","run_id":"run-002"})");
  CHECK(agentws::make_cancel_run("run-002", "c-1") ==
        R"({"command":"cancel_run","request_id":"c-1","run_id":"run-002"})");
  CHECK(agentws::make_start_run("r", {}, "q") ==
        R"({"command":"start_run","request_id":"q","run_id":"r"})");
  CHECK(
      agentws::make_start_run("r", {3, 250}, "q") ==
      R"({"command":"start_run","params":{"interval_ms":250,"steps":3},"request_id":"q","run_id":"r"})");
  CHECK(agentws::make_start_run("r", {3, std::nullopt}) ==
        R"({"command":"start_run","params":{"steps":3},"run_id":"r"})");
  CHECK(agentws::make_start_run("r", {std::nullopt, 0}) ==
        R"({"command":"start_run","params":{"interval_ms":0},"run_id":"r"})");
  CHECK(agentws::make_start_run("r", {0, 0}) ==
        R"({"command":"start_run","params":{"interval_ms":0,"steps":0},"run_id":"r"})");
  CHECK(agentws::make_start_run("a\"b\n") == R"({"command":"start_run","run_id":"a\"b\n"})");
}

TEST_CASE("Commands made by the client parse back to the same command", "[protocol][commands]") {
  const agentws::protocol_limits limits{};
  const std::string run_id = GENERATE(std::string("run-001"), std::string("a\"b\\c\n\x01"),
                                      std::string("\xc3\xa9\xe6\x97\xa5"), std::string(256, 'x'));
  const agentws::run_params_override params{10'000'000, 0};

  const auto start = agentws::parse_command(agentws::make_start_run(run_id, params, "q"), limits);
  REQUIRE(std::holds_alternative<agentws::command>(start));
  const auto& start_command =
      std::get<agentws::start_run_command>(std::get<agentws::command>(start));
  CHECK(start_command.run_id == run_id);
  CHECK(start_command.request_id == std::optional<std::string>("q"));
  CHECK(start_command.params.steps == std::optional<std::uint64_t>(10'000'000));
  CHECK(start_command.params.interval_ms == std::optional<std::uint64_t>(0));

  const auto cancel = agentws::parse_command(agentws::make_cancel_run(run_id), limits);
  REQUIRE(std::holds_alternative<agentws::command>(cancel));
  const auto& cancel_command =
      std::get<agentws::cancel_run_command>(std::get<agentws::command>(cancel));
  CHECK(cancel_command.run_id == run_id);
  CHECK(cancel_command.request_id == std::nullopt);
}

TEST_CASE("event_kind_from and is_terminal", "[protocol][events]") {
  CHECK(agentws::event_kind_from("connected") == event_kind::connected);
  CHECK(agentws::event_kind_from("run_started") == event_kind::run_started);
  CHECK(agentws::event_kind_from("run_event") == event_kind::run_event);
  CHECK(agentws::event_kind_from("run_done") == event_kind::run_done);
  CHECK(agentws::event_kind_from("run_cancelled") == event_kind::run_cancelled);
  CHECK(agentws::event_kind_from("error") == event_kind::error);
  CHECK(agentws::event_kind_from("") == event_kind::unknown);
  CHECK(agentws::event_kind_from("run_done ") == event_kind::unknown);
  CHECK(agentws::event_kind_from("RUN_DONE") == event_kind::unknown);
  CHECK(agentws::event_kind_from("run_canceled") == event_kind::unknown);

  CHECK(agentws::is_terminal(event_kind::run_done));
  CHECK(agentws::is_terminal(event_kind::run_cancelled));
  CHECK_FALSE(agentws::is_terminal(event_kind::connected));
  CHECK_FALSE(agentws::is_terminal(event_kind::run_started));
  CHECK_FALSE(agentws::is_terminal(event_kind::run_event));
  CHECK_FALSE(agentws::is_terminal(event_kind::error));
  CHECK_FALSE(agentws::is_terminal(event_kind::unknown));
}
