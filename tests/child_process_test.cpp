// The child process layer of program agents, with real programs: /bin/sh,
// sleep, yes, cat, python3. Each test runs its coroutines on a strand of a
// two-thread io_context (as the server does) and checks their results on the
// test's thread. Every child is terminated or killed and reaped, every wait
// has a deadline.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agents/child_process.hpp"
#include "sanitizer_build.hpp"

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using agentws::detail::child_process;
using agentws::detail::exit_status;
using agentws::detail::line_status;
using agentws::detail::spawn_options;
using agentws::detail::write_status;
using clock_type = std::chrono::steady_clock;

// Sanitized builds run everything several times slower.
constexpr auto slack = agentws::testing::sanitized_build ? 6s : 2s;

spawn_options shell(std::string script) {
  spawn_options options;
  options.argv = {"/bin/sh", "-c", std::move(script)};
  options.env = {"PATH=/usr/bin:/bin"};
  return options;
}

// An io_context with two threads and one strand; the children it spawned are
// destroyed (killed and reaped) once its threads stopped, before it goes.
class rig {
 public:
  rig() : strand_(asio::make_strand(io_)), work_(asio::make_work_guard(io_)) {
    for (int i = 0; i < 2; ++i)
      threads_.emplace_back([this] { io_.run(); });
  }
  ~rig() {
    work_.reset();
    io_.stop();
    for (std::thread& thread : threads_)
      thread.join();
    children_.clear();
  }
  rig(const rig&) = delete;
  rig& operator=(const rig&) = delete;

  const asio::strand<asio::io_context::executor_type>& strand() const { return strand_; }

  child_process& spawn(const spawn_options& options) {
    return adopt(child_process::spawn(strand_, options));
  }
  // The rig destroys the child with the others.
  child_process& adopt(agentws::detail::spawn_result started) {
    INFO(started.error);
    REQUIRE(started.child);
    children_.push_back(std::move(started.child));
    return *children_.back();
  }

  // Runs `task` on the strand and returns its result, within `limit`.
  template <typename T>
  T run(asio::awaitable<T> task, std::chrono::seconds limit = 30s) {
    std::future<T> result = asio::co_spawn(strand_, std::move(task), asio::use_future);
    const bool ready = result.wait_for(limit) == std::future_status::ready;
    REQUIRE(ready);
    return result.get();
  }

 private:
  asio::io_context io_;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<child_process>> children_;
};

// Every stdout line until the end; a line over the limit as "<too long>".
asio::awaitable<std::vector<std::string>> read_all(child_process& child) {
  std::vector<std::string> lines;
  std::string line;
  for (;;) {
    const line_status status = co_await child.read_line(line);
    if (status == line_status::end) break;
    lines.push_back(status == line_status::line ? line : "<too long>");
  }
  co_return lines;
}

struct outcome {
  std::vector<std::string> lines;
  exit_status status;
};

asio::awaitable<outcome> read_then_wait(child_process& child) {
  outcome result;
  result.lines = co_await read_all(child);
  result.status = co_await child.wait_exit();
  co_return result;
}

// A file or directory under a fresh temporary directory, removed with it.
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "agentws-process-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  fs::path write(const std::string& name, const std::string& text, fs::perms perms) {
    const fs::path file = path_ / name;
    std::ofstream(file) << text;
    fs::permissions(file, perms);
    return file;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A process's state letter from /proc/<pid>/stat (R, S, Z, ...), or none
// once it is gone.
std::optional<char> process_state(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return std::nullopt;
  return stat[paren + 2];
}

// Gone, or dead and waiting for its parent (init here, which may not reap
// in a container): either way it runs no more.
bool dead(pid_t pid) {
  const std::optional<char> state = process_state(pid);
  return !state || *state == 'Z' || *state == 'X';
}

template <typename Condition>
bool poll_until(Condition condition, std::chrono::milliseconds limit) {
  const auto deadline = clock_type::now() + limit;
  while (clock_type::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

// A field of /proc/<pid>/status or /proc/<pid>/io ("SigBlk", "wchar").
std::string proc_field(const std::string& file, const std::string& name) {
  std::istringstream text(read_text(file));
  std::string line;
  while (std::getline(text, line)) {
    if (line.rfind(name + ":", 0) == 0) {
      const std::size_t value = line.find_first_not_of(" \t", name.size() + 1);
      return value == std::string::npos ? std::string() : line.substr(value);
    }
  }
  return {};
}

std::uint64_t bytes_written(pid_t pid) {
  const std::string wchar = proc_field("/proc/" + std::to_string(pid) + "/io", "wchar");
  return wchar.empty() ? 0 : std::stoull(wchar);
}

struct children_count {
  int alive = 0;
  int zombies = 0;
};

// This process's children, from every /proc/<pid>/stat whose parent is us.
children_count count_children() {
  children_count count;
  const std::string self = std::to_string(::getpid());
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_text(entry.path() / "stat");
    const std::size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(paren + 1));
    std::string state;
    std::string parent;
    fields >> state >> parent;
    if (parent != self) continue;
    if (state == "Z") {
      ++count.zombies;
    } else {
      ++count.alive;
    }
  }
  return count;
}

std::size_t open_descriptors() {
  std::size_t count = 0;
  for ([[maybe_unused]] const fs::directory_entry& entry : fs::directory_iterator("/proc/self/fd"))
    ++count;
  return count;
}

}  // namespace

TEST_CASE("stdout lines arrive in order, and the exit code or the signal is reported",
          "[process]") {
  rig r;
  SECTION("a thousand lines, then exit 0") {
    child_process& child =
        r.spawn(shell("i=0; while [ $i -lt 1000 ]; do echo \"line $i\"; i=$((i + 1)); done"));
    const outcome result = r.run(read_then_wait(child));
    REQUIRE(result.lines.size() == 1000);
    for (std::size_t i = 0; i < result.lines.size(); ++i) {
      REQUIRE(result.lines[i] == "line " + std::to_string(i));
    }
    CHECK(result.status.code == 0);
    CHECK(result.status.signal == 0);
    CHECK(result.status.success());
    CHECK(describe(result.status) == "exit code 0");
  }
  SECTION("a non-zero exit code") {
    child_process& child = r.spawn(shell("echo bye; exit 3"));
    const outcome result = r.run(read_then_wait(child));
    CHECK(result.lines == std::vector<std::string>{"bye"});
    CHECK(result.status.code == 3);
    CHECK_FALSE(result.status.success());
    CHECK(describe(result.status) == "exit code 3");
  }
  SECTION("killed by a signal") {
    child_process& child = r.spawn(shell("kill -USR1 $$; echo not reached"));
    const outcome result = r.run(read_then_wait(child));
    CHECK(result.lines.empty());
    CHECK(result.status.code == -1);
    CHECK(result.status.signal == SIGUSR1);
    CHECK(describe(result.status).starts_with("killed by signal " + std::to_string(SIGUSR1)));
  }
  SECTION("a last line without a newline") {
    child_process& child = r.spawn(shell("printf 'one\\ntwo'"));
    const outcome result = r.run(read_then_wait(child));
    CHECK(result.lines == std::vector<std::string>{"one", "two"});
  }
  SECTION("two waiters see the same exit") {
    child_process& child = r.spawn(shell("exit 7"));
    const auto both = r.run([&]() -> asio::awaitable<std::tuple<exit_status, exit_status>> {
      const auto statuses = co_await (child.wait_exit() && child.wait_exit());
      co_return statuses;
    }());
    CHECK(std::get<0>(both).code == 7);
    CHECK(std::get<1>(both).code == 7);
    REQUIRE(child.status());
    CHECK(child.status()->code == 7);
  }
}

TEST_CASE("the child gets only the environment and the working directory given", "[process]") {
  rig r;
  temp_dir dir;
  spawn_options options = shell("pwd; echo \"$GREETING\"; echo \"${HOME-no home}\"");
  options.env.push_back("GREETING=hello there");
  options.cwd = dir.path().string();
  child_process& child = r.spawn(options);
  const outcome result = r.run(read_then_wait(child));
  REQUIRE(result.lines.size() == 3);
  CHECK(fs::equivalent(result.lines[0], dir.path()));
  CHECK(result.lines[1] == "hello there");
  CHECK(result.lines[2] == "no home");
  CHECK(result.status.code == 0);
}

TEST_CASE("a program that cannot start is an error value", "[process]") {
  rig r;
  temp_dir dir;
  SECTION("a missing program") {
    spawn_options options;
    options.argv = {"/no/such/program"};
    const auto started = child_process::spawn(r.strand(), options);
    CHECK_FALSE(started.child);
    CHECK(started.error == "cannot start /no/such/program: No such file or directory");
  }
  SECTION("a file that is not executable") {
    const fs::path file = dir.write("script.sh", "#!/bin/sh\necho hi\n",
                                    fs::perms::owner_read | fs::perms::owner_write);
    spawn_options options;
    options.argv = {file.string()};
    const auto started = child_process::spawn(r.strand(), options);
    CHECK_FALSE(started.child);
    CHECK(started.error == "cannot start " + file.string() + ": Permission denied");
  }
  SECTION("a directory") {
    spawn_options options;
    options.argv = {dir.path().string()};
    const auto started = child_process::spawn(r.strand(), options);
    CHECK_FALSE(started.child);
    CHECK(started.error == "cannot start " + dir.path().string() + ": Permission denied");
  }
  SECTION("a missing working directory") {
    spawn_options options = shell("true");
    options.cwd = (dir.path() / "gone").string();
    const auto started = child_process::spawn(r.strand(), options);
    CHECK_FALSE(started.child);
    CHECK(started.error == "working directory " + options.cwd + ": No such file or directory");
  }
  SECTION("no program at all") {
    const auto started = child_process::spawn(r.strand(), spawn_options{});
    CHECK_FALSE(started.child);
    CHECK(started.error == "no program to start");
  }
  // The process goes on, and spawns the next one fine.
  const fs::path script = dir.write("ok.sh", "#!/bin/sh\necho fine\n", fs::perms::owner_all);
  spawn_options options;
  options.argv = {script.string()};
  child_process& child = r.spawn(options);
  const outcome result = r.run(read_then_wait(child));
  CHECK(result.lines == std::vector<std::string>{"fine"});
  CHECK(result.status.code == 0);
  CHECK(count_children().zombies == 0);
}

TEST_CASE("the child has descriptors 0, 1 and 2 and no other", "[process]") {
  rig r;
  // Descriptors this process leaves open across exec, as a careless library
  // would: closefrom in the child must close them.
  const int extra = ::open("/dev/null", O_RDONLY);
  REQUIRE(extra > 2);
  REQUIRE((::fcntl(extra, F_GETFD) & FD_CLOEXEC) == 0);
  const int high = ::dup2(extra, 200);
  REQUIRE(high == 200);
  spawn_options options;
  // Listing /proc/self/fd opens one for the listing: keep those still open.
  options.argv = {"/usr/bin/python3", "-I", "-S", "-c",
                  "import os\n"
                  "fds = sorted(int(n) for n in os.listdir('/proc/self/fd'))\n"
                  "def is_open(fd):\n"
                  "    try:\n"
                  "        os.fstat(fd)\n"
                  "        return True\n"
                  "    except OSError:\n"
                  "        return False\n"
                  "print(' '.join(str(fd) for fd in fds if is_open(fd)))\n"};
  child_process& child = r.spawn(options);
  const outcome result = r.run(read_then_wait(child));
  ::close(high);
  ::close(extra);
  CHECK(result.lines == std::vector<std::string>{"0 1 2"});
  CHECK(result.status.code == 0);
}

TEST_CASE("a child ignoring SIGTERM gets SIGKILL once the grace has passed", "[process]") {
  rig r;
  child_process& child = r.spawn(shell("trap '' TERM; echo ready; while :; do sleep 0.05; done"));
  const auto grace = 500ms;
  const auto result = r.run([&]() -> asio::awaitable<std::pair<exit_status, clock_type::duration>> {
    std::string line;
    const line_status ready = co_await child.read_line(line);
    if (ready != line_status::line || line != "ready") {
      co_return std::pair<exit_status, clock_type::duration>{};
    }
    const auto start = clock_type::now();
    const exit_status status = co_await child.terminate(grace);
    co_return std::pair{status, clock_type::now() - start};
  }());
  CHECK(result.first.signal == SIGKILL);
  CHECK(result.second >= grace);
  CHECK(result.second < grace + slack);
}

TEST_CASE("a child's own children die with its group", "[process]") {
  rig r;
  // The grandchild's pid, as the shell printed it.
  const auto first_line = [&](child_process& child) {
    return r.run([&]() -> asio::awaitable<pid_t> {
      std::string line;
      const line_status status = co_await child.read_line(line);
      co_return status == line_status::line ? static_cast<pid_t>(std::stol(line)) : pid_t{-1};
    }());
  };
  SECTION("terminate signals the whole group") {
    child_process& child = r.spawn(shell("sleep 1000 & echo $!; wait"));
    const pid_t grandchild = first_line(child);
    REQUIRE(grandchild > 0);
    REQUIRE_FALSE(dead(grandchild));
    const exit_status status = r.run(child.terminate(5s));
    CHECK(status.signal == SIGTERM);
    CHECK(poll_until([&] { return dead(grandchild); }, 5s));
  }
  SECTION("a grandchild ignoring SIGTERM gets SIGKILL when the leader exits") {
    child_process& child = r.spawn(shell("trap '' TERM; sleep 1000 & trap - TERM; echo $!; wait"));
    const pid_t grandchild = first_line(child);
    REQUIRE(grandchild > 0);
    const auto start = clock_type::now();
    const exit_status status = r.run(child.terminate(30s));
    CHECK(status.signal == SIGTERM);
    CHECK(clock_type::now() - start < slack);  // not the grace's SIGKILL
    CHECK(poll_until([&] { return dead(grandchild); }, 5s));
  }
  SECTION("a leader that exits by itself takes its group along") {
    child_process& child = r.spawn(shell("sleep 1000 & echo $!"));
    const pid_t grandchild = first_line(child);
    REQUIRE(grandchild > 0);
    const exit_status status = r.run(child.wait_exit());
    CHECK(status.code == 0);
    CHECK(poll_until([&] { return dead(grandchild); }, 5s));
    // The grandchild held stdout open: now it ends.
    const std::vector<std::string> rest = r.run(read_all(child));
    CHECK(rest.empty());
  }
  SECTION("unless asked not to") {
    spawn_options options = shell("sleep 1000 & echo $!");
    options.kill_group_on_exit = false;
    child_process& child = r.spawn(options);
    const pid_t grandchild = first_line(child);
    REQUIRE(grandchild > 0);
    const exit_status status = r.run(child.wait_exit());
    CHECK(status.code == 0);
    CHECK_FALSE(dead(grandchild));
    ::kill(grandchild, SIGKILL);
    CHECK(poll_until([&] { return dead(grandchild); }, 5s));
  }
}

TEST_CASE("a megabyte on stderr does not block the child while stdout is read", "[process]") {
  rig r;
  const std::string line(71, 'e');
  child_process& child = r.spawn(shell("yes " + line + " | head -c 1048576 >&2; echo done"));
  std::size_t stderr_lines = 0;
  std::size_t longest = 0;
  const outcome result = r.run([&]() -> asio::awaitable<outcome> {
    const auto on_line = [&](std::string_view text) {
      ++stderr_lines;
      longest = std::max(longest, text.size());
    };
    outcome out;
    out.lines = co_await (read_all(child) && child.drain_stderr(on_line));
    out.status = co_await child.wait_exit();
    co_return out;
  }());
  CHECK(result.lines == std::vector<std::string>{"done"});
  CHECK(result.status.code == 0);
  // 1 MiB of 72-byte lines: 14563 whole ones and 40 bytes.
  CHECK(stderr_lines == 14564);
  CHECK(longest == 71);
  const auto& tail = child.stderr_tail();
  CHECK(tail.size() == 20);
  REQUIRE_FALSE(tail.empty());
  CHECK(tail.back() == std::string(40, 'e'));
  CHECK(tail.front() == line);
}

TEST_CASE("the stderr tail keeps the last lines within its bounds", "[process]") {
  rig r;
  spawn_options options = shell(
      "echo first >&2; head -c 3000 /dev/zero | tr '\\0' x >&2; echo >&2;"
      "i=0; while [ $i -lt 10 ]; do echo \"err $i\" >&2; i=$((i + 1)); done; echo last >&2");
  options.stderr_tail_lines = 5;
  options.stderr_tail_bytes = 1000;
  options.max_line_bytes = 2000;
  child_process& child = r.spawn(options);
  std::vector<std::string> seen;
  r.run([&]() -> asio::awaitable<void> {
    co_await child.drain_stderr([&](std::string_view text) { seen.emplace_back(text); });
  }());
  const exit_status status = r.run(child.wait_exit());
  CHECK(status.code == 0);
  REQUIRE(seen.size() == 13);
  CHECK(seen[0] == "first");
  CHECK(seen[1] == std::string(2000, 'x'));  // cut to max_line_bytes
  CHECK(seen[2] == "err 0");
  CHECK(seen[12] == "last");
  // The long line (cut to 1000 bytes for the tail) pushed out "first", and
  // went with the next line; then the line count is the bound.
  const std::deque<std::string> expected{"err 6", "err 7", "err 8", "err 9", "last"};
  CHECK(child.stderr_tail() == expected);
}

TEST_CASE("a line over the limit is reported and skipped", "[process]") {
  rig r;
  spawn_options options = shell(
      "head -c 5000 /dev/zero | tr '\\0' a; echo; echo ok; head -c 1024 /dev/zero | tr '\\0' b;"
      "echo; head -c 100000 /dev/zero | tr '\\0' c; echo; echo after;"
      "head -c 1025 /dev/zero | tr '\\0' d");
  options.max_line_bytes = 1024;
  child_process& child = r.spawn(options);
  const outcome result = r.run(read_then_wait(child));
  const std::vector<std::string> expected{"<too long>", "ok",    std::string(1024, 'b'),
                                          "<too long>", "after", "<too long>"};
  CHECK(result.lines == expected);
  CHECK(result.status.code == 0);
}

TEST_CASE("a reader that stops asking leaves the child blocked, then resumes it", "[process]") {
  rig r;
  spawn_options options;
  options.argv = {"/usr/bin/yes"};
  options.max_line_bytes = 100;  // what the reader holds is tiny: the pipe is the bound
  child_process& child = r.spawn(options);
  const auto read_lines = [&](int count) {
    return r.run([&child, count]() -> asio::awaitable<int> {
      std::string line;
      int good = 0;
      for (int i = 0; i < count; ++i) {
        const line_status status = co_await child.read_line(line);
        if (status != line_status::line || line != "y") break;
        ++good;
      }
      co_return good;
    }());
  };
  REQUIRE(read_lines(1000) == 1000);
  // A pipe's capacity here, as the child's stdout got it.
  int probe[2];
  REQUIRE(::pipe(probe) == 0);
  const auto capacity = static_cast<std::uint64_t>(::fcntl(probe[0], F_GETPIPE_SZ));
  ::close(probe[0]);
  ::close(probe[1]);
  // The child stops writing: its count stays put for half a second.
  std::uint64_t written = 0;
  const bool settled = poll_until(
      [&] {
        written = bytes_written(child.pid());
        const auto quiet_until = clock_type::now() + 500ms;
        while (clock_type::now() < quiet_until) {
          std::this_thread::sleep_for(50ms);
          if (bytes_written(child.pid()) != written) return false;
        }
        return true;
      },
      10s);
  REQUIRE(settled);
  CHECK(process_state(child.pid()) == 'S');
  // 2000 bytes read as lines, at most 101 in the reader's buffer, the pipe
  // full; yes writes 8 KiB at a time, so the pipe may hold less.
  CHECK(written >= 2000 + capacity - 8192);
  CHECK(written <= 2000 + 101 + capacity);
  // Asking again resumes it.
  REQUIRE(read_lines(200000) == 200000);
  CHECK(bytes_written(child.pid()) > 400000);
  const exit_status status = r.run(child.terminate(5s));
  CHECK(status.signal == SIGTERM);
}

TEST_CASE("the child starts with no signal blocked or ignored", "[process]") {
  rig r;
  // This thread blocks SIGTERM and SIGUSR1, and the process ignores SIGPIPE
  // and SIGINT, while the children are spawned here.
  sigset_t blocked;
  sigset_t previous_mask;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGUSR1);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &blocked, &previous_mask) == 0);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction previous_pipe {};
  struct sigaction previous_int {};
  REQUIRE(::sigaction(SIGPIPE, &ignore, &previous_pipe) == 0);
  REQUIRE(::sigaction(SIGINT, &ignore, &previous_int) == 0);

  spawn_options status_options;
  status_options.argv = {"/bin/cat", "/proc/self/status"};
  auto status_reader = child_process::spawn(r.strand(), status_options);
  spawn_options sleep_options;
  sleep_options.argv = {"/usr/bin/sleep", "1000"};
  auto sleeper = child_process::spawn(r.strand(), sleep_options);
  // yes, killed by SIGPIPE (128 + 13) rather than failing with EPIPE.
  auto piper = child_process::spawn(
      r.strand(), shell("(yes; echo \"yes ended: $?\" >&2) | head -n 1 > /dev/null"));

  ::sigaction(SIGINT, &previous_int, nullptr);
  ::sigaction(SIGPIPE, &previous_pipe, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &previous_mask, nullptr);
  child_process& own_status_child = r.adopt(std::move(status_reader));
  child_process& sleeper_child = r.adopt(std::move(sleeper));
  child_process& piper_child = r.adopt(std::move(piper));

  const outcome own_status = r.run(read_then_wait(own_status_child));
  std::string sig_blocked;
  std::string sig_ignored;
  for (const std::string& line : own_status.lines) {
    if (line.starts_with("SigBlk:")) sig_blocked = line;
    if (line.starts_with("SigIgn:")) sig_ignored = line;
  }
  CHECK(sig_blocked == "SigBlk:\t0000000000000000");
  CHECK(sig_ignored == "SigIgn:\t0000000000000000");

  const std::string status_file = "/proc/" + std::to_string(sleeper_child.pid()) + "/status";
  CHECK(proc_field(status_file, "SigBlk") == "0000000000000000");
  CHECK(proc_field(status_file, "SigIgn") == "0000000000000000");
  const auto start = clock_type::now();
  const exit_status slept = r.run(sleeper_child.terminate(30s));
  CHECK(slept.signal == SIGTERM);
  CHECK(clock_type::now() - start < slack);

  std::vector<std::string> errors;
  r.run(piper_child.drain_stderr([&](std::string_view line) { errors.emplace_back(line); }));
  CHECK(errors == std::vector<std::string>{"yes ended: 141"});
  CHECK(r.run(piper_child.wait_exit()).code == 0);
}

TEST_CASE("lines go to stdin, and a child that stopped reading costs no SIGPIPE", "[process]") {
  rig r;
  SECTION("cat echoes, then ends with stdin") {
    spawn_options options;
    options.argv = {"/bin/cat"};
    options.max_line_bytes = 16;
    child_process& child = r.spawn(options);
    const auto result = r.run([&]() -> asio::awaitable<std::vector<std::string>> {
      std::vector<std::string> log;
      const write_status first = co_await child.write_line("hello", 1s);
      log.push_back(first == write_status::written ? "written" : "not written");
      std::string line;
      const line_status echoed = co_await child.read_line(line);
      log.push_back(echoed == line_status::line ? line : "no line");
      const write_status too_long = co_await child.write_line(std::string(17, 'x'), 1s);
      log.push_back(too_long == write_status::refused ? "refused" : "not refused");
      const write_status two_lines = co_await child.write_line("a\nb", 1s);
      log.push_back(two_lines == write_status::refused ? "refused" : "not refused");
      child.close_stdin();
      const write_status after_close = co_await child.write_line("late", 1s);
      log.push_back(after_close == write_status::closed ? "closed" : "not closed");
      const line_status end = co_await child.read_line(line);
      log.push_back(end == line_status::end ? "end" : "no end");
      const exit_status status = co_await child.wait_exit();
      log.push_back(describe(status));
      co_return log;
    }());
    const std::vector<std::string> expected{"written", "hello", "refused",    "refused",
                                            "closed",  "end",   "exit code 0"};
    CHECK(result == expected);
  }
  SECTION("a child that closed its stdin") {
    child_process& child = r.spawn(shell("exec 0<&-; echo closed; sleep 1000"));
    const write_status written = r.run([&]() -> asio::awaitable<write_status> {
      std::string line;
      co_await child.read_line(line);
      const write_status status = co_await child.write_line("anyone?", 1s);
      co_return status;
    }());
    CHECK(written == write_status::closed);
    CHECK(r.run(child.terminate(5s)).signal == SIGTERM);
  }
  SECTION("a child that does not read: the write times out") {
    child_process& child = r.spawn(shell("sleep 1000"));
    const auto result = r.run([&]() -> asio::awaitable<std::pair<int, write_status>> {
      int written = 0;
      for (;;) {
        const write_status status = co_await child.write_line(std::string(1000, 'w'), 300ms);
        if (status != write_status::written) co_return std::pair{written, status};
        ++written;
      }
    }());
    CHECK(result.second == write_status::timed_out);
    CHECK(result.first >= 4);  // at least a page went in before the pipe filled
    const write_status after = r.run(child.write_line("more", 1s));
    CHECK(after == write_status::closed);
    CHECK(r.run(child.terminate(5s)).signal == SIGTERM);
  }
}

TEST_CASE("a cancelled read leaves the child usable", "[process]") {
  rig r;
  child_process& child = r.spawn(shell("read go; echo \"got $go\""));
  const auto result = r.run([&]() -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> log;
    std::string line;
    const auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor, 200ms);
    auto race = child.read_line(line) || timer.async_wait(asio::use_awaitable);
    const auto first = co_await std::move(race);
    log.push_back(first.index() == 1 ? "timed out" : "read");
    const write_status written = co_await child.write_line("now", 1s);
    log.push_back(written == write_status::written ? "written" : "not written");
    const line_status got = co_await child.read_line(line);
    log.push_back(got == line_status::line ? line : "no line");
    const exit_status status = co_await child.wait_exit();
    log.push_back(describe(status));
    co_return log;
  }());
  const std::vector<std::string> expected{"timed out", "written", "got now", "exit code 0"};
  CHECK(result == expected);
}

TEST_CASE("no zombie and no descriptor left after many spawns and terminations", "[process]") {
  // A thousand even under a sanitizer: a cycle costs about a millisecond there.
  const int cycles = 1000;
  rig r;
  // A first child makes the io_context open its reactor's descriptors.
  child_process& first = r.spawn(shell("exit 0"));
  CHECK(r.run(first.wait_exit()).code == 0);
  const std::size_t descriptors_before = open_descriptors();
  const auto done = r.run(
      [&]() -> asio::awaitable<int> {
        const auto deadline = clock_type::now() + 45s;
        spawn_options sleeper;
        sleeper.argv = {"/usr/bin/sleep", "1000"};
        const spawn_options quick = shell("exit 0");
        int completed = 0;
        for (; completed < cycles && clock_type::now() < deadline; ++completed) {
          const spawn_options& options = completed % 5 == 4 ? quick : sleeper;
          const auto executor = co_await asio::this_coro::executor;
          auto started = child_process::spawn(executor, options);
          if (!started.child) break;
          if (completed % 5 == 4) {
            co_await started.child->wait_exit();
          } else if (completed % 3 != 2) {
            co_await started.child->terminate(100ms);
          }
          // Else (every third or so) destroyed running: SIGKILL and a reap there.
        }
        co_return completed;
      }(),
      50s);
  CHECK(done == cycles);
  const children_count left = count_children();
  CHECK(left.zombies == 0);
  CHECK(left.alive == 0);
  CHECK(open_descriptors() == descriptors_before);
}
