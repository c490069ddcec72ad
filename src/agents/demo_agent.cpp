#include <boost/asio/use_awaitable.hpp>

#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "agentws/agent.hpp"

namespace agentws {
namespace {

class demo_agent final : public agent {
 public:
  std::string description() const override {
    return "Streams params.steps events \"agent step N\", params.interval_ms apart";
  }

  boost::asio::awaitable<void> run(run_context& context) override {
    const run_params& params = context.params();
    const std::chrono::milliseconds interval{params.interval_ms};
    std::string text;
    for (std::uint64_t step = 0; step < params.steps; ++step) {
      text.assign("agent step ");
      text.append(std::to_string(step));
      // GCC 12 miscompiles a co_await inside a condition: always name the result.
      const bool sent = co_await context.emit(text);
      if (!sent) co_return;
      // With no interval the stream runs as fast as the outbox drains; the
      // context yields on its own often enough to keep commands flowing.
      if (interval.count() > 0) {
        const bool slept = co_await context.sleep_for(interval);
        if (!slept) co_return;
      }
    }
  }
};

}  // namespace

std::shared_ptr<agent> make_demo_agent() {
  return std::make_shared<demo_agent>();
}

}  // namespace agentws
