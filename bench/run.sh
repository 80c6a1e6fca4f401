#!/usr/bin/env bash
# Issue-3 benchmark: one command, as root. Installs Debian's redis-server if missing, builds the C floors into
# bench/out/, then bench/run.ts starts its own local Hotpot clusters, Redis and the floors, prints the tables and
# writes bench/results/latest.json. Everything it started is stopped at the end, also on failure or Ctrl-C.
#   sudo bash bench/run.sh [--quick]
#   sudo bash bench/run.sh --security N   # only the paired security-cost section, N rounds
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "bench/run.sh: run as root (the mmap shim's userfaultfd handles kernel-mode faults only for root)" >&2
  exit 2
fi
if ! command -v redis-server >/dev/null; then
  echo "[bench] installing Debian's redis-server" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2; }
fi
if [[ ! -f native/build/Release/hotpot_native.node ]]; then
  echo "[bench] building the native addon" >&2
  npm run build:native >&2
fi
[[ -d services/generated ]] || npm run gen:proto >&2

mkdir -p bench/out bench/results
for prog in tcp_fetch persist2; do
  gcc -O2 -Wall -Wextra -Werror -o "bench/out/$prog" "bench/floor/$prog.c"
done

# The orchestrator runs in its own session and process group, so everything it starts (nodes, dispatcher, Redis,
# floors, app processes) can be stopped as one group if it dies or is interrupted; on a normal exit it has already
# stopped all of them itself.
setsid node --import tsx bench/run.ts "$@" &
BENCH_PID=$!
cleanup() {
  if kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true # graceful: run.ts tears its processes down
    for _ in $(seq 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  kill -KILL -- "-$BENCH_PID" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait "$BENCH_PID"
