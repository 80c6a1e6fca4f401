// The CLI's tables (services/cli/output.ts): columns of any length, and big chunk maps summarised as ranges.
import test from 'ava';
import { groupByPattern, groupRuns, strides, strideText, table } from '../../services/cli/output.ts';

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

test('indices become arithmetic progressions: ranges, every n-th, and lone indices', (t) => {
  t.deepEqual(strides([]), []);
  t.deepEqual(strides([5]), [{ first: 5, last: 5, step: 1, count: 1 }]);
  t.deepEqual(strides([0, 1, 2, 3]), [{ first: 0, last: 3, step: 1, count: 4 }]);
  t.deepEqual(strides([0, 3, 6, 9, 20, 21]), [
    { first: 0, last: 9, step: 3, count: 4 },
    { first: 20, last: 21, step: 1, count: 2 },
  ]);
  // Two indices far apart are two lone ones, not a progression of two.
  t.deepEqual(strides([4, 90]), [
    { first: 4, last: 4, step: 1, count: 1 },
    { first: 90, last: 90, step: 1, count: 1 },
  ]);
  t.is(strideText({ first: 0, last: 262_141, step: 3, count: 87_381 }), '0-262141 every 3rd');
  t.is(strideText({ first: 2, last: 10, step: 2, count: 5 }), '2-10 every 2nd');
  t.is(strideText({ first: 0, last: 1023, step: 1, count: 1024 }), '0-1023');
  t.is(strideText({ first: 7, last: 7, step: 1, count: 1 }), '7');
});

test('a 1 TiB round-robin chunk map groups into one row per owner; exceptions show as their own rows', (t) => {
  // 262 144 chunks over 3 nodes, N = 2, round robin; chunk 100 failed over to node 3 (era 1).
  const rows = Array.from({ length: 262_144 }, (_, i) => {
    const owner = i === 100 ? 3 : 1 + (i % 3);
    return [i, owner, `${String(owner)},${String(1 + (owner % 3))}`, 'yes', i === 100 ? 1 : 0];
  });
  const groups = groupByPattern(rows);
  t.is(groups.length, 4);
  t.is(
    groups.reduce((n, g) => n + g.count, 0),
    262_144,
  );
  t.deepEqual(groups[0], { count: 87_382, which: '0-262143 every 3rd', rest: ['1', '1,2', 'yes', '0'] });
  t.deepEqual(groups[1], {
    count: 87_380,
    which: '1-97 every 3rd, 103-262141 every 3rd',
    rest: ['2', '2,3', 'yes', '0'],
  });
  t.deepEqual(groups.at(-1), { count: 1, which: '100', rest: ['3', '3,1', 'yes', '1'] });
  // Past maxStrides: the first ones and how many more.
  const scattered = groupByPattern(
    [1, 5, 11, 19, 29, 41].map((i) => [i, 'x']),
    2,
  );
  t.deepEqual(scattered, [{ count: 6, which: '1, 5, … (4 more)', rest: ['x'] }]);
});
