// Every accepted socket, counted against one limit (the way nginx counts
// worker_connections), with a cap per client address. Pure bookkeeping: the
// accept loop asks admit() before it keeps a socket, and closes what the
// answer names. Not thread-safe; server_state wraps it in a mutex.
//
// When the table is full, a connection that has not upgraded to a WebSocket
// yet (an HTTP keep-alive, a silent socket, a handshake in progress) is
// closed to make room: such connections are cheap to lose and are what a
// flood is made of, while upgraded WebSockets carry runs. The one chosen is
// the oldest of the address that holds the most of them, so a flood from a
// few addresses displaces itself, never a client with one handshake under
// way; behind a proxy (one address) it is simply the oldest. Only when every
// slot holds a WebSocket is the new socket refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <unordered_map>

namespace agentws::detail {

struct socket_limits {
  std::size_t max_sockets = 1;      // every accepted socket; at least 1
  std::size_t max_per_address = 0;  // 0: no cap
};

class socket_table {
 public:
  explicit socket_table(socket_limits limits);

  enum class verdict {
    admitted,         // keep the socket; `evict` may name one to close first
    refused_full,     // every slot holds a WebSocket
    refused_address,  // this address holds max_per_address sockets
  };
  struct admission {
    verdict outcome = verdict::refused_full;
    std::uint64_t evict = 0;  // a pre-upgrade socket to close (0: none)
  };

  // Socket `id` (unique, chosen by the caller) from `address` was accepted.
  // An evicted socket stops counting at once (its close is on its way), so
  // the table never holds more than max_sockets.
  admission admit(std::uint64_t id, const std::string& address);
  // The socket upgraded to a WebSocket: it is no longer evicted for room.
  void upgraded(std::uint64_t id);
  // The socket closed. Unknown ids are ignored; an evicted socket stops
  // counting as closing.
  void release(std::uint64_t id);
  // Evicted sockets whose close has not happened yet: they still hold a
  // descriptor, so the accept loop waits while there are many.
  std::size_t closing() const noexcept { return closing_.size(); }
  // An evicted socket upgraded before its close could happen, and stays
  // open: it no longer counts as closing (nor in the table: one over).
  void kept(std::uint64_t id) { closing_.erase(id); }

  std::size_t open() const noexcept { return sockets_.size(); }
  std::size_t pre_upgrade() const noexcept { return pre_upgrade_count_; }
  std::size_t from(const std::string& address) const;
  const socket_limits& limits() const noexcept { return limits_; }

 private:
  struct address_entry {
    std::size_t sockets = 0;
    std::set<std::uint64_t> pre_upgrade;  // ids grow with time: the first is the oldest
  };
  using address_map = std::unordered_map<std::string, address_entry>;
  struct entry {
    address_map::value_type* address;  // stable: rehashing moves no element
    bool upgraded = false;
  };
  // Keeps `ranking_` in step around a change of `address`'s pre-upgrade set.
  void unrank(const address_map::value_type& address);
  void rank(const address_map::value_type& address);
  void forget(std::unordered_map<std::uint64_t, entry>::iterator it);

  socket_limits limits_;
  std::unordered_map<std::uint64_t, entry> sockets_;
  address_map addresses_;
  // Addresses by how many pre-upgrade sockets they hold, most first.
  std::set<std::pair<std::size_t, std::string>, std::greater<>> ranking_;
  std::size_t pre_upgrade_count_ = 0;
  std::set<std::uint64_t> closing_;
};

}  // namespace agentws::detail
