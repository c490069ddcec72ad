// One budget for the output the whole process holds queued: every
// connection's outbox and the bytes its writer has framed but the kernel has
// not taken yet. Each connection already has its own bound (server_config::
// outbox_bytes); this one caps their sum, so 10,000 connections whose clients
// stop reading cannot take 10,000 times that bound.
//
// Connections hold a reservation in blocks and touch the shared counter only
// when their buffers cross a block boundary, so the event path does not pay
// an atomic per event. Below three quarters of the budget a reservation always
// grows. Past that point (the budget is "reached") the last quarter goes only
// to connections under their fair share (the budget divided by the open
// connections): a client that reads keeps small buffers and goes on, while
// the ones that hog memory wait, their runs and their command reading both.
// Nothing is granted past the whole budget, so the sum stays under it (two
// threads racing for the last block may pass it by that block).
//
// Who waits is told when room comes back (wait()); which connections to close
// when the budget stays reached is the server's decision (pick_slow_consumers).
// Thread-safe: connections on every thread share one instance.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

namespace agentws::detail {

class memory_budget {
 public:
  static constexpr std::size_t block_bytes = 16 * 1024;

  // `limit` in bytes; 0 means no budget (every reservation succeeds).
  explicit memory_budget(std::size_t limit) noexcept : limit_(limit) {}

  std::size_t limit() const noexcept { return limit_; }
  // Bytes reserved by every connection together.
  std::size_t reserved() const noexcept { return reserved_.load(std::memory_order_relaxed); }
  // Past three quarters: only connections under their fair share grow.
  std::size_t soft_limit() const noexcept { return limit_ - limit_ / 4; }
  bool reached() const noexcept { return limit_ != 0 && reserved() >= soft_limit(); }
  // What one of `connections` may hold even while the budget is reached.
  std::size_t fair_share(std::size_t connections) const noexcept {
    return limit_ / (connections == 0 ? 1 : connections);
  }

  // A connection's reservation. Owned by one connection (not thread-safe
  // itself); give it back with release_all() before it goes.
  struct holding {
    std::size_t bytes = 0;
  };

  // Makes `held` cover `needed` bytes (rounded up to whole blocks). False:
  // no room for it (see above); wait().
  bool reserve(holding& held, std::size_t needed, std::size_t connections) noexcept;
  // Shrinks `held` once it exceeds what `needed` bytes take by more than one
  // block (so buffers hovering at a boundary do not flap), and wakes those
  // waiting.
  void release_to(holding& held, std::size_t needed);
  void release_all(holding& held) { release_to(held, 0); }

  // Calls `wake` once, from the thread that makes room (or at once if there
  // is room already): it must only post to its own connection's executor.
  void wait(std::function<void()> wake);
  std::size_t waiting() const;

 private:
  static std::size_t round_up(std::size_t bytes) noexcept {
    return (bytes + block_bytes - 1) / block_bytes * block_bytes;
  }
  void wake_waiters();

  const std::size_t limit_;
  std::atomic<std::size_t> reserved_{0};
  std::atomic<std::size_t> waiter_count_{0};
  mutable std::mutex waiters_mutex_;
  std::vector<std::function<void()>> waiters_;
};

// How the server picks what to close when the budget stays reached: pure.
struct budget_holder {
  std::uint64_t id = 0;
  std::size_t reserved = 0;    // bytes of the budget it holds
  bool took_anything = false;  // its client took bytes since the last look
};
// The holders to close, largest first, among those whose clients took
// nothing since the last look, until what they hold would bring `reserved`
// down to `target`. A client that reads is never chosen: the budget being
// reached by readers is load, and waiting is the answer to that.
std::vector<std::uint64_t> pick_slow_consumers(std::vector<budget_holder> holders,
                                               std::size_t reserved, std::size_t target);

}  // namespace agentws::detail
