// ws-bench: a load generator for the agentws protocol (ours or any peer that
// speaks it). Scenarios: flood (throughput, latency, server CPU per event),
// cancel (time from cancel_run to run_cancelled), idle (server memory per open
// connection) and connect (handshakes per second).
//
// The client must never be the bottleneck. It uses Beast for the handshake
// and the close only; flood and cancel read frames straight from the socket
// (many per system call) and read each event with a strict parser of the
// envelope that falls back to the full JSON parser (event_reading.hpp). It
// still checks every run's order: run_started, run_events with steps 0..S-1
// in order, exactly one terminal.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffered_read_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "agentws/client.hpp"
#include "agentws/events.hpp"
#include "event_reading.hpp"

// Beast's websocket stream reads at most 1536 bytes per read_some, one system
// call per dozen small events. A read buffer under it takes whatever the
// socket holds in one call. Beast finds a layer's teardown by ADL, so these
// two overloads make the buffered socket usable under a websocket stream.
namespace boost::beast {
using bench_socket = buffered_read_stream<asio::ip::tcp::socket, flat_buffer>;

inline void teardown(role_type role, bench_socket& stream, system::error_code& ec) {
  websocket::teardown(role, stream.next_layer(), ec);
}

template <class TeardownHandler>
void async_teardown(role_type role, bench_socket& stream, TeardownHandler&& handler) {
  websocket::async_teardown(role, stream.next_layer(), std::forward<TeardownHandler>(handler));
}
}  // namespace boost::beast

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace po = boost::program_options;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using steady = std::chrono::steady_clock;
using ordered_json = nlohmann::ordered_json;

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

using agentws::bench::event_reader;
using agentws::bench::event_view;
using agentws::bench::frame_reader;
using agentws::bench::parse_digits;
using agentws::bench::ts_parser;

// --- Options ---

struct options {
  std::string scenario;
  std::string url = "ws://127.0.0.1:8000/ws";
  std::string label = "server";
  int server_pid = 0;
  unsigned rounds = 5;
  unsigned warmup = 1;
  double timeout_s = 60;
  unsigned threads = 1;
  // flood
  unsigned connections = 4;
  unsigned runs = 4;
  unsigned steps = 10'000;
  unsigned runs_in_flight = 2;
  // cancel
  unsigned samples = 200;
  // idle
  unsigned idle_connections = 1000;
  // connect
  unsigned handshakes = 500;
  unsigned parallel = 4;
  std::string json_out;
};

struct target {
  tcp::endpoint endpoint;
  std::string host_header;  // "127.0.0.1:8000"
  std::string path;         // "/ws"
};

// --- Reading events ---

// Microseconds since the epoch on the wall clock (what event `ts` fields use).
std::int64_t wall_now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::string_view kind_name(agentws::event_kind kind) {
  switch (kind) {
    case agentws::event_kind::connected:
      return "connected";
    case agentws::event_kind::run_started:
      return "run_started";
    case agentws::event_kind::run_event:
      return "run_event";
    case agentws::event_kind::run_done:
      return "run_done";
    case agentws::event_kind::run_cancelled:
      return "run_cancelled";
    case agentws::event_kind::error:
      return "error";
    case agentws::event_kind::unknown:
      break;
  }
  return "unknown";
}

// A bounded excerpt of a peer's frame for messages (control characters shown as '?').
std::string excerpt(std::string_view text) {
  std::string out(text.substr(0, 160));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  if (text.size() > 160) out += "...";
  return out;
}

// --- Measuring the server from /proc ---

// CPU time of every thread of `pid` in seconds from the scheduler's
// nanosecond counters (/proc/PID/task/TID/schedstat); nullopt if unreadable.
// Threads that exited in between are missed: servers keep theirs.
std::optional<double> process_schedstat_seconds(int pid) {
  std::error_code ec;
  std::filesystem::directory_iterator tasks("/proc/" + std::to_string(pid) + "/task", ec);
  if (ec) return std::nullopt;
  unsigned long long total_ns = 0;
  bool any = false;
  for (const auto& task : tasks) {
    std::ifstream file(task.path() / "schedstat");
    unsigned long long on_cpu_ns = 0;
    if (!(file >> on_cpu_ns)) continue;
    total_ns += on_cpu_ns;
    any = true;
  }
  if (!any) return std::nullopt;
  return static_cast<double>(total_ns) / 1e9;
}

// CPU time of `pid` in seconds: schedstat if the kernel has it, else utime +
// stime from /proc/PID/stat (10 ms ticks); nullopt if unreadable.
std::optional<double> process_cpu_seconds(int pid) {
  if (pid <= 0) return std::nullopt;
  if (const auto precise = process_schedstat_seconds(pid)) return precise;
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(file, stat)) return std::nullopt;
  // The command name may hold spaces and parentheses: fields follow the last ')'.
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int index = 3; fields >> field; ++index) {  // the first field after ')' is field 3
    if (index == 14) utime = std::stoull(field);
    if (index == 15) {
      stime = std::stoull(field);
      return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  }
  return std::nullopt;
}

// VmRSS of `pid` in KiB; nullopt if unreadable.
std::optional<double> process_rss_kib(int pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream file("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(file, line)) {
    if (line.starts_with("VmRSS:")) return std::stod(line.substr(6));
  }
  return std::nullopt;
}

// CPU time of this process (all threads), in seconds.
double own_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// --- Statistics ---

// The q-quantile (0..1) of `values` by nearest rank; 0 for an empty set.
double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  const auto rank = static_cast<std::size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(rank),
                   values.end());
  return values[rank];
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

// Everything that makes a round fail, with the first few descriptions.
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

// One round's figures, in the order they are printed.
struct round_result {
  std::vector<std::pair<std::string, double>> metrics;
  failure_log failures;
  bool timed_out = false;

  void set(std::string name, double value) { metrics.emplace_back(std::move(name), value); }
};

// --- Connections and the I/O threads ---

// Beast reads only the handshake, `connected`, and the close: a small
// read-ahead is enough (flood and cancel read through frame_reader).
constexpr std::size_t beast_read_ahead_bytes = 4 * 1024;

struct bench_connection {
  explicit bench_connection(asio::io_context& io) : ws(io) {
    // Reads are sized by the buffer's capacity (at least 512 bytes), not by
    // capacity(): without the reserve every read would take 512 bytes.
    ws.next_layer().capacity(beast_read_ahead_bytes);
    ws.next_layer().buffer().reserve(beast_read_ahead_bytes);
    ws.secure_prng(false);  // mask keys need no cryptographic generator here
  }

  tcp::socket& socket() { return ws.next_layer().next_layer(); }

  websocket::stream<beast::bench_socket> ws;
  beast::flat_buffer buffer;
  frame_reader reader;
  event_reader events_read;
  ts_parser timestamps;
  failure_log failures;
  bool open = false;
  // flood
  bool done = false;
  std::uint64_t events = 0;
  std::uint64_t bytes = 0;
  std::vector<double> latency_us;
  steady::time_point done_at;

  std::string_view text(std::size_t size) const {
    return std::string_view(static_cast<const char*>(buffer.cdata().data()), size);
  }
  // Closes the socket at once (only while no I/O thread runs).
  void abort() {
    error_code ignored;
    socket().close(ignored);
  }
};

// One io_context per client thread; connections are spread over them.
class io_pool {
 public:
  explicit io_pool(unsigned threads) {
    for (unsigned i = 0; i < std::max(1u, threads); ++i) {
      contexts_.push_back(std::make_unique<asio::io_context>(1));
    }
  }
  asio::io_context& at(std::size_t index) { return *contexts_[index % contexts_.size()]; }

  // Runs every context on its own thread until it runs out of work or the
  // deadline passes. True if all work finished in time.
  bool run_until(steady::time_point deadline) {
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < contexts_.size(); ++i) {
      threads.emplace_back([this, i, deadline] { contexts_[i]->run_until(deadline); });
    }
    contexts_[0]->run_until(deadline);
    for (auto& thread : threads)
      thread.join();
    bool finished = true;
    for (auto& context : contexts_) {
      finished = finished && context->stopped();
      context->restart();
    }
    return finished;
  }

 private:
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
};

// Starts a coroutine whose escaping exceptions (there should be none: I/O
// errors are values) are recorded instead of lost.
template <class Awaitable>
void spawn(asio::io_context& io, Awaitable&& work, failure_log& failures) {
  asio::co_spawn(io, std::forward<Awaitable>(work), [&failures](std::exception_ptr failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      failures.error(std::string("coroutine failed: ") + e.what());
    }
  });
}

// Runs the pool; on timeout, aborts `connections` and drains what is left.
bool run_phase(io_pool& pool, steady::time_point deadline,
               std::vector<std::unique_ptr<bench_connection>>& connections, failure_log& failures,
               std::string_view phase) {
  if (pool.run_until(deadline)) return true;
  failures.error("timeout in " + std::string(phase));
  for (auto& connection : connections) {
    if (connection) connection->abort();
  }
  if (!pool.run_until(steady::now() + std::chrono::seconds(5))) {
    std::cerr << "ws-bench: connections did not stop after a timeout; giving up\n";
    std::_Exit(3);
  }
  return false;
}

// Connects, upgrades and reads the `connected` event.
asio::awaitable<bool> open_connection(bench_connection& c, const target& to) {
  auto [connect_error] = co_await c.socket().async_connect(to.endpoint, nothrow);
  if (connect_error) {
    c.failures.error("connect: " + connect_error.message());
    co_return false;
  }
  error_code ignored;
  c.socket().set_option(tcp::no_delay(true), ignored);
  c.ws.set_option(websocket::stream_base::decorator([](websocket::request_type& request) {
    request.set(beast::http::field::user_agent, "ws-bench");
  }));
  c.ws.auto_fragment(false);
  c.ws.text(true);
  auto [handshake_error] = co_await c.ws.async_handshake(to.host_header, to.path, nothrow);
  if (handshake_error) {
    c.failures.error("handshake: " + handshake_error.message());
    c.abort();
    co_return false;
  }
  auto [read_error, size] = co_await c.ws.async_read(c.buffer, nothrow);
  if (read_error) {
    c.failures.error("reading connected: " + read_error.message());
    c.abort();
    co_return false;
  }
  event_view event;
  const std::string_view text = c.text(size);
  if (!c.events_read.read(text, event) || event.kind != agentws::event_kind::connected) {
    c.failures.violation("first frame is not connected: " + excerpt(text));
  }
  c.buffer.consume(size);
  c.open = true;
  co_return true;
}

asio::awaitable<bool> send_text(bench_connection& c, std::string text) {
  auto [ec, written] = co_await c.ws.async_write(asio::buffer(text), nothrow);
  if (ec) {
    c.failures.error("write: " + ec.message());
    co_return false;
  }
  co_return true;
}

asio::awaitable<bool> send_pongs(bench_connection& c) {
  std::string& pongs = c.reader.pongs();
  if (pongs.empty()) co_return true;
  auto [ec, written] = co_await asio::async_write(c.socket(), asio::buffer(pongs), nothrow);
  pongs.clear();
  if (ec) {
    c.failures.error("write: " + ec.message());
    co_return false;
  }
  co_return true;
}

// The next text message through c.reader, reading as needed; nullopt (with
// the reason recorded) if the connection failed or closed.
asio::awaitable<std::optional<std::string_view>> next_message(bench_connection& c) {
  for (;;) {
    std::string_view text;
    switch (c.reader.next(text)) {
      case frame_reader::result::message:
        co_return text;
      case frame_reader::result::need_more:
        break;
      case frame_reader::result::closed:
        c.failures.error("the server closed the connection (" +
                         std::to_string(c.reader.close_code()) + ")");
        c.open = false;
        co_return std::nullopt;
      case frame_reader::result::failed:
        c.failures.violation(c.reader.why());
        c.abort();
        c.open = false;
        co_return std::nullopt;
    }
    if (!co_await send_pongs(c)) co_return std::nullopt;
    const error_code ec = co_await c.reader.fill(c.socket());
    if (ec) {
      c.failures.error("read: " + ec.message());
      c.open = false;
      co_return std::nullopt;
    }
  }
}

// After the last expected event nothing else may have arrived; the close
// handshake goes through Beast again, which cannot see bytes read here.
void check_reader_drained(bench_connection& c) {
  if (c.reader.buffered() == 0) return;
  c.failures.violation(std::to_string(c.reader.buffered()) +
                       " bytes arrived after the last expected event");
  c.abort();
  c.open = false;
}

// open_connection as a spawnable task. (Coroutine lambdas with captures are
// avoided here: the closure dies before the coroutine runs.)
asio::awaitable<void> open_only(bench_connection& c, const target& to) {
  co_await open_connection(c, to);
}

// A clean close: our close frame, the peer's close frame, then TCP teardown.
asio::awaitable<void> close_connection(bench_connection& c) {
  if (!c.open) co_return;
  c.open = false;
  auto [ec] = co_await c.ws.async_close(websocket::close_code::normal, nothrow);
  if (ec && ec != asio::error::operation_aborted) c.failures.error("close: " + ec.message());
}

// --- flood ---

struct run_track {
  std::int64_t next_step = 0;
  bool started = false;
  bool ended = false;
};

constexpr std::string_view flood_run_prefix = "run-";

// The run index in "run-<index>", or -1.
std::int64_t flood_run_index(std::string_view run_id, std::size_t runs) {
  if (!run_id.starts_with(flood_run_prefix)) return -1;
  std::int64_t index = 0;
  if (!parse_digits(run_id.substr(flood_run_prefix.size()), index)) return -1;
  return index < static_cast<std::int64_t>(runs) ? index : -1;
}

// Checks one flood event against its run's track. True if it ended a run
// (its terminal event, or an error for it: the run will not come).
bool check_flood_event(bench_connection& c, std::string_view text, std::int64_t received_us,
                       std::vector<run_track>& track, std::int64_t steps) {
  event_view event;
  if (!c.events_read.read(text, event)) {
    c.failures.violation("unreadable event: " + excerpt(text));
    return false;
  }
  const auto ts_us = event.ts.empty() ? std::nullopt : c.timestamps.micros(event.ts);
  if (!ts_us) c.failures.violation("missing or bad ts: " + excerpt(text));
  const std::int64_t index = flood_run_index(event.run_id, track.size());
  run_track* run = index >= 0 ? &track[static_cast<std::size_t>(index)] : nullptr;
  const bool run_event_kind = event.kind == agentws::event_kind::run_started ||
                              event.kind == agentws::event_kind::run_event ||
                              event.kind == agentws::event_kind::run_done ||
                              event.kind == agentws::event_kind::run_cancelled;
  if (run_event_kind && !run) {
    c.failures.violation(std::string(kind_name(event.kind)) +
                         " for an unknown run: " + excerpt(text));
  } else if (run_event_kind && run->ended) {
    c.failures.violation(std::string(kind_name(event.kind)) +
                         " after the run's terminal: " + excerpt(text));
  } else if (run_event_kind && !run->started && event.kind != agentws::event_kind::run_started) {
    c.failures.violation(std::string(kind_name(event.kind)) +
                         " before run_started: " + excerpt(text));
  }
  switch (event.kind) {
    case agentws::event_kind::run_started:
      if (run && run->started) c.failures.violation("second run_started: " + excerpt(text));
      if (run) run->started = true;
      return false;
    case agentws::event_kind::run_event: {
      const std::int64_t step = event.step ? static_cast<std::int64_t>(*event.step) : -1;
      if (run && run->started && !run->ended) {
        if (step != run->next_step) {
          c.failures.violation("step " + std::to_string(step) + ", expected " +
                               std::to_string(run->next_step) + ": " + excerpt(text));
        }
        run->next_step = step + 1;  // resynchronise: one fault, one violation
      }
      if (ts_us) c.latency_us.push_back(static_cast<double>(received_us - *ts_us));
      return false;
    }
    case agentws::event_kind::run_done:
    case agentws::event_kind::run_cancelled:
      if (event.kind == agentws::event_kind::run_cancelled) {
        c.failures.violation("unexpected run_cancelled: " + excerpt(text));
      }
      if (!run || run->ended) return false;
      if (event.kind == agentws::event_kind::run_done && run->next_step != steps) {
        c.failures.violation("run_done after " + std::to_string(run->next_step) + " of " +
                             std::to_string(steps) + " steps: " + excerpt(text));
      }
      run->ended = true;
      return true;
    case agentws::event_kind::error:
      c.failures.violation("error event: " + excerpt(text));
      if (!run || run->ended) return false;
      run->ended = true;
      return true;
    case agentws::event_kind::connected:
    case agentws::event_kind::unknown:
      c.failures.violation("unexpected event: " + excerpt(text));
      return false;
  }
  return false;
}

asio::awaitable<void> flood_connection(bench_connection& c, const options& o) {
  const std::size_t runs = o.runs;
  std::vector<run_track> track(runs);
  std::size_t started = 0;
  std::size_t finished = 0;
  agentws::run_params_override params;
  params.steps = o.steps;
  params.interval_ms = 0;
  auto start_command = [&](std::size_t index) {
    return agentws::make_start_run(std::string(flood_run_prefix) + std::to_string(index), params);
  };

  const std::size_t initial = std::min<std::size_t>(runs, std::max(1u, o.runs_in_flight));
  for (; started < initial; ++started) {
    if (!co_await send_text(c, start_command(started))) co_return;
  }
  c.latency_us.reserve(std::min<std::size_t>(runs * o.steps, std::size_t{1} << 20));
  c.reader.adopt(c.ws.next_layer().buffer());
  // Events are stamped when their bytes reach us, once per read.
  std::int64_t received_us = wall_now_us();
  while (finished < runs) {
    std::string_view text;
    switch (c.reader.next(text)) {
      case frame_reader::result::message:
        ++c.events;
        c.bytes += text.size();
        if (check_flood_event(c, text, received_us, track, static_cast<std::int64_t>(o.steps))) {
          ++finished;
          if (started < runs) {
            if (!co_await send_text(c, start_command(started))) co_return;
            ++started;
          }
        }
        continue;
      case frame_reader::result::need_more:
        break;
      case frame_reader::result::closed:
        c.failures.error("the server closed the connection (" +
                         std::to_string(c.reader.close_code()) + ") after " +
                         std::to_string(finished) + " of " + std::to_string(runs) + " runs");
        c.open = false;
        co_return;
      case frame_reader::result::failed:
        c.failures.violation(c.reader.why());
        c.abort();
        c.open = false;
        co_return;
    }
    if (!co_await send_pongs(c)) co_return;
    const error_code ec = co_await c.reader.fill(c.socket());
    if (ec) {
      c.failures.error("read: " + ec.message() + " after " + std::to_string(finished) + " of " +
                       std::to_string(runs) + " runs");
      c.open = false;
      co_return;
    }
    received_us = wall_now_us();
  }
  check_reader_drained(c);
  c.done = true;
  c.done_at = steady::now();
}

// The connections stay open from round to round (the warmup round opens
// them): each round measures the runs alone, at steady state, without the
// one-time costs of new connections (handshakes, buffers growing to size).
class flood_scenario {
 public:
  flood_scenario(const options& o, const target& to) : o_(o), to_(to), pool_(o.threads) {}

  round_result round() {
    round_result result;
    const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                              std::chrono::duration<double>(o_.timeout_s));
    bool in_time = true;
    if (connections_.empty()) {
      // Connect everything first, so that the measurement covers only the runs.
      for (unsigned i = 0; i < o_.connections; ++i) {
        connections_.push_back(std::make_unique<bench_connection>(pool_.at(i)));
        auto& c = *connections_.back();
        spawn(pool_.at(i), open_only(c, to_), c.failures);
      }
      in_time = run_phase(pool_, deadline, connections_, result.failures, "connect");
    }
    for (auto& c : connections_) {
      c->done = false;
      c->events = 0;
      c->bytes = 0;
      c->latency_us.clear();
      c->events_read = event_reader{};
    }

    const auto server_cpu_before = process_cpu_seconds(o_.server_pid);
    const double client_cpu_before = own_cpu_seconds();
    const auto start = steady::now();
    if (in_time) {
      for (unsigned i = 0; i < o_.connections; ++i) {
        auto& c = *connections_[i];
        if (!c.open) continue;
        spawn(pool_.at(i), flood_connection(c, o_), c.failures);
      }
      in_time = run_phase(pool_, deadline, connections_, result.failures, "flood");
    }
    const auto server_cpu_after = process_cpu_seconds(o_.server_pid);
    const double client_cpu = own_cpu_seconds() - client_cpu_before;

    std::uint64_t events = 0, bytes = 0, fast_parses = 0, full_parses = 0;
    std::vector<double> latency;
    auto end = start;
    for (auto& c : connections_) {
      events += c->events;
      bytes += c->bytes;
      fast_parses += c->events_read.fast();
      full_parses += c->events_read.slow();
      latency.insert(latency.end(), c->latency_us.begin(), c->latency_us.end());
      if (!c->done) {
        c->failures.violation("connection did not finish its runs");
      } else {
        end = std::max(end, c->done_at);
      }
      result.failures.merge(c->failures);
      c->failures = failure_log{};
    }
    result.timed_out = !in_time;
    const double seconds = std::max(1e-9, std::chrono::duration<double>(end - start).count());
    result.set("events", static_cast<double>(events));
    result.set("seconds", seconds);
    result.set("events_per_s", static_cast<double>(events) / seconds);
    result.set("mib_per_s", static_cast<double>(bytes) / seconds / (1024.0 * 1024.0));
    result.set("latency_p50_ms", quantile(latency, 0.50) / 1000.0);
    result.set("latency_p99_ms", quantile(latency, 0.99) / 1000.0);
    // Cores kept busy: a side near its thread count is the bottleneck. (A fast
    // reader that waits for data spends more CPU per event than a saturated
    // one, since it wakes for every few events.)
    if (server_cpu_before && server_cpu_after && events > 0) {
      const double server_cpu = *server_cpu_after - *server_cpu_before;
      result.set("server_cpu_us_per_event", server_cpu * 1e6 / static_cast<double>(events));
      result.set("server_cores", server_cpu / seconds);
    }
    if (events > 0) {
      result.set("client_cpu_us_per_event", client_cpu * 1e6 / static_cast<double>(events));
      result.set("client_cores", client_cpu / seconds);
    }
    // Share of the events read by the fast envelope parser (the rest: full JSON).
    if (fast_parses + full_parses > 0) {
      result.set("fast_parse_share",
                 static_cast<double>(fast_parses) / static_cast<double>(fast_parses + full_parses));
    }
    return result;
  }

  // Closes every connection cleanly; reports what went wrong.
  failure_log finish() {
    failure_log failures;
    for (unsigned i = 0; i < connections_.size(); ++i) {
      auto& c = *connections_[i];
      spawn(pool_.at(i), close_connection(c), c.failures);
    }
    run_phase(pool_, steady::now() + std::chrono::seconds(30), connections_, failures, "close");
    for (auto& c : connections_)
      failures.merge(c->failures);
    return failures;
  }

 private:
  const options& o_;
  const target& to_;
  io_pool pool_;
  std::vector<std::unique_ptr<bench_connection>> connections_;
};

// --- cancel ---

struct cancel_samples {
  std::vector<double> latency_us;  // cancel_run written -> run_cancelled read
  std::vector<double> write_us;    // our own write of cancel_run
};

asio::awaitable<void> cancel_connection(bench_connection& c, const options& o,
                                        cancel_samples& samples) {
  agentws::run_params_override params;
  params.steps = 2;
  params.interval_ms = 60'000;  // step 0 at once, then a long wait: the cancel lands in it
  c.reader.adopt(c.ws.next_layer().buffer());
  for (unsigned i = 0; i < o.samples; ++i) {
    const std::string run_id = "cancel-" + std::to_string(i);
    if (!co_await send_text(c, agentws::make_start_run(run_id, params))) co_return;
    // Expect run_started, then step 0, for this run and nothing else.
    bool started = false;
    for (bool step0 = false; !step0;) {
      const auto text = co_await next_message(c);
      if (!text) co_return;
      event_view event;
      const bool readable = c.events_read.read(*text, event);
      if (readable && event.run_id == run_id && event.kind == agentws::event_kind::run_started &&
          !started) {
        started = true;
      } else if (readable && event.run_id == run_id &&
                 event.kind == agentws::event_kind::run_event && started &&
                 event.step == std::uint64_t{0}) {
        step0 = true;
      } else {
        c.failures.violation("waiting for " + run_id + " step 0: " + excerpt(*text));
        co_return;
      }
    }
    const auto sent = steady::now();
    if (!co_await send_text(c, agentws::make_cancel_run(run_id))) co_return;
    const auto written = steady::now();
    const auto text = co_await next_message(c);
    const auto answered = steady::now();
    if (!text) co_return;
    event_view event;
    if (!c.events_read.read(*text, event) || event.run_id != run_id ||
        event.kind != agentws::event_kind::run_cancelled) {
      c.failures.violation("expected run_cancelled for " + run_id + ": " + excerpt(*text));
      co_return;
    }
    samples.latency_us.push_back(
        std::chrono::duration<double, std::micro>(answered - sent).count());
    samples.write_us.push_back(std::chrono::duration<double, std::micro>(written - sent).count());
  }
  check_reader_drained(c);
  c.done = true;
}

asio::awaitable<void> cancel_task(bench_connection& c, const target& to, const options& o,
                                  cancel_samples& samples) {
  // (Not `if (!co_await ...) co_return;`: as the first statement of this
  // coroutine, GCC 12 compiled it into a trap, SIGILL at run time.)
  const bool opened = co_await open_connection(c, to);
  if (opened) {
    co_await cancel_connection(c, o, samples);
    co_await close_connection(c);
  }
}

round_result cancel_round(const options& o, const target& to) {
  round_result result;
  io_pool pool(1);
  const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                            std::chrono::duration<double>(o.timeout_s));
  std::vector<std::unique_ptr<bench_connection>> connections;
  connections.push_back(std::make_unique<bench_connection>(pool.at(0)));
  auto& c = *connections.front();
  cancel_samples samples;
  spawn(pool.at(0), cancel_task(c, to, o, samples), c.failures);
  const auto start = steady::now();
  result.timed_out = !run_phase(pool, deadline, connections, result.failures, "cancel");
  const double seconds = std::chrono::duration<double>(steady::now() - start).count();
  if (!c.done) c.failures.violation("the cancel loop did not finish");
  result.failures.merge(c.failures);
  const auto& latency_us = samples.latency_us;
  result.set("samples", static_cast<double>(latency_us.size()));
  result.set("cancel_p50_ms", quantile(latency_us, 0.50) / 1000.0);
  result.set("cancel_p99_ms", quantile(latency_us, 0.99) / 1000.0);
  // The part of the figures spent in ws-bench's own write of cancel_run.
  result.set("cancel_write_p50_ms", quantile(samples.write_us, 0.50) / 1000.0);
  result.set("cycles_per_s", static_cast<double>(latency_us.size()) / std::max(1e-9, seconds));
  return result;
}

// --- idle ---

constexpr unsigned idle_open_parallel = 32;  // handshakes in flight while filling up

// Keeps a read pending on an idle connection, so that pings get their pongs.
asio::awaitable<void> idle_hold(bench_connection& c, const bool& closing) {
  for (;;) {
    auto [ec, size] = co_await c.ws.async_read(c.buffer, nothrow);
    if (ec) {
      if (!closing) c.failures.error("idle connection ended: " + ec.message());
      c.open = false;
      co_return;
    }
    c.failures.violation("frame on an idle connection: " + excerpt(c.text(size)));
    c.buffer.consume(size);
  }
}

// Opens connections first, first + step, ... one after another and holds
// each; the last opener to finish stops the io_context (the holds remain).
asio::awaitable<void> idle_opener(std::vector<std::unique_ptr<bench_connection>>& connections,
                                  std::size_t first, std::size_t step, const target& to,
                                  const bool& closing, unsigned& active, asio::io_context& io) {
  for (std::size_t i = first; i < connections.size(); i += step) {
    auto& c = *connections[i];
    if (co_await open_connection(c, to)) spawn(io, idle_hold(c, closing), c.failures);
  }
  if (--active == 0) io.stop();
}

// Connections stay open from round to round: each round measures what N
// more connections add. (Closing them between rounds would let the server's
// allocator reuse their memory and hide the cost in every round but the first.)
class idle_scenario {
 public:
  idle_scenario(const options& o, const target& to) : o_(o), to_(to), pool_(1) {}

  round_result round() {
    round_result result;
    const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                              std::chrono::duration<double>(o_.timeout_s));
    const std::size_t base = connections_.size();
    const unsigned count = o_.idle_connections;
    for (unsigned i = 0; i < count; ++i) {
      connections_.push_back(std::make_unique<bench_connection>(pool_.at(0)));
    }
    // Let the server settle first (the previous round's last handshakes).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto rss_before = process_rss_kib(o_.server_pid);
    const auto start = steady::now();
    unsigned active = std::min(count, idle_open_parallel);
    const unsigned workers = active;
    failure_log opener_failures;
    for (unsigned w = 0; w < workers; ++w) {
      spawn(pool_.at(0),
            idle_opener(connections_, base + w, workers, to_, closing_, active, pool_.at(0)),
            opener_failures);
    }
    result.timed_out = !run_phase(pool_, deadline, connections_, result.failures, "opening");
    const double seconds = std::chrono::duration<double>(steady::now() - start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto rss_after = process_rss_kib(o_.server_pid);

    unsigned opened = 0;
    for (std::size_t i = base; i < connections_.size(); ++i)
      opened += connections_[i]->open;
    if (opened != count) {
      result.failures.error(std::to_string(count - opened) + " of " + std::to_string(count) +
                            " connections did not open");
    }
    result.failures.merge(opener_failures);
    collect(result.failures);
    result.set("connections", opened);
    result.set("open_total", static_cast<double>(connections_.size()));
    result.set("opened_per_s", opened / std::max(1e-9, seconds));
    if (rss_before && rss_after) {
      result.set("rss_before_mib", *rss_before / 1024.0);
      result.set("rss_after_mib", *rss_after / 1024.0);
      if (opened > 0) result.set("kib_per_connection", (*rss_after - *rss_before) / opened);
    }
    return result;
  }

  // Closes every connection cleanly; reports what went wrong.
  failure_log finish() {
    failure_log failures;
    closing_ = true;
    for (auto& c : connections_) {
      if (c->open) spawn(pool_.at(0), close_connection(*c), c->failures);
    }
    run_phase(pool_, steady::now() + std::chrono::seconds(30), connections_, failures, "closing");
    collect(failures);
    return failures;
  }

 private:
  // Moves the connections' failures (so far) into `into`.
  void collect(failure_log& into) {
    for (auto& c : connections_) {
      into.merge(c->failures);
      c->failures = failure_log{};
    }
  }

  const options& o_;
  const target& to_;
  io_pool pool_;
  std::vector<std::unique_ptr<bench_connection>> connections_;
  bool closing_ = false;
};

// --- connect ---

// Opens and closes `count` connections one after another in `slot`, timing
// each. Several workers run side by side: that many handshakes in flight.
asio::awaitable<void> connect_worker(asio::io_context& io, std::unique_ptr<bench_connection>& slot,
                                     unsigned count, const target& to,
                                     std::vector<double>& latency_us, failure_log& failures,
                                     std::atomic<unsigned>& completed) {
  for (unsigned i = 0; i < count; ++i) {
    if (slot) failures.merge(slot->failures);
    slot = std::make_unique<bench_connection>(io);
    auto& c = *slot;
    const auto begin = steady::now();
    if (!co_await open_connection(c, to)) continue;
    co_await close_connection(c);
    latency_us.push_back(std::chrono::duration<double, std::micro>(steady::now() - begin).count());
    completed.fetch_add(1, std::memory_order_relaxed);
  }
}

round_result connect_round(const options& o, const target& to) {
  round_result result;
  io_pool pool(o.threads);
  const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                            std::chrono::duration<double>(o.timeout_s));
  const unsigned count = o.handshakes;
  const unsigned workers = std::max(1u, std::min(count, o.parallel));
  // One connection at a time per worker: what a timeout has to abort.
  std::vector<std::unique_ptr<bench_connection>> slots(workers);
  std::vector<std::vector<double>> latency_us(workers);
  std::vector<failure_log> worker_failures(workers);
  std::atomic<unsigned> completed{0};
  for (unsigned w = 0; w < workers; ++w) {
    const unsigned share = count / workers + (w < count % workers ? 1 : 0);
    latency_us[w].reserve(share);
    spawn(pool.at(w),
          connect_worker(pool.at(w), slots[w], share, to, latency_us[w], worker_failures[w],
                         completed),
          worker_failures[w]);
  }
  const auto server_cpu_before = process_cpu_seconds(o.server_pid);
  const double client_cpu_before = own_cpu_seconds();
  const auto start = steady::now();
  result.timed_out = !run_phase(pool, deadline, slots, result.failures, "connect");
  const double seconds =
      std::max(1e-9, std::chrono::duration<double>(steady::now() - start).count());
  const auto server_cpu_after = process_cpu_seconds(o.server_pid);
  const double client_cpu = own_cpu_seconds() - client_cpu_before;
  for (auto& slot : slots) {
    if (slot) result.failures.merge(slot->failures);
  }
  for (auto& f : worker_failures)
    result.failures.merge(f);
  std::vector<double> latency;
  for (auto& samples : latency_us)
    latency.insert(latency.end(), samples.begin(), samples.end());
  const unsigned done = completed.load();
  result.set("handshakes", done);
  result.set("handshakes_per_s", done / seconds);
  result.set("handshake_p50_ms", quantile(latency, 0.50) / 1000.0);
  result.set("handshake_p99_ms", quantile(latency, 0.99) / 1000.0);
  if (server_cpu_before && server_cpu_after && done > 0) {
    const double server_cpu = *server_cpu_after - *server_cpu_before;
    result.set("server_cpu_us_per_handshake", server_cpu * 1e6 / done);
    result.set("server_cores", server_cpu / seconds);
  }
  if (done > 0) {
    result.set("client_cpu_us_per_handshake", client_cpu * 1e6 / done);
    result.set("client_cores", client_cpu / seconds);
  }
  return result;
}

// --- Reporting ---

std::string describe(const options& o) {
  std::ostringstream out;
  if (o.scenario == "flood") {
    out << o.connections << " connections x " << o.runs << " runs x " << o.steps << " steps ("
        << std::min(o.runs, std::max(1u, o.runs_in_flight))
        << " runs in flight per connection; connections kept open across rounds)";
  } else if (o.scenario == "cancel") {
    out << o.samples << " start/cancel cycles on one connection";
  } else if (o.scenario == "idle") {
    out << o.idle_connections << " more idle connections per round (kept open)";
  } else {
    out << o.handshakes << " handshakes, " << o.parallel << " in parallel";
  }
  out << ", " << o.threads << " client thread" << (o.threads == 1 ? "" : "s");
  return out.str();
}

void print_table(const options& o, const std::vector<round_result>& rounds) {
  std::printf("\n%s: %s against %s (%s)\n", o.scenario.c_str(), describe(o).c_str(),
              o.label.c_str(), o.url.c_str());
  if (rounds.empty()) return;
  const auto& names = rounds.front().metrics;
  std::printf("%-8s", "round");
  for (const auto& [name, value] : names)
    std::printf(" %16s", name.c_str());
  std::printf(" %s\n", "status");
  auto column = [&](const std::string& name) {
    std::vector<double> values;
    for (const auto& round : rounds) {
      for (const auto& [n, v] : round.metrics) {
        if (n == name) values.push_back(v);
      }
    }
    return values;
  };
  for (std::size_t r = 0; r < rounds.size(); ++r) {
    std::printf("%-8zu", r + 1);
    for (const auto& [name, value] : rounds[r].metrics)
      std::printf(" %16.4g", value);
    const auto& f = rounds[r].failures;
    if (f.failed() || rounds[r].timed_out) {
      std::printf(" FAIL (%llu violations, %llu errors)\n",
                  static_cast<unsigned long long>(f.violations),
                  static_cast<unsigned long long>(f.errors));
    } else {
      std::printf(" ok\n");
    }
  }
  for (const char* row : {"median", "min", "max"}) {
    std::printf("%-8s", row);
    for (const auto& [name, unused] : names) {
      const auto values = column(name);
      const double value = std::string_view(row) == "median" ? median(values)
                           : std::string_view(row) == "min"
                               ? *std::min_element(values.begin(), values.end())
                               : *std::max_element(values.begin(), values.end());
      std::printf(" %16.4g", value);
    }
    std::printf("\n");
  }
  for (const auto& round : rounds) {
    for (const auto& sample : round.failures.samples)
      std::printf("  ! %s\n", sample.c_str());
  }
  std::fflush(stdout);
}

ordered_json to_json(const options& o, const std::vector<round_result>& rounds, bool ok) {
  ordered_json out;
  out["tool"] = "ws-bench";
  out["scenario"] = o.scenario;
  out["server"] = o.label;
  out["url"] = o.url;
  out["description"] = describe(o);
  ordered_json params;
  params["rounds"] = o.rounds;
  params["warmup"] = o.warmup;
  params["timeout_s"] = o.timeout_s;
  params["client_threads"] = o.threads;
  if (o.scenario == "flood") {
    params["connections"] = o.connections;
    params["runs"] = o.runs;
    params["steps"] = o.steps;
    params["runs_in_flight"] = std::min(o.runs, std::max(1u, o.runs_in_flight));
  } else if (o.scenario == "cancel") {
    params["samples"] = o.samples;
  } else if (o.scenario == "idle") {
    params["connections"] = o.idle_connections;
  } else {
    params["handshakes"] = o.handshakes;
    params["parallel"] = o.parallel;
  }
  out["params"] = params;
  ordered_json round_list = ordered_json::array();
  std::uint64_t violations = 0, errors = 0;
  ordered_json samples = ordered_json::array();
  for (const auto& round : rounds) {
    ordered_json entry;
    for (const auto& [name, value] : round.metrics)
      entry[name] = value;
    entry["violations"] = round.failures.violations;
    entry["errors"] = round.failures.errors;
    entry["timed_out"] = round.timed_out;
    round_list.push_back(entry);
    violations += round.failures.violations;
    errors += round.failures.errors;
    for (const auto& sample : round.failures.samples)
      samples.push_back(sample);
  }
  out["rounds"] = round_list;
  ordered_json summary;
  if (!rounds.empty()) {
    for (const auto& [name, unused] : rounds.front().metrics) {
      std::vector<double> values;
      for (const auto& round : rounds) {
        for (const auto& [n, v] : round.metrics) {
          if (n == name) values.push_back(v);
        }
      }
      summary[name] = {{"median", median(values)},
                       {"min", *std::min_element(values.begin(), values.end())},
                       {"max", *std::max_element(values.begin(), values.end())}};
    }
  }
  out["summary"] = summary;
  out["violations"] = violations;
  out["errors"] = errors;
  out["failure_samples"] = samples;
  out["ok"] = ok;
  return out;
}

// Loopback only: the benchmark must never load a machine it does not own.
std::optional<target> loopback_target(const options& o, std::string& why) {
  const auto url = agentws::ws_url::parse(o.url, &why);
  if (!url) return std::nullopt;
  if (url->secure) {
    why = "wss:// is not supported";
    return std::nullopt;
  }
  const std::string host = url->host == "localhost" ? "127.0.0.1" : url->host;
  error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec || !address.is_loopback()) {
    why = "the host must be a loopback address (127.0.0.1, ::1 or localhost)";
    return std::nullopt;
  }
  target to;
  to.endpoint = tcp::endpoint(address, static_cast<std::uint16_t>(std::stoul(url->port)));
  to.host_header = (address.is_v6() ? "[" + host + "]" : host) + ":" + url->port;
  to.path = url->target;
  return to;
}

// Many idle connections need many descriptors: take all the hard limit allows.
void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  po::options_description described(
      "ws-bench: load generator for the agentws protocol (loopback only)\n\n"
      "Usage: ws-bench --scenario flood|cancel|idle|connect --url ws://127.0.0.1:PORT/ws "
      "[options]\n\nOptions");
  // clang-format off
  described.add_options()
    ("help,h", "show this help and exit")
    ("scenario", po::value(&o.scenario), "flood, cancel, idle or connect")
    ("url", po::value(&o.url)->default_value(o.url), "server to measure (a loopback address)")
    ("label", po::value(&o.label)->default_value(o.label), "server name in the report")
    ("server-pid", po::value(&o.server_pid)->default_value(o.server_pid),
     "server process, for CPU time (flood, connect) and RSS (idle) from /proc")
    ("rounds", po::value(&o.rounds)->default_value(o.rounds), "measured rounds")
    ("warmup", po::value(&o.warmup)->default_value(o.warmup), "unmeasured rounds first")
    ("timeout", po::value(&o.timeout_s)->default_value(o.timeout_s), "seconds allowed per round")
    ("threads", po::value(&o.threads)->default_value(o.threads), "client I/O threads")
    ("connections", po::value(&o.connections)->default_value(o.connections), "flood: connections")
    ("runs", po::value(&o.runs)->default_value(o.runs), "flood: runs per connection")
    ("steps", po::value(&o.steps)->default_value(o.steps), "flood: steps per run")
    ("runs-in-flight", po::value(&o.runs_in_flight)->default_value(o.runs_in_flight),
     "flood: runs active at once per connection")
    ("samples", po::value(&o.samples)->default_value(o.samples), "cancel: start/cancel cycles")
    ("idle-connections", po::value(&o.idle_connections)->default_value(o.idle_connections),
     "idle: connections held open")
    ("handshakes", po::value(&o.handshakes)->default_value(o.handshakes),
     "connect: connections opened and closed")
    ("parallel", po::value(&o.parallel)->default_value(o.parallel),
     "connect: handshakes in flight at once")
    ("json-out", po::value(&o.json_out), "write the results as JSON to this file");
  // clang-format on
  po::variables_map args;
  try {
    po::store(po::parse_command_line(argc, argv, described), args);
    po::notify(args);
  } catch (const po::error& e) {
    std::cerr << "ws-bench: " << e.what() << "\nTry 'ws-bench --help'.\n";
    return 2;
  }
  if (args.count("help")) {
    std::cout << described;
    return 0;
  }
  const bool known = o.scenario == "flood" || o.scenario == "cancel" || o.scenario == "idle" ||
                     o.scenario == "connect";
  if (!known) {
    std::cerr << "ws-bench: --scenario must be flood, cancel, idle or connect\n";
    return 2;
  }
  if (o.rounds == 0 || o.timeout_s <= 0 || o.threads == 0 || o.connections == 0 || o.runs == 0 ||
      o.samples == 0 || o.idle_connections == 0 || o.handshakes == 0) {
    std::cerr << "ws-bench: counts, --rounds, --threads and --timeout must be positive\n";
    return 2;
  }
  if (o.scenario == "idle" && o.server_pid <= 0) {
    std::cerr << "ws-bench: the idle scenario needs --server-pid\n";
    return 2;
  }
  std::string why;
  const auto to = loopback_target(o, why);
  if (!to) {
    std::cerr << "ws-bench: bad --url '" << o.url << "': " << why << "\n";
    return 2;
  }
  raise_descriptor_limit();

  std::unique_ptr<idle_scenario> idle;
  std::unique_ptr<flood_scenario> flood;
  std::function<round_result()> round;
  if (o.scenario == "flood") {
    flood = std::make_unique<flood_scenario>(o, *to);
    round = [&] { return flood->round(); };
  } else if (o.scenario == "cancel") {
    round = [&] { return cancel_round(o, *to); };
  } else if (o.scenario == "idle") {
    idle = std::make_unique<idle_scenario>(o, *to);
    round = [&] { return idle->round(); };
  } else {
    round = [&] { return connect_round(o, *to); };
  }
  bool ok = true;
  for (unsigned i = 0; i < o.warmup; ++i) {
    const round_result warm = round();
    if (warm.failures.failed() || warm.timed_out) {
      ok = false;
      std::cerr << "ws-bench: warmup round failed\n";
      for (const auto& sample : warm.failures.samples)
        std::cerr << "  ! " << sample << "\n";
    }
  }
  std::vector<round_result> rounds;
  for (unsigned i = 0; i < o.rounds; ++i) {
    rounds.push_back(round());
    ok = ok && !rounds.back().failures.failed() && !rounds.back().timed_out;
  }
  if (flood || idle) {
    const failure_log closing = flood ? flood->finish() : idle->finish();
    if (closing.failed()) {
      ok = false;
      std::cerr << "ws-bench: closing the connections failed\n";
      for (const auto& sample : closing.samples)
        std::cerr << "  ! " << sample << "\n";
    }
  }
  print_table(o, rounds);
  if (!o.json_out.empty()) {
    std::ofstream file(o.json_out);
    file << to_json(o, rounds, ok).dump(2) << "\n";
    if (!file) {
      std::cerr << "ws-bench: cannot write " << o.json_out << "\n";
      return 1;
    }
  }
  if (!ok) std::cerr << "ws-bench: " << o.scenario << " against " << o.label << ": FAIL\n";
  return ok ? 0 : 1;
}
