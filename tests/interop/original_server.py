#!/usr/bin/python3
"""Server in the style of the original teaching module (core protocol only).

FastAPI + uvicorn, one asyncio task per run kept in a dict run_id -> Task, and
events sent straight from those tasks, as the module this project grew out of
did. It implements exactly the core of the wire protocol (no extensions), so
the project's client and conformance checker can be tested against it.

Usage: original_server.py [--host 127.0.0.1] [--port 8000] [--steps 5] [--interval 1.0]

--steps and --interval (seconds) configure the demo agent so tests can run
fast; the defaults reproduce the original (5 steps, one second apart).
"""
import argparse
import asyncio
import json
from datetime import datetime, timezone

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()
agent = {"steps": 5, "interval": 1.0}  # replaced from the command line


def now():
    return datetime.now(timezone.utc).isoformat()


async def send_event(ws: WebSocket, event_type: str, payload: dict):
    await ws.send_text(json.dumps({"event_type": event_type, "ts": now(), "payload": payload}))


async def fake_agent_run(ws: WebSocket, runs: dict, run_id: str):
    try:
        await send_event(ws, "run_started", {"run_id": run_id})
        for step in range(agent["steps"]):
            await send_event(ws, "run_event", {"run_id": run_id, "step": step, "text": f"agent step {step}"})
            await asyncio.sleep(agent["interval"])
    except asyncio.CancelledError:
        await send_event(ws, "run_cancelled", {"run_id": run_id})
        raise
    # The run is over: from here on a cancel_run for it is refused.
    del runs[run_id]
    await send_event(ws, "run_done", {"run_id": run_id})


async def start_run(ws: WebSocket, runs: dict, run_id: str):
    if run_id in runs:
        await send_event(ws, "error", {"message": "Run already in progress", "run_id": run_id})
        return
    runs[run_id] = asyncio.create_task(fake_agent_run(ws, runs, run_id))


async def cancel_run(ws: WebSocket, runs: dict, run_id: str):
    task = runs.pop(run_id, None)
    if task is None:
        await send_event(ws, "error", {"message": "No active run to cancel", "run_id": run_id})
        return
    task.cancel()
    # Let the run send run_cancelled before the next command is read, so that
    # "cancel_run X" followed at once by "start_run X" starts a fresh run.
    await asyncio.wait([task])


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
            data = json.loads(await ws.receive_text())
            command = data.get("command")
            if command in ("start_run", "cancel_run"):
                run_id = data.get("run_id")
                if not isinstance(run_id, str) or not run_id:
                    await send_event(ws, "error", {"message": "run_id is required"})
                elif command == "start_run":
                    await start_run(ws, runs, run_id)
                else:
                    await cancel_run(ws, runs, run_id)
            else:
                await send_event(ws, "error", {"message": "Unknown command", "received": data})
    except WebSocketDisconnect:
        pass
    finally:
        for task in runs.values():
            task.cancel()
        await asyncio.gather(*runs.values(), return_exceptions=True)


def main():
    parser = argparse.ArgumentParser(description="Original-style agent run server (core protocol).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=5, help="run_events per run (default 5)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between steps (default 1.0)")
    args = parser.parse_args()
    agent.update(steps=args.steps, interval=args.interval)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
