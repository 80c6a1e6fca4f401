// `hotpot --help` names what only the environment sets (logs, traces, metrics, the owner wait), beside the flags.
import { spawnSync } from 'node:child_process';
import test from 'ava';
import { hotpotBin } from '../../services/common/paths.ts';

test('the help lists the environment variables of logs, traces, metrics and timeouts', (t) => {
  const r = spawnSync(process.execPath, [hotpotBin, '--help'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  for (const v of [
    '--dispatcher',
    'HOTPOT_LOG_LEVEL',
    'HOTPOT_LOG_FORMAT',
    'HOTPOT_TRACES_EXPORTER',
    'HOTPOT_METRICS_EXPORTER',
    'HOTPOT_PROMETHEUS_PORT',
    'HOTPOT_OWNER_WAIT_MS',
  ]) {
    t.true(r.stdout.includes(v), v);
  }
});
