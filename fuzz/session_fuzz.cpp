// Fuzzes a whole server connection: raw bytes from a peer, from the first
// byte of the HTTP request through the WebSocket frames, into the real
// session (the same code ws-server runs) over an in-memory stream.
//
// The input is cut into deliveries at each "\n--8<--\n": the session gets
// one delivery, runs until it has nothing left to do, then gets the next,
// so inputs can reach the WebSocket phase (bytes that arrive in the same
// read as the upgrade request are dropped, as a client must wait for the
// 101) and split frames anywhere. After the last delivery the peer hangs
// up. Whatever the bytes, the session must not crash, trip a sanitizer,
// leak, or hang: it must end, with every run ended, once the peer is gone.
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>

#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "server/basic_session.hpp"

namespace agentws::detail {

// The in-memory stream has no socket and no deadlines.
template <>
struct lowest_layer_ops<boost::beast::test::stream> {
  static void close(boost::beast::test::stream& stream) { stream.close(); }
  static void shutdown_send(boost::beast::test::stream& stream) { stream.close(); }
  static void expires_after(boost::beast::test::stream&, std::chrono::milliseconds) {}
  static void expires_never(boost::beast::test::stream&) {}
  static std::string peer_address(boost::beast::test::stream&) { return "in-memory"; }
  static std::size_t unacked_bytes(boost::beast::test::stream&) { return 0; }
};

}  // namespace agentws::detail

namespace {

namespace asio = boost::asio;
namespace test = boost::beast::test;
using agentws::detail::basic_session;
using agentws::detail::server_state;

constexpr std::string_view delivery_separator = "\n--8<--\n";

// Small limits keep one input fast and its memory bounded: a run can emit
// at most 64 events, and its timers fire within a few milliseconds.
std::shared_ptr<server_state> make_state() {
  agentws::server_config config;
  config.limits.max_steps = 64;
  config.limits.max_interval_ms = 2;
  config.limits.max_active_runs = 8;
  config.limits.max_message_bytes = 64 * 1024;
  config.default_params = {3, 0};
  config.outbox_bytes = 4 * 1024;
  return std::make_shared<server_state>(std::move(config));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::shared_ptr<server_state> state = make_state();
  std::string_view input(reinterpret_cast<const char*>(data), size);

  asio::io_context io;
  test::stream server_end(io);
  test::stream peer(io);
  server_end.connect(peer);
  std::weak_ptr<agentws::detail::session> watch;
  {
    auto session = std::make_shared<basic_session<test::stream>>(state, std::move(server_end));
    watch = session;
    session->start();
  }
  for (;;) {
    const std::size_t cut = input.find(delivery_separator);
    peer.write_size(static_cast<std::size_t>(-1));
    // What the peer sends arrives in the session's input.
    boost::system::error_code ignored;
    peer.write_some(asio::buffer(input.substr(0, cut)), ignored);
    io.poll();
    io.restart();
    if (cut == std::string_view::npos) break;
    input.remove_prefix(cut + delivery_separator.size());
  }
  peer.close();  // the peer hangs up: the session must wind down
  io.run_for(std::chrono::seconds(5));
  if (!watch.expired()) {
    std::fprintf(stderr, "session still alive 5 s after the peer hung up\n");
    std::abort();
  }
  return 0;
}
