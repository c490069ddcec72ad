// ws-server as a child process on 127.0.0.1:0, for tests that watch it from
// outside: its open file descriptors and resident memory (/proc/PID), its
// log and its exit status. Every wait is bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace agentws::testing {

using namespace std::chrono_literals;

// A process's open file descriptors: sockets, and the rest (pipes, files,
// epoll, event and timer descriptors).
struct fd_census {
  std::size_t sockets = 0;
  std::size_t others = 0;
  std::size_t total() const noexcept { return sockets + others; }
  bool operator==(const fd_census&) const = default;
};

// Raises this process's soft RLIMIT_NOFILE to its hard limit (children
// inherit it) and returns the soft limit now in force.
std::size_t raise_fd_limit();

class server_process {
 public:
  // Starts `program --port 0 args...` with stdout and stderr going to a log
  // file, and waits for its "listening on" line; FAILs the test otherwise.
  server_process(const std::string& program, const std::vector<std::string>& args);
  // Stops the server if still running (SIGTERM, SIGKILL after 10 s).
  ~server_process();
  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;

  pid_t pid() const noexcept { return pid_; }
  std::uint16_t port() const noexcept { return port_; }

  // The entries of /proc/PID/fd: every socket, pipe and file the server holds.
  fd_census open_fds() const;
  // VmRSS from /proc/PID/status, in KiB.
  std::size_t rss_kib() const;
  // Everything the server logged so far, and its last `lines` lines.
  std::string log() const;
  std::string log_tail(std::size_t lines = 20) const;

  // SIGTERM and wait up to `limit`: the exit status (128 + signal if killed
  // by one), or -1 if it had to be killed after `limit`.
  int stop(std::chrono::milliseconds limit = 10s);

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string log_path_;
  int exit_status_ = -1;
};

// Polls `done()` every 50 ms until it holds or `limit` passes; false on the limit.
template <class Done>
bool wait_for(Done done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// A size in KiB as "12.3 MiB", for the scale tests' reports.
std::string mib(std::size_t kib);

}  // namespace agentws::testing
