// Program agents against a real server on loopback, with real processes
// (/bin/sh scripts): the stdin/stdout protocol both ways, exit statuses,
// input, limits, and every way a run stops (cancel, a client that does not
// read, timeout, disconnect, shutdown) with its process group stopped and
// reaped after the run's last event.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agentws/program_agent.hpp"
#include "raw_peer.hpp"
#include "test_peer.hpp"

using agentws::server_config;
using namespace agentws::testing;

namespace {

using agentws::program_framing;
using agentws::program_spec;

program_spec shell(std::string script) {
  program_spec spec;
  spec.argv = {"/bin/sh", "-c", std::move(script)};
  spec.kill_grace = std::chrono::milliseconds(2000);
  return spec;
}

struct agent_setup {
  std::string name;
  program_spec spec;
};

// A server offering these program agents, all sharing one process limit.
server_config config_with(std::vector<agent_setup> agents,
                          const std::shared_ptr<agentws::process_limit>& limit) {
  server_config config = test_config();
  for (auto& agent : agents) {
    config.agents.push_back(
        {agent.name, agentws::make_program_agent(agent.name, std::move(agent.spec), limit)});
  }
  return config;
}

json start_program(std::string_view run_id, std::string_view agent, json input = nullptr) {
  json command = {{"command", "start_run"}, {"run_id", run_id}, {"agent", agent}};
  if (!input.is_null()) command["input"] = input;
  return command;
}

// Polls `condition` every 10 ms until it holds or `limit` passes.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// Gone: no such process (reaped, by us or, for a grandchild, by init).
bool process_gone(pid_t pid) {
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

// Children of this process that are zombies (exited, not reaped).
int zombie_children() {
  int zombies = 0;
  DIR* proc = ::opendir("/proc");
  if (!proc) return -1;
  const pid_t self = ::getpid();
  while (const dirent* entry = ::readdir(proc)) {
    const std::string name = entry->d_name;
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat("/proc/" + name + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const std::size_t close = line.rfind(')');
    if (close == std::string::npos || close + 4 >= line.size()) continue;
    const char state = line[close + 2];
    const pid_t parent = std::stoi(line.substr(close + 4));
    if (parent == self && state == 'Z') ++zombies;
  }
  ::closedir(proc);
  return zombies;
}

pid_t pid_from(const json& event) {
  return static_cast<pid_t>(std::stol(event["payload"]["text"].get<std::string>()));
}

}  // namespace

TEST_CASE(
    "a program agent: its start line, JSON lines as fields it cannot forge, other lines as "
    "text",
    "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  server_fixture server(config_with(
      {{"echo",
        shell(
            R"(read start; printf 'got %s\n' "$start";)"
            R"( echo '{"kind": "text_delta", "text": "Hel", "run_id": "forged", "seq": 99, "step": 7}';)"
            R"( echo 'plain line'; echo '[1, 2]'; echo "$AGENTWS_RUN_ID $AGENTWS_AGENT $HOME")")}},
      limit));
  test_peer peer(server.port());
  peer.expect_event("connected");
  json command = start_program("r1", "echo", json{{"prompt", "hi"}});
  command["params"] = {{"temperature", 0}};
  peer.send_command(command);
  const std::vector<json> events = peer.events_until_terminal("r1");
  REQUIRE(events.size() == 7);
  CHECK(events[0]["event_type"] == "run_started");
  const std::string echoed = events[1]["payload"]["text"];
  REQUIRE(echoed.starts_with("got "));
  const json start = json::parse(echoed.substr(4));
  CHECK(start == json{{"type", "start"},
                      {"run_id", "r1"},
                      {"input", {{"prompt", "hi"}}},
                      {"params", {{"temperature", 0}}}});
  const json& fields = events[2]["payload"];
  CHECK(fields["run_id"] == "r1");
  CHECK(fields["step"] == 1);
  CHECK(fields["seq"] == 2);
  CHECK(fields["kind"] == "text_delta");
  CHECK(fields["text"] == "Hel");
  CHECK(events[3]["payload"]["text"] == "plain line");
  CHECK(events[4]["payload"]["text"] == "[1, 2]");  // JSON, but not an object
  // Only what the server sets: the run's id and the agent's name, no HOME.
  CHECK(events[5]["payload"]["text"] == "r1 echo ");
  CHECK(events[6]["event_type"] == "run_done");
  CHECK_FALSE(events[6]["payload"].contains("ok"));
  CHECK(eventually([&] { return limit->live() == 0; }));
}

TEST_CASE("a program's exit code or signal ends its run with run_done ok false and its stderr",
          "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  server_fixture server(
      config_with({{"fails", shell("echo working; echo 'Traceback: oops' >&2; exit 3")},
                   {"killed", shell("echo working; kill -KILL $$")}},
                  limit));
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_program("a", "fails"));
  std::vector<json> events = peer.events_until_terminal("a");
  json done = events.back()["payload"];
  CHECK(events.back()["event_type"] == "run_done");
  CHECK(done["ok"] == false);
  CHECK(done["exit_code"] == 3);
  CHECK(done["error"].get<std::string>().find("exit code 3") != std::string::npos);
  CHECK(done["error"].get<std::string>().find("Traceback: oops") != std::string::npos);

  peer.send_command(start_program("b", "killed"));
  events = peer.events_until_terminal("b");
  done = events.back()["payload"];
  CHECK(done["ok"] == false);
  CHECK(done["signal"] == "SIGKILL");
  CHECK_FALSE(done.contains("exit_code"));
}

TEST_CASE(
    "input reaches the program in order, after its start line; one without input gets end "
    "of file",
    "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  program_spec deaf = shell("read start; if read more; then echo got; else echo eof; fi");
  deaf.accepts_input = false;
  server_fixture server(config_with(
      {{"chat", shell("read start; echo ready; read a; printf 'got %s\\n' \"$a\"; read b; "
                      "printf 'got %s\\n' \"$b\"")},
       {"deaf", deaf}},
      limit));
  test_peer peer(server.port());
  const json connected = peer.expect_event("connected")["payload"];
  CHECK(connected["agents"][1] ==
        json{{"name", "chat"}, {"description", "runs /bin/sh"}, {"accepts_input", true}});
  peer.send_command(start_program("c", "chat"));
  peer.expect_event("run_started");
  CHECK(peer.expect_event("run_event")["payload"]["text"] == "ready");
  peer.send_command({{"command", "send_input"}, {"run_id", "c"}, {"input", {{"answer", "yes"}}}});
  peer.send_command({{"command", "send_input"}, {"run_id", "c"}, {"input", "second"}});
  const std::vector<json> events = peer.events_until_terminal("c");
  std::vector<json> lines;
  int received = 0;
  for (const json& event : events) {
    if (event["event_type"] == "input_received") ++received;
    if (event["event_type"] != "run_event") continue;
    const std::string line = event["payload"]["text"];
    REQUIRE(line.starts_with("got "));
    lines.push_back(json::parse(line.substr(4)));
  }
  CHECK(received == 2);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == json{{"type", "input"}, {"input", {{"answer", "yes"}}}});
  CHECK(lines[1] == json{{"type", "input"}, {"input", "second"}});
  CHECK(events.back()["event_type"] == "run_done");

  peer.send_command(start_program("d", "deaf"));
  peer.expect_event("run_started");
  CHECK(peer.expect_event("run_event")["payload"]["text"] == "eof");
  peer.send_command({{"command", "send_input"}, {"run_id", "d"}, {"input", 1}});
  // Either the run already ended, or the agent takes no input: never delivered.
  bool refused = false;
  for (const json& event : peer.events_until_terminal("d"))
    refused = refused || event["event_type"] == "error";
  if (!refused) {
    const json error = peer.expect_event("error")["payload"];
    CHECK((error["code"] == "input_not_accepted" || error["code"] == "run_not_active"));
  }
}

TEST_CASE("text framing: the input as one line, every stdout line as text", "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  program_spec text =
      shell(R"(read a; printf '%s\n' "$a"; echo '{"kind": "x"}'; read b; printf '%s\n' "$b")");
  text.framing = program_framing::text;
  server_fixture server(config_with({{"lines", text}}, limit));
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_program("t", "lines", "hello world"));
  peer.expect_event("run_started");
  CHECK(peer.expect_event("run_event")["payload"]["text"] == "hello world");
  const json second = peer.expect_event("run_event")["payload"];
  CHECK(second["text"] == R"({"kind": "x"})");
  CHECK_FALSE(second.contains("kind"));
  peer.send_command({{"command", "send_input"}, {"run_id", "t"}, {"input", {{"n", 1}}}});
  const std::vector<json> rest = peer.events_until_terminal("t");
  REQUIRE(rest.size() == 3);
  CHECK(rest[1]["payload"]["text"] == R"({"n":1})");
  CHECK(rest[2]["event_type"] == "run_done");
  // A line break would split the input in two lines: refused, at the start
  // and in a send_input, which leaves the run's input open.
  peer.send_command(start_program("u", "lines", "two\nlines"));
  CHECK(peer.expect_event("error")["payload"]["code"] == "invalid_input");
  peer.send_command(start_program("v", "lines", "first"));
  peer.expect_event("run_started");
  CHECK(peer.expect_event("run_event")["payload"]["text"] == "first");
  peer.expect_event("run_event");
  peer.send_command({{"command", "send_input"}, {"run_id", "v"}, {"input", "a\rb"}});
  const json refusal = peer.expect_event("error")["payload"];
  CHECK(refusal["code"] == "invalid_input");
  CHECK(refusal["run_id"] == "v");
  peer.send_command({{"command", "send_input"}, {"run_id", "v"}, {"input", "last"}});
  const std::vector<json> end = peer.events_until_terminal("v");
  REQUIRE(end.size() == 3);
  CHECK(end[1]["payload"]["text"] == "last");
}

TEST_CASE("a stdout line over the limit ends the run with an error naming it, and the process",
          "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  program_spec chatty = shell("echo short; head -c 5000 /dev/zero | tr '\\0' a; echo; sleep 60");
  chatty.max_line_bytes = 1000;
  server_fixture server(config_with({{"long", chatty}}, limit));
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_program("l", "long"));
  const std::vector<json> events = peer.events_until_terminal("l");
  REQUIRE(events.size() == 3);
  CHECK(events[1]["payload"]["text"] == "short");
  const json done = events[2]["payload"];
  CHECK(events[2]["event_type"] == "run_done");
  CHECK(done["ok"] == false);
  CHECK(done["error"].get<std::string>().find("1000 bytes") != std::string::npos);
  // The process (sleeping) is stopped: SIGTERM ends sh and its sleep.
  CHECK(eventually([&] { return limit->live() == 0; }));
}

TEST_CASE("a program that cannot start is refused with unavailable, and the server goes on",
          "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  const std::string not_executable = "/proc/self/status";
  program_spec missing;
  missing.argv = {"/nonexistent/agent"};
  program_spec plain_file;
  plain_file.argv = {not_executable};
  server_fixture server(config_with({{"missing", missing}, {"file", plain_file}}, limit));
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_program("m", "missing"));
  json error = peer.expect_event("error")["payload"];
  CHECK(error["code"] == "unavailable");
  CHECK(error["run_id"] == "m");
  CHECK(error["message"].get<std::string>().find("/nonexistent/agent") != std::string::npos);
  peer.send_command(start_program("f", "file"));
  CHECK(peer.expect_event("error")["payload"]["code"] == "unavailable");
  CHECK(limit->live() == 0);
  peer.run_to_completion("m");  // the id is free, and the demo agent runs
}

TEST_CASE(
    "cancel answers at once; a program ignoring SIGTERM is killed after the grace, its "
    "grandchild with it",
    "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  program_spec stubborn = shell("trap '' TERM; sleep 1000 & echo $$; echo $!; wait; wait; wait");
  stubborn.kill_grace = std::chrono::milliseconds(1500);
  server_fixture server(config_with({{"stubborn", stubborn}}, limit));
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_program("s", "stubborn"));
  peer.expect_event("run_started");
  const pid_t leader = pid_from(peer.expect_event("run_event"));
  const pid_t grandchild = pid_from(peer.expect_event("run_event"));
  const auto cancelled_at = std::chrono::steady_clock::now();
  peer.send_command({{"command", "cancel_run"}, {"run_id", "s"}});
  const json cancelled = peer.expect_event("run_cancelled")["payload"];
  CHECK(cancelled["reason"] == "client");
  // Answered while the process still ignores its SIGTERM.
  CHECK_FALSE(process_gone(leader));
  CHECK(limit->live() == 1);
  REQUIRE(eventually([&] { return process_gone(leader) && process_gone(grandchild); }));
  // Killed by the SIGKILL at the end of the grace, not before it.
  CHECK(std::chrono::steady_clock::now() - cancelled_at >= std::chrono::milliseconds(1400));
  CHECK(eventually([&] { return limit->live() == 0; }));
}

TEST_CASE(
    "a client that does not read: its input still reaches the program, and its cancel "
    "stops the process while it still reads nothing",
    "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  char pattern[] = "/tmp/agentws-inputs-XXXXXX";
  const int fd = ::mkstemp(pattern);
  REQUIRE(fd >= 0);
  ::close(fd);
  const std::string inputs = pattern;
  // Its stdin copied to a file in the background (through fd 3: an
  // asynchronous list's own stdin is /dev/null), while it floods stdout.
  program_spec flood =
      shell(R"(read start; exec 3<&0; )"
            R"((while read l <&3; do echo "$l" >> "$INPUTS"; done) & exec yes flood)");
  flood.env = {"INPUTS=" + inputs};
  server_fixture server(config_with({{"flood", flood}}, limit));
  raw_peer peer(server.port(), 4096);
  peer.open_websocket();
  peer.pause_reading();
  peer.send_command(start_program("f", "flood"));
  // The program fills every buffer on the way, then blocks in write.
  REQUIRE(eventually([&] { return limit->live() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  peer.send_command({{"command", "send_input"}, {"run_id", "f"}, {"input", {{"x", 1}}}});
  const auto file_holds_input = [&] {
    std::ifstream file(inputs);
    std::string line;
    return std::getline(file, line) && line == R"({"type": "input", "input": {"x":1}})";
  };
  CHECK(eventually(file_holds_input));
  ::unlink(inputs.c_str());
  peer.send_command({{"command", "cancel_run"}, {"run_id", "f"}});
  // Stopped, while the client has still read nothing.
  CHECK(eventually([&] { return limit->live() == 0; }));
  peer.resume_reading();
  bool cancelled = false;
  for (int i = 0; i < 1'000'000 && !cancelled; ++i) {
    const auto event = peer.next_event();
    REQUIRE(event);
    if ((*event)["event_type"] == "run_cancelled") cancelled = true;
    REQUIRE((*event)["event_type"] != "run_done");
  }
  CHECK(cancelled);
}

TEST_CASE("a slow reader loses nothing: the program waits in write", "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  server_fixture server(config_with({{"count", shell("seq 1 20000")}}, limit));
  raw_peer peer(server.port(), 4096);
  peer.open_websocket();
  peer.pause_reading();
  peer.send_command(start_program("n", "count"));
  // Far more than the buffers hold waits in the program's pipe meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(limit->live() == 1);
  peer.resume_reading();
  const std::vector<json> events = peer.events_until_terminal("n", std::chrono::seconds(60));
  REQUIRE(events.size() == 20002);
  for (std::size_t i = 1; i <= 20000; ++i) {
    REQUIRE(events[i]["payload"]["text"] == std::to_string(i));
    REQUIRE(events[i]["payload"]["step"] == i - 1);
  }
  CHECK(events.back()["event_type"] == "run_done");
}

TEST_CASE("a deadline, a disconnect and a shutdown each stop the process", "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(8);
  program_spec sleeper = shell("echo $$; exec sleep 1000");
  sleeper.kill_grace = std::chrono::milliseconds(500);
  auto server = std::make_unique<server_fixture>(config_with({{"sleep", sleeper}}, limit));
  pid_t timed_out = 0;
  {
    test_peer peer(server->port());
    peer.expect_event("connected");
    json command = start_program("t", "sleep");
    command["timeout_ms"] = 200;
    peer.send_command(command);
    peer.expect_event("run_started");
    timed_out = pid_from(peer.expect_event("run_event"));
    CHECK(peer.expect_event("run_cancelled")["payload"]["reason"] == "timeout");
    CHECK(eventually([&] { return process_gone(timed_out); }));

    peer.send_command(start_program("d", "sleep"));
    peer.expect_event("run_started");
    const pid_t disconnected = pid_from(peer.expect_event("run_event"));
    peer.close();
    CHECK(eventually([&] { return process_gone(disconnected); }));
  }
  test_peer peer(server->port());
  peer.expect_event("connected");
  peer.send_command(start_program("s", "sleep"));
  peer.expect_event("run_started");
  const pid_t at_shutdown = pid_from(peer.expect_event("run_event"));
  // The server's threads return only once the process is gone.
  REQUIRE(server->stop_and_join());
  CHECK(process_gone(at_shutdown));
  CHECK(limit->live() == 0);
  server.reset();
}

TEST_CASE("max processes counts those being stopped: too_many_processes until they are gone",
          "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(1);
  program_spec stubborn = shell("trap '' TERM; echo up; while :; do sleep 0.05; done");
  stubborn.kill_grace = std::chrono::milliseconds(1000);
  server_fixture server(config_with({{"stubborn", stubborn}}, limit));
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_program("a", "stubborn"));
  peer.expect_event("run_started");
  peer.expect_event("run_event");
  peer.send_command({{"command", "cancel_run"}, {"run_id", "a"}});
  peer.expect_event("run_cancelled");
  peer.send_command(start_program("b", "stubborn"));
  const json error = peer.expect_event("error")["payload"];
  CHECK(error["code"] == "too_many_processes");
  CHECK(error["run_id"] == "b");
  REQUIRE(eventually([&] { return limit->live() == 0; }));
  peer.send_command(start_program("b", "stubborn"));
  CHECK(peer.expect_event("run_started")["payload"]["run_id"] == "b");
}

TEST_CASE("1000 start and cancel cycles leave no process and no zombie", "[programs]") {
  auto limit = std::make_shared<agentws::process_limit>(32);
  server_fixture server(config_with({{"cat", shell("exec cat")}}, limit));
  test_peer peer(server.port());
  peer.expect_event("connected");
  int started = 0;
  int refused = 0;
  for (int i = 0; started < 1000 && i < 20'000; ++i) {
    const std::string id = "r" + std::to_string(i);
    peer.send_command(start_program(id, "cat"));
    const json answer = peer.next_event().value_or(json());
    if (answer["event_type"] == "error") {
      REQUIRE(answer["payload"]["code"] == "too_many_processes");
      ++refused;
      eventually([&] { return limit->live() < limit->max(); });
      continue;
    }
    REQUIRE(answer["event_type"] == "run_started");
    ++started;
    peer.send_command({{"command", "cancel_run"}, {"run_id", id}});
    const std::vector<json> events = peer.events_until_terminal(id);
    REQUIRE(events.back()["event_type"] == "run_cancelled");
  }
  CHECK(started == 1000);
  REQUIRE(eventually([&] { return limit->live() == 0; }, std::chrono::seconds(30)));
  CHECK(zombie_children() == 0);
  CHECK(limit->spawned() == 1000);
}
