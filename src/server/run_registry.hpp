// The server's runs, by owner and run_id: which run an id names, whether it
// is still going, how long an ended one stays attachable, and the limits
// that bound them. Shared by every connection (the one table of runs that
// crosses them), so the in-process implementation locks; calls are per
// command and per run, never per event.
//
// Decisions only: the live run (its coroutine, history and followers) is
// the `server_run` an entry points to, which this code never touches. A
// cluster puts the same interface over Redis (entries there, live runs on
// the node that executes them).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "agentws/events.hpp"

namespace agentws::detail {

class server_run;

struct registry_limits {
  std::size_t max_runs_per_owner = 1024;         // going at once, per owner
  std::size_t max_detached_runs = 10'000;        // going and followed by no connection, server-wide
  std::chrono::milliseconds retention{600'000};  // an ended run stays attachable this long
};

enum class start_verdict {
  started,
  already_active,  // the owner's run of that id is still going
  owner_limit,     // the owner has max_runs_per_owner runs going
};

// One run as list_runs sees it.
struct registry_entry {
  std::string run_id;
  std::shared_ptr<server_run> run;
  run_state_name state = run_state_name::running;
};

struct registry_counts {
  std::size_t running = 0;
  std::size_t retained = 0;  // ended, still attachable
  std::size_t detached = 0;  // going, followed by no connection
};

using registry_clock = std::chrono::steady_clock;

class run_registry {
 public:
  virtual ~run_registry() = default;

  // Registers `run` as the owner's run `run_id`, going. An ended run of the
  // same id is forgotten for it. `freed_with` names the connection whose
  // close forgets the run once it ended (a version 1 run); 0 for none.
  virtual start_verdict start(const std::string& owner, const std::string& run_id,
                              std::shared_ptr<server_run> run, std::uint64_t freed_with = 0) = 0;
  // The owner's run of that id, going or retained; null for an id the owner
  // does not have (another owner's run included).
  virtual std::shared_ptr<server_run> find(const std::string& owner,
                                           const std::string& run_id) const = 0;
  // Ends `run` with `state` if it is still the owner's going run of that id:
  // true for exactly one caller (a cancel racing the run's own end, say).
  virtual bool end(const std::string& owner, const std::string& run_id, const server_run* run,
                   run_state_name state, registry_clock::time_point now) = 0;
  // Forgets `run` now if it is the owner's ended run of that id (a version
  // 1 run is freed with its connection, not retained).
  virtual void forget(const std::string& owner, const std::string& run_id,
                      const server_run* run) = 0;
  // Connection `connection` closed: forgets the owner's ended runs that are
  // freed with it.
  virtual void forget_ended_with(const std::string& owner, std::uint64_t connection) = 0;
  // A going run lost its last follower (`detached`) or gained one. Losing it
  // is refused (false) while max_detached_runs going runs have none.
  virtual bool set_detached(const std::string& owner, const std::string& run_id,
                            const server_run* run, bool detached) = 0;
  // The owner's runs, going and retained, oldest first.
  virtual std::vector<registry_entry> list(const std::string& owner) const = 0;
  // Every going run (a graceful shutdown cancels them all).
  virtual std::vector<std::shared_ptr<server_run>> running() const = 0;
  virtual bool has_runs(const std::string& owner) const = 0;
  // Forgets the runs that ended more than the retention ago; returns how many.
  virtual std::size_t expire(registry_clock::time_point now) = 0;
  virtual registry_counts counts() const = 0;
};

// The registry of a single server: a map under one mutex.
class local_run_registry final : public run_registry {
 public:
  explicit local_run_registry(registry_limits limits) : limits_(limits) {}

  start_verdict start(const std::string& owner, const std::string& run_id,
                      std::shared_ptr<server_run> run, std::uint64_t freed_with = 0) override;
  std::shared_ptr<server_run> find(const std::string& owner,
                                   const std::string& run_id) const override;
  bool end(const std::string& owner, const std::string& run_id, const server_run* run,
           run_state_name state, registry_clock::time_point now) override;
  void forget(const std::string& owner, const std::string& run_id, const server_run* run) override;
  void forget_ended_with(const std::string& owner, std::uint64_t connection) override;
  bool set_detached(const std::string& owner, const std::string& run_id, const server_run* run,
                    bool detached) override;
  std::vector<registry_entry> list(const std::string& owner) const override;
  std::vector<std::shared_ptr<server_run>> running() const override;
  bool has_runs(const std::string& owner) const override;
  std::size_t expire(registry_clock::time_point now) override;
  registry_counts counts() const override;

 private:
  struct entry {
    std::shared_ptr<server_run> run;
    run_state_name state = run_state_name::running;
    bool detached = false;
    std::uint64_t order = 0;       // start order, for listing
    std::uint64_t freed_with = 0;  // see start()
    registry_clock::time_point ended_at{};
  };
  struct owner_runs {
    std::unordered_map<std::string, entry> runs;
    std::size_t running = 0;
  };
  // The entry of (owner, run_id) if it is `run` going; null otherwise.
  entry* going(const std::string& owner, const std::string& run_id, const server_run* run);
  // Past the per-owner bound, the runs that ended first are forgotten first.
  void bound_retained(owner_runs& owner);

  const registry_limits limits_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, owner_runs> owners_;
  registry_counts counts_;
  std::uint64_t next_order_ = 0;
};

}  // namespace agentws::detail
