// The seam between the server and agent logic.
//
// A run is one call of agent::run(). The server owns everything around it:
// run_started before, the single terminal event after, cancellation, and the
// path from emit() to the socket. An agent only decides what to say and when.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "agentws/protocol.hpp"

namespace agentws {

// What a running agent sees of its run. Only valid during agent::run().
class run_context {
 public:
  virtual ~run_context() = default;

  virtual const std::string& run_id() const noexcept = 0;
  // The run's params: the server's defaults with the command's overrides.
  virtual const run_params& params() const noexcept = 0;
  // True once the run is cancelled (by the client or by shutdown).
  virtual bool cancelled() const noexcept = 0;

  // Sends one run_event; steps are numbered 0, 1, 2, ... in call order.
  // Suspends while the connection's outbox is full (nothing is ever dropped).
  // Returns false, without sending, once the run is cancelled.
  virtual boost::asio::awaitable<bool> emit(std::string_view text) = 0;

  // Waits `duration`; returns false at once if the run is cancelled meanwhile.
  // A zero duration still yields, so other runs and commands get their turn.
  virtual boost::asio::awaitable<bool> sleep_for(std::chrono::milliseconds duration) = 0;
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
  virtual boost::asio::awaitable<void> run(run_context& context) = 0;
};

// The original module's agent: params().steps events "agent step <n>", the
// first at once, params().interval_ms apart, and one more interval before done.
std::shared_ptr<agent> make_demo_agent();

}  // namespace agentws
