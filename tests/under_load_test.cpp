// Under load: a shutdown still reaches a client that is behind.
#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "raw_peer.hpp"
#include "test_peer.hpp"

using namespace agentws;
using namespace agentws::testing;

namespace {

// One run's events as a client sees them, checked against the ordering
// rules as they arrive: run_started, steps 0, 1, 2, ... and one terminal
// event whose last_step is the last step received (absent when none was).
struct run_stream {
  bool started = false;
  std::optional<std::uint64_t> last_step;
  std::uint64_t events = 0;

  void take(const json& event) {
    const std::string type = event["event_type"];
    const json& payload = event["payload"];
    INFO(event.dump());
    if (type == "run_started") {
      CHECK_FALSE(started);
      started = true;
      last_step.reset();
    } else if (type == "run_event") {
      REQUIRE(started);
      const std::uint64_t step = payload["step"];
      CHECK(step == (last_step ? *last_step + 1 : 0));
      last_step = step;
      ++events;
    } else if (type == "run_cancelled" || type == "run_done") {
      REQUIRE(started);
      if (last_step) {
        CHECK(payload["last_step"] == *last_step);
      } else {
        CHECK_FALSE(payload.contains("last_step"));
      }
      started = false;
    }
  }
};

// Polls the server until its writer is stuck behind a client that stopped
// reading: no frame taken for 200 ms while the runs flood (they fill the
// outbox within milliseconds, and then wait for it).
bool wait_until_behind(server_fixture& server) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  std::uint64_t frames = server.get().stats().frames_sent;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
    const server_stats now = server.get().stats();
    if (now.frames_sent == frames && now.outbox_waits > 0) return true;
    frames = now.frames_sent;
  }
  return false;
}

}  // namespace

TEST_CASE("a shutdown reaches a client that is behind with every run_cancelled and 1001",
          "[loopback]") {
  // Two outstanding chunks sit in the layer under the WebSocket: the write
  // in flight, already partly in the kernel, and the next one behind it.
  // A shutdown takes back every event of its runs that has not reached the
  // socket, that second chunk too, so what the client reads before its
  // run_cancelled is at most the write in flight and the kernel's buffers.
  constexpr std::size_t chunk = 512 * 1024;
  server_config config = test_config();
  config.write_chunk_bytes = chunk;
  config.outbox_bytes = 1024 * 1024;  // enough queued to fill that chunk
  config.shutdown_grace = 2000ms;
  server_fixture server(config);
  raw_peer peer(server.port(), 4096);
  peer.open_websocket();
  peer.send_command(start("a", 10'000'000, 0));
  peer.send_command(start("b", 10'000'000, 0));
  std::map<std::string, run_stream> runs;
  while (runs["a"].events == 0 || runs["b"].events == 0) {
    auto event = peer.next_event();
    REQUIRE(event);
    runs[(*event)["payload"]["run_id"]].take(*event);
  }
  auto read_until = [&](std::uint64_t consumed) {
    while (peer.consumed_bytes() < consumed) {
      auto event = peer.next_event();
      REQUIRE(event);
      runs[(*event)["payload"]["run_id"]].take(*event);
    }
  };
  // The client falls behind: it stops reading until everything is full,
  // then reads some (each chunk the writer takes from the full outbox is
  // whole), and stops again.
  peer.pause_reading();
  REQUIRE(wait_until_behind(server));
  peer.resume_reading();
  read_until(peer.consumed_bytes() + 3 * chunk);
  peer.pause_reading();
  REQUIRE(wait_until_behind(server));

  // What the writer took for this client and the client has not read yet:
  // the kernel's buffers, the write in flight and the chunk behind it.
  const std::uint64_t read_before_stop = peer.consumed_bytes();
  const std::uint64_t backlog = server.get().stats().bytes_sent - read_before_stop;
  const auto stopped_at = std::chrono::steady_clock::now();
  server.get().stop();
  peer.resume_reading();
  int cancelled = 0;
  std::uint64_t read_until_cancelled = 0;
  while (cancelled < 2) {
    auto event = peer.next_event();
    REQUIRE(event);
    const std::string run_id = (*event)["payload"]["run_id"];
    runs[run_id].take(*event);
    if ((*event)["event_type"] == "run_cancelled") {
      CHECK((*event)["payload"]["reason"] == "shutdown");
      ++cancelled;
      read_until_cancelled = peer.consumed_bytes() - read_before_stop;
    }
  }
  CHECK(peer.wait_for_close() == 1001);
  const auto took = std::chrono::steady_clock::now() - stopped_at;
  CHECK(took < config.shutdown_grace);
  // The waiting chunk (whole: the outbox was full when the writer took it)
  // never reaches the client; the write in flight and the kernel's buffers
  // (TCP_NOTSENT_LOWAT 32 KiB unsent, a receive window of a few KiB) do.
  INFO("backlog at the stop " << backlog << " bytes, read until both run_cancelled "
                              << read_until_cancelled);
  CHECK(read_until_cancelled + chunk / 2 < backlog);
  CHECK(read_until_cancelled < chunk + 128 * 1024);
  CHECK(server.stop_and_join(3000ms));
}
