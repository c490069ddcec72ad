#!/usr/bin/python3
"""Conformance checker for the agent run WebSocket protocol (version 1).

Exercises every row of the protocol against a running server and prints one
line per check: `PASS name`, `FAIL name: why` or `SKIP name: why`, then a final
line `N passed, N failed`. Exits 1 if any check failed. Skipped checks are not
counted.

Usage: conformance.py --url ws://127.0.0.1:8000/ws [--core-only] [--interval-ms-hint MS]

--core-only         check only the core protocol (what the original module
                    implements); extension checks are printed as SKIP. Runs
                    then use the server's default demo agent, whose step count
                    is learnt by observing run_done.
--interval-ms-hint  the server's default pause between steps in milliseconds
                    (default 1000); in --core-only mode it sizes the timeouts
                    and the quiet period after a cancel.

Without --core-only the server must support the `params` extension: runs are
made short (or deliberately long, to cancel them between steps) with it, so a
full check takes a few seconds. Every event received by any check is also
validated: envelope, `ts` format, per-run ordering (run_started, run_events in
step order, one terminal event, nothing after it), and in full mode an error
`code` on every error. Needs only the Python standard library and `websockets`.
"""
import argparse
import asyncio
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime

import websockets

EVENT_TYPES = {"connected", "run_started", "run_event", "run_done", "run_cancelled", "error"}
TERMINAL = ("run_done", "run_cancelled")
ERROR_CODES = {
    "invalid_json", "invalid_command", "missing_run_id", "invalid_run_id", "invalid_request_id",
    "unknown_command", "run_already_active", "run_not_active", "invalid_params", "too_many_runs",
    "unsupported_frame",
}
TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00")
PROMPT_CANCEL = 1.0  # seconds within which run_cancelled must follow cancel_run
MISSING = object()  # marks a field left out of a command

# `params` used when extensions are allowed (ignored in --core-only mode).
SHORT = {"steps": 3, "interval_ms": 20}
LONG = {"steps": 3, "interval_ms": 60_000}  # waits a minute after step 0: cancel hits between steps
PROBE = {"steps": 1, "interval_ms": 0}


class CheckFailed(Exception):
    pass


class Skipped(Exception):
    pass


def describe(event):
    return json.dumps({"event_type": event["event_type"], "payload": event["payload"]})


def is_event(event_type, run_id=None):
    def match(event):
        return event["event_type"] == event_type and (run_id is None or event["payload"].get("run_id") == run_id)
    return match


def same_json(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class Settings:
    def __init__(self, args):
        self.url = args.url
        self.core_only = args.core_only
        interval = args.interval_ms_hint / 1000 if args.core_only else 0.05
        self.step_timeout = interval + 2.0  # longest wait for the next event of a running run
        self.quiet = max(0.3, 1.5 * interval) if args.core_only else 0.3
        self.check_timeout = 30.0 + 20 * interval


class Client:
    """One connection. Validates every event it receives and tracks each run's state."""

    def __init__(self, ws, settings):
        self.ws = ws
        self.settings = settings
        self.active = {}  # run_id -> next expected step, for runs between run_started and terminal
        self.hello = None  # payload of the connected event
        self.probes = 0

    @classmethod
    async def open(cls, settings):
        try:
            ws = await websockets.connect(settings.url, open_timeout=5, close_timeout=2, compression=None)
        except asyncio.TimeoutError:
            raise CheckFailed("no WebSocket handshake within 5 s") from None
        client = cls(ws, settings)
        try:
            event = await client.recv(5.0, "the connected event")
            if event["event_type"] != "connected":
                raise CheckFailed(f"first frame is not connected: {describe(event)}")
        except CheckFailed:
            await ws.close()
            raise
        client.hello = event["payload"]
        return client

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.ws.close()

    async def send(self, message):
        """Send a dict as JSON text, or a str/bytes frame as is."""
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def start(self, run_id, params, **fields):
        command = {"command": "start_run", "run_id": run_id, **fields}
        if not self.settings.core_only:
            command["params"] = params
        await self.send(command)

    async def cancel(self, run_id, **fields):
        await self.send({"command": "cancel_run", "run_id": run_id, **fields})

    async def recv(self, timeout, what):
        """Receive and validate one event; fail if none arrives within timeout."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise CheckFailed(f"no {what} within {timeout:g} s") from None
        except websockets.ConnectionClosed as exc:
            raise CheckFailed(f"connection closed (code {exc.code}) while waiting for {what}") from None
        event = self.validate(raw)
        self.track(event)
        return event

    async def wait_for(self, what, match, timeout=None):
        """Receive until an event matches; run_events (order-checked by track) may come in between."""
        deadline = time.monotonic() + (timeout or self.settings.step_timeout)
        while True:
            event = await self.recv(max(0.0, deadline - time.monotonic()), what)
            if match(event):
                return event
            if event["event_type"] != "run_event":
                raise CheckFailed(f"expected {what}, got {describe(event)}")

    async def expect_quiet(self, duration):
        """Fail if any event arrives within duration."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), duration)
        except asyncio.TimeoutError:
            return
        raise CheckFailed(f"unexpected event {describe(self.validate(raw))}")

    async def expect_error(self, message, timeout=None, **fields):
        """Wait for an error event with this message and these payload fields."""
        event = await self.wait_for(f"error {message!r}", is_event("error"), timeout)
        payload = event["payload"]
        if payload.get("message") != message:
            raise CheckFailed(f"expected error {message!r}, got {describe(event)}")
        for key, value in fields.items():
            if not same_json(payload.get(key), value):
                raise CheckFailed(f"error payload.{key} is {payload.get(key)!r}, expected {value!r}")
        return payload

    async def expect_code(self, codes, timeout=None):
        """Wait for an error event whose code is one of codes."""
        event = await self.wait_for(f"error with code {'/'.join(sorted(codes))}", is_event("error"), timeout)
        if event["payload"].get("code") not in codes:
            raise CheckFailed(f"expected code {'/'.join(sorted(codes))}, got {describe(event)}")
        return event["payload"]

    async def run_to_end(self, run_id):
        """Follow a started run to run_done; return its number of run_events."""
        await self.wait_for(f"run_started for {run_id}", is_event("run_started", run_id))
        steps = 0
        while True:
            event = await self.wait_for(f"next event of {run_id}", lambda e: e["payload"].get("run_id") == run_id)
            if event["event_type"] == "run_done":
                return steps
            if event["event_type"] != "run_event":
                raise CheckFailed(f"expected run_event or run_done, got {describe(event)}")
            steps += 1

    async def stop(self, run_id):
        """Cancel a run that may be about to end on its own; wait until it has ended."""
        await self.cancel(run_id)
        event = await self.wait_for(f"terminal event of {run_id}",
                                    lambda e: e["event_type"] in TERMINAL and e["payload"].get("run_id") == run_id)
        if event["event_type"] == "run_done":
            await self.expect_error("No active run to cancel", run_id=run_id)

    async def probe(self):
        """Show that the connection still works: a short run (started, then cancelled in core mode)."""
        self.probes += 1
        run_id = f"probe-{self.probes}"
        await self.start(run_id, PROBE)
        if not self.settings.core_only:
            await self.run_to_end(run_id)
            return
        await self.wait_for(f"run_started for {run_id}", is_event("run_started", run_id))
        event = await self.wait_for(f"first event of {run_id}", lambda e: e["payload"].get("run_id") == run_id)
        if event["event_type"] == "run_event":
            await self.stop(run_id)
        elif event["event_type"] != "run_done":
            raise CheckFailed(f"expected run_event or run_done, got {describe(event)}")

    def validate(self, raw):
        """Check one frame's envelope and return the event."""
        if not isinstance(raw, str):
            raise CheckFailed("server sent a binary frame")
        try:
            event = json.loads(raw)
        except ValueError:
            raise CheckFailed(f"server sent invalid JSON: {raw[:200]!r}") from None
        if not isinstance(event, dict):
            raise CheckFailed(f"server sent a non-object: {raw[:200]!r}")
        if event.get("event_type") not in EVENT_TYPES:
            raise CheckFailed(f"unknown event_type in {raw[:200]}")
        if not isinstance(event.get("payload"), dict):
            raise CheckFailed(f"payload is not an object in {raw[:200]}")
        ts = event.get("ts")
        if not isinstance(ts, str) or not TS_RE.fullmatch(ts):
            raise CheckFailed(f"bad ts {ts!r} in {raw[:200]}")
        try:
            datetime.fromisoformat(ts)
        except ValueError:
            raise CheckFailed(f"unparseable ts {ts!r}") from None
        if event["event_type"] == "error":
            payload = event["payload"]
            if not isinstance(payload.get("message"), str):
                raise CheckFailed(f"error without a string message: {raw[:200]}")
            if not self.settings.core_only and payload.get("code") not in ERROR_CODES:
                raise CheckFailed(f"error without a known string code: {raw[:200]}")
        return event

    def track(self, event):
        """Enforce the per-run ordering guarantees."""
        event_type, payload = event["event_type"], event["payload"]
        if event_type == "connected":
            if self.hello is not None:
                raise CheckFailed("second connected event")
            return
        if event_type == "error":
            return
        run_id = payload.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise CheckFailed(f"{event_type} without payload.run_id")
        if event_type == "run_started":
            if run_id in self.active:
                raise CheckFailed(f"run_started for {run_id}, which is already running")
            self.active[run_id] = 0
        elif run_id not in self.active:
            raise CheckFailed(f"{describe(event)} for a run that is not running")
        elif event_type == "run_event":
            step = self.active[run_id]
            if type(payload.get("step")) is not int or payload["step"] != step:
                raise CheckFailed(f"{run_id}: expected step {step}, got {describe(event)}")
            if payload.get("text") != f"agent step {step}":
                raise CheckFailed(f"{run_id}: bad text in {describe(event)}")
            self.active[run_id] = step + 1
        else:
            del self.active[run_id]


# ---------------------------------------------------------------- core checks

async def check_connected_first(s):
    async with await Client.open(s) as c:
        if c.hello.get("message") != "Connected":
            raise CheckFailed(f"connected payload.message is {c.hello.get('message')!r}")


async def check_health(s):
    url = urllib.parse.urlsplit(s.url)
    scheme = "https" if url.scheme == "wss" else "http"
    health = urllib.parse.urlunsplit((scheme, url.netloc, "/health", "", ""))

    def get():
        with urllib.request.urlopen(health, timeout=5) as response:
            return response.status, response.read()

    status, body = await asyncio.to_thread(get)
    if status != 200:
        raise CheckFailed(f"GET {health} answered {status}")
    try:
        answer = json.loads(body)
    except ValueError:
        raise CheckFailed(f"GET {health} body is not JSON: {body[:200]!r}") from None
    if answer != {"ok": True}:
        raise CheckFailed(f"GET {health} body is {body[:200]!r}")


async def check_run_lifecycle(s):
    async with await Client.open(s) as c:
        await c.start("run-1", SHORT)
        steps = await c.run_to_end("run-1")
        if not s.core_only and steps != SHORT["steps"]:
            raise CheckFailed(f"{steps} run_events, expected {SHORT['steps']}")


async def check_cancel_between_steps(s):
    async with await Client.open(s) as c:
        await c.start("run-1", LONG)
        await c.wait_for("run_started", is_event("run_started", "run-1"))
        await c.wait_for("run_event step 0", is_event("run_event", "run-1"))
        await c.cancel("run-1")
        await c.wait_for("run_cancelled", is_event("run_cancelled", "run-1"), PROMPT_CANCEL)
        await c.expect_quiet(s.quiet)


async def check_cancel_then_start_burst(s):
    async with await Client.open(s) as c:
        await c.start("run-1", LONG)
        await c.wait_for("run_started", is_event("run_started", "run-1"))
        await c.wait_for("run_event step 0", is_event("run_event", "run-1"))
        await c.cancel("run-1")
        await c.start("run-1", SHORT)  # sent at once, without waiting for run_cancelled
        await c.wait_for("run_cancelled", is_event("run_cancelled", "run-1"))
        await c.wait_for("run_started of the fresh run", is_event("run_started", "run-1"))
        await c.wait_for("step 0 of the fresh run", is_event("run_event", "run-1"))
        if s.core_only:
            await c.stop("run-1")
        else:
            await c.wait_for("run_done of the fresh run", is_event("run_done", "run-1"))


async def check_reuse_after_done(s):
    async with await Client.open(s) as c:
        counts = []
        for _ in range(2):
            await c.start("run-1", SHORT)
            counts.append(await c.run_to_end("run-1"))
        if counts[0] != counts[1]:
            raise CheckFailed(f"run_events per run: {counts}")


async def check_parallel_runs_interleave(s):
    params = {"steps": 3, "interval_ms": 50}
    async with await Client.open(s) as c:
        await c.start("run-a", params)
        await c.start("run-b", params)
        steps = {"run-a": 0, "run-b": 0}
        ended = set()
        while len(ended) < 2:
            event = await c.recv(s.step_timeout, "events of run-a and run-b")
            run_id = event["payload"].get("run_id")
            if run_id not in steps or event["event_type"] in ("error", "run_cancelled"):
                raise CheckFailed(f"unexpected {describe(event)}")
            if event["event_type"] == "run_event":
                steps[run_id] += 1
            elif event["event_type"] == "run_done":
                if not ended and min(steps.values()) == 0:
                    raise CheckFailed(f"{run_id} ended before both runs had events: {steps}")
                ended.add(run_id)


async def check_duplicate_start(s):
    async with await Client.open(s) as c:
        await c.start("run-1", LONG)
        await c.wait_for("run_started", is_event("run_started", "run-1"))
        await c.start("run-1", LONG)
        await c.expect_error("Run already in progress", run_id="run-1")
        await c.stop("run-1")  # the first run was not disturbed
        await c.probe()


async def check_cancel_unknown(s):
    async with await Client.open(s) as c:
        await c.cancel("no-such-run")
        await c.expect_error("No active run to cancel", run_id="no-such-run")
        await c.probe()


def run_id_required(command, run_id):
    async def check(s):
        async with await Client.open(s) as c:
            message = {"command": command}
            if run_id is not MISSING:
                message["run_id"] = run_id
            await c.send(message)
            await c.expect_error("run_id is required")
            await c.probe()
    return check


def unknown_command(message):
    async def check(s):
        async with await Client.open(s) as c:
            await c.send(message)
            await c.expect_error("Unknown command", received=message)
            await c.probe()
    return check


# ----------------------------------------------------------- extension checks

async def check_error_codes(s):
    cases = [
        ({"command": "start_run"}, {"missing_run_id"}),
        ({"command": "cancel_run", "run_id": ""}, {"missing_run_id", "invalid_run_id"}),
        ({"command": "start_run", "run_id": 42}, {"missing_run_id", "invalid_run_id"}),
        ({"command": "cancel_run", "run_id": "no-such-run"}, {"run_not_active"}),
        ({"command": "pause_run", "run_id": "run-1"}, {"unknown_command"}),
        ({"run_id": "run-1"}, {"unknown_command", "invalid_command"}),
        ({"command": "cancel_run", "run_id": "run-1", "request_id": 7}, {"invalid_request_id"}),
    ]
    async with await Client.open(s) as c:
        for message, codes in cases:
            await c.send(message)
            try:
                await c.expect_code(codes)
            except CheckFailed as exc:
                raise CheckFailed(f"{json.dumps(message)}: {exc}") from None
        await c.start("run-1", LONG)
        await c.wait_for("run_started", is_event("run_started", "run-1"))
        await c.start("run-1", LONG)
        await c.expect_code({"run_already_active"})
        await c.stop("run-1")


async def check_invalid_json(s):
    async with await Client.open(s) as c:
        await c.send('{"command": "start_run", "run_id": ')
        await c.expect_code({"invalid_json"})
        await c.probe()


async def check_non_object_json(s):
    async with await Client.open(s) as c:
        for text in ('["start_run", "run-1"]', '"start_run"', "42"):
            await c.send(text)
            try:
                await c.expect_code({"invalid_command"})
            except CheckFailed as exc:
                raise CheckFailed(f"{text}: {exc}") from None
        await c.probe()


async def check_binary_frame(s):
    async with await Client.open(s) as c:
        await c.send(json.dumps({"command": "start_run", "run_id": "run-1"}).encode())
        await c.expect_code({"unsupported_frame"})
        await c.probe()


async def check_params_honoured(s):
    async with await Client.open(s) as c:
        await c.start("run-1", {"steps": 2, "interval_ms": 10})
        steps = await c.run_to_end("run-1")
        if steps != 2:
            raise CheckFailed(f"{steps} run_events, expected 2")


async def check_params_out_of_bounds(s):
    cases = [
        {"steps": -1, "interval_ms": 10},
        {"steps": 10_000_001, "interval_ms": 10},
        {"steps": 2, "interval_ms": 3_600_001},
        {"steps": "3", "interval_ms": 10},
        {"steps": 1.5, "interval_ms": 10},
    ]
    async with await Client.open(s) as c:
        for params in cases:
            await c.start("run-1", params)
            try:
                await c.expect_code({"invalid_params"})
                await c.probe()  # also shows that run-1 did not start
            except CheckFailed as exc:
                raise CheckFailed(f"params {json.dumps(params)}: {exc}") from None


async def check_params_bounds_accepted(s):
    async with await Client.open(s) as c:
        await c.start("run-1", {"steps": 0, "interval_ms": 0})
        if await c.run_to_end("run-1") != 0:
            raise CheckFailed("steps 0 produced run_events")
        await c.start("run-2", {"steps": 10_000_000, "interval_ms": 3_600_000})
        await c.wait_for("run_started", is_event("run_started", "run-2"))
        await c.wait_for("run_event step 0", is_event("run_event", "run-2"))
        await c.cancel("run-2")
        await c.wait_for("run_cancelled", is_event("run_cancelled", "run-2"), PROMPT_CANCEL)


async def check_request_id_echo(s):
    async with await Client.open(s) as c:
        await c.start("run-1", LONG, request_id="req-start")
        event = await c.wait_for("run_started", is_event("run_started", "run-1"))
        if event["payload"].get("request_id") != "req-start":
            raise CheckFailed(f"run_started without the request_id: {describe(event)}")
        await c.cancel("run-1", request_id="req-cancel")
        event = await c.wait_for("run_cancelled", is_event("run_cancelled", "run-1"))
        if event["payload"].get("request_id") != "req-cancel":
            raise CheckFailed(f"run_cancelled without the request_id: {describe(event)}")
        await c.cancel("run-1", request_id="req-error")
        await c.expect_error("No active run to cancel", run_id="run-1", request_id="req-error")


async def check_cancel_reason_client(s):
    async with await Client.open(s) as c:
        await c.start("run-1", LONG)
        await c.wait_for("run_started", is_event("run_started", "run-1"))
        await c.cancel("run-1")
        event = await c.wait_for("run_cancelled", is_event("run_cancelled", "run-1"))
        if event["payload"].get("reason") != "client":
            raise CheckFailed(f"run_cancelled reason is {event['payload'].get('reason')!r}, expected 'client'")


async def check_cancel_fast_stream(s):
    async with await Client.open(s) as c:
        await c.start("run-1", {"steps": 10_000_000, "interval_ms": 0})
        await c.wait_for("run_started", is_event("run_started", "run-1"))
        while c.active.get("run-1", 0) < 100:
            await c.wait_for("run_event", is_event("run_event", "run-1"))
        await c.cancel("run-1")
        await c.wait_for("run_cancelled", is_event("run_cancelled", "run-1"), 5.0)
        await c.expect_quiet(s.quiet)


async def check_oversize_message(s):
    async with await Client.open(s) as c:
        limits = c.hello.get("limits")
        limit = limits.get("max_message_bytes") if isinstance(limits, dict) else None
        if type(limit) is not int or limit <= 0:
            raise Skipped("connected payload announces no limits.max_message_bytes")
        head = '{"command": "start_run", "run_id": "run-1", "pad": "'
        try:
            # limit + 1 bytes of valid JSON; the server may close while it is
            # still being sent, which is as good an answer as after.
            await c.send(head + "x" * (limit + 1 - len(head) - 2) + '"}')
            raw = await asyncio.wait_for(c.ws.recv(), 5.0)
        except asyncio.TimeoutError:
            raise CheckFailed("connection still open 5 s after an oversize message") from None
        except websockets.ConnectionClosed:
            pass
        else:
            raise CheckFailed(f"got {raw[:200]!r} instead of a close")
        if c.ws.close_code != 1009:
            raise CheckFailed(f"close code {c.ws.close_code}, expected 1009")


CHECKS = [
    # (name, is an extension check, coroutine function taking the settings)
    ("connected_first", False, check_connected_first),
    ("health", False, check_health),
    ("run_lifecycle", False, check_run_lifecycle),
    ("cancel_between_steps", False, check_cancel_between_steps),
    ("cancel_then_start_burst", False, check_cancel_then_start_burst),
    ("reuse_after_done", False, check_reuse_after_done),
    ("parallel_runs_interleave", False, check_parallel_runs_interleave),
    ("duplicate_start", False, check_duplicate_start),
    ("cancel_unknown", False, check_cancel_unknown),
    *[
        (f"run_id_required/{command}/{label}", False, run_id_required(command, run_id))
        for command in ("start_run", "cancel_run")
        for label, run_id in (("missing", MISSING), ("empty", ""), ("number", 42), ("null", None))
    ],
    ("unknown_command", False, unknown_command({"command": "pause_run", "run_id": "run-1"})),
    ("missing_command", False, unknown_command({"run_id": "run-1"})),
    ("error_codes", True, check_error_codes),
    ("invalid_json", True, check_invalid_json),
    ("non_object_json", True, check_non_object_json),
    ("binary_frame", True, check_binary_frame),
    ("params_honoured", True, check_params_honoured),
    ("params_out_of_bounds", True, check_params_out_of_bounds),
    ("params_bounds_accepted", True, check_params_bounds_accepted),
    ("request_id_echo", True, check_request_id_echo),
    ("cancel_reason_client", True, check_cancel_reason_client),
    ("cancel_fast_stream", True, check_cancel_fast_stream),
    ("oversize_message", True, check_oversize_message),
]


async def run_checks(settings):
    passed = failed = 0
    for name, extension, check in CHECKS:
        if extension and settings.core_only:
            print(f"SKIP {name}: extension (--core-only)", flush=True)
            continue
        try:
            await asyncio.wait_for(check(settings), settings.check_timeout)
        except Skipped as exc:
            print(f"SKIP {name}: {exc}", flush=True)
            continue
        except CheckFailed as exc:
            why = str(exc)
        except asyncio.TimeoutError:
            why = f"timed out after {settings.check_timeout:g} s"
        except (OSError, websockets.WebSocketException) as exc:
            why = f"{type(exc).__name__}: {exc}"
        else:
            print(f"PASS {name}", flush=True)
            passed += 1
            continue
        print(f"FAIL {name}: {why}", flush=True)
        failed += 1
    print(f"{passed} passed, {failed} failed")
    return failed


def main():
    parser = argparse.ArgumentParser(description="Conformance checker for the agent run WebSocket protocol.")
    parser.add_argument("--url", required=True, help="WebSocket URL, e.g. ws://127.0.0.1:8000/ws")
    parser.add_argument("--core-only", action="store_true", help="check only the core protocol")
    parser.add_argument("--interval-ms-hint", type=float, default=1000.0, metavar="MS",
                        help="server's default pause between steps in ms, for --core-only timeouts (default 1000)")
    args = parser.parse_args()
    return 1 if asyncio.run(run_checks(Settings(args))) else 0


if __name__ == "__main__":
    sys.exit(main())
