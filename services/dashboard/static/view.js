// Builds the dashboard's DOM from the server's JSON (see services/dashboard/cluster-reader.ts for its shape).
// Text goes in through textContent only: dataset names and event details come from the cluster.

/** @param {string} tag @param {Record<string, string>} [attrs] @param {...(Node|string|null)} children */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null) el.append(c);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
/** @param {string} tag @param {Record<string, string | number>} attrs */
function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** @param {number} n */
export function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)}${units[i]}`;
}

/** @param {number} ms */
export function formatDuration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

/** @param {number} x */
function formatRate(x) {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

/** A colour per owner node, stable across reloads. @param {number} id */
export function ownerColour(id) {
  return `hsl(${(id * 137.508) % 360} 55% 42%)`;
}

/** @param {string} label @param {string} value @param {string} id @param {boolean} [bad] */
function tile(label, value, id, bad = false) {
  return h(
    'div',
    { class: bad ? 'tile bad' : 'tile' },
    h('div', { class: 'value', id }, value),
    h('div', { class: 'label' }, label),
  );
}

export function renderTiles(snapshot, rates) {
  const alive = snapshot.nodes.filter((n) => n.state === 'alive').length;
  const under = snapshot.datasets.reduce(
    (a, d) => a + (d.summary ? d.summary.byState.under + d.summary.byState['owner-down'] + d.summary.byState.lost : 0),
    0,
  );
  const totals = rates ? rates.totals : { commits: 0, aborts: 0, faults: 0 };
  return [
    tile('nodes', String(snapshot.nodes.length), 'node-count'),
    tile('alive', String(alive), 'nodes-alive', alive < snapshot.nodes.length),
    tile('datasets', String(snapshot.datasets.length), 'dataset-count'),
    tile('commits (total)', String(totals.commits), 'commit-total'),
    tile('aborts (total)', String(totals.aborts), 'abort-total', totals.aborts > 0),
    tile('faults (total)', String(totals.faults), 'fault-total'),
    tile('commits/s', rates ? formatRate(rates.commitsPerS) : '-', 'commit-rate'),
    tile('aborts/s', rates ? formatRate(rates.abortsPerS) : '-', 'abort-rate', rates !== null && rates.abortsPerS > 0),
    tile('faults/s', rates ? formatRate(rates.faultsPerS) : '-', 'fault-rate'),
    tile('chunks short of N copies', String(under), 'under-replicated', under > 0),
  ];
}

export function renderNodes(snapshot, nowMs) {
  const cols = [
    'id',
    'identity',
    'state',
    'lease left',
    'state epoch',
    'epoch seen',
    'up',
    'chunks owned',
    'commits',
    'aborts',
    'faults',
    'apps',
    'locked pages',
    'pool',
    'events recorded',
    'control',
  ];
  const rows = snapshot.nodes.map((n) => {
    const st = n.stats;
    const cell = (v, cls = '') => h('td', cls ? { class: cls } : {}, v);
    const lease =
      n.state === 'alive' && n.leaseExpiresUnixMs > 0 ? formatDuration(Math.max(0, n.leaseExpiresUnixMs - nowMs)) : '-';
    return h(
      'tr',
      { class: n.state === 'alive' ? 'alive' : 'not-alive', 'data-node': String(n.id) },
      cell(String(n.id)),
      cell(n.identity, 'text'),
      cell(n.state + (st && !st.joined ? ' (not joined)' : ''), 'text'),
      cell(lease),
      cell(String(n.stateEpoch)),
      cell(st ? String(st.epoch) : '-'),
      cell(st ? formatDuration(st.uptimeMs) : '-'),
      cell(st ? String(st.chunksOwned) : '-'),
      cell(st ? String(st.commits) : '-'),
      cell(st ? String(st.aborts) : '-'),
      cell(st ? String(st.faults) : '-'),
      cell(st ? String(st.sessions) : '-'),
      cell(st ? String(st.lockedPages) : '-'),
      cell(st ? formatBytes(st.poolBytesResident) : '-'),
      cell(st ? st.eventMask : (n.statsError ?? '-'), 'text'),
      cell(n.controlAddress, 'text'),
    );
  });
  if (rows.length === 0) return h('p', { class: 'muted' }, 'no members');
  return h('table', { id: 'nodes-table' }, h('tr', {}, ...cols.map((c) => h('th', {}, c))), ...rows);
}

const STATE_TEXT = {
  ok: 'N copies',
  under: 'under-replicated',
  unknown: 'owner did not report',
  'owner-down': 'owner down',
  lost: 'pages lost',
};

export function renderDataset(d) {
  const meta = `id ${d.id} · ${formatBytes(d.sizeBytes)} · ${d.mode} · N=${d.replicas} · ${d.chunkCount} chunks of ${formatBytes(d.chunkSizeBytes)}`;
  const box = h(
    'div',
    { class: 'dataset', 'data-dataset': d.name },
    h('strong', { class: 'dataset-name' }, d.name),
    ' ',
    h('span', { class: 'meta' }, meta),
  );
  if (d.error) box.append(h('p', { class: 'errors' }, d.error));
  const sum = d.summary;
  if (!sum) return box;
  const states = Object.entries(sum.byState)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${STATE_TEXT[k] ?? k}`)
    .join(', ');
  const owners = h(
    'div',
    { class: 'legend' },
    ...sum.byOwner.map((o) =>
      h('span', {}, h('i', { style: `background:${ownerColour(o.owner)}` }), `node ${o.owner}: ${o.chunks}`),
    ),
  );
  box.append(
    h(
      'div',
      {},
      h('span', { class: 'chunk-count' }, String(sum.chunks)),
      ' chunks: ',
      h('span', { class: 'chunk-states' }, states || '-'),
    ),
    owners,
  );
  const grid = h('div', { class: 'chunks' });
  for (const c of d.cells) {
    const title = `chunk ${c.index}: owner ${c.owner}, ${c.copies === null ? '?' : c.copies}/${d.replicas} live copies (${STATE_TEXT[c.state] ?? c.state})`;
    grid.append(
      h(
        'div',
        {
          class: `chunk ${c.state}`,
          style: `background-color:${ownerColour(c.owner)}`,
          title,
          'data-chunk': String(c.index),
        },
        c.copies === null ? '?' : String(c.copies),
      ),
    );
  }
  box.append(grid);
  if (sum.shown < sum.chunks)
    box.append(
      h('p', { class: 'muted' }, `first ${sum.shown} of ${sum.chunks} chunks drawn; the counts above cover all`),
    );
  return box;
}

/**
 * A line plot of series over time, as inline SVG.
 * @param {{ name: string, colour: string, values: (number | null)[] }[]} series
 */
export function linePlot(series, width = 560, height = 170) {
  const pad = { l: 44, r: 8, t: 8, b: 16 };
  const n = Math.max(2, ...series.map((x) => x.values.length));
  const max = Math.max(1, ...series.flatMap((x) => x.values.filter((v) => v !== null)));
  const X = (i) => pad.l + (i * (width - pad.l - pad.r)) / (n - 1);
  const Y = (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' });
  svg.append(s('line', { x1: pad.l, y1: Y(0), x2: width - pad.r, y2: Y(0), stroke: '#ccc' }));
  svg.append(s('line', { x1: pad.l, y1: Y(max), x2: width - pad.r, y2: Y(max), stroke: '#eee' }));
  const top = s('text', { x: 2, y: Y(max) + 4 });
  top.textContent = max >= 100 ? max.toFixed(0) : max.toFixed(1);
  const zero = s('text', { x: 2, y: Y(0) });
  zero.textContent = '0';
  svg.append(top, zero);
  // The first series is drawn last, on top: it is the one a reader looks for (commits).
  for (const x of [...series].reverse()) {
    const pts = x.values
      .map((v, i) => (v === null ? null : `${X(i + n - x.values.length).toFixed(1)},${Y(v).toFixed(1)}`))
      .filter((p) => p !== null);
    if (pts.length > 1)
      svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: x.colour, 'stroke-width': 1.6 }));
    // A value with no neighbour (a latency seen in one interval only) is a dot: it has no line to be part of.
    x.values.forEach((v, i) => {
      if (v === null || (x.values[i - 1] ?? null) !== null || (x.values[i + 1] ?? null) !== null) return;
      svg.append(s('circle', { cx: X(i + n - x.values.length), cy: Y(v), r: 2.5, fill: x.colour }));
    });
  }
  const legend = h(
    'div',
    { class: 'legend' },
    ...series.map((x) => {
      const last = x.values.findLast((v) => v !== null);
      return h(
        'span',
        {},
        h('i', { style: `background:${x.colour}` }),
        `${x.name} ${last === null || last === undefined ? '-' : formatRate(last)}`,
      );
    }),
  );
  return [svg, legend];
}

export function ratePlot(history) {
  return linePlot([
    { name: 'commits/s', colour: '#1565c0', values: history.map((r) => r.commitsPerS) },
    { name: 'aborts/s', colour: '#c62828', values: history.map((r) => r.abortsPerS) },
    { name: 'faults/s', colour: '#2e7d32', values: history.map((r) => r.faultsPerS) },
  ]);
}

export function latencyPlot(history) {
  const pick = (f) => history.map((r) => f(r) ?? null);
  return linePlot([
    { name: 'commit p50', colour: '#1565c0', values: pick((r) => r.commitLatency?.p50Us) },
    { name: 'commit p99', colour: '#7e57c2', values: pick((r) => r.commitLatency?.p99Us) },
    { name: 'fault p50', colour: '#2e7d32', values: pick((r) => r.faultLatency?.p50Us) },
    { name: 'fault p99', colour: '#e69500', values: pick((r) => r.faultLatency?.p99Us) },
  ]);
}

export function renderEvent(e) {
  const parts = [new Date(e.timeMs).toISOString().slice(11, 23), `node ${e.nodeId}`, e.kind];
  if (e.datasetId) parts.push(`ds ${e.datasetId}`);
  // Page ranges mean something for these kinds only (as in `hotpot events`).
  if (/^(fault|replica|chunk_)|^(fetch_served|rereplicated|coherence_push|pages_lost)$/.test(e.kind)) {
    parts.push(`page ${e.page}+${e.count}`);
  }
  if (e.peerNodeId) parts.push(`peer ${e.peerNodeId}`);
  if (e.txid) parts.push(e.kind === 'membership' || e.kind === 'fenced' ? `epoch ${e.txid}` : `tx ${e.txid}`);
  if (e.latencyUs) parts.push(`${e.latencyUs.toFixed(1)}us`);
  if (e.status && e.status !== 'OK') parts.push(e.status);
  if (e.detail) parts.push(e.detail);
  return h('li', { class: e.kind }, parts.join('  '));
}
