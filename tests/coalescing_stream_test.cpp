// The coalescing layer under the server's WebSocket, over Beast's in-memory
// stream: what reaches the peer, and when.
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <catch2/catch.hpp>

#include <string>

#include "common/coalescing_stream.hpp"

namespace {

namespace asio = boost::asio;
namespace test = boost::beast::test;
using agentws::detail::append_text_frame;
using agentws::detail::coalescing_stream;
using boost::system::error_code;

struct layer_over_memory {
  layer_over_memory() : remote(io), layer(io) { layer.next_layer().connect(remote); }

  // Writes through the layer as Beast does, and runs until it completed.
  void write(const std::string& bytes) {
    bool completed = false;
    layer.async_write_some(asio::buffer(bytes), [&](error_code ec, std::size_t size) {
      CHECK_FALSE(ec);
      CHECK(size == bytes.size());
      completed = true;
    });
    settle();
    CHECK(completed);
  }
  void settle() {
    io.restart();
    io.run();
  }
  std::string received() const { return std::string(remote.str()); }

  asio::io_context io;
  test::stream remote;
  coalescing_stream<test::stream> layer;
};

std::string text_frame(std::string_view payload) {
  std::string frame;
  append_text_frame(frame, payload);
  return frame;
}

}  // namespace

TEST_CASE("a write goes out at once when nothing is in flight", "[loopback]") {
  layer_over_memory m;
  m.write("first");
  CHECK(m.received() == "first");
  m.write("second");
  CHECK(m.received() == "firstsecond");
}

TEST_CASE("a held write waits for the next flush and leaves with its frames", "[loopback]") {
  // The server holds its 101 response so that `connected` joins it.
  layer_over_memory m;
  m.layer.hold_next_write();
  m.write("HTTP/1.1 101 Switching Protocols\r\n\r\n");
  CHECK(m.received().empty());
  append_text_frame(m.layer.raw_buffer(), R"({"event_type":"connected"})");
  m.layer.flush();
  m.settle();
  CHECK(m.received() ==
        "HTTP/1.1 101 Switching Protocols\r\n\r\n" + text_frame(R"({"event_type":"connected"})"));
  // Only one write was held: the next goes out by itself.
  m.write("later");
  CHECK(m.received().ends_with("later"));
}

TEST_CASE("a held write is sent, in order, by the next write too", "[loopback]") {
  // Should Beast write (a pong, a close) before our writer flushes, nothing
  // held is lost or overtaken.
  layer_over_memory m;
  m.layer.hold_next_write();
  m.write("held|");
  m.write("close-frame");
  CHECK(m.received() == "held|close-frame");
}
