"""A server process started on a free port and a WebSocket client for it
(Debian's python3-websockets). Every wait is bounded."""
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import websockets

TIMEOUT = 10


def fail(message):
    sys.exit(f"FAIL: {message}")


def check(condition, message):
    if not condition:
        fail(message)


class Server:
    """argv must make the server listen on port 0 and log
    "listening on ws://HOST:PORT/ws" to stdout or stderr."""

    def __init__(self, argv, cwd=None):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            match = re.search(r"listening on ws://[^ ]+:(\d+)/ws", self.text())
            if match:
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        fail(f"{argv[0]} did not start:\n{self.text()}")

    def text(self):
        with open(self.log.name) as log:
            return log.read()

    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self):
        """SIGTERM, then its exit status within the timeout."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            fail(f"server still running {TIMEOUT} s after SIGTERM:\n{self.text()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def remove_log(self):
        os.unlink(self.log.name)


class Client:
    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def connect(cls, url):
        ws = await asyncio.wait_for(websockets.connect(url, close_timeout=2), TIMEOUT)
        client = cls(ws)
        client.connected = await client.event()
        check(client.connected["event_type"] == "connected", f"connected first: {client.connected}")
        return client

    async def send(self, **command):
        await self.ws.send(json.dumps(command))

    async def event(self, timeout=TIMEOUT):
        try:
            return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        except asyncio.TimeoutError:
            fail(f"no event within {timeout} s")

    async def expect(self, event_type, **payload):
        """The next event: of this type, its payload holding these fields."""
        event = await self.event()
        check(event["event_type"] == event_type, f"{event_type} expected, got {event}")
        for key, value in payload.items():
            check(event["payload"].get(key) == value,
                  f"{event_type} with {key} = {value!r} expected, got {event}")
        return event["payload"]

    async def agent_events(self, run_id, until_kind):
        """run_event payloads of run_id up to and including the first of
        kind until_kind, steps checked in order."""
        events = []
        while True:
            payload = await self.expect("run_event", run_id=run_id)
            check(payload["step"] == len(events), f"step {len(events)} expected, got {payload}")
            events.append(payload)
            if payload.get("kind") == until_kind:
                return events

    async def close(self):
        await self.ws.close()
