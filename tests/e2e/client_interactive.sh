#!/usr/bin/env bash
# ws-client -i with piped input: a reused run_id, quit (waits for the runs)
# and quit! (leaves at once), raw frames, --timeout, and end of input after
# --reconnect reconnected (or while it waits to), each bounded by `timeout`.
# Usage: client_interactive.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
dir=$(mktemp -d)
out=$dir/out
client_pid=""
stop_client() {
  if [[ -n $client_pid ]] && kill -0 "$client_pid" 2>/dev/null; then
    kill "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
  fi
}
trap 'stop_client; stop_server; rm -rf "$dir"' EXIT

fail() {
  echo "FAIL: $*" >&2
  sed 's/^/  | /' "$out" >&2
  exit 1
}

# wait_for PATTERN: until $out holds PATTERN (an extended regex), at most 10 s.
wait_for() {
  for _ in $(seq 200); do
    grep -qE -- "$1" "$out" && return 0
    sleep 0.05
  done
  fail "waited 10 s for /$1/"
}

# wait_for_count PATTERN N: until $out holds N lines with PATTERN, at most 10 s.
wait_for_count() {
  for _ in $(seq 200); do
    [[ $(grep -cE -- "$1" "$out") -ge $2 ]] && return 0
    sleep 0.05
  done
  fail "waited 10 s for $2 lines /$1/"
}

# run_piped STATUS BOUND_S INPUT ARGS...: INPUT piped into ws-client -i ARGS
# ends it with STATUS within BOUND_S seconds.
run_piped() {
  local want=$1 bound=$2 input=$3 status
  shift 3
  set +e
  printf '%b' "$input" | timeout "$bound" "$client" -i --url "$url" --color never "$@" >"$out" 2>&1
  status=$?
  set -e
  [[ $status -eq $want ]] || fail "ws-client -i $* <<< '$input' exited $status, not $want"
}

start_server "$server" --interval-ms 100
url="ws://127.0.0.1:$PORT/ws"

# A run_id reused while its run is active: the server refuses the second
# start, the client says so and waits for the first run.
run_piped 0 10 'start r1 steps=3 interval_ms=100\nstart r1 steps=2\n'
grep -qE '\[r1\] error Run already in progress \(run_already_active\)$' "$out" || fail "no refusal"
grep -qF 'r1 goes on: the server refused the command (Run already in progress)' "$out" ||
  fail "the refusal is not explained"
grep -qE '\[r1\] run_event step=2 agent step 2$' "$out" || fail "the first r1 was not waited for"
grep -qE '\[r1\] run_done$' "$out" || fail "no run_done for the first r1"

# quit waits for the started runs; quit! leaves at once.
run_piped 0 10 'start r1 steps=3 interval_ms=100\nlist\nquit\n'
grep -qF 'waiting for 1 run to end (quit! leaves at once)' "$out" || fail "quit did not say it waits"
grep -qE '\[r1\] run_done$' "$out" || fail "quit did not wait for r1"
start=$(date +%s%N)
run_piped 0 10 'start r1 steps=1000 interval_ms=100\nquit!\n'
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
((elapsed_ms < 3000)) || fail "quit! took ${elapsed_ms} ms"
grep -qE '\[r1\] run_done$' "$out" && fail "quit! waited for the run"
run_piped 0 10 'help\n'
grep -qF 'quit!' "$out" || fail "help does not mention quit!"

# raw: any text as one frame; the server's answer is printed, not a failure.
run_piped 0 10 'raw {not json\nraw {"command": "start_run", "run_id": "x", "params": {"steps": 1, "interval_ms": 0}}\n'
grep -qE '\[-\] error Invalid JSON \(invalid_json\)$' "$out" || fail "raw: no error answer"
grep -qE '\[x\] run_done$' "$out" || fail "raw: the start it sent was not waited for"

# --steps and --interval-ms are the defaults of start.
run_piped 0 10 'start d\n' --steps 2 --interval-ms 1
grep -qE '\[d\] run_event step=1 agent step 1$' "$out" || fail "--steps not applied to start"
grep -qE '\[d\] run_event step=2' "$out" && fail "--steps not applied to start"

# --timeout applies to the session: input held open, exit 4 after it.
mkfifo "$dir/in"
exec {hold}<>"$dir/in"  # keeps the fifo open (no end of input)
start=$(date +%s%N)
set +e
timeout 10 "$client" -i --url "$url" --timeout 0.5 <"$dir/in" >"$out" 2>&1
status=$?
set -e
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
exec {hold}>&-
[[ $status -eq 4 ]] || fail "-i --timeout 0.5 exited $status, not 4"
((elapsed_ms < 3000)) || fail "-i --timeout 0.5 took ${elapsed_ms} ms"
grep -qF 'timed out after 500 ms' "$out" || fail "no timeout message"

# --reconnect: the server stops (1001) and comes back on the same port; the
# client reconnects; end of input then ends it (exit 0) at once.
# start_client: ws-client -i --reconnect reading the fifo through fd $feed.
start_client() {
  # Started first (its open of the fifo waits for a writer), so that it does
  # not inherit the writing end: end of input comes when this script closes it.
  timeout 20 "$client" -i --reconnect --url "$url" --color never <"$dir/in" >"$out" 2>&1 &
  client_pid=$!
  exec {feed}>"$dir/in"
}
# finish_client STATUS: closes the input, and the client exits STATUS within 3 s.
finish_client() {
  local want=$1 status
  exec {feed}>&-
  for _ in $(seq 60); do
    kill -0 "$client_pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$client_pid" 2>/dev/null && fail "ws-client did not exit within 3 s of end of input"
  set +e
  wait "$client_pid"
  status=$?
  set -e
  client_pid=""
  [[ $status -eq $want ]] || fail "ws-client -i --reconnect exited $status, not $want"
}

start_client
echo 'start r1 steps=1000' >&"$feed"
wait_for '\[r1\] run_event step=0'
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
wait_for 'server closed the connection \(1001 server shutdown\)'
wait_for 'retrying in'
# The same port again (common.sh's start_server takes a free one). The new
# server must not hold the fifo open: it is not the client's input.
"$server" --interval-ms 100 --port "$PORT" >"$SERVER_LOG" 2>&1 {feed}>&- &
SERVER_PID=$!
for _ in $(seq 200); do
  [[ $(grep -c 'connected to ws://' "$out") -ge 2 ]] && break
  sleep 0.05
done
[[ $(grep -c 'connected to ws://' "$out") -ge 2 ]] || fail "did not reconnect"
echo 'start r2 steps=2 interval_ms=1' >&"$feed"
wait_for '\[r2\] run_done$'
# A run_id reused after its run ended: a new run, steps from 0, waited for
# at the end of input.
echo 'start r2 steps=3 interval_ms=50' >&"$feed"
wait_for_count '\[r2\] run_started$' 2
finish_client 0
[[ $(grep -cE '\[r2\] run_started$' "$out") -eq 2 ]] || fail "the second r2 did not start"
[[ $(grep -cE '\[r2\] run_done$' "$out") -eq 2 ]] || fail "the second r2 was not waited for"
grep -qE '\[r2\] run_event step=2 agent step 2$' "$out" || fail "the second r2 did not run to its end"

# End of input while the server is away: nothing is left to wait for, exit 3
# (the connection was lost) instead of retrying for ever.
start_client
wait_for 'connected to ws://'
stop_server
wait_for 'retrying in'
finish_client 3

echo "client interactive: ok"
