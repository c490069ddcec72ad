// A run's history: its events as encoded JSON text, each with its seq, kept
// so that a connection attaching later (or again) can be sent what it missed.
//
// Bounded in events and in bytes: the oldest events go first, the newest is
// always kept (the terminal event of a finished run stays attachable). The
// events live back to back in one buffer; the space of evicted ones is
// reclaimed by moving the live ones to the front once as many bytes are dead
// as the history may hold, so a run that streams for hours allocates nothing
// per event and holds at most about twice its byte bound (once it ends,
// shrink() cuts that to what is live).
//
// Pure: no I/O, no clock, no locks. Used on the run's strand only. What a run
// asks of its history is these few calls (append, plan_replay, at), so a
// store shared by several nodes (a Redis stream per run) can stand behind the
// same ones.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace agentws::detail {

struct history_limits {
  std::size_t max_events = 1024;
  std::size_t max_bytes = 64 * 1024;
};

// Where a replay after `after_seq` starts, and whether events are missing.
struct replay_plan {
  std::uint64_t from = 0;  // first seq to send (== end when nothing is to be sent)
  std::uint64_t end = 0;   // one past the last seq held
  bool gap = false;        // after_seq + 1 is no longer held: `from` is the oldest held
};

class run_log {
 public:
  explicit run_log(history_limits limits) : limits_(limits) {
    if (limits_.max_events == 0) limits_.max_events = 1;
  }

  // Appends one event built in place by `build(std::string& out, std::uint64_t seq)`,
  // which must only append; returns its seq (0, 1, 2, ...).
  template <class Build>
  std::uint64_t append(Build&& build) {
    reclaim_dead_space();
    const std::uint64_t seq = next_seq_++;
    build(data_, seq);
    ends_.push_back(data_.size());
    evict_past_limits();
    return seq;
  }

  std::uint64_t next_seq() const noexcept { return next_seq_; }
  // The oldest seq still held; next_seq() when the log is empty.
  std::uint64_t first_seq() const noexcept { return next_seq_ - events(); }
  std::size_t events() const noexcept { return ends_.size() - first_index_; }
  std::size_t bytes() const noexcept { return data_.size() - head_; }
  // What the log holds in memory, by capacity.
  std::size_t memory_bytes() const noexcept {
    return data_.capacity() + ends_.capacity() * sizeof(std::size_t);
  }

  // The event `seq`; first_seq() <= seq < next_seq().
  std::string_view at(std::uint64_t seq) const noexcept {
    const std::size_t index = first_index_ + static_cast<std::size_t>(seq - first_seq());
    const std::size_t begin = index == first_index_ ? head_ : ends_[index - 1];
    return std::string_view(data_).substr(begin, ends_[index] - begin);
  }

  // What to send a connection that has seen every event up to `after_seq`
  // (-1: none). A cursor past the end sends nothing.
  replay_plan plan_replay(std::int64_t after_seq) const noexcept {
    replay_plan plan;
    plan.end = next_seq_;
    const std::uint64_t wanted = static_cast<std::uint64_t>(after_seq + 1);
    if (wanted >= next_seq_) {
      plan.from = next_seq_;
    } else if (wanted < first_seq()) {
      plan.from = first_seq();
      plan.gap = true;
    } else {
      plan.from = wanted;
    }
    return plan;
  }

  // For a run that ended: nothing more is appended, so keep only what is live.
  void shrink() {
    compact();
    data_.shrink_to_fit();
    ends_.shrink_to_fit();
  }

 private:
  void evict_past_limits() noexcept {
    while (events() > 1 && (events() > limits_.max_events || bytes() > limits_.max_bytes)) {
      head_ = ends_[first_index_++];
    }
  }

  // Amortised: dead bytes are moved over once as many as the bound have
  // accumulated, so each byte appended is copied about once more at most.
  void reclaim_dead_space() {
    if (head_ >= std::max<std::size_t>(limits_.max_bytes, 4096) ||
        first_index_ >= std::max<std::size_t>(limits_.max_events, 64)) {
      compact();
    }
  }

  void compact() {
    if (head_ > 0) {
      data_.erase(0, head_);
      for (std::size_t i = first_index_; i < ends_.size(); ++i)
        ends_[i] -= head_;
      head_ = 0;
    }
    if (first_index_ > 0) {
      ends_.erase(ends_.begin(), ends_.begin() + static_cast<std::ptrdiff_t>(first_index_));
      first_index_ = 0;
    }
  }

  history_limits limits_;
  std::string data_;               // events back to back; live from head_
  std::size_t head_ = 0;           // where the oldest live event starts
  std::vector<std::size_t> ends_;  // where each event ends; live from first_index_
  std::size_t first_index_ = 0;
  std::uint64_t next_seq_ = 0;
};

}  // namespace agentws::detail
