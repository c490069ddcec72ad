// ws-bench's scenarios for program agents, each measuring side by side, in
// one round, three ways of streaming a program's lines over WebSocket:
//
//   program     ws-server running the program as an agent (one process per run)
//   websocketd  websocketd running the same program (one process per connection)
//   demo        ws-server's built-in demo agent, no process (the baseline)
//
// - program-flood: C connections at once, each R runs one after another,
//   each run N lines (`seq 1 N`, or N demo steps at interval_ms 0); events/s,
//   and each server's CPU per event: its own threads, and its children (the
//   programs it reaped) apart. A websocketd run is a connection (handshake
//   included), as a ws-server run is a start_run on an open connection.
// - program-latency: one connection, S samples one after another: start_run
//   (websocketd: connect) to the first event, the program's pid; then
//   cancel_run (websocketd: the close frame) to the process gone. The sides
//   take turns within each round, in a rotating order.
//
// ws_bench.cpp parses the options and prints the rounds' JSON; this file
// prints the side-by-side table.
#pragma once

#include <nlohmann/json.hpp>

#include <charconv>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "resume_scenarios.hpp"

namespace agentws::bench {

struct program_options {
  std::string scenario;  // "program-flood" or "program-latency"
  double timeout_s = 60;
  unsigned connections = 4;     // flood: connections at once
  unsigned runs = 2;            // flood: runs per connection
  unsigned lines = 100'000;     // flood: lines (events) per run
  unsigned samples = 300;       // latency: samples per side
  unsigned close_samples = 50;  // latency: websocketd closes timed (the rest: killed by ws-bench)
  std::string program_agent;    // the ws-server agent that runs the program
  std::string demo_agent;       // the demo agent's name (empty: the server's default)
  int server_pid = 0;
  std::optional<resume_target> websocketd;  // absent: the websocketd side is skipped
  int websocketd_pid = 0;
};

// CPU seconds of a process's threads (schedstat), from ws_bench.cpp.
using cpu_reader = std::function<std::optional<double>(int pid)>;

bool is_program_scenario(std::string_view name);
std::unique_ptr<resume_scenario> make_program_scenario(const program_options& o,
                                                       const resume_target& server,
                                                       cpu_reader threads_cpu,
                                                       std::function<double()> own_cpu);
std::string describe_program_scenario(const program_options& o);
void add_program_params(const program_options& o, nlohmann::ordered_json& params);
// The rounds' medians, one row per side ("program.events_per_s" -> row
// program, column events_per_s).
void print_program_table(const std::vector<std::vector<std::pair<std::string, double>>>& rounds);

// --- Pure helpers (tested in program_reading_test.cpp) ---

// The fields of /proc/PID/stat that the scenarios read; times in clock ticks.
struct proc_stat {
  int ppid = 0;
  std::uint64_t utime = 0, stime = 0;    // the process's own
  std::uint64_t cutime = 0, cstime = 0;  // its children's, once it reaped them
};

// Reads /proc/PID/stat's text. The command name (field 2) may hold spaces
// and parentheses: the fields after it follow the last ')'.
inline std::optional<proc_stat> parse_proc_stat(std::string_view text) {
  const std::size_t close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view rest = text.substr(close + 1);
  proc_stat out;
  // Field 3 (the state) is the first after ')'; we need 4 and 14..17.
  for (int field = 3; field <= 17; ++field) {
    while (!rest.empty() && rest.front() == ' ')
      rest.remove_prefix(1);
    const std::size_t end = std::min(rest.find(' '), rest.size());
    const std::string_view value = rest.substr(0, end);
    if (value.empty()) return std::nullopt;
    rest.remove_prefix(end);
    std::uint64_t* target = field == 14   ? &out.utime
                            : field == 15 ? &out.stime
                            : field == 16 ? &out.cutime
                            : field == 17 ? &out.cstime
                                          : nullptr;
    if (field == 4) {
      const auto [at, ec] = std::from_chars(value.data(), value.data() + value.size(), out.ppid);
      if (ec != std::errc{} || at != value.data() + value.size()) return std::nullopt;
    } else if (target) {
      const auto [at, ec] = std::from_chars(value.data(), value.data() + value.size(), *target);
      if (ec != std::errc{} || at != value.data() + value.size()) return std::nullopt;
    }
  }
  return out;
}

// A line of decimal digits (what `seq` prints, or a pid): its value, or
// nullopt for anything else (empty, a sign, spaces, over 19 digits).
inline std::optional<std::uint64_t> parse_decimal_line(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  std::uint64_t value = 0;
  const auto [at, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || at != text.data() + text.size()) return std::nullopt;
  return value;
}

// A client's frame (RFC 6455 5.2): FIN, `opcode`, masked with `key`.
inline std::string client_frame(unsigned opcode, std::string_view payload, std::uint32_t key) {
  std::string frame;
  frame.push_back(static_cast<char>(0x80 | (opcode & 0x0f)));
  if (payload.size() < 126) {
    frame.push_back(static_cast<char>(0x80 | payload.size()));
  } else if (payload.size() <= 0xffff) {
    frame.push_back(static_cast<char>(0x80 | 126));
    frame.push_back(static_cast<char>(payload.size() >> 8));
    frame.push_back(static_cast<char>(payload.size() & 0xff));
  } else {
    frame.push_back(static_cast<char>(0x80 | 127));
    for (int i = 7; i >= 0; --i)
      frame.push_back(
          static_cast<char>((static_cast<std::uint64_t>(payload.size()) >> (8 * i)) & 0xff));
  }
  char mask[4];
  for (int i = 0; i < 4; ++i) {
    mask[i] = static_cast<char>((key >> (8 * (3 - i))) & 0xff);
    frame.push_back(mask[i]);
  }
  for (std::size_t i = 0; i < payload.size(); ++i)
    frame.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
  return frame;
}

// The status code of an HTTP response head ("HTTP/1.1 101 Switching
// Protocols\r\n..."), or 0 if it is not one.
inline int http_status(std::string_view head) {
  if (!head.starts_with("HTTP/1.1 ") || head.size() < 12) return 0;
  int status = 0;
  const auto [at, ec] = std::from_chars(head.data() + 9, head.data() + 12, status);
  return ec == std::errc{} && at == head.data() + 12 ? status : 0;
}

}  // namespace agentws::bench
