// The client's scenario logic: planned cancels, following runs from their
// events, and printing what a peer sent without letting it drive the
// terminal. Pure functions only; run_scenario() is covered by loopback tests.
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentws/events.hpp"
#include "agentws/protocol.hpp"
#include "agentws/scenario.hpp"

namespace {

using agentws::planned_cancel;
using agentws::received_event;
using agentws::run_outcome;
using agentws::run_tracker;
using namespace std::chrono_literals;

constexpr std::string_view ts = "2026-11-25T17:36:10.123456+00:00";

// Events are built by the server's builders and read by the client's parser,
// as they would travel on the wire.
received_event from_wire(const std::string& text) {
  INFO("event: " << text);
  std::optional<received_event> event = agentws::parse_event(text);
  REQUIRE(event);
  return *event;
}

received_event connected() {
  std::string out;
  agentws::append_connected(out, ts, agentws::server_identity{"agentws", "0.1.0"},
                            agentws::protocol_limits{}, agentws::run_params{});
  return from_wire(out);
}

received_event started(std::string_view run_id, std::optional<std::string> request_id = {}) {
  std::string out;
  agentws::append_run_started(out, ts, run_id, request_id);
  return from_wire(out);
}

received_event step(std::string_view run_id, std::uint64_t n) {
  std::string out;
  agentws::append_run_event(out, ts, run_id, n, n + 1, "agent step " + std::to_string(n));
  return from_wire(out);
}

received_event done(std::string_view run_id, std::string_view failure = {}) {
  std::string out;
  agentws::append_run_done(out, ts, run_id, 1000, failure);
  return from_wire(out);
}

received_event cancelled(std::string_view run_id,
                         agentws::cancel_reason reason = agentws::cancel_reason::client) {
  std::string out;
  agentws::append_run_cancelled(out, ts, run_id, 1000, reason, std::nullopt);
  return from_wire(out);
}

received_event error(const agentws::protocol_error& refused) {
  std::string out;
  agentws::append_error(out, ts, refused);
  return from_wire(out);
}

const agentws::run_report& report_of(const run_tracker& tracker, std::string_view run_id) {
  for (const auto& report : tracker.reports()) {
    if (report.run_id == run_id) return report;
  }
  FAIL("no report for " << run_id);
  throw;  // unreachable: FAIL throws
}

// The original module's scenario: run-001 runs to the end, run-002 is
// cancelled after 2.5 s, between its steps 2 and 3.
std::vector<received_event> original_scenario_events() {
  return {connected(),        started("run-001"),   started("run-002"), step("run-001", 0),
          step("run-002", 0), step("run-001", 1),   step("run-002", 1), step("run-001", 2),
          step("run-002", 2), cancelled("run-002"), step("run-001", 3), step("run-001", 4),
          done("run-001")};
}

}  // namespace

TEST_CASE("parse_planned_cancel reads run@seconds", "[protocol][scenario][cancel]") {
  const std::optional<planned_cancel> cancel = agentws::parse_planned_cancel("run-002@2.5");
  REQUIRE(cancel);
  CHECK(cancel->run_id == "run-002");
  CHECK(cancel->after == 2500ms);

  SECTION("the last @ separates the time, so run_ids may contain @") {
    const auto at = agentws::parse_planned_cancel("a@b@1");
    REQUIRE(at);
    CHECK(at->run_id == "a@b");
    CHECK(at->after == 1000ms);
  }
  SECTION("integers, zero, fractions and exponents") {
    CHECK(agentws::parse_planned_cancel("r@0")->after == 0ms);
    CHECK(agentws::parse_planned_cancel("r@3")->after == 3000ms);
    CHECK(agentws::parse_planned_cancel("r@0.001")->after == 1ms);
    CHECK(agentws::parse_planned_cancel("r@0.0004")->after == 0ms);  // rounded to whole ms
    CHECK(agentws::parse_planned_cancel("r@1.2346")->after == 1235ms);
    CHECK(agentws::parse_planned_cancel("r@1e1")->after == 10'000ms);
    CHECK(agentws::parse_planned_cancel("r@31536000")->after == 31'536'000'000ms);  // 365 days
  }
  SECTION("malformed text is refused") {
    const std::string text = GENERATE(
        std::string(""), std::string("run-002"), std::string("x@"), std::string("@1"),
        std::string("@"), std::string("x@-1"), std::string("x@-0.5"), std::string("x@abc"),
        std::string("x@nan"), std::string("x@NaN"), std::string("x@inf"), std::string("x@1s"),
        std::string("x@1.5.5"), std::string("x@ 1"), std::string("x@1 "), std::string("x@+1"),
        std::string("x@1,5"), std::string("x@31536000.5"), std::string("x@1e300"));
    CAPTURE(text);
    CHECK(agentws::parse_planned_cancel(text) == std::nullopt);
  }
}

TEST_CASE("The default scenario is the original module's", "[protocol][scenario]") {
  const agentws::scenario plan;
  CHECK(plan.url == "ws://localhost:8000/ws");
  CHECK(plan.runs == std::vector<std::string>{"run-001", "run-002"});
  REQUIRE(plan.cancels.size() == 1);
  CHECK(plan.cancels[0].run_id == "run-002");
  CHECK(plan.cancels[0].after == 2500ms);
  CHECK_FALSE(plan.params.steps);
  CHECK_FALSE(plan.params.interval_ms);
}

TEST_CASE("to_string names every run outcome", "[protocol][scenario]") {
  CHECK(agentws::to_string(run_outcome::not_started) == "not started");
  CHECK(agentws::to_string(run_outcome::running) == "running");
  CHECK(agentws::to_string(run_outcome::done) == "done");
  CHECK(agentws::to_string(run_outcome::failed) == "failed");
  CHECK(agentws::to_string(run_outcome::cancelled) == "cancelled");
  CHECK(agentws::to_string(run_outcome::refused) == "refused");
}

TEST_CASE("run_tracker follows the original scenario to the expected ends",
          "[protocol][scenario][tracker]") {
  const agentws::scenario plan;
  run_tracker tracker(plan.runs, plan.cancels);
  REQUIRE(tracker.reports().size() == 2);
  CHECK(report_of(tracker, "run-001").expected == run_outcome::done);
  CHECK(report_of(tracker, "run-002").expected == run_outcome::cancelled);
  CHECK(report_of(tracker, "run-001").outcome == run_outcome::not_started);
  CHECK_FALSE(tracker.all_finished());

  const std::vector<received_event> events = original_scenario_events();
  for (std::size_t i = 0; i < events.size(); ++i) {
    tracker.on_event(events[i]);
    // Only the last event ends the last run.
    CHECK(tracker.all_finished() == (i + 1 == events.size()));
  }

  const agentws::run_report& first = report_of(tracker, "run-001");
  CHECK(first.outcome == run_outcome::done);
  CHECK(first.events == 5);
  CHECK(first.last_step == std::optional<std::uint64_t>(4));
  CHECK(first.detail.empty());
  CHECK(first.as_expected());

  const agentws::run_report& second = report_of(tracker, "run-002");
  CHECK(second.outcome == run_outcome::cancelled);
  CHECK(second.events == 3);
  CHECK(second.last_step == std::optional<std::uint64_t>(2));
  CHECK(second.detail == "reason=client");
  CHECK(second.as_expected());

  CHECK(tracker.problems().empty());
  CHECK(tracker.all_finished());
  CHECK(tracker.all_as_expected());
}

TEST_CASE("run_tracker reports contract violations as problems", "[protocol][scenario][tracker]") {
  run_tracker tracker({"run-001"}, {});

  SECTION("a run_event after run_done") {
    tracker.on_event(started("run-001"));
    tracker.on_event(step("run-001", 0));
    tracker.on_event(done("run-001"));
    REQUIRE(tracker.problems().empty());
    tracker.on_event(step("run-001", 1));
    CHECK(tracker.problems() ==
          std::vector<std::string>{"run run-001: run_event after its terminal event"});
    CHECK(report_of(tracker, "run-001").outcome == run_outcome::done);
    CHECK(report_of(tracker, "run-001").events == 1);  // the late event is not counted
    CHECK_FALSE(tracker.all_as_expected());
  }
  SECTION("a second terminal event") {
    tracker.on_event(started("run-001"));
    tracker.on_event(cancelled("run-001"));
    tracker.on_event(done("run-001"));
    CHECK(tracker.problems() ==
          std::vector<std::string>{"run run-001: run_done after its terminal event"});
    CHECK(report_of(tracker, "run-001").outcome == run_outcome::cancelled);
  }
  SECTION("steps out of order") {
    tracker.on_event(started("run-001"));
    tracker.on_event(step("run-001", 0));
    tracker.on_event(step("run-001", 2));
    tracker.on_event(done("run-001"));
    CHECK(tracker.problems() == std::vector<std::string>{"run run-001: step 2 where 1 was due"});
    CHECK(report_of(tracker, "run-001").outcome == run_outcome::done);
    CHECK(report_of(tracker, "run-001").last_step == std::optional<std::uint64_t>(2));
    CHECK_FALSE(tracker.all_as_expected());
  }
  SECTION("a repeated step") {
    tracker.on_event(started("run-001"));
    tracker.on_event(step("run-001", 0));
    tracker.on_event(step("run-001", 0));
    CHECK(tracker.problems() == std::vector<std::string>{"run run-001: step 0 where 1 was due"});
  }
  SECTION("a run_event without a step") {
    tracker.on_event(started("run-001"));
    tracker.on_event(
        from_wire(R"({"event_type": "run_event", "payload": {"run_id": "run-001", "text": "x"}})"));
    CHECK(tracker.problems() ==
          std::vector<std::string>{"run run-001: step missing where 0 was due"});
  }
  SECTION("a run_event before run_started") {
    tracker.on_event(step("run-001", 0));
    CHECK(tracker.problems() ==
          std::vector<std::string>{"run run-001: run_event before run_started"});
  }
  SECTION("run_started twice") {
    tracker.on_event(started("run-001"));
    tracker.on_event(started("run-001"));
    CHECK(tracker.problems() == std::vector<std::string>{"run run-001: started twice"});
  }
  SECTION("events for a run that was never started by us") {
    tracker.on_event(started("run-999"));
    tracker.on_event(step("run-999", 0));
    CHECK(tracker.problems() ==
          std::vector<std::string>{"event for a run we did not start: run-999",
                                   "event for a run we did not start: run-999"});
    CHECK(report_of(tracker, "run-001").outcome == run_outcome::not_started);
    CHECK_FALSE(tracker.all_as_expected());
  }
  SECTION("a hostile run_id is escaped in the problem text") {
    tracker.on_event(started("evil\x1b[2J"));
    CHECK(tracker.problems() ==
          std::vector<std::string>{"event for a run we did not start: evil\\x1b[2J"});
  }
  SECTION("an error without a run_id") {
    agentws::protocol_error unknown;
    unknown.code = agentws::protocol_error_code::unknown_command;
    unknown.message = "Unknown command";
    unknown.received_json = "{}";
    tracker.on_event(error(unknown));
    CHECK(tracker.problems() == std::vector<std::string>{"server error: Unknown command"});
  }
  SECTION("connected and unknown event types are not problems") {
    tracker.on_event(connected());
    tracker.on_event(started("run-001"));
    tracker.on_event(from_wire(
        R"({"event_type": "run_progress", "payload": {"run_id": "run-001", "pct": 10}})"));
    tracker.on_event(from_wire(R"({"event_type": "heartbeat", "payload": {}})"));
    tracker.on_event(step("run-001", 0));
    tracker.on_event(done("run-001"));
    CHECK(tracker.problems().empty());
    CHECK(tracker.all_as_expected());
  }
}

TEST_CASE("run_tracker outcomes: refused, failed, and not as expected",
          "[protocol][scenario][tracker]") {
  SECTION("an error for a run that has not started refuses it") {
    run_tracker tracker({"run-001"}, {});
    tracker.on_event(error(agentws::run_already_active_error("run-001", std::nullopt)));
    const agentws::run_report& report = report_of(tracker, "run-001");
    CHECK(report.outcome == run_outcome::refused);
    CHECK(report.detail == "Run already in progress");
    CHECK_FALSE(report.as_expected());
    CHECK(tracker.all_finished());
    CHECK_FALSE(tracker.all_as_expected());
    CHECK(tracker.problems().empty());
  }
  SECTION("an error for a running run keeps it running") {
    run_tracker tracker({"run-001"}, {});
    tracker.on_event(started("run-001"));
    tracker.on_event(error(agentws::run_not_active_error("run-001", std::nullopt)));
    CHECK(report_of(tracker, "run-001").outcome == run_outcome::running);
    CHECK(report_of(tracker, "run-001").detail == "No active run to cancel");
    CHECK_FALSE(tracker.all_finished());
  }
  SECTION("a run expected to be cancelled that finishes") {
    run_tracker tracker({"run-001", "run-002"}, {{"run-002", 2500ms}});
    for (const char* run_id : {"run-001", "run-002"}) {
      tracker.on_event(started(run_id));
      for (std::uint64_t n = 0; n < 5; ++n)
        tracker.on_event(step(run_id, n));
      tracker.on_event(done(run_id));
    }
    CHECK(tracker.all_finished());
    CHECK(tracker.problems().empty());
    CHECK(report_of(tracker, "run-001").as_expected());
    const agentws::run_report& second = report_of(tracker, "run-002");
    CHECK(second.outcome == run_outcome::done);
    CHECK(second.expected == run_outcome::cancelled);
    CHECK_FALSE(second.as_expected());
    CHECK_FALSE(tracker.all_as_expected());
  }
  SECTION("a run expected to finish that is cancelled by shutdown") {
    run_tracker tracker({"run-001"}, {});
    tracker.on_event(started("run-001"));
    tracker.on_event(cancelled("run-001", agentws::cancel_reason::shutdown));
    CHECK(report_of(tracker, "run-001").outcome == run_outcome::cancelled);
    CHECK(report_of(tracker, "run-001").detail == "reason=shutdown");
    CHECK_FALSE(tracker.all_as_expected());
  }
  SECTION("a cancel without a reason, as the original server sends it") {
    run_tracker tracker({"run-002"}, {{"run-002", 0ms}});
    tracker.on_event(started("run-002"));
    tracker.on_event(
        from_wire(R"({"event_type": "run_cancelled", "payload": {"run_id": "run-002"}})"));
    CHECK(report_of(tracker, "run-002").outcome == run_outcome::cancelled);
    CHECK(report_of(tracker, "run-002").detail.empty());
    CHECK(tracker.all_as_expected());
  }
  SECTION("run_done with a failure") {
    run_tracker tracker({"run-001"}, {});
    tracker.on_event(started("run-001"));
    tracker.on_event(step("run-001", 0));
    tracker.on_event(done("run-001", "agent crashed"));
    const agentws::run_report& report = report_of(tracker, "run-001");
    CHECK(report.outcome == run_outcome::failed);
    CHECK(report.detail == "agent crashed");
    CHECK(tracker.all_finished());
    CHECK_FALSE(tracker.all_as_expected());
  }
  SECTION("several cancels for one run, and cancels for runs not started") {
    run_tracker tracker({"a", "b"}, {{"b", 1ms}, {"b", 2ms}, {"zzz", 3ms}});
    REQUIRE(tracker.reports().size() == 2);
    CHECK(report_of(tracker, "a").expected == run_outcome::done);
    CHECK(report_of(tracker, "b").expected == run_outcome::cancelled);
  }
  SECTION("no runs: finished and as expected at once") {
    run_tracker tracker({}, {});
    CHECK(tracker.all_finished());
    CHECK(tracker.all_as_expected());
  }
}

TEST_CASE("printable escapes control characters and invalid UTF-8",
          "[protocol][scenario][printable]") {
  CHECK(agentws::printable("") == "");
  CHECK(agentws::printable("run-001 [ok] ~") == "run-001 [ok] ~");
  CHECK(agentws::printable("\x1b[31mred") == "\\x1b[31mred");
  CHECK(agentws::printable("a\nb\tc\r") == "a\\x0ab\\x09c\\x0d");
  CHECK(agentws::printable(std::string_view("\0", 1)) == "\\x00");
  CHECK(agentws::printable("\x7f") == "\\x7f");
  CHECK(agentws::printable("\\x1b") == "\\x1b");  // a literal backslash passes

  SECTION("valid UTF-8 passes through") {
    CHECK(agentws::printable("\xc3\xa9") == "\xc3\xa9");                                  // é
    CHECK(agentws::printable("\xe6\x97\xa5\xe6\x9c\xac") == "\xe6\x97\xa5\xe6\x9c\xac");  // 日本
    CHECK(agentws::printable("\xf0\x9f\x98\x80") == "\xf0\x9f\x98\x80");                  // U+1F600
    CHECK(agentws::printable("\xc2\xa0") == "\xc2\xa0");                  // U+00A0, not C1
    CHECK(agentws::printable("\xef\xbf\xbd") == "\xef\xbf\xbd");          // U+FFFD
    CHECK(agentws::printable("\xf4\x8f\xbf\xbf") == "\xf4\x8f\xbf\xbf");  // U+10FFFF
  }
  SECTION("C1 controls are escaped") {
    CHECK(agentws::printable("\xc2\x85") == "\\xc2\\x85");  // NEL
    CHECK(agentws::printable("\xc2\x9b"
                             "2J") == "\\xc2\\x9b2J");  // CSI
    CHECK(agentws::printable("\xc2\x80") == "\\xc2\\x80");
    CHECK(agentws::printable("\xc2\x9f") == "\\xc2\\x9f");
  }
  SECTION("invalid UTF-8 bytes are escaped one by one") {
    CHECK(agentws::printable("\xff") == "\\xff");
    CHECK(agentws::printable("a\x80z") == "a\\x80z");
    CHECK(agentws::printable("\xc3") == "\\xc3");           // truncated at the end
    CHECK(agentws::printable("\xc3(") == "\\xc3(");         // bad continuation
    CHECK(agentws::printable("\xe6\x97") == "\\xe6\\x97");  // truncated 3-byte
    CHECK(agentws::printable("\xc0\x80") == "\\xc0\\x80");  // overlong NUL
    CHECK(agentws::printable("\xc1\xbf") == "\\xc1\\xbf");  // overlong
    CHECK(agentws::printable("\xf5\x80\x80\x80") == "\\xf5\\x80\\x80\\x80");
    CHECK(agentws::printable("\xe6\x97\xa5\xff\xc3\xa9") == "\xe6\x97\xa5\\xff\xc3\xa9");
  }
}

// Invalid forms (RFC 3629) a lenient terminal might still decode, the
// overlong ones as ESC or CSI, are escaped byte by byte.
TEST_CASE("printable escapes overlong, surrogate and out-of-range sequences",
          "[protocol][scenario][printable]") {
  CHECK(agentws::printable("\xe0\x80\x9b") == "\\xe0\\x80\\x9b");           // overlong ESC
  CHECK(agentws::printable("\xe0\x82\x9b") == "\\xe0\\x82\\x9b");           // overlong CSI
  CHECK(agentws::printable("\xed\xa0\x80") == "\\xed\\xa0\\x80");           // U+D800
  CHECK(agentws::printable("\xf0\x80\x80\x9b") == "\\xf0\\x80\\x80\\x9b");  // overlong
  CHECK(agentws::printable("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // U+110000
}

TEST_CASE("json_on_one_line keeps the event and drops line breaks between tokens",
          "[protocol][scenario][format]") {
  const std::string compact = R"({"event_type":"run_event","payload":{"text":"a\nb"}})";
  CHECK(agentws::json_on_one_line(compact) == compact);  // escaped \n stays
  const std::string pretty =
      "{\r\n  \"event_type\": \"run_event\",\n  \"payload\": {\"text\": \"a\\nb\"}\n}";
  const std::string line = agentws::json_on_one_line(pretty);
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find('\r') == std::string::npos);
  const auto event = agentws::parse_event(line);
  REQUIRE(event);
  CHECK(event->kind == agentws::event_kind::run_event);
  CHECK(event->text == "a\nb");
  CHECK(event->payload_json == agentws::parse_event(pretty)->payload_json);
}

TEST_CASE("format_event_line prints one plain line per event", "[protocol][scenario][format]") {
  const std::string t(ts);
  CHECK(agentws::format_event_line(connected(), false) == t + " [-] connected Connected");
  CHECK(agentws::format_event_line(started("run-001"), false) == t + " [run-001] run_started");
  CHECK(agentws::format_event_line(started("run-001", "req-1"), false) ==
        t + " [run-001] run_started request_id=req-1");
  CHECK(agentws::format_event_line(step("run-002", 1), false) ==
        t + " [run-002] run_event step=1 agent step 1");
  CHECK(agentws::format_event_line(done("run-001"), false) == t + " [run-001] run_done");
  CHECK(agentws::format_event_line(done("run-001", "boom"), false) ==
        t + " [run-001] run_done failed: boom");
  CHECK(agentws::format_event_line(cancelled("run-002"), false) ==
        t + " [run-002] run_cancelled reason=client");
  CHECK(agentws::format_event_line(cancelled("run-002", agentws::cancel_reason::shutdown), false) ==
        t + " [run-002] run_cancelled reason=shutdown");
  CHECK(agentws::format_event_line(error(agentws::run_not_active_error("run-002", "c-1")), false) ==
        t + " [run-002] error No active run to cancel (run_not_active) request_id=c-1");

  agentws::protocol_error unknown;
  unknown.code = agentws::protocol_error_code::unknown_command;
  unknown.message = "Unknown command";
  unknown.received_json = R"({"command":"x"})";
  CHECK(agentws::format_event_line(error(unknown), false) ==
        t + " [-] error Unknown command (unknown_command)");

  SECTION("events from the original server, without extensions") {
    CHECK(
        agentws::format_event_line(
            from_wire(R"({"event_type": "run_cancelled", "ts": "T", "payload": {"run_id": "r"}})"),
            false) == "T [r] run_cancelled");
    CHECK(
        agentws::format_event_line(
            from_wire(
                R"({"event_type": "error", "ts": "T", "payload": {"message": "run_id is required"}})"),
            false) == "T [-] error run_id is required");
  }
  SECTION("unknown types, missing ts and missing step") {
    CHECK(agentws::format_event_line(
              from_wire(R"({"event_type": "run_progress", "payload": {"run_id": "r", "pct": 5}})"),
              false) == "- [r] run_progress");
    CHECK(
        agentws::format_event_line(
            from_wire(
                R"({"event_type": "run_event", "ts": "T", "payload": {"run_id": "r", "text": "x"}})"),
            false) == "T [r] run_event step=? x");
  }
  SECTION("everything a peer sends is made printable") {
    const received_event hostile = from_wire(
        R"({"event_type": "run_event\u001b[2J", "ts": "T\u0007", "payload": {"run_id": "r\n", "step": 0, "text": "\u001b]0;pwned\u0007"}})");
    CHECK(agentws::format_event_line(hostile, false) == "T\\x07 [r\\x0a] run_event\\x1b[2J");
    CHECK(agentws::format_event_line(step("r", 0), false).find('\x1b') == std::string::npos);

    received_event text_event = step("r\x1b", 7);
    text_event.text = "\x1b]0;title\x07";
    text_event.request_id = "\x9b";
    CHECK(agentws::format_event_line(text_event, false) ==
          t + " [r\\x1b] run_event step=7 \\x1b]0;title\\x07 request_id=\\x9b");
  }
}

TEST_CASE("format_event_line with color paints the event type", "[protocol][scenario][format]") {
  const std::string t(ts);
  CHECK(agentws::format_event_line(started("r"), true) == t + " [r] \033[36mrun_started\033[0m");
  CHECK(agentws::format_event_line(done("r"), true) == t + " [r] \033[32mrun_done\033[0m");
  CHECK(agentws::format_event_line(cancelled("r"), true) ==
        t + " [r] \033[33mrun_cancelled\033[0m reason=client");
  CHECK(agentws::format_event_line(error(agentws::run_not_active_error("r", std::nullopt)), true) ==
        t + " [r] \033[31merror\033[0m No active run to cancel (run_not_active)");
  // Steps and the greeting stay unpainted.
  CHECK(agentws::format_event_line(step("r", 2), true) ==
        agentws::format_event_line(step("r", 2), false));
  CHECK(agentws::format_event_line(connected(), true) ==
        agentws::format_event_line(connected(), false));
}

TEST_CASE("format_summary lists each run and the verdict", "[protocol][scenario][format]") {
  const agentws::scenario plan;

  SECTION("the original scenario, as expected") {
    run_tracker tracker(plan.runs, plan.cancels);
    for (const auto& event : original_scenario_events())
      tracker.on_event(event);
    CHECK(agentws::format_summary(tracker, false) ==
          "summary:\n"
          "  run-001  done        5 events  ok\n"
          "  run-002  cancelled   3 events, reason=client  ok\n"
          "result: every run ended as expected\n");
    CHECK(agentws::format_summary(tracker, true) ==
          "summary:\n"
          "  run-001  done        5 events  \033[32mok\033[0m\n"
          "  run-002  cancelled   3 events, reason=client  \033[32mok\033[0m\n"
          "result: every run ended as expected\n");
  }
  SECTION("an unexpected end, a refusal and a problem") {
    run_tracker tracker({"r", "run-long-name-42"}, {{"r", 1000ms}});
    tracker.on_event(started("r"));
    tracker.on_event(done("r"));
    tracker.on_event(step("r", 0));
    tracker.on_event(error(agentws::run_already_active_error("run-long-name-42", std::nullopt)));
    CHECK(agentws::format_summary(tracker, false) ==
          "summary:\n"
          "  r                 done        0 events  expected cancelled\n"
          "  run-long-name-42  refused     0 events, Run already in progress  expected done\n"
          "  problem: run r: run_event after its terminal event\n"
          "result: NOT every run ended as expected\n");
    const std::string colored = agentws::format_summary(tracker, true);
    CHECK(colored.find("  \033[31mexpected cancelled\033[0m\n") != std::string::npos);
    CHECK(colored.find("  \033[31mexpected done\033[0m\n") != std::string::npos);
  }
  SECTION("runs that never ended") {
    run_tracker tracker({"run-001"}, {});
    tracker.on_event(started("run-001"));
    tracker.on_event(step("run-001", 0));
    CHECK(agentws::format_summary(tracker, false) ==
          "summary:\n"
          "  run-001  running     1 events  expected done\n"
          "result: NOT every run ended as expected\n");
  }
  SECTION("the connection lost: runs not ended are lost, ended ones keep their outcome") {
    // What run_scenario() reports when the server dies mid-run (no close
    // frame, no terminal events): never "running" once the connection is gone.
    run_tracker tracker({"a", "b", "c"}, {{"b", 0ms}});
    tracker.on_event(started("a"));
    tracker.on_event(step("a", 0));
    tracker.on_event(started("b"));
    tracker.cancel_sent("b");
    tracker.on_event(cancelled("b"));
    // c's start was sent and never answered.
    tracker.connection_lost();
    CHECK(tracker.all_finished());
    CHECK_FALSE(tracker.all_as_expected());
    CHECK(agentws::format_summary(tracker, false) ==
          "summary:\n"
          "  a       lost        1 events, connection lost  expected done\n"
          "  b       cancelled   0 events, reason=client  ok\n"
          "  c       lost        0 events, connection lost  expected done\n"
          "result: NOT every run ended as expected\n");
  }
  SECTION("hostile run_ids and details are escaped") {
    run_tracker tracker({"r\x1b"}, {});
    tracker.on_event(started("r\x1b"));
    tracker.on_event(done("r\x1b", "bad\x07"));
    const std::string summary = agentws::format_summary(tracker, false);
    CHECK(summary ==
          "summary:\n"
          "  r\\x1b   failed      0 events, bad\\x07  expected done\n"
          "result: NOT every run ended as expected\n");
  }
}
