// The operator console page: plain browser JavaScript, no build step. What it shows of a frame
// (image, boxes, verdict, score, sequence, time) comes from one server-sent `frame` event, drawn in
// one go, so image and result are always the same frame. `state` events (every second) say whether
// what is shown is live; without them, or with the broker or camera gone, the page says so and
// greys the picture. Slower figures (histogram, counters, model) are polled. Changes go to the
// daemon as config pushes and its answer (with any validation error) is shown as it comes.
'use strict';
const POLL_MS = 1000;
/** No word from the daemon for this long: what is shown is not live. */
const SILENCE_MS = 2500;
/** A slider move is sent once it rests this long (one push, the latest value). */
const DEBOUNCE_MS = 400;
/** Smallest ROI side the mouse draws, in frame pixels. */
const MIN_ROI_SIDE = 8;
let camera = null;
/** The polled camera state (histogram, counters, model). */
let state = null;
/** The config revision the next change is based on (the newest the page has heard of). */
let revision = 0;
let access = 'change';
/** The frame shown now: its result and the frame area its image covers. */
let frame = null;
let drawnRoi = null;
let dragStart = null;
/** The mouse just drew an ROI: its click is not a zoom. */
let justDrew = false;
let source = null;
const conn = { open: false, lastMessageMs: 0, lastState: null };
/** Frames arrive in order; their images decode asynchronously: only newer ones are shown. */
let received = 0;
let shown = 0;
let lastNg = null;
let recording = false;

/** Send a change; the daemon's answer (ok with the new revision, or its error) is shown. */
async function push(path, body, what) {
  try {
    const answer = await api(path, { method: 'POST', body: JSON.stringify({ baseRevision: revision, ...body }) });
    revision = Math.max(revision, answer.revision);
    show(`${what} applied: revision ${answer.revision}`, '');
    await poll();
  } catch (err) {
    show('', err.message);
  }
}

const cameraPath = () => `/api/cameras/${encodeURIComponent(camera)}`;

function connect() {
  source?.close();
  conn.open = false;
  if (!camera) return;
  source = new EventSource(`${cameraPath()}/live${$('overlay').checked ? '?overlay=true' : ''}`);
  source.onopen = () => {
    conn.open = true;
    conn.lastMessageMs = Date.now();
  };
  source.onerror = () => {
    conn.open = false;
    conn.lastState = null;
    liveStatus();
    // A refused stream (not a dropped one) is not retried by the browser.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
  };
  source.addEventListener('state', (event) => {
    conn.open = true;
    conn.lastMessageMs = Date.now();
    conn.lastState = JSON.parse(event.data);
    revision = Math.max(revision, conn.lastState.revision);
    showState(conn.lastState);
    liveStatus();
  });
  source.addEventListener('frame', (event) => {
    conn.lastMessageMs = Date.now();
    const f = JSON.parse(event.data);
    const n = ++received;
    decode(f.jpeg).then((image) => {
      if (n <= shown) return;
      shown = n;
      showFrame(f, image);
    }, () => {});
  });
  source.addEventListener('ng', (event) => {
    const f = JSON.parse(event.data);
    decode(f.jpeg).then((image) => pinNg(f, image), () => {});
  });
}

function decode(jpeg) {
  const image = new Image();
  image.src = `data:image/jpeg;base64,${jpeg}`;
  return image.decode().then(() => image);
}

/** Everything the page shows of one frame, in one synchronous step. */
function showFrame(f, image) {
  frame = f;
  const canvas = $('live');
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  canvas.getContext('2d').drawImage(image, 0, 0);
  $('verdict').textContent = f.verdict ?? 'uncalibrated';
  $('verdict').className = `verdict ${f.verdict ?? ''}`;
  $('score').textContent = (f.normalized ?? f.raw).toFixed(3);
  $('threshold-shown').textContent = f.normalized === null ? '–' : f.threshold.toFixed(2);
  $('sequence').textContent = String(f.sequence);
  $('captured').textContent = localTime(f.capturedAt);
  $('frame-model').textContent = f.model.slice(0, 12);
  $('recipe').textContent = f.recipe ? `recipe ${f.recipe}` : '';
  $('regions').replaceChildren(...f.regions.map((r) => {
    const li = document.createElement('li');
    li.textContent = `${r.width}x${r.height} px at ${r.x},${r.y}, peak ${(r.peakNormalized ?? r.peak).toFixed(2)}`;
    return li;
  }));
  drawImageMarks();
}

function pinNg(f, image) {
  lastNg = f;
  const canvas = $('last-ng');
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(image, 0, 0);
  const scale = canvas.width / f.area.width;
  ctx.strokeStyle = '#e74c3c';
  ctx.lineWidth = Math.max(2, canvas.width / 200);
  for (const r of f.regions) ctx.strokeRect((r.x - f.area.x) * scale, (r.y - f.area.y) * scale, r.width * scale, r.height * scale);
  $('last-ng-archive').href = `/api/archive.html?camera=${encodeURIComponent(camera)}&verdict=NG`;
  $('last-ng-zoom').href = $('last-ng-archive').href;
  $('last-ng-info').textContent = `frame ${f.sequence}, ${localTime(f.capturedAt)}, score ${(f.normalized ?? f.raw).toFixed(3)}`;
  $('last-ng-box').hidden = false;
}

/** Badges, counters and the history strip from a state event. */
function showState(s) {
  badge('badge-broker', s.broker.connected ? 'ok' : 'bad', s.broker.connected ? 'broker connected' : 'broker DISCONNECTED');
  const cam = s.camera;
  badge('badge-camera', cam?.state === 'online' ? 'ok' : 'bad', cam ? `camera ${cam.state ?? 'no status'}` : 'camera not running');
  const waiting = cam?.trigger && cam.trigger !== 'free';
  badge('badge-trigger', s.ready.length === 0 ? 'ok' : 'bad', `${waiting ? `trigger ${cam.trigger}` : 'free run'}: ${s.ready.length === 0 ? 'ready' : 'not ready'}`);
  $('badge-trigger').title = s.ready.join('; ');
  badge('badge-model', s.model.calibrated ? 'ok' : 'warn', `model ${s.model.name} ${s.model.version}${s.model.calibrated ? '' : ' (uncalibrated)'}`);
  $('revision').textContent = `config revision ${s.revision}`;
  $('fps').textContent = s.fps.toFixed(1);
  const c = s.counters;
  if (c) {
    const judged = c.ok + c.ng;
    $('yield').textContent = judged > 0 ? `${((100 * c.ok) / judged).toFixed(1)} %` : '–';
    $('count-ok').textContent = String(c.ok);
    $('count-ng').textContent = String(c.ng);
  }
  $('history').replaceChildren(...s.history.map((h) => {
    const cell = document.createElement('span');
    cell.className = `cell ${h.verdict ?? 'none'}`;
    cell.title = `frame ${h.sequence}: ${h.verdict ?? 'uncalibrated'}`;
    return cell;
  }));
}

function badge(id, level, text) {
  $(id).textContent = text;
  $(id).className = `badge ${level}`;
}

/** Why what the page shows is not live now (empty: it is). */
function notLive() {
  if (!conn.open) return ['no connection to the daemon'];
  if (Date.now() - conn.lastMessageMs > SILENCE_MS) return ['no word from the daemon'];
  const s = conn.lastState;
  if (!s) return [];
  const reasons = [];
  if (!s.broker.connected) reasons.push('MQTT broker disconnected: results do not reach the line');
  if (!s.camera) reasons.push(`camera ${camera} is not running`);
  else if (s.camera.state !== 'online') reasons.push(`camera ${camera} is ${s.camera.state ?? 'without status'}${s.camera.error ? ` (${s.camera.error})` : ''}`);
  return reasons;
}

/** Why the line needs someone now (NG streak, camera down), or null. */
function alarmReason() {
  const s = conn.lastState;
  if (!conn.open || !s) return null;
  if (s.camera && s.camera.state !== 'online') return `camera ${camera} is ${s.camera.state ?? 'without status'}`;
  if (s.alarmNgStreak > 0 && s.ngStreak >= s.alarmNgStreak) return `${s.ngStreak} NG in a row on camera ${camera}`;
  return null;
}

let audio = null;
let beeps = 0;
/** A short tone; the browser allows sound once the operator has ticked the box (a gesture). */
function beep() {
  audio ??= new AudioContext();
  const tone = audio.createOscillator();
  tone.frequency.value = 880;
  tone.connect(audio.destination);
  tone.start();
  tone.stop(audio.currentTime + 0.2);
  document.body.dataset.alarmBeeps = String(++beeps);
}

function showAlarm() {
  const reason = alarmReason();
  $('alarm').hidden = reason === null;
  $('alarm-text').textContent = reason ? `ALARM: ${reason}` : '';
  document.body.classList.toggle('alarm', reason !== null);
  if (reason && $('alarm-sound').checked) beep();
}

function liveStatus() {
  const reasons = notLive();
  const banner = $('live-status');
  const age = frame ? Math.max(0, Math.round((Date.now() - Date.parse(frame.capturedAt)) / 1000)) : null;
  const last = frame ? `last frame ${frame.sequence} at ${localTime(frame.capturedAt)} (${age} s ago)` : 'no frame yet';
  if (!conn.open) badge('badge-connection', 'bad', 'console OFFLINE');
  else badge('badge-connection', 'ok', 'console connected');
  banner.textContent = reasons.length > 0 ? `NOT LIVE: ${reasons.join('; ')} — ${last}` : `LIVE — ${last}`;
  banner.className = `live-status ${reasons.length > 0 ? 'stale' : 'live'}`;
  document.body.classList.toggle('stale', reasons.length > 0);
}

async function loadCameras() {
  const answer = await api('/api/cameras');
  access = answer.access;
  readOnly(access !== 'change');
  const select = $('camera');
  select.replaceChildren(...answer.cameras.map((c) => new Option(c.id, c.id)));
  const wanted = new URLSearchParams(location.search).get('camera');
  camera = answer.cameras.some((c) => c.id === wanted) ? wanted : answer.cameras[0]?.id ?? null;
  select.value = camera;
  connect();
}

/** A viewer without change rights sees every control disabled and is told why. */
function readOnly(on) {
  document.body.classList.toggle('read-only', on);
  $('badge-readonly').hidden = !on;
  $('badge-readonly').title = 'This console is read-only: log in with the console credentials to change settings.';
  for (const el of document.querySelectorAll('.change')) el.disabled = on || (el.id === 'apply-roi' && drawnRoi === null);
}

async function poll() {
  if (!camera) return;
  try {
    state = await api(cameraPath());
  } catch (err) {
    // A daemon that is away is the banner's to say; this is for errors it answers.
    if (conn.open) show('', err.message);
    return;
  }
  revision = Math.max(revision, state.revision);
  if (!sliderBusy()) {
    const threshold = (0.5 + state.inference.sensitivity).toFixed(2);
    $('sensitivity').value = threshold;
    $('sensitivity-value').value = threshold;
  }
  const c = state.counters;
  $('counters').innerHTML = '';
  if (c) {
    rows($('counters'), [['OK', c.ok], ['NG', c.ng], ['errors', c.errors], ['trigger timeouts', c.triggerTimeouts],
      ['cycle time, ms (min / mean / max)', c.cycleMs ? `${c.cycleMs.min} / ${c.cycleMs.mean} / ${c.cycleMs.max}` : '–'], ['since', new Date(c.since).toLocaleString()]]);
  }
  const m = state.model;
  $('model').innerHTML = '';
  rows($('model'), [['name', m.name], ['version', m.version], ['variant', m.variant], ['backbone', m.backbone],
    ['provider', m.executionProvider], ['input', m.inputForm], ['calibrated', String(m.calibrated)], ['hash', m.hash.slice(0, 12)]]);
  showRecipes(state.recipes);
  drawHistogram();
  void pollDataset();
}

/** The recipe choice, when the configuration has recipes; the active one selected. */
function showRecipes(recipes) {
  $('recipe-box').hidden = recipes.names.length === 0;
  const select = $('recipe-select');
  if (document.activeElement === select) return;
  const names = ['', ...recipes.names];
  if (select.options.length !== names.length) {
    select.replaceChildren(...names.map((n) => new Option(n === '' ? '(base configuration)' : n, n)));
  }
  select.value = recipes.active ?? '';
}

async function pollDataset() {
  try {
    const dataset = await api('/api/dataset');
    recording = dataset.recording[camera] !== undefined;
    $('record').textContent = recording ? 'Stop recording' : 'Record good images';
    $('dataset-status').textContent = `${recording ? `recording every ${dataset.recording[camera]} frames; ` : ''}${dataset.saved} saved`;
  } catch {
    // no dataset routes: the buttons stay as they are
  }
}

function rows(table, pairs) {
  for (const [name, value] of pairs) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = String(value);
  }
}

/** Recent scores with axes, and the threshold as a red line. */
function drawHistogram() {
  if (!state) return;
  const canvas = $('histogram');
  const ctx = canvas.getContext('2d');
  const left = 28;
  const bottom = 30;
  const w = canvas.width - left - 4;
  const h = canvas.height - bottom - 4;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const bins = new Array(40).fill(0);
  for (const s of state.scores) bins[Math.min(bins.length - 1, Math.max(0, Math.floor(s * bins.length)))]++;
  const top = Math.max(1, ...bins);
  const bw = w / bins.length;
  ctx.fillStyle = '#4a6fa5';
  bins.forEach((n, i) => ctx.fillRect(left + i * bw, 4 + h - (n / top) * h, bw - 1, (n / top) * h));
  ctx.strokeStyle = '#444';
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(left, 4);
  ctx.lineTo(left, 4 + h);
  ctx.lineTo(left + w, 4 + h);
  ctx.stroke();
  ctx.fillStyle = '#333';
  ctx.font = '11px system-ui, sans-serif';
  ctx.textAlign = 'center';
  for (const t of [0, 0.25, 0.5, 0.75, 1]) ctx.fillText(String(t), left + t * w, 4 + h + 12);
  ctx.fillText('score (0 = like the good parts, 1 = most unlike)', left + w / 2, canvas.height - 3);
  ctx.textAlign = 'right';
  ctx.fillText(String(top), left - 3, 12);
  ctx.fillText('0', left - 3, 4 + h);
  ctx.save();
  ctx.translate(9, 4 + h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = 'center';
  ctx.fillText('parts', 0, 0);
  ctx.restore();
  const x = left + Number($('sensitivity').value) * w;
  ctx.strokeStyle = '#c0392b';
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(x, 4);
  ctx.lineTo(x, 4 + h);
  ctx.stroke();
}

/** Canvas pixels per frame pixel, and the frame area the image shows (the ROI with the overlay). */
function imageFrame() {
  const area = frame?.area ?? { x: 0, y: 0, width: 1, height: 1 };
  return { area, scale: $('live').clientWidth / area.width };
}

function drawImageMarks() {
  const image = $('live');
  const canvas = $('drawing');
  canvas.width = image.clientWidth;
  canvas.height = image.clientHeight;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!frame) return;
  const { area, scale } = imageFrame();
  const box = (r, colour, dash) => {
    ctx.strokeStyle = colour;
    ctx.setLineDash(dash);
    ctx.lineWidth = 2;
    ctx.strokeRect((r.x - area.x) * scale, (r.y - area.y) * scale, r.width * scale, r.height * scale);
  };
  if (!frame.overlay) box(frame.roi, '#f1c40f', []);
  for (const r of frame.regions) box(r, '#e74c3c', []);
  if (drawnRoi) box(drawnRoi, '#00e5ff', [6, 4]);
}

/** Mouse position on the image, in frame pixels. */
function framePoint(event) {
  const rect = $('drawing').getBoundingClientRect();
  const { area, scale } = imageFrame();
  return { x: Math.round((event.clientX - rect.left) / scale + area.x), y: Math.round((event.clientY - rect.top) / scale + area.y) };
}

function clampRoi(a, b) {
  const size = frame.frameSize;
  const x0 = Math.max(0, Math.min(a.x, b.x));
  const y0 = Math.max(0, Math.min(a.y, b.y));
  const x1 = Math.min(size.width, Math.max(a.x, b.x));
  const y1 = Math.min(size.height, Math.max(a.y, b.y));
  return { x: x0, y: y0, width: Math.max(1, x1 - x0), height: Math.max(1, y1 - y0) };
}

let sliderTimer = null;
const sliderBusy = () => sliderTimer !== null || document.activeElement === $('sensitivity') || document.activeElement === $('sensitivity-value');

/** The threshold as the operator moves it; one push once it rests, with the latest value and revision. */
function thresholdMoved(value) {
  $('sensitivity').value = String(value);
  $('sensitivity-value').value = String(value);
  drawHistogram();
  clearTimeout(sliderTimer);
  sliderTimer = setTimeout(async () => {
    const sensitivity = Math.round((Number(value) - 0.5) * 1000) / 1000;
    // Based on the current revision, read now: a change made elsewhere a moment ago (the page
    // hears of revisions once a second) must not turn the operator's move into a stale error.
    try {
      revision = Math.max(revision, (await api('/api/cameras')).revision);
    } catch {
      // the push says what is wrong
    }
    await push('/api/config', { changes: { 'inference.sensitivity': sensitivity } }, 'Threshold');
    sliderTimer = null;
  }, DEBOUNCE_MS);
}

function wire() {
  $('camera').addEventListener('change', () => {
    camera = $('camera').value;
    drawnRoi = null;
    frame = null;
    connect();
    void poll();
  });
  $('overlay').addEventListener('change', () => {
    connect();
    $('roi-hint').textContent = $('overlay').checked ? 'Turn the overlay off to draw an ROI on the whole frame.' : 'Drag on the image to draw an ROI.';
  });
  const canvas = $('drawing');
  canvas.addEventListener('mousedown', (event) => {
    if ($('overlay').checked || !frame || access !== 'change') return;
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
    // The click that ends a drag on the image is not a zoom (a drag ending elsewhere makes none).
    justDrew = drawnRoi !== null && event.target === canvas;
    $('apply-roi').disabled = drawnRoi === null;
    drawImageMarks();
  });
  window.addEventListener('resize', drawImageMarks);
  // A click (no ROI drawn) opens the frame, or the region under it, at full size (tools.js).
  canvas.addEventListener('click', (event) => {
    if (justDrew) {
      justDrew = false;
      return;
    }
    if (frame) void zoom(frame, regionAt(framePoint(event)));
  });
  // An ROI is checked on the recent frames first; the operator then applies it or not (tools.js).
  $('apply-roi').addEventListener('click', () => checkThenApply(drawnRoi));
  $('clear-roi').addEventListener('click', () => checkThenApply(null));
  $('sensitivity').addEventListener('input', () => thresholdMoved($('sensitivity').value));
  $('sensitivity-value').addEventListener('change', () => thresholdMoved($('sensitivity-value').value));
  $('reset-counters').addEventListener('click', async () => {
    if (!confirm(`Reset the counters of camera ${camera}? OK, NG, errors and cycle times start again from zero.`)) return;
    try {
      await api('/api/counters/reset', { method: 'POST', body: JSON.stringify({ camera }) });
      show('Counters reset', '');
      await poll();
    } catch (err) {
      show('', err.message);
    }
  });
  $('recipe-select').addEventListener('change', async () => {
    const recipe = $('recipe-select').value || null;
    try {
      await api(`${cameraPath()}/recipe`, { method: 'POST', body: JSON.stringify({ recipe }) });
      show(`Recipe ${recipe ?? '(base configuration)'} selected`, '');
    } catch (err) {
      show('', err.message);
    }
    $('recipe-select').blur();
    await poll();
  });
  $('ack-ng').addEventListener('click', () => {
    lastNg = null;
    $('last-ng-box').hidden = true;
  });
  $('capture-now').addEventListener('click', async () => {
    try {
      const answer = await api(`/api/dataset/capture/${encodeURIComponent(camera)}`, { method: 'POST' });
      show(answer.pending ? 'Capture requested: the next frame will be saved' : `Captured ${answer.file}`, '');
      void pollDataset();
    } catch (err) {
      show('', err.message);
    }
  });
  $('record').addEventListener('click', async () => {
    try {
      const path = `/api/dataset/record/${encodeURIComponent(camera)}`;
      if (recording) await api(path, { method: 'DELETE' });
      else await api(path, { method: 'PUT', body: JSON.stringify({ every: Number($('record-every').value) }) });
      show(recording ? 'Recording stopped' : 'Recording good images', '');
      await pollDataset();
    } catch (err) {
      show('', err.message);
    }
  });
}

/** The camera list, again until the daemon answers (it may start after the page). */
function start() {
  loadCameras().then(poll).catch((err) => {
    show('', err.message);
    setTimeout(start, 1000);
  });
}

wire();
start();
setInterval(poll, POLL_MS);
setInterval(liveStatus, 250);
setInterval(showAlarm, 1000);
