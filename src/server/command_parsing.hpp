// Parsing large commands off the I/O threads.
//
// Building the DOM of a key-heavy JSON object costs about 25-35 ns a byte: a
// 1 MiB command holds its I/O thread for some 30 ms, and every connection
// served by that thread waits meanwhile. Commands of offload_parse_bytes or
// more are parsed on a small pool owned by the server instead. The reader
// that read one waits for the answer (the text stays in its read buffer:
// nothing is copied) and resumes on its own executor, so each connection has
// at most one parse in flight, and the pool's queue, first in first out,
// gives every connection its turn: one sending large commands back to back
// gets no more than its share of the pool, and the I/O threads none of it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>

#include "agentws/protocol.hpp"

namespace agentws::detail {

// Commands this large or larger are parsed on the pool. Below it even the
// costliest text (an object of short keys) parses in under 2 ms, a pause
// the other connections of the thread hardly notice, while the hop to the
// pool and back (two thread wake-ups, some tens of microseconds) would cost
// a typical command (well under 1 KiB, parsed in microseconds) more than
// its parse. At 64 KiB a parse takes 0.4 ms (one long string) to 1.7 ms
// (short keys): the hop is a few percent of what it moves off the thread.
inline constexpr std::size_t offload_parse_bytes = 64 * 1024;

class command_parse_pool {
 public:
  // `threads` 0: default_threads(). No thread starts before the first parse
  // (a server that never sees a large command, or the fuzzer, has none).
  explicit command_parse_pool(unsigned threads = 0);
  // Stops, then waits for the parse in progress, if any. A pool thread may
  // hold a copy of a caller's executor for a moment after handing an answer
  // over: destroy the pool before the callers' execution contexts.
  ~command_parse_pool();
  command_parse_pool(const command_parse_pool&) = delete;
  command_parse_pool& operator=(const command_parse_pool&) = delete;

  // A quarter of the machine, at least one thread: however many connections
  // send large commands, parsing them leaves the I/O threads three quarters
  // of the cores.
  static unsigned default_threads() noexcept;
  unsigned threads() const noexcept { return threads_; }

  // From now on, parses not yet begun complete at once with nullopt: a
  // graceful stop must not wait for a queue of them. Thread-safe.
  void stop() noexcept;
  bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }

  // parse_command(text, limits) on the pool; the caller resumes on its own
  // executor, which is kept busy meanwhile (its run() does not return).
  // nullopt if the pool was stopped first. `text` and `limits` must stay
  // valid until it completes.
  boost::asio::awaitable<std::optional<parse_result>> parse(std::string_view text,
                                                            const protocol_limits& limits);

 private:
  boost::asio::thread_pool& pool();

  const unsigned threads_;
  std::atomic<bool> stopped_{false};
  std::once_flag started_;
  std::unique_ptr<boost::asio::thread_pool> pool_;
};

}  // namespace agentws::detail
