// The dashboard's one script. It follows the coordinator's event stream
// (server-sent events) and changes the page in place: grid cells as jobs move,
// learning curves as epochs arrive, and the server-rendered regions marked
// data-live when an event of their kinds (data-on) arrives. No polling, no
// framework, no build step; every text goes in as a text node, never as HTML.
'use strict';

(() => {
  const body = document.body;
  const page = body.dataset.page;
  if (!page || page === 'login') return;
  const sweep = body.dataset.sweep || null;
  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
  const SVG = 'http://www.w3.org/2000/svg';
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd',
    '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  const pct = (x) => (100 * x).toFixed(2) + '%';

  // Server-rendered regions, fetched again (at most every 400 ms) on events.
  const regions = [...document.querySelectorAll('[data-live]')].map((el) => ({
    el, on: new Set((el.dataset.on || '').split(' ')), timer: null,
  }));
  function refresh(region) {
    if (region.timer) return;
    region.timer = setTimeout(async () => {
      region.timer = null;
      try {
        const response = await fetch(region.el.dataset.live, { credentials: 'same-origin' });
        if (response.ok) region.el.innerHTML = await response.text();
        if (region.el.id === 'grid') updateProgress();
      } catch (e) { /* the next event tries again */ }
    }, 400);
  }
  function touch(kind, event) {
    for (const region of regions) {
      if (!region.on.has(kind)) continue;
      const job = region.el.dataset.job;
      if (job && event && event.job_id && event.job_id !== job) continue;
      refresh(region);
    }
  }

  // The sweep page: grid cells and learning curves.
  const curves = new Map(); // job id -> { variant, seed, val_acc: [], val_loss: [] }
  let drawTimer = null;

  async function loadSnapshot() {
    try {
      const response = await fetch('/api/v1/sweeps/' + encodeURIComponent(sweep) + '/curves',
        { credentials: 'same-origin' });
      if (!response.ok) return;
      const snapshot = await response.json();
      curves.clear();
      for (const job of snapshot.jobs) curves.set(job.job_id, job);
      scheduleDraw();
    } catch (e) { /* drawn on the next event */ }
  }

  function setText(cell, selector, text) {
    const span = cell.querySelector(selector);
    if (span && text !== undefined) span.textContent = text;
  }

  function updateCell(jobId, fields) {
    const cell = document.getElementById('cell-' + jobId);
    if (!cell) { touch('sweep'); return; }
    if (fields.state) cell.className = 'cell st-' + fields.state;
    setText(cell, '.state', fields.state);
    if (fields.epochs) setText(cell, '.ep', fields.epoch + '/' + fields.epochs);
    setText(cell, '.acc', fields.acc);
    setText(cell, '.wk', fields.worker);
    updateProgress();
  }

  // The progress bar, recounted from the grid's cells.
  function updateProgress() {
    const bar = document.querySelector('#progress .progress');
    if (!bar) return;
    const cells = [...document.querySelectorAll('#grid td.cell[id]')];
    const count = (...states) => cells.filter((c) => states.some((s) => c.classList.contains('st-' + s))).length;
    const total = cells.length || 1;
    const done = 100 * count('succeeded') / total;
    const failed = 100 * count('failed', 'cancelled') / total;
    const running = 100 * count('running', 'leased') / total;
    const ended = count('succeeded', 'failed', 'cancelled');
    const set = (selector, x, width) => {
      const rect = bar.querySelector(selector);
      if (rect) { rect.setAttribute('x', x.toFixed(2)); rect.setAttribute('width', width.toFixed(2)); }
    };
    set('rect.done', 0, done);
    set('rect.failed', done, failed);
    set('rect.running', done + failed, running);
    const label = bar.querySelector('span');
    if (label) label.textContent = ended + '/' + cells.length + (ended === cells.length ? ' · finished' : '');
  }

  function onEpoch(e) {
    let job = curves.get(e.job_id);
    if (!job) {
      job = { variant: e.variant, seed: e.seed, val_acc: [], val_loss: [] };
      curves.set(e.job_id, job);
    }
    job.val_acc[e.metrics.epoch - 1] = e.metrics.val_acc;
    job.val_loss[e.metrics.epoch - 1] = e.metrics.val_loss;
    updateCell(e.job_id, {
      state: 'running', epoch: e.metrics.epoch, epochs: e.epochs,
      acc: 'val ' + pct(e.metrics.val_acc),
    });
    scheduleDraw();
  }

  function onJob(job) {
    const fields = { state: job.state, epoch: job.epoch, epochs: job.epochs, worker: job.worker };
    if (job.test_acc !== null && job.test_acc !== undefined) fields.acc = 'test ' + pct(job.test_acc);
    else if (job.state === 'pending') fields.acc = '';
    updateCell(job.job_id, fields);
  }

  function scheduleDraw() {
    if (drawTimer) return;
    drawTimer = setTimeout(() => { drawTimer = null; drawCurves(); }, 250);
  }

  // Mean and sample std over seeds of metric `key`, per epoch.
  function bands(jobs, key, scale) {
    const out = [];
    for (let i = 0; ; i++) {
      const values = jobs.map((j) => j[key][i])
        .filter((v) => typeof v === 'number').map((v) => scale * v);
      if (values.length === 0) {
        if (jobs.some((j) => j[key].length > i)) continue;
        return out;
      }
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      const variance = values.length > 1
        ? values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1) : 0;
      out.push({ epoch: i + 1, mean, std: Math.sqrt(variance), n: values.length });
    }
  }

  function niceTicks(lo, hi, count) {
    const span = hi - lo || 1;
    const step0 = span / count;
    const mag = 10 ** Math.floor(Math.log10(step0));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || mag * 10;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
    return ticks;
  }

  function node(tag, attrs, parent, text) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    if (parent) parent.appendChild(el);
    return el;
  }

  // The legend goes under the plot, in columns as wide as the longest name,
  // so that names are shown whole: grid variants such as
  // learning_rate-0.001_width-32 and ..._width-64 differ only at the end.
  const LEGEND_ROW = 18, CHAR_W = 6.4; // the legend's 11px font, a little generously
  function legendLayout(names, width) {
    const longest = Math.max(0, ...names.map((n) => n.length));
    const column = Math.min(width, 22 + longest * CHAR_W + 16);
    const columns = Math.max(1, Math.floor(width / column));
    return { column, columns, rows: Math.ceil(names.length / columns), chars: Math.floor((width - 22) / CHAR_W) };
  }
  // A name longer than the whole chart loses its middle, never its end.
  function fit(name, chars) {
    if (name.length <= chars) return name;
    const tail = Math.ceil((chars - 1) / 2);
    return name.slice(0, chars - 1 - tail) + '…' + name.slice(name.length - tail);
  }

  function chart(title, key, scale, unit, variants) {
    const W = 620, PLOT_H = 320, L = 62, R = 20, T = 30, B = 44;
    const series = variants.map(([name, jobs]) => [name, bands(jobs, key, scale)]);
    const drawn = series.filter(([, s]) => s.length > 0).map(([name]) => name);
    const legend = legendLayout(drawn, W - 2 * 14);
    const H = PLOT_H + (drawn.length ? legend.rows * LEGEND_ROW + 8 : 0);
    const svg = node('svg', { class: 'curve', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
    node('text', { x: L, y: 18, class: 'title' }, svg, title);
    const points = series.flatMap(([, s]) => s);
    if (points.length === 0) {
      node('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, svg, 'no epoch reported yet');
      return svg;
    }
    const maxEpoch = Math.max(2, ...points.map((p) => p.epoch));
    let lo = Math.min(...points.map((p) => p.mean - p.std));
    let hi = Math.max(...points.map((p) => p.mean + p.std));
    const pad = (hi - lo) * 0.06 || Math.abs(hi) * 0.01 || 1;
    lo -= pad; hi += pad;
    const x = (e) => L + (e - 1) / (maxEpoch - 1) * (W - L - R);
    const y = (v) => T + (hi - v) / (hi - lo) * (PLOT_H - T - B);
    for (const t of niceTicks(lo, hi, 5)) {
      node('line', { x1: L, x2: W - R, y1: y(t), y2: y(t), class: 'grid' }, svg);
      node('text', { x: L - 6, y: y(t) + 4, 'text-anchor': 'end', class: 'tick' }, svg, String(t));
    }
    for (const e of niceTicks(1, maxEpoch, Math.min(10, maxEpoch - 1)).filter((e) => Number.isInteger(e) && e >= 1)) {
      node('text', { x: x(e), y: PLOT_H - B + 16, 'text-anchor': 'middle', class: 'tick' }, svg, String(e));
    }
    node('line', { x1: L, x2: W - R, y1: PLOT_H - B, y2: PLOT_H - B, class: 'axis' }, svg);
    node('line', { x1: L, x2: L, y1: T, y2: PLOT_H - B, class: 'axis' }, svg);
    node('text', { x: (L + W - R) / 2, y: PLOT_H - 8, 'text-anchor': 'middle', class: 'label' }, svg, 'epoch');
    node('text', { x: 14, y: (T + PLOT_H - B) / 2, 'text-anchor': 'middle', class: 'label',
      transform: `rotate(-90 14 ${(T + PLOT_H - B) / 2})` }, svg, unit);
    series.forEach(([name, s], i) => {
      if (s.length === 0) return;
      const color = PALETTE[i % PALETTE.length];
      const upper = s.map((p) => `${x(p.epoch)},${y(p.mean + p.std)}`);
      const lower = s.slice().reverse().map((p) => `${x(p.epoch)},${y(p.mean - p.std)}`);
      node('polygon', { points: upper.concat(lower).join(' '), fill: color, 'fill-opacity': 0.18, class: 'band' }, svg);
      const d = s.map((p, k) => `${k ? 'L' : 'M'}${x(p.epoch)},${y(p.mean)}`).join(' ');
      node('path', { d, stroke: color, 'stroke-width': 2, fill: 'none', class: 'mean', 'data-variant': name }, svg);
      // Dots too, so that a curve of one epoch shows (not for long curves).
      if (s.length <= 30) {
        for (const p of s) node('circle', { cx: x(p.epoch), cy: y(p.mean), r: 2.5, fill: color }, svg);
      }
      const k = drawn.indexOf(name);
      const lx = 14 + (k % legend.columns) * legend.column;
      const ly = PLOT_H + 4 + Math.floor(k / legend.columns) * LEGEND_ROW + 9;
      node('rect', { x: lx, y: ly - 9, width: 12, height: 12, fill: color }, svg);
      const label = node('text', { x: lx + 18, y: ly + 2, class: 'legend' }, svg, fit(name, legend.chars));
      node('title', {}, label, name);
    });
    return svg;
  }

  function drawCurves() {
    const target = document.getElementById('curves');
    if (!target) return;
    const byVariant = new Map();
    for (const job of curves.values()) {
      if (!byVariant.has(job.variant)) byVariant.set(job.variant, []);
      byVariant.get(job.variant).push(job);
    }
    const variants = [...byVariant.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
    target.replaceChildren(
      chart('Validation accuracy', 'val_acc', 100, 'accuracy %', variants),
      chart('Validation loss', 'val_loss', 1, 'loss', variants),
    );
  }

  function handle(kind, event) {
    if (page === 'sweep') {
      if (kind === 'epoch') onEpoch(event);
      else if (kind === 'job') onJob(event);
      else if (kind === 'sweep' || kind === 'reset') loadSnapshot();
    }
    if (kind === 'job' && TERMINAL.has(event.state)) touch('done', event);
    touch(kind, event);
  }

  const badge = document.getElementById('live');
  function live(on) {
    if (!badge) return;
    badge.textContent = on ? '● live' : '○ reconnecting';
    badge.className = on ? 'on' : 'off';
  }

  function connect() {
    const query = new URLSearchParams();
    if (sweep && page !== 'sweeps' && page !== 'workers') query.set('sweep', sweep);
    query.set('after', body.dataset.lastEvent || '0');
    // EventSource reconnects by itself, sending the last id it saw
    // (Last-Event-ID): the server replays what the page missed meanwhile.
    const source = new EventSource('/api/v1/events?' + query.toString());
    source.onopen = () => live(true);
    source.onerror = () => live(false);
    for (const kind of ['job', 'epoch', 'sweep', 'worker', 'reset']) {
      source.addEventListener(kind, (message) => {
        let event = {};
        try { event = JSON.parse(message.data); } catch (e) { return; }
        handle(kind, event);
      });
    }
  }

  if (page === 'sweep') loadSnapshot();
  connect();
})();
