// The Teach page: collect good images of a camera, train a model on the device, check it (golden
// samples, then the shadow comparison with the serving model on live frames), promote it or roll
// back. Plain browser JavaScript. It reads GET /api/teach (the TeachStatus of
// /work/notes/teach-contract.md) and the camera's collected images every second; every change is
// a request whose answer (or error) is shown as it comes. A read-only viewer sees the controls
// disabled.
'use strict';
const POLL_MS = 1000;
/** States in which the trainer or the checks work (another run cannot start). */
const WORKING = ['training', 'calibrating', 'exporting', 'checking'];
/** States a run ends in; before them it can be cancelled (nothing changes). */
const ENDED = ['promoted', 'failed', 'cancelled', 'interrupted'];
/** A candidate a person may promote (during the shadow check too, before it has its full count). */
const PROMOTABLE = ['shadow', 'ready'];
const STATE_WORDS = {
  training: 'Training', calibrating: 'Calibrating (setting the threshold)', exporting: 'Exporting the model', checking: 'Checking on the golden samples',
  shadow: 'Shadow check: scoring live frames beside the serving model', ready: 'Ready to promote', promoted: 'Promoted: serving',
  failed: 'Failed: nothing changed', cancelled: 'Cancelled: nothing changed', interrupted: 'Interrupted (the daemon restarted): nothing changed',
};
let camera = null;
let access = 'change';
let teach = null;
let dataset = null;
let recording = false;
let busy = false;

/** Run a change; its answer is shown, the page refreshed. */
async function act(what, work) {
  busy = true;
  try {
    const message = await work();
    show(message, '');
  } catch (err) {
    show('', `${what}: ${err.message}`);
  } finally {
    busy = false;
    await refresh();
  }
}

const cameraPart = () => encodeURIComponent(camera);
const localDateTime = (iso) => new Date(iso).toLocaleString();
const shortHash = (hash) => (hash ? hash.slice(0, 12) : '–');

function duration(sec) {
  if (sec === null || sec === undefined) return 'time left unknown';
  if (sec < 60) return `about ${Math.max(1, Math.round(sec))} s left`;
  return `about ${Math.round(sec / 60)} min left`;
}

async function loadCameras() {
  const answer = await api('/api/cameras');
  access = answer.access;
  const select = $('camera');
  select.replaceChildren(...answer.cameras.map((c) => new Option(c.id, c.id)));
  const wanted = new URLSearchParams(location.search).get('camera');
  camera = answer.cameras.some((c) => c.id === wanted) ? wanted : answer.cameras[0]?.id ?? null;
  select.value = camera;
  await loadRecipes();
}

async function loadRecipes() {
  if (!camera) return;
  const state = await api(`/api/cameras/${cameraPart()}`);
  const names = ['', ...state.recipes.names];
  $('recipe').replaceChildren(...names.map((n) => new Option(n === '' ? '(base configuration)' : n, n)));
  $('recipe').value = state.recipes.active ?? '';
}

/** The collected images, their count and how many are enough. */
function showDataset(d) {
  dataset = d;
  $('dataset-count').textContent = String(d.count);
  $('dataset-why').textContent = d.why;
  $('dataset-meter').style.width = `${Math.min(100, (100 * d.count) / d.recommended)}%`;
  $('dataset-meter').className = d.count < d.minimum ? 'short' : d.count < d.recommended ? 'enough' : 'plenty';
  $('dataset-minimum').style.left = `${(100 * d.minimum) / d.recommended}%`;
  recording = d.recording !== null;
  $('record').textContent = recording ? 'Stop recording' : 'Record good images';
  $('record-status').textContent = recording ? `recording every ${d.recording} frames` : '';
  const shown = new Map([...$('collected').children].map((el) => [el.dataset.name, el]));
  const cards = d.images.map((image) => shown.get(image.name) ?? imageCard(image));
  $('collected').replaceChildren(...cards);
}

function imageCard(image) {
  const card = document.createElement('figure');
  card.className = 'thumb';
  card.dataset.name = image.name;
  const img = document.createElement('img');
  img.src = image.thumb;
  img.alt = image.name;
  img.loading = 'lazy';
  img.title = `${image.name}, ${localDateTime(image.addedAt)}${image.source === 'archive' ? ', marked good in the NG archive' : ''}`;
  const link = document.createElement('a');
  link.href = image.url;
  link.target = '_blank';
  link.append(img);
  const remove = document.createElement('button');
  remove.className = 'change delete';
  remove.textContent = '✕';
  remove.title = `delete ${image.name} (not a good part)`;
  remove.disabled = access !== 'change';
  remove.addEventListener('click', () => act('Delete', async () => {
    await api(`/api/dataset/images/${cameraPart()}/${encodeURIComponent(image.name)}`, { method: 'DELETE' });
    card.remove();
    return `Deleted ${image.name}`;
  }));
  card.append(link, remove);
  return card;
}

/** The camera's archived NGs not yet marked good: a false reject joins the set with one click. */
async function loadArchive() {
  if (!$('archive-box').open) return;
  let list;
  try {
    list = await api(`/api/archive?camera=${cameraPart()}&verdict=NG&limit=12`);
  } catch {
    $('archive-ngs').textContent = 'The NG archive is off (archive.enabled).';
    return;
  }
  $('archive-ngs').replaceChildren(...list.entries.map((e) => {
    const card = document.createElement('figure');
    card.className = 'thumb';
    const img = document.createElement('img');
    img.src = `/api/archive/${e.id}/frame.jpg`;
    img.title = `frame ${e.sequence}, ${localDateTime(e.capturedAt)}, score ${(e.normalized ?? e.raw).toFixed(3)}`;
    img.loading = 'lazy';
    const good = document.createElement('button');
    good.className = 'change';
    good.textContent = e.markedGood ? 'in the set' : 'good part';
    good.disabled = access !== 'change' || e.markedGood !== null;
    good.addEventListener('click', () => act('Mark good', async () => {
      await api(`/api/archive/${e.id}/good`, { method: 'POST' });
      good.textContent = 'in the set';
      good.disabled = true;
      return `Frame ${e.sequence} joins the good images`;
    }));
    card.append(img, good);
    return card;
  }));
}

function showTeach(t) {
  teach = t;
  const run = t.run;
  const working = run !== null && WORKING.includes(run.state);
  const open = run !== null && !ENDED.includes(run.state);
  const count = dataset?.count ?? t.dataset.count;
  const enough = count >= t.dataset.minimum;
  $('teach-start').textContent = `Train a model from ${count} images`;
  $('teach-start').disabled = access !== 'change' || working || !enough || busy;
  $('teach-start').title = enough ? '' : `at least ${t.dataset.minimum} good images are needed`;
  $('teach-cancel').disabled = access !== 'change' || !open || busy;
  $('teach-cancel').textContent = working ? 'Cancel' : 'Discard the new model';
  $('teach-promote').disabled = access !== 'change' || !PROMOTABLE.includes(run?.state) || busy;
  $('teach-rollback').disabled = access !== 'change' || t.previous === null || working || busy;
  $('teach-rollback').title = t.previous ? `back to ${shortHash(t.previous)}` : 'no previous model';
  document.body.dataset.teachState = run?.state ?? 'none';
  showProgress(run);
  showCheck(run);
  $('models').replaceChildren(...(t.models.length ? [row(['model', 'serves', 'promoted', 'trained on', 'trainer', ''], 'th')] : []),
    ...t.models.map((m) => {
      const tr = row([shortHash(m.sha256), m.recipe ? `recipe ${m.recipe}` : 'base configuration', localDateTime(m.promotedAt), shortHash(m.datasetSha256), m.trainerVersion, m.serving ? 'serving' : '']);
      // The file, for other stations (crad-edge deliver).
      const link = document.createElement('a');
      link.href = `/api/teach/models/${m.sha256}.onnx`;
      link.download = `teach-${m.sha256.slice(0, 12)}.onnx`;
      link.textContent = shortHash(m.sha256);
      link.title = 'download this model (for other stations: crad-edge deliver)';
      tr.firstChild.replaceChildren(link);
      return tr;
    }));
}

function showProgress(run) {
  const bar = $('teach-progress');
  if (!run) {
    bar.value = 0;
    $('teach-phase').textContent = 'No training yet.';
    $('teach-error').textContent = '';
    return;
  }
  const p = run.progress;
  bar.value = run.state === 'ready' || run.state === 'promoted' ? 1 : p.fraction;
  const parts = [`${STATE_WORDS[run.state] ?? run.state}`];
  if (run.state === 'training' && p.epochs > 0) parts.push(`epoch ${p.epoch} of ${p.epochs}`);
  if (p.loss !== null && run.state === 'training') parts.push(`loss ${p.loss.toFixed(4)}`);
  if (WORKING.includes(run.state)) parts.push(duration(p.etaSec));
  parts.push(`${run.images.train} images to train, ${run.images.calibration} to calibrate; camera ${run.cameraId}${run.recipe ? `, recipe ${run.recipe}` : ''}; started ${localDateTime(run.startedAt)}`);
  $('teach-phase').textContent = parts.join(' · ');
  $('teach-error').textContent = run.error ?? '';
}

function showCheck(run) {
  const candidate = run?.candidate;
  const golden = candidate?.golden;
  $('teach-golden').textContent = !candidate ? 'The new model is checked on the golden samples, then scores live frames beside the serving model.'
    : `New model ${shortHash(candidate.sha256)}, threshold ${candidate.threshold.toFixed(3)}; golden samples: ${golden ? `${golden.passed} of ${golden.total} passed` : 'none for this model'}.`;
  const shadow = run?.shadow;
  if (!shadow) {
    $('teach-shadow').textContent = '';
    $('shadow-examples').replaceChildren();
    return;
  }
  $('teach-shadow').textContent = `On ${shadow.frames} live frames, ${shadow.changed} verdict(s) would change: the serving model said NG ${shadow.servingNg} times, the new one ${shadow.candidateNg}.`;
  $('shadow-examples').replaceChildren(row(['frame', 'image', 'serving model', 'new model'], 'th'), ...shadow.examples.map((e) => {
    const tr = row([`#${e.sequence} ${localTime(e.at)}`, '', verdictText(e.serving), verdictText(e.candidate)]);
    const img = document.createElement('img');
    img.src = e.image;
    img.loading = 'lazy';
    tr.cells[1].append(img);
    tr.cells[2].className = `verdict-cell ${e.serving.verdict}`;
    tr.cells[3].className = `verdict-cell ${e.candidate.verdict}`;
    return tr;
  }));
}

const verdictText = (v) => `${v.verdict} ${v.score.toFixed(3)}`;

function row(cells, tag = 'td') {
  const tr = document.createElement('tr');
  for (const text of cells) {
    const cell = document.createElement(tag);
    cell.textContent = text;
    tr.append(cell);
  }
  return tr;
}

async function refresh() {
  if (!camera) return;
  try {
    const [d, t, state] = await Promise.all([
      api(`/api/dataset/images/${cameraPart()}`),
      api('/api/teach').catch((err) => ({ unavailable: err.message })),
      api(`/api/cameras/${cameraPart()}`),
    ]);
    showDataset(d);
    if (t.unavailable) $('teach-phase').textContent = `Training is not available: ${t.unavailable}`;
    else showTeach(t);
    $('serving-model').textContent = shortHash(state.model.hash);
    $('badge-serving').textContent = `model ${shortHash(state.model.hash)}`;
    $('last-sequence').textContent = state.last ? String(state.last.sequence) : '–';
    $('last-model').textContent = state.last ? shortHash(state.last.model) : '–';
  } catch (err) {
    show('', `The daemon does not answer: ${err.message}`);
  }
}

function readOnly(on) {
  document.body.classList.toggle('read-only', on);
  $('badge-readonly').hidden = !on;
  $('badge-readonly').title = 'This console is read-only: log in with the console credentials to collect, train or promote.';
  for (const el of document.querySelectorAll('.change')) if (on) el.disabled = true;
}

function wire() {
  $('camera').addEventListener('change', async () => {
    camera = $('camera').value;
    $('collected').replaceChildren();
    history.replaceState(null, '', `?camera=${cameraPart()}`);
    await loadRecipes();
    await refresh();
    await loadArchive();
  });
  $('archive-box').addEventListener('toggle', loadArchive);
  $('capture-now').addEventListener('click', () => act('Capture', async () => {
    const answer = await api(`/api/dataset/capture/${cameraPart()}`, { method: 'POST' });
    return answer.pending ? 'Capture requested: the next frame will be saved' : `Captured ${answer.file}`;
  }));
  $('record').addEventListener('click', () => act('Record', async () => {
    const path = `/api/dataset/record/${cameraPart()}`;
    if (recording) {
      await api(path, { method: 'DELETE' });
      return 'Recording stopped';
    }
    await api(path, { method: 'PUT', body: JSON.stringify({ every: Number($('record-every').value) }) });
    return `Recording every ${$('record-every').value} frames`;
  }));
  $('teach-start').addEventListener('click', () => act('Train', async () => {
    const waiting = teach?.run && PROMOTABLE.includes(teach.run.state);
    if (waiting && !confirm(`Train again? The new model ${shortHash(teach.run.candidate?.sha256)} waiting to be promoted is discarded.`)) return '';
    const images = dataset?.count;
    const run = (await api('/api/teach/start', { method: 'POST', body: JSON.stringify({ cameraId: camera, recipe: $('recipe').value || null }) })).run;
    return `Training started on ${images} images of camera ${run.cameraId}`;
  }));
  $('teach-cancel').addEventListener('click', () => act('Cancel', async () => {
    const working = WORKING.includes(teach?.run?.state);
    if (!confirm(working ? 'Cancel the training? Nothing changes; the serving model stays.' : 'Discard the new model? Nothing changes; the serving model stays.')) return '';
    await api('/api/teach/cancel', { method: 'POST', body: '{}' });
    return 'Training cancelled: nothing changed';
  }));
  $('teach-promote').addEventListener('click', () => act('Promote', async () => {
    const shadow = teach?.run?.shadow;
    const early = teach?.run?.state === 'shadow' ? ' The shadow check has not finished.' : '';
    if (!confirm(`Promote model ${shortHash(teach?.run?.candidate?.sha256)}? It serves from the next frame on${shadow ? ` (${shadow.changed} of ${shadow.frames} verdicts changed in the shadow check)` : ''}.${early}`)) return '';
    const t = await api('/api/teach/promote', { method: 'POST', body: '{}' });
    return `Model ${shortHash(t.run?.candidate?.sha256)} promoted`;
  }));
  $('teach-rollback').addEventListener('click', () => act('Rollback', async () => {
    if (!confirm(`Go back to model ${shortHash(teach?.previous)}?`)) return '';
    await api('/api/teach/rollback', { method: 'POST', body: '{}' });
    return 'The previous model serves again';
  }));
}

async function start() {
  try {
    await loadCameras();
  } catch (err) {
    show('', err.message);
    setTimeout(start, 1000);
    return;
  }
  readOnly(access !== 'change');
  await refresh();
  setInterval(() => {
    if (!busy) void refresh().then(() => readOnly(access !== 'change'));
  }, POLL_MS);
}

wire();
void start();
