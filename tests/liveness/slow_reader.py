#!/usr/bin/env python3
"""A standard client reading slowly keeps its connection.

Debian's python3-websockets answers pings by itself and sends none of its
own here, so the server sees nothing from it but pongs. It reads a 1 ms
stream at about half the rate the run produces, with --idle-timeout-ms
6000: the stream backs up, and a ping, when one goes out, waits behind
everything buffered. The client must keep its connection for the whole run
(about 20 s) and get every event in order.

Usage: slow_reader.py WS_SERVER
"""
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

STEPS = 10_000  # 10 s at 1 ms; read at about 500 a second: about 20 s
READ_PAUSE = 0.002


def start_server(binary):
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [binary, "--port", "0", "--threads", "1", "--idle-timeout-ms", "6000",
         "--log-level", "info"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = open(log.name).read()
        match = re.search(r"listening on ws://[^:]+:(\d+)/ws", text)
        if match:
            return proc, int(match.group(1)), log.name
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    sys.exit("server did not start:\n" + open(log.name).read())


async def follow(port):
    began = time.monotonic()
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", ping_interval=None,
                                  close_timeout=5) as ws:
        connected = json.loads(await ws.recv())
        assert connected["event_type"] == "connected", connected
        await ws.send(json.dumps({"command": "start_run", "run_id": "slow",
                                  "params": {"steps": STEPS, "interval_ms": 1}}))
        next_step = 0
        while True:
            try:
                event = json.loads(await ws.recv())
            except websockets.ConnectionClosed as closed:
                sys.exit(f"connection closed after {time.monotonic() - began:.1f} s "
                         f"at step {next_step} of {STEPS}: code {closed.code} {closed.reason!r}")
            kind = event["event_type"]
            if kind == "run_event":
                step = event["payload"]["step"]
                if step != next_step:
                    sys.exit(f"step {step} where {next_step} was due")
                next_step += 1
            elif kind == "run_done":
                break
            elif kind != "run_started":
                sys.exit(f"unexpected event: {event}")
            await asyncio.sleep(READ_PAUSE)
        if next_step != STEPS:
            sys.exit(f"run_done after {next_step} of {STEPS} steps")
    return time.monotonic() - began


def main():
    proc, port, log = start_server(sys.argv[1])
    try:
        seconds = asyncio.run(asyncio.wait_for(follow(port), timeout=90))
        print(f"ok: {STEPS} events read in {seconds:.1f} s with --idle-timeout-ms 6000, "
              "connection kept")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(open(log).read()[-2000:])
        os.unlink(log)


if __name__ == "__main__":
    main()
