#!/usr/bin/env bash
# ws-server under a low open-file limit: it keeps --max-sockets below the
# limit (and says so), and a flood of silent sockets larger than the limit
# leaves it answering, with no "accept failed" and no "Too many open files":
# the oldest silent sockets make room for new ones.
# Usage: socket_limits.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2

start_server prlimit --nofile=200:200 -- "$server" --threads 1 --interval-ms 1
grep -q "the open-file limit (200) leaves room for 136 sockets, not 11024: --max-sockets is 136" \
  "$SERVER_LOG" || { echo "no warning about the open-file limit:" >&2; cat "$SERVER_LOG" >&2; exit 1; }

# 300 silent sockets held open while the client runs; the server keeps at
# most 136 of them.
python3 - "$PORT" "$client" <<'PY'
import socket, subprocess, sys
port, client = int(sys.argv[1]), sys.argv[2]
held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
result = subprocess.run([client, "--url", f"ws://127.0.0.1:{port}/ws", "--run", "through",
                         "--steps", "3", "--color", "never", "--timeout", "20"],
                        capture_output=True, text=True, timeout=30)
print(result.stdout, result.stderr)
if result.returncode != 0:
    sys.exit(f"ws-client failed ({result.returncode}) while 300 silent sockets were held")
closed = 0
for s in held:
    s.setblocking(False)
    try:
        if s.recv(16) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except ConnectionResetError:
        closed += 1
print(f"{closed} of 300 silent sockets were closed by the server")
if closed < 300 - 136:
    sys.exit(f"only {closed} silent sockets closed: the server held more than its limit")
PY

if grep -E "accept failed|Too many open files|\[error\]" "$SERVER_LOG"; then
  echo "the server ran out of descriptors" >&2
  exit 1
fi
echo "ok: the server stayed below its open-file limit"
