#!/usr/bin/env bash
# Issue-4 benchmark (consistency workloads of the paper): one command, as root.
#   sudo bash bench/consistency.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "bench/consistency.sh: run as root (userfaultfd kernel-mode faults)" >&2
  exit 2
fi
[[ -f native/build/Release/hotpot_native.node ]] || npm run build:native >&2
[[ -d services/generated ]] || npm run gen:proto >&2
mkdir -p bench/out bench/results
gcc -O2 -Wall -Wextra -Werror -o bench/out/persist2 bench/floor/persist2.c
setsid node --import tsx bench/consistency.ts "$@" &
PID=$!
cleanup() {
  if kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
  fi
  kill -KILL -- "-$PID" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait "$PID"
