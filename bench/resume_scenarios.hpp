// ws-bench's scenarios for runs that outlive their connection (protocol
// version 2, "resume"):
//
// - resume: a run streams paced events, the client reads some, drops the TCP
//   connection (RST), waits, reconnects with `?session=KEY` and attaches
//   after the last seq it read; measured from the reconnect's first step to
//   the first replayed event. Every seq is checked up to the run's terminal
//   event: the first replayed one is the last read plus one, none twice,
//   none missing. A sample that fails is counted, and the next one starts
//   on a fresh connection.
// - replay: runs that ended with a full history, then attaches `after_seq: 0`
//   back to back on several connections: replay throughput, and server CPU
//   per replayed event.
// - detached: connections start runs with `on_disconnect: "continue"` and
//   close; the server's RSS per run it keeps, then again once the runs are
//   forgotten (after the server's retention_ms).
//
// ws_bench.cpp parses the options and prints the rounds; the server's /proc
// readings come from there too (server_probe).
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentws::bench {

struct resume_options {
  std::string scenario;  // "resume", "replay" or "detached"
  double timeout_s = 60;
  unsigned samples = 100;     // resume: reconnects; replay: attaches per connection
  unsigned connections = 4;   // replay: connections attaching at once; detached: connections
  unsigned runs = 100;        // detached: runs per connection
  unsigned steps = 10'000;    // steps of every run started
  unsigned interval_ms = 2;   // resume: the runs' pace; detached: 0 ends them at once
  unsigned read_events = 10;  // resume: run_events read before the drop
  unsigned away_ms = 10;      // resume: from the drop to the reconnect
  std::string on_disconnect = "cancel";  // resume: "cancel" (with grace_ms) or "continue"
  unsigned grace_ms = 60'000;            // resume: detach_grace_ms with "cancel"
  bool cancel_after_resume = false;      // resume: cancel_run after the first live event
  unsigned settle_ms = 500;              // detached: after the close, before the RSS
  unsigned forget_wait_ms = 6000;        // detached: after retention_ms, before the RSS again
};

// Where to connect: a loopback endpoint, the Host header, the request target.
struct resume_target {
  boost::asio::ip::tcp::endpoint endpoint;
  std::string host_header;
  std::string path;
};

// Readings of the server process and of ws-bench itself, in seconds and KiB;
// nullopt when unknown (no --server-pid).
struct server_probe {
  std::function<std::optional<double>()> server_cpu_seconds;
  std::function<std::optional<double>()> server_rss_kib;
  std::function<double()> own_cpu_seconds;
};

// Everything that makes a round fail, with the first few descriptions
// (every scenario of ws-bench reports through it).
struct failure_log {
  std::uint64_t violations = 0;  // protocol: order, steps, terminals, bad events
  std::uint64_t errors = 0;      // I/O: connect, handshake, read, close, timeouts
  std::vector<std::string> samples;

  void violation(std::string what) { note(violations, std::move(what)); }
  void error(std::string what) { note(errors, std::move(what)); }
  void merge(const failure_log& other) {
    violations += other.violations;
    errors += other.errors;
    for (const auto& sample : other.samples) {
      if (samples.size() < max_samples) samples.push_back(sample);
    }
  }
  bool failed() const noexcept { return violations > 0 || errors > 0; }

 private:
  static constexpr std::size_t max_samples = 8;
  void note(std::uint64_t& counter, std::string what) {
    ++counter;
    if (samples.size() < max_samples) samples.push_back(std::move(what));
  }
};

inline double ms_between(std::chrono::steady_clock::time_point from,
                         std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// The q-quantile (0..1) of `values` by nearest rank; 0 for an empty set.
inline double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  const auto rank = static_cast<std::size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(rank),
                   values.end());
  return values[rank];
}

// A bounded excerpt of a peer's frame for messages (control characters shown as '?').
inline std::string excerpt(std::string_view text) {
  std::string out(text.substr(0, 160));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  if (text.size() > 160) out += "...";
  return out;
}

// Starts a coroutine whose escaping exceptions (there should be none: I/O
// errors are values) are recorded instead of lost.
template <class Awaitable>
void spawn(boost::asio::io_context& io, Awaitable&& work, failure_log& failures) {
  boost::asio::co_spawn(io, std::forward<Awaitable>(work), [&failures](std::exception_ptr failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      failures.error(std::string("coroutine failed: ") + e.what());
    }
  });
}

// Connects and opens the WebSocket as every ws-bench client does (no
// Nagle, ws-bench's User-Agent, text frames, no fragmentation); false after
// noting why in `failures`. The caller closes the socket on false.
template <class WebSocket>
boost::asio::awaitable<bool> connect_websocket(WebSocket& ws,
                                               const boost::asio::ip::tcp::endpoint& endpoint,
                                               const std::string& host_header,
                                               const std::string& path, failure_log& failures) {
  namespace websocket = boost::beast::websocket;
  constexpr auto nothrow = boost::asio::as_tuple(boost::asio::use_awaitable);
  auto [connect_error] =
      co_await boost::beast::get_lowest_layer(ws).async_connect(endpoint, nothrow);
  if (connect_error) {
    failures.error("connect: " + connect_error.message());
    co_return false;
  }
  boost::system::error_code ignored;
  boost::beast::get_lowest_layer(ws).set_option(boost::asio::ip::tcp::no_delay(true), ignored);
  ws.set_option(websocket::stream_base::decorator([](websocket::request_type& request) {
    request.set(boost::beast::http::field::user_agent, "ws-bench");
  }));
  ws.auto_fragment(false);
  ws.text(true);
  auto [handshake_error] = co_await ws.async_handshake(host_header, path, nothrow);
  if (handshake_error) {
    failures.error("handshake: " + handshake_error.message());
    co_return false;
  }
  co_return true;
}

// One round's figures, in the order they are printed.
struct scenario_round {
  std::vector<std::pair<std::string, double>> metrics;
  failure_log failures;
  bool timed_out = false;

  void set(std::string name, double value) { metrics.emplace_back(std::move(name), value); }
};

class resume_scenario {
 public:
  virtual ~resume_scenario() = default;
  virtual scenario_round round() = 0;
  // Closes what stays open across rounds (replay's connections).
  virtual failure_log finish() { return {}; }
};

bool is_resume_scenario(std::string_view name);
std::unique_ptr<resume_scenario> make_resume_scenario(const resume_options& o,
                                                      const resume_target& to, server_probe probe);
// One line on what a round does, and its parameters for the JSON output.
std::string describe_resume_scenario(const resume_options& o);
void add_resume_params(const resume_options& o, nlohmann::ordered_json& params);

// --- Reading seqs (pure; tested in resume_reading_test.cpp) ---

// payload.seq of an event envelope, read without building a document: the
// key "seq", spelled without escapes, in the object that is the value of the
// top-level key "payload", with a non-negative integer value. nullopt when
// it is not there, is anything else, appears twice, or the text is cut off
// or nested deeper than 64 levels; the caller then asks the full parser
// (which also reads an escaped key). It does not validate the JSON: read the
// envelope with the event reader first.
inline std::optional<std::uint64_t> payload_seq(std::string_view text) {
  const char* at = text.data();
  const char* const end = at + text.size();
  auto skip_space = [&] {
    while (at != end && (*at == ' ' || *at == '\n' || *at == '\r' || *at == '\t'))
      ++at;
  };
  char open[64];
  std::size_t depth = 0;
  bool expect_key = false;
  bool in_payload = false;  // the object at depth 2 is the payload
  std::string_view key;     // the last key read
  std::optional<std::uint64_t> found;
  while (at != end) {
    const char c = *at;
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == ':') {
      ++at;
    } else if (c == '"') {
      const char* begin = ++at;
      while (at != end && *at != '"') {
        if (*at == '\\' && ++at == end) return std::nullopt;
        ++at;
      }
      if (at == end) return std::nullopt;
      const std::string_view string(begin, static_cast<std::size_t>(at - begin));
      ++at;
      if (!expect_key) continue;
      expect_key = false;
      key = string;
      if (depth != 2 || !in_payload || key != "seq") continue;
      skip_space();
      if (at == end || *at != ':') return std::nullopt;
      ++at;
      skip_space();
      const char* digits = at;
      std::uint64_t value = 0;
      for (; at != end && *at >= '0' && *at <= '9'; ++at)
        value = value * 10 + static_cast<std::uint64_t>(*at - '0');
      const auto count = at - digits;
      if (count == 0 || count > 19 || (count > 1 && *digits == '0') || found) return std::nullopt;
      if (at != end && *at != ',' && *at != '}' && *at != ' ' && *at != '\n' && *at != '\r' &&
          *at != '\t') {
        return std::nullopt;  // a fraction, an exponent: not an unsigned integer
      }
      found = value;
    } else if (c == '{' || c == '[') {
      if (depth == sizeof open) return std::nullopt;
      if (depth == 1) in_payload = c == '{' && open[0] == '{' && key == "payload";
      open[depth++] = c;
      expect_key = c == '{';
      ++at;
    } else if (c == '}' || c == ']') {
      if (depth == 0 || open[depth - 1] != (c == '}' ? '{' : '[')) return std::nullopt;
      --depth;
      if (depth < 2) in_payload = false;
      expect_key = false;
      ++at;
    } else if (c == ',') {
      expect_key = depth > 0 && open[depth - 1] == '{';
      ++at;
    } else {
      ++at;  // a number or a literal
    }
  }
  if (depth != 0) return std::nullopt;
  return found;
}

// One run's seqs as a client reads them, across connections: each the one
// after the last, from run_started's 0 on (or after the seq attached after).
class seq_check {
 public:
  enum class verdict { next, repeated, skipped };

  // `last`: the seq already seen (-1: none, run_started comes next).
  explicit seq_check(std::int64_t last = -1) : last_(last) {}

  verdict see(std::uint64_t seq) {
    const auto value = static_cast<std::int64_t>(seq);
    if (value <= last_) return verdict::repeated;
    const bool next = value == last_ + 1;
    last_ = value;  // resynchronise: one fault, one report
    return next ? verdict::next : verdict::skipped;
  }

  std::int64_t last() const noexcept { return last_; }

 private:
  std::int64_t last_;
};

}  // namespace agentws::bench
