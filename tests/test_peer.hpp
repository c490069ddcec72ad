// Test fixtures for loopback tests: a server on 127.0.0.1:0 with its own
// io_context and threads, and a scripted WebSocket peer whose every wait is
// bounded (io_context::run_for), so a hang fails a test instead of CI.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agentws/server.hpp"

namespace agentws::testing {

using namespace std::chrono_literals;
using json = nlohmann::json;

// Small intervals and limits so tests are quick.
server_config test_config();

// How the fixture's I/O threads run the server: one context each (what
// ws-server does), or one context shared by all of them (connections then
// move between threads, and only their strands keep them serialised).
enum class io_layout { context_per_thread, shared_context };

class server_fixture {
 public:
  // Two I/O threads by default, so every test (and the ThreadSanitizer run of
  // the suite) exercises the server across threads.
  explicit server_fixture(server_config config = test_config(), unsigned threads = 2,
                          io_layout layout = io_layout::context_per_thread);
  ~server_fixture();  // stops the server; REQUIREs that it stopped in time

  std::uint16_t port() const noexcept { return server_.port(); }
  server& get() noexcept { return server_; }
  // Stops gracefully and waits (bounded) for every I/O thread to return.
  // Returns false if the server did not stop within `limit`.
  bool stop_and_join(std::chrono::milliseconds limit = 5000ms);
  // Polls `condition` on the server's stats until it holds or `limit` passes.
  bool wait_for_stats(const std::function<bool(const server_stats&)>& condition,
                      std::chrono::milliseconds limit = 5000ms);

 private:
  bool all_stopped() const;

  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
  server server_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
};

// What a test does with events, written once for every kind of peer: a
// peer supplies next_event() and send_command(), the rest is here.
class scripted_peer {
 public:
  virtual ~scripted_peer() = default;

  virtual void send_command(const json& command) = 0;
  // The next event, or nullopt when the connection ended or `limit` passed.
  virtual std::optional<json> next_event(std::chrono::milliseconds limit = 5000ms) = 0;

  // The next event, REQUIREd to exist and have this event_type.
  json expect_event(std::string_view event_type, std::chrono::milliseconds limit = 5000ms);
  // Returns every event of `run_id` up to its terminal one: first those
  // already in the stash (taken out of it), then new ones read until the
  // terminal event arrives (events of other runs read meanwhile are stashed).
  std::vector<json> events_until_terminal(std::string_view run_id,
                                          std::chrono::milliseconds limit = 10000ms);
  // Starts `run_id` with params and REQUIREs run_started, steps 0..steps-1
  // in order, then run_done.
  void run_to_completion(std::string_view run_id, int steps = 2, int interval_ms = 1);

  // Events read while looking for something else, in arrival order.
  std::vector<json> stash;
};

class test_peer final : public scripted_peer {
 public:
  // Connects and completes the WebSocket handshake, or FAILs the test.
  explicit test_peer(std::uint16_t port, std::string target = "/ws");
  ~test_peer();

  void send_text(std::string_view text);
  void send_binary(std::string_view bytes);
  void send_command(const json& command) override { send_text(command.dump()); }
  std::optional<json> next_event(std::chrono::milliseconds limit = 5000ms) override;

  // Reads until the server closes; returns the close code (0 if none).
  unsigned wait_for_close(std::chrono::milliseconds limit = 5000ms);
  void close();
  // Drops the TCP connection without a close handshake.
  void abort();

 private:
  bool run_until(bool& done, std::chrono::milliseconds limit);
  boost::asio::io_context io_;
  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  boost::beast::flat_buffer buffer_;
  bool closed_ = false;
};

// Commands and step checks shared by the loopback test files.
json start(std::string_view run_id, int steps, int interval_ms);
json cancel(std::string_view run_id);
// Steps of the run_events in `events`, in order; and 0..n-1 to compare with.
std::vector<std::uint64_t> steps_of(const std::vector<json>& events);
std::vector<std::uint64_t> iota_steps(std::uint64_t n);

// Sends a raw HTTP request and returns the whole response ("" if none).
std::string http_exchange(std::uint16_t port, const std::string& request);
// ... and returns only the status code (0 if no answer).
unsigned http_status(std::uint16_t port, const std::string& request);
// GETs `path` and returns the body of a 200 answer ("" otherwise).
std::string http_body(std::uint16_t port, const std::string& path);

}  // namespace agentws::testing
