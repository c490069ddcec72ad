#!/usr/bin/env bash
# The real ws-client against the real ws-server: the original scenario (with
# shorter intervals), checked from the client's exit status and its output.
# Usage: client_vs_server.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2

start_server "$server" --interval-ms 100 --log-level info
out=$(mktemp)
"$client" --url "ws://127.0.0.1:$PORT/ws" --cancel run-002@0.25 --color never >"$out" 2>&1 || {
  echo "ws-client failed (exit $?):" >&2; cat "$out" >&2; exit 1; }
cat "$out"
grep -qE '^[0-9T:.+-]{32} \[run-001\] run_event step=4 agent step 4$' "$out"
grep -qE '\[run-001\] run_done$' "$out"
grep -qE '\[run-002\] run_cancelled reason=client$' "$out"
grep -q 'result: every run ended as expected' "$out"

# --json prints one raw JSON event per line and nothing else on stdout.
"$client" --url "ws://127.0.0.1:$PORT/ws" --run solo --steps 3 --interval-ms 1 --json \
  >"$out" 2>/dev/null
[[ $(wc -l <"$out") -eq 6 ]]  # connected, run_started, 3 run_event, run_done
# (Not `! grep`: set -e ignores a negated command's status.)
if grep -v '^{"event_type": ' "$out" >&2; then
  echo "--json printed lines that are not events (above)" >&2; exit 1
fi

# A run expected to be cancelled that finishes first is reported, exit 1.
set +e
"$client" --url "ws://127.0.0.1:$PORT/ws" --run quick --steps 1 --interval-ms 1 \
  --cancel quick@5 >"$out" 2>&1
status=$?
set -e
[[ $status -eq 1 ]] || { echo "expected exit 1, got $status" >&2; cat "$out" >&2; exit 1; }
grep -q 'expected cancelled' "$out"

# Interactive mode, piped: commands from stdin, exit once the runs have ended.
printf 'start p1 steps=2 interval_ms=1\nstart p2 steps=50 interval_ms=20\ncancel p2\nlist\n' |
  "$client" --url "ws://127.0.0.1:$PORT/ws" --interactive --color never >"$out" 2>&1
grep -qE '\[p1\] run_done$' "$out"
grep -qE '\[p2\] run_cancelled reason=client$' "$out"

# Nobody listening: exit 3.
stop_server
set +e
"$client" --url "ws://127.0.0.1:$PORT/ws" >"$out" 2>&1
status=$?
set -e
[[ $status -eq 3 ]] || { echo "expected exit 3, got $status" >&2; cat "$out" >&2; exit 1; }
echo "end-to-end: ok"
