#!/usr/bin/env bash
# wss:// end to end: ws-server with --tls-cert/--tls-key, ws-client verifying
# the certificate (trusted through --ca-file or not at all, right or wrong
# host), and the original-style Python client over TLS. Certificates are made
# here with the openssl CLI, in a temporary directory.
# Usage: tls.sh WS_SERVER WS_CLIENT
source "$(dirname "$0")/common.sh"
server=$1 client=$2
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
dir=$(mktemp -d)
trap 'stop_server; rm -rf "$dir"' EXIT
# The system's roots must not decide anything here.
unset SSL_CERT_FILE SSL_CERT_DIR

# --- certificates -----------------------------------------------------------
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$1" 2>/dev/null; }
new_key self.key
new_key ca.key
new_key other-ca.key
new_key leaf.key
# A self-signed certificate for localhost and 127.0.0.1.
openssl req -x509 -new -key "$dir/self.key" -out "$dir/self.pem" -days 2 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
# A test CA, and a leaf it signs for other.example and 127.0.0.1 (not localhost).
openssl req -x509 -new -key "$dir/ca.key" -out "$dir/ca.pem" -days 2 -subj "/CN=agentws test CA" \
  2>/dev/null
printf 'subjectAltName=DNS:other.example,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/leaf.ext"
openssl req -new -key "$dir/leaf.key" -subj "/CN=other.example" 2>/dev/null |
  openssl x509 -req -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/leaf.ext" -out "$dir/leaf.pem" 2>/dev/null
# A CA that signed neither.
openssl req -x509 -new -key "$dir/other-ca.key" -out "$dir/other-ca.pem" -days 2 \
  -subj "/CN=unrelated test CA" 2>/dev/null

out=$dir/out
# expect_exit STATUS PATTERN ARGS...: ws-client ARGS exits STATUS (within 20 s)
# and says PATTERN (an extended regex; empty: anything).
expect_exit() {
  local want=$1 pattern=$2 status
  shift 2
  set +e
  timeout 20 "$client" --color never "$@" >"$out" 2>&1
  status=$?
  set -e
  if [[ $status -ne $want ]] || { [[ -n $pattern ]] && ! grep -qE "$pattern" "$out"; }; then
    echo "ws-client $*: expected exit $want and /$pattern/, got exit $status:" >&2
    cat "$out" >&2
    exit 1
  fi
}

# --- a self-signed certificate ----------------------------------------------
start_server "$server" --interval-ms 100 --tls-cert "$dir/self.pem" --tls-key "$dir/self.key"
grep -q "listening on wss://" "$SERVER_LOG"
url="wss://localhost:$PORT/ws"

# Trusted through --ca-file: the full original scenario, exit 0.
expect_exit 0 'result: every run ended as expected' --url "$url" --ca-file "$dir/self.pem" \
  --cancel run-002@0.25
cat "$out"
grep -qE '\[run-001\] run_event step=4 agent step 4$' "$out"
grep -qE '\[run-001\] run_done$' "$out"
grep -qE '\[run-002\] run_cancelled reason=client$' "$out"
# By IP address (checked against the certificate's IP entry); interactive mode too.
expect_exit 0 '\[solo\] run_done$' --url "wss://127.0.0.1:$PORT/ws" --ca-file "$dir/self.pem" \
  --run solo --steps 2 --interval-ms 1
printf 'start p1 steps=2 interval_ms=1\n' |
  "$client" --url "$url" --ca-file "$dir/self.pem" --interactive --color never >"$out" 2>&1
grep -qE '\[p1\] run_done$' "$out"

# Not trusted: without --ca-file (only the system's roots), with an unrelated
# CA, and in interactive mode even with --reconnect (a certificate does not
# get better by retrying). All exit 3 and say why.
expect_exit 3 'certificate verification failed: self-signed certificate' --url "$url" --run r
expect_exit 3 'certificate verification failed' --url "$url" --ca-file "$dir/other-ca.pem" --run r
echo 'start p1' | expect_exit 3 'certificate verification failed' --url "$url" --interactive \
  --reconnect
# An unusable CA file is bad usage: exit 2.
expect_exit 2 'cannot read the CA file' --url "$url" --ca-file "$dir/missing.pem"
expect_exit 2 'no usable CA certificate' --url "$url" --ca-file "$dir/leaf.ext"

# Plain ws:// against the TLS port: a clean failure, no hang.
expect_exit 3 'cannot connect' --url "ws://127.0.0.1:$PORT/ws" --run r

# The original-style Python client (websockets), unmodified: its default TLS
# context trusts SSL_CERT_FILE.
SSL_CERT_FILE=$dir/self.pem $python "$here/../interop/original_client.py" --url "$url" \
  --cancel-after 0.25 --timeout 20
# And Python's ssl module directly: TLS 1.2 or later with the certificate
# trusted, a verification error without it.
$python - "$url" "$dir/self.pem" <<'EOF'
import asyncio, json, ssl, sys
import websockets

url, ca_file = sys.argv[1], sys.argv[2]

async def main():
    context = ssl.create_default_context(cafile=ca_file)
    async with websockets.connect(url, ssl=context) as ws:
        version = ws.transport.get_extra_info("ssl_object").version()
        assert version in ("TLSv1.2", "TLSv1.3"), version
        first = json.loads(await ws.recv())
        assert first["event_type"] == "connected", first
        await ws.send(json.dumps({"command": "start_run", "run_id": "py", "params": {"steps": 2, "interval_ms": 1}}))
        seen = []
        while not seen or seen[-1] != "run_done":
            seen.append(json.loads(await ws.recv())["event_type"])
        assert seen == ["run_started", "run_event", "run_event", "run_done"], seen
    try:
        async with websockets.connect(url, ssl=ssl.create_default_context(), open_timeout=10):
            raise AssertionError("connected without trusting the certificate")
    except ssl.SSLCertVerificationError:
        pass
    print(f"python over {version}: ok")

asyncio.run(main())
EOF
stop_server

# --- a CA-signed certificate for other.example and 127.0.0.1 -----------------
start_server "$server" --tls-cert "$dir/leaf.pem" --tls-key "$dir/leaf.key"
# The chain to the CA verifies for 127.0.0.1...
expect_exit 0 '\[solo\] run_done$' --url "wss://127.0.0.1:$PORT/ws" --ca-file "$dir/ca.pem" \
  --run solo --steps 1 --interval-ms 1
# ...but the certificate is not for localhost.
expect_exit 3 'certificate verification failed: hostname mismatch' \
  --url "wss://localhost:$PORT/ws" --ca-file "$dir/ca.pem" --run r
expect_exit 3 'certificate verification failed' --url "wss://127.0.0.1:$PORT/ws" \
  --ca-file "$dir/other-ca.pem" --run r
stop_server

# --- a server that never answers the TLS handshake --------------------------
# The connect timeout (5 s) covers the TLS handshake.
$python -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(30)' >"$dir/silent.port" &
SERVER_PID=$!
for _ in $(seq 50); do [[ -s $dir/silent.port ]] && break; sleep 0.1; done
started=$SECONDS
expect_exit 3 'timeout' --url "wss://127.0.0.1:$(cat "$dir/silent.port")/ws" \
  --ca-file "$dir/self.pem" --run r
(( SECONDS - started <= 10 )) || { echo "the TLS handshake was not bounded" >&2; exit 1; }
echo "tls: ok"
