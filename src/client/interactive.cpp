#include "agentws/interactive.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <set>

#include "agentws/client.hpp"
#include "agentws/client_options.hpp"
#include "agentws/events.hpp"
#include "agentws/protocol.hpp"

namespace agentws {

namespace asio = boost::asio;

namespace {

std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
      ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
      ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

std::optional<std::uint64_t> parse_unsigned(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// The line from `from` (a piece of it) to its end, without the blanks and
// the CR (of a CRLF file) that end it.
std::string_view rest_of_line(std::string_view line, std::string_view from) {
  std::string_view rest = line.substr(static_cast<std::size_t>(from.data() - line.data()));
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t' || rest.back() == '\r'))
    rest.remove_suffix(1);
  return rest;
}

}  // namespace

interactive_command parse_interactive_line(std::string_view line) {
  const std::vector<std::string_view> words = split_words(line);
  if (words.empty() || words[0].starts_with("#")) return interactive_blank{};
  const std::string_view verb = words[0];
  if (verb == "quit" || verb == "exit") return interactive_quit{false};
  if (verb == "quit!" || verb == "exit!") return interactive_quit{true};
  if (verb == "list" || verb == "ls") return interactive_list{};
  if (verb == "help" || verb == "?") return interactive_help{};
  if (verb == "raw") {
    // Everything after "raw" and its blanks, as typed (a CR from a CRLF file aside).
    std::string_view text = line.substr(line.find("raw") + 3);
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
      text.remove_prefix(1);
    if (text.ends_with('\r')) text.remove_suffix(1);
    if (text.empty()) return interactive_mistake{"usage: raw TEXT (sent as one frame, as it is)"};
    return interactive_raw{std::string(text)};
  }
  if (verb == "cancel") {
    if (words.size() != 2) return interactive_mistake{"usage: cancel RUN_ID"};
    if (auto problem = run_id_problem(words[1])) return interactive_mistake{"cancel: " + *problem};
    return interactive_cancel{std::string(words[1])};
  }
  if (verb == "attach") {
    if (words.size() < 2 || words.size() > 3)
      return interactive_mistake{"usage: attach RUN_ID [SEQ]"};
    if (auto problem = run_id_problem(words[1])) return interactive_mistake{"attach: " + *problem};
    attach_request request{std::string(words[1]), -1};
    if (words.size() == 3) {
      std::int64_t seq = 0;
      const std::string_view text = words[2];
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seq);
      if (ec != std::errc{} || end != text.data() + text.size() || seq < -1) {
        return interactive_mistake{"attach: SEQ is an integer from -1 (the start) up, not '" +
                                   printable(text) + "'"};
      }
      request.after_seq = seq;
    }
    return interactive_attach{std::move(request)};
  }
  if (verb == "detach") {
    if (words.size() != 2) return interactive_mistake{"usage: detach RUN_ID"};
    if (auto problem = run_id_problem(words[1])) return interactive_mistake{"detach: " + *problem};
    return interactive_detach{std::string(words[1])};
  }
  if (verb == "send") {
    if (words.size() < 3) return interactive_mistake{"usage: send RUN_ID JSON"};
    if (auto problem = run_id_problem(words[1])) return interactive_mistake{"send: " + *problem};
    std::string problem;
    std::optional<std::string> input = compact_json_value(rest_of_line(line, words[2]), &problem);
    if (!input) return interactive_mistake{"send: the input is " + problem};
    if (*input == "null") return interactive_mistake{"send: the input is any JSON value but null"};
    return interactive_send{std::string(words[1]), std::move(*input)};
  }
  if (verb == "start") {
    if (words.size() < 2)
      return interactive_mistake{
          "usage: start RUN_ID [steps=N] [interval_ms=M] [agent=NAME] [timeout_ms=N] "
          "[input=JSON]"};
    if (auto problem = run_id_problem(words[1])) return interactive_mistake{"start: " + *problem};
    interactive_start start{std::string(words[1]), {}, {}, {}};
    for (std::size_t i = 2; i < words.size(); ++i) {
      const std::string_view word = words[i];
      const std::size_t eq = word.find('=');
      const std::string_view key = word.substr(0, eq);
      if (key == "input" && eq != std::string_view::npos) {
        // JSON holds blanks: the input is the rest of the line.
        std::string problem;
        start.agent.input_json =
            compact_json_value(rest_of_line(line, word.substr(eq + 1)), &problem);
        if (!start.agent.input_json) return interactive_mistake{"start: the input is " + problem};
        break;
      }
      if (key == "agent") {
        const std::string_view name =
            eq == std::string_view::npos ? std::string_view() : word.substr(eq + 1);
        if (auto problem = agent_name_problem(name)) {
          return interactive_mistake{"start: agent=NAME: " + *problem};
        }
        start.agent.agent = std::string(name);
        continue;
      }
      if (key == "on_disconnect") {
        const std::string_view policy =
            eq == std::string_view::npos ? std::string_view() : word.substr(eq + 1);
        if (policy != "cancel" && policy != "continue") {
          return interactive_mistake{"on_disconnect is cancel or continue, not '" +
                                     printable(policy) + "'"};
        }
        start.disconnect.on_disconnect = std::string(policy);
        continue;
      }
      const auto value =
          eq == std::string_view::npos ? std::nullopt : parse_unsigned(word.substr(eq + 1));
      if (!value)
        return interactive_mistake{"expected steps=N or interval_ms=M, got '" + std::string(word) +
                                   "'"};
      if (key == "timeout_ms") {
        if (*value < client_ranges::timeout_ms.min || *value > client_ranges::timeout_ms.max) {
          return interactive_mistake{"start: timeout_ms is from " +
                                     std::to_string(client_ranges::timeout_ms.min) + " to " +
                                     std::to_string(client_ranges::timeout_ms.max) + ", not " +
                                     std::to_string(*value)};
        }
        start.agent.timeout_ms = value;
      } else if (key == "steps") {
        start.params.steps = value;
      } else if (key == "interval_ms" || key == "interval") {
        start.params.interval_ms = value;
      } else if (key == "detach_grace_ms") {
        start.disconnect.detach_grace_ms = value;
      } else {
        return interactive_mistake{"unknown parameter '" + std::string(key) + "'"};
      }
    }
    return start;
  }
  return interactive_mistake{"unknown command '" + std::string(verb) + "' (try help)"};
}

std::string_view interactive_help_text() {
  return "commands:\n"
         "  start RUN_ID [steps=N] [interval_ms=M]   start a run; with a server that resumes\n"
         "        [on_disconnect=cancel|continue]    runs, what happens to it when the\n"
         "        [detach_grace_ms=N]                connection drops\n"
         "        [agent=NAME] [timeout_ms=N]        its agent and deadline (a server with\n"
         "        [input=JSON]                       agents); input= takes the rest of the line\n"
         "  send RUN_ID JSON                         send a JSON value to the run's agent\n"
         "                                           (send_input; the rest of the line)\n"
         "  cancel RUN_ID                            cancel a run\n"
         "  attach RUN_ID [SEQ]                      follow a run of this session after\n"
         "                                           SEQ (default: from its start)\n"
         "  detach RUN_ID                            stop following a run; it goes on\n"
         "  raw TEXT                                 send TEXT as one frame, as it is\n"
         "  list                                     the session's runs (the server's list\n"
         "                                           when it resumes runs), or how ours ended\n"
         "  quit                                     wait for the started runs to end, then\n"
         "                                           close and exit (end of input too)\n"
         "  quit!                                    close and exit at once (the server\n"
         "                                           cancels the runs still going)";
}

namespace {

struct interactive_state {
  explicit interactive_state(const asio::any_io_executor& executor)
      : retry(executor), deadline(executor) {}
  std::unique_ptr<client_connection> connection;
  run_tracker tracker{{}, {}};
  resume_book book;
  connected_session server;  // what the latest `connected` said
  std::string session_key;   // presented on the next connection
  // The start_run last sent for each run_id: sent again when a reconnect
  // finds that the server never got it.
  std::map<std::string, std::string> start_frames;
  std::set<std::string> graced_runs;  // started with the grace --reconnect asks for
  asio::steady_timer retry;           // the wait before reconnecting
  asio::steady_timer deadline;        // --timeout
  bool connected = false;
  bool input_done = false;      // end of input
  bool quit_when_done = false;  // quit
  bool quit_now = false;        // quit!
  bool closing = false;
  bool timed_out = false;

  // Nothing more to wait for: quit!, or quit / end of input with every run ended.
  bool leaving() const {
    return quit_now || ((input_done || quit_when_done) && tracker.all_finished());
  }
};

}  // namespace

// GCC 12 warns that Asio's coroutine frame is freed by a mismatched operator
// delete: awaitable_frame_base declares both its operator new and delete, the
// warning comes and goes with the coroutine's inlining, and it is a false
// positive (GCC bug 104444 and its relatives).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
asio::awaitable<scenario_exit> run_interactive(const interactive_options& options,
                                               interactive_input& input,
                                               const scenario_output& output) {
  auto notice = [&output](const std::string& line) {
    if (output.on_notice) output.on_notice(line);
  };
  std::string url_error;
  const std::optional<ws_url> url = ws_url::parse(options.url, &url_error);
  if (!url) {
    notice("invalid --url " + printable(options.url) + ": " + url_error);
    co_return scenario_exit::usage;
  }
  if (url->secure) {
    if (std::string why = check_tls_options(options.tls); !why.empty()) {
      notice(printable(why));
      co_return scenario_exit::usage;
    }
  }
  const auto executor = co_await asio::this_coro::executor;
  auto state = std::make_shared<interactive_state>(executor);

  // When there is nothing left to wait for: close the connection, or stop
  // waiting to reconnect.
  auto close_if_done = [state] {
    if (state->closing || !state->leaving()) return;
    if (state->connected) {
      state->closing = true;
      // quit! cancels at once, as closing did before runs had a grace: the
      // grace ws-client asked for was for coming back, not for leaving.
      if (state->quit_now) {
        for (const std::string& run_id : state->graced_runs) {
          if (state->tracker.going(run_id)) (void)state->connection->send(make_cancel_run(run_id));
        }
      }
      state->connection->close();
    } else {
      state->retry.cancel();
    }
  };
  auto on_line = [state, notice, close_if_done, defaults = options.default_params,
                  default_agent = options.default_agent,
                  reconnect = options.reconnect](std::optional<std::string> line) {
    if (!line) {
      state->input_done = true;
      close_if_done();
      return;
    }
    if (state->closing || state->timed_out) return;
    std::visit(
        [&](auto&& request) {
          using type = std::decay_t<decltype(request)>;
          if constexpr (std::is_same_v<type, interactive_start> ||
                        std::is_same_v<type, interactive_send> ||
                        std::is_same_v<type, interactive_cancel> ||
                        std::is_same_v<type, interactive_attach> ||
                        std::is_same_v<type, interactive_detach> ||
                        std::is_same_v<type, interactive_raw>) {
            if (!state->connected) {
              notice("not connected: command not sent");
              return;
            }
            // A frame the connection refuses (past its send bound) is not
            // sent, and not tracked.
            auto sent = [&](std::string frame) {
              const boost::system::error_code ec = state->connection->send(std::move(frame));
              if (ec) notice("command not sent: " + ec.message());
              return !ec;
            };
            if constexpr (std::is_same_v<type, interactive_start>) {
              run_params_override params = request.params;
              if (!params.steps) params.steps = defaults.steps;
              if (!params.interval_ms) params.interval_ms = defaults.interval_ms;
              disconnect_options disconnect = request.disconnect;
              // --reconnect comes back for its runs: they wait for it.
              const bool graced = reconnect && state->server.resumes && !disconnect.on_disconnect &&
                                  !disconnect.detach_grace_ms;
              if (graced) disconnect.detach_grace_ms = detach_grace_for(state->server);
              std::string frame =
                  with_agent_request(make_start_run_with(request.run_id, params, disconnect),
                                     default_agent.merged_with(request.agent));
              if (sent(frame)) {
                if (graced) {
                  state->graced_runs.insert(request.run_id);
                } else {
                  state->graced_runs.erase(request.run_id);
                }
                state->start_frames[request.run_id] = std::move(frame);
                state->book.follow(request.run_id);
                state->tracker.track(request.run_id, run_outcome::done);
              }
            } else if constexpr (std::is_same_v<type, interactive_send>) {
              if (sent(make_send_input(request.run_id, request.input_json))) {
                state->tracker.input_sent(request.run_id);
              }
            } else if constexpr (std::is_same_v<type, interactive_cancel>) {
              if (sent(make_cancel_run(request.run_id))) state->tracker.cancel_sent(request.run_id);
            } else if constexpr (std::is_same_v<type, interactive_attach>) {
              const attach_request& attach = request.request;
              if (sent(make_attach_run(attach.run_id, attach.after_seq))) {
                // Already followed here: the server refuses (already_attached).
                if (!state->tracker.going(attach.run_id)) {
                  state->book.forget(attach.run_id);
                  state->book.follow(attach.run_id, attach.after_seq);
                }
                state->tracker.attach_sent(attach.run_id, attach.after_seq, run_outcome::done);
              }
            } else if constexpr (std::is_same_v<type, interactive_detach>) {
              // Its refusal for a run never followed here answers it, as a raw frame's would.
              const bool known =
                  std::any_of(state->tracker.reports().begin(), state->tracker.reports().end(),
                              [&](const run_report& r) { return r.run_id == request.run_id; });
              if (sent(make_detach_run(request.run_id)) && !known) state->tracker.raw_sent();
            } else {
              if (!sent(request.text)) return;
              // Follow what the server will make of it: a start or a cancel
              // it accepts is tracked like a typed one.
              const parse_result parsed = parse_command(request.text, protocol_limits{});
              const auto* understood = std::get_if<agentws::command>(&parsed);
              if (const auto* start =
                      understood ? std::get_if<start_run_command>(understood) : nullptr) {
                state->tracker.track(start->run_id, run_outcome::done);
              } else if (const auto* cancel =
                             understood ? std::get_if<cancel_run_command>(understood) : nullptr) {
                state->tracker.cancel_sent(cancel->run_id);
              } else if (const auto* send =
                             understood ? std::get_if<send_input_command>(understood) : nullptr) {
                state->tracker.input_sent(send->run_id);
              } else {
                state->tracker.raw_sent();
              }
            }
          } else if constexpr (std::is_same_v<type, interactive_list>) {
            // A server that keeps runs lists them (the answer, `runs`, is printed).
            if (state->connected && state->server.resumes) {
              if (auto ec = state->connection->send(make_list_runs())) {
                notice("command not sent: " + ec.message());
              }
              return;
            }
            if (state->tracker.reports().empty()) notice("no runs yet");
            for (const auto& r : state->tracker.reports()) {
              // A start sent but not yet answered is on its way, not refused.
              const std::string outcome = r.outcome == run_outcome::not_started
                                              ? "starting (no answer yet)"
                                              : std::string(to_string(r.outcome));
              notice(printable(r.run_id) + ": " + outcome + ", " + std::to_string(r.events) +
                     " events" + (r.detail.empty() ? "" : ", " + printable(r.detail)));
            }
          } else if constexpr (std::is_same_v<type, interactive_help>) {
            notice(std::string(interactive_help_text()));
          } else if constexpr (std::is_same_v<type, interactive_quit>) {
            if (request.now) {
              state->quit_now = true;
            } else {
              state->quit_when_done = true;
              std::size_t going = 0;
              for (const auto& r : state->tracker.reports()) {
                if (r.outcome == run_outcome::running || r.outcome == run_outcome::not_started) {
                  ++going;
                }
              }
              if (going > 0) {
                notice("waiting for " + std::to_string(going) + (going == 1 ? " run" : " runs") +
                       " to end (quit! leaves at once)");
              }
            }
            close_if_done();
          } else if constexpr (std::is_same_v<type, interactive_mistake>) {
            notice(request.message);
          }
        },
        parse_interactive_line(*line));
  };

  if (options.timeout) {
    state->deadline.expires_after(*options.timeout);
    state->deadline.async_wait([state](const boost::system::error_code& ec) {
      if (ec) return;
      state->timed_out = true;
      state->retry.cancel();
      if (state->connection) state->connection->abort();
    });
  }
  // Every way out: the deadline stops, the problems seen are listed.
  auto finish = [state, notice, &options](scenario_exit exit) {
    state->deadline.cancel();
    // The connection outlives this coroutine (the input holds the state):
    // its writer must not keep waiting for frames.
    if (state->connection) state->connection->abort();
    if (state->timed_out) {
      notice("timed out after " + std::to_string(options.timeout->count()) + " ms");
      return scenario_exit::timeout;
    }
    for (const auto& problem : state->tracker.problems())
      notice("problem: " + problem);
    if (exit == scenario_exit::ok && !state->tracker.problems().empty()) {
      return scenario_exit::unexpected;
    }
    return exit;
  };

  // Named, not a braced temporary in the call: GCC 12 destroys such an
  // argument of a coroutine twice.
  const handshake_options handshake{options.token, options.origin, options.headers};
  bool input_started = false;
  bool reconnected = false;
  state->session_key = options.session;
  std::chrono::milliseconds backoff = first_reconnect_delay;
  // After a reconnect: the runs not ended are attached again after the last
  // seq printed, or lost when the server no longer knows the session.
  auto resume_runs = [state, notice] {
    if (!state->server.resumed) {
      std::string lost;
      for (const std::string& run_id : state->book.unfinished()) {
        if (!state->tracker.going(run_id)) continue;
        lost += (lost.empty() ? "" : ", ") + printable(run_id);
        state->tracker.lose(run_id, "the server no longer knows the session");
        state->book.forget(run_id);
      }
      if (!lost.empty()) notice("the server started a new session; runs lost: " + lost);
      return;
    }
    const auto going = [state](const std::string& run_id) { return state->tracker.going(run_id); };
    for (const attach_request& attach : state->book.reattach_all(going)) {
      notice("resuming " + printable(attach.run_id) + " after seq " +
             std::to_string(attach.after_seq));
      if (auto ec = state->connection->send(make_attach_run(attach.run_id, attach.after_seq))) {
        notice("command not sent: " + ec.message());
      }
    }
  };
  for (;;) {
    state->connection = std::make_unique<client_connection>(executor);
    ws_url target = *url;
    if (!state->session_key.empty()) {
      target.target = target_with_session(url->target, state->session_key);
    }
    auto ec = co_await state->connection->connect(target, options.connect_timeout, handshake,
                                                  options.tls);
    if (state->timed_out) co_return finish(scenario_exit::timeout);
    if (ec) {
      const std::optional<upgrade_refusal> refusal = state->connection->refusal();
      notice(describe_connect_failure(*url, ec, refusal, !options.token.empty()));
      // A certificate that fails verification, or a 4xx, will not pass on a retry.
      if (!options.reconnect || state->leaving() || !worth_retrying(ec, refusal)) {
        co_return finish(scenario_exit::connection);
      }
      notice("retrying in " + std::to_string(backoff.count()) + " ms");
      state->retry.expires_after(backoff);
      co_await state->retry.async_wait(asio::as_tuple(asio::use_awaitable));
      if (state->timed_out) co_return finish(scenario_exit::timeout);
      // End of input (or quit) while disconnected: nothing is left to wait for.
      if (state->leaving()) co_return finish(scenario_exit::connection);
      backoff = next_reconnect_delay(backoff);
      continue;
    }
    backoff = first_reconnect_delay;
    state->connected = true;
    notice("connected to " + url->to_string() + " (type help for commands)");
    auto start_input = [&] {
      if (input_started) return;
      input_started = true;
      input.start([on_line, executor](std::optional<std::string> line) {
        asio::post(executor, [on_line, line = std::move(line)] { on_line(line); });
      });
    };
    // With --reconnect the first frame (`connected`) says first whether runs
    // can be resumed, so that the first start typed asks for its grace.
    if (!options.reconnect) start_input();
    close_if_done();

    boost::system::error_code end;
    for (;;) {
      auto [read_error, text] = co_await state->connection->read();
      if (read_error) {
        end = read_error;
        break;
      }
      std::optional<received_event> event = parse_event(text);
      if (!event) {
        notice("ignoring a frame that is not an event: " + printable(text.substr(0, 120)));
        start_input();
        continue;
      }
      if (event->kind == event_kind::connected) {
        // Started once this frame is handled: lines are posted, not run here.
        start_input();
        state->server = read_session_announcement(*event);
        if (state->server.resumes) {
          if (options.announce_session && state->server.key != state->session_key) {
            notice("session " + printable(state->server.key) + " (ws-client --session " +
                   printable(state->server.key) + " continues it)");
          }
          state->session_key = state->server.key;
        }
        if (output.on_event) output.on_event(std::string(text), *event);
        if (reconnected) resume_runs();
        continue;
      }
      start_input();
      const reattach_outcome answer = state->book.on_reattach_answer(*event);
      const auto start_frame = state->start_frames.find(event->run_id);
      if (answer == reattach_outcome::restart && start_frame != state->start_frames.end()) {
        notice("starting " + printable(event->run_id) + " again: the server never got its start");
        if (auto send_error = state->connection->send(start_frame->second)) {
          notice("command not sent: " + send_error.message());
        }
        continue;
      }
      if (answer == reattach_outcome::restart || answer == reattach_outcome::lost) {
        // This answers its run_not_found (an attached run has no start to send again).
        notice(printable(event->run_id) + " is lost: the server no longer has it");
        state->tracker.lose(event->run_id, "the server no longer has the run");
        close_if_done();
        continue;
      }
      // A replay of what was printed before the connection dropped.
      if (!state->book.take(*event)) continue;
      if (event->kind == event_kind::run_detached) state->book.forget(event->run_id);
      state->tracker.on_event(*event);
      if (output.on_event) output.on_event(std::string(text), *event);
      if (event->kind == event_kind::error && !event->run_id.empty()) {
        for (const auto& r : state->tracker.reports()) {
          if (r.run_id == event->run_id && r.outcome == run_outcome::running) {
            notice(printable(r.run_id) + " goes on: the server refused the command (" +
                   printable(event->message) + ")");
            break;
          }
        }
      }
      close_if_done();
    }
    state->connected = false;
    start_input();  // lost before its first frame: end of input must still end the session
    if (state->timed_out) co_return finish(scenario_exit::timeout);
    const std::optional<server_close> server_closed = state->connection->closed_by_server();
    if (state->closing && !server_closed) break;
    // A server that resumes runs keeps them for us: reconnect to the session.
    if (options.reconnect && state->server.resumes && !state->session_key.empty() &&
        !state->closing && !state->leaving()) {
      std::string going;
      for (const std::string& run_id : state->book.unfinished()) {
        if (state->tracker.going(run_id)) going += (going.empty() ? "" : ", ") + printable(run_id);
      }
      state->tracker.commands_unanswered();
      notice((server_closed ? describe_server_close(*server_closed)
                            : "connection lost (" + end.message() + ")") +
             (going.empty() ? "" : "; runs to resume: " + going) + "; reconnecting");
      reconnected = true;
      continue;
    }
    // Lost without asking, or closed by the server: say which runs went with it.
    std::string lost;
    for (const auto& r : state->tracker.reports()) {
      if (r.outcome == run_outcome::running || r.outcome == run_outcome::not_started) {
        lost += (lost.empty() ? "" : ", ") + printable(r.run_id);
      }
    }
    state->tracker.connection_lost();
    notice((server_closed ? describe_server_close(*server_closed)
                          : "connection lost (" + end.message() + ")") +
           (lost.empty() ? "" : "; runs lost: " + lost));
    if (!options.reconnect || state->closing || state->leaving()) {
      co_return finish(scenario_exit::connection);
    }
    notice("reconnecting");
    reconnected = true;
  }
  co_return finish(scenario_exit::ok);
}

#pragma GCC diagnostic pop

}  // namespace agentws
