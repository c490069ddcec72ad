// client_connection's own bounds: what send() queues, and the connect
// timeout, which covers the name lookup as well as the handshakes. Every wait
// is bounded (io_context::run_for); the listener is on 127.0.0.1.
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "agentws/client.hpp"

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;

struct connect_result {
  std::optional<error_code> error;
  std::chrono::steady_clock::duration took{};
};

// Runs connect() to `url` on `io` for at most `limit`.
connect_result connect_within(asio::io_context& io, agentws::client_connection& connection,
                              const std::string& url, std::chrono::milliseconds timeout,
                              std::chrono::milliseconds limit) {
  const std::optional<agentws::ws_url> parsed = agentws::ws_url::parse(url);
  REQUIRE(parsed);
  connect_result result;
  const auto start = std::chrono::steady_clock::now();
  asio::co_spawn(io, connection.connect(*parsed, timeout),
                 [&](std::exception_ptr failure, error_code ec) {
                   REQUIRE_FALSE(failure);
                   result.error = ec;
                   result.took = std::chrono::steady_clock::now() - start;
                 });
  io.run_for(limit);
  return result;
}

// A listener whose connections complete the TCP handshake (the kernel's
// backlog) and never answer the WebSocket upgrade.
struct silent_listener {
  explicit silent_listener(asio::io_context& io)
      : acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
  std::string url() const {
    return "ws://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/ws";
  }
  tcp::acceptor acceptor;
};

}  // namespace

TEST_CASE("client send is bounded: past max_queued_send_bytes it fails and queues nothing",
          "[loopback][client]") {
  asio::io_context io;
  agentws::client_connection connection(io.get_executor());
  // Not connected: frames wait in the queue, so the bound is reached exactly.
  constexpr std::size_t frame_bytes = 64 * 1024;
  static_assert(agentws::client_connection::max_queued_send_bytes % frame_bytes == 0);
  const std::size_t fit = agentws::client_connection::max_queued_send_bytes / frame_bytes;
  for (std::size_t i = 0; i < fit; ++i) {
    INFO("frame " << i);
    REQUIRE_FALSE(connection.send(std::string(frame_bytes, 'x')));
  }
  CHECK(connection.send(std::string(frame_bytes, 'x')) == asio::error::no_buffer_space);
  CHECK(connection.send("x") == asio::error::no_buffer_space);
  CHECK(connection.send("") == error_code{});  // nothing to queue still fits

  agentws::client_connection fresh(io.get_executor());
  CHECK(fresh.send(std::string(agentws::client_connection::max_queued_send_bytes + 1, 'x')) ==
        asio::error::no_buffer_space);
  CHECK_FALSE(fresh.send(std::string(agentws::client_connection::max_queued_send_bytes, 'x')));

  connection.abort();
  CHECK(connection.send("x") == asio::error::shut_down);
}

TEST_CASE("client connect: a server that never answers the upgrade costs the timeout",
          "[loopback][client]") {
  asio::io_context io;
  silent_listener listener(io);
  agentws::client_connection connection(io.get_executor());
  const connect_result result = connect_within(io, connection, listener.url(), 300ms, 10s);
  REQUIRE(result.error);
  CHECK(*result.error == boost::beast::error::timeout);
  CHECK(result.took >= 300ms);
  CHECK(result.took < 5s);
}

TEST_CASE("client connect: a name lookup that never answers costs the timeout, no more",
          "[loopback][client]") {
  asio::io_context io;
  agentws::client_connection connection(io.get_executor());
  int lookups = 0;
  connection.set_resolver(
      [&lookups](const std::string&, const std::string&,
                 std::function<void(error_code, tcp::resolver::results_type)>) { ++lookups; });
  const connect_result result =
      connect_within(io, connection, "ws://agentws.invalid:8000/ws", 300ms, 10s);
  CHECK(lookups == 1);
  REQUIRE(result.error);  // before: connect() waited for the lookup for ever
  CHECK(*result.error == boost::beast::error::timeout);
  CHECK(result.took >= 300ms);
  CHECK(result.took < 5s);
}

TEST_CASE("client connect: the lookup and the handshakes share one deadline",
          "[loopback][client]") {
  asio::io_context io;
  silent_listener listener(io);
  agentws::client_connection connection(io.get_executor());
  // The lookup answers 127.0.0.1 after 1 s, from another thread; the server
  // then never answers the upgrade. With a 2 s timeout for the whole connect
  // it ends at 2 s; a deadline started after the lookup would end at 3 s.
  const tcp::endpoint server = listener.acceptor.local_endpoint();
  std::thread slow_lookup;
  connection.set_resolver([&](const std::string& host, const std::string& port,
                              std::function<void(error_code, tcp::resolver::results_type)> done) {
    slow_lookup = std::thread([server, host, port, done = std::move(done)] {
      std::this_thread::sleep_for(1s);  // a slow name server
      done({}, tcp::resolver::results_type::create(server, host, port));
    });
  });
  const connect_result result = connect_within(
      io, connection, "ws://agentws.test:" + std::to_string(server.port()) + "/ws", 2000ms, 10s);
  if (slow_lookup.joinable()) slow_lookup.join();
  REQUIRE(result.error);
  CHECK(*result.error == boost::beast::error::timeout);
  CHECK(result.took >= 2000ms);
  CHECK(result.took < 2800ms);
}
