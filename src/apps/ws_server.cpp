// ws-server: command-line options and wiring only; the server is the library's.
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/program_options.hpp>

#include <malloc.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "agentws/events.hpp"
#include "agentws/server.hpp"

namespace po = boost::program_options;

namespace {

// %* in a log pattern: the message as JSON members, "conn": N split off
// from the "conn N: ..." prefix the server uses, the rest JSON-escaped.
class json_message_flag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string_view text(msg.payload.data(), msg.payload.size());
    std::string out;
    if (text.starts_with("conn ")) {
      const std::size_t colon = text.find(": ");
      const std::string_view id = text.substr(5, colon == std::string_view::npos ? 0 : colon - 5);
      if (!id.empty() && id.find_first_not_of("0123456789") == std::string_view::npos) {
        out.append("\"conn\":").append(id).append(",");
        text.remove_prefix(colon + 2);
      }
    }
    out.append("\"msg\":");
    agentws::append_json_string(out, agentws::printable(text));
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<json_message_flag>();
  }
};

// A client that reads slowly while its runs stream grows the connection's
// buffers to hundreds of KiB, given back when its runs end. By default glibc
// returns such memory to the kernel at once and maps buffers over 128 KiB
// afresh, so the next burst faults every page in again: with 1,000 streaming
// connections that was a third of the server's CPU per event. Keep up to
// 64 MiB free per malloc arena instead, and take buffers up to 4 MiB from the
// arenas: after a burst, RSS stays near its peak (by at most that much).
void keep_freed_memory_for_reuse() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
#endif
}

// Each connection is a file descriptor: lift the soft limit to the hard one so
// that --max-connections (10,000 by default) is not cut short by a low
// default of 1024. Returns the limit in force.
rlim_t raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return raised.rlim_cur;
  }
  return limit.rlim_cur;
}

}  // namespace

int main(int argc, char** argv) {
  agentws::server_config config;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::string log_level = "info";
  std::string log_format = "text";
  std::uint64_t handshake_ms = static_cast<std::uint64_t>(config.handshake_timeout.count());
  std::uint64_t idle_ms = static_cast<std::uint64_t>(config.idle_timeout.count());
  std::uint64_t send_ms = static_cast<std::uint64_t>(config.send_timeout.count());
  std::string token_file;

  po::options_description options(
      "ws-server: agent runs over WebSocket (ws://HOST:PORT/ws)\n\nOptions");
  // clang-format off
  options.add_options()
    ("help,h", "show this help and exit")
    ("version", "show the version and exit")
    ("host", po::value(&config.host)->default_value(config.host), "address to listen on")
    ("port,p", po::value(&config.port)->default_value(config.port), "port to listen on (0: any free port)")
    ("threads", po::value(&threads)->default_value(threads), "I/O threads")
    ("steps", po::value(&config.default_params.steps)->default_value(config.default_params.steps),
     "demo agent: events per run when start_run has no params")
    ("interval-ms", po::value(&config.default_params.interval_ms)->default_value(config.default_params.interval_ms),
     "demo agent: milliseconds between events when start_run has no params")
    ("max-connections", po::value(&config.max_connections)->default_value(config.max_connections),
     "open WebSocket connections; more are answered 503")
    ("max-runs", po::value(&config.limits.max_active_runs)->default_value(config.limits.max_active_runs),
     "active runs per connection")
    ("max-message-bytes", po::value(&config.limits.max_message_bytes)->default_value(config.limits.max_message_bytes),
     "largest accepted message; larger ones close with 1009")
    ("max-run-id-bytes", po::value(&config.limits.max_run_id_bytes)->default_value(config.limits.max_run_id_bytes),
     "longest accepted run_id")
    ("max-steps", po::value(&config.limits.max_steps)->default_value(config.limits.max_steps),
     "largest params.steps accepted")
    ("max-interval-ms", po::value(&config.limits.max_interval_ms)->default_value(config.limits.max_interval_ms),
     "largest params.interval_ms accepted")
    ("outbox-bytes", po::value(&config.outbox_bytes)->default_value(config.outbox_bytes),
     "events queued per connection before runs wait for the client")
    ("write-chunk-bytes", po::value(&config.write_chunk_bytes)->default_value(config.write_chunk_bytes),
     "bytes of events handed to the socket at a time (what a cancel can no longer take back)")
    ("notsent-lowat-bytes", po::value(&config.tcp_notsent_lowat)->default_value(config.tcp_notsent_lowat),
     "TCP_NOTSENT_LOWAT: unsent bytes the kernel holds per connection (0: the kernel's default)")
    ("handshake-timeout-ms", po::value(&handshake_ms)->default_value(handshake_ms),
     "time allowed for the HTTP request and the WebSocket handshakes")
    ("idle-timeout-ms", po::value(&idle_ms)->default_value(idle_ms),
     "a silent client is pinged after half of this and dropped after all of it")
    ("send-timeout-ms", po::value(&send_ms)->default_value(send_ms),
     "a client that takes no data for this long is dropped")
    ("allow-origin", po::value(&config.allowed_origins)->composing(),
     "a browser origin (scheme://host[:port]) allowed besides the server's own; '*' for any (repeatable)")
    ("token-file", po::value(&token_file),
     "require this bearer token (first line of the file) for /ws and /metrics; AGENTWS_TOKEN also sets it")
    ("allow-unauthenticated", "listen on a non-loopback address without a token")
    ("tls-cert", po::value(&config.tls_cert_file),
     "serve wss:// with this PEM certificate chain (leaf first); needs --tls-key")
    ("tls-key", po::value(&config.tls_key_file), "the PEM private key of --tls-cert")
    ("log-format", po::value(&log_format)->default_value(log_format),
     "text (readable) or json (one object per line: ts, level, conn, msg)")
    ("log-level", po::value(&log_level)->default_value(log_level),
     "trace, debug, info, warn, error, critical or off");
  // clang-format on

  po::variables_map args;
  try {
    po::store(po::parse_command_line(argc, argv, options), args);
    po::notify(args);
  } catch (const po::error& e) {
    std::cerr << "ws-server: " << e.what() << "\nTry 'ws-server --help'.\n";
    return 2;
  }
  if (args.count("help")) {
    std::cout << options
              << "\nSIGINT/SIGTERM stop gracefully (runs get run_cancelled, reason "
                 "\"shutdown\"); a second signal exits at once.\n";
    return 0;
  }
  if (args.count("version")) {
    std::cout << "ws-server " << config.identity.version << " (protocol "
              << agentws::protocol_version << ")\n";
    return 0;
  }
  const auto level = spdlog::level::from_str(log_level);
  if (level == spdlog::level::off && log_level != "off") {
    std::cerr << "ws-server: unknown --log-level '" << log_level << "'\n";
    return 2;
  }
  if (threads == 0) {
    std::cerr << "ws-server: --threads must be at least 1\n";
    return 2;
  }
  if (!token_file.empty()) {
    std::ifstream file(token_file);
    if (!file || !std::getline(file, config.token) || config.token.empty()) {
      std::cerr << "ws-server: cannot read a token from --token-file\n";
      return 2;
    }
  } else if (const char* env = std::getenv("AGENTWS_TOKEN"); env && *env) {
    config.token = env;
  }
  if (!agentws::is_loopback_address(config.host) && config.token.empty() &&
      !args.count("allow-unauthenticated")) {
    std::cerr << "ws-server: --host " << config.host
              << " is reachable from other machines: set a token (--token-file or AGENTWS_TOKEN)"
                 " or pass --allow-unauthenticated\n";
    return 2;
  }
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    std::cerr << "ws-server: --tls-cert and --tls-key go together\n";
    return 2;
  }
  config.handshake_timeout = std::chrono::milliseconds(handshake_ms);
  config.idle_timeout = std::chrono::milliseconds(idle_ms);
  config.send_timeout = std::chrono::milliseconds(send_ms);

  if (log_format != "text" && log_format != "json") {
    std::cerr << "ws-server: --log-format must be text or json\n";
    return 2;
  }
  auto logger = spdlog::stderr_color_mt("agentws");
  if (log_format == "json") {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<json_message_flag>('*').set_pattern(
        R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%*})");
    logger->set_formatter(std::move(formatter));
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(level);

  keep_freed_memory_for_reuse();
  const rlim_t open_files = raise_open_file_limit();
  if (open_files != 0 && open_files < config.max_connections + 64) {
    spdlog::warn(
        "the open-file limit ({}) is below --max-connections ({}): connections past it "
        "fail at accept",
        open_files, config.max_connections);
  }

  // One context per I/O thread: a connection lives on one thread, and no
  // handler waits for another thread to wake up (see agentws::server).
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts;
  std::vector<boost::asio::io_context*> context_list;
  for (unsigned i = 0; i < threads; ++i) {
    contexts.push_back(std::make_unique<boost::asio::io_context>(1));
    context_list.push_back(contexts.back().get());
  }
  boost::asio::io_context& io = *contexts.front();
  agentws::server server(context_list, config);
  try {
    server.start();
  } catch (const boost::system::system_error& e) {
    spdlog::critical("cannot listen on {}:{}: {}", config.host, config.port, e.code().message());
    return 1;
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }
  const bool tls = !config.tls_cert_file.empty();
  spdlog::info("listening on {}://{}:{}/ws ({} I/O threads)", tls ? "wss" : "ws", config.host,
               server.port(), threads);

  // The signal set lives on a strand of its own: the stop callback must cancel
  // its pending wait, or the first context's run() would never return.
  auto signal_strand = boost::asio::make_strand(io);
  boost::asio::signal_set signals(signal_strand, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signal_number) {
    if (ec) return;
    spdlog::info("signal {}: stopping (send it again to exit at once)", signal_number);
    server.stop([&] { boost::asio::post(signal_strand, [&] { signals.cancel(); }); });
    signals.async_wait([](const boost::system::error_code& again, int number) {
      if (!again) std::_Exit(128 + number);
    });
  });

  std::vector<std::thread> workers;
  for (unsigned i = 1; i < threads; ++i)
    workers.emplace_back([context = contexts[i].get()] { context->run(); });
  io.run();
  for (auto& worker : workers)
    worker.join();
  spdlog::info("stopped");
  return 0;
}
