#!/usr/bin/env bash
# ws-server with a program agent that ignores SIGTERM: on the server's
# SIGTERM the run gets run_cancelled at once, and the server exits only once
# the process group is gone (SIGKILL at the end of --kill-grace-ms), leaving
# nothing behind. Also: the agent is configured from --agent, named in
# connected, and a second process of it past --max-processes is refused.
# Usage: program_shutdown.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1

dir=$(mktemp -d)
cleanup() { stop_server; rm -rf "$dir"; }
trap cleanup EXIT
# Prints its pid and its grandchild's, then waits, deaf to SIGTERM.
cat >"$dir/stubborn.sh" <<'SCRIPT'
#!/bin/sh
trap '' TERM
sleep 1000 &
echo "$$ $!"
while :; do wait; done
SCRIPT
chmod +x "$dir/stubborn.sh"

start_server "$server" --agent "stubborn=$dir/stubborn.sh" --kill-grace-ms 800 --max-processes 1
out="$dir/client.out"
/usr/bin/python3 - "$PORT" >"$out" <<'PY' &
import asyncio, json, sys
import websockets

async def main(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        connected = json.loads(await ws.recv())
        names = [a["name"] for a in connected["payload"]["agents"]]
        assert "stubborn" in names, names
        await ws.send(json.dumps({"command": "start_run", "run_id": "s", "agent": "stubborn"}))
        await ws.send(json.dumps({"command": "start_run", "run_id": "t", "agent": "stubborn"}))
        while True:
            event = json.loads(await ws.recv())
            print(json.dumps(event), flush=True)
            if event["event_type"] == "run_cancelled":
                break
        await ws.wait_closed()

asyncio.run(main(int(sys.argv[1])))
PY
client_pid=$!
for _ in $(seq 100); do
  grep -q '"run_event"' "$out" && break
  sleep 0.05
done
pids=$(/usr/bin/python3 -c 'import json,sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event_type"] == "run_event": print(e["payload"]["text"])' "$out")
[[ -n $pids ]] || { echo "the run did not start"; cat "$out" "$SERVER_LOG"; exit 1; }
grep -q '"code": "too_many_processes"' "$out" || { echo "no too_many_processes"; cat "$out"; exit 1; }

start=$(date +%s%N)
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"; server_status=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
SERVER_PID=""
# The server is gone: so are the leader and its grandchild (reaped).
for pid in $pids; do
  if kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
    echo "process $pid outlived the server"; exit 1
  fi
done
wait "$client_pid" || true
[[ $server_status -eq 0 ]] || { echo "server exited $server_status"; cat "$SERVER_LOG"; exit 1; }
grep -q '"reason": "shutdown"' "$out" || { echo "no run_cancelled"; cat "$out"; exit 1; }
# It waited for the SIGKILL at the end of the grace, not less.
(( elapsed_ms >= 750 )) || { echo "exited after ${elapsed_ms} ms, before the grace"; exit 1; }
(( elapsed_ms < 5000 )) || { echo "shutdown took ${elapsed_ms} ms"; exit 1; }
echo "program agent shutdown: ok (${elapsed_ms} ms)"
