// A peer that writes every byte itself: raw HTTP requests and hand-built
// WebSocket frames (masked as a client must, unless a test says otherwise),
// so tests can send what no well-behaved client library would: invalid
// UTF-8, odd fragmentation, floods of control frames, broken handshakes.
//
// While it writes, it keeps reading into its input buffer, so a server that
// stops reading until its own writes drain cannot deadlock a large write.
// Every wait is bounded; a hang fails the test instead of blocking CI.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test_peer.hpp"

namespace agentws::testing {

using namespace std::chrono_literals;

namespace ws_op {
inline constexpr std::uint8_t continuation = 0x0;
inline constexpr std::uint8_t text = 0x1;
inline constexpr std::uint8_t binary = 0x2;
inline constexpr std::uint8_t close = 0x8;
inline constexpr std::uint8_t ping = 0x9;
inline constexpr std::uint8_t pong = 0xA;
}  // namespace ws_op

// One WebSocket frame as a client sends it. `rsv` goes into the RSV1-3 bits
// (0..7); `masked` false builds a frame no client may send.
std::string make_frame(std::uint8_t opcode, std::string_view payload, bool fin = true,
                       bool masked = true, std::uint8_t rsv = 0);

// A close frame's payload: the status code, big-endian, then the reason.
std::string close_payload(std::uint16_t code, std::string_view reason = {});

// The request a browser sends to open /ws (or `target`), ending in CRLF CRLF;
// `extra_headers` (each ending in CRLF) go before the blank line.
std::string upgrade_request(std::string_view target = "/ws", std::string_view extra_headers = {});

struct http_answer {
  unsigned status = 0;
  std::string head;  // status line and headers, up to the blank line
  std::string body;
  // A header's value (name case-insensitive), nullopt when absent.
  std::optional<std::string> header(std::string_view name) const;
};

struct received_frame {
  bool fin = false;
  std::uint8_t opcode = 0;
  std::string payload;
};

class raw_peer final : public scripted_peer {
 public:
  // Opens a TCP connection to 127.0.0.1:port, or FAILs the test.
  explicit raw_peer(std::uint16_t port);
  // With SO_RCVBUF set before connecting (the kernel doubles it), so the
  // window, and what the server can push ahead, stays that small.
  raw_peer(std::uint16_t port, int receive_buffer_bytes);
  ~raw_peer();
  raw_peer(const raw_peer&) = delete;
  raw_peer& operator=(const raw_peer&) = delete;

  // Writes all of `bytes`; the error (if the server closed first, say).
  boost::system::error_code write(std::string_view bytes, std::chrono::milliseconds limit = 10s);
  // Writes all of `bytes` and REQUIREs that it worked.
  void send(std::string_view bytes);

  // --- HTTP phase ---
  // The next HTTP response (head and Content-Length body), nullopt if the
  // connection ended or `limit` passed first.
  std::optional<http_answer> read_http_answer(std::chrono::milliseconds limit = 5000ms);
  // Sends upgrade_request(target, extra_headers) and reads the answer.
  std::optional<http_answer> upgrade(std::string_view target = "/ws",
                                     std::string_view extra_headers = {});
  // Upgrades to /ws and reads `connected`, REQUIRing both.
  void open_websocket();

  // --- WebSocket phase ---
  void send_frame(std::uint8_t opcode, std::string_view payload, bool fin = true) {
    send(make_frame(opcode, payload, fin));
  }
  void send_text(std::string_view text) { send_frame(ws_op::text, text); }
  void send_command(const nlohmann::json& command) override { send_text(command.dump()); }

  // The next frame from the server as it came, nullopt on end or timeout.
  std::optional<received_frame> next_frame(std::chrono::milliseconds limit = 5000ms);
  // The next text frame as JSON. Pongs met on the way are counted in
  // `pongs`, pings are answered; a close frame ends it (see close_code()).
  std::optional<nlohmann::json> next_event(std::chrono::milliseconds limit = 5000ms) override;

  // Reads until the server's close frame; its status code, 0 if the
  // connection ended (or `limit` passed) without one. Answers the close by
  // shutting down our side, so the server's teardown completes.
  unsigned wait_for_close(std::chrono::milliseconds limit = 5000ms);
  // Reads (and keeps) bytes until the server ends the TCP connection. True
  // if it did within `limit`.
  bool wait_for_end(std::chrono::milliseconds limit);
  // Runs the peer's I/O (reads keep arriving) for `duration`.
  void pump(std::chrono::milliseconds duration);

  bool ended() const noexcept { return ended_; }
  // While paused, nothing is read from the socket (writes too must then fit
  // in the kernel's buffers): the server sees a client that does not read.
  void pause_reading() noexcept { paused_ = true; }
  void resume_reading() {
    paused_ = false;
    start_reading();
  }
  // Bytes of frames taken by next_frame() / next_event() so far.
  std::uint64_t consumed_bytes() const noexcept { return consumed_total_; }
  // Bytes received and not consumed yet.
  std::string_view input() const noexcept { return std::string_view(in_).substr(in_pos_); }
  // Raw text of the last frame next_event() parsed.
  const std::string& last_text() const noexcept { return last_text_; }
  std::optional<unsigned> close_code() const noexcept { return close_code_; }

  std::size_t pongs = 0;
  std::vector<std::string> pong_payloads;

 private:
  void start_reading();
  // Runs I/O until `done()` or `limit`; false on timeout.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit);
  // Parses a frame at the front of the input, if complete.
  std::optional<received_frame> take_frame();
  // Drops `n` bytes from the front of the input (cheaply: floods are big).
  void consume(std::size_t n);

  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
  std::string in_;
  std::size_t in_pos_ = 0;  // in_ before this was consumed already
  char chunk_[64 * 1024];
  bool reading_ = false;
  bool paused_ = false;
  std::uint64_t consumed_total_ = 0;
  bool ended_ = false;
  std::optional<unsigned> close_code_;
  std::string last_text_;
};

}  // namespace agentws::testing
