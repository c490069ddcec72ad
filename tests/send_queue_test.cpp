// The send queue's decisions, step by step and without a socket: which frame
// goes out when, what a cancel takes back, and per-run order across lanes.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "common/send_queue.hpp"

using agentws::detail::frame_tag;
using agentws::detail::send_queue;

namespace {

auto text(std::string value) {
  return [value = std::move(value)](std::string& out) { out.append(value); };
}

// Everything take() hands out with this budget, in order.
std::vector<std::string> take_all(send_queue& queue, std::size_t budget = 1 << 20) {
  std::vector<std::string> out;
  queue.take(budget, [&out](std::string_view frame) { out.emplace_back(frame); });
  return out;
}

using frames = std::vector<std::string>;

}  // namespace

TEST_CASE("answers go ahead of queued events", "[protocol]") {
  send_queue queue;
  queue.push_event(text("e1"), {1, true});
  queue.push_event(text("e2"), {2, true});
  queue.push_answer(text("a1"));
  queue.push_event(text("e3"), {1, true});
  queue.push_answer(text("a2"));
  CHECK(queue.answer_frames() == 2);
  CHECK(take_all(queue) == frames{"a1", "a2", "e1", "e2", "e3"});
  CHECK(queue.empty());
}

TEST_CASE("take hands out whole frames up to its budget, at least one", "[protocol]") {
  send_queue queue;
  for (const char* frame : {"aaaa", "bbbb", "cccc", "dddd"})
    queue.push_event(text(frame), {1, true});
  CHECK(take_all(queue, 6) == frames{"aaaa", "bbbb"});  // stops once 6 bytes are reached
  CHECK(take_all(queue, 1) == frames{"cccc"});
  // An answer queued meanwhile overtakes the events still waiting.
  queue.push_answer(text("answer"));
  CHECK(take_all(queue, 1) == frames{"answer"});
  CHECK(take_all(queue, 1) == frames{"dddd"});
  CHECK(take_all(queue).empty());
}

TEST_CASE("answers are not bounded by the budget", "[protocol]") {
  send_queue queue;
  queue.push_answer(text("first answer"));
  queue.push_answer(text("second answer"));
  queue.push_event(text("event"), {1, true});
  const auto taken = queue.take(4, [](std::string_view) {});
  CHECK(taken.answers == 2);
  CHECK(taken.frames == 2);  // the event waits: the budget was spent
  CHECK(take_all(queue) == frames{"event"});
}

TEST_CASE("a cancel takes back its run's queued events and nothing else", "[protocol]") {
  send_queue queue;
  queue.push_event(text("r1-0"), {1, true});
  queue.push_event(text("r2-0"), {2, true});
  queue.push_event(text("r1-1"), {1, true});
  // The first two are now in the batch being handed out, one of them taken.
  CHECK(take_all(queue, 1) == frames{"r1-0"});
  queue.push_event(text("r1-2"), {1, true});
  queue.push_event(text("r2-1"), {2, true});
  queue.push_event(text("r2-done"), {2, false});
  CHECK(queue.drop_events_of(1) == 2);  // r1-1 from the batch, r1-2 from the lane
  CHECK_FALSE(queue.holds_events_of(1));
  CHECK(queue.holds_events_of(2));
  CHECK(take_all(queue) == frames{"r2-0", "r2-1", "r2-done"});
}

TEST_CASE("a run's frames that are not droppable stay queued", "[protocol]") {
  send_queue queue;
  queue.push_event(text("r1-done"), {1, false});
  queue.push_event(text("r1-0"), {1, true});
  CHECK(queue.drop_events_of(1) == 1);
  CHECK(queue.holds_events_of(1));
  CHECK(take_all(queue) == frames{"r1-done"});
  CHECK(queue.drop_events_of(1) == 0);
}

TEST_CASE("an answer about a run with frames queued waits behind them", "[protocol]") {
  send_queue queue;
  // Run 1 (id "x") ended by itself; its last event and run_done are queued.
  queue.push_event(text("x#1 step"), {1, true});
  queue.push_event(text("x#1 done"), {1, false});
  queue.push_event(text("y step"), {3, true});
  // A new run 2 of id "x" starts: its run_started waits behind run 1.
  queue.push_answer(text("x#2 started"), 1, {2, false});
  // Its cancel then waits behind that run_started; other answers do not.
  CHECK(queue.drop_events_of(2) == 0);
  queue.push_answer(text("x#2 cancelled"), 2, {2, false});
  queue.push_answer(text("unrelated error"));
  CHECK(take_all(queue) == frames{"unrelated error", "x#1 step", "x#1 done", "y step",
                                  "x#2 started", "x#2 cancelled"});
}

TEST_CASE("an answer about a run with nothing queued goes ahead", "[protocol]") {
  send_queue queue;
  queue.push_event(text("y step"), {3, true});
  queue.push_answer(text("x started"), 1, {2, false});  // run 1 has nothing queued
  CHECK(take_all(queue) == frames{"x started", "y step"});
}

TEST_CASE("the generation tells when frames queued earlier have all left", "[protocol]") {
  send_queue queue;
  const auto start = queue.generation();
  queue.push_event(text("a"), {1, false});
  queue.push_event(text("b"), {1, false});
  CHECK(take_all(queue, 1) == frames{"a"});  // refills the batch from the lane
  CHECK(queue.generation() == start + 1);
  queue.push_event(text("c"), {2, false});
  CHECK(take_all(queue, 1) == frames{"b"});  // still the same batch
  CHECK(queue.generation() == start + 1);
  CHECK(take_all(queue, 1) == frames{"c"});
  CHECK(queue.generation() == start + 2);  // everything queued at `start` has left
  CHECK_FALSE(queue.holds_events_of(1));
}

TEST_CASE("producers are bounded by the lane, not by the batch being sent", "[protocol]") {
  send_queue queue;
  queue.push_event(text(std::string(100, 'a')), {1, true});
  queue.push_event(text(std::string(100, 'b')), {1, true});
  CHECK(queue.lane_bytes() == 200);
  queue.take(1, [](std::string_view) {});
  CHECK(queue.lane_bytes() == 0);  // the rest moved to the batch
  CHECK(queue.total_bytes() == 100);
}

TEST_CASE("the queue reuses its memory and gives it back when idle", "[protocol]") {
  send_queue queue;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 100; ++i)
      queue.push_event(text("event"), {1, true});
    CHECK(take_all(queue).size() == 100);
  }
  CHECK(queue.empty());
  queue.release_memory();
  CHECK(queue.empty());
  queue.push_answer(text("after"));
  CHECK(take_all(queue) == frames{"after"});
}
