#!/usr/bin/env bash
# Many seeds of the deterministic simulation (native/test/sim_test.cc; docs/design/engine.md "Deterministic
# simulation"), in parallel, by hand. CI runs a bounded number of seeds inside `make -C native/test`; this runs
# SIM_SEEDS seeds from SIM_FIRST_SEED in JOBS parallel batches and prints one line per seed. A failing seed prints
# its trail and how to rerun it alone (SIM_SEED=<seed> native/test/out/rel/sim_test, or with SAN=1 the san build).
#
# Environment (default in brackets):
#   SIM_FIRST_SEED  first seed [1000]
#   SIM_SEEDS       number of seeds [500]
#   SIM_OPS         operations per seed [250]
#   JOBS            parallel batches [number of CPUs]
#   SAN             1: the ASan/UBSan build [0]
set -uo pipefail
cd "$(dirname "$0")/.."

first=${SIM_FIRST_SEED:-1000}
count=${SIM_SEEDS:-500}
jobs=${JOBS:-$(nproc)}
san=${SAN:-0}
out=native/test/out/$([ "$san" = 1 ] && echo san || echo rel)
make -s -C native/test SAN="$san" "${out#native/test/}/sim_test" || exit 1
logdir=$(mktemp -d /tmp/hotpot-sim-XXXXXX)
per=$(( (count + jobs - 1) / jobs ))
pids=()
for ((j = 0; j < jobs; j++)); do
  from=$(( first + j * per ))
  n=$(( from + per > first + count ? first + count - from : per ))
  (( n > 0 )) || continue
  SIM_FIRST_SEED=$from SIM_SEEDS=$n HOTPOT_TEST_FILTER=RandomSchedules "$out/sim_test" >"$logdir/batch-$j.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
grep -h "^sim: seed .* ok:" "$logdir"/batch-*.log | sort -t' ' -k3 -n
ok=$(grep -h "^sim: seed .* ok:" "$logdir"/batch-*.log | wc -l)
if (( failed )); then
  for f in "$logdir"/batch-*.log; do
    grep -q "FAILED" "$f" && { echo "---- $f"; grep -v "^\[" "$f" | tail -60; }
  done
fi
echo "sim: $ok of $count seeds ok (logs in $logdir)"
exit $failed
