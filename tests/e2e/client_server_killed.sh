#!/usr/bin/env bash
# The server dies mid-run (SIGKILL: no close frame, no run_cancelled): ws-client
# in scenario mode says the connection was lost, reports every run that had
# not ended as lost (not running), keeps the outcome of runs that had ended,
# and exits 3.
# Usage: client_server_killed.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
dir=$(mktemp -d)
out=$dir/out
client_pid=""
trap '[[ -n $client_pid ]] && kill "$client_pid" 2>/dev/null; stop_server; rm -rf "$dir"' EXIT

fail() {
  echo "FAIL: $*" >&2
  sed 's/^/  | /' "$out" >&2
  exit 1
}

start_server "$server" --interval-ms 50
url="ws://127.0.0.1:$PORT/ws"

# a and c stream for minutes; b is cancelled at once and has ended by the kill.
timeout 20 "$client" --url "$url" --run a --run b --run c --cancel b@0 --steps 100000 \
  --color never </dev/null >"$out" 2>&1 &
client_pid=$!
for _ in $(seq 200); do
  grep -q '\[a\] run_event step=1 ' "$out" && grep -q '\[c\] run_event step=1 ' "$out" &&
    grep -q '\[b\] run_cancelled' "$out" && break
  kill -0 "$client_pid" 2>/dev/null || break
  sleep 0.05
done
grep -q '\[a\] run_event step=1 ' "$out" && grep -q '\[c\] run_event step=1 ' "$out" &&
  grep -q '\[b\] run_cancelled' "$out" || fail "the runs did not stream within 10 s"

kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
set +e
wait "$client_pid"
status=$?
set -e
client_pid=""

[[ $status -ne 124 ]] || fail "ws-client did not end after the server died"
[[ $status -eq 3 ]] || fail "exited $status after the server died, not 3"
grep -q '^ws-client: connection lost' "$out" || fail "the lost connection is not named"
grep -qE '^  a +lost +[0-9]+ events, connection lost  expected done$' "$out" ||
  fail "run a is not reported lost"
grep -qE '^  c +lost +[0-9]+ events, connection lost  expected done$' "$out" ||
  fail "run c is not reported lost"
grep -qE '^  b +cancelled +[0-9]+ events, reason=client  ok$' "$out" ||
  fail "run b, cancelled before the server died, is not reported cancelled"
grep -qE '^  [ac] +running' "$out" && fail "a run is still reported running"
grep -qF 'result: NOT every run ended as expected' "$out" || fail "the verdict is not a failure"

echo "client server killed: ok"
