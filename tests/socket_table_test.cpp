// The socket table: every accepted socket counted against one limit, the
// oldest pre-upgrade socket closed for room, a cap per address.
#include <catch2/catch.hpp>

#include "server/socket_table.hpp"

using agentws::detail::socket_limits;
using agentws::detail::socket_table;
using verdict = socket_table::verdict;

TEST_CASE("socket table: admits up to the limit, then evicts the oldest pre-upgrade socket",
          "[sockets]") {
  socket_table table(socket_limits{3, 0});
  for (std::uint64_t id = 1; id <= 3; ++id) {
    const auto answer = table.admit(id, "10.0.0.1");
    CHECK(answer.outcome == verdict::admitted);
    CHECK(answer.evict == 0);
  }
  CHECK(table.open() == 3);

  const auto fourth = table.admit(4, "10.0.0.2");
  CHECK(fourth.outcome == verdict::admitted);
  CHECK(fourth.evict == 1);
  CHECK(table.open() == 3);  // never more than the limit
  CHECK(table.from("10.0.0.1") == 2);

  // The evicted socket is closing until its own close, which changes
  // nothing else.
  CHECK(table.closing() == 1);
  table.release(1);
  CHECK(table.closing() == 0);
  CHECK(table.open() == 3);
  CHECK(table.admit(5, "10.0.0.2").evict == 2);

  // An evicted socket that upgraded before its close stays open: kept, it
  // no longer counts as closing.
  CHECK(table.closing() == 1);
  table.kept(2);
  CHECK(table.closing() == 0);
  table.release(2);  // its close, much later, changes nothing
  CHECK(table.open() == 3);
}

TEST_CASE("socket table: upgraded sockets are never evicted; full of them, new ones are refused",
          "[sockets]") {
  socket_table table(socket_limits{2, 0});
  REQUIRE(table.admit(1, "a").outcome == verdict::admitted);
  REQUIRE(table.admit(2, "a").outcome == verdict::admitted);
  table.upgraded(1);
  CHECK(table.pre_upgrade() == 1);

  // Room is made from the pre-upgrade one (2), not the older WebSocket (1).
  const auto third = table.admit(3, "b");
  CHECK(third.outcome == verdict::admitted);
  CHECK(third.evict == 2);
  table.upgraded(3);

  const auto fourth = table.admit(4, "c");
  CHECK(fourth.outcome == verdict::refused_full);
  CHECK(fourth.evict == 0);
  CHECK(table.open() == 2);

  table.release(1);  // a WebSocket closed: its slot is free again
  CHECK(table.admit(4, "c").outcome == verdict::admitted);
  CHECK(table.open() == 2);
}

TEST_CASE("socket table: the per-address cap counts every socket of that address", "[sockets]") {
  socket_table table(socket_limits{100, 2});
  CHECK(table.admit(1, "10.0.0.1").outcome == verdict::admitted);
  CHECK(table.admit(2, "10.0.0.1").outcome == verdict::admitted);
  table.upgraded(2);
  CHECK(table.admit(3, "10.0.0.1").outcome == verdict::refused_address);
  CHECK(table.admit(4, "10.0.0.2").outcome == verdict::admitted);  // others unaffected
  table.release(2);
  CHECK(table.from("10.0.0.1") == 1);
  CHECK(table.admit(5, "10.0.0.1").outcome == verdict::admitted);
  CHECK(table.from("10.0.0.1") == 2);
}

TEST_CASE("socket table: an address refused by its cap never evicts another's socket",
          "[sockets]") {
  socket_table table(socket_limits{2, 1});
  REQUIRE(table.admit(1, "a").outcome == verdict::admitted);
  REQUIRE(table.admit(2, "b").outcome == verdict::admitted);
  const auto answer = table.admit(3, "a");
  CHECK(answer.outcome == verdict::refused_address);
  CHECK(answer.evict == 0);
  CHECK(table.open() == 2);
  CHECK(table.pre_upgrade() == 2);
}

TEST_CASE("socket table: release and upgrade of unknown ids are ignored; a limit of 0 means 1",
          "[sockets]") {
  socket_table table(socket_limits{0, 0});
  CHECK(table.limits().max_sockets == 1);
  table.release(42);
  table.upgraded(42);
  CHECK(table.open() == 0);
  CHECK(table.admit(1, "a").outcome == verdict::admitted);
  table.upgraded(1);
  table.upgraded(1);  // twice is once
  table.release(1);
  CHECK(table.open() == 0);
  CHECK(table.pre_upgrade() == 0);
  CHECK(table.from("a") == 0);
}

TEST_CASE("socket table: room is made from the address that holds the most pre-upgrade sockets",
          "[sockets]") {
  socket_table table(socket_limits{4, 0});
  REQUIRE(table.admit(1, "client").outcome == verdict::admitted);  // the oldest of all
  REQUIRE(table.admit(2, "flood").outcome == verdict::admitted);
  REQUIRE(table.admit(3, "flood").outcome == verdict::admitted);
  REQUIRE(table.admit(4, "flood").outcome == verdict::admitted);

  // The flood's own oldest goes, not the client's older handshake.
  CHECK(table.admit(5, "flood").evict == 2);
  CHECK(table.admit(6, "flood").evict == 3);
  CHECK(table.from("client") == 1);

  // Once the flood holds no more than the client, the oldest of the tied goes.
  table.upgraded(4);
  table.upgraded(5);
  CHECK(table.pre_upgrade() == 2);  // 1 (client) and 6 (flood)
  const auto next = table.admit(7, "other");
  CHECK((next.evict == 1 || next.evict == 6));
  CHECK(table.open() == 4);
}
