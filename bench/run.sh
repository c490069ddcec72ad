#!/usr/bin/env bash
# Benchmarks ws-server against the FastAPI and Node peers on loopback, with
# the same ws-bench scenarios and parameters, and prints one table with
# ratios. Each (server, scenario) pair gets a fresh server on a free port, so
# memory and CPU figures start from the same state; every server started here
# is stopped on exit. Fails if any round found a protocol violation or error.
#
# Usage: bench/run.sh BUILD_DIR      (BUILD_DIR holds ws-server and ws-bench)
# Sizes can be changed through the environment, e.g.
#   ROUNDS=3 FLOOD_STEPS=20000 bench/run.sh build
# SERVERS="ours node" limits the servers measured, SCENARIOS="scaling" the
# scenarios. The scaling sweep (flood CPU per event from 1 to 1,000
# connections and 1 to 256 runs per connection) runs against SCALING_SERVERS
# (ours only by default), and so does slow-cancel (SLOW_CANCEL_SERVERS: a
# client reading 1 MB/s while 50 runs, then 1 run, stream; what it reads
# between cancel_run and run_cancelled).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: bench/run.sh BUILD_DIR}
bench_bin=$build/ws-bench
server_bin=$build/ws-server
for program in "$bench_bin" "$server_bin"; do
  [[ -x $program ]] || { echo "run.sh: $program not found; build it first" >&2; exit 2; }
done
python=/usr/bin/python3

ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-1}
TIMEOUT=${TIMEOUT:-60}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-4}
FLOOD_RUNS=${FLOOD_RUNS:-4}
FLOOD_IN_FLIGHT=${FLOOD_IN_FLIGHT:-2}
FLOOD_STEPS=${FLOOD_STEPS:-50000}           # ours: 800,000 events, ~0.4 s a round
FLOOD_STEPS_NODE=${FLOOD_STEPS_NODE:-5000}
FLOOD_STEPS_SLOW=${FLOOD_STEPS_SLOW:-1000}  # fastapi: per-event figures still compare
CANCEL_SAMPLES=${CANCEL_SAMPLES:-500}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
HANDSHAKES=${HANDSHAKES:-2000}              # ours
HANDSHAKES_SLOW=${HANDSHAKES_SLOW:-500}     # the peers
HANDSHAKE_PARALLEL=${HANDSHAKE_PARALLEL:-32}
# Scaling: about SCALING_EVENTS events per round at every point, so that the
# server's CPU time per round is well above the counters' resolution.
SCALING_CONNECTIONS=${SCALING_CONNECTIONS:-1 10 100 1000}  # 1 run each
SCALING_RUNS=${SCALING_RUNS:-16 256}                       # on 1 connection, all at once
SCALING_EVENTS=${SCALING_EVENTS:-1000000}
SCALING_ROUNDS=${SCALING_ROUNDS:-3}
SCALING_SERVERS=${SCALING_SERVERS:-ours}
# slow-cancel: one connection per point of SLOW_CANCEL_RUNS (runs streaming),
# a client with SO_RCVBUF SLOW_CANCEL_RCVBUF reading SLOW_CANCEL_READ_RATE
# bytes/s, SLOW_CANCEL_SAMPLES cancel trials. A trial takes about
# (bytes queued) / (read rate) twice: ~10 s each at 1 MB/s while the answers
# wait behind MiBs of queued events, well under 1 s once they do not.
SLOW_CANCEL_RUNS=${SLOW_CANCEL_RUNS:-50 1}
SLOW_CANCEL_SAMPLES=${SLOW_CANCEL_SAMPLES:-10}
SLOW_CANCEL_READ_RATE=${SLOW_CANCEL_READ_RATE:-1000000}
SLOW_CANCEL_RCVBUF=${SLOW_CANCEL_RCVBUF:-131072}
SLOW_CANCEL_TIMEOUT=${SLOW_CANCEL_TIMEOUT:-300}
SLOW_CANCEL_SERVERS=${SLOW_CANCEL_SERVERS:-ours}
SERVERS=${SERVERS:-ours fastapi node}
SCENARIOS=${SCENARIOS:-flood cancel idle connect scaling slow-cancel}

results=$here/results
mkdir -p "$results"
work=$(mktemp -d)
server_pid=
server_port=

stop_server() {
  [[ -n $server_pid ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Idle scenarios hold thousands of sockets: servers inherit this limit.
ulimit -n "$(ulimit -Hn)"

# Waits for a line matching the sed expression in $2 to appear in log $1 and
# prints the captured port; fails after 15 s or if the server died.
wait_for_port() {
  local log=$1 expression=$2 port
  for _ in $(seq 150); do
    port=$(sed -n "$expression" "$log" | head -n 1)
    if [[ -n $port ]]; then
      echo "$port"
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "run.sh: the server did not start; its log:" >&2
  cat "$log" >&2
  return 1
}

healthy() {
  "$python" -c 'import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1).read()' "$1" 2>/dev/null
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts server $1 on a free loopback port; sets server_pid and server_port.
start_server() {
  local name=$1 log=$work/$1.log
  case $name in
    ours)
      # Default thread count (one I/O thread per core).
      # No token: AGENTWS_TOKEN from the caller's environment would refuse ws-bench.
      env -u AGENTWS_TOKEN "$server_bin" --host 127.0.0.1 --port 0 --log-level info 2>"$log" &
      server_pid=$!
      server_port=$(wait_for_port "$log" 's/.*listening on ws:\/\/[^ ]*:\([0-9][0-9]*\)\/ws.*/\1/p')
      ;;
    fastapi)
      # uvicorn does not print the port it bound at log level warning: pick one.
      server_port=$(free_port)
      "$python" "$here/peers/fastapi_server.py" --host 127.0.0.1 --port "$server_port" 2>"$log" &
      server_pid=$!
      for _ in $(seq 150); do
        healthy "$server_port" && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
      done
      healthy "$server_port" || {
        echo "run.sh: the FastAPI peer did not start; its log:" >&2
        cat "$log" >&2
        return 1
      }
      ;;
    node)
      node "$here/peers/node/server.js" --host 127.0.0.1 --port 0 2>"$log" &
      server_pid=$!
      server_port=$(wait_for_port "$log" 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p')
      ;;
  esac
}

if [[ " $SERVERS $SLOW_CANCEL_SERVERS " == *" node "* && ! -d $here/peers/node/node_modules/ws ]]; then
  echo "run.sh: installing the Node peer's dependencies (npm ci)" >&2
  (cd "$here/peers/node" && npm ci --no-audit --no-fund >&2)
fi

ours_threads=$("$server_bin" --help | sed -n 's/.*--threads arg (=\([0-9]*\)).*/\1/p')
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
machine_json=$(
  NPROC=$(nproc) CPU_MODEL=$cpu_model KERNEL=$(uname -r) LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg) \
  OURS_THREADS=$ours_threads PYTHON_VERSION=$("$python" --version 2>&1) NODE_VERSION=$(node --version) \
  "$python" -c 'import json, os; print(json.dumps({k.lower(): os.environ[k] for k in
    ["NPROC", "CPU_MODEL", "KERNEL", "LOADAVG", "OURS_THREADS", "PYTHON_VERSION", "NODE_VERSION"]}))'
)
echo "machine: $(nproc) CPUs, $cpu_model, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ours: ws-server with its default of $ours_threads I/O threads (one per core)"

failed=0

# One flood per point of the sweep, each on a fresh server; results go to
# $work/scaling/ so the summary can tell them from the flood scenario.
run_scaling() {
  local name=$1 points=() point connections runs steps
  mkdir -p "$work/scaling"
  for connections in $SCALING_CONNECTIONS; do points+=("$connections:1"); done
  for runs in $SCALING_RUNS; do points+=("1:$runs"); done
  for point in "${points[@]}"; do
    connections=${point%:*}
    runs=${point#*:}
    steps=$(( SCALING_EVENTS / (connections * runs) ))
    (( steps > 0 )) || steps=1
    start_server "$name"
    if ! "$bench_bin" --scenario flood --url "ws://127.0.0.1:$server_port/ws" --label "$name" \
        --server-pid "$server_pid" --rounds "$SCALING_ROUNDS" --warmup "$WARMUP" \
        --timeout "$TIMEOUT" --connections "$connections" --runs "$runs" \
        --runs-in-flight "$runs" --steps "$steps" \
        --json-out "$work/scaling/$name-$connections-$runs.json" >"$work/scaling.log"; then
      cat "$work/scaling.log"
      echo "run.sh: scaling point $connections x $runs against $name FAILED" >&2
      failed=1
    fi
    stop_server
  done
}

# One slow reader per point of SLOW_CANCEL_RUNS, each on a fresh server;
# results go to $work/slow-cancel/.
run_slow_cancel() {
  local name=$1 runs
  mkdir -p "$work/slow-cancel"
  for runs in $SLOW_CANCEL_RUNS; do
    start_server "$name"
    if ! "$bench_bin" --scenario slow-cancel --url "ws://127.0.0.1:$server_port/ws" \
        --label "$name" --server-pid "$server_pid" --timeout "$SLOW_CANCEL_TIMEOUT" \
        --runs "$runs" --samples "$SLOW_CANCEL_SAMPLES" --read-rate-bytes "$SLOW_CANCEL_READ_RATE" \
        --rcvbuf-bytes "$SLOW_CANCEL_RCVBUF" \
        --json-out "$work/slow-cancel/$name-$runs.json"; then
      echo "run.sh: slow-cancel with $runs runs against $name FAILED" >&2
      failed=1
    fi
    stop_server
  done
}

for scenario in $SCENARIOS; do
  if [[ $scenario == slow-cancel ]]; then
    for name in $SLOW_CANCEL_SERVERS; do
      echo "slow-cancel: a slow reader against $name, $SLOW_CANCEL_RUNS runs streaming"
      run_slow_cancel "$name"
    done
    continue
  fi
  if [[ $scenario == scaling ]]; then
    for name in $SCALING_SERVERS; do
      echo "scaling: flood against $name at each point (the table follows at the end)"
      run_scaling "$name"
    done
    continue
  fi
  for name in $SERVERS; do
    start_server "$name"
    args=(--scenario "$scenario" --url "ws://127.0.0.1:$server_port/ws" --label "$name"
          --server-pid "$server_pid" --rounds "$ROUNDS" --warmup "$WARMUP" --timeout "$TIMEOUT"
          --json-out "$work/$scenario-$name.json")
    case $scenario in
      flood)
        steps=$FLOOD_STEPS
        [[ $name == node ]] && steps=$FLOOD_STEPS_NODE
        [[ $name == fastapi ]] && steps=$FLOOD_STEPS_SLOW
        args+=(--connections "$FLOOD_CONNECTIONS" --runs "$FLOOD_RUNS" --steps "$steps"
               --runs-in-flight "$FLOOD_IN_FLIGHT") ;;
      cancel) args+=(--samples "$CANCEL_SAMPLES") ;;
      idle) args+=(--idle-connections "$IDLE_CONNECTIONS") ;;
      connect)
        handshakes=$HANDSHAKES
        [[ $name != ours ]] && handshakes=$HANDSHAKES_SLOW
        args+=(--handshakes "$handshakes" --parallel "$HANDSHAKE_PARALLEL") ;;
    esac
    if ! "$bench_bin" "${args[@]}"; then
      echo "run.sh: $scenario against $name FAILED" >&2
      failed=1
    fi
    stop_server
  done
done

MACHINE_JSON=$machine_json LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg) \
  "$python" - "$work" "$results/latest.json" "$SERVERS" <<'EOF'
import glob, json, os, sys

work, out_path, servers = sys.argv[1], sys.argv[2], sys.argv[3].split()
results = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "*.json")))]
scaling = [json.load(open(p)) for p in glob.glob(os.path.join(work, "scaling", "*.json"))]
scaling.sort(key=lambda r: (r["server"], r["params"]["runs"], r["params"]["connections"]))
slow_cancel = [json.load(open(p)) for p in glob.glob(os.path.join(work, "slow-cancel", "*.json"))]
slow_cancel.sort(key=lambda r: (r["server"], -r["params"]["runs"]))
machine = json.loads(os.environ["MACHINE_JSON"])
machine["loadavg_end"] = os.environ["LOADAVG_END"]
json.dump({"machine": machine, "results": results, "scaling": scaling,
           "slow_cancel": slow_cancel}, open(out_path, "w"), indent=2)

# metric: (label, True if higher is better, None if informational)
rows = {
    "flood": [("events_per_s", "events/s", True), ("mib_per_s", "MiB/s", True),
              ("latency_p50_ms", "latency p50 ms (ts to receipt) *", None),
              ("latency_p99_ms", "latency p99 ms *", None),
              ("server_cpu_us_per_event", "server CPU us/event", False),
              ("client_cpu_us_per_event", "ws-bench CPU us/event", None)],
    "cancel": [("cancel_p50_ms", "cancel_run -> run_cancelled p50 ms", False),
               ("cancel_p99_ms", "cancel_run -> run_cancelled p99 ms", False),
               ("cancel_write_p50_ms", "  of which ws-bench's write p50 ms", None)],
    "idle": [("kib_per_connection", "server RSS KiB/connection", False),
             ("opened_per_s", "connections opened/s", True)],
    "connect": [("handshakes_per_s", "handshakes/s", True),
                ("handshake_p50_ms", "handshake+close p50 ms", False),
                ("handshake_p99_ms", "handshake+close p99 ms", False),
                ("server_cpu_us_per_handshake", "server CPU us/handshake", False),
                ("client_cpu_us_per_handshake", "ws-bench CPU us/handshake", None)],
}
by_key = {(r["scenario"], r["server"]): r for r in results}
peers = [s for s in servers if s != "ours"]
width = 36
print()
print(f"machine: {machine['nproc']} CPUs, {machine['cpu_model']}, kernel {machine['kernel']}, "
      f"load average at start {machine['loadavg']}, at the end {machine['loadavg_end']}")
print(f"ours = ws-server ({machine['ours_threads']} I/O threads, the default); "
      f"fastapi = bench/peers/fastapi_server.py ({machine['python_version']}); "
      f"node = bench/peers/node/server.js (node {machine['node_version']})")
print("medians of the rounds; ratio columns: > 1 means ours is better (faster, or less)")
header = f"{'':{width}}" + "".join(f"{s:>12}" for s in servers) + "".join(
    f"{'ours/' + p:>14}" for p in peers if "ours" in servers)
for scenario, metrics in rows.items():
    present = [s for s in servers if (scenario, s) in by_key]
    if not present:
        continue
    print()
    print(header.replace(" " * width, f"{scenario:<{width}}", 1))
    for server in present:
        r = by_key[(scenario, server)]
        print(f"  {server}: {r['description']}")
    for key, label, higher in metrics:
        cells, values = [], {}
        for s in servers:
            r = by_key.get((scenario, s))
            v = r["summary"].get(key, {}).get("median") if r else None
            values[s] = v
            cells.append(f"{v:>12.4g}" if v is not None else f"{'-':>12}")
        ratios = []
        if "ours" in servers:
            for p in peers:
                a, b = values.get("ours"), values.get(p)
                if higher is None or not a or not b:
                    ratios.append(f"{'':>14}")
                else:
                    ratio = a / b if higher else b / a
                    ratios.append(f"{ratio:>13.2f}x")
        print(f"{label:<{width}}" + "".join(cells) + "".join(ratios))
    status = []
    for s in servers:
        r = by_key.get((scenario, s))
        status.append(f"{('ok' if r['ok'] else 'FAIL') if r else '-':>12}")
    print(f"{'status':<{width}}" + "".join(status))
    if scenario == "flood":
        print("* time queued in a saturated stream (outbox and socket buffers), not the latency of a")
        print("  quiet connection: a server that outruns the client queues up to its buffer limits")

def median_of(r, key):
    return r["summary"].get(key, {}).get("median")


if scaling:
    print()
    print("scaling: flood (interval_ms 0) at each point, fresh server, medians of the rounds")
    print(f"{'server':<8}{'connections':>12}{'runs/conn':>10}{'steps/run':>10}{'events/s':>12}"
          f"{'server us/event':>17}{'(min-max)':>14}{'ws-bench us/event':>19}{'status':>8}")
    for r in scaling:
        p = r["params"]
        cpu = r["summary"].get("server_cpu_us_per_event", {})
        spread = f"{cpu.get('min', 0):.3f}-{cpu.get('max', 0):.3f}" if cpu else "-"
        cells = [median_of(r, k) for k in ("events_per_s", "server_cpu_us_per_event",
                                           "client_cpu_us_per_event")]
        text = [f"{v:.4g}" if v is not None else "-" for v in cells]
        print(f"{r['server']:<8}{p['connections']:>12}{p['runs']:>10}{p['steps']:>10}{text[0]:>12}"
              f"{text[1]:>17}{spread:>14}{text[2]:>19}{('ok' if r['ok'] else 'FAIL'):>8}")
    for server in sorted({r["server"] for r in scaling}):
        values = [median_of(r, "server_cpu_us_per_event") for r in scaling if r["server"] == server]
        values = [v for v in values if v]
        if values:
            print(f"{server}: server CPU per event from {min(values):.3f} to {max(values):.3f} us "
                  f"across the points (max/min {max(values) / min(values):.2f})")
if slow_cancel:
    print()
    print("slow-cancel: one connection, a client reading a fixed rate while runs stream; per trial")
    print("  what it reads from cancel_run to run_cancelled (KiB, ms) and from the replacement's")
    print("  start_run to run_started; 'ts' = when the server acted (the answer's ts after the send);")
    print("  'starts ms': the first start_runs, sent together, until the last run_started")
    print(f"{'server':<8}{'runs':>5}{'trials':>7}{'cancel KiB p50':>15}{'p99':>8}{'max':>8}"
          f"{'ms p50':>8}{'p99':>8}{'ts ms':>7}{'start KiB p50':>14}{'p99':>8}{'ms p50':>8}"
          f"{'p99':>8}{'starts ms':>10}{'last_step':>10}{'rcvbuf':>8}{'read B/s':>10}{'status':>8}")
    for r in slow_cancel:
        s = lambda key: median_of(r, key)
        fmt = lambda v, spec=".0f": format(v, spec) if v is not None else "-"
        print(f"{r['server']:<8}{r['params']['runs']:>5}{fmt(s('trials')):>7}"
              f"{fmt(s('cancel_kib_p50')):>15}{fmt(s('cancel_kib_p99')):>8}"
              f"{fmt(s('cancel_kib_max')):>8}{fmt(s('cancel_ms_p50')):>8}{fmt(s('cancel_ms_p99')):>8}"
              f"{fmt(s('cancel_ts_p50_ms'), '.1f'):>7}{fmt(s('start_kib_p50')):>14}"
              f"{fmt(s('start_kib_p99')):>8}{fmt(s('start_ms_p50')):>8}{fmt(s('start_ms_p99')):>8}"
              f"{fmt(s('initial_start_ms')):>10}"
              f"{fmt(s('last_step_share'), '.0%'):>10}{fmt(s('rcvbuf_granted')):>8}"
              f"{fmt(s('read_bytes_per_s'), '.3g'):>10}{('ok' if r['ok'] else 'FAIL'):>8}")
    print("  target: at most 512 KiB read between cancel_run and run_cancelled, no event of the")
    print("  run after it (a violation fails the point); rcvbuf: SO_RCVBUF as the kernel reports it")
print()
print(f"results: {out_path}")
failed = [f"{r['scenario']}/{r['server']}" for r in results if not r["ok"]]
failed += [f"scaling {r['params']['connections']}x{r['params']['runs']}/{r['server']}"
           for r in scaling if not r["ok"]]
failed += [f"slow-cancel {r['params']['runs']} runs/{r['server']}" for r in slow_cancel if not r["ok"]]
if failed:
    print("FAILED: " + ", ".join(failed))
EOF

if [[ $failed -ne 0 ]]; then
  echo "run.sh: a round found a correctness violation or an error (see above)" >&2
  exit 1
fi
