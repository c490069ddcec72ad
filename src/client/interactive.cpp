#include "agentws/interactive.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>
#include <optional>

#include "agentws/client.hpp"

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

}  // namespace

interactive_command parse_interactive_line(std::string_view line) {
  const std::vector<std::string_view> words = split_words(line);
  if (words.empty() || words[0].starts_with("#")) return interactive_blank{};
  const std::string_view verb = words[0];
  if (verb == "quit" || verb == "exit") return interactive_quit{};
  if (verb == "list" || verb == "ls") return interactive_list{};
  if (verb == "help" || verb == "?") return interactive_help{};
  if (verb == "cancel") {
    if (words.size() != 2) return interactive_mistake{"usage: cancel RUN_ID"};
    return interactive_cancel{std::string(words[1])};
  }
  if (verb == "start") {
    if (words.size() < 2)
      return interactive_mistake{"usage: start RUN_ID [steps=N] [interval_ms=M]"};
    interactive_start start{std::string(words[1]), {}};
    for (std::size_t i = 2; i < words.size(); ++i) {
      const std::string_view word = words[i];
      const std::size_t eq = word.find('=');
      const std::string_view key = word.substr(0, eq);
      const auto value =
          eq == std::string_view::npos ? std::nullopt : parse_unsigned(word.substr(eq + 1));
      if (!value)
        return interactive_mistake{"expected steps=N or interval_ms=M, got '" + std::string(word) +
                                   "'"};
      if (key == "steps") {
        start.params.steps = value;
      } else if (key == "interval_ms" || key == "interval") {
        start.params.interval_ms = value;
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
         "  start RUN_ID [steps=N] [interval_ms=M]   start a run\n"
         "  cancel RUN_ID                            cancel a run\n"
         "  list                                     runs and how they ended\n"
         "  quit                                     close and exit (end of input too,\n"
         "                                           once every run has ended)";
}

namespace {

struct interactive_state {
  std::unique_ptr<client_connection> connection;
  run_tracker tracker{{}, {}};
  bool connected = false;
  bool input_done = false;
  bool quitting = false;
  bool closing = false;
};

}  // namespace

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
  auto state = std::make_shared<interactive_state>();

  auto close_if_done = [state] {
    if (state->closing || !state->connected) return;
    if (state->quitting || (state->input_done && state->tracker.all_finished())) {
      state->closing = true;
      state->connection->close();
    }
  };
  auto on_line = [state, notice, close_if_done](std::optional<std::string> line) {
    if (!line) {
      state->input_done = true;
      close_if_done();
      return;
    }
    std::visit(
        [&](auto&& request) {
          using type = std::decay_t<decltype(request)>;
          if constexpr (std::is_same_v<type, interactive_start> ||
                        std::is_same_v<type, interactive_cancel>) {
            if (!state->connected) {
              notice("not connected: command not sent");
              return;
            }
            if constexpr (std::is_same_v<type, interactive_start>) {
              state->tracker.track(request.run_id, run_outcome::done);
              state->connection->send(make_start_run(request.run_id, request.params));
            } else {
              state->connection->send(make_cancel_run(request.run_id));
            }
          } else if constexpr (std::is_same_v<type, interactive_list>) {
            if (state->tracker.reports().empty()) notice("no runs yet");
            for (const auto& r : state->tracker.reports()) {
              notice(printable(r.run_id) + ": " + std::string(to_string(r.outcome)) + ", " +
                     std::to_string(r.events) + " events" +
                     (r.detail.empty() ? "" : ", " + printable(r.detail)));
            }
          } else if constexpr (std::is_same_v<type, interactive_help>) {
            notice(std::string(interactive_help_text()));
          } else if constexpr (std::is_same_v<type, interactive_quit>) {
            state->quitting = true;
            close_if_done();
          } else if constexpr (std::is_same_v<type, interactive_mistake>) {
            notice(request.message);
          }
        },
        parse_interactive_line(*line));
  };

  bool input_started = false;
  std::chrono::milliseconds backoff{250};
  for (;;) {
    state->connection = std::make_unique<client_connection>(executor);
    auto ec = co_await state->connection->connect(*url, options.connect_timeout, options.token,
                                                  options.tls);
    if (ec) {
      notice("cannot connect to " + url->to_string() + ": " + ec.message());
      // A certificate that fails verification will not pass on a retry.
      if (!options.reconnect || state->quitting || ec.category() == certificate_category()) {
        co_return scenario_exit::connection;
      }
      notice("retrying in " + std::to_string(backoff.count()) + " ms");
      asio::steady_timer wait(executor, backoff);
      co_await wait.async_wait(asio::use_awaitable);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(8000));
      continue;
    }
    backoff = std::chrono::milliseconds(250);
    state->connected = true;
    notice("connected to " + url->to_string() + " (type help for commands)");
    if (!input_started) {
      input_started = true;
      input.start([state, on_line, executor](std::optional<std::string> line) {
        asio::post(executor, [on_line, line = std::move(line)] { on_line(line); });
      });
    }
    close_if_done();

    boost::system::error_code end;
    for (;;) {
      auto [read_error, text] = co_await state->connection->read();
      if (read_error) {
        end = read_error;
        break;
      }
      std::optional<received_event> event = parse_event(text);
      if (!event) continue;
      state->tracker.on_event(*event);
      if (output.on_event) output.on_event(std::string(text), *event);
      close_if_done();
    }
    state->connected = false;
    if (state->closing) break;
    // Lost without asking: say which runs went with the connection.
    std::string lost;
    for (const auto& r : state->tracker.reports()) {
      if (r.outcome == run_outcome::running || r.outcome == run_outcome::not_started) {
        lost += (lost.empty() ? "" : ", ") + printable(r.run_id);
      }
    }
    state->tracker.connection_lost();
    notice("connection lost (" + end.message() + ")" +
           (lost.empty() ? "" : "; runs lost: " + lost));
    if (!options.reconnect) co_return scenario_exit::connection;
  }
  co_return state->tracker.problems().empty() ? scenario_exit::ok : scenario_exit::unexpected;
}

}  // namespace agentws
