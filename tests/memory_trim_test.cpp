// When ws-server gives freed memory back: once the load has fallen to half
// of its peak (or to zero) and stayed there, not during a burst.
#include <catch2/catch.hpp>

#include "apps/memory_trim.hpp"

using agentws::trim_schedule;

TEST_CASE("trim schedule: after the load falls to zero and stays, once", "[memory]") {
  trim_schedule schedule(3);
  CHECK_FALSE(schedule.observe(0));  // nothing ever ran: nothing to give back
  CHECK_FALSE(schedule.observe(0));
  CHECK_FALSE(schedule.observe(0));
  for (int i = 0; i < 5; ++i)
    CHECK_FALSE(schedule.observe(2000));  // a burst
  CHECK_FALSE(schedule.observe(0));
  CHECK_FALSE(schedule.observe(0));
  CHECK(schedule.observe(0));        // low for three observations
  CHECK_FALSE(schedule.observe(0));  // and only once
  CHECK_FALSE(schedule.observe(0));
  CHECK_FALSE(schedule.observe(0));
}

TEST_CASE("trim schedule: a fall to half the peak counts, a dip inside a burst does not",
          "[memory]") {
  trim_schedule schedule(3);
  CHECK_FALSE(schedule.observe(1000));
  CHECK_FALSE(schedule.observe(400));
  CHECK_FALSE(schedule.observe(900));  // back up: the burst goes on
  CHECK_FALSE(schedule.observe(400));
  CHECK_FALSE(schedule.observe(450));
  CHECK(schedule.observe(500));  // half of the peak, three times in a row
  CHECK(schedule.peak() == 500);
  // The next trim is measured from there: 300 is not half of 500.
  CHECK_FALSE(schedule.observe(300));
  CHECK_FALSE(schedule.observe(300));
  CHECK_FALSE(schedule.observe(300));
  CHECK_FALSE(schedule.observe(250));
  CHECK_FALSE(schedule.observe(200));
  CHECK(schedule.observe(100));
}
