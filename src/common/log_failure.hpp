// The completion handler for a co_spawn'ed coroutine whose failure has no
// one else to tell: logs "<name> failed: <the exception's message>".
#pragma once

#include <spdlog/spdlog.h>
#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <exception>
#include <string>
#include <utility>

#include "agentws/events.hpp"

namespace agentws::detail {

struct failure_log {
  spdlog::level::level_enum level = spdlog::level::err;
  // A cancelled coroutine throws operation_aborted at its next co_await:
  // for coroutines cancelled on purpose that is no failure.
  bool ignore_aborted = false;
};

// `name` names the coroutine ("conn 7: writer"); it is logged as given, the
// exception's message made printable (it may quote a peer's bytes).
inline auto log_failure(std::string name, failure_log options = {}) {
  return [what = std::move(name), options](std::exception_ptr failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& e) {
      if (options.ignore_aborted && e.code() == boost::asio::error::operation_aborted) return;
      spdlog::log(options.level, "{} failed: {}", what, printable(e.what()));
    } catch (const std::exception& e) {
      spdlog::log(options.level, "{} failed: {}", what, printable(e.what()));
    } catch (...) {
      spdlog::log(options.level, "{} failed: an unknown exception", what);
    }
  };
}

}  // namespace agentws::detail
