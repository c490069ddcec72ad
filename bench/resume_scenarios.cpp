// ws-bench's resume, replay and detached scenarios (see resume_scenarios.hpp).
//
// Each round runs on one client thread. As in the other scenarios, Beast
// does the handshake, reads `connected`, writes the commands and closes;
// what the server sends after `connected` is read straight from the socket
// (frame_reader): the server sends nothing unasked in between, so Beast
// holds no bytes of ours when the frame reader takes over.
#include "resume_scenarios.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>

#include "agentws/events.hpp"
#include "agentws/resume.hpp"
#include "event_reading.hpp"

namespace agentws::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

bool run_scoped(event_kind kind) {
  return kind == event_kind::run_started || kind == event_kind::run_event ||
         kind == event_kind::run_done || kind == event_kind::run_cancelled;
}

// --- Connections ---

struct link {
  explicit link(asio::io_context& io) : ws(io) {}

  tcp::socket& socket() { return ws.next_layer(); }

  // Gone without a close frame, with an RST (SO_LINGER 0): what a server
  // sees when a network goes away or a client is killed.
  void drop() {
    error_code ignored;
    socket().set_option(asio::socket_base::linger(true, 0), ignored);
    socket().close(ignored);
    open = false;
  }

  websocket::stream<tcp::socket> ws;
  frame_reader reader;
  event_reader events;
  steady::time_point received_at;  // when the read that completed the last message returned
  // From `connected`.
  std::string session;
  bool resumed = false;
  std::optional<std::uint64_t> retention_ms;
  bool open = false;
};

// Connects to `path`, upgrades and reads `connected` (its session key,
// whether it resumed one, the server's retention_ms).
asio::awaitable<bool> open_link(link& l, const resume_target& to, const std::string& path,
                                failure_log& f) {
  const bool opened = co_await connect_websocket(l.ws, to.endpoint, to.host_header, path, f);
  if (!opened) {
    l.drop();
    co_return false;
  }
  beast::flat_buffer buffer;
  auto [read_error, size] = co_await l.ws.async_read(buffer, nothrow);
  if (read_error) {
    f.error("reading connected: " + read_error.message());
    l.drop();
    co_return false;
  }
  const std::string_view text(static_cast<const char*>(buffer.cdata().data()), size);
  const auto event = parse_event(text);
  if (!event || event->kind != event_kind::connected) {
    f.violation("first frame is not connected: " + excerpt(text));
    l.drop();
    co_return false;
  }
  l.session = event->session;
  l.resumed = event->resumed;
  const auto payload = nlohmann::json::parse(event->payload_json, nullptr, false);
  const auto limits = payload.is_object() ? payload.find("limits") : payload.end();
  if (limits != payload.end() && limits->is_object()) {
    const auto retention = limits->find("retention_ms");
    if (retention != limits->end() && retention->is_number_unsigned()) {
      l.retention_ms = retention->get<std::uint64_t>();
    }
  }
  l.open = true;
  co_return true;
}

asio::awaitable<bool> send_text(link& l, std::string text, failure_log& f) {
  auto [ec, written] = co_await l.ws.async_write(asio::buffer(text), nothrow);
  if (ec) {
    f.error("write: " + ec.message());
    co_return false;
  }
  co_return true;
}

// The next text message, reading as needed; nullopt (recorded) if the
// connection failed or closed.
asio::awaitable<std::optional<std::string_view>> next_message(link& l, failure_log& f) {
  for (;;) {
    std::string_view text;
    switch (l.reader.next(text)) {
      case frame_reader::result::message:
        co_return text;
      case frame_reader::result::need_more:
        break;
      case frame_reader::result::closed:
        f.error("the server closed the connection (" + std::to_string(l.reader.close_code()) + ")");
        l.open = false;
        co_return std::nullopt;
      case frame_reader::result::failed:
        f.violation(l.reader.why());
        l.drop();
        co_return std::nullopt;
    }
    std::string& pongs = l.reader.pongs();
    if (!pongs.empty()) {
      auto [ec, written] = co_await asio::async_write(l.socket(), asio::buffer(pongs), nothrow);
      pongs.clear();
      if (ec) {
        f.error("write: " + ec.message());
        co_return std::nullopt;
      }
    }
    const error_code ec = co_await l.reader.fill(l.socket());
    l.received_at = steady::now();
    if (ec) {
      f.error("read: " + ec.message());
      l.open = false;
      co_return std::nullopt;
    }
  }
}

// A clean close; nothing may have arrived after the last expected event.
asio::awaitable<void> close_link(link& l, failure_log& f) {
  if (!l.open) co_return;
  if (l.reader.buffered() > 0) {
    f.violation(std::to_string(l.reader.buffered()) +
                " bytes arrived after the last expected event");
    l.drop();
    co_return;
  }
  l.open = false;
  auto [ec] = co_await l.ws.async_close(websocket::close_code::normal, nothrow);
  if (ec && ec != asio::error::operation_aborted) f.error("close: " + ec.message());
}

// A frame's event and its seq: the fast paths first, the full parser for
// what they decline.
bool read_event(link& l, std::string_view text, event_view& event,
                std::optional<std::uint64_t>& seq) {
  if (!l.events.read(text, event)) return false;
  seq = payload_seq(text);
  if (!seq && run_scoped(event.kind)) {
    if (const auto full = parse_event(text)) seq = full->seq;
  }
  return true;
}

// Checks one event of `run_id` against its seqs; its kind, or nullopt (recorded).
std::optional<event_kind> check_run_event(link& l, std::string_view text, std::string_view run_id,
                                          seq_check& seqs, failure_log& f) {
  event_view event;
  std::optional<std::uint64_t> seq;
  if (!read_event(l, text, event, seq)) {
    f.violation("unreadable event: " + excerpt(text));
    return std::nullopt;
  }
  if (!run_scoped(event.kind) || event.run_id != run_id) {
    f.violation("expected an event of " + std::string(run_id) + ": " + excerpt(text));
    return std::nullopt;
  }
  if (!seq) {
    f.violation("no seq: " + excerpt(text));
    return std::nullopt;
  }
  const std::int64_t before = seqs.last();
  switch (seqs.see(*seq)) {
    case seq_check::verdict::next:
      return event.kind;
    case seq_check::verdict::repeated:
      f.violation("seq " + std::to_string(*seq) + " twice (the last was " + std::to_string(before) +
                  "): " + excerpt(text));
      return std::nullopt;
    case seq_check::verdict::skipped:
      f.violation("seq " + std::to_string(*seq) + " after " + std::to_string(before) + ": " +
                  excerpt(text));
      return std::nullopt;
  }
  return std::nullopt;
}

// Runs `io` until its work is done or the deadline passes; on timeout calls
// `stop` (drops connections, cancels timers) and drains what is left. True
// if everything finished in time.
bool run_until(asio::io_context& io, steady::time_point deadline, const std::function<void()>& stop,
               failure_log& f, std::string_view phase) {
  io.run_until(deadline);
  const bool finished = io.stopped();
  io.restart();
  if (finished) return true;
  f.error("timeout in " + std::string(phase));
  stop();
  io.run_for(std::chrono::seconds(5));
  if (!io.stopped()) {
    std::cerr << "ws-bench: connections did not stop after a timeout; giving up\n";
    std::_Exit(3);
  }
  io.restart();
  return false;
}

steady::time_point deadline_after(double seconds) {
  return steady::now() +
         std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(seconds));
}

// --- resume ---

struct resume_state {
  explicit resume_state(asio::io_context& context) : io(context), timer(context) {}

  void stop() {
    stopping = true;
    timer.cancel();
    if (current) current->drop();
  }

  asio::io_context& io;
  asio::steady_timer timer;
  std::unique_ptr<link> current;
  std::string key;
  std::string resume_path;
  std::vector<double> total_ms;      // reconnect began -> first replayed event read
  std::vector<double> handshake_ms;  // reconnect began -> `connected` read
  std::vector<double> attach_ms;     // attach_run written -> first replayed event read
  std::uint64_t replayed = 0;        // events the history held after the last seq read
  unsigned live_first = 0;           // samples whose first event after the attach was a live one
  unsigned tried = 0;
  unsigned failed = 0;    // samples with a violation or an error
  bool stopping = false;  // the round timed out
};

class resume_bench final : public resume_scenario {
 public:
  resume_bench(const resume_options& o, const resume_target& to) : o_(o), to_(to) {
    params_.steps = o.steps;
    params_.interval_ms = o.interval_ms;
    disconnect_.on_disconnect = o.on_disconnect;
    if (o.on_disconnect == "cancel") disconnect_.detach_grace_ms = o.grace_ms;
  }

  scenario_round round() override {
    scenario_round result;
    asio::io_context io(1);
    resume_state s(io);
    spawn(io, samples(s, result.failures), result.failures);
    result.timed_out = !run_until(
        io, deadline_after(o_.timeout_s), [&s] { s.stop(); }, result.failures, "resume");
    const auto taken = static_cast<double>(s.total_ms.size());
    if (s.tried < o_.samples && !result.failures.failed()) {
      result.failures.error("only " + std::to_string(s.tried) + " of " +
                            std::to_string(o_.samples) + " samples were tried");
    }
    result.set("samples", taken);
    result.set("failed", static_cast<double>(s.failed));
    result.set("resume_p50_ms", quantile(s.total_ms, 0.50));
    result.set("resume_p99_ms", quantile(s.total_ms, 0.99));
    result.set("handshake_p50_ms", quantile(s.handshake_ms, 0.50));
    result.set("attach_p50_ms", quantile(s.attach_ms, 0.50));
    result.set("attach_p99_ms", quantile(s.attach_ms, 0.99));
    result.set("replayed_mean", taken > 0 ? static_cast<double>(s.replayed) / taken : 0);
    result.set("live_first", static_cast<double>(s.live_first));
    return result;
  }

 private:
  asio::awaitable<void> samples(resume_state& s, failure_log& f) {
    s.current = std::make_unique<link>(s.io);
    const bool opened = co_await open_link(*s.current, to_, to_.path, f);
    if (!opened) co_return;
    s.key = s.current->session;
    if (s.key.empty()) {
      f.violation("connected carries no session key: the server does not resume runs");
      co_return;
    }
    s.resume_path = target_with_session(to_.path, s.key);
    for (unsigned i = 0; i < o_.samples && !s.stopping; ++i) {
      ++s.tried;
      const bool ok = co_await sample(s, f, "resume-" + std::to_string(i));
      if (ok) continue;
      // Counted (the failure is recorded); the next sample starts on a
      // fresh connection of the session, so nothing of this one is read.
      ++s.failed;
      if (s.stopping) co_return;
      s.current->drop();
      s.current = std::make_unique<link>(s.io);
      const bool reopened = co_await open_link(*s.current, to_, s.resume_path, f);
      if (!reopened) co_return;
    }
    co_await close_link(*s.current, f);
  }

  // One sample: start, read, drop, wait, reconnect, attach, the replay and
  // the live events to the run's end (with --resume-cancel, a cancel_run
  // after the first live event). False (recorded) when something went wrong.
  asio::awaitable<bool> sample(resume_state& s, failure_log& f, const std::string& run_id) {
    link& first = *s.current;
    const bool started =
        co_await send_text(first, make_start_run_with(run_id, params_, disconnect_), f);
    if (!started) co_return false;
    seq_check seqs;
    for (unsigned steps_read = 0; steps_read < o_.read_events;) {
      const auto text = co_await next_message(first, f);
      if (!text) co_return false;
      const auto kind = check_run_event(first, *text, run_id, seqs, f);
      if (!kind) co_return false;
      if (*kind == event_kind::run_event) {
        ++steps_read;
      } else if (*kind != event_kind::run_started) {
        f.error(run_id + " ended before the drop (raise --steps): " + excerpt(*text));
        co_return false;
      }
    }
    const std::int64_t last = seqs.last();
    first.drop();
    s.timer.expires_after(milliseconds(o_.away_ms));
    co_await s.timer.async_wait(nothrow);
    if (s.stopping) co_return false;

    const auto began = steady::now();
    s.current = std::make_unique<link>(s.io);  // nothing of the dropped one is pending
    link& again = *s.current;
    const bool reopened = co_await open_link(again, to_, s.resume_path, f);
    if (!reopened) co_return false;
    const auto connected_at = steady::now();
    if (!again.resumed || again.session != s.key) {
      f.violation("the reconnect with the session key did not resume the session");
      co_return false;
    }
    const auto attach_at = steady::now();
    const bool attached = co_await send_text(again, make_attach_run(run_id, last), f);
    if (!attached) co_return false;
    auto text = co_await next_message(again, f);
    if (!text) co_return false;
    const auto answer = parse_event(*text);
    // Done, not running, only if the machine stalled longer than the run.
    if (!answer || answer->kind != event_kind::run_attached || answer->run_id != run_id ||
        !answer->last_seq || (answer->state != "running" && answer->state != "done")) {
      f.violation("expected run_attached for " + run_id + ": " + excerpt(*text));
      co_return false;
    }
    const auto last_held = static_cast<std::int64_t>(*answer->last_seq);
    if (last_held < last) {
      f.violation("run_attached says last_seq " + std::to_string(last_held) + ", but " +
                  std::to_string(last) + " was read");
      co_return false;
    }

    // The first replayed event: seq last + 1 (a run_gap fails the check).
    text = co_await next_message(again, f);
    if (!text) co_return false;
    const auto first_at = again.received_at;
    event_view peek;
    std::optional<std::uint64_t> peek_seq;
    if (read_event(again, *text, peek, peek_seq) && peek.kind == event_kind::run_gap) {
      f.violation("run_gap after seq " + std::to_string(last) +
                  ": the history no longer held the next event: " + excerpt(*text));
      co_return false;
    }
    auto kind = check_run_event(again, *text, run_id, seqs, f);
    if (!kind) co_return false;
    s.total_ms.push_back(ms_between(began, first_at));
    s.handshake_ms.push_back(ms_between(began, connected_at));
    s.attach_ms.push_back(ms_between(attach_at, first_at));
    if (seqs.last() > last_held) {
      ++s.live_first;
    } else {
      s.replayed += static_cast<std::uint64_t>(last_held - last);
    }

    // The rest: every seq once, in order, up to the terminal event.
    bool cancel_sent = false;
    while (!is_terminal(*kind)) {
      if (o_.cancel_after_resume && !cancel_sent && seqs.last() > last_held) {
        cancel_sent = co_await send_text(again, make_cancel_run(run_id), f);
        if (!cancel_sent) co_return false;
      }
      text = co_await next_message(again, f);
      if (!text) co_return false;
      kind = check_run_event(again, *text, run_id, seqs, f);
      if (!kind) co_return false;
    }
    if (*kind == event_kind::run_cancelled && !cancel_sent) {
      f.violation(run_id + " was cancelled: " + excerpt(*text));
      co_return false;
    }
    if (*kind == event_kind::run_done && seqs.last() != static_cast<std::int64_t>(o_.steps) + 1) {
      f.violation(run_id + " ended at seq " + std::to_string(seqs.last()) + " instead of " +
                  std::to_string(o_.steps + 1));
      co_return false;
    }
    co_return true;
  }

  const resume_options o_;
  const resume_target to_;
  run_params_override params_;
  disconnect_options disconnect_;
};

// --- replay ---

constexpr std::string_view replay_run_prefix = "replay-";

struct replay_counts {
  std::uint64_t attaches = 0;
  std::uint64_t events = 0;  // replayed, the terminal included
  std::uint64_t bytes = 0;
  std::uint64_t gaps = 0;         // attaches answered with run_gap (the history is full)
  std::vector<double> attach_ms;  // attach_run written -> the terminal event read
  bool done = false;
  steady::time_point done_at;
};

// Ended runs with a full history, attached again and again from the start:
// the history's replay alone, no agent producing events. The runs and the
// connections stay from round to round (the warmup round sets them up).
class replay_bench final : public resume_scenario {
 public:
  replay_bench(const resume_options& o, const resume_target& to, server_probe probe)
      : o_(o), to_(to), probe_(std::move(probe)) {}

  scenario_round round() override {
    scenario_round result;
    auto& f = result.failures;
    const auto deadline = deadline_after(o_.timeout_s);
    auto stop = [this] {
      if (starter_) starter_->drop();
      for (auto& l : links_)
        l->drop();
    };
    bool in_time = true;
    if (!ready_) {
      links_.clear();
      spawn(io_, set_up(f), f);
      in_time = run_until(io_, deadline, stop, f, "replay set-up");
    }
    counts_.assign(links_.size(), replay_counts{});
    const auto server_cpu_before = probe_.server_cpu_seconds();
    const double client_cpu_before = probe_.own_cpu_seconds();
    const auto start = steady::now();
    if (in_time && ready_) {
      for (std::size_t i = 0; i < links_.size(); ++i) {
        spawn(io_, attach_loop(*links_[i], run_id(i), counts_[i], f), f);
      }
      in_time = run_until(io_, deadline, stop, f, "replay");
    }
    const auto server_cpu_after = probe_.server_cpu_seconds();
    const double client_cpu = probe_.own_cpu_seconds() - client_cpu_before;
    if (!in_time) ready_ = false;  // set up again: the connections were dropped

    replay_counts all;
    auto end = start;
    for (const auto& c : counts_) {
      all.attaches += c.attaches;
      all.events += c.events;
      all.bytes += c.bytes;
      all.gaps += c.gaps;
      all.attach_ms.insert(all.attach_ms.end(), c.attach_ms.begin(), c.attach_ms.end());
      if (c.done) end = std::max(end, c.done_at);
    }
    if (all.attaches < static_cast<std::uint64_t>(o_.samples) * o_.connections && !f.failed()) {
      f.error("only " + std::to_string(all.attaches) + " attaches were done");
    }
    result.timed_out = !in_time;
    const double seconds = std::max(1e-9, std::chrono::duration<double>(end - start).count());
    const double events = static_cast<double>(all.events);
    result.set("attaches", static_cast<double>(all.attaches));
    result.set("events", events);
    result.set("events_per_attach", all.attaches ? events / static_cast<double>(all.attaches) : 0);
    result.set("seconds", seconds);
    result.set("events_per_s", events / seconds);
    result.set("mib_per_s", static_cast<double>(all.bytes) / seconds / (1024.0 * 1024.0));
    result.set("attach_p50_ms", quantile(all.attach_ms, 0.50));
    result.set("attach_p99_ms", quantile(all.attach_ms, 0.99));
    result.set("gap_share", all.attaches
                                ? static_cast<double>(all.gaps) / static_cast<double>(all.attaches)
                                : 0);
    if (server_cpu_before && server_cpu_after) {
      const double server_cpu = *server_cpu_after - *server_cpu_before;
      result.set("server_cpu_us_per_event", all.events ? server_cpu * 1e6 / events : 0);
      result.set("server_cores", server_cpu / seconds);
    }
    result.set("client_cpu_us_per_event", all.events ? client_cpu * 1e6 / events : 0);
    return result;
  }

  failure_log finish() override {
    failure_log f;
    for (auto& l : links_)
      spawn(io_, close_link(*l, f), f);
    run_until(
        io_, deadline_after(30),
        [this] {
          for (auto& l : links_)
            l->drop();
        },
        f, "close");
    return f;
  }

 private:
  static std::string run_id(std::size_t index) {
    return std::string(replay_run_prefix) + std::to_string(index);
  }

  // One connection starts one run per replay connection (interval_ms 0,
  // on_disconnect "continue": kept once ended), reads them to run_done and
  // closes; then the replay connections join its session.
  asio::awaitable<void> set_up(failure_log& f) {
    starter_ = std::make_unique<link>(io_);
    link& starter = *starter_;
    const bool opened = co_await open_link(starter, to_, to_.path, f);
    if (!opened) co_return;
    if (starter.session.empty()) {
      f.violation("connected carries no session key: the server does not resume runs");
      co_return;
    }
    run_params_override params;
    params.steps = o_.steps;
    params.interval_ms = 0;
    disconnect_options disconnect;
    disconnect.on_disconnect = "continue";
    for (unsigned i = 0; i < o_.connections; ++i) {
      const bool sent =
          co_await send_text(starter, make_start_run_with(run_id(i), params, disconnect), f);
      if (!sent) co_return;
    }
    std::vector<seq_check> seqs(o_.connections);
    for (unsigned ended = 0; ended < o_.connections;) {
      const auto text = co_await next_message(starter, f);
      if (!text) co_return;
      event_view event;
      std::optional<std::uint64_t> seq;
      std::int64_t index = -1;
      if (read_event(starter, *text, event, seq) && event.run_id.starts_with(replay_run_prefix) &&
          parse_digits(event.run_id.substr(replay_run_prefix.size()), index) &&
          index < static_cast<std::int64_t>(o_.connections)) {
        const std::string id(event.run_id);
        const auto kind =
            check_run_event(starter, *text, id, seqs[static_cast<std::size_t>(index)], f);
        if (!kind) co_return;
        if (*kind == event_kind::run_cancelled) {
          f.violation("set-up: " + id + " was cancelled: " + excerpt(*text));
          co_return;
        }
        if (*kind == event_kind::run_done) ++ended;
      } else {
        f.violation("set-up: unexpected " + excerpt(*text));
        co_return;
      }
    }
    for (const auto& check : seqs) {
      if (check.last() != static_cast<std::int64_t>(o_.steps) + 1) {
        f.violation("set-up: a run ended at seq " + std::to_string(check.last()) + ", not " +
                    std::to_string(o_.steps + 1));
        co_return;
      }
    }
    co_await close_link(starter, f);
    const std::string path = target_with_session(to_.path, starter.session);
    for (unsigned i = 0; i < o_.connections; ++i) {
      links_.push_back(std::make_unique<link>(io_));
      const bool joined = co_await open_link(*links_.back(), to_, path, f);
      if (!joined) co_return;
      if (!links_.back()->resumed) {
        f.violation("a connection with the session key did not resume the session");
        co_return;
      }
    }
    ready_ = true;
  }

  // `samples` attaches after_seq 0 of one ended run, one after the other:
  // run_attached (state done), run_gap when the history no longer holds seq
  // 1, then every seq from there to the terminal event once, in order.
  asio::awaitable<void> attach_loop(link& l, std::string id, replay_counts& c, failure_log& f) {
    for (unsigned k = 0; k < o_.samples; ++k) {
      const auto sent_at = steady::now();
      const bool sent = co_await send_text(l, make_attach_run(id, 0), f);
      if (!sent) co_return;
      auto text = co_await next_message(l, f);
      if (!text) co_return;
      const auto answer = parse_event(*text);
      if (!answer || answer->kind != event_kind::run_attached || answer->run_id != id ||
          answer->state != "done" || !answer->last_seq) {
        f.violation("expected run_attached for " + id + ", done: " + excerpt(*text));
        co_return;
      }
      const std::uint64_t last_seq = *answer->last_seq;
      text = co_await next_message(l, f);
      if (!text) co_return;
      seq_check seqs(0);
      event_view event;
      std::optional<std::uint64_t> seq;
      if (read_event(l, *text, event, seq) && event.kind == event_kind::run_gap) {
        const auto gap = parse_event(*text);
        if (!gap || gap->run_id != id || !gap->first_seq || *gap->first_seq < 2) {
          f.violation("bad run_gap: " + excerpt(*text));
          co_return;
        }
        ++c.gaps;
        seqs = seq_check(static_cast<std::int64_t>(*gap->first_seq) - 1);
        text = co_await next_message(l, f);
        if (!text) co_return;
      }
      for (;;) {
        const auto kind = check_run_event(l, *text, id, seqs, f);
        if (!kind) co_return;
        ++c.events;
        c.bytes += text->size();
        if (*kind == event_kind::run_done) break;
        if (*kind != event_kind::run_event) {
          f.violation("replay of " + id + ": unexpected " + excerpt(*text));
          co_return;
        }
        text = co_await next_message(l, f);
        if (!text) co_return;
      }
      if (seqs.last() != static_cast<std::int64_t>(last_seq)) {
        f.violation("replay of " + id + " ended at seq " + std::to_string(seqs.last()) +
                    ", run_attached said " + std::to_string(last_seq));
        co_return;
      }
      c.attach_ms.push_back(ms_between(sent_at, l.received_at));
      ++c.attaches;
    }
    c.done = true;
    c.done_at = steady::now();
  }

  const resume_options o_;
  const resume_target to_;
  server_probe probe_;
  asio::io_context io_{1};
  std::unique_ptr<link> starter_;
  std::vector<std::unique_ptr<link>> links_;
  std::vector<replay_counts> counts_;
  bool ready_ = false;
};

// --- detached ---

constexpr std::string_view detached_run_prefix = "detached-";

struct detached_state {
  explicit detached_state(asio::io_context& context) : io(context), timer(context) {}

  void stop() {
    stopping = true;
    timer.cancel();
    for (auto& l : links)
      l->drop();
    if (check) check->drop();
  }

  asio::io_context& io;
  asio::steady_timer timer;
  std::vector<std::unique_ptr<link>> links;
  std::unique_ptr<link> check;  // a connection back into the first session
  unsigned filling = 0;         // connections still starting their runs
  std::optional<double> rss_before, rss_open, rss_held, rss_forgotten;
  std::optional<std::uint64_t> retention_ms;
  bool forgotten_skipped = false;
  bool stopping = false;  // the round timed out
};

// Connections start runs with on_disconnect "continue" and close; the
// server's RSS with the runs kept (ended, or going and detached), then again
// once they are forgotten. Each round starts from fresh sessions.
class detached_bench final : public resume_scenario {
 public:
  detached_bench(const resume_options& o, const resume_target& to, server_probe probe)
      : o_(o), to_(to), probe_(std::move(probe)) {
    params_.steps = o.steps;
    params_.interval_ms = o.interval_ms;
    disconnect_.on_disconnect = "continue";
  }

  scenario_round round() override {
    scenario_round result;
    asio::io_context io(1);
    detached_state s(io);
    const auto deadline = deadline_after(o_.timeout_s);
    spawn(io, measure(s, deadline, result.failures), result.failures);
    result.timed_out = !run_until(
        io, deadline, [&s] { s.stop(); }, result.failures, "detached");
    const double runs = static_cast<double>(o_.connections) * o_.runs;
    auto kib_per_run = [&](const std::optional<double>& rss) {
      return rss && s.rss_before ? (*rss - *s.rss_before) / runs : 0;
    };
    result.set("runs", runs);
    result.set("rss_before_mib", s.rss_before.value_or(0) / 1024);
    result.set("rss_held_mib", s.rss_held.value_or(0) / 1024);
    result.set("kib_per_run", kib_per_run(s.rss_held));
    // With the connections still open (their own memory included).
    result.set("kib_per_run_open", kib_per_run(s.rss_open));
    if (!s.forgotten_skipped) {
      result.set("rss_forgotten_mib", s.rss_forgotten.value_or(0) / 1024);
      result.set("kib_left_per_run", kib_per_run(s.rss_forgotten));
    }
    return result;
  }

 private:
  std::string run_id(std::size_t index) const {
    return std::string(detached_run_prefix) + std::to_string(index);
  }

  asio::awaitable<void> pause(detached_state& s, milliseconds wait) {
    s.timer.expires_after(wait);
    co_await s.timer.async_wait(nothrow);
  }

  asio::awaitable<void> measure(detached_state& s, steady::time_point deadline, failure_log& f) {
    s.rss_before = probe_.server_rss_kib();
    for (unsigned i = 0; i < o_.connections; ++i) {
      s.links.push_back(std::make_unique<link>(s.io));
      ++s.filling;
      spawn(s.io, fill(s, *s.links.back(), f), f);
    }
    while (s.filling > 0 && !f.failed())
      co_await pause(s, milliseconds(5));
    if (f.failed() || s.stopping) co_return;
    const auto ran_for_ms = static_cast<std::uint64_t>(o_.steps) * o_.interval_ms;
    const auto runs_end_by = steady::now() + milliseconds(ran_for_ms);
    s.rss_open = probe_.server_rss_kib();
    for (auto& l : s.links) {
      if (o_.interval_ms == 0) {
        co_await close_link(*l, f);
      } else {
        l->drop();  // mid-stream: the close handshake cannot take over from the frame reader
      }
    }
    co_await pause(s, milliseconds(o_.settle_ms));
    if (s.stopping) co_return;
    s.rss_held = probe_.server_rss_kib();

    // The first session still holds its runs.
    const std::string path = target_with_session(to_.path, s.links.front()->session);
    const bool known = co_await session_runs(s, path, true, f);
    if (!known) co_return;

    // Then the runs are forgotten: retention_ms after they ended (the server
    // looks every second at most), and the server gives freed memory back
    // once its load has stayed low for a few seconds.
    if (!s.retention_ms) {
      s.forgotten_skipped = true;
      std::cerr << "ws-bench: detached: connected announced no retention_ms; the RSS after "
                   "the runs are forgotten is not measured\n";
      co_return;
    }
    const auto forgotten_by =
        std::max(runs_end_by, steady::now()) + milliseconds(*s.retention_ms + o_.forget_wait_ms);
    if (forgotten_by + std::chrono::seconds(2) > deadline) {
      s.forgotten_skipped = true;
      std::cerr << "ws-bench: detached: the server keeps ended runs " << *s.retention_ms
                << " ms (--retention-ms): too long for --timeout " << o_.timeout_s
                << " s; the RSS after the runs are forgotten is not measured\n";
      co_return;
    }
    s.timer.expires_at(forgotten_by);
    co_await s.timer.async_wait(nothrow);
    if (s.stopping) co_return;
    s.rss_forgotten = probe_.server_rss_kib();
    co_await session_runs(s, path, false, f);
  }

  // One connection: its runs started, each read to run_done (interval_ms 0)
  // or to run_started (they go on, detached once the connection closes).
  asio::awaitable<void> fill(detached_state& s, link& l, failure_log& f) {
    const bool opened = co_await open_link(l, to_, to_.path, f);
    if (opened && !s.retention_ms) s.retention_ms = l.retention_ms;
    if (opened && l.session.empty()) {
      f.violation("connected carries no session key: the server does not resume runs");
    }
    if (opened && !f.failed()) co_await start_runs(l, f);
    --s.filling;
  }

  asio::awaitable<void> start_runs(link& l, failure_log& f) {
    for (unsigned i = 0; i < o_.runs; ++i) {
      const bool sent =
          co_await send_text(l, make_start_run_with(run_id(i), params_, disconnect_), f);
      if (!sent) co_return;
    }
    const bool to_the_end = o_.interval_ms == 0;
    std::vector<seq_check> seqs(o_.runs);
    for (unsigned waiting = o_.runs; waiting > 0;) {
      const auto text = co_await next_message(l, f);
      if (!text) co_return;
      event_view event;
      std::optional<std::uint64_t> seq;
      std::int64_t index = -1;
      if (!read_event(l, *text, event, seq) || !event.run_id.starts_with(detached_run_prefix) ||
          !parse_digits(event.run_id.substr(detached_run_prefix.size()), index) ||
          index >= static_cast<std::int64_t>(o_.runs)) {
        f.violation("unexpected " + excerpt(*text));
        co_return;
      }
      const std::string id(event.run_id);
      const auto kind = check_run_event(l, *text, id, seqs[static_cast<std::size_t>(index)], f);
      if (!kind) co_return;
      if (*kind == event_kind::run_cancelled) {
        f.violation(id + " was cancelled: " + excerpt(*text));
        co_return;
      }
      if (*kind == (to_the_end ? event_kind::run_done : event_kind::run_started)) --waiting;
    }
  }

  // Reconnects into a session: `expect_known` says whether the server should
  // still know it (and list all its runs) or have forgotten it.
  asio::awaitable<bool> session_runs(detached_state& s, const std::string& path, bool expect_known,
                                     failure_log& f) {
    s.check = std::make_unique<link>(s.io);
    link& l = *s.check;
    const bool opened = co_await open_link(l, to_, path, f);
    if (!opened) co_return false;
    if (l.resumed != expect_known) {
      f.violation(expect_known ? "a session that started runs with on_disconnect continue was "
                                 "forgotten while its runs should be kept"
                               : "a session was still known after its runs' retention");
      co_await close_link(l, f);
      co_return false;
    }
    if (expect_known) {
      const bool sent = co_await send_text(l, make_list_runs(), f);
      if (!sent) co_return false;
      const auto text = co_await next_message(l, f);
      if (!text) co_return false;
      const auto answer = parse_event(*text);
      const auto payload =
          answer ? nlohmann::json::parse(answer->payload_json, nullptr, false) : nlohmann::json();
      const auto runs = payload.is_object() ? payload.find("runs") : payload.end();
      if (!answer || answer->kind != event_kind::runs || runs == payload.end() ||
          !runs->is_array() || runs->size() != o_.runs) {
        f.violation("list_runs of the first session: " +
                    (runs != payload.end() && runs->is_array() ? std::to_string(runs->size())
                                                               : std::string("no")) +
                    " runs listed, not " + std::to_string(o_.runs) + ": " + excerpt(*text));
        co_return false;
      }
    }
    co_await close_link(l, f);
    co_return true;
  }

  const resume_options o_;
  const resume_target to_;
  server_probe probe_;
  run_params_override params_;
  disconnect_options disconnect_;
};

}  // namespace

bool is_resume_scenario(std::string_view name) {
  return name == "resume" || name == "replay" || name == "detached";
}

std::unique_ptr<resume_scenario> make_resume_scenario(const resume_options& o,
                                                      const resume_target& to, server_probe probe) {
  if (o.scenario == "resume") return std::make_unique<resume_bench>(o, to);
  if (o.scenario == "replay") return std::make_unique<replay_bench>(o, to, std::move(probe));
  if (o.scenario == "detached") return std::make_unique<detached_bench>(o, to, std::move(probe));
  return nullptr;
}

std::string describe_resume_scenario(const resume_options& o) {
  std::ostringstream out;
  if (o.scenario == "resume") {
    out << o.samples << " reconnects on one session: a run (" << o.steps << " steps, interval "
        << o.interval_ms << " ms, on_disconnect " << o.on_disconnect;
    if (o.on_disconnect == "cancel") out << " after detach_grace_ms " << o.grace_ms;
    out << ") read for " << o.read_events << " steps, the connection dropped (RST), " << o.away_ms
        << " ms away, reconnect with ?session=, attach_run after the last seq read, "
        << (o.cancel_after_resume ? "cancel_run after the first live event" : "read to run_done");
  } else if (o.scenario == "replay") {
    out << o.connections << " connections x " << o.samples
        << " attaches after_seq 0, each to its own ended run of " << o.steps
        << " steps (connections kept open across rounds)";
  } else {
    out << o.connections << " connections x " << o.runs << " runs (" << o.steps
        << " steps, interval " << o.interval_ms
        << " ms, on_disconnect continue), closed; RSS after " << o.settle_ms
        << " ms, then after the server's retention_ms + " << o.forget_wait_ms << " ms";
  }
  return out.str();
}

void add_resume_params(const resume_options& o, nlohmann::ordered_json& params) {
  params["steps"] = o.steps;
  if (o.scenario == "resume") {
    params["samples"] = o.samples;
    params["interval_ms"] = o.interval_ms;
    params["read_events"] = o.read_events;
    params["cancel_after_resume"] = o.cancel_after_resume;
    params["away_ms"] = o.away_ms;
    params["on_disconnect"] = o.on_disconnect;
    if (o.on_disconnect == "cancel") params["detach_grace_ms"] = o.grace_ms;
  } else if (o.scenario == "replay") {
    params["connections"] = o.connections;
    params["attaches_per_connection"] = o.samples;
  } else {
    params["connections"] = o.connections;
    params["runs_per_connection"] = o.runs;
    params["interval_ms"] = o.interval_ms;
    params["settle_ms"] = o.settle_ms;
    params["forget_wait_ms"] = o.forget_wait_ms;
  }
}

}  // namespace agentws::bench
