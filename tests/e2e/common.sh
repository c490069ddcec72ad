# Shared by the end-to-end scripts: start ws-server on a free port, stop it.
set -euo pipefail

# Starts "$@" (ws-server and its options) on port 0 and sets SERVER_PID and
# PORT from the "listening on" log line. Fails after 10 s.
start_server() {
  SERVER_LOG=$(mktemp)
  "$@" --port 0 >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/.*listening on wss\{0,1\}:\/\/[^:]*:\([0-9]*\)\/ws.*/\1/p' "$SERVER_LOG" | head -1)
    [[ -n $PORT ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server did not start:" >&2
  cat "$SERVER_LOG" >&2
  return 1
}

stop_server() {
  if [[ -n ${SERVER_PID:-} ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap stop_server EXIT
