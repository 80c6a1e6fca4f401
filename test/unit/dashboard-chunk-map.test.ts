import test from 'ava';
import {
  chunkState,
  ownerReports,
  summariseChunkMap,
  type MapChunk,
  type OwnedChunkStat,
} from '../../services/dashboard/chunk-map.ts';

const chunk = (index: number, owner: number, extra: Partial<MapChunk> = {}): MapChunk => ({
  index,
  ownerNodeId: owner,
  ownerAlive: true,
  ownerRecovering: false,
  lostPages: [],
  ...extra,
});
const stat = (datasetId: number, c: number, live: number, owned = true): OwnedChunkStat => ({
  datasetId,
  chunk: c,
  owned,
  replicaCount: live,
  replicasWanted: 2,
  underReplicated: live < 2,
});

test("each chunk's state comes from the map and its owner's report, lost pages first", (t) => {
  t.is(chunkState(chunk(0, 1), { live: 2, wanted: 2, underReplicated: false }), 'ok');
  t.is(chunkState(chunk(0, 1), { live: 1, wanted: 2, underReplicated: true }), 'under');
  t.is(chunkState(chunk(0, 1), { live: 1, wanted: 2, underReplicated: false }), 'under');
  t.is(chunkState(chunk(0, 1), undefined), 'unknown');
  t.is(chunkState(chunk(0, 1, { ownerAlive: false }), undefined), 'owner-down');
  t.is(chunkState(chunk(0, 1, { ownerAlive: false, lostPages: [{ count: 3 }] }), undefined), 'lost');
  t.is(chunkState(chunk(0, 1, { lostPages: [{ count: 0 }] }), { live: 2, wanted: 2, underReplicated: false }), 'ok');
});

test('owner reports come only from the owners, per dataset and chunk', (t) => {
  const r = ownerReports([
    { chunks: [stat(7, 0, 2), stat(7, 1, 1, false), stat(8, 0, 1)] },
    { chunks: [stat(7, 1, 1)] },
  ]);
  t.deepEqual([...(r.get(7)?.keys() ?? [])].sort(), [0, 1]);
  t.deepEqual(r.get(7)?.get(1), { live: 1, wanted: 2, underReplicated: true });
  t.deepEqual(r.get(8)?.get(0), { live: 1, wanted: 2, underReplicated: true });
  t.is(r.get(9), undefined);
});

test('the chunk map summary counts every chunk by owner and state, and cells stop at the limit', (t) => {
  const chunks = [chunk(0, 1), chunk(1, 2), chunk(2, 1), chunk(3, 3, { ownerAlive: false }), chunk(4, 2)];
  const reports = ownerReports([{ chunks: [stat(1, 0, 2), stat(1, 1, 1), stat(1, 2, 2)] }]).get(1) ?? new Map();
  const { cells, summary } = summariseChunkMap(chunks, reports, 3);
  t.deepEqual(cells, [
    { index: 0, owner: 1, copies: 2, state: 'ok' },
    { index: 1, owner: 2, copies: 1, state: 'under' },
    { index: 2, owner: 1, copies: 2, state: 'ok' },
  ]);
  t.deepEqual(summary, {
    chunks: 5,
    shown: 3,
    byOwner: [
      { owner: 1, chunks: 2 },
      { owner: 2, chunks: 2 },
      { owner: 3, chunks: 1 },
    ],
    byState: { ok: 2, under: 1, unknown: 1, 'owner-down': 1, lost: 0 },
  });
});
