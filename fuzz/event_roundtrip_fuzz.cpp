// Fuzzes the event side of the protocol both ways.
//
// 1. append_json_string: for any valid UTF-8 text, the literal it writes
//    parses back (nlohmann) to exactly that text, and holds no raw control
//    character. (Invalid UTF-8 is passed through as is, as documented; it is
//    not checked here.)
// 2. The event builders: with fuzzed run_id, text, request_id, failure and
//    step, every event parses as JSON and parse_event reads back the same
//    fields.
// 3. parse_event on the raw bytes: never crashes; what it returns is
//    consistent (kind from event_type, payload_json is JSON).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agentws/events.hpp"
#include "agentws/protocol.hpp"

namespace {

using json = nlohmann::json;

#define FUZZ_CHECK(condition)                                                            \
  do {                                                                                   \
    if (!(condition)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t extra = 0;
    std::uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
      code = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
      code = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= text.size()) return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    if ((extra == 2 && code < 0x800) || (extra == 3 && code < 0x10000) || code > 0x10ffff ||
        (code >= 0xd800 && code <= 0xdfff)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

void check_string_roundtrip(const std::string& text) {
  std::string out = "x";  // appends, never rewrites what is there
  agentws::append_json_string(out, text);
  FUZZ_CHECK(out[0] == 'x');
  const std::string_view literal = std::string_view(out).substr(1);
  for (char c : literal)
    FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20);
  if (!is_valid_utf8(text)) return;
  const json parsed = json::parse(literal, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(parsed.is_string());
  FUZZ_CHECK(parsed.get_ref<const std::string&>() == text);
}

// Builds `text` with a builder, parses it both ways, checks the common fields.
agentws::received_event read_back(const std::string& text, std::string_view event_type,
                                  const std::string& run_id) {
  const json event = json::parse(text, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(event.is_object());
  FUZZ_CHECK(event.at("event_type") == event_type);
  std::optional<agentws::received_event> read = agentws::parse_event(text);
  FUZZ_CHECK(read.has_value());
  FUZZ_CHECK(read->event_type == event_type);
  FUZZ_CHECK(read->kind == agentws::event_kind_from(event_type));
  FUZZ_CHECK(read->run_id == run_id);
  FUZZ_CHECK(json::parse(read->payload_json, nullptr, false) == event.at("payload"));
  return *read;
}

// Formats a time within about 71 years of 1970 and compares with gmtime_r.
std::string check_timestamp(std::int64_t micros) {
  const std::string ts = agentws::timestamp_formatter().format(
      agentws::wall_clock::time_point(std::chrono::microseconds(micros)));
  FUZZ_CHECK(ts.size() == agentws::timestamp_formatter::size);
  std::int64_t second = micros / 1'000'000;
  std::int64_t fraction = micros % 1'000'000;
  if (fraction < 0) {
    fraction += 1'000'000;
    second -= 1;
  }
  const std::time_t when = static_cast<std::time_t>(second);
  std::tm parts{};
  FUZZ_CHECK(gmtime_r(&when, &parts) != nullptr);
  char expected[64];
  std::snprintf(expected, sizeof expected, "%04d-%02d-%02dT%02d:%02d:%02d.%06lld+00:00",
                parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min,
                parts.tm_sec, static_cast<long long>(fraction));
  if (ts != expected) {
    std::fprintf(stderr, "timestamp %lld us: got %s, expected %s\n", static_cast<long long>(micros),
                 ts.c_str(), expected);
    std::abort();
  }
  return ts;
}

void check_builders(FuzzedDataProvider& input) {
  const std::string run_id = input.ConsumeRandomLengthString(300);
  const std::string text = input.ConsumeRandomLengthString(300);
  const std::string request_id = input.ConsumeRandomLengthString(300);
  const std::string failure = input.ConsumeRandomLengthString(300);
  const std::uint64_t step = input.ConsumeIntegral<std::uint64_t>();
  const bool with_request_id = input.ConsumeBool();
  if (!is_valid_utf8(run_id) || !is_valid_utf8(text) || !is_valid_utf8(request_id) ||
      !is_valid_utf8(failure)) {
    return;
  }
  const std::optional<std::string> maybe_request_id =
      with_request_id ? std::optional<std::string>(request_id) : std::nullopt;
  const std::string ts = check_timestamp(static_cast<std::int64_t>(step) >> 12);

  std::string out;
  agentws::append_run_started(out, ts, run_id, maybe_request_id);
  agentws::received_event read = read_back(out, "run_started", run_id);
  FUZZ_CHECK(read.ts == ts);
  FUZZ_CHECK(read.request_id == (with_request_id ? request_id : ""));

  out.clear();
  agentws::append_run_event(out, ts, run_id, step, step / 2, text);
  read = read_back(out, "run_event", run_id);
  FUZZ_CHECK(read.step == step);
  FUZZ_CHECK(read.seq == step / 2);
  FUZZ_CHECK(read.text == text);

  out.clear();
  agentws::append_run_done(out, ts, run_id, step, failure);
  read = read_back(out, "run_done", run_id);
  FUZZ_CHECK(read.failure == failure);

  out.clear();
  agentws::append_run_cancelled(out, ts, run_id, step, agentws::cancel_reason::shutdown,
                                maybe_request_id);
  read = read_back(out, "run_cancelled", run_id);
  FUZZ_CHECK(read.reason == "shutdown");

  agentws::protocol_error error;
  error.code = static_cast<agentws::protocol_error_code>(step % agentws::protocol_error_code_count);
  error.message = text.empty() ? "m" : text;
  error.run_id = run_id;
  error.request_id = maybe_request_id;
  out.clear();
  agentws::append_error(out, ts, error);
  read = read_back(out, "error", run_id);
  FUZZ_CHECK(read.message == error.message);
  FUZZ_CHECK(read.code == agentws::to_string(error.code));

  agentws::protocol_limits limits;
  limits.max_message_bytes = step;
  agentws::server_identity identity{run_id, text};
  out.clear();
  agentws::append_connected(out, ts, identity, limits, {step, step});
  read = read_back(out, "connected", "");
  FUZZ_CHECK(read.message == "Connected");
  const json connected = json::parse(out);
  FUZZ_CHECK(connected["payload"]["limits"]["max_message_bytes"] == step);

  // The client's command builders produce what the server's parser accepts.
  if (!run_id.empty() && run_id.size() <= limits.max_run_id_bytes &&
      request_id.size() <= limits.max_request_id_bytes) {
    const agentws::run_params_override params{
        step % 2 ? std::optional<std::uint64_t>(step % 1000) : std::nullopt, std::nullopt};
    const agentws::parse_result start =
        agentws::parse_command(agentws::make_start_run(run_id, params, request_id), limits);
    const auto* command = std::get_if<agentws::command>(&start);
    FUZZ_CHECK(command);
    const auto* start_run = std::get_if<agentws::start_run_command>(command);
    FUZZ_CHECK(start_run);
    FUZZ_CHECK(start_run->run_id == run_id);
    FUZZ_CHECK(start_run->params.steps == params.steps);
    FUZZ_CHECK(start_run->request_id.value_or("") == request_id);
    const agentws::parse_result cancel =
        agentws::parse_command(agentws::make_cancel_run(run_id, request_id), limits);
    FUZZ_CHECK(std::holds_alternative<agentws::command>(cancel));
  }
}

void check_parse_event(std::string_view text) {
  std::optional<agentws::received_event> read = agentws::parse_event(text);
  if (!read) return;
  FUZZ_CHECK(read->kind == agentws::event_kind_from(read->event_type));
  if (!read->payload_json.empty()) {
    const json payload = json::parse(read->payload_json, nullptr, false);
    FUZZ_CHECK(payload.is_object());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  check_string_roundtrip(std::string(bytes));
  check_parse_event(bytes);
  FuzzedDataProvider input(data, size);
  check_builders(input);
  return 0;
}
