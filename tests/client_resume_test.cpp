// ws-client's side of runs that outlive their connection, without a socket:
// the cursor of each run (what was printed, what a replay repeats), what to
// attach after a reconnect, what `connected` announces, and the words.
#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "agentws/events.hpp"
#include "agentws/interactive.hpp"
#include "agentws/resume.hpp"
#include "agentws/scenario.hpp"

namespace {

using agentws::attach_request;
using agentws::event_kind;
using agentws::reattach_outcome;
using agentws::received_event;
using agentws::resume_book;
using agentws::run_outcome;
using agentws::run_tracker;

// Events as a version 2 server sends them, written out: the test reads the
// wire form, whatever the server's builders look like.
received_event wire(const std::string& type, const std::string& payload) {
  const std::string text = R"({"event_type": ")" + type +
                           R"(", "ts": "2026-11-25T17:36:10.123456+00:00", "payload": )" + payload +
                           "}";
  std::optional<received_event> event = agentws::parse_event(text);
  REQUIRE(event);
  return *event;
}
received_event started(const std::string& run_id) {
  return wire("run_started", R"({"run_id": ")" + run_id + R"(", "seq": 0})");
}
received_event step(const std::string& run_id, std::uint64_t n) {
  return wire("run_event", R"({"run_id": ")" + run_id + R"(", "step": )" + std::to_string(n) +
                               R"(, "seq": )" + std::to_string(n + 1) +
                               R"(, "text": "agent step )" + std::to_string(n) + R"("})");
}
received_event done(const std::string& run_id, std::uint64_t seq) {
  return wire("run_done", R"({"run_id": ")" + run_id + R"(", "seq": )" + std::to_string(seq) + "}");
}
received_event attached(const std::string& run_id, const std::string& state,
                        std::uint64_t last_seq) {
  return wire("run_attached", R"({"run_id": ")" + run_id + R"(", "state": ")" + state +
                                  R"(", "last_seq": )" + std::to_string(last_seq) + "}");
}
received_event not_found(const std::string& run_id) {
  return wire("error", R"({"message": "Run not found", "code": "run_not_found", "run_id": ")" +
                           run_id + R"("})");
}

}  // namespace

TEST_CASE("resume_book: an event at or below its run's cursor is a replay, not printed again",
          "[protocol][resume]") {
  resume_book book;
  book.follow("a");
  CHECK(book.cursor("a") == -1);
  CHECK(book.take(started("a")));
  CHECK(book.take(step("a", 0)));
  CHECK(book.take(step("a", 1)));
  CHECK(book.cursor("a") == 2);
  // The connection drops; the re-attach after seq 2 replays from 3, but a
  // server may repeat more: what was printed stays printed once.
  CHECK_FALSE(book.take(started("a")));
  CHECK_FALSE(book.take(step("a", 0)));
  CHECK_FALSE(book.take(step("a", 1)));
  CHECK(book.take(step("a", 2)));
  CHECK(book.take(done("a", 4)));
  CHECK(book.unfinished().empty());
  CHECK_FALSE(book.take(done("a", 4)));  // a terminal repeated

  // A run_id reused after its run ended is a new run, from seq 0.
  book.follow("a");
  CHECK(book.cursor("a") == -1);
  CHECK(book.take(started("a")));
  CHECK(book.take(step("a", 0)));

  // Events without a seq (a version 1 server) and connection-scoped ones are always new.
  received_event old = step("b", 0);
  old.seq.reset();
  CHECK(book.take(old));
  CHECK(book.take(old));
  CHECK(book.take(wire("runs", R"({"runs": []})")));
}

TEST_CASE("resume_book: a start of a run_id still running keeps its cursor", "[protocol][resume]") {
  resume_book book;
  book.follow("a");
  CHECK(book.take(started("a")));
  CHECK(book.take(step("a", 0)));
  book.follow("a");  // refused by the server (already in progress): nothing changes
  CHECK(book.cursor("a") == 1);
  CHECK_FALSE(book.take(step("a", 0)));
  book.follow("late", 7);  // attach after 7
  CHECK(book.cursor("late") == 7);
  CHECK_FALSE(book.take(wire("run_event", R"({"run_id": "late", "step": 6, "seq": 7})")));
  CHECK(book.take(wire("run_event", R"({"run_id": "late", "step": 7, "seq": 8})")));

  // Attached after a seq the run has not reached (last_seq 3): what comes
  // after last_seq is new, its terminal too.
  book.follow("ahead", 20);
  CHECK(book.take(attached("ahead", "running", 3)));
  CHECK(book.cursor("ahead") == 3);
  CHECK(book.take(done("ahead", 4)));
}

TEST_CASE("resume_book: after a reconnect, every run not ended is attached after its cursor",
          "[protocol][resume]") {
  resume_book book;
  for (const char* id : {"b", "a", "c", "pending", "refused"})
    book.follow(id);
  for (const char* id : {"a", "b", "c"})
    book.take(started(id));
  book.take(step("a", 0));
  book.take(step("a", 1));
  book.take(done("c", 1));
  // "pending": its start was not answered; "refused": the server said no.
  const auto going = [](const std::string& run_id) { return run_id != "refused"; };
  const std::vector<attach_request> attaches = book.reattach_all(going);
  REQUIRE(attaches.size() == 3);
  CHECK(attaches[0].run_id == "a");
  CHECK(attaches[0].after_seq == 2);
  CHECK(attaches[1].run_id == "b");
  CHECK(attaches[1].after_seq == 0);
  CHECK(attaches[2].run_id == "pending");
  CHECK(attaches[2].after_seq == -1);

  CHECK(book.on_reattach_answer(attached("a", "running", 5)) == reattach_outcome::attached);
  // The start the server never got is sent again; a run it forgot is lost.
  CHECK(book.on_reattach_answer(not_found("pending")) == reattach_outcome::restart);
  CHECK(book.on_reattach_answer(not_found("b")) == reattach_outcome::lost);
  CHECK_FALSE(book.cursor("b"));
  // Answered once: a second answer, or one for a run never re-attached, is the usual kind.
  CHECK(book.on_reattach_answer(attached("a", "running", 5)) == reattach_outcome::not_ours);
  CHECK(book.on_reattach_answer(not_found("zzz")) == reattach_outcome::not_ours);
  // Events of a re-attached run are not answers.
  book.reattach_all();
  CHECK(book.on_reattach_answer(step("a", 2)) == reattach_outcome::not_ours);
  // Forgotten (detached, lost): not attached again.
  book.forget("a");
  book.forget("pending");
  book.forget("refused");
  CHECK(book.reattach_all().empty());
}

TEST_CASE("what connected announces about resuming", "[protocol][resume]") {
  const auto v2 = agentws::read_session_announcement(wire("connected", R"({
      "message": "Connected", "protocol": 2, "features": ["params", "request_id", "resume"],
      "limits": {"max_detach_grace_ms": 5000, "history_events": 1024},
      "session": "k3y", "resumed": true})"));
  CHECK(v2.resumes);
  CHECK(v2.resumed);
  CHECK(v2.key == "k3y");
  CHECK(v2.max_detach_grace_ms == 5000u);
  CHECK(agentws::detach_grace_for(v2) == 5000u);

  const auto generous = agentws::read_session_announcement(wire("connected", R"({
      "features": ["resume"], "limits": {"max_detach_grace_ms": 3600000}, "session": "k"})"));
  CHECK(agentws::detach_grace_for(generous) ==
        static_cast<std::uint64_t>(agentws::resume_grace.count()));
  CHECK_FALSE(generous.resumed);

  // The original module and version 1 servers: nothing to resume.
  const auto v1 =
      agentws::read_session_announcement(wire("connected", R"({"message": "Connected"})"));
  CHECK_FALSE(v1.resumes);
  CHECK(v1.key.empty());
  CHECK_FALSE(agentws::read_session_announcement(
                  wire("connected", R"({"features": ["params"], "session": "k"})"))
                  .resumes);

  CHECK(agentws::next_reconnect_delay(agentws::first_reconnect_delay).count() == 500);
  CHECK(agentws::next_reconnect_delay(std::chrono::milliseconds(6000)) ==
        agentws::longest_reconnect_delay);
}

TEST_CASE("start_run with a disconnect policy; the session in the request target",
          "[protocol][resume]") {
  agentws::run_params_override params;
  params.steps = 3;
  CHECK(agentws::make_start_run_with("r", params, {}) == agentws::make_start_run("r", params));
  const std::string with = agentws::make_start_run_with("r", params, {"continue", 1500});
  CHECK(with.find(R"("on_disconnect":"continue")") != std::string::npos);
  CHECK(with.find(R"("detach_grace_ms":1500)") != std::string::npos);
  CHECK(with.find(R"("steps":3)") != std::string::npos);

  using agentws::target_with_session;
  CHECK(target_with_session("/ws", "k") == "/ws?session=k");
  CHECK(target_with_session("/ws?token=t", "k") == "/ws?token=t&session=k");
  CHECK(target_with_session("/ws?session=old&x=1", "new") == "/ws?x=1&session=new");
  CHECK(target_with_session("/ws?", "a b&c=") == "/ws?session=a%20b%26c%3D");
  CHECK(agentws::session_key_problem("") == "the key is empty");
  CHECK(agentws::session_key_problem("a b"));
  CHECK_FALSE(agentws::session_key_problem("Zx-_9.~"));
}

TEST_CASE("RUN[@SEQ]: the last '@' splits, SEQ is -1 or more", "[protocol][resume]") {
  std::string why;
  auto plain = agentws::parse_attach_request("r1", &why);
  REQUIRE(plain);
  CHECK(plain->run_id == "r1");
  CHECK(plain->after_seq == -1);
  auto after = agentws::parse_attach_request("r1@17", &why);
  REQUIRE(after);
  CHECK(after->after_seq == 17);
  auto at_sign = agentws::parse_attach_request("a@b@-1", &why);
  REQUIRE(at_sign);
  CHECK(at_sign->run_id == "a@b");
  CHECK(at_sign->after_seq == -1);
  for (const char* bad : {"r@", "r@x", "r@-2", "a@b", "r@1.5", "r@99999999999999999999"}) {
    INFO(bad);
    CHECK_FALSE(agentws::parse_attach_request(bad, &why));
    CHECK(why.starts_with("is not RUN or RUN@SEQ"));
  }
  CHECK_FALSE(agentws::parse_attach_request("@3", &why));
  CHECK(why == "the run_id is empty");
}

TEST_CASE("run_tracker: a run attached midway is followed from where it was",
          "[protocol][resume][tracker]") {
  run_tracker tracker({}, {});
  tracker.attach_sent("mid", 5, run_outcome::done);
  tracker.attach_sent("ended", 9, run_outcome::done);
  tracker.attach_sent("gone", 2, run_outcome::done);
  tracker.attach_sent("whole", -1, run_outcome::done);
  CHECK_FALSE(tracker.all_finished());
  tracker.on_event(attached("mid", "running", 7));
  CHECK(tracker.reports()[0].outcome == run_outcome::running);
  tracker.on_event(step("mid", 5));  // seq 6
  tracker.on_event(step("mid", 6));
  tracker.on_event(done("mid", 8));
  CHECK(tracker.reports()[0].outcome == run_outcome::done);
  CHECK(tracker.reports()[0].events == 2);
  // Ended at or before the seq attached after: no terminal will be replayed.
  tracker.on_event(attached("ended", "cancelled", 9));
  CHECK(tracker.reports()[1].outcome == run_outcome::cancelled);
  tracker.on_event(not_found("gone"));
  CHECK(tracker.reports()[2].outcome == run_outcome::refused);
  // From the start: the replayed run_started answers it.
  tracker.on_event(attached("whole", "running", 1));
  CHECK(tracker.reports()[3].outcome == run_outcome::not_started);
  tracker.on_event(started("whole"));
  tracker.on_event(step("whole", 0));
  // The server no longer kept seq 2..4: the steps go on from where the replay starts.
  tracker.on_event(wire("run_gap", R"({"run_id": "whole", "after_seq": 1, "first_seq": 5})"));
  tracker.on_event(step("whole", 4));
  tracker.on_event(done("whole", 6));
  CHECK(tracker.reports()[3].outcome == run_outcome::done);
  CHECK(tracker.reports()[3].missed == 3);
  CHECK(tracker.problems().empty());
  CHECK(agentws::format_summary(tracker, false).find("3 not kept by the server (run_gap)") !=
        std::string::npos);

  // Without a gap or an attach, a skipped step is still a problem.
  tracker.track("strict", run_outcome::done);
  tracker.on_event(started("strict"));
  tracker.on_event(step("strict", 1));
  REQUIRE(tracker.problems().size() == 1);
  CHECK(tracker.problems()[0] == "run strict: step 1 where 0 was due");
}

TEST_CASE("run_tracker: detached and lost runs are no longer waited for",
          "[protocol][resume][tracker]") {
  run_tracker tracker({"a", "b"}, {});
  tracker.on_event(started("a"));
  tracker.on_event(started("b"));
  tracker.on_event(wire("run_detached", R"({"run_id": "a"})"));
  CHECK(tracker.reports()[0].outcome == run_outcome::detached);
  CHECK(tracker.going("b"));
  tracker.lose("b", "the server no longer has the run");
  CHECK(tracker.reports()[1].outcome == run_outcome::lost);
  CHECK(tracker.reports()[1].detail == "the server no longer has the run");
  CHECK_FALSE(tracker.going("b"));
  CHECK(tracker.all_finished());
}

TEST_CASE("the version 2 answers read as text", "[protocol][resume]") {
  using agentws::format_event_line;
  CHECK(format_event_line(attached("r1", "running", 12), false) ==
        "2026-11-25T17:36:10.123456+00:00 [r1] run_attached state=running last_seq=12");
  CHECK(format_event_line(wire("run_gap", R"({"run_id": "r1", "after_seq": 3, "first_seq": 40})"),
                          false) ==
        "2026-11-25T17:36:10.123456+00:00 [r1] run_gap after_seq=3 first_seq=40: events 4..39 "
        "are no longer kept");
  CHECK(format_event_line(wire("runs", R"({"runs": [
            {"run_id": "r1", "agent": "demo", "state": "running", "last_seq": 5, "attached": true},
            {"run_id": "r2", "agent": "demo", "state": "done", "last_seq": 31, "attached": false}],
            "request_id": "q"})"),
                          false) ==
        "2026-11-25T17:36:10.123456+00:00 [-] runs 2 runs request_id=q\n"
        "  r1  demo  running  last_seq=5  attached\n"
        "  r2  demo  done  last_seq=31");
}

TEST_CASE("interactive attach, detach and start's disconnect policy", "[protocol][interactive]") {
  using namespace agentws;
  auto whole = std::get<interactive_attach>(parse_interactive_line("attach r1"));
  CHECK(whole.request.run_id == "r1");
  CHECK(whole.request.after_seq == -1);
  CHECK(std::get<interactive_attach>(parse_interactive_line("attach r1 17")).request.after_seq ==
        17);
  CHECK(std::get<interactive_detach>(parse_interactive_line("detach r1")).run_id == "r1");
  auto start = std::get<interactive_start>(
      parse_interactive_line("start r1 steps=2 on_disconnect=continue detach_grace_ms=500"));
  CHECK(start.disconnect.on_disconnect == "continue");
  CHECK(start.disconnect.detach_grace_ms == 500u);
  CHECK(start.params.steps == 2u);

  auto mistake = [](std::string_view line) {
    return std::get<interactive_mistake>(parse_interactive_line(line)).message;
  };
  CHECK(mistake("attach") == "usage: attach RUN_ID [SEQ]");
  CHECK(mistake("attach r1 x") == "attach: SEQ is an integer from -1 (the start) up, not 'x'");
  CHECK(mistake("attach r1 -2") == "attach: SEQ is an integer from -1 (the start) up, not '-2'");
  CHECK(mistake("detach") == "usage: detach RUN_ID");
  CHECK(mistake("start r on_disconnect=later") ==
        "on_disconnect is cancel or continue, not 'later'");
  CHECK(interactive_help_text().find("attach RUN_ID [SEQ]") != std::string_view::npos);
  CHECK(interactive_help_text().find("detach RUN_ID") != std::string_view::npos);
}
