#include "apps/memory_trim.hpp"

#include <malloc.h>
#include <unistd.h>

#include <cstdio>

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

namespace {

std::int64_t resident_bytes() {
  std::FILE* statm = std::fopen("/proc/self/statm", "r");
  if (!statm) return 0;
  long size = 0;
  long resident = 0;
  const int read = std::fscanf(statm, "%ld %ld", &size, &resident);
  std::fclose(statm);
  return read == 2 ? static_cast<std::int64_t>(resident) * sysconf(_SC_PAGESIZE) : 0;
}

}  // namespace

std::int64_t give_back_free_memory() {
  const std::int64_t before = resident_bytes();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  return before - resident_bytes();
}

}  // namespace agentws
