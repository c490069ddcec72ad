#include "raw_peer.hpp"

#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>

namespace agentws::testing {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using json = nlohmann::json;

namespace {

// Mask keys vary from frame to frame (as RFC 6455 asks) but reproducibly.
std::uint32_t next_mask_key() {
  static std::uint32_t state = 0x9e3779b9u;
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

std::string make_frame(std::uint8_t opcode, std::string_view payload, bool fin, bool masked,
                       std::uint8_t rsv) {
  std::string frame;
  frame.reserve(payload.size() + 14);
  frame.push_back(static_cast<char>((fin ? 0x80 : 0x00) | ((rsv & 0x7) << 4) | (opcode & 0x0f)));
  const std::uint8_t mask_bit = masked ? 0x80 : 0x00;
  const std::uint64_t size = payload.size();
  if (size < 126) {
    frame.push_back(static_cast<char>(mask_bit | size));
  } else if (size <= 0xffff) {
    frame.push_back(static_cast<char>(mask_bit | 126));
    frame.push_back(static_cast<char>(size >> 8));
    frame.push_back(static_cast<char>(size & 0xff));
  } else {
    frame.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8)
      frame.push_back(static_cast<char>((size >> shift) & 0xff));
  }
  if (!masked) {
    frame.append(payload);
    return frame;
  }
  const std::uint32_t key = next_mask_key();
  const char mask[4] = {static_cast<char>(key >> 24), static_cast<char>(key >> 16),
                        static_cast<char>(key >> 8), static_cast<char>(key)};
  frame.append(mask, 4);
  for (std::size_t i = 0; i < payload.size(); ++i)
    frame.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
  return frame;
}

std::string close_payload(std::uint16_t code, std::string_view reason) {
  std::string payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xff));
  payload.append(reason);
  return payload;
}

std::string upgrade_request(std::string_view target, std::string_view extra_headers) {
  std::string request = "GET ";
  request.append(target);
  request.append(
      " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n");
  request.append(extra_headers);
  request.append("\r\n");
  return request;
}

std::optional<std::string> http_answer::header(std::string_view name) const {
  std::string_view rest = head;
  // Skip the status line.
  std::size_t eol = rest.find("\r\n");
  while (eol != std::string_view::npos) {
    rest.remove_prefix(eol + 2);
    eol = rest.find("\r\n");
    const std::string_view line = rest.substr(0, eol);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    if (!iequals(line.substr(0, colon), name)) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
      value.remove_suffix(1);
    return std::string(value);
  }
  return std::nullopt;
}

raw_peer::raw_peer(std::uint16_t port) : raw_peer(port, 0) {}

raw_peer::raw_peer(std::uint16_t port, int receive_buffer_bytes) : socket_(io_) {
  if (receive_buffer_bytes > 0) {
    socket_.open(tcp::v4());
    socket_.set_option(asio::socket_base::receive_buffer_size(receive_buffer_bytes));
  }
  bool done = false;
  error_code result;
  socket_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                        [&](error_code ec) {
                          result = ec;
                          done = true;
                        });
  REQUIRE(run_until([&] { return done; }, 5000ms));
  REQUIRE_FALSE(result);
  socket_.set_option(tcp::no_delay(true));
  start_reading();
}

raw_peer::~raw_peer() {
  error_code ignored;
  socket_.close(ignored);
}

void raw_peer::start_reading() {
  if (reading_ || ended_ || paused_) return;
  reading_ = true;
  socket_.async_read_some(asio::buffer(chunk_), [this](error_code ec, std::size_t n) {
    reading_ = false;
    in_.append(chunk_, n);
    if (ec) {
      ended_ = true;
      return;
    }
    start_reading();
  });
}

bool raw_peer::run_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  io_.restart();
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    io_.run_one_until(deadline);
    if (io_.stopped()) io_.restart();
  }
  return true;
}

void raw_peer::pump(std::chrono::milliseconds duration) {
  run_until([] { return false; }, duration);
}

error_code raw_peer::write(std::string_view bytes, std::chrono::milliseconds limit) {
  bool done = false;
  error_code result;
  asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()),
                    [&](error_code ec, std::size_t) {
                      result = ec;
                      done = true;
                    });
  if (!run_until([&] { return done; }, limit)) {
    // Leave nothing pending that refers to `bytes` or the locals above.
    error_code ignored;
    socket_.close(ignored);
    run_until([&] { return done && !reading_; }, 1000ms);
    ended_ = true;
    return asio::error::timed_out;
  }
  return result;
}

void raw_peer::send(std::string_view bytes) {
  const error_code ec = write(bytes);
  INFO("write failed: " << ec.message());
  REQUIRE_FALSE(ec);
}

std::optional<http_answer> raw_peer::read_http_answer(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::size_t head_end = std::string_view::npos;
  run_until(
      [&] {
        head_end = input().find("\r\n\r\n");
        return head_end != std::string_view::npos || ended_;
      },
      limit);
  if (head_end == std::string_view::npos) return std::nullopt;
  http_answer answer;
  answer.head = std::string(input().substr(0, head_end + 2));
  if (!answer.head.starts_with("HTTP/1.1 ") || answer.head.size() < 12) return std::nullopt;
  answer.status = static_cast<unsigned>(std::stoul(answer.head.substr(9, 3)));
  std::size_t body_size = 0;
  if (auto length = answer.header("Content-Length")) body_size = std::stoul(*length);
  const std::size_t body_begin = head_end + 4;
  const auto left =
      std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 deadline - std::chrono::steady_clock::now()));
  if (!run_until([&] { return input().size() >= body_begin + body_size || ended_; }, left) ||
      input().size() < body_begin + body_size) {
    return std::nullopt;
  }
  answer.body = std::string(input().substr(body_begin, body_size));
  consume(body_begin + body_size);
  return answer;
}

std::optional<http_answer> raw_peer::upgrade(std::string_view target,
                                             std::string_view extra_headers) {
  if (write(upgrade_request(target, extra_headers))) return std::nullopt;
  return read_http_answer();
}

void raw_peer::open_websocket() {
  std::optional<http_answer> answer = upgrade();
  REQUIRE(answer);
  INFO(answer->head);
  REQUIRE(answer->status == 101);
  expect_event("connected");
}

void raw_peer::consume(std::size_t n) {
  in_pos_ += n;
  consumed_total_ += n;
  if (in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
  } else if (in_pos_ > 64 * 1024 && in_pos_ * 2 > in_.size()) {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }
}

std::optional<received_frame> raw_peer::take_frame() {
  const std::string_view data = input();
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const std::size_t available = data.size();
  if (available < 2) return std::nullopt;
  std::size_t header = 2;
  std::uint64_t size = p[1] & 0x7f;
  if (size == 126) {
    header = 4;
    if (available < header) return std::nullopt;
    size = (std::uint64_t{p[2]} << 8) | p[3];
  } else if (size == 127) {
    header = 10;
    if (available < header) return std::nullopt;
    size = 0;
    for (int i = 0; i < 8; ++i)
      size = (size << 8) | p[2 + i];
  }
  const bool masked = (p[1] & 0x80) != 0;
  const std::size_t mask_at = header;
  if (masked) header += 4;
  if (available < header || available - header < size) return std::nullopt;
  received_frame frame;
  frame.fin = (p[0] & 0x80) != 0;
  frame.opcode = p[0] & 0x0f;
  frame.payload = std::string(data.substr(header, size));
  if (masked) {
    for (std::size_t i = 0; i < frame.payload.size(); ++i)
      frame.payload[i] ^= data[mask_at + i % 4];
  }
  consume(header + size);
  return frame;
}

std::optional<received_frame> raw_peer::next_frame(std::chrono::milliseconds limit) {
  std::optional<received_frame> frame;
  run_until(
      [&] {
        frame = take_frame();
        return frame.has_value() || ended_;
      },
      limit);
  return frame;
}

std::optional<json> raw_peer::next_event(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::string message;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (close_code_ || left.count() <= 0) return std::nullopt;
    std::optional<received_frame> frame = next_frame(left);
    if (!frame) return std::nullopt;
    switch (frame->opcode) {
      case ws_op::pong:
        ++pongs;
        pong_payloads.push_back(std::move(frame->payload));
        continue;
      case ws_op::ping:
        if (write(make_frame(ws_op::pong, frame->payload))) return std::nullopt;
        continue;
      case ws_op::close: {
        const auto& payload = frame->payload;
        close_code_ = payload.size() >= 2 ? (static_cast<unsigned char>(payload[0]) << 8) |
                                                static_cast<unsigned char>(payload[1])
                                          : 1005;
        error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        return std::nullopt;
      }
      default:
        // The server never fragments (auto_fragment off), but assemble anyway.
        message.append(frame->payload);
        if (!frame->fin) continue;
        INFO("unexpected frame opcode " << int(frame->opcode));
        REQUIRE((frame->opcode == ws_op::text || frame->opcode == ws_op::continuation));
        last_text_ = std::move(message);
        json event = json::parse(last_text_, nullptr, false);
        INFO(last_text_);
        REQUIRE(event.is_object());
        return event;
    }
  }
}

unsigned raw_peer::wait_for_close(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!close_code_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    std::optional<json> event = next_event(left);
    if (!event) break;
    stash.push_back(std::move(*event));
  }
  return close_code_.value_or(0);
}

bool raw_peer::wait_for_end(std::chrono::milliseconds limit) {
  return run_until([&] { return ended_; }, limit);
}

}  // namespace agentws::testing
