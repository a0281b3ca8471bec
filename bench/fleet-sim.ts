// A plant in miniature: N daemon processes (one folder camera each, the demo model, own state dir)
// on one real mosquitto, all on loopback. One signed recipe change (config push) and one signed
// model delivery go to every device, the broker is stopped and started again once, and a
// persistent subscriber (clean: false, QoS 1) counts every result. Prints a per-device table and a
// summary; exits 1 when a result was lost or a step failed. README "Fleet" has the figures.
//
//   npm run fleet-sim -- --devices 10 [--fps 1] [--outage-s 10] [--crash] [--limit-s 900]
//
// Every wait has a timeout and the whole run a limit; processes and temp dirs go with the script
// (test/helpers/cleanup.ts, also on Ctrl-C).
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { signConfigPush } from '../src/config/push-signing.js';
import { signDelivery } from '../src/control/model-delivery.js';
import { tempDir } from '../test/helpers/cleanup.js';
import { DaemonProcess, demoModel, samplesDir, writeConfig } from '../test/helpers/daemon.js';
import { ModelServer } from '../test/helpers/model-server.js';
import { writeModelVariant } from '../test/helpers/model-variants.js';
import { Mosquitto } from '../test/helpers/mosquitto.js';
import { Subscriber, until, type Received } from '../test/helpers/publish-fixtures.js';
import { firstCopies, outboxResults, resultMessages, sleep, type ResultSeen } from '../test/helpers/reliability.js';

const { values: args } = parseArgs({
  options: {
    devices: { type: 'string', default: '3' },
    fps: { type: 'string', default: '1' },
    'outage-s': { type: 'string', default: '10' },
    'limit-s': { type: 'string', default: '900' },
    /** SIGKILL the broker instead of SIGTERM: a crash, without its last sessions saved. */
    crash: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log('npm run fleet-sim -- --devices N [--fps 1] [--outage-s 10] [--crash] [--limit-s 900]');
  process.exit(0);
}
const N = positive('devices', args.devices);
const FPS = positive('fps', args.fps);
const OUTAGE_MS = positive('outage-s', args['outage-s']) * 1000;
const LIMIT_MS = positive('limit-s', args['limit-s']) * 1000;

function positive(name: string, text: string): number {
  const n = Number(text);
  if (!(n > 0)) {
    console.error(`--${name} must be a positive number, not ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

/** ISA-95 style: enterprise/site/line, one level per device below it. */
const LINE = 'acme/site1/line1';
/** Waits scale with the fleet: on 2 cores, 10 daemons start and swap models one after the other. */
const STEP_MS = 60_000 + N * 15_000;
const signer = crypto.generateKeyPairSync('ed25519');
const publicKey = signer.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const t = () => performance.now();
const log = (text: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${text}`);

/** `via: 'status'`: the answer was lost and the retained status showed the change. */
type Applied = { ms: number; revision: number; via?: 'status'; error?: string };

interface Device {
  id: string;
  prefix: string;
  dir: string;
  daemon: DaemonProcess;
  firstResultMs?: number;
  push?: Applied;
  selection?: { recipe: string | null; error?: string };
  delivery?: Applied;
  exitCode?: number | null;
}

const devices: Device[] = [];
let broker: Mosquitto | undefined;
let server: ModelServer | undefined;
let results: Subscriber | undefined;
let ops: Subscriber | undefined;

// Whatever happens, the run ends: the limit stops it like a failure.
const watchdog = setTimeout(() => {
  console.error(`fleet-sim: over the limit of ${LIMIT_MS / 1000} s; stopping`);
  void shutdown().finally(() => process.exit(2));
}, LIMIT_MS);

async function shutdown(): Promise<void> {
  await Promise.all(devices.map((d) => d.daemon.stop('SIGKILL', 5000)));
  await Promise.all([results?.close(), ops?.close()].map((p) => p?.catch(() => undefined)));
  await server?.close();
  await broker?.dispose();
}

/**
 * Publish a command to every device at once; resolves with each device's final answer and when it
 * came. An answer is sent once: one that meets a dropped connection is gone (the daemon logs
 * "answer not delivered"), so `seen` may read the effect off the retained status instead, as a
 * fleet manager must (json.via = 'status').
 */
async function fanOut(topic: string, response: string, body: (d: Device) => object, seen?: (d: Device) => any): Promise<Map<Device, { json: any; ms: number }>> {
  const client = ops!;
  const tag = `${topic.replace('/', '-')}-${Date.now()}`;
  const start = t();
  const answers = new Map<Device, { json: any; ms: number }>();
  const final = (m: Received, d: Device) =>
    m.topic === `${d.prefix}/${response}` && m.packet.properties?.correlationData?.toString() === `${tag}-${d.id}` && m.json?.status !== 'progress';
  // Note the arrival time as answers come, not when the last one is in.
  const poll = setInterval(() => {
    for (const d of devices) {
      if (answers.has(d)) continue;
      const json = client.messages.find((x) => final(x, d))?.json ?? seen?.(d);
      if (json) answers.set(d, { json, ms: Math.round(t() - start) });
    }
  }, 20);
  try {
    await Promise.all(devices.map((d) => client.client.publishAsync(`${d.prefix}/${topic}`, Buffer.from(JSON.stringify(body(d))), {
      qos: 1, properties: { correlationData: Buffer.from(`${tag}-${d.id}`) },
    })));
    await until(`every device's answer on ${response}`, () => answers.size === devices.length, STEP_MS);
  } catch (err) {
    // A device that does not answer is a finding for the table, not the end of the run.
    const silent = devices.filter((d) => !answers.has(d));
    log(`${(err as Error).message}: no answer from ${silent.map((d) => d.id).join(', ')}`);
    for (const d of silent) {
      console.log(`--- ${d.id} (last lines)\n${d.daemon.output.slice(-2000)}`);
      answers.set(d, { json: { status: 'error', error: 'no answer', stage: topic }, ms: Math.round(t() - start) });
    }
  } finally {
    clearInterval(poll);
  }
  return answers;
}

const received = (d: Device): ResultSeen[] => resultMessages(results!.messages, d.prefix);
const lastStatus = (d: Device): any => ops!.on(`${d.prefix}/status`).at(-1)?.json;

/** Sequence numbers missing inside each camera run (a camera rebuild starts again at 1), in capture order. */
function gaps(seen: ResultSeen[]): string[] {
  const out: string[] = [];
  for (const camera of new Set(seen.map((r) => r.camera))) {
    let previous = 0;
    for (const r of seen.filter((x) => x.camera === camera).sort((a, b) => a.capturedAt - b.capturedAt)) {
      if (r.sequence > previous + 1) out.push(`${camera}#${previous + 1}${r.sequence - 1 > previous + 1 ? `-${r.sequence - 1}` : ''}`);
      previous = r.sequence;
    }
  }
  return out;
}

async function main(): Promise<boolean> {
  const load = (when: string) => log(`load ${when}: ${execFileSync('uptime').toString().trim()}`);
  load('before');
  log(`${N} devices, ${FPS} fps each, broker outage ${OUTAGE_MS / 1000} s; ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB`);
  const root = tempDir('fleet');
  broker = await Mosquitto.start({ persistence: true });
  server = await ModelServer.start();
  const variant = path.join(root, 'fleet-v2.onnx');
  writeModelVariant(demoModel, variant, 'crad-edge.fleet', 'v2');
  const variantHash = sha256(variant);
  const variantUrl = server.serve('/fleet-v2.onnx', fs.readFileSync(variant));

  // The measured consumer: a persistent session, so what arrives while it or the broker is away waits for it.
  results = await Subscriber.connect(broker.url, 5, `${LINE}/+/+/result`, `fleet-scada-${process.pid}`);
  ops = await Subscriber.connect(broker.url, 5, `${LINE}/+/status`);
  for (const answer of ['config/response', 'recipe/response', 'model/response']) await ops.client.subscribeAsync(`${LINE}/+/${answer}`, { qos: 1 });

  for (let i = 1; i <= N; i++) {
    const id = `cell${String(i).padStart(2, '0')}`;
    const dir = fs.mkdtempSync(path.join(root, `${id}-`));
    const modelsDir = path.join(dir, 'models');
    fs.mkdirSync(modelsDir);
    fs.copyFileSync(demoModel, path.join(modelsDir, 'current.onnx'));
    const configFile = writeConfig({
      device: { id },
      // One onnxruntime thread each: N daemons share the cores.
      model: { path: path.join(modelsDir, 'current.onnx'), modelsDir, intraOpThreads: 1, interOpThreads: 1 },
      cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: FPS, recipe: 'A' }],
      recipes: { A: { inference: { sensitivity: 0 } } },
      // Default keepalive: a short one runs out while N daemons reload models on 2 cores.
      mqtt: { url: broker.url, topicPrefix: LINE, reconnectMinMs: 200, reconnectMaxMs: 2000, connectTimeoutMs: 2000 },
      crops: { enabled: false },
      remoteConfig: {
        publicKey, probationMs: 15_000,
        allow: ['inference.', 'regions.', 'crops.', 'overlay.', 'cameras', 'model.path', 'recipes'],
      },
      service: { shutdownTimeoutMs: 15_000 },
    }, dir);
    devices.push({ id, prefix: `${LINE}/${id}`, dir, daemon: new DaemonProcess(configFile) });
  }

  const started = t();
  for (const d of devices) d.daemon.start();
  await until('every device streams results', () => {
    for (const d of devices) if (d.firstResultMs === undefined && received(d).length > 0) d.firstResultMs = Math.round(t() - started);
    return devices.every((d) => d.firstResultMs !== undefined);
  }, STEP_MS).catch(explain);
  log(`all ${N} devices stream results (last first result after ${Math.max(...devices.map((d) => d.firstResultMs!))} ms)`);

  // 1. One signed recipe change: recipe A more sensitive, a new recipe B; then select B.
  const pushes = await fanOut('config/set', 'config/response', (d) => signConfigPush({
    transaction: `fleet-recipes-${d.id}`, baseRevision: 0,
    changes: { recipes: { A: { inference: { sensitivity: 0.1 } }, B: { inference: { sensitivity: -0.1 } } } },
  }, signer.privateKey, d.id), (d) => (lastStatus(d)?.configRevision >= 1 ? { status: 'ok', revision: lastStatus(d).configRevision, via: 'status' } : undefined));
  for (const [d, a] of pushes) d.push = { ms: a.ms, revision: a.json.revision, via: a.json.via, ...(a.json.status !== 'ok' ? { error: a.json.error } : {}) };
  log(`recipe push answered by all in ${Math.max(...[...pushes.values()].map((a) => a.ms))} ms`);
  const selections = await fanOut('recipe/set', 'recipe/response', (d) => ({ transaction: `fleet-select-${d.id}`, recipe: 'B' }));
  for (const [d, a] of selections) d.selection = { recipe: a.json.active?.cam1 ?? null, ...(a.json.status !== 'ok' ? { error: a.json.error } : {}) };

  // 2. One signed model delivery on top of the pushed revision.
  const deliveries = await fanOut('model/deliver', 'model/response', (d) => signDelivery({
    transaction: `fleet-model-${d.id}`, baseRevision: d.push?.revision ?? 0, url: variantUrl, sha256: variantHash,
    size: fs.statSync(variant).size, name: 'fleet-v2.onnx',
  }, signer.privateKey, d.id), (d) => (lastStatus(d)?.model?.hash === variantHash ? { status: 'ok', revision: lastStatus(d).configRevision, via: 'status' } : undefined));
  for (const [d, a] of deliveries) d.delivery = { ms: a.ms, revision: a.json.revision, via: a.json.via, ...(a.json.status !== 'ok' ? { error: `${a.json.stage}: ${a.json.error}` } : {}) };
  log(`model delivery answered by all in ${Math.max(...[...deliveries.values()].map((a) => a.ms))} ms`);
  // Probation must end before the outage, or a device rolls back by itself (no broker = not healthy).
  const onNewModel = (d: Device) => received(d).some((r) => r.json.model?.hash === variantHash && r.json.recipe === 'B');
  await until('results from the new model under recipe B, probation over', () => devices.every((d) =>
    d.delivery?.error !== undefined || (onNewModel(d) && lastStatus(d)?.config?.probation === null)), STEP_MS).catch(explain);

  // 3. The broker goes away and comes back (SIGTERM: mosquitto saves its sessions; --crash: it cannot).
  log(`broker ${args.crash ? 'killed (SIGKILL)' : 'stopped (SIGTERM)'}, down for ${OUTAGE_MS / 1000} s`);
  await broker.stop(args.crash ? 'SIGKILL' : 'SIGTERM');
  await sleep(OUTAGE_MS);
  await broker.start();
  const upAt = Date.now();
  await until('live results from every device after the broker restart', () =>
    devices.every((d) => received(d).some((r) => r.capturedAt > upAt + 1000)), STEP_MS).catch(explain);
  log('every device reconnected and streams again');

  // 4. Clean stop: each daemon flushes its outbox and says what it made in its last (offline) status.
  await Promise.all(devices.map(async (d) => (d.exitCode = await d.daemon.stop('SIGTERM', 30_000))));
  const made = (d: Device): number | null => {
    const s = lastStatus(d);
    if (s?.state !== 'offline' || !s.counters) return null;
    return Object.values(s.counters as Record<string, { ok: number; ng: number; unjudged: number }>).reduce((n, c) => n + c.ok + c.ng + c.unjudged, 0);
  };
  await until('every result at the subscriber', () => devices.every((d) => made(d) !== null && firstCopies(received(d)).length >= made(d)!), 30_000).catch(() => undefined);
  load('after');

  // The table.
  let ok = true;
  const rows = devices.map((d) => {
    const all = received(d);
    const firsts = firstCopies(all);
    const m = made(d);
    const outbox = outboxResults(path.join(d.dir, 'outbox.sqlite'));
    const lost = m === null ? null : m - firsts.length;
    const modelHash = firsts.at(-1)?.json.model?.hash as string | undefined;
    const problems = [
      d.push?.error && `push: ${d.push.error}`, d.selection?.error && `recipe/set: ${d.selection.error}`, d.delivery?.error && `delivery: ${d.delivery.error}`,
      d.exitCode !== 0 && `exit ${d.exitCode}`, m === null && 'no final status', outbox.rows.length > 0 && `${outbox.rows.length} left in outbox`,
      (outbox.counters.dropped_result ?? 0) > 0 && `${outbox.counters.dropped_result} dropped by outbox`, modelHash !== variantHash && 'not on the delivered model',
    ].filter(Boolean);
    if (problems.length > 0 || lost !== 0) ok = false;
    return {
      device: d.id, firstMs: d.firstResultMs, push: d.push ? `r${d.push.revision} ${d.push.ms}ms${d.push.via ? '*' : ''}` : '-', recipe: d.selection?.recipe ?? '-',
      delivery: d.delivery ? `r${d.delivery.revision} ${d.delivery.ms}ms${d.delivery.via ? '*' : ''}` : '-', model: modelHash?.slice(0, 12) ?? '-',
      made: m ?? '?', received: firsts.length, lost: lost ?? '?', dup: all.length - firsts.length, replayed: firsts.filter((r) => r.replayed).length,
      gaps: gaps(firsts).join(' ') || '-', problems: problems.join('; ') || '-',
    };
  });
  console.log();
  console.table(rows);
  const sum = (key: 'made' | 'received' | 'dup' | 'replayed') => rows.reduce((n, r) => n + (typeof r[key] === 'number' ? r[key] : 0), 0);
  const worst = (list: Array<number | undefined>) => (list.every((x) => x !== undefined) ? `${Math.max(...(list as number[]))} ms` : 'not all');
  console.log(`
devices                          ${N} (folder camera ${FPS} fps, crops off, demo model, 1 onnxruntime thread each)
all streaming after start        ${worst(devices.map((d) => d.firstResultMs))}
signed recipe push applied by all ${worst(devices.map((d) => (d.push?.error ? undefined : d.push?.ms)))}
model delivery applied by all    ${worst(devices.map((d) => (d.delivery?.error ? undefined : d.delivery?.ms)))}  (download, checks, swap; ${variantHash.slice(0, 12)})
broker outage                    ${OUTAGE_MS / 1000} s (${args.crash ? 'SIGKILL' : 'SIGTERM'}, start again on the same port, persistence on)
results made / received          ${sum('made')} / ${sum('received')}  (lost ${sum('made') - sum('received')}, duplicates ${sum('dup')}, replayed ${sum('replayed')})
answers lost (* above)           ${devices.filter((d) => d.push?.via || d.delivery?.via).length} devices: applied, seen in their retained status
gaps                             ${rows.filter((r) => r.gaps !== '-').length} devices with sequence gaps
verdict                          ${ok ? 'OK: nothing lost' : 'FAILED (see problems)'}`);
  return ok;
}

function explain(err: Error): never {
  const tails = devices.filter((d) => d.daemon.output).map((d) => `--- ${d.id}\n${d.daemon.output.slice(-1500)}`).join('\n');
  throw new Error(`${err.message}\n${tails}`);
}

let code = 1;
try {
  code = (await main()) ? 0 : 1;
} catch (err) {
  console.error(`fleet-sim failed: ${(err as Error).stack ?? String(err)}`);
} finally {
  clearTimeout(watchdog);
  await shutdown();
}
process.exit(code);
