#!/usr/bin/env bash
# ws-server's command line, option by option: every bad value of every
# numeric option is refused at once (exit 2, a message naming the option, the
# value and the range, nothing listened on), as are bad token files, hosts and
# origins; values at the edges of the ranges start and serve a run, and a
# token file with two named owners lets both in (and nobody else).
# Usage: server_options.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
out=$(mktemp)
dir=$(mktemp -d)
trap 'stop_server; rm -rf "$dir" "$out"' EXIT
failures=0

fail() {
  echo "FAIL: $*" >&2
  sed 's/^/  | /' "$out" >&2
  failures=$((failures + 1))
}

# expect_refused WANT ARGS...: ws-server ARGS exits 2 by itself within 2 s,
# without listening, and its message holds WANT.
expect_refused() {
  local want=$1 status start elapsed_ms
  shift
  start=$(date +%s%N)
  set +e
  timeout 5 "$server" "$@" >"$out" 2>&1
  status=$?
  set -e
  elapsed_ms=$((($(date +%s%N) - start) / 1000000))
  if [[ $status -ne 2 ]]; then
    fail "ws-server $(printf '%q ' "$@")exited $status, not 2"
  elif ! grep -qF -- "$want" "$out"; then
    fail "ws-server $(printf '%q ' "$@")did not say: $want"
  elif grep -q 'listening on' "$out"; then
    fail "ws-server $(printf '%q ' "$@")listened before refusing"
  elif ((elapsed_ms > 2000)); then
    fail "ws-server $(printf '%q ' "$@")took ${elapsed_ms} ms to refuse"
  fi
}

# Every numeric option: name, min, max, then values outside its range.
ranges=(
  "port 0 65535 65536 99999"
  "threads 1 1024 0 1025"
  "steps 0 10000000 10000001"
  "interval-ms 0 3600000 3600001"
  "max-connections 1 1048576 0 1048577"
  "max-runs 1 65536 0 65537"
  "max-message-bytes 4096 67108864 0 4095 67108865"
  "max-run-id-bytes 1 65536 0 65537"
  "max-steps 1 9007199254740991 0 9007199254740992"
  "max-interval-ms 0 86400000 86400001"
  "outbox-bytes 4096 67108864 0 4095 67108865"
  "write-chunk-bytes 1024 16777216 0 1023 16777217"
  "notsent-lowat-bytes 0 67108864 67108865"
  "memory-budget 0 1099511627776 1099511627777"
  "memory-budget-grace-ms 100 600000 0 99 600001"
  "socket-send-buffer 0 67108864 67108865"
  "handshake-timeout-ms 100 600000 0 99 600001"
  "idle-timeout-ms 1000 86400000 0 999 86400001"
  "send-timeout-ms 1000 86400000 0 999 86400001"
  "shutdown-grace-ms 100 600000 0 99 600001"
)
# Refused by every one of them: signs (Program_options wraps them into huge
# unsigned numbers), junk, suffixes, blanks, other notations, past 2^64.
common_bad=(-1 -3 abc 1x "" " 5" 5.0 1e3 0x10 18446744073709551616)
rows=0
for row in "${ranges[@]}"; do
  read -r option min max extra <<<"$row"
  for value in "${common_bad[@]}" $extra; do
    port_args=(--port 0)
    [[ $option == port ]] && port_args=()
    expect_refused "--$option: '$value' is not an integer from $min to $max" \
      "${port_args[@]}" "--$option" "$value"
    rows=$((rows + 1))
  done
  # --option=VALUE reads the same, an empty one too.
  expect_refused "--$option: '-1' is not an integer from $min to $max" "--$option=-1"
  expect_refused "--$option: '' is not an integer from $min to $max" "--$option="
  rows=$((rows + 2))
done

# Options that bound others, whichever comes first.
expect_refused "--steps: '4' is not an integer from 0 to 3 (at most --max-steps)" \
  --steps 4 --max-steps 3
expect_refused "--steps: '4' is not an integer from 0 to 3 (at most --max-steps)" \
  --max-steps 3 --steps 4
expect_refused "--interval-ms: '11' is not an integer from 0 to 10 (at most --max-interval-ms)" \
  --interval-ms 11 --max-interval-ms 10
expect_refused "--max-run-id-bytes: '5000' is not an integer from 1 to 4096 (at most --max-message-bytes)" \
  --max-run-id-bytes 5000 --max-message-bytes 4096
# Every problem at once, one line each.
expect_refused "--max-runs: '0' is not an integer from 1 to 65536" --max-runs 0 --threads 0
grep -qF -- "--threads: '0' is not an integer from 1 to 1024" "$out" || fail "second problem not listed"

# The token file: missing, a directory, empty, a blank first line, unreadable.
expect_refused "--token-file $dir/missing: no such file" --port 0 --token-file "$dir/missing"
expect_refused "--token-file $dir: is a directory, not a file" --port 0 --token-file "$dir"
: >"$dir/empty"
expect_refused "--token-file $dir/empty: the file is empty" --port 0 --token-file "$dir/empty"
printf '\n\n' >"$dir/blank"
expect_refused "--token-file $dir/blank: the first line is empty" --port 0 --token-file "$dir/blank"
expect_refused "--token-file: the path is empty" --port 0 --token-file ""
if [[ $(id -u) -ne 0 ]]; then  # root reads any file
  echo secret >"$dir/locked"
  chmod 000 "$dir/locked"
  expect_refused "--token-file $dir/locked: cannot be read: Permission denied" \
    --port 0 --token-file "$dir/locked"
fi
# The named form: a bad line is refused by its number, and the token is never shown.
printf 'alice:tok-alice-1\nbob:tok-alice-1\n' >"$dir/same-token"
expect_refused "--token-file $dir/same-token: line 2: the token of 'bob' is also the token of 'alice' (line 1)" \
  --port 0 --token-file "$dir/same-token"
grep -q 'tok-alice' "$out" && fail "a refused token file showed a token"
printf 'alice:tok-alice-1\nbare-secret-line\n' >"$dir/no-name"
expect_refused "--token-file $dir/no-name: line 2 is not name:token" --port 0 --token-file "$dir/no-name"
grep -q 'secret' "$out" && fail "a refused token file showed a line"

# Two owners, one token each: both connect and run, a wrong token gets 401.
printf '# owners of runs\nalice:tok-alice-1\n\nbob:tok-bob-2\n' >"$dir/named"
start_server "$server" --token-file "$dir/named"
for token in tok-alice-1 tok-bob-2; do
  timeout 10 "$client" --url "ws://127.0.0.1:$PORT/ws" --token "$token" --run a --steps 1 \
    --interval-ms 0 --json >"$out" 2>&1 || fail "a run with a named token"
  grep -q '"event_type": "run_done"' "$out" || fail "no run_done with a named token"
done
set +e
timeout 10 "$client" --url "ws://127.0.0.1:$PORT/ws" --token tok-carol-3 --run c </dev/null >"$out" 2>&1
status=$?
set -e
[[ $status -eq 3 ]] && grep -qF '401 Unauthorized' "$out" || fail "a wrong token was not refused with 401"
grep -q 'tokens for 2 owners: alice, bob' "$SERVER_LOG" || fail "the owners are not logged"
grep -q 'tok-' "$SERVER_LOG" && fail "the server log shows a token"
stop_server

# Hosts: a name that cannot resolve (RFC 6761: .invalid never does), a port in it.
expect_refused "--host nosuchhost.invalid: cannot resolve this name: " \
  --port 0 --host nosuchhost.invalid
expect_refused "the port goes in --port" --port 0 --host 127.0.0.1:8000
expect_refused "--host: '' is not an address or a name" --port 0 --host ""

# Origins: scheme://host[:port], nothing else.
for origin in example.com localhost:3000 https://example.com/ https://example.com/app \
  "https://example.com:" https://example.com:443 null; do
  expect_refused "--allow-origin: '$origin' is not an origin (scheme://host[:port]): " \
    --port 0 --allow-origin "$origin"
done

# Words that are not options.
expect_refused "positional" 8000
expect_refused "--no-such-option" --no-such-option

# At the edges: the smallest values serve a run (the defaults of --steps and
# --interval-ms lowered to their maximums, as announced in `connected`) ...
echo s3cret >"$dir/token"
start_server "$server" --threads 1 --max-connections 1 --max-runs 1 --max-message-bytes 4096 \
  --max-run-id-bytes 1 --max-steps 1 --max-interval-ms 0 --outbox-bytes 4096 \
  --write-chunk-bytes 1024 --notsent-lowat-bytes 0 --memory-budget 1 --memory-budget-grace-ms 100 \
  --socket-send-buffer 0 --handshake-timeout-ms 1000 --idle-timeout-ms 1000 --send-timeout-ms 1000 \
  --shutdown-grace-ms 100 --token-file "$dir/token" --allow-origin '*' --allow-origin https://app.example.com:8443 \
  --host localhost
"$client" --url "ws://127.0.0.1:$PORT/ws" --token s3cret --run a --json >"$out" 2>&1 ||
  fail "a run against the smallest limits"
grep -qF '"max_steps": 1, "max_interval_ms": 0' "$out" || fail "limits not announced"
grep -qF '"defaults": {"steps": 1, "interval_ms": 0}' "$out" || fail "defaults not lowered"
grep -q '"event_type": "run_done"' "$out" || fail "no run_done at the smallest limits"
stop_server

# ... the largest too ...
start_server "$server" --threads 1024 --max-connections 1048576 --max-runs 65536 \
  --max-message-bytes 67108864 --max-run-id-bytes 65536 --max-steps 9007199254740991 \
  --steps 9007199254740991 --max-interval-ms 86400000 --interval-ms 86400000 \
  --outbox-bytes 67108864 --write-chunk-bytes 16777216 --notsent-lowat-bytes 67108864 \
  --memory-budget 1099511627776 --memory-budget-grace-ms 600000 --socket-send-buffer 67108864 \
  --handshake-timeout-ms 600000 --idle-timeout-ms 86400000 --send-timeout-ms 86400000 \
  --shutdown-grace-ms 600000
"$client" --url "ws://127.0.0.1:$PORT/ws" --run b --steps 2 --interval-ms 0 --json >"$out" 2>&1 ||
  fail "a run against the largest limits"
grep -qF '"defaults": {"steps": 9007199254740991, "interval_ms": 86400000}' "$out" ||
  fail "largest defaults not announced"
stop_server

# ... and the ports at both ends (65535 may be taken: then the bind fails, exit 1).
start_server "$server" --handshake-timeout-ms 100
stop_server
"$server" --port 65535 >"$out" 2>&1 &
pid=$!
for _ in $(seq 100); do
  grep -q 'listening on\|cannot listen' "$out" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if grep -q 'listening on ws://127.0.0.1:65535/ws' "$out"; then
  kill -TERM "$pid"
  wait "$pid" || fail "--port 65535 did not stop cleanly"
else
  set +e
  wait "$pid"
  status=$?
  set -e
  [[ $status -eq 1 ]] && grep -q 'cannot listen on 127.0.0.1:65535' "$out" ||
    fail "--port 65535 exited $status"
fi

if ((failures > 0)); then
  echo "server options: $failures failed" >&2
  exit 1
fi
echo "server options: ok ($rows range rows and the rest)"
