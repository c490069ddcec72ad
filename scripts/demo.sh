#!/usr/bin/env bash
# The original module's scenario in one terminal: start ws-server on a free
# port, run ws-client against it, stop the server. Exits with the client's status.
set -euo pipefail
build=${1:-build}
log=$(mktemp)
"$build/ws-server" --port 0 --log-level info 2>"$log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on ws:\/\/[^:]*:\([0-9]*\)\/ws.*/\1/p' "$log")
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n ${port:-} ]] || { cat "$log" >&2; exit 1; }
echo "demo: ws-server listening on port $port; running ws-client (about 5 s)" >&2
"$build/ws-client" --url "ws://localhost:$port/ws"
