#include "agentws/scenario.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/websocket/error.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>

#include "agentws/client.hpp"

namespace agentws {

namespace asio = boost::asio;

namespace {

constexpr std::string_view color_reset = "\033[0m";

std::string_view color_of(event_kind kind) {
  switch (kind) {
    case event_kind::run_started:
      return "\033[36m";  // cyan
    case event_kind::run_done:
      return "\033[32m";  // green
    case event_kind::run_cancelled:
      return "\033[33m";  // yellow
    case event_kind::error:
      return "\033[31m";  // red
    default:
      return "";
  }
}

bool is_finished(run_outcome outcome) {
  return outcome != run_outcome::not_started && outcome != run_outcome::running;
}

}  // namespace

std::optional<std::string> run_id_problem(std::string_view run_id) {
  if (run_id.empty()) return "the run_id is empty";
  if (run_id.size() > max_run_id_bytes) {
    return "the run_id is " + std::to_string(run_id.size()) + " bytes, longer than " +
           std::to_string(max_run_id_bytes);
  }
  return std::nullopt;
}

std::optional<planned_cancel> parse_planned_cancel(std::string_view text) {
  const std::size_t at = text.rfind('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == text.size()) return std::nullopt;
  const std::string_view seconds_text = text.substr(at + 1);
  double seconds = 0;
  auto [end, ec] =
      std::from_chars(seconds_text.data(), seconds_text.data() + seconds_text.size(), seconds);
  if (ec != std::errc{} || end != seconds_text.data() + seconds_text.size() || seconds < 0 ||
      !std::isfinite(seconds) || seconds > 86400.0 * 365) {
    return std::nullopt;
  }
  return planned_cancel{std::string(text.substr(0, at)),
                        std::chrono::milliseconds(std::llround(seconds * 1000))};
}

std::string_view to_string(run_outcome outcome) noexcept {
  switch (outcome) {
    case run_outcome::not_started:
      return "not started";
    case run_outcome::running:
      return "running";
    case run_outcome::done:
      return "done";
    case run_outcome::failed:
      return "failed";
    case run_outcome::cancelled:
      return "cancelled";
    case run_outcome::refused:
      return "refused";
    case run_outcome::lost:
      return "lost";
  }
  return "?";
}

run_tracker::run_tracker(const std::vector<std::string>& runs,
                         const std::vector<planned_cancel>& cancels) {
  for (const auto& run_id : runs) {
    run_report report;
    report.run_id = run_id;
    const bool will_cancel =
        std::any_of(cancels.begin(), cancels.end(),
                    [&](const planned_cancel& c) { return c.run_id == run_id; });
    report.expected = will_cancel ? run_outcome::cancelled : run_outcome::done;
    reports_.push_back(std::move(report));
  }
}

void run_tracker::track(const std::string& run_id, run_outcome expected) {
  run_report fresh;
  fresh.run_id = run_id;
  fresh.expected = expected;
  reports_.push_back(std::move(fresh));
}

void run_tracker::cancel_sent(const std::string& run_id) {
  ++pending_cancels_[run_id];
}

void run_tracker::raw_sent() {
  ++pending_raw_;
}

void run_tracker::connection_lost() {
  for (auto& report : reports_) {
    if (!is_finished(report.outcome)) {
      report.outcome = run_outcome::lost;
      report.detail = "connection lost";
    }
  }
  // Commands sent on the lost connection will never be answered.
  pending_cancels_.clear();
  pending_raw_ = 0;
}

run_report* run_tracker::oldest_unanswered(const std::string& run_id) {
  auto it = std::find_if(reports_.begin(), reports_.end(), [&](const run_report& r) {
    return r.run_id == run_id && r.outcome == run_outcome::not_started;
  });
  return it == reports_.end() ? nullptr : &*it;
}

run_report* run_tracker::current(const std::string& run_id) {
  run_report* latest = nullptr;
  for (auto& report : reports_) {
    if (report.run_id != run_id) continue;
    if (report.outcome == run_outcome::running) return &report;
    latest = &report;
  }
  if (run_report* waiting = oldest_unanswered(run_id)) return waiting;
  return latest;
}

namespace {

// The refusal of a cancel_run, by code or, from the original server, by message.
bool is_cancel_refusal(const received_event& event) {
  return event.code == "run_not_active" ||
         (event.code.empty() && event.message == "No active run to cancel");
}

}  // namespace

void run_tracker::on_event(const received_event& event) {
  if (event.kind == event_kind::connected) return;
  if (event.run_id.empty()) {
    if (event.kind == event_kind::error) {
      if (pending_raw_ > 0) {
        --pending_raw_;  // the answer to a raw frame
      } else {
        problems_.push_back("server error: " + printable(event.message));
      }
    }
    return;
  }
  const std::string& id = event.run_id;
  if (event.kind == event_kind::error) {
    run_report* run = nullptr;
    if (is_cancel_refusal(event)) {
      if (auto pending = pending_cancels_.find(id);
          pending != pending_cancels_.end() && pending->second > 0) {
        --pending->second;
      }
      run = current(id);
    } else if (run_report* waiting = oldest_unanswered(id)) {
      waiting->outcome = run_outcome::refused;  // the start was refused; a running one goes on
      run = waiting;
    } else {
      run = current(id);
    }
    if (run) {
      run->detail = event.message;
    } else if (pending_raw_ > 0) {
      --pending_raw_;
    } else {
      problems_.push_back("event for a run we did not start: " + printable(id));
    }
    return;
  }
  if (event.kind == event_kind::run_started) {
    run_report* waiting = oldest_unanswered(id);
    run_report* run = current(id);
    if (!run) {
      problems_.push_back("event for a run we did not start: " + printable(id));
    } else if (run->outcome == run_outcome::running) {
      problems_.push_back("run " + printable(id) + ": started twice");
    } else if (waiting) {
      waiting->outcome = run_outcome::running;
    } else {
      problems_.push_back("run " + printable(id) + ": " + event.event_type +
                          " after its terminal event");
    }
    return;
  }
  if (event.kind != event_kind::run_event && event.kind != event_kind::run_done &&
      event.kind != event_kind::run_cancelled) {
    return;  // unknown event types are ignored, as the contract asks
  }
  run_report* run = current(id);
  if (!run) {
    problems_.push_back("event for a run we did not start: " + printable(id));
    return;
  }
  const std::string who = "run " + printable(run->run_id) + ": ";
  if (is_finished(run->outcome)) {
    problems_.push_back(who + event.event_type + " after its terminal event");
    return;
  }
  switch (event.kind) {
    case event_kind::run_event:
      if (run->outcome != run_outcome::running) {
        problems_.push_back(who + "run_event before run_started");
      }
      if (!event.step || *event.step != run->events) {
        problems_.push_back(who + "step " +
                            (event.step ? std::to_string(*event.step) : std::string("missing")) +
                            " where " + std::to_string(run->events) + " was due");
      }
      run->last_step = event.step;
      ++run->events;
      break;
    case event_kind::run_done:
      run->outcome = event.failure.empty() ? run_outcome::done : run_outcome::failed;
      run->detail = event.failure;
      break;
    case event_kind::run_cancelled:
      run->outcome = run_outcome::cancelled;
      run->detail = event.reason.empty() ? std::string() : "reason=" + event.reason;
      if (auto pending = pending_cancels_.find(id);
          pending != pending_cancels_.end() && pending->second > 0 && event.reason != "shutdown") {
        --pending->second;
      }
      break;
    default:
      break;
  }
}

bool run_tracker::all_finished() const {
  return std::all_of(reports_.begin(), reports_.end(),
                     [](const run_report& r) { return is_finished(r.outcome); });
}

bool run_tracker::all_as_expected() const {
  return problems_.empty() && std::all_of(reports_.begin(), reports_.end(),
                                          [](const run_report& r) { return r.as_expected(); });
}

std::string json_on_one_line(std::string_view raw_json) {
  std::string line(raw_json);
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return line;
}

std::string format_event_line(const received_event& event, bool color) {
  std::string line = printable(event.ts.empty() ? "-" : event.ts);
  line += " [";
  line += event.run_id.empty() ? "-" : printable(event.run_id);
  line += "] ";
  const std::string_view paint = color ? color_of(event.kind) : "";
  line += paint;
  line += printable(event.event_type);
  if (!paint.empty()) line += color_reset;
  switch (event.kind) {
    case event_kind::run_event:
      line += " step=" + (event.step ? std::to_string(*event.step) : std::string("?"));
      line += " " + printable(event.text);
      break;
    case event_kind::run_done:
      if (!event.failure.empty()) line += " failed: " + printable(event.failure);
      break;
    case event_kind::run_cancelled:
      if (!event.reason.empty()) line += " reason=" + printable(event.reason);
      break;
    case event_kind::error:
      line += " " + printable(event.message);
      if (!event.code.empty()) line += " (" + printable(event.code) + ")";
      break;
    case event_kind::connected:
      line += " " + printable(event.message);
      break;
    default:
      break;
  }
  if (!event.request_id.empty()) line += " request_id=" + printable(event.request_id);
  return line;
}

std::string format_summary(const run_tracker& tracker, bool color) {
  std::size_t width = 6;
  for (const auto& r : tracker.reports())
    width = std::max(width, printable(r.run_id).size());
  std::string out = "summary:\n";
  for (const auto& r : tracker.reports()) {
    std::string id = printable(r.run_id);
    id.resize(width, ' ');
    std::string outcome(to_string(r.outcome));
    outcome.resize(11, ' ');
    out += "  " + id + "  " + outcome + " " + std::to_string(r.events) + " events";
    if (!r.detail.empty()) out += ", " + printable(r.detail);
    if (r.as_expected()) {
      out += color ? "  \033[32mok\033[0m" : "  ok";
    } else {
      out += std::string(color ? "  \033[31m" : "  ") + "expected " +
             std::string(to_string(r.expected)) + (color ? "\033[0m" : "");
    }
    out += "\n";
  }
  for (const auto& problem : tracker.problems())
    out += "  problem: " + problem + "\n";
  out += tracker.all_as_expected() ? "result: every run ended as expected\n"
                                   : "result: NOT every run ended as expected\n";
  return out;
}

namespace {

// State shared with timer handlers, which may run after the scenario returns.
struct scenario_state {
  explicit scenario_state(asio::any_io_executor executor)
      : connection(executor), deadline(executor) {}
  client_connection connection;
  asio::steady_timer deadline;
  std::vector<std::unique_ptr<asio::steady_timer>> cancel_timers;
  bool finished = false;
  bool timed_out = false;
};

}  // namespace

asio::awaitable<scenario_exit> run_scenario(const scenario& plan, run_tracker& tracker,
                                            const scenario_output& output) {
  auto notice = [&](const std::string& line) {
    if (output.on_notice) output.on_notice(line);
  };
  std::string url_error;
  const std::optional<ws_url> url = ws_url::parse(plan.url, &url_error);
  if (!url) {
    notice("invalid --url " + printable(plan.url) + ": " + url_error);
    co_return scenario_exit::usage;
  }
  if (url->secure) {
    if (std::string why = check_tls_options(plan.tls); !why.empty()) {
      notice(printable(why));
      co_return scenario_exit::usage;
    }
  }

  auto state = std::make_shared<scenario_state>(co_await asio::this_coro::executor);
  // A named copy: GCC 12 destroys a braced temporary argument of a coroutine
  // call twice.
  handshake_options handshake{plan.token, plan.origin, plan.headers};
  if (auto ec =
          co_await state->connection.connect(*url, plan.connect_timeout, handshake, plan.tls)) {
    notice(describe_connect_failure(*url, ec, state->connection.refusal(), !plan.token.empty()));
    co_return scenario_exit::connection;
  }
  notice("connected to " + url->to_string());

  state->deadline.expires_after(plan.timeout);
  state->deadline.async_wait([state](const boost::system::error_code& ec) {
    if (ec || state->finished) return;
    state->timed_out = true;
    state->connection.abort();
  });
  for (const auto& run_id : plan.runs) {
    if (auto ec = state->connection.send(make_start_run(run_id, plan.params))) {
      // Past the send bound: this run cannot start; the scenario ends here.
      notice("cannot send the start of " + printable(run_id) + ": " + ec.message());
      state->finished = true;
      state->deadline.cancel();
      state->connection.abort();
      tracker.connection_lost();
      co_return scenario_exit::connection;
    }
  }
  for (const auto& cancel : plan.cancels) {
    auto& timer = state->cancel_timers.emplace_back(
        std::make_unique<asio::steady_timer>(state->deadline.get_executor(), cancel.after));
    timer->async_wait([state, &tracker, run_id = cancel.run_id,
                       report = output.on_notice](const boost::system::error_code& ec) {
      if (ec || state->finished) return;
      if (report) report("cancelling " + printable(run_id));
      if (auto send_error = state->connection.send(make_cancel_run(run_id))) {
        if (report) {
          report("cannot send the cancel of " + printable(run_id) + ": " + send_error.message());
        }
        return;
      }
      tracker.cancel_sent(run_id);
    });
  }

  bool closing = false;
  boost::system::error_code end;
  for (;;) {
    auto [ec, text] = co_await state->connection.read();
    if (ec) {
      end = ec;
      break;
    }
    std::optional<received_event> event = parse_event(text);
    if (!event) {
      notice("ignoring a frame that is not an event: " + printable(text.substr(0, 120)));
      continue;
    }
    tracker.on_event(*event);
    if (output.on_event) output.on_event(std::string(text), *event);
    if (!closing && tracker.all_finished()) {
      closing = true;
      state->finished = true;
      for (auto& timer : state->cancel_timers)
        timer->cancel();
      state->connection.close();
    }
  }
  state->finished = true;
  state->deadline.cancel();
  for (auto& timer : state->cancel_timers)
    timer->cancel();

  if (state->timed_out) {
    notice("timed out after " + std::to_string(plan.timeout.count()) + " ms");
    co_return scenario_exit::timeout;
  }
  // The server closing on its own (a shutdown's 1001, a 1008...) ends the
  // scenario as a lost connection, even when every run had ended by then.
  // Runs that had not ended then are lost: the server cancels them, and no
  // event of theirs will come.
  if (const std::optional<server_close> close = state->connection.closed_by_server()) {
    notice(describe_server_close(*close));
    tracker.connection_lost();
    co_return scenario_exit::connection;
  }
  if (!closing) {
    notice("connection lost: " + end.message());
    tracker.connection_lost();
    co_return scenario_exit::connection;
  }
  co_return tracker.all_as_expected() ? scenario_exit::ok : scenario_exit::unexpected;
}

}  // namespace agentws
