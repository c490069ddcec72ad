#include "server_process.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace agentws::testing {

namespace {

// The port in ws-server's "listening on ws://HOST:PORT/ws" line (or wss://),
// 0 if not logged yet.
std::uint16_t port_in_log(const std::string& log) {
  const std::size_t at = log.find("listening on ");
  if (at == std::string::npos) return 0;
  const std::size_t slash = log.find("/ws", log.find("://", at) + 3);
  const std::size_t colon = log.rfind(':', slash);
  if (slash == std::string::npos || colon == std::string::npos || colon < at) return 0;
  const std::string digits = log.substr(colon + 1, slash - colon - 1);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return 0;
  return static_cast<std::uint16_t>(std::stoul(digits));
}

int status_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace

std::size_t raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur == RLIM_INFINITY ? std::size_t{1} << 20
                                         : static_cast<std::size_t>(limit.rlim_cur);
}

server_process::server_process(const std::string& program, const std::vector<std::string>& args) {
  std::string log_template =
      (std::filesystem::temp_directory_path() / "agentws-server-XXXXXX.log").string();
  const int log_fd = mkstemps(log_template.data(), 4);
  REQUIRE(log_fd >= 0);
  log_path_ = log_template;

  std::vector<std::string> argv_strings{program, "--port", "0"};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : argv_strings)
    argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
  posix_spawn_file_actions_addclose(&actions, log_fd);
  const int spawned = posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(log_fd);
  INFO("posix_spawn " << program << ": " << std::strerror(spawned));
  REQUIRE(spawned == 0);

  // Sanitizer builds start slowly; 20 s is far more than any start needs.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while ((port_ = port_in_log(log())) == 0) {
    int wait_status = 0;
    if (waitpid(pid_, &wait_status, WNOHANG) == pid_) {
      exit_status_ = status_of(wait_status);
      pid_ = -1;
      FAIL("ws-server exited with status " << exit_status_ << " before listening:\n" << log());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      stop(1s);
      FAIL("ws-server did not log its port within 20 s:\n" << log());
    }
    std::this_thread::sleep_for(10ms);
  }
}

server_process::~server_process() {
  if (pid_ > 0) stop();
  if (!log_path_.empty()) std::remove(log_path_.c_str());
}

fd_census server_process::open_fds() const {
  fd_census census;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid_) + "/fd", ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code link_error;
    const std::string target = std::filesystem::read_symlink(it->path(), link_error).string();
    if (link_error) continue;  // closed while we looked
    ++(target.starts_with("socket:") ? census.sockets : census.others);
  }
  return census;
}

std::size_t server_process::rss_kib() const {
  std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) return std::stoul(line.substr(6));  // "  12345 kB"
  }
  return 0;
}

std::string server_process::log() const {
  std::ifstream file(log_path_);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

std::string server_process::log_tail(std::size_t lines) const {
  const std::string text = log();
  std::size_t at = text.size();
  for (std::size_t seen = 0; at > 0 && seen <= lines;) {
    --at;
    if (text[at] == '\n') ++seen;
  }
  return text.substr(at == 0 ? 0 : at + 1);
}

int server_process::stop(std::chrono::milliseconds limit) {
  if (pid_ <= 0) return exit_status_;
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int wait_status = 0;
  for (;;) {
    const pid_t done = waitpid(pid_, &wait_status, WNOHANG);
    if (done == pid_) {
      exit_status_ = status_of(wait_status);
      break;
    }
    if (done < 0 && errno != EINTR) {
      exit_status_ = -1;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &wait_status, 0);
      exit_status_ = -1;
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  pid_ = -1;
  return exit_status_;
}

std::string mib(std::size_t kib) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(kib) / 1024.0);
  return text;
}

}  // namespace agentws::testing
