// The process-wide memory budget's decisions, without sockets: who may grow,
// who waits and is woken, and whom the server closes when it stays reached.
#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "server/memory_budget.hpp"

using agentws::detail::budget_holder;
using agentws::detail::memory_budget;
using agentws::detail::pick_slow_consumers;

namespace {
constexpr std::size_t block = memory_budget::block_bytes;
}

TEST_CASE("a reservation grows in whole blocks and shrinks with a block of slack", "[budget]") {
  memory_budget budget(64 * block);
  memory_budget::holding held;
  REQUIRE(budget.reserve(held, 1, 1));
  CHECK(held.bytes == block);
  CHECK(budget.reserved() == block);
  REQUIRE(budget.reserve(held, block, 1));  // covered: nothing changes
  CHECK(budget.reserved() == block);
  REQUIRE(budget.reserve(held, 3 * block + 1, 1));
  CHECK(held.bytes == 4 * block);
  CHECK(budget.reserved() == 4 * block);

  budget.release_to(held, 3 * block);  // one block over what is needed: kept
  CHECK(held.bytes == 4 * block);
  budget.release_to(held, block);
  CHECK(held.bytes == block);
  CHECK(budget.reserved() == block);
  budget.release_all(held);
  CHECK(held.bytes == 0);
  CHECK(budget.reserved() == 0);
}

TEST_CASE("past three quarters of the budget only connections under their share grow", "[budget]") {
  memory_budget budget(64 * block);  // soft limit: 48 blocks
  memory_budget::holding hog;
  memory_budget::holding reader;
  REQUIRE(budget.reserve(hog, 48 * block, 4));
  CHECK(budget.reached());
  // The hog holds more than its share (16 blocks of 64 for 4 connections).
  CHECK_FALSE(budget.reserve(hog, 49 * block, 4));
  CHECK(hog.bytes == 48 * block);
  // The reader may take the last quarter up to its share, no further.
  REQUIRE(budget.reserve(reader, 16 * block, 4));
  CHECK_FALSE(budget.reserve(reader, 17 * block, 4));
  CHECK(budget.reserved() == 64 * block);
  // At the whole budget nobody grows, however little it holds.
  memory_budget::holding newcomer;
  CHECK_FALSE(budget.reserve(newcomer, 1, 4));
  CHECK(newcomer.bytes == 0);
}

TEST_CASE("every connection may hold one block while the budget is reached", "[budget]") {
  memory_budget budget(8 * block);  // a share of 8 / 100 connections is under a block
  memory_budget::holding first;
  REQUIRE(budget.reserve(first, 6 * block, 100));
  memory_budget::holding small;
  REQUIRE(budget.reserve(small, block, 100));
  CHECK_FALSE(budget.reserve(small, block + 1, 100));
}

TEST_CASE("a budget of 0 grants everything", "[budget]") {
  memory_budget budget(0);
  memory_budget::holding held;
  REQUIRE(budget.reserve(held, std::size_t{1} << 40, 1));
  CHECK_FALSE(budget.reached());
}

TEST_CASE("who waits for the budget is woken once room comes back", "[budget]") {
  memory_budget budget(8 * block);
  memory_budget::holding hog;
  REQUIRE(budget.reserve(hog, 8 * block, 1));
  int woken = 0;
  budget.wait([&] { ++woken; });
  CHECK(woken == 0);  // no room: it waits
  CHECK(budget.waiting() == 1);

  SECTION("a release wakes every waiter once") {
    budget.release_to(hog, 2 * block);
    CHECK(woken == 1);
    CHECK(budget.waiting() == 0);
    budget.release_all(hog);
    CHECK(woken == 1);
  }
  SECTION("waiting while there is room wakes at once") {
    budget.release_all(hog);
    int later = 0;
    budget.wait([&] { ++later; });
    CHECK(later == 1);
  }
}

TEST_CASE("threads reserving and releasing leave the budget balanced", "[budget]") {
  memory_budget budget(256 * block);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&budget] {
      memory_budget::holding held;
      for (std::size_t i = 0; i < 20'000; ++i) {
        if (!budget.reserve(held, (i % 40) * 1000 + 1, 4)) budget.wait([] {});
        if (i % 3 == 0) budget.release_to(held, (i % 7) * 500);
      }
      budget.release_all(held);
    });
  }
  for (auto& thread : threads)
    thread.join();
  CHECK(budget.reserved() == 0);
}

TEST_CASE("when the budget stays reached, the largest clients taking nothing are closed",
          "[budget]") {
  const std::vector<budget_holder> holders{{1, 10 * block, false},
                                           {2, 40 * block, true},  // reads: never chosen
                                           {3, 30 * block, false},
                                           {4, 20 * block, false},
                                           {5, 0, false}};
  SECTION("largest first, until the rest would be under the target") {
    CHECK(pick_slow_consumers(holders, 100 * block, 60 * block) ==
          std::vector<std::uint64_t>{3, 4});
  }
  SECTION("all of them if need be, never a reader or one holding nothing") {
    CHECK(pick_slow_consumers(holders, 100 * block, 0) == std::vector<std::uint64_t>{3, 4, 1});
  }
  SECTION("nobody when already under the target") {
    CHECK(pick_slow_consumers(holders, 50 * block, 60 * block).empty());
  }
}
