// ws-client: command-line options and output only; the scenario is the library's.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/program_options.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "agentws/interactive.hpp"
#include "agentws/scenario.hpp"

namespace po = boost::program_options;

namespace {

// Lines from stdin, read on their own thread (stdin may be a terminal, a pipe
// or a file, and only a blocking read handles all three).
class stdin_lines final : public agentws::interactive_input {
 public:
  void start(std::function<void(std::optional<std::string>)> deliver) override {
    // Detached: a thread blocked in getline must not keep the process alive.
    std::thread([deliver = std::move(deliver)] {
      std::string line;
      while (std::getline(std::cin, line))
        deliver(line);
      deliver(std::nullopt);
    }).detach();
  }
};

}  // namespace

int main(int argc, char** argv) {
  agentws::scenario plan;
  std::vector<std::string> runs;
  std::vector<std::string> cancels;
  std::uint64_t steps = 0;
  std::uint64_t interval_ms = 0;
  double timeout_seconds = 60;
  std::string color_mode = "auto";

  po::options_description options(
      "ws-client: start agent runs over WebSocket, cancel some, print every event\n\n"
      "Without options it plays the original scenario: start run-001 and run-002,\n"
      "cancel run-002 after 2.5 s.\n\nOptions");
  // clang-format off
  options.add_options()
    ("help,h", "show this help and exit")
    ("url", po::value(&plan.url)->default_value(plan.url), "server URL")
    ("run", po::value(&runs)->composing(), "start this run_id (repeatable; default run-001 run-002)")
    ("cancel", po::value(&cancels)->composing(),
     "cancel RUN_ID@SECONDS after the start (repeatable; default run-002@2.5 when no --run)")
    ("steps", po::value(&steps), "params.steps for every run (default: the server's)")
    ("interval-ms", po::value(&interval_ms), "params.interval_ms for every run (default: the server's)")
    ("token", po::value(&plan.token), "bearer token for the server (default: $AGENTWS_TOKEN)")
    ("ca-file", po::value(&plan.tls.ca_file),
     "wss://: trust the CA certificates (or self-signed certificate) in this PEM file instead of the system's")
    ("interactive,i", "read commands from stdin (start ID [steps=N] [interval_ms=M], cancel ID, list, quit)")
    ("reconnect", "interactive mode: when the connection drops, reconnect with back-off")
    ("json", "print each event's JSON as received, one line each (the summary goes to stderr)")
    ("color", po::value(&color_mode)->default_value(color_mode), "auto, always or never")
    ("timeout", po::value(&timeout_seconds)->default_value(timeout_seconds),
     "give up after this many seconds");
  // clang-format on

  po::variables_map args;
  try {
    po::store(po::parse_command_line(argc, argv, options), args);
    po::notify(args);
  } catch (const po::error& e) {
    std::cerr << "ws-client: " << e.what() << "\nTry 'ws-client --help'.\n";
    return static_cast<int>(agentws::scenario_exit::usage);
  }
  if (args.count("help")) {
    std::cout << options
              << "\nwss:// URLs need a server certificate valid for the URL's host that chains\n"
                 "to the system's CA certificates, or to --ca-file's; TLS 1.2 or later.\n"
                 "\nExit status: 0 every run ended as expected, 1 some did not (or the server\n"
                 "broke the protocol), 2 bad usage (or an unusable --ca-file), 3 connection\n"
                 "failed or lost (or the server's certificate failed verification), 4 timeout.\n";
    return 0;
  }
  if (!runs.empty()) {
    plan.runs = runs;
    plan.cancels.clear();
  }
  if (!cancels.empty()) {
    plan.cancels.clear();
    for (const auto& text : cancels) {
      auto cancel = agentws::parse_planned_cancel(text);
      if (!cancel) {
        std::cerr << "ws-client: --cancel wants RUN_ID@SECONDS, got '" << text << "'\n";
        return static_cast<int>(agentws::scenario_exit::usage);
      }
      plan.cancels.push_back(*cancel);
    }
  }
  if (!plan.tls.ca_file.empty() && !plan.url.starts_with("wss://")) {
    std::cerr << "ws-client: --ca-file applies to wss:// URLs only; ignored\n";
  }
  if (!args.count("token")) {
    if (const char* env = std::getenv("AGENTWS_TOKEN")) plan.token = env;
  }
  if (args.count("steps")) plan.params.steps = steps;
  if (args.count("interval-ms")) plan.params.interval_ms = interval_ms;
  if (!(timeout_seconds > 0)) {
    std::cerr << "ws-client: --timeout must be positive\n";
    return static_cast<int>(agentws::scenario_exit::usage);
  }
  plan.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_seconds * 1000));
  if (color_mode != "auto" && color_mode != "always" && color_mode != "never") {
    std::cerr << "ws-client: --color must be auto, always or never\n";
    return static_cast<int>(agentws::scenario_exit::usage);
  }
  const bool json = args.count("json") > 0;
  const bool color = color_mode == "always" || (color_mode == "auto" && isatty(STDOUT_FILENO));
  spdlog::set_default_logger(spdlog::stderr_color_mt("ws-client"));

  agentws::run_tracker tracker(plan.runs, plan.cancels);
  agentws::scenario_output output;
  output.on_event = [&](const std::string& raw, const agentws::received_event& event) {
    if (json) {
      // One event per line, as it arrives (a pretty-printing server too).
      std::cout << agentws::json_on_one_line(raw) << '\n' << std::flush;
    } else {
      std::cout << agentws::format_event_line(event, color) << '\n' << std::flush;
    }
  };
  output.on_notice = [](const std::string& line) { std::cerr << "ws-client: " << line << '\n'; };

  boost::asio::io_context io(1);
  agentws::scenario_exit result = agentws::scenario_exit::connection;
  if (args.count("interactive")) {
    stdin_lines input;
    agentws::interactive_options interactive{plan.url, plan.token, args.count("reconnect") > 0,
                                             plan.connect_timeout, plan.tls};
    boost::asio::co_spawn(io, agentws::run_interactive(interactive, input, output),
                          [&](std::exception_ptr failure, agentws::scenario_exit exit) {
                            if (failure) {
                              std::cerr << "ws-client: unexpected failure\n";
                              return;
                            }
                            result = exit;
                          });
    io.run();
    // The stdin thread may still be blocked in a read: leave without running
    // destructors it could race with.
    std::cout.flush();
    std::_Exit(static_cast<int>(result));
  }
  boost::asio::co_spawn(io, agentws::run_scenario(plan, tracker, output),
                        [&](std::exception_ptr failure, agentws::scenario_exit exit) {
                          if (failure) {
                            try {
                              std::rethrow_exception(failure);
                            } catch (const std::exception& e) {
                              std::cerr << "ws-client: " << e.what() << '\n';
                            }
                            return;
                          }
                          result = exit;
                        });
  io.run();

  if (result == agentws::scenario_exit::ok || result == agentws::scenario_exit::unexpected ||
      result == agentws::scenario_exit::timeout || result == agentws::scenario_exit::connection) {
    const std::string summary = agentws::format_summary(tracker, color && !json);
    (json ? std::cerr : std::cout) << summary << std::flush;
  }
  return static_cast<int>(result);
}
