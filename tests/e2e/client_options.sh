#!/usr/bin/env bash
# ws-client's command line, value by value: every bad number, run id, cancel,
# header and origin is refused at once (exit 2, a message naming the option,
# the value and the range or the reason) before anything connects; --version
# names the project's version; the values at the edges of the ranges run.
# Usage: client_options.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
out=$(mktemp)
trap 'stop_server; rm -f "$out"' EXIT
failures=0

fail() {
  echo "FAIL: $*" >&2
  sed 's/^/  | /' "$out" >&2
  failures=$((failures + 1))
}

# A URL nobody listens on: a refusal must come before any attempt to connect.
nobody="ws://127.0.0.1:9/ws"

# expect_refused WANT ARGS...: ws-client ARGS exits 2 by itself within 2 s,
# without connecting, and its message holds WANT.
expect_refused() {
  local want=$1 status start elapsed_ms
  shift
  start=$(date +%s%N)
  set +e
  # A --url given replaces the one nobody listens on.
  local url_args=(--url "$nobody")
  [[ " $* " == *" --url "* ]] && url_args=()
  timeout 5 "$client" "${url_args[@]}" "$@" </dev/null >"$out" 2>&1
  status=$?
  set -e
  elapsed_ms=$((($(date +%s%N) - start) / 1000000))
  if [[ $status -ne 2 ]]; then
    fail "ws-client $(printf '%q ' "$@")exited $status, not 2"
  elif ! grep -qF -- "$want" "$out"; then
    fail "ws-client $(printf '%q ' "$@")did not say: $want"
  elif grep -q 'cannot connect\|connected to' "$out"; then
    fail "ws-client $(printf '%q ' "$@")tried to connect before refusing"
  elif ((elapsed_ms > 2000)); then
    fail "ws-client $(printf '%q ' "$@")took ${elapsed_ms} ms to refuse"
  fi
}

# Every numeric option: name, kind, min, max, then values outside its range.
ranges=(
  "steps integer 0 9007199254740991 -1 9007199254740992 18446744073709551616"
  "interval-ms integer 0 86400000 -5 86400001"
  "timeout number 0.001 31536000 0 -1 nan inf 0.0001 31536001 1e3"
)
common_bad=(abc 1x "" " 5" 0x10)
rows=0
for row in "${ranges[@]}"; do
  read -r option kind min max extra <<<"$row"
  for value in "${common_bad[@]}" $extra; do
    expect_refused "--$option: '$value' is not a$([[ $kind == integer ]] && echo "n") $kind from $min to $max" \
      "--$option" "$value"
    rows=$((rows + 1))
  done
  expect_refused "--$option: '' is not a" "--$option="
  rows=$((rows + 1))
done

# Runs a scenario could never wait for, and cancels of runs not started.
expect_refused "--run: 'a' is given twice" --run a --run a
expect_refused "--run: '': the run_id is empty" --run ""
expect_refused "the run_id is 257 bytes, longer than 256" --run "$(printf 'x%.0s' $(seq 257))"
expect_refused "--cancel: 'b@1': b is not one of the runs started (--run)" --run a --cancel b@1
expect_refused "--cancel: 'run-003@1': run-003 is not one of the runs" --cancel run-003@1
expect_refused "--cancel: 'a@2': a is already cancelled once" --run a --cancel a@1 --cancel a@2
for value in a a@ @1 a@-1 a@nan a@1e1 a@31536001; do
  expect_refused "--cancel: '$value' is not RUN_ID@SECONDS" --run a --cancel "$value"
  rows=$((rows + 1))
done

# Options that do not go together, headers and origins.
expect_refused "with -i, type start, cancel and attach" -i --run a
expect_refused "--attach: 'r@x' is not RUN or RUN@SEQ" --attach r@x
expect_refused "--session: the key is empty" --session ""
expect_refused "--header: 'nocolon' is not 'Name: value'" --header nocolon
expect_refused "--header: 'Upgrade: h2c': Upgrade is set by the WebSocket handshake" \
  --header 'Upgrade: h2c'
expect_refused "--origin: 'example.com' is not an origin" --origin example.com
expect_refused "--color: 'blue' is not auto, always or never" --color blue
expect_refused "--url: 'http://x/ws': the URL must start with ws:// or wss://" --url http://x/ws
expect_refused "--url: 'ws://x:99999/ws': the port must be a number" --url ws://x:99999/ws
# Every problem at once, one line each.
expect_refused "--steps: '-1' is not an integer" --steps -1 --timeout 0
grep -qF -- "--timeout: '0' is not a number from 0.001 to 31536000" "$out" ||
  fail "second problem not listed"

# --version: the project's version.
"$client" --version >"$out" 2>&1 || fail "--version failed"
grep -qE '^ws-client [0-9]+\.[0-9]+\.[0-9]+$' "$out" || fail "--version printed something else"

# At the edges: a run with the smallest numbers, then the largest timeout.
start_server "$server" --interval-ms 1
url="ws://127.0.0.1:$PORT/ws"
"$client" --url "$url" --run e --steps 0 --interval-ms 0 --timeout 31536000 --color never \
  >"$out" 2>&1 || fail "a run at the lower edges"
grep -qF '[e] run_done' "$out" || fail "no run_done at the lower edges"
"$client" --url "$url" --run f --steps 1000 --interval-ms 1 --timeout 5 --cancel f@0 \
  --color never >"$out" 2>&1 || fail "a cancel at 0 s"
# Without a value given, the defaults run (the original scenario, shortened by --cancel).
"$client" --url "$url" --cancel run-002@0 --steps 2 --interval-ms 200 --color never >"$out" 2>&1 ||
  fail "the defaults"

if ((failures > 0)); then
  echo "client options: $failures failed" >&2
  exit 1
fi
echo "client options: ok ($rows range rows and the rest)"
