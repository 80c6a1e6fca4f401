// Rechecks a saved chaos run without running anything: node --import tsx test/chaos/check.ts <dir>, where <dir>
// holds the history.jsonl and record.json a run wrote (CHAOS_OUT, or a run with a violation). Prints the summary;
// exit status 1 if any violation count is not 0.
import { check, format, loadRecord } from './checker.ts';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: node --import tsx test/chaos/check.ts <run dir>\n');
  process.exit(2);
}
const summary = check(loadRecord(dir));
process.stdout.write(format(summary) + '\n');
process.exit(Object.values(summary.violations).some((x) => x !== 0) ? 1 : 0);
