// The dashboard page: loads a snapshot, then follows the server's event stream (samples and node events).
import { h, latencyPlot, ratePlot, renderDataset, renderEvent, renderNodes, renderTiles } from './view.js';

const MAX_EVENTS = 200;
const state = { snapshot: null, rates: null, history: [], historyMax: 120 };

const $ = (id) => document.getElementById(id);

function render() {
  const { snapshot, rates, history } = state;
  if (!snapshot) return;
  $('cluster').textContent =
    `dispatcher ${snapshot.dispatcher} · membership epoch ${snapshot.epoch} · sampled ${new Date(snapshot.atMs).toLocaleTimeString()}`;
  $('errors').replaceChildren(...snapshot.errors.map((e) => h('li', {}, e)));
  $('tiles').replaceChildren(...renderTiles(snapshot, rates));
  $('nodes').replaceChildren(renderNodes(snapshot, Date.now()));
  $('plot-rates').replaceChildren(...ratePlot(history));
  $('plot-latency').replaceChildren(...latencyPlot(history));
  $('datasets').replaceChildren(
    ...(snapshot.datasets.length ? snapshot.datasets.map(renderDataset) : [h('p', { class: 'muted' }, 'no datasets')]),
  );
  document.body.dataset.state = 'live';
}

function addEvents(events) {
  const list = $('events');
  // A batch holds several nodes' events: newest first means by time, not by arrival.
  for (const e of [...events].sort((a, b) => a.timeMs - b.timeMs)) list.prepend(renderEvent(e));
  while (list.childElementCount > MAX_EVENTS) list.lastElementChild?.remove();
}

function setStatus(text, cls) {
  const el = $('status');
  el.textContent = text;
  el.className = `status ${cls}`;
}

function showError(message) {
  $('errors').replaceChildren(h('li', {}, message));
}

async function start() {
  try {
    const res = await fetch('/api/snapshot');
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ?? `HTTP ${res.status}`);
    state.snapshot = body.snapshot;
    state.rates = body.rates;
    state.history = body.history;
    state.historyMax = Math.max(state.historyMax, body.history.length);
    render();
    addEvents(body.events);
  } catch (e) {
    showError(`could not load the snapshot: ${e instanceof Error ? e.message : String(e)}`);
  }
  const stream = new EventSource('/api/stream');
  stream.addEventListener('open', () => setStatus('live', 'live'));
  stream.addEventListener('error', () => setStatus('disconnected: retrying', 'down'));
  stream.addEventListener('sample', (m) => {
    const { snapshot, rates } = JSON.parse(m.data);
    state.snapshot = snapshot;
    if (rates) {
      state.rates = rates;
      state.history.push(rates);
      if (state.history.length > state.historyMax) state.history.shift();
    }
    render();
  });
  stream.addEventListener('events', (m) => addEvents(JSON.parse(m.data)));
}

void start();
