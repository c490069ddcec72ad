#include "server/server_state.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <vector>

#include "server/session.hpp"

namespace agentws {

std::size_t effective_max_sockets(const server_config& config) {
  return config.max_sockets != 0 ? config.max_sockets : config.max_connections + 1024;
}

}  // namespace agentws

namespace agentws::detail {

std::string_view to_string(close_cause cause) noexcept {
  switch (cause) {
    case close_cause::idle:
      return "idle";
    case close_cause::slow_consumer:
      return "slow_consumer";
    case close_cause::handshake_deadline:
      return "handshake_deadline";
    case close_cause::evicted:
      return "evicted";
    case close_cause::shutdown_forced:
      return "shutdown_forced";
    case close_cause::message_too_big:
      return "message_too_big";
    case close_cause::protocol_error:
      return "protocol_error";
    case close_cause::memory_budget:
      return "memory_budget";
  }
  return "unknown";
}

server_stats server_counters::snapshot() const {
  auto get = [](const std::atomic<std::uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  server_stats s;
  s.connections_open = get(connections_open);
  s.connections_total = get(connections_total);
  s.connections_refused = get(connections_refused);
  s.runs_started = get(runs_started);
  s.runs_done = get(runs_done);
  s.runs_cancelled_client = get(runs_cancelled_client);
  s.runs_cancelled_shutdown = get(runs_cancelled_shutdown);
  s.runs_cancelled_disconnect = get(runs_cancelled_disconnect);
  s.runs_cancelled_timeout = get(runs_cancelled_timeout);
  const std::uint64_t ended = s.runs_done + s.runs_cancelled_client + s.runs_cancelled_shutdown +
                              s.runs_cancelled_disconnect + s.runs_cancelled_timeout;
  s.runs_active = s.runs_started >= ended ? s.runs_started - ended : 0;
  s.frames_sent = get(frames_sent);
  s.bytes_sent = get(bytes_sent);
  s.errors_sent = get(errors_sent);
  s.slow_consumer_closes = get(slow_consumer_closes);
  s.outbox_waits = get(outbox_waits);
  s.command_read_pauses = get(command_read_pauses);
  s.sockets_open = get(sockets_open);
  s.sockets_accepted = get(sockets_accepted);
  s.sockets_evicted = get(sockets_evicted);
  s.sockets_refused_full = get(sockets_refused_full);
  s.sockets_refused_address = get(sockets_refused_address);
  s.accept_fd_exhausted = get(accept_fd_exhausted);
  if (budget != nullptr) {
    s.memory_budget_bytes = budget->limit();
    s.output_bytes_reserved = budget->reserved();
  }
  s.memory_budget_waits = get(memory_budget_waits);
  s.memory_budget_closes =
      get(closes_by_cause[static_cast<std::size_t>(close_cause::memory_budget)]);
  return s;
}

namespace {

std::string fmt_double(double value) {
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%.9g", value);
  return std::string(text, static_cast<std::size_t>(n));
}

}  // namespace

std::string server_counters::render_metrics() const {
  const server_stats s = snapshot();
  std::string out;
  auto metric = [&](std::string_view name, std::string_view type, std::string_view help,
                    std::uint64_t value, std::string_view labels = {}) {
    if (!help.empty()) {
      out.append("# HELP agentws_").append(name).append(" ").append(help).append("\n");
      out.append("# TYPE agentws_").append(name).append(" ").append(type).append("\n");
    }
    out.append("agentws_").append(name);
    if (!labels.empty()) out.append("{").append(labels).append("}");
    out.append(" ").append(std::to_string(value)).append("\n");
  };
  metric("connections_open", "gauge", "Open WebSocket connections.", s.connections_open);
  metric("connections_total", "counter", "WebSocket connections accepted.", s.connections_total);
  metric("connections_refused_total", "counter", "Upgrades refused with 503 (limit).",
         s.connections_refused);
  metric("runs_active", "gauge", "Runs currently executing.", s.runs_active);
  metric("runs_started_total", "counter", "Runs started.", s.runs_started);
  metric("runs_done_total", "counter", "Runs that finished on their own.", s.runs_done);
  metric("runs_cancelled_total", "counter", "Runs cancelled, by cause.", s.runs_cancelled_client,
         R"(reason="client")");
  metric("runs_cancelled_total", "", "", s.runs_cancelled_shutdown, R"(reason="shutdown")");
  metric("runs_cancelled_total", "", "", s.runs_cancelled_disconnect, R"(reason="disconnect")");
  metric("runs_cancelled_total", "", "", s.runs_cancelled_timeout, R"(reason="timeout")");
  metric("frames_sent_total", "counter", "Event frames written to sockets.", s.frames_sent);
  metric("bytes_sent_total", "counter", "Event payload bytes written to sockets.", s.bytes_sent);
  bool first = true;
  for (std::size_t i = 0; i < errors_by_code.size(); ++i) {
    const auto code = static_cast<protocol_error_code>(i);
    const std::string label = "code=\"" + std::string(to_string(code)) + "\"";
    metric("errors_total", first ? "counter" : "", first ? "Error events sent, by code." : "",
           errors_by_code[i].load(std::memory_order_relaxed), label);
    first = false;
  }
  auto histogram = [&](std::string_view name, std::string_view help, const auto& h) {
    out.append("# HELP agentws_").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE agentws_").append(name).append(" histogram\n");
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= h.bounds.size(); ++i) {
      cumulative += h.counts[i].load(std::memory_order_relaxed);
      const std::string le = i < h.bounds.size() ? fmt_double(h.bounds[i]) : "+Inf";
      out.append("agentws_").append(name).append("_bucket{le=\"").append(le).append("\"} ");
      out.append(std::to_string(cumulative)).append("\n");
    }
    out.append("agentws_").append(name).append("_sum ");
    out.append(fmt_double(h.sum.load(std::memory_order_relaxed))).append("\n");
    out.append("agentws_").append(name).append("_count ");
    out.append(std::to_string(h.count.load(std::memory_order_relaxed))).append("\n");
  };
  histogram("cancel_latency_seconds",
            "From reading cancel_run to the completion of the socket write carrying "
            "run_cancelled.",
            cancel_latency_seconds);
  histogram("write_batch_frames", "Event frames per socket write (outbox depth when taken).",
            write_batch_frames);
  metric("outbox_waits_total", "counter", "Times a run waited for a full outbox.",
         outbox_waits.load(std::memory_order_relaxed));
  metric("command_read_pauses_total", "counter",
         "Times reading commands paused until answers already queued were sent.",
         command_read_pauses.load(std::memory_order_relaxed));
  metric("memory_budget_bytes", "gauge",
         "The process-wide budget for queued output (--memory-budget).", s.memory_budget_bytes);
  metric("output_reserved_bytes", "gauge",
         "Queued output the connections hold of the budget (16 KiB blocks).",
         s.output_bytes_reserved);
  metric("memory_budget_waits_total", "counter",
         "Times a connection waited because the memory budget was reached.", s.memory_budget_waits);
  metric("slow_consumer_closes_total", "counter", "Connections closed for not reading.",
         s.slow_consumer_closes);
  for (std::size_t i = 0; i < close_cause_count; ++i) {
    const std::string label =
        "cause=\"" + std::string(to_string(static_cast<close_cause>(i))) + "\"";
    metric("closes_total", i == 0 ? "counter" : "",
           i == 0 ? "Connections the server closed on its own, by cause." : "",
           closes_by_cause[i].load(std::memory_order_relaxed), label);
  }
  metric("sockets_open", "gauge", "Accepted sockets, before and after the upgrade.",
         s.sockets_open);
  metric("sockets_accepted_total", "counter", "Sockets admitted past the limits' checks.",
         s.sockets_accepted);
  metric("sockets_closed_at_accept_total", "counter",
         "Sockets closed at accept, by cause: every slot a WebSocket, the per-address cap.",
         s.sockets_refused_full, R"(cause="full")");
  metric("sockets_closed_at_accept_total", "", "", s.sockets_refused_address,
         R"(cause="per_address")");
  metric("sockets_evicted_total", "counter",
         "Sockets not yet upgraded closed to make room for a new one.", s.sockets_evicted);
  metric("accept_fd_exhausted_total", "counter",
         "Accepts that failed for want of file descriptors (the backlog was drained and closed).",
         s.accept_fd_exhausted);
  return out;
}

namespace {

access_policy make_access_policy(const server_config& config) {
  access_policy policy;
  policy.allowed_origins = config.allowed_origins;
  policy.require_loopback_host = is_loopback_address(config.host);
  policy.tokens = config.tokens;
  if (!config.token.empty()) policy.tokens.push_back({"default", config.token});
  return policy;
}

}  // namespace

server_state::server_state(server_config cfg)
    : config(std::move(cfg)),
      access(make_access_policy(config)),
      budget(effective_memory_budget(config)),
      registry(std::make_unique<local_run_registry>(
          registry_limits{config.limits.max_runs_per_owner, config.limits.max_detached_runs,
                          std::chrono::milliseconds(config.limits.retention_ms)})),
      sessions(std::chrono::milliseconds(config.limits.retention_ms)),
      sockets_(socket_limits{effective_max_sockets(config), config.max_connections_per_address}) {
  counters.budget = &budget;
  // The catalog: the default first, then every other name once.
  std::vector<agent_entry> offered;
  if (config.agent_logic) offered.push_back({"default", config.agent_logic});
  offered.push_back({"demo", make_demo_agent()});
  for (const named_agent& extra : config.agents) {
    if (extra.logic) offered.push_back({extra.name, extra.logic});
  }
  const std::string default_name =
      !config.default_agent.empty() ? config.default_agent : offered.front().name;
  for (const agent_entry& entry : offered) {
    const bool seen = std::any_of(agents_.begin(), agents_.end(),
                                  [&](const agent_entry& e) { return e.name == entry.name; });
    if (seen) continue;
    if (entry.name == default_name) {
      agents_.insert(agents_.begin(), entry);
    } else {
      agents_.push_back(entry);
    }
  }
  if (agents_.front().name != default_name) {
    throw std::invalid_argument("the default agent \"" + default_name + "\" is not offered");
  }
  for (const agent_entry& entry : agents_) {
    agent_listings_.push_back(
        {entry.name, entry.logic->description(), entry.logic->accepts_input()});
  }
}

const server_state::agent_entry* server_state::find_agent(std::string_view name) const noexcept {
  if (name.empty()) return &agents_.front();
  for (const agent_entry& entry : agents_) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

void server_state::expire_runs(std::chrono::steady_clock::time_point now) {
  registry->expire(now);
  sessions.expire(now, [this](const std::string& owner) { return registry->has_runs(owner); });
}

socket_table::admission server_state::admit_socket(const std::string& address, std::uint64_t& id) {
  id = next_session_id_.fetch_add(1, std::memory_order_relaxed);
  socket_table::admission answer;
  {
    std::lock_guard lock(sockets_mutex_);
    answer = sockets_.admit(id, address);
    counters.sockets_open.store(sockets_.open(), std::memory_order_relaxed);
  }
  switch (answer.outcome) {
    case socket_table::verdict::admitted:
      counters.sockets_accepted.fetch_add(1, std::memory_order_relaxed);
      if (answer.evict != 0) counters.sockets_evicted.fetch_add(1, std::memory_order_relaxed);
      break;
    case socket_table::verdict::refused_full:
      counters.sockets_refused_full.fetch_add(1, std::memory_order_relaxed);
      break;
    case socket_table::verdict::refused_address:
      counters.sockets_refused_address.fetch_add(1, std::memory_order_relaxed);
      break;
  }
  return answer;
}

void server_state::socket_upgraded(std::uint64_t id) {
  std::lock_guard lock(sockets_mutex_);
  sockets_.upgraded(id);
}

void server_state::release_socket(std::uint64_t id) {
  std::lock_guard lock(sockets_mutex_);
  sockets_.release(id);
  counters.sockets_open.store(sockets_.open(), std::memory_order_relaxed);
}

void server_state::eviction_declined(std::uint64_t id) {
  std::lock_guard lock(sockets_mutex_);
  sockets_.kept(id);
}

std::size_t server_state::sockets_closing() {
  std::lock_guard lock(sockets_mutex_);
  return sockets_.closing();
}

void server_state::evict_session(std::uint64_t id) {
  std::shared_ptr<session> victim;
  {
    std::lock_guard lock(sessions_mutex_);
    auto it = sessions_.find(id);
    if (it != sessions_.end()) victim = it->second.lock();
  }
  if (victim) victim->evict();
}

bool server_state::try_open_websocket() {
  std::uint64_t open = counters.connections_open.load(std::memory_order_relaxed);
  do {
    if (open >= config.max_connections) {
      counters.connections_refused.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (
      !counters.connections_open.compare_exchange_weak(open, open + 1, std::memory_order_relaxed));
  counters.connections_total.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void server_state::close_websocket() {
  counters.connections_open.fetch_sub(1, std::memory_order_relaxed);
}

std::uint64_t server_state::add_session(const std::shared_ptr<session>& s, std::uint64_t id) {
  if (id == 0) id = next_session_id_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(sessions_mutex_);
  sessions_.emplace(id, s);
  return id;
}

void server_state::remove_session(std::uint64_t id) {
  std::function<void()> notify;
  {
    std::lock_guard lock(sessions_mutex_);
    sessions_.erase(id);
    if (sessions_.empty() && on_idle_) notify = std::exchange(on_idle_, nullptr);
  }
  if (notify) notify();
}

void server_state::for_each_session(const std::function<void(session&)>& visit) {
  std::vector<std::shared_ptr<session>> live;
  {
    std::lock_guard lock(sessions_mutex_);
    live.reserve(sessions_.size());
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live)
    visit(*s);
}

void server_state::begin_stop(std::function<void()> on_idle) {
  // Large commands still waiting for the pool go unparsed: their
  // connections are closing, and the stop must not wait for the queue.
  parse_pool.stop();
  std::function<void()> notify;
  {
    std::lock_guard lock(sessions_mutex_);
    stopping_.store(true, std::memory_order_release);
    if (sessions_.empty()) {
      notify = std::move(on_idle);
    } else {
      on_idle_ = std::move(on_idle);
    }
  }
  if (notify) notify();
}

}  // namespace agentws::detail
