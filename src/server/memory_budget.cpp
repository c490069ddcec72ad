#include "server/memory_budget.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "agentws/server.hpp"

namespace agentws {

namespace {

// The cgroup v2 memory.max of this process, if it has one ("max": none).
std::optional<std::size_t> cgroup_memory_limit() {
  std::ifstream cgroup("/proc/self/cgroup");
  std::string line;
  std::string path;
  while (std::getline(cgroup, line)) {
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  }
  if (path.empty()) return std::nullopt;
  std::ifstream limit_file("/sys/fs/cgroup" + path + "/memory.max");
  std::string limit;
  if (!(limit_file >> limit) || limit == "max") return std::nullopt;
  try {
    return static_cast<std::size_t>(std::stoull(limit));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

std::size_t default_memory_budget() {
  constexpr std::size_t floor = 64u << 20;
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  std::size_t memory = pages > 0 && page_size > 0
                           ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page_size)
                           : 0;
  if (const auto cgroup = cgroup_memory_limit(); cgroup && (memory == 0 || *cgroup < memory)) {
    memory = *cgroup;
  }
  return std::max(floor, memory / 4);
}

std::size_t effective_memory_budget(const server_config& config) {
  if (config.memory_budget == 0) return default_memory_budget();
  // One connection must be able to hold its writer's two chunks and some
  // events, or nothing would ever be sent.
  return std::max({config.memory_budget, std::size_t{1} << 20, 4 * config.write_chunk_bytes});
}

}  // namespace agentws

namespace agentws::detail {

bool memory_budget::reserve(holding& held, std::size_t needed, std::size_t connections) noexcept {
  if (needed <= held.bytes) return true;
  const std::size_t wanted = round_up(needed);
  const std::size_t more = wanted - held.bytes;
  if (limit_ != 0) {
    const std::size_t after = reserved_.load(std::memory_order_relaxed) + more;
    if (after > limit_) return false;
    // The last quarter only up to the fair share: who holds little goes on.
    if (after > soft_limit() && wanted > std::max(fair_share(connections), block_bytes)) {
      return false;
    }
  }
  reserved_.fetch_add(more, std::memory_order_relaxed);
  held.bytes = wanted;
  return true;
}

void memory_budget::release_to(holding& held, std::size_t needed) {
  const std::size_t keep = round_up(needed);
  if (held.bytes <= keep || (needed != 0 && held.bytes - keep <= block_bytes)) return;
  const std::size_t freed = held.bytes - keep;
  held.bytes = keep;
  // seq_cst pairs with wait(): either it sees this release, or this sees it.
  const std::size_t after = reserved_.fetch_sub(freed, std::memory_order_seq_cst) - freed;
  // At the whole budget nobody can be granted anything: waking would only spin.
  if (after < limit_ && waiter_count_.load(std::memory_order_seq_cst) != 0) wake_waiters();
}

void memory_budget::wait(std::function<void()> wake) {
  {
    std::lock_guard lock(waiters_mutex_);
    waiters_.push_back(std::move(wake));
    waiter_count_.fetch_add(1, std::memory_order_seq_cst);
  }
  // Room may have come back between the caller's refusal and now.
  if (reserved_.load(std::memory_order_seq_cst) < soft_limit() || limit_ == 0) wake_waiters();
}

std::size_t memory_budget::waiting() const {
  std::lock_guard lock(waiters_mutex_);
  return waiters_.size();
}

void memory_budget::wake_waiters() {
  std::vector<std::function<void()>> woken;
  {
    std::lock_guard lock(waiters_mutex_);
    woken.swap(waiters_);
    waiter_count_.store(0, std::memory_order_seq_cst);
  }
  for (auto& wake : woken)
    wake();
}

std::vector<std::uint64_t> pick_slow_consumers(std::vector<budget_holder> holders,
                                               std::size_t reserved, std::size_t target) {
  std::erase_if(holders, [](const budget_holder& h) { return h.took_anything || h.reserved == 0; });
  std::sort(holders.begin(), holders.end(), [](const budget_holder& a, const budget_holder& b) {
    return a.reserved != b.reserved ? a.reserved > b.reserved : a.id < b.id;
  });
  std::vector<std::uint64_t> chosen;
  for (const budget_holder& holder : holders) {
    if (reserved <= target) break;
    chosen.push_back(holder.id);
    reserved -= std::min(reserved, holder.reserved);
  }
  return chosen;
}

}  // namespace agentws::detail
