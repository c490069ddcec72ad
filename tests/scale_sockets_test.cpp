// Every socket counted: a flood of sockets that never upgrade (silent ones,
// keep-alive /health pollers) beyond the server's limits must not lock out a
// legitimate client, and a keep-alive connection cannot outlive the one
// pre-upgrade deadline. A real ws-server process, watched through /proc and
// /metrics.
#include <catch2/catch.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "sanitizer_build.hpp"
#include "server_process.hpp"
#include "test_peer.hpp"

#ifndef AGENTWS_WS_SERVER
#error "AGENTWS_WS_SERVER must name the ws-server binary"
#endif

using namespace agentws::testing;

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using clock_type = std::chrono::steady_clock;

constexpr bool sanitized = sanitized_build;

// A value from /metrics, or max() when absent.
std::uint64_t metric(const std::string& metrics, std::string_view name) {
  const std::string key = "\n" + std::string(name) + " ";
  const std::size_t at = ("\n" + metrics).find(key);
  if (at == std::string::npos) return std::numeric_limits<std::uint64_t>::max();
  return std::stoull(("\n" + metrics).substr(at + key.size()));
}

// Sockets that never upgrade, from source addresses other than 127.0.0.1
// (the legitimate client's): half stay silent, half poll /health on one
// keep-alive connection every `poll`. Whatever the server closes is opened
// again at once, so the pressure holds for the whole test. Runs on its own
// thread until stop().
class socket_flood {
 public:
  socket_flood(std::uint16_t port, std::size_t count, std::chrono::milliseconds poll)
      : port_(port), poll_(poll) {
    for (std::size_t i = 0; i < count; ++i) {
      // 127.0.0.2 .. 127.0.0.5: several "clients" (every 127/8 address is local).
      const auto source = asio::ip::make_address_v4("127.0.0." + std::to_string(2 + i % 4));
      slots_.push_back(std::make_unique<slot>(io_, source, i % 2 == 1));
    }
    for (auto& s : slots_)
      open(*s);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~socket_flood() { stop(); }

  void stop() {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] {
      stopping_ = true;
      for (auto& s : slots_) {
        error_code ignored;
        s->socket.close(ignored);
        s->timer.cancel();
      }
    });
    thread_.join();
  }

  std::size_t opened() const noexcept { return opened_.load(); }
  std::size_t closed_by_server() const noexcept { return closed_by_server_.load(); }
  std::size_t health_answers() const noexcept { return health_answers_.load(); }

 private:
  struct slot {
    slot(asio::io_context& io, asio::ip::address_v4 source_address, bool polls)
        : socket(io), timer(io), source(source_address), keep_alive(polls) {}
    tcp::socket socket;
    asio::steady_timer timer;
    asio::ip::address_v4 source;
    bool keep_alive;
    std::string in;
  };

  void open(slot& s) {
    if (stopping_) return;
    error_code ec;
    s.socket.close(ec);
    s.socket.open(tcp::v4(), ec);
    s.socket.bind(tcp::endpoint(s.source, 0), ec);
    if (ec) return again_later(s);
    s.socket.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_),
                           [this, &s](error_code connect_error) {
                             if (stopping_) return;
                             if (connect_error) return again_later(s);
                             ++opened_;
                             if (s.keep_alive) poll(s);
                             wait_for_close(s);
                           });
  }

  void again_later(slot& s) {
    if (stopping_) return;
    s.timer.expires_after(std::chrono::milliseconds(20));
    s.timer.async_wait([this, &s](error_code ec) {
      if (!ec) open(s);
    });
  }

  void poll(slot& s) {
    static const std::string request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    asio::async_write(s.socket, asio::buffer(request), [this, &s](error_code ec, std::size_t) {
      if (ec || stopping_) return;
      s.timer.expires_after(poll_);
      s.timer.async_wait([this, &s](error_code wait_error) {
        if (!wait_error && s.socket.is_open()) poll(s);
      });
    });
  }

  void wait_for_close(slot& s) {
    s.in.resize(4096);
    s.socket.async_read_some(asio::buffer(s.in), [this, &s](error_code ec, std::size_t n) {
      if (stopping_) return;
      if (!ec) {
        if (std::string_view(s.in.data(), n).find("HTTP/1.1 200") != std::string_view::npos)
          ++health_answers_;
        return wait_for_close(s);
      }
      ++closed_by_server_;
      s.timer.cancel();
      open(s);
    });
  }

  asio::io_context io_;
  std::uint16_t port_;
  std::chrono::milliseconds poll_;
  std::vector<std::unique_ptr<slot>> slots_;
  std::thread thread_;
  bool stopping_ = false;  // the flood's thread only
  std::atomic<std::size_t> opened_{0};
  std::atomic<std::size_t> closed_by_server_{0};
  std::atomic<std::size_t> health_answers_{0};
};

}  // namespace

TEST_CASE("a flood of sockets that never upgrade, past the limits, cannot lock out a client",
          "[scale]") {
  raise_fd_limit();
  // The server counts every socket against --max-sockets; the flood holds
  // three times as many, reopening each one the server closes.
  const std::size_t max_sockets = sanitized ? 100 : 300;
  const std::size_t flood_size = 3 * max_sockets;
  server_process server(
      AGENTWS_WS_SERVER,
      {"--threads", "2", "--max-sockets", std::to_string(max_sockets), "--max-connections",
       std::to_string(max_sockets / 2), "--handshake-timeout-ms", "2000"});
  const std::size_t baseline_sockets = server.open_fds().sockets;

  socket_flood flood(server.port(), flood_size, std::chrono::milliseconds(200));
  const auto flood_deadline = clock_type::now() + std::chrono::seconds(20);
  while (flood.opened() < flood_size && clock_type::now() < flood_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  INFO("flood: " << flood.opened() << " sockets opened, " << flood.closed_by_server()
                 << " closed by the server, " << flood.health_answers() << " /health answers");
  REQUIRE(flood.opened() >= flood_size);

  // A legitimate client connects and completes a run every 100 ms while the
  // flood goes on; every attempt must succeed.
  const int attempts = sanitized ? 10 : 30;
  int succeeded = 0;
  std::size_t most_sockets = 0;
  for (int i = 0; i < attempts; ++i) {
    const auto began = clock_type::now();
    {
      test_peer client(server.port());
      client.expect_event("connected");
      client.run_to_completion("legit-" + std::to_string(i), 2, 1);
      ++succeeded;
    }
    most_sockets = std::max(most_sockets, server.open_fds().sockets);
    std::this_thread::sleep_until(began + std::chrono::milliseconds(100));
  }
  const std::string metrics = http_body(server.port(), "/metrics");
  flood.stop();

  std::cout << "sockets flood: " << flood_size << " flooding sockets against --max-sockets "
            << max_sockets << ": " << succeeded << "/" << attempts
            << " legitimate runs completed; server sockets at most " << most_sockets
            << " (listener included); " << flood.closed_by_server()
            << " flood sockets closed by the server, evicted "
            << metric(metrics, "agentws_sockets_evicted_total") << std::endl;
  CHECK(succeeded == attempts);
  // Never more sockets than the limit, plus the evicted ones whose close is
  // on its way (the accept loop waits while there are 32), the listener and
  // a /metrics or client socket on its way out.
  CHECK(most_sockets <= baseline_sockets + max_sockets + 32 + 2);
  CHECK(metric(metrics, "agentws_sockets_evicted_total") > 0);
  CHECK(server.log().find("accept failed") == std::string::npos);
  CHECK(server.stop() == 0);
}

TEST_CASE("a keep-alive connection polling /health is closed at the pre-upgrade deadline",
          "[scale]") {
  // Before, every request restarted the deadline, so a poller lived forever.
  server_process server(AGENTWS_WS_SERVER, {"--threads", "1", "--handshake-timeout-ms", "1500"});
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  const auto opened = clock_type::now();
  const std::string request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  int answers = 0;
  bool closed = false;
  std::string in(4096, '\0');
  while (!closed && clock_type::now() - opened < std::chrono::seconds(10)) {
    error_code ec;
    asio::write(socket, asio::buffer(request), ec);
    if (ec) break;
    const std::size_t n = socket.read_some(asio::buffer(in), ec);
    if (ec) {
      closed = true;
      break;
    }
    if (std::string_view(in.data(), n).starts_with("HTTP/1.1 200")) ++answers;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  const double lived = std::chrono::duration<double>(clock_type::now() - opened).count();
  INFO("the connection lived " << lived << " s and got " << answers << " answers");
  CHECK(answers >= 2);
  CHECK(lived < 1.5 + 1.0);  // the deadline, plus one poll interval and some slack
  CHECK(server.stop() == 0);
}

TEST_CASE("a keep-alive connection is closed after its request cap", "[scale]") {
  server_process server(AGENTWS_WS_SERVER,
                        {"--threads", "1", "--max-requests-per-connection", "3"});
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  const std::string request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  std::string received;
  error_code ec;
  for (int i = 0; i < 3; ++i)
    asio::write(socket, asio::buffer(request), ec);
  // Read everything until the server closes: three answers, the last one
  // saying "Connection: close".
  std::string in(4096, '\0');
  for (;;) {
    const std::size_t n = socket.read_some(asio::buffer(in), ec);
    if (ec) break;
    received.append(in.data(), n);
  }
  std::size_t answers = 0;
  for (std::size_t at = received.find("HTTP/1.1 200"); at != std::string::npos;
       at = received.find("HTTP/1.1 200", at + 1))
    ++answers;
  INFO(received);
  CHECK(answers == 3);
  CHECK(received.find("Connection: close") != std::string::npos);
  CHECK(server.stop() == 0);
}

TEST_CASE("the per-address cap closes the excess of one address and no other's", "[scale]") {
  server_process server(AGENTWS_WS_SERVER,
                        {"--threads", "1", "--max-connections-per-address", "20"});
  asio::io_context io;
  std::vector<tcp::socket> held;
  for (int i = 0; i < 30; ++i) {
    tcp::socket socket(io);
    socket.open(tcp::v4());
    socket.bind(tcp::endpoint(asio::ip::make_address("127.0.0.2"), 0));
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
    held.push_back(std::move(socket));
  }
  // The ten past the cap are answered 503 and closed at once; the others
  // are held, waiting for a request. Polled until the ten are seen (bounded).
  std::vector<int> state(held.size(), 0);  // 0 nothing yet, 1 refused, 2 closed otherwise
  int refused = 0;
  const auto deadline = clock_type::now() + std::chrono::seconds(5);
  while (refused < 10 && clock_type::now() < deadline) {
    for (std::size_t i = 0; i < held.size(); ++i) {
      if (state[i] != 0) continue;
      char buffer[256];
      const ssize_t n = ::recv(held[i].native_handle(), buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0 &&
          std::string_view(buffer, static_cast<std::size_t>(n)).starts_with("HTTP/1.1 503")) {
        state[i] = 1;
        ++refused;
      } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        state[i] = 2;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto open = std::count(state.begin(), state.end(), 0);
  CHECK(refused == 10);
  CHECK(open == 20);
  // Another address still gets in and completes a run.
  test_peer client(server.port());
  client.expect_event("connected");
  client.run_to_completion("other-address", 2, 1);
  const std::string metrics = http_body(server.port(), "/metrics");
  CHECK(metric(metrics, "agentws_sockets_closed_at_accept_total{cause=\"per_address\"}") == 10);
  CHECK(server.stop() == 0);
}
