// Memory is given back: after bursts of connections whose runs flood and
// which read nothing (every buffer of the server full), a ws-server with no
// connection left returns to within a margin of its resident memory before
// the bursts. A real ws-server process, watched through /proc.
#include <catch2/catch.hpp>

#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "raw_peer.hpp"
#include "sanitizer_build.hpp"
#include "server_process.hpp"
#include "test_peer.hpp"

#ifndef AGENTWS_WS_SERVER
#error "AGENTWS_WS_SERVER must name the ws-server binary"
#endif

using namespace agentws::testing;

namespace {

constexpr bool sanitized = sanitized_build;

// How many times `needle` stands in `text` (the server's trims in its log).
int occurrences(const std::string& text, std::string_view needle) {
  int count = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
    ++count;
  return count;
}

// A gauge of the server's /metrics, as text ("?" when absent).
std::string gauge(std::uint16_t port, std::string_view name) {
  const std::string metrics = "\n" + http_body(port, "/metrics");
  const std::string key = "\n" + std::string(name) + " ";
  const std::size_t at = metrics.find(key);
  if (at == std::string::npos) return "?";
  return metrics.substr(at + key.size(), metrics.find('\n', at + key.size()) - at - key.size());
}

}  // namespace

TEST_CASE("after bursts of flooding connections that read nothing, memory is given back",
          "[scale]") {
  raise_fd_limit();
  const std::size_t connections = sanitized ? 40 : 300;
  constexpr int runs_per_connection = 4;
  // What a quiet server may keep after a burst, over its RSS before the
  // first: glibc's bookkeeping and the odd chunk still in use. A burst
  // takes 100-200 MiB here.
  constexpr std::size_t margin_kib = 24 * 1024;

  server_process server(AGENTWS_WS_SERVER, {"--threads", "2"});
  const std::size_t baseline_sockets = server.open_fds().sockets;
  {
    test_peer warm_up(server.port());
    warm_up.expect_event("connected");
    warm_up.run_to_completion("warm-up", 5, 1);
  }
  const std::size_t rss_before = server.rss_kib();

  std::string report = "memory: RSS before " + mib(rss_before);
  for (int burst = 0; burst < 3; ++burst) {
    std::vector<std::unique_ptr<raw_peer>> peers;
    for (std::size_t i = 0; i < connections; ++i) {
      auto peer = std::make_unique<raw_peer>(server.port(), 16 * 1024);
      peer->open_websocket();
      for (int r = 0; r < runs_per_connection; ++r)
        peer->send_command(start("flood-" + std::to_string(r), 10'000'000, 0));
      peer->pause_reading();
      peers.push_back(std::move(peer));
    }
    // Every connection's buffers fill: wait for the RSS to stop growing.
    std::size_t held = server.rss_kib();
    wait_for(
        [&] {
          const std::size_t now = server.rss_kib();
          const bool settled = now <= held + 1024;
          held = std::max(held, now);
          return settled && held > rss_before + 8 * 1024;
        },
        std::chrono::seconds(20));
    peers.clear();  // every client goes away
    REQUIRE(wait_for([&] { return server.open_fds().sockets <= baseline_sockets; },
                     std::chrono::seconds(20)));
    // Under a sanitizer RSS says nothing of the program: wait for the
    // server's word that it gave memory back instead.
    const auto trims_logged = [&] { return occurrences(server.log(), "gave back"); };
    const bool given_back = wait_for(
        [&] {
          return sanitized ? trims_logged() > burst : server.rss_kib() <= rss_before + margin_kib;
        },
        // A sanitized server is slow to unwind 160 runs on a loaded machine.
        std::chrono::seconds(sanitized ? 45 : 15));
    const std::size_t after = server.rss_kib();
    report += "; burst " + std::to_string(burst + 1) + ": " + mib(held) + " held, " + mib(after) +
              " after";
    if (!given_back) {
      // What the server's load watch sees (see ws_server.cpp).
      report += " (sockets_open " + gauge(server.port(), "agentws_sockets_open") +
                ", runs_active " + gauge(server.port(), "agentws_runs_active") + ", trims logged " +
                std::to_string(trims_logged()) + ")";
    }
    INFO(report);
    CHECK(given_back);
  }
  std::cout << report << " (" << connections << " connections x " << runs_per_connection
            << " flooding runs, reading nothing)" << std::endl;
  CHECK(server.log().find("gave back") != std::string::npos);
  CHECK(server.stop() == 0);
}

// Runs that asked to outlive their connection keep a history each (up to
// --history-bytes) for --retention-ms after they end. Once they are
// forgotten, that memory goes back too: from every I/O thread's own malloc
// arena, whose free top glibc's malloc_trim alone never shrinks.
TEST_CASE("after resumable runs end and are forgotten, memory is given back", "[scale]") {
  raise_fd_limit();
  const std::size_t connections = sanitized ? 20 : 100;
  constexpr int runs_per_connection = 4;
  constexpr int steps = 1500;  // past --history-events: every history is full
  // What a quiet server may keep over its RSS before: 400 histories took
  // about 140 MiB here, and about 2 MiB stayed (8 MiB in some runs, where
  // glibc's arenas fragment differently).
  constexpr std::size_t margin_kib = 16 * 1024;

  server_process server(AGENTWS_WS_SERVER, {"--threads", "2", "--retention-ms", "1000"});
  {
    test_peer warm_up(server.port());
    warm_up.expect_event("connected");
    warm_up.run_to_completion("warm-up", 5, 1);
  }
  const std::size_t rss_before = server.rss_kib();

  // Raw peers: a wait for the next event that times out loses nothing.
  std::vector<std::unique_ptr<raw_peer>> peers;
  for (std::size_t i = 0; i < connections; ++i) {
    auto peer = std::make_unique<raw_peer>(server.port());
    peer->open_websocket();  // `connected` read
    for (int r = 0; r < runs_per_connection; ++r) {
      peer->send_command({{"command", "start_run"},
                          {"run_id", "kept-" + std::to_string(r)},
                          {"on_disconnect", "continue"},
                          {"params", {{"steps", steps}, {"interval_ms", 0}}}});
    }
    peers.push_back(std::move(peer));
  }
  // Every run streams to its end, its connection read in turn with the
  // others, the way many clients read at their own pace: the outboxes grow
  // and shrink on both I/O threads of the server. (One thread here: Catch's
  // assertions inside the peers are not thread-safe.)
  std::size_t events = 0;
  bool failed = false;
  std::string failure;
  {
    std::vector<int> ended(peers.size(), 0);
    std::size_t left = peers.size();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (left > 0 && !failed && std::chrono::steady_clock::now() < deadline) {
      for (std::size_t i = 0; i < peers.size(); ++i) {
        for (int taken = 0; taken < 64 && ended[i] < runs_per_connection; ++taken) {
          auto event = peers[i]->next_event(std::chrono::milliseconds(5));
          if (!event) break;
          ++events;
          if ((*event)["event_type"] == "error") {
            failure = event->dump();
            failed = true;
          }
          if ((*event)["event_type"] == "run_done" && ++ended[i] == runs_per_connection) --left;
        }
      }
    }
  }
  INFO(failure);
  REQUIRE_FALSE(failed);
  REQUIRE(events == connections * runs_per_connection * (steps + 2));
  const std::size_t held = server.rss_kib();
  peers.clear();  // the runs are retained, then forgotten after a second

  const auto trims_logged = [&] {
    return occurrences(server.log(), "to 0 (sockets and runs): gave back");
  };
  const bool given_back = wait_for(
      [&] { return sanitized ? trims_logged() > 0 : server.rss_kib() <= rss_before + margin_kib; },
      std::chrono::seconds(sanitized ? 45 : 20));
  const std::string report = "memory: RSS before " + mib(rss_before) + ", with " +
                             std::to_string(connections * runs_per_connection) +
                             " ended runs retained " + mib(held) + ", after they were forgotten " +
                             mib(server.rss_kib());
  INFO(report);
  CHECK(given_back);
  std::cout << report << std::endl;
  CHECK(server.stop() == 0);
}
