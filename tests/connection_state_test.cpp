// The connection's and its writer's life, step by step, without sockets.
#include <catch2/catch.hpp>

#include "server/connection_state.hpp"

using agentws::detail::connection_phase;
using agentws::detail::connection_state;
using agentws::detail::writer_phase;

TEST_CASE("connection state: before the upgrade no writer starts and the connection may be evicted",
          "[connection_state]") {
  connection_state life;
  CHECK(life.phase() == connection_phase::http);
  CHECK(life.evictable());
  CHECK_FALSE(life.upgraded());
  CHECK_FALSE(life.takes_commands());
  CHECK_FALSE(life.start_writer());  // HTTP owns the socket
  CHECK(life.writer() == writer_phase::stopped);
  // A close before the upgrade has nothing to close gracefully.
  CHECK_FALSE(life.begin_closing());
  CHECK_FALSE(life.begin_slow_consumer_close());
  CHECK_FALSE(life.close());
  CHECK(life.phase() == connection_phase::http);
}

TEST_CASE("connection state: an upgrade takes commands and holds its slot until the end",
          "[connection_state]") {
  connection_state life;
  REQUIRE(life.upgrade());
  CHECK_FALSE(life.upgrade());  // once
  CHECK(life.takes_commands());
  CHECK(life.upgraded());
  CHECK_FALSE(life.evictable());
  CHECK_FALSE(life.closing());
  REQUIRE(life.close());
  CHECK(life.phase() == connection_phase::closed);
  CHECK(life.upgraded());  // the slot is given back when the connection goes
  CHECK_FALSE(life.takes_commands());
  CHECK(life.closing());
}

TEST_CASE("connection state: a failed WebSocket handshake gives its slot back at once",
          "[connection_state]") {
  connection_state life;
  REQUIRE(life.upgrade());
  REQUIRE(life.fail_upgrade());
  CHECK(life.phase() == connection_phase::upgrade_failed);
  CHECK_FALSE(life.upgraded());
  CHECK_FALSE(life.start_writer());
  CHECK_FALSE(life.begin_closing());
  CHECK_FALSE(life.fail_upgrade());
}

TEST_CASE("connection state: a graceful close happens once and stops the commands",
          "[connection_state]") {
  connection_state life;
  life.upgrade();
  REQUIRE(life.begin_closing());
  CHECK_FALSE(life.begin_closing());  // a second shutdown or idle close does nothing
  CHECK_FALSE(life.takes_commands());
  CHECK(life.closing());
  CHECK_FALSE(life.closing_slow_consumer());
  // The writer still drains what is queued, then the close frame.
  CHECK(life.start_writer());
  REQUIRE(life.close());
  CHECK(life.phase() == connection_phase::closed);
}

TEST_CASE("connection state: a slow consumer's close overrides a graceful one and stays",
          "[connection_state]") {
  connection_state life;
  life.upgrade();
  life.begin_closing();
  REQUIRE(life.begin_slow_consumer_close());
  CHECK_FALSE(life.begin_slow_consumer_close());  // once: counted and logged once
  CHECK(life.closing_slow_consumer());
  CHECK_FALSE(life.begin_closing());
  // The reader ending does not make its buffers count again.
  CHECK_FALSE(life.close());
  CHECK(life.phase() == connection_phase::closing_slow_consumer);
  CHECK(life.upgraded());

  connection_state open;
  open.upgrade();
  CHECK(open.begin_slow_consumer_close());
  CHECK_FALSE(open.takes_commands());
}

TEST_CASE(
    "connection state: one writer at a time, restarted after it idles, never after it "
    "finished",
    "[connection_state]") {
  connection_state life;
  life.upgrade();
  REQUIRE(life.start_writer());
  CHECK(life.writer() == writer_phase::running);
  CHECK_FALSE(life.start_writer());  // never two
  life.write_started();
  CHECK(life.write_in_flight());
  CHECK(life.writer() == writer_phase::writing);
  CHECK_FALSE(life.start_writer());
  life.writer_idle();  // only a writer between writes can idle
  CHECK(life.writer() == writer_phase::writing);
  life.write_completed();
  CHECK_FALSE(life.write_in_flight());
  life.writer_idle();
  CHECK(life.writer() == writer_phase::stopped);
  REQUIRE(life.start_writer());  // the next frame queued starts a new one
  life.writer_finished();
  CHECK(life.writer_finished_for_good());
  CHECK_FALSE(life.start_writer());
  life.writer_idle();
  life.write_started();
  CHECK(life.writer() == writer_phase::finished);
}
