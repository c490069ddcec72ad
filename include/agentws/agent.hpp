// The seam between the server and agent logic.
//
// A run is one call of agent::run(). The server owns everything around it:
// run_started before, the single terminal event after, cancellation, and the
// path from emit() to the socket. An agent only decides what to say and when.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "agentws/protocol.hpp"

namespace agentws {

// What a running agent sees of its run. Only valid during agent::run().
class run_context {
 public:
  virtual ~run_context() = default;

  virtual const std::string& run_id() const noexcept = 0;
  // The demo agent's params: the server's defaults with the command's overrides.
  virtual const run_params& params() const noexcept = 0;
  // The start_run's `params` object and `input` value (null when absent),
  // as the client sent them; validated by agent::validate before the run.
  virtual const nlohmann::json& params_json() const noexcept = 0;
  virtual const nlohmann::json& input() const noexcept = 0;
  // The run's deadline (timeout_ms), if it has one: past it the server
  // cancels the run with reason "timeout".
  virtual std::optional<std::chrono::steady_clock::time_point> deadline() const noexcept = 0;
  // True once the run is cancelled (by the client or by shutdown).
  virtual bool cancelled() const noexcept = 0;
  // What agent::prepare returned for this run (null if nothing).
  virtual const std::shared_ptr<void>& prepared() const noexcept = 0;

  // Sends one run_event; steps are numbered 0, 1, 2, ... in call order.
  // Suspends while the connection's outbox is full (nothing is ever dropped).
  // Returns false, without sending, once the run is cancelled.
  virtual boost::asio::awaitable<bool> emit(std::string_view text) = 0;
  // Sends one run_event with the agent's own fields (a JSON object, e.g.
  // {"kind": "text_delta", "text": "Hel"}); the server adds run_id, step and
  // seq, and drops fields of those names. Otherwise as emit(text).
  virtual boost::asio::awaitable<bool> emit_fields(const nlohmann::json& fields) = 0;
  // The next input a client sent to this run (send_input), in order;
  // nothing once the run is cancelled. Only for agents that accept input.
  virtual boost::asio::awaitable<std::optional<nlohmann::json>> next_input() = 0;

  // Waits `duration`; returns false at once if the run is cancelled meanwhile.
  // A zero duration still yields, so other runs and commands get their turn.
  virtual boost::asio::awaitable<bool> sleep_for(std::chrono::milliseconds duration) = 0;
};

// A run about to start, as agent::prepare sees it.
struct run_start {
  const std::string& run_id;
  const nlohmann::json& params;  // null when absent
  const nlohmann::json& input;   // null when absent
  // The run's home: run() runs there, and whatever prepare() creates for the
  // run (a child process, a socket) may be bound to it.
  const boost::asio::any_io_executor& executor;
};

// What agent::prepare decides: a refusal (the start gets this error, no run
// exists), or the run's own state, handed to run() as
// run_context::prepared().
struct prepared_run {
  std::optional<protocol_error> refusal;
  std::shared_ptr<void> state;
};

// Thrown by an agent to end its run with run_done {"ok": false, "error":
// what()} and `details`' members besides (a program agent's exit_code or
// signal). The server's own fields (run_id, seq, ok, error) win over them.
class run_failure : public std::runtime_error {
 public:
  explicit run_failure(const std::string& message,
                       nlohmann::json details = nlohmann::json::object())
      : std::runtime_error(message), details_(std::move(details)) {}
  const nlohmann::json& details() const noexcept { return details_; }

 private:
  nlohmann::json details_;
};

// Agent logic. One instance serves every run of every connection, possibly on
// several threads at once: keep per-run state in the coroutine, not in members.
//
// Cancellation: emit() and sleep_for() return false; any other Asio operation
// the agent awaits completes or throws with operation_aborted. Returning (or
// that exception) after cancellation is the normal way to stop. Any other
// exception ends the run with run_done {"ok": false, "error": what()}.
class agent {
 public:
  virtual ~agent() = default;

  // What `connected` says of it (its name is the one it is registered under).
  virtual std::string description() const { return {}; }
  // Whether clients may send_input to its runs.
  virtual bool accepts_input() const { return false; }
  // Whether its params are the demo agent's (steps and interval_ms, read
  // into run_context::params()): then the server refuses them with version
  // 1's bounds and messages before validate() is asked.
  virtual bool takes_demo_params() const { return true; }
  // Refuses a start before the run exists (invalid_params, invalid_input):
  // a bad start is an error event, not a failed run. Runs on an I/O thread:
  // keep it quick. By default anything goes.
  virtual std::optional<protocol_error> validate(const nlohmann::json& params,
                                                 const nlohmann::json& input,
                                                 const protocol_limits& limits) const {
    (void)params;
    (void)input;
    (void)limits;
    return std::nullopt;
  }

  // Refuses a send_input's input (invalid_input) before it is queued for
  // a run of this agent; any thread, keep it quick. By default anything goes.
  virtual std::optional<protocol_error> validate_input(const nlohmann::json& input) const {
    (void)input;
    return std::nullopt;
  }

  // After validate(), on the run's home just before run_started: acquire
  // what the run cannot start without (a process, a connection to a model),
  // or refuse the start (unavailable, too_many_processes). Keep it quick.
  // The state returned is dropped unused when the start is refused after
  // all (the run_id turned out to be taken). By default: nothing to do.
  virtual prepared_run prepare(const run_start& start) const {
    (void)start;
    return {};
  }

  virtual boost::asio::awaitable<void> run(run_context& context) = 0;
};

// The original module's agent ("demo"): params().steps events "agent step
// <n>", the first at once, params().interval_ms apart, and one more interval
// before done. Takes no input.
std::shared_ptr<agent> make_demo_agent();

}  // namespace agentws
