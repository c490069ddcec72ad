// ws-bench: a load generator for the agentws protocol (ours or any peer that
// speaks it). Scenarios: flood (throughput, latency, server CPU per event),
// cancel (time from cancel_run to run_cancelled), slow-cancel (what stands
// between cancel_run and run_cancelled when a slow reader is flooded), idle
// (server memory per open connection), connect (handshakes per second),
// large-commands (what one connection sending large commands costs others),
// resume, replay and detached (resume_scenarios.cpp), and program-flood and
// program-latency (program agents against websocketd, program_scenarios.cpp).
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
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffered_read_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
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
#include "program_scenarios.hpp"
#include "resume_scenarios.hpp"

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
  // cancel (start/cancel cycles), slow-cancel (trials)
  unsigned samples = 200;
  // slow-cancel (runs, steps and samples above get its own defaults)
  std::size_t rcvbuf_bytes = 128 * 1024;
  double read_rate_bytes = 1'000'000;
  unsigned read_tick_ms = 2;
  unsigned warmup_ms = 1000;
  unsigned settle_ms = 500;
  double trial_timeout_s = 30;
  // idle
  unsigned idle_connections = 1000;
  // connect
  unsigned handshakes = 500;
  unsigned parallel = 4;
  // large-commands
  std::size_t command_bytes = 1'040'000;  // ~95k keys, under the default 1 MiB limit
  unsigned attackers = 1;                 // 0: the paced run and fresh clients alone
  unsigned paced_steps = 300;
  unsigned paced_interval_ms = 10;
  // resume, replay, detached (resume_scenarios.cpp)
  unsigned interval_ms = 2;
  unsigned read_events = 10;
  unsigned away_ms = 10;
  std::string on_disconnect = "cancel";
  unsigned grace_ms = 60'000;
  bool resume_cancel = false;
  unsigned forget_wait_ms = 6000;
  // program-flood, program-latency (program_scenarios.cpp)
  std::string program_agent = "lines";
  std::string demo_agent;
  std::string websocketd_url;
  int websocketd_pid = 0;
  unsigned close_samples = 50;
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
    case agentws::event_kind::run_attached:
      return "run_attached";
    case agentws::event_kind::run_gap:
      return "run_gap";
    case agentws::event_kind::run_detached:
      return "run_detached";
    case agentws::event_kind::runs:
      return "runs";
    case agentws::event_kind::unknown:
      break;
  }
  return "unknown";
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

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

using agentws::bench::excerpt;
using agentws::bench::failure_log;
using agentws::bench::quantile;
using agentws::bench::spawn;

// One round's figures, in the order they are printed.
struct round_result {
  std::vector<std::pair<std::string, double>> metrics;
  failure_log failures;
  bool timed_out = false;
  ordered_json details;  // per-sample figures for the JSON output; null if none

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
  const bool opened = co_await agentws::bench::connect_websocket(c.ws, to.endpoint, to.host_header,
                                                                 to.path, c.failures);
  if (!opened) {
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
    case agentws::event_kind::run_attached:
    case agentws::event_kind::run_gap:
    case agentws::event_kind::run_detached:
    case agentws::event_kind::runs:
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

// --- slow-cancel ---

// One connection, `runs` runs streaming at interval_ms 0, and a client that
// reads a fixed number of bytes per second, so that every buffer between the
// agents and the client (the server's outbox and write buffer, both socket
// buffers) is full. A trial cancels one run and counts what the client reads
// from cancel_run until its run_cancelled, then starts a replacement and
// counts the same until its run_started. Bytes do not depend on the
// machine's speed; times follow from the read rate.

constexpr std::string_view slow_run_prefix = "slow-";

struct slow_run {
  std::int64_t start_sent_wall_us = 0;
  std::int64_t next_step = 0;  // steps 0..next_step-1 were read, in order
  bool started = false;
  bool cancel_sent = false;
  bool ended = false;  // its terminal event was read
};

// A command whose answer a trial waits for, and that answer.
struct slow_wait {
  std::size_t run = 0;
  agentws::event_kind answer = agentws::event_kind::unknown;
  std::uint64_t bytes_at_send = 0;
  steady::time_point sent_at;
  std::int64_t sent_wall_us = 0;
  bool answered = false;
  bool failed = false;              // the run ended otherwise, or the command was refused
  std::uint64_t bytes = 0;          // read from the send to the answer's last byte
  double ms = 0;                    // from the send to the read that completed the answer
  std::optional<double> server_ms;  // the answer's ts minus the send: when the server acted
  std::optional<std::uint64_t> last_step;
  std::int64_t highest_step = -1;  // the run's last step read before the answer
};

struct slow_cancel_figures {
  std::vector<double> cancel_kib, cancel_ms, cancel_server_ms;
  std::vector<double> start_kib, start_ms, start_server_ms;
  // The first `runs` start_runs, sent back to back: until the last run_started.
  unsigned initial_started = 0;
  std::uint64_t initial_start_bytes = 0;
  double initial_start_ms = 0;
  double initial_start_ts_max_ms = 0;  // the latest any of them was acted on, after its send
  unsigned trials = 0;
  unsigned with_last_step = 0;  // trials whose run_cancelled carried last_step
  int rcvbuf_granted = 0;       // getsockopt(SO_RCVBUF) after setting it
  int rcvbuf_at_end = 0;
  std::uint64_t trial_bytes = 0;  // read from the first trial's cancel_run to the last settle
  double trial_seconds = 0;
  std::uint64_t paced_reads = 0;
  std::uint64_t short_reads = 0;  // paced reads that got less than they asked for
  std::uint64_t events = 0;
  ordered_json trials_json = ordered_json::array();
};

// SO_RCVBUF as the kernel reports it (Linux doubles what was set, for its
// bookkeeping; Asio's get_option halves it back, so it is not used here).
int kernel_rcvbuf(tcp::socket& socket, error_code& ec) {
  int value = 0;
  socklen_t size = sizeof value;
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVBUF, &value, &size) != 0) {
    ec = error_code(errno, boost::system::system_category());
  }
  return value;
}

std::string kib_text(std::uint64_t bytes) {
  std::ostringstream out;
  out << std::fixed;
  out.precision(1);
  out << static_cast<double>(bytes) / 1024.0 << " KiB";
  return out.str();
}

class slow_cancel_client {
 public:
  slow_cancel_client(bench_connection& c, const options& o, steady::time_point deadline)
      : c_(c), o_(o), deadline_(deadline), timer_(c.ws.get_executor()) {
    params_.steps = o.steps;
    params_.interval_ms = 0;
    tick_ = std::chrono::milliseconds(o.read_tick_ms);
    bucket_bytes_ = std::max(1.0, std::floor(o.read_rate_bytes * o.read_tick_ms / 1000.0));
  }

  slow_cancel_figures figures;

  asio::awaitable<void> run(const target& to) {
    const bool ready = set_receive_buffer(to);
    const bool opened = ready && co_await open_connection(c_, to);
    if (!opened) co_return;
    c_.reader.adopt(c_.ws.next_layer().buffer());
    // After a failed trial the rest is still drained and checked.
    co_await flood();
    if (!broken_) {
      error_code ignored;
      figures.rcvbuf_at_end = kernel_rcvbuf(c_.socket(), ignored);
    }
    const bool drained = !broken_ && co_await drain();
    if (drained) {
      co_await close_connection(c_);
    } else if (c_.open) {
      c_.abort();  // mid-stream: Beast's close cannot take over from here
      c_.open = false;
    }
  }

 private:
  // Set before connect: the window scale is chosen in the handshake, and a
  // size set by hand turns the kernel's receive autotuning off.
  bool set_receive_buffer(const target& to) {
    error_code ec;
    auto& socket = c_.socket();
    socket.open(to.endpoint.protocol(), ec);
    if (!ec && o_.rcvbuf_bytes > 0) {
      socket.set_option(asio::socket_base::receive_buffer_size(static_cast<int>(o_.rcvbuf_bytes)),
                        ec);
    }
    const int granted = ec ? 0 : kernel_rcvbuf(socket, ec);
    if (ec) {
      c_.failures.error("SO_RCVBUF: " + ec.message());
      return false;
    }
    figures.rcvbuf_granted = granted;
    return true;
  }

  std::string run_id(std::size_t index) const {
    return std::string(slow_run_prefix) + std::to_string(index);
  }

  // The run index in "slow-<index>", or -1.
  std::int64_t run_index(std::string_view id) const {
    if (!id.starts_with(slow_run_prefix)) return -1;
    std::int64_t index = 0;
    if (!parse_digits(id.substr(slow_run_prefix.size()), index)) return -1;
    return index < static_cast<std::int64_t>(runs_.size()) ? index : -1;
  }

  bool all_started() const {
    return std::all_of(runs_.begin(), runs_.end(), [](const slow_run& r) { return r.started; });
  }
  bool all_ended() const {
    return std::all_of(runs_.begin(), runs_.end(), [](const slow_run& r) { return r.ended; });
  }

  steady::time_point within(double seconds) const {
    return std::min(deadline_, steady::now() + std::chrono::duration_cast<steady::duration>(
                                                   std::chrono::duration<double>(seconds)));
  }

  // Notes where the stream stands, then sends the command.
  asio::awaitable<bool> send_awaited(std::size_t run, agentws::event_kind answer,
                                     std::string command) {
    wait_ = slow_wait{};
    wait_.run = run;
    wait_.answer = answer;
    wait_.bytes_at_send = total_bytes_;
    wait_.sent_wall_us = wall_now_us();
    wait_.sent_at = steady::now();
    const bool sent = co_await send_text(c_, std::move(command));
    if (!sent) broken_ = true;
    co_return sent;
  }

  asio::awaitable<bool> start_run(std::size_t index) {
    runs_[index].start_sent_wall_us = wall_now_us();
    const bool sent = co_await send_text(c_, agentws::make_start_run(run_id(index), params_));
    if (!sent) broken_ = true;
    co_return sent;
  }

  // Reads (paced or not) until `done`; false on a failure (recorded) or at
  // `limit` (for the caller to describe, unless broken_).
  asio::awaitable<bool> read_until(std::function<bool()> done, steady::time_point limit,
                                   bool paced = true) {
    while (!done()) {
      if (broken_ || steady::now() >= limit) co_return false;
      const bool read = paced ? co_await read_paced() : co_await read_fast();
      if (!read) co_return false;
    }
    co_return true;
  }

  // One tick of the token bucket: at most rate x tick bytes, one read_some
  // into exactly that much room, so the read rate is the bottleneck (the
  // bucket holds one tick: a late tick loses its share, it does not burst).
  asio::awaitable<bool> read_paced() {
    const auto now = steady::now();
    next_tick_ = std::max(next_tick_ + tick_, now);
    timer_.expires_at(next_tick_);
    auto [wait_error] = co_await timer_.async_wait(nothrow);
    if (wait_error) {
      c_.failures.error("read timer: " + wait_error.message());
      broken_ = true;
      co_return false;
    }
    const auto woke = steady::now();
    if (refilled_at_ == steady::time_point{}) refilled_at_ = woke - tick_;
    tokens_ = std::min(
        bucket_bytes_,
        tokens_ + o_.read_rate_bytes * std::chrono::duration<double>(woke - refilled_at_).count());
    refilled_at_ = woke;
    const auto ask = static_cast<std::size_t>(tokens_);
    if (ask == 0) co_return true;
    std::size_t got = 0;
    const error_code ec = co_await c_.reader.fill(c_.socket(), ask, &got);
    tokens_ -= static_cast<double>(got);
    ++paced_reads_;
    if (got < ask) ++short_reads_;
    co_return co_await after_read(ec, got);
  }

  asio::awaitable<bool> read_fast() {
    std::size_t got = 0;
    const error_code ec = co_await c_.reader.fill(c_.socket(), SIZE_MAX, &got);
    co_return co_await after_read(ec, got);
  }

  asio::awaitable<bool> after_read(error_code ec, std::size_t got) {
    total_bytes_ += got;
    received_at_ = steady::now();
    if (ec) {
      c_.failures.error("read: " + ec.message());
      c_.open = false;
      broken_ = true;
      co_return false;
    }
    if (!handle_frames()) co_return false;
    const bool ponged = co_await send_pongs(c_);
    if (!ponged) broken_ = true;
    co_return ponged;
  }

  bool handle_frames() {
    for (;;) {
      std::string_view text;
      switch (c_.reader.next(text)) {
        case frame_reader::result::message:
          ++figures.events;
          on_event(text, total_bytes_ - c_.reader.buffered());
          continue;
        case frame_reader::result::need_more:
          return true;
        case frame_reader::result::closed:
          c_.failures.error("the server closed the connection (" +
                            std::to_string(c_.reader.close_code()) + ")");
          c_.open = false;
          broken_ = true;
          return false;
        case frame_reader::result::failed:
          c_.failures.violation(c_.reader.why());
          c_.abort();
          c_.open = false;
          broken_ = true;
          return false;
      }
    }
  }

  // Checks one event against its run; `at` is the stream offset of its last byte.
  void on_event(std::string_view text, std::uint64_t at) {
    event_view event;
    if (!c_.events_read.read(text, event)) {
      c_.failures.violation("unreadable event: " + excerpt(text));
      return;
    }
    const std::int64_t index = run_index(event.run_id);
    slow_run* run = index >= 0 ? &runs_[static_cast<std::size_t>(index)] : nullptr;
    const auto kind = event.kind;
    const bool about_a_run =
        kind == agentws::event_kind::run_started || kind == agentws::event_kind::run_event ||
        kind == agentws::event_kind::run_done || kind == agentws::event_kind::run_cancelled;
    if (about_a_run && !run) {
      c_.failures.violation(std::string(kind_name(kind)) + " for an unknown run: " + excerpt(text));
      return;
    }
    if (about_a_run && run->ended) {
      c_.failures.violation(std::string(kind_name(kind)) +
                            " after the run's terminal: " + excerpt(text));
      return;
    }
    if (about_a_run && !run->started && kind != agentws::event_kind::run_started) {
      c_.failures.violation(std::string(kind_name(kind)) + " before run_started: " + excerpt(text));
    }
    switch (kind) {
      case agentws::event_kind::run_started:
        if (run->started) {
          c_.failures.violation("second run_started: " + excerpt(text));
          return;
        }
        run->started = true;
        if (static_cast<std::size_t>(index) < o_.runs) initial_started(*run, event, at);
        answered(static_cast<std::size_t>(index), event, at);
        return;
      case agentws::event_kind::run_event: {
        // Steps are never dropped before a run's end: every run's steps
        // read are 0, 1, 2, ... (a cancelled run's may stop early).
        const std::int64_t step = event.step ? static_cast<std::int64_t>(*event.step) : -1;
        if (step != run->next_step) {
          c_.failures.violation("step " + std::to_string(step) + ", expected " +
                                std::to_string(run->next_step) + ": " + excerpt(text));
        }
        run->next_step = step + 1;  // resynchronise: one fault, one violation
        return;
      }
      case agentws::event_kind::run_cancelled:
        if (!run->cancel_sent) {
          c_.failures.violation("run_cancelled for a run not cancelled: " + excerpt(text));
        }
        run->ended = true;
        // last_step is the last step sent: it must be the last one read.
        if (event.last_step && run->next_step == 0) {
          c_.failures.violation("last_step " + std::to_string(*event.last_step) +
                                " but no step was read: " + excerpt(text));
        } else if (event.last_step &&
                   static_cast<std::int64_t>(*event.last_step) != run->next_step - 1) {
          c_.failures.violation("last_step " + std::to_string(*event.last_step) +
                                " but the last step read was " +
                                std::to_string(run->next_step - 1) + ": " + excerpt(text));
        }
        answered(static_cast<std::size_t>(index), event, at);
        return;
      case agentws::event_kind::run_done:
        run->ended = true;
        if (run->next_step != static_cast<std::int64_t>(o_.steps)) {
          c_.failures.violation("run_done after " + std::to_string(run->next_step) + " of " +
                                std::to_string(o_.steps) + " steps: " + excerpt(text));
        } else {
          c_.failures.error(std::string(event.run_id) +
                            " ran out of steps during the scenario: raise --steps");
        }
        if (wait_.run == static_cast<std::size_t>(index)) wait_.failed = true;
        return;
      case agentws::event_kind::error:
        c_.failures.violation("error event: " + excerpt(text));
        if (run && wait_.run == static_cast<std::size_t>(index)) wait_.failed = true;
        return;
      case agentws::event_kind::connected:
      case agentws::event_kind::run_attached:
      case agentws::event_kind::run_gap:
      case agentws::event_kind::run_detached:
      case agentws::event_kind::runs:
      case agentws::event_kind::unknown:
        c_.failures.violation("unexpected event: " + excerpt(text));
        return;
    }
  }

  void initial_started(const slow_run& run, const event_view& event, std::uint64_t at) {
    if (const auto ts_us = c_.timestamps.micros(event.ts)) {
      figures.initial_start_ts_max_ms =
          std::max(figures.initial_start_ts_max_ms,
                   static_cast<double>(*ts_us - run.start_sent_wall_us) / 1000.0);
    }
    // Counted during the warm-up only: the closing drain reads at full speed.
    if (!warming_ || ++figures.initial_started < o_.runs) return;
    figures.initial_start_bytes = at;
    figures.initial_start_ms =
        std::chrono::duration<double, std::milli>(received_at_ - first_start_sent_at_).count();
  }

  void answered(std::size_t index, const event_view& event, std::uint64_t at) {
    if (wait_.answered || wait_.answer != event.kind || wait_.run != index) return;
    wait_.answered = true;
    wait_.bytes = at - wait_.bytes_at_send;
    wait_.ms = std::chrono::duration<double, std::milli>(received_at_ - wait_.sent_at).count();
    if (const auto ts_us = c_.timestamps.micros(event.ts)) {
      wait_.server_ms = static_cast<double>(*ts_us - wait_.sent_wall_us) / 1000.0;
    }
    wait_.last_step = event.last_step;
    wait_.highest_step = runs_[index].next_step - 1;
  }

  asio::awaitable<bool> flood() {
    runs_.resize(o_.runs);
    first_start_sent_at_ = steady::now();
    for (std::size_t i = 0; i < runs_.size(); ++i) {
      const bool sent = co_await start_run(i);
      if (!sent) co_return false;
    }
    next_tick_ = steady::now();
    const auto warm_until = steady::now() + std::chrono::milliseconds(o_.warmup_ms);
    warming_ = true;
    const bool warm = co_await read_until(
        [this, warm_until] { return steady::now() >= warm_until && all_started(); },
        within(o_.warmup_ms / 1000.0 + o_.trial_timeout_s));
    warming_ = false;
    if (!warm) {
      if (!broken_) {
        std::ostringstream why;
        why << "warm-up: " << figures.initial_started << " of " << o_.runs
            << " runs started within " << o_.warmup_ms / 1000.0 + o_.trial_timeout_s
            << " s of their start_run";
        c_.failures.error(why.str());
      }
      co_return false;
    }
    std::cerr << "ws-bench: slow-cancel: " << (o_.runs == 1 ? "the run" : "all runs")
              << " started after " << kib_text(figures.initial_start_bytes) << ", "
              << static_cast<std::uint64_t>(figures.initial_start_ms)
              << " ms (the last start_run acted on "
              << static_cast<std::uint64_t>(figures.initial_start_ts_max_ms)
              << " ms after its send)\n";
    const auto trials_began = steady::now();
    const std::uint64_t bytes_began = total_bytes_;
    const std::uint64_t paced_began = paced_reads_, short_began = short_reads_;
    bool ok = true;
    for (unsigned trial = 0; trial < o_.samples && ok; ++trial)
      ok = co_await run_trial(trial);
    figures.trial_seconds = std::chrono::duration<double>(steady::now() - trials_began).count();
    figures.trial_bytes = total_bytes_ - bytes_began;
    figures.paced_reads = paced_reads_ - paced_began;
    figures.short_reads = short_reads_ - short_began;
    co_return ok;
  }

  // Waits for the answer to the command just sent; false (recorded) if none came.
  asio::awaitable<bool> await_answer(unsigned trial, std::string_view what) {
    const bool read = co_await read_until([this] { return wait_.answered || wait_.failed; },
                                          within(o_.trial_timeout_s));
    if (read && wait_.answered) co_return true;
    if (!broken_ && !wait_.failed) {
      std::ostringstream why;
      why << "trial " << trial + 1 << ": no " << what << " for " << run_id(wait_.run) << " within "
          << o_.trial_timeout_s << " s (" << kib_text(total_bytes_ - wait_.bytes_at_send)
          << " read since the command)";
      c_.failures.error(why.str());
    }
    co_return false;
  }

  asio::awaitable<bool> run_trial(unsigned trial) {
    // The oldest run still streaming: a different one each trial.
    std::size_t victim = runs_.size();
    for (std::size_t i = 0; i < runs_.size() && victim == runs_.size(); ++i) {
      if (runs_[i].started && !runs_[i].cancel_sent && !runs_[i].ended) victim = i;
    }
    if (victim == runs_.size()) {
      c_.failures.error("trial " + std::to_string(trial + 1) + ": no run left to cancel");
      co_return false;
    }
    runs_[victim].cancel_sent = true;
    const bool cancel_sent = co_await send_awaited(victim, agentws::event_kind::run_cancelled,
                                                   agentws::make_cancel_run(run_id(victim)));
    if (!cancel_sent) co_return false;
    const bool cancelled = co_await await_answer(trial, "run_cancelled");
    if (!cancelled) co_return false;
    const slow_wait cancel = wait_;
    figures.cancel_kib.push_back(static_cast<double>(cancel.bytes) / 1024.0);
    figures.cancel_ms.push_back(cancel.ms);
    if (cancel.server_ms) figures.cancel_server_ms.push_back(*cancel.server_ms);
    if (cancel.last_step) ++figures.with_last_step;

    // A replacement keeps `runs` streaming (and measures run_started).
    const std::size_t fresh = runs_.size();
    runs_.emplace_back();
    const bool start_sent = co_await send_awaited(fresh, agentws::event_kind::run_started,
                                                  agentws::make_start_run(run_id(fresh), params_));
    if (!start_sent) co_return false;
    const bool started = co_await await_answer(trial, "run_started");
    if (!started) co_return false;
    const slow_wait start = wait_;
    wait_ = slow_wait{};
    wait_.run = runs_.size();  // nothing awaited
    figures.start_kib.push_back(static_cast<double>(start.bytes) / 1024.0);
    figures.start_ms.push_back(start.ms);
    if (start.server_ms) figures.start_server_ms.push_back(*start.server_ms);
    ++figures.trials;

    auto json_ms = [](const std::optional<double>& ms) {
      return ms ? ordered_json(*ms) : ordered_json(nullptr);
    };
    ordered_json entry;
    entry["run"] = run_id(victim);
    entry["cancel_bytes"] = cancel.bytes;
    entry["cancel_ms"] = cancel.ms;
    entry["cancel_server_ms"] = json_ms(cancel.server_ms);
    entry["last_step"] = cancel.last_step ? ordered_json(*cancel.last_step) : ordered_json(nullptr);
    entry["last_step_read"] = cancel.highest_step;
    entry["replacement"] = run_id(fresh);
    entry["start_bytes"] = start.bytes;
    entry["start_ms"] = start.ms;
    entry["start_server_ms"] = json_ms(start.server_ms);
    figures.trials_json.push_back(entry);
    std::ostringstream line;
    line.setf(std::ios::fixed);
    line.precision(1);
    line << "ws-bench: slow-cancel trial " << trial + 1 << "/" << o_.samples << ": "
         << run_id(victim) << " run_cancelled after " << kib_text(cancel.bytes) << ", " << cancel.ms
         << " ms";
    if (cancel.server_ms) line << " (its ts " << *cancel.server_ms << " ms after cancel_run)";
    line << ", last step read " << cancel.highest_step << ", last_step "
         << (cancel.last_step ? std::to_string(*cancel.last_step) : std::string("absent")) << "; "
         << run_id(fresh) << " run_started after " << kib_text(start.bytes) << ", " << start.ms
         << " ms";
    if (start.server_ms) line << " (its ts " << *start.server_ms << " ms after start_run)";
    std::cerr << line.str() << "\n";

    // Let the buffers fill again (with one run they emptied), and keep
    // watching: no event of a cancelled run may follow its run_cancelled.
    const auto settled_at = steady::now() + std::chrono::milliseconds(o_.settle_ms);
    const bool settled =
        co_await read_until([settled_at] { return steady::now() >= settled_at; }, deadline_);
    if (!settled && !broken_) c_.failures.error("the scenario's --timeout passed");
    co_return settled;
  }

  // Cancels every run left and reads (at full speed) until all have ended,
  // so that the stream stops and the connection closes cleanly.
  asio::awaitable<bool> drain() {
    for (std::size_t i = 0; i < runs_.size(); ++i) {
      if (runs_[i].ended || runs_[i].cancel_sent) continue;
      runs_[i].cancel_sent = true;
      const bool sent = co_await send_text(c_, agentws::make_cancel_run(run_id(i)));
      if (!sent) {
        broken_ = true;
        co_return false;
      }
    }
    const auto limit = steady::now() + std::chrono::duration_cast<steady::duration>(
                                           std::chrono::duration<double>(o_.trial_timeout_s));
    const bool drained = co_await read_until([this] { return all_ended(); }, limit, false);
    if (!drained) {
      if (!broken_) c_.failures.error("the closing cancels were not all answered in time");
      co_return false;
    }
    check_reader_drained(c_);
    co_return c_.open;
  }

  bench_connection& c_;
  const options& o_;
  const steady::time_point deadline_;
  asio::steady_timer timer_;
  agentws::run_params_override params_;
  std::vector<slow_run> runs_;
  slow_wait wait_;
  std::uint64_t total_bytes_ = 0;  // read from the socket since the frame reader took over
  steady::time_point received_at_;
  steady::time_point first_start_sent_at_;
  bool warming_ = false;
  bool broken_ = false;  // the connection failed (recorded): stop
  // The token bucket.
  steady::duration tick_;
  double bucket_bytes_ = 0;
  double tokens_ = 0;
  steady::time_point next_tick_;
  steady::time_point refilled_at_;
  std::uint64_t paced_reads_ = 0;
  std::uint64_t short_reads_ = 0;
};

asio::awaitable<void> slow_cancel_task(slow_cancel_client& client, const target& to) {
  co_await client.run(to);
}

round_result slow_cancel_round(const options& o, const target& to) {
  round_result result;
  io_pool pool(1);
  const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                            std::chrono::duration<double>(o.timeout_s));
  std::vector<std::unique_ptr<bench_connection>> connections;
  connections.push_back(std::make_unique<bench_connection>(pool.at(0)));
  auto& c = *connections.front();
  slow_cancel_client client(c, o, deadline);
  spawn(pool.at(0), slow_cancel_task(client, to), c.failures);
  // The trials stop at the deadline; the closing drain has its own bound.
  const auto backstop = deadline + std::chrono::duration_cast<steady::duration>(
                                       std::chrono::duration<double>(o.trial_timeout_s + 10));
  result.timed_out = !run_phase(pool, backstop, connections, result.failures, "slow-cancel");
  result.failures.merge(c.failures);
  const auto& f = client.figures;
  if (f.trials < o.samples && !c.failures.failed()) {
    result.failures.error(std::to_string(f.trials) + " of " + std::to_string(o.samples) +
                          " trials done");
  }
  auto three = [&](const std::string& name, const std::vector<double>& values) {
    result.set(name + "_p50", quantile(values, 0.50));
    result.set(name + "_p99", quantile(values, 0.99));
    result.set(name + "_max", values.empty() ? 0 : *std::max_element(values.begin(), values.end()));
  };
  result.set("trials", f.trials);
  three("cancel_kib", f.cancel_kib);
  three("cancel_ms", f.cancel_ms);
  // When the server acted on cancel_run (the ts of run_cancelled), after the send.
  result.set("cancel_ts_p50_ms", quantile(f.cancel_server_ms, 0.50));
  three("start_kib", f.start_kib);
  three("start_ms", f.start_ms);
  result.set("start_ts_p50_ms", quantile(f.start_server_ms, 0.50));
  // The initial start_runs, sent back to back: until the last run_started.
  result.set("initial_start_kib", static_cast<double>(f.initial_start_bytes) / 1024.0);
  result.set("initial_start_ms", f.initial_start_ms);
  result.set("initial_start_ts_max_ms", f.initial_start_ts_max_ms);
  result.set("last_step_share", f.trials ? static_cast<double>(f.with_last_step) / f.trials : 0.0);
  result.set("rcvbuf_granted", f.rcvbuf_granted);
  // What the client read per second over the trials, and how often a read
  // found less than its share waiting (then the server, not the rate, set the pace).
  result.set("read_bytes_per_s",
             static_cast<double>(f.trial_bytes) / std::max(1e-9, f.trial_seconds));
  result.set("short_read_share",
             f.paced_reads ? static_cast<double>(f.short_reads) / static_cast<double>(f.paced_reads)
                           : 0.0);
  ordered_json details;
  details["rcvbuf_requested"] = o.rcvbuf_bytes;
  details["rcvbuf_granted"] = f.rcvbuf_granted;
  details["rcvbuf_at_end"] = f.rcvbuf_at_end;
  details["events"] = f.events;
  details["trial_bytes"] = f.trial_bytes;
  details["trial_seconds"] = f.trial_seconds;
  details["trials"] = f.trials_json;
  result.details = details;
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

// --- large-commands ---

// One connection sends large commands back to back (cancel_run of a run it
// never started, with an object of short keys: the costliest text to parse
// per byte; each answer is an error) while another connection runs a paced
// run (interval 10 ms) and records when each of its events arrives, and
// fresh clients connect, run one step and close, one after another. What the
// large commands cost the others: the gaps between the paced run's events
// (10 ms when nothing is in the way) and the fresh clients' connect + run.

// A cancel_run of about `bytes` with ~`bytes`/11 short keys.
std::string large_command_text(std::size_t bytes) {
  std::string text = R"({"command":"cancel_run","run_id":"large","input":{)";
  text.reserve(bytes + 32);
  for (std::size_t i = 0; text.size() + 32 < bytes; ++i) {
    if (i != 0) text += ',';
    text += "\"k" + std::to_string(i) + "\":" + std::to_string(i % 10);
  }
  text += "}}";
  return text;
}

struct large_round_state {
  std::string command;
  // Shared by the two client threads.
  std::atomic<bool> attack_written{false};  // the first large command went out
  std::atomic<bool> paced_done{false};
  std::atomic<bool> stopping{false};
  std::uint64_t large_sent = 0;
  std::uint64_t large_answered = 0;
  std::vector<double> gaps_ms;   // between consecutive events of the paced run
  std::vector<double> fresh_ms;  // a fresh client's connect + one-step run + close
  steady::time_point attack_began;
};

asio::awaitable<void> large_sender(bench_connection& c, const target& to, large_round_state& s) {
  const bool opened = co_await open_connection(c, to);
  if (!opened) co_return;
  c.reader.adopt(c.ws.next_layer().buffer());
  s.attack_began = steady::now();
  while (!s.stopping) {
    auto [ec, written] = co_await c.ws.async_write(asio::buffer(s.command), nothrow);
    if (ec) {
      if (!s.stopping) c.failures.error("large command write: " + ec.message());
      co_return;
    }
    ++s.large_sent;
    s.attack_written = true;
  }
}

// Reads the attacker's answers (errors, one per command) so they never back up.
asio::awaitable<void> large_answer_reader(bench_connection& c, large_round_state& s) {
  while (!s.stopping || s.large_answered < s.large_sent) {
    if (!c.open) {
      asio::steady_timer wait(c.ws.get_executor(), std::chrono::milliseconds(1));
      co_await wait.async_wait(nothrow);
      if (s.stopping) co_return;
      continue;
    }
    std::string_view text;
    const auto result = c.reader.next(text);
    if (result == frame_reader::result::message) {
      event_view event;
      if (!c.events_read.read(text, event) || event.kind != agentws::event_kind::error) {
        c.failures.violation("expected an error for a large command: " + excerpt(text));
      }
      ++s.large_answered;
      continue;
    }
    if (result != frame_reader::result::need_more) {
      if (!s.stopping) c.failures.error("the large-command connection ended");
      co_return;
    }
    if (!co_await send_pongs(c)) co_return;
    const error_code ec = co_await c.reader.fill(c.socket());
    if (ec) {
      if (!s.stopping) c.failures.error("large-command read: " + ec.message());
      co_return;
    }
  }
}

asio::awaitable<void> paced_run(bench_connection& c, const target& to, const options& o,
                                large_round_state& s, bool wait_for_attack) {
  const bool opened = co_await open_connection(c, to);
  if (!opened) {
    s.paced_done = true;
    co_return;
  }
  c.reader.adopt(c.ws.next_layer().buffer());
  // Bounded by the round's deadline: the attack starts within a handshake.
  asio::steady_timer poll(c.ws.get_executor());
  while (wait_for_attack && !s.attack_written && !s.stopping) {
    poll.expires_after(std::chrono::milliseconds(1));
    co_await poll.async_wait(nothrow);
  }
  agentws::run_params_override params;
  params.steps = o.paced_steps;
  params.interval_ms = o.paced_interval_ms;
  if (co_await send_text(c, agentws::make_start_run("paced", params))) {
    std::optional<steady::time_point> last;
    std::uint64_t next_step = 0;
    for (;;) {
      const auto text = co_await next_message(c);
      if (!text) break;
      const auto now = steady::now();
      event_view event;
      if (!c.events_read.read(*text, event) || event.run_id != "paced") {
        c.failures.violation("paced run: unexpected " + excerpt(*text));
        break;
      }
      if (event.kind == agentws::event_kind::run_done) break;
      if (event.kind == agentws::event_kind::run_event) {
        if (event.step != next_step) {
          c.failures.violation("paced run: step out of order: " + excerpt(*text));
          break;
        }
        ++next_step;
        if (last) {
          s.gaps_ms.push_back(std::chrono::duration<double, std::milli>(now - *last).count());
        }
        last = now;
      } else if (event.kind != agentws::event_kind::run_started) {
        c.failures.violation("paced run: unexpected " + excerpt(*text));
        break;
      }
    }
    if (next_step != o.paced_steps) c.failures.violation("paced run: did not run every step");
  }
  s.paced_done = true;
  c.done = true;
}

// Fresh clients one after another while the paced run lasts: connect, read
// `connected`, run one step (interval 0) to run_done, close.
asio::awaitable<void> fresh_clients(asio::io_context& io, const target& to, large_round_state& s,
                                    std::unique_ptr<bench_connection>& slot,
                                    failure_log& failures) {
  asio::steady_timer pause(io);
  agentws::run_params_override params;
  params.steps = 1;
  params.interval_ms = 0;
  for (unsigned i = 0; !s.paced_done && i < 10'000; ++i) {
    pause.expires_after(std::chrono::milliseconds(100));
    co_await pause.async_wait(nothrow);
    if (s.paced_done) break;
    if (slot) failures.merge(slot->failures);
    slot = std::make_unique<bench_connection>(io);
    auto& c = *slot;
    const auto begin = steady::now();
    if (!co_await open_connection(c, to)) continue;
    c.reader.adopt(c.ws.next_layer().buffer());
    if (!co_await send_text(c, agentws::make_start_run("fresh", params))) continue;
    bool done = false;
    while (!done) {
      const auto text = co_await next_message(c);
      if (!text) break;
      event_view event;
      if (!c.events_read.read(*text, event) || event.run_id != "fresh") {
        c.failures.violation("fresh client: unexpected " + excerpt(*text));
        break;
      }
      done = event.kind == agentws::event_kind::run_done;
    }
    if (!done) continue;
    co_await close_connection(c);
    s.fresh_ms.push_back(std::chrono::duration<double, std::milli>(steady::now() - begin).count());
  }
}

round_result large_commands_round(const options& o, const target& to) {
  round_result result;
  // The attacker has a client thread of its own: masking and writing 1 MB
  // must not delay the paced connection's reads.
  io_pool pool(2);
  const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                            std::chrono::duration<double>(o.timeout_s));
  large_round_state s;
  s.command = large_command_text(o.command_bytes);
  std::vector<std::unique_ptr<bench_connection>> connections;
  connections.push_back(std::make_unique<bench_connection>(pool.at(0)));  // paced
  connections.push_back(nullptr);                                         // fresh client
  const bool attack = o.attackers > 0;
  if (attack) connections.push_back(std::make_unique<bench_connection>(pool.at(1)));
  failure_log fresh_failures;
  auto& paced = *connections[0];
  spawn(pool.at(0), paced_run(paced, to, o, s, attack), paced.failures);
  spawn(pool.at(0), fresh_clients(pool.at(0), to, s, connections[1], fresh_failures),
        fresh_failures);
  // When the paced run is done, the attack stops: its socket is closed on
  // its own thread, which ends its reader and any write in progress.
  asio::steady_timer watch(pool.at(1));
  std::function<void(error_code)> check;
  if (attack) {
    auto& attacker = *connections[2];
    spawn(pool.at(1), large_sender(attacker, to, s), attacker.failures);
    spawn(pool.at(1), large_answer_reader(attacker, s), attacker.failures);
    check = [&](error_code) {
      if (!s.paced_done && steady::now() < deadline) {
        watch.expires_after(std::chrono::milliseconds(5));
        watch.async_wait(check);
        return;
      }
      s.stopping = true;
      attacker.abort();
      attacker.open = false;
    };
    watch.expires_after(std::chrono::milliseconds(5));
    watch.async_wait(check);
  }
  const auto start = steady::now();
  result.timed_out = !run_phase(pool, deadline, connections, result.failures, "large-commands");
  const double seconds = std::chrono::duration<double>(steady::now() - start).count();
  for (auto& connection : connections) {
    if (connection) result.failures.merge(connection->failures);
  }
  result.failures.merge(fresh_failures);
  if (!paced.done) result.failures.violation("the paced run did not finish");
  result.set("gap_p50_ms", quantile(s.gaps_ms, 0.50));
  result.set("gap_p99_ms", quantile(s.gaps_ms, 0.99));
  result.set("gap_max_ms",
             s.gaps_ms.empty() ? 0 : *std::max_element(s.gaps_ms.begin(), s.gaps_ms.end()));
  result.set("fresh_p50_ms", quantile(s.fresh_ms, 0.50));
  result.set("fresh_max_ms",
             s.fresh_ms.empty() ? 0 : *std::max_element(s.fresh_ms.begin(), s.fresh_ms.end()));
  result.set("fresh_clients", static_cast<double>(s.fresh_ms.size()));
  result.set("large_per_s", static_cast<double>(s.large_answered) / std::max(1e-9, seconds));
  return result;
}

// --- resume, replay, detached (resume_scenarios.cpp) ---

agentws::bench::resume_options resume_options_of(const options& o) {
  agentws::bench::resume_options r;
  r.scenario = o.scenario;
  r.timeout_s = o.timeout_s;
  r.samples = o.samples;
  r.connections = o.connections;
  r.runs = o.runs;
  r.steps = o.steps;
  r.interval_ms = o.interval_ms;
  r.read_events = o.read_events;
  r.away_ms = o.away_ms;
  r.on_disconnect = o.on_disconnect;
  r.grace_ms = o.grace_ms;
  r.cancel_after_resume = o.resume_cancel;
  r.settle_ms = o.settle_ms;
  r.forget_wait_ms = o.forget_wait_ms;
  return r;
}

// `websocketd`: where websocketd listens, if it is measured (null: only to describe).
agentws::bench::program_options program_options_of(const options& o, const target* websocketd) {
  agentws::bench::program_options p;
  p.scenario = o.scenario;
  p.timeout_s = o.timeout_s;
  p.connections = o.connections;
  p.runs = o.runs;
  p.lines = o.steps;
  p.samples = o.samples;
  p.close_samples = o.close_samples;
  p.program_agent = o.program_agent;
  p.demo_agent = o.demo_agent;
  p.server_pid = o.server_pid;
  p.websocketd_pid = o.websocketd_pid;
  if (websocketd) {
    p.websocketd = {websocketd->endpoint, websocketd->host_header, websocketd->path};
  } else if (!o.websocketd_url.empty()) {
    p.websocketd = agentws::bench::resume_target{};
  }
  return p;
}

round_result result_of(agentws::bench::scenario_round from) {
  round_result out;
  out.metrics = std::move(from.metrics);
  out.failures = std::move(from.failures);
  out.timed_out = from.timed_out;
  return out;
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
  } else if (o.scenario == "slow-cancel") {
    out << "one connection, " << o.runs << " run" << (o.runs == 1 ? "" : "s")
        << " streaming (interval_ms 0), SO_RCVBUF " << o.rcvbuf_bytes
        << " requested, the client reading " << static_cast<std::uint64_t>(o.read_rate_bytes)
        << " bytes/s in " << o.read_tick_ms << " ms ticks; " << o.samples
        << " cancel trials after a " << o.warmup_ms << " ms warm-up";
  } else if (o.scenario == "idle") {
    out << o.idle_connections << " more idle connections per round (kept open)";
  } else if (agentws::bench::is_resume_scenario(o.scenario)) {
    out << agentws::bench::describe_resume_scenario(resume_options_of(o));
  } else if (agentws::bench::is_program_scenario(o.scenario)) {
    out << agentws::bench::describe_program_scenario(program_options_of(o, nullptr));
  } else if (o.scenario == "large-commands") {
    out << (o.attackers > 0 ? "one connection sending " + std::to_string(o.command_bytes) +
                                  "-byte commands back to back"
                            : std::string("no large commands"))
        << ", one paced run (" << o.paced_steps << " steps, interval " << o.paced_interval_ms
        << " ms), fresh clients every 100 ms";
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
  } else if (o.scenario == "slow-cancel") {
    params["runs"] = o.runs;
    params["steps"] = o.steps;
    params["samples"] = o.samples;
    params["rcvbuf_bytes"] = o.rcvbuf_bytes;
    params["read_rate_bytes"] = o.read_rate_bytes;
    params["read_tick_ms"] = o.read_tick_ms;
    params["warmup_ms"] = o.warmup_ms;
    params["settle_ms"] = o.settle_ms;
    params["trial_timeout_s"] = o.trial_timeout_s;
  } else if (o.scenario == "idle") {
    params["connections"] = o.idle_connections;
  } else if (agentws::bench::is_resume_scenario(o.scenario)) {
    agentws::bench::add_resume_params(resume_options_of(o), params);
  } else if (agentws::bench::is_program_scenario(o.scenario)) {
    agentws::bench::add_program_params(program_options_of(o, nullptr), params);
  } else if (o.scenario == "large-commands") {
    params["command_bytes"] = o.command_bytes;
    params["attackers"] = o.attackers;
    params["paced_steps"] = o.paced_steps;
    params["paced_interval_ms"] = o.paced_interval_ms;
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
    if (!round.details.is_null()) entry["details"] = round.details;
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
std::optional<target> loopback_target(const std::string& text, std::string& why) {
  const auto url = agentws::ws_url::parse(text, &why);
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
      "Usage: ws-bench --scenario "
      "flood|cancel|slow-cancel|idle|connect|large-commands|resume|replay|detached|"
      "program-flood|program-latency "
      "--url ws://127.0.0.1:PORT/ws "
      "[options]\n\nOptions");
  // clang-format off
  described.add_options()
    ("help,h", "show this help and exit")
    ("scenario", po::value(&o.scenario),
     "flood, cancel, slow-cancel, idle, connect, large-commands, resume, replay, detached, "
     "program-flood or program-latency")
    ("url", po::value(&o.url)->default_value(o.url), "server to measure (a loopback address)")
    ("label", po::value(&o.label)->default_value(o.label), "server name in the report")
    ("server-pid", po::value(&o.server_pid)->default_value(o.server_pid),
     "server process, for CPU time (flood, connect, replay) and RSS (idle, detached) from /proc")
    ("rounds", po::value(&o.rounds)->default_value(o.rounds),
     "measured rounds (slow-cancel: 1 unless given)")
    ("warmup", po::value(&o.warmup)->default_value(o.warmup),
     "unmeasured rounds first (slow-cancel: 0 unless given)")
    ("timeout", po::value(&o.timeout_s)->default_value(o.timeout_s),
     "seconds allowed per round (slow-cancel: 300 unless given; bounds the trials, the closing "
     "drain adds at most --trial-timeout)")
    ("threads", po::value(&o.threads)->default_value(o.threads), "client I/O threads")
    ("connections", po::value(&o.connections)->default_value(o.connections),
     "flood: connections; replay: connections attaching, one ended run each; detached: "
     "connections (10 unless given)")
    ("runs", po::value(&o.runs)->default_value(o.runs),
     "flood: runs per connection; slow-cancel: runs streaming (50 unless given); detached: runs "
     "per connection (100 unless given)")
    ("steps", po::value(&o.steps)->default_value(o.steps),
     "flood: steps per run; slow-cancel: steps per run (10000000 unless given); resume: 30, "
     "replay: steps of the ended runs (2000), detached: 1000 unless given")
    ("runs-in-flight", po::value(&o.runs_in_flight)->default_value(o.runs_in_flight),
     "flood: runs active at once per connection")
    ("samples", po::value(&o.samples)->default_value(o.samples),
     "cancel: start/cancel cycles; slow-cancel: trials (10 unless given); resume: reconnects "
     "(100 unless given); replay: attaches per connection (200 unless given)")
    ("rcvbuf-bytes", po::value(&o.rcvbuf_bytes)->default_value(o.rcvbuf_bytes),
     "slow-cancel: SO_RCVBUF set before connect (Linux doubles it; 0: the kernel's autotuning)")
    ("read-rate-bytes", po::value(&o.read_rate_bytes)->default_value(o.read_rate_bytes),
     "slow-cancel: bytes the client reads per second")
    ("read-tick-ms", po::value(&o.read_tick_ms)->default_value(o.read_tick_ms),
     "slow-cancel: the reader's tick (each reads at most rate x tick bytes)")
    ("warmup-ms", po::value(&o.warmup_ms)->default_value(o.warmup_ms),
     "slow-cancel: reading before the first trial, so every buffer fills")
    ("settle-ms", po::value(&o.settle_ms)->default_value(o.settle_ms),
     "slow-cancel: reading after each trial, so the buffers fill again; detached: from the close "
     "to the RSS reading")
    ("trial-timeout", po::value(&o.trial_timeout_s)->default_value(o.trial_timeout_s),
     "slow-cancel: seconds allowed for each answer")
    ("idle-connections", po::value(&o.idle_connections)->default_value(o.idle_connections),
     "idle: connections held open")
    ("handshakes", po::value(&o.handshakes)->default_value(o.handshakes),
     "connect: connections opened and closed")
    ("parallel", po::value(&o.parallel)->default_value(o.parallel),
     "connect: handshakes in flight at once")
    ("command-bytes", po::value(&o.command_bytes)->default_value(o.command_bytes),
     "large-commands: size of each large command (an object of short keys)")
    ("attackers", po::value(&o.attackers)->default_value(o.attackers),
     "large-commands: 1 sends large commands, 0 measures without them")
    ("paced-steps", po::value(&o.paced_steps)->default_value(o.paced_steps),
     "large-commands: steps of the paced run")
    ("paced-interval-ms", po::value(&o.paced_interval_ms)->default_value(o.paced_interval_ms),
     "large-commands: interval of the paced run")
    ("interval-ms", po::value(&o.interval_ms)->default_value(o.interval_ms),
     "resume: interval_ms of the runs; detached: 0 (unless given) ends the runs at once, more "
     "keeps them going, detached, after the close")
    ("read-events", po::value(&o.read_events)->default_value(o.read_events),
     "resume: run_events read before the connection is dropped")
    ("away-ms", po::value(&o.away_ms)->default_value(o.away_ms),
     "resume: from the drop to the reconnect (the run goes on into its history)")
    ("on-disconnect", po::value(&o.on_disconnect)->default_value(o.on_disconnect),
     "resume: the runs' on_disconnect, cancel (with --grace-ms) or continue")
    ("grace-ms", po::value(&o.grace_ms)->default_value(o.grace_ms),
     "resume: the runs' detach_grace_ms with --on-disconnect cancel")
    ("resume-cancel", po::bool_switch(&o.resume_cancel),
     "resume: cancel each run from the new connection after its first live event, instead of "
     "reading it to run_done")
    ("forget-wait-ms", po::value(&o.forget_wait_ms)->default_value(o.forget_wait_ms),
     "detached: after the server's retention_ms, before the RSS is read again (the server "
     "gives freed memory back a few seconds after its load fell)")
    ("program-agent", po::value(&o.program_agent)->default_value(o.program_agent),
     "program-flood, program-latency: the ws-server agent that runs the program")
    ("demo-agent", po::value(&o.demo_agent),
     "program-flood, program-latency: the demo agent's name (absent: the server's default)")
    ("websocketd-url", po::value(&o.websocketd_url),
     "program-flood, program-latency: websocketd running the same program (absent: not measured)")
    ("websocketd-pid", po::value(&o.websocketd_pid)->default_value(o.websocketd_pid),
     "program-flood: websocketd's process, for its CPU time")
    ("close-samples", po::value(&o.close_samples)->default_value(o.close_samples),
     "program-latency: websocketd closes timed per round (websocketd waits 100 ms before it "
     "signals the program; ws-bench kills the rest)")
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
  const bool known = o.scenario == "flood" || o.scenario == "cancel" ||
                     o.scenario == "slow-cancel" || o.scenario == "idle" ||
                     o.scenario == "connect" || o.scenario == "large-commands" ||
                     agentws::bench::is_resume_scenario(o.scenario) ||
                     agentws::bench::is_program_scenario(o.scenario);
  if (!known) {
    std::cerr << "ws-bench: --scenario must be flood, cancel, slow-cancel, idle, connect, "
                 "large-commands, resume, replay, detached, program-flood or program-latency\n";
    return 2;
  }
  if (o.scenario == "resume") {
    if (args["samples"].defaulted()) o.samples = 100;
    if (args["steps"].defaulted()) o.steps = 30;
    if (o.read_events == 0 || (o.on_disconnect != "cancel" && o.on_disconnect != "continue") ||
        (o.on_disconnect == "cancel" && o.grace_ms == 0)) {
      std::cerr << "ws-bench: resume needs --read-events 1 or more, --on-disconnect cancel (with "
                   "--grace-ms 1 or more) or continue\n";
      return 2;
    }
    if (o.steps < o.read_events + 2) {
      std::cerr << "ws-bench: resume needs --steps at least --read-events + 2\n";
      return 2;
    }
  } else if (o.scenario == "program-flood") {
    if (args["runs"].defaulted()) o.runs = 2;
    if (args["steps"].defaulted()) o.steps = 100'000;
  } else if (o.scenario == "program-latency") {
    if (args["samples"].defaulted()) o.samples = 300;
    if (args["rounds"].defaulted()) o.rounds = 3;
    if (args["program-agent"].defaulted()) o.program_agent = "pid-sleep";
  } else if (o.scenario == "replay") {
    if (args["samples"].defaulted()) o.samples = 200;
    if (args["steps"].defaulted()) o.steps = 2000;
  } else if (o.scenario == "detached") {
    if (args["rounds"].defaulted()) o.rounds = 3;
    if (args["warmup"].defaulted()) o.warmup = 0;
    if (args["connections"].defaulted()) o.connections = 10;
    if (args["runs"].defaulted()) o.runs = 100;
    if (args["steps"].defaulted()) o.steps = 1000;
    if (args["interval-ms"].defaulted()) o.interval_ms = 0;
  }
  if (agentws::bench::is_resume_scenario(o.scenario) && o.threads != 1) {
    std::cerr << "ws-bench: " << o.scenario << " runs on one client thread (--threads 1)\n";
    return 2;
  }
  if (o.scenario == "slow-cancel") {
    // One long round: the warm-up is inside it (--warmup-ms).
    if (args["rounds"].defaulted()) o.rounds = 1;
    if (args["warmup"].defaulted()) o.warmup = 0;
    if (args["timeout"].defaulted()) o.timeout_s = 300;
    if (args["runs"].defaulted()) o.runs = 50;
    if (args["steps"].defaulted()) o.steps = 10'000'000;  // the server's maximum: never ends
    if (args["samples"].defaulted()) o.samples = 10;
    if (o.read_rate_bytes < 1 || o.read_tick_ms == 0 || o.read_tick_ms > 1000 ||
        o.trial_timeout_s <= 0 || o.rcvbuf_bytes > INT_MAX / 2) {
      std::cerr << "ws-bench: --read-rate-bytes and --trial-timeout must be positive, "
                   "--read-tick-ms 1 to 1000, --rcvbuf-bytes at most "
                << INT_MAX / 2 << "\n";
      return 2;
    }
  }
  if (o.rounds == 0 || o.timeout_s <= 0 || o.threads == 0 || o.connections == 0 || o.runs == 0 ||
      o.samples == 0 || o.idle_connections == 0 || o.handshakes == 0) {
    std::cerr << "ws-bench: counts, --rounds, --threads and --timeout must be positive\n";
    return 2;
  }
  if (o.scenario == "large-commands" &&
      (o.attackers > 1 || o.paced_steps < 2 || o.command_bytes < 1024)) {
    std::cerr << "ws-bench: large-commands needs --attackers 0 or 1, --paced-steps 2 or more, "
                 "--command-bytes 1024 or more\n";
    return 2;
  }
  if ((o.scenario == "idle" || o.scenario == "detached") && o.server_pid <= 0) {
    std::cerr << "ws-bench: the " << o.scenario << " scenario needs --server-pid\n";
    return 2;
  }
  std::string why;
  const auto to = loopback_target(o.url, why);
  if (!to) {
    std::cerr << "ws-bench: bad --url '" << o.url << "': " << why << "\n";
    return 2;
  }
  std::optional<target> websocketd;
  if (!o.websocketd_url.empty()) {
    websocketd = loopback_target(o.websocketd_url, why);
    if (!websocketd) {
      std::cerr << "ws-bench: bad --websocketd-url '" << o.websocketd_url << "': " << why << "\n";
      return 2;
    }
  }
  raise_descriptor_limit();

  std::unique_ptr<idle_scenario> idle;
  std::unique_ptr<flood_scenario> flood;
  std::unique_ptr<agentws::bench::resume_scenario> resume;
  const agentws::bench::resume_options resume_options = resume_options_of(o);
  std::function<round_result()> round;
  if (o.scenario == "flood") {
    flood = std::make_unique<flood_scenario>(o, *to);
    round = [&] { return flood->round(); };
  } else if (o.scenario == "cancel") {
    round = [&] { return cancel_round(o, *to); };
  } else if (o.scenario == "slow-cancel") {
    round = [&] { return slow_cancel_round(o, *to); };
  } else if (o.scenario == "idle") {
    idle = std::make_unique<idle_scenario>(o, *to);
    round = [&] { return idle->round(); };
  } else if (o.scenario == "large-commands") {
    round = [&] { return large_commands_round(o, *to); };
  } else if (agentws::bench::is_program_scenario(o.scenario)) {
    resume = agentws::bench::make_program_scenario(
        program_options_of(o, websocketd ? &*websocketd : nullptr),
        {to->endpoint, to->host_header, to->path}, process_cpu_seconds, own_cpu_seconds);
    round = [&] { return result_of(resume->round()); };
  } else if (agentws::bench::is_resume_scenario(o.scenario)) {
    const int pid = o.server_pid;
    resume = agentws::bench::make_resume_scenario(
        resume_options, {to->endpoint, to->host_header, to->path},
        {[pid] { return process_cpu_seconds(pid); }, [pid] { return process_rss_kib(pid); },
         own_cpu_seconds});
    round = [&] { return result_of(resume->round()); };
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
  if (flood || idle || resume) {
    const failure_log closing = flood ? flood->finish() : idle ? idle->finish() : resume->finish();
    if (closing.failed()) {
      ok = false;
      std::cerr << "ws-bench: closing the connections failed\n";
      for (const auto& sample : closing.samples)
        std::cerr << "  ! " << sample << "\n";
    }
  }
  if (agentws::bench::is_program_scenario(o.scenario)) {
    std::printf("\n%s: %s (%s)\n", o.scenario.c_str(), describe(o).c_str(), o.url.c_str());
    std::vector<std::vector<std::pair<std::string, double>>> metrics;
    for (const auto& r : rounds) {
      metrics.push_back(r.metrics);
      for (const auto& sample : r.failures.samples)
        std::printf("  ! %s\n", sample.c_str());
    }
    agentws::bench::print_program_table(metrics);
  } else {
    print_table(o, rounds);
  }
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
