// Loopback integration tests: a real server on 127.0.0.1:0, real WebSocket
// peers, small intervals, and every wait bounded.
#include <catch2/catch.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <set>
#include <stdexcept>

#include "test_peer.hpp"

using namespace agentws;
using namespace agentws::testing;

TEST_CASE("connected is the first frame and announces the limits", "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  json connected = peer.expect_event("connected");
  CHECK(connected["payload"]["message"] == "Connected");
  CHECK(connected["payload"]["protocol"] == 2);
  CHECK(connected["payload"]["limits"]["max_message_bytes"] == 1024 * 1024);
  CHECK(connected["payload"]["limits"]["max_active_runs"] == 256);
  CHECK(connected["payload"]["defaults"]["steps"] == 5);
  const std::string ts = connected["ts"];
  CHECK(ts.size() == 32);
  CHECK(ts.ends_with("+00:00"));
}

TEST_CASE("the original scenario: two runs and one cancelled while it waits", "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command({{"command", "start_run"}, {"run_id", "run-001"}});  // server defaults
  peer.send_command(start("run-002", 5, 10'000));
  // run-002 emits step 0 at once, then waits 10 s: cancel it in that wait.
  std::vector<json> second;
  while (steps_of(second).empty()) {
    auto event = peer.next_event();
    REQUIRE(event);
    if ((*event)["payload"]["run_id"] == "run-002") {
      second.push_back(*event);
    } else {
      peer.stash.push_back(*event);
    }
  }
  peer.send_command(cancel("run-002"));
  std::vector<json> rest = peer.events_until_terminal("run-002", 2000ms);
  second.insert(second.end(), rest.begin(), rest.end());
  CHECK(second.front()["event_type"] == "run_started");
  CHECK(steps_of(second) == std::vector<std::uint64_t>{0});
  CHECK(second.back()["event_type"] == "run_cancelled");
  CHECK(second.back()["payload"]["reason"] == "client");

  std::vector<json> first = peer.events_until_terminal("run-001");
  CHECK(first.front()["event_type"] == "run_started");
  CHECK(steps_of(first) == iota_steps(5));
  for (const auto& e : first) {
    if (e["event_type"] == "run_event") {
      CHECK(e["payload"]["text"] ==
            "agent step " + std::to_string(e["payload"]["step"].get<int>()));
    }
  }
  CHECK(first.back()["event_type"] == "run_done");
  // Nothing more for either run after its terminal event.
  peer.run_to_completion("probe");
  for (const auto& e : peer.stash)
    CHECK(e["payload"].value("run_id", "") != "run-002");
}

TEST_CASE("parallel runs interleave on one connection", "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start("a", 4, 20));
  peer.send_command(start("b", 4, 20));
  std::vector<std::string> order;
  int terminals = 0;
  while (terminals < 2) {
    auto event = peer.next_event();
    REQUIRE(event);
    const std::string type = (*event)["event_type"];
    if (type == "run_event") order.push_back((*event)["payload"]["run_id"]);
    if (type == "run_done") ++terminals;
  }
  REQUIRE(order.size() == 8);
  // Both runs had events before either finished its four.
  const auto first_b = std::find(order.begin(), order.end(), "b");
  const auto last_a = std::find(order.rbegin(), order.rend(), "a").base() - 1;
  CHECK(first_b < last_a);
}

TEST_CASE("cancel then start of the same id in one burst starts a fresh run", "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  // A run streaming as fast as it can, so events are in flight at the cancel.
  peer.send_command(start("x", 1'000'000, 0));
  peer.expect_event("run_started");
  peer.expect_event("run_event");
  peer.send_text(cancel("x").dump() + "");
  peer.send_command(start("x", 3, 1));
  std::vector<json> old_run = peer.events_until_terminal("x");
  CHECK(old_run.back()["event_type"] == "run_cancelled");
  const std::vector<std::uint64_t> old_steps = steps_of(old_run);
  for (std::size_t i = 1; i < old_steps.size(); ++i)
    CHECK(old_steps[i] == old_steps[i - 1] + 1);

  std::vector<json> new_run = peer.events_until_terminal("x");
  CHECK(new_run.front()["event_type"] == "run_started");
  CHECK(steps_of(new_run) == iota_steps(3));
  CHECK(new_run.back()["event_type"] == "run_done");
}

TEST_CASE("cancel is prompt while the run waits between steps", "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start("slow", 3, 60'000));
  peer.expect_event("run_started");
  peer.expect_event("run_event");
  peer.send_command(cancel("slow"));
  // The run sleeps for a minute: only a real cancel answers within the limit.
  json cancelled = peer.expect_event("run_cancelled", 3000ms);
  CHECK(cancelled["payload"]["run_id"] == "slow");
  CHECK(server.wait_for_stats([](const server_stats& s) { return s.runs_active == 0; }));
}

TEST_CASE("a run_id can be reused after its run is done", "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.run_to_completion("again", 2, 1);
  peer.run_to_completion("again", 3, 1);
}

TEST_CASE("refused commands answer with errors and keep the connection usable", "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");

  struct refused {
    std::string frame;
    std::string message;
    std::string code;
  };
  const std::vector<refused> cases = {
      {"not json", "Invalid JSON", "invalid_json"},
      {"[1,2]", "Command must be a JSON object", "invalid_command"},
      {R"({"command":"start_run"})", "run_id is required", "missing_run_id"},
      {R"({"command":"cancel_run","run_id":""})", "run_id is required", "missing_run_id"},
      {R"({"command":"dance","run_id":"r"})", "Unknown command", "unknown_command"},
      {R"({"run_id":"r"})", "Unknown command", "unknown_command"},
      {R"({"command":"cancel_run","run_id":"ghost"})", "No active run to cancel", "run_not_active"},
      {R"({"command":"start_run","run_id":"p","params":{"steps":-1}})",
       "params.steps must be an integer from 0 to 10000000", "invalid_params"},
      {R"({"command":"start_run","run_id":"p","params":{"interval_ms":3600001}})",
       "params.interval_ms must be an integer from 0 to 3600000", "invalid_params"},
  };
  for (const auto& c : cases) {
    INFO(c.frame);
    peer.send_text(c.frame);
    json error = peer.expect_event("error");
    CHECK(error["payload"]["message"] == c.message);
    CHECK(error["payload"]["code"] == c.code);
    peer.run_to_completion("after-error");
  }

  SECTION("unknown command echoes what was received") {
    peer.send_text(R"({"command":"dance","run_id":"r","n":[1,{"a":null}]})");
    json error = peer.expect_event("error");
    CHECK(error["payload"]["received"] ==
          json::parse(R"({"command":"dance","run_id":"r","n":[1,{"a":null}]})"));
  }
  SECTION("a binary frame") {
    peer.send_binary(R"({"command":"start_run","run_id":"b"})");
    json error = peer.expect_event("error");
    CHECK(error["payload"]["code"] == "unsupported_frame");
    peer.run_to_completion("after-binary");
  }
  SECTION("a duplicate start") {
    peer.send_command(start("dup", 2, 5'000));
    peer.expect_event("run_started");
    peer.send_text(R"({"command":"start_run","run_id":"dup","request_id":"q1"})");
    json error;
    do {
      error = peer.expect_event(peer.stash.empty() ? "run_event" : "error");
      peer.stash.push_back(error);
    } while (error["event_type"] != "error");
    CHECK(error["payload"]["message"] == "Run already in progress");
    CHECK(error["payload"]["code"] == "run_already_active");
    CHECK(error["payload"]["run_id"] == "dup");
    CHECK(error["payload"]["request_id"] == "q1");
    peer.run_to_completion("after-dup");
  }
}

TEST_CASE("request_id is echoed in the answer to its command", "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_text(
      R"({"command":"start_run","run_id":"r","request_id":"s-1","params":{"steps":1,"interval_ms":60000}})");
  json started = peer.expect_event("run_started");
  CHECK(started["payload"]["request_id"] == "s-1");
  peer.expect_event("run_event");
  peer.send_text(R"({"command":"cancel_run","run_id":"r","request_id":"c-1"})");
  json cancelled = peer.expect_event("run_cancelled");
  CHECK(cancelled["payload"]["request_id"] == "c-1");
}

TEST_CASE("too many runs on one connection is refused and the rest go on", "[loopback]") {
  server_config config = test_config();
  config.limits.max_active_runs = 2;
  server_fixture server(config);
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start("a", 1, 60'000));
  peer.send_command(start("b", 1, 60'000));
  peer.send_command(start("c", 1, 1));
  json error;
  for (;;) {
    error = *peer.next_event();
    if (error["event_type"] == "error") break;
  }
  CHECK(error["payload"]["code"] == "too_many_runs");
  CHECK(error["payload"]["run_id"] == "c");
  peer.send_command(cancel("a"));
  CHECK(peer.events_until_terminal("a").back()["event_type"] == "run_cancelled");
  peer.run_to_completion("c", 1, 1);
}

TEST_CASE("a message over the size limit closes with 1009", "[loopback]") {
  server_config config = test_config();
  config.limits.max_message_bytes = 1024;
  server_fixture server(config);
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_text(std::string(2048, ' '));
  CHECK(peer.wait_for_close() == 1009);
}

TEST_CASE("a disconnect cancels and frees every run of the connection", "[loopback]") {
  server_fixture server;
  {
    test_peer peer(server.port());
    peer.expect_event("connected");
    for (int i = 0; i < 10; ++i)
      peer.send_command(start("r" + std::to_string(i), 5, 60'000));
    REQUIRE(server.wait_for_stats([](const server_stats& s) { return s.runs_active == 10; }));
    peer.abort();
  }
  CHECK(server.wait_for_stats([](const server_stats& s) {
    return s.runs_active == 0 && s.runs_cancelled_disconnect == 10 && s.connections_open == 0;
  }));
}

TEST_CASE("graceful shutdown cancels runs with reason shutdown and closes with 1001",
          "[loopback]") {
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start("long-1", 5, 60'000));
  peer.send_command(start("long-2", 5, 60'000));
  REQUIRE(server.wait_for_stats([](const server_stats& s) { return s.runs_active == 2; }));
  server.get().stop();
  std::set<std::string> cancelled;
  while (cancelled.size() < 2) {
    auto event = peer.next_event();
    REQUIRE(event);
    if ((*event)["event_type"] != "run_cancelled") continue;
    CHECK((*event)["payload"]["reason"] == "shutdown");
    cancelled.insert((*event)["payload"]["run_id"].get<std::string>());
  }
  CHECK(peer.wait_for_close() == 1001);
  CHECK(server.stop_and_join(3000ms));
  CHECK(http_status(server.port(), "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 0);
}

TEST_CASE("a connection that went idle answers again and closes with 1001 on stop", "[loopback]") {
  // An idle connection has no writer: the one that sent `connected` ended in
  // the same strand turn, before any command could be read. Each answer below
  // needs a new writer, and so does the close on stop.
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_text(R"({"command":"cancel_run","run_id":"nothing"})");
  CHECK(peer.expect_event("error")["payload"]["code"] == "run_not_active");
  peer.run_to_completion("first", 2, 1);
  peer.run_to_completion("second", 2, 1);
  server.get().stop();
  CHECK(peer.wait_for_close() == 1001);
  CHECK(server.stop_and_join(3000ms));
}

TEST_CASE("the 101 and the connected frame arrive in one write", "[loopback]") {
  // http_exchange stops at its first read that holds the whole 101 head;
  // sent apart, the 101 would wake that read alone.
  server_fixture server;
  const std::string response = http_exchange(
      server.port(),
      "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  REQUIRE(response.starts_with("HTTP/1.1 101"));
  const std::string frames = response.substr(response.find("\r\n\r\n") + 4);
  REQUIRE(frames.size() > 2);
  CHECK(static_cast<unsigned char>(frames[0]) == 0x81);  // FIN + text
  CHECK(json::parse(frames.substr(frames[1] == 126 ? 4 : 2))["event_type"] == "connected");
}

TEST_CASE("a server needs at least one io_context", "[loopback]") {
  CHECK_THROWS_AS(server(std::span<boost::asio::io_context* const>(), test_config()),
                  std::invalid_argument);
  boost::asio::io_context* none = nullptr;
  CHECK_THROWS_AS(server(std::span<boost::asio::io_context* const>(&none, 1), test_config()),
                  std::invalid_argument);
}

TEST_CASE("stop with no connections returns at once", "[loopback]") {
  server_fixture server;
  const auto begin = std::chrono::steady_clock::now();
  CHECK(server.stop_and_join(3000ms));
  // Well under the 1 s grace period: an idle server does not wait for it.
  CHECK(std::chrono::steady_clock::now() - begin < 900ms);
}

TEST_CASE("HTTP answers health and 404 and 503 past the connection limit", "[loopback]") {
  server_config config = test_config();
  config.max_connections = 1;
  server_fixture server(config);
  CHECK(http_status(server.port(),
                    "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") == 200);
  CHECK(http_status(server.port(), "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 404);
  CHECK(http_status(server.port(),
                    "POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n") ==
        405);
  CHECK(http_status(server.port(), "garbage\r\n\r\n") == 400);
  test_peer first(server.port());
  first.expect_event("connected");
  const std::string upgrade =
      "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  CHECK(http_status(server.port(), upgrade) == 503);
  CHECK(server.get().stats().connections_refused == 1);
  first.close();
  REQUIRE(server.wait_for_stats([](const server_stats& s) { return s.connections_open == 0; }));
  test_peer second(server.port());
  second.expect_event("connected");
}

TEST_CASE("a slow reader loses nothing because runs wait for the outbox", "[loopback]") {
  server_config config = test_config();
  config.outbox_bytes = 1024;  // a few events: the runs must wait often
  server_fixture server(config);
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start("flood-a", 3000, 0));
  peer.send_command(start("flood-b", 3000, 0));
  std::this_thread::sleep_for(100ms);  // not for correctness: lets the outbox fill up first
  std::vector<json> a = peer.events_until_terminal("flood-a", 30000ms);
  std::vector<json> b = peer.events_until_terminal("flood-b", 30000ms);
  CHECK(steps_of(a) == iota_steps(3000));
  CHECK(steps_of(b) == iota_steps(3000));
  CHECK(a.back()["event_type"] == "run_done");
  CHECK(b.back()["event_type"] == "run_done");
}

TEST_CASE("several I/O threads serve many connections in order", "[loopback]") {
  // Catch assertions are not thread-safe, so the peers live on this thread;
  // the concurrency is the server's: four I/O threads, six connections whose
  // runs all stream at once while the peers are read one after another. With
  // one shared context the connections' handlers move between threads.
  const io_layout layout = GENERATE(io_layout::context_per_thread, io_layout::shared_context);
  server_fixture server(test_config(), 4, layout);
  constexpr int peers = 6;
  std::vector<std::unique_ptr<test_peer>> clients;
  for (int i = 0; i < peers; ++i) {
    auto& peer = clients.emplace_back(std::make_unique<test_peer>(server.port()));
    peer->expect_event("connected");
    peer->send_command(start("a", 500, 0));
    peer->send_command(start("b", 500, 0));
  }
  for (auto& peer : clients) {
    std::vector<json> a = peer->events_until_terminal("a", 20000ms);
    std::vector<json> b = peer->events_until_terminal("b", 20000ms);
    CHECK(steps_of(a) == iota_steps(500));
    CHECK(steps_of(b) == iota_steps(500));
  }
  CHECK(server.get().stats().runs_done == 2 * peers);
}

namespace {

// A user-defined agent: proves the seam works and that failures are reported.
class echo_agent final : public agent {
 public:
  boost::asio::awaitable<void> run(run_context& context) override {
    if (context.run_id() == "boom") throw std::runtime_error("model unavailable");
    co_await context.emit("hello " + context.run_id());
    // Any Asio wait is cancelled with the run, not only the context's own.
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, 60s);
    co_await timer.async_wait(boost::asio::use_awaitable);
    co_await context.emit("never");
  }
};

}  // namespace

TEST_CASE("a custom agent plugs in and its failures end the run with ok false", "[loopback]") {
  server_config config = test_config();
  config.agent_logic = std::make_shared<echo_agent>();
  server_fixture server(config);
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command({{"command", "start_run"}, {"run_id", "boom"}});
  std::vector<json> boom = peer.events_until_terminal("boom");
  CHECK(boom.back()["event_type"] == "run_done");
  CHECK(boom.back()["payload"]["ok"] == false);
  CHECK(boom.back()["payload"]["error"] == "model unavailable");

  peer.send_command({{"command", "start_run"}, {"run_id", "friend"}});
  peer.expect_event("run_started");
  CHECK(peer.expect_event("run_event")["payload"]["text"] == "hello friend");
  peer.send_command(cancel("friend"));
  peer.expect_event("run_cancelled", 2000ms);
  CHECK(server.wait_for_stats([](const server_stats& s) { return s.runs_active == 0; }));
}

TEST_CASE("access control answers before the upgrade", "[loopback]") {
  server_config config = test_config();
  config.token = "s3cret";
  server_fixture server(config);
  const std::string upgrade_headers =
      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
  auto upgrade = [&](const std::string& target, const std::string& extra) {
    return http_status(server.port(), "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                                          upgrade_headers + extra + "\r\n");
  };
  CHECK(upgrade("/ws", "") == 401);
  CHECK(upgrade("/ws", "Authorization: Bearer wrong\r\n") == 401);
  CHECK(upgrade("/ws", "Authorization: Bearer s3cret\r\n") == 101);
  CHECK(upgrade("/ws?token=s3cret", "") == 101);
  CHECK(upgrade("/ws?token=s3cret", "Origin: https://evil.example\r\n") == 403);
  CHECK(upgrade("/ws?token=s3cret", "Origin: http://127.0.0.1\r\n") == 101);
  CHECK(http_status(server.port(), "GET /ws HTTP/1.1\r\nHost: rebind.example\r\n" +
                                       upgrade_headers + "Authorization: Bearer s3cret\r\n\r\n") ==
        403);
  CHECK(http_status(server.port(),
                    "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") == 200);
  CHECK(http_status(server.port(),
                    "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") ==
        401);
}

TEST_CASE("metrics count what happened", "[loopback]") {
  server_fixture server;
  {
    test_peer peer(server.port());
    peer.expect_event("connected");
    peer.run_to_completion("m", 3, 1);
    peer.send_text("nope");
    peer.expect_event("error");
    peer.send_text(R"({"command":"start_run","run_id":"c","params":{"interval_ms":60000}})");
    peer.expect_event("run_started");
    peer.expect_event("run_event");
    peer.send_text(R"({"command":"cancel_run","run_id":"c"})");
    peer.expect_event("run_cancelled");
    peer.close();
  }
  REQUIRE(server.wait_for_stats([](const server_stats& s) { return s.connections_open == 0; }));
  const std::string text = http_body(server.port(), "/metrics");
  CHECK_THAT(text, Catch::Contains("agentws_runs_started_total 2\n"));
  CHECK_THAT(text, Catch::Contains("agentws_runs_cancelled_total{reason=\"client\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("agentws_cancel_latency_seconds_count 1\n"));
  CHECK_THAT(text, Catch::Contains("agentws_cancel_latency_seconds_bucket{le=\"+Inf\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("# TYPE agentws_write_batch_frames histogram\n"));
  CHECK_THAT(text, Catch::Contains("agentws_runs_done_total 1\n"));
  CHECK_THAT(text, Catch::Contains("agentws_errors_total{code=\"invalid_json\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("agentws_connections_total 1\n"));
  CHECK_THAT(text, Catch::Contains("# TYPE agentws_frames_sent_total counter\n"));
}
