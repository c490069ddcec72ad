#include "agentws/server.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "server/server_state.hpp"
#include "server/session.hpp"

#include <stdexcept>

namespace agentws {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

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
  impl(asio::io_context& io, server_config config)
      : io_(io),
        state_(std::make_shared<detail::server_state>(std::move(config))),
        strand_(asio::make_strand(io)),
        acceptor_(strand_),
        grace_timer_(strand_) {}

  void start() {
    const server_config& config = state_->config;
    tls_ = make_tls_context(config);
    const tcp::endpoint endpoint(asio::ip::make_address(config.host), config.port);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(strand_, accept_loop(shared_from_this()), [](std::exception_ptr failure) {
      if (!failure) return;
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& e) {
        spdlog::critical("accept loop failed: {}", e.what());
      }
    });
  }

  asio::awaitable<void> accept_loop([[maybe_unused]] std::shared_ptr<impl> self) {
    asio::steady_timer backoff(strand_);
    while (acceptor_.is_open()) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::make_strand(io_),
                                                          asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) break;
      if (ec) {
        // Usually out of file descriptors: wait instead of spinning on it.
        spdlog::warn("accept failed: {}", ec.message());
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      detail::make_session(std::move(socket), state_, tls_.get())->start();
    }
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
      });
    });
    state_->for_each_session([](detail::session& s) { s.shutdown(); });
  }

  asio::io_context& io_;
  std::shared_ptr<detail::server_state> state_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::acceptor acceptor_;
  asio::steady_timer grace_timer_;
  std::unique_ptr<asio::ssl::context> tls_;  // null: plain ws://
  std::uint16_t port_ = 0;
};

server::server(asio::io_context& io, server_config config)
    : impl_(std::make_shared<impl>(io, std::move(config))) {}

server::~server() = default;

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
  return impl_->state_->counters.snapshot();
}
const server_config& server::config() const noexcept {
  return impl_->state_->config;
}

}  // namespace agentws
