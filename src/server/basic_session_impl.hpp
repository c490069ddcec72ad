// basic_session's definitions; included by basic_session.hpp only.
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
#include "server/http_routes.hpp"

namespace agentws::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using boost::system::error_code;

namespace session_detail {

inline constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

// A run that lets commands received go first (see yield_to_commands) emits
// again once the reader stayed idle for this many trips through the strand,
// or after this many trips in which bytes on the socket made no command.
inline constexpr unsigned idle_trips_before_emitting = 3;
inline constexpr unsigned trips_before_emitting_anyway = 16;

// The read buffer's capacity kept between commands; past it, it is given back
// after the message (typical commands are a few hundred bytes).
inline constexpr std::size_t kept_read_buffer_bytes = 16 * 1024;

// Ends of a connection that are part of normal life: logged at debug only.
inline bool is_expected_end(const error_code& ec) {
  return ec == websocket::error::closed || ec == asio::error::eof ||
         ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == beast::error::timeout ||
         ec == http::error::end_of_stream;
}

inline std::string server_header(const server_config& config) {
  return config.identity.name + "/" + config.identity.version;
}

}  // namespace session_detail

using session_detail::idle_trips_before_emitting;
using session_detail::is_expected_end;
using session_detail::kept_read_buffer_bytes;
using session_detail::nothrow;
using session_detail::server_header;
using session_detail::trips_before_emitting_anyway;

// Lets the rest of the strand run. A command the peer already sent must
// act before this run's next slice, but its read takes a few trips through
// the strand (a frame already in Beast's buffer completes through a post,
// bytes still on the socket through the reactor first), each queued behind
// a plain post: the run got a slice per trip. So while the reader took a
// command since a run last saw it idle, or bytes wait on the socket, the
// run yields without emitting, trip after trip: on while the reader takes
// commands (a burst of them acts before the runs go on), until the reader
// stays idle for a few trips with nothing on the socket (what came is
// handled; its next read waits for the network, a partial frame too) or
// bytes on the socket make no command for a while.
template <class Transport>
asio::awaitable<void> basic_session<Transport>::yield_to_commands(server_run& run) {
  const auto self = shared_self();  // the run may outlive this connection
  const auto executor = ws_.get_executor();
  if (!command_pending()) {
    co_await asio::post(executor, asio::use_awaitable);
    co_return;
  }
  unsigned idle = 0;
  unsigned no_command = 0;
  for (;;) {
    if (outbox_.closed()) co_return;
    const std::uint64_t commands = commands_read_;
    if (outbox_.has_answer_room()) {
      co_await asio::post(executor, asio::use_awaitable);
    } else {
      // The reader waits for answer room: so does the run, without
      // spinning. No deadlock: the writer that makes the room never
      // waits for runs.
      co_await outbox_.wait_for_progress();
    }
    if (run.cancelled()) co_return;
    if (commands_read_ != commands) {
      idle = no_command = 0;
      continue;
    }
    commands_settled_ = commands;
    if (!command_pending()) {
      if (++idle >= idle_trips_before_emitting) co_return;
    } else if (++no_command >= trips_before_emitting_anyway) {
      co_return;
    } else {
      idle = 0;
    }
  }
}

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
  if (upgraded_) state_->close_websocket();
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
    if (self->upgraded_) {
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
    if (self->closing_ || !self->upgraded_) return;
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
  // One deadline for everything before the upgrade, from the accept: a
  // keep-alive connection cannot live on by sending a request now and then.
  lowest::expires_after(beast::get_lowest_layer(ws_), state_->config.handshake_timeout);
  if constexpr (is_tls_transport<Transport>) {
    const bool secured = co_await tls_handshake();
    if (!secured) co_return;
  }
  const bool upgraded = co_await serve_http();
  if (!upgraded) co_return;

  const std::string peer = lowest::peer_address(beast::get_lowest_layer(ws_));
  spdlog::info("conn {}: websocket open from {}", id_, peer);
  queue_answer([&](std::string& out) {
    append_connected(out, now(), state_->config.identity, state_->config.limits,
                     state_->config.default_params,
                     session_announcement{session_.key, session_.resumed});
  });
  if (state_->stopping()) begin_shutdown();
  quiet_since_ = std::chrono::steady_clock::now();
  arm_liveness_check();

  co_await read_commands();

  // The peer is gone or the close handshake is done: nothing more reaches it.
  leave_all_runs();
  outbox_.close();
  state_->sessions.close(session_.serial, std::chrono::steady_clock::now(),
                         state_->registry->has_runs(session_keys::owner_of(session_.serial)));
  send_watchdog_.cancel();   // its wait holds the session alive
  liveness_timer_.cancel();  // so does this one
  spdlog::info("conn {}: websocket closed ({})", id_, peer);
}

template <class Transport>
asio::awaitable<bool> basic_session<Transport>::tls_handshake() {
  auto [ec] = co_await transport().async_handshake(asio::ssl::stream_base::server, nothrow);
  if (ec) {
    // Port scanners, plain-HTTP clients and clients that do not trust our
    // certificate all end here: normal on a public port, so not a warning.
    if (ec == beast::error::timeout) {
      note_handshake_deadline();
    } else {
      spdlog::debug("conn {}: TLS handshake failed: {}", id_, ec.message());
    }
    close_socket();
    co_return false;
  }
  co_return true;
}

template <class Transport>
asio::awaitable<bool> basic_session<Transport>::serve_http() {
  const server_config& config = state_->config;
  const std::string server_name = server_header(config);
  // HTTP goes straight to the transport: the coalescing layer is for frames.
  Transport& stream = transport();
  auto& tcp = beast::get_lowest_layer(ws_);
  for (std::size_t requests = 1;; ++requests) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(16 * 1024);
    auto [read_error, read_bytes] =
        co_await http::async_read(stream, read_buffer_, parser, nothrow);
    if (read_error) {
      if (read_error == http::error::header_limit) {
        auto response = make_status_response(http::status::request_header_fields_too_large, 11,
                                             server_name, "Request Header Fields Too Large");
        co_await http::async_write(stream, response, nothrow);
      } else if (read_error == http::error::body_limit) {
        auto response = make_status_response(http::status::payload_too_large, 11, server_name,
                                             "Content Too Large");
        co_await http::async_write(stream, response, nothrow);
      } else if (read_error == beast::error::timeout) {
        note_handshake_deadline();
      } else if (!is_expected_end(read_error)) {
        spdlog::debug("conn {}: bad HTTP request: {}", id_, read_error.message());
        auto response =
            make_status_response(http::status::bad_request, 11, server_name, "Bad Request");
        co_await http::async_write(stream, response, nothrow);
      }
      close_socket();
      co_return false;
    }

    http_request& request = parser.get();
    const bool upgrade = websocket::is_upgrade(request) && is_websocket_path(request.target());
    const bool needs_token = upgrade || target_path(request.target()) == "/metrics";
    if (auto refusal = check_access(request, state_->access, needs_token)) {
      spdlog::info("conn {}: refused {} {}: {}", id_, std::string(request.method_string()),
                   std::string(target_path(request.target())), refusal->reason);
      auto response =
          make_status_response(refusal->status, request.version(), server_name, refusal->reason);
      if (refusal->status == http::status::unauthorized) {
        response.set(http::field::www_authenticate, "Bearer");
      }
      co_await http::async_write(stream, response, nothrow);
      close_socket();
      co_return false;
    }
    if (upgrade) {
      if (state_->stopping() || !state_->try_open_websocket()) {
        auto response =
            make_status_response(http::status::service_unavailable, request.version(), server_name,
                                 "Service Unavailable: connection limit reached");
        response.set(http::field::retry_after, "1");
        co_await http::async_write(stream, response, nothrow);
        close_socket();
        co_return false;
      }
      upgraded_ = true;
      state_->socket_upgraded(socket_id_);
      // From here on the WebSocket's own timeouts govern the connection.
      lowest::expires_never(tcp);
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
        upgraded_ = false;
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

    http_response response =
        answer_http(request, server_name, {[this] { return state_->counters.render_metrics(); }});
    if (requests >= config.max_requests_per_connection) response.keep_alive(false);
    const bool keep_alive = response.keep_alive();
    auto [write_error, written] = co_await http::async_write(stream, response, nothrow);
    if (write_error || !keep_alive) {
      lowest::shutdown_send(tcp);
      close_socket();
      co_return false;
    }
  }
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
  state_->budget.release_to(budget_holding_, slow_close_started_ ? 0 : output_memory());
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
  if constexpr (requires(lowest_layer_type& layer) { lowest::readable_bytes(layer); }) {
    return lowest::readable_bytes(beast::get_lowest_layer(ws_)) > 0;
  } else {
    return false;
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
    if (!closing_) {
      if (ws_.got_text()) {
        const auto data = read_buffer_.cdata();
        const std::string_view text(static_cast<const char*>(data.data()), data.size());
        if (text.size() < offload_parse_bytes) {
          if (auto rest = handle_command(parse_command(text, state_->config.limits))) {
            co_await handle_run_command(std::move(*rest));
          }
        } else if (auto parsed = co_await state_->parse_pool.parse(text, state_->config.limits);
                   parsed && !closing_) {
          // Parsed on the pool while this thread served other connections
          // (see command_parsing.hpp); nothing was read meanwhile.
          if (auto rest = handle_command(std::move(*parsed))) {
            co_await handle_run_command(std::move(*rest));
          }
        }
      } else {
        send_error(binary_frame_error());
      }
    }
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
        writer_running_ = false;
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
    if (!ws_.is_open() || layer.error() || slow_close_started_) break;
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
      write_in_flight_ = true;
      arm_send_watchdog();
      co_await layer.async_wait_pending_at_most(0, nothrow);  // a failure shows in layer.error()
      write_in_flight_ = false;
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
  writer_finished_ = true;
  release_output();
  if (!slow_close_started_) send_watchdog_.cancel();  // else it is the close deadline
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
  if (writer_running_ || writer_finished_ || !upgraded_) return;
  writer_running_ = true;
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
        if (ec || !self->write_in_flight_) return;
        if (self->ws_.next_layer().flushes_completed() != seen) {
          self->arm_send_watchdog();  // slow but moving: look again later
          return;
        }
        self->close_slow_consumer();
      });
}

template <class Transport>
void basic_session<Transport>::close_slow_consumer(close_cause cause) {
  if (slow_close_started_) return;
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
  closing_ = true;
  slow_close_started_ = true;
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
  if (closing_ || outbox_.closed() || !ws_.is_open()) return;
  const server_config& config = state_->config;
  const auto now = std::chrono::steady_clock::now();
  const progress_seen current{frames_received_, ws_.next_layer().flushes_completed(),
                              lowest::unacked_bytes(beast::get_lowest_layer(ws_))};
  const bool taken =
      current.flushes != progress_seen_.flushes || current.unacked < progress_seen_.unacked;
  const bool progress =
      current.frames != progress_seen_.frames || (progress_seen_.waiting && taken);
  const bool waiting = !outbox_.empty() || write_in_flight_ || current.unacked > 0 ||
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
    closing_ = true;
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
void basic_session<Transport>::note_handshake_deadline() {
  spdlog::info("conn {}: closed before the upgrade: {} ms since the accept", id_,
               state_->config.handshake_timeout.count());
  state_->counters.count_close(close_cause::handshake_deadline);
}

template <class Transport>
std::optional<command> basic_session<Transport>::handle_command(parse_result result) {
  if (auto* error = std::get_if<protocol_error>(&result)) {
    send_error(*error);
    return std::nullopt;
  }
  command parsed = std::get<command>(std::move(result));
  if (auto* start = std::get_if<start_run_command>(&parsed)) {
    start_run(std::move(*start));
    return std::nullopt;
  }
  if (auto* list = std::get_if<list_runs_command>(&parsed)) {
    list_runs(*list);
    return std::nullopt;
  }
  return parsed;  // may need the strand of another connection's run
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::handle_run_command(command parsed) {
  if (auto* cancel = std::get_if<cancel_run_command>(&parsed)) {
    co_await cancel_run(std::move(*cancel));
  } else if (auto* attach = std::get_if<attach_run_command>(&parsed)) {
    co_await attach_run(std::move(*attach));
  } else if (auto* detach = std::get_if<detach_run_command>(&parsed)) {
    co_await detach_run(std::move(*detach));
  }
}

template <class Transport>
void basic_session<Transport>::send_error(const protocol_error& error) {
  state_->counters.errors_sent.fetch_add(1, std::memory_order_relaxed);
  state_->counters.errors_by_code[static_cast<std::size_t>(error.code)].fetch_add(
      1, std::memory_order_relaxed);
  queue_answer([&](std::string& out) { append_error(out, now(), error); });
}

template <class Transport>
void basic_session<Transport>::start_run(start_run_command command) {
  const protocol_limits& limits = state_->config.limits;
  if (runs_.contains(command.run_id)) {
    send_error(run_already_active_error(std::move(command.run_id), std::move(command.request_id)));
    return;
  }
  if (runs_.size() >= limits.max_active_runs) {
    send_error(too_many_runs_error(std::move(command.run_id), std::move(command.request_id),
                                   limits.max_active_runs));
    return;
  }
  auto run = std::make_shared<server_run>(
      server_run::settings{owner_, command.run_id, state_->config.agent_logic ? "default" : "demo",
                           command.params.apply_to(state_->config.default_params),
                           command.on_disconnect,
                           std::chrono::milliseconds(command.detach_grace_ms),
                           history_limits{limits.history_events, limits.history_bytes}},
      ws_.get_executor());
  // A version 1 run (no on_disconnect, no grace) is freed with this
  // connection, not retained for later attaches.
  const bool freed_with_connection =
      command.on_disconnect == disconnect_policy::cancel && command.detach_grace_ms == 0;
  switch (state_->registry->start(owner_, run->run_id(), run, freed_with_connection ? id_ : 0)) {
    case start_verdict::started:
      break;
    case start_verdict::already_active:
      // Another connection of this owner has it going.
      send_error(
          run_already_active_error(std::move(command.run_id), std::move(command.request_id)));
      return;
    case start_verdict::owner_limit:
      send_error(run_limit_error(std::move(command.run_id), std::move(command.request_id),
                                 "Too many runs going for this owner (limit " +
                                     std::to_string(limits.max_runs_per_owner) + ")"));
      return;
  }
  // From its first run on, the session can be resumed by its key.
  state_->sessions.keep(session_);
  const std::uint64_t serial = next_run_serial_++;
  runs_.emplace(run->run_id(), followed_run{run, serial, nullptr});
  state_->counters.runs_started.fetch_add(1, std::memory_order_relaxed);
  const std::string_view started = run->begin(*this, serial, command.request_id);
  // Ahead of other runs' events, but behind what the previous run of this id
  // still has queued (its run_done, say).
  queue_answer([&](std::string& out) { out.append(started); }, queued_predecessor(run->run_id()),
               frame_tag{serial, false});
  spdlog::debug("conn {}: run {} started", id_, printable(run->run_id()));

  asio::co_spawn(
      ws_.get_executor(), server_run::execute(run, state_),
      asio::bind_cancellation_slot(
          run->cancel_slot(),
          [run, log = log_failure(fmt::format("conn {}: run {}", id_, printable(run->run_id())),
                                  {.ignore_aborted = true})](std::exception_ptr failure) {
            // `run` is captured so its signal outlives the coroutine.
            log(failure);
          }));
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::cancel_run(cancel_run_command command) {
  const auto followed = runs_.find(command.run_id);
  const std::shared_ptr<server_run> run = followed != runs_.end()
                                              ? followed->second.run
                                              : state_->registry->find(owner_, command.run_id);
  const bool direct = followed != runs_.end() && !followed->second.mailbox;
  // The registry decides who ends a run (a cancel from another connection,
  // the run finishing): exactly one of them answers.
  if (!run || !state_->registry->end(owner_, command.run_id, run.get(), run_state_name::cancelled,
                                     std::chrono::steady_clock::now())) {
    send_error(run_not_active_error(std::move(command.run_id), std::move(command.request_id)));
    co_return;
  }
  if (direct) {
    // Everything below happens before the next command is read: a start_run
    // of the same id right after this one starts a fresh run. The answer is
    // queued (queue_run_cancelled) before the run is woken to unwind.
    run->cancel(cancel_reason::client, command.request_id, *state_);
    cancels_in_outbox_.push_back(command_read_at_);
    spdlog::debug("conn {}: run {} cancelled by client", id_, printable(command.run_id));
    co_return;
  }
  // The run lives on another connection's strand: it is cancelled there,
  // and the reader waits for that, so the cancel is still done before the
  // next command is read.
  std::string frame = co_await asio::co_spawn(
      run->home(),
      [](std::shared_ptr<server_run> target, std::optional<std::string> request_id,
         std::shared_ptr<server_state> state) -> asio::awaitable<std::string> {
        co_return target->cancel(cancel_reason::client, request_id, *state);
      }(run, command.request_id, state_),
      asio::use_awaitable);
  spdlog::debug("conn {}: run {} of another connection cancelled by client", id_,
                printable(command.run_id));
  const auto still = runs_.find(command.run_id);
  if (still != runs_.end() && still->second.run == run) {
    drain_mailbox(command.run_id, true);  // its events, then the run_cancelled
  } else {
    queue_answer([&](std::string& out) { out.append(frame); });
    cancels_in_outbox_.push_back(command_read_at_);
  }
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::attach_run(attach_run_command command) {
  if (runs_.contains(command.run_id)) {
    send_error(already_attached_error(std::move(command.run_id), std::move(command.request_id)));
    co_return;
  }
  const std::shared_ptr<server_run> run = state_->registry->find(owner_, command.run_id);
  if (!run) {
    send_error(run_not_found_error(std::move(command.run_id), std::move(command.request_id)));
    co_return;
  }
  const protocol_limits& limits = state_->config.limits;
  if (runs_.size() >= limits.max_active_runs) {
    send_error(too_many_runs_error(std::move(command.run_id), std::move(command.request_id),
                                   limits.max_active_runs));
    co_return;
  }
  const std::uint64_t serial = next_run_serial_++;
  auto mailbox = std::make_shared<run_mailbox>(ws_.get_executor(),
                                               std::weak_ptr<run_mailbox::reader>(shared_self()),
                                               state_->config.outbox_bytes);
  runs_.emplace(command.run_id, followed_run{run, serial, mailbox});
  const auto attached = co_await asio::co_spawn(
      run->home(),
      [](std::shared_ptr<server_run> target, std::shared_ptr<run_mailbox> box,
         std::int64_t after_seq, std::optional<std::string> request_id,
         std::shared_ptr<server_state> state) -> asio::awaitable<server_run::attach_result> {
        co_return target->attach(box, after_seq, request_id, *state);
      }(run, mailbox, command.after_seq, command.request_id, state_),
      asio::use_awaitable);
  if (attached == server_run::attach_result::past_the_end) {
    stop_following(command.run_id, run.get());
    send_error(protocol_error{
        protocol_error_code::invalid_option,
        "after_seq is past the run's last event (last_seq " + std::to_string(run->last_seq()) + ")",
        command.run_id, command.request_id, std::nullopt});
    co_return;
  }
  // run_attached, run_gap, the replay: as much as the outbox takes now, the
  // rest as the writer makes room.
  drain_mailbox(command.run_id, false);
  const auto still = runs_.find(command.run_id);
  if (attached == server_run::attach_result::ended && still != runs_.end() &&
      still->second.run == run && mailbox->empty()) {
    // It had ended and the client had seen its end: nothing more comes.
    remember_finished(command.run_id, serial);
    runs_.erase(still);
  }
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::detach_run(detach_run_command command) {
  const auto it = runs_.find(command.run_id);
  if (it == runs_.end()) {
    if (state_->registry->find(owner_, command.run_id)) {
      send_error(not_attached_error(std::move(command.run_id), std::move(command.request_id)));
    } else {
      send_error(run_not_found_error(std::move(command.run_id), std::move(command.request_id)));
    }
    co_return;
  }
  const followed_run followed = it->second;
  bool detached = true;
  if (!followed.mailbox) {
    detached = followed.run->remove_home(false, *state_);
  } else {
    detached = co_await asio::co_spawn(
        followed.run->home(),
        [](std::shared_ptr<server_run> target, std::shared_ptr<run_mailbox> box,
           std::shared_ptr<server_state> state) -> asio::awaitable<bool> {
          co_return target->remove_mailbox(box.get(), false, *state);
        }(followed.run, followed.mailbox, state_),
        asio::use_awaitable);
  }
  if (!detached) {
    send_error(run_limit_error(std::move(command.run_id), std::move(command.request_id),
                               "Too many detached runs on this server (limit " +
                                   std::to_string(state_->config.limits.max_detached_runs) + ")"));
    co_return;
  }
  // Frames still in the mailbox were not sent: they stay in the run's
  // history for a later attach.
  if (followed.mailbox) followed.mailbox->close();
  stop_following(command.run_id, followed.run.get());
  remember_finished(command.run_id, followed.serial);
  queue_answer(
      [&](std::string& out) {
        append_run_detached(out, now(), command.run_id, command.request_id);
      },
      followed.serial);
}

template <class Transport>
void basic_session<Transport>::list_runs(const list_runs_command& command) {
  std::vector<run_listing> listing;
  for (registry_entry& entry : state_->registry->list(owner_)) {
    const auto followed = runs_.find(entry.run_id);
    const bool attached = followed != runs_.end() && followed->second.run == entry.run;
    listing.push_back(run_listing{std::move(entry.run_id),
                                  entry.run ? entry.run->agent_name() : std::string(), entry.state,
                                  entry.run ? entry.run->last_seq() : 0, attached});
  }
  queue_answer([&](std::string& out) { append_runs(out, now(), listing, command.request_id); });
}

template <class Transport>
void basic_session<Transport>::queue_run_done(server_run& run, std::uint64_t serial,
                                              std::string_view frame) {
  queue_event([&](std::string& out) { out.append(frame); }, frame_tag{serial, false});
  remember_finished(run.run_id(), serial);
  stop_following(run.run_id(), &run);
  spdlog::debug("conn {}: run {} done", id_, printable(run.run_id()));
}

template <class Transport>
void basic_session<Transport>::queue_run_cancelled(server_run& run, std::uint64_t serial,
                                                   const cancel_notice& notice) {
  std::size_t taken_back = 0;
  if (notice.reason == cancel_reason::shutdown) {
    // An announced stop wants the terminal events and the close to reach the
    // client within the grace: every event of this connection's runs that
    // has not reached the socket goes, the chunk behind the write in flight
    // too. The server cancels the runs one by one: take back for all of them
    // at the first.
    if (!shutdown_take_back_done_) {
      shutdown_take_back_done_ = true;
      for (const auto& [run_id, followed] : runs_) {
        if (!followed.mailbox) shutdown_taken_back_.emplace_back(followed.serial, 0);
      }
      std::sort(shutdown_taken_back_.begin(), shutdown_taken_back_.end());
      take_back_waiting_chunk(shutdown_taken_back_);
    }
    const auto it = std::lower_bound(shutdown_taken_back_.begin(), shutdown_taken_back_.end(),
                                     std::pair<std::uint64_t, std::size_t>(serial, 0));
    if (it != shutdown_taken_back_.end() && it->first == serial) taken_back = it->second;
  }
  announce_cancel(run, serial, notice, taken_back);
  stop_following(run.run_id(), &run);
}

template <class Transport>
void basic_session<Transport>::drain_mailboxes() {
  mailbox_frames_left_ = false;
  // Draining may end a follow (and erase its entry): collect first.
  std::vector<std::string> followed_by_mailbox;
  for (const auto& [run_id, followed] : runs_) {
    if (followed.mailbox) followed_by_mailbox.push_back(run_id);
  }
  for (const std::string& run_id : followed_by_mailbox)
    drain_mailbox(run_id, false);
}

template <class Transport>
bool basic_session<Transport>::drain_mailbox(const std::string& run_id, bool everything) {
  const auto it = runs_.find(run_id);
  if (it == runs_.end() || !it->second.mailbox) return true;
  const followed_run followed = it->second;
  bool ended = false;
  const bool left = followed.mailbox->drain(
      [this] { return outbox_.has_room() && reserve_output(); },
      [&](std::string_view frame, run_mailbox::kind what) {
        const frame_tag tag{followed.serial, false};
        if (what == run_mailbox::kind::answer) {
          queue_answer([&](std::string& out) { out.append(frame); }, followed.serial, tag);
        } else {
          queue_event([&](std::string& out) { out.append(frame); }, tag);
          ended = ended || what == run_mailbox::kind::terminal;
        }
      },
      everything);
  if (left) mailbox_frames_left_ = true;
  if (!ended) return true;
  followed.mailbox->close();
  remember_finished(run_id, followed.serial);
  stop_following(run_id, followed.run.get());
  return false;
}

template <class Transport>
void basic_session<Transport>::stop_following(const std::string& run_id, const server_run* run) {
  // A run's id may already belong to a newer run: erase only our own.
  const auto it = runs_.find(run_id);
  if (it != runs_.end() && it->second.run.get() == run) runs_.erase(it);
}

template <class Transport>
void basic_session<Transport>::leave_all_runs() {
  auto followed_runs = std::move(runs_);
  runs_.clear();
  // Its ended version 1 runs go too (the going ones, once cancelled below).
  state_->registry->forget_ended_with(owner_, id_);
  for (auto& [run_id, followed] : followed_runs) {
    if (!followed.mailbox) {
      // Same strand: at once. A run that ends with its connection (version
      // 1's rule) is cancelled here, with nobody left to tell.
      followed.run->remove_home(true, *state_);
    } else {
      followed.mailbox->close();
      asio::post(followed.run->home(),
                 [run = followed.run, mailbox = followed.mailbox, state = state_] {
                   run->remove_mailbox(mailbox.get(), true, *state);
                 });
    }
  }
}

template <class Transport>
void basic_session<Transport>::cancel_runs_for_shutdown() {
  // The server cancelled every run before telling connections to close, so
  // the runs of other strands have their run_cancelled in the mailboxes; the
  // ones of this strand were cancelled here (queue_run_cancelled), unless
  // they started since.
  std::vector<std::shared_ptr<server_run>> direct;
  for (const auto& [run_id, followed] : runs_) {
    if (!followed.mailbox) direct.push_back(followed.run);
  }
  for (const auto& run : direct)
    run->cancel_for_shutdown(*state_);
  std::vector<std::string> followed_by_mailbox;
  for (const auto& [run_id, followed] : runs_) {
    if (followed.mailbox) followed_by_mailbox.push_back(run_id);
  }
  for (const std::string& run_id : followed_by_mailbox)
    drain_mailbox(run_id, true);
}

template <class Transport>
void basic_session<Transport>::take_back_waiting_chunk(
    std::vector<std::pair<std::uint64_t, std::size_t>>& runs) {
  auto& layer = ws_.next_layer();
  std::size_t chunk_bytes = 0;
  for (const chunk_span& span : waiting_chunk_)
    chunk_bytes += span.bytes;
  std::string& wire = layer.raw_buffer();
  const bool still_waiting = !waiting_chunk_.empty() &&
                             layer.flushes_completed() == waiting_chunk_flushes_ &&
                             waiting_chunk_offset_ + chunk_bytes <= wire.size();
  if (!still_waiting) return;
  // Compact in place; frames Beast queued after the chunk (a pong) stay behind it.
  std::size_t read = waiting_chunk_offset_;
  std::size_t write = read;
  std::size_t frames_dropped = 0;
  for (const chunk_span& span : waiting_chunk_) {
    auto run = runs.end();
    if (span.tag.droppable) {
      run = std::lower_bound(runs.begin(), runs.end(),
                             std::pair<std::uint64_t, std::size_t>(span.tag.run, 0));
      if (run != runs.end() && run->first != span.tag.run) run = runs.end();
    }
    if (run != runs.end()) {
      run->second += span.frames;
      frames_dropped += span.frames;
    } else {
      if (write != read) std::memmove(wire.data() + write, wire.data() + read, span.bytes);
      write += span.bytes;
    }
    read += span.bytes;
  }
  if (write != read) {
    std::memmove(wire.data() + write, wire.data() + read, wire.size() - read);
    wire.resize(wire.size() - (read - write));
  }
  waiting_chunk_.clear();
  // They were counted as sent when the writer took them.
  state_->counters.frames_sent.fetch_sub(frames_dropped, std::memory_order_relaxed);
  state_->counters.bytes_sent.fetch_sub(read - write, std::memory_order_relaxed);
}

template <class Transport>
void basic_session<Transport>::announce_cancel(const server_run& run, std::uint64_t serial,
                                               const cancel_notice& notice,
                                               std::size_t taken_back) {
  // Events not yet handed to the socket are never sent: the client learns
  // where the run's stream ended for it from last_step. (They stay in the
  // run's history.)
  const std::uint64_t sent = run.next_step() - taken_back - outbox_.drop_events_of(serial);
  const std::optional<std::uint64_t> last_step =
      sent > 0 ? std::optional<std::uint64_t>(sent - 1) : std::nullopt;
  // Ahead of other runs' events; behind this run's run_started if even that
  // is still queued behind a predecessor of the same id. Same ts and seq as
  // in the run's history.
  queue_answer(
      [&](std::string& out) {
        append_run_cancelled(out, notice.ts, run.run_id(), notice.seq, notice.reason,
                             notice.request_id, last_step);
      },
      serial, frame_tag{serial, false});
}

template <class Transport>
std::uint64_t basic_session<Transport>::queued_predecessor(const std::string& run_id) {
  auto it = finished_runs_.find(run_id);
  if (it == finished_runs_.end()) return 0;
  const finished_run previous = it->second;
  finished_runs_.erase(it);  // the new run's own frames queue behind it from now on
  const bool may_be_queued = previous.generation + 2 > outbox_.queue().generation();
  return may_be_queued && outbox_.queue().holds_events_of(previous.serial) ? previous.serial : 0;
}

template <class Transport>
void basic_session<Transport>::remember_finished(const std::string& run_id, std::uint64_t serial) {
  const std::uint64_t generation = outbox_.queue().generation();
  // Bounded: entries from before the last two refills have left the queue.
  if (finished_runs_.size() >= 2 * state_->config.limits.max_active_runs) {
    std::erase_if(finished_runs_, [generation](const auto& entry) {
      return entry.second.generation + 2 <= generation;
    });
  }
  finished_runs_.insert_or_assign(run_id, finished_run{serial, generation});
}

template <class Transport>
void basic_session<Transport>::begin_shutdown() {
  if (!upgraded_) {
    close_socket();  // still in the HTTP phase: nothing to say goodbye to
    return;
  }
  if (closing_) return;
  closing_ = true;
  cancel_runs_for_shutdown();
  close_reason_ = websocket::close_reason(websocket::close_code::going_away, "server shutdown");
  outbox_.close();
  start_writer();  // it drains what is queued, then sends the close
}

}  // namespace agentws::detail
