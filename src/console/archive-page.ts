// The archive page: plain HTML and JS over the archive routes (relative URLs, so it works under
// whatever prefix the console mounts the plugin); no CDN, nothing to build.
export const archivePage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>crad-edge archive</title>
<style>
body{font-family:sans-serif;margin:1em;background:#f4f4f4}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;padding:8px;border-radius:4px;width:240px;font-size:13px}
.card img{width:240px;height:160px;object-fit:contain;background:#222}
.ng{color:#b00;font-weight:bold}
</style></head><body>
<h1>Archive</h1>
<p id="summary"></p>
<p><button id="prev">newer</button> <button id="next">older</button></p>
<div class="grid" id="grid"></div>
<script>
const limit = 24;
let offset = 0;
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
async function load() {
  const res = await fetch('archive?offset=' + offset + '&limit=' + limit);
  const body = await res.json();
  if (!res.ok) { document.getElementById('summary').textContent = body.error; return; }
  const s = body.status;
  document.getElementById('summary').textContent = body.total + ' entries, ' + (s.bytes / 1e6).toFixed(1) + ' MB' + (s.problem ? ' - ' + s.problem : '');
  const grid = document.getElementById('grid');
  grid.replaceChildren();
  for (const e of body.entries) {
    const image = e.overlay ? 'overlay.jpg' : 'frame.jpg';
    const good = el('button', { textContent: e.markedGood ? 'marked good' : 'mark good', disabled: !!e.markedGood });
    good.onclick = () => markGood(e.id, good);
    grid.append(el('div', { className: 'card' }, [
      el('a', { href: 'archive/' + e.id + '/frame.jpg' }, [el('img', { src: 'archive/' + e.id + '/' + image, loading: 'lazy' })]),
      el('div', {}, [el('span', { className: e.verdict === 'NG' ? 'ng' : '', textContent: e.verdict || 'uncalibrated' }),
        ' ' + e.camera + ' #' + e.sequence + ' score ' + (e.normalized === null ? e.raw.toFixed(3) : e.normalized.toFixed(3))]),
      el('div', { textContent: e.capturedAt }),
      el('div', {}, [el('a', { href: 'archive/' + e.id + '/result.json', textContent: 'json' }), ' ', good]),
    ]));
  }
  document.getElementById('prev').disabled = offset === 0;
  document.getElementById('next').disabled = offset + limit >= body.total;
}
document.getElementById('prev').onclick = () => { offset = Math.max(0, offset - limit); load(); };
document.getElementById('next').onclick = () => { offset += limit; load(); };
load();
</script></body></html>
`;
