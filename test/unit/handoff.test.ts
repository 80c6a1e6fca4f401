// pickTarget: where a planned handoff sends a chunk (services/node/handoff.ts).
import test from 'ava';
import { pickTarget } from '../../services/node/handoff.ts';

test('a handoff target is another live node, preferring ones without a copy of the chunk, then the least given', (t) => {
  t.is(pickTarget(1, [1], [1], new Map()), null, 'no other live node');
  t.is(pickTarget(1, [1, 2, 3], [1, 2], new Map()), 3, 'node 3 holds no copy yet: N copies remain without node 1');
  t.is(pickTarget(1, [1, 2, 3], [1, 2, 3], new Map()), 2, 'all hold copies: lowest id');
  t.is(pickTarget(1, [1, 2, 3], [1], new Map([[2, 2]])), 3, 'spread: node 2 already got two chunks');
  t.is(pickTarget(2, [1, 3], [2, 1], new Map()), 3, 'the caller need not be in the alive list (it is leaving)');
});
