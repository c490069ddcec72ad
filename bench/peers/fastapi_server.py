#!/usr/bin/python3
"""FastAPI + uvicorn benchmark peer for the agent run protocol.

A straightforward FastAPI implementation, written the way a FastAPI user would
(one json.dumps + send_text per event, one asyncio task per run). It serves
the core protocol plus two extensions: `params` on start_run
({"steps": N, "interval_ms": M}, refused with code "invalid_params" when out of
bounds) and `request_id` echo. Errors carry a `code`. Frames that are not a
JSON object drop the connection, as in the original module.

Usage: fastapi_server.py [--host 127.0.0.1] [--port 8000]
"""
import argparse
import asyncio
import json
from datetime import datetime, timezone

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

DEFAULT_STEPS = 5
DEFAULT_INTERVAL_MS = 1000
MAX_STEPS = 10_000_000
MAX_INTERVAL_MS = 3_600_000

app = FastAPI()


def now():
    return datetime.now(timezone.utc).isoformat()


async def send_event(ws: WebSocket, event_type: str, payload: dict):
    await ws.send_text(json.dumps({"event_type": event_type, "ts": now(), "payload": payload}))


def answer(payload: dict, request_id):
    """Copy the command's request_id, if any, into the payload answering it."""
    if request_id is not None:
        payload["request_id"] = request_id
    return payload


async def send_error(ws: WebSocket, code: str, message: str, request_id, **fields):
    await send_event(ws, "error", answer({"message": message, "code": code, **fields}, request_id))


def bounded_int(params: dict, key: str, default: int, maximum: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"params.{key} must be an integer in 0..{maximum}")
    return value


def parse_params(params) -> tuple[int, float]:
    """Return (steps, interval in seconds); raise ValueError when out of bounds."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError("params must be an object")
    steps = bounded_int(params, "steps", DEFAULT_STEPS, MAX_STEPS)
    interval_ms = bounded_int(params, "interval_ms", DEFAULT_INTERVAL_MS, MAX_INTERVAL_MS)
    return steps, interval_ms / 1000


async def agent_run(ws: WebSocket, runs: dict, run_id: str, steps: int, interval: float, request_id):
    await send_event(ws, "run_started", answer({"run_id": run_id}, request_id))
    for step in range(steps):
        await send_event(ws, "run_event", {"run_id": run_id, "step": step, "text": f"agent step {step}"})
        # With interval 0 this is asyncio.sleep(0): it still yields, so the
        # connection keeps reading commands and a cancel_run gets through.
        await asyncio.sleep(interval)
    # The run is over: from here on a cancel_run for it is refused.
    del runs[run_id]
    await send_event(ws, "run_done", {"run_id": run_id})


async def start_run(ws: WebSocket, runs: dict, data: dict, run_id: str, request_id):
    if run_id in runs:
        await send_error(ws, "run_already_active", "Run already in progress", request_id, run_id=run_id)
        return
    try:
        steps, interval = parse_params(data.get("params"))
    except ValueError as exc:
        await send_error(ws, "invalid_params", str(exc), request_id, run_id=run_id)
        return
    runs[run_id] = asyncio.create_task(agent_run(ws, runs, run_id, steps, interval, request_id))


async def cancel_run(ws: WebSocket, runs: dict, run_id: str, request_id):
    task = runs.pop(run_id, None)
    if task is None:
        await send_error(ws, "run_not_active", "No active run to cancel", request_id, run_id=run_id)
        return
    task.cancel()
    await asyncio.wait([task])
    await send_event(ws, "run_cancelled", answer({"run_id": run_id}, request_id))


async def handle_command(ws: WebSocket, runs: dict, data: dict):
    request_id = data.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        await send_error(ws, "invalid_request_id", "request_id must be a string", None)
        return
    command = data.get("command")
    if command not in ("start_run", "cancel_run"):
        await send_error(ws, "unknown_command", "Unknown command", request_id, received=data)
        return
    run_id = data.get("run_id")
    if not isinstance(run_id, str):
        code = "missing_run_id" if run_id is None else "invalid_run_id"
        await send_error(ws, code, "run_id is required", request_id)
    elif not run_id:
        await send_error(ws, "missing_run_id", "run_id is required", request_id)
    elif command == "start_run":
        await start_run(ws, runs, data, run_id, request_id)
    else:
        await cancel_run(ws, runs, run_id, request_id)


@app.get("/health")
async def health():
    return {"ok": True}


@app.websocket("/ws")
async def websocket_endpoint(ws: WebSocket):
    await ws.accept()
    runs: dict[str, asyncio.Task] = {}
    await send_event(ws, "connected", {"message": "Connected"})
    try:
        while True:
            await handle_command(ws, runs, json.loads(await ws.receive_text()))
    except WebSocketDisconnect:
        pass
    finally:
        for task in runs.values():
            task.cancel()
        await asyncio.gather(*runs.values(), return_exceptions=True)


def main():
    parser = argparse.ArgumentParser(description="FastAPI benchmark peer for the agent run protocol.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
