// Destroying a started server stops it: its contexts then run out of work
// (io.run() returns) once its connections are gone, without a stop() call.
#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <thread>

#include "test_peer.hpp"

using namespace agentws;
using namespace agentws::testing;
using namespace std::chrono_literals;

namespace {

// An io_context run by its own thread once run() is called (after the
// server started: a context with no work yet would return at once); run()
// returning sets the future.
class running_context {
 public:
  running_context() = default;
  ~running_context() {
    io.stop();  // a context that never ran out of work must not hang the test
    if (thread_.joinable()) thread_.join();
  }
  void run() {
    std::packaged_task<void()> task([this] { io.run(); });
    returned_ = task.get_future();
    thread_ = std::thread(std::move(task));
  }
  running_context(const running_context&) = delete;
  running_context& operator=(const running_context&) = delete;

  // Whether run() returned by itself within `limit`.
  bool returned_within(std::chrono::milliseconds limit) {
    return returned_.wait_for(limit) == std::future_status::ready;
  }

  boost::asio::io_context io{1};

 private:
  std::future<void> returned_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("destroying a started server lets io.run() return", "[loopback]") {
  running_context context;
  {
    server s(context.io, test_config());
    s.start();
    REQUIRE(s.port() != 0);
    context.run();
    // The server keeps its context running while it lives.
    REQUIRE_FALSE(context.returned_within(100ms));
  }  // no stop()
  CHECK(context.returned_within(5000ms));
}

TEST_CASE("destroying a started server closes its connections with 1001", "[loopback]") {
  running_context context;
  std::optional<server> s;
  s.emplace(context.io, test_config());
  s->start();
  context.run();
  test_peer peer(s->port());
  peer.expect_event("connected");
  peer.send_command(start("long", 5, 10'000));  // waits 10 s after step 0
  peer.expect_event("run_started");
  peer.expect_event("run_event");
  s.reset();  // no stop()
  bool cancelled = false;
  const auto deadline = std::chrono::steady_clock::now() + 5000ms;
  while (!cancelled && std::chrono::steady_clock::now() < deadline) {
    auto next = peer.next_event(1000ms);
    if (!next) break;
    if ((*next)["event_type"] == "run_cancelled") {
      cancelled = true;
      CHECK((*next)["payload"]["reason"] == "shutdown");
    }
  }
  CHECK(cancelled);
  CHECK(peer.wait_for_close(5000ms) == 1001);
  CHECK(context.returned_within(5000ms));
}
