#include "agentws/scenario.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/websocket/error.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>
#include <utility>

#include "agentws/client.hpp"
#include "agentws/resume.hpp"

namespace agentws {

namespace asio = boost::asio;
using json = nlohmann::json;

namespace {

constexpr std::string_view color_reset = "\033[0m";

std::string_view color_of(event_kind kind) {
  switch (kind) {
    case event_kind::run_started:
      return "\033[36m";  // cyan
    case event_kind::run_done:
      return "\033[32m";  // green
    case event_kind::run_cancelled:
    case event_kind::run_gap:
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

agent_request agent_request::merged_with(const agent_request& overrides) const {
  agent_request merged = *this;
  if (overrides.agent) merged.agent = overrides.agent;
  if (overrides.input_json) merged.input_json = overrides.input_json;
  if (overrides.timeout_ms) merged.timeout_ms = overrides.timeout_ms;
  return merged;
}

std::string with_agent_request(const std::string& start_frame, const agent_request& request) {
  if (request.empty()) return start_frame;
  json message = json::parse(start_frame);
  if (request.agent) message["agent"] = *request.agent;
  if (request.input_json) message["input"] = json::parse(*request.input_json);
  if (request.timeout_ms) message["timeout_ms"] = *request.timeout_ms;
  return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string make_send_input(std::string_view run_id, std::string_view input_json) {
  json message = {{"command", "send_input"}, {"run_id", run_id}};
  message["input"] = json::parse(input_json);
  return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<std::string> compact_json_value(std::string_view text, std::string* problem) {
  auto refuse = [problem](std::string why) -> std::optional<std::string> {
    if (problem) *problem = std::move(why);
    return std::nullopt;
  };
  if (json_nesting_exceeds(text, max_input_depth)) {
    return refuse("nested deeper than " + std::to_string(max_input_depth) +
                  " levels (the server's limit, the command around it included)");
  }
  try {
    return json::parse(text).dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, ...": the
    // bracketed id says nothing to a user.
    std::string_view why = e.what();
    if (why.starts_with("[") && why.find("] ") != std::string_view::npos) {
      why.remove_prefix(why.find("] ") + 2);
    }
    return refuse("not JSON: " + printable(why));
  }
}

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
    case run_outcome::detached:
      return "detached";
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

void run_tracker::attach_sent(const std::string& run_id, std::int64_t after_seq,
                              run_outcome expected) {
  run_report fresh;
  fresh.run_id = run_id;
  fresh.expected = expected;
  fresh.attached_after = after_seq;
  reports_.push_back(std::move(fresh));
}

void run_tracker::lose(const std::string& run_id, const std::string& why) {
  run_report* run = current(run_id);
  if (!run || is_finished(run->outcome)) return;
  run->outcome = run_outcome::lost;
  run->detail = why;
}

void run_tracker::commands_unanswered() {
  pending_cancels_.clear();
  pending_inputs_.clear();
  pending_raw_ = 0;
}

void run_tracker::cancel_sent(const std::string& run_id) {
  ++pending_cancels_[run_id];
}

void run_tracker::raw_sent() {
  ++pending_raw_;
}

void run_tracker::input_sent(const std::string& run_id) {
  ++pending_inputs_[run_id];
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
  pending_inputs_.clear();
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

// The refusals only a send_input gets.
bool is_input_refusal(const received_event& event) {
  return event.code == "input_not_accepted" || event.code == "input_queue_full";
}

}  // namespace

bool run_tracker::input_answered(const received_event& event) {
  const auto cancel_waits = [this](const std::string& run_id) {
    const auto cancel = pending_cancels_.find(run_id);
    return cancel != pending_cancels_.end() && cancel->second > 0;
  };
  const auto pending = pending_inputs_.find(event.run_id);
  if (pending == pending_inputs_.end() || pending->second == 0) return false;
  const bool answer =
      event.event_type == "input_received" ||
      (event.kind == event_kind::error &&
       (is_input_refusal(event) ||
        // Also a cancel's refusal, which goes first when one waits.
        (event.code == "run_not_active" && !cancel_waits(event.run_id)) ||
        // Also a start's refusal (its agent refusing its input), first when one waits.
        (event.code == "invalid_input" && !oldest_unanswered(event.run_id))));
  if (answer) --pending->second;
  return answer;
}

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
  // The answer to a send_input says nothing about the run's own course.
  if (input_answered(event)) return;
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
  if (event.kind == event_kind::run_attached) {
    // The answer to an attach sent by this client. After -1 the replayed
    // run_started answers it; re-attaches after a reconnect find their run
    // running and change nothing.
    run_report* waiting = oldest_unanswered(id);
    if (!waiting || !waiting->attached_after || *waiting->attached_after < 0) return;
    waiting->outcome = run_outcome::running;
    waiting->resync_step = true;
    const bool nothing_to_come =
        event.state != "running" && event.last_seq &&
        static_cast<std::int64_t>(*event.last_seq) <= *waiting->attached_after;
    if (nothing_to_come) {
      // Ended at or before the point attached after: its terminal is not replayed.
      waiting->outcome = event.state == "cancelled" ? run_outcome::cancelled : run_outcome::done;
      waiting->detail = "ended before seq " + std::to_string(*waiting->attached_after + 1);
    }
    return;
  }
  if (event.kind == event_kind::run_gap) {
    if (run_report* run = current(id); run && !is_finished(run->outcome)) {
      run->resync_step = true;
      const std::optional<std::int64_t> after = gap_after_seq(event);
      if (after && event.first_seq && static_cast<std::int64_t>(*event.first_seq) > *after + 1) {
        run->missed += *event.first_seq - static_cast<std::uint64_t>(*after + 1);
      }
    }
    return;
  }
  if (event.kind == event_kind::run_detached) {
    if (run_report* run = current(id); run && run->outcome == run_outcome::running) {
      run->outcome = run_outcome::detached;
      run->detail = "detached: the run goes on";
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
      if (run->resync_step && event.step && *event.step >= run->events) {
        run->first_step = *event.step - run->events;  // attached midway, or after a gap
      }
      run->resync_step = false;
      if (!event.step || *event.step != run->first_step + run->events) {
        problems_.push_back(who + "step " +
                            (event.step ? std::to_string(*event.step) : std::string("missing")) +
                            " where " + std::to_string(run->first_step + run->events) + " was due");
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

bool run_tracker::going(const std::string& run_id) const {
  return std::any_of(reports_.begin(), reports_.end(), [&](const run_report& r) {
    return r.run_id == run_id && !is_finished(r.outcome);
  });
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

namespace {

// The fields of a run_event that every run_event has (text aside).
bool is_server_field(std::string_view key) {
  return key == "run_id" || key == "step" || key == "seq";
}

// What follows "step=N": the text as it is for a plain event (as version 1
// printed it); for an agent's structured event its kind, its text quoted
// (so that a delta's blanks and line breaks show) and its other fields.
std::string describe_run_event(const received_event& event) {
  json payload;
  try {
    payload = json::parse(event.payload_json);
  } catch (const json::exception&) {
    return printable(event.text);
  }
  if (!payload.is_object()) return printable(event.text);
  const bool plain = std::all_of(payload.items().begin(), payload.items().end(), [](auto item) {
    return is_server_field(item.key()) || (item.key() == "text" && item.value().is_string());
  });
  if (plain) return printable(event.text);
  std::string out;
  json rest = json::object();
  const auto kind = payload.find("kind");
  if (kind != payload.end() && kind->is_string()) out += printable(kind->get<std::string>());
  const auto text = payload.find("text");
  if (text != payload.end() && text->is_string()) {
    out += (out.empty() ? "" : " ") +
           printable(text->dump(-1, ' ', false, json::error_handler_t::replace));
  }
  for (const auto& [key, value] : payload.items()) {
    if (is_server_field(key)) continue;
    if (key == "kind" && value.is_string()) continue;
    if (key == "text" && value.is_string()) continue;
    rest[key] = value;
  }
  if (!rest.empty()) {
    out += (out.empty() ? "" : " ") +
           printable(rest.dump(-1, ' ', false, json::error_handler_t::replace));
  }
  return out;
}

// A failed run: the error's first line, with the program's exit code or
// signal when the error does not name it, then the rest of the error (a
// program's last lines of stderr) on lines of their own, indented so that
// none can pass for an event.
std::string describe_failure(const received_event& event) {
  std::string_view error = event.failure;
  const std::size_t first_end = error.find('\n');
  std::string out = printable(error.substr(0, first_end));
  json payload;
  try {
    payload = json::parse(event.payload_json);
  } catch (const json::exception&) {
    payload = json::object();
  }
  if (payload.is_object()) {
    std::string how;
    if (auto code = payload.find("exit_code"); code != payload.end() && code->is_number()) {
      how = "exit code " + code->dump();
    } else if (auto sig = payload.find("signal"); sig != payload.end()) {
      how = sig->is_string() ? sig->get<std::string>() : "signal " + sig->dump();
    }
    if (!how.empty() && error.find(how) == std::string_view::npos) {
      out += " (" + printable(how) + ")";
    }
  }
  if (first_end != std::string_view::npos) {
    std::string_view rest = error.substr(first_end + 1);
    while (!rest.empty()) {
      const std::size_t end = rest.find('\n');
      std::string_view piece = rest.substr(0, end);
      if (piece.ends_with('\r')) piece.remove_suffix(1);
      out += "\n    | " + printable(piece);
      if (end == std::string_view::npos) break;
      rest.remove_prefix(end + 1);
    }
  }
  return out;
}

}  // namespace

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
      line += " " + describe_run_event(event);
      break;
    case event_kind::run_done:
      if (!event.failure.empty()) line += " failed: " + describe_failure(event);
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
    case event_kind::run_attached:
    case event_kind::run_gap:
    case event_kind::runs:
      line += " " + describe_resume_event(event);
      break;
    default:
      break;
  }
  if (!event.request_id.empty()) {
    // After the runs listing's own lines, it would seem to belong to the last run.
    const std::size_t first_line_end = line.find('\n');
    line.insert(first_line_end == std::string::npos ? line.size() : first_line_end,
                " request_id=" + printable(event.request_id));
  }
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
    if (r.missed > 0) out += ", " + std::to_string(r.missed) + " not kept by the server (run_gap)";
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
  explicit scenario_state(const asio::any_io_executor& ex)
      : executor(ex), deadline(ex), retry(ex) {}
  asio::any_io_executor executor;
  std::unique_ptr<client_connection> connection;
  asio::steady_timer deadline;
  asio::steady_timer retry;  // the wait before reconnecting
  std::vector<std::unique_ptr<asio::steady_timer>> cancel_timers;
  std::vector<std::string> cancels_to_send;  // due while disconnected: sent on the next connection
  resume_book book;
  connected_session server;  // what the latest `connected` said
  std::string session_key;   // presented on the next connection
  disconnect_options disconnect;
  bool connected = false;
  bool started = false;  // the runs were started (and attached)
  bool finished = false;
  bool timed_out = false;
  // A run was cancelled for the server's shutdown: its 1001 close follows,
  // and the scenario ends with it (exit 3), not with a close of its own.
  bool server_stopping = false;
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
  state->session_key = plan.session;
  for (const attach_request& attach : plan.attaches)
    tracker.attach_sent(attach.run_id, attach.after_seq, run_outcome::done);

  // A frame the connection refuses (past its send bound): the scenario cannot
  // go on as planned and ends here.
  auto send_or_stop = [state, &notice, &tracker](std::string frame, const std::string& what) {
    if (auto ec = state->connection->send(std::move(frame))) {
      notice("cannot send " + what + ": " + ec.message());
      state->finished = true;
      state->deadline.cancel();
      state->connection->abort();
      tracker.connection_lost();
      return false;
    }
    return true;
  };
  auto send_cancel = [state, &tracker, report = output.on_notice](const std::string& run_id) {
    if (auto send_error = state->connection->send(make_cancel_run(run_id))) {
      if (report) {
        report("cannot send the cancel of " + printable(run_id) + ": " + send_error.message());
      }
      return;
    }
    tracker.cancel_sent(run_id);
  };
  // A run's start_run: its params, how it outlives the connection, its agent.
  auto start_frame = [state, &plan](const std::string& run_id) {
    return with_agent_request(make_start_run_with(run_id, plan.params, state->disconnect),
                              plan.agent);
  };
  // The runs planned: started, attached, and their cancels scheduled.
  auto start_runs = [&]() -> bool {
    state->started = true;
    for (const auto& run_id : plan.runs) {
      state->book.follow(run_id);
      if (!send_or_stop(start_frame(run_id), "the start of " + printable(run_id))) {
        return false;
      }
    }
    for (const attach_request& attach : plan.attaches) {
      state->book.follow(attach.run_id, attach.after_seq);
      if (!send_or_stop(make_attach_run(attach.run_id, attach.after_seq),
                        "the attach of " + printable(attach.run_id))) {
        return false;
      }
    }
    for (const auto& cancel : plan.cancels) {
      auto& timer = state->cancel_timers.emplace_back(
          std::make_unique<asio::steady_timer>(state->executor, cancel.after));
      timer->async_wait([state, send_cancel, run_id = cancel.run_id,
                         report = output.on_notice](const boost::system::error_code& ec) {
        if (ec || state->finished) return;
        if (!state->connected) {
          if (report) report("cancelling " + printable(run_id) + " once reconnected");
          state->cancels_to_send.push_back(run_id);
          return;
        }
        if (report) report("cancelling " + printable(run_id));
        send_cancel(run_id);
      });
    }
    return true;
  };
  // After a reconnect: the runs not ended are attached again after the last
  // seq printed, or lost when the server no longer knows the session.
  auto resume_runs = [&]() -> bool {
    if (!state->server.resumed) {
      for (const std::string& run_id : state->book.unfinished()) {
        tracker.lose(run_id, "the server no longer knows the session");
        state->book.forget(run_id);
      }
      notice("the server started a new session: the runs not ended are lost");
      return true;
    }
    const auto going = [&tracker](const std::string& run_id) { return tracker.going(run_id); };
    for (const attach_request& attach : state->book.reattach_all(going)) {
      notice("resuming " + printable(attach.run_id) + " after seq " +
             std::to_string(attach.after_seq));
      if (!send_or_stop(make_attach_run(attach.run_id, attach.after_seq),
                        "the attach of " + printable(attach.run_id))) {
        return false;
      }
    }
    for (const std::string& run_id : std::exchange(state->cancels_to_send, {})) {
      notice("cancelling " + printable(run_id));
      send_cancel(run_id);
    }
    return true;
  };

  // A named copy: GCC 12 destroys a braced temporary argument of a coroutine
  // call twice.
  handshake_options handshake{plan.token, plan.origin, plan.headers};
  bool first_connection = true;
  bool closing = false;
  std::chrono::milliseconds delay = first_reconnect_delay;
  boost::system::error_code end;
  for (;;) {
    ws_url target = *url;
    if (!state->session_key.empty()) {
      target.target = target_with_session(url->target, state->session_key);
    }
    state->connection = std::make_unique<client_connection>(state->executor);
    if (auto ec = co_await state->connection->connect(target, plan.connect_timeout, handshake,
                                                      plan.tls)) {
      if (state->timed_out) break;
      // The URL as given: the session key stays out of messages.
      notice(describe_connect_failure(*url, ec, state->connection->refusal(), !plan.token.empty()));
      if (first_connection) co_return scenario_exit::connection;
      if (!worth_retrying(ec, state->connection->refusal())) {
        tracker.connection_lost();
        break;
      }
      notice("retrying in " + std::to_string(delay.count()) + " ms");
      state->retry.expires_after(delay);
      co_await state->retry.async_wait(asio::as_tuple(asio::use_awaitable));
      if (state->timed_out) break;
      delay = next_reconnect_delay(delay);
      continue;
    }
    notice("connected to " + url->to_string());
    delay = first_reconnect_delay;
    state->connected = true;
    const bool reconnected = !first_connection;
    if (first_connection) {
      first_connection = false;
      state->deadline.expires_after(plan.timeout);
      state->deadline.async_wait([state](const boost::system::error_code& ec) {
        if (ec || state->finished) return;
        state->timed_out = true;
        state->retry.cancel();
        if (state->connection) state->connection->abort();
      });
      // Without --reconnect the runs start at once, as they always did; with
      // it, `connected` (the first frame) says first whether they can be resumed.
      if (!plan.reconnect && !start_runs()) co_return scenario_exit::connection;
    }

    for (;;) {
      auto [ec, text] = co_await state->connection->read();
      if (ec) {
        end = ec;
        break;
      }
      std::optional<received_event> event = parse_event(text);
      if (!event) {
        notice("ignoring a frame that is not an event: " + printable(text.substr(0, 120)));
        continue;
      }
      if (event->kind == event_kind::connected) {
        state->server = read_session_announcement(*event);
        if (state->server.resumes) {
          if (plan.announce_session && state->server.key != state->session_key) {
            notice("session " + printable(state->server.key) + " (ws-client --session " +
                   printable(state->server.key) + " continues it)");
          }
          state->session_key = state->server.key;
        }
        if (output.on_event) output.on_event(std::string(text), *event);
        bool sent = true;
        if (!state->started) {
          if (plan.reconnect && state->server.resumes) {
            state->disconnect.detach_grace_ms = detach_grace_for(state->server);
          }
          sent = start_runs();
        } else if (reconnected) {
          sent = resume_runs();
        }
        if (!sent) co_return scenario_exit::connection;
      } else {
        // A server whose first frame is not `connected` (the contract says it
        // is): the runs start anyway, without a grace, rather than never.
        if (!state->started && !start_runs()) co_return scenario_exit::connection;
        const reattach_outcome answer = state->book.on_reattach_answer(*event);
        const bool started_here =
            std::find(plan.runs.begin(), plan.runs.end(), event->run_id) != plan.runs.end();
        if (answer == reattach_outcome::restart && started_here) {
          notice("starting " + printable(event->run_id) + " again: the server never got its start");
          if (!send_or_stop(start_frame(event->run_id),
                            "the start of " + printable(event->run_id))) {
            co_return scenario_exit::connection;
          }
        } else if (answer == reattach_outcome::restart || answer == reattach_outcome::lost) {
          // This answers its run_not_found (an --attach run has no start to send again).
          notice(printable(event->run_id) + " is lost: the server no longer has it");
          tracker.lose(event->run_id, "the server no longer has the run");
        } else if (state->book.take(*event)) {  // false: a replay of what was printed before
          if (event->kind == event_kind::run_detached) state->book.forget(event->run_id);
          tracker.on_event(*event);
          if (output.on_event) output.on_event(std::string(text), *event);
          if (event->kind == event_kind::run_cancelled && event->reason == "shutdown") {
            state->server_stopping = true;
          }
        }
      }
      if (!closing && state->started && tracker.all_finished() && !state->server_stopping) {
        closing = true;
        state->finished = true;
        for (auto& timer : state->cancel_timers)
          timer->cancel();
        state->connection->close();
      }
    }
    state->connected = false;
    if (state->timed_out || closing) break;
    // Dropped with runs still going: a server that resumes keeps them for us.
    const bool resumable = plan.reconnect && state->server.resumes && state->started &&
                           !state->session_key.empty() && !tracker.all_finished();
    if (!resumable) break;
    const std::optional<server_close> close = state->connection->closed_by_server();
    std::string going;
    for (const std::string& run_id : state->book.unfinished()) {
      if (tracker.going(run_id)) going += (going.empty() ? "" : ", ") + printable(run_id);
    }
    notice((close ? describe_server_close(*close) : "connection lost: " + end.message()) +
           "; reconnecting to resume " + going);
    tracker.commands_unanswered();
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
  if (const std::optional<server_close> close = state->connection->closed_by_server()) {
    notice(describe_server_close(*close));
    tracker.connection_lost();
    co_return scenario_exit::connection;
  }
  if (!closing) {
    if (end) notice("connection lost: " + end.message());
    tracker.connection_lost();
    co_return scenario_exit::connection;
  }
  const auto& reports = tracker.reports();
  if (std::any_of(reports.begin(), reports.end(),
                  [](const run_report& r) { return r.outcome == run_outcome::lost; })) {
    co_return scenario_exit::connection;  // resumed, but some runs were not there any more
  }
  co_return tracker.all_as_expected() ? scenario_exit::ok : scenario_exit::unexpected;
}

}  // namespace agentws
