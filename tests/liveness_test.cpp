// Liveness after the upgrade: a peer that answers pings stays however long
// it is quiet; a peer that answers nothing is pinged at half the idle
// timeout and closed at the whole of it, counted by cause in /metrics.
#include <catch2/catch.hpp>

#include <string>
#include <thread>

#include "raw_peer.hpp"
#include "test_peer.hpp"

using namespace agentws;
using namespace agentws::testing;

namespace {

using clock_type = std::chrono::steady_clock;

server_config idle_config() {
  server_config config = test_config();
  config.idle_timeout = 1000ms;
  return config;
}

// A value from /metrics, or -1 when absent.
long long metric(std::uint16_t port, const std::string& name) {
  const std::string metrics = "\n" + http_body(port, "/metrics");
  const std::string key = "\n" + name + " ";
  const std::size_t at = metrics.find(key);
  return at == std::string::npos ? -1 : std::stoll(metrics.substr(at + key.size()));
}

}  // namespace

TEST_CASE("a quiet peer that answers pings keeps its connection past the idle timeout",
          "[loopback]") {
  server_fixture server(idle_config());
  raw_peer peer(server.port());
  peer.open_websocket();
  // Three idle timeouts of silence from the peer, but for its pongs (the
  // peer answers the server's pings while it waits for an event).
  CHECK_FALSE(peer.next_event(3000ms));
  CHECK_FALSE(peer.ended());
  CHECK(peer.close_code() == std::nullopt);
  CHECK(metric(server.port(), "agentws_closes_total{cause=\"idle\"}") == 0);
  peer.run_to_completion("still-here", 2, 1);
}

TEST_CASE("a peer that answers nothing is pinged, then closed at the idle timeout", "[loopback]") {
  server_fixture server(idle_config());
  raw_peer peer(server.port());
  peer.open_websocket();
  const auto quiet_from = clock_type::now();
  // Reading (and keeping) the bytes, but answering nothing: no pong.
  REQUIRE(peer.wait_for_end(5000ms));
  const double after = std::chrono::duration<double>(clock_type::now() - quiet_from).count();
  INFO("closed " << after << " s after the peer went quiet; received: " << peer.input().size()
                 << " bytes");
  // The idle timeout, at most a check period (a quarter of it) later.
  CHECK(after >= 0.9);
  CHECK(after < 1.0 + 0.25 + 0.5);
  // The ping came first (opcode 9 right after the connected frame).
  CHECK(peer.input().size() >= 2);
  CHECK(static_cast<unsigned char>(peer.input()[0]) == 0x89);
  CHECK(metric(server.port(), "agentws_closes_total{cause=\"idle\"}") == 1);
}

TEST_CASE("a client reading a stream slowly is not idle, however long it takes", "[loopback]") {
  // Events wait for the client the whole time: the send timeout applies
  // (bytes taken are progress), not the idle one, and a ping is not needed.
  server_config config = idle_config();
  config.outbox_bytes = 16 * 1024;
  config.write_chunk_bytes = 4 * 1024;
  config.tcp_notsent_lowat = 4 * 1024;
  server_fixture server(config);
  raw_peer peer(server.port(), 16 * 1024);
  peer.open_websocket();
  peer.send_command(start("slow", 100'000, 0));
  // Read about 3 KiB every 50 ms for 3 s: well behind the run, never stopped.
  const auto until = clock_type::now() + 3000ms;
  std::uint64_t next_step = 0;
  while (clock_type::now() < until) {
    const std::uint64_t target = peer.consumed_bytes() + 3 * 1024;
    while (peer.consumed_bytes() < target) {
      auto event = peer.next_event();
      REQUIRE(event);
      if ((*event)["event_type"] == "run_event") {
        REQUIRE((*event)["payload"]["step"] == next_step);
        ++next_step;
      }
    }
    std::this_thread::sleep_for(50ms);
  }
  CHECK_FALSE(peer.ended());
  CHECK(next_step > 0);
  CHECK(metric(server.port(), "agentws_closes_total{cause=\"idle\"}") == 0);
  CHECK(metric(server.port(), "agentws_closes_total{cause=\"slow_consumer\"}") == 0);
}
