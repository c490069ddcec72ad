#include "server/command_parsing.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <exception>
#include <thread>
#include <utility>

namespace agentws::detail {

namespace asio = boost::asio;

command_parse_pool::command_parse_pool(unsigned threads)
    : threads_(threads != 0 ? threads : default_threads()) {}

command_parse_pool::~command_parse_pool() {
  stop();
  // Every parse in flight holds its session, and every session holds the
  // server state that owns this pool: nothing is left in the queue by now,
  // and no pool thread runs this destructor. This joins idle threads.
  if (pool_) pool_->join();
}

unsigned command_parse_pool::default_threads() noexcept {
  return std::max(1u, std::thread::hardware_concurrency() / 4);
}

void command_parse_pool::stop() noexcept {
  stopped_.store(true, std::memory_order_release);
}

asio::thread_pool& command_parse_pool::pool() {
  std::call_once(started_, [this] { pool_ = std::make_unique<asio::thread_pool>(threads_); });
  return *pool_;
}

asio::awaitable<std::optional<parse_result>> command_parse_pool::parse(
    std::string_view text, const protocol_limits& limits) {
  using signature = void(std::exception_ptr, std::optional<parse_result>);
  auto initiate = [this, text, &limits](auto handler) {
    // The caller's executor stays busy until the answer is back on it.
    auto work = asio::make_work_guard(handler);
    asio::post(pool(), [this, text, &limits, handler = std::move(handler),
                        work = std::move(work)]() mutable {
      std::exception_ptr failure;
      std::optional<parse_result> result;
      if (!stopped()) {
        try {
          result = parse_command(text, limits);
        } catch (...) {
          failure = std::current_exception();  // rethrown in the caller, as inline
        }
      }
      // The work is given back on the caller's side, once it resumed. This
      // thread still drops its copy of the caller's executor after the hand
      // over: the pool must be joined before the callers' contexts go
      // (the server state, which owns it, dies before its io_contexts).
      auto executor = work.get_executor();
      asio::post(executor, [handler = std::move(handler), work = std::move(work), failure,
                            result = std::move(result)]() mutable {
        std::move(handler)(failure, std::move(result));
        work.reset();
      });
    });
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, signature>(
      std::move(initiate), asio::use_awaitable);
}

}  // namespace agentws::detail
