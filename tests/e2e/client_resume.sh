#!/usr/bin/env bash
# ws-client resumes runs across a dropped connection.
#  1. ws-client --reconnect --run a --run b runs through a proxy the test
#     controls (cut_proxy.py); once events were printed the test cuts the
#     connection; the client reconnects to its session, attaches both runs
#     after the last seq it printed, and every step 0..N-1 of each run is
#     printed exactly once, in order, and the summary says done.
#  2. A run started with on_disconnect=continue by a client that is then
#     killed is followed by another: --session KEY --attach RUN@SEQ prints
#     exactly the rest.
# Every wait is on a line in a file, bounded; the cut is sent, not timed.
# Usage: client_resume.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
here=$(cd "$(dirname "$0")" && pwd)
# Debian's python3 runs the proxy (its standard library only).
python=/usr/bin/python3
[[ -x $python ]] || python=$(command -v python3) || {
  echo "skipped: no python3 for the proxy"
  exit 77
}
dir=$(mktemp -d)
out=$dir/out
proxy_pid="" client_pid=""
stop_pid() {
  if [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; then
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
trap 'stop_pid "$client_pid"; stop_pid "$proxy_pid"; stop_server; rm -rf "$dir"' EXIT

fail() {
  echo "FAIL: $*" >&2
  for file in "$out" "$dir/proxy"; do
    echo "  $file:" >&2
    sed 's/^/  | /' "$file" >&2 || true
  done
  exit 1
}

# wait_for FILE PATTERN: until FILE holds PATTERN (an extended regex), at most 10 s.
# (FILE may not exist yet: a process started in the background creates it.)
wait_for() {
  for _ in $(seq 200); do
    grep -qE -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "waited 10 s for /$2/ in $1"
}

# wait_exit PID SECONDS: PID must end within SECONDS; its exit status in $status.
wait_exit() {
  local pid=$1 bound=$2
  for _ in $(seq $((bound * 20))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null && fail "ws-client did not end within $bound s"
  set +e
  wait "$pid"
  status=$?
  set -e
}

# steps_of RUN: the steps printed for RUN, one a line, in output order.
steps_of() {
  sed -n "s/^[^ ]* \[$1\] run_event step=\([0-9]*\) .*/\1/p" "$out"
}

start_server "$server"
"$python" "$here/cut_proxy.py" "$PORT" >"$dir/proxy" 2>&1 &
proxy_pid=$!
wait_for "$dir/proxy" '^listening on [0-9]+$'
proxy_port=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$dir/proxy")

# 1. A cut mid-run.
steps=30
"$client" --url "ws://127.0.0.1:$proxy_port/ws" --reconnect --run a --run b --steps $steps \
  --interval-ms 100 --timeout 40 --color never </dev/null >"$out" 2>&1 &
client_pid=$!
wait_for "$out" '^ws-client: session [^ ]+ '
wait_for "$out" '\[a\] run_event step=4 '
wait_for "$out" '\[b\] run_event step=4 '
kill -USR1 "$proxy_pid"
wait_for "$dir/proxy" '^cut 1$'
wait_exit "$client_pid" 30
client_pid=""
[[ $status -eq 0 ]] || fail "ws-client --reconnect exited $status after the cut, not 0"
grep -qE '^ws-client: connection lost: .*; reconnecting to resume a, b$' "$out" ||
  fail "the drop and the runs to resume are not named"
grep -qE '^ws-client: resuming a after seq [0-9]+$' "$out" || fail "a was not attached again"
grep -qE '^ws-client: resuming b after seq [0-9]+$' "$out" || fail "b was not attached again"
[[ $(grep -c '\] connected Connected$' "$out") -eq 2 ]] || fail "not exactly two connections"
expected=$(seq 0 $((steps - 1)))
for run in a b; do
  [[ $(steps_of $run) == "$expected" ]] ||
    fail "run $run: the steps printed are not 0..$((steps - 1)), each once, in order"
  [[ $(grep -c "\[$run\] run_started$" "$out") -eq 1 ]] || fail "run $run: run_started not once"
  [[ $(grep -c "\[$run\] run_done$" "$out") -eq 1 ]] || fail "run $run: run_done not once"
  grep -qE "^  $run +done +$steps events  ok$" "$out" || fail "run $run: the summary is not done"
done
grep -q 'run_gap' "$out" && fail "a run_gap after a short cut"
grep -qF 'result: every run ended as expected' "$out" || fail "the verdict is not ok"

# 2. Another client follows a run whose client was killed.
mkfifo "$dir/in"
"$client" -i --url "ws://127.0.0.1:$PORT/ws" --color never <"$dir/in" >"$out" 2>&1 &
client_pid=$!
exec {feed}>"$dir/in"
echo "start k steps=$steps interval_ms=100 on_disconnect=continue" >&"$feed"
wait_for "$out" '^ws-client: session [^ ]+ '
wait_for "$out" '\[k\] run_event step=3 '
# Killed, as a crash would: no close frame. (Disowned: the shell's "Killed" is not news.)
disown "$client_pid"
kill -KILL "$client_pid"
for _ in $(seq 200); do
  kill -0 "$client_pid" 2>/dev/null || break
  sleep 0.05
done
client_pid=""
exec {feed}>&-
key=$(sed -n 's/^ws-client: session \([^ ]*\) .*/\1/p' "$out" | head -1)
last=$(steps_of k | tail -1)
seq=$((last + 1)) # run_started is seq 0, step N is seq N + 1
cp "$out" "$dir/first"
set +e
timeout 30 "$client" --url "ws://127.0.0.1:$PORT/ws" --session "$key" --attach "k@$seq" \
  --color never </dev/null >"$out" 2>&1
status=$?
set -e
[[ $status -eq 0 ]] || fail "--session --attach k@$seq exited $status, not 0"
grep -qE '^[^ ]+ \[k\] run_attached state=running last_seq=[0-9]+$' "$out" ||
  fail "no run_attached for k"
[[ $(steps_of k) == "$(seq $((last + 1)) $((steps - 1)))" ]] ||
  fail "after step $last: the steps printed are not exactly the rest"
grep -q '\[k\] run_started' "$out" && fail "run_started of k printed again"
[[ $(grep -c '\[k\] run_done$' "$out") -eq 1 ]] || fail "k: run_done not once"
grep -qE "^  k +done +$((steps - 1 - last)) events  ok$" "$out" || fail "k: the summary is not done"
# A new client without the key does not see the run.
set +e
timeout 10 "$client" --url "ws://127.0.0.1:$PORT/ws" --attach k --color never </dev/null \
  >"$out" 2>&1
status=$?
set -e
[[ $status -eq 1 ]] || fail "another session attached k (exit $status, not 1)"
grep -qE '^  k +refused' "$out" || fail "another session's attach of k is not refused"

echo "client resume: ok"
