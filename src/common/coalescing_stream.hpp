// A stream layer under the WebSocket that coalesces writes.
//
// Data frames are framed by their writer straight into this layer's buffer
// (raw_buffer, append_text_frame) and flushed; Beast writes its own frames
// (handshake response, pings, pongs, close) with async_write_some on its next
// layer, one at a time, and this layer copies those bytes into the same
// buffer and completes the write at once. A single flush writes the buffer
// to the socket. Frames queued while a flush is in
// flight go out together in the next one: one syscall for many events when
// the socket is the bottleneck, and no added latency when it is not (the
// first write starts a flush immediately). Order is preserved because there
// is one buffer and one flush at a time. Backpressure: past `capacity` bytes a
// write completes only when the flush in flight finishes.
//
// Not thread-safe: used on the connection's strand, like the stream itself.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace agentws::detail {

template <class NextLayer>
class coalescing_stream {
  using write_handler =
      boost::asio::any_completion_handler<void(boost::system::error_code, std::size_t)>;
  using teardown_handler = boost::asio::any_completion_handler<void(boost::system::error_code)>;

 public:
  // Called as each flush completes, with flushes_completed() (counting it)
  // and its outcome. May run after the stream is gone: it must own what it uses.
  using flush_listener = std::function<void(std::uint64_t, const boost::system::error_code&)>;

 private:
  // Outlives the stream while a flush is in flight: the flush's completion
  // may run after the owner is gone and must then touch nothing but this.
  struct flush_state {
    NextLayer* next = nullptr;  // null once the stream is destroyed
    std::string pending;
    std::string in_flight;
    bool flushing = false;
    boost::system::error_code error;
    std::size_t capacity = 64 * 1024;
    std::optional<write_handler> blocked_write;  // completes when room is made
    std::size_t blocked_bytes = 0;
    std::optional<teardown_handler> teardown_waiter;  // runs once drained
    std::optional<teardown_handler> room_waiter;      // runs once pending <= room_threshold
    std::size_t room_threshold = 0;
    std::uint64_t flushes_completed = 0;
    bool release_when_drained = false;
    bool hold_next_write = false;
    flush_listener on_flush;  // empty: none
  };

 public:
  using next_layer_type = NextLayer;
  using executor_type = typename NextLayer::executor_type;

  template <class... Args>
  explicit coalescing_stream(Args&&... args)
      : next_(std::forward<Args>(args)...), state_(std::make_shared<flush_state>()) {
    state_->next = &next_;
  }
  ~coalescing_stream() { state_->next = nullptr; }
  coalescing_stream(const coalescing_stream&) = delete;
  coalescing_stream& operator=(const coalescing_stream&) = delete;

  executor_type get_executor() noexcept { return next_.get_executor(); }
  NextLayer& next_layer() noexcept { return next_; }
  const NextLayer& next_layer() const noexcept { return next_; }

  // Bytes buffered before writers wait for the socket.
  void set_capacity(std::size_t bytes) noexcept { state_->capacity = bytes; }
  std::size_t buffered_bytes() const noexcept {
    return state_->pending.size() + state_->in_flight.size();
  }
  // The memory its two buffers hold (their capacity).
  std::size_t memory_bytes() const noexcept {
    return state_->pending.capacity() + state_->in_flight.capacity();
  }

  // The fast path for data frames: append bytes already framed for the wire
  // (see append_text_frame), then flush(). Safe between writes of the stream
  // above, whose own frames (pongs, close) arrive here whole, in one call.
  std::string& raw_buffer() noexcept { return state_->pending; }
  // The next write through the stream above is buffered but not flushed: it
  // leaves with whatever the next flush() or write brings (the server's 101
  // response and its `connected` frame: one syscall, one read for the peer).
  void hold_next_write() noexcept { state_->hold_next_write = true; }
  void flush() { start_flush(state_); }
  // Bytes not yet handed to the socket (behind the write in flight).
  std::size_t pending_bytes() const noexcept { return state_->pending.size(); }
  const boost::system::error_code& error() const noexcept { return state_->error; }
  std::uint64_t flushes_completed() const noexcept { return state_->flushes_completed; }
  // The number (as flushes_completed() will count it) of the flush carrying
  // the bytes last appended, after flush(): the one in flight, or if they
  // wait behind it, the next.
  std::uint64_t flush_carrying_pending() const noexcept {
    return state_->flushes_completed + (state_->flushing && !state_->pending.empty() ? 2 : 1);
  }
  void set_flush_listener(flush_listener listener) { state_->on_flush = std::move(listener); }

  // Gives back the buffers' memory once everything is written (at once if it
  // is), for connections going idle; the next write allocates again.
  void release_memory() {
    flush_state& s = *state_;
    if (!s.pending.empty()) return;
    std::string().swap(s.pending);
    if (s.flushing) {
      s.release_when_drained = true;
    } else {
      std::string().swap(s.in_flight);
    }
  }

  // Completes once at most `pending` bytes wait behind the write in flight
  // (or the socket failed).
  template <class WaitToken>
  auto async_wait_pending_at_most(std::size_t pending, WaitToken&& token) {
    return boost::asio::async_initiate<WaitToken, void(boost::system::error_code)>(
        [this, pending](auto handler) {
          if (state_->pending.size() <= pending || state_->error || !state_->flushing) {
            post_completion(std::move(handler), state_->error);
          } else {
            state_->room_threshold = pending;
            state_->room_waiter.emplace(std::move(handler));
          }
        },
        token);
  }

  template <class MutableBuffers, class ReadToken>
  auto async_read_some(const MutableBuffers& buffers, ReadToken&& token) {
    return next_.async_read_some(buffers, std::forward<ReadToken>(token));
  }

  template <class ConstBuffers, class WriteToken>
  auto async_write_some(const ConstBuffers& buffers, WriteToken&& token) {
    return boost::asio::async_initiate<WriteToken, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const ConstBuffers& data) { start_write(std::move(handler), data); },
        token, buffers);
  }

  // Runs `handler` once everything buffered reached the socket (or failed).
  template <class Handler>
  void async_wait_drained(Handler&& handler) {
    if (!state_->flushing) {
      post_completion(std::forward<Handler>(handler), state_->error);
      return;
    }
    state_->teardown_waiter.emplace(std::forward<Handler>(handler));
  }

 private:
  template <class Handler, class... Args>
  void post_completion(Handler&& handler, Args... args) {
    auto executor = boost::asio::get_associated_executor(handler, next_.get_executor());
    boost::asio::post(executor,
                      boost::beast::bind_front_handler(std::forward<Handler>(handler), args...));
  }

  template <class Handler, class ConstBuffers>
  void start_write(Handler handler, const ConstBuffers& buffers) {
    flush_state& s = *state_;
    if (s.error) {
      post_completion(std::move(handler), s.error, std::size_t{0});
      return;
    }
    const std::size_t size = boost::asio::buffer_size(buffers);
    const std::size_t at = s.pending.size();
    s.pending.resize(at + size);
    boost::asio::buffer_copy(boost::asio::buffer(s.pending.data() + at, size), buffers);
    if (std::exchange(s.hold_next_write, false)) {
      post_completion(std::move(handler), boost::system::error_code{}, size);
      return;
    }
    start_flush(state_);
    if (s.pending.size() <= s.capacity) {
      post_completion(std::move(handler), boost::system::error_code{}, size);
    } else {
      s.blocked_write.emplace(std::move(handler));
      s.blocked_bytes = size;
    }
  }

  static void start_flush(const std::shared_ptr<flush_state>& state) {
    flush_state& s = *state;
    if (s.flushing || s.pending.empty() || !s.next || s.error) return;
    s.flushing = true;
    std::swap(s.pending, s.in_flight);
    boost::asio::async_write(
        *s.next, boost::asio::buffer(s.in_flight),
        [state](boost::system::error_code ec, std::size_t) { on_flushed(state, ec); });
  }

  static void on_flushed(const std::shared_ptr<flush_state>& state, boost::system::error_code ec) {
    flush_state& s = *state;
    s.flushing = false;
    s.in_flight.clear();
    if (std::exchange(s.release_when_drained, false) && s.pending.empty()) {
      std::string().swap(s.in_flight);
    }
    ++s.flushes_completed;
    if (ec) {
      s.error = ec;
      s.pending.clear();
    }
    if (s.on_flush) s.on_flush(s.flushes_completed, ec);
    if (s.blocked_write) {
      write_handler handler = std::move(*s.blocked_write);
      s.blocked_write.reset();
      std::move(handler)(s.error, s.error ? 0 : s.blocked_bytes);
    }
    start_flush(state);
    if (s.room_waiter && (s.pending.size() <= s.room_threshold || s.error || !s.flushing)) {
      teardown_handler handler = std::move(*s.room_waiter);
      s.room_waiter.reset();
      std::move(handler)(s.error);
    }
    if (!s.flushing && s.teardown_waiter) {
      teardown_handler handler = std::move(*s.teardown_waiter);
      s.teardown_waiter.reset();
      std::move(handler)(s.error);
    }
  }

  NextLayer next_;
  std::shared_ptr<flush_state> state_;
};

// Appends one unmasked, unfragmented text frame (RFC 6455 section 5.2), the
// form a server sends: FIN + opcode 1, then the payload length.
inline void append_text_frame(std::string& out, std::string_view payload) {
  const std::size_t size = payload.size();
  char header[10];
  std::size_t header_size = 2;
  header[0] = static_cast<char>(0x81);
  if (size < 126) {
    header[1] = static_cast<char>(size);
  } else if (size <= 0xffff) {
    header[1] = 126;
    header[2] = static_cast<char>(size >> 8);
    header[3] = static_cast<char>(size & 0xff);
    header_size = 4;
  } else {
    header[1] = 127;
    for (int i = 0; i < 8; ++i) {
      header[2 + i] = static_cast<char>((static_cast<std::uint64_t>(size) >> (56 - 8 * i)) & 0xff);
    }
    header_size = 10;
  }
  out.append(header, header_size);
  out.append(payload);
}

// WebSocket teardown: let buffered frames (the close frame above all) reach
// the socket, then tear down the layer below as usual.
template <class NextLayer>
void teardown(boost::beast::role_type role, coalescing_stream<NextLayer>& stream,
              boost::system::error_code& ec) {
  using boost::beast::websocket::teardown;
  teardown(role, stream.next_layer(), ec);
}

template <class NextLayer, class TeardownHandler>
void async_teardown(boost::beast::role_type role, coalescing_stream<NextLayer>& stream,
                    TeardownHandler&& handler) {
  stream.async_wait_drained([role, &stream, handler = std::forward<TeardownHandler>(handler)](
                                boost::system::error_code) mutable {
    using boost::beast::websocket::async_teardown;
    async_teardown(role, stream.next_layer(), std::move(handler));
  });
}

}  // namespace agentws::detail
