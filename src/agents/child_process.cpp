#include "agents/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <system_error>
#include <utility>

namespace agentws::detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;

constexpr std::size_t read_chunk = 64 * 1024;

std::string errno_text(int error) {
  return std::generic_category().message(error);
}

// A descriptor closed with its owner.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~unique_fd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A close-on-exec copy of `fd` at 3 or above: the child's dup2 onto 0, 1 and
// 2 must not overwrite a pipe end still to be duplicated (a server started
// with stdin closed gets descriptor 0 from its first pipe).
bool above_stdio(unique_fd& fd) {
  if (fd.get() > 2) return true;
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return false;
  fd.reset(moved);
  return true;
}

struct pipe_ends {
  unique_fd read;
  unique_fd write;
};

// Close-on-exec both ends, so that no other child (spawned concurrently by
// another thread) inherits them; the file actions dup2 the child's end.
std::string make_pipe(pipe_ends& ends) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return "cannot create a pipe: " + errno_text(errno);
  ends.read.reset(fds[0]);
  ends.write.reset(fds[1]);
  const bool moved = above_stdio(ends.read) && above_stdio(ends.write);
  if (!moved) return "cannot create a pipe: " + errno_text(errno);
  return {};
}

bool set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

struct file_actions {
  file_actions() { ::posix_spawn_file_actions_init(&actions); }
  ~file_actions() { ::posix_spawn_file_actions_destroy(&actions); }
  file_actions(const file_actions&) = delete;
  file_actions& operator=(const file_actions&) = delete;
  posix_spawn_file_actions_t actions;
};

struct spawn_attributes {
  spawn_attributes() { ::posix_spawnattr_init(&attributes); }
  ~spawn_attributes() { ::posix_spawnattr_destroy(&attributes); }
  spawn_attributes(const spawn_attributes&) = delete;
  spawn_attributes& operator=(const spawn_attributes&) = delete;
  posix_spawnattr_t attributes;
};

std::vector<char*> c_strings(const std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (const std::string& s : strings)
    pointers.push_back(const_cast<char*>(s.c_str()));
  pointers.push_back(nullptr);
  return pointers;
}

// Kills the group of a child we will not use, and reaps it.
void discard_child(pid_t pid) {
  ::kill(-pid, SIGKILL);
  int ignored = 0;
  while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
  }
}

// write(2) that cannot raise SIGPIPE: the calling thread blocks SIGPIPE
// around the write and takes back the SIGPIPE an EPIPE raised. Only this
// thread's mask changes, and only for the call; nothing process-wide.
ssize_t write_without_sigpipe(int fd, const char* data, std::size_t size) {
  sigset_t pipe_only;
  sigset_t previous;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  const ssize_t written = ::write(fd, data, size);
  const int error = errno;
  if (written < 0 && error == EPIPE && !was_pending) {
    const timespec no_wait{};
    while (::sigtimedwait(&pipe_only, nullptr, &no_wait) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  errno = error;
  return written;
}

exit_status status_of(const siginfo_t& info) {
  exit_status status;
  if (info.si_code == CLD_EXITED) {
    status.code = info.si_status;
  } else if (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED) {
    status.signal = info.si_status;
  }
  return status;
}

// Until the descriptor reports `what`, or `ready()` says it happened already.
// Asio registers a descriptor edge-triggered and never tries a wait before
// queueing it, so readiness reported while no wait is queued is lost (a
// child that exits, or a reader that empties the pipe, right before the wait
// starts). So the wait is queued first, then `ready()` asked: if it holds,
// the wait is cancelled (with any other on the descriptor; those look
// again too). The completion's error, operation_aborted included.
template <typename Ready>
asio::awaitable<error_code> wait_until(asio::posix::stream_descriptor& descriptor,
                                       asio::posix::stream_descriptor::wait_type what,
                                       Ready ready) {
  error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  co_await asio::async_initiate<decltype(token), void(error_code)>(
      [&descriptor, what, ready](auto handler) {
        descriptor.async_wait(what, std::move(handler));
        if (ready()) {
          error_code ignored;
          descriptor.cancel(ignored);
        }
      },
      token);
  co_return ec;
}

// Throws operation_aborted if the calling coroutine was cancelled.
asio::awaitable<void> throw_if_cancelled() {
  const asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
  if (state.cancelled() != asio::cancellation_type::none) {
    throw boost::system::system_error(asio::error::operation_aborted);
  }
}

}  // namespace

std::string describe(const exit_status& status) {
  if (status.exited()) return "exit code " + std::to_string(status.code);
  if (status.signalled()) {
    const char* name = ::sigdescr_np(status.signal);
    std::string text = "killed by signal " + std::to_string(status.signal);
    if (name != nullptr) text.append(" (").append(name).append(")");
    return text;
  }
  return "exit status lost";
}

spawn_result child_process::spawn(const asio::any_io_executor& executor,
                                  const spawn_options& options) {
  spawn_result result;
  if (options.argv.empty() || options.argv.front().empty()) {
    result.error = "no program to start";
    return result;
  }
  const std::string& program = options.argv.front();
  // posix_spawn reports a failed chdir as it reports a failed exec (ENOENT
  // either way): check the directory first for a message that names it.
  if (!options.cwd.empty()) {
    struct stat info {};
    if (::stat(options.cwd.c_str(), &info) != 0) {
      result.error = "working directory " + options.cwd + ": " + errno_text(errno);
      return result;
    }
    if (!S_ISDIR(info.st_mode)) {
      result.error = "working directory " + options.cwd + ": " + errno_text(ENOTDIR);
      return result;
    }
  }

  pipe_ends in;
  pipe_ends out;
  pipe_ends err;
  for (pipe_ends* ends : {&in, &out, &err}) {
    result.error = make_pipe(*ends);
    if (!result.error.empty()) return result;
  }

  file_actions files;
  posix_spawn_file_actions_t* fa = &files.actions;
  int rc = ::posix_spawn_file_actions_adddup2(fa, in.read.get(), STDIN_FILENO);
  if (rc == 0) rc = ::posix_spawn_file_actions_adddup2(fa, out.write.get(), STDOUT_FILENO);
  if (rc == 0) rc = ::posix_spawn_file_actions_adddup2(fa, err.write.get(), STDERR_FILENO);
  if (rc == 0 && !options.cwd.empty()) {
    rc = ::posix_spawn_file_actions_addchdir_np(fa, options.cwd.c_str());
  }
  // After the dup2s: everything from 3 up, whatever its close-on-exec flag.
  if (rc == 0) rc = ::posix_spawn_file_actions_addclosefrom_np(fa, 3);

  spawn_attributes attributes;
  posix_spawnattr_t* attr = &attributes.attributes;
  sigset_t no_signals;
  sigemptyset(&no_signals);
  // Every bit on, not sigfillset: that one leaves out glibc's two internal
  // signals (32 and 33), which posix_spawn then sets to SIG_IGN in the child,
  // and an ignored signal stays ignored across exec. With them in the set
  // the child starts as after fork and exec: every signal at SIG_DFL.
  sigset_t all_signals;
  std::memset(&all_signals, 0xff, sizeof all_signals);
  if (rc == 0) {
    rc = ::posix_spawnattr_setflags(
        attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  if (rc == 0) rc = ::posix_spawnattr_setpgroup(attr, 0);
  if (rc == 0) rc = ::posix_spawnattr_setsigmask(attr, &no_signals);
  if (rc == 0) rc = ::posix_spawnattr_setsigdefault(attr, &all_signals);
  if (rc != 0) {
    result.error = "cannot prepare to start " + program + ": " + errno_text(rc);
    return result;
  }

  std::vector<char*> argv = c_strings(options.argv);
  std::vector<char*> env = c_strings(options.env);
  pid_t pid = -1;
  // glibc's posix_spawn clones with CLONE_VFORK: an exec (or chdir) that
  // fails in the child is its return value, and the failed child is
  // already reaped.
  rc = ::posix_spawn(&pid, program.c_str(), fa, attr, argv.data(), env.data());
  if (rc != 0) {
    result.error = "cannot start " + program + ": " + errno_text(rc);
    return result;
  }
  in.read.reset();
  out.write.reset();
  err.write.reset();

  // Our child, not reaped: its pid cannot have been reused.
  unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd.get() < 0) {
    result.error = "cannot watch " + program + ": pidfd_open: " + errno_text(errno);
    discard_child(pid);
    return result;
  }
  // stdin is written with our own write(2) (see write_without_sigpipe); Asio
  // makes the read ends non-blocking itself.
  if (!set_nonblocking(in.write.get())) {
    result.error = "cannot start " + program + ": " + errno_text(errno);
    discard_child(pid);
    return result;
  }
  try {
    result.child.reset(new child_process(executor, options, pid, pidfd.get(), in.write.get(),
                                         out.read.get(), err.read.get()));
  } catch (const std::exception& e) {
    result.error = "cannot watch " + program + ": " + e.what();
    discard_child(pid);
    return result;
  }
  pidfd.release();
  in.write.release();
  out.read.release();
  err.read.release();
  return result;
}

child_process::child_process(const asio::any_io_executor& executor, const spawn_options& options,
                             pid_t pid, int pidfd, int stdin_fd, int stdout_fd, int stderr_fd)
    : pid_(pid),
      max_line_(std::max<std::size_t>(options.max_line_bytes, 1)),
      max_write_line_(options.max_write_line_bytes != 0 ? options.max_write_line_bytes : max_line_),
      tail_lines_(options.stderr_tail_lines),
      tail_bytes_(options.stderr_tail_bytes),
      kill_group_on_exit_(options.kill_group_on_exit),
      pidfd_(executor),
      stdin_(executor),
      stdout_(executor),
      stderr_(executor) {
  // Each assign takes its descriptor only once it succeeded: a throw leaves
  // the rest to spawn, which closes them.
  pidfd_.assign(pidfd);
  try {
    stdin_.assign(stdin_fd);
    stdout_.assign(stdout_fd);
    stderr_.assign(stderr_fd);
  } catch (...) {
    // Give back what spawn still owns: it closes every descriptor itself.
    pidfd_.release();
    if (stdin_.is_open()) stdin_.release();
    if (stdout_.is_open()) stdout_.release();
    if (stderr_.is_open()) stderr_.release();
    throw;
  }
}

child_process::~child_process() {
  reap_blocking();
}

void child_process::reap_blocking() noexcept {
  if (status_) return;
  ::kill(-pid_, SIGKILL);
  siginfo_t info{};
  int rc = 0;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.native_handle()), &info, WEXITED);
  } while (rc < 0 && errno == EINTR);
  status_ = rc == 0 ? status_of(info) : exit_status{};
}

bool child_process::leader_exited() noexcept {
  if (status_) return true;
  siginfo_t info{};
  const int rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.native_handle()), &info,
                          WEXITED | WNOHANG | WNOWAIT);
  // ECHILD: reaped elsewhere (SIGCHLD ignored); reap() records it as lost.
  if (rc < 0) return errno == ECHILD;
  return info.si_pid != 0;
}

void child_process::reap() noexcept {
  if (status_) return;
  // The leader is a zombie: its pid, the group's id, is still taken.
  if (kill_group_on_exit_) ::kill(-pid_, SIGKILL);
  siginfo_t info{};
  int rc = 0;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.native_handle()), &info, WEXITED | WNOHANG);
  } while (rc < 0 && errno == EINTR);
  // Still running (not after the peek that led here): nothing to record.
  if (rc == 0 && info.si_pid == 0) return;
  status_ = rc == 0 ? status_of(info) : exit_status{};
}

void child_process::signal_group(int sig) noexcept {
  if (!status_) ::kill(-pid_, sig);
}

asio::awaitable<void> child_process::exit_observed() {
  for (;;) {
    if (status_) co_return;
    const bool exited = leader_exited();
    if (exited) {
      reap();
      co_return;
    }
    const error_code ec = co_await wait_until(pidfd_, asio::posix::stream_descriptor::wait_read,
                                              [this] { return leader_exited(); });
    if (ec == asio::error::operation_aborted) {
      co_await throw_if_cancelled();
    } else if (ec) {
      throw boost::system::system_error(ec);
    }
  }
}

asio::awaitable<exit_status> child_process::wait_exit() {
  co_await exit_observed();
  co_return *status_;
}

asio::awaitable<exit_status> child_process::terminate(std::chrono::milliseconds grace) {
  close_stdin();
  kill_group_on_exit_ = true;
  if (status_) co_return *status_;
  signal_group(SIGTERM);
  const auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, grace);
  auto race = exit_observed() || timer.async_wait(asio::use_awaitable);
  const auto first = co_await std::move(race);
  if (first.index() == 1) {
    signal_group(SIGKILL);
    co_await exit_observed();
  }
  co_return *status_;
}

void child_process::close_stdin() noexcept {
  error_code ignored;
  stdin_.close(ignored);
}

asio::awaitable<void> child_process::stdin_writable() {
  // Closed meanwhile, or lost the race: the caller looks again either way.
  if (!stdin_.is_open()) co_return;
  const int fd = stdin_.native_handle();
  co_await wait_until(stdin_, asio::posix::stream_descriptor::wait_write, [fd] {
    pollfd room{fd, POLLOUT, 0};
    return ::poll(&room, 1, 0) != 0;  // room, or an error the next write reports
  });
}

asio::awaitable<write_status> child_process::write_line(std::string text,
                                                        std::chrono::milliseconds timeout) {
  if (text.size() > max_write_line_ || text.find('\n') != std::string::npos) {
    co_return write_status::refused;
  }
  text.push_back('\n');
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t done = 0;
  while (done < text.size()) {
    if (!stdin_.is_open()) co_return write_status::closed;
    const ssize_t written =
        write_without_sigpipe(stdin_.native_handle(), text.data() + done, text.size() - done);
    if (written >= 0) {
      done += static_cast<std::size_t>(written);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      // EPIPE: the child closed its stdin or ended. Nothing more will go in.
      close_stdin();
      co_return write_status::closed;
    }
    const auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor, deadline);
    auto race = stdin_writable() || timer.async_wait(asio::use_awaitable);
    const auto first = co_await std::move(race);
    if (first.index() == 1) {
      // Part of the line may be in the pipe; no later line may follow it.
      close_stdin();
      co_return write_status::timed_out;
    }
  }
  co_return write_status::written;
}

asio::awaitable<line_status> child_process::read_line(std::string& line) {
  line.clear();
  for (;;) {
    const char* unread = out_buffer_.data() + out_start_;
    const std::size_t size = out_buffer_.size() - out_start_;
    const void* newline = std::memchr(unread + out_scanned_, '\n', size - out_scanned_);
    if (out_skipping_) {
      // The rest of a line over the limit: dropped as it comes.
      if (newline != nullptr) {
        out_start_ += static_cast<std::size_t>(static_cast<const char*>(newline) - unread) + 1;
        out_scanned_ = 0;
        out_skipping_ = false;
        continue;
      }
      out_buffer_.clear();
      out_start_ = 0;
      out_scanned_ = 0;
    } else if (newline != nullptr) {
      const auto length = static_cast<std::size_t>(static_cast<const char*>(newline) - unread);
      out_start_ += length + 1;
      out_scanned_ = 0;
      if (length > max_line_) co_return line_status::too_long;
      line.assign(unread, length);
      co_return line_status::line;
    } else if (size > max_line_) {
      out_buffer_.clear();
      out_start_ = 0;
      out_scanned_ = 0;
      out_skipping_ = true;
      co_return line_status::too_long;
    } else {
      out_scanned_ = size;
    }
    if (out_ended_) {
      if (out_skipping_ || size == 0) {
        out_skipping_ = false;
        co_return line_status::end;
      }
      line.assign(unread, size);
      out_buffer_.clear();
      out_start_ = 0;
      out_scanned_ = 0;
      co_return line_status::line;
    }
    // No whole line yet: read at most what completes one over the limit.
    if (out_start_ > 0) {
      out_buffer_.erase(0, out_start_);
      out_start_ = 0;
    }
    const std::size_t kept = out_buffer_.size();
    const std::size_t room =
        out_skipping_ ? read_chunk : std::min(read_chunk, max_line_ + 1 - kept);
    out_buffer_.resize(kept + room);
    error_code ec;
    const std::size_t got =
        co_await stdout_.async_read_some(asio::buffer(out_buffer_.data() + kept, room),
                                         asio::redirect_error(asio::use_awaitable, ec));
    out_buffer_.resize(kept + got);
    if (ec == asio::error::eof) {
      out_ended_ = true;
    } else if (ec) {
      throw boost::system::system_error(ec);
    }
  }
}

void child_process::keep_stderr_line(std::string_view line) {
  if (tail_lines_ == 0 || tail_bytes_ == 0) return;
  line = line.substr(0, tail_bytes_);
  stderr_tail_.emplace_back(line);
  stderr_tail_size_ += line.size();
  while (stderr_tail_.size() > tail_lines_ || stderr_tail_size_ > tail_bytes_) {
    stderr_tail_size_ -= stderr_tail_.front().size();
    stderr_tail_.pop_front();
  }
}

asio::awaitable<void> child_process::drain_stderr(std::function<void(std::string_view)> on_line) {
  std::string chunk(read_chunk, '\0');
  std::string partial;  // the line so far, cut to max_line_
  for (;;) {
    error_code ec;
    const std::size_t got = co_await stderr_.async_read_some(
        asio::buffer(chunk), asio::redirect_error(asio::use_awaitable, ec));
    std::string_view data(chunk.data(), got);
    while (!data.empty()) {
      const std::size_t newline = data.find('\n');
      const std::string_view piece = data.substr(0, newline);
      partial.append(piece.substr(0, max_line_ - std::min(max_line_, partial.size())));
      if (newline == std::string_view::npos) break;
      if (on_line) on_line(partial);
      keep_stderr_line(partial);
      partial.clear();
      data.remove_prefix(newline + 1);
    }
    if (ec == asio::error::eof) break;
    if (ec) throw boost::system::system_error(ec);
  }
  if (!partial.empty()) {
    if (on_line) on_line(partial);
    keep_stderr_line(partial);
  }
}

}  // namespace agentws::detail
