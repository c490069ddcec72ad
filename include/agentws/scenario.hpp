// The client's scenario: which runs to start and cancel, how to follow them
// from the events that arrive, and how to print them. The tracking and the
// formatting are pure; run_scenario() wires them to a connection.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentws/client.hpp"
#include "agentws/events.hpp"
#include "agentws/protocol.hpp"
#include "agentws/resume.hpp"

namespace agentws {

struct planned_cancel {
  std::string run_id;
  std::chrono::milliseconds after{0};  // counted from when the runs were started
};

// The longest agent name a server takes (the protocol's limit): a longer
// one is refused with unknown_agent.
inline constexpr std::size_t max_agent_name_bytes = 128;
// The deepest an input may nest: the server's limit (64) counts the command
// object around it.
inline constexpr std::size_t max_input_depth = 63;

// What a start_run asks of its agent. Each field is sent only when set, so a
// client asked for none of them sends what the original server knows.
struct agent_request {
  std::optional<std::string> agent;         // "agent": a name the server offers
  std::optional<std::string> input_json;    // "input": one JSON value, compact
  std::optional<std::uint64_t> timeout_ms;  // "timeout_ms": the run's deadline
  bool empty() const noexcept { return !agent && !input_json && !timeout_ms; }
  // `overrides`' fields where set, this one's elsewhere.
  agent_request merged_with(const agent_request& overrides) const;
};

// The start_run `start_frame` with `request`'s fields added; the frame as it
// is when `request` is empty.
std::string with_agent_request(const std::string& start_frame, const agent_request& request);

// send_input for `run_id` with `input_json` (one JSON value, checked).
std::string make_send_input(std::string_view run_id, std::string_view input_json);

// `text` as one JSON value in compact form, or nullopt with `problem` set
// ("not JSON: ...", "nested deeper than 63 levels"). Deep nesting is
// refused before parsing, so no input can exhaust the stack.
std::optional<std::string> compact_json_value(std::string_view text, std::string* problem);

struct scenario {
  std::string url = "ws://localhost:8000/ws";
  std::string token;   // sent as "Authorization: Bearer <token>" when set
  std::string origin;  // the Origin header of the upgrade request, when set
  std::vector<std::pair<std::string, std::string>> headers;  // extra request headers
  tls_options tls;                                           // for wss:// URLs
  std::vector<std::string> runs{"run-001", "run-002"};
  std::vector<planned_cancel> cancels{{"run-002", std::chrono::milliseconds(2500)}};
  run_params_override params;  // sent only when set: the original server has no params
  agent_request agent;         // --agent, --input, --timeout-ms: likewise
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds timeout{60'000};  // for the whole scenario
  // Runs of another connection to follow (--attach), waited for like the runs started.
  std::vector<attach_request> attaches;
  std::string session;  // continue this session (--session): ?session=KEY
  // --reconnect: against a server that announces "resume", runs are started
  // with a detach grace (resume_grace) and a dropped connection is followed
  // by a new one in the same session that attaches every run not ended after
  // the last seq printed. Against any other server the scenario is the same
  // as without it.
  bool reconnect = false;
  // Say the session key once connected (on_notice): not with --json, whose
  // connected event carries it already.
  bool announce_session = true;
};

// The longest run_id the client sends: the protocol's default limit (ws-server
// --max-run-id-bytes). A longer id is refused with an error that names no
// run, so no run could wait for its answer.
inline constexpr std::size_t max_run_id_bytes = 256;

// Why `run_id` cannot be sent ("the run_id is empty", "the run_id is 300
// bytes, longer than 256"), or nullopt when it can.
std::optional<std::string> run_id_problem(std::string_view run_id);

// Parses "run-002@2.5" (seconds). nullopt if malformed.
std::optional<planned_cancel> parse_planned_cancel(std::string_view text);

// detached: this client stopped following the run (detach_run); it goes on.
enum class run_outcome { not_started, running, done, failed, cancelled, refused, lost, detached };
std::string_view to_string(run_outcome outcome) noexcept;

struct run_report {
  std::string run_id;
  run_outcome outcome = run_outcome::not_started;
  run_outcome expected = run_outcome::done;
  std::uint64_t events = 0;  // run_event frames
  std::optional<std::uint64_t> last_step;
  std::string detail;  // error message, cancel reason, failure text
  // Followed with attach_run after this seq (-1: from run_started), not started.
  std::optional<std::int64_t> attached_after;
  // The step the first run_event should carry: 0 for a run followed from
  // its start; for one attached midway (or after a run_gap) the step met then.
  std::uint64_t first_step = 0;
  bool resync_step = false;  // take the next run_event's step as it comes
  std::uint64_t missed = 0;  // events the server no longer kept (run_gap)
  bool as_expected() const noexcept { return outcome == expected; }
};

// Follows runs from their events and checks the contract's ordering rules.
// A run_id may be reused: each start is its own run report, and the server's
// answers for one id arrive in the order its commands were sent, so each
// answer goes to the oldest start (or cancel) of that id still waiting for one.
class run_tracker {
 public:
  // `runs` are started at once; `cancels` say which are expected to be cancelled.
  run_tracker(const std::vector<std::string>& runs, const std::vector<planned_cancel>& cancels);

  void on_event(const received_event& event);
  // A start_run for `run_id` was sent: a new run report, waiting for its answer
  // (the id may still be running: the server then refuses the start).
  void track(const std::string& run_id, run_outcome expected);
  // A cancel_run for `run_id` was sent: its refusal ("No active run to
  // cancel") is an answer, not a problem.
  void cancel_sent(const std::string& run_id);
  // An attach_run for `run_id` after `after_seq` was sent: a new run report,
  // answered by run_attached (after_seq -1: by the replayed run_started).
  void attach_sent(const std::string& run_id, std::int64_t after_seq, run_outcome expected);
  // The run's events can no longer come (the server forgot the run, or the
  // session): the run still going of `run_id` is lost, for `why`.
  void lose(const std::string& run_id, const std::string& why);
  // The connection dropped and its runs are to be resumed on the next one:
  // the answers to commands sent on it will not come (the events will).
  void commands_unanswered();
  // A frame the client does not understand itself was sent (ws-client -i's
  // raw): the next refusal that no start or cancel explains is its answer.
  void raw_sent();
  // A send_input for `run_id` was sent: its refusal (input_not_accepted,
  // input_queue_full, run_not_active) is an answer, not a problem, and not
  // the refusal of a start.
  void input_sent(const std::string& run_id);
  // The connection ended: runs still going are lost.
  void connection_lost();
  bool all_finished() const;
  bool all_as_expected() const;
  // Run reports in the order the starts were sent.
  const std::vector<run_report>& reports() const noexcept { return reports_; }
  // Whether a report of `run_id` is still waited for (running, or its start
  // or attach not answered yet).
  bool going(const std::string& run_id) const;
  // Contract violations seen (events after a terminal, steps out of order...).
  const std::vector<std::string>& problems() const noexcept { return problems_; }

 private:
  // The report an event of `run_id` belongs to: its running run, else its
  // oldest start without an answer, else its latest run. nullptr: none.
  run_report* current(const std::string& run_id);
  run_report* oldest_unanswered(const std::string& run_id);
  // Whether `event` answers a send_input sent (input_received, or its
  // refusal); it is then counted as answered.
  bool input_answered(const received_event& event);
  std::vector<run_report> reports_;
  std::vector<std::string> problems_;
  std::map<std::string, std::uint64_t> pending_cancels_;
  std::map<std::string, std::uint64_t> pending_inputs_;
  std::uint64_t pending_raw_ = 0;
};

// One readable line per event, e.g.
//   2026-11-25T17:36:10.123456+00:00 [run-002] run_event step=1 agent step 1
// An agent's structured event gives its kind, its text quoted, then its
// other fields as compact JSON:
//   ... [run-005] run_event step=0 text_delta "Hel" {"index":0}
// A failed run_done gives the error's first line (a program's exit code or
// signal added when the error does not say it), and the rest of the error
// (a program's last lines of stderr) indented below it.
std::string format_event_line(const received_event& event, bool color);

// An event's JSON text on one line (ws-client --json). A server may put line
// breaks between JSON tokens (pretty-printing); inside strings JSON allows
// them only escaped, so replacing each CR and LF with a space keeps the
// meaning and makes "one event per line" hold for any server.
std::string json_on_one_line(std::string_view raw_json);

// The end-of-scenario table: one line per run and a verdict.
std::string format_summary(const run_tracker& tracker, bool color);

enum class scenario_exit : int {
  ok = 0,          // every run ended as expected
  unexpected = 1,  // a run ended otherwise, or the server broke the contract
  usage = 2,       // bad command line
  connection = 3,  // could not connect, or the connection was lost
  timeout = 4,     // the runs did not finish in time
};

struct scenario_output {
  std::function<void(const std::string& raw, const received_event& event)> on_event;
  std::function<void(const std::string& line)> on_notice;  // progress, to stderr
};

// Connects, starts the runs, sends the planned cancels, feeds every event to
// `tracker` and `output`, closes cleanly when all runs ended.
boost::asio::awaitable<scenario_exit> run_scenario(const scenario& plan, run_tracker& tracker,
                                                   const scenario_output& output);

}  // namespace agentws
