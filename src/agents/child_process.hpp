// One program run as an agent: a child process with three pipes, watched
// through a pidfd, on the caller's strand. The server's runs build on it; it
// knows nothing of runs or events.
//
// Why posix_spawn and a pidfd rather than Boost.Process: in Boost 1.81,
// Process v2's close_handles.ipp compares each whitelisted descriptor with
// itself (`next = whitelist[idx]`, not idx + 1), so every descriptor between
// stdio and its error pipe leaks into the child; its launchers fork and call
// notify_fork in the child, running Asio's reactor code between fork and
// exec; and v1 reaps through one SIGCHLD handler shared by every child, which
// loses exit codes when another part of the process waits too. posix_spawn
// (glibc: clone(CLONE_VFORK), so a failed exec is its return value) runs no
// code of ours in the child, its file actions close everything above stderr,
// and a pidfd tells one child's exit to the reactor with no signal handler
// anywhere. The process must not ignore SIGCHLD (SIG_IGN reaps children
// behind our back; the exit status is then reported as lost) and nothing else
// in it may wait for any child (waitpid(-1, ...)).
//
// The child gets exactly: argv (no shell, no PATH search: argv[0] is the
// program's path, a relative one taken from the new working directory), the
// working directory, the environment given (nothing of the server's), a
// process group of its own (its pgid is its pid), an empty signal mask and
// every signal at its default (SIGPIPE included), and descriptors 0, 1 and 2
// on three pipes; every other descriptor is closed.
//
// The process group and pid reuse: the group is signalled with kill(-pgid)
// only while the leader is not reaped. A zombie leader still holds its pid,
// so the number cannot name another group then. On the leader's exit the
// group gets SIGKILL first (kill_group_on_exit, and always after terminate),
// and only then is the leader reaped; after that nothing is ever signalled.
// A grandchild that leaves the group (setsid, setpgid) is out of reach.
//
// Threading: every member is called on the strand given to spawn, and the
// awaitables run in coroutines on that strand. Readers and writers may run
// concurrently with each other (read_line, drain_stderr, write_line,
// wait_exit, terminate); two read_line (or two drain_stderr, two write_line)
// at once may not. Cancellation (a bound cancellation slot) throws
// operation_aborted out of the awaitable, leaving the object usable. Destroy
// the object on its strand once no awaitable of it is pending.
#pragma once

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentws::detail {

struct spawn_options {
  std::vector<std::string> argv;  // argv[0]: the program's path
  std::string cwd;                // empty: the server's working directory
  std::vector<std::string> env;   // "NAME=value", the child's whole environment
  // The longest line read from stdout, written to stdin, or passed on from
  // stderr (without its newline).
  std::size_t max_line_bytes = 64 * 1024;
  // The longest line write_line takes (0: max_line_bytes): what is written
  // is the caller's, bounded by the caller (a client's message, say).
  std::size_t max_write_line_bytes = 0;
  // What stderr_tail() keeps: the last lines, at most this many and this
  // many bytes together (a longer line is cut to the byte bound).
  std::size_t stderr_tail_lines = 20;
  std::size_t stderr_tail_bytes = 4096;
  // SIGKILL to the whole group when the leader's exit is observed, so that
  // nothing it started outlives it (see above). terminate() always does.
  bool kill_group_on_exit = true;
};

// How the child ended: an exit code or a signal. Both unset (-1 and 0) only
// when the status was lost (someone else reaped the child).
struct exit_status {
  int code = -1;   // 0..255 when it exited; -1 otherwise
  int signal = 0;  // the signal that ended it; 0 otherwise
  bool exited() const noexcept { return code >= 0; }
  bool signalled() const noexcept { return signal != 0; }
  bool success() const noexcept { return code == 0; }
};
// "exit code 3", "killed by signal 9 (Killed)", "exit status lost".
std::string describe(const exit_status& status);

class child_process;

// spawn's answer: a child, or why not ("cannot start /opt/x: Permission
// denied"), never both.
struct spawn_result {
  std::unique_ptr<child_process> child;
  std::string error;
};

enum class line_status {
  line,      // `line` holds the next line, without its newline
  too_long,  // over max_line_bytes: `line` is empty; the next call skips its rest
  end,       // stdout closed (a last line without a newline came as a line)
};

enum class write_status {
  written,    // the whole line and its newline are in the pipe
  refused,    // over max_line_bytes or holding a newline: nothing written
  closed,     // stdin is closed, or the child no longer reads it (EPIPE)
  timed_out,  // no room before the timeout; stdin is now closed
};

class child_process {
 public:
  // Starts the program. Never throws for the child's sake: a missing or
  // non-executable program, a bad working directory or no descriptors left
  // come back as `error`.
  static spawn_result spawn(const boost::asio::any_io_executor& executor,
                            const spawn_options& options);

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  // Still running (or exited but not reaped): SIGKILL to the group, then a
  // blocking reap. That wait is short, the leader cannot ignore SIGKILL; it
  // waits longer only if the child is stuck in the kernel (a dead NFS mount),
  // and leaving a zombie is not an option.
  ~child_process();

  pid_t pid() const noexcept { return pid_; }
  // Set once the child has been reaped (by wait_exit or terminate).
  const std::optional<exit_status>& status() const noexcept { return status_; }

  // The next line of stdout, one at a time: between calls nothing is read
  // beyond one buffer (at most max_line_bytes + 1 bytes), so a caller that
  // stops asking leaves the child blocked in write once the pipe is full.
  // `line` is reused (its capacity kept).
  boost::asio::awaitable<line_status> read_line(std::string& line);

  // Reads stderr to its end, concurrently with the rest: calls `on_line`
  // with every line (cut to max_line_bytes) and keeps the last ones for
  // stderr_tail(). A child writing only to stderr never blocks on it.
  boost::asio::awaitable<void> drain_stderr(std::function<void(std::string_view)> on_line);
  const std::deque<std::string>& stderr_tail() const noexcept { return stderr_tail_; }

  // Writes `text` and a newline to stdin, waiting for room at most
  // `timeout`. Never raises SIGPIPE in this process.
  boost::asio::awaitable<write_status> write_line(std::string text,
                                                  std::chrono::milliseconds timeout);
  // The child reads end of file (once whatever is in the pipe is read).
  void close_stdin() noexcept;

  // Sends `sig` to the whole group; nothing once the leader was reaped.
  void signal_group(int sig) noexcept;

  // Until the child exits; reaps it (after the group's SIGKILL when
  // kill_group_on_exit). Any number of callers.
  boost::asio::awaitable<exit_status> wait_exit();

  // Closes stdin, SIGTERM to the group; SIGKILL to the group if the leader
  // has not exited after `grace`; on the leader's exit, SIGKILL to what is
  // left of its group, then the reap. Immediate once reaped.
  boost::asio::awaitable<exit_status> terminate(std::chrono::milliseconds grace);

 private:
  child_process(const boost::asio::any_io_executor& executor, const spawn_options& options,
                pid_t pid, int pidfd, int stdin_fd, int stdout_fd, int stderr_fd);

  // Until the leader's exit was observed and reaped.
  boost::asio::awaitable<void> exit_observed();
  // Whether the leader has exited (reaped or not).
  bool leader_exited() noexcept;
  // Kills the group if asked, then reaps and records the status.
  void reap() noexcept;
  void reap_blocking() noexcept;
  boost::asio::awaitable<void> stdin_writable();
  void keep_stderr_line(std::string_view line);

  const pid_t pid_;
  const std::size_t max_line_;
  const std::size_t max_write_line_;
  const std::size_t tail_lines_;
  const std::size_t tail_bytes_;
  bool kill_group_on_exit_;
  std::optional<exit_status> status_;

  boost::asio::posix::stream_descriptor pidfd_;
  boost::asio::posix::stream_descriptor stdin_;
  boost::asio::posix::stream_descriptor stdout_;
  boost::asio::posix::stream_descriptor stderr_;

  // stdout: unread bytes start at out_start_; out_scanned_ of them are known
  // to hold no newline.
  std::string out_buffer_;
  std::size_t out_start_ = 0;
  std::size_t out_scanned_ = 0;
  bool out_skipping_ = false;  // inside a line over the limit
  bool out_ended_ = false;

  std::deque<std::string> stderr_tail_;
  std::size_t stderr_tail_size_ = 0;
};

}  // namespace agentws::detail
