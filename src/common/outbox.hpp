// The connection's queue of outgoing text frames (a send_queue) with the
// waits around it: exactly one consumer (the writer) and producers (runs,
// the reader) on the connection's strand.
//
// Bounds, and what happens past them:
// - run events: `max_event_bytes` queued behind the writer's batch; a run
//   that finds no room waits (nothing is ever dropped for a live run);
// - answers to commands: the reader stops reading commands while
//   `max_pending_answers` answers (or `max_answer_bytes`) are unsent, so a
//   flood of commands cannot grow memory either.
//
// Not thread-safe by design: every user runs on the connection's strand.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstddef>
#include <string>
#include <string_view>

#include "common/send_queue.hpp"

namespace agentws::detail {

struct outbox_limits {
  std::size_t max_event_bytes = 256 * 1024;
  std::size_t max_pending_answers = 64;
  std::size_t max_answer_bytes = 64 * 1024;
};

class outbox {
 public:
  outbox(const boost::asio::any_io_executor& executor, outbox_limits limits)
      : limits_(limits), writer_wakeup_(executor), progress_wakeup_(executor) {
    writer_wakeup_.expires_at(boost::asio::steady_timer::time_point::max());
    progress_wakeup_.expires_at(boost::asio::steady_timer::time_point::max());
  }

  // Room for another run event. Producers that find none wait_for_progress();
  // one frame may overshoot the bound.
  bool has_room() const noexcept { return queue_.lane_bytes() < limits_.max_event_bytes; }
  // Room for another command's answer (the reader checks before reading).
  bool has_answer_room() const noexcept {
    return queue_.answer_frames() < limits_.max_pending_answers &&
           queue_.answer_bytes() < limits_.max_answer_bytes;
  }
  bool empty() const noexcept { return queue_.empty(); }
  bool closed() const noexcept { return closed_; }
  std::size_t queued_bytes() const noexcept { return queue_.total_bytes(); }
  std::size_t memory_bytes() const noexcept { return queue_.memory_bytes(); }
  const send_queue& queue() const noexcept { return queue_; }

  // Appends one frame built in place by `build(std::string&)`, which must
  // only append. Never waits. Ignored once the outbox is closed.
  template <class Build>
  void push_event(Build&& build, frame_tag tag) {
    if (closed_) return;
    queue_.push_event(std::forward<Build>(build), tag);
    wake_writer();
  }
  // See send_queue::push_answer.
  template <class Build>
  void push_answer(Build&& build, std::uint64_t after_run = 0, frame_tag tag = {}) {
    if (closed_) return;
    queue_.push_answer(std::forward<Build>(build), after_run, tag);
    wake_writer();
  }

  // Takes back a cancelled run's queued events; producers may have room again.
  std::size_t drop_events_of(std::uint64_t run) {
    const std::size_t dropped = queue_.drop_events_of(run);
    if (dropped > 0) wake_producers();
    return dropped;
  }

  // Writer: hands frames to `sink` (see send_queue::take) and wakes
  // producers that waited for the room this made.
  template <class Sink>
  send_queue::taken take(std::size_t budget, Sink&& sink) {
    send_queue::taken taken = queue_.take(budget, std::forward<Sink>(sink));
    if (taken.events_refilled || taken.answers > 0) wake_producers();
    return taken;
  }

  // Gives back the queue's memory if it is empty (for connections going idle).
  void release_memory() noexcept { queue_.release_memory(); }
  // Drops every queued frame and gives the memory back: for a closed outbox
  // whose frames will never be sent (a slow consumer being closed).
  void discard() noexcept {
    if (!closed_) return;
    queue_ = send_queue();
  }

  // Wakes the producers waiting for progress so they re-check their own
  // conditions (room elsewhere, the memory budget, say).
  void wake_producers() {
    if (progress_waiters_ > 0) progress_wakeup_.cancel();
  }

  // Writer: suspends until a frame is queued or the outbox is closed.
  boost::asio::awaitable<void> wait_for_frames() {
    while (queue_.empty() && !closed_) {
      writer_waiting_ = true;
      co_await writer_wakeup_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      writer_waiting_ = false;
    }
  }

  // Producer: suspends until the writer took frames, a cancel made room, the
  // outbox closed, or the caller's own cancellation fired. Callers re-check.
  boost::asio::awaitable<void> wait_for_progress() {
    ++progress_waiters_;
    co_await progress_wakeup_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    --progress_waiters_;
  }

  // Wakes everyone for good; later pushes are ignored, queued frames remain
  // for the writer to finish (or to drop, if the socket is gone).
  void close() {
    closed_ = true;
    writer_wakeup_.cancel();
    progress_wakeup_.cancel();
  }

 private:
  void wake_writer() {
    if (writer_waiting_) writer_wakeup_.cancel();
  }

  outbox_limits limits_;
  send_queue queue_;
  bool closed_ = false;
  bool writer_waiting_ = false;
  std::size_t progress_waiters_ = 0;
  boost::asio::steady_timer writer_wakeup_;
  boost::asio::steady_timer progress_wakeup_;
};

}  // namespace agentws::detail
