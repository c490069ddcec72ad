// A large command must not stall its I/O thread: while ws-server (one I/O
// thread) parses a command of several MB from one connection, another
// connection's commands are still answered. A real ws-server process.
#include <catch2/catch.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "agentws/protocol.hpp"
#include "sanitizer_build.hpp"
#include "server_process.hpp"

#ifndef AGENTWS_WS_SERVER
#error "AGENTWS_WS_SERVER must name the ws-server binary"
#endif

using namespace agentws::testing;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;
using ws_stream = websocket::stream<beast::tcp_stream>;

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

// A cancel_run of about `bytes`, its run unknown (the answer is an error
// event), with an object of short keys: the costliest text to parse per byte.
std::string large_command(std::size_t bytes) {
  std::string text = R"({"command":"cancel_run","run_id":"large","input":{)";
  for (std::size_t i = 0; text.size() + 32 < bytes; ++i) {
    if (i != 0) text += ',';
    text += "\"k" + std::to_string(i) + "\":" + std::to_string(i % 10);
  }
  text += "}}";
  return text;
}

// Connects, upgrades and reads `connected`; false (with the reason) if not.
asio::awaitable<bool> open(ws_stream& ws, std::uint16_t port, std::string& failure) {
  auto& tcp_layer = beast::get_lowest_layer(ws);
  tcp_layer.expires_after(std::chrono::seconds(10));
  auto [connect_error] = co_await tcp_layer.async_connect(
      tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), nothrow);
  if (connect_error) {
    failure = "connect: " + connect_error.message();
    co_return false;
  }
  tcp_layer.expires_never();
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
  ws.read_message_max(1024 * 1024);
  ws.auto_fragment(false);
  auto [handshake_error] =
      co_await ws.async_handshake("127.0.0.1:" + std::to_string(port), "/ws", nothrow);
  if (handshake_error) {
    failure = "handshake: " + handshake_error.message();
    co_return false;
  }
  beast::flat_buffer buffer;
  auto [read_error, size] = co_await ws.async_read(buffer, nothrow);
  if (read_error ||
      beast::buffers_to_string(buffer.data()).find("\"connected\"") == std::string::npos) {
    failure = "no connected event";
    co_return false;
  }
  co_return true;
}

}  // namespace

TEST_CASE("a large command does not stall the other connections of its I/O thread", "[scale]") {
  // Why this is an ordering property and not a speed test: P is how long
  // the command's text takes to parse in this process (the same parser,
  // built the same way as the server). With one I/O thread, a server that
  // parses on that thread can serve nothing else from the parse's start to
  // the command's answer, which A reads at T. B pings (a cheap command, one
  // at a time) from the moment A's write completed; so, parsed inline, none
  // of B's round trips can begin and end inside (T - P/2, T): that window
  // lies inside the parse. At most the ping that waited out the parse gets
  // its answer there, and only if the client happens to read it before A's.
  // Parsed on the pool, B's round trips (well under a millisecond each) go
  // on through the parse. The window is half the parse, so the server's
  // parse may be up to twice as fast as ours before it says anything false.
  const std::size_t bytes = sanitized_build ? 2 * 1024 * 1024 : 4 * 1024 * 1024;
  const std::string command = large_command(bytes);
  agentws::protocol_limits limits;
  limits.max_message_bytes = 16 * 1024 * 1024;
  auto parse_time = clock_type::duration::max();
  for (int i = 0; i < 2; ++i) {
    const auto begin = clock_type::now();
    const auto parsed = agentws::parse_command(command, limits);
    parse_time = std::min(parse_time, clock_type::now() - begin);
    REQUIRE(std::holds_alternative<agentws::command>(parsed));  // a cancel_run
  }

  server_process server(AGENTWS_WS_SERVER, {"--threads", "1", "--max-message-bytes",
                                            std::to_string(16 * 1024 * 1024)});

  asio::io_context io(1);
  ws_stream a(io), b(io);
  std::string failure;
  bool a_written = false;
  bool a_answered = false;
  clock_type::time_point answered_at;
  json a_answer;
  struct round_trip {
    clock_type::time_point sent, answered;
  };
  std::vector<round_trip> pings;
  asio::steady_timer a_written_signal(io, clock_type::time_point::max());

  auto run_a = [&]() -> asio::awaitable<void> {
    if (!co_await open(a, server.port(), failure)) co_return;
    a.text(true);
    auto [write_error, written] = co_await a.async_write(asio::buffer(command), nothrow);
    if (write_error) {
      failure = "A's write: " + write_error.message();
      co_return;
    }
    a_written = true;
    a_written_signal.cancel();
    beast::flat_buffer buffer;
    auto [read_error, size] = co_await a.async_read(buffer, nothrow);
    answered_at = clock_type::now();
    if (read_error) {
      failure = "A's answer: " + read_error.message();
      co_return;
    }
    a_answer = json::parse(beast::buffers_to_string(buffer.data()), nullptr, false);
    a_answered = true;
  };
  auto run_b = [&]() -> asio::awaitable<void> {
    if (!co_await open(b, server.port(), failure)) co_return;
    b.text(true);
    if (!a_written) co_await a_written_signal.async_wait(nothrow);
    // Bounded in count and by the io_context's deadline below.
    for (int i = 0; i < 1'000'000 && !a_answered && failure.empty(); ++i) {
      const std::string ping =
          R"({"command":"cancel_run","run_id":"ping","request_id":")" + std::to_string(i) + "\"}";
      round_trip trip{clock_type::now(), {}};
      auto [write_error, written] = co_await b.async_write(asio::buffer(ping), nothrow);
      beast::flat_buffer buffer;
      auto [read_error, size] = co_await b.async_read(buffer, nothrow);
      trip.answered = clock_type::now();
      if (write_error || read_error) {
        failure = "B: " + (write_error ? write_error : read_error).message();
        co_return;
      }
      pings.push_back(trip);
    }
  };
  // A opens first, so it has its `connected` before B begins to wait.
  asio::co_spawn(io, run_a, asio::detached);
  asio::co_spawn(io, run_b, asio::detached);
  io.run_for(sanitized_build ? std::chrono::seconds(120) : std::chrono::seconds(30));

  INFO("server log:\n" << server.log_tail());
  REQUIRE(failure.empty());
  REQUIRE(a_answered);
  CHECK(a_answer.value("event_type", "") == "error");
  CHECK(a_answer["payload"].value("code", "") == "run_not_active");

  const auto window_start = answered_at - parse_time / 2;
  const auto inside = std::count_if(pings.begin(), pings.end(), [&](const round_trip& trip) {
    return trip.sent > window_start && trip.answered < answered_at;
  });
  const auto ms = [](clock_type::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  };
  INFO("P = " << ms(parse_time) << " ms; B made " << pings.size() << " round trips, " << inside
              << " of them inside (T - P/2, T)");
  CHECK(inside >= 2);
  CHECK(server.stop() == 0);
}
