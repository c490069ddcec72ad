// One run on the server: the agent's coroutine and its cancellation, the
// run's history (run_log) and the connections that follow it. Runs are
// filed in the server's run_registry by owner and run_id, so a run outlives
// the connection that started it when its owner asks for that.
//
// Threading. A run lives on the strand of the connection that started it
// (its home); everything here runs there. That connection, while it follows
// the run, is its `home_follower`: plain calls, no hop, no copy but the one
// into its outbox (the common case, and all of version 1). Any other
// follower (a second tab, the owner back on a new connection) is a
// run_mailbox: the run appends frames to it under its lock, and the
// follower's strand drains it into its own outbox.
//
// Backpressure. Before each event the run waits until every follower has
// room, so nothing is lost for a follower; a run nobody follows never waits.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agentws/agent.hpp"
#include "agentws/events.hpp"
#include "agentws/protocol.hpp"
#include "server/run_log.hpp"

namespace agentws::detail {

class server_run;
class server_state;

// A run's cancellation, as each follower is told of it. The home follower
// builds its own run_cancelled from it (its last_step is per connection).
struct cancel_notice {
  std::uint64_t seq = 0;
  std::string_view ts;
  cancel_reason reason = cancel_reason::client;
  const std::optional<std::string>& request_id;
};

// The connection that started a run, while it follows it. Called on the
// run's home strand, which is that connection's own. `serial` is the tag the
// connection gave the run's frames.
class home_follower {
 public:
  virtual ~home_follower() = default;
  // Until the connection can take one more event; false once it closed or
  // the run was cancelled.
  virtual boost::asio::awaitable<bool> wait_for_room(server_run& run) = 0;
  // Whether the connection can take one more event now (no suspension: the
  // common case of an event costs no coroutine).
  virtual bool has_room_now(const server_run& run) = 0;
  // Lets commands the connection already received act before the run's next
  // slice (see basic_session's yield_to_commands).
  virtual boost::asio::awaitable<void> yield_to_commands(server_run& run) = 0;
  virtual void queue_run_event(std::uint64_t serial, std::string_view frame) = 0;
  // The run's terminal events; after either, the run no longer calls this follower.
  virtual void queue_run_done(server_run& run, std::uint64_t serial, std::string_view frame) = 0;
  virtual void queue_run_cancelled(server_run& run, std::uint64_t serial,
                                   const cancel_notice& notice) = 0;
};

// Frames of one run for one follower on another strand. The run appends on
// its strand; the follower drains on its own. Bounded: the run waits while
// it holds `max_bytes` (the follower drains only while its outbox has room),
// so a slow follower slows the run instead of growing memory.
class run_mailbox {
 public:
  enum class kind : std::uint8_t {
    answer,    // run_attached, run_gap: answers to the attach
    frame,     // an event of the run (its run_started too)
    terminal,  // run_done or run_cancelled: the last frame of the run
  };
  // What a follower implements to be told that frames wait.
  class reader {
   public:
    virtual ~reader() = default;
    virtual void drain_mailboxes() = 0;  // on the reader's strand
  };

  run_mailbox(boost::asio::any_io_executor reader_executor, std::weak_ptr<reader> drained_by,
              std::size_t max_bytes)
      : reader_executor_(std::move(reader_executor)),
        reader_(std::move(drained_by)),
        max_bytes_(max_bytes) {}

  // Run side. Room for one more event; when there is none, the run is woken
  // (server_run::wake on its home) once the reader made some.
  bool room_for_run(const std::shared_ptr<server_run>& run);
  void push(std::string_view frame, kind what);

  // Reader side. Hands frames to `take(std::string_view, kind)` in order
  // while `has_room()` (answers and terminals regardless), and all of them
  // when `everything`; false stops the drain early. True when frames are
  // left over.
  template <class HasRoom, class Take>
  bool drain(HasRoom&& has_room, Take&& take, bool everything = false);
  // The reader stopped following: the run pushes nothing more.
  void close();
  bool closed() const;
  bool empty() const;

 private:
  struct entry {
    std::size_t end;
    kind what;
  };
  void wake_run_if_room();

  const boost::asio::any_io_executor reader_executor_;
  const std::weak_ptr<reader> reader_;
  const std::size_t max_bytes_;
  mutable std::mutex mutex_;
  std::string bytes_;
  std::vector<entry> entries_;
  std::size_t consumed_entries_ = 0;
  std::size_t consumed_bytes_ = 0;
  bool drain_posted_ = false;
  bool closed_ = false;
  std::weak_ptr<server_run> waiting_run_;
};

class server_run final : public std::enable_shared_from_this<server_run> {
 public:
  struct settings {
    std::string owner;
    std::string run_id;
    std::string agent_name = "demo";
    std::shared_ptr<agentws::agent> agent;  // null: the server's demo agent
    run_params params;
    // The start_run's params object and input (null when absent).
    nlohmann::json params_json;
    nlohmann::json input;
    // Past it the run is cancelled with reason "timeout".
    std::optional<std::chrono::steady_clock::time_point> deadline;
    // Inputs the agent has not taken yet, at most.
    std::size_t max_input_queue = 16;
    disconnect_policy on_disconnect = disconnect_policy::cancel;
    std::chrono::milliseconds detach_grace{0};
    history_limits history;
  };

  // `prepared`: what the agent's prepare() returned, for its run() (dropped
  // when run() returns).
  server_run(settings run_settings, boost::asio::any_io_executor home,
             std::shared_ptr<void> prepared = nullptr);
  ~server_run();

  const std::string& owner() const noexcept { return settings_.owner; }
  const std::string& run_id() const noexcept { return settings_.run_id; }
  const std::string& agent_name() const noexcept { return settings_.agent_name; }
  // Null for the server's demo agent. Readable from any thread.
  const std::shared_ptr<agentws::agent>& agent_logic() const noexcept { return settings_.agent; }
  const run_params& params() const noexcept { return settings_.params; }
  const nlohmann::json& params_json() const noexcept { return settings_.params_json; }
  const nlohmann::json& input() const noexcept { return settings_.input; }
  const std::optional<std::chrono::steady_clock::time_point>& deadline() const noexcept {
    return settings_.deadline;
  }
  const boost::asio::any_io_executor& home() const noexcept { return home_; }
  const std::shared_ptr<void>& prepared() const noexcept { return prepared_; }
  // Readable from any thread (list_runs).
  std::uint64_t last_seq() const noexcept { return last_seq_.load(std::memory_order_relaxed); }
  run_state_name state() const noexcept { return state_.load(std::memory_order_relaxed); }

  // --- on the home strand only ---

  // Logs run_started (seq 0) and makes `follower` the home follower; the
  // frame, for the follower to queue as the answer to start_run.
  std::string_view begin(home_follower& follower, std::uint64_t serial,
                         const std::optional<std::string>& request_id);
  // The agent's run, to co_spawn on the home strand bound to cancel_slot().
  static boost::asio::awaitable<void> execute(std::shared_ptr<server_run> self,
                                              std::shared_ptr<server_state> state);
  boost::asio::cancellation_slot cancel_slot() noexcept { return cancel_signal_.slot(); }

  bool cancelled() const noexcept { return cancelled_; }
  bool ended() const noexcept { return ended_; }
  std::uint64_t next_step() const noexcept { return next_step_; }
  const run_log& log() const noexcept { return log_; }

  // Stops the run and tells every follower. The caller won the run's end in
  // the registry (run_registry::end), so this happens once. Returns the
  // run_cancelled frame as logged (for a canceller that does not follow).
  std::string cancel(cancel_reason reason, const std::optional<std::string>& request_id,
                     server_state& state);
  // For a stop of the server: cancels the run if it is still going.
  void cancel_for_shutdown(server_state& state);

  // A follower on another strand attaches: it gets run_attached, run_gap if
  // the history lost events after `after_seq`, the replay, then the live
  // events. A cursor past the run's last event is refused (nothing in the
  // mailbox).
  enum class attach_result {
    following,    // replayed, and live events follow
    ended,        // replayed; the run had ended (its end is in the mailbox if wanted)
    past_the_end  // after_seq > the last seq: refused
  };
  attach_result attach(const std::shared_ptr<run_mailbox>& mailbox, std::int64_t after_seq,
                       const std::optional<std::string>& request_id, server_state& state);
  // A mailbox follower stops following: by detach_run (`disconnected`
  // false) or because its connection closed. A detach_run that would leave
  // the run to nobody while the server holds its limit of detached runs is
  // refused (false, nothing changed).
  bool remove_mailbox(const run_mailbox* mailbox, bool disconnected, server_state& state);
  // The home follower stops following, likewise.
  bool remove_home(bool disconnected, server_state& state);
  // A mailbox made room: re-check.
  void wake() { wakeup_.cancel(); }

  // send_input: queues `input` for the agent and logs input_received for
  // every follower. `frame` gets the input_received as logged (for a
  // sender that does not follow the run).
  enum class input_verdict { queued, ended, not_accepted, queue_full };
  input_verdict push_input(nlohmann::json input, const std::optional<std::string>& request_id,
                           std::string& frame);

  // What the agent's run_context does (see agent.hpp): emit one run_event
  // once every follower has room, and sleep unless cancelled.
  boost::asio::awaitable<bool> agent_emit(std::string_view text);
  boost::asio::awaitable<bool> agent_emit_fields(const nlohmann::json& fields);
  boost::asio::awaitable<std::optional<nlohmann::json>> agent_next_input();
  boost::asio::awaitable<bool> agent_sleep(std::chrono::milliseconds duration);

 private:
  // Every mailbox has room (a full one wakes the run when it has some).
  bool mailboxes_have_room();
  // Until every follower has room for one more event; false once cancelled.
  boost::asio::awaitable<bool> wait_for_room();
  // Room for one more event now, with no yield due: the emit needs no await.
  bool may_emit_now();
  // Otherwise: yields if due, waits for room; false once cancelled.
  boost::asio::awaitable<bool> before_emit();
  void emit_event(std::string_view text);
  void emit_event_fields(const nlohmann::json& fields);
  // Hands the frame logged as `seq` to every follower.
  void fan_out(std::uint64_t seq);
  void finish(std::string_view failure, const nlohmann::json* failure_details, server_state& state);
  std::string_view now();
  std::size_t followers() const noexcept { return (home_follower_ ? 1 : 0) + mailboxes_.size(); }
  // The last follower left: by a disconnect, the run's on_disconnect policy
  // applies; by detach_run, it goes on. Either way it counts as detached.
  void orphaned(bool disconnected, server_state& state);
  // For a detach_run: whether the run may go on with no follower.
  bool may_detach(server_state& state);
  void adopted(server_state& state);
  void cancel_if_going(cancel_reason reason, server_state& state);
  // The home follower stops following.
  home_follower* release_home() { return std::exchange(home_follower_, nullptr); }

  const settings settings_;
  const boost::asio::any_io_executor home_;
  std::shared_ptr<void> prepared_;
  run_log log_;
  boost::asio::cancellation_signal cancel_signal_;
  boost::asio::steady_timer wakeup_;       // a mailbox made room
  boost::asio::steady_timer grace_timer_;  // detach_grace_ms after the last follower left
  boost::asio::steady_timer sleep_timer_;  // the agent's sleep_for
  boost::asio::steady_timer input_timer_;  // the agent waits for input
  boost::asio::steady_timer deadline_timer_;
  // Bounded by settings_.max_input_queue (a few): a vector, which unlike a
  // deque allocates nothing until the first input.
  std::vector<nlohmann::json> inputs_;
  timestamp_formatter clock_;
  std::string now_;
  bool cancelled_ = false;
  bool ended_ = false;
  std::uint64_t next_step_ = 0;
  unsigned emits_since_yield_ = 0;
  home_follower* home_follower_ = nullptr;  // null: the home connection does not follow
  std::uint64_t home_serial_ = 0;
  std::vector<std::shared_ptr<run_mailbox>> mailboxes_;
  std::atomic<std::uint64_t> last_seq_{0};
  std::atomic<run_state_name> state_{run_state_name::running};
};

template <class HasRoom, class Take>
bool run_mailbox::drain(HasRoom&& has_room, Take&& take, bool everything) {
  std::lock_guard lock(mutex_);
  drain_posted_ = false;
  std::size_t begin = consumed_bytes_;
  while (consumed_entries_ < entries_.size()) {
    const entry& next = entries_[consumed_entries_];
    if (!everything && next.what == kind::frame && !has_room()) break;
    take(std::string_view(bytes_).substr(begin, next.end - begin), next.what);
    begin = next.end;
    ++consumed_entries_;
    consumed_bytes_ = begin;
  }
  if (consumed_entries_ == entries_.size()) {
    bytes_.clear();
    entries_.clear();
    consumed_entries_ = consumed_bytes_ = 0;
  } else if (consumed_bytes_ >= max_bytes_) {
    // A reader that never catches up completely: drop what it took.
    bytes_.erase(0, consumed_bytes_);
    entries_.erase(entries_.begin(),
                   entries_.begin() + static_cast<std::ptrdiff_t>(consumed_entries_));
    for (entry& left : entries_)
      left.end -= consumed_bytes_;
    consumed_entries_ = consumed_bytes_ = 0;
  }
  wake_run_if_room();
  return !entries_.empty();
}

}  // namespace agentws::detail
