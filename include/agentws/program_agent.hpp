// A program as an agent: each run is one process of it, fed JSON lines on
// stdin and streaming one event per stdout line (see docs/protocol.md,
// "Program agents", and the README's "Your agent as a program").
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "agentws/agent.hpp"

namespace agentws {

// How a program's stdout lines become events.
enum class program_framing {
  json,  // a JSON object is the event's fields; any other line is {"text": line}
  text,  // every line is {"text": line} (websocketd's framing)
};

struct program_spec {
  // argv[0] is the program's path, run as it is: no shell, no PATH search
  // (ws-server looks a bare name up in its PATH once, at start-up).
  std::vector<std::string> argv;
  std::string description;
  std::string cwd;               // empty: the server's working directory
  std::vector<std::string> env;  // NAME=value: all the child gets, besides AGENTWS_RUN_ID/AGENT
  std::chrono::milliseconds kill_grace{2'000};  // SIGTERM to SIGKILL
  std::size_t max_line_bytes = 64 * 1024;       // a longer stdout line fails the run
  bool accepts_input = true;                    // false: stdin is closed after the start line
  program_framing framing = program_framing::json;
};

// Live processes of every program agent of a server, those being killed
// included: a start past the limit is refused with too_many_processes, so
// a loop of starts and cancels cannot pile up processes. Shared by the
// agents (one per server); safe from any thread.
class process_limit {
 public:
  explicit process_limit(std::size_t max) : max_(max) {}
  std::size_t max() const noexcept { return max_; }
  std::size_t live() const noexcept { return live_.load(std::memory_order_relaxed); }
  std::uint64_t spawned() const noexcept { return spawned_.load(std::memory_order_relaxed); }
  // Takes a slot, or false when all are taken.
  bool try_acquire() noexcept;
  void release() noexcept;
  void count_spawn() noexcept { spawned_.fetch_add(1, std::memory_order_relaxed); }

 private:
  const std::size_t max_;
  std::atomic<std::size_t> live_{0};
  std::atomic<std::uint64_t> spawned_{0};
};

// `name` is the agent's name as offered (for the child's AGENTWS_AGENT and
// the log).
std::shared_ptr<agent> make_program_agent(std::string name, program_spec spec,
                                          std::shared_ptr<process_limit> limit);

}  // namespace agentws
