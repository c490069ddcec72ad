#include "apps/server_options.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <variant>

#include "agentws/events.hpp"

namespace agentws {

namespace po = boost::program_options;

namespace {

// One numeric option: its name, its range (ends may be narrowed by another
// option, see check_relations), its default and where the value goes.
struct numeric_option {
  const char* name;
  integer_range range;
  std::uint64_t default_value;
  std::string help;
  std::function<void(server_options&, std::uint64_t)> store;
  const char* bounded_by = nullptr;  // at most this other option's value
};

// "1..1024": no blank inside, so --help never wraps a range apart.
std::string range_text(integer_range range) {
  return std::to_string(range.min) + ".." + std::to_string(range.max);
}

std::vector<numeric_option> numeric_options(const server_options& defaults) {
  namespace r = server_ranges;
  const server_config& c = defaults.config;
  auto ms = [](std::chrono::milliseconds d) { return static_cast<std::uint64_t>(d.count()); };
  return {
      {"port", r::port, c.port, "port to listen on, " + range_text(r::port) + " (0: any free port)",
       [](server_options& o, std::uint64_t v) { o.config.port = static_cast<std::uint16_t>(v); }},
      {"threads", r::threads, defaults.threads,
       "I/O threads, " + range_text(r::threads) + " (default: the number of cores)",
       [](server_options& o, std::uint64_t v) { o.threads = static_cast<unsigned>(v); }},
      {"steps",
       {0, r::max_steps.max},
       c.default_params.steps,
       "demo agent: events per run when start_run has no params, 0..--max-steps (a default "
       "above --max-steps is lowered to it)",
       [](server_options& o, std::uint64_t v) { o.config.default_params.steps = v; },
       "max-steps"},
      {"interval-ms",
       {0, r::max_interval_ms.max},
       c.default_params.interval_ms,
       "demo agent: milliseconds between events when start_run has no params, "
       "0..--max-interval-ms (a default above it is lowered to it)",
       [](server_options& o, std::uint64_t v) { o.config.default_params.interval_ms = v; },
       "max-interval-ms"},
      {"max-connections", r::max_connections, c.max_connections,
       "open WebSocket connections, " + range_text(r::max_connections) + "; more are answered 503",
       [](server_options& o, std::uint64_t v) { o.config.max_connections = v; }},
      {"max-sockets", r::max_sockets, c.max_sockets,
       "accepted sockets, before and after the upgrade, " + range_text(r::max_sockets) +
           " (0: --max-connections + 1024; kept below the open-file limit); when full, the "
           "oldest not yet upgraded is closed for the new one",
       [](server_options& o, std::uint64_t v) { o.config.max_sockets = v; }},
      {"max-connections-per-address", r::max_connections_per_address, c.max_connections_per_address,
       "sockets from one client address, " + range_text(r::max_connections_per_address) +
           " (0: no cap; behind a proxy or NAT many users share one address)",
       [](server_options& o, std::uint64_t v) { o.config.max_connections_per_address = v; }},
      {"max-requests-per-connection", r::max_requests_per_connection, c.max_requests_per_connection,
       "HTTP requests on one keep-alive connection before it is closed, " +
           range_text(r::max_requests_per_connection),
       [](server_options& o, std::uint64_t v) { o.config.max_requests_per_connection = v; }},
      {"max-runs", r::max_runs, c.limits.max_active_runs,
       "active runs per connection, " + range_text(r::max_runs),
       [](server_options& o, std::uint64_t v) { o.config.limits.max_active_runs = v; }},
      {"history-events", r::history_events, c.limits.history_events,
       "events each run keeps for clients that attach later (attach_run), " +
           range_text(r::history_events) + "; the oldest go first",
       [](server_options& o, std::uint64_t v) { o.config.limits.history_events = v; }},
      {"history-bytes", r::history_bytes, c.limits.history_bytes,
       "bytes of events each run keeps, " + range_text(r::history_bytes) +
           " (the newest event always)",
       [](server_options& o, std::uint64_t v) { o.config.limits.history_bytes = v; }},
      {"retention-ms", r::retention_ms, c.limits.retention_ms,
       "how long an ended run, or a session with runs, stays attachable, " +
           range_text(r::retention_ms) + " (a week)",
       [](server_options& o, std::uint64_t v) { o.config.limits.retention_ms = v; }},
      {"max-runs-per-owner", r::max_runs_per_owner, c.limits.max_runs_per_owner,
       "runs going at once per owner (session or token), " + range_text(r::max_runs_per_owner) +
           "; as many ended ones are kept",
       [](server_options& o, std::uint64_t v) { o.config.limits.max_runs_per_owner = v; }},
      {"max-detached-runs", r::max_detached_runs, c.limits.max_detached_runs,
       "runs going that no connection follows, server-wide, " + range_text(r::max_detached_runs) +
           "; past it they are cancelled",
       [](server_options& o, std::uint64_t v) { o.config.limits.max_detached_runs = v; }},
      {"max-message-bytes", r::max_message_bytes, c.limits.max_message_bytes,
       "largest accepted message, " + range_text(r::max_message_bytes) +
           "; larger ones close with 1009",
       [](server_options& o, std::uint64_t v) { o.config.limits.max_message_bytes = v; }},
      {"max-run-id-bytes", r::max_run_id_bytes, c.limits.max_run_id_bytes,
       "longest accepted run_id, " + range_text(r::max_run_id_bytes) +
           ", at most --max-message-bytes",
       [](server_options& o, std::uint64_t v) { o.config.limits.max_run_id_bytes = v; },
       "max-message-bytes"},
      {"max-steps", r::max_steps, c.limits.max_steps,
       "largest params.steps accepted, " + range_text(r::max_steps),
       [](server_options& o, std::uint64_t v) { o.config.limits.max_steps = v; }},
      {"max-interval-ms", r::max_interval_ms, c.limits.max_interval_ms,
       "largest params.interval_ms accepted, " + range_text(r::max_interval_ms) + " (a day)",
       [](server_options& o, std::uint64_t v) { o.config.limits.max_interval_ms = v; }},
      {"outbox-bytes", r::outbox_bytes, c.outbox_bytes,
       "bytes of events queued per connection before runs wait for the client, " +
           range_text(r::outbox_bytes) + " (a frame is never split: the last one may pass it)",
       [](server_options& o, std::uint64_t v) { o.config.outbox_bytes = v; }},
      {"write-chunk-bytes", r::write_chunk_bytes, c.write_chunk_bytes,
       "bytes of events handed to the socket at a time (at most two outstanding; what a "
       "cancel can no longer take back), " +
           range_text(r::write_chunk_bytes),
       [](server_options& o, std::uint64_t v) { o.config.write_chunk_bytes = v; }},
      {"notsent-lowat-bytes", r::notsent_lowat_bytes, c.tcp_notsent_lowat,
       "TCP_NOTSENT_LOWAT: bytes the kernel may hold unsent per connection, ahead of any "
       "answer, " +
           range_text(r::notsent_lowat_bytes) + " (0: the kernel's default, unbounded)",
       [](server_options& o, std::uint64_t v) { o.config.tcp_notsent_lowat = v; }},
      {"memory-budget", r::memory_budget, c.memory_budget,
       "bytes of output queued in the whole process (every connection's events and "
       "answers not yet taken by the kernel); past it, connections holding more than their "
       "share wait, and when it stays reached clients that take nothing are closed, " +
           range_text(r::memory_budget) +
           " (0: a quarter of the machine's or the cgroup's memory; at least 1 MiB and four write "
           "chunks are used)",
       [](server_options& o, std::uint64_t v) { o.config.memory_budget = v; }},
      {"memory-budget-grace-ms", r::memory_budget_grace_ms, ms(c.memory_budget_grace),
       "how long the memory budget may stay reached before the clients that took nothing "
       "for as long are closed (1008), " +
           range_text(r::memory_budget_grace_ms),
       [](server_options& o, std::uint64_t v) {
         o.config.memory_budget_grace = std::chrono::milliseconds(v);
       }},
      {"socket-send-buffer", r::socket_send_buffer, c.socket_send_buffer,
       "SO_SNDBUF per connection: the kernel holds at most about twice this of a "
       "connection's output; also about the bytes per round trip one connection can send, " +
           range_text(r::socket_send_buffer) + " (0: the kernel's autotuning, up to 4 MiB)",
       [](server_options& o, std::uint64_t v) { o.config.socket_send_buffer = v; }},
      {"handshake-timeout-ms", r::handshake_timeout_ms, ms(c.handshake_timeout),
       "time from the accept to the upgrade (TLS, every HTTP request of a keep-alive "
       "connection, the WebSocket handshake: one deadline), and for the closing handshake, " +
           range_text(r::handshake_timeout_ms),
       [](server_options& o, std::uint64_t v) {
         o.config.handshake_timeout = std::chrono::milliseconds(v);
       }},
      {"idle-timeout-ms", r::idle_timeout_ms, ms(c.idle_timeout),
       "a silent client is pinged after half of this and dropped after all of it, " +
           range_text(r::idle_timeout_ms) + " (it cannot be switched off)",
       [](server_options& o, std::uint64_t v) {
         o.config.idle_timeout = std::chrono::milliseconds(v);
       }},
      {"send-timeout-ms", r::send_timeout_ms, ms(c.send_timeout),
       "a client that takes no data for this long while events wait is dropped, " +
           range_text(r::send_timeout_ms),
       [](server_options& o, std::uint64_t v) {
         o.config.send_timeout = std::chrono::milliseconds(v);
       }},
      {"max-processes", r::max_processes, defaults.max_processes,
       "program agents: live processes server-wide, those being stopped included, " +
           range_text(r::max_processes) + "; past it start_run is refused (too_many_processes)",
       [](server_options& o, std::uint64_t v) { o.max_processes = v; }},
      {"kill-grace-ms", r::kill_grace_ms, ms(defaults.kill_grace),
       "program agents: from SIGTERM to SIGKILL when a run stops, " + range_text(r::kill_grace_ms) +
           " (a config section's kill-grace-ms wins)",
       [](server_options& o, std::uint64_t v) { o.kill_grace = std::chrono::milliseconds(v); }},
      {"shutdown-grace-ms", r::shutdown_grace_ms, ms(c.shutdown_grace),
       "on SIGINT/SIGTERM, connections still open after this are closed without their "
       "run_cancelled and 1001 close, " +
           range_text(r::shutdown_grace_ms),
       [](server_options& o, std::uint64_t v) {
         o.config.shutdown_grace = std::chrono::milliseconds(v);
       }},
  };
}

constexpr const char* log_levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};

po::options_description describe_options(const std::vector<numeric_option>& numbers,
                                         const server_options& defaults,
                                         std::vector<std::string>& origins,
                                         std::vector<std::string>& agents) {
  po::options_description options(
      "ws-server: agent runs over WebSocket (ws://HOST:PORT/ws, console at http://HOST:PORT/)\n\n"
      "Options");
  auto add = options.add_options();
  add("help,h", "show this help and exit");
  add("version", "show the version and exit");
  add("host", po::value<std::string>()->default_value(defaults.config.host),
      "address or host name to listen on (a name listens on its first IPv4 address)");
  for (const numeric_option& option : numbers) {
    const std::string name =
        std::string(option.name) + (std::string_view(option.name) == "port" ? ",p" : "");
    add(name.c_str(), po::value<std::string>()->default_value(std::to_string(option.default_value)),
        option.help.c_str());
  }
  add("allow-origin", po::value(&origins)->composing(),
      "a browser origin (scheme://host[:port], no path) allowed besides the server's own; '*' "
      "for any (repeatable)");
  add("token-file", po::value<std::string>(),
      "require a bearer token for /ws and /metrics: the file's first line, or lines "
      "name:token, one per owner of runs ('#' comments); AGENTWS_TOKEN also sets one");
  add("allow-unauthenticated", "listen on a non-loopback address without a token");
  add("agent", po::value(&agents)->composing(),
      "NAME=PROGRAM [ARG...]: offer a program as agent NAME, one process per run (the value "
      "is split on blanks, never given to a shell; a bare PROGRAM is looked up in PATH once, "
      "at start-up); repeatable");
  add("default-agent", po::value<std::string>(),
      "the agent a start_run without \"agent\" gets (default: demo)");
  add("config", po::value<std::string>(),
      "read options from FILE (NAME = value lines, any long option above; the command line "
      "wins), and program agents from its [agent.NAME] sections: command, description, cwd, "
      "env, pass-env, kill-grace-ms, max-line-bytes, accepts-input, framing");
  add("tls-cert", po::value<std::string>(),
      "serve wss:// with this PEM certificate chain (leaf first); needs --tls-key");
  add("tls-key", po::value<std::string>(), "the PEM private key of --tls-cert");
  add("log-format", po::value<std::string>()->default_value("text"),
      "text (readable) or json (one object per line: ts, level, conn, msg); times in UTC");
  add("log-level", po::value<std::string>()->default_value("info"),
      "trace, debug, info, warn, error, critical or off");
  return options;
}

const char* help_epilogue =
    "\nEvery number is checked against its range (min..max) before the server starts: a value\n"
    "given outside it is refused (exit 2), never clamped. Log times are UTC, in text and JSON\n"
    "logs alike.\n"
    "SIGINT/SIGTERM stop gracefully (runs get run_cancelled, reason \"shutdown\", then a 1001\n"
    "close, within --shutdown-grace-ms); a second signal exits at once.\n";

}  // namespace

server_command_line parse_server_command_line(int argc, const char* const* argv,
                                              unsigned hardware_threads) {
  server_options defaults;
  defaults.threads = static_cast<unsigned>(std::clamp<std::uint64_t>(
      hardware_threads, server_ranges::threads.min, server_ranges::threads.max));
  const std::vector<numeric_option> numbers = numeric_options(defaults);
  std::vector<std::string> origins;
  std::vector<std::string> agent_arguments;
  const po::options_description options =
      describe_options(numbers, defaults, origins, agent_arguments);

  server_command_line result;
  std::vector<std::string> problems;
  auto refuse = [&] {
    result.exit_status = 2;
    for (const std::string& problem : problems)
      result.errors.append("ws-server: ").append(problem).append("\n");
    result.errors.append("Try 'ws-server --help'.\n");
    return result;
  };

  // "--port=" would get Program_options' own message, which names no range:
  // read it as "--port" "" so that it meets the option's check.
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
    // No positional arguments: "ws-server 8000" is a mistake, not a port.
    const po::positional_options_description none;
    po::store(po::command_line_parser(arguments).options(options).positional(none).run(), args);
  } catch (const po::error& e) {
    problems.push_back(printable(e.what()));
    return refuse();
  }
  // The config file's settings count where the command line gave none.
  std::vector<std::pair<std::string, std::string>> agent_sections;
  if (args.count("config") && !args.count("help") && !args.count("version")) {
    const std::string path = args["config"].as<std::string>();
    std::ifstream file(path);
    if (path.empty() || !file) {
      problems.push_back("--config: cannot read '" + printable(path) + "'" +
                         (path.empty() ? "" : std::string(": ") + std::strerror(errno)));
      return refuse();
    }
    try {
      po::parsed_options parsed = po::parse_config_file(file, options, true);
      std::vector<po::option> known;
      for (po::option& option : parsed.options) {
        if (!option.unregistered) {
          if (option.string_key == "config") {
            problems.push_back("--config " + printable(path) +
                               ": a config file cannot name another");
          } else {
            known.push_back(std::move(option));
          }
        } else if (option.string_key.starts_with("agent.")) {
          agent_sections.emplace_back(option.string_key,
                                      option.value.empty() ? std::string() : option.value.front());
        } else {
          problems.push_back("--config " + printable(path) + ": unknown setting '" +
                             printable(option.string_key) + "'");
        }
      }
      parsed.options = std::move(known);
      po::store(parsed, args);
    } catch (const po::error& e) {
      problems.push_back("--config " + printable(path) + ": " + printable(e.what()));
    }
    if (!problems.empty()) return refuse();
  }
  try {
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
    result.output = "ws-server " + defaults.config.identity.version + " (protocol " +
                    std::to_string(protocol_version) + ")\n";
    return result;
  }

  server_options chosen = defaults;
  // Each number against its range. Three ranges end at another option's
  // value, whatever order the two were given in: those are read second.
  std::unordered_map<std::string, std::uint64_t> values;
  auto read_number = [&](const numeric_option& option) {
    const po::variable_value& given = args[option.name];
    const std::string& text = given.as<std::string>();
    integer_range range = option.range;
    std::string suffix;
    if (option.bounded_by) {
      const auto bound = values.find(option.bounded_by);
      if (bound != values.end() && bound->second < range.max) {
        range.max = bound->second;
        suffix = std::string(" (at most --") + option.bounded_by + ")";
      }
    }
    auto parsed = parse_integer_option(option.name, text, range);
    if (const auto* value = std::get_if<std::uint64_t>(&parsed)) {
      values[option.name] = *value;
    } else if (given.defaulted()) {
      values[option.name] = range.max;  // a default above the bound set by the other option
    } else {
      problems.push_back(std::get<std::string>(parsed) + suffix);
    }
  };
  for (const numeric_option& option : numbers) {
    if (!option.bounded_by) read_number(option);
  }
  for (const numeric_option& option : numbers) {
    if (option.bounded_by) read_number(option);
  }
  for (const numeric_option& option : numbers) {
    if (const auto value = values.find(option.name); value != values.end()) {
      option.store(chosen, value->second);
    }
  }

  chosen.config.host = args["host"].as<std::string>();
  if (chosen.config.host.empty()) problems.push_back("--host: '' is not an address or a name");

  for (const std::string& origin : origins) {
    if (origin == "*") continue;
    if (auto message = origin_option_error("allow-origin", origin)) problems.push_back(*message);
  }
  chosen.config.allowed_origins = origins;

  if (args.count("token-file")) {
    chosen.token_file = args["token-file"].as<std::string>();
    if (chosen.token_file.empty()) problems.push_back("--token-file: the path is empty");
  }
  chosen.allow_unauthenticated = args.count("allow-unauthenticated") != 0;
  if (args.count("tls-cert")) chosen.config.tls_cert_file = args["tls-cert"].as<std::string>();
  if (args.count("tls-key")) chosen.config.tls_key_file = args["tls-key"].as<std::string>();
  if (args.count("tls-cert") != args.count("tls-key")) {
    problems.push_back("--tls-cert and --tls-key go together");
  } else if (args.count("tls-cert") &&
             (chosen.config.tls_cert_file.empty() || chosen.config.tls_key_file.empty())) {
    problems.push_back("--tls-cert and --tls-key need file names");
  }

  // Program agents: --agent's, then the config file's; names once each.
  program_spec agent_defaults;
  agent_defaults.kill_grace = chosen.kill_grace;
  for (const std::string& argument : agent_arguments) {
    auto parsed = parse_agent_argument(argument, agent_defaults);
    if (auto* agent = std::get_if<program_agent_option>(&parsed)) {
      chosen.program_agents.push_back(std::move(*agent));
    } else {
      problems.push_back(std::get<std::string>(parsed));
    }
  }
  auto sections = parse_agent_sections(agent_sections, agent_defaults,
                                       [](const std::string& name) -> std::optional<std::string> {
                                         const char* value = std::getenv(name.c_str());
                                         if (!value) return std::nullopt;
                                         return std::string(value);
                                       });
  problems.insert(problems.end(), sections.problems.begin(), sections.problems.end());
  for (auto& agent : sections.agents)
    chosen.program_agents.push_back(std::move(agent));
  std::vector<std::string> agent_names;
  for (const auto& agent : chosen.program_agents) {
    if (agent.name == "demo" || agent.name == "default") {
      problems.push_back("agent " + agent.name + ": the name is the server's own");
    } else if (std::find(agent_names.begin(), agent_names.end(), agent.name) != agent_names.end()) {
      problems.push_back("agent " + agent.name + " is defined twice");
    }
    agent_names.push_back(agent.name);
  }
  if (args.count("default-agent")) {
    const std::string name = args["default-agent"].as<std::string>();
    if (name != "demo" &&
        std::find(agent_names.begin(), agent_names.end(), name) == agent_names.end()) {
      problems.push_back("--default-agent: no agent is named '" + printable(name) +
                         "' (demo, or one given with --agent or in --config)");
    }
    chosen.config.default_agent = name;
  }

  const std::string log_format = args["log-format"].as<std::string>();
  if (log_format != "text" && log_format != "json") {
    problems.push_back("--log-format: '" + printable(log_format) + "' is not text or json");
  }
  chosen.json_logs = log_format == "json";
  const std::string log_level = args["log-level"].as<std::string>();
  const bool known_level =
      std::find(std::begin(log_levels), std::end(log_levels), log_level) != std::end(log_levels);
  if (!known_level) {
    problems.push_back("--log-level: '" + printable(log_level) +
                       "' is not trace, debug, info, warn, error, critical or off");
  }
  chosen.log_level = known_level ? spdlog::level::from_str(log_level) : spdlog::level::info;

  if (!problems.empty()) return refuse();
  result.options = std::move(chosen);
  return result;
}

namespace {

// A token is short, a line of the named form too; the whole file is read up
// to a bound, so /dev/zero cannot hang us.
constexpr std::size_t max_token_line_bytes = 4096;
constexpr std::size_t max_token_file_bytes = 1024 * 1024;

// HTTP drops blanks around a header value, so a token with them never matches.
std::string_view trim_blanks(std::string_view text) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  while (!text.empty() && blank(text.back()))
    text.remove_suffix(1);
  while (!text.empty() && blank(text.front()))
    text.remove_prefix(1);
  return text;
}

bool has_control_characters(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// "alice" from "alice:token" (blanks around the name allowed), or nullopt.
std::optional<std::string_view> owner_name_of(std::string_view line) {
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string_view name = trim_blanks(line.substr(0, colon));
  if (!is_plain_name(name)) return std::nullopt;
  return name;
}

bool is_comment_or_blank(std::string_view line) {
  const std::string_view trimmed = trim_blanks(line);
  return trimmed.empty() || trimmed.front() == '#';
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const std::size_t newline = text.find('\n');
    lines.push_back(text.substr(0, newline));
    if (newline == std::string_view::npos) break;
    text.remove_prefix(newline + 1);
  }
  return lines;
}

}  // namespace

token_file_result parse_token_file(std::string_view text, const std::string& path) {
  token_file_result result;
  auto failure = [&](const std::string& why) {
    result.tokens.clear();
    result.error = "--token-file " + printable(path) + ": " + why;
    return result;
  };
  if (text.empty()) return failure("the file is empty: its first line must hold the token");
  const std::vector<std::string_view> lines = split_lines(text);
  const auto first_filled = std::find_if(
      lines.begin(), lines.end(), [](std::string_view line) { return !trim_blanks(line).empty(); });
  result.named_form = first_filled != lines.end() &&
                      (trim_blanks(*first_filled).front() == '#' || owner_name_of(*first_filled));

  if (!result.named_form) {
    const std::string_view first = lines.front();
    if (first.size() > max_token_line_bytes) {
      return failure("the first line is longer than 4096 bytes");
    }
    const std::string_view token = trim_blanks(first);
    if (token.empty()) return failure("the first line is empty: it must hold the token");
    if (has_control_characters(token)) {
      return failure("the token holds control characters (is it a text file?)");
    }
    result.tokens.push_back({"default", std::string(token)});
    return result;
  }

  if (text.size() > max_token_file_bytes) return failure("the file is longer than 1 MiB");
  std::vector<std::size_t> line_of;  // the line number of each token, for duplicates
  for (std::size_t index = 0; index < lines.size(); ++index) {
    const std::string line_name = "line " + std::to_string(index + 1);
    const std::string_view line = lines[index];
    if (line.size() > max_token_line_bytes) {
      return failure(line_name + " is longer than 4096 bytes");
    }
    if (is_comment_or_blank(line)) continue;
    // The line is not shown: without a ':' it may be a bare token.
    const auto name = owner_name_of(line);
    if (!name) {
      return failure(line_name +
                     " is not name:token (a name of 1 to 64 letters, digits, '.', '_' or '-', "
                     "a ':', then the token)");
    }
    const std::string_view token = trim_blanks(line.substr(line.find(':') + 1));
    const std::string owner = "'" + std::string(*name) + "'";
    if (token.empty()) return failure(line_name + ": the token of " + owner + " is empty");
    if (has_control_characters(token)) {
      return failure(line_name + ": the token of " + owner +
                     " holds control characters (is it a text file?)");
    }
    for (std::size_t earlier = 0; earlier < result.tokens.size(); ++earlier) {
      const named_token& other = result.tokens[earlier];
      const std::string where = "line " + std::to_string(line_of[earlier]);
      if (other.name == *name) {
        return failure(line_name + ": the name " + owner + " is already on " + where);
      }
      if (other.token == token) {
        return failure(line_name + ": the token of " + owner + " is also the token of '" +
                       other.name + "' (" + where + "): each owner needs a token of its own");
      }
    }
    result.tokens.push_back({std::string(*name), std::string(token)});
    line_of.push_back(index + 1);
  }
  if (result.tokens.empty()) {
    return failure("no name:token line: every line is blank or a comment");
  }
  return result;
}

token_file_result read_token_file(const std::string& path) {
  auto failure = [&](const std::string& why) {
    token_file_result result;
    result.error = "--token-file " + printable(path) + ": " + why;
    return result;
  };
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (status.type() == std::filesystem::file_type::not_found) return failure("no such file");
  if (ec) return failure(ec.message());
  if (status.type() == std::filesystem::file_type::directory) {
    return failure("is a directory, not a file");
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) return failure(std::string("cannot be read: ") + std::strerror(errno));
  // One byte past the bound tells a file that is too long.
  std::string text(max_token_file_bytes + 1, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), file.get()));
  if (std::ferror(file.get()))
    return failure(std::string("cannot be read: ") + std::strerror(errno));
  return parse_token_file(text, path);
}

std::string token_owners_note(const std::vector<named_token>& tokens) {
  std::string note =
      "tokens for " + std::to_string(tokens.size()) + (tokens.size() == 1 ? " owner:" : " owners:");
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    note += (i == 0 ? " " : ", ") + tokens[i].name;
  }
  return note;
}

listen_host_result resolve_listen_host(const std::string& host) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  const asio::ip::address literal = asio::ip::make_address(host, ec);
  if (!ec) return {literal.to_string(), {}, {}};

  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  const auto results = resolver.resolve(host, "", ec);
  if (ec || results.empty()) {
    std::string why = "--host " + printable(host) + ": cannot resolve this name: " +
                      (ec ? ec.message() : std::string("it has no address"));
    if (host.find_first_of(":/") != std::string::npos) {
      why += "; give a bare address or name, the port goes in --port";
    }
    return {{}, {}, why};
  }
  std::vector<asio::ip::address> addresses;
  for (const auto& entry : results) {
    const auto address = entry.endpoint().address();
    if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) {
      addresses.push_back(address);
    }
  }
  const auto chosen = std::find_if(addresses.begin(), addresses.end(),
                                   [](const asio::ip::address& a) { return a.is_v4(); });
  const asio::ip::address address = chosen == addresses.end() ? addresses.front() : *chosen;
  listen_host_result result{address.to_string(), {}, {}};
  result.note = "--host " + printable(host) + " is " + result.address;
  if (addresses.size() > 1) {
    result.note += "; not listening on its other addresses:";
    for (const auto& other : addresses) {
      if (other != address) result.note += " " + other.to_string();
    }
  }
  return result;
}

std::string host_and_port(const std::string& address, std::uint16_t port) {
  const bool v6 = address.find(':') != std::string::npos;
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

std::string server_url(std::string_view scheme, const std::string& address, std::uint16_t port,
                       std::string_view path) {
  return std::string(scheme) + "://" + host_and_port(address, port) + std::string(path);
}

std::string shutdown_summary(const server_stats& s) {
  auto count = [](std::uint64_t n, std::string_view one, std::string_view many) {
    return std::to_string(n) + " " + std::string(n == 1 ? one : many);
  };
  const std::uint64_t cancelled = s.runs_cancelled_client + s.runs_cancelled_shutdown +
                                  s.runs_cancelled_disconnect + s.runs_cancelled_timeout;
  std::ostringstream out;
  out << "served " << count(s.connections_total, "WebSocket connection", "WebSocket connections")
      << " (" << s.connections_refused << " refused at --max-connections, "
      << s.slow_consumer_closes << " closed as slow consumers); runs: " << s.runs_started
      << " started, " << s.runs_done << " done, " << cancelled << " cancelled ("
      << s.runs_cancelled_client << " by clients, " << s.runs_cancelled_shutdown << " at shutdown, "
      << s.runs_cancelled_disconnect << " on disconnect, " << s.runs_cancelled_timeout
      << " at their deadline); sent " << count(s.frames_sent, "frame", "frames") << ", "
      << count(s.bytes_sent, "byte", "bytes") << "; error events: " << s.errors_sent;
  return out.str();
}

}  // namespace agentws
