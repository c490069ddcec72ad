#!/bin/sh
# A program agent for ws-server in text framing (websocketd style): reads a
# count N from its input line, prints 1..N, one line (one event) every
# DELAY seconds. No input, or stdin closed: 5.
#   ws-server --agent 'count=examples/count.sh 0.2' (add framing = text in a config file)
# Usage: count.sh [DELAY]
delay=${1:-0.2}
read -r n || [ -n "$n" ] || n=5
case $n in '' | *[!0-9]*) echo "not a count: $n" >&2; exit 2 ;; esac
[ "$n" -le 1000 ] || { echo "at most 1000" >&2; exit 2; }
i=1
while [ "$i" -le "$n" ]; do echo "$i"; sleep "$delay"; i=$((i + 1)); done
