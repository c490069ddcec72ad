#include "server/session_keys.hpp"

#include <random>

namespace agentws::detail {

std::string session_keys::new_key() {
  // std::random_device reads the kernel's generator (getrandom): unguessable.
  static thread_local std::random_device source;
  static constexpr char hex[] = "0123456789abcdef";
  std::string key;
  key.reserve(32);
  for (int word = 0; word < 4; ++word) {
    std::uint32_t bits = source();
    for (int nibble = 0; nibble < 8; ++nibble, bits >>= 4)
      key.push_back(hex[bits & 0xf]);
  }
  return key;
}

session_keys::opened session_keys::open(std::string_view presented) {
  std::lock_guard lock(mutex_);
  if (!presented.empty()) {
    auto it = sessions_.find(std::string(presented));
    if (it != sessions_.end()) {
      ++it->second.connections;
      return {it->first, it->second.serial, true, true};
    }
  }
  std::string key = new_key();
  while (sessions_.contains(key))
    key = new_key();
  return {std::move(key), next_serial_++, false, false};
}

void session_keys::keep(opened& session, std::string owner) {
  if (session.kept) return;
  std::lock_guard lock(mutex_);
  session.kept = true;
  sessions_.emplace(session.key, session_entry{session.serial, std::move(owner), 1, {}});
  keys_.emplace(session.serial, session.key);
}

void session_keys::close(std::uint64_t serial, clock::time_point now, bool has_runs) {
  std::lock_guard lock(mutex_);
  auto key = keys_.find(serial);
  if (key == keys_.end()) return;
  session_entry& found = sessions_.at(key->second);
  if (found.connections > 0) --found.connections;
  found.last_closed = now;
  if (found.connections == 0 && !has_runs) {
    sessions_.erase(key->second);
    keys_.erase(key);
  }
}

std::size_t session_keys::expire(clock::time_point now,
                                 const std::function<bool(const std::string&)>& has_runs) {
  std::lock_guard lock(mutex_);
  std::size_t forgotten = 0;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    const session_entry& found = it->second;
    if (found.connections == 0 && now - found.last_closed >= retention_ && !has_runs(found.owner)) {
      keys_.erase(found.serial);
      it = sessions_.erase(it);
      ++forgotten;
    } else {
      ++it;
    }
  }
  return forgotten;
}

std::size_t session_keys::size() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

}  // namespace agentws::detail
