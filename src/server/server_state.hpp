// What connections share: the configuration, counters, and the list of live
// connections that a graceful stop must reach. Nothing else crosses sessions.
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

namespace agentws::detail {

class session;

struct server_counters {
  std::atomic<std::uint64_t> connections_open{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> connections_refused{0};
  std::atomic<std::uint64_t> runs_started{0};
  std::atomic<std::uint64_t> runs_done{0};
  std::atomic<std::uint64_t> runs_cancelled_client{0};
  std::atomic<std::uint64_t> runs_cancelled_shutdown{0};
  std::atomic<std::uint64_t> runs_cancelled_disconnect{0};
  std::atomic<std::uint64_t> frames_sent{0};
  std::atomic<std::uint64_t> bytes_sent{0};
  std::atomic<std::uint64_t> errors_sent{0};
  std::atomic<std::uint64_t> slow_consumer_closes{0};
  std::atomic<std::uint64_t> outbox_waits{0};  // a producer found the outbox full
  std::array<std::atomic<std::uint64_t>, protocol_error_code_count> errors_by_code{};

  server_stats snapshot() const;
  // The counters in the Prometheus text exposition format.
  std::string render_metrics() const;
};

class server_state {
 public:
  explicit server_state(server_config config);

  const server_config config;
  const access_policy access;
  agentws::agent& agent() const noexcept { return *agent_; }
  server_counters counters;

  // Reserves one WebSocket slot; false when max_connections are open.
  bool try_open_websocket();
  void close_websocket();

  // Live connections, so that stop() can reach every one of them.
  std::uint64_t add_session(const std::shared_ptr<session>& s);
  void remove_session(std::uint64_t id);
  void for_each_session(const std::function<void(session&)>& visit);

  // After begin_stop(), `on_idle` runs once no session is left.
  void begin_stop(std::function<void()> on_idle);
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

 private:
  std::shared_ptr<agentws::agent> agent_;
  std::atomic<bool> stopping_{false};
  std::mutex sessions_mutex_;
  std::uint64_t next_session_id_ = 1;
  std::unordered_map<std::uint64_t, std::weak_ptr<session>> sessions_;
  std::function<void()> on_idle_;
};

}  // namespace agentws::detail
