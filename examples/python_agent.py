#!/usr/bin/env python3
"""A program agent for ws-server (json framing), human in the loop.

    ws-server --agent 'assistant=examples/python_agent.py'

stdin, one JSON object a line:
    {"type": "start", "run_id": "r1", "input": "a prompt" | {"prompt": "..."},
     "params": {"delay_ms": 30} | null}
    {"type": "input", "input": "yes" | "no" | {"approve": true | false}}
stdout, one JSON object a line, each a run_event:
    {"kind": "text_delta", "text": "word "}   the answer, word by word
    {"kind": "input_required", "prompt": "Send this answer?", "options": ["yes", "no"]}
    {"kind": "text", "text": "Sent."} or {"kind": "text", "text": "Discarded."}

An answer other than yes/no is asked for again (input_required with an
"error"). A start without a prompt ends the run with exit status 1 (the
reason goes to stderr, the server's log, and to the client as an "error"
event). stdin closed (the run was cancelled) or SIGTERM: exit at once.
"""
import json
import signal
import sys
import time


def emit(**fields):
    # One line per event, flushed: the server sends it to the client as it comes.
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def read_message():
    """The next stdin message, or None once stdin is closed (run cancelled)."""
    line = sys.stdin.readline()
    return json.loads(line) if line else None


def prompt_of(value):
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, dict) and isinstance(value.get("prompt"), str):
        return value["prompt"]
    return None


def decision_of(value):
    """True (send), False (discard) or None (not an answer)."""
    if value in ("yes", "no"):
        return value == "yes"
    if isinstance(value, dict) and isinstance(value.get("approve"), bool):
        return value["approve"]
    return None


def generate(prompt):
    # Your model call goes here; this one answers with the prompt's words.
    return f"You asked: {prompt}".split()


def main():
    # SIGTERM (a cancel, after stdin is closed): leave now, status 143 as a shell would.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    start = read_message()
    if start is None or start.get("type") != "start":
        sys.exit("expected a start line")
    prompt = prompt_of(start.get("input"))
    if prompt is None:
        emit(kind="error", text='input must be a prompt: "..." or {"prompt": "..."}')
        sys.exit("no prompt in the input")
    params = start.get("params") or {}
    delay = params.get("delay_ms", 30) / 1000

    for word in generate(prompt):
        emit(kind="text_delta", text=word + " ")
        time.sleep(delay)

    ask = {"kind": "input_required", "prompt": "Send this answer?", "options": ["yes", "no"]}
    emit(**ask)
    while True:
        message = read_message()
        if message is None:
            return  # cancelled while waiting: nothing sent
        decision = decision_of(message.get("input"))
        if decision is not None:
            break
        emit(**ask, error='answer "yes", "no" or {"approve": true|false}')
    emit(kind="text", text="Sent." if decision else "Discarded.")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(1)  # the server stopped reading: nobody left to tell
