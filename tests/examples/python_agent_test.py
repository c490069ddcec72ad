#!/usr/bin/env python3
"""examples/python_agent.py through its pipes, as ws-server runs it (json framing).

Usage: python_agent_test.py PYTHON_AGENT
"""
import signal
import sys
import time

from agent_pipes import Agent, check, fail

AGENT = sys.argv[1]
ASK = {"kind": "input_required", "prompt": "Send this answer?", "options": ["yes", "no"]}


def start(input_value, params=None):
    agent = Agent([AGENT])
    agent.send({"type": "start", "run_id": "r1", "input": input_value,
                "params": {"delay_ms": 0} if params is None else params})
    return agent


def expect_answer(agent, words):
    for word in words:
        event = agent.event()
        check(event == {"kind": "text_delta", "text": word + " "},
              f"text_delta {word!r} expected, got {event}")
    event = agent.event()
    check(event == ASK, f"input_required expected, got {event}")


def expect_end(agent, text):
    event = agent.event()
    check(event == {"kind": "text", "text": text}, f"{text!r} expected, got {event}")
    agent.expect_eof()
    status = agent.wait()
    check(status == 0, f"exit status {status}; stderr: {agent.stderr()}")


def approved_with_yes():
    agent = start("hello big world")
    expect_answer(agent, ["You", "asked:", "hello", "big", "world"])
    agent.send({"type": "input", "input": "yes"})
    expect_end(agent, "Sent.")


def refused_with_no_and_with_approve_false():
    for answer in ("no", {"approve": False}):
        agent = start({"prompt": "two words"})
        expect_answer(agent, ["You", "asked:", "two", "words"])
        agent.send({"type": "input", "input": answer})
        expect_end(agent, "Discarded.")
    agent = start({"prompt": "x"})
    expect_answer(agent, ["You", "asked:", "x"])
    agent.send({"type": "input", "input": {"approve": True}})
    expect_end(agent, "Sent.")


def a_bad_answer_is_asked_again():
    agent = start("x")
    expect_answer(agent, ["You", "asked:", "x"])
    for bad in ("maybe", {"approve": "yes"}, 1, None):
        agent.send({"type": "input", "input": bad})
        event = agent.event()
        check(event.get("kind") == "input_required" and "error" in event,
              f"input_required again with an error expected after {bad!r}, got {event}")
    agent.send({"type": "input", "input": "no"})
    expect_end(agent, "Discarded.")


def a_start_without_a_prompt_fails_with_status_1():
    for bad in (None, "", 42, {"text": "no prompt key"}):
        agent = start(bad)
        event = agent.event()
        check(event.get("kind") == "error", f"an error event expected for {bad!r}, got {event}")
        agent.expect_eof()
        status = agent.wait()
        check(status == 1, f"exit status 1 expected for {bad!r}, got {status}")
        check("prompt" in agent.stderr(), "the reason on stderr")


def the_answer_streams():
    # 300 ms between words: the first word is out long before the last.
    agent = start("a b c", params={"delay_ms": 300})
    first = agent.event(timeout=1)
    arrived = time.monotonic() - agent.started
    check(first["kind"] == "text_delta", f"text_delta expected, got {first}")
    expect_answer(agent, ["asked:", "a", "b", "c"])
    total = time.monotonic() - agent.started
    check(arrived < 1.0 and total >= 1.4,
          f"first word after {arrived:.2f} s, question after {total:.2f} s")
    agent.close_stdin()
    agent.expect_eof()
    agent.wait()


def stdin_closed_while_waiting_ends_quietly():
    agent = start("x")
    expect_answer(agent, ["You", "asked:", "x"])
    agent.close_stdin()  # what a cancel does first
    agent.expect_eof(timeout=2)
    status = agent.wait(timeout=2)
    check(status == 0, f"exit status {status}; stderr: {agent.stderr()}")


def sigterm_ends_it_at_once():
    # While streaming (a word a minute) and while waiting for the answer.
    agent = start("a b c", params={"delay_ms": 60_000})
    agent.event()
    sent = time.monotonic()
    agent.terminate_group()
    status = agent.wait(timeout=2)
    check(status == 128 + signal.SIGTERM, f"exit status {status} after SIGTERM")
    check(time.monotonic() - sent < 2, "prompt exit")

    agent = start("x")
    expect_answer(agent, ["You", "asked:", "x"])
    agent.terminate_group()
    status = agent.wait(timeout=2)
    check(status == 128 + signal.SIGTERM, f"exit status {status} after SIGTERM")
    agent.expect_eof()


def main():
    cases = [approved_with_yes, refused_with_no_and_with_approve_false,
             a_bad_answer_is_asked_again, a_start_without_a_prompt_fails_with_status_1,
             the_answer_streams, stdin_closed_while_waiting_ends_quietly, sigterm_ends_it_at_once]
    for case in cases:
        case()
        print(f"ok: {case.__name__}")


if __name__ == "__main__":
    main()
