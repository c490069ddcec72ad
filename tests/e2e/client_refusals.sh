#!/usr/bin/env bash
# What ws-client says when the server says no or goes away: a refused upgrade
# (401 with the --token hint, 403, 404, 503) names the HTTP status, exit 3; a
# close the server sends first (1001 at its shutdown) is named, exit 3;
# --header and --origin reach the upgrade request.
# Usage: client_refusals.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
dir=$(mktemp -d)
out=$dir/out
holder=""
trap '[[ -n $holder ]] && kill "$holder" 2>/dev/null; stop_server; rm -rf "$dir"' EXIT

fail() {
  echo "FAIL: $*" >&2
  sed 's/^/  | /' "$out" >&2
  exit 1
}

# expect_exit STATUS TEXT ARGS...: ws-client ARGS exits STATUS within 10 s and
# says TEXT (a fixed string).
expect_exit() {
  local want=$1 text=$2 status
  shift 2
  set +e
  timeout 10 "$client" --color never "$@" </dev/null >"$out" 2>&1
  status=$?
  set -e
  [[ $status -eq $want ]] || fail "ws-client $*: exited $status, not $want"
  grep -qF -- "$text" "$out" || fail "ws-client $*: did not say: $text"
}

echo s3cret >"$dir/token"
start_server "$server" --interval-ms 1 --token-file "$dir/token" --max-connections 1 \
  --allow-origin https://app.example.com
url="ws://127.0.0.1:$PORT/ws"
unset AGENTWS_TOKEN

expect_exit 3 "server refused the WebSocket upgrade: 401 Unauthorized (the server wants a token: pass it with --token or AGENTWS_TOKEN)" \
  --url "$url" --run a
expect_exit 3 "server refused the WebSocket upgrade: 401 Unauthorized (the token sent was not accepted" \
  --url "$url" --run a --token wrong
expect_exit 3 "server refused the WebSocket upgrade: 403 Forbidden" \
  --url "$url" --run a --token s3cret --origin https://evil.example.com
expect_exit 3 "server refused the WebSocket upgrade: 404 Not Found" \
  --url "ws://127.0.0.1:$PORT/nope" --run a --token s3cret
# -i says the same, and --reconnect does not retry a 401.
expect_exit 3 "server refused the WebSocket upgrade: 401 Unauthorized" --url "$url" -i --reconnect
grep -q 'retrying' "$out" && fail "--reconnect retried a 401"

# --header and --origin go into the upgrade request: the token as a header,
# an origin the server allows.
expect_exit 0 "result: every run ended as expected" --url "$url" --run h --steps 1 \
  --header "Authorization: Bearer s3cret" --origin https://app.example.com

# 503 at --max-connections: one connection held open by a client in -i mode.
mkfifo "$dir/in"
"$client" -i --url "$url" --token s3cret <"$dir/in" >"$dir/holder.out" 2>&1 &
holder=$!
exec {feed}>"$dir/in"
for _ in $(seq 200); do
  grep -q 'connected to' "$dir/holder.out" && break
  sleep 0.05
done
grep -q 'connected to' "$dir/holder.out" || fail "the holding client did not connect"
expect_exit 3 "server refused the WebSocket upgrade: 503 Service Unavailable" \
  --url "$url" --run a --token s3cret
exec {feed}>&-
wait "$holder" || fail "the holding client did not end cleanly at end of input"
holder=""
stop_server

# The server stops while runs stream: its 1001 close is named, exit 3 (not 1),
# in scenario mode and in -i alike.
start_server "$server" --interval-ms 100
url="ws://127.0.0.1:$PORT/ws"
timeout 10 "$client" --url "$url" --run a --steps 1000 --color never >"$out" 2>&1 &
scenario_pid=$!
mkfifo "$dir/in2"
timeout 10 "$client" -i --url "$url" --color never <"$dir/in2" >"$dir/interactive.out" 2>&1 &
interactive_pid=$!
exec {feed}>"$dir/in2"
echo 'start b steps=1000' >&"$feed"
for _ in $(seq 200); do
  grep -q '\[a\] run_event' "$out" && grep -q '\[b\] run_event' "$dir/interactive.out" && break
  sleep 0.05
done
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=""
set +e
wait "$scenario_pid"
scenario_status=$?
wait "$interactive_pid"
interactive_status=$?
set -e
exec {feed}>&-
[[ $scenario_status -eq 3 ]] || fail "scenario: exited $scenario_status after the server's 1001, not 3"
grep -qF 'server closed the connection (1001 server shutdown)' "$out" ||
  fail "scenario: the close is not named"
cp "$dir/interactive.out" "$out"
[[ $interactive_status -eq 3 ]] || fail "-i: exited $interactive_status after the server's 1001, not 3"
grep -qF 'server closed the connection (1001 server shutdown)' "$out" || fail "-i: the close is not named"

echo "client refusals: ok"
