// What connections share: the configuration, counters, the list of live
// connections that a graceful stop must reach, and the runs (run_registry)
// with the sessions that own them (session_keys). Nothing else crosses
// connections.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "agentws/server.hpp"
#include "server/access.hpp"
#include "server/command_parsing.hpp"
#include "server/memory_budget.hpp"
#include "server/run_registry.hpp"
#include "server/session_keys.hpp"
#include "server/socket_table.hpp"

namespace agentws::detail {

class session;

// A Prometheus histogram with fixed upper bounds; lock-free, relaxed.
template <std::size_t N>
struct fixed_histogram {
  std::array<double, N> bounds;  // upper bounds, ascending; +Inf is implicit
  std::array<std::atomic<std::uint64_t>, N + 1> counts{};
  std::atomic<std::uint64_t> count{0};
  std::atomic<double> sum{0};

  void observe(double value) noexcept {
    std::size_t i = 0;
    while (i < N && value > bounds[i])
      ++i;
    counts[i].fetch_add(1, std::memory_order_relaxed);
    count.fetch_add(1, std::memory_order_relaxed);
    double old = sum.load(std::memory_order_relaxed);
    while (!sum.compare_exchange_weak(old, old + value, std::memory_order_relaxed)) {
    }
  }
};

// Why the server closed a connection on its own (never the peer's doing).
enum class close_cause : std::size_t {
  idle,                // nothing received or taken for the idle timeout
  slow_consumer,       // events waiting, nothing taken for the send timeout
  handshake_deadline,  // not upgraded within the handshake timeout of the accept
  evicted,             // not upgraded, and its slot was needed
  shutdown_forced,     // still open when the shutdown grace ended
  message_too_big,     // 1009
  protocol_error,      // the peer broke RFC 6455 (1002 and the like)
  memory_budget,       // took nothing while the process's memory budget stayed reached
};
inline constexpr std::size_t close_cause_count = 8;
std::string_view to_string(close_cause cause) noexcept;

struct server_counters {
  std::atomic<std::uint64_t> connections_open{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> connections_refused{0};
  std::atomic<std::uint64_t> runs_started{0};
  std::atomic<std::uint64_t> runs_done{0};
  std::atomic<std::uint64_t> runs_cancelled_client{0};
  std::atomic<std::uint64_t> runs_cancelled_shutdown{0};
  std::atomic<std::uint64_t> runs_cancelled_disconnect{0};
  std::atomic<std::uint64_t> runs_cancelled_timeout{0};
  std::atomic<std::uint64_t> frames_sent{0};
  std::atomic<std::uint64_t> bytes_sent{0};
  std::atomic<std::uint64_t> errors_sent{0};
  std::atomic<std::uint64_t> slow_consumer_closes{0};
  std::atomic<std::uint64_t> outbox_waits{0};         // a run found the outbox full
  std::atomic<std::uint64_t> command_read_pauses{0};  // a reader waited for answers to go
  std::atomic<std::uint64_t> sockets_open{0};
  std::atomic<std::uint64_t> sockets_accepted{0};
  std::atomic<std::uint64_t> sockets_evicted{0};
  std::atomic<std::uint64_t> sockets_refused_full{0};
  std::atomic<std::uint64_t> sockets_refused_address{0};
  std::atomic<std::uint64_t> accept_fd_exhausted{0};
  std::atomic<std::uint64_t> memory_budget_waits{0};
  const memory_budget* budget = nullptr;  // for its gauges; set by server_state
  std::array<std::atomic<std::uint64_t>, close_cause_count> closes_by_cause{};
  void count_close(close_cause cause) noexcept {
    closes_by_cause[static_cast<std::size_t>(cause)].fetch_add(1, std::memory_order_relaxed);
  }
  std::array<std::atomic<std::uint64_t>, protocol_error_code_count> errors_by_code{};
  // From reading a cancel_run to handing its run_cancelled to the socket:
  // until the socket write carrying it completed (the bytes are the kernel's).
  fixed_histogram<9> cancel_latency_seconds{
      {0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1}};
  // Frames per socket write: how deep the outbox was when the writer took it.
  fixed_histogram<8> write_batch_frames{{1, 2, 4, 16, 64, 256, 1024, 4096}};

  server_stats snapshot() const;
  // The counters in the Prometheus text exposition format.
  std::string render_metrics() const;
};

class server_state : public std::enable_shared_from_this<server_state> {
 public:
  explicit server_state(server_config config);

  const server_config config;
  const access_policy access;
  // The agents offered, by name; `name` empty: the default one. Null:
  // no such agent.
  struct agent_entry {
    std::string name;
    std::shared_ptr<agentws::agent> logic;
  };
  const agent_entry* find_agent(std::string_view name) const noexcept;
  // As `connected` lists them.
  const std::vector<agent_listing>& agent_listings() const noexcept { return agent_listings_; }
  server_counters counters;
  // The output every connection queues, counted against one budget.
  memory_budget budget;
  // Where commands of offload_parse_bytes or more are parsed, off the I/O
  // threads (see command_parsing.hpp). After `config`: its parses read
  // config.limits, and it is joined before they go.
  command_parse_pool parse_pool;
  // Every run of every owner, going or retained (see run_registry.hpp).
  const std::unique_ptr<run_registry> registry;
  // The sessions that own runs when no token names the owner.
  session_keys sessions;
  // Forgets the runs and sessions past their retention (the server calls it
  // periodically).
  void expire_runs(std::chrono::steady_clock::time_point now);

  // Reserves one WebSocket slot; false when max_connections are open.
  bool try_open_websocket();
  void close_websocket();

  // Every accepted socket (see socket_table). admit_socket() hands out the
  // socket's id, which its session then registers under; the other calls
  // ignore ids they do not know (0: a session not counted, as in the fuzzer).
  socket_table::admission admit_socket(const std::string& address, std::uint64_t& id);
  void socket_upgraded(std::uint64_t id);
  void release_socket(std::uint64_t id);
  std::size_t sockets_closing();
  void eviction_declined(std::uint64_t id);
  // Closes the session registered under `id` if it has not upgraded yet.
  void evict_session(std::uint64_t id);

  // Live connections, so that stop() can reach every one of them. `id` is
  // the socket's id from admit_socket(), or 0 for a new one.
  std::uint64_t add_session(const std::shared_ptr<session>& s, std::uint64_t id = 0);
  void remove_session(std::uint64_t id);
  void for_each_session(const std::function<void(session&)>& visit);

  // After begin_stop(), `on_idle` runs once no session is left.
  void begin_stop(std::function<void()> on_idle);
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

 private:
  std::vector<agent_entry> agents_;  // the default first
  std::vector<agent_listing> agent_listings_;
  std::mutex sockets_mutex_;
  socket_table sockets_;
  std::atomic<bool> stopping_{false};
  std::mutex sessions_mutex_;
  std::atomic<std::uint64_t> next_session_id_{1};  // sockets and sessions share it
  std::unordered_map<std::uint64_t, std::weak_ptr<session>> sessions_;
  std::function<void()> on_idle_;
};

}  // namespace agentws::detail
