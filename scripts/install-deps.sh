#!/usr/bin/env bash
# Installs what agentws needs from Debian 12 packages (and npm for the
# JavaScript test peers). Idempotent: packages already present are skipped,
# so `make` can call it every time at almost no cost.
#
#   scripts/install-deps.sh            build + unit/loopback tests
#   scripts/install-deps.sh --interop  + Python and Node peers, Chromium
#   scripts/install-deps.sh --fuzz     + clang-16 and libFuzzer
#   scripts/install-deps.sh --bench    + websocketd (bench/programs.sh compares against it)
#   scripts/install-deps.sh --all      everything
set -euo pipefail

build_pkgs=(g++ cmake make ninja-build pkg-config libboost1.81-dev
  libboost-program-options1.81-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  catch2 libssl-dev openssl libedit-dev)
interop_pkgs=(python3 python3-websockets python3-fastapi python3-uvicorn curl nodejs
  npm chromium tmux iproute2)
fuzz_pkgs=(clang-16 libclang-rt-16-dev)
bench_pkgs=(websocketd)

want=("${build_pkgs[@]}")
for arg in "$@"; do
  case "$arg" in
    --interop) want+=("${interop_pkgs[@]}") ;;
    --fuzz) want+=("${fuzz_pkgs[@]}") ;;
    --bench) want+=("${bench_pkgs[@]}") ;;
    --all) want+=("${interop_pkgs[@]}" "${fuzz_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *) echo "usage: $0 [--interop] [--fuzz] [--bench] [--all]" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${want[@]}"; do
  # nodejs/npm may come from another repository as one package: accept a working node+npm.
  if [[ $pkg == npm ]] && command -v npm >/dev/null; then continue; fi
  if [[ $pkg == nodejs ]] && command -v node >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# npm packages for the JavaScript peers, from the committed lock files.
if [[ " $* " == *" --interop "* || " $* " == *" --all "* ]]; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  for dir in bench/peers/node tests/browser; do
    if [[ -f $root/$dir/package-lock.json && ! -d $root/$dir/node_modules ]]; then
      (cd "$root/$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
  done
fi
