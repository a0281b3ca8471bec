// The operator console's server against a running daemon process, a real broker and a real
// Prometheus: refused beyond loopback without credentials; probes; read-only access that cannot
// change anything; config changes through the one push path (recorded, revisioned, same errors);
// bad requests answered 4xx with a reason; counters reset by HTTP and MQTT (payloads held to
// schemas/counters-*.schema.json) and on the status topic;
// /metrics scraped by Prometheus.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { call, consoleConfig, consoleUrl, eventually, Prometheus } from './helpers/console.js';
import { DaemonProcess } from './helpers/daemon.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { assertValid, schemaValidator, until } from './helpers/publish-fixtures.js';
import { Device } from './helpers/remote-device.js';

const ajv = schemaValidator();
const TOPIC_PREFIX = 'console/plant';
const TOKEN = 'console-test-token';
let broker: Mosquitto;
let device: Device;
let base: string;

const config = (id: string, http: Record<string, unknown>): string => consoleConfig(id, { url: broker.url, topicPrefix: TOPIC_PREFIX }, http);

before(async () => {
  broker = await Mosquitto.start();
  device = new Device(broker.url, TOPIC_PREFIX, 'open-read', config('open-read', { token: TOKEN, openReadOnly: true }));
  await device.start();
  base = await consoleUrl(device.process);
});

after(async () => {
  await device?.dispose();
  await broker?.dispose();
});

test('bound beyond loopback without credentials, the daemon refuses to start and names the key', async () => {
  const daemon = new DaemonProcess(config('no-auth', {}));
  daemon.start();
  const code = await daemon.stop('SIGCONT', 90_000).catch(() => null);
  // SIGCONT does nothing to a running process: stop() just waits for it to exit on its own.
  assert.notEqual(code, 0, daemon.output.slice(-2000));
  assert.match(daemon.output, /http\.host is 127\.0\.0\.2, beyond loopback: set http\.token/);
});

test('probes: /healthz answers, /readyz is ready once broker and camera are up', async () => {
  assert.equal(base.startsWith('http://127.0.0.2:'), true, base);
  const health = await call(`${base}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(health.json, { status: 'alive' });
  await eventually('readyz 200', async () => (await call(`${base}/readyz`)).status === 200);
  assert.deepEqual((await call(`${base}/readyz`)).json, { ready: true, reasons: [] });
});

test('read-only access reads but cannot change; the token can, through the recorded push path', async () => {
  assert.equal((await call(`${base}/`)).status, 200);
  assert.equal((await call(`${base}/api/cameras/cam1`)).status, 200);
  const before = await device.getConfig();

  const refused = await call(`${base}/api/config`, { body: { baseRevision: before.revision, changes: { 'inference.sensitivity': 0.1 } } });
  assert.equal(refused.status, 401);
  assert.match(refused.json.error, /changes need the console credentials/);
  const wrongToken = await call(`${base}/api/config`, { token: 'nope', body: { baseRevision: before.revision, changes: { 'inference.sensitivity': 0.1 } } });
  assert.equal(wrongToken.status, 401);
  assert.equal((await call(`${base}/api/counters/reset`, { body: {} })).status, 401);
  // The archive and dataset routes answer a read-only request the same (as the README says).
  assert.equal((await call(`${base}/api/dataset/capture/cam1`, { method: 'POST' })).status, 401);
  assert.equal((await call(`${base}/api/dataset/record/cam1`, { method: 'PUT', body: { every: 2 } })).status, 401);
  assert.equal((await device.getConfig()).revision, before.revision);

  const applied = await call(`${base}/api/config`, { token: TOKEN, body: { baseRevision: before.revision, changes: { 'inference.sensitivity': 0.1 } } });
  assert.equal(applied.status, 200, applied.text);
  assert.equal(applied.json.status, 'ok');
  assert.equal(applied.json.revision, before.revision + 1);
  const afterPush = await device.getConfig();
  assert.equal(afterPush.revision, before.revision + 1);
  assert.equal(afterPush.config.inference.sensitivity, 0.1);

  // The token also works as a basic-auth password (a browser's login prompt).
  const viaBasic = await call(`${base}/api/config`, { basic: ['operator', TOKEN], body: { baseRevision: afterPush.revision, changes: { 'inference.sensitivity': 0 } } });
  assert.equal(viaBasic.status, 200, viaBasic.text);
});

test('bad requests get a 4xx with the reason, and the daemon keeps running', async () => {
  const { revision } = await device.getConfig();
  const cases: Array<[string, Parameters<typeof call>[1], number, RegExp]> = [
    ['/api/config', { token: TOKEN, raw: '{"baseRevision": 0, ' }, 400, /JSON/i],
    ['/api/config', { token: TOKEN, body: { changes: {} } }, 400, /baseRevision/],
    ['/api/config', { token: TOKEN, body: { baseRevision: revision, changes: { 'inference.sensitivity': 0.9 } } }, 400, /inference\.sensitivity.*between -0\.5 and 0\.5/],
    ['/api/config', { token: TOKEN, body: { baseRevision: revision + 5, changes: { 'inference.sensitivity': 0.1 } } }, 400, /stale baseRevision/],
    ['/api/config', { token: TOKEN, body: { baseRevision: revision, changes: { 'remoteConfig.enabled': false } } }, 400, /remoteConfig\.enabled/],
    ['/api/config', { token: TOKEN, raw: JSON.stringify({ baseRevision: revision, changes: { pad: 'x'.repeat(70_000) } }) }, 413, /too large/i],
    ['/api/cameras/nope', {}, 404, /no running camera "nope"/],
    ['/api/cameras/cam1/live?overlay=maybe', {}, 400, /overlay/],
    ['/api/cameras/cam1/live?other=1', {}, 400, /additional properties/],
    // Unknown fields and wrong types are refused, never dropped or coerced.
    ['/api/config', { token: TOKEN, body: { baseRevision: revision, changes: { 'inference.sensitivity': 0.1 }, note: 'x' } }, 400, /must NOT have additional properties/],
    ['/api/config', { token: TOKEN, body: { baseRevision: String(revision), changes: { 'inference.sensitivity': 0.1 } } }, 400, /baseRevision must be integer, got a string/],
    ['/api/cameras/cam1/roi', { token: TOKEN, body: { baseRevision: revision, roi: null, extra: 1 } }, 400, /must NOT have additional properties/],
    // What is wrong is said, not "not valid JSON" or "got null".
    ['/api/config', { token: TOKEN, raw: `{"baseRevision": ${revision}, "changes": {"__proto__": {"x": 1}}}` }, 400, /key "__proto__" is not allowed/],
    ['/api/config', { token: TOKEN, raw: `{"baseRevision": ${revision}, "changes": {"inference.sensitivity": 1e309}}` }, 400, /number at "inference\.sensitivity" is out of range/],
    ['/api/cameras/cam1/roi', { token: TOKEN, body: { baseRevision: revision, roi: { x: 0, y: 0, width: 99999, height: 10 } } }, 400, /cameras\[0\]\.roi/],
    ['/no/such/page', {}, 404, /no such page/],
  ];
  for (const [url, options, status, error] of cases) {
    const reply = await call(`${base}${url}`, options);
    assert.equal(reply.status, status, `${url}: ${reply.text.slice(0, 300)}`);
    assert.match(reply.json?.error ?? '', error, url);
  }
  assert.equal((await device.getConfig()).revision, revision);
  assert.equal((await call(`${base}/healthz`)).status, 200);
});

test('counters: counted per camera, reset by HTTP and by MQTT, and on the status topic', async () => {
  await eventually('some results counted', async () => {
    const c = (await call(`${base}/api/counters`)).json.cam1;
    return c.ok + c.ng >= 2;
  });
  const counted = (await call(`${base}/api/counters`)).json.cam1;
  assert.ok(counted.cycleMs.min <= counted.cycleMs.mean && counted.cycleMs.mean <= counted.cycleMs.max, JSON.stringify(counted));

  const reset = await call(`${base}/api/counters/reset`, { token: TOKEN, body: { camera: 'cam1' } });
  assert.deepEqual(reset.json, { status: 'ok', cameras: ['cam1'] });
  const afterReset = (await call(`${base}/api/counters`)).json.cam1;
  assert.ok(Date.parse(afterReset.since) > Date.parse(counted.since));

  // MQTT: <prefix>/counters/reset, answered on <prefix>/counters/response; requests and answers
  // held to their schemas, a refused request's answer too.
  const client = device.client;
  const inSchema = [{ transaction: 'reset-1', camera: 'nope' }, { transaction: 'reset-2' }];
  for (const request of inSchema) assertValid(ajv, 'counters-reset.schema.json', request);
  const outOfSchema = { transaction: 'reset-3', cam: 'cam1' };
  assert.equal(ajv.validate('counters-reset.schema.json', outOfSchema), false, 'the schema refuses what the daemon refuses');
  for (const payload of [...inSchema.map((r) => JSON.stringify(r)), JSON.stringify(outOfSchema), '']) {
    await client.client.publishAsync(`${device.prefix}/counters/reset`, payload, { qos: 1 });
  }
  const transactions = ['reset-1', 'reset-2', 'reset-3', null];
  const answer = (tx: string | null) => client.messages.find((m) => m.topic === `${device.prefix}/counters/response` && m.json?.transaction === tx)?.json;
  await until('every counter-reset answer', () => transactions.every((tx) => answer(tx) !== undefined), 30_000);
  for (const tx of transactions) assertValid(ajv, 'counters-response.schema.json', answer(tx));
  assert.deepEqual(answer('reset-1'), { status: 'error', error: 'no running camera "nope"', transaction: 'reset-1', code: 60 });
  assert.deepEqual(answer('reset-2'), { status: 'ok', cameras: ['cam1'], transaction: 'reset-2', code: 0 });
  assert.deepEqual(answer('reset-3'), { status: 'error', error: 'unknown field "cam" (allowed: camera, transaction)', transaction: 'reset-3', code: 51 });
  assert.deepEqual(answer(null), { status: 'ok', cameras: ['cam1'], transaction: null, code: 0 }, 'an empty request resets every camera');
  const mqttReset = (await call(`${base}/api/counters`)).json.cam1;
  assert.ok(Date.parse(mqttReset.since) >= Date.parse(afterReset.since));

  const statuses = () => client.messages.filter((m) => m.topic === `${device.prefix}/status` && m.json?.counters?.cam1 && m.json.counters.cam1.ok + m.json.counters.cam1.ng > 0);
  await until('a device status with counters', () => statuses().length > 0, 30_000);
  const status = statuses().at(-1)!.json;
  assertValid(ajv, 'device-status.schema.json', status);
});

test('a real Prometheus scrapes /metrics (with the bearer token) and holds the daemon\'s series', async () => {
  const prometheus = await Prometheus.start(new URL(base).host, TOKEN);
  try {
    await eventually('prometheus has scraped the daemon', async () => (await prometheus.query('crad_frames_processed_total{camera="cam1"}')).length === 1, 60_000);
    const value = async (expr: string) => (await prometheus.query(expr)).map((r) => ({ labels: r.metric, value: Number(r.value[1]) }));
    assert.equal((await value('up{job="crad-edge"}'))[0]?.value, 1);
    for (const series of [
      'crad_frames_captured_total{camera="cam1"}', 'crad_frames_dropped_total{camera="cam1"}', 'crad_camera_reopens_total{camera="cam1"}',
      'crad_inference_seconds_count', 'crad_queue_seconds_count', 'crad_preprocess_seconds_count', 'crad_postprocess_seconds_count',
      'crad_capture_to_publish_seconds_count{camera="cam1"}', 'crad_batch_size_count', 'crad_outbox_pending_messages', 'crad_outbox_pending_bytes',
      'crad_outbox_oldest_age_seconds', 'crad_broker_reconnects_total', 'crad_config_revision', 'process_cpu_seconds_total', 'nodejs_eventloop_lag_seconds',
    ]) {
      assert.equal((await value(series)).length, 1, `${series} is scraped`);
    }
    assert.equal((await value('crad_broker_connected'))[0]!.value, 1);
    assert.equal((await value('crad_camera_state{camera="cam1",state="online"}'))[0]!.value, 1);
    const verdicts = (await value('crad_results_total{camera="cam1"}')).map((r) => r.labels.verdict).sort();
    assert.ok(verdicts.length > 0 && verdicts.every((v) => ['NG', 'OK', 'error', 'none'].includes(v!)), verdicts.join());
    const info = (await value('crad_model_info'))[0]!;
    assert.equal(info.value, 1);
    assert.match(info.labels.hash!, /^[0-9a-f]{64}$/);
    assert.equal(info.labels.provider, 'cpu');
    assert.equal(info.labels.input_form, 'float32-rgb-nchw');
    assert.ok(info.labels.name && info.labels.variant);
    assert.ok((await value('crad_frames_processed_total{camera="cam1"}'))[0]!.value > 0);
  } finally {
    await prometheus.stop();
  }
});

test('without http.openReadOnly, reading needs the credentials too', async () => {
  const closed = new Device(broker.url, TOPIC_PREFIX, 'closed', config('closed', { username: 'op', password: 'secret' }));
  try {
    await closed.start();
    const url = await consoleUrl(closed.process);
    for (const page of ['/metrics', '/', '/api/cameras/cam1', '/api/config']) {
      const refused = await call(`${url}${page}`);
      assert.equal(refused.status, 401, page);
      assert.match(refused.headers.get('www-authenticate') ?? '', /^Basic /);
    }
    assert.equal((await call(`${url}/api/cameras/cam1`, { basic: ['op', 'wrong'] })).status, 401);
    assert.equal((await call(`${url}/metrics`, { basic: ['op', 'secret'] })).status, 200);
    assert.equal((await call(`${url}/healthz`)).status, 200);
  } finally {
    await closed.dispose();
  }
});
