#!/usr/bin/env bash
# Program agents against websocketd, side by side: ws-server running a
# program as an agent (one process per run), websocketd running the same
# program (one process per connection), and ws-server's demo agent (no
# process). ws-bench's program-flood and program-latency scenarios speak to
# all three in each round, in turn; each scenario gets fresh servers on free
# 127.0.0.1 ports, stopped by pid on exit.
#
# Usage: bench/programs.sh BUILD_DIR   (BUILD_DIR holds ws-server and ws-bench)
#   ROUNDS=5 LINES=100000 CONNECTIONS=4 RUNS=2   program-flood
#   LATENCY_ROUNDS=3 SAMPLES=300 CLOSE_SAMPLES=50  program-latency
#   SCENARIOS="program-flood program-latency"
# Needs websocketd (scripts/install-deps.sh --bench).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: bench/programs.sh BUILD_DIR}
bench_bin=$build/ws-bench
server_bin=$build/ws-server
for program in "$bench_bin" "$server_bin"; do
  [[ -x $program ]] || { echo "programs.sh: $program not found; build it first" >&2; exit 2; }
done
command -v websocketd >/dev/null ||
  { echo "programs.sh: websocketd not found (scripts/install-deps.sh --bench)" >&2; exit 2; }
python=/usr/bin/python3

ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-1}
TIMEOUT=${TIMEOUT:-120}
LINES=${LINES:-100000}
CONNECTIONS=${CONNECTIONS:-4}
RUNS=${RUNS:-2}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-3}
SAMPLES=${SAMPLES:-300}
CLOSE_SAMPLES=${CLOSE_SAMPLES:-50}
SCENARIOS=${SCENARIOS:-program-flood program-latency}

results=$here/results
mkdir -p "$results"
work=$(mktemp -d)
server_pid=
websocketd_pid=

stop() {  # stops the process whose pid is in the variable named $1
  local pid=${!1}
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  printf -v "$1" '%s' ''
}
cleanup() {
  stop websocketd_pid
  stop server_pid
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The programs. --agent splits on blanks and runs no shell: the pid printer
# is a script file.
cat >"$work/pid-sleep.sh" <<'EOF'
#!/bin/sh
echo $$
exec sleep 1000
EOF
chmod +x "$work/pid-sleep.sh"
seq_bin=$(command -v seq)

# Both agents in text framing (websocketd's: one line, one message), no input.
cat >"$work/agents.conf" <<EOF
[agent.lines]
command = $seq_bin 1 $LINES
framing = text
accepts-input = false

[agent.pid-sleep]
command = $work/pid-sleep.sh
framing = text
accepts-input = false
kill-grace-ms = 2000
EOF

start_servers() {  # $@: websocketd's program and arguments
  env -u AGENTWS_TOKEN "$server_bin" --host 127.0.0.1 --port 0 --log-level info \
    --config "$work/agents.conf" 2>"$work/ws-server.log" &
  server_pid=$!
  local port=
  for _ in $(seq 150); do
    port=$(sed -n 's/.*listening on ws:\/\/[^ ]*:\([0-9][0-9]*\)\/ws.*/\1/p' "$work/ws-server.log" |
      head -n 1)
    [[ -n $port ]] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $port ]] || { echo "programs.sh: ws-server did not start:" >&2; cat "$work/ws-server.log" >&2; return 1; }
  server_port=$port
  websocketd_port=$(free_port)
  # A background job of a script starts with SIGINT ignored, and its children
  # inherit that; websocketd stops a program with SIGINT first, so restore it.
  env --default-signal=INT websocketd --port="$websocketd_port" --address=127.0.0.1 \
    --loglevel=error "$@" >"$work/websocketd.log" 2>&1 &
  websocketd_pid=$!
  for _ in $(seq 150); do
    "$python" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
      "$websocketd_port" 2>/dev/null && return 0
    kill -0 "$websocketd_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "programs.sh: websocketd did not start:" >&2
  cat "$work/websocketd.log" >&2
  return 1
}

echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
  "kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(websocketd --version 2>&1 | head -n 1); seq: $seq_bin"
failed=0
for scenario in $SCENARIOS; do
  case $scenario in
    program-flood)
      start_servers "$seq_bin" 1 "$LINES"
      args=(--program-agent lines --rounds "$ROUNDS" --warmup "$WARMUP"
            --connections "$CONNECTIONS" --runs "$RUNS" --steps "$LINES") ;;
    program-latency)
      start_servers "$work/pid-sleep.sh"
      args=(--program-agent pid-sleep --rounds "$LATENCY_ROUNDS" --warmup "$WARMUP"
            --samples "$SAMPLES" --close-samples "$CLOSE_SAMPLES") ;;
    *) echo "programs.sh: unknown scenario $scenario" >&2; exit 2 ;;
  esac
  if ! "$bench_bin" --scenario "$scenario" --url "ws://127.0.0.1:$server_port/ws" --label ours \
      --server-pid "$server_pid" --websocketd-url "ws://127.0.0.1:$websocketd_port/" \
      --websocketd-pid "$websocketd_pid" --timeout "$TIMEOUT" "${args[@]}" \
      --json-out "$results/$scenario.json"; then
    echo "programs.sh: $scenario FAILED" >&2
    failed=1
  fi
  stop websocketd_pid
  stop server_pid
done
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg); results: $results/program-*.json"
exit "$failed"
