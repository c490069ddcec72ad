// When ws-server hands freed memory back to the kernel. glibc is told to
// keep freed memory for reuse (a burst that ends is usually followed by
// another, and faulting every page in again cost a third of the CPU per
// event at 1,000 streaming connections); this decides when the load has
// fallen for good, so that memory is returned instead of kept for ever.
#pragma once

#include <cstddef>
#include <cstdint>

namespace agentws {

class trim_schedule {
 public:
  // `settle`: observations the load must stay low before a trim.
  explicit trim_schedule(unsigned settle = 3) : settle_(settle) {}

  // Called about once a second with the load (connections plus runs).
  // True when memory should be given back now: the load fell to half of its
  // peak since the last trim (to zero from anything) and stayed there for
  // `settle` observations.
  bool observe(std::uint64_t load);

  std::uint64_t peak() const noexcept { return peak_; }

 private:
  unsigned settle_;
  std::uint64_t peak_ = 0;
  unsigned low_for_ = 0;
};

// Resident memory of this process, as /proc/self/statm counts it (0 if unknown).
std::int64_t resident_bytes();

// Gives the free top of the calling thread's own malloc arena back to the
// kernel. glibc's malloc_trim releases the free pages inside every arena,
// but shrinks only the main arena's top: a thread's arena shrinks when a
// large chunk is freed there while its free top is past M_TRIM_THRESHOLD,
// which ws-server sets high to keep memory between bursts. So this lowers
// the threshold, frees a large chunk on this thread, and restores it. Call
// it on every thread that allocated a burst's memory, then
// give_back_free_memory() once.
void give_back_thread_arena();

// Gives free memory back to the kernel (glibc's malloc_trim): the bytes of
// resident memory it released, as /proc/self/statm saw them.
std::int64_t give_back_free_memory();

// The M_TRIM_THRESHOLD ws-server keeps (see keep_freed_memory_for_reuse).
inline constexpr std::size_t kept_free_bytes_per_arena = 64 * 1024 * 1024;

}  // namespace agentws
