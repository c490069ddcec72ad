// The frames of one connection that are waiting for the socket, and the
// decisions about their order: pure code, no I/O, tested on its own.
//
// Two lanes. Answers to commands (connected, run_started, run_cancelled,
// error) go ahead of run events, so a client that reads slowly still sees its
// cancel answered at once instead of behind everything its runs produced.
// Events wait in order; the writer takes them a budget at a time, so what
// leaves the queue (and can no longer be taken back) stays small. A cancelled
// run's events that are still queued are dropped: they were never sent, and
// nothing of a run may follow its terminal event.
//
// Per-run order holds across the lanes: an answer about a run that still has
// frames which must go out first (the previous run of the same id, say)
// waits behind them in the event lane instead (see push_answer).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace agentws::detail {

// Which run a queued frame belongs to (a serial number, unique on its
// connection; 0 for none) and whether cancelling that run takes it back.
struct frame_tag {
  std::uint64_t run = 0;
  bool droppable = false;  // run_event frames only
};

// One lane: frames appended in place into one byte buffer, consumed from
// the front. Its memory is reused: a steady stream allocates nothing.
class frame_list {
 public:
  bool empty() const noexcept { return next_ == frames_.size(); }
  std::size_t frames() const noexcept { return frames_.size() - next_; }
  std::size_t bytes() const noexcept { return bytes_.size() - offset_; }
  // The memory it holds (capacity, not what is queued: it is reused).
  std::size_t memory_bytes() const noexcept {
    return bytes_.capacity() + frames_.capacity() * sizeof(frame);
  }
  // The same after one more frame of `frame_bytes`, if it makes the buffers
  // grow the way the standard library's do (to twice their capacity).
  std::size_t memory_bytes_after_push(std::size_t frame_bytes) const noexcept {
    auto grown = [](std::size_t capacity, std::size_t size) {
      return size <= capacity ? capacity : std::max(2 * capacity, size);
    };
    return grown(bytes_.capacity(), bytes_.size() + frame_bytes) +
           grown(frames_.capacity(), frames_.size() + 1) * sizeof(frame);
  }

  // Appends one frame built by `build(std::string&)`, which must only append.
  template <class Build>
  void push(Build&& build, frame_tag tag) {
    const std::size_t before = bytes_.size();
    build(bytes_);
    frames_.push_back({bytes_.size() - before, tag});
  }

  std::string_view front() const noexcept {
    return std::string_view(bytes_).substr(offset_, frames_[next_].size);
  }
  const frame_tag& front_tag() const noexcept { return frames_[next_].tag; }
  void pop_front() noexcept {
    offset_ += frames_[next_].size;
    if (++next_ == frames_.size()) clear();
  }

  // Removes the droppable frames of `run`; returns how many.
  std::size_t remove_droppable(std::uint64_t run);
  // Whether any frame of `run` is queued.
  bool holds(std::uint64_t run) const noexcept;

  void clear() noexcept {
    bytes_.clear();
    frames_.clear();
    next_ = 0;
    offset_ = 0;
  }
  // Clears and gives the memory back (for connections going idle).
  void release_memory() noexcept {
    std::string().swap(bytes_);
    std::vector<frame>().swap(frames_);
    next_ = 0;
    offset_ = 0;
  }
  void swap(frame_list& other) noexcept {
    bytes_.swap(other.bytes_);
    frames_.swap(other.frames_);
    std::swap(next_, other.next_);
    std::swap(offset_, other.offset_);
  }

 private:
  struct frame {
    std::size_t size;
    frame_tag tag;
  };
  std::string bytes_;
  std::vector<frame> frames_;
  std::size_t next_ = 0;    // first frame not yet consumed
  std::size_t offset_ = 0;  // where it starts in bytes_
};

class send_queue {
 public:
  // What one take() moved.
  struct taken {
    std::size_t frames = 0;
    std::size_t bytes = 0;
    std::size_t answers = 0;
    bool events_refilled = false;  // the event lane was emptied into the batch
  };

  // An answer to a command. It goes ahead of queued events, unless frames
  // of run `after_run` (nonzero) are queued: then it waits behind them in
  // the event lane, tagged `tag`, so that run's frames keep their order.
  template <class Build>
  void push_answer(Build&& build, std::uint64_t after_run = 0, frame_tag tag = {}) {
    if (after_run != 0 && holds_events_of(after_run)) {
      events_.push(std::forward<Build>(build), tag);
    } else {
      answers_.push(std::forward<Build>(build), tag);
    }
  }
  // A run's event (or its run_done), behind everything queued before it.
  template <class Build>
  void push_event(Build&& build, frame_tag tag) {
    events_.push(std::forward<Build>(build), tag);
  }

  bool empty() const noexcept { return answers_.empty() && batch_.empty() && events_.empty(); }
  std::size_t answer_frames() const noexcept { return answers_.frames(); }
  std::size_t answer_bytes() const noexcept { return answers_.bytes(); }
  // Events queued since the writer last refilled its batch: what producers
  // are bounded by (the batch itself is at most one such fill).
  std::size_t lane_bytes() const noexcept { return events_.bytes(); }
  std::size_t total_bytes() const noexcept {
    return answers_.bytes() + batch_.bytes() + events_.bytes();
  }
  // The memory the three lanes hold, and what it becomes after one more
  // event of `frame_bytes` (see frame_list::memory_bytes_after_push).
  std::size_t memory_bytes() const noexcept {
    return answers_.memory_bytes() + batch_.memory_bytes() + events_.memory_bytes();
  }
  std::size_t memory_bytes_after_event(std::size_t frame_bytes) const noexcept {
    return answers_.memory_bytes() + batch_.memory_bytes() +
           events_.memory_bytes_after_push(frame_bytes);
  }

  // Takes back the queued, droppable frames of a cancelled run; returns how
  // many (all of them run_events, so the run's last step sent follows).
  std::size_t drop_events_of(std::uint64_t run) {
    return batch_.remove_droppable(run) + events_.remove_droppable(run);
  }
  bool holds_events_of(std::uint64_t run) const noexcept {
    return batch_.holds(run) || events_.holds(run);
  }

  // Counts refills of the batch. Frames queued in the event lane while this
  // was g have all left the queue once it reaches g + 2.
  std::uint64_t generation() const noexcept { return generation_; }

  // Hands frames to `sink(std::string_view frame)`, or to
  // `sink(std::string_view frame, const frame_tag& tag)`: every answer, then
  // events in order while the bytes handed stay under `budget` (at least
  // one frame if any is queued).
  template <class Sink>
  taken take(std::size_t budget, Sink&& sink) {
    taken out;
    while (!answers_.empty()) {
      hand(answers_, out, sink);
      ++out.answers;
    }
    while (out.frames == 0 || out.bytes < budget) {
      if (batch_.empty()) {
        if (events_.empty()) break;
        batch_.swap(events_);  // the empty batch's memory becomes the lane's
        ++generation_;
        out.events_refilled = true;
      }
      hand(batch_, out, sink);
    }
    return out;
  }

  // Gives back the memory of an empty queue (for connections going idle).
  void release_memory() noexcept {
    if (!empty()) return;
    answers_.release_memory();
    batch_.release_memory();
    events_.release_memory();
  }

 private:
  template <class Sink>
  static void hand(frame_list& from, taken& out, Sink& sink) {
    const std::string_view frame = from.front();
    if constexpr (std::is_invocable_v<Sink&, std::string_view, const frame_tag&>) {
      sink(frame, from.front_tag());
    } else {
      sink(frame);
    }
    ++out.frames;
    out.bytes += frame.size();
    from.pop_front();
  }

  frame_list answers_;
  frame_list batch_;   // events being handed out, a budget at a time
  frame_list events_;  // events queued behind the batch
  std::uint64_t generation_ = 0;
};

inline std::size_t frame_list::remove_droppable(std::uint64_t run) {
  std::size_t read = next_;
  while (read < frames_.size() && !(frames_[read].tag.droppable && frames_[read].tag.run == run))
    ++read;
  if (read == frames_.size()) return 0;
  // Compact in place from the first dropped frame on.
  std::size_t read_offset = offset_;
  for (std::size_t i = next_; i < read; ++i)
    read_offset += frames_[i].size;
  std::size_t write = read;
  std::size_t write_offset = read_offset;
  std::size_t removed = 0;
  for (; read < frames_.size(); ++read) {
    const frame current = frames_[read];
    if (current.tag.droppable && current.tag.run == run) {
      ++removed;
    } else {
      if (write_offset != read_offset) {
        std::memmove(bytes_.data() + write_offset, bytes_.data() + read_offset, current.size);
      }
      frames_[write++] = current;
      write_offset += current.size;
    }
    read_offset += current.size;
  }
  bytes_.resize(write_offset);
  frames_.resize(write);
  if (next_ == frames_.size()) clear();
  return removed;
}

inline bool frame_list::holds(std::uint64_t run) const noexcept {
  for (std::size_t i = next_; i < frames_.size(); ++i) {
    if (frames_[i].tag.run == run) return true;
  }
  return false;
}

}  // namespace agentws::detail
