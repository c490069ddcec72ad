// The run's history (run_log) and the server's table of runs (run_registry)
// and sessions (session_keys): pure decisions, no sockets, no clock of their own.
#include <catch2/catch.hpp>

#include <chrono>
#include <set>
#include <string>

#include "server/run_log.hpp"
#include "server/run_registry.hpp"
#include "server/session_keys.hpp"

using agentws::run_state_name;
using agentws::detail::history_limits;
using agentws::detail::local_run_registry;
using agentws::detail::registry_limits;
using agentws::detail::run_log;
using agentws::detail::session_keys;
using agentws::detail::start_verdict;

namespace {

// Appends "e<seq>" padded to `size` bytes.
std::uint64_t append(run_log& log, std::size_t size = 10) {
  return log.append([size](std::string& out, std::uint64_t seq) {
    std::string event = "e" + std::to_string(seq);
    event.resize(std::max(size, event.size()), '.');
    out.append(event);
  });
}

std::string text_of(const run_log& log, std::uint64_t seq) {
  return std::string(log.at(seq));
}

}  // namespace

TEST_CASE("run_log numbers events from 0 and gives each back as written", "[run_log]") {
  run_log log(history_limits{8, 1024});
  CHECK(log.next_seq() == 0);
  CHECK(log.events() == 0);
  CHECK(log.first_seq() == 0);
  for (std::uint64_t i = 0; i < 5; ++i)
    CHECK(append(log) == i);
  CHECK(log.first_seq() == 0);
  CHECK(log.next_seq() == 5);
  CHECK(log.bytes() == 50);
  for (std::uint64_t i = 0; i < 5; ++i)
    CHECK(text_of(log, i).starts_with("e" + std::to_string(i) + "."));
}

TEST_CASE("run_log keeps the newest events within its event bound", "[run_log]") {
  run_log log(history_limits{4, 1 << 20});
  for (int i = 0; i < 100; ++i)
    append(log);
  CHECK(log.events() == 4);
  CHECK(log.first_seq() == 96);
  CHECK(log.next_seq() == 100);
  for (std::uint64_t seq = 96; seq < 100; ++seq)
    CHECK(text_of(log, seq).starts_with("e" + std::to_string(seq) + "."));
}

TEST_CASE("run_log keeps the newest events within its byte bound, the newest always", "[run_log]") {
  run_log log(history_limits{1000, 100});
  for (int i = 0; i < 25; ++i)
    append(log, 30);
  CHECK(log.events() == 3);  // 90 bytes; a fourth would make 120
  CHECK(log.bytes() == 90);
  CHECK(log.first_seq() == 22);
  SECTION("an event larger than the bound is still kept, alone") {
    append(log, 500);
    CHECK(log.events() == 1);
    CHECK(log.first_seq() == 25);
    CHECK(log.at(25).size() == 500);
    append(log, 30);
    CHECK(log.events() == 1);
    CHECK(log.first_seq() == 26);
  }
}

TEST_CASE("run_log reuses its memory while a run streams for long", "[run_log]") {
  run_log log(history_limits{64, 4096});
  for (int i = 0; i < 10'000; ++i)
    append(log, 100);
  const std::size_t steady = log.memory_bytes();
  for (int i = 0; i < 100'000; ++i)
    append(log, 100);
  CHECK(log.memory_bytes() == steady);
  // At most about twice the byte bound, plus the index.
  CHECK(steady <= 3 * 4096 + 4 * 64 * sizeof(std::size_t));
  for (std::uint64_t seq = log.first_seq(); seq < log.next_seq(); ++seq)
    REQUIRE(text_of(log, seq).starts_with("e" + std::to_string(seq) + "."));
  SECTION("shrink keeps what is live and gives the rest back") {
    log.shrink();
    CHECK(log.memory_bytes() < steady);
    CHECK(log.events() == 40);
    CHECK(text_of(log, log.next_seq() - 1).starts_with("e" + std::to_string(log.next_seq() - 1)));
  }
}

TEST_CASE("run_log plans a replay from a cursor, with a gap when events are gone", "[run_log]") {
  run_log log(history_limits{5, 1 << 20});
  for (int i = 0; i < 12; ++i)
    append(log);  // holds 7..11
  SECTION("from the start: the oldest held, a gap") {
    const auto plan = log.plan_replay(-1);
    CHECK(plan.gap);
    CHECK(plan.from == 7);
    CHECK(plan.end == 12);
  }
  SECTION("a cursor just before the oldest held: no gap") {
    const auto plan = log.plan_replay(6);
    CHECK_FALSE(plan.gap);
    CHECK(plan.from == 7);
  }
  SECTION("a cursor further back: a gap") {
    const auto plan = log.plan_replay(5);
    CHECK(plan.gap);
    CHECK(plan.from == 7);
  }
  SECTION("a cursor inside: the rest") {
    const auto plan = log.plan_replay(9);
    CHECK_FALSE(plan.gap);
    CHECK(plan.from == 10);
    CHECK(plan.end == 12);
  }
  SECTION("a cursor at or past the end: nothing") {
    CHECK(log.plan_replay(11).from == 12);
    CHECK_FALSE(log.plan_replay(11).gap);
    CHECK(log.plan_replay(500).from == 12);
    CHECK_FALSE(log.plan_replay(500).gap);
  }
  SECTION("nothing lost: from the start, no gap") {
    run_log whole(history_limits{5, 1 << 20});
    append(whole);
    append(whole);
    const auto plan = whole.plan_replay(-1);
    CHECK_FALSE(plan.gap);
    CHECK(plan.from == 0);
    CHECK(plan.end == 2);
  }
}

namespace {
using clock_type = std::chrono::steady_clock;
const clock_type::time_point t0{};
// Entries the tests never dereference: the registry never does either.
std::shared_ptr<agentws::detail::server_run> no_run() {
  return nullptr;
}
}  // namespace

TEST_CASE("run_registry: one going run per owner and id, isolated between owners",
          "[run_registry]") {
  local_run_registry registry(registry_limits{4, 10, std::chrono::milliseconds(1000)});
  CHECK(registry.start("alice", "r1", no_run()) == start_verdict::started);
  CHECK(registry.start("alice", "r1", no_run()) == start_verdict::already_active);
  CHECK(registry.start("bob", "r1", no_run()) == start_verdict::started);
  CHECK(registry.counts().running == 2);
  CHECK(registry.has_runs("alice"));
  CHECK_FALSE(registry.has_runs("carol"));
  CHECK(registry.list("alice").size() == 1);
  CHECK(registry.list("carol").empty());
  CHECK(registry.find("carol", "r1") == nullptr);
}

TEST_CASE("run_registry: exactly one caller ends a run, and only the run it names",
          "[run_registry]") {
  local_run_registry registry(registry_limits{4, 10, std::chrono::milliseconds(1000)});
  // The registry compares run pointers; the runs themselves are never touched.
  auto first = std::shared_ptr<agentws::detail::server_run>(
      reinterpret_cast<agentws::detail::server_run*>(0x1000), [](auto*) {});
  auto second = std::shared_ptr<agentws::detail::server_run>(
      reinterpret_cast<agentws::detail::server_run*>(0x2000), [](auto*) {});
  REQUIRE(registry.start("alice", "r1", first) == start_verdict::started);
  // A cancel and the run's own end race: one wins.
  CHECK(registry.end("alice", "r1", first.get(), run_state_name::cancelled, t0));
  CHECK_FALSE(registry.end("alice", "r1", first.get(), run_state_name::done, t0));
  CHECK(registry.find("alice", "r1") == first);  // retained
  CHECK(registry.list("alice").at(0).state == run_state_name::cancelled);
  // A new run of the id replaces the retained one; a late end of the old
  // run does not touch it.
  REQUIRE(registry.start("alice", "r1", second) == start_verdict::started);
  CHECK(registry.find("alice", "r1") == second);
  CHECK_FALSE(registry.end("alice", "r1", first.get(), run_state_name::done, t0));
  CHECK(registry.list("alice").at(0).state == run_state_name::running);
  // Another owner cannot end it.
  CHECK_FALSE(registry.end("bob", "r1", second.get(), run_state_name::cancelled, t0));
  CHECK(registry.counts().running == 1);
}

TEST_CASE("run_registry: limits per owner and on detached runs", "[run_registry]") {
  local_run_registry registry(registry_limits{2, 1, std::chrono::milliseconds(1000)});
  auto run = [](std::uintptr_t n) {
    return std::shared_ptr<agentws::detail::server_run>(
        reinterpret_cast<agentws::detail::server_run*>(n), [](auto*) {});
  };
  const auto a = run(0x10), b = run(0x20), c = run(0x30);
  REQUIRE(registry.start("alice", "a", a) == start_verdict::started);
  REQUIRE(registry.start("alice", "b", b) == start_verdict::started);
  CHECK(registry.start("alice", "c", c) == start_verdict::owner_limit);
  CHECK(registry.start("bob", "c", c) == start_verdict::started);
  // An ended run frees its owner's slot.
  REQUIRE(registry.end("alice", "a", a.get(), run_state_name::done, t0));
  CHECK(registry.start("alice", "c", c) == start_verdict::started);

  CHECK(registry.set_detached("alice", "b", b.get(), true));
  CHECK(registry.counts().detached == 1);
  CHECK_FALSE(registry.set_detached("alice", "c", c.get(), true));  // the server's limit
  CHECK(registry.set_detached("alice", "b", b.get(), false));
  CHECK(registry.set_detached("alice", "c", c.get(), true));
  // Ending a detached run frees its place.
  REQUIRE(registry.end("alice", "c", c.get(), run_state_name::cancelled, t0));
  CHECK(registry.counts().detached == 0);
}

TEST_CASE("run_registry: an ended run is kept for the retention, then forgotten",
          "[run_registry]") {
  using std::chrono::milliseconds;
  local_run_registry registry(registry_limits{4, 10, milliseconds(1000)});
  auto run = std::shared_ptr<agentws::detail::server_run>(
      reinterpret_cast<agentws::detail::server_run*>(0x10), [](auto*) {});
  REQUIRE(registry.start("alice", "r1", run) == start_verdict::started);
  CHECK(registry.expire(t0 + milliseconds(5000)) == 0);  // going runs stay
  REQUIRE(registry.end("alice", "r1", run.get(), run_state_name::done, t0 + milliseconds(100)));
  CHECK(registry.expire(t0 + milliseconds(1099)) == 0);
  CHECK(registry.find("alice", "r1") == run);
  CHECK(registry.expire(t0 + milliseconds(1100)) == 1);
  CHECK(registry.find("alice", "r1") == nullptr);
  CHECK_FALSE(registry.has_runs("alice"));
  CHECK(registry.counts().retained == 0);
}

TEST_CASE("run_registry: past the per-owner bound, the runs that ended first are forgotten",
          "[run_registry]") {
  using std::chrono::milliseconds;
  local_run_registry registry(registry_limits{2, 10, std::chrono::hours(1)});
  for (int i = 0; i < 5; ++i) {
    const std::string id = "r" + std::to_string(i);
    auto run = std::shared_ptr<agentws::detail::server_run>(
        reinterpret_cast<agentws::detail::server_run*>(0x10 * (i + 1)), [](auto*) {});
    REQUIRE(registry.start("alice", id, run) == start_verdict::started);
    REQUIRE(registry.end("alice", id, run.get(), run_state_name::done, t0 + milliseconds(i)));
  }
  const auto listed = registry.list("alice");
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].run_id == "r3");
  CHECK(listed[1].run_id == "r4");
}

TEST_CASE("session_keys: unguessable keys, resumed by key once they own runs, then forgotten",
          "[session_keys]") {
  using std::chrono::milliseconds;
  session_keys sessions(milliseconds(1000));
  auto first = sessions.open("");
  CHECK_FALSE(first.resumed);
  CHECK(first.key.size() == 32);
  CHECK(first.key.find_first_not_of("0123456789abcdef") == std::string::npos);
  std::set<std::string> keys{first.key};
  for (int i = 0; i < 100; ++i)
    keys.insert(sessions.open("").key);
  CHECK(keys.size() == 101);
  // An idle connection's session is not in the table: nothing to resume.
  CHECK(sessions.size() == 0);
  CHECK_FALSE(sessions.open(first.key).resumed);

  sessions.keep(first, session_keys::owner_of(first.serial));  // its first run
  CHECK(sessions.size() == 1);
  const auto again = sessions.open(first.key);
  CHECK(again.resumed);
  CHECK(again.serial == first.serial);
  CHECK(again.key == first.key);
  const auto unknown = sessions.open("0123456789abcdef0123456789abcdef");
  CHECK_FALSE(unknown.resumed);
  CHECK(unknown.key != "0123456789abcdef0123456789abcdef");

  const auto none = [](const std::string&) { return false; };
  // Both connections of the kept session are open: it stays.
  CHECK(sessions.expire(t0 + std::chrono::hours(1), none) == 0);
  SECTION("a session with an open connection or with runs is kept") {
    session_keys small(milliseconds(1000));
    auto s = small.open("");
    small.keep(s, session_keys::owner_of(s.serial));
    CHECK(small.expire(t0 + std::chrono::hours(1), none) == 0);
    small.close(s.serial, t0, true);
    CHECK(small.expire(t0 + milliseconds(999), none) == 0);
    CHECK(small.expire(t0 + milliseconds(1000), [](const std::string&) { return true; }) == 0);
    CHECK(small.expire(t0 + milliseconds(1000), none) == 1);
    CHECK_FALSE(small.open(s.key).resumed);
  }
  SECTION("with tokens, the runs of the token's owner keep the session") {
    session_keys small(milliseconds(1000));
    auto s = small.open("");
    small.keep(s, "token:alice");
    small.close(s.serial, t0, true);
    const auto alice_has_runs = [](const std::string& owner) { return owner == "token:alice"; };
    CHECK(small.expire(t0 + milliseconds(1000), alice_has_runs) == 0);
    CHECK(small.open(s.key).resumed);
  }
  SECTION("a session left with no connection and no runs is forgotten at once") {
    session_keys small(milliseconds(1000));
    auto s = small.open("");
    small.keep(s, session_keys::owner_of(s.serial));
    const auto twice = small.open(s.key);
    small.close(s.serial, t0, false);
    CHECK(small.size() == 1);  // one connection still open
    small.close(twice.serial, t0, false);
    CHECK(small.size() == 0);
    CHECK_FALSE(small.open(s.key).resumed);
  }
}

TEST_CASE("run_registry: a version 1 run is forgotten with its connection once ended",
          "[run_registry]") {
  local_run_registry registry(registry_limits{8, 10, std::chrono::hours(1)});
  auto run = [](std::uintptr_t n) {
    return std::shared_ptr<agentws::detail::server_run>(
        reinterpret_cast<agentws::detail::server_run*>(n), [](auto*) {});
  };
  const auto v1 = run(0x10), kept = run(0x20), going = run(0x30), other = run(0x40);
  REQUIRE(registry.start("alice", "v1", v1, 7) == start_verdict::started);
  REQUIRE(registry.start("alice", "kept", kept, 0) == start_verdict::started);
  REQUIRE(registry.start("alice", "going", going, 7) == start_verdict::started);
  REQUIRE(registry.start("alice", "other", other, 8) == start_verdict::started);
  for (const auto& [id, r] : {std::pair{"v1", v1}, {"kept", kept}, {"other", other}})
    REQUIRE(registry.end("alice", id, r.get(), run_state_name::done, t0));
  registry.forget_ended_with("alice", 7);
  CHECK(registry.find("alice", "v1") == nullptr);
  CHECK(registry.find("alice", "kept") == kept);
  CHECK(registry.find("alice", "going") == going);  // still going: the connection cancels it
  CHECK(registry.find("alice", "other") == other);  // another connection's
  SECTION("forget takes only the run it names, and only once ended") {
    registry.forget("alice", "going", going.get());
    CHECK(registry.find("alice", "going") == going);
    registry.forget("alice", "kept", other.get());
    CHECK(registry.find("alice", "kept") == kept);
    registry.forget("alice", "kept", kept.get());
    CHECK(registry.find("alice", "kept") == nullptr);
    CHECK(registry.counts().retained == 1);
  }
}
