// ws-bench's program-flood and program-latency scenarios (see program_scenarios.hpp).
//
// Every side is spoken to the same way, without Beast: a hand-written
// upgrade request, masked frames written straight to the socket, and frames
// read with frame_reader. websocketd's program may write before the client
// sends anything, so the bytes after the upgrade response must not be left
// in a library's buffer. Each round runs on one client thread.
#include "program_scenarios.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "agentws/events.hpp"
#include "event_reading.hpp"

namespace agentws::bench {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using steady = std::chrono::steady_clock;

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

enum class side { program, websocketd, demo };
constexpr std::array<side, 3> all_sides = {side::program, side::websocketd, side::demo};

std::string_view side_name(side s) {
  switch (s) {
    case side::program:
      return "program";
    case side::websocketd:
      return "websocketd";
    case side::demo:
      return "demo";
  }
  return "?";
}

// --- /proc ---

std::optional<proc_stat> read_proc_stat(int pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(file, text)) return std::nullopt;
  return parse_proc_stat(text);
}

// The CPU seconds of the children `pid` has reaped (tick resolution).
std::optional<double> reaped_children_cpu(int pid) {
  const auto stat = read_proc_stat(pid);
  if (!stat) return std::nullopt;
  return static_cast<double>(stat->cutime + stat->cstime) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

bool has_children(int pid) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const auto name = entry.path().filename().string();
    if (!parse_decimal_line(name)) continue;
    const auto stat = read_proc_stat(std::stoi(name));
    if (stat && stat->ppid == pid) return true;
  }
  return false;
}

// Children count in cutime only once reaped: wait (at most 5 s) for none to be left.
bool wait_for_no_children(int pid) {
  const auto until = steady::now() + std::chrono::seconds(5);
  while (has_children(pid)) {
    if (steady::now() > until) return false;
    usleep(2000);
  }
  return true;
}

// --- A WebSocket client without Beast ---

struct link {
  explicit link(asio::io_context& io) : socket(io) {}

  void drop() {
    error_code ignored;
    socket.close(ignored);
    open = false;
  }

  tcp::socket socket;
  frame_reader reader;
  event_reader events;
  std::uint32_t mask = 0x5bd1e995u;
  bool open = false;
};

asio::awaitable<bool> write_frame(link& l, unsigned opcode, std::string_view payload,
                                  failure_log& f) {
  l.mask = l.mask * 1664525u + 1013904223u;
  const std::string frame = client_frame(opcode, payload, l.mask);
  auto [ec, written] = co_await asio::async_write(l.socket, asio::buffer(frame), nothrow);
  if (ec) {
    f.error("write: " + ec.message());
    co_return false;
  }
  co_return true;
}

// Connects and upgrades; the bytes after the response go to the frame reader.
asio::awaitable<bool> open_link(link& l, const resume_target& to, failure_log& f) {
  auto [connect_error] = co_await l.socket.async_connect(to.endpoint, nothrow);
  if (connect_error) {
    f.error("connect: " + connect_error.message());
    co_return false;
  }
  error_code ignored;
  l.socket.set_option(tcp::no_delay(true), ignored);
  const std::string request = "GET " + to.path + " HTTP/1.1\r\nHost: " + to.host_header +
                              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\nUser-Agent: ws-bench\r\n\r\n";
  auto [write_error, written] =
      co_await asio::async_write(l.socket, asio::buffer(request), nothrow);
  if (write_error) {
    f.error("upgrade request: " + write_error.message());
    l.drop();
    co_return false;
  }
  boost::beast::flat_buffer response;
  for (;;) {
    auto space = response.prepare(4096);
    auto [read_error, size] = co_await l.socket.async_read_some(space, nothrow);
    if (read_error) {
      f.error("upgrade response: " + read_error.message());
      l.drop();
      co_return false;
    }
    response.commit(size);
    const std::string_view text(static_cast<const char*>(response.cdata().data()), response.size());
    const std::size_t end = text.find("\r\n\r\n");
    if (end == std::string_view::npos) {
      if (text.size() > 16 * 1024) break;
      continue;
    }
    if (http_status(text) != 101) break;
    response.consume(end + 4);
    l.reader.adopt(response);
    l.open = true;
    co_return true;
  }
  f.error("upgrade refused: " +
          excerpt(std::string_view(static_cast<const char*>(response.cdata().data()),
                                   response.size())));
  l.drop();
  co_return false;
}

enum class got { message, ended, failed };

// The next text message; `ended` on a close frame or end of stream.
asio::awaitable<got> next_message(link& l, std::string_view& text, failure_log& f) {
  for (;;) {
    switch (l.reader.next(text)) {
      case frame_reader::result::message:
        co_return got::message;
      case frame_reader::result::need_more:
        break;
      case frame_reader::result::closed:
        co_return got::ended;
      case frame_reader::result::failed:
        f.violation(l.reader.why());
        l.drop();
        co_return got::failed;
    }
    std::string& pongs = l.reader.pongs();
    if (!pongs.empty()) {
      auto [ec, written] = co_await asio::async_write(l.socket, asio::buffer(pongs), nothrow);
      pongs.clear();
      if (ec) {
        f.error("write: " + ec.message());
        co_return got::failed;
      }
    }
    const error_code ec = co_await l.reader.fill(l.socket);
    if (ec == asio::error::eof || ec == asio::error::connection_reset) co_return got::ended;
    if (ec) {
      f.error("read: " + ec.message());
      co_return got::failed;
    }
  }
}

// Opens a link to ws-server and reads `connected`.
asio::awaitable<bool> open_server_link(link& l, const resume_target& to, failure_log& f) {
  const bool opened = co_await open_link(l, to, f);
  if (!opened) co_return false;
  std::string_view text;
  const got first = co_await next_message(l, text, f);
  event_view event;
  if (first != got::message || !l.events.read(text, event) || event.kind != event_kind::connected) {
    f.violation("first message is not connected: " + excerpt(text));
    l.drop();
    co_return false;
  }
  co_return true;
}

// open_server_link as a spawnable task.
asio::awaitable<void> open_only(link& l, const resume_target& to, failure_log& f) {
  co_await open_server_link(l, to, f);
}

asio::awaitable<void> close_link(link& l, failure_log& f) {
  if (!l.open) co_return;
  co_await write_frame(l, 0x8, std::string_view("\x03\xe8", 2), f);
  l.drop();
}

std::string start_command(const std::string& run_id, side s, const program_options& o,
                          unsigned steps, unsigned interval_ms) {
  nlohmann::json command = {{"command", "start_run"}, {"run_id", run_id}};
  if (s == side::program) {
    command["agent"] = o.program_agent;
  } else {
    if (!o.demo_agent.empty()) command["agent"] = o.demo_agent;
    command["params"] = {{"steps", steps}, {"interval_ms", interval_ms}};
  }
  return command.dump();
}

// --- program-flood ---

struct flood_tally {
  std::uint64_t events = 0;
  steady::time_point done_at;
  bool done = false;
};

// Runs on an open ws-server link, one after another: run_started, steps
// 0..lines-1 in order, run_done.
asio::awaitable<void> server_flood(link& l, side s, const program_options& o, unsigned index,
                                   flood_tally& tally, failure_log& f) {
  for (unsigned r = 0; r < o.runs; ++r) {
    const std::string run_id = "c" + std::to_string(index) + "-" + std::to_string(r);
    const bool sent = co_await write_frame(l, 0x1, start_command(run_id, s, o, o.lines, 0), f);
    if (!sent) co_return;
    bool started = false;
    std::uint64_t next_step = 0;
    for (bool ended = false; !ended;) {
      std::string_view text;
      const got g = co_await next_message(l, text, f);
      if (g != got::message) {
        if (g == got::ended) f.error("the server closed the connection during " + run_id);
        co_return;
      }
      event_view event;
      const bool readable = l.events.read(text, event);
      if (!readable || event.run_id != run_id) {
        f.violation("unexpected: " + excerpt(text));
        co_return;
      }
      if (event.kind == event_kind::run_started && !started) {
        started = true;
      } else if (event.kind == event_kind::run_event && started && event.step == next_step) {
        ++next_step;
        ++tally.events;
      } else if (event.kind == event_kind::run_done && started && next_step == o.lines &&
                 text.find("\"ok\":false") == std::string_view::npos) {
        ended = true;
      } else {
        f.violation("at step " + std::to_string(next_step) + ": " + excerpt(text));
        co_return;
      }
    }
  }
  tally.done = true;
  tally.done_at = steady::now();
}

// Connections one after another to websocketd: lines "1".."lines", then the end.
asio::awaitable<void> websocketd_flood(asio::io_context& io, const resume_target& to,
                                       const program_options& o, flood_tally& tally,
                                       failure_log& f) {
  for (unsigned r = 0; r < o.runs; ++r) {
    link l(io);
    const bool opened = co_await open_link(l, to, f);
    if (!opened) co_return;
    std::uint64_t expected = 1;
    for (;;) {
      std::string_view text;
      const got g = co_await next_message(l, text, f);
      if (g == got::failed) co_return;
      if (g == got::ended) break;
      if (parse_decimal_line(text) != expected) {
        f.violation("line " + std::to_string(expected) + " is: " + excerpt(text));
        l.drop();
        co_return;
      }
      ++expected;
      ++tally.events;
    }
    if (expected != o.lines + 1) {
      f.violation("websocketd ended after " + std::to_string(expected - 1) + " of " +
                  std::to_string(o.lines) + " lines");
      co_return;
    }
    l.drop();
  }
  tally.done = true;
  tally.done_at = steady::now();
}

// Runs io until it runs out of work or the deadline passes; on the deadline
// the work is abandoned (the caller's links close, the frames are destroyed).
bool run_until(asio::io_context& io, steady::time_point deadline, failure_log& f,
               std::string_view phase) {
  io.run_until(deadline);
  const bool finished = io.stopped();
  io.restart();
  if (!finished) f.error("timeout in " + std::string(phase));
  return finished;
}

class program_scenario : public resume_scenario {
 public:
  program_scenario(const program_options& o, const resume_target& server, cpu_reader threads_cpu,
                   std::function<double()> own_cpu)
      : o_(o),
        server_(server),
        threads_cpu_(std::move(threads_cpu)),
        own_cpu_(std::move(own_cpu)) {}

  scenario_round round() override {
    scenario_round result;
    const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                              std::chrono::duration<double>(o_.timeout_s));
    // Rotate the order, so that no side always follows another's cleanup.
    for (std::size_t i = 0; i < all_sides.size(); ++i) {
      const side s = all_sides[(i + round_index_) % all_sides.size()];
      if (s == side::websocketd && !o_.websocketd) continue;
      if (o_.scenario == "program-flood") {
        flood_side(s, deadline, result);
      } else {
        latency_side(s, deadline, result);
      }
      if (steady::now() > deadline) result.timed_out = true;
    }
    ++round_index_;
    // One order for the columns, whatever the round's order.
    std::stable_sort(
        result.metrics.begin(), result.metrics.end(),
        [](const auto& a, const auto& b) { return side_rank(a.first) < side_rank(b.first); });
    return result;
  }

 private:
  static int side_rank(const std::string& metric) {
    for (std::size_t i = 0; i < all_sides.size(); ++i) {
      if (metric.starts_with(std::string(side_name(all_sides[i])) + "."))
        return static_cast<int>(i);
    }
    return 99;
  }

  int pid_of(side s) const { return s == side::websocketd ? o_.websocketd_pid : o_.server_pid; }

  void flood_side(side s, steady::time_point deadline, scenario_round& result) {
    const std::string prefix = std::string(side_name(s)) + ".";
    failure_log f;
    asio::io_context io(1);
    std::vector<std::unique_ptr<link>> links;
    std::vector<flood_tally> tallies(o_.connections);
    bool in_time = true;
    if (s != side::websocketd) {  // ws-server's connections open before the clock starts
      for (unsigned i = 0; i < o_.connections; ++i) {
        links.push_back(std::make_unique<link>(io));
        spawn(io, open_only(*links.back(), server_, f), f);
      }
      in_time = run_until(io, deadline, f, prefix + "connect");
    }
    const int pid = pid_of(s);
    const auto threads_before = threads_cpu_(pid);
    const auto children_before = reaped_children_cpu(pid);
    const double own_before = own_cpu_();
    const auto start = steady::now();
    if (in_time) {
      for (unsigned i = 0; i < o_.connections; ++i) {
        if (s == side::websocketd) {
          spawn(io, websocketd_flood(io, *o_.websocketd, o_, tallies[i], f), f);
        } else if (links[i]->open) {
          spawn(io, server_flood(*links[i], s, o_, i, tallies[i], f), f);
        }
      }
      in_time = run_until(io, deadline, f, prefix + "flood");
    }
    auto end = start;
    std::uint64_t events = 0;
    for (const auto& tally : tallies) {
      events += tally.events;
      if (!tally.done) f.violation(prefix + "a connection did not finish its runs");
      if (tally.done) end = std::max(end, tally.done_at);
    }
    const double own = own_cpu_() - own_before;
    const auto threads_after = threads_cpu_(pid);
    if (s != side::demo && !wait_for_no_children(pid)) f.error(prefix + "children left after 5 s");
    const auto children_after = reaped_children_cpu(pid);
    for (auto& l : links)
      spawn(io, close_link(*l, f), f);
    if (in_time) run_until(io, deadline, f, prefix + "close");
    for (auto& l : links)
      l->drop();

    const double seconds = std::max(1e-9, std::chrono::duration<double>(end - start).count());
    const double per_event = events > 0 ? 1e6 / static_cast<double>(events) : 0;
    result.set(prefix + "events_per_s", static_cast<double>(events) / seconds);
    if (threads_before && threads_after) {
      result.set(prefix + "server_us_per_event", (*threads_after - *threads_before) * per_event);
    }
    if (s != side::demo && children_before && children_after) {
      result.set(prefix + "child_us_per_event", (*children_after - *children_before) * per_event);
    }
    result.set(prefix + "client_us_per_event", own * per_event);
    if (!in_time) result.timed_out = true;
    result.failures.merge(f);
  }

  void latency_side(side s, steady::time_point deadline, scenario_round& result) {
    const std::string prefix = std::string(side_name(s)) + ".";
    failure_log f;
    asio::io_context io(1);
    link l(io);
    latency_samples samples;
    if (s == side::websocketd) {
      spawn(io, websocketd_latency(io, samples, f), f);
    } else {
      spawn(io, server_latency(l, s, samples, f), f);
    }
    const bool in_time = run_until(io, deadline, f, prefix + "latency");
    l.drop();
    if (samples.first_ms.size() != o_.samples) {
      f.violation(prefix + std::to_string(samples.first_ms.size()) + " of " +
                  std::to_string(o_.samples) + " samples");
    }
    result.set(prefix + "first_p50_ms", quantile(samples.first_ms, 0.5));
    result.set(prefix + "first_p99_ms", quantile(samples.first_ms, 0.99));
    if (s != side::websocketd) {
      result.set(prefix + "cancelled_p50_ms", quantile(samples.answer_ms, 0.5));
      result.set(prefix + "cancelled_p99_ms", quantile(samples.answer_ms, 0.99));
    }
    if (s != side::demo) {
      result.set(prefix + "exit_p50_ms", quantile(samples.exit_ms, 0.5));
      result.set(prefix + "exit_p99_ms", quantile(samples.exit_ms, 0.99));
      result.set(prefix + "gone_p50_ms", quantile(samples.gone_ms, 0.5));
      result.set(prefix + "gone_p99_ms", quantile(samples.gone_ms, 0.99));
    }
    if (!in_time) result.timed_out = true;
    result.failures.merge(f);
  }

  struct latency_samples {
    std::vector<double> first_ms;   // start_run (websocketd: connect) -> first event
    std::vector<double> answer_ms;  // cancel_run -> run_cancelled
    std::vector<double> exit_ms;    // cancel_run (websocketd: close frame) -> the program exited
    std::vector<double> gone_ms;    // ... -> reaped (kill(pid, 0) fails with ESRCH)
  };

  // Waits for `pid` to exit (pidfd), then to be reaped (kill(pid, 0) polled
  // every 20 us), each at most 5 s; records both from `from`.
  static asio::awaitable<bool> wait_gone(int pid, steady::time_point from, latency_samples& samples,
                                         failure_log& f) {
    auto executor = co_await asio::this_coro::executor;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd >= 0) {
      asio::posix::stream_descriptor descriptor(executor, pidfd);
      asio::steady_timer limit(executor, std::chrono::seconds(5));
      limit.async_wait([&descriptor](error_code ec) {
        if (!ec) descriptor.cancel();
      });
      auto [ec] = co_await descriptor.async_wait(asio::posix::descriptor_base::wait_read, nothrow);
      limit.cancel();
      if (ec) {
        f.error("process " + std::to_string(pid) + " did not exit within 5 s");
        co_return false;
      }
    } else if (errno != ESRCH) {
      f.error(std::string("pidfd_open: ") + std::strerror(errno));
      co_return false;
    }
    samples.exit_ms.push_back(ms_between(from, steady::now()));
    asio::steady_timer poll(executor);
    const auto until = steady::now() + std::chrono::seconds(5);
    while (::kill(pid, 0) == 0 || errno != ESRCH) {
      if (steady::now() > until) {
        f.error("process " + std::to_string(pid) + " not reaped within 5 s");
        co_return false;
      }
      poll.expires_after(std::chrono::microseconds(20));
      co_await poll.async_wait(nothrow);
    }
    samples.gone_ms.push_back(ms_between(from, steady::now()));
    co_return true;
  }

  // The text of a run_event (the program's line), or empty.
  static std::string event_text(std::string_view message) {
    const auto event = parse_event(message);
    if (!event) return {};
    const auto payload = nlohmann::json::parse(event->payload_json, nullptr, false);
    if (!payload.is_object() || !payload.contains("text") || !payload["text"].is_string())
      return {};
    return payload["text"].get<std::string>();
  }

  // Reads until a message of run_id's of `kind` arrives; false on anything else.
  static asio::awaitable<bool> expect(link& l, const std::string& run_id, event_kind kind,
                                      std::string* message, failure_log& f) {
    std::string_view text;
    const got g = co_await next_message(l, text, f);
    event_view event;
    if (g != got::message || !l.events.read(text, event) || event.run_id != run_id ||
        event.kind != kind) {
      f.violation("expected a " +
                  std::string(kind == event_kind::run_event     ? "run_event"
                              : kind == event_kind::run_started ? "run_started"
                                                                : "run_cancelled") +
                  " of " + run_id + ": " + excerpt(text));
      co_return false;
    }
    if (message) *message = std::string(text);
    co_return true;
  }

  asio::awaitable<void> server_latency(link& l, side s, latency_samples& samples, failure_log& f) {
    const bool opened = co_await open_server_link(l, server_, f);
    if (!opened) co_return;
    for (unsigned i = 0; i < o_.samples; ++i) {
      const std::string run_id = "l" + std::to_string(i);
      const auto sent = steady::now();
      const bool started = co_await write_frame(l, 0x1, start_command(run_id, s, o_, 2, 60'000), f);
      if (!started) co_return;
      std::string first;
      const bool got_started = co_await expect(l, run_id, event_kind::run_started, nullptr, f);
      if (!got_started) co_return;
      const bool got_first = co_await expect(l, run_id, event_kind::run_event, &first, f);
      if (!got_first) co_return;
      samples.first_ms.push_back(ms_between(sent, steady::now()));
      std::optional<std::uint64_t> pid;
      if (s == side::program) {
        pid = parse_decimal_line(event_text(first));
        if (!pid || *pid == 0 || *pid > INT32_MAX) {
          f.violation("the program's first line is not a pid: " + excerpt(first));
          co_return;
        }
      }
      const auto cancel_sent = steady::now();
      const std::string cancel = make_cancel_run(run_id);
      const bool cancelled = co_await write_frame(l, 0x1, cancel, f);
      if (!cancelled) co_return;
      const bool answered = co_await expect(l, run_id, event_kind::run_cancelled, nullptr, f);
      if (!answered) co_return;
      samples.answer_ms.push_back(ms_between(cancel_sent, steady::now()));
      if (pid) {
        const bool gone = co_await wait_gone(static_cast<int>(*pid), cancel_sent, samples, f);
        if (!gone) co_return;
      }
    }
    co_await close_link(l, f);
  }

  asio::awaitable<void> websocketd_latency(asio::io_context& io, latency_samples& samples,
                                           failure_log& f) {
    for (unsigned i = 0; i < o_.samples; ++i) {
      link l(io);
      const auto connecting = steady::now();
      const bool opened = co_await open_link(l, *o_.websocketd, f);
      if (!opened) co_return;
      std::string_view text;
      const got g = co_await next_message(l, text, f);
      if (g != got::message) {
        f.error("websocketd sent no line");
        co_return;
      }
      samples.first_ms.push_back(ms_between(connecting, steady::now()));
      const auto pid = parse_decimal_line(text);
      if (!pid || *pid == 0 || *pid > INT32_MAX) {
        f.violation("the program's first line is not a pid: " + excerpt(text));
        co_return;
      }
      // websocketd waits 100 ms after closing stdin before it signals the
      // program: only the first close_samples are timed, the rest killed.
      const auto closing = steady::now();
      if (i < o_.close_samples) {
        const bool closed = co_await write_frame(l, 0x8, std::string_view("\x03\xe8", 2), f);
        if (!closed) co_return;
        const bool gone = co_await wait_gone(static_cast<int>(*pid), closing, samples, f);
        if (!gone) co_return;
      } else {
        ::kill(static_cast<int>(*pid), SIGKILL);
      }
      for (unsigned drained = 0; drained < 16; ++drained) {  // its close, or the end of stream
        const got rest = co_await next_message(l, text, f);
        if (rest != got::message) break;
      }
      l.drop();
    }
  }

  const program_options o_;
  const resume_target server_;
  cpu_reader threads_cpu_;
  std::function<double()> own_cpu_;
  std::size_t round_index_ = 0;
};

}  // namespace

bool is_program_scenario(std::string_view name) {
  return name == "program-flood" || name == "program-latency";
}

std::unique_ptr<resume_scenario> make_program_scenario(const program_options& o,
                                                       const resume_target& server,
                                                       cpu_reader threads_cpu,
                                                       std::function<double()> own_cpu) {
  return std::make_unique<program_scenario>(o, server, std::move(threads_cpu), std::move(own_cpu));
}

std::string describe_program_scenario(const program_options& o) {
  std::ostringstream out;
  const std::string sides = std::string("program agent '") + o.program_agent + "'" +
                            (o.websocketd ? ", websocketd" : "") + ", demo agent";
  if (o.scenario == "program-flood") {
    out << sides << ": " << o.connections << " connections x " << o.runs << " runs x " << o.lines
        << " lines (demo: steps, interval_ms 0)";
  } else {
    out << sides << ": " << o.samples << " samples each on one connection, start to first event, "
        << "cancel to process gone (websocketd: the first " << o.close_samples
        << " closes of each round)";
  }
  return out.str();
}

void add_program_params(const program_options& o, nlohmann::ordered_json& params) {
  params["program_agent"] = o.program_agent;
  params["websocketd"] = o.websocketd.has_value();
  if (o.scenario == "program-flood") {
    params["connections"] = o.connections;
    params["runs"] = o.runs;
    params["lines"] = o.lines;
  } else {
    params["samples"] = o.samples;
    params["close_samples"] = o.close_samples;
  }
}

void print_program_table(const std::vector<std::vector<std::pair<std::string, double>>>& rounds) {
  std::vector<std::string> rows, columns;
  std::map<std::pair<std::string, std::string>, std::vector<double>> cells;
  for (const auto& metrics : rounds) {
    for (const auto& [name, value] : metrics) {
      const std::size_t dot = name.find('.');
      const std::string row = name.substr(0, dot), column = name.substr(dot + 1);
      if (std::find(rows.begin(), rows.end(), row) == rows.end()) rows.push_back(row);
      if (std::find(columns.begin(), columns.end(), column) == columns.end())
        columns.push_back(column);
      cells[{row, column}].push_back(value);
    }
  }
  std::printf("medians of %zu rounds\n%-12s", rounds.size(), "side");
  for (const auto& column : columns)
    std::printf(" %19s", column.c_str());
  std::printf("\n");
  for (const auto& row : rows) {
    std::printf("%-12s", row.c_str());
    for (const auto& column : columns) {
      auto values = cells[{row, column}];
      if (values.empty()) {
        std::printf(" %19s", "-");
        continue;
      }
      std::sort(values.begin(), values.end());
      const std::size_t mid = values.size() / 2;
      const double median = values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
      std::printf(" %19.4g", median);
    }
    std::printf("\n");
  }
  std::fflush(stdout);
}

}  // namespace agentws::bench
