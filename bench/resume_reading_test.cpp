// ws-bench's resume scenarios read every event's seq without building a
// document (payload_seq) and check each run's seqs across connections
// (seq_check). No sockets.
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "agentws/events.hpp"
#include "resume_scenarios.hpp"

namespace {

using agentws::bench::payload_seq;
using agentws::bench::seq_check;

constexpr std::string_view sample_ts = "2026-11-25T17:36:10.123456+00:00";

// The server's own bytes, from the builders it uses: run-scoped events
// (with a seq) and the answers that have none.
std::vector<std::string> server_events() {
  std::vector<std::string> out(9);
  agentws::append_run_started(out[0], sample_ts, "run-1", std::string("req-7"));
  agentws::append_run_event(out[1], sample_ts, "run-1", 41, 42, "agent step 41");
  agentws::append_run_done(out[2], sample_ts, "run-1", 43);
  agentws::append_run_done(out[3], sample_ts, "run-3", 2, "the agent failed");
  agentws::append_run_cancelled(out[4], sample_ts, "run-2", 7, agentws::cancel_reason::client,
                                std::string("req-8"), 5);
  agentws::append_run_attached(out[5], sample_ts, "run-1", agentws::run_state_name::running, 42,
                               std::nullopt);
  agentws::append_run_gap(out[6], sample_ts, "run-1", 0, 500);
  agentws::append_runs(
      out[7], sample_ts,
      {agentws::run_listing{"run-1", "demo", agentws::run_state_name::done, 43, false}},
      std::nullopt);
  agentws::append_run_event(out[8], sample_ts, "a\"seq\": 1", 0, 1, "\"seq\": 99");
  return out;
}

// Whenever payload_seq reads a seq, the full parser reads the same.
void check_agrees(const std::string& text) {
  const auto fast = payload_seq(text);
  if (!fast) return;
  const auto full = agentws::parse_event(text);
  if (!full) return;  // not an event: payload_seq does not validate
  INFO(text);
  CHECK(fast == full->seq);
}

}  // namespace

TEST_CASE("payload_seq reads the seq of every event the server's builders write", "[bench]") {
  const auto events = server_events();
  for (const auto& text : events) {
    INFO(text);
    const auto full = agentws::parse_event(text);
    REQUIRE(full);
    CHECK(payload_seq(text) == full->seq);
  }
  CHECK(payload_seq(events[0]) == std::uint64_t{0});
  CHECK(payload_seq(events[1]) == std::uint64_t{42});
  CHECK(payload_seq(events[4]) == std::uint64_t{7});
  // Answers about a run carry no seq of their own: last_seq, first_seq and
  // the listing's seqs are not it.
  CHECK_FALSE(payload_seq(events[5]));
  CHECK_FALSE(payload_seq(events[6]));
  CHECK_FALSE(payload_seq(events[7]));
  // "seq" inside strings is text.
  CHECK(payload_seq(events[8]) == std::uint64_t{1});
}

TEST_CASE("payload_seq finds only the payload's own seq", "[bench]") {
  CHECK(payload_seq(R"({"payload":{"seq":7}})") == std::uint64_t{7});
  CHECK(payload_seq("{ \"payload\" : {\n\"a\": [1, {\"seq\": 2}], \"b\": {\"seq\": 3},"
                    " \"seq\" : 9 } }") == std::uint64_t{9});
  CHECK(payload_seq(R"({"seq": 1, "payload": {"seq": 2}, "x": {"seq": 3}})") == std::uint64_t{2});
  // Up to 19 digits, no overflow; longer ones are left to the full parser.
  CHECK(payload_seq(R"({"payload": {"seq": 9999999999999999999}})") ==
        std::uint64_t{9999999999999999999u});
  const std::vector<std::string> none = {
      R"({"seq": 5, "payload": {}})",
      R"({"payload": {"x": {"seq": 5}}})",
      R"({"payload": {"text": "\"seq\": 5"}})",
      R"({"payload": {"text": "seq", "n": 1}})",
      R"({"payload": [{"seq": 5}]})",
      R"([{"payload": {"seq": 5}}])",
      R"({"other": {"seq": 5}})",
      // Not a non-negative integer, or not one seq.
      R"({"payload": {"seq": -1}})",
      R"({"payload": {"seq": 1.5}})",
      R"({"payload": {"seq": 1e3}})",
      R"({"payload": {"seq": 01}})",
      R"({"payload": {"seq": "5"}})",
      R"({"payload": {"seq": null}})",
      R"({"payload": {"seq": 18446744073709551615}})",
      R"({"payload": {"seq": 1, "seq": 2}})",
      // An escaped key is left to the full parser.
      R"({"payload": {"s\u0065q": 5}})",
      // Cut off, unbalanced, too deep.
      R"({"payload": {"seq": 5})",
      R"({"payload": {"seq": 5}]})",
      R"({"payload": {"seq": 5, "t": "x)",
      std::string(70, '[') + std::string(70, ']'),
      "",
  };
  for (const auto& text : none) {
    INFO(text);
    CHECK_FALSE(payload_seq(text));
  }
}

TEST_CASE("payload_seq never disagrees with the full parser on mangled events", "[bench]") {
  std::mt19937 random(20261207);
  const auto originals = server_events();
  const std::string alphabet = "{}[]\":, \\0123456789-.eEseqpayload";
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

TEST_CASE("seq_check wants each seq once, in order", "[bench]") {
  seq_check fresh;
  CHECK(fresh.see(0) == seq_check::verdict::next);
  CHECK(fresh.see(1) == seq_check::verdict::next);
  CHECK(fresh.see(1) == seq_check::verdict::repeated);
  CHECK(fresh.see(0) == seq_check::verdict::repeated);
  CHECK(fresh.last() == 1);
  CHECK(fresh.see(4) == seq_check::verdict::skipped);
  CHECK(fresh.last() == 4);  // resynchronised: the next fault is a new one
  CHECK(fresh.see(5) == seq_check::verdict::next);

  // Attached after seq 10: the replay starts at 11.
  seq_check attached(10);
  CHECK(attached.see(10) == seq_check::verdict::repeated);
  CHECK(attached.see(11) == seq_check::verdict::next);
  seq_check late(10);
  CHECK(late.see(12) == seq_check::verdict::skipped);
}
