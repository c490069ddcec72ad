#include "apps/memory_trim.hpp"

#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace agentws {

bool trim_schedule::observe(std::uint64_t load) {
  if (load > peak_) {
    peak_ = load;
    low_for_ = 0;
    return false;
  }
  const bool low = peak_ > 0 && (load == 0 || load * 2 <= peak_);
  if (!low) {
    low_for_ = 0;
    return false;
  }
  if (++low_for_ < settle_) return false;
  peak_ = load;  // measured from here on
  low_for_ = 0;
  return true;
}

std::int64_t resident_bytes() {
  std::FILE* statm = std::fopen("/proc/self/statm", "r");
  if (!statm) return 0;
  long size = 0;
  long resident = 0;
  const int read = std::fscanf(statm, "%ld %ld", &size, &resident);
  std::fclose(statm);
  return read == 2 ? static_cast<std::int64_t>(resident) * sysconf(_SC_PAGESIZE) : 0;
}

void give_back_thread_arena() {
#if defined(__GLIBC__)
  // Past glibc's consolidation threshold (64 KiB) and below ws-server's
  // M_MMAP_THRESHOLD: taken from this thread's arena, and its free ends in
  // a trim of the arena's top down to the threshold set here.
  constexpr std::size_t large_chunk = 256 * 1024;
  mallopt(M_TRIM_THRESHOLD, static_cast<int>(large_chunk));
  // Through a volatile pointer: the compiler may not drop the pair.
  void* volatile chunk = std::malloc(large_chunk);
  std::free(chunk);
  mallopt(M_TRIM_THRESHOLD, static_cast<int>(kept_free_bytes_per_arena));
#endif
}

std::int64_t give_back_free_memory() {
  const std::int64_t before = resident_bytes();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  return before - resident_bytes();
}

}  // namespace agentws
