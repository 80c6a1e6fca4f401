#!/usr/bin/env bash
# Concurrent committers (issue 13): commits/s, p50/p99 and fdatasyncs per commit with 1..32 committer processes on a
# 3-node Hotpot cluster (durability disk, N=2), beside Redis (SET + WAIT 1 0, appendfsync always) and a C group-commit
# floor at the same concurrency, in one run, as root (the mmap shim's userfaultfd needs it). Installs Debian's
# redis-server if missing, builds the C floor into bench/out/; bench/concurrent.ts starts its own cluster, Redis pair,
# floor and committer processes and stops them all at the end, also on failure or Ctrl-C.
#   sudo bash bench/concurrent.sh [--quick] [--clients 1,2,4,8,16,32] [--seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/common.sh
source bench/lib/common.sh
bench_prepare concurrent redis

mkdir -p bench/out bench/results
gcc -O2 -Wall -Wextra -Werror -pthread -o bench/out/persist2_batch bench/floor/persist2_batch.c

bench_run_orchestrator bench/concurrent.ts "$@"
