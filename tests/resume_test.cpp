// Runs that outlive their connection, against a real server on loopback:
// sessions, attach_run with after_seq and run_gap, detach_run, list_runs,
// on_disconnect and detach_grace_ms, ownership, retention, shutdown.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "raw_peer.hpp"
#include "test_peer.hpp"

using agentws::server_config;
using agentws::server_stats;
using namespace agentws::testing;

namespace {

json start_continuing(std::string_view run_id, int steps, int interval_ms) {
  json command = start(run_id, steps, interval_ms);
  command["on_disconnect"] = "continue";
  return command;
}

json attach(std::string_view run_id, std::int64_t after_seq, std::string_view request_id = "") {
  json command = {{"command", "attach_run"}, {"run_id", run_id}, {"after_seq", after_seq}};
  if (!request_id.empty()) command["request_id"] = request_id;
  return command;
}

json list_runs() {
  return {{"command", "list_runs"}};
}

std::string target_for(const std::string& session) {
  return "/ws?session=" + session;
}

// The seqs of `events`, in order.
std::vector<std::uint64_t> seqs_of(const std::vector<json>& events) {
  std::vector<std::uint64_t> seqs;
  for (const json& e : events) {
    if (e["payload"].contains("seq")) seqs.push_back(e["payload"]["seq"].get<std::uint64_t>());
  }
  return seqs;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to_inclusive) {
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = from; v <= to_inclusive; ++v)
    values.push_back(v);
  return values;
}

// Reads events of `run_id` until one with seq >= `seq` arrived.
std::vector<json> events_until_seq(test_peer& peer, std::string_view run_id, std::uint64_t seq) {
  std::vector<json> events;
  for (;;) {
    auto event = peer.next_event();
    REQUIRE(event);
    if ((*event)["payload"].value("run_id", "") != run_id) continue;
    events.push_back(*event);
    if ((*event)["payload"].contains("seq") && (*event)["payload"]["seq"] >= seq) return events;
  }
}

// The next event of `event_type`; events of runs read meanwhile are skipped.
json next_of(test_peer& peer, std::string_view event_type) {
  for (;;) {
    auto event = peer.next_event();
    REQUIRE(event);
    if ((*event)["event_type"] == event_type) return *event;
    REQUIRE((*event)["payload"].contains("run_id"));
  }
}

// The state list_runs reports for `run_id` ("" when it is not listed).
std::string listed_state(test_peer& peer, std::string_view run_id) {
  peer.send_command(list_runs());
  const json runs = next_of(peer, "runs");
  for (const json& run : runs["payload"]["runs"]) {
    if (run["run_id"] == run_id) return run["state"].get<std::string>();
  }
  return "";
}

// Asks list_runs until `run_id` is in `state` (or gone, for ""), at most
// `tries` times with `pause` between: the state changes on the server's
// clock, never on the test's.
bool wait_for_listed_state(test_peer& peer, std::string_view run_id, std::string_view state,
                           int tries = 200, std::chrono::milliseconds pause = 10ms) {
  for (int i = 0; i < tries; ++i) {
    if (listed_state(peer, run_id) == state) return true;
    std::this_thread::sleep_for(pause);
  }
  return false;
}

}  // namespace

TEST_CASE("connected announces protocol 2, resume, a session and the history limits", "[resume]") {
  server_fixture server;
  test_peer peer(server.port());
  const json connected = peer.expect_event("connected");
  const json& payload = connected["payload"];
  CHECK(payload["message"] == "Connected");
  CHECK(payload["protocol"] == 2);
  CHECK(payload["features"] == json{"params", "request_id", "agents", "input", "resume"});
  CHECK(payload["session"].get<std::string>().size() == 32);
  CHECK(payload["resumed"] == false);
  CHECK(payload["limits"]["history_events"] == 1024);
  CHECK(payload["limits"]["retention_ms"] == 600000);

  // A session with no run has nothing to resume: its key is not kept.
  test_peer idle_again(server.port(), target_for(payload["session"]));
  CHECK(idle_again.expect_event("connected")["payload"]["resumed"] == false);
  peer.run_to_completion("r");
  test_peer again(server.port(), target_for(payload["session"]));
  const json resumed = again.expect_event("connected");
  CHECK(resumed["payload"]["session"] == payload["session"]);
  CHECK(resumed["payload"]["resumed"] == true);

  test_peer unknown(server.port(), target_for("0123456789abcdef0123456789abcdef"));
  const json fresh = unknown.expect_event("connected");
  CHECK(fresh["payload"]["resumed"] == false);
  CHECK(fresh["payload"]["session"] != "0123456789abcdef0123456789abcdef");
}

TEST_CASE("every run-scoped event carries seq: run_started 0, then one more each", "[resume]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start("r", 4, 1));
  const auto events = peer.events_until_terminal("r");
  CHECK(seqs_of(events) == range(0, 5));
  CHECK(events.back()["event_type"] == "run_done");
}

TEST_CASE("a run that continues is resumed on a new connection: exactly the rest, in order",
          "[resume]") {
  // Two I/O threads, connections dealt to them in turn: the second
  // connection follows the run from the other thread.
  server_fixture server;
  std::string session;
  std::vector<json> seen;
  {
    test_peer first(server.port());
    session = first.expect_event("connected")["payload"]["session"];
    first.send_command(start_continuing("r", 40, 10));
    seen = events_until_seq(first, "r", 5);
    first.abort();  // the network drops, no close handshake
  }
  const std::uint64_t last_seen = seen.back()["payload"]["seq"];
  test_peer second(server.port(), target_for(session));
  second.expect_event("connected");
  // Replay from two events back: the overlap must be byte for byte what the
  // first connection was sent, the original ts included.
  second.send_command(attach("r", static_cast<std::int64_t>(last_seen) - 2, "a1"));
  const json attached = second.expect_event("run_attached");
  CHECK(attached["payload"]["run_id"] == "r");
  CHECK(attached["payload"]["state"] == "running");
  CHECK(attached["payload"]["request_id"] == "a1");
  CHECK(attached["payload"]["last_seq"] >= last_seen);
  const auto rest = second.events_until_terminal("r");
  REQUIRE(rest.size() >= 2);
  CHECK(seqs_of(rest) == range(last_seen - 1, 41));
  CHECK(rest[0] == seen[seen.size() - 2]);
  CHECK(rest[1] == seen[seen.size() - 1]);
  CHECK(rest.back()["event_type"] == "run_done");
  // Steps 0..39 exactly once across both connections.
  std::vector<json> all(seen.begin(), seen.end() - 2);
  all.insert(all.end(), rest.begin(), rest.end());
  CHECK(steps_of(all) == iota_steps(40));
}

TEST_CASE("two connections of one session follow one run: each gets every event", "[resume]") {
  server_fixture server;
  test_peer first(server.port());
  const std::string session = first.expect_event("connected")["payload"]["session"];
  first.send_command(start("r", 30, 5));
  first.expect_event("run_started");
  test_peer second(server.port(), target_for(session));
  second.expect_event("connected");
  second.send_command(attach("r", -1));
  second.expect_event("run_attached");
  const auto by_second = second.events_until_terminal("r");
  const auto by_first = first.events_until_terminal("r");
  CHECK(seqs_of(by_second) == range(0, 31));
  CHECK(seqs_of(by_first) == range(1, 31));  // run_started was read above
  CHECK(steps_of(by_first) == iota_steps(30));
  CHECK(steps_of(by_second) == iota_steps(30));
  // The same frames, ts included.
  CHECK(std::vector<json>(by_second.begin() + 1, by_second.end()) == by_first);
}

TEST_CASE("a late attach past the history gets run_gap, then a contiguous stream", "[resume]") {
  server_config config = test_config();
  config.limits.history_events = 5;
  server_fixture server(config);
  test_peer first(server.port());
  const std::string session = first.expect_event("connected")["payload"]["session"];
  first.send_command(start("r", 20, 1));
  const auto events = first.events_until_terminal("r");
  REQUIRE(events.back()["event_type"] == "run_done");  // seq 21

  test_peer late(server.port(), target_for(session));
  late.expect_event("connected");
  late.send_command(attach("r", 3));
  const json attached = late.expect_event("run_attached");
  CHECK(attached["payload"]["state"] == "done");
  CHECK(attached["payload"]["last_seq"] == 21);
  const json gap = late.expect_event("run_gap");
  CHECK(gap["payload"]["run_id"] == "r");
  CHECK(gap["payload"]["after_seq"] == 3);
  CHECK(gap["payload"]["first_seq"] == 17);
  const auto replay = late.events_until_terminal("r");
  CHECK(seqs_of(replay) == range(17, 21));
  CHECK(replay == std::vector<json>(events.end() - 5, events.end()));

  SECTION("a cursor past the last event is refused") {
    late.send_command(attach("r", 22));
    const json refused = late.expect_event("error");
    CHECK(refused["payload"]["code"] == "invalid_option");
    CHECK(refused["payload"]["run_id"] == "r");
    late.send_command(attach("r", 21));  // its last event: nothing to replay
    CHECK(late.expect_event("run_attached")["payload"]["state"] == "done");
    late.send_command(list_runs());
    CHECK(late.expect_event("runs")["payload"]["runs"][0]["attached"] == false);
  }
  SECTION("a cursor inside the history: no gap") {
    late.send_command(attach("r", 18));
    late.expect_event("run_attached");
    const auto tail = late.events_until_terminal("r");
    CHECK(seqs_of(tail) == range(19, 21));
  }
}

TEST_CASE("cancel_run from a second connection of the same owner", "[resume]") {
  server_fixture server;
  test_peer first(server.port());
  const std::string session = first.expect_event("connected")["payload"]["session"];
  first.send_command(start("r", 5, 10'000));
  events_until_seq(first, "r", 1);  // step 0, then a 10 s wait
  test_peer second(server.port(), target_for(session));
  second.expect_event("connected");
  second.send_command({{"command", "cancel_run"}, {"run_id", "r"}, {"request_id", "c"}});
  const json answer = second.expect_event("run_cancelled");
  CHECK(answer["payload"]["request_id"] == "c");
  CHECK(answer["payload"]["reason"] == "client");
  CHECK(answer["payload"]["seq"] == 2);
  const auto rest = first.events_until_terminal("r", 2000ms);
  REQUIRE(rest.size() == 1);
  CHECK(rest[0]["event_type"] == "run_cancelled");
  CHECK(rest[0]["payload"]["seq"] == 2);
  CHECK(rest[0]["payload"]["last_step"] == 0);
  // The id is free again, at once, on either connection.
  second.send_command({{"command", "cancel_run"}, {"run_id", "r"}});
  CHECK(second.expect_event("error")["payload"]["code"] == "run_not_active");
  second.run_to_completion("r");
}

TEST_CASE("a connection that attached and cancels gets one run_cancelled", "[resume]") {
  server_fixture server;
  test_peer owner(server.port());
  const std::string key = owner.expect_event("connected")["payload"]["session"];
  owner.run_to_completion("first");  // from its first run on, the session's key resumes
  test_peer follower(server.port(), target_for(key));
  REQUIRE(follower.expect_event("connected")["payload"]["resumed"] == true);
  // Every run_cancelled the follower ever gets, by run. A second one for a
  // run would be an answer, queued ahead of the answers after it; the run's
  // own may come after them, with the run's events: so count them all, to
  // the end of the test.
  std::map<std::string, int> cancelled;
  const auto read_until = [&](std::string_view event_type, const std::string& run_id) {
    for (;;) {
      auto event = follower.next_event();
      REQUIRE(event);
      if ((*event)["event_type"] == "run_cancelled") ++cancelled[(*event)["payload"]["run_id"]];
      if ((*event)["event_type"] == event_type && (run_id.empty() || cancelled[run_id] > 0)) {
        return;
      }
    }
  };
  constexpr int rounds = 20;
  for (int round = 0; round < rounds; ++round) {
    const std::string run_id = "r" + std::to_string(round);
    owner.send_command(start_continuing(run_id, 1000, 2));
    next_of(owner, "run_started");
    follower.send_command(attach(run_id, -1));
    read_until("run_attached", "");
    follower.send_command(cancel(run_id));
    follower.send_command(list_runs());
    read_until("runs", "");
    if (cancelled[run_id] == 0) read_until("run_cancelled", run_id);
    next_of(owner, "run_cancelled");
  }
  follower.send_command(list_runs());
  read_until("runs", "");
  for (int round = 0; round < rounds; ++round) {
    INFO("round " << round);
    CHECK(cancelled["r" + std::to_string(round)] == 1);
  }
}

TEST_CASE("another owner gets exactly what an unknown run_id gets", "[resume]") {
  server_fixture server;
  test_peer owner(server.port());
  owner.expect_event("connected");
  owner.send_command(start_continuing("mine", 5, 10'000));
  next_of(owner, "run_started");
  test_peer stranger(server.port());
  stranger.expect_event("connected");
  for (const std::string run_id : {"mine", "never-existed"}) {
    INFO(run_id);
    stranger.send_command({{"command", "cancel_run"}, {"run_id", run_id}});
    const json cancel_error = stranger.expect_event("error");
    CHECK(cancel_error["payload"]["code"] == "run_not_active");
    CHECK(cancel_error["payload"]["message"] == "No active run to cancel");
    stranger.send_command(attach(run_id, -1));
    const json attach_error = stranger.expect_event("error");
    CHECK(attach_error["payload"]["code"] == "run_not_found");
    CHECK(attach_error["payload"]["message"] == "No such run");
    stranger.send_command({{"command", "detach_run"}, {"run_id", run_id}});
    CHECK(stranger.expect_event("error")["payload"]["code"] == "run_not_found");
  }
  stranger.send_command(list_runs());
  CHECK(stranger.expect_event("runs")["payload"]["runs"] == json::array());
  // And the owner's own run_id space is its own: the stranger may use "mine".
  stranger.run_to_completion("mine");
  CHECK(listed_state(owner, "mine") == "running");
}

TEST_CASE("with named tokens the token owns the runs, and its session resumes", "[resume]") {
  server_config config = test_config();
  config.tokens = {{"alice", "alice-secret"}, {"bob", "bob-secret"}};
  server_fixture server(config);
  test_peer alice(server.port(), "/ws?token=alice-secret");
  const std::string key = alice.expect_event("connected")["payload"]["session"];
  alice.send_command(start_continuing("job", 3, 10'000));
  next_of(alice, "run_started");
  // Another user of the server sees nothing of it.
  test_peer bob(server.port(), "/ws?token=bob-secret");
  bob.expect_event("connected");
  bob.send_command(attach("job", -1));
  CHECK(bob.expect_event("error")["payload"]["code"] == "run_not_found");
  bob.send_command(list_runs());
  CHECK(bob.expect_event("runs")["payload"]["runs"] == json::array());
  // The same token on a fresh connection, without the key, owns the run.
  {
    test_peer other_tab(server.port(), "/ws?token=alice-secret");
    other_tab.expect_event("connected");
    CHECK(listed_state(other_tab, "job") == "running");
  }
  // The token's runs keep the session: its key resumes after a drop.
  alice.abort();
  test_peer back(server.port(), "/ws?token=alice-secret&session=" + key);
  const json connected = back.expect_event("connected");
  CHECK(connected["payload"]["resumed"] == true);
  CHECK(connected["payload"]["session"] == key);
  back.send_command(attach("job", 0));
  CHECK(next_of(back, "run_attached")["payload"]["run_id"] == "job");
  back.send_command(cancel("job"));
  CHECK(next_of(back, "run_cancelled")["payload"]["run_id"] == "job");
}

TEST_CASE("a follower closed for not reading resumes its run on a new connection", "[resume]") {
  server_config config = test_config();
  // Long enough for the peer that comes back to read the replay without a
  // pause that long, under a sanitizer too.
  config.send_timeout = 1000ms;
  config.handshake_timeout = 20s;  // the close deadline: the peer reads again long before it
  // The whole run stays in its history: the resume is exact, no gap.
  config.limits.history_events = 100'000;
  config.limits.history_bytes = 32 * 1024 * 1024;
  server_fixture server(config);
  raw_peer stalled(server.port(), 16 * 1024);  // a small receive buffer, read by nobody
  const auto answer = stalled.upgrade();
  REQUIRE(answer);
  REQUIRE(answer->status == 101);
  const std::string key = stalled.expect_event("connected")["payload"]["session"];
  constexpr std::uint64_t steps = 20'000;  // far more than every buffer on the way holds
  stalled.send_command(start_continuing("long", static_cast<int>(steps), 0));
  REQUIRE(server.wait_for_stats([](const server_stats& s) { return s.slow_consumer_closes == 1; },
                                10s));
  // Closed as today: what was sent, in order, then 1008.
  std::uint64_t last_seq = 0;
  bool started = false;
  while (std::optional<json> event = stalled.next_event(5000ms)) {
    INFO("event: " << event->dump());
    if ((*event)["event_type"] == "run_started") {
      started = true;
      continue;
    }
    REQUIRE((*event)["event_type"] == "run_event");
    REQUIRE((*event)["payload"]["seq"] == last_seq + 1);
    ++last_seq;
  }
  CHECK(started);
  CHECK(stalled.close_code() == 1008u);
  REQUIRE(last_seq < steps);

  // Back with the session: exactly the rest, in order, to the end.
  test_peer back(server.port(), target_for(key));
  CHECK(back.expect_event("connected")["payload"]["resumed"] == true);
  back.send_command(attach("long", static_cast<std::int64_t>(last_seq)));
  CHECK(next_of(back, "run_attached")["payload"]["run_id"] == "long");
  std::uint64_t next_seq = last_seq + 1;
  for (;;) {
    const std::optional<json> event = back.next_event(10s);
    REQUIRE(event);
    const std::string type = (*event)["event_type"];
    INFO("event: " << event->dump());
    REQUIRE((type == "run_event" || type == "run_done"));
    REQUIRE((*event)["payload"]["seq"] == next_seq);
    ++next_seq;
    if (type == "run_done") break;
  }
  CHECK(next_seq == steps + 2);  // every step, then run_done
}

TEST_CASE("list_runs, detach_run and attach_run again", "[resume]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start("r", 60, 10));
  events_until_seq(peer, "r", 2);
  peer.send_command(list_runs());
  const json runs = peer.expect_event("runs");
  REQUIRE(runs["payload"]["runs"].size() == 1);
  const json& listed = runs["payload"]["runs"][0];
  CHECK(listed["run_id"] == "r");
  CHECK(listed["agent"] == "demo");
  CHECK(listed["state"] == "running");
  CHECK(listed["attached"] == true);
  CHECK(listed["last_seq"] >= 2);

  peer.send_command({{"command", "detach_run"}, {"run_id", "r"}, {"request_id", "d"}});
  // Events queued before the detach may still come; then run_detached.
  std::vector<json> before;
  for (;;) {
    auto event = peer.next_event();
    REQUIRE(event);
    if ((*event)["event_type"] == "run_detached") {
      CHECK((*event)["payload"]["request_id"] == "d");
      break;
    }
    before.push_back(*event);
  }
  peer.send_command({{"command", "detach_run"}, {"run_id", "r"}});
  CHECK(peer.expect_event("error")["payload"]["code"] == "not_attached");
  peer.send_command(list_runs());
  CHECK(peer.expect_event("runs")["payload"]["runs"][0]["attached"] == false);

  const std::uint64_t last = seqs_of(before).empty() ? 2 : seqs_of(before).back();
  peer.send_command(attach("r", static_cast<std::int64_t>(last)));
  peer.expect_event("run_attached");
  peer.send_command(attach("r", -1));
  // The replay may already be on its way: keep it for the check below.
  for (;;) {
    auto event = peer.next_event();
    REQUIRE(event);
    if ((*event)["event_type"] == "error") {
      CHECK((*event)["payload"]["code"] == "already_attached");
      break;
    }
    peer.stash.push_back(*event);
  }
  const auto rest = peer.events_until_terminal("r");
  CHECK(seqs_of(rest) == range(last + 1, 61));
}

TEST_CASE("on_disconnect and detach_grace_ms", "[resume]") {
  server_fixture server;
  SECTION("by default (version 1) a run ends with its connection and is freed") {
    test_peer first(server.port());
    const std::string session = first.expect_event("connected")["payload"]["session"];
    first.send_command(start("done", 1, 1));
    first.events_until_terminal("done");
    first.send_command(start("r", 5, 10'000));
    first.expect_event("run_started");
    CHECK(listed_state(first, "done") == "done");  // attachable while its connection lives
    first.abort();
    REQUIRE(server.wait_for_stats(
        [](const agentws::server_stats& s) { return s.runs_cancelled_disconnect == 1; }));
    test_peer second(server.port(), target_for(session));
    second.expect_event("connected");
    CHECK(listed_state(second, "r").empty());
    CHECK(listed_state(second, "done").empty());
    second.send_command(attach("r", -1));
    CHECK(second.expect_event("error")["payload"]["code"] == "run_not_found");
  }
  SECTION("a grace keeps it going for its owner to come back") {
    test_peer first(server.port());
    const std::string session = first.expect_event("connected")["payload"]["session"];
    json command = start("r", 30, 10);
    command["detach_grace_ms"] = 60'000;
    first.send_command(command);
    first.expect_event("run_started");
    first.abort();
    test_peer second(server.port(), target_for(session));
    second.expect_event("connected");
    second.send_command(attach("r", 0));
    CHECK(second.expect_event("run_attached")["payload"]["state"] == "running");
    const auto rest = second.events_until_terminal("r");
    CHECK(rest.back()["event_type"] == "run_done");
    CHECK(seqs_of(rest) == range(1, 31));
  }
  SECTION("past the grace it is cancelled") {
    test_peer first(server.port());
    const std::string session = first.expect_event("connected")["payload"]["session"];
    json command = start("r", 30, 1000);
    command["detach_grace_ms"] = 50;
    first.send_command(command);
    first.expect_event("run_started");
    first.abort();
    test_peer second(server.port(), target_for(session));
    second.expect_event("connected");
    CHECK(wait_for_listed_state(second, "r", "cancelled"));
  }
  SECTION("bad values are refused") {
    test_peer peer(server.port());
    peer.expect_event("connected");
    json command = start("r", 1, 1);
    command["on_disconnect"] = "sometimes";
    peer.send_command(command);
    CHECK(peer.expect_event("error")["payload"]["code"] == "invalid_option");
    command = start("r", 1, 1);
    command["detach_grace_ms"] = -1;
    peer.send_command(command);
    CHECK(peer.expect_event("error")["payload"]["code"] == "invalid_option");
    peer.send_command(attach("r", -2));
    CHECK(peer.expect_event("error")["payload"]["code"] == "invalid_option");
  }
}

TEST_CASE("a run nobody follows never waits, and is forgotten after the retention", "[resume]") {
  server_config config = test_config();
  config.limits.retention_ms = 300;
  server_fixture server(config);
  test_peer first(server.port());
  const std::string session = first.expect_event("connected")["payload"]["session"];
  // 20,000 events at full speed, history 1024: nobody reads them.
  first.send_command(start_continuing("r", 20'000, 0));
  first.expect_event("run_started");
  first.send_command({{"command", "detach_run"}, {"run_id", "r"}});
  while (first.next_event()->at("event_type") != "run_detached") {
  }
  CHECK(wait_for_listed_state(first, "r", "done"));
  first.send_command(attach("r", -1));
  CHECK(first.expect_event("run_attached")["payload"]["last_seq"] == 20'001);
  // The history keeps the newest events within 1024 events and 64 KiB.
  const json gap = first.expect_event("run_gap");
  const std::uint64_t first_seq = gap["payload"]["first_seq"];
  CHECK(first_seq >= 20'002 - 1024);
  const auto replay = first.events_until_terminal("r");
  CHECK(seqs_of(replay) == range(first_seq, 20'001));
  std::size_t bytes = 0;
  for (const json& e : replay)
    bytes += e.dump().size();
  CHECK(bytes <= 64 * 1024 + 1024);
  // Gone after the retention (300 ms), on the server's clock.
  CHECK(wait_for_listed_state(first, "r", ""));
  first.send_command(attach("r", -1));
  CHECK(first.expect_event("error")["payload"]["code"] == "run_not_found");
}

TEST_CASE("a graceful stop cancels every run, followed or not", "[resume]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_continuing("followed", 5, 10'000));
  next_of(peer, "run_started");
  peer.send_command(start_continuing("alone", 5, 10'000));
  next_of(peer, "run_started");
  peer.send_command({{"command", "detach_run"}, {"run_id", "alone"}});
  for (;;) {
    auto event = peer.next_event();
    REQUIRE(event);
    if ((*event)["event_type"] == "run_detached") break;
  }
  REQUIRE(server.stop_and_join());
  const auto stats = server.get().stats();
  CHECK(stats.runs_cancelled_shutdown == 2);
  const auto rest = peer.events_until_terminal("followed");
  CHECK(rest.back()["event_type"] == "run_cancelled");
  CHECK(rest.back()["payload"]["reason"] == "shutdown");
}

TEST_CASE("attach and detach and cancel and follower close race on several threads", "[resume]") {
  // Four I/O threads: the run and its followers are on different ones. Each
  // follower checks that what it gets is contiguous; the server must stay
  // consistent (and ThreadSanitizer quiet) through it all.
  server_fixture server(test_config(), 4);
  test_peer home(server.port());
  const std::string session = home.expect_event("connected")["payload"]["session"];
  for (int round = 0; round < 3; ++round) {
    const std::string run_id = "r" + std::to_string(round);
    home.send_command(start_continuing(run_id, 1'000'000, 0));
    next_of(home, "run_started");
    std::vector<std::unique_ptr<test_peer>> followers;
    for (int i = 0; i < 3; ++i) {
      followers.push_back(std::make_unique<test_peer>(server.port(), target_for(session)));
      followers.back()->expect_event("connected");
    }
    for (int cycle = 0; cycle < 4; ++cycle) {
      for (auto& follower : followers) {
        follower->send_command(attach(run_id, -1));
        next_of(*follower, "run_attached");
        // A contiguous stream from wherever the history starts.
        std::optional<std::uint64_t> previous;
        for (int n = 0; n < 50; ++n) {
          auto event = follower->next_event();
          REQUIRE(event);
          const json& payload = (*event)["payload"];
          if ((*event)["event_type"] == "run_gap" || payload.value("run_id", "") != run_id) {
            continue;
          }
          const std::uint64_t seq = payload["seq"];
          if (previous) REQUIRE(seq == *previous + 1);
          previous = seq;
        }
      }
      // One detaches, one drops its connection, one stays.
      followers[0]->send_command({{"command", "detach_run"}, {"run_id", run_id}});
      followers[1]->abort();
      followers[1] = std::make_unique<test_peer>(server.port(), target_for(session));
      followers[1]->expect_event("connected");
      next_of(*followers[0], "run_detached");
      followers[2]->send_command({{"command", "detach_run"}, {"run_id", run_id}});
      next_of(*followers[2], "run_detached");
    }
    // Cancelled from a follower while the home and others stream it.
    followers[2]->send_command(attach(run_id, -1));
    next_of(*followers[2], "run_attached");
    followers[0]->send_command({{"command", "cancel_run"}, {"run_id", run_id}});
    const json cancelled = next_of(*followers[0], "run_cancelled");
    CHECK(cancelled["payload"]["reason"] == "client");
    const auto rest = followers[2]->events_until_terminal(run_id);
    CHECK(rest.back()["event_type"] == "run_cancelled");
    CHECK(rest.back()["payload"]["seq"] == cancelled["payload"]["seq"]);
    home.events_until_terminal(run_id);
    CHECK(listed_state(home, run_id) == "cancelled");
  }
}
