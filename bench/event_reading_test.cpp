// ws-bench's reading path: the envelope fast path agrees with the full parser
// on everything it accepts (and accepts what the server writes), and the
// frame reader takes frames apart the way RFC 6455 puts them together. No
// sockets.
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "agentws/events.hpp"
#include "event_reading.hpp"

namespace {

using agentws::event_kind;
using agentws::bench::envelope_parser;
using agentws::bench::event_reader;
using agentws::bench::event_view;
using agentws::bench::frame_reader;

constexpr std::string_view sample_ts = "2026-11-25T17:36:10.123456+00:00";

// A run_cancelled with the last_step extension (the last step sent), as a
// server that drops a cancelled run's queued events writes it.
constexpr std::string_view cancelled_with_last_step =
    R"({"event_type": "run_cancelled", "ts": "2026-11-25T17:36:10.123456+00:00", )"
    R"("payload": {"run_id": "run-4", "reason": "client", "last_step": 1234}})";

// The server's own bytes, from the builders it uses (and the extension above).
std::vector<std::string> server_events() {
  std::vector<std::string> out(7);
  agentws::append_run_started(out[0], sample_ts, "run-1", std::nullopt);
  agentws::append_run_started(out[1], sample_ts, "run-2", std::string("req-7"));
  agentws::append_run_event(out[2], sample_ts, "run-1", 41, 42, "agent step 41");
  agentws::append_run_done(out[3], sample_ts, "run-1", 43);
  agentws::append_run_done(out[4], sample_ts, "run-3", 1, "the agent failed");
  agentws::append_run_cancelled(out[5], sample_ts, "run-2", 7, agentws::cancel_reason::client,
                                std::string("req-8"));
  out[6] = cancelled_with_last_step;
  return out;
}

// What the full parser reads, in the fast path's terms; nullopt if not an event.
std::optional<event_view> full_parse(std::string_view text,
                                     std::optional<agentws::received_event>& storage) {
  storage = agentws::parse_event(text);
  if (!storage) return std::nullopt;
  event_view view;
  view.kind = storage->kind;
  view.ts = storage->ts;
  view.run_id = storage->run_id;
  view.step = storage->step;
  // payload.last_step read here on its own, not with the reader's helper.
  const auto payload = nlohmann::json::parse(storage->payload_json, nullptr, false);
  if (payload.is_object() && payload.contains("last_step") &&
      payload["last_step"].is_number_unsigned()) {
    view.last_step = payload["last_step"].get<std::uint64_t>();
  }
  return view;
}

// Whenever the fast path accepts `text`, the full parser reads the same.
void check_agrees(std::string_view text) {
  event_view fast;
  if (!envelope_parser::parse(text, fast)) return;
  std::optional<agentws::received_event> storage;
  const auto full = full_parse(text, storage);
  INFO(std::string(text));
  REQUIRE(full);
  CHECK(fast.kind == full->kind);
  CHECK(fast.ts == full->ts);
  CHECK(fast.run_id == full->run_id);
  CHECK(fast.step == full->step);
  CHECK(fast.last_step == full->last_step);
}

bool fast_accepts(std::string_view text) {
  event_view ignored;
  return envelope_parser::parse(text, ignored);
}

// A server frame (unmasked) with the given first byte and payload.
std::string frame(unsigned char first, std::string_view payload) {
  std::string out(1, static_cast<char>(first));
  if (payload.size() < 126) {
    out.push_back(static_cast<char>(payload.size()));
  } else if (payload.size() <= 0xffff) {
    out.push_back(126);
    out.push_back(static_cast<char>(payload.size() >> 8));
    out.push_back(static_cast<char>(payload.size() & 0xff));
  } else {
    out.push_back(127);
    for (int i = 7; i >= 0; --i)
      out.push_back(static_cast<char>((std::uint64_t{payload.size()} >> (8 * i)) & 0xff));
  }
  out.append(payload);
  return out;
}

// Feeds `bytes` to a reader `chunk` bytes at a time; collects the messages.
std::vector<std::string> read_all(frame_reader& reader, std::string_view bytes, std::size_t chunk,
                                  frame_reader::result& last) {
  std::vector<std::string> messages;
  last = frame_reader::result::need_more;
  for (std::size_t at = 0; at < bytes.size(); at += chunk) {
    boost::beast::flat_buffer input;
    const auto piece = bytes.substr(at, chunk);
    auto space = input.prepare(piece.size());
    std::memcpy(space.data(), piece.data(), piece.size());
    input.commit(piece.size());
    reader.adopt(input);
    std::string_view message;
    while ((last = reader.next(message)) == frame_reader::result::message)
      messages.emplace_back(message);
    if (last != frame_reader::result::need_more) break;
  }
  return messages;
}

}  // namespace

TEST_CASE("the fast path reads every event the server's builders write", "[bench]") {
  for (const auto& text : server_events()) {
    INFO(text);
    CHECK(fast_accepts(text));
    check_agrees(text);
  }
  // The view points into the text: keep the events alive while it is read.
  const auto events = server_events();
  event_view view;
  REQUIRE(envelope_parser::parse(events[2], view));
  CHECK(view.kind == event_kind::run_event);
  CHECK(view.ts == sample_ts);
  CHECK(view.run_id == "run-1");
  CHECK(view.step == std::uint64_t{41});
  CHECK_FALSE(view.last_step);
  REQUIRE(envelope_parser::parse(events[6], view));
  CHECK(view.kind == event_kind::run_cancelled);
  CHECK(view.last_step == std::uint64_t{1234});
  event_view without;
  REQUIRE(envelope_parser::parse(events[5], without));
  CHECK_FALSE(without.last_step);  // absent: no step was sent, or an older server
}

TEST_CASE("the full parser's fallback reads last_step too", "[bench]") {
  // An escape sends this one to the full parser.
  const std::string escaped =
      R"({"event_type": "run_cancelled", "ts": "t", "payload": {"run_id": "a\"b", "last_step": 7}})";
  CHECK_FALSE(fast_accepts(escaped));
  event_reader reader;
  event_view view;
  REQUIRE(reader.read(escaped, view));
  CHECK(reader.slow() == 1);
  CHECK(view.kind == event_kind::run_cancelled);
  CHECK(view.run_id == "a\"b");
  CHECK(view.last_step == std::uint64_t{7});
  const std::string negative =
      R"({"event_type": "run_cancelled", "ts": "t", "payload": {"run_id": "a\"b", "last_step": -1}})";
  REQUIRE(reader.read(negative, view));
  CHECK_FALSE(view.last_step);
}

TEST_CASE("the fast path reads the peers' spacing and key order", "[bench]") {
  const std::string node =
      R"({"event_type":"run_event","ts":"2026-11-25T17:36:10.123Z","payload":{"run_id":"r","step":0,"text":"agent step 0"}})";
  const std::string reordered =
      "{ \"payload\" : { \"step\" : 3 , \"run_id\" : \"r\" } ,\n\t\"ts\" : \"t\" , "
      "\"event_type\" : \"run_event\" }\n";
  for (const auto& text : {node, reordered}) {
    CHECK(fast_accepts(text));
    check_agrees(text);
  }
}

TEST_CASE("the fast path declines what it does not fully understand", "[bench]") {
  const std::vector<std::string> declined = {
      // Escapes, UTF-8, nesting: the full parser's job.
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "a\"b", "step": 1}})",
      "{\"event_type\": \"run_event\", \"ts\": \"t\", \"payload\": {\"run_id\": \"caf\xc3\xa9\"}}",
      R"({"event_type": "connected", "ts": "t", "payload": {"limits": {"max_steps": 5}}})",
      // Numbers other than plain non-negative integers.
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "r", "step": -1}})",
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "r", "step": 1.5}})",
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "r", "step": 1e3}})",
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "r", "step": 01}})",
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "r", "step": 18446744073709551615}})",
      // A repeated key: which one counts is the full parser's call.
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "a", "run_id": "b"}})",
      R"({"event_type": "run_event", "event_type": "run_done", "ts": "t", "payload": {}})",
      R"({"event_type": "run_cancelled", "ts": "t", "payload": {"last_step": 1, "last_step": 2}})",
      // Not an envelope, or not JSON at all.
      R"({"event_type": "run_event", "ts": "t", "payload": {}} x)",
      R"({"event_type": 5, "ts": "t", "payload": {}})",
      R"({"ts": "t", "payload": {}})",
      R"({"event_type": "run_event", "ts": "t", "payload": null})",
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "r",}})",
      R"({"event_type": "run_event", "ts": "t", "payload": {"run_id": "r"})",
      "{}",
      "[]",
      "",
  };
  for (const auto& text : declined) {
    INFO(text);
    CHECK_FALSE(fast_accepts(text));
  }
  // The reader falls back: the escaped run_id is read in full.
  event_reader reader;
  event_view view;
  REQUIRE(reader.read(declined[0], view));
  CHECK(view.run_id == "a\"b");
  CHECK(view.step == std::uint64_t{1});
  CHECK(reader.slow() == 1);
  CHECK_FALSE(reader.read("[]", view));
}

TEST_CASE("the fast path never disagrees with the full parser on mangled events", "[bench]") {
  std::mt19937 random(20261125);
  const auto originals = server_events();
  const std::string alphabet = "{}[]\":, \\0123456789-.eE\x01\x7f\xc3tfnrul";
  for (int i = 0; i < 20'000; ++i) {
    std::string text = originals[random() % originals.size()];
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t at = random() % text.size();
      switch (random() % 3) {
        case 0:
          text[at] = alphabet[random() % alphabet.size()];
          break;
        case 1:
          text.erase(at, 1 + random() % 4);
          break;
        default:
          text.insert(at, 1, alphabet[random() % alphabet.size()]);
      }
    }
    check_agrees(text);
  }
}

TEST_CASE("digits and timestamps are read without overflow", "[bench]") {
  std::int64_t value = 0;
  CHECK(agentws::bench::parse_digits("123456789012345678", value));
  CHECK(value == 123456789012345678);
  CHECK_FALSE(agentws::bench::parse_digits("99999999999999999999", value));
  CHECK_FALSE(agentws::bench::parse_digits("12a", value));
  CHECK_FALSE(agentws::bench::parse_digits("", value));
  agentws::bench::ts_parser timestamps;
  CHECK(timestamps.micros("1970-01-01T00:00:01.5Z") == 1'500'000);
  CHECK(timestamps.micros(sample_ts) == timestamps.micros("2026-11-25T18:36:10.123456+01:00"));
  CHECK_FALSE(timestamps.micros("2026-13-25T17:36:10Z"));
}

TEST_CASE("the frame reader joins frames split anywhere", "[bench]") {
  const std::string medium(300, 'm');    // 16-bit length
  const std::string large(70'000, 'l');  // 64-bit length
  const std::string wire = frame(0x81, "one") + frame(0x81, medium) + frame(0x81, large) +
                           frame(0x01, "frag") + frame(0x89, "ping") + frame(0x80, "mented") +
                           frame(0x8a, "pong") + frame(0x81, "");
  for (const std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{4096}, wire.size()}) {
    INFO("chunk " << chunk);
    frame_reader reader;
    frame_reader::result last{};
    const auto messages = read_all(reader, wire, chunk, last);
    CHECK(last == frame_reader::result::need_more);
    REQUIRE(messages.size() == 5);
    CHECK(messages[0] == "one");
    CHECK(messages[1] == medium);
    CHECK(messages[2] == large);
    CHECK(messages[3] == "fragmented");
    CHECK(messages[4].empty());
    CHECK(reader.buffered() == 0);
    // The ping got a masked pong with the same payload.
    const std::string& pong = reader.pongs();
    REQUIRE(pong.size() == 2 + 4 + 4);
    CHECK(static_cast<unsigned char>(pong[0]) == 0x8a);
    CHECK(static_cast<unsigned char>(pong[1]) == (0x80 | 4));
    std::string unmasked;
    for (std::size_t i = 0; i < 4; ++i)
      unmasked.push_back(static_cast<char>(pong[6 + i] ^ pong[2 + i]));
    CHECK(unmasked == "ping");
  }
}

TEST_CASE("the frame reader stops at a close and fails on what a server may not send", "[bench]") {
  frame_reader::result last{};
  {
    frame_reader reader;
    read_all(reader, frame(0x81, "x") + frame(0x88, std::string("\x03\xe9", 2)), 64, last);
    CHECK(last == frame_reader::result::closed);
    CHECK(reader.close_code() == 1001);
  }
  const std::vector<std::string> bad = {
      std::string("\x81\x81\x00\x00\x00\x00x", 7),  // masked
      frame(0xc1, "x"),                             // reserved bit
      frame(0x82, "x"),                             // binary
      frame(0x80, "x"),                             // continuation without a message
      frame(0x01, "a") + frame(0x81, "b"),          // new message inside a fragmented one
      frame(0x09, "x"),                             // fragmented ping
      frame(0x83, "x"),                             // unknown opcode
  };
  for (const auto& wire : bad) {
    frame_reader reader;
    read_all(reader, wire, wire.size(), last);
    CHECK(last == frame_reader::result::failed);
    CHECK_FALSE(reader.why().empty());
  }
}
