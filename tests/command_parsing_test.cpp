// The parse pool (command_parsing.hpp) without sockets: a large command is
// parsed off the thread that awaits it, which keeps serving other work
// meanwhile and gets the answer back on its own executor; a stopped pool
// answers at once without parsing.
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "sanitizer_build.hpp"
#include "server/command_parsing.hpp"

namespace {

namespace asio = boost::asio;
using agentws::cancel_run_command;
using agentws::command;
using agentws::parse_command;
using agentws::parse_result;
using agentws::protocol_error;
using agentws::protocol_error_code;
using agentws::protocol_limits;
using agentws::detail::command_parse_pool;
using agentws::detail::offload_parse_bytes;
using clock_type = std::chrono::steady_clock;

// A cancel_run of `bytes` or so: an object of short keys, the costliest
// text to parse per byte.
std::string large_command(std::size_t bytes, std::string_view run_id = "big") {
  std::string text =
      R"({"command":"cancel_run","run_id":")" + std::string(run_id) + R"(","input":{)";
  for (std::size_t i = 0; text.size() + 32 < bytes; ++i) {
    if (i != 0) text += ',';
    text += "\"k" + std::to_string(i) + "\":" + std::to_string(i % 10);
  }
  text += "}}";
  return text;
}

protocol_limits large_limits() {
  protocol_limits limits;
  limits.max_message_bytes = 64 * 1024 * 1024;
  return limits;
}

// Whether two results say the same: the same command, or the same error.
bool same_result(const parse_result& a, const parse_result& b) {
  if (a.index() != b.index()) return false;
  if (const auto* error = std::get_if<protocol_error>(&a)) {
    const auto& other = std::get<protocol_error>(b);
    return error->code == other.code && error->message == other.message &&
           error->run_id == other.run_id;
  }
  const auto& x = std::get<command>(a);
  const auto& y = std::get<command>(b);
  if (x.index() != y.index()) return false;
  if (const auto* cancel = std::get_if<cancel_run_command>(&x)) {
    return cancel->run_id == std::get<cancel_run_command>(y).run_id;
  }
  return std::get<agentws::start_run_command>(x).run_id ==
         std::get<agentws::start_run_command>(y).run_id;
}

}  // namespace

TEST_CASE("parse pool: the awaiting thread serves other work while a large command is parsed") {
  // An ordering property, not a speed test. P is how long this text takes
  // to parse right here; the pool parses it in about P too. Inline (as
  // before the pool), the io_context's one thread would run nothing else
  // from the parse's start until the command's answer at T; with the pool
  // it goes on ticking, so ticks land in the last half of the parse,
  // (T - P/2, T). At most one tick could land there without concurrency
  // (queued behind the answer's own hand-off), so at least two are asked.
  const std::size_t bytes = agentws::testing::sanitized_build ? 1024 * 1024 : 2 * 1024 * 1024;
  const std::string text = large_command(bytes);
  REQUIRE(text.size() >= offload_parse_bytes);
  const protocol_limits limits = large_limits();
  auto parse_time = clock_type::duration::max();
  std::optional<parse_result> inline_result;
  for (int i = 0; i < 2; ++i) {
    const auto begin = clock_type::now();
    inline_result = parse_command(text, limits);
    parse_time = std::min(parse_time, clock_type::now() - begin);
  }
  REQUIRE(std::holds_alternative<command>(*inline_result));

  // The contexts outlive the pool, as the server's do (see command_parsing.hpp).
  asio::io_context io(1);
  command_parse_pool pool(1);
  std::optional<parse_result> pooled;
  bool answered = false;
  clock_type::time_point answered_at;
  std::thread::id parsed_on, io_thread;
  std::vector<clock_type::time_point> ticks;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto result = co_await pool.parse(text, limits);
        answered_at = clock_type::now();
        parsed_on = std::this_thread::get_id();
        answered = true;
        if (result) pooled = std::move(*result);
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        // Bounded: a few million posts are far more than any parse here needs.
        for (int i = 0; i < 5'000'000 && !answered; ++i) {
          ticks.push_back(clock_type::now());
          co_await asio::post(io, asio::use_awaitable);
        }
      },
      asio::detached);
  io_thread = std::this_thread::get_id();
  io.run_for(std::chrono::seconds(30));
  REQUIRE(answered);
  CHECK(parsed_on == io_thread);  // the answer comes back to the awaiting thread
  REQUIRE(pooled);
  CHECK(same_result(*pooled, *inline_result));
  const auto window_start = answered_at - parse_time / 2;
  const auto in_window = std::count_if(
      ticks.begin(), ticks.end(), [&](auto at) { return at > window_start && at < answered_at; });
  const double parse_ms = std::chrono::duration<double, std::milli>(parse_time).count();
  INFO("P = " << parse_ms << " ms, " << ticks.size() << " ticks, " << in_window
              << " in the last half of the parse");
  CHECK(in_window >= 2);
}

TEST_CASE("parse pool: the answer resumes the caller on its strand") {
  const std::string text = large_command(offload_parse_bytes + 1024);
  const protocol_limits limits = large_limits();
  // The contexts outlive the pool, as the server's do (see command_parsing.hpp).
  asio::io_context io(2);
  command_parse_pool pool(1);
  auto strand = asio::make_strand(io);
  constexpr int callers = 8;
  int on_strand = 0;
  int completed = 0;
  for (int i = 0; i < callers; ++i) {
    asio::co_spawn(
        strand,
        [&]() -> asio::awaitable<void> {
          auto result = co_await pool.parse(text, limits);
          if (strand.running_in_this_thread()) ++on_strand;
          if (result && std::holds_alternative<command>(*result)) ++completed;
        },
        asio::detached);
  }
  std::thread second([&] { io.run_for(std::chrono::seconds(30)); });
  io.run_for(std::chrono::seconds(30));
  second.join();
  CHECK(completed == callers);
  CHECK(on_strand == callers);
}

TEST_CASE("parse pool: errors come back as inline") {
  const protocol_limits limits = large_limits();
  std::string broken = large_command(offload_parse_bytes * 2);
  broken.pop_back();  // no closing brace
  // The contexts outlive the pool, as the server's do (see command_parsing.hpp).
  asio::io_context io(1);
  command_parse_pool pool(1);
  std::optional<parse_result> pooled;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        if (auto result = co_await pool.parse(broken, limits)) pooled = std::move(*result);
      },
      asio::detached);
  io.run_for(std::chrono::seconds(30));
  REQUIRE(pooled);
  const auto* error = std::get_if<protocol_error>(&*pooled);
  REQUIRE(error);
  CHECK(error->code == protocol_error_code::invalid_json);
  CHECK(same_result(*pooled, parse_command(broken, limits)));
}

TEST_CASE("parse pool: once stopped it answers at once, without parsing") {
  const std::string text = large_command(offload_parse_bytes * 4);
  const protocol_limits limits = large_limits();
  // The contexts outlive the pool, as the server's do (see command_parsing.hpp).
  asio::io_context io(1);
  command_parse_pool pool(1);
  pool.stop();
  CHECK(pool.stopped());
  int answers = 0;
  int unparsed = 0;
  for (int i = 0; i < 4; ++i) {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          auto result = co_await pool.parse(text, limits);
          ++answers;
          if (!result) ++unparsed;
        },
        asio::detached);
  }
  // run() returns once every answer is back: the pool holds no work of it.
  io.run_for(std::chrono::seconds(30));
  CHECK(io.stopped());
  CHECK(answers == 4);
  CHECK(unparsed == 4);
}

TEST_CASE("parse pool: default size") {
  CHECK(command_parse_pool::default_threads() >= 1);
  CHECK(command_parse_pool::default_threads() ==
        std::max(1u, std::thread::hardware_concurrency() / 4));
  command_parse_pool pool;
  CHECK(pool.threads() == command_parse_pool::default_threads());
}
