// The client's decisions without a socket: following a reused run_id, the
// answers to cancels and raw frames, the interactive commands, and the words
// for a refused upgrade or a close the server sent.
#include <catch2/catch.hpp>

#include <boost/asio/ssl/error.hpp>
#include <boost/beast/websocket/error.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "agentws/client.hpp"
#include "agentws/events.hpp"
#include "agentws/interactive.hpp"
#include "agentws/protocol.hpp"
#include "agentws/scenario.hpp"

namespace {

using agentws::received_event;
using agentws::run_outcome;
using agentws::run_tracker;

constexpr std::string_view ts = "2026-11-25T17:36:10.123456+00:00";

received_event from_wire(const std::string& text) {
  std::optional<received_event> event = agentws::parse_event(text);
  REQUIRE(event);
  return *event;
}
received_event started(std::string_view run_id) {
  std::string out;
  agentws::append_run_started(out, ts, run_id, std::nullopt);
  return from_wire(out);
}
received_event step(std::string_view run_id, std::uint64_t n) {
  std::string out;
  agentws::append_run_event(out, ts, run_id, n, n + 1, "agent step " + std::to_string(n));
  return from_wire(out);
}
received_event done(std::string_view run_id) {
  std::string out;
  agentws::append_run_done(out, ts, run_id, 1000, {});
  return from_wire(out);
}
received_event cancelled(std::string_view run_id) {
  std::string out;
  agentws::append_run_cancelled(out, ts, run_id, 1000, agentws::cancel_reason::client,
                                std::nullopt);
  return from_wire(out);
}
received_event error(const agentws::protocol_error& refused) {
  std::string out;
  agentws::append_error(out, ts, refused);
  return from_wire(out);
}

}  // namespace

TEST_CASE("run_tracker: a start of a run_id still running is refused, the run goes on",
          "[protocol][scenario][tracker]") {
  // start r1 steps=1; start r1 steps=3: the second start reaches the server
  // while the first run is active.
  run_tracker tracker({}, {});
  tracker.track("r1", run_outcome::done);
  tracker.track("r1", run_outcome::done);
  REQUIRE(tracker.reports().size() == 2);
  tracker.on_event(started("r1"));
  CHECK(tracker.reports()[0].outcome == run_outcome::running);
  CHECK(tracker.reports()[1].outcome == run_outcome::not_started);
  tracker.on_event(error(agentws::run_already_active_error("r1", std::nullopt)));
  CHECK(tracker.reports()[0].outcome == run_outcome::running);
  CHECK(tracker.reports()[1].outcome == run_outcome::refused);
  CHECK(tracker.reports()[1].detail == "Run already in progress");
  CHECK_FALSE(tracker.all_finished());  // the first run is still to be waited for
  tracker.on_event(step("r1", 0));
  tracker.on_event(done("r1"));
  CHECK(tracker.reports()[0].outcome == run_outcome::done);
  CHECK(tracker.reports()[0].events == 1);
  CHECK(tracker.all_finished());
  CHECK(tracker.problems().empty());
}

TEST_CASE("run_tracker: a run_id reused after its run ended is a new run",
          "[protocol][scenario][tracker]") {
  run_tracker tracker({}, {});
  tracker.track("r1", run_outcome::done);
  tracker.track("r1", run_outcome::done);
  // The server answers the second start after the first run's end.
  for (int run = 0; run < 2; ++run) {
    tracker.on_event(started("r1"));
    tracker.on_event(step("r1", 0));
    if (run == 1) tracker.on_event(step("r1", 1));
    tracker.on_event(done("r1"));
  }
  REQUIRE(tracker.reports().size() == 2);
  CHECK(tracker.reports()[0].outcome == run_outcome::done);
  CHECK(tracker.reports()[0].events == 1);
  CHECK(tracker.reports()[1].outcome == run_outcome::done);
  CHECK(tracker.reports()[1].events == 2);  // steps counted from 0 again
  CHECK(tracker.all_finished());
  CHECK(tracker.problems().empty());

  SECTION("a start after the end, while nothing else is pending") {
    tracker.track("r1", run_outcome::done);
    CHECK_FALSE(tracker.all_finished());
    tracker.on_event(started("r1"));
    tracker.on_event(cancelled("r1"));
    CHECK(tracker.reports()[2].outcome == run_outcome::cancelled);
    CHECK(tracker.problems().empty());
  }
  SECTION("an event after the last run's end is still a violation") {
    tracker.on_event(step("r1", 2));
    CHECK(tracker.problems() ==
          std::vector<std::string>{"run r1: run_event after its terminal event"});
  }
}

TEST_CASE("run_tracker: answers to cancels and raw frames are not problems",
          "[protocol][scenario][tracker]") {
  run_tracker tracker({}, {});
  tracker.track("r1", run_outcome::done);
  tracker.on_event(started("r1"));
  tracker.on_event(done("r1"));
  // cancel r1 after its end: "No active run to cancel", about a finished run.
  tracker.cancel_sent("r1");
  tracker.on_event(error(agentws::run_not_active_error("r1", std::nullopt)));
  CHECK(tracker.reports()[0].outcome == run_outcome::done);
  // A cancel of a run never started here.
  tracker.cancel_sent("zz");
  tracker.on_event(error(agentws::run_not_active_error("zz", std::nullopt)));
  CHECK(tracker.problems() == std::vector<std::string>{"event for a run we did not start: zz"});

  // raw: an invalid frame is answered by an error without run_id.
  tracker.raw_sent();
  agentws::protocol_error invalid;
  invalid.code = agentws::protocol_error_code::invalid_json;
  invalid.message = "Invalid JSON";
  tracker.on_event(error(invalid));
  CHECK(tracker.problems().size() == 1);
  // A second one, unasked, is a problem.
  tracker.on_event(error(invalid));
  CHECK(tracker.problems().size() == 2);
  CHECK(tracker.all_finished());
}

TEST_CASE("interactive: quit, quit! and raw", "[protocol][interactive]") {
  using namespace agentws;
  CHECK_FALSE(std::get<interactive_quit>(parse_interactive_line("quit")).now);
  CHECK(std::get<interactive_quit>(parse_interactive_line("quit!")).now);
  CHECK(std::get<interactive_raw>(parse_interactive_line(R"(raw {"command": "x"})")).text ==
        R"({"command": "x"})");
  CHECK(std::get<interactive_raw>(parse_interactive_line("  raw   not json  at all\r")).text ==
        "not json  at all");
  CHECK(std::get<interactive_mistake>(parse_interactive_line("raw")).message ==
        "usage: raw TEXT (sent as one frame, as it is)");
  CHECK(std::get<interactive_mistake>(parse_interactive_line("start " + std::string(257, 'x')))
            .message == "start: the run_id is 257 bytes, longer than 256");
  CHECK(std::get<interactive_start>(parse_interactive_line("start " + std::string(256, 'x')))
            .run_id.size() == 256);
  const std::string help(interactive_help_text());
  CHECK(help.find("quit!") != std::string::npos);
  CHECK(help.find("raw TEXT") != std::string::npos);
}

TEST_CASE("a refused upgrade says the status and what to do", "[protocol][client]") {
  const auto url = agentws::ws_url::parse("ws://127.0.0.1:8000/ws");
  REQUIRE(url);
  const boost::system::error_code declined = boost::beast::websocket::error::upgrade_declined;
  CHECK(agentws::describe_connect_failure(*url, declined,
                                          agentws::upgrade_refusal{401, "Unauthorized"}, false) ==
        "server refused the WebSocket upgrade: 401 Unauthorized (the server wants a token: pass "
        "it with --token or AGENTWS_TOKEN)");
  CHECK(agentws::describe_connect_failure(*url, declined,
                                          agentws::upgrade_refusal{401, "Unauthorized"}, true)
            .find("the token sent was not accepted") != std::string::npos);
  CHECK(agentws::describe_connect_failure(*url, declined,
                                          agentws::upgrade_refusal{403, "Forbidden"}, false)
            .starts_with("server refused the WebSocket upgrade: 403 Forbidden"));
  CHECK(agentws::describe_connect_failure(
            *url, declined, agentws::upgrade_refusal{503, "Service Unavailable"}, false)
            .starts_with("server refused the WebSocket upgrade: 503 Service Unavailable"));
  const boost::system::error_code refused = boost::asio::error::connection_refused;
  CHECK(agentws::describe_connect_failure(*url, refused, std::nullopt, false)
            .starts_with("cannot connect to ws://127.0.0.1:8000/ws: "));

  CHECK_FALSE(agentws::worth_retrying(declined, agentws::upgrade_refusal{401, "Unauthorized"}));
  CHECK_FALSE(agentws::worth_retrying(declined, agentws::upgrade_refusal{404, "Not Found"}));
  CHECK(agentws::worth_retrying(declined, agentws::upgrade_refusal{503, "Service Unavailable"}));
  CHECK(agentws::worth_retrying(refused, std::nullopt));
  CHECK_FALSE(agentws::worth_retrying(
      boost::system::error_code(18, agentws::certificate_category()), std::nullopt));
}

TEST_CASE("a close the server sent is named with its code and reason", "[protocol][client]") {
  CHECK(agentws::describe_server_close({1001, "server shutdown"}) ==
        "server closed the connection (1001 server shutdown)");
  CHECK(agentws::describe_server_close({1000, ""}) == "server closed the connection (1000)");
  CHECK(agentws::describe_server_close({1008, "slow\nconsumer"}) ==
        "server closed the connection (1008 slow\\x0aconsumer)");
}

TEST_CASE("format_event_line: an agent's structured events", "[protocol][scenario][format]") {
  const std::string t(ts);
  auto line = [](const std::string& payload) {
    return agentws::format_event_line(
        from_wire(R"({"event_type": "run_event", "ts": "T", "payload": )" + payload + "}"), false);
  };
  // A plain event prints exactly as version 1's did.
  CHECK(agentws::format_event_line(step("r1", 3), false) ==
        t + " [r1] run_event step=3 agent step 3");
  CHECK(line(R"({"run_id": "r1", "step": 0, "seq": 1, "text": "a  b"})") ==
        "T [r1] run_event step=0 a  b");
  // kind, then the text quoted (its blanks show), then the other fields.
  CHECK(line(R"({"run_id": "r1", "step": 3, "seq": 4, "kind": "text_delta", "text": "Hel"})") ==
        R"(T [r1] run_event step=3 text_delta "Hel")");
  CHECK(
      line(
          R"({"run_id": "r1", "step": 4, "seq": 5, "kind": "text_delta", "text": "lo\nthere ", "index": 0})") ==
      R"(T [r1] run_event step=4 text_delta "lo\nthere " {"index":0})");
  CHECK(
      line(
          R"({"run_id": "r1", "step": 5, "seq": 6, "kind": "tool_call", "name": "search", "args": {"q": "x"}})") ==
      R"(T [r1] run_event step=5 tool_call {"args":{"q":"x"},"name":"search"})");
  // Without a kind, or with one that is not a string (then it is a field).
  CHECK(line(R"({"run_id": "r1", "step": 6, "seq": 7, "text": "hi", "tokens": 2})") ==
        R"(T [r1] run_event step=6 "hi" {"tokens":2})");
  CHECK(line(R"({"run_id": "r1", "step": 7, "seq": 8, "kind": 3})") ==
        R"(T [r1] run_event step=7 {"kind":3})");
  CHECK(line(R"({"run_id": "r1", "step": 8, "seq": 9, "text": ["not", "a string"]})") ==
        R"(T [r1] run_event step=8 {"text":["not","a string"]})");
  // Nothing a peer sends reaches the terminal raw.
  const std::string hostile = line(
      R"({"run_id": "r1", "step": 9, "seq": 10, "kind": "x\u001b[2J", "text": "\u009b", "v": "\u0007"})");
  CHECK(hostile.find('\x1b') == std::string::npos);
  CHECK(hostile.find('\x07') == std::string::npos);
  CHECK(hostile.find("\xc2\x9b") == std::string::npos);
  CHECK(hostile.starts_with("T [r1] run_event step=9 x\\x1b[2J "));
}

TEST_CASE("format_event_line: input_received and a failed program",
          "[protocol][scenario][format]") {
  auto line = [](const std::string& type, const std::string& payload) {
    return agentws::format_event_line(
        from_wire(R"({"event_type": ")" + type + R"(", "ts": "T", "payload": )" + payload + "}"),
        false);
  };
  CHECK(line("input_received", R"({"run_id": "r1", "seq": 3, "request_id": "9"})") ==
        "T [r1] input_received request_id=9");
  CHECK(line("input_received", R"({"run_id": "r1", "seq": 3})") == "T [r1] input_received");
  // The error names the exit: nothing added.
  CHECK(
      line(
          "run_done",
          R"({"run_id": "r1", "seq": 5, "ok": false, "error": "agent sh: exit code 3", "exit_code": 3})") ==
      "T [r1] run_done failed: agent sh: exit code 3");
  // It does not: the exit code or signal is added.
  CHECK(line("run_done",
             R"({"run_id": "r1", "seq": 5, "ok": false, "error": "it broke", "exit_code": 3})") ==
        "T [r1] run_done failed: it broke (exit code 3)");
  CHECK(
      line(
          "run_done",
          R"({"run_id": "r1", "seq": 5, "ok": false, "error": "it broke", "signal": "SIGKILL"})") ==
      "T [r1] run_done failed: it broke (SIGKILL)");
  CHECK(
      line(
          "run_done",
          R"({"run_id": "r1", "seq": 5, "ok": false, "error": "agent sh: killed by SIGTERM", "signal": "SIGTERM"})") ==
      "T [r1] run_done failed: agent sh: killed by SIGTERM");
  // The stderr a program left, a line each, indented below the event.
  CHECK(
      line(
          "run_done",
          R"({"run_id": "r1", "seq": 5, "ok": false, "error": "agent sh: exit code 2; stderr ends:\nno such file\r\n\u001b[31mboom", "exit_code": 2})") ==
      "T [r1] run_done failed: agent sh: exit code 2; stderr ends:\n    | no such file\n    | "
      "\\x1b[31mboom");
  // Version 2 C++ agents' failures are as before.
  CHECK(line("run_done", R"({"run_id": "r1", "seq": 5, "ok": false, "error": "boom"})") ==
        "T [r1] run_done failed: boom");
  CHECK(line("run_done", R"({"run_id": "r1", "seq": 5})") == "T [r1] run_done");
}

TEST_CASE("run_tracker: answers to send_input are not problems", "[protocol][scenario][tracker]") {
  auto refusal = [](const std::string& run_id, const std::string& code) {
    return from_wire(
        R"({"event_type": "error", "ts": "T", "payload": {"message": "no", "code": ")" + code +
        R"(", "run_id": ")" + run_id + R"("}})");
  };
  auto received = [](const std::string& run_id) {
    return from_wire(R"({"event_type": "input_received", "ts": "T", "payload": {"run_id": ")" +
                     run_id + R"(", "seq": 2}})");
  };
  run_tracker tracker({}, {});
  tracker.track("r1", run_outcome::done);
  // A send while the start is unanswered: its refusal is not the start's.
  tracker.input_sent("r1");
  tracker.on_event(refusal("r1", "run_not_active"));
  CHECK(tracker.reports()[0].outcome == run_outcome::not_started);
  tracker.on_event(started("r1"));
  tracker.input_sent("r1");
  tracker.input_sent("r1");
  tracker.input_sent("r1");
  tracker.on_event(received("r1"));
  tracker.on_event(refusal("r1", "input_queue_full"));
  tracker.on_event(refusal("r1", "input_not_accepted"));
  tracker.on_event(step("r1", 0));
  tracker.on_event(done("r1"));
  CHECK(tracker.reports()[0].outcome == run_outcome::done);
  CHECK(tracker.reports()[0].detail.empty());
  // To a run of the session not followed here: answered all the same.
  tracker.input_sent("elsewhere");
  tracker.on_event(received("elsewhere"));
  tracker.input_sent("gone");
  tracker.on_event(refusal("gone", "run_not_active"));
  CHECK(tracker.problems().empty());
  CHECK(tracker.all_as_expected());

  SECTION("a cancel's refusal goes to the cancel, a start's to the start") {
    tracker.track("r2", run_outcome::done);
    tracker.input_sent("r2");
    tracker.on_event(refusal("r2", "unknown_agent"));
    CHECK(tracker.reports()[1].outcome == run_outcome::refused);
    tracker.on_event(refusal("r2", "run_not_active"));  // the send's
    tracker.cancel_sent("r1");
    tracker.input_sent("r1");
    tracker.on_event(refusal("r1", "run_not_active"));  // the cancel's
    tracker.on_event(refusal("r1", "run_not_active"));  // the send's
    CHECK(tracker.problems().empty());
    // Unasked, it is still a problem.
    tracker.on_event(refusal("r9", "input_not_accepted"));
    CHECK(tracker.problems() == std::vector<std::string>{"event for a run we did not start: r9"});
  }
}
