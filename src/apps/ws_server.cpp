// ws-server: command-line options and wiring only; the server is the library's.
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "agentws/events.hpp"
#include "agentws/program_agent.hpp"
#include "agentws/server.hpp"
#include "apps/memory_trim.hpp"
#include "apps/server_options.hpp"

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
  mallopt(M_TRIM_THRESHOLD, static_cast<int>(agentws::kept_free_bytes_per_arena));
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
  auto command_line = agentws::parse_server_command_line(
      argc, argv, std::max(1u, std::thread::hardware_concurrency()));
  std::cout << command_line.output;
  std::cerr << command_line.errors;
  if (!command_line.options) return command_line.exit_status;
  agentws::server_options& options = *command_line.options;
  agentws::server_config& config = options.config;
  const unsigned threads = options.threads;

  auto refuse = [](const std::string& message) {
    std::cerr << "ws-server: " << message << "\n";
    return 2;
  };
  std::string token_note;  // logged once the log is set up
  if (!options.token_file.empty()) {
    auto file = agentws::read_token_file(options.token_file);
    if (!file.error.empty()) return refuse(file.error);
    if (file.named_form) {
      token_note = "--token-file: " + agentws::token_owners_note(file.tokens);
      config.tokens = std::move(file.tokens);
    } else {
      config.token = std::move(file.tokens.front().token);
    }
  } else if (const char* env = std::getenv("AGENTWS_TOKEN"); env && *env) {
    config.token = env;
  }
  // Program agents: a bare program name is looked up in PATH once, now.
  std::vector<std::string> agent_notes;  // logged once the log is set up
  std::shared_ptr<agentws::process_limit> processes;
  if (!options.program_agents.empty()) {
    const char* path = std::getenv("PATH");
    processes = std::make_shared<agentws::process_limit>(options.max_processes);
    for (auto& agent : options.program_agents) {
      std::string& program = agent.spec.argv.front();
      program = agentws::resolve_program(program, path ? path : "/usr/local/bin:/usr/bin:/bin");
      std::string note = "agent " + agent.name + ": " + agentws::printable(program);
      if (::access(program.c_str(), X_OK) != 0) {
        note += " is not an executable file here: its runs will be refused (unavailable)";
      } else {
        note += std::string(" (") +
                (agent.spec.framing == agentws::program_framing::text ? "text" : "json") +
                " framing" + (agent.spec.accepts_input ? ", takes input" : "") + ")";
      }
      agent_notes.push_back(std::move(note));
      config.agents.push_back(
          {agent.name, agentws::make_program_agent(agent.name, std::move(agent.spec), processes)});
    }
  }
  const std::string host_as_given = config.host;
  auto host = agentws::resolve_listen_host(config.host);
  if (!host.error.empty()) return refuse(host.error);
  config.host = host.address;
  if (!agentws::is_loopback_address(config.host) && config.token.empty() && config.tokens.empty() &&
      !options.allow_unauthenticated) {
    return refuse("--host " + agentws::printable(host_as_given) +
                  " is reachable from other machines: set a token (--token-file or "
                  "AGENTWS_TOKEN) or pass --allow-unauthenticated");
  }

  auto logger = spdlog::stderr_color_mt("agentws");
  // Both formats in UTC, the zone of the events' own timestamps.
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (options.json_logs) {
    formatter->add_flag<json_message_flag>('*').set_pattern(
        R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%*})");
  } else {
    formatter->set_pattern("[%Y-%m-%dT%H:%M:%S.%fZ] [%^%l%$] %v");
  }
  logger->set_formatter(std::move(formatter));
  spdlog::set_default_logger(logger);
  spdlog::set_level(options.log_level);
  if (!host.note.empty()) spdlog::info("{}", host.note);
  if (!token_note.empty()) spdlog::info("{}", token_note);
  for (const std::string& note : agent_notes)
    spdlog::info("{}", note);

  keep_freed_memory_for_reuse();
  const rlim_t open_files = raise_open_file_limit();
  // Every socket counts against --max-sockets; keep it below the open-file
  // limit, with room for the listener, the reserve descriptor, logs and
  // the event loop's own descriptors.
  constexpr rlim_t descriptor_headroom = 64;
  const std::size_t wanted_sockets = agentws::effective_max_sockets(config);
  if (open_files != 0 && open_files < wanted_sockets + descriptor_headroom) {
    const std::size_t fit =
        open_files > descriptor_headroom + 1 ? open_files - descriptor_headroom : 1;
    spdlog::warn("the open-file limit ({}) leaves room for {} sockets, not {}: --max-sockets is {}",
                 open_files, fit, wanted_sockets, fit);
    config.max_sockets = fit;
    if (config.max_connections > fit) config.max_connections = fit;
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
    spdlog::critical("cannot listen on {}: {}", agentws::host_and_port(config.host, config.port),
                     e.code().message());
    return 1;
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }
  spdlog::info(
      "memory budget for queued output: {} MiB{}", agentws::effective_memory_budget(config) >> 20,
      config.memory_budget == 0 ? " (a quarter of the memory available; --memory-budget)" : "");
  const bool tls = !config.tls_cert_file.empty();
  spdlog::info("listening on {}, console {} ({} I/O threads)",
               agentws::server_url(tls ? "wss" : "ws", config.host, server.port(), "/ws"),
               agentws::server_url(tls ? "https" : "http", config.host, server.port(), "/"),
               threads);

  // The signal set lives on a strand of its own: the stop callback must cancel
  // its pending wait, or the first context's run() would never return.
  auto signal_strand = boost::asio::make_strand(io);

  // Freed memory is kept for the next burst (above) and given back once the
  // load has fallen for good (see trim_schedule).
  agentws::trim_schedule trim;
  agentws::server_stats last_seen;
  boost::asio::steady_timer trim_timer(signal_strand);
  bool memory_watch_stopped = false;  // on signal_strand
  // Each I/O thread gives back the top of its own malloc arena (see
  // give_back_thread_arena), then the last one to finish trims them all.
  const auto give_back_memory = [&](std::uint64_t peak, std::uint64_t load) {
    const std::int64_t before = agentws::resident_bytes();
    auto threads_left = std::make_shared<std::atomic<std::size_t>>(contexts.size());
    for (auto& context : contexts) {
      boost::asio::post(*context, [threads_left, before, peak, load] {
        agentws::give_back_thread_arena();
        if (threads_left->fetch_sub(1) != 1) return;
        agentws::give_back_free_memory();
        spdlog::info(
            "load fell from {} to {} (sockets and runs): gave back {:.1f} MiB of freed memory",
            peak, load,
            static_cast<double>(before - agentws::resident_bytes()) / (1024.0 * 1024.0));
      });
    }
  };
  std::function<void()> watch_memory = [&] {
    trim_timer.expires_after(std::chrono::seconds(1));
    trim_timer.async_wait([&](const boost::system::error_code& ec) {
      // A wait that had completed before cancel() still runs: the flag stops
      // it from arming again, or the first context's run() never returns.
      if (ec || memory_watch_stopped) return;
      // The load: what is open now, or what arrived since the last look if
      // more (a burst can come and go between two looks).
      const agentws::server_stats stats = server.stats();
      const std::uint64_t arrived = (stats.sockets_accepted - last_seen.sockets_accepted) +
                                    (stats.runs_started - last_seen.runs_started);
      last_seen = stats;
      const std::uint64_t peak = trim.peak();
      // Ended runs kept for a later attach hold their histories: they are load.
      const std::uint64_t load =
          std::max(stats.sockets_open + stats.runs_active + stats.runs_retained, arrived);
      if (trim.observe(load)) give_back_memory(peak, load);
      watch_memory();
    });
  };
  watch_memory();

  boost::asio::signal_set signals(signal_strand, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signal_number) {
    if (ec) return;
    spdlog::info("signal {}: stopping (send it again to exit at once)", signal_number);
    server.stop([&] {
      boost::asio::post(signal_strand, [&] {
        signals.cancel();
        memory_watch_stopped = true;
        trim_timer.cancel();
      });
    });
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
  spdlog::info("stopped: {}", agentws::shutdown_summary(server.stats()));
  // The threads returned once every process was reaped (see reap in
  // program_agent.cpp): none is left behind.
  if (processes) {
    spdlog::info("program agents: {} processes started, {} left", processes->spawned(),
                 processes->live());
  }
  return 0;
}
