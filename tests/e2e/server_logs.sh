#!/usr/bin/env bash
# What ws-server logs over its life, in a time zone far from UTC: the
# listening line with the console URL, each WebSocket's open and close at
# info with the peer's address, the summary at the stop, and UTC times in
# text and JSON logs alike.
# Usage: server_logs.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
export TZ=UTC-9  # POSIX: nine hours east of UTC, so local time would show
out=$(mktemp)

# seconds_since_epoch "2026-12-02T07:10:05.343518Z"
seconds_since_epoch() { date -u -d "$(sed 's/\.[0-9]*Z$/Z/' <<<"$1")" +%s; }

# A log time within a minute of now, as UTC.
check_utc() {
  local stamp=$1 now
  now=$(date -u +%s)
  [[ $stamp =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$ ]] ||
    { echo "not a UTC time: $stamp" >&2; return 1; }
  local delta=$((now - $(seconds_since_epoch "$stamp")))
  ((delta >= -60 && delta <= 60)) || { echo "log time $stamp is ${delta} s off UTC" >&2; return 1; }
}

for format in text json; do
  start_server "$server" --interval-ms 1 --log-format "$format"
  "$client" --url "ws://127.0.0.1:$PORT/ws" --run a --steps 2 --color never >"$out" 2>&1 ||
    { echo "ws-client failed:" >&2; cat "$out" >&2; exit 1; }
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID"
  SERVER_PID=""
  cat "$SERVER_LOG"

  if [[ $format == text ]]; then
    grep -qE "^\[[^]]*\] \[info\] listening on ws://127\.0\.0\.1:$PORT/ws, console http://127\.0\.0\.1:$PORT/ " \
      "$SERVER_LOG"
    open=$(sed -n 's/.*\[info\] conn \([0-9]*\): websocket open from \(127\.0\.0\.1:[0-9]*\)$/\1 \2/p' \
      "$SERVER_LOG")
    [[ -n $open ]] || { echo "no open line with the peer" >&2; exit 1; }
    read -r conn peer <<<"$open"
    grep -qF "[info] conn $conn: websocket closed ($peer)" "$SERVER_LOG"
    grep -qE '\[info\] stopped: served 1 WebSocket connection \(0 refused at --max-connections, 0 closed as slow consumers\); runs: 1 started, 1 done, 0 cancelled' \
      "$SERVER_LOG"
    stamp=$(head -1 "$SERVER_LOG" | sed -n 's/^\[\([^]]*\)\].*/\1/p')
  else
    grep -qF "\"msg\":\"listening on ws://127.0.0.1:$PORT/ws, console http://127.0.0.1:$PORT/ " \
      "$SERVER_LOG"
    grep -qE '"level":"info","conn":[0-9]+,"msg":"websocket open from 127\.0\.0\.1:[0-9]+"' \
      "$SERVER_LOG"
    grep -qE '"level":"info","conn":[0-9]+,"msg":"websocket closed \(127\.0\.0\.1:[0-9]+\)"' \
      "$SERVER_LOG"
    grep -qF '"msg":"stopped: served 1 WebSocket connection' "$SERVER_LOG"
    stamp=$(head -1 "$SERVER_LOG" | sed -n 's/^{"ts":"\([^"]*\)".*/\1/p')
  fi
  check_utc "$stamp"
done
echo "server logs: ok"
