#include "agentws/client_options.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <variant>
#include <vector>

#include "agentws/client.hpp"
#include "agentws/events.hpp"
#include "agentws/resume.hpp"

namespace agentws {

namespace po = boost::program_options;

namespace {

std::string range_text(integer_range range) {
  return std::to_string(range.min) + ".." + std::to_string(range.max);
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// RFC 9110's token characters, which a header name is made of.
bool is_token_char(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Headers the WebSocket handshake writes itself: a second copy would break it.
constexpr std::array<std::string_view, 8> handshake_headers{"host",
                                                            "upgrade",
                                                            "connection",
                                                            "sec-websocket-key",
                                                            "sec-websocket-version",
                                                            "sec-websocket-extensions",
                                                            "content-length",
                                                            "transfer-encoding"};

const char* help_epilogue =
    "\nEvery number is checked against its range before anything connects: a value outside\n"
    "it is refused (exit 2), never clamped.\n"
    "\n--agent, --input and --timeout-ms go into every start_run (only when given, so\n"
    "the original server gets what it knows).\n"
    "\n-i reads commands from stdin: start ID [steps=N] [interval_ms=M] [agent=NAME]\n"
    "[timeout_ms=N] [input=JSON], send ID JSON (send_input), cancel ID,\n"
    "attach ID [SEQ], detach ID, raw TEXT, list, help, quit (waits for the started runs\n"
    "to end, as end of input does), quit!\n"
    "(leaves at once; closing the connection cancels the runs). On a terminal it has a\n"
    "prompt, line editing and history. --steps, --interval-ms, --agent, --input and\n"
    "--timeout-ms are then the defaults of start; --timeout applies only when given.\n"
    "\n--reconnect against a server that announces \"resume\": runs are started with\n"
    "detach_grace_ms 60000 (a minute for the client to come back, or the server's\n"
    "maximum if lower); after a drop the client reconnects to its session and attaches\n"
    "every run not ended after the last event it printed, so each event is printed\n"
    "once (a run_gap says which ones the server no longer kept). Against other servers\n"
    "runs die with their connection, as without it. The session key is printed on\n"
    "stderr when connected (not with --json: the connected event carries it); it is a\n"
    "secret, like a token.\n"
    "\nwss:// URLs need a server certificate valid for the URL's host that chains\n"
    "to the system's CA certificates, or to --ca-file's; TLS 1.2 or later.\n"
    "\nExit status: 0 every run ended as expected, 1 some did not (or the server\n"
    "broke the protocol), 2 bad usage (or an unusable --ca-file), 3 connection\n"
    "failed, refused or lost, or closed by the server (or the server's certificate\n"
    "failed verification), 4 timeout.\n";

// The bytes of `path`, at most max_input_file_bytes; nullopt with `problem` set.
std::optional<std::string> read_small_file(const std::string& path, std::string* problem) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    *problem = std::string("cannot open it (") + std::strerror(errno) + ")";
    return std::nullopt;
  }
  std::string content;
  char buffer[65536];
  while (file.read(buffer, sizeof buffer) || file.gcount() > 0) {
    content.append(buffer, static_cast<std::size_t>(file.gcount()));
    if (content.size() > max_input_file_bytes) {
      *problem = "larger than " + std::to_string(max_input_file_bytes / (1024 * 1024)) + " MiB";
      return std::nullopt;
    }
  }
  if (file.bad()) {
    *problem = "cannot read it";
    return std::nullopt;
  }
  return content;
}

}  // namespace

std::optional<std::string> agent_name_problem(std::string_view name) {
  if (name.empty()) return "the name is empty";
  if (name.size() > max_agent_name_bytes) {
    return "'" + printable(name.substr(0, 64)) + "...' is " + std::to_string(name.size()) +
           " bytes, longer than " + std::to_string(max_agent_name_bytes) +
           " (no server offers such a name)";
  }
  return std::nullopt;
}

std::optional<std::string> read_input_option(std::string_view value, std::string* problem) {
  std::string text(value);
  std::string quoted =
      "--input: '" + printable(value.substr(0, 64)) + (value.size() > 64 ? "...'" : "'");
  if (value.starts_with("@")) {
    const std::string path(value.substr(1));
    if (path.empty()) {
      *problem = "--input: '@' names no file (--input @FILE reads the JSON in FILE)";
      return std::nullopt;
    }
    std::string why;
    std::optional<std::string> content = read_small_file(path, &why);
    if (!content) {
      *problem = "--input: " + printable(path) + ": " + why;
      return std::nullopt;
    }
    text = std::move(*content);
    quoted = "--input: " + printable(path);
  }
  std::string why;
  std::optional<std::string> compact = compact_json_value(text, &why);
  if (!compact) *problem = quoted + " is " + why;
  return compact;
}

std::optional<std::string> header_option_error(std::string_view text, std::string* name,
                                               std::string* value) {
  const std::string quoted = "--header: '" + printable(text) + "'";
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return quoted + " is not 'Name: value'";
  }
  const std::string_view header_name = text.substr(0, colon);
  if (!std::all_of(header_name.begin(), header_name.end(), is_token_char)) {
    return quoted + " is not 'Name: value' (a name has no blanks or separators)";
  }
  std::string_view header_value = text.substr(colon + 1);
  while (!header_value.empty() && (header_value.front() == ' ' || header_value.front() == '\t'))
    header_value.remove_prefix(1);
  while (!header_value.empty() && (header_value.back() == ' ' || header_value.back() == '\t'))
    header_value.remove_suffix(1);
  const bool control = std::any_of(header_value.begin(), header_value.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return (byte < 0x20 && c != '\t') || byte == 0x7f;
  });
  if (control) return quoted + ": the value holds control characters";
  const std::string folded = lower(header_name);
  if (std::find(handshake_headers.begin(), handshake_headers.end(), folded) !=
      handshake_headers.end()) {
    return quoted + ": " + std::string(header_name) + " is set by the WebSocket handshake";
  }
  if (name) *name = std::string(header_name);
  if (value) *value = std::string(header_value);
  return std::nullopt;
}

client_command_line parse_client_command_line(int argc, const char* const* argv,
                                              std::string_view version, const char* env_token) {
  client_options chosen;
  const scenario defaults;
  std::vector<std::string> runs;
  std::vector<std::string> cancels;
  std::vector<std::string> headers;
  std::vector<std::string> attaches;

  po::options_description options(
      "ws-client: start agent runs over WebSocket, cancel some, print every event\n\n"
      "Without options it plays the original scenario: start run-001 and run-002,\n"
      "cancel run-002 after 2.5 s.\n\nOptions");
  const std::string steps_help = "params.steps for every run, " + range_text(client_ranges::steps) +
                                 " (default: the server's)";
  const std::string interval_help = "params.interval_ms for every run, " +
                                    range_text(client_ranges::interval_ms) +
                                    " (default: the server's)";
  const std::string timeout_ms_help = "every run's deadline (start_run's timeout_ms), " +
                                      range_text(client_ranges::timeout_ms) +
                                      " (default: the server's)";
  // clang-format off
  options.add_options()
    ("help,h", "show this help and exit")
    ("version", "show the version and exit")
    ("url", po::value<std::string>()->default_value(defaults.url), "server URL (ws:// or wss://)")
    ("run", po::value(&runs)->composing(),
     "start this run_id, 1..256 bytes, each once (repeatable; default run-001 run-002)")
    ("cancel", po::value(&cancels)->composing(),
     "cancel RUN_ID@SECONDS after the start, RUN_ID one of the runs, SECONDS 0..31536000 "
     "(repeatable; default run-002@2.5 when no --run)")
    ("steps", po::value<std::string>(), steps_help.c_str())
    ("interval-ms", po::value<std::string>(), interval_help.c_str())
    ("token", po::value<std::string>(), "bearer token for the server (default: $AGENTWS_TOKEN)")
    ("header", po::value(&headers)->composing(),
     "add 'Name: value' to the WebSocket upgrade request (repeatable)")
    ("origin", po::value<std::string>(),
     "send this Origin (scheme://host[:port]) with the upgrade request")
    ("ca-file", po::value<std::string>(),
     "wss://: trust the CA certificates (or self-signed certificate) in this PEM file instead of the system's")
    ("attach", po::value(&attaches)->composing(),
     "follow RUN[@SEQ], a run of this session (--session) or identity (--token), after SEQ "
     "(-1..2^63-1, default -1: from its start) and wait for it like a run started (repeatable)")
    ("session", po::value<std::string>(),
     "continue this session (the key a server that resumes runs gave; printed when connected)")
    ("agent", po::value<std::string>(),
     "start every run with this agent, one the server offers (its connected event lists them; "
     "default: the server's)")
    ("input", po::value<std::string>(),
     "start every run with this input: a JSON value, or @FILE for the JSON in FILE (up to 16 MiB)")
    ("timeout-ms", po::value<std::string>(), timeout_ms_help.c_str())
    ("interactive,i", "read commands from stdin (see below)")
    ("reconnect",
     "when the connection drops, reconnect with back-off; a server that resumes runs keeps "
     "them, and they are followed on from the last event printed")
    ("json", "print each event's JSON as received, one line each (the summary goes to stderr)")
    ("color", po::value<std::string>()->default_value("auto"), "auto, always or never")
    ("timeout", po::value<std::string>()->default_value("60"),
     "give up after this many seconds, 0.001..31536000 (with -i: only when given)");
  // clang-format on

  client_command_line result;
  std::vector<std::string> problems;
  auto refuse = [&] {
    result.exit_status = static_cast<int>(scenario_exit::usage);
    for (const std::string& problem : problems)
      result.errors.append("ws-client: ").append(problem).append("\n");
    result.errors.append("Try 'ws-client --help'.\n");
    return result;
  };

  // "--steps=" would get Program_options' own message, which names no range:
  // read it as "--steps" "" so that it meets the option's check.
  std::vector<std::string> arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument.starts_with("--") && argument.size() > 3 && argument.back() == '=' &&
        argument.find('=') == argument.size() - 1) {
      arguments.emplace_back(argument.substr(0, argument.size() - 1));
      arguments.emplace_back();
    } else {
      arguments.emplace_back(argument);
    }
  }
  po::variables_map args;
  try {
    const po::positional_options_description none;
    po::store(po::command_line_parser(arguments).options(options).positional(none).run(), args);
    po::notify(args);
  } catch (const po::error& e) {
    problems.push_back(printable(e.what()));
    return refuse();
  }
  if (args.count("help")) {
    std::ostringstream out;
    out << options << help_epilogue;
    result.output = out.str();
    return result;
  }
  if (args.count("version")) {
    result.output = "ws-client " + std::string(version) + "\n";
    return result;
  }

  scenario& plan = chosen.plan;
  plan.url = args["url"].as<std::string>();
  std::string url_error;
  const std::optional<ws_url> url = ws_url::parse(plan.url, &url_error);
  if (!url) problems.push_back("--url: '" + printable(plan.url) + "': " + url_error);

  chosen.interactive = args.count("interactive") != 0;
  chosen.reconnect = args.count("reconnect") != 0;
  chosen.json = args.count("json") != 0;
  plan.reconnect = chosen.reconnect;
  plan.announce_session = !chosen.json;
  if (chosen.interactive && (!runs.empty() || !cancels.empty() || !attaches.empty())) {
    problems.push_back(
        "--run, --cancel and --attach plan the scenario: with -i, type start, cancel and attach");
  }
  if (args.count("session")) {
    plan.session = args["session"].as<std::string>();
    if (auto problem = session_key_problem(plan.session)) {
      problems.push_back("--session: " + *problem);
    }
  }

  if (args.count("steps")) {
    auto parsed =
        parse_integer_option("steps", args["steps"].as<std::string>(), client_ranges::steps);
    if (const auto* value = std::get_if<std::uint64_t>(&parsed)) {
      plan.params.steps = *value;
    } else {
      problems.push_back(std::get<std::string>(parsed));
    }
  }
  if (args.count("interval-ms")) {
    auto parsed = parse_integer_option("interval-ms", args["interval-ms"].as<std::string>(),
                                       client_ranges::interval_ms);
    if (const auto* value = std::get_if<std::uint64_t>(&parsed)) {
      plan.params.interval_ms = *value;
    } else {
      problems.push_back(std::get<std::string>(parsed));
    }
  }
  if (args.count("timeout-ms")) {
    auto parsed = parse_integer_option("timeout-ms", args["timeout-ms"].as<std::string>(),
                                       client_ranges::timeout_ms);
    if (const auto* value = std::get_if<std::uint64_t>(&parsed)) {
      plan.agent.timeout_ms = *value;
    } else {
      problems.push_back(std::get<std::string>(parsed));
    }
  }
  if (args.count("agent")) {
    const std::string name = args["agent"].as<std::string>();
    if (auto problem = agent_name_problem(name)) {
      problems.push_back("--agent: " + *problem);
    } else {
      plan.agent.agent = name;
    }
  }
  if (args.count("input")) {
    std::string problem;
    plan.agent.input_json = read_input_option(args["input"].as<std::string>(), &problem);
    if (!plan.agent.input_json) problems.push_back(problem);
  }
  {
    const po::variable_value& given = args["timeout"];
    chosen.timeout_given = !given.defaulted();
    auto parsed =
        parse_number_option("timeout", given.as<std::string>(), client_ranges::timeout_seconds);
    if (const auto* seconds = std::get_if<double>(&parsed)) {
      plan.timeout =
          std::chrono::milliseconds(std::max<long long>(1, std::llround(*seconds * 1000)));
    } else {
      problems.push_back(std::get<std::string>(parsed));
    }
  }

  if (!runs.empty()) {
    std::set<std::string> seen;
    for (const std::string& run_id : runs) {
      if (auto problem = run_id_problem(run_id)) {
        problems.push_back("--run: '" + printable(run_id.substr(0, 64)) +
                           (run_id.size() > 64 ? "...'" : "'") + ": " + *problem);
      } else if (!seen.insert(run_id).second) {
        problems.push_back("--run: '" + printable(run_id) +
                           "' is given twice (each run needs its own run_id)");
      }
    }
    plan.runs = runs;
    plan.cancels.clear();
  }
  if (!attaches.empty()) {
    // Runs followed, not started: without --run, none is started.
    if (runs.empty()) {
      plan.runs.clear();
      plan.cancels.clear();
    }
    std::set<std::string> seen;
    for (const std::string& text : attaches) {
      std::string why;
      std::optional<attach_request> attach = parse_attach_request(text, &why);
      const std::string quoted =
          "--attach: '" + printable(text.substr(0, 64)) + (text.size() > 64 ? "...'" : "'");
      if (!attach) {
        problems.push_back(quoted + (why.starts_with("is not") ? " " : ": ") + why);
      } else if (std::find(plan.runs.begin(), plan.runs.end(), attach->run_id) != plan.runs.end()) {
        problems.push_back(quoted + ": " + printable(attach->run_id) +
                           " is started too (--run): a run is started or attached, not both");
      } else if (!seen.insert(attach->run_id).second) {
        problems.push_back(quoted + ": " + printable(attach->run_id) + " is attached twice");
      } else {
        plan.attaches.push_back(std::move(*attach));
      }
    }
  }
  if (!cancels.empty()) {
    plan.cancels.clear();
    std::set<std::string> cancelled;
    for (const std::string& text : cancels) {
      const std::string quoted = "--cancel: '" + printable(text) + "'";
      const std::size_t at = text.rfind('@');
      if (at == std::string::npos || at == 0) {
        problems.push_back(quoted + " is not RUN_ID@SECONDS");
        continue;
      }
      const std::string run_id = text.substr(0, at);
      const std::string seconds_text = text.substr(at + 1);
      auto seconds = parse_number_option("cancel", seconds_text, client_ranges::cancel_seconds);
      if (!std::holds_alternative<double>(seconds)) {
        problems.push_back(quoted + " is not RUN_ID@SECONDS with SECONDS a number from 0 to " +
                           std::to_string(std::llround(client_ranges::cancel_seconds.max)));
        continue;
      }
      if (std::find(plan.runs.begin(), plan.runs.end(), run_id) == plan.runs.end()) {
        problems.push_back(quoted + ": " + printable(run_id) +
                           " is not one of the runs started (--run)");
        continue;
      }
      if (!cancelled.insert(run_id).second) {
        problems.push_back(quoted + ": " + printable(run_id) + " is already cancelled once");
        continue;
      }
      plan.cancels.push_back(planned_cancel{
          run_id, std::chrono::milliseconds(std::llround(std::get<double>(seconds) * 1000))});
    }
  }

  if (args.count("token")) {
    plan.token = args["token"].as<std::string>();
  } else if (env_token) {
    plan.token = env_token;
  }
  for (const std::string& header : headers) {
    std::string name;
    std::string value;
    if (auto problem = header_option_error(header, &name, &value)) {
      problems.push_back(*problem);
    } else {
      plan.headers.emplace_back(std::move(name), std::move(value));
    }
  }
  if (args.count("origin")) {
    plan.origin = args["origin"].as<std::string>();
    if (auto problem = origin_option_error("origin", plan.origin)) problems.push_back(*problem);
  }
  if (args.count("ca-file")) {
    plan.tls.ca_file = args["ca-file"].as<std::string>();
    if (plan.tls.ca_file.empty()) problems.push_back("--ca-file: the path is empty");
  }

  chosen.color = args["color"].as<std::string>();
  if (chosen.color != "auto" && chosen.color != "always" && chosen.color != "never") {
    problems.push_back("--color: '" + printable(chosen.color) + "' is not auto, always or never");
  }

  if (!problems.empty()) return refuse();
  result.options = std::move(chosen);
  return result;
}

}  // namespace agentws
