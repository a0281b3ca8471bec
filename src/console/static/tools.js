// The console page's ROI check and zoom (loaded after console.js, sharing its globals).
// ROI check: before a changed ROI is pushed, the daemon scores the camera's recent frames with it
// and the page shows how many would be NG, beside how many were; the operator applies or cancels.
// Zoom: a click on the live image, a region or the pinned NG opens that result's full frame and
// overlay from the archive, at full resolution (enlarged when small) with its boxes.
'use strict';
/** A rise in the NG share this large (or every frame NG) makes the check a warning, not a note. */
const ROI_WARN_RISE = 0.25;
/** The archive writes off the pipeline: a result clicked at once may be a moment from its entry. */
const ZOOM_LOOKUPS = 6;
const ZOOM_LOOKUP_MS = 500;
/** Most a small frame is enlarged in the zoom. */
const ZOOM_MAX = 4;
let pendingRoi;
/** Counts zooms: a slow lookup for an earlier click must not draw over a later one. */
let zooms = 0;

/** Ask the daemon what `roi` would do, then let the operator apply it or not. */
async function checkThenApply(roi) {
  const box = $('roi-check');
  pendingRoi = roi;
  $('roi-check-text').textContent = 'Checking this ROI on the recent frames…';
  $('roi-check-results').replaceChildren();
  box.className = 'dialog';
  box.hidden = false;
  $('roi-confirm').disabled = true;
  let check;
  try {
    check = await api(`${cameraPath()}/roi/check`, { method: 'POST', body: JSON.stringify({ roi }) });
  } catch (err) {
    $('roi-check-text').textContent = `The ROI could not be checked: ${err.message}. Apply it anyway?`;
    box.className = 'dialog warn';
    $('roi-confirm').disabled = access !== 'change';
    return;
  }
  const what = roi ? `ROI ${roi.width}x${roi.height} at ${roi.x},${roi.y}` : 'the whole frame';
  if (check.frames === 0) {
    $('roi-check-text').textContent = `No recent frames of camera ${camera} to check ${what} on. Apply it anyway?`;
  } else {
    const pct = Math.round(100 * check.ngShare);
    const all = check.ng === check.frames && check.ngNow < check.frames;
    const warn = all || (check.ng - check.ngNow) / check.frames >= ROI_WARN_RISE;
    $('roi-check-text').textContent = `${warn ? 'WARNING: ' : ''}with ${what}, ${check.ng} of the last ${check.frames} frames would be NG (${pct} %); `
      + `${check.ngNow} of them were NG as inspected.${all ? ' Every part would be rejected.' : ''}`;
    box.className = warn ? 'dialog warn' : 'dialog';
    $('roi-check-results').replaceChildren(...check.results.map((r) => {
      const cell = document.createElement('span');
      cell.className = `cell ${r.proposed ?? 'none'}`;
      cell.title = `frame ${r.sequence}: ${r.now ?? 'uncalibrated'} now, ${r.proposed ?? 'no verdict'} with this ROI (score ${r.score.toFixed(3)})`;
      return cell;
    }));
  }
  box.dataset.ngShare = String(check.ngShare);
  $('roi-confirm').disabled = access !== 'change';
}

function closeRoiCheck() {
  $('roi-check').hidden = true;
  pendingRoi = undefined;
}

async function confirmRoi() {
  const roi = pendingRoi;
  closeRoiCheck();
  if (roi === undefined) return;
  await push(`${cameraPath()}/roi`, { roi }, 'ROI');
  drawnRoi = null;
  $('apply-roi').disabled = true;
  drawImageMarks();
}

/** The archive entry of a shown result (camera, capture time, sequence), or null. */
async function archiveEntry(f) {
  const query = new URLSearchParams({ camera, from: f.capturedAt, to: f.capturedAt, limit: '10' });
  for (let i = 0; i < ZOOM_LOOKUPS; i++) {
    const list = await api(`/api/archive?${query}`);
    const entry = list.entries.find((e) => e.sequence === f.sequence);
    if (entry) return entry;
    await new Promise((r) => setTimeout(r, ZOOM_LOOKUP_MS));
  }
  return null;
}

/** Open result `f` (a live frame or the pinned NG) at full size; `region` is highlighted. */
async function zoom(f, region) {
  if (!f) return;
  const mine = ++zooms;
  const canvas = $('zoom-frame');
  delete canvas.dataset.entry;
  canvas.width = canvas.height = 0;
  $('zoom-overlay').hidden = true;
  $('zoom-info').textContent = `Opening frame ${f.sequence} from the archive…`;
  $('zoom').hidden = false;
  let entry;
  try {
    entry = await archiveEntry(f);
    if (mine !== zooms) return;
  } catch (err) {
    $('zoom-info').textContent = `Frame ${f.sequence} cannot be opened: ${err.message}`;
    return;
  }
  if (!entry) {
    $('zoom-info').textContent = `Frame ${f.sequence} (${f.verdict ?? 'uncalibrated'}) is not in the archive: it keeps the verdicts in archive.verdicts (NG by default), and retention may have removed it.`;
    return;
  }
  const image = new Image();
  image.src = `/api/archive/${entry.id}/frame.jpg`;
  try {
    await image.decode();
    if (mine !== zooms) return;
  } catch {
    $('zoom-info').textContent = `The full frame of ${f.sequence} could not be loaded (retention may have removed it).`;
    return;
  }
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(image, 0, 0);
  ctx.lineWidth = Math.max(2, canvas.width / 300);
  const same = (r) => region && r.x === region.x && r.y === region.y && r.width === region.width && r.height === region.height;
  // The chosen region last, so that its yellow lies over any red box it touches.
  for (const r of [...entry.regions.filter((r) => !same(r)), ...entry.regions.filter(same)]) {
    ctx.strokeStyle = same(r) ? '#f1c40f' : '#e74c3c';
    ctx.strokeRect(r.x, r.y, r.width, r.height);
  }
  const chosen = entry.regions.find(same);
  canvas.dataset.region = chosen ? `${chosen.x},${chosen.y},${chosen.width},${chosen.height}` : '';
  canvas.dataset.entry = entry.id;
  canvas.dataset.sequence = String(entry.sequence);
  // A frame smaller than the screen is enlarged (whole times, at most 4); a larger one scrolls.
  const body = $('zoom-body');
  const fit = Math.max(1, Math.min(ZOOM_MAX, Math.floor(Math.min(body.clientWidth / (entry.overlay ? 2 : 1) / canvas.width, body.clientHeight / canvas.height))));
  canvas.style.width = `${canvas.width * fit}px`;
  const overlay = $('zoom-overlay');
  overlay.hidden = !entry.overlay;
  overlay.style.width = '';
  overlay.onload = () => (overlay.style.width = `${overlay.naturalWidth * fit}px`);
  if (entry.overlay) overlay.src = `/api/archive/${entry.id}/overlay.jpg`;
  $('zoom-info').textContent = `${entry.verdict ?? 'uncalibrated'} frame ${entry.sequence}, ${localTime(entry.capturedAt)}, score ${(entry.normalized ?? entry.raw).toFixed(3)}, `
    + `${entry.regions.length} region(s), ${canvas.width}x${canvas.height} px${entry.overlay ? ', with its heatmap overlay' : '; no overlay archived (overlay.enabled is off)'}`;
  // Scroll the chosen region (or the first) into the middle of the view.
  const focus = region ?? entry.regions[0];
  if (focus) body.scrollTo({ left: (focus.x + focus.width / 2) * fit - body.clientWidth / 2, top: (focus.y + focus.height / 2) * fit - body.clientHeight / 2 });
}

/** The region of the shown frame under a frame point, or undefined. */
function regionAt(p) {
  return frame?.regions.find((r) => p.x >= r.x && p.x <= r.x + r.width && p.y >= r.y && p.y <= r.y + r.height);
}

function wireTools() {
  $('roi-confirm').addEventListener('click', confirmRoi);
  $('roi-cancel').addEventListener('click', () => {
    closeRoiCheck();
    show('ROI not applied', '');
  });
  $('zoom-close').addEventListener('click', () => ($('zoom').hidden = true));
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') $('zoom').hidden = true;
  });
  $('last-ng').addEventListener('click', (event) => {
    event.preventDefault();
    void zoom(lastNg);
  });
  $('regions').addEventListener('click', (event) => {
    const item = event.target.closest('li');
    if (!item || !frame) return;
    void zoom(frame, frame.regions[[...$('regions').children].indexOf(item)]);
  });
}

wireTools();
