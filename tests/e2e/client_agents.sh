#!/usr/bin/env bash
# ws-client with real agents: program agents of ws-server (--agent) started
# with --agent, --input (inline and @FILE) and --timeout-ms, -i's start
# agent=... input=... and send, and how their structured events, the inputs
# received and a failed program are printed. Each client bounded by `timeout`.
# Usage: client_agents.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
command -v python3 >/dev/null || {
  echo "SKIP: no python3 for the agent program"
  exit 77
}
dir=$(mktemp -d)
out=$dir/out
trap 'stop_server; rm -rf "$dir"' EXIT

fail() {
  echo "FAIL: $*" >&2
  sed 's/^/  | /' "$out" >&2
  exit 1
}

# expect PATTERN: $out holds a line with PATTERN (fixed text).
expect() {
  grep -qF -- "$1" "$out" || fail "no line with: $1"
}

# run STATUS ARGS...: ws-client ARGS (within 20 s) exits with STATUS.
run() {
  local want=$1 status
  shift
  set +e
  timeout 20 "$client" --url "$url" --color never "$@" </dev/null >"$out" 2>&1
  status=$?
  set -e
  [[ $status -eq $want ]] || fail "ws-client $(printf '%q ' "$@")exited $status, not $want"
}

# The agent: says what it was started with, a plain line, a structured
# delta; then, unless its input says {"wait": false}, echoes every input
# until "bye" (or stdin closes).
cat >"$dir/talk.py" <<'EOF'
import json, sys
def emit(fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()
start = json.loads(sys.stdin.readline())
emit({"kind": "started", "text": "input " + json.dumps(start["input"], sort_keys=True)})
print("a plain line", flush=True)
emit({"kind": "text_delta", "text": "Hel", "index": 0})
if isinstance(start["input"], dict) and start["input"].get("wait") is False:
    sys.exit(0)
for line in sys.stdin:
    value = json.loads(line)["input"]
    if value == "bye":
        break
    emit({"kind": "echo", "text": "got", "value": value})
EOF
# The agent that fails: a line on stderr, exit status 3.
printf 'read line\necho "boom: no such task" >&2\nexit 3\n' >"$dir/fail.sh"

start_server "$server" --agent "talk=python3 $dir/talk.py" --agent "fail=/bin/sh $dir/fail.sh"
url="ws://127.0.0.1:$PORT/ws"

# A scenario: --agent, --input and --timeout-ms go into the start; the
# agent's events are printed by kind, its plain line as version 1 did.
run 0 --run a1 --agent talk --input '{"wait": false, "q": "hi there"}' --timeout-ms 60000
expect '[a1] run_event step=0 started "input {\"q\": \"hi there\", \"wait\": false}"'
expect '[a1] run_event step=1 a plain line'
expect '[a1] run_event step=2 text_delta "Hel" {"index":0}'
expect '[a1] run_done'
expect 'a1      done        3 events  ok'

# --input @FILE; --json prints the events as the server wrote them.
printf '{\n  "wait": false,\n  "q": [1, 2]\n}\n' >"$dir/task.json"
run 0 --run a2 --agent talk --input "@$dir/task.json" --json
# (the fields in the server's order)
grep '"kind": "text_delta"' "$out" | grep '"text": "Hel"' | grep -q '"index": 0' ||
  fail "no run_event line with the delta's fields"
expect '"text": "input {\"q\": [1, 2], \"wait\": false}"'

# --timeout-ms: the agent waits for input that does not come; the server
# cancels the run at its deadline (not the end a scenario expects: exit 1).
run 1 --run a3 --agent talk --input '{"q": 1}' --timeout-ms 300
expect '[a3] run_cancelled reason=timeout'

# An agent the server does not offer: the start is refused.
run 1 --run a4 --agent nobody
expect 'error Unknown agent: nobody'
expect '(unknown_agent)'

# A program that fails: its exit code, and its stderr below the event.
run 1 --run f1 --agent fail
expect '[f1] run_done failed: agent fail: exit code 3; stderr ends:'
expect '    | boom: no such task'

# -i: start with agent= and input=, send inputs (a bad one is refused
# before anything is sent), each answered by input_received; "bye" ends the
# run and quit waits for it.
set +e
printf '%s\n' 'start t1 agent=talk input={"q": "x y"}' 'send t1 {"n": 1}' 'send t1 {oops' \
  'send t1 [1, "two"]' 'send t1 "bye"' 'quit' |
  timeout 20 "$client" -i --url "$url" --color never >"$out" 2>&1
status=$?
set -e
[[ $status -eq 0 ]] || fail "ws-client -i exited $status, not 0"
expect '[t1] run_event step=0 started "input {\"q\": \"x y\"}"'
expect '[t1] run_event step=3 echo "got" {"value":{"n":1}}'
expect '[t1] run_event step=4 echo "got" {"value":[1,"two"]}'
expect 'ws-client: send: the input is not JSON'
[[ $(grep -c '\[t1\] input_received' "$out") -eq 3 ]] || fail "not 3 input_received lines"
expect '[t1] run_done'
grep -q '\] error ' "$out" && fail "the server refused something"

# -i with --agent and --input as the defaults of start; a start's own
# input= wins over --input.
set +e
printf '%s\n' 'start d1' 'start d2 input={"wait": false, "own": true}' 'send d1 "bye"' 'quit' |
  timeout 20 "$client" -i --url "$url" --color never --agent talk --input '{"wait": true}' \
    >"$out" 2>&1
status=$?
set -e
[[ $status -eq 0 ]] || fail "ws-client -i --agent exited $status, not 0"
expect '[d1] run_event step=0 started "input {\"wait\": true}"'
expect '[d2] run_event step=0 started "input {\"own\": true, \"wait\": false}"'
expect '[d1] run_done'
expect '[d2] run_done'

echo "end-to-end: ok"
