#include "server/socket_table.hpp"

#include <algorithm>

namespace agentws::detail {

socket_table::socket_table(socket_limits limits) : limits_(limits) {
  limits_.max_sockets = std::max<std::size_t>(limits_.max_sockets, 1);
}

socket_table::admission socket_table::admit(std::uint64_t id, const std::string& address) {
  admission answer;
  if (limits_.max_per_address != 0 && from(address) >= limits_.max_per_address) {
    answer.outcome = verdict::refused_address;
    return answer;
  }
  if (sockets_.size() >= limits_.max_sockets) {
    if (ranking_.empty()) {
      answer.outcome = verdict::refused_full;
      return answer;
    }
    const address_entry& crowded = addresses_.at(ranking_.begin()->second);
    answer.evict = *crowded.pre_upgrade.begin();
    forget(sockets_.find(answer.evict));
    closing_.insert(answer.evict);
  }
  answer.outcome = verdict::admitted;
  auto& at = *addresses_.try_emplace(address).first;
  unrank(at);
  ++at.second.sockets;
  at.second.pre_upgrade.insert(id);
  ++pre_upgrade_count_;
  rank(at);
  sockets_.emplace(id, entry{&at, false});
  return answer;
}

void socket_table::upgraded(std::uint64_t id) {
  auto it = sockets_.find(id);
  if (it == sockets_.end() || it->second.upgraded) return;
  it->second.upgraded = true;
  auto& at = *it->second.address;
  unrank(at);
  at.second.pre_upgrade.erase(id);
  --pre_upgrade_count_;
  rank(at);
}

void socket_table::release(std::uint64_t id) {
  auto it = sockets_.find(id);
  if (it != sockets_.end()) {
    forget(it);
  } else {
    closing_.erase(id);
  }
}

std::size_t socket_table::from(const std::string& address) const {
  auto it = addresses_.find(address);
  return it == addresses_.end() ? 0 : it->second.sockets;
}

void socket_table::unrank(const address_map::value_type& address) {
  if (!address.second.pre_upgrade.empty())
    ranking_.erase({address.second.pre_upgrade.size(), address.first});
}

void socket_table::rank(const address_map::value_type& address) {
  if (!address.second.pre_upgrade.empty())
    ranking_.emplace(address.second.pre_upgrade.size(), address.first);
}

void socket_table::forget(std::unordered_map<std::uint64_t, entry>::iterator it) {
  auto& at = *it->second.address;
  unrank(at);
  if (!it->second.upgraded) {
    at.second.pre_upgrade.erase(it->first);
    --pre_upgrade_count_;
  }
  rank(at);
  const bool last = --at.second.sockets == 0;
  if (last) addresses_.erase(addresses_.find(at.first));  // `at` dies here
  sockets_.erase(it);
}

}  // namespace agentws::detail
