// One connection over some transport, from its first byte to its close.
// `Transport` is the stream under the WebSocket: beast::tcp_stream,
// beast::ssl_stream<beast::tcp_stream>, or an in-memory stream in the fuzzer.
//
// Three parts, each its own unit:
// - the HTTP phase (http_phase.hpp): TLS, routes, access checks, admitting
//   the upgrade;
// - the WebSocket session (this class): one reader (commands), one writer
//   (draining the outbox: it frames data frames straight into the coalescing
//   layer, which Beast's own frames, pings, pongs and the close, enter
//   through its async_write_some; started by the first frame queued and
//   ended when the connection goes idle, never two at once), the output's
//   share of the memory budget and the liveness checks
//   (basic_session_impl.hpp);
// - the runs it follows and the commands on them (basic_session_runs.hpp).
// The connection's and the writer's life is one explicit state
// (connection_state.hpp).
//
// Everything of a connection runs on its own strand. No locks inside; other
// threads reach it only through the `session` interface, which posts to it,
// and runs of other strands through their mailboxes.
#pragma once

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agentws/events.hpp"
#include "common/coalescing_stream.hpp"
#include "common/outbox.hpp"
#include "server/connection_state.hpp"
#include "server/http_routes.hpp"
#include "server/server_run.hpp"
#include "server/server_state.hpp"
#include "server/session.hpp"
#include "server/transport_ops.hpp"

namespace agentws::detail {

// Cancels whose run_cancelled the writer handed to the coalescing layer:
// when each cancel_run was read, and the flush that carries its answer. Kept
// by the layer's flush listener, which may outlive the session.
struct cancels_in_flush {
  explicit cancels_in_flush(std::shared_ptr<server_state> server) : state(std::move(server)) {}
  struct pending {
    std::uint64_t flush;
    std::chrono::steady_clock::time_point read_at;
  };
  std::shared_ptr<server_state> state;
  std::vector<pending> cancels;

  // As flush number `completed` completes: its cancels reached the kernel.
  void flushed(std::uint64_t completed, const boost::system::error_code& ec) {
    if (cancels.empty()) return;
    if (ec) {  // never sent: nothing to measure
      cancels.clear();
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(cancels, [&](const pending& cancel) {
      if (cancel.flush > completed) return false;
      state->counters.cancel_latency_seconds.observe(
          std::chrono::duration<double>(now - cancel.read_at).count());
      return true;
    });
  }
};

template <class Transport>
class basic_session final : public home_follower, public session, public run_mailbox::reader {
 public:
  template <class... TransportArgs>
  explicit basic_session(std::shared_ptr<server_state> state, TransportArgs&&... transport_args);
  ~basic_session() override;

  void start() override;
  void shutdown() override;
  void force_close() override;
  void evict() override;
  void close_for_memory_budget() override;

  // home_follower: the runs this connection started and follows.
  boost::asio::awaitable<bool> wait_for_room(server_run& run) override;
  bool has_room_now(const server_run& run) override {
    return !outbox_.closed() && !run.cancelled() && outbox_.has_room() && reserve_output();
  }
  boost::asio::awaitable<void> yield_to_commands(server_run& run) override;
  void queue_run_event(std::uint64_t serial, std::string_view frame) override {
    queue_event([&](std::string& out) { out.append(frame); }, frame_tag{serial, true});
  }
  void queue_run_done(server_run& run, std::uint64_t serial, std::string_view frame) override;
  void queue_run_cancelled(server_run& run, std::uint64_t serial,
                           const cancel_notice& notice) override;
  // run_mailbox::reader: runs this connection follows from another strand.
  void drain_mailboxes() override;

 private:
  // Frames pass through a coalescing layer: many events, one syscall.
  using websocket_stream = boost::beast::websocket::stream<coalescing_stream<Transport>>;
  using lowest_layer_type = boost::beast::lowest_layer_type<Transport>;
  using lowest = lowest_layer_ops<lowest_layer_type>;

  std::shared_ptr<basic_session> shared_self() {
    return std::static_pointer_cast<basic_session>(shared_from_this());
  }
  Transport& transport() noexcept { return ws_.next_layer().next_layer(); }

  boost::asio::awaitable<void> serve(std::shared_ptr<basic_session> self);
  // The HTTP phase, then the WebSocket handshake: false when the connection
  // ended before (the socket is closed).
  boost::asio::awaitable<bool> upgrade_from_http();
  // The upgrade admitted by the HTTP phase: the WebSocket handshake, and who
  // owns this connection's runs. False: it failed (the socket is closed).
  boost::asio::awaitable<bool> accept_websocket(http_request& request);
  void configure_websocket();
  boost::asio::awaitable<void> read_commands();
  boost::asio::awaitable<void> handle_message();
  boost::asio::awaitable<void> write_frames(std::shared_ptr<basic_session> self);

  // Queue one frame built in place (see send_queue) and make sure a writer
  // is there to send it: an answer to a command goes ahead of run events.
  template <class Build>
  void queue_answer(Build&& build, std::uint64_t after_run = 0, frame_tag tag = {}) {
    outbox_.push_answer(std::forward<Build>(build), after_run, tag);
    start_writer();
  }
  template <class Build>
  void queue_event(Build&& build, frame_tag tag) {
    outbox_.push_event(std::forward<Build>(build), tag);
    start_writer();
  }
  // The writer runs while there is something to send or a run that may send;
  // an idle connection has none (see write_frames).
  void start_writer();

  // Commands that need only this connection are handled here; the others
  // (which may concern a run on another strand) are returned for
  // handle_run_command.
  std::optional<command> handle_command(parse_result result);
  boost::asio::awaitable<void> handle_run_command(command parsed);
  void start_run(start_run_command command);
  boost::asio::awaitable<void> cancel_run(cancel_run_command command);
  boost::asio::awaitable<void> attach_run(attach_run_command command);
  boost::asio::awaitable<void> detach_run(detach_run_command command);
  boost::asio::awaitable<void> send_input(send_input_command command);
  void list_runs(const list_runs_command& command);

  // A run this connection follows: directly (it started the run, on this
  // strand) or through a mailbox (a run of another strand).
  struct followed_run {
    std::shared_ptr<server_run> run;
    std::uint64_t serial = 0;              // tags its frames in the outbox
    std::shared_ptr<run_mailbox> mailbox;  // null: followed directly
  };
  // Moves what waits in `followed`'s mailbox into the outbox (all of it
  // when `everything`, else while the outbox has room). False when it held
  // the run's terminal event: the run is no longer followed.
  bool drain_mailbox(const std::string& run_id, bool everything);
  // The run `run_id` is no longer followed (its terminal event is queued).
  void stop_following(const std::string& run_id, const server_run* run);
  // The connection is going: the runs it follows lose a follower (which
  // cancels those that end with their connection, version 1's rule).
  void leave_all_runs();
  // At shutdown: every run this connection follows is cancelled (the server
  // cancelled those of other strands already: their terminal events are in
  // their mailboxes).
  void cancel_runs_for_shutdown();
  // Takes back the run's queued events and queues its run_cancelled, which
  // says the last step this connection was sent.
  // `taken_back`: its events already removed from the chunk behind the
  // write in flight (see take_back_waiting_chunk).
  void announce_cancel(const server_run& run, std::uint64_t serial, const cancel_notice& notice,
                       std::size_t taken_back = 0);
  // At shutdown: removes the run events of `runs` (serial -> count, sorted
  // by serial) from the chunk waiting behind the write in flight, counting
  // them, so the terminal events and the close follow the write in flight.
  void take_back_waiting_chunk(std::vector<std::pair<std::uint64_t, std::size_t>>& runs);
  void send_error(const protocol_error& error);
  void begin_shutdown();
  void arm_send_watchdog();
  // Liveness after the upgrade (see check_liveness).
  void arm_liveness_check();
  void check_liveness();
  // Sends 1008 behind what is buffered and closes the socket if that stalls too.
  void close_slow_consumer(close_cause cause = close_cause::slow_consumer);
  void close_socket();

  // Waits until the outbox is below its bound and the memory budget grants
  // the next frame. False if it closed meanwhile or `run` was cancelled.
  boost::asio::awaitable<bool> wait_for_outbox_room(std::shared_ptr<basic_session> self,
                                                    const server_run& run);

  // The process-wide memory budget (see memory_budget) counts the memory this
  // connection's output holds: the outbox's buffers and the framed bytes
  // waiting for the kernel, by capacity (they are reused, not freed, while
  // runs stream).
  std::size_t output_memory() const noexcept {
    return outbox_.memory_bytes() + ws_.next_layer().memory_bytes();
  }
  // Grows the reservation to cover the next event; false: wait for the budget.
  bool reserve_output() noexcept;
  // Shrinks the reservation to what the buffers still hold.
  void release_output();
  // While the budget is reached, an empty outbox gives its buffers back.
  void release_idle_buffers_under_pressure();
  // What this connection may hold while the budget is reached.
  std::size_t share_of_budget() const noexcept;
  // Past its share while the budget is reached: the reader pauses too.
  bool over_budget_share() const noexcept;
  // Asks the budget to wake this connection's waiters when room comes back.
  void wait_for_budget();

  // The current wall-clock time, formatted; valid until the next call.
  std::string_view now();

  std::shared_ptr<server_state> state_;
  // The connection's and its writer's life (see connection_state).
  connection_state life_;
  websocket_stream ws_;
  boost::beast::flat_buffer read_buffer_;
  outbox outbox_;
  std::unordered_map<std::string, followed_run> runs_;
  std::uint64_t next_run_serial_ = 1;
  // Mailboxes left with frames when the outbox was full: drained again as
  // the writer makes room.
  bool mailbox_frames_left_ = false;
  // Who owns the runs this connection starts: the token's name, or the
  // session ("session:<serial>"); and the session's key, announced in
  // `connected`, never logged.
  std::string owner_;
  session_keys::opened session_;
  // At shutdown, the events of this connection's runs taken back from the
  // chunk behind the write in flight (serial -> count, sorted).
  bool shutdown_take_back_done_ = false;
  std::vector<std::pair<std::uint64_t, std::size_t>> shutdown_taken_back_;
  // Runs that ended by themselves while their run_done may still be queued:
  // a new run of the same id must not be announced ahead of it. An entry is
  // stale once the queue's generation passed `generation` + 1.
  struct finished_run {
    std::uint64_t serial;
    std::uint64_t generation;
  };
  std::unordered_map<std::string, finished_run> finished_runs_;
  // Where frames of the previous run of `run_id` may still be queued: the
  // run a new run's run_started must wait behind (0: none).
  std::uint64_t queued_predecessor(const std::string& run_id);
  void remember_finished(const std::string& run_id, std::uint64_t serial);
  timestamp_formatter clock_;
  std::string now_;
  std::uint64_t id_ = 0;
  std::optional<boost::beast::websocket::close_reason> close_reason_;

  // For the cancel-latency histogram: when the command being handled was
  // read; when the cancel_run of each run_cancelled still in the outbox was
  // read; and, for those the writer took, the flush of the coalescing layer
  // that carries them (observed when it completes: see cancels_in_flush).
  std::chrono::steady_clock::time_point command_read_at_;
  std::vector<std::chrono::steady_clock::time_point> cancels_in_outbox_;
  std::shared_ptr<cancels_in_flush> cancels_in_flush_;

  // The writer's last chunk while it waits in the coalescing layer behind the
  // write in flight, not yet handed to the socket: spans of consecutive
  // frames with the same tag (a few per chunk, so recording them is one
  // comparison per frame). Valid while the layer holds pending bytes and no
  // flush completed since it was taken (`waiting_chunk_flushes_`).
  struct chunk_span {
    frame_tag tag;
    std::size_t frames;
    std::size_t bytes;
  };
  std::vector<chunk_span> waiting_chunk_;
  std::size_t waiting_chunk_offset_ = 0;  // where it starts in the layer's pending bytes
  std::uint64_t waiting_chunk_flushes_ = 0;

  // Slow-consumer detection: a writer waiting for the socket while no flush
  // completes for send_timeout closes the connection.
  boost::asio::steady_timer send_watchdog_;
  // Proof of life: frames from the peer (pongs too) and bytes it took (our
  // flushes completing, the kernel's unacknowledged bytes shrinking).
  boost::asio::steady_timer liveness_timer_;
  std::uint64_t frames_received_ = 0;
  struct progress_seen {
    std::uint64_t frames = 0;
    std::uint64_t flushes = 0;
    std::size_t unacked = 0;
    bool waiting = false;  // something waited to be sent
  } progress_seen_;
  std::chrono::steady_clock::time_point quiet_since_;
  bool ping_outstanding_ = false;
  bool watchdog_armed_ = false;

  memory_budget::holding budget_holding_;
  bool budget_wake_requested_ = false;

  // Commands the reader took, and how many of them a run had seen when it
  // last found the reader idle (see run_handle::yield).
  std::uint64_t commands_read_ = 0;
  std::uint64_t commands_settled_ = 0;
  // Whether the peer sent something the reader may not have handled yet.
  bool command_pending();
};

}  // namespace agentws::detail

#include "server/basic_session_impl.hpp"
#include "server/basic_session_runs.hpp"
