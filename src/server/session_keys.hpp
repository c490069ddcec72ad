// Sessions: what owns runs when the server checks no tokens. A connection
// gets a key (128 random bits, hex) in `connected`; presenting it again
// (`/ws?session=KEY`) continues that session, and so its runs. A session is
// forgotten once no connection used it for the retention time and it has no
// runs left; a key the server does not know starts a new session.
//
// Keys are secrets of their owner: they are never logged or counted; logs
// and the registry name a session by its serial ("session:<n>").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace agentws::detail {

class session_keys {
 public:
  using clock = std::chrono::steady_clock;

  explicit session_keys(std::chrono::milliseconds retention) : retention_(retention) {}

  struct opened {
    std::string key;
    std::uint64_t serial = 0;
    bool resumed = false;
    bool kept = false;  // in the table: resumable (see keep)
  };
  // A connection opens, presenting `presented` (empty: none). A known key
  // continues its session; otherwise the connection gets a new key, which
  // the table keeps only once the session owns a run (keep): an idle
  // connection costs no entry, and a key with nothing behind it has nothing
  // to resume.
  opened open(std::string_view presented);
  // The session starts owning runs, filed under `owner` (its own name,
  // owner_of(serial), or with tokens the token's): its key becomes resumable
  // for as long as that owner has runs.
  void keep(opened& session, std::string owner);
  // A connection of session `serial` closed at `now`. A session left with
  // no connection and no runs (`has_runs` false) is forgotten at once: there
  // is nothing to resume, and a key kept for nothing is memory kept for
  // nothing.
  void close(std::uint64_t serial, clock::time_point now, bool has_runs);
  // Forgets the sessions no connection used for the retention time and
  // whose owner has no runs (`has_runs(owner)` false); returns how many.
  std::size_t expire(clock::time_point now,
                     const std::function<bool(const std::string& owner)>& has_runs);
  std::size_t size() const;

  // The owner name the registry files a session's runs under.
  static std::string owner_of(std::uint64_t serial) { return "session:" + std::to_string(serial); }

 private:
  struct session_entry {
    std::uint64_t serial = 0;
    std::string owner;  // whose runs keep it
    std::size_t connections = 0;
    clock::time_point last_closed{};
  };
  static std::string new_key();

  const std::chrono::milliseconds retention_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, session_entry> sessions_;  // by key
  std::unordered_map<std::uint64_t, std::string> keys_;      // by serial
  std::uint64_t next_serial_ = 1;
};

}  // namespace agentws::detail
