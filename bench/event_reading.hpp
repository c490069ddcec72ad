// Reading what a server sends, cheaply and strictly: WebSocket frames
// straight from the socket (frame_reader), event envelopes without building a
// JSON document (envelope_parser, with agentws::parse_event as the fallback)
// and RFC 3339 timestamps (ts_parser). Used by ws-bench, tested in
// event_reading_test.cpp.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agentws/events.hpp"

namespace agentws::bench {

// Reads ASCII digits (no sign); false if empty, longer than 18 digits (no
// overflow) or anything else is in `text`.
inline bool parse_digits(std::string_view text, std::int64_t& value) {
  if (text.empty() || text.size() > 18) return false;
  value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  return true;
}

// Parses RFC 3339 timestamps ("2026-11-25T17:36:10.123456+00:00", also "Z",
// other offsets, 0 to 9 fraction digits). The date-and-time prefix changes
// once a second, so its conversion to epoch seconds is cached.
class ts_parser {
 public:
  std::optional<std::int64_t> micros(std::string_view ts) {
    if (ts.size() < 20 || ts[4] != '-' || ts[7] != '-' || ts[10] != 'T' || ts[13] != ':' ||
        ts[16] != ':') {
      return std::nullopt;
    }
    if (!cached_ || std::memcmp(prefix_, ts.data(), 19) != 0) {
      if (!convert_prefix(ts.substr(0, 19))) return std::nullopt;
    }
    std::size_t at = 19;
    std::int64_t fraction_us = 0;
    if (ts[at] == '.') {
      ++at;
      int digits = 0;
      std::int64_t fraction = 0;
      while (at < ts.size() && ts[at] >= '0' && ts[at] <= '9') {
        if (digits < 6) {
          fraction = fraction * 10 + (ts[at] - '0');
          ++digits;
        }
        ++at;
      }
      if (digits == 0) return std::nullopt;
      for (; digits < 6; ++digits)
        fraction *= 10;
      fraction_us = fraction;
    }
    const std::string_view offset = ts.substr(at);
    std::int64_t offset_s = 0;
    if (offset == "Z" || offset == "+00:00") {
      offset_s = 0;
    } else if (offset.size() == 6 && (offset[0] == '+' || offset[0] == '-') && offset[3] == ':') {
      std::int64_t hours = 0;
      std::int64_t minutes = 0;
      if (!parse_digits(offset.substr(1, 2), hours) ||
          !parse_digits(offset.substr(4, 2), minutes)) {
        return std::nullopt;
      }
      offset_s = (hours * 3600 + minutes * 60) * (offset[0] == '+' ? 1 : -1);
    } else {
      return std::nullopt;
    }
    return (second_ - offset_s) * 1'000'000 + fraction_us;
  }

 private:
  bool convert_prefix(std::string_view prefix) {
    std::int64_t year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
    if (!parse_digits(prefix.substr(0, 4), year) || !parse_digits(prefix.substr(5, 2), month) ||
        !parse_digits(prefix.substr(8, 2), day) || !parse_digits(prefix.substr(11, 2), hour) ||
        !parse_digits(prefix.substr(14, 2), minute) ||
        !parse_digits(prefix.substr(17, 2), second)) {
      return false;
    }
    using namespace std::chrono;
    const year_month_day date{std::chrono::year(static_cast<int>(year)),
                              std::chrono::month(static_cast<unsigned>(month)),
                              std::chrono::day(static_cast<unsigned>(day))};
    if (!date.ok() || hour > 23 || minute > 59 || second > 60) return false;
    second_ =
        sys_days(date).time_since_epoch().count() * 86'400 + hour * 3600 + minute * 60 + second;
    std::memcpy(prefix_, prefix.data(), 19);
    cached_ = true;
    return true;
  }

  char prefix_[19] = {};
  bool cached_ = false;
  std::int64_t second_ = 0;
};

// The fields the benchmark checks in one event. The views point into the
// frame (fast path) or into the event_reader that parsed it (full parser);
// they stay valid until that reader's next call.
struct event_view {
  agentws::event_kind kind = agentws::event_kind::unknown;
  std::string_view ts;                // empty if absent
  std::string_view run_id;            // payload.run_id, empty if absent
  std::optional<std::uint64_t> step;  // payload.step, if a non-negative integer
  // payload.last_step (run_cancelled, an extension: the last step sent), if
  // a non-negative integer
  std::optional<std::uint64_t> last_step;
};

// payload.last_step of an event the full parser read, if a non-negative integer.
inline std::optional<std::uint64_t> last_step_of(const agentws::received_event& event) {
  const auto payload = nlohmann::json::parse(event.payload_json, nullptr, false);
  if (!payload.is_object()) return std::nullopt;
  const auto found = payload.find("last_step");
  if (found == payload.end() || !found->is_number_unsigned()) return std::nullopt;
  return found->get<std::uint64_t>();
}

// A strict reader for the flat envelope every peer writes,
//   {"event_type": "...", "ts": "...", "payload": {"key": scalar, ...}},
// in any key order and spacing. It accepts only a subset of JSON: strings of
// printable ASCII without escapes, non-negative integers, true/false/null, a
// payload without nested values, no repeated key among those it reports. For
// that subset its result is what agentws::parse_event gives; anything else
// (escapes, UTF-8, nesting, other numbers, trailing bytes) makes it decline,
// and the caller falls back to the full parser.
class envelope_parser {
 public:
  static bool parse(std::string_view text, event_view& out) {
    envelope_parser p(text);
    return p.envelope(out);
  }

 private:
  struct scalar {
    bool is_string = false;
    bool is_unsigned = false;
    std::string_view text;
    std::uint64_t number = 0;
  };

  explicit envelope_parser(std::string_view text)
      : at_(text.data()), end_(text.data() + text.size()) {}

  bool envelope(event_view& out) {
    bool have_type = false, have_ts = false, have_payload = false;
    if (!eat('{')) return false;
    do {
      std::string_view key;
      if (!string(key) || !eat(':')) return false;
      if (key == "payload") {
        if (have_payload || !payload(out)) return false;
        have_payload = true;
        continue;
      }
      scalar value;
      if (!read_scalar(value)) return false;
      if (key == "event_type") {
        if (have_type || !value.is_string) return false;
        have_type = true;
        out.kind = agentws::event_kind_from(value.text);
      } else if (key == "ts") {
        if (have_ts || !value.is_string) return false;
        have_ts = true;
        out.ts = value.text;
      }
    } while (eat(','));
    if (!eat('}')) return false;
    skip_space();
    return at_ == end_ && have_type;
  }

  bool payload(event_view& out) {
    bool have_run_id = false, have_step = false, have_last_step = false;
    if (!eat('{')) return false;
    if (eat('}')) return true;
    do {
      std::string_view key;
      scalar value;
      if (!string(key) || !eat(':') || !read_scalar(value)) return false;
      if (key == "run_id") {
        if (have_run_id) return false;
        have_run_id = true;
        if (value.is_string) out.run_id = value.text;
      } else if (key == "step") {
        if (have_step) return false;
        have_step = true;
        if (value.is_unsigned) out.step = value.number;
      } else if (key == "last_step") {
        if (have_last_step) return false;
        have_last_step = true;
        if (value.is_unsigned) out.last_step = value.number;
      }
    } while (eat(','));
    return eat('}');
  }

  void skip_space() {
    while (at_ != end_ && (*at_ == ' ' || *at_ == '\n' || *at_ == '\r' || *at_ == '\t'))
      ++at_;
  }

  bool eat(char c) {
    skip_space();
    if (at_ == end_ || *at_ != c) return false;
    ++at_;
    return true;
  }

  bool string(std::string_view& out) {
    skip_space();
    if (at_ == end_ || *at_ != '"') return false;
    const char* begin = ++at_;
    for (; at_ != end_; ++at_) {
      const auto c = static_cast<unsigned char>(*at_);
      if (c == '"') {
        out = std::string_view(begin, static_cast<std::size_t>(at_ - begin));
        ++at_;
        return true;
      }
      if (c == '\\' || c < 0x20 || c >= 0x7f) return false;
    }
    return false;
  }

  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - at_) < word.size() ||
        std::string_view(at_, word.size()) != word) {
      return false;
    }
    at_ += word.size();
    return true;
  }

  bool read_scalar(scalar& out) {
    skip_space();
    if (at_ == end_) return false;
    const char c = *at_;
    if (c == '"') {
      out.is_string = true;
      return string(out.text);
    }
    if (c >= '0' && c <= '9') {
      // No leading zeros, at most 19 digits (no overflow); a fraction or an
      // exponent is left to the full parser (the next token check fails).
      const char* begin = at_;
      std::uint64_t value = 0;
      for (; at_ != end_ && *at_ >= '0' && *at_ <= '9'; ++at_)
        value = value * 10 + static_cast<std::uint64_t>(*at_ - '0');
      const auto digits = at_ - begin;
      if (digits > 19 || (digits > 1 && *begin == '0')) return false;
      out.is_unsigned = true;
      out.number = value;
      return true;
    }
    return literal("true") || literal("false") || literal("null");
  }

  const char* at_;
  const char* end_;
};

// Reads events: the strict fast path first, the protocol library's full
// parser (agentws::parse_event) for anything it declines.
class event_reader {
 public:
  // False if the text is not an event envelope at all.
  bool read(std::string_view text, event_view& out) {
    out = event_view{};
    if (envelope_parser::parse(text, out)) {
      ++fast_;
      return true;
    }
    ++slow_;
    out = event_view{};
    full_ = agentws::parse_event(text);
    if (!full_) return false;
    out.kind = full_->kind;
    out.ts = full_->ts;
    out.run_id = full_->run_id;
    out.step = full_->step;
    out.last_step = last_step_of(*full_);
    return true;
  }

  std::uint64_t fast() const noexcept { return fast_; }
  std::uint64_t slow() const noexcept { return slow_; }

 private:
  std::optional<agentws::received_event> full_;
  std::uint64_t fast_ = 0;
  std::uint64_t slow_ = 0;
};

// --- Reading frames straight from the socket ---

// Reads server frames without Beast: one read system call and one coroutine
// resumption for all the frames the socket holds, instead of one composed
// operation per message. Flood and cancel switch to it after the handshake
// and the `connected` event (read through Beast): a server sends nothing
// unasked in between, so Beast holds no bytes of ours when it takes over
// (were any lost, the order checks would fail the round). Server frames are
// unmasked; fragmented text messages are joined, pings get pongs (pongs()),
// anything else a server may not send is a failure.
class frame_reader {
 public:
  enum class result { message, need_more, closed, failed };
  static constexpr std::size_t max_message_bytes = 16 * 1024 * 1024;
  static constexpr std::size_t read_bytes = 64 * 1024;

  // Takes over bytes that the buffered stream under Beast read ahead.
  void adopt(boost::beast::flat_buffer& read_ahead) {
    reserve(read_ahead.size());
    std::memcpy(buffer_.get() + end_, read_ahead.cdata().data(), read_ahead.size());
    end_ += read_ahead.size();
    read_ahead.consume(read_ahead.size());
  }

  // The next complete text message in the buffer; `message` stays valid
  // until the next call of next() or fill().
  result next(std::string_view& message) {
    for (;;) {
      const std::size_t available = end_ - begin_;
      const auto* p = reinterpret_cast<const unsigned char*>(buffer_.get() + begin_);
      if (available < 2) return need(2);
      const bool fin = (p[0] & 0x80) != 0;
      const unsigned opcode = p[0] & 0x0f;
      if ((p[0] & 0x70) != 0) return fail("frame with reserved bits set");
      if ((p[1] & 0x80) != 0) return fail("masked frame from the server");
      std::uint64_t length = p[1] & 0x7f;
      std::size_t header = 2;
      if (length == 126) {
        header = 4;
        if (available < header) return need(header);
        length = (std::uint64_t{p[2]} << 8) | p[3];
      } else if (length == 127) {
        header = 10;
        if (available < header) return need(header);
        length = 0;
        for (std::size_t i = 2; i < 10; ++i)
          length = (length << 8) | p[i];
      }
      if (length > max_message_bytes) return fail("frame of " + std::to_string(length) + " bytes");
      if (available < header + length) return need(header + static_cast<std::size_t>(length));
      const std::string_view payload(buffer_.get() + begin_ + header,
                                     static_cast<std::size_t>(length));
      begin_ += header + static_cast<std::size_t>(length);
      want_ = 0;
      if (opcode >= 0x8) {
        if (!fin || length > 125) return fail("fragmented or oversized control frame");
        if (opcode == 0x9) {
          queue_pong(payload);
        } else if (opcode == 0x8) {
          close_code_ =
              payload.size() >= 2
                  ? static_cast<std::uint16_t>((static_cast<unsigned char>(payload[0]) << 8) |
                                               static_cast<unsigned char>(payload[1]))
                  : 1005;
          return result::closed;
        } else if (opcode != 0xa) {
          return fail("unknown control opcode " + std::to_string(opcode));
        }
        continue;
      }
      if (opcode == 0x1) {
        if (fragmented_) return fail("text frame inside a fragmented message");
        if (fin) {
          message = payload;
          return result::message;
        }
        fragments_.assign(payload);
        fragmented_ = true;
      } else if (opcode == 0x0) {
        if (!fragmented_) return fail("continuation frame without a message");
        if (fragments_.size() + payload.size() > max_message_bytes) {
          return fail("fragmented message over " + std::to_string(max_message_bytes) + " bytes");
        }
        fragments_.append(payload);
        if (fin) {
          fragmented_ = false;
          message = fragments_;
          return result::message;
        }
      } else {
        return fail(opcode == 0x2 ? "binary frame" : "unknown opcode " + std::to_string(opcode));
      }
    }
  }

  // Reads what the socket holds (after the incomplete frame, if any), at most
  // `at_most` bytes; `bytes_read`, if given, gets the count.
  boost::asio::awaitable<boost::system::error_code> fill(boost::asio::ip::tcp::socket& socket,
                                                         std::size_t at_most = SIZE_MAX,
                                                         std::size_t* bytes_read = nullptr) {
    if (begin_ > 0) {  // at most one incomplete frame left: move it to the front
      std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    // The whole frame fits, and the bounded read; at least 64 KiB.
    reserve(std::max(want_ > end_ ? want_ - end_ : 1, at_most == SIZE_MAX ? 1 : at_most));
    const std::size_t room = std::min(capacity_ - end_, at_most);
    auto [ec, size] =
        co_await socket.async_read_some(boost::asio::buffer(buffer_.get() + end_, room),
                                        boost::asio::as_tuple(boost::asio::use_awaitable));
    end_ += size;
    if (bytes_read) *bytes_read = size;
    co_return ec;
  }

  // Pong frames owed to the server (masked, as a client sends them); the
  // owner writes and clears them.
  std::string& pongs() noexcept { return pongs_; }
  std::size_t buffered() const noexcept { return end_ - begin_; }
  std::uint16_t close_code() const noexcept { return close_code_; }
  const std::string& why() const noexcept { return why_; }

 private:
  result need(std::size_t bytes) {
    want_ = bytes;
    return result::need_more;
  }
  result fail(std::string why) {
    why_ = std::move(why);
    return result::failed;
  }
  // Makes room for `more` bytes after end_ (moving or growing the buffer).
  void reserve(std::size_t more) {
    if (buffer_ && capacity_ - end_ >= more) return;
    const std::size_t used = end_ - begin_;
    if (buffer_ && capacity_ - used >= more) {
      std::memmove(buffer_.get(), buffer_.get() + begin_, used);
    } else {
      const std::size_t capacity = std::max({read_bytes, used + more, 2 * capacity_});
      std::unique_ptr<char[]> bigger(new char[capacity]);
      if (buffer_) std::memcpy(bigger.get(), buffer_.get() + begin_, used);
      buffer_ = std::move(bigger);
      capacity_ = capacity;
    }
    begin_ = 0;
    end_ = used;
  }
  void queue_pong(std::string_view payload) {
    mask_ = mask_ * 6364136223846793005u + 1442695040888963407u;  // any key will do
    const auto key = static_cast<std::uint32_t>(mask_ >> 32);
    pongs_.push_back(static_cast<char>(0x8a));
    pongs_.push_back(static_cast<char>(0x80 | payload.size()));
    for (int i = 3; i >= 0; --i)
      pongs_.push_back(static_cast<char>((key >> (8 * i)) & 0xff));
    for (std::size_t i = 0; i < payload.size(); ++i)
      pongs_.push_back(static_cast<char>(payload[i] ^ static_cast<char>(key >> (8 * (3 - i % 4)))));
  }

  std::unique_ptr<char[]> buffer_;
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t want_ = 0;  // bytes the frame at begin_ needs in all
  std::string fragments_;
  bool fragmented_ = false;
  std::string pongs_;
  std::uint64_t mask_ = 0x9e3779b97f4a7c15u;
  std::uint16_t close_code_ = 0;
  std::string why_;
};

}  // namespace agentws::bench
