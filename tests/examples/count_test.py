#!/usr/bin/env python3
"""examples/count.sh through its pipes, as ws-server runs it in text framing:
the input as one raw line on stdin, every stdout line an event's text.

Usage: count_test.py COUNT_SH
"""
import signal
import sys
import time

from agent_pipes import Agent, check

COUNT = sys.argv[1]


def run(input_line, delay="0"):
    agent = Agent([COUNT, delay])
    if input_line is not None:
        agent.write(input_line)
    agent.close_stdin()  # accepts-input = false: stdin closed after the input
    return agent


def lines_until_eof(agent):
    lines = []
    while (line := agent.line()) is not None:
        lines.append(line)
    return lines


def counts_to_its_input():
    agent = run("3")
    lines = lines_until_eof(agent)
    check(lines == ["1", "2", "3"], f"1 2 3 expected, got {lines}")
    check(agent.wait() == 0, "exit status 0")


def no_input_counts_to_5():
    agent = run(None)
    lines = lines_until_eof(agent)
    check(lines == ["1", "2", "3", "4", "5"], f"1..5 expected, got {lines}")
    check(agent.wait() == 0, "exit status 0")


def a_bad_count_is_status_2():
    for bad in ("x", "-1", "3 4", "1001", '"3"'):
        agent = run(bad)
        lines = lines_until_eof(agent)
        status = agent.wait()
        check(lines == [] and status == 2, f"{bad!r}: {lines}, status {status}")


def one_line_per_delay():
    agent = run("3", delay="0.3")
    first = agent.line(timeout=1)
    arrived = time.monotonic() - agent.started
    rest = lines_until_eof(agent)
    total = time.monotonic() - agent.started
    check([first] + rest == ["1", "2", "3"], f"1 2 3 expected, got {[first] + rest}")
    check(arrived < 0.25 and total >= 0.85, f"first line after {arrived:.2f} s, end after {total:.2f} s")
    check(agent.wait() == 0, "exit status 0")


def sigterm_to_the_group_ends_it():
    agent = run("1000", delay="60")
    check(agent.line() == "1", "the first line")
    agent.terminate_group()  # the shell and its sleep
    status = agent.wait(timeout=2)
    check(status == -signal.SIGTERM, f"killed by SIGTERM expected, got status {status}")
    check(agent.line(timeout=2) is None, "stdout closed (the sleep is gone too)")


def main():
    for case in (counts_to_its_input, no_input_counts_to_5, a_bad_count_is_status_2,
                 one_line_per_delay, sigterm_to_the_group_ends_it):
        case()
        print(f"ok: {case.__name__}")


if __name__ == "__main__":
    main()
