#include "server/server_run.hpp"

#include <stdexcept>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <exception>

#include "server/server_state.hpp"

namespace agentws::detail {

namespace asio = boost::asio;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

// A run streaming without pauses yields this often: to commands of its home
// connection (see basic_session::yield_to_commands), or, with none, to the
// other work of its thread.
constexpr unsigned emits_between_yields = 64;

}  // namespace

// ---- run_mailbox ----

bool run_mailbox::room_for_run(const std::shared_ptr<server_run>& run) {
  std::lock_guard lock(mutex_);
  if (closed_ || bytes_.size() - consumed_bytes_ < max_bytes_) return true;
  waiting_run_ = run;
  return false;
}

void run_mailbox::push(std::string_view frame, kind what) {
  std::lock_guard lock(mutex_);
  if (closed_) return;
  bytes_.append(frame);
  entries_.push_back({bytes_.size(), what});
  if (drain_posted_) return;
  drain_posted_ = true;
  asio::post(reader_executor_, [weak = reader_] {
    if (auto target = weak.lock()) target->drain_mailboxes();
  });
}

void run_mailbox::wake_run_if_room() {
  // Under the lock.
  if (bytes_.size() - consumed_bytes_ >= max_bytes_ && !closed_) return;
  if (auto run = waiting_run_.lock()) {
    waiting_run_.reset();
    asio::post(run->home(), [run] { run->wake(); });
  }
}

void run_mailbox::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  bytes_.clear();
  bytes_.shrink_to_fit();
  entries_.clear();
  entries_.shrink_to_fit();
  consumed_entries_ = consumed_bytes_ = 0;
  wake_run_if_room();
}

bool run_mailbox::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

bool run_mailbox::empty() const {
  std::lock_guard lock(mutex_);
  return consumed_entries_ == entries_.size();
}

// ---- the agent's view of its run ----

namespace {

// What an agent sees of its run. Forwards to the run: the coroutines are
// the run's own members.
class agent_context final : public run_context {
 public:
  explicit agent_context(server_run& run) : run_(&run) {}

  const std::string& run_id() const noexcept override { return run_->run_id(); }
  const run_params& params() const noexcept override { return run_->params(); }
  const nlohmann::json& params_json() const noexcept override { return run_->params_json(); }
  const nlohmann::json& input() const noexcept override { return run_->input(); }
  std::optional<std::chrono::steady_clock::time_point> deadline() const noexcept override {
    return run_->deadline();
  }
  bool cancelled() const noexcept override { return run_->cancelled(); }
  const std::shared_ptr<void>& prepared() const noexcept override { return run_->prepared(); }
  asio::awaitable<bool> emit(std::string_view text) override { return run_->agent_emit(text); }
  asio::awaitable<bool> emit_fields(const nlohmann::json& fields) override {
    return run_->agent_emit_fields(fields);
  }
  asio::awaitable<std::optional<nlohmann::json>> next_input() override {
    return run_->agent_next_input();
  }
  asio::awaitable<bool> sleep_for(std::chrono::milliseconds duration) override {
    return run_->agent_sleep(duration);
  }

 private:
  server_run* run_;
};

}  // namespace

// (GCC 12 miscompiles a co_await inside a condition, `if (!co_await f())`:
// the results are named first, here and in the session.)
// The common case, room everywhere and no yield due, awaits nothing: an
// awaited coroutine per event costs a frame and a resume (the event path's
// first version paid 40 % for two of them).
bool server_run::may_emit_now() {
  if (cancelled_ || emits_since_yield_ + 1 >= emits_between_yields) return false;
  if (home_follower_ && !home_follower_->has_room_now(*this)) return false;
  if (!mailboxes_have_room()) return false;
  ++emits_since_yield_;
  return true;
}

asio::awaitable<bool> server_run::agent_emit(std::string_view text) {
  if (!may_emit_now()) {
    const bool may_emit = co_await before_emit();
    if (!may_emit) co_return false;
  }
  emit_event(text);
  co_return true;
}

asio::awaitable<bool> server_run::agent_emit_fields(const nlohmann::json& fields) {
  if (!fields.is_object()) throw std::invalid_argument("an agent's event must be a JSON object");
  if (!may_emit_now()) {
    const bool may_emit = co_await before_emit();
    if (!may_emit) co_return false;
  }
  emit_event_fields(fields);
  co_return true;
}

asio::awaitable<std::optional<nlohmann::json>> server_run::agent_next_input() {
  for (;;) {
    if (cancelled_) co_return std::nullopt;
    if (!inputs_.empty()) {
      nlohmann::json next = std::move(inputs_.front());
      inputs_.erase(inputs_.begin());
      co_return next;
    }
    input_timer_.expires_at(asio::steady_timer::time_point::max());
    co_await input_timer_.async_wait(nothrow);  // push_input and cancel wake it
    // The agent's own wait was cancelled (say, one branch of its `||`).
    const asio::cancellation_state waiter = co_await asio::this_coro::cancellation_state;
    if (waiter.cancelled() != asio::cancellation_type::none) co_return std::nullopt;
  }
}

server_run::input_verdict server_run::push_input(nlohmann::json input,
                                                 const std::optional<std::string>& request_id,
                                                 std::string& frame) {
  if (ended_) return input_verdict::ended;
  const agentws::agent* logic = settings_.agent.get();
  if (!logic || !logic->accepts_input()) return input_verdict::not_accepted;
  if (inputs_.size() >= settings_.max_input_queue) return input_verdict::queue_full;
  inputs_.push_back(std::move(input));
  const std::string_view ts = now();
  const std::uint64_t seq = log_.append([&](std::string& out, std::uint64_t input_seq) {
    append_input_received(out, ts, run_id(), input_seq, request_id);
  });
  last_seq_.store(seq, std::memory_order_relaxed);
  frame.assign(log_.at(seq));
  fan_out(seq);
  input_timer_.cancel();
  return input_verdict::queued;
}

asio::awaitable<bool> server_run::before_emit() {
  if (cancelled_) co_return false;
  if (++emits_since_yield_ >= emits_between_yields) {
    emits_since_yield_ = 0;
    if (home_follower_) {
      co_await home_follower_->yield_to_commands(*this);
    } else {
      co_await asio::post(asio::use_awaitable);  // to the other work of the home
    }
    if (cancelled_) co_return false;
  }
  // The common case, room everywhere, awaits nothing.
  const bool room_now =
      (!home_follower_ || home_follower_->has_room_now(*this)) && mailboxes_have_room();
  if (!room_now) {
    const bool room = co_await wait_for_room();
    if (!room) co_return false;
  }
  co_return true;
}

asio::awaitable<bool> server_run::agent_sleep(std::chrono::milliseconds duration) {
  if (cancelled_) co_return false;
  if (duration.count() <= 0) {
    co_await asio::post(asio::use_awaitable);
  } else {
    sleep_timer_.expires_after(duration);
    co_await sleep_timer_.async_wait(nothrow);
  }
  co_return !cancelled_;
}

// ---- server_run ----

server_run::server_run(settings run_settings, asio::any_io_executor home,
                       std::shared_ptr<void> prepared)
    : settings_(std::move(run_settings)),
      home_(std::move(home)),
      prepared_(std::move(prepared)),
      log_(settings_.history),
      wakeup_(home_),
      grace_timer_(home_),
      sleep_timer_(home_),
      input_timer_(home_),
      deadline_timer_(home_) {}

server_run::~server_run() = default;

std::string_view server_run::now() {
  now_.clear();
  clock_.append(now_, wall_clock::now());
  return now_;
}

std::string_view server_run::begin(home_follower& follower, std::uint64_t serial,
                                   const std::optional<std::string>& request_id) {
  home_follower_ = &follower;
  home_serial_ = serial;
  const std::uint64_t seq = log_.append([&](std::string& out, std::uint64_t) {
    append_run_started(out, now(), run_id(), request_id);
  });
  return log_.at(seq);
}

asio::awaitable<void> server_run::execute(std::shared_ptr<server_run> self,
                                          std::shared_ptr<server_state> state) {
  agent_context handle(*self);
  if (self->settings_.deadline) {
    self->deadline_timer_.expires_at(*self->settings_.deadline);
    self->deadline_timer_.async_wait([self, state](const boost::system::error_code& ec) {
      if (!ec) self->cancel_if_going(cancel_reason::timeout, *state);
    });
  }
  const std::shared_ptr<agentws::agent> logic =
      self->settings_.agent ? self->settings_.agent : state->find_agent("demo")->logic;
  std::string failure;
  nlohmann::json failure_details;
  try {
    co_await logic->run(handle);
  } catch (const run_failure& e) {
    if (!self->cancelled_) {
      failure = e.what()[0] ? e.what() : "agent failed";
      failure_details = e.details();
    }
  } catch (const std::exception& e) {
    if (!self->cancelled_) failure = e.what()[0] ? e.what() : "agent failed";
  } catch (...) {
    if (!self->cancelled_) failure = "agent failed with an unknown exception";
  }
  // What the agent held for the run goes with its run (the run itself may
  // be retained for later attaches much longer).
  self->prepared_.reset();
  if (!failure.empty()) {
    spdlog::warn("run {} of {} failed: {}", printable(self->run_id()), self->owner(),
                 printable(failure));
  }
  // A cancelled run is already answered; not awaiting anything then also
  // spares an exception (a cancelled coroutine throws at its next co_await).
  if (self->cancelled_) co_return;
  co_await self->wait_for_room();
  // A cancel may have won the run's end meanwhile: then it answers.
  if (!self->cancelled_ &&
      state->registry->end(self->owner(), self->run_id(), self.get(), run_state_name::done,
                           std::chrono::steady_clock::now())) {
    self->finish(failure, &failure_details, *state);
  }
}

bool server_run::mailboxes_have_room() {
  if (mailboxes_.empty()) return true;
  const auto self = shared_from_this();
  for (const auto& mailbox : mailboxes_) {
    if (!mailbox->room_for_run(self)) return false;
  }
  return true;
}

asio::awaitable<bool> server_run::wait_for_room() {
  for (;;) {
    if (cancelled_) co_return false;
    if (home_follower* home = home_follower_) {
      const bool room = co_await home->wait_for_room(*this);
      if (!room) {
        if (cancelled_) co_return false;
        // Its connection closed: it no longer follows (remove_home), so
        // look again without it; if it still does, stop waiting for it.
        if (home_follower_ == home) co_return true;
        continue;
      }
    }
    if (mailboxes_have_room()) co_return true;
    wakeup_.expires_at(asio::steady_timer::time_point::max());
    co_await wakeup_.async_wait(nothrow);
  }
}

void server_run::emit_event(std::string_view text) {
  const std::uint64_t step = next_step_++;
  const std::string_view ts = now();
  const std::uint64_t seq = log_.append([&](std::string& out, std::uint64_t event_seq) {
    append_run_event(out, ts, run_id(), step, event_seq, text);
  });
  fan_out(seq);
}

void server_run::emit_event_fields(const nlohmann::json& fields) {
  const std::uint64_t step = next_step_++;
  const std::string_view ts = now();
  const std::uint64_t seq = log_.append([&](std::string& out, std::uint64_t event_seq) {
    append_run_event_fields(out, ts, run_id(), step, event_seq, fields);
  });
  fan_out(seq);
}

void server_run::fan_out(std::uint64_t seq) {
  const std::string_view frame = log_.at(seq);
  if (home_follower_) home_follower_->queue_run_event(home_serial_, frame);
  for (const auto& mailbox : mailboxes_)
    mailbox->push(frame, run_mailbox::kind::frame);
  last_seq_.store(seq, std::memory_order_relaxed);
}

void server_run::finish(std::string_view failure, const nlohmann::json* failure_details,
                        server_state& state) {
  ended_ = true;
  grace_timer_.cancel();
  deadline_timer_.cancel();
  input_timer_.cancel();
  const std::uint64_t seq = log_.append([&](std::string& out, std::uint64_t done_seq) {
    append_run_done(out, now(), run_id(), done_seq, failure, failure_details);
  });
  last_seq_.store(seq, std::memory_order_relaxed);
  state_.store(run_state_name::done, std::memory_order_relaxed);
  const std::string_view frame = log_.at(seq);
  if (home_follower* home = release_home()) {
    home->queue_run_done(*this, home_serial_, frame);
  }
  for (const auto& mailbox : mailboxes_)
    mailbox->push(frame, run_mailbox::kind::terminal);
  mailboxes_.clear();
  log_.shrink();
  state.counters.runs_done.fetch_add(1, std::memory_order_relaxed);
}

std::string server_run::cancel(cancel_reason reason, const std::optional<std::string>& request_id,
                               server_state& state) {
  cancelled_ = true;
  ended_ = true;
  grace_timer_.cancel();
  deadline_timer_.cancel();
  input_timer_.cancel();
  const std::optional<std::uint64_t> last_step =
      next_step_ > 0 ? std::optional<std::uint64_t>(next_step_ - 1) : std::nullopt;
  const std::string_view ts = now();
  const std::uint64_t seq = log_.append([&](std::string& out, std::uint64_t cancel_seq) {
    append_run_cancelled(out, ts, run_id(), cancel_seq, reason, request_id, last_step);
  });
  last_seq_.store(seq, std::memory_order_relaxed);
  state_.store(run_state_name::cancelled, std::memory_order_relaxed);
  std::string frame(log_.at(seq));
  // Followers are told before the run is woken to unwind, so their writers
  // (woken first) send the answer without waiting for the run's coroutine.
  if (home_follower* home = release_home()) {
    home->queue_run_cancelled(*this, home_serial_, cancel_notice{seq, ts, reason, request_id});
  }
  for (const auto& mailbox : mailboxes_)
    mailbox->push(frame, run_mailbox::kind::terminal);
  mailboxes_.clear();
  wakeup_.cancel();
  cancel_signal_.emit(asio::cancellation_type::terminal);
  log_.shrink();
  auto& counters = state.counters;
  switch (reason) {
    case cancel_reason::client:
      counters.runs_cancelled_client.fetch_add(1, std::memory_order_relaxed);
      break;
    case cancel_reason::shutdown:
      counters.runs_cancelled_shutdown.fetch_add(1, std::memory_order_relaxed);
      break;
    case cancel_reason::disconnect:
      counters.runs_cancelled_disconnect.fetch_add(1, std::memory_order_relaxed);
      break;
    case cancel_reason::timeout:
      counters.runs_cancelled_timeout.fetch_add(1, std::memory_order_relaxed);
      break;
  }
  return frame;
}

void server_run::cancel_if_going(cancel_reason reason, server_state& state) {
  if (ended_) return;
  if (state.registry->end(owner(), run_id(), this, run_state_name::cancelled,
                          std::chrono::steady_clock::now())) {
    cancel(reason, std::nullopt, state);
  }
}

void server_run::cancel_for_shutdown(server_state& state) {
  cancel_if_going(cancel_reason::shutdown, state);
}

server_run::attach_result server_run::attach(const std::shared_ptr<run_mailbox>& mailbox,
                                             std::int64_t after_seq,
                                             const std::optional<std::string>& request_id,
                                             server_state& state) {
  if (after_seq >= 0 && static_cast<std::uint64_t>(after_seq) >= log_.next_seq()) {
    return attach_result::past_the_end;
  }
  const replay_plan plan = log_.plan_replay(after_seq);
  std::string answer;
  append_run_attached(answer, now(), run_id(), state_.load(std::memory_order_relaxed),
                      log_.next_seq() - 1, request_id);
  mailbox->push(answer, run_mailbox::kind::answer);
  if (plan.gap) {
    answer.clear();
    append_run_gap(answer, now(), run_id(), after_seq, plan.from);
    mailbox->push(answer, run_mailbox::kind::answer);
  }
  for (std::uint64_t seq = plan.from; seq < plan.end; ++seq) {
    const bool last = ended_ && seq + 1 == plan.end;
    mailbox->push(log_.at(seq), last ? run_mailbox::kind::terminal : run_mailbox::kind::frame);
  }
  if (ended_) return attach_result::ended;
  const bool was_orphan = followers() == 0;
  mailboxes_.push_back(mailbox);
  if (was_orphan) adopted(state);
  return attach_result::following;
}

bool server_run::may_detach(server_state& state) {
  return ended_ || followers() > 1 || state.registry->set_detached(owner(), run_id(), this, true);
}

bool server_run::remove_mailbox(const run_mailbox* mailbox, bool disconnected,
                                server_state& state) {
  const auto it = std::find_if(mailboxes_.begin(), mailboxes_.end(),
                               [&](const auto& held) { return held.get() == mailbox; });
  if (it == mailboxes_.end()) return true;
  if (!disconnected && !may_detach(state)) return false;
  mailboxes_.erase(it);
  if (followers() == 0) orphaned(disconnected, state);
  wakeup_.cancel();  // it may have been what the run waited for
  return true;
}

bool server_run::remove_home(bool disconnected, server_state& state) {
  if (!home_follower_) return true;
  if (!disconnected && !may_detach(state)) return false;
  release_home();
  if (followers() == 0) orphaned(disconnected, state);
  return true;
}

void server_run::orphaned(bool disconnected, server_state& state) {
  const bool cancel_policy = settings_.on_disconnect == disconnect_policy::cancel;
  if (disconnected && cancel_policy && settings_.detach_grace.count() == 0) {
    // Version 1: a run ends with its connection and is freed, not retained.
    cancel_if_going(cancel_reason::disconnect, state);
    state.registry->forget(owner(), run_id(), this);
    return;
  }
  if (ended_) return;
  if (!state.registry->set_detached(owner(), run_id(), this, true)) {
    spdlog::info("run {} of {}: cancelled: the server holds its limit of detached runs",
                 printable(run_id()), owner());
    cancel_if_going(cancel_reason::disconnect, state);
    return;
  }
  if (disconnected && cancel_policy) {
    grace_timer_.expires_after(settings_.detach_grace);
    grace_timer_.async_wait([self = shared_from_this(), state = state.shared_from_this()](
                                const boost::system::error_code& ec) {
      if (!ec && self->followers() == 0) self->cancel_if_going(cancel_reason::disconnect, *state);
    });
  }
}

void server_run::adopted(server_state& state) {
  grace_timer_.cancel();
  state.registry->set_detached(owner(), run_id(), this, false);
}

}  // namespace agentws::detail
