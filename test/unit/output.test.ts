// The CLI's tables (services/cli/output.ts): columns of any length, and big chunk maps summarised as ranges.
import test from 'ava';
import { groupRuns, table } from '../../services/cli/output.ts';

test('a table of 300 000 rows prints (no spread of a whole column into Math.max)', (t) => {
  const rows = Array.from({ length: 300_000 }, (_, i) => [i, 'x']);
  const out = table(['CHUNK', 'OWNER'], rows);
  t.is(out.split('\n').length, 300_002);
  t.true(out.startsWith('CHUNK   OWNER\n0       x\n'));
});

test('consecutive rows alike but for their index become one range; a gap or a change starts a new one', (t) => {
  const rows: (string | number)[][] = [
    [0, 1, '1,2'],
    [1, 1, '1,2'],
    [2, 1, '1,2'],
    [3, 2, '2,3'],
    [5, 2, '2,3'],
    [6, 2, '2,3'],
    [7, 1, '1,2'],
  ];
  t.deepEqual(groupRuns(rows), [
    ['0-2', '1', '1,2'],
    ['3', '2', '2,3'],
    ['5-6', '2', '2,3'],
    ['7', '1', '1,2'],
  ]);
  t.deepEqual(groupRuns([]), []);
  const big = Array.from({ length: 262_144 }, (_, i) => [i, i % 3, 'yes']);
  t.is(groupRuns(big).length, 262_144, 'rows that differ stay apart');
  t.is(groupRuns(big.map((r) => [r[0] ?? 0, 1, 'yes'])).length, 1);
});
