#!/usr/bin/env bash
# YCSB workloads A, B, C and F on examples/kv (a key-value store on one mapped Hotpot dataset) beside Redis, in one
# run, as root (the mmap shim's userfaultfd needs it). Installs Debian's redis-server if missing; bench/ycsb.ts
# starts its own Hotpot cluster, Redis pair and client processes and stops them all at the end.
#   sudo bash bench/ycsb.sh [--quick] [--records N] [--seconds S] [--clients 1,16] [--workloads A,B,C,F]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "bench/ycsb.sh: run as root (the mmap shim's userfaultfd handles kernel-mode faults only for root)" >&2
  exit 2
fi
if ! command -v redis-server >/dev/null; then
  echo "[ycsb] installing Debian's redis-server" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2; }
fi
if [[ ! -f native/build/Release/hotpot_native.node ]]; then
  echo "[ycsb] building the native addon" >&2
  npm run build:native >&2
fi
[[ -d services/generated ]] || npm run gen:proto >&2

# Its own session and process group: everything it starts can be stopped as one group if it dies.
setsid node --import tsx bench/ycsb.ts "$@" &
BENCH_PID=$!
cleanup() {
  if kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  kill -KILL -- "-$BENCH_PID" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait "$BENCH_PID"
