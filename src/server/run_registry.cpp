#include "server/run_registry.hpp"

#include <algorithm>

namespace agentws::detail {

start_verdict local_run_registry::start(const std::string& owner, const std::string& run_id,
                                        std::shared_ptr<server_run> run, std::uint64_t freed_with) {
  std::lock_guard lock(mutex_);
  owner_runs& runs = owners_[owner];
  auto it = runs.runs.find(run_id);
  if (it != runs.runs.end() && it->second.state == run_state_name::running) {
    return start_verdict::already_active;
  }
  if (runs.running >= limits_.max_runs_per_owner) {
    if (runs.runs.empty()) owners_.erase(owner);
    return start_verdict::owner_limit;
  }
  if (it != runs.runs.end()) {
    --counts_.retained;
    runs.runs.erase(it);
  }
  runs.runs.emplace(
      run_id, entry{std::move(run), run_state_name::running, false, next_order_++, freed_with});
  ++runs.running;
  ++counts_.running;
  return start_verdict::started;
}

std::shared_ptr<server_run> local_run_registry::find(const std::string& owner,
                                                     const std::string& run_id) const {
  std::lock_guard lock(mutex_);
  auto owner_it = owners_.find(owner);
  if (owner_it == owners_.end()) return nullptr;
  auto it = owner_it->second.runs.find(run_id);
  return it == owner_it->second.runs.end() ? nullptr : it->second.run;
}

local_run_registry::entry* local_run_registry::going(const std::string& owner,
                                                     const std::string& run_id,
                                                     const server_run* run) {
  auto owner_it = owners_.find(owner);
  if (owner_it == owners_.end()) return nullptr;
  auto it = owner_it->second.runs.find(run_id);
  if (it == owner_it->second.runs.end() || it->second.run.get() != run ||
      it->second.state != run_state_name::running) {
    return nullptr;
  }
  return &it->second;
}

bool local_run_registry::end(const std::string& owner, const std::string& run_id,
                             const server_run* run, run_state_name state,
                             registry_clock::time_point now) {
  std::lock_guard lock(mutex_);
  entry* found = going(owner, run_id, run);
  if (!found || state == run_state_name::running) return false;
  found->state = state;
  found->ended_at = now;
  if (found->detached) {
    found->detached = false;
    --counts_.detached;
  }
  owner_runs& runs = owners_[owner];
  --runs.running;
  --counts_.running;
  ++counts_.retained;
  bound_retained(runs);
  return true;
}

void local_run_registry::bound_retained(owner_runs& owner) {
  const std::size_t retained = owner.runs.size() - owner.running;
  if (retained <= limits_.max_runs_per_owner) return;
  auto oldest = owner.runs.end();
  for (auto it = owner.runs.begin(); it != owner.runs.end(); ++it) {
    if (it->second.state == run_state_name::running) continue;
    if (oldest == owner.runs.end() || it->second.ended_at < oldest->second.ended_at ||
        (it->second.ended_at == oldest->second.ended_at &&
         it->second.order < oldest->second.order)) {
      oldest = it;
    }
  }
  owner.runs.erase(oldest);
  --counts_.retained;
}

void local_run_registry::forget(const std::string& owner, const std::string& run_id,
                                const server_run* run) {
  std::shared_ptr<server_run> forgotten;  // destroyed after the lock is released
  std::lock_guard lock(mutex_);
  auto owner_it = owners_.find(owner);
  if (owner_it == owners_.end()) return;
  auto& runs = owner_it->second.runs;
  auto it = runs.find(run_id);
  if (it == runs.end() || it->second.run.get() != run ||
      it->second.state == run_state_name::running) {
    return;
  }
  forgotten = std::move(it->second.run);
  runs.erase(it);
  --counts_.retained;
  if (runs.empty()) owners_.erase(owner_it);
}

void local_run_registry::forget_ended_with(const std::string& owner, std::uint64_t connection) {
  std::vector<std::shared_ptr<server_run>> forgotten;  // destroyed after the lock is released
  std::lock_guard lock(mutex_);
  auto owner_it = owners_.find(owner);
  if (owner_it == owners_.end() || connection == 0) return;
  auto& runs = owner_it->second.runs;
  for (auto it = runs.begin(); it != runs.end();) {
    if (it->second.freed_with == connection && it->second.state != run_state_name::running) {
      forgotten.push_back(std::move(it->second.run));
      it = runs.erase(it);
      --counts_.retained;
    } else {
      ++it;
    }
  }
  if (runs.empty()) owners_.erase(owner_it);
}

bool local_run_registry::set_detached(const std::string& owner, const std::string& run_id,
                                      const server_run* run, bool detached) {
  std::lock_guard lock(mutex_);
  entry* found = going(owner, run_id, run);
  if (!found || found->detached == detached) return true;
  if (detached && counts_.detached >= limits_.max_detached_runs) return false;
  found->detached = detached;
  if (detached) {
    ++counts_.detached;
  } else {
    --counts_.detached;
  }
  return true;
}

std::vector<registry_entry> local_run_registry::list(const std::string& owner) const {
  std::vector<std::pair<std::uint64_t, registry_entry>> ordered;
  {
    std::lock_guard lock(mutex_);
    auto owner_it = owners_.find(owner);
    if (owner_it == owners_.end()) return {};
    ordered.reserve(owner_it->second.runs.size());
    for (const auto& [run_id, found] : owner_it->second.runs)
      ordered.push_back({found.order, registry_entry{run_id, found.run, found.state}});
  }
  std::sort(ordered.begin(), ordered.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<registry_entry> entries;
  entries.reserve(ordered.size());
  for (auto& [order, listed] : ordered)
    entries.push_back(std::move(listed));
  return entries;
}

std::vector<std::shared_ptr<server_run>> local_run_registry::running() const {
  std::vector<std::shared_ptr<server_run>> going_runs;
  std::lock_guard lock(mutex_);
  for (const auto& [owner, runs] : owners_) {
    for (const auto& [run_id, found] : runs.runs) {
      if (found.state == run_state_name::running) going_runs.push_back(found.run);
    }
  }
  return going_runs;
}

bool local_run_registry::has_runs(const std::string& owner) const {
  std::lock_guard lock(mutex_);
  auto it = owners_.find(owner);
  return it != owners_.end() && !it->second.runs.empty();
}

std::size_t local_run_registry::expire(registry_clock::time_point now) {
  // The runs forgotten are destroyed after the lock is released: a run's
  // history may be large, and nothing else needs to wait for its free.
  std::vector<std::shared_ptr<server_run>> forgotten;
  {
    std::lock_guard lock(mutex_);
    for (auto owner_it = owners_.begin(); owner_it != owners_.end();) {
      auto& runs = owner_it->second.runs;
      for (auto it = runs.begin(); it != runs.end();) {
        if (it->second.state != run_state_name::running &&
            now - it->second.ended_at >= limits_.retention) {
          forgotten.push_back(std::move(it->second.run));
          it = runs.erase(it);
          --counts_.retained;
        } else {
          ++it;
        }
      }
      owner_it = runs.empty() ? owners_.erase(owner_it) : std::next(owner_it);
    }
  }
  return forgotten.size();
}

registry_counts local_run_registry::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

}  // namespace agentws::detail
