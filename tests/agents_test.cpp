// Agents and their input, against a real server on loopback: agents chosen
// by name, structured events whose run_id, step and seq only the server
// writes, input at the start and while running (send_input and
// input_received), validation before the run, and deadlines.
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "test_peer.hpp"

using agentws::server_config;
using namespace agentws::testing;

namespace {

namespace asio = boost::asio;

// Emits its input back, then every input sent to it, as structured events
// (and tries to forge the server's fields); ends on the input "done".
class echo_agent final : public agentws::agent {
 public:
  std::string description() const override { return "Echoes its input"; }
  bool accepts_input() const override { return true; }
  bool takes_demo_params() const override { return false; }
  std::optional<agentws::protocol_error> validate(const json& params, const json& input,
                                                  const agentws::protocol_limits&) const override {
    if (!input.is_object() || !input.contains("text")) {
      agentws::protocol_error error;
      error.code = agentws::protocol_error_code::invalid_input;
      error.message = "input must be an object with text";
      return error;
    }
    if (params.is_object() && params.contains("refuse")) {
      agentws::protocol_error error;
      error.code = agentws::protocol_error_code::invalid_params;
      error.message = "params.refuse is not an option";
      return error;
    }
    return std::nullopt;
  }
  asio::awaitable<void> run(agentws::run_context& context) override {
    json first = {{"kind", "text_delta"},
                  {"text", context.input()["text"]},
                  {"params", context.params_json()},
                  {"run_id", "forged"},
                  {"step", 99},
                  {"seq", 12345}};
    const bool sent = co_await context.emit_fields(first);
    if (!sent) co_return;
    for (;;) {
      std::optional<json> input = co_await context.next_input();
      if (!input || *input == "done") co_return;
      const json echo = {{"kind", "echo"}, {"input", *input}};
      const bool echoed = co_await context.emit_fields(echo);
      if (!echoed) co_return;
    }
  }
};

// Takes input but never reads it.
class deaf_agent final : public agentws::agent {
 public:
  bool accepts_input() const override { return true; }
  asio::awaitable<void> run(agentws::run_context& context) override {
    while (!context.cancelled()) {
      const bool slept = co_await context.sleep_for(std::chrono::milliseconds(50));
      if (!slept) co_return;
    }
  }
};

server_config config_with_agents() {
  server_config config = test_config();
  config.agents = {{"echo", std::make_shared<echo_agent>()},
                   {"deaf", std::make_shared<deaf_agent>()}};
  config.limits.max_input_queue = 2;
  return config;
}

json start_agent(std::string_view run_id, std::string_view agent, json input) {
  return {{"command", "start_run"}, {"run_id", run_id}, {"agent", agent}, {"input", input}};
}

json send_input(std::string_view run_id, json input, std::string_view request_id = "") {
  json command = {{"command", "send_input"}, {"run_id", run_id}, {"input", input}};
  if (!request_id.empty()) command["request_id"] = request_id;
  return command;
}

}  // namespace

TEST_CASE("connected lists the agents, the default first, and the input limits", "[agents]") {
  server_fixture server(config_with_agents());
  test_peer peer(server.port());
  const json payload = peer.expect_event("connected")["payload"];
  CHECK(payload["features"] == json{"params", "request_id", "agents", "input", "resume"});
  REQUIRE(payload["agents"].size() == 3);
  CHECK(payload["agents"][0]["name"] == "demo");
  CHECK(payload["agents"][0]["accepts_input"] == false);
  CHECK(payload["agents"][1] ==
        json{{"name", "echo"}, {"description", "Echoes its input"}, {"accepts_input", true}});
  CHECK(payload["limits"]["max_input_queue"] == 2);
  CHECK(payload["limits"]["max_timeout_ms"] == 86'400'000);
}

TEST_CASE("an unknown agent is refused, and so is a name that is not a string", "[agents]") {
  server_fixture server(config_with_agents());
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_agent("r", "/bin/sh", json{{"text", "x"}}));
  json error = peer.expect_event("error")["payload"];
  CHECK(error["code"] == "unknown_agent");
  CHECK(error["run_id"] == "r");
  peer.send_command({{"command", "start_run"}, {"run_id", "r"}, {"agent", 7}});
  CHECK(peer.expect_event("error")["payload"]["code"] == "unknown_agent");
  // Nothing started: the id is free.
  peer.run_to_completion("r");
}

TEST_CASE("an agent's fields go after the server's run_id, step and seq, which it cannot forge",
          "[agents]") {
  server_fixture server(config_with_agents());
  test_peer peer(server.port());
  peer.expect_event("connected");
  json command = start_agent("e", "echo", json{{"text", "Hel"}});
  command["params"] = {{"model", "small"}, {"steps", "many"}};  // the echo agent's own params
  peer.send_command(command);
  CHECK(peer.expect_event("run_started")["payload"]["run_id"] == "e");
  const json event = peer.expect_event("run_event")["payload"];
  CHECK(event["run_id"] == "e");
  CHECK(event["step"] == 0);
  CHECK(event["seq"] == 1);
  CHECK(event["kind"] == "text_delta");
  CHECK(event["text"] == "Hel");
  CHECK(event["params"] == json{{"model", "small"}, {"steps", "many"}});
  // The raw frame names each of the server's keys once, and in order.
  peer.send_command(send_input("e", "done"));
  CHECK(peer.expect_event("input_received")["payload"]["seq"] == 2);
  const json done = peer.expect_event("run_done")["payload"];
  CHECK(done["seq"] == 3);
}

TEST_CASE("input reaches the agent in order, each logged as input_received", "[agents]") {
  server_fixture server(config_with_agents());
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_agent("e", "echo", json{{"text", "start"}}));
  peer.expect_event("run_started");
  peer.expect_event("run_event");
  for (int i = 0; i < 5; ++i) {
    peer.send_command(send_input("e", json{{"n", i}}, "in-" + std::to_string(i)));
    const json received = peer.expect_event("input_received")["payload"];
    CHECK(received["run_id"] == "e");
    CHECK(received["request_id"] == "in-" + std::to_string(i));
    const json echoed = peer.expect_event("run_event")["payload"];
    CHECK(echoed["kind"] == "echo");
    CHECK(echoed["input"] == json{{"n", i}});
    CHECK(echoed["step"] == i + 1);
  }
  peer.send_command(send_input("e", "done"));
  peer.expect_event("input_received");
  peer.expect_event("run_done");
  // The run has ended: more input is refused as for any run not going.
  peer.send_command(send_input("e", "late"));
  CHECK(peer.expect_event("error")["payload"]["code"] == "run_not_active");
}

TEST_CASE("send_input refusals: no such run, an agent without input, a full queue", "[agents]") {
  server_fixture server(config_with_agents());
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(send_input("nothing", 1, "q"));
  json error = peer.expect_event("error")["payload"];
  CHECK(error["code"] == "run_not_active");
  CHECK(error["request_id"] == "q");
  peer.send_command({{"command", "send_input"}, {"run_id", "nothing"}});
  CHECK(peer.expect_event("error")["payload"]["code"] == "invalid_input");

  peer.send_command(start("demo-run", 100, 1000));
  peer.expect_event("run_started");
  peer.expect_event("run_event");  // its first step at once, the next a second later
  peer.send_command(send_input("demo-run", 1));
  CHECK(peer.expect_event("error")["payload"]["code"] == "input_not_accepted");

  peer.send_command(start_agent("deaf-run", "deaf", nullptr));
  peer.expect_event("run_started");
  peer.send_command(send_input("deaf-run", 1));
  peer.expect_event("input_received");
  peer.send_command(send_input("deaf-run", 2));
  peer.expect_event("input_received");
  peer.send_command(send_input("deaf-run", 3));
  error = peer.expect_event("error")["payload"];
  CHECK(error["code"] == "input_queue_full");
  CHECK(error["message"] == "The run's input queue is full (limit 2)");
  peer.send_command(cancel("deaf-run"));
  peer.expect_event("run_cancelled");
}

TEST_CASE("an agent refuses a bad start before the run exists", "[agents]") {
  server_fixture server(config_with_agents());
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start_agent("e", "echo", json{{"no_text", 1}}));
  json error = peer.expect_event("error")["payload"];
  CHECK(error["code"] == "invalid_input");
  CHECK(error["run_id"] == "e");
  json command = start_agent("e", "echo", json{{"text", "x"}});
  command["params"] = {{"refuse", true}};
  command["request_id"] = "r1";
  peer.send_command(command);
  error = peer.expect_event("error")["payload"];
  CHECK(error["code"] == "invalid_params");
  CHECK(error["request_id"] == "r1");
  // The demo agent keeps version 1's params rules.
  peer.send_command({{"command", "start_run"}, {"run_id", "d"}, {"params", {{"steps", -1}}}});
  CHECK(peer.expect_event("error")["payload"]["message"] ==
        "params.steps must be an integer from 0 to 10000000");
}

TEST_CASE("a run past its timeout_ms is cancelled with reason timeout", "[agents]") {
  server_fixture server(config_with_agents());
  test_peer peer(server.port());
  peer.expect_event("connected");
  json command = start("slow", 1000, 50);
  command["timeout_ms"] = 200;
  peer.send_command(command);
  const std::vector<json> events = peer.events_until_terminal("slow", 5000ms);
  REQUIRE(events.back()["event_type"] == "run_cancelled");
  CHECK(events.back()["payload"]["reason"] == "timeout");
  CHECK(events.size() < 20);  // stopped long before its 1000 steps
  for (const json& bad : {json(0), json("200"), json(-5), json(86'400'001)}) {
    json refused = start("t", 1, 0);
    refused["timeout_ms"] = bad;
    peer.send_command(refused);
    const json error = peer.expect_event("error")["payload"];
    CHECK(error["code"] == "invalid_timeout");
    CHECK(error["message"] == "timeout_ms must be an integer from 1 to 86400000");
  }
  CHECK(server.wait_for_stats(
      [](const agentws::server_stats& s) { return s.runs_cancelled_timeout == 1; }));
}
