// Crash-and-restart consistency (issue 9, "Proof"): bank transfers with snapshot readers (SDK and gRPC), a shared
// read-modify-write counter (SDK transactions with and without a read set, gRPC commits) and MRSW increments, from
// 12 processes on 3 nodes, while nodes are killed with SIGKILL, the dispatcher is killed and a node is paused. The
// checker (checker.ts) recomputes everything from the recorded history and the final state read on every node.
// Seeded: the seed is printed first; CHAOS_SEED=<seed> replays the same schedule and workload choices.
// scripts/chaos.sh runs the long version through the same test with CHAOS_* parameters (docs/testing.md).
import test from 'ava';
import { chaosConfigFromEnv, runChaos } from './run.ts';

test('bank, counters and MRSW keep every invariant across kill -9 of nodes and the dispatcher', async (t) => {
  const config = chaosConfigFromEnv();
  // The load plus 2 minutes for the cluster start, stopping, quiescence and the final reads (the CI run takes
  // about 75 s in all; this only bounds a hang); scripts/chaos.sh's long runs scale with their duration.
  t.timeout(config.durationMs + 120_000);
  const s = await runChaos(t, config);
  t.log(`seed ${String(s.seed)}; summary above ([chaos] lines)`);
  // The failure's own lines, for a CI record that keeps only the test's output.
  const bad = Object.entries(s.violations).filter(([, n]) => n !== 0);
  if (bad.length > 0) {
    t.log(`violations: ${bad.map(([k, n]) => `${k} ${String(n)}`).join(', ')}`);
    for (const w of s.wrongSums.slice(0, 3)) {
      t.log(
        `wrong sum ${String(w.sum)} (${String(w.delta)}) by ${w.worker} on n${String(w.node + 1)} at +${String(w.t)} ms, after ${w.after}`,
      );
    }
  }
  // Every worker did something: otherwise zero violations would prove nothing.
  for (const [name, w] of Object.entries(s.workers)) {
    t.true((w.commits?.acked ?? 0) + (w.reads?.ok ?? 0) > 0, `${name} made progress`);
  }
  t.deepEqual(
    Object.entries(s.violations).filter(([, n]) => n !== 0),
    [],
    `violations (seed ${String(s.seed)})`,
  );
});
