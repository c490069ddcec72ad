#!/usr/bin/python3
"""Client in the style of the original teaching module, run as an interop test.

Like the original `websockets` client it starts run-001 and run-002 on one
connection, cancels run-002 after a delay, and prints every event routed by
its run_id. It sends only core commands, so it shows that an unmodified
original-style client works against a server. It then checks what it saw and
exits 0 only if all of this holds:

- the first event is `connected`;
- run-001: run_started, run_events with steps 0..K-1 ("agent step <n>"), run_done;
- run-002: run_started, at least one run_event in step order, run_cancelled;
- nothing arrives for a run after its terminal event, and no errors arrive;
- every event has a `ts` that datetime.fromisoformat parses, ending in +00:00.

Usage: original_client.py [--url ws://localhost:8000/ws] [--cancel-after 2.5]
                          [--expect-steps 5] [--timeout 20]
"""
import argparse
import asyncio
import json
import sys
from datetime import datetime

import websockets

RUNS = ("run-001", "run-002")
TERMINAL = ("run_done", "run_cancelled")
GRACE = 0.5  # seconds to keep listening after both runs ended, to catch stray events


def show(event):
    payload = event.get("payload", {})
    route = payload.get("run_id", "connection")
    print(f"[{route}] {event.get('event_type')}: {json.dumps(payload)}", flush=True)


async def listen(ws, events):
    """Receive and print events until both runs have reached a terminal event."""
    ended = set()
    async for message in ws:
        event = json.loads(message)
        events.append(event)
        show(event)
        if event.get("event_type") in TERMINAL:
            ended.add(event["payload"].get("run_id"))
        if ended.issuperset(RUNS):
            return


async def linger(ws, events):
    """Keep receiving for a short while: nothing more is expected."""
    try:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), GRACE))
            events.append(event)
            show(event)
    except asyncio.TimeoutError:
        pass


async def cancel_later(ws, run_id, delay):
    await asyncio.sleep(delay)
    await ws.send(json.dumps({"command": "cancel_run", "run_id": run_id}))


async def session(args, events):
    async with websockets.connect(args.url) as ws:
        for run_id in RUNS:
            await ws.send(json.dumps({"command": "start_run", "run_id": run_id}))
        canceller = asyncio.create_task(cancel_later(ws, "run-002", args.cancel_after))
        try:
            await listen(ws, events)
        finally:
            canceller.cancel()
        await linger(ws, events)


def check_ts(event):
    ts = event.get("ts")
    if not isinstance(ts, str) or not ts.endswith("+00:00"):
        return f"bad ts {ts!r} in {event.get('event_type')}"
    try:
        datetime.fromisoformat(ts)
    except ValueError:
        return f"unparseable ts {ts!r} in {event.get('event_type')}"
    return None


def check_run(run_id, events, terminal, expect_steps):
    """Check one run's events: run_started, run_events 0..n-1, the terminal event."""
    types = [e.get("event_type") for e in events]
    if not types or types[0] != "run_started":
        return [f"{run_id}: first event is {types[:1]}, expected run_started"]
    if types[-1] != terminal or types.count(terminal) != 1:
        return [f"{run_id}: events {types}, expected to end with exactly one {terminal}"]
    problems = []
    steps = events[1:-1]
    for n, event in enumerate(steps):
        payload = event["payload"]
        if event.get("event_type") != "run_event" or payload.get("step") != n or payload.get("text") != f"agent step {n}":
            problems.append(f"{run_id}: expected run_event step {n}, got {json.dumps(event)}")
            break
    if terminal == "run_done" and len(steps) != expect_steps:
        problems.append(f"{run_id}: {len(steps)} run_events, expected {expect_steps}")
    if terminal == "run_cancelled" and not steps:
        problems.append(f"{run_id}: cancelled before any run_event")
    return problems


def verify(events, expect_steps):
    problems = []
    if not events or events[0].get("event_type") != "connected":
        problems.append("first event is not connected")
    elif events[0].get("payload", {}).get("message") != "Connected":
        problems.append(f"connected payload is {events[0].get('payload')}")
    problems += [p for p in map(check_ts, events) if p]
    by_run = {run_id: [] for run_id in RUNS}
    for event in events[1:]:
        run_id = event.get("payload", {}).get("run_id")
        if event.get("event_type") == "error" or run_id not in by_run:
            problems.append(f"unexpected event {json.dumps(event)}")
        else:
            by_run[run_id].append(event)
    problems += check_run("run-001", by_run["run-001"], "run_done", expect_steps)
    problems += check_run("run-002", by_run["run-002"], "run_cancelled", expect_steps)
    return problems


def main():
    parser = argparse.ArgumentParser(description="Original-style client, run as an interop test.")
    parser.add_argument("--url", default="ws://localhost:8000/ws")
    parser.add_argument("--cancel-after", type=float, default=2.5, help="seconds before cancelling run-002")
    parser.add_argument("--expect-steps", type=int, default=5, help="run_events expected for run-001")
    parser.add_argument("--timeout", type=float, default=20.0, help="overall time limit in seconds")
    args = parser.parse_args()

    events = []
    try:
        asyncio.run(asyncio.wait_for(session(args, events), args.timeout))
    except asyncio.TimeoutError:
        print(f"FAIL: timed out after {args.timeout:g} s", file=sys.stderr)
        return 1
    except (OSError, websockets.WebSocketException, json.JSONDecodeError) as exc:
        print(f"FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    problems = verify(events, args.expect_steps)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("PASS: original-style client scenario")
    return 0


if __name__ == "__main__":
    sys.exit(main())
