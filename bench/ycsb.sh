#!/usr/bin/env bash
# YCSB workloads A, B, C and F on examples/kv (a key-value store on one mapped Hotpot dataset) beside Redis, in one
# run, as root (the mmap shim's userfaultfd needs it). Installs Debian's redis-server if missing; bench/ycsb.ts
# starts its own Hotpot cluster, Redis pair and client processes and stops them all at the end.
#   sudo bash bench/ycsb.sh [--quick] [--records N] [--seconds S] [--clients 1,16] [--workloads A,B,C,F]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/common.sh
source bench/lib/common.sh
bench_prepare ycsb redis

bench_run_orchestrator bench/ycsb.ts "$@"
