// The archive page: plain HTML and JS over the archive routes (relative URLs, so it works under
// whatever prefix the console mounts the plugin); no CDN, nothing to build. Filters (camera,
// verdict, recipe, capture time) go to the listing's query; a card opens the full frame with its
// regions boxed, beside the overlay, not the thumbnail.
export const archivePage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>crad-edge archive</title>
<style>
body{font-family:sans-serif;margin:1em;background:#f4f4f4}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;padding:8px;border-radius:4px;width:240px;font-size:13px}
.card img{width:240px;height:160px;object-fit:contain;background:#222;cursor:zoom-in}
.ng{color:#b00;font-weight:bold}
form{display:flex;flex-wrap:wrap;gap:.8em;align-items:center;margin:.5em 0}
#zoom{position:fixed;inset:0;background:rgba(0,0,0,.85);color:#fff;padding:1em;overflow:auto}
#zoom canvas,#zoom img{max-width:none;background:#222;margin:.5em .5em 0 0;vertical-align:top}
</style></head><body>
<p><a href="../">&larr; back to the live view</a></p>
<h1>Archive</h1>
<form id="filters">
<label>Camera <input id="f-camera" size="10"></label>
<label>Verdict <select id="f-verdict"><option value="">any</option><option>NG</option><option>OK</option><option>ERROR</option></select></label>
<label>Recipe <input id="f-recipe" size="10"></label>
<label>From <input type="datetime-local" id="f-from"></label>
<label>To <input type="datetime-local" id="f-to"></label>
<button id="refresh" type="submit">Refresh</button>
</form>
<p id="summary"></p>
<p><button id="prev">newer</button> <button id="next">older</button></p>
<div class="grid" id="grid"></div>
<div id="zoom" hidden><button id="zoom-close">Close</button> <span id="zoom-info"></span><div><canvas id="zoom-frame"></canvas><img id="zoom-overlay" alt=""></div></div>
<script>
const limit = 24;
let offset = 0;
const $ = (id) => document.getElementById(id);
function el(tag, props, children) {
  const e = Object.assign(document.createElement(tag), props || {});
  for (const c of children || []) e.append(c);
  return e;
}
async function markGood(id, button) {
  button.disabled = true;
  const res = await fetch('archive/' + id + '/good', { method: 'POST' });
  const body = await res.json();
  button.textContent = res.ok ? 'marked good' : 'refused: ' + body.error;
}
function query() {
  const q = new URLSearchParams({ offset: String(offset), limit: String(limit) });
  const set = (name, value) => { if (value !== '') q.set(name, value); };
  set('camera', $('f-camera').value.trim());
  set('verdict', $('f-verdict').value);
  set('recipe', $('f-recipe').value.trim());
  // datetime-local is the operator's local time; the daemon takes ISO 8601.
  if ($('f-from').value) q.set('from', new Date($('f-from').value).toISOString());
  if ($('f-to').value) q.set('to', new Date($('f-to').value).toISOString());
  return q.toString();
}
/** The full frame with its regions boxed, and the overlay beside it. */
function zoom(e) {
  delete $('zoom-frame').dataset.entry;
  const image = new Image();
  image.onload = () => {
    const canvas = $('zoom-frame');
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(image, 0, 0);
    ctx.strokeStyle = '#ff3b30';
    ctx.lineWidth = Math.max(2, image.naturalWidth / 300);
    for (const r of e.regions) ctx.strokeRect(r.x, r.y, r.width, r.height);
    canvas.dataset.entry = e.id;
  };
  image.src = 'archive/' + e.id + '/frame.jpg';
  $('zoom-overlay').hidden = !e.overlay;
  if (e.overlay) $('zoom-overlay').src = 'archive/' + e.id + '/overlay.jpg';
  $('zoom-info').textContent = (e.verdict || 'uncalibrated') + ' ' + e.camera + ' #' + e.sequence + ', ' + new Date(e.capturedAt).toLocaleString() + ', ' + e.regions.length + ' region(s)';
  $('zoom').hidden = false;
}
async function load() {
  const res = await fetch('archive?' + query());
  const body = await res.json();
  if (!res.ok) { $('summary').textContent = body.error; return; }
  const s = body.status;
  $('summary').textContent = body.total + ' entries, ' + (s.bytes / 1e6).toFixed(1) + ' MB in the archive' + (s.problem ? ' - ' + s.problem : '');
  const grid = $('grid');
  grid.replaceChildren();
  for (const e of body.entries) {
    const image = e.overlay ? 'overlay.jpg' : 'frame.jpg';
    const good = el('button', { textContent: e.markedGood ? 'marked good' : 'mark good', disabled: !!e.markedGood });
    good.onclick = () => markGood(e.id, good);
    const thumb = el('img', { src: 'archive/' + e.id + '/' + image, loading: 'lazy', title: 'open the full frame' });
    thumb.onclick = () => zoom(e);
    grid.append(el('div', { className: 'card' }, [
      thumb,
      el('div', {}, [el('span', { className: e.verdict === 'NG' ? 'ng' : '', textContent: e.verdict || 'uncalibrated' }),
        ' ' + e.camera + ' #' + e.sequence + ' score ' + (e.normalized === null ? e.raw.toFixed(3) : e.normalized.toFixed(3)) + (e.recipe ? ' recipe ' + e.recipe : '')]),
      el('div', { textContent: new Date(e.capturedAt).toLocaleString() }),
      el('div', {}, [el('a', { href: 'archive/' + e.id + '/frame.jpg', textContent: 'frame' }), ' ', el('a', { href: 'archive/' + e.id + '/result.json', textContent: 'json' }), ' ', good]),
    ]));
  }
  $('prev').disabled = offset === 0;
  $('next').disabled = offset + limit >= body.total;
}
const wanted = new URLSearchParams(location.search);
$('f-camera').value = wanted.get('camera') || '';
$('f-verdict').value = wanted.get('verdict') || '';
$('filters').onsubmit = (event) => { event.preventDefault(); offset = 0; load(); };
$('zoom-close').onclick = () => { $('zoom').hidden = true; };
$('prev').onclick = () => { offset = Math.max(0, offset - limit); load(); };
$('next').onclick = () => { offset += limit; load(); };
load();
</script></body></html>
`;
