#!/usr/bin/env bash
# Interop cases for ctest: our programs against peers we did not build on our
# library (the original module's Python stack, Node's ws, a real browser).
# Usage: interop.sh CASE WS_SERVER WS_CLIENT [ARTIFACT_DIR]
#   python-client     original-style Python client  -> ws-server
#   ws-client-python  ws-client -> original-style Python server (core only)
#   node-client       Node ws client (scenario + errors) -> ws-server
#   conformance       conformance checker -> ws-server (all rows)
#   conformance-python conformance checker -> Python server (core rows)
#   browser           the console page in headless Chromium -> ws-server
source "$(dirname "$0")/../e2e/common.sh"
case_name=$1 server=$2 client=$3 artifacts=${4:-.}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=/usr/bin/python3

# Starts the original-style Python server on a free port; sets PORT, SERVER_PID.
start_python_server() {
  PORT=$($python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  SERVER_LOG=$(mktemp)
  $python "$here/original_server.py" --port "$PORT" "$@" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$SERVER_LOG" >&2
  return 1
}

case $case_name in
  python-client)
    start_server "$server" --interval-ms 200
    $python "$here/original_client.py" --url "ws://127.0.0.1:$PORT/ws" --cancel-after 0.5
    ;;
  ws-client-python)
    start_python_server --steps 5 --interval 0.2
    "$client" --url "ws://127.0.0.1:$PORT/ws" --cancel run-002@0.5 --color never
    ;;
  node-client)
    start_server "$server"
    node "$here/node_client.js" --url "ws://127.0.0.1:$PORT/ws"
    ;;
  conformance)
    start_server "$server" --interval-ms 200
    $python "$root/tests/conformance/conformance.py" --url "ws://127.0.0.1:$PORT/ws"
    ;;
  conformance-python)
    start_python_server --steps 3 --interval 0.2
    $python "$root/tests/conformance/conformance.py" --url "ws://127.0.0.1:$PORT/ws" --core-only \
      --interval-ms-hint 200
    ;;
  browser)
    start_server "$server"
    node "$root/tests/browser/console.test.mjs" --base "http://127.0.0.1:$PORT" --server "$server" \
      --screenshot "$artifacts/console.png"
    ;;
  *)
    echo "unknown case: $case_name" >&2
    exit 2
    ;;
esac
