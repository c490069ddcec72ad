#!/usr/bin/env bash
# SIGTERM while runs stream: every run gets run_cancelled with reason
# "shutdown", the server exits 0 within about a second.
# Usage: graceful_shutdown.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2

start_server "$server" --interval-ms 60000 --log-level debug --log-format json
out=$(mktemp)
"$client" --url "ws://127.0.0.1:$PORT/ws" --run a --run b --json --timeout 20 >"$out" 2>/dev/null &
client_pid=$!
for _ in $(seq 100); do
  [[ $(grep -c '"run_event"' "$out") -ge 2 ]] && break
  sleep 0.05
done
[[ $(grep -c '"run_event"' "$out") -ge 2 ]] || { echo "runs did not start" >&2; exit 1; }

start=$(date +%s%N)
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"; server_status=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
SERVER_PID=""
set +e
wait "$client_pid"
set -e
cat "$out"
[[ $server_status -eq 0 ]] || { echo "server exited $server_status" >&2; exit 1; }
(( elapsed_ms < 1500 )) || { echo "shutdown took ${elapsed_ms} ms" >&2; exit 1; }
[[ $(grep -c '"event_type": "run_cancelled".*"reason": "shutdown"' "$out") -eq 2 ]]
# --log-format json: every log line is one JSON object, connection ids split out.
/usr/bin/python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$SERVER_LOG"
grep -q '"msg":"all connections closed"' "$SERVER_LOG"
grep -q '"conn":[0-9]*,"msg":"run a started"' "$SERVER_LOG"
echo "graceful shutdown: ok (${elapsed_ms} ms)"
