// basic_session's commands and the runs it follows; included by
// basic_session.hpp only (after basic_session_impl.hpp).
#pragma once

#include <spdlog/spdlog.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <cstring>

#include "common/log_failure.hpp"

namespace agentws::detail {

// Lets the rest of the strand run. A command the peer already sent must
// act before this run's next slice, but its read takes a few trips through
// the strand (a frame already in Beast's buffer completes through a post,
// bytes still on the socket through the reactor first), each queued behind
// a plain post: the run got a slice per trip. So while the reader took a
// command since a run last saw it idle, or bytes wait on the socket, the
// run yields without emitting, trip after trip: on while the reader takes
// commands (a burst of them acts before the runs go on), until the reader
// stays idle for a few trips with nothing on the socket (what came is
// handled; its next read waits for the network, a partial frame too) or
// bytes on the socket make no command for a while.
template <class Transport>
asio::awaitable<void> basic_session<Transport>::yield_to_commands(server_run& run) {
  const auto self = shared_self();  // the run may outlive this connection
  const auto executor = ws_.get_executor();
  if (!command_pending()) {
    co_await asio::post(executor, asio::use_awaitable);
    co_return;
  }
  unsigned idle = 0;
  unsigned no_command = 0;
  for (;;) {
    if (outbox_.closed()) co_return;
    const std::uint64_t commands = commands_read_;
    if (outbox_.has_answer_room()) {
      co_await asio::post(executor, asio::use_awaitable);
    } else {
      // The reader waits for answer room: so does the run, without
      // spinning. No deadlock: the writer that makes the room never
      // waits for runs.
      co_await outbox_.wait_for_progress();
    }
    if (run.cancelled()) co_return;
    if (commands_read_ != commands) {
      idle = no_command = 0;
      continue;
    }
    commands_settled_ = commands;
    if (!command_pending()) {
      if (++idle >= idle_trips_before_emitting) co_return;
    } else if (++no_command >= trips_before_emitting_anyway) {
      co_return;
    } else {
      idle = 0;
    }
  }
}

template <class Transport>
std::optional<command> basic_session<Transport>::handle_command(parse_result result) {
  if (auto* error = std::get_if<protocol_error>(&result)) {
    send_error(*error);
    return std::nullopt;
  }
  command parsed = std::get<command>(std::move(result));
  if (auto* start = std::get_if<start_run_command>(&parsed)) {
    start_run(std::move(*start));
    return std::nullopt;
  }
  if (auto* list = std::get_if<list_runs_command>(&parsed)) {
    list_runs(*list);
    return std::nullopt;
  }
  return parsed;  // may need the strand of another connection's run
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::handle_run_command(command parsed) {
  if (auto* cancel = std::get_if<cancel_run_command>(&parsed)) {
    co_await cancel_run(std::move(*cancel));
  } else if (auto* attach = std::get_if<attach_run_command>(&parsed)) {
    co_await attach_run(std::move(*attach));
  } else if (auto* detach = std::get_if<detach_run_command>(&parsed)) {
    co_await detach_run(std::move(*detach));
  } else if (auto* input = std::get_if<send_input_command>(&parsed)) {
    co_await send_input(std::move(*input));
  }
}

template <class Transport>
void basic_session<Transport>::start_run(start_run_command command) {
  const protocol_limits& limits = state_->config.limits;
  // The agent first, and what it makes of the command: a bad start is an
  // error, as version 1's params errors came before any other.
  const server_state::agent_entry* chosen = state_->find_agent(command.agent);
  if (!chosen) {
    send_error(run_error(protocol_error_code::unknown_agent,
                         "Unknown agent: " + printable(command.agent) +
                             " (connected lists the agents of this server)",
                         std::move(command.run_id), std::move(command.request_id)));
    return;
  }
  if (chosen->logic->takes_demo_params() && command.demo_params_error) {
    send_error(*command.demo_params_error);
    return;
  }
  nlohmann::json params_json = command.params_json.empty()
                                   ? nlohmann::json()
                                   : nlohmann::json::parse(command.params_json, nullptr, false);
  nlohmann::json input = command.input_json
                             ? nlohmann::json::parse(*command.input_json, nullptr, false)
                             : nlohmann::json();
  if (auto refusal = chosen->logic->validate(params_json, input, limits)) {
    refusal->run_id = std::move(command.run_id);
    refusal->request_id = std::move(command.request_id);
    send_error(*refusal);
    return;
  }
  const std::uint64_t timeout_ms =
      command.timeout_ms != 0 ? command.timeout_ms : limits.default_timeout_ms;
  if (runs_.contains(command.run_id)) {
    send_error(run_already_active_error(std::move(command.run_id), std::move(command.request_id)));
    return;
  }
  if (runs_.size() >= limits.max_active_runs) {
    send_error(too_many_runs_error(std::move(command.run_id), std::move(command.request_id),
                                   limits.max_active_runs));
    return;
  }
  // Last, what the agent needs to start (a process): refused, no run exists.
  prepared_run prepared =
      chosen->logic->prepare(run_start{command.run_id, params_json, input, ws_.get_executor()});
  if (prepared.refusal) {
    prepared.refusal->run_id = std::move(command.run_id);
    prepared.refusal->request_id = std::move(command.request_id);
    send_error(*prepared.refusal);
    return;
  }
  server_run::settings settings;
  settings.owner = owner_;
  settings.run_id = command.run_id;
  settings.agent_name = chosen->name;
  settings.agent = chosen->logic;
  settings.params = command.params.apply_to(state_->config.default_params);
  settings.params_json = std::move(params_json);
  settings.input = std::move(input);
  if (timeout_ms > 0) {
    settings.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  }
  settings.max_input_queue = limits.max_input_queue;
  settings.on_disconnect = command.on_disconnect;
  settings.detach_grace = std::chrono::milliseconds(command.detach_grace_ms);
  settings.history = history_limits{limits.history_events, limits.history_bytes};
  auto run = std::make_shared<server_run>(std::move(settings), ws_.get_executor(),
                                          std::move(prepared.state));
  // A version 1 run (no on_disconnect, no grace) is freed with this
  // connection, not retained for later attaches.
  const bool freed_with_connection =
      command.on_disconnect == disconnect_policy::cancel && command.detach_grace_ms == 0;
  switch (state_->registry->start(owner_, run->run_id(), run, freed_with_connection ? id_ : 0)) {
    case start_verdict::started:
      break;
    case start_verdict::already_active:
      // Another connection of this owner has it going.
      send_error(
          run_already_active_error(std::move(command.run_id), std::move(command.request_id)));
      return;
    case start_verdict::owner_limit:
      send_error(run_limit_error(std::move(command.run_id), std::move(command.request_id),
                                 "Too many runs going for this owner (limit " +
                                     std::to_string(limits.max_runs_per_owner) + ")"));
      return;
  }
  // From its first run on, the session can be resumed by its key.
  state_->sessions.keep(session_, owner_);
  const std::uint64_t serial = next_run_serial_++;
  runs_.emplace(run->run_id(), followed_run{run, serial, nullptr});
  state_->counters.runs_started.fetch_add(1, std::memory_order_relaxed);
  const std::string_view started = run->begin(*this, serial, command.request_id);
  // Ahead of other runs' events, but behind what the previous run of this id
  // still has queued (its run_done, say).
  queue_answer([&](std::string& out) { out.append(started); }, queued_predecessor(run->run_id()),
               frame_tag{serial, false});
  spdlog::debug("conn {}: run {} started", id_, printable(run->run_id()));

  asio::co_spawn(
      ws_.get_executor(), server_run::execute(run, state_),
      asio::bind_cancellation_slot(
          run->cancel_slot(),
          [run, log = log_failure(fmt::format("conn {}: run {}", id_, printable(run->run_id())),
                                  {.ignore_aborted = true})](std::exception_ptr failure) {
            // `run` is captured so its signal outlives the coroutine.
            log(failure);
          }));
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::cancel_run(cancel_run_command command) {
  const auto followed = runs_.find(command.run_id);
  const std::shared_ptr<server_run> run = followed != runs_.end()
                                              ? followed->second.run
                                              : state_->registry->find(owner_, command.run_id);
  const bool direct = followed != runs_.end() && !followed->second.mailbox;
  // Followed through a mailbox: its run_cancelled comes that way, maybe
  // drained while this waits for the run's strand.
  const bool through_mailbox = followed != runs_.end() && followed->second.mailbox;
  // The registry decides who ends a run (a cancel from another connection,
  // the run finishing): exactly one of them answers.
  if (!run || !state_->registry->end(owner_, command.run_id, run.get(), run_state_name::cancelled,
                                     std::chrono::steady_clock::now())) {
    send_error(run_not_active_error(std::move(command.run_id), std::move(command.request_id)));
    co_return;
  }
  if (direct) {
    // Everything below happens before the next command is read: a start_run
    // of the same id right after this one starts a fresh run. The answer is
    // queued (queue_run_cancelled) before the run is woken to unwind.
    run->cancel(cancel_reason::client, command.request_id, *state_);
    cancels_in_outbox_.push_back(command_read_at_);
    spdlog::debug("conn {}: run {} cancelled by client", id_, printable(command.run_id));
    co_return;
  }
  // The run lives on another connection's strand: it is cancelled there,
  // and the reader waits for that, so the cancel is still done before the
  // next command is read.
  std::string frame = co_await asio::co_spawn(
      run->home(),
      [](std::shared_ptr<server_run> target, std::optional<std::string> request_id,
         std::shared_ptr<server_state> state) -> asio::awaitable<std::string> {
        co_return target->cancel(cancel_reason::client, request_id, *state);
      }(run, command.request_id, state_),
      asio::use_awaitable);
  spdlog::debug("conn {}: run {} of another connection cancelled by client", id_,
                printable(command.run_id));
  const auto still = runs_.find(command.run_id);
  if (still != runs_.end() && still->second.run == run) {
    drain_mailbox(command.run_id, true);  // its events, then the run_cancelled
  } else if (!through_mailbox) {
    queue_answer([&](std::string& out) { out.append(frame); });
    cancels_in_outbox_.push_back(command_read_at_);
  }  // else the mailbox was drained meanwhile, run_cancelled included
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::attach_run(attach_run_command command) {
  if (runs_.contains(command.run_id)) {
    send_error(already_attached_error(std::move(command.run_id), std::move(command.request_id)));
    co_return;
  }
  const std::shared_ptr<server_run> run = state_->registry->find(owner_, command.run_id);
  if (!run) {
    send_error(run_not_found_error(std::move(command.run_id), std::move(command.request_id)));
    co_return;
  }
  const protocol_limits& limits = state_->config.limits;
  if (runs_.size() >= limits.max_active_runs) {
    send_error(too_many_runs_error(std::move(command.run_id), std::move(command.request_id),
                                   limits.max_active_runs));
    co_return;
  }
  const std::uint64_t serial = next_run_serial_++;
  auto mailbox = std::make_shared<run_mailbox>(ws_.get_executor(),
                                               std::weak_ptr<run_mailbox::reader>(shared_self()),
                                               state_->config.outbox_bytes);
  runs_.emplace(command.run_id, followed_run{run, serial, mailbox});
  const auto attached = co_await asio::co_spawn(
      run->home(),
      [](std::shared_ptr<server_run> target, std::shared_ptr<run_mailbox> box,
         std::int64_t after_seq, std::optional<std::string> request_id,
         std::shared_ptr<server_state> state) -> asio::awaitable<server_run::attach_result> {
        co_return target->attach(box, after_seq, request_id, *state);
      }(run, mailbox, command.after_seq, command.request_id, state_),
      asio::use_awaitable);
  if (attached == server_run::attach_result::past_the_end) {
    stop_following(command.run_id, run.get());
    send_error(protocol_error{
        protocol_error_code::invalid_option,
        "after_seq is past the run's last event (last_seq " + std::to_string(run->last_seq()) + ")",
        command.run_id, command.request_id, std::nullopt});
    co_return;
  }
  // run_attached, run_gap, the replay: as much as the outbox takes now, the
  // rest as the writer makes room.
  drain_mailbox(command.run_id, false);
  const auto still = runs_.find(command.run_id);
  if (attached == server_run::attach_result::ended && still != runs_.end() &&
      still->second.run == run && mailbox->empty()) {
    // It had ended and the client had seen its end: nothing more comes.
    remember_finished(command.run_id, serial);
    runs_.erase(still);
  }
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::detach_run(detach_run_command command) {
  const auto it = runs_.find(command.run_id);
  if (it == runs_.end()) {
    if (state_->registry->find(owner_, command.run_id)) {
      send_error(not_attached_error(std::move(command.run_id), std::move(command.request_id)));
    } else {
      send_error(run_not_found_error(std::move(command.run_id), std::move(command.request_id)));
    }
    co_return;
  }
  const followed_run followed = it->second;
  bool detached = true;
  if (!followed.mailbox) {
    detached = followed.run->remove_home(false, *state_);
  } else {
    detached = co_await asio::co_spawn(
        followed.run->home(),
        [](std::shared_ptr<server_run> target, std::shared_ptr<run_mailbox> box,
           std::shared_ptr<server_state> state) -> asio::awaitable<bool> {
          co_return target->remove_mailbox(box.get(), false, *state);
        }(followed.run, followed.mailbox, state_),
        asio::use_awaitable);
  }
  if (!detached) {
    send_error(run_limit_error(std::move(command.run_id), std::move(command.request_id),
                               "Too many detached runs on this server (limit " +
                                   std::to_string(state_->config.limits.max_detached_runs) + ")"));
    co_return;
  }
  // Frames still in the mailbox were not sent: they stay in the run's
  // history for a later attach.
  if (followed.mailbox) followed.mailbox->close();
  stop_following(command.run_id, followed.run.get());
  remember_finished(command.run_id, followed.serial);
  queue_answer(
      [&](std::string& out) {
        append_run_detached(out, now(), command.run_id, command.request_id);
      },
      followed.serial);
}

template <class Transport>
asio::awaitable<void> basic_session<Transport>::send_input(send_input_command command) {
  const auto followed = runs_.find(command.run_id);
  const std::shared_ptr<server_run> run = followed != runs_.end()
                                              ? followed->second.run
                                              : state_->registry->find(owner_, command.run_id);
  if (!run) {
    send_error(run_error(protocol_error_code::run_not_active, "No active run to send input to",
                         std::move(command.run_id), std::move(command.request_id)));
    co_return;
  }
  // Never throws: the parser wrote it.
  nlohmann::json input = nlohmann::json::parse(command.input_json, nullptr, false);
  if (const auto& logic = run->agent_logic()) {
    if (auto refusal = logic->validate_input(input)) {
      refusal->run_id = std::move(command.run_id);
      refusal->request_id = std::move(command.request_id);
      send_error(*refusal);
      co_return;
    }
  }
  // Followed through a mailbox: its input_received comes that way.
  const bool through_mailbox = followed != runs_.end() && followed->second.mailbox;
  // On the run's strand (this one when it is ours): the reader waits, so
  // the inputs of one connection reach the agent in the order sent.
  auto [verdict, frame] = co_await asio::co_spawn(
      run->home(),
      [](std::shared_ptr<server_run> target, nlohmann::json value,
         std::optional<std::string> request_id)
          -> asio::awaitable<std::pair<server_run::input_verdict, std::string>> {
        std::string logged;
        const auto result = target->push_input(std::move(value), request_id, logged);
        co_return std::make_pair(result, std::move(logged));
      }(run, std::move(input), command.request_id),
      asio::use_awaitable);
  switch (verdict) {
    case server_run::input_verdict::queued: {
      // Followers got input_received from the run; a sender that does not
      // follow it gets it as the answer.
      const auto still = runs_.find(command.run_id);
      if (still != runs_.end() && still->second.run == run) {
        if (still->second.mailbox) drain_mailbox(command.run_id, false);
      } else if (!through_mailbox) {
        queue_answer([&](std::string& out) { out.append(frame); });
      }
      break;
    }
    case server_run::input_verdict::ended:
      send_error(run_error(protocol_error_code::run_not_active, "No active run to send input to",
                           std::move(command.run_id), std::move(command.request_id)));
      break;
    case server_run::input_verdict::not_accepted:
      send_error(run_error(protocol_error_code::input_not_accepted,
                           "The run's agent takes no input", std::move(command.run_id),
                           std::move(command.request_id)));
      break;
    case server_run::input_verdict::queue_full:
      send_error(run_error(protocol_error_code::input_queue_full,
                           "The run's input queue is full (limit " +
                               std::to_string(state_->config.limits.max_input_queue) + ")",
                           std::move(command.run_id), std::move(command.request_id)));
      break;
  }
}

template <class Transport>
void basic_session<Transport>::list_runs(const list_runs_command& command) {
  std::vector<run_listing> listing;
  for (registry_entry& entry : state_->registry->list(owner_)) {
    const auto followed = runs_.find(entry.run_id);
    const bool attached = followed != runs_.end() && followed->second.run == entry.run;
    listing.push_back(run_listing{std::move(entry.run_id),
                                  entry.run ? entry.run->agent_name() : std::string(), entry.state,
                                  entry.run ? entry.run->last_seq() : 0, attached});
  }
  queue_answer([&](std::string& out) { append_runs(out, now(), listing, command.request_id); });
}

template <class Transport>
void basic_session<Transport>::queue_run_done(server_run& run, std::uint64_t serial,
                                              std::string_view frame) {
  queue_event([&](std::string& out) { out.append(frame); }, frame_tag{serial, false});
  remember_finished(run.run_id(), serial);
  stop_following(run.run_id(), &run);
  spdlog::debug("conn {}: run {} done", id_, printable(run.run_id()));
}

template <class Transport>
void basic_session<Transport>::queue_run_cancelled(server_run& run, std::uint64_t serial,
                                                   const cancel_notice& notice) {
  std::size_t taken_back = 0;
  if (notice.reason == cancel_reason::shutdown) {
    // An announced stop wants the terminal events and the close to reach the
    // client within the grace: every event of this connection's runs that
    // has not reached the socket goes, the chunk behind the write in flight
    // too. The server cancels the runs one by one: take back for all of them
    // at the first.
    if (!shutdown_take_back_done_) {
      shutdown_take_back_done_ = true;
      for (const auto& [run_id, followed] : runs_) {
        if (!followed.mailbox) shutdown_taken_back_.emplace_back(followed.serial, 0);
      }
      std::sort(shutdown_taken_back_.begin(), shutdown_taken_back_.end());
      take_back_waiting_chunk(shutdown_taken_back_);
    }
    const auto it = std::lower_bound(shutdown_taken_back_.begin(), shutdown_taken_back_.end(),
                                     std::pair<std::uint64_t, std::size_t>(serial, 0));
    if (it != shutdown_taken_back_.end() && it->first == serial) taken_back = it->second;
  }
  announce_cancel(run, serial, notice, taken_back);
  stop_following(run.run_id(), &run);
}

template <class Transport>
void basic_session<Transport>::drain_mailboxes() {
  mailbox_frames_left_ = false;
  // Draining may end a follow (and erase its entry): collect first.
  std::vector<std::string> followed_by_mailbox;
  for (const auto& [run_id, followed] : runs_) {
    if (followed.mailbox) followed_by_mailbox.push_back(run_id);
  }
  for (const std::string& run_id : followed_by_mailbox)
    drain_mailbox(run_id, false);
}

template <class Transport>
bool basic_session<Transport>::drain_mailbox(const std::string& run_id, bool everything) {
  const auto it = runs_.find(run_id);
  if (it == runs_.end() || !it->second.mailbox) return true;
  const followed_run followed = it->second;
  bool ended = false;
  const bool left = followed.mailbox->drain(
      [this] { return outbox_.has_room() && reserve_output(); },
      [&](std::string_view frame, run_mailbox::kind what) {
        const frame_tag tag{followed.serial, false};
        if (what == run_mailbox::kind::answer) {
          queue_answer([&](std::string& out) { out.append(frame); }, followed.serial, tag);
        } else {
          queue_event([&](std::string& out) { out.append(frame); }, tag);
          ended = ended || what == run_mailbox::kind::terminal;
        }
      },
      everything);
  if (left) mailbox_frames_left_ = true;
  if (!ended) return true;
  followed.mailbox->close();
  remember_finished(run_id, followed.serial);
  stop_following(run_id, followed.run.get());
  return false;
}

template <class Transport>
void basic_session<Transport>::stop_following(const std::string& run_id, const server_run* run) {
  // A run's id may already belong to a newer run: erase only our own.
  const auto it = runs_.find(run_id);
  if (it != runs_.end() && it->second.run.get() == run) runs_.erase(it);
}

template <class Transport>
void basic_session<Transport>::leave_all_runs() {
  auto followed_runs = std::move(runs_);
  runs_.clear();
  // Its ended version 1 runs go too (the going ones, once cancelled below).
  state_->registry->forget_ended_with(owner_, id_);
  for (auto& [run_id, followed] : followed_runs) {
    if (!followed.mailbox) {
      // Same strand: at once. A run that ends with its connection (version
      // 1's rule) is cancelled here, with nobody left to tell.
      followed.run->remove_home(true, *state_);
    } else {
      followed.mailbox->close();
      asio::post(followed.run->home(),
                 [run = followed.run, mailbox = followed.mailbox, state = state_] {
                   run->remove_mailbox(mailbox.get(), true, *state);
                 });
    }
  }
}

template <class Transport>
void basic_session<Transport>::cancel_runs_for_shutdown() {
  // The server cancelled every run before telling connections to close, so
  // the runs of other strands have their run_cancelled in the mailboxes; the
  // ones of this strand were cancelled here (queue_run_cancelled), unless
  // they started since.
  std::vector<std::shared_ptr<server_run>> direct;
  for (const auto& [run_id, followed] : runs_) {
    if (!followed.mailbox) direct.push_back(followed.run);
  }
  for (const auto& run : direct)
    run->cancel_for_shutdown(*state_);
  std::vector<std::string> followed_by_mailbox;
  for (const auto& [run_id, followed] : runs_) {
    if (followed.mailbox) followed_by_mailbox.push_back(run_id);
  }
  for (const std::string& run_id : followed_by_mailbox)
    drain_mailbox(run_id, true);
}

template <class Transport>
void basic_session<Transport>::take_back_waiting_chunk(
    std::vector<std::pair<std::uint64_t, std::size_t>>& runs) {
  auto& layer = ws_.next_layer();
  std::size_t chunk_bytes = 0;
  for (const chunk_span& span : waiting_chunk_)
    chunk_bytes += span.bytes;
  std::string& wire = layer.raw_buffer();
  const bool still_waiting = !waiting_chunk_.empty() &&
                             layer.flushes_completed() == waiting_chunk_flushes_ &&
                             waiting_chunk_offset_ + chunk_bytes <= wire.size();
  if (!still_waiting) return;
  // Compact in place; frames Beast queued after the chunk (a pong) stay behind it.
  std::size_t read = waiting_chunk_offset_;
  std::size_t write = read;
  std::size_t frames_dropped = 0;
  for (const chunk_span& span : waiting_chunk_) {
    auto run = runs.end();
    if (span.tag.droppable) {
      run = std::lower_bound(runs.begin(), runs.end(),
                             std::pair<std::uint64_t, std::size_t>(span.tag.run, 0));
      if (run != runs.end() && run->first != span.tag.run) run = runs.end();
    }
    if (run != runs.end()) {
      run->second += span.frames;
      frames_dropped += span.frames;
    } else {
      if (write != read) std::memmove(wire.data() + write, wire.data() + read, span.bytes);
      write += span.bytes;
    }
    read += span.bytes;
  }
  if (write != read) {
    std::memmove(wire.data() + write, wire.data() + read, wire.size() - read);
    wire.resize(wire.size() - (read - write));
  }
  waiting_chunk_.clear();
  // They were counted as sent when the writer took them.
  state_->counters.frames_sent.fetch_sub(frames_dropped, std::memory_order_relaxed);
  state_->counters.bytes_sent.fetch_sub(read - write, std::memory_order_relaxed);
}

template <class Transport>
void basic_session<Transport>::announce_cancel(const server_run& run, std::uint64_t serial,
                                               const cancel_notice& notice,
                                               std::size_t taken_back) {
  // Events not yet handed to the socket are never sent: the client learns
  // where the run's stream ended for it from last_step. (They stay in the
  // run's history.)
  const std::uint64_t sent = run.next_step() - taken_back - outbox_.drop_events_of(serial);
  const std::optional<std::uint64_t> last_step =
      sent > 0 ? std::optional<std::uint64_t>(sent - 1) : std::nullopt;
  // Ahead of other runs' events; behind this run's run_started if even that
  // is still queued behind a predecessor of the same id. Same ts and seq as
  // in the run's history.
  queue_answer(
      [&](std::string& out) {
        append_run_cancelled(out, notice.ts, run.run_id(), notice.seq, notice.reason,
                             notice.request_id, last_step);
      },
      serial, frame_tag{serial, false});
}

template <class Transport>
std::uint64_t basic_session<Transport>::queued_predecessor(const std::string& run_id) {
  auto it = finished_runs_.find(run_id);
  if (it == finished_runs_.end()) return 0;
  const finished_run previous = it->second;
  finished_runs_.erase(it);  // the new run's own frames queue behind it from now on
  const bool may_be_queued = previous.generation + 2 > outbox_.queue().generation();
  return may_be_queued && outbox_.queue().holds_events_of(previous.serial) ? previous.serial : 0;
}

template <class Transport>
void basic_session<Transport>::remember_finished(const std::string& run_id, std::uint64_t serial) {
  const std::uint64_t generation = outbox_.queue().generation();
  // Bounded: entries from before the last two refills have left the queue.
  if (finished_runs_.size() >= 2 * state_->config.limits.max_active_runs) {
    std::erase_if(finished_runs_, [generation](const auto& entry) {
      return entry.second.generation + 2 <= generation;
    });
  }
  finished_runs_.insert_or_assign(run_id, finished_run{serial, generation});
}

}  // namespace agentws::detail
