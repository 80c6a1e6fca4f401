#!/usr/bin/env bash
# The long crash-and-restart consistency run, by hand (issue 9; docs/testing.md). It runs the CI chaos test
# (test/chaos/crash-restart.test.ts) with minutes of load and many faults, over a matrix of cluster sizes and
# replication degrees, after one run without faults. Each run prints the chaos summary and keeps summary.json,
# history.jsonl and record.json in its own directory (recheck one with: node --import tsx test/chaos/check.ts DIR).
# Ends with one line per run and exits 1 if any run reported a violation or failed.
#
# Environment (default in brackets):
#   CHAOS_SEED              base seed [random]; run i uses CHAOS_SEED + i, printed with its summary
#   CHAOS_DURATION_S        seconds of load per run [300]
#   CHAOS_MATRIX            runs as "nodes:replicas" pairs [3:2 3:3 4:2 4:3]
#   CHAOS_NODE_KILLS        kill -9 of a node per run [one per 15 s of load]
#   CHAOS_DISPATCHER_KILLS  kill -9 of the dispatcher per run [one per 60 s]
#   CHAOS_PAUSES            SIGSTOP/SIGCONT of a node per run [one per 60 s]
#   CHAOS_RESTARTS          graceful restarts (SIGTERM) of a node per run [one per 120 s]
#   CHAOS_PARTITIONS        cuts of one node's link to the dispatcher, past the lease, per run [one per 60 s]
#   CHAOS_NO_FAULT_S        seconds of a first run with no fault at all, 3 nodes N=2 [60; 0 skips it]
#   CHAOS_OUT_ROOT          where the run directories go [/tmp/hotpot-chaos-<date>]
# and what the test itself reads: CHAOS_ACCOUNTS, CHAOS_DURABILITY (memory|disk), CHAOS_WORKER_SETS, CHAOS_ROLES.
set -uo pipefail
cd "$(dirname "$0")/.."

duration=${CHAOS_DURATION_S:-300}
base_seed=${CHAOS_SEED:-$(( (RANDOM << 15 | RANDOM) ))}
matrix=${CHAOS_MATRIX:-"3:2 3:3 4:2 4:3"}
no_fault_s=${CHAOS_NO_FAULT_S:-60}
root=${CHAOS_OUT_ROOT:-/tmp/hotpot-chaos-$(date +%Y%m%d-%H%M%S)}
node_kills=${CHAOS_NODE_KILLS:-$(( duration / 15 ))}
dispatcher_kills=${CHAOS_DISPATCHER_KILLS:-$(( duration / 60 > 0 ? duration / 60 : 1 ))}
pauses=${CHAOS_PAUSES:-$(( duration / 60 > 0 ? duration / 60 : 1 ))}
restarts=${CHAOS_RESTARTS:-$(( duration / 120 ))}
partitions=${CHAOS_PARTITIONS:-$(( duration / 60 > 0 ? duration / 60 : 1 ))}
mkdir -p "$root"
npm run -s gen:proto

results=()
failed=0
run() { # name nodes replicas seed duration [extra env...]
  local name=$1 nodes=$2 replicas=$3 seed=$4 secs=$5
  shift 5
  local out="$root/$name"
  echo
  echo "=== $name: $nodes nodes, N=$replicas, seed $seed, ${secs}s ($out)"
  env "$@" CHAOS_NODES="$nodes" CHAOS_REPLICAS="$replicas" CHAOS_SEED="$seed" CHAOS_DURATION_S="$secs" \
    CHAOS_OUT="$out" npx ava test/chaos/crash-restart.test.ts
  local status=$?
  local line
  if [ -f "$out/summary.json" ]; then
    line=$(node -e '
      const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      const bad = Object.entries(s.violations).filter(([, n]) => n !== 0).map(([k, n]) => `${k}=${n}`);
      console.log(bad.length ? bad.join(" ") : "0 violations");' "$out/summary.json")
  else
    line="no summary (the run failed before the checker; see its output)"
  fi
  [ "$status" -eq 0 ] || failed=1
  results+=("$name (nodes=$nodes N=$replicas seed=$seed): $line")
}

echo "chaos: base seed $base_seed, ${duration}s per run, matrix '$matrix', output $root"
i=0
if [ "$no_fault_s" -gt 0 ]; then
  run "no-faults" 3 2 "$base_seed" "$no_fault_s" CHAOS_SCHEDULE='[]'
fi
for spec in $matrix; do
  i=$((i + 1))
  run "run-$i-${spec/:/n-N}" "${spec%%:*}" "${spec##*:}" $((base_seed + i)) "$duration" \
    CHAOS_NODE_KILLS="$node_kills" CHAOS_DISPATCHER_KILLS="$dispatcher_kills" CHAOS_PAUSES="$pauses" \
    CHAOS_RESTARTS="$restarts" CHAOS_PARTITIONS="$partitions"
done

echo
echo "=== chaos results (output in $root)"
printf '%s\n' "${results[@]}"
exit "$failed"
