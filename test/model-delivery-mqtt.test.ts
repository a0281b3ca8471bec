// Model delivery, golden samples and the audit log over real MQTT against a daemon process and a
// loopback model server: a signed delivery is answered stage by stage and swaps the model in as a
// new revision; a bad signature, a wrong hash, a stalled server and a model that fails its golden
// samples are refused with the running model untouched; one delivery at a time; audit/get pages
// through all of it. A model that fails its golden samples at start-up keeps the cameras stopped
// until a delivered model passes.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { signDelivery } from '../src/control/model-delivery.js';
import { tempDir } from './helpers/cleanup.js';
import { DaemonProcess, demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { ModelServer } from './helpers/model-server.js';
import { writeModelVariant, writeRecalibratedModel } from './helpers/model-variants.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { assertValid, schemaValidator, Subscriber, until, type Received } from './helpers/publish-fixtures.js';
import { Device } from './helpers/remote-device.js';

const ajv = schemaValidator();
const TOPIC_PREFIX = 'md/plant';
const root = tempDir('delivery-mqtt');
const signer = crypto.generateKeyPairSync('ed25519');
const publicKey = signer.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

const variant = path.join(root, 'variant.onnx');
writeModelVariant(demoModel, variant, 'crad-edge.test.copy', 'delivered');
const lenient = path.join(root, 'lenient.onnx');

let broker: Mosquitto;
let server: ModelServer;
after(async () => {
  await server?.close();
  await broker?.dispose();
});

function deviceConfig(id: string, model: string, extra: Record<string, unknown> = {}): { configFile: string; modelsDir: string } {
  const dir = fs.mkdtempSync(path.join(root, `${id}-`));
  const modelsDir = path.join(dir, 'models');
  fs.mkdirSync(modelsDir);
  fs.copyFileSync(model, path.join(modelsDir, 'current.onnx'));
  const configFile = writeConfig({
    device: { id },
    model: {
      path: path.join(modelsDir, 'current.onnx'), modelsDir, goldenDir: samplesDir,
      // Small: a stalled server is found by the daemon's own clocks.
      delivery: { connectTimeoutMs: 2000, idleTimeoutMs: 1000 },
    },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 2 }],
    mqtt: { url: broker.url, topicPrefix: TOPIC_PREFIX, reconnectMinMs: 200, reconnectMaxMs: 1000 },
    crops: { enabled: false },
    ...extra,
  }, dir);
  return { configFile, modelsDir };
}

let counter = 0;
/** Publish a command with fresh correlation data; resolves with every answer to it once the last (non-progress) one is in. */
async function command(client: Subscriber, prefix: string, topic: string, response: string, body: object, userProperties?: Record<string, string>): Promise<any[]> {
  const correlation = `c-${++counter}`;
  await client.client.publishAsync(`${prefix}/${topic}`, Buffer.from(JSON.stringify(body)), {
    qos: 1, properties: { correlationData: Buffer.from(correlation), ...(userProperties ? { userProperties } : {}) },
  });
  const answers = () => client.messages.filter((m: Received) => m.topic === `${prefix}/${response}` && m.packet.properties?.correlationData?.toString() === correlation).map((m) => m.json);
  await until(`the answer to ${topic} ${correlation}`, () => answers().some((a) => a.status !== 'progress'), 60_000);
  return answers();
}

const deliver = async (device: { client: Subscriber; prefix: string }, body: object, userProperties?: Record<string, string>) => {
  const answers = await command(device.client, device.prefix, 'model/deliver', 'model/response', body, userProperties);
  for (const answer of answers) assertValid(ajv, 'model-deliver.schema.json#/$defs/response', answer);
  return { stages: answers.map((a) => `${a.status}:${a.stage}`), last: answers[answers.length - 1] };
};

function deviceStatus(client: Subscriber, prefix: string): any {
  const statuses = client.messages.filter((m) => m.topic === `${prefix}/status`);
  return statuses[statuses.length - 1]?.json;
}

test('deliveries over MQTT: stages, swap, refusals, one at a time, audit/get paging, golden/run', async () => {
  broker = await Mosquitto.start();
  server = await ModelServer.start();
  await writeRecalibratedModel(demoModel, lenient, 1000);
  const { configFile, modelsDir } = deviceConfig('dlv1', demoModel, { remoteConfig: { publicKey } });
  const device = new Device(broker.url, TOPIC_PREFIX, 'dlv1', configFile);
  const request = (name: string, file: string, extra: Record<string, unknown> = {}) =>
    signDelivery({ transaction: `tx-${name}`, baseRevision: extra.baseRevision as number ?? revision, url: server.serve(`/${name}.onnx`, fs.readFileSync(file), extra.behaviour as never), sha256: sha(file), size: fs.statSync(file).size, name: `${name}.onnx` }, signer.privateKey, 'dlv1');
  let revision = 0;
  try {
    await device.start();

    const good = await deliver(device, request('good', variant), { 'client-id': 'ops-console-1' });
    assert.deepEqual(good.stages, ['progress:accepted', 'progress:downloading', 'progress:downloaded', 'progress:verified', 'progress:contract', 'progress:golden', 'ok:applied'], JSON.stringify(good.last));
    assert.equal(good.last.revision, 1);
    assert.equal(good.last.golden.passed, true);
    revision = 1;
    await until('the status shows the delivered model', () => deviceStatus(device.client, device.prefix)?.model?.hash === sha(variant), 30_000);
    assert.equal(fs.readdirSync(path.join(modelsDir, '.partial')).length, 0, 'no partial file left');
    await device.resultsAfter(Date.now(), 2, 'results from the delivered model');

    const tampered = { ...request('tampered', variant), url: server.serve('/elsewhere.onnx', fs.readFileSync(variant)) };
    const badSignature = await deliver(device, tampered);
    assert.deepEqual([badSignature.last.status, badSignature.last.stage], ['error', 'accepted']);
    assert.match(badSignature.last.error, /signature does not verify/);
    assert.equal(server.ranges.some((r) => r.path === '/elsewhere.onnx'), false, 'nothing fetched for a bad signature');

    const refused = await deliver(device, request('lenient', lenient));
    assert.deepEqual([refused.last.status, refused.last.stage], ['error', 'golden'], JSON.stringify(refused.last));
    assert.match(refused.last.error, /golden samples failed \(6 of 12.*weave_01_hole\.png \(expected NG, got OK\)/);
    assert.equal(fs.existsSync(path.join(modelsDir, 'lenient.onnx')), false, 'a refused model does not stay in modelsDir');

    const wrongHash = await deliver(device, signDelivery({ ...request('wronghash', variant), sha256: 'a'.repeat(64), signature: undefined } as never, signer.privateKey, 'dlv1'));
    assert.deepEqual([wrongHash.last.stage, wrongHash.last.status], ['verified', 'error']);
    assert.match(wrongHash.last.error, /sha256 mismatch/);

    // A stalled download holds the single slot: a second delivery meanwhile is refused.
    const stalledDone = deliver(device, request('stalled', variant, { behaviour: 'stall' }));
    await until('the stalled download started', () => device.client.messages.some((m) => m.json?.transaction === 'tx-stalled' && m.json?.stage === 'downloading'), 30_000);
    const second = await deliver(device, request('second', variant));
    assert.match(second.last.error, /already running \(transaction tx-stalled\)/);
    const stalled = await stalledDone;
    assert.deepEqual([stalled.last.status, stalled.last.stage], ['error', 'downloading']);
    assert.match(stalled.last.error, /no data for 1000 ms/);
    assert.equal(deviceStatus(device.client, device.prefix).model.hash, sha(variant), 'the delivered model still serves');

    const golden = (await command(device.client, device.prefix, 'golden/run', 'golden/response', { transaction: 'g1', clientId: 'qa-bench' }))[0];
    assertValid(ajv, 'golden-response.schema.json', golden);
    assert.deepEqual([golden.status, golden.run.passed, golden.run.model.hash], ['ok', true, sha(variant)]);

    // Page through the whole log, newest first.
    const entries: any[] = [];
    let before: number | null = null;
    do {
      const [page] = await command(device.client, device.prefix, 'audit/get', 'audit/response', { transaction: `a-${entries.length}`, limit: 4, ...(before ? { before } : {}) });
      assertValid(ajv, 'audit-response.schema.json', page);
      assert.ok(page.entries.length <= 4);
      entries.push(...page.entries);
      before = page.next;
    } while (before !== null);
    assert.deepEqual(entries.map((e) => e.seq), Array.from({ length: entries.length }, (_, i) => entries.length - i));
    const find = (kind: string, outcome: string, transaction?: string) => entries.find((e) => e.kind === kind && e.outcome === outcome && (!transaction || e.transaction === transaction));
    assert.equal(entries.at(-1).kind, 'golden');
    assert.deepEqual([entries.at(-1).outcome, entries.at(-1).details.why], ['passed', 'start-up']);
    const applied = find('config', 'applied', 'tx-good');
    assert.deepEqual(applied.changes, [{ key: 'model.path', old: path.join(modelsDir, 'current.onnx'), new: path.join(fs.realpathSync(modelsDir), 'good.onnx') }]);
    assert.deepEqual([applied.revisionBefore, applied.revisionAfter], [0, 1]);
    assert.deepEqual([applied.actor.clientId, applied.actor.clientIdFrom], ['ops-console-1', 'user-property']);
    assert.match(applied.actor.keyFingerprint, /^SHA256:/);
    assert.ok(find('delivery', 'applied', 'tx-good'));
    for (const [tx, stage] of [['tx-tampered', 'accepted'], ['tx-lenient', 'golden'], ['tx-wronghash', 'verified'], ['tx-second', 'accepted'], ['tx-stalled', 'downloading']]) {
      assert.equal(find('delivery', 'failed', tx)?.details.stage, stage, tx);
    }
    assert.ok(find('golden', 'failed', 'tx-lenient'));
    const onDemand = find('golden', 'passed', 'g1');
    assert.deepEqual([onDemand.actor.clientId, onDemand.actor.clientIdFrom], ['qa-bench', 'payload']);
    await device.stop();
  } finally {
    await device.dispose();
  }
});

test('a model failing its golden samples at start-up: not ready, no cameras, until a delivered model passes', async () => {
  const { configFile } = deviceConfig('dlv2', lenient);
  const daemon = new DaemonProcess(configFile);
  const prefix = `${TOPIC_PREFIX}/dlv2`;
  const client = await Subscriber.connect(broker.url, 5, `${prefix}/#`);
  try {
    daemon.start();
    await until('a not-ready status', () => deviceStatus(client, prefix)?.golden?.ready === false, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${daemon.output.slice(-3000)}`);
    });
    const status = deviceStatus(client, prefix);
    assertValid(ajv, 'device-status.schema.json', status);
    assert.match(status.golden.reason, /golden samples failed \(6 of 12.*cameras not started/);
    assert.deepEqual(status.cameras, {});
    assert.equal(client.messages.some((m) => m.topic === `${prefix}/cam1/result`), false);

    const url = server.serve('/recovery.onnx', fs.readFileSync(variant));
    const answers = await command(client, prefix, 'model/deliver', 'model/response', { transaction: 'recover', baseRevision: 0, url, sha256: sha(variant), size: fs.statSync(variant).size });
    assert.equal(answers[answers.length - 1].status, 'ok', JSON.stringify(answers));
    await until('results once ready', () => client.messages.some((m) => m.topic === `${prefix}/cam1/result`), 60_000);
    await until('a ready status', () => deviceStatus(client, prefix)?.golden?.ready === true, 30_000);
    assert.equal(await daemon.stop(), 0);
  } finally {
    await daemon.stop('SIGKILL');
    await client.close();
  }
});
