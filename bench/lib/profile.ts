// Where the daemon's main thread spends its time: a V8 CPU profile (node --cpu-prof) reduced to
// self time per function and per place (our src files, each package, node internals, native).
// Native work a JS function calls synchronously (a synchronous session.run, cv.imencode) is
// counted as that function's self time, which is what shows a blocked event loop.
import fs from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  file: string;
  wallMs: number;
  /** Main-thread busy time (everything but idle), ms. */
  busyMs: number;
  byPlace: { place: string; ms: number; share: number }[];
  topFunctions: { fn: string; ms: number; share: number }[];
}

function placeOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : 'native (called from JS)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith('node:')) return 'node internals';
  const src = /\/(src|bench|test)\/(.+)$/.exec(url);
  return src ? `${src[1]}/${src[2]}` : url;
}

export function summarizeProfile(file: string, top = 12): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n] as const));
  const parentOf = new Map<number, number>();
  for (const n of profile.nodes) for (const child of n.children ?? []) parentOf.set(child, n.id);
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; attribute it to that sample's node.
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const fnTotals = new Map<string, number>();
  const placeTotals = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of selfUs) {
    let node = byId.get(id)!;
    if (node.callFrame.functionName === '(idle)') continue;
    busy += us;
    // A native function's own name is unreliable in these profiles (N-API callbacks share
    // templates); name it by the JS function that called it.
    let native = false;
    while (!node.callFrame.url && !node.callFrame.functionName.startsWith('(') && parentOf.has(node.id)) {
      native = true;
      node = byId.get(parentOf.get(node.id)!)!;
    }
    const { functionName, url, lineNumber } = node.callFrame;
    const place = placeOf(url, functionName) + (native ? ' (native code it calls)' : '');
    const fn = `${functionName || '(anonymous)'} ${url ? `${placeOf(url, functionName)}:${lineNumber + 1}` : ''}`.trim() + (native ? ' -> native' : '');
    fnTotals.set(fn, (fnTotals.get(fn) ?? 0) + us);
    placeTotals.set(place, (placeTotals.get(place) ?? 0) + us);
  }
  const wallMs = (profile.endTime - profile.startTime) / 1000;
  const rows = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).map(([k, us]) => ({ k, ms: us / 1000, share: us / 1000 / wallMs }));
  return {
    file,
    wallMs,
    busyMs: busy / 1000,
    byPlace: rows(placeTotals).slice(0, top).map(({ k, ms, share }) => ({ place: k, ms, share })),
    topFunctions: rows(fnTotals).slice(0, top).map(({ k, ms, share }) => ({ fn: k, ms, share })),
  };
}
