#include "agentws/program_agent.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstring>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <variant>

#include "agents/child_process.hpp"
#include "agentws/events.hpp"

namespace agentws {

namespace asio = boost::asio;
using detail::child_process;
using detail::exit_status;
using detail::line_status;
using detail::write_status;

bool process_limit::try_acquire() noexcept {
  std::size_t live = live_.load(std::memory_order_relaxed);
  do {
    if (live >= max_) return false;
  } while (!live_.compare_exchange_weak(live, live + 1, std::memory_order_relaxed));
  return true;
}

void process_limit::release() noexcept {
  live_.fetch_sub(1, std::memory_order_relaxed);
}

namespace {

// A child that stops reading its stdin holds its writer this long before
// stdin is closed on it; inputs wait in the run's bounded queue meanwhile.
constexpr std::chrono::hours stdin_write_timeout{24};

// stderr to the log: bursts of this many lines, then this many a second;
// each line cut to this many bytes. The rest is counted, and the count
// logged.
constexpr double stderr_burst_lines = 20;
constexpr double stderr_lines_per_second = 5;
constexpr std::size_t stderr_logged_line_bytes = 512;

// An event's fields nest at most this deep (as a client's commands): a
// deeper line goes as text.
constexpr std::size_t max_event_json_depth = 64;

// After a failed exit, how long the last lines of stderr may take to arrive
// (the group is dead by then; only a grandchild that left it holds stderr).
constexpr std::chrono::milliseconds stderr_tail_wait{200};

std::string signal_name(int sig) {
  if (const char* abbrev = sigabbrev_np(sig)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(sig);
}

// One run's process and what watches it. Shared by the run, its stderr
// drain and its reaper; the last of them to let go destroys it on the run's
// home (the child is reaped by then, or killed and reaped by its
// destructor), and its slot is given back.
struct program_process {
  program_process(const asio::any_io_executor& executor, std::unique_ptr<child_process> spawned,
                  std::shared_ptr<process_limit> slots, std::string name)
      : child(std::move(spawned)),
        limit(std::move(slots)),
        log_name(std::move(name)),
        stderr_done(executor, asio::steady_timer::time_point::max()) {}
  ~program_process() {
    child.reset();
    limit->release();
  }
  program_process(const program_process&) = delete;
  program_process& operator=(const program_process&) = delete;

  // Lets a line of stderr through to the log, or counts it.
  bool may_log_stderr_line() {
    const auto now = std::chrono::steady_clock::now();
    const std::chrono::duration<double> since = now - last_refill;
    last_refill = now;
    log_allowance =
        std::min(stderr_burst_lines, log_allowance + since.count() * stderr_lines_per_second);
    if (log_allowance < 1) return false;
    log_allowance -= 1;
    return true;
  }

  std::unique_ptr<child_process> child;
  const std::shared_ptr<process_limit> limit;
  const std::string log_name;  // "agent NAME run RUN_ID"
  asio::cancellation_signal stop_stderr;
  // Cancelled when stderr has been read to its end.
  asio::steady_timer stderr_done;
  bool stderr_ended = false;
  double log_allowance = stderr_burst_lines;
  std::chrono::steady_clock::time_point last_refill = std::chrono::steady_clock::now();
  std::uint64_t unlogged_lines = 0;
};

// stderr to the log, concurrently with everything else, so that a child
// writing only there never blocks on it.
asio::awaitable<void> drain_stderr(std::shared_ptr<program_process> process) {
  program_process& p = *process;
  co_await p.child->drain_stderr([&p](std::string_view line) {
    if (!p.may_log_stderr_line()) {
      ++p.unlogged_lines;
      return;
    }
    if (p.unlogged_lines > 0) {
      spdlog::warn("{}: {} lines of stderr not logged (rate limit)", p.log_name, p.unlogged_lines);
      p.unlogged_lines = 0;
    }
    const bool cut = line.size() > stderr_logged_line_bytes;
    spdlog::warn("{}: stderr: {}{}", p.log_name,
                 printable(line.substr(0, stderr_logged_line_bytes)), cut ? " [cut]" : "");
  });
  p.stderr_ended = true;
  p.stderr_done.cancel();
  if (p.unlogged_lines > 0) {
    spdlog::warn("{}: {} lines of stderr not logged (rate limit)", p.log_name, p.unlogged_lines);
  }
}

// After the run, whatever way it ended: stdin closed, SIGTERM to the group,
// SIGKILL after the grace (at once if it already exited), then the reap.
asio::awaitable<void> reap(std::shared_ptr<program_process> process,
                           std::chrono::milliseconds grace) {
  const exit_status status = co_await process->child->terminate(grace);
  // A grandchild that left the group may still hold stderr open.
  process->stop_stderr.emit(asio::cancellation_type::terminal);
  spdlog::debug("{}: process {} {}", process->log_name, process->child->pid(),
                detail::describe(status));
}

// Compact JSON (invalid UTF-8 replaced, never thrown).
std::string dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A line for the child's stdin in text framing: a string as its text, any
// other value as compact JSON.
std::string text_line(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : dump(value);
}

class program_agent final : public agent {
 public:
  program_agent(std::string name, program_spec spec, std::shared_ptr<process_limit> limit)
      : name_(std::move(name)), spec_(std::move(spec)), limit_(std::move(limit)) {
    if (spec_.argv.empty()) throw std::invalid_argument("a program agent needs a program");
  }

  std::string description() const override {
    return spec_.description.empty() ? "runs " + spec_.argv.front() : spec_.description;
  }
  bool accepts_input() const override { return spec_.accepts_input; }
  bool takes_demo_params() const override { return false; }

  std::optional<protocol_error> validate(const nlohmann::json& params, const nlohmann::json& input,
                                         const protocol_limits& /*limits*/) const override {
    if (!params.is_null() && !params.is_object()) {
      return protocol_error{
          protocol_error_code::invalid_params, "params must be an object", {}, {}, {}};
    }
    return validate_input(input);
  }

  std::optional<protocol_error> validate_input(const nlohmann::json& input) const override {
    if (spec_.framing == program_framing::text && input.is_string() &&
        input.get_ref<const std::string&>().find_first_of("\r\n") != std::string::npos) {
      return protocol_error{protocol_error_code::invalid_input,
                            "This agent reads its input as one line of text: no line breaks",
                            {},
                            {},
                            {}};
    }
    return std::nullopt;
  }

  prepared_run prepare(const run_start& start) const override {
    if (!limit_->try_acquire()) {
      return {protocol_error{protocol_error_code::too_many_processes,
                             "Too many agent processes (limit " + std::to_string(limit_->max()) +
                                 ", those still being stopped included); try again shortly",
                             {},
                             {},
                             {}},
              nullptr};
    }
    detail::spawn_options options;
    options.argv = spec_.argv;
    options.cwd = spec_.cwd;
    options.env = spec_.env;
    bool has_path = false;
    for (const std::string& entry : options.env)
      has_path = has_path || entry.starts_with("PATH=");
    if (!has_path) options.env.emplace_back("PATH=/usr/local/bin:/usr/bin:/bin");
    options.env.push_back("AGENTWS_RUN_ID=" + start.run_id);
    options.env.push_back("AGENTWS_AGENT=" + name_);
    options.max_line_bytes = spec_.max_line_bytes;
    // The start line carries the client's input: bounded by the message
    // size the server accepts, not by the event limit.
    options.max_write_line_bytes = std::numeric_limits<std::size_t>::max();
    detail::spawn_result spawned = child_process::spawn(start.executor, options);
    if (!spawned.child) {
      limit_->release();
      spdlog::error("agent {}: {}", name_, printable(spawned.error));
      return {protocol_error{protocol_error_code::unavailable,
                             "Agent " + name_ + " is unavailable: " + spawned.error,
                             {},
                             {},
                             {}},
              nullptr};
    }
    limit_->count_spawn();
    auto process =
        std::make_shared<program_process>(start.executor, std::move(spawned.child), limit_,
                                          "agent " + name_ + " run " + printable(start.run_id));
    spdlog::debug("{}: process {} started", process->log_name, process->child->pid());
    return {std::nullopt, std::move(process)};
  }

  asio::awaitable<void> run(run_context& context) override;

 private:
  enum class stdout_end { closed, too_long, stopped };

  std::string start_line(const run_context& context) const;
  std::string input_line(const nlohmann::json& input) const;
  asio::awaitable<stdout_end> read_events(run_context& context, child_process& child) const;
  asio::awaitable<void> feed_stdin(run_context& context, child_process& child,
                                   std::string first_line) const;
  [[noreturn]] void fail(const program_process& process, const exit_status& status) const;

  const std::string name_;
  const program_spec spec_;
  const std::shared_ptr<process_limit> limit_;
};

std::string program_agent::start_line(const run_context& context) const {
  if (spec_.framing == program_framing::text) {
    return context.input().is_null() ? std::string() : text_line(context.input());
  }
  std::string line = R"({"type": "start", "run_id": )";
  append_json_string(line, context.run_id());
  line.append(R"(, "input": )").append(dump(context.input()));
  line.append(R"(, "params": )").append(dump(context.params_json())).append("}");
  return line;
}

std::string program_agent::input_line(const nlohmann::json& input) const {
  if (spec_.framing == program_framing::text) return text_line(input);
  return R"({"type": "input", "input": )" + dump(input) + "}";
}

// One event per stdout line, the next line read only once the event is
// taken: while the run's followers are full, the child blocks in write.
asio::awaitable<program_agent::stdout_end> program_agent::read_events(run_context& context,
                                                                      child_process& child) const {
  std::string line;
  for (;;) {
    const line_status got = co_await child.read_line(line);
    if (got == line_status::end) co_return stdout_end::closed;
    if (got == line_status::too_long) co_return stdout_end::too_long;
    bool sent = false;
    // Too deep to be written back safely: the line goes as text.
    if (spec_.framing == program_framing::json && line.starts_with('{') &&
        !json_nesting_exceeds(line, max_event_json_depth)) {
      const nlohmann::json fields = nlohmann::json::parse(line, nullptr, false);
      if (fields.is_object()) {
        sent = co_await context.emit_fields(fields);
      } else {
        sent = co_await context.emit(line);
      }
    } else {
      sent = co_await context.emit(line);
    }
    if (!sent) co_return stdout_end::stopped;
  }
}

// The start line, then each input in order. Returns only once the run
// stops (next_input gives nothing): the caller ends it with stdout.
asio::awaitable<void> program_agent::feed_stdin(run_context& context, child_process& child,
                                                std::string first_line) const {
  bool open = true;
  if (spec_.framing == program_framing::json || !first_line.empty()) {
    const write_status wrote =
        co_await child.write_line(std::move(first_line), stdin_write_timeout);
    open = wrote == write_status::written;
  }
  if (!spec_.accepts_input) {
    child.close_stdin();
    open = false;
  }
  for (;;) {
    std::optional<nlohmann::json> input = co_await context.next_input();
    if (!input) co_return;
    // A child that closed its stdin does not get the rest (its run goes
    // on: what it prints is still the run's).
    if (!open) continue;
    const write_status wrote = co_await child.write_line(input_line(*input), stdin_write_timeout);
    // validate_input keeps line breaks out of text framing's lines; were
    // one to pass, only that input would be lost, not the ones after it.
    if (wrote == write_status::refused) continue;
    open = wrote == write_status::written;
  }
}

void program_agent::fail(const program_process& process, const exit_status& status) const {
  nlohmann::json details = nlohmann::json::object();
  std::string message = "agent " + name_ + ": ";
  if (status.exited()) {
    details["exit_code"] = status.code;
    message += "exit code " + std::to_string(status.code);
  } else if (status.signalled()) {
    details["signal"] = signal_name(status.signal);
    message += "killed by " + signal_name(status.signal);
  } else {
    message += "exit status lost";
  }
  const auto& tail = process.child->stderr_tail();
  if (!tail.empty()) {
    message += "; stderr ends:";
    for (const std::string& line : tail)
      message.append("\n").append(line);
  }
  throw run_failure(message, std::move(details));
}

asio::awaitable<void> program_agent::run(run_context& context) {
  auto process = std::static_pointer_cast<program_process>(context.prepared());
  if (!process) throw std::logic_error("a program agent's run without its process");
  const auto executor = co_await asio::this_coro::executor;
  // However the run ends (done, failed, cancelled), the process is stopped
  // and reaped after it, so the run's last event never waits for that.
  struct reap_after_run {
    asio::any_io_executor executor;
    std::shared_ptr<program_process> process;
    std::chrono::milliseconds grace;
    ~reap_after_run() { asio::co_spawn(executor, reap(process, grace), asio::detached); }
  } reaper{executor, process, spec_.kill_grace};

  child_process& child = *process->child;
  asio::co_spawn(executor, drain_stderr(process),
                 asio::bind_cancellation_slot(process->stop_stderr.slot(), asio::detached));

  using namespace asio::experimental::awaitable_operators;
  auto reading = read_events(context, child);
  auto feeding = feed_stdin(context, child, start_line(context));
  const std::variant<stdout_end, std::monostate> first =
      co_await (std::move(reading) || std::move(feeding));
  if (first.index() == 1) co_return;  // cancelled
  const stdout_end end = std::get<0>(first);
  child.close_stdin();
  if (end == stdout_end::stopped) co_return;
  if (end == stdout_end::too_long) {
    throw run_failure("agent " + name_ + ": a line of stdout over the event limit (" +
                      std::to_string(spec_.max_line_bytes) + " bytes, max_event_bytes)");
  }
  const exit_status status = co_await child.wait_exit();
  if (status.success()) co_return;
  if (!process->stderr_ended) {
    process->stderr_done.expires_after(stderr_tail_wait);
    co_await process->stderr_done.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  fail(*process, status);
}

}  // namespace

std::shared_ptr<agent> make_program_agent(std::string name, program_spec spec,
                                          std::shared_ptr<process_limit> limit) {
  if (!limit) limit = std::make_shared<process_limit>(256);
  return std::make_shared<program_agent>(std::move(name), std::move(spec), std::move(limit));
}

}  // namespace agentws
