#!/usr/bin/env bash
# ws-client -i on a terminal (a tmux pane): a prompt, events printed above the
# line being typed without breaking it, history on the Up key, Ctrl-D to
# leave, and the terminal's modes given back. Skipped (77) without tmux.
# Usage: client_terminal.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
command -v tmux >/dev/null || { echo "tmux is not installed: skipped"; exit 77; }
dir=$(mktemp -d)
socket="agentws-terminal-test-$$"
tmux_() { tmux -L "$socket" -f /dev/null "$@"; }
trap 'tmux_ kill-server 2>/dev/null; stop_server; rm -rf "$dir"' EXIT

pane() { tmux_ capture-pane -p -t client; }
fail() {
  echo "FAIL: $*" >&2
  pane | sed 's/^/  | /' >&2
  exit 1
}
# The pane's last line that is not blank.
last_line() { pane | sed '/^[[:space:]]*$/d' | tail -1; }
# wait_for_pane PATTERN: until the pane shows PATTERN (extended regex), at most 10 s.
wait_for_pane() {
  for _ in $(seq 200); do
    pane | grep -qE -- "$1" && return 0
    sleep 0.05
  done
  fail "waited 10 s for /$1/ in the pane"
}
# wait_for_last PATTERN: until the pane's last line matches PATTERN, at most 10 s.
wait_for_last() {
  for _ in $(seq 200); do
    last_line | grep -qE -- "$1" && return 0
    sleep 0.05
  done
  fail "waited 10 s for the last line to match /$1/ (it is '$(last_line)')"
}

start_server "$server" --interval-ms 200
tmux_ new-session -d -s client -x 160 -y 40 \
  "TERM=xterm '$client' -i --url ws://127.0.0.1:$PORT/ws --color never; echo \$? >'$dir/exit'; stty -a >'$dir/stty'; sleep 60"
wait_for_last '^ws> ?$'

# A line typed while events arrive stays under them, as typed.
tmux_ send-keys -t client 'start r1 steps=3' Enter
wait_for_pane '\[r1\] run_started'
tmux_ send-keys -t client 'cancel r'
wait_for_pane '\[r1\] run_done$'
wait_for_last '^ws> cancel r$'
pane | grep -qF 'ws> start r1 steps=3' || fail "the entered line is not shown"

# History: Ctrl-U clears the line, Up brings back the last one.
tmux_ send-keys -t client C-u
wait_for_last '^ws> ?$'
tmux_ send-keys -t client Up
wait_for_last '^ws> start r1 steps=3$'

# Ctrl-D on an empty line ends the input: exit 0, the terminal as it was.
tmux_ send-keys -t client C-u C-d
for _ in $(seq 200); do
  [[ -s $dir/stty ]] && break
  sleep 0.05
done
[[ -s $dir/stty ]] || fail "ws-client did not exit after Ctrl-D"
[[ $(cat "$dir/exit") == 0 ]] || fail "ws-client exited $(cat "$dir/exit") after Ctrl-D"
grep -qE '(^| )icanon( |$)' "$dir/stty" && grep -qE '(^| )echo( |$)' "$dir/stty" ||
  fail "the terminal was not restored: $(cat "$dir/stty")"
echo "client terminal: ok"
