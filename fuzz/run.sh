#!/usr/bin/env bash
# Builds the fuzzers (libFuzzer + ASan + UBSan, clang) in build-fuzz/
# and runs each for SECONDS (default 60) over a fresh copy of its seed corpus.
# Prints executions and coverage per target, and any crash with its input.
# Exits 1 if a fuzzer found something, 2 if it could not build or run.
#
#   fuzz/run.sh [SECONDS]        CC/CXX default to clang-16/clang++-16
#   FUZZ_FLAGS="-jobs=2" fuzz/run.sh 600   extra libFuzzer flags for every target
#
# Debian: apt-get install clang-16 libclang-rt-16-dev nlohmann-json3-dev
set -uo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="$root/build-fuzz"
export CC="${CC:-clang-16}" CXX="${CXX:-clang++-16}"
read -r -a extra_flags <<<"${FUZZ_FLAGS:-}"

if ! command -v "$CXX" >/dev/null; then
  echo "fuzz: $CXX not found (apt-get install clang-16 libclang-rt-16-dev)" >&2
  exit 2
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$here" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null ||
    exit 2
fi
cmake --build "$build" || exit 2

# A dictionary of the protocol's tokens: lets the fuzzer build commands sooner.
dict="$build/protocol.dict"
cat >"$dict" <<'DICT'
"{"
"}"
"["
"]"
":"
","
"\""
"\\u"
"\\ud800"
"\\udc00"
"null"
"true"
"false"
"1e400"
"18446744073709551616"
"-0"
"\"command\""
"\"start_run\""
"\"cancel_run\""
"\"run_id\""
"\"request_id\""
"\"params\""
"\"steps\""
"\"interval_ms\""
"\"event_type\""
"\"payload\""
"\"run_event\""
"\"run_done\""
"\"run_cancelled\""
"\"error\""
"\"step\""
"\"ok\""
"\x0a--8<--\x0a"
"GET /ws HTTP/1.1\x0d\x0a"
"Host: 127.0.0.1\x0d\x0a"
"Upgrade: websocket\x0d\x0a"
"Connection: Upgrade\x0d\x0a"
"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\x0d\x0a"
"Sec-WebSocket-Version: 13\x0d\x0a"
"\x0d\x0a\x0d\x0a"
"\x81\x80\x00\x00\x00\x00"
"\x88\x82\x00\x00\x00\x00\x03\xe8"
"\x89\x80\x00\x00\x00\x00"
DICT

status=0
for target in parse_command event_roundtrip session; do
  work="$build/work/$target"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp "$here/corpus/$target/"* "$work/corpus/"
  echo "== $target: ${seconds}s over $(ls "$work/corpus" | wc -l) seeds"
  "$build/${target}_fuzz" "$work/corpus" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb=4096 -dict="$dict" -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
    "${extra_flags[@]}" >"$work/log" 2>&1
  rc=$?
  # The last status line has the coverage; the final stats have the totals.
  grep -E '^#[0-9]+' "$work/log" | tail -n 1
  grep -E 'stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$work/log"
  artifacts=("$work/artifacts/"*)
  if [[ $rc -ne 0 || -e "${artifacts[0]}" ]]; then
    status=1
    echo "!! $target: finding (exit $rc); log: $work/log"
    grep -E 'ERROR|check failed|runtime error|SUMMARY|Test unit written' "$work/log" | head -n 20
    mkdir -p "$here/artifacts"
    for artifact in "${artifacts[@]}"; do
      [[ -e "$artifact" ]] || continue
      cp "$artifact" "$here/artifacts/${target}-$(basename "$artifact")"
      echo "   input kept as fuzz/artifacts/${target}-$(basename "$artifact")" \
        "(replay: $build/${target}_fuzz <file>)"
    done
  fi
done
exit $status
