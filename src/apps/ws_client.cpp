// ws-client: command-line options and output only; the scenario, the
// interactive mode and the option checks are the library's.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "agentws/client_options.hpp"
#include "agentws/interactive.hpp"
#include "agentws/line_input.hpp"
#include "agentws/scenario.hpp"

#ifndef AGENTWS_VERSION
#define AGENTWS_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  const agentws::client_command_line command_line =
      agentws::parse_client_command_line(argc, argv, AGENTWS_VERSION, std::getenv("AGENTWS_TOKEN"));
  if (!command_line.options) {
    std::cout << command_line.output << std::flush;
    std::cerr << command_line.errors << std::flush;
    return command_line.exit_status;
  }
  const agentws::client_options& chosen = *command_line.options;
  const agentws::scenario& plan = chosen.plan;
  if (!plan.tls.ca_file.empty() && !plan.url.starts_with("wss://")) {
    std::cerr << "ws-client: --ca-file applies to wss:// URLs only; ignored\n";
  }
  const bool json = chosen.json;
  const bool color = chosen.color == "always" || (chosen.color == "auto" && isatty(STDOUT_FILENO));
  spdlog::set_default_logger(spdlog::stderr_color_mt("ws-client"));

  boost::asio::io_context io(1);
  // On a terminal, -i edits lines with libedit and prints around them.
  std::unique_ptr<agentws::terminal_line_input> terminal;
  if (chosen.interactive && isatty(STDIN_FILENO)) {
    terminal = std::make_unique<agentws::terminal_line_input>(io.get_executor(), "ws> ");
  }
  auto write = [&terminal](std::FILE* stream, const std::string& text) {
    if (terminal) {
      terminal->print(stream, text);
    } else {
      std::fwrite(text.data(), 1, text.size(), stream);
      std::fflush(stream);
    }
  };

  agentws::run_tracker tracker(plan.runs, plan.cancels);
  agentws::scenario_output output;
  output.on_event = [&](const std::string& raw, const agentws::received_event& event) {
    // One event per line, as it arrives (a pretty-printing server too).
    write(
        stdout,
        (json ? agentws::json_on_one_line(raw) : agentws::format_event_line(event, color)) + "\n");
  };
  output.on_notice = [&](const std::string& line) { write(stderr, "ws-client: " + line + "\n"); };

  agentws::scenario_exit result = agentws::scenario_exit::connection;
  auto on_failure = [&result](std::exception_ptr failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::cerr << "ws-client: unexpected failure: " << e.what() << '\n';
    }
    result = agentws::scenario_exit::connection;
  };
  if (chosen.interactive) {
    agentws::stream_line_input lines;
    agentws::interactive_input& input =
        terminal ? static_cast<agentws::interactive_input&>(*terminal) : lines;
    agentws::interactive_options interactive;
    interactive.url = plan.url;
    interactive.token = plan.token;
    interactive.reconnect = chosen.reconnect;
    interactive.session = plan.session;
    interactive.announce_session = !json;
    interactive.connect_timeout = plan.connect_timeout;
    interactive.tls = plan.tls;
    interactive.origin = plan.origin;
    interactive.headers = plan.headers;
    interactive.default_params = plan.params;
    interactive.default_agent = plan.agent;
    if (chosen.timeout_given) interactive.timeout = plan.timeout;
    boost::asio::co_spawn(io, agentws::run_interactive(interactive, input, output),
                          [&](std::exception_ptr failure, agentws::scenario_exit exit) {
                            // The terminal's waits for keys and signals end too.
                            if (terminal) terminal->stop();
                            if (failure) return on_failure(failure);
                            result = exit;
                          });
    io.run();
    // The stdin thread may still be blocked in a read: leave without running
    // destructors it could race with.
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(static_cast<int>(result));
  }
  boost::asio::co_spawn(io, agentws::run_scenario(plan, tracker, output),
                        [&](std::exception_ptr failure, agentws::scenario_exit exit) {
                          if (failure) return on_failure(failure);
                          result = exit;
                        });
  io.run();

  if (result != agentws::scenario_exit::usage) {
    const std::string summary = agentws::format_summary(tracker, color && !json);
    (json ? std::cerr : std::cout) << summary << std::flush;
  }
  return static_cast<int>(result);
}
