// A bounded queue of outgoing text frames with exactly one consumer (the
// connection's writer). Frames are appended in place into one byte buffer,
// and the writer takes them all at once by swapping buffers, so a steady
// stream reuses the same memory and allocates nothing per frame.
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
#include <vector>

namespace agentws::detail {

// Frames handed to the writer: one buffer, and where each frame ends.
class frame_batch {
 public:
  std::size_t size() const noexcept { return ends_.size(); }
  bool empty() const noexcept { return ends_.empty(); }
  std::size_t bytes() const noexcept { return bytes_.size(); }
  std::string_view frame(std::size_t index) const noexcept {
    const std::size_t begin = index == 0 ? 0 : ends_[index - 1];
    return std::string_view(bytes_).substr(begin, ends_[index] - begin);
  }
  void clear() noexcept {
    bytes_.clear();
    ends_.clear();
  }
  // Clears and gives the memory back (for connections going idle).
  void release_memory() noexcept {
    std::string().swap(bytes_);
    std::vector<std::size_t>().swap(ends_);
  }

 private:
  friend class outbox;
  std::string bytes_;
  std::vector<std::size_t> ends_;
};

class outbox {
 public:
  outbox(const boost::asio::any_io_executor& executor, std::size_t max_bytes)
      : max_bytes_(max_bytes), writer_wakeup_(executor), room_wakeup_(executor) {
    writer_wakeup_.expires_at(boost::asio::steady_timer::time_point::max());
    room_wakeup_.expires_at(boost::asio::steady_timer::time_point::max());
  }

  // Below the bound. Producers that must respect it check this first and
  // otherwise wait_for_change(); one frame may overshoot the bound.
  bool has_room() const noexcept { return queued_.bytes_.size() < max_bytes_; }
  bool empty() const noexcept { return queued_.empty(); }
  bool closed() const noexcept { return closed_; }
  std::size_t queued_frames() const noexcept { return queued_.size(); }
  std::size_t queued_bytes() const noexcept { return queued_.bytes(); }

  // Appends one frame built in place by `build(std::string&)`, which must only
  // append. Never waits. Ignored once the outbox is closed.
  template <class Build>
  void push(Build&& build) {
    if (closed_) return;
    build(queued_.bytes_);
    queued_.ends_.push_back(queued_.bytes_.size());
    if (writer_waiting_) writer_wakeup_.cancel();
  }
  // Gives back the queue's memory if it is empty (for connections going idle).
  void release_memory() noexcept {
    if (queued_.empty()) queued_.release_memory();
  }

  void push_text(std::string_view text) {
    push([text](std::string& out) { out.append(text); });
  }

  // Writer: moves every queued frame into `batch` (reusing its memory) and
  // wakes producers that waited for room.
  void take(frame_batch& batch) {
    batch.clear();
    std::swap(batch.bytes_, queued_.bytes_);
    std::swap(batch.ends_, queued_.ends_);
    if (room_waiters_ > 0) room_wakeup_.cancel();
  }

  // Writer: suspends until a frame is queued or the outbox is closed.
  boost::asio::awaitable<void> wait_for_frames() {
    while (queued_.empty() && !closed_) {
      writer_waiting_ = true;
      co_await writer_wakeup_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      writer_waiting_ = false;
    }
  }

  // Producer: suspends until the writer took frames, the outbox closed, or the
  // caller's own cancellation fired. Callers re-check their condition.
  boost::asio::awaitable<void> wait_for_change() {
    ++room_waiters_;
    co_await room_wakeup_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    --room_waiters_;
  }

  // Wakes everyone for good; later pushes are ignored, queued frames remain
  // for the writer to finish (or to drop, if the socket is gone).
  void close() {
    closed_ = true;
    writer_wakeup_.cancel();
    room_wakeup_.cancel();
  }

 private:
  std::size_t max_bytes_;
  frame_batch queued_;
  bool closed_ = false;
  bool writer_waiting_ = false;
  std::size_t room_waiters_ = 0;
  boost::asio::steady_timer writer_wakeup_;
  boost::asio::steady_timer room_wakeup_;
};

}  // namespace agentws::detail
