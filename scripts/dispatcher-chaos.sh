#!/usr/bin/env bash
# The long dispatcher failover run, by hand (issue 14; docs/operations.md "The dispatcher failover run"). It runs the
# CI failover test (test/integration/dispatcher-etcd-chaos.test.ts: a 3-member etcd, 3 dispatchers, 3 nodes, N = 2,
# dataset, MRSW and MRMW clients, one etcd member killed midway) with many kill -9s of the leading dispatcher, and
# prints its figures: takeover time p50/max, dispatcher exits nobody asked for, MRMW commits and their longest gap,
# page reads, attempts by outcome, and the checker's violations. Exits non-zero if the run failed.
#
# Environment (default in brackets):
#   DCHAOS_KILLS    kill -9s of the leading dispatcher [20]
#   DCHAOS_RUNS     runs one after another [1]
#   DCHAOS_OUT      where each run's TAP output goes [/tmp/hotpot-dchaos-<date>]
# Needs etcd (Debian: apt-get install etcd-server; or HOTPOT_TEST_ETCD=/path/to/etcd) and a built tree
# (npm run build:native && npm run build).
set -uo pipefail
cd "$(dirname "$0")/.."

kills=${DCHAOS_KILLS:-20}
runs=${DCHAOS_RUNS:-1}
out=${DCHAOS_OUT:-/tmp/hotpot-dchaos-$(date +%Y%m%d-%H%M%S)}
if ! [[ $kills =~ ^[0-9]+$ ]] || ((kills < 1)); then
  echo "DCHAOS_KILLS must be a whole number >= 1 (got '$kills')" >&2
  exit 2
fi
if ! [[ $runs =~ ^[0-9]+$ ]] || ((runs < 1)); then
  echo "DCHAOS_RUNS must be a whole number >= 1 (got '$runs')" >&2
  exit 2
fi
mkdir -p "$out"

failed=0
for ((r = 1; r <= runs; r++)); do
  log="$out/run-$r.tap"
  echo "== run $r/$runs: $kills leader kills (log: $log)"
  start=$(date +%s)
  HOTPOT_DCHAOS_KILLS=$kills npx ava --timeout $((kills * 60 + 300))s --tap \
    test/integration/dispatcher-etcd-chaos.test.ts --match 'repeated kill -9*' >"$log" 2>&1
  rc=$?
  # The figures, the takeovers, the attempts, anything unplanned and every violation the checker found.
  grep -E '^#   (FIGURES|takeovers|attempts|longest|node warnings|unplanned|data path|VIOLATION|etcd member)' "$log" | sed 's/^#   /  /'
  echo "  exit $rc after $(($(date +%s) - start)) s"
  if ((rc != 0)); then
    failed=1
    grep -E '^not ok|message:' "$log" | sed 's/^/  /'
  fi
done
exit $failed
