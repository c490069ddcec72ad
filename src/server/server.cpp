#include "agentws/server.hpp"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/log_failure.hpp"
#include "server/server_run.hpp"
#include "server/server_state.hpp"
#include "server/session.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <stdexcept>
#include <vector>

namespace agentws {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// Evicted sockets not yet closed, past which the accept loop waits (the
// descriptors they hold come out of the headroom below the open-file limit).
constexpr std::size_t max_closing_sockets = 32;

// A server-side TLS context: TLS 1.2 and later, the certificate chain and key
// from PEM files. Errors name the file, never the key material.
std::unique_ptr<asio::ssl::context> make_tls_context(const server_config& config) {
  if (config.tls_cert_file.empty() && config.tls_key_file.empty()) return nullptr;
  if (config.tls_cert_file.empty() || config.tls_key_file.empty()) {
    throw std::runtime_error("TLS needs both a certificate and a key file");
  }
  auto context = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  error_code ec;
  context->use_certificate_chain_file(config.tls_cert_file, ec);
  if (ec) {
    throw std::runtime_error("cannot load the TLS certificate chain '" + config.tls_cert_file +
                             "': " + ec.message());
  }
  context->use_private_key_file(config.tls_key_file, asio::ssl::context::pem, ec);
  if (ec) {
    throw std::runtime_error("cannot load the TLS key '" + config.tls_key_file +
                             "': " + ec.message());
  }
  return context;
}

}  // namespace

struct server::impl : std::enable_shared_from_this<impl> {
  impl(std::span<asio::io_context* const> contexts, server_config config)
      : contexts_(checked_contexts(contexts)),
        state_(std::make_shared<detail::server_state>(std::move(config))),
        strand_(asio::make_strand(*contexts_.front())),
        acceptor_(strand_),
        grace_timer_(strand_),
        budget_timer_(strand_),
        retention_timer_(strand_) {}

  static std::vector<asio::io_context*> checked_contexts(
      std::span<asio::io_context* const> contexts) {
    if (contexts.empty()) throw std::invalid_argument("agentws::server needs an io_context");
    for (auto* context : contexts) {
      if (context == nullptr) throw std::invalid_argument("agentws::server: null io_context");
    }
    return {contexts.begin(), contexts.end()};
  }

  void start() {
    const server_config& config = state_->config;
    tls_ = make_tls_context(config);
    const tcp::endpoint endpoint(asio::ip::make_address(config.host), config.port);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (auto* context : contexts_)
      keep_running_.push_back(asio::make_work_guard(*context));
    watch_memory_budget();
    watch_retention();
    started_ = true;
    asio::co_spawn(strand_, accept_loop(shared_from_this()),
                   detail::log_failure("accept loop", {.level = spdlog::level::critical}));
  }

  asio::awaitable<void> accept_loop([[maybe_unused]] std::shared_ptr<impl> self) {
    asio::steady_timer backoff(strand_);
    while (acceptor_.is_open()) {
      // Connections are dealt to the contexts in turn; each gets its own
      // strand there (a context may be run by several threads).
      // Sockets evicted for room still hold their descriptors until their
      // sessions close them: under a flood, let them go before taking more.
      while (state_->sockets_closing() >= max_closing_sockets && acceptor_.is_open()) {
        backoff.expires_after(std::chrono::milliseconds(1));
        co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      asio::io_context& context = *contexts_[next_context_];
      next_context_ = (next_context_ + 1) % contexts_.size();
      auto [ec, socket] = co_await acceptor_.async_accept(asio::make_strand(context),
                                                          asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) break;
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
        drain_backlog_without_descriptors();
        backoff.expires_after(std::chrono::milliseconds(10));
        co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      if (ec) {
        // Wait instead of spinning on an error that may persist.
        spdlog::warn("accept failed: {}", ec.message());
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      std::uint64_t socket_id = 0;
      const auto admission = state_->admit_socket(peer_address_of(socket), socket_id);
      if (admission.outcome != detail::socket_table::verdict::admitted) {
        refuse_socket(socket, admission.outcome);
        continue;
      }
      if (admission.evict != 0) state_->evict_session(admission.evict);
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      if (state_->config.tcp_notsent_lowat > 0) {
        // Unsent bytes in the kernel cannot be overtaken by an answer queued
        // later; keep them few without capping the window (see server.hpp).
        const int lowat = static_cast<int>(state_->config.tcp_notsent_lowat);
        ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
      }
      if (state_->config.socket_send_buffer > 0) {
        // The kernel's share of this socket's output, bounded (see server.hpp).
        const int bytes = static_cast<int>(state_->config.socket_send_buffer);
        ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
      }
      auto session = detail::make_session(std::move(socket), state_, tls_.get());
      session->set_socket_id(socket_id);
      session->start();
    }
  }

  template <class Socket>
  static std::string peer_address_of(const Socket& socket) {
    error_code ec;
    const auto endpoint = socket.remote_endpoint(ec);
    return ec ? std::string() : endpoint.address().to_string();
  }

  // A socket past the limits: a 503 if the kernel takes it at once (it
  // usually does: the request has not even arrived), then closed. Never
  // waits, so a flood costs the accept loop nothing more.
  template <class Socket>
  static void refuse_socket(Socket& socket, detail::socket_table::verdict why) {
    const bool full = why == detail::socket_table::verdict::refused_full;
    spdlog::debug("refused a connection at accept: {}",
                  full ? "every socket is taken by a WebSocket" : "per-address limit");
    static constexpr std::string_view busy =
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
        "Content-Length: 0\r\n\r\n";
    [[maybe_unused]] const auto sent =
        ::send(socket.native_handle(), busy.data(), busy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    error_code ignored;
    socket.close(ignored);
  }

  // Out of descriptors, the listen backlog would hold clients until they
  // time out. Give back the descriptor kept in reserve, take each waiting
  // connection and close it at once, then reserve one again.
  void drain_backlog_without_descriptors() {
    state_->counters.accept_fd_exhausted.fetch_add(1, std::memory_order_relaxed);
    if (reserve_fd_ >= 0) ::close(reserve_fd_);
    reserve_fd_ = -1;
    int drained = 0;
    for (; drained < 1024; ++drained) {
      const int fd =
          ::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;
      ::close(fd);
    }
    reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    spdlog::warn("out of file descriptors: closed {} waiting connection{} at once", drained,
                 drained == 1 ? "" : "s");
  }

  // While the memory budget stays reached, the connections whose clients
  // take nothing are what keeps it so: close them, largest first, until what
  // they hold would bring it back under half. Looked at a few times per grace.
  void watch_memory_budget() {
    const auto grace = state_->config.memory_budget_grace;
    budget_timer_.expires_after(std::max(std::chrono::milliseconds(25), grace / 4));
    budget_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || self->state_->stopping()) return;
      self->check_memory_budget();
      self->watch_memory_budget();
    });
  }

  void check_memory_budget() {
    detail::memory_budget& budget = state_->budget;
    const auto now = std::chrono::steady_clock::now();
    if (!budget.reached()) {
      budget_reached_since_.reset();
      return;
    }
    const auto grace = state_->config.memory_budget_grace;
    if (!budget_reached_since_) budget_reached_since_ = now;
    if (now - *budget_reached_since_ < grace) return;
    std::vector<std::shared_ptr<detail::session>> sessions;
    std::vector<detail::budget_holder> holders;
    state_->for_each_session([&](detail::session& s) {
      holders.push_back({sessions.size(), s.budget_held(), s.behind_since() > now - grace});
      sessions.push_back(s.shared_from_this());
    });
    const auto chosen =
        detail::pick_slow_consumers(std::move(holders), budget.reserved(), budget.limit() / 2);
    if (!chosen.empty()) {
      spdlog::warn(
          "memory budget ({} bytes) reached for {} ms: closing {} connection{} taking nothing",
          budget.limit(),
          std::chrono::duration_cast<std::chrono::milliseconds>(now - *budget_reached_since_)
              .count(),
          chosen.size(), chosen.size() == 1 ? "" : "s");
    }
    for (const std::uint64_t index : chosen)
      sessions[index]->close_for_memory_budget();
    budget_reached_since_ = now;  // the next look gives these closes a grace to act
  }

  // Runs and sessions past their retention are forgotten (and their memory
  // freed) within about a second, or a tenth of the retention when shorter.
  void watch_retention() {
    const auto retention = std::chrono::milliseconds(state_->config.limits.retention_ms);
    retention_timer_.expires_after(
        std::clamp(retention / 10, std::chrono::milliseconds(10), std::chrono::milliseconds(1000)));
    retention_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || self->state_->stopping()) return;
      self->state_->expire_runs(std::chrono::steady_clock::now());
      self->watch_retention();
    });
  }

  void stop(std::function<void()> on_stopped) {
    asio::post(strand_, [self = shared_from_this(), on_stopped = std::move(on_stopped)]() mutable {
      self->stop_on_strand(std::move(on_stopped));
    });
  }

  void stop_on_strand(std::function<void()> on_stopped) {
    if (state_->stopping()) return;
    spdlog::info("shutting down: closing connections");
    error_code ignored;
    acceptor_.close(ignored);
    budget_timer_.cancel();
    retention_timer_.cancel();
    grace_timer_.expires_after(state_->config.shutdown_grace);
    grace_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec) return;  // every session ended in time
      spdlog::warn("shutdown grace period over: closing remaining connections");
      self->state_->for_each_session([](detail::session& s) { s.force_close(); });
    });
    state_->begin_stop([self = shared_from_this(), on_stopped = std::move(on_stopped)] {
      asio::post(self->strand_, [self, on_stopped] {
        self->grace_timer_.cancel();
        spdlog::info("all connections closed");
        if (on_stopped) on_stopped();
        self->keep_running_.clear();  // each run() returns once its context is done
      });
    });
    // Every run is cancelled (reason "shutdown") on its own strand, followed
    // or not; then the connections close, each telling its client about the
    // runs it followed (see basic_session::cancel_runs_for_shutdown).
    const auto runs = state_->registry->running();
    auto close_connections = [state = state_] {
      state->for_each_session([](detail::session& s) { s.shutdown(); });
    };
    auto remaining = std::make_shared<std::atomic<std::size_t>>(runs.size() + 1);
    for (const auto& run : runs) {
      asio::post(run->home(), [run, state = state_, remaining, close_connections] {
        run->cancel_for_shutdown(*state);
        if (remaining->fetch_sub(1) == 1) close_connections();
      });
    }
    if (remaining->fetch_sub(1) == 1) close_connections();
  }

  const std::vector<asio::io_context*> contexts_;
  std::size_t next_context_ = 0;  // accept loop only
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep_running_;
  std::shared_ptr<detail::server_state> state_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::acceptor acceptor_;
  asio::steady_timer grace_timer_;
  asio::steady_timer budget_timer_;
  asio::steady_timer retention_timer_;
  std::optional<std::chrono::steady_clock::time_point> budget_reached_since_;
  std::unique_ptr<asio::ssl::context> tls_;  // null: plain ws://
  std::uint16_t port_ = 0;
  bool started_ = false;  // start() got as far as the accept loop
  int reserve_fd_ = -1;   // given back when accept runs out of descriptors

  ~impl() {
    if (reserve_fd_ >= 0) ::close(reserve_fd_);
  }
};

server::server(asio::io_context& io, server_config config)
    : server(std::span<asio::io_context* const>(std::array{&io}), std::move(config)) {}

server::server(std::span<asio::io_context* const> contexts, server_config config)
    : impl_(std::make_shared<impl>(contexts, std::move(config))) {}

server::~server() {
  // A started server's accept loop, memory-budget watch and work guards
  // would keep its contexts running forever: stop it. What is posted holds
  // the impl, so nothing here waits and nothing runs on a freed server.
  if (impl_->started_) impl_->stop({});
}

void server::start() {
  impl_->start();
}
std::uint16_t server::port() const noexcept {
  return impl_->port_;
}
void server::stop(std::function<void()> on_stopped) {
  impl_->stop(std::move(on_stopped));
}
server_stats server::stats() const {
  server_stats stats = impl_->state_->counters.snapshot();
  const detail::registry_counts runs = impl_->state_->registry->counts();
  stats.runs_retained = runs.retained;
  stats.runs_detached = runs.detached;
  return stats;
}
const server_config& server::config() const noexcept {
  return impl_->state_->config;
}

}  // namespace agentws
