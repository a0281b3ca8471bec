// The operator console page: plain browser JavaScript, no build step. The image is the daemon's
// MJPEG stream; the numbers beside it are polled. Changes go to the daemon as config pushes and
// its answer (with any validation error) is shown as it comes.
'use strict';
const POLL_MS = 500;
/** Smallest ROI side the mouse draws, in frame pixels. */
const MIN_ROI_SIDE = 8;
const $ = (id) => document.getElementById(id);
let camera = null;
let state = null;
let drawnRoi = null;
let dragStart = null;

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { 'Content-Type': 'application/json' } });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function show(message, error) {
  $('message').textContent = message || '';
  $('error').textContent = error || '';
}

/** Send a change; the daemon's answer (ok with the new revision, or its error) is shown. */
async function push(path, body, what) {
  try {
    const answer = await api(path, { method: 'POST', body: JSON.stringify({ baseRevision: state.revision, ...body }) });
    show(`${what} applied: revision ${answer.revision}`, '');
    await poll();
  } catch (err) {
    show('', err.message);
  }
}

function streamUrl() {
  return `/api/cameras/${encodeURIComponent(camera)}/stream.mjpeg${$('overlay').checked ? '?overlay=true' : ''}`;
}

async function loadCameras() {
  const { cameras } = await api('/api/cameras');
  const select = $('camera');
  select.replaceChildren(...cameras.map((c) => new Option(c.id, c.id)));
  const wanted = new URLSearchParams(location.search).get('camera');
  camera = cameras.some((c) => c.id === wanted) ? wanted : cameras[0]?.id ?? null;
  select.value = camera;
  if (camera) $('live').src = streamUrl();
}

async function poll() {
  if (!camera) return;
  try {
    state = await api(`/api/cameras/${encodeURIComponent(camera)}`);
  } catch (err) {
    show('', err.message);
    return;
  }
  const last = state.last;
  $('camera-state').textContent = `${state.state ?? 'no status'}${state.error ? `: ${state.error}` : ''}`;
  $('revision').textContent = `config revision ${state.revision}`;
  $('verdict').textContent = last?.verdict ?? '–';
  $('verdict').className = `verdict ${last?.verdict ?? ''}`;
  $('score').textContent = last ? (last.normalized ?? last.raw).toFixed(3) : '–';
  $('sequence').textContent = last ? String(last.sequence) : '–';
  $('fps').textContent = state.fps.toFixed(1);
  if (document.activeElement !== $('sensitivity') && document.activeElement !== $('sensitivity-value')) {
    $('sensitivity').value = String(state.inference.sensitivity);
    $('sensitivity-value').value = String(state.inference.sensitivity);
  }
  const c = state.counters;
  $('counters').innerHTML = '';
  if (c) {
    rows($('counters'), [['OK', c.ok], ['NG', c.ng], ['errors', c.errors], ['trigger timeouts', c.triggerTimeouts],
      ['cycle ms (min/mean/max)', c.cycleMs ? `${c.cycleMs.min} / ${c.cycleMs.mean} / ${c.cycleMs.max}` : '–'], ['since', c.since]]);
  }
  $('regions').replaceChildren(...(last?.regions ?? []).map((r) => {
    const li = document.createElement('li');
    li.textContent = `${r.width}x${r.height} at ${r.x},${r.y} peak ${(r.peakNormalized ?? r.peak).toFixed(2)}`;
    return li;
  }));
  const m = state.model;
  $('model').innerHTML = '';
  rows($('model'), [['name', m.name], ['version', m.version], ['variant', m.variant], ['backbone', m.backbone],
    ['provider', m.executionProvider], ['input', m.inputForm], ['calibrated', String(m.calibrated)], ['hash', m.hash.slice(0, 12)]]);
  drawHistogram();
  drawImageMarks();
}

function rows(table, pairs) {
  for (const [name, value] of pairs) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = String(value);
  }
}

function drawHistogram() {
  const canvas = $('histogram');
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const bins = new Array(40).fill(0);
  for (const s of state.scores) bins[Math.min(bins.length - 1, Math.max(0, Math.floor(s * bins.length)))]++;
  const top = Math.max(1, ...bins);
  const w = canvas.width / bins.length;
  ctx.fillStyle = '#4a6fa5';
  bins.forEach((n, i) => ctx.fillRect(i * w, canvas.height - (n / top) * canvas.height, w - 1, (n / top) * canvas.height));
  const x = (0.5 + Number($('sensitivity').value)) * canvas.width;
  ctx.strokeStyle = '#c0392b';
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(x, 0);
  ctx.lineTo(x, canvas.height);
  ctx.stroke();
}

/** Image pixels per frame pixel, and the frame area the image shows (the ROI with the overlay). */
function imageFrame() {
  const img = $('live');
  const overlay = $('overlay').checked;
  const area = overlay && state?.last ? state.last.roi : { x: 0, y: 0, ...(state?.frameSize ?? state?.last?.frameSize ?? { width: 1, height: 1 }) };
  return { area, scale: img.clientWidth / area.width };
}

function drawImageMarks() {
  const img = $('live');
  const canvas = $('drawing');
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state) return;
  const { area, scale } = imageFrame();
  const box = (r, colour, dash) => {
    ctx.strokeStyle = colour;
    ctx.setLineDash(dash);
    ctx.lineWidth = 2;
    ctx.strokeRect((r.x - area.x) * scale, (r.y - area.y) * scale, r.width * scale, r.height * scale);
  };
  if (!$('overlay').checked && state.roi) box(state.roi, '#f1c40f', []);
  for (const r of state.last?.regions ?? []) box(r, '#e74c3c', []);
  if (drawnRoi) box(drawnRoi, '#00e5ff', [6, 4]);
}

/** Mouse position on the image, in frame pixels. */
function framePoint(event) {
  const rect = $('drawing').getBoundingClientRect();
  const { area, scale } = imageFrame();
  return { x: Math.round((event.clientX - rect.left) / scale + area.x), y: Math.round((event.clientY - rect.top) / scale + area.y) };
}

function clampRoi(a, b) {
  const size = state.frameSize ?? state.last?.frameSize;
  const x0 = Math.max(0, Math.min(a.x, b.x));
  const y0 = Math.max(0, Math.min(a.y, b.y));
  const x1 = Math.min(size.width, Math.max(a.x, b.x));
  const y1 = Math.min(size.height, Math.max(a.y, b.y));
  return { x: x0, y: y0, width: Math.max(1, x1 - x0), height: Math.max(1, y1 - y0) };
}

function wire() {
  $('camera').addEventListener('change', () => {
    camera = $('camera').value;
    drawnRoi = null;
    $('live').src = streamUrl();
    void poll();
  });
  $('overlay').addEventListener('change', () => {
    $('live').src = streamUrl();
    $('roi-hint').textContent = $('overlay').checked ? 'Turn the overlay off to draw an ROI on the whole frame.' : 'Drag on the image to draw an ROI.';
  });
  const canvas = $('drawing');
  canvas.addEventListener('mousedown', (event) => {
    if ($('overlay').checked || !state) return;
    dragStart = framePoint(event);
  });
  canvas.addEventListener('mousemove', (event) => {
    if (!dragStart) return;
    drawnRoi = clampRoi(dragStart, framePoint(event));
    drawImageMarks();
  });
  window.addEventListener('mouseup', (event) => {
    if (!dragStart) return;
    const roi = clampRoi(dragStart, framePoint(event));
    dragStart = null;
    // A click is not an ROI.
    drawnRoi = roi.width >= MIN_ROI_SIDE && roi.height >= MIN_ROI_SIDE ? roi : null;
    $('apply-roi').disabled = drawnRoi === null;
    drawImageMarks();
  });
  $('apply-roi').addEventListener('click', async () => {
    await push(`/api/cameras/${encodeURIComponent(camera)}/roi`, { roi: drawnRoi }, 'ROI');
    drawnRoi = null;
    $('apply-roi').disabled = true;
  });
  $('clear-roi').addEventListener('click', () => push(`/api/cameras/${encodeURIComponent(camera)}/roi`, { roi: null }, 'ROI'));
  const setSensitivity = (value) => push('/api/config', { changes: { 'inference.sensitivity': value } }, 'Sensitivity');
  $('sensitivity').addEventListener('input', () => {
    $('sensitivity-value').value = $('sensitivity').value;
    drawHistogram();
  });
  $('sensitivity').addEventListener('change', () => setSensitivity(Number($('sensitivity').value)));
  $('sensitivity-value').addEventListener('change', () => setSensitivity(Number($('sensitivity-value').value)));
  $('reset-counters').addEventListener('click', async () => {
    try {
      await api('/api/counters/reset', { method: 'POST', body: JSON.stringify({ camera }) });
      show('Counters reset', '');
      await poll();
    } catch (err) {
      show('', err.message);
    }
  });
}

wire();
loadCameras().then(poll).catch((err) => show('', err.message));
setInterval(poll, POLL_MS);
