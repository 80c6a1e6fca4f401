#!/usr/bin/env bash
# Issue-3 benchmark: one command, as root. Installs Debian's redis-server if missing, builds the C floors into
# bench/out/, then bench/run.ts starts its own local Hotpot clusters, Redis and the floors, prints the tables and
# writes bench/results/latest.json. Everything it started is stopped at the end, also on failure or Ctrl-C.
#   sudo bash bench/run.sh [--quick]
#   sudo bash bench/run.sh --security N   # only the paired security-cost section, N rounds
#   sudo bash bench/run.sh --seqread [--quick]   # only section 1b, the sequential cold read
#   sudo bash bench/run.sh --pin-apart   # only section 1: app and node a on vCPU 0, the rest on vCPU 1
#   add --cold-memory to skip the warm-up of fresh memory before sections 1 and 1b (docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/common.sh
source bench/lib/common.sh
bench_prepare bench redis

mkdir -p bench/out bench/results
for prog in tcp_fetch persist2; do
  gcc -O2 -Wall -Wextra -Werror -o "bench/out/$prog" "bench/floor/$prog.c"
done

bench_run_orchestrator bench/run.ts "$@"
