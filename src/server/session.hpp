// One client connection, from its first HTTP byte to its close.
//
// Everything of a session runs on its own strand: the HTTP phase, then one
// reader (commands), one writer (the only caller of async_write, draining the
// outbox) and one coroutine per run. No locks inside; other threads reach a
// session only through shutdown() and force_close(), which post to it.
#pragma once

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agentws/events.hpp"
#include "common/coalescing_stream.hpp"
#include "common/outbox.hpp"
#include "server/server_state.hpp"

namespace agentws::detail {

// One active run: what cancel_run needs to stop it at once. Shared by the
// registry and the run's coroutine, so the signal outlives the coroutine.
struct run_state {
  run_state(std::string id, run_params run_params) : run_id(std::move(id)), params(run_params) {}
  const std::string run_id;
  const run_params params;
  boost::asio::cancellation_signal cancel_signal;
  bool cancelled = false;
  std::uint64_t next_step = 0;
  unsigned emits_since_yield = 0;
};

class session : public std::enable_shared_from_this<session> {
 public:
  session(boost::asio::ip::tcp::socket socket, std::shared_ptr<server_state> state);
  ~session();

  void start();
  // Thread-safe. Cancels runs (reason "shutdown") and closes with 1001.
  void shutdown();
  // Thread-safe. Closes the socket now.
  void force_close();

 private:
  class run_handle;
  // Frames pass through a coalescing layer: many events, one syscall.
  using websocket_stream =
      boost::beast::websocket::stream<coalescing_stream<boost::beast::tcp_stream>>;

  boost::asio::awaitable<void> serve(std::shared_ptr<session> self);
  boost::asio::awaitable<bool> serve_http();
  void configure_websocket();
  boost::asio::awaitable<void> read_commands();
  boost::asio::awaitable<void> write_frames(std::shared_ptr<session> self);
  boost::asio::awaitable<void> run_agent(std::shared_ptr<session> self,
                                         std::shared_ptr<run_state> run);

  void handle_text(std::string_view text);
  void start_run(start_run_command command);
  void cancel_run(cancel_run_command command);
  void cancel_all_runs(std::optional<cancel_reason> announce);
  void forget_run(const std::shared_ptr<run_state>& run);
  void send_error(const protocol_error& error);
  void begin_shutdown();
  void arm_send_watchdog();
  void close_socket();

  // Waits until the outbox is below its bound. False if it closed meanwhile
  // or `run` (when given) was cancelled.
  boost::asio::awaitable<bool> wait_for_room(const run_state* run);

  // The current wall-clock time, formatted; valid until the next call.
  std::string_view now();

  std::shared_ptr<server_state> state_;
  websocket_stream ws_;
  boost::beast::flat_buffer read_buffer_;
  outbox outbox_;
  std::unordered_map<std::string, std::shared_ptr<run_state>> runs_;
  timestamp_formatter clock_;
  std::string now_;
  std::uint64_t id_ = 0;
  bool upgraded_ = false;
  bool closing_ = false;
  std::optional<boost::beast::websocket::close_reason> close_reason_;

  // When the command being handled was read, and when each run_cancelled
  // still in the outbox was answered (for the cancel-latency histogram).
  std::chrono::steady_clock::time_point command_read_at_;
  std::vector<std::chrono::steady_clock::time_point> cancels_in_outbox_;

  // Slow-consumer detection: a writer waiting for the socket while no flush
  // completes for send_timeout closes the connection.
  boost::asio::steady_timer send_watchdog_;
  bool watchdog_armed_ = false;
  bool write_in_flight_ = false;
};

}  // namespace agentws::detail
