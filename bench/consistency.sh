#!/usr/bin/env bash
# Issue-4 benchmark (consistency workloads of the paper): one command, as root.
#   sudo bash bench/consistency.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
source bench/lib/common.sh
bench_prepare consistency
mkdir -p bench/out bench/results
gcc -O2 -Wall -Wextra -Werror -o bench/out/persist2 bench/floor/persist2.c
bench_run_orchestrator bench/consistency.ts "$@"
