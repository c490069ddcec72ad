// The life of one connection and of its writer, as two explicit states
// instead of a row of flags. Pure: the session asks it what may happen next
// and tells it what did; tests walk it step by step without sockets.
//
//   connection:  http ──upgrade──▶ open ──▶ closing ──▶ closing_slow_consumer
//                  │                 │         │                │
//                  │                 │         │
//                  ▼                 ▼         ▼
//               (ends)         upgrade_failed  closed ◀── (open, too)
//
// `closing`: a graceful close (shutdown, idle): what is queued still goes
// out, then the close frame. `closing_slow_consumer`: the peer takes
// nothing; the writer stops at once and only the close frame is attempted.
// `closed`: the reader ended; nothing more reaches the peer. The slow
// consumer's close is final as well.
//
//   writer:      stopped ──start──▶ running ◀──▶ writing
//                   ▲                  │            │
//                   └──── idle ────────┘            │
//                  finished ◀───── (either, for good) ┘
//
// A connection without runs and with nothing to send has no writer
// (`stopped`): an idle connection holds no coroutine. `writing`: a chunk is
// with the socket (the send watchdog watches it). `finished`: the outbox
// closed or the socket failed; no writer starts again.
#pragma once

#include <cstdint>

namespace agentws::detail {

enum class connection_phase : std::uint8_t {
  http,                   // TLS and HTTP, before any WebSocket
  open,                   // upgraded: commands are read and handled
  closing,                // a graceful close: the queue drains, then the close frame
  closing_slow_consumer,  // the peer takes nothing: the close frame only
  closed,                 // the reader ended
  upgrade_failed,         // the WebSocket handshake failed; its slot was given back
};

enum class writer_phase : std::uint8_t {
  stopped,   // no writer; the next frame queued starts one
  running,   // draining the outbox, or waiting for frames while runs go on
  writing,   // a chunk is with the socket
  finished,  // for good
};

class connection_state {
 public:
  connection_phase phase() const noexcept { return phase_; }
  writer_phase writer() const noexcept { return writer_; }

  // --- The connection ---

  // The upgrade was admitted (a WebSocket slot taken): http -> open.
  bool upgrade() noexcept { return move(connection_phase::http, connection_phase::open); }
  // The WebSocket handshake failed after the slot was taken: open ->
  // upgrade_failed, which no longer holds the slot.
  bool fail_upgrade() noexcept {
    return move(connection_phase::open, connection_phase::upgrade_failed);
  }
  // A graceful close begins: only from open (false: already closing or not upgraded).
  bool begin_closing() noexcept { return move(connection_phase::open, connection_phase::closing); }
  // A slow consumer's close begins: from open or a graceful close, once.
  bool begin_slow_consumer_close() noexcept {
    if (phase_ != connection_phase::open && phase_ != connection_phase::closing) return false;
    phase_ = connection_phase::closing_slow_consumer;
    return true;
  }
  // The reader ended: from open or a graceful close. A slow consumer's
  // close stays what it is: its buffers no longer count (see
  // basic_session::release_output) until the connection goes.
  bool close() noexcept {
    if (phase_ != connection_phase::open && phase_ != connection_phase::closing) return false;
    phase_ = connection_phase::closed;
    return true;
  }

  // Past the upgrade and holding a WebSocket slot (given back when the
  // connection goes).
  bool upgraded() const noexcept {
    return phase_ == connection_phase::open || phase_ == connection_phase::closing ||
           phase_ == connection_phase::closing_slow_consumer || phase_ == connection_phase::closed;
  }
  // Commands read now are acted on.
  bool takes_commands() const noexcept { return phase_ == connection_phase::open; }
  // A close has begun or happened.
  bool closing() const noexcept {
    return phase_ == connection_phase::closing ||
           phase_ == connection_phase::closing_slow_consumer || phase_ == connection_phase::closed;
  }
  bool closing_slow_consumer() const noexcept {
    return phase_ == connection_phase::closing_slow_consumer;
  }
  // May be closed to make room for a new connection: only before the upgrade.
  bool evictable() const noexcept { return !upgraded(); }

  // --- The writer ---

  // True when a writer must be started now: none runs, none has finished,
  // and the connection is upgraded (before it, HTTP owns the socket).
  bool start_writer() noexcept {
    if (writer_ != writer_phase::stopped || !upgraded()) return false;
    writer_ = writer_phase::running;
    return true;
  }
  // The writer found nothing to send and no run that may send: it ends.
  void writer_idle() noexcept {
    if (writer_ == writer_phase::running) writer_ = writer_phase::stopped;
  }
  void write_started() noexcept {
    if (writer_ == writer_phase::running) writer_ = writer_phase::writing;
  }
  void write_completed() noexcept {
    if (writer_ == writer_phase::writing) writer_ = writer_phase::running;
  }
  void writer_finished() noexcept { writer_ = writer_phase::finished; }
  bool write_in_flight() const noexcept { return writer_ == writer_phase::writing; }
  bool writer_finished_for_good() const noexcept { return writer_ == writer_phase::finished; }

 private:
  bool move(connection_phase from, connection_phase to) noexcept {
    if (phase_ != from) return false;
    phase_ = to;
    return true;
  }

  connection_phase phase_ = connection_phase::http;
  writer_phase writer_ = writer_phase::stopped;
};

}  // namespace agentws::detail
