// basic_session's life, reader, writer, output budget and liveness;
// included by basic_session.hpp only (its commands and runs are in
// basic_session_runs.hpp).
#pragma once

#include <spdlog/spdlog.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <algorithm>
#include <cstring>

#include "common/log_failure.hpp"
#include "server/http_phase.hpp"
#include "server/http_routes.hpp"

namespace agentws::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using boost::system::error_code;

// A run that lets commands received go first (see yield_to_commands) emits
// again once the reader stayed idle for this many trips through the strand,
// or after this many trips in which bytes on the socket made no command.
inline constexpr unsigned idle_trips_before_emitting = 3;
inline constexpr unsigned trips_before_emitting_anyway = 16;

// The read buffer's capacity kept between commands; past it, it is given back
// after the message (typical commands are a few hundred bytes).
inline constexpr std::size_t kept_read_buffer_bytes = 16 * 1024;

template <class Transport>
template <class... TransportArgs>
basic_session<Transport>::basic_session(std::shared_ptr<server_state> state,
                                        TransportArgs&&... transport_args)
    : state_(std::move(state)),
      ws_(std::forward<TransportArgs>(transport_args)...),
      outbox_(ws_.get_executor(),
              outbox_limits{state_->config.outbox_bytes, state_->config.max_pending_answers,
                            state_->config.max_pending_answers * 1024}),
      send_watchdog_(ws_.get_executor()),
      liveness_timer_(ws_.get_executor()) {
  // Beast's own frames (pongs, the close) wait once this much is buffered.
  ws_.next_layer().set_capacity(state_->config.write_chunk_bytes);
  cancels_in_flush_ = std::make_shared<cancels_in_flush>(state_);
  ws_.next_layer().set_flush_listener(
      [cancels = cancels_in_flush_](std::uint64_t completed, const error_code& ec) {
        cancels->flushed(completed, ec);
      });
}

template <class Transport>
basic_session<Transport>::~basic_session() {
  state_->budget.release_all(budget_holding_);
  if (life_.upgraded()) state_->close_websocket();
  state_->release_socket(socket_id_);
  state_->remove_session(id_);
}

template <class Transport>
void basic_session<Transport>::start() {
  id_ = state_->add_session(shared_from_this(), socket_id_);
  asio::co_spawn(ws_.get_executor(), serve(shared_self()),
                 log_failure(fmt::format("conn {}: session", id_)));
}

template <class Transport>
void basic_session<Transport>::shutdown() {
  asio::dispatch(ws_.get_executor(), [self = shared_self()] { self->begin_shutdown(); });
}

template <class Transport>
void basic_session<Transport>::force_close() {
  asio::dispatch(ws_.get_executor(), [self = shared_self()] {
    self->state_->counters.count_close(close_cause::shutdown_forced);
    self->close_socket();
  });
}

template <class Transport>
void basic_session<Transport>::evict() {
  asio::dispatch(ws_.get_executor(), [self = shared_self()] {
    if (!self->life_.evictable()) {
      // It upgraded meanwhile: keep it, or the accept loop would wait for
      // a close that never comes.
      self->state_->eviction_declined(self->socket_id_);
      return;
    }
    spdlog::info("conn {}: closed before its upgrade to make room for a new connection", self->id_);
    self->state_->counters.count_close(close_cause::evicted);
    self->close_socket();
  });
}

template <class Transport>
void basic_session<Transport>::close_for_memory_budget() {
  asio::dispatch(ws_.get_executor(), [self = shared_self()] {
    if (!self->life_.takes_commands()) return;
    self->close_slow_consumer(close_cause::memory_budget);
  });
}

template <class Transport>
void basic_session<Transport>::close_socket() {
  lowest::close(beast::get_lowest_layer(ws_));
}

template <class Transport>
std::string_view basic_session<Transport>::now() {
  now_.clear();
  clock_.append(now_, wall_clock::now());
  return now_;
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::serve(
    [[maybe_unused]] std::shared_ptr<basic_session> self) {
  // A stop that began before this session registered must still reach it.
  if (state_->stopping()) co_return;
  const bool upgraded = co_await upgrade_from_http();
  if (!upgraded) co_return;

  const std::string peer = lowest::peer_address(beast::get_lowest_layer(ws_));
  spdlog::info("conn {}: websocket open from {}", id_, peer);
  queue_answer([&](std::string& out) {
    append_connected(
        out, now(), state_->config.identity, state_->config.limits, state_->config.default_params,
        session_announcement{session_.key, session_.resumed}, state_->agent_listings());
  });
  if (state_->stopping()) begin_shutdown();
  quiet_since_ = std::chrono::steady_clock::now();
  arm_liveness_check();

  co_await read_commands();

  // The peer is gone or the close handshake is done: nothing more reaches it.
  life_.close();
  leave_all_runs();
  outbox_.close();
  // With tokens the runs are the token's: they keep the session's key too.
  state_->sessions.close(session_.serial, std::chrono::steady_clock::now(),
                         state_->registry->has_runs(owner_));
  send_watchdog_.cancel();   // its wait holds the session alive
  liveness_timer_.cancel();  // so does this one
  spdlog::info("conn {}: websocket closed ({})", id_, peer);
}

template <class Transport>
asio::awaitable<bool> basic_session<Transport>::upgrade_from_http() {
  // One deadline for everything before the upgrade, from the accept: a
  // keep-alive connection cannot live on by sending a request now and then.
  // HTTP goes straight to the transport: the coalescing layer is for frames.
  // A coroutine of its own: the request (a kilobyte or two with its
  // headers) goes with its frame, instead of living as long as serve().
  std::optional<http_request> upgrade =
      co_await http_phase<Transport>(*state_, transport(), read_buffer_, id_).serve();
  if (!upgrade) co_return false;
  const bool accepted = co_await accept_websocket(*upgrade);
  co_return accepted;
}

template <class Transport>
asio::awaitable<bool> basic_session<Transport>::accept_websocket(http_request& request) {
  life_.upgrade();
  state_->socket_upgraded(socket_id_);
  // From here on the WebSocket's own timeouts govern the connection.
  lowest::expires_never(beast::get_lowest_layer(ws_));
  configure_websocket();
  // The 101 waits for `connected` (queued by serve()): one write for both.
  ws_.next_layer().hold_next_write();
  auto [accept_error] = co_await ws_.async_accept(request, nothrow);
  if (accept_error) {
    spdlog::debug("conn {}: websocket handshake failed: {}", id_, accept_error.message());
    ws_.next_layer().flush();  // Beast's error response, if it wrote one
    // Free the slot before the peer can see the close, not when this
    // object is destroyed (later, maybe on another thread): a client
    // that retries at once must not meet a 503 for its own old attempt.
    life_.fail_upgrade();
    state_->close_websocket();
    close_socket();
    co_return false;
  }
  // Who owns the runs of this connection: the session it presents (or a
  // new one); with tokens, the token's holder, whatever the session.
  session_ = state_->sessions.open(query_parameter(request.target(), "session"));
  owner_ = state_->access.tokens.empty() ? session_keys::owner_of(session_.serial)
                                         : "token:" + token_owner(request, state_->access);
  // Bytes read past the request would be taken as the start of a frame;
  // a client must wait for the 101 anyway (RFC 6455 4.1), so drop them.
  read_buffer_.consume(read_buffer_.size());
  // The request may have grown the buffer well past what frames need;
  // the WebSocket read prepares its own (about 1.5 KB) from scratch.
  read_buffer_.shrink_to_fit();
  co_return true;
}

template <class Transport>
void basic_session<Transport>::configure_websocket() {
  const server_config& config = state_->config;
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = config.handshake_timeout;
  // Beast's idle timer counts only frames received, and its ping waits
  // behind everything buffered: a client reading a long stream slowly would
  // be cut. check_liveness() counts bytes taken as well.
  timeouts.idle_timeout = websocket::stream_base::none();
  timeouts.keep_alive_pings = false;
  ws_.set_option(timeouts);
  ws_.control_callback([this](websocket::frame_type, beast::string_view) { ++frames_received_; });
  ws_.set_option(websocket::stream_base::decorator(
      [name = server_header(config)](websocket::response_type& response) {
        response.set(http::field::server, name);
      }));
  ws_.read_message_max(config.limits.max_message_bytes);
  ws_.auto_fragment(false);
  ws_.text(true);
}

template <class Transport>
asio::awaitable<bool> basic_session<Transport>::wait_for_room(server_run& run) {
  if (has_room_now(run)) co_return true;
  const bool room = co_await wait_for_outbox_room(shared_self(), run);
  co_return room;
}

template <class Transport>
asio::awaitable<bool> basic_session<Transport>::wait_for_outbox_room(
    [[maybe_unused]] std::shared_ptr<basic_session> self, const server_run& run) {
  for (;;) {
    if (outbox_.closed() || run.cancelled()) co_return false;
    if (!outbox_.has_room()) {
      state_->counters.outbox_waits.fetch_add(1, std::memory_order_relaxed);
    } else if (reserve_output()) {
      co_return true;
    } else {
      state_->counters.memory_budget_waits.fetch_add(1, std::memory_order_relaxed);
      wait_for_budget();
    }
    co_await outbox_.wait_for_progress();
  }
}

template <class Transport>
bool basic_session<Transport>::reserve_output() noexcept {
  // What the buffers will hold once the next event is queued, if they grow
  // for it: most events are far smaller than this guess, and a larger one
  // passes the reservation by at most itself.
  constexpr std::size_t typical_event_bytes = 512;
  const std::size_t needed = outbox_.queue().memory_bytes_after_event(typical_event_bytes) +
                             ws_.next_layer().memory_bytes();
  if (needed <= budget_holding_.bytes) {
    // Memory is short and this connection holds more than its share: it
    // waits until its writer has emptied the outbox and given its buffers
    // back, so a client that reads fast cannot keep the others out.
    return !state_->budget.reached() || budget_holding_.bytes <= share_of_budget();
  }
  const bool granted = state_->budget.reserve(
      budget_holding_, needed, state_->counters.connections_open.load(std::memory_order_relaxed));
  budget_held_.store(budget_holding_.bytes, std::memory_order_relaxed);
  return granted;
}

template <class Transport>
void basic_session<Transport>::release_output() {
  if (budget_holding_.bytes == 0) return;
  // A slow consumer being closed gives back all of it: what its layer still
  // holds (two chunks at most) goes with its socket, and counting it would
  // keep the budget reached for the closing handshake's time.
  state_->budget.release_to(budget_holding_, life_.closing_slow_consumer() ? 0 : output_memory());
  budget_held_.store(budget_holding_.bytes, std::memory_order_relaxed);
}

template <class Transport>
void basic_session<Transport>::release_idle_buffers_under_pressure() {
  // Buffers are kept for reuse while runs stream (no allocation per event);
  // when memory is short, an empty queue is not worth its capacity.
  if (!state_->budget.reached() || !outbox_.empty()) return;
  outbox_.release_memory();
  ws_.next_layer().release_memory();
  release_output();
}

template <class Transport>
std::size_t basic_session<Transport>::share_of_budget() const noexcept {
  return std::max(
      memory_budget::block_bytes,
      state_->budget.fair_share(state_->counters.connections_open.load(std::memory_order_relaxed)));
}

template <class Transport>
bool basic_session<Transport>::over_budget_share() const noexcept {
  return state_->budget.reached() && budget_holding_.bytes >= share_of_budget();
}

template <class Transport>
void basic_session<Transport>::wait_for_budget() {
  if (budget_wake_requested_) return;
  budget_wake_requested_ = true;
  // Called on the thread that made room: hop to this connection's strand.
  // Only a weak reference waits in the budget: a connection gone meanwhile
  // leaves nothing behind that needs its thread.
  state_->budget.wait([weak = std::weak_ptr<basic_session>(shared_self())] {
    if (auto self = weak.lock()) {
      asio::post(self->ws_.get_executor(), [self] {
        self->budget_wake_requested_ = false;
        self->outbox_.wake_producers();
      });
    }
  });
}

template <class Transport>
bool basic_session<Transport>::command_pending() {
  if (commands_read_ != commands_settled_) return true;
  if constexpr (requires(lowest_layer_type & layer) { lowest::readable_bytes(layer); }) {
    return lowest::readable_bytes(beast::get_lowest_layer(ws_)) > 0;
  } else {
    return false;
  }
}

// A coroutine of its own: commands are large variants, and in
// read_commands' frame they would be held for the life of the connection.
template <class Transport>
asio::awaitable<void> basic_session<Transport>::handle_message() {
  if (!ws_.got_text()) {
    send_error(binary_frame_error());
    co_return;
  }
  const auto data = read_buffer_.cdata();
  const std::string_view text(static_cast<const char*>(data.data()), data.size());
  if (text.size() < offload_parse_bytes) {
    if (auto rest = handle_command(parse_command(text, state_->config.limits))) {
      co_await handle_run_command(std::move(*rest));
    }
  } else if (auto parsed = co_await state_->parse_pool.parse(text, state_->config.limits);
             parsed && life_.takes_commands()) {
    // Parsed on the pool while this thread served other connections
    // (see command_parsing.hpp); nothing was read meanwhile.
    if (auto rest = handle_command(std::move(*parsed))) {
      co_await handle_run_command(std::move(*rest));
    }
  }
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::read_commands() {
  for (;;) {
    auto [ec, bytes] = co_await ws_.async_read(read_buffer_, nothrow);
    if (ec) {
      if (is_expected_end(ec)) {
        spdlog::debug("conn {}: read ended: {}", id_, ec.message());
      } else if (ec == websocket::error::message_too_big) {
        spdlog::info("conn {}: closing with 1009: a message over {} bytes", id_,
                     state_->config.limits.max_message_bytes);
        state_->counters.count_close(close_cause::message_too_big);
      } else if (ec.category() == websocket::make_error_code(websocket::error::closed).category()) {
        spdlog::info("conn {}: closing: the peer broke the WebSocket protocol: {}", id_,
                     ec.message());
        state_->counters.count_close(close_cause::protocol_error);
      } else {
        spdlog::info("conn {}: connection failed: {}", id_, ec.message());
      }
      co_return;
    }
    ++frames_received_;
    ++commands_read_;  // runs let the reader go first (yield_to_commands)
    command_read_at_ = std::chrono::steady_clock::now();
    if (life_.takes_commands()) co_await handle_message();
    read_buffer_.consume(read_buffer_.size());
    // A large message grew the buffer to its size, and a flat_buffer keeps
    // its capacity: give it back rather than hold the largest message ever
    // read for the life of the connection. Small ones keep it for reuse.
    if (read_buffer_.capacity() > kept_read_buffer_bytes) read_buffer_.shrink_to_fit();
    // Commands keep being read while run events wait for a slow client, so
    // a cancel acts at once. What that can cost is bounded: a peer that
    // sends commands but does not read their answers stops being read once
    // too many answers are unsent (until close, which still gets read).
    while (!outbox_.has_answer_room() && !outbox_.closed()) {
      state_->counters.command_read_pauses.fetch_add(1, std::memory_order_relaxed);
      co_await outbox_.wait_for_progress();
    }
    // The process's memory budget is reached and this connection holds its
    // share: its commands wait too, the way its runs do.
    while (over_budget_share() && !outbox_.closed()) {
      state_->counters.memory_budget_waits.fetch_add(1, std::memory_order_relaxed);
      wait_for_budget();
      co_await outbox_.wait_for_progress();
    }
  }
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::write_frames(
    [[maybe_unused]] std::shared_ptr<basic_session> self) {
  // Data frames skip Beast's per-message write: the writer frames a whole
  // batch straight into the coalescing layer (server frames are unmasked and
  // uncompressed), so a batch costs one copy and one socket write. Beast's
  // own frames (pongs, the close) still go through it, whole, in between.
  auto& layer = ws_.next_layer();
  const std::size_t chunk = state_->config.write_chunk_bytes;
  for (;;) {
    if (outbox_.empty() && !outbox_.closed()) {
      if (runs_.empty()) {
        // Nothing runs: the connection may idle for hours, so the writer
        // ends and gives back its buffers (about 2 KiB with its coroutine
        // frames); the next frame queued starts a new one. While runs stream
        // it stays: no allocation per event.
        outbox_.release_memory();
        layer.release_memory();
        release_output();
        cancels_in_outbox_.shrink_to_fit();
        waiting_chunk_.shrink_to_fit();
        finished_runs_.clear();
        life_.writer_idle();
        note_caught_up();
        co_return;
      }
      note_caught_up();
      release_idle_buffers_under_pressure();
      co_await outbox_.wait_for_frames();
      note_write_taken(std::chrono::steady_clock::now());  // output waits from here
    }
    if (outbox_.empty()) break;  // closed and drained
    // The peer is closing or gone, or we are closing a slow consumer (its
    // close frame is already behind the last frame it will get).
    if (!ws_.is_open() || layer.error() || life_.closing_slow_consumer()) break;
    // Answers first, then events up to one chunk: what is handed to the
    // socket can no longer be overtaken or taken back, so keep it small.
    std::string& wire = layer.raw_buffer();
    waiting_chunk_.clear();
    waiting_chunk_offset_ = wire.size();
    const send_queue::taken taken =
        outbox_.take(chunk, [this, &wire](std::string_view frame, const frame_tag& tag) {
          const std::size_t before = wire.size();
          append_text_frame(wire, frame);
          const std::size_t bytes = wire.size() - before;
          if (!waiting_chunk_.empty() && waiting_chunk_.back().tag.run == tag.run &&
              waiting_chunk_.back().tag.droppable == tag.droppable) {
            ++waiting_chunk_.back().frames;
            waiting_chunk_.back().bytes += bytes;
          } else {
            waiting_chunk_.push_back({tag, 1, bytes});
          }
        });
    layer.flush();
    waiting_chunk_flushes_ = layer.flushes_completed();
    auto& counters = state_->counters;
    counters.write_batch_frames.observe(static_cast<double>(taken.frames));
    if (!cancels_in_outbox_.empty()) {
      // Their run_cancelled went with this chunk (answers go first); the
      // latency is observed when the flush carrying it completes.
      const std::uint64_t flush = layer.flush_carrying_pending();
      for (const auto read_at : cancels_in_outbox_)
        cancels_in_flush_->cancels.push_back({flush, read_at});
      cancels_in_outbox_.clear();
    }
    counters.frames_sent.fetch_add(taken.frames, std::memory_order_relaxed);
    counters.bytes_sent.fetch_add(taken.bytes, std::memory_order_relaxed);
    // Runs of other strands wait in their mailboxes while the outbox is full.
    if (mailbox_frames_left_) drain_mailboxes();
    // One chunk may wait behind the write in flight, no more: the next is
    // taken when that one goes out, so answers queued meanwhile go first.
    if (layer.pending_bytes() > 0) {
      life_.write_started();
      arm_send_watchdog();
      co_await layer.async_wait_pending_at_most(0, nothrow);  // a failure shows in layer.error()
      life_.write_completed();
    }
    note_write_taken(std::chrono::steady_clock::now());
    release_output();
    waiting_chunk_.clear();  // handed to the socket
    if (layer.error()) {
      if (!is_expected_end(layer.error())) {
        spdlog::info("conn {}: write failed: {}", id_, layer.error().message());
      }
      break;
    }
  }
  // The outbox is closed or the socket failed: no writer starts after this one.
  life_.writer_finished();
  release_output();
  if (!life_.closing_slow_consumer()) send_watchdog_.cancel();  // else it is the close deadline
  if (layer.error()) {
    // The peer is gone: its runs end here, counted as cancelled by the
    // disconnect (they will never send a terminal event), and their timers
    // stop at once instead of when the reader notices.
    leave_all_runs();
    outbox_.close();
    close_socket();
    co_return;
  }
  if (close_reason_ && ws_.is_open()) {
    auto [ec] = co_await ws_.async_close(*close_reason_, nothrow);
    if (ec && !is_expected_end(ec)) spdlog::debug("conn {}: close failed: {}", id_, ec.message());
  }
}

template <class Transport>
void basic_session<Transport>::start_writer() {
  if (!life_.start_writer()) return;
  note_write_taken(std::chrono::steady_clock::now());  // output waits from here
  asio::co_spawn(ws_.get_executor(), write_frames(shared_self()),
                 log_failure(fmt::format("conn {}: writer", id_)));
}

template <class Transport>
void basic_session<Transport>::arm_send_watchdog() {
  if (watchdog_armed_) return;
  watchdog_armed_ = true;
  send_watchdog_.expires_after(state_->config.send_timeout);
  send_watchdog_.async_wait(
      [self = shared_self(), seen = ws_.next_layer().flushes_completed()](const error_code& ec) {
        self->watchdog_armed_ = false;
        if (ec || !self->life_.write_in_flight()) return;
        if (self->ws_.next_layer().flushes_completed() != seen) {
          self->arm_send_watchdog();  // slow but moving: look again later
          return;
        }
        self->close_slow_consumer();
      });
}

template <class Transport>
void basic_session<Transport>::close_slow_consumer(close_cause cause) {
  if (!life_.begin_slow_consumer_close()) return;
  state_->counters.count_close(cause);
  if (cause == close_cause::memory_budget) {
    spdlog::warn(
        "conn {}: closing slow consumer: the memory budget ({} bytes) stayed reached and it took "
        "nothing for {} ms ({} bytes queued)",
        id_, state_->budget.limit(), state_->config.memory_budget_grace.count(),
        outbox_.queued_bytes() + ws_.next_layer().buffered_bytes());
  } else {
    spdlog::warn("conn {}: closing slow consumer: nothing taken for {} ms ({} bytes queued)", id_,
                 state_->config.send_timeout.count(),
                 outbox_.queued_bytes() + ws_.next_layer().buffered_bytes());
  }
  state_->counters.slow_consumer_closes.fetch_add(1, std::memory_order_relaxed);
  // Runs stop at once and memory stops growing; what is already buffered
  // stays, in order, ahead of the close frame: a client that reads again
  // gets every event it was sent, then 1008, and knows where its stream ended.
  leave_all_runs();
  outbox_.close();
  // The queued frames will never be sent (the writer stops at the close):
  // their memory, and their share of the budget, go back now.
  outbox_.discard();
  release_output();
  asio::co_spawn(
      ws_.get_executor(),
      [](std::shared_ptr<basic_session> self) -> asio::awaitable<void> {
        auto [ec] = co_await self->ws_.async_close(
            websocket::close_reason(websocket::close_code::policy_error, "slow consumer"), nothrow);
        if (ec && !is_expected_end(ec)) {
          spdlog::debug("conn {}: close failed: {}", self->id_, ec.message());
        }
      }(shared_self()),
      asio::detached);
  // A peer that still takes nothing cannot get the close frame either: the
  // socket closes after the closing-handshake time.
  send_watchdog_.expires_after(state_->config.handshake_timeout);
  send_watchdog_.async_wait([self = shared_self()](const error_code& ec) {
    if (!ec) self->close_socket();
  });
}

template <class Transport>
void basic_session<Transport>::arm_liveness_check() {
  // A quarter of the shorter timeout: a close comes at most that late.
  const auto period =
      std::max(std::chrono::milliseconds(100),
               std::min(state_->config.idle_timeout, state_->config.send_timeout) / 4);
  liveness_timer_.expires_after(period);
  liveness_timer_.async_wait([self = shared_self()](const error_code& ec) {
    if (!ec) self->check_liveness();
  });
}

// Liveness counts progress. While something waits to be sent (queued,
// being written, or unacknowledged in the kernel), progress is bytes the peer
// takes: a flush completing, the unacknowledged bytes shrinking; one that
// takes nothing for the send timeout is a slow consumer (the writer's
// watchdog covers a write in flight, this the bytes the kernel still holds).
// With nothing waiting, only a frame from the peer counts (a pong too): our
// own ping leaving, or being acknowledged by a kernel whose application is
// stuck, proves nothing. A peer quiet for half the idle timeout is pinged,
// and closed at the whole of it; so the idle clock starts once everything
// sent was acknowledged, and a client has half the idle timeout to read
// what its own buffers hold and answer.
template <class Transport>
void basic_session<Transport>::check_liveness() {
  // The session is over (or closing): a check that was already due when
  // serve() cancelled the timer must not arm it again.
  if (!life_.takes_commands() || outbox_.closed() || !ws_.is_open()) return;
  const server_config& config = state_->config;
  const auto now = std::chrono::steady_clock::now();
  const progress_seen current{frames_received_, ws_.next_layer().flushes_completed(),
                              lowest::unacked_bytes(beast::get_lowest_layer(ws_))};
  const bool taken =
      current.flushes != progress_seen_.flushes || current.unacked < progress_seen_.unacked;
  const bool progress =
      current.frames != progress_seen_.frames || (progress_seen_.waiting && taken);
  const bool waiting = !outbox_.empty() || life_.write_in_flight() || current.unacked > 0 ||
                       ws_.next_layer().buffered_bytes() > 0;
  progress_seen_ = current;
  progress_seen_.waiting = waiting;
  if (progress) {
    quiet_since_ = now;
    ping_outstanding_ = false;
  }
  const auto quiet = now - quiet_since_;
  if (waiting) {
    if (quiet >= config.send_timeout) {
      close_slow_consumer();
      return;
    }
  } else if (quiet >= config.idle_timeout) {
    spdlog::info("conn {}: closing idle connection: nothing received for {} ms", id_,
                 std::chrono::duration_cast<std::chrono::milliseconds>(quiet).count());
    state_->counters.count_close(close_cause::idle);
    life_.begin_closing();
    leave_all_runs();
    outbox_.close();
    close_socket();
    return;
  } else if (quiet >= config.idle_timeout / 2 && !ping_outstanding_) {
    ping_outstanding_ = true;
    asio::co_spawn(
        ws_.get_executor(),
        [](std::shared_ptr<basic_session> self) -> asio::awaitable<void> {
          co_await self->ws_.async_ping({}, nothrow);
        }(shared_self()),
        asio::detached);
  }
  arm_liveness_check();
}

template <class Transport>
void basic_session<Transport>::send_error(const protocol_error& error) {
  state_->counters.errors_sent.fetch_add(1, std::memory_order_relaxed);
  state_->counters.errors_by_code[static_cast<std::size_t>(error.code)].fetch_add(
      1, std::memory_order_relaxed);
  queue_answer([&](std::string& out) { append_error(out, now(), error); });
}

template <class Transport>
void basic_session<Transport>::begin_shutdown() {
  if (!life_.upgraded()) {
    close_socket();  // still in the HTTP phase: nothing to say goodbye to
    return;
  }
  if (!life_.begin_closing()) return;
  cancel_runs_for_shutdown();
  close_reason_ = websocket::close_reason(websocket::close_code::going_away, "server shutdown");
  outbox_.close();
  start_writer();  // it drains what is queued, then sends the close
}

}  // namespace agentws::detail
