#!/usr/bin/env bash
# The Makefile: `make help` has a line for every target a user runs, and
# `make ws-client` without a server says how to start one (its check-server
# step, tried here against a closed and an open port).
# Usage: makefile.sh SOURCE_DIR WS_SERVER
source "$(dirname "$0")/common.sh"
src=$1 server=$2
out=$(mktemp)

make -s -C "$src" help >"$out"
cat "$out"
phony=$(sed -n '/^\.PHONY:/,/^$/p' "$src/Makefile" | tr -d '\\' | sed 's/^\.PHONY://')
for target in $phony; do
  [[ $target == all || $target == check-server ]] && continue
  grep -qE "^  $target +[a-z]" "$out" || { echo "make help does not list $target" >&2; exit 1; }
done

# A port nobody listens on: the one a server just left.
start_server "$server"
closed_port=$PORT
stop_server
set +e
make -s -C "$src" check-server PORT="$closed_port" >"$out" 2>&1
status=$?
set -e
cat "$out"
[[ $status -ne 0 ]] || { echo "check-server passed without a server" >&2; exit 1; }
grep -q "no server is listening on 127.0.0.1:$closed_port" "$out"
grep -q "make ws-server" "$out"

start_server "$server"
make -s -C "$src" check-server PORT="$PORT"
echo "makefile: ok"
