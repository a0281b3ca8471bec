// End to end with real parts: sample images as a folder camera -> the committed demo model on
// onnxruntime -> a real mosquitto -> a real MQTT subscriber; and the simulated GigE camera through
// `crad-edge run` with the example config. Every payload is validated against schemas/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { version } from '../src/paths.js';
import { Daemon } from '../src/service/daemon.js';
import { createLogger } from '../src/shared/log.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { FakeGigeCamera } from './helpers/fake-gige.js';
import { assertValid, schemaValidator, Subscriber, until } from './helpers/publish-fixtures.js';
import { DaemonProcess, demoModel, repoRoot, samplesDir, writeConfig } from './helpers/daemon.js';
import { removeOnExit } from './helpers/cleanup.js';

const ajv = schemaValidator();
let broker: Mosquitto;

before(async () => {
  broker = await Mosquitto.start();
});
after(async () => {
  await broker.stop();
});

function checkoutCommit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

interface Manifest {
  images: { file: string; class: string; defect: string; expected: 'OK' | 'NG' }[];
}

test('folder camera -> demo model -> mosquitto: every sample arrives as a schema-valid result with crops', async () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(samplesDir, 'manifest.json'), 'utf8')) as Manifest;
  const configFile = writeConfig({
    device: { id: 'e2e' },
    log: { level: 'warn' },
    model: { path: demoModel },
    // 4 fps: slower than the model, so latest-frame-wins drops nothing and every sample is scored.
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: false, fps: 4 }],
    mqtt: { url: broker.url, topicPrefix: 'test/plant' },
    crops: { enabled: true, onlyNG: false },
    overlay: { enabled: true, onlyNG: false },
  });
  const prefix = 'test/plant/e2e';
  const subscriber = await Subscriber.connect(broker.url, 5, `${prefix}/#`);
  const daemon = new Daemon({ configFile, config: loadConfig(configFile), log: createLogger('warn') });
  await daemon.start();
  try {
    await subscriber.waitFor('a result per sample', (m) => m.filter((x) => x.topic === `${prefix}/cam1/result`).length >= manifest.images.length, 60_000);
    const results = subscriber.on(`${prefix}/cam1/result`).map((m) => m.json);
    for (const result of results) assertValid(ajv, 'result.schema.json', result);
    assert.deepEqual(results.map((r) => r.sequence), manifest.images.map((_, i) => i + 1), 'one result per image, in order');
    for (const result of results) {
      assert.equal(result.device, 'e2e');
      assert.equal(result.camera, 'cam1');
      assert.equal(result.calibrated, true, 'the demo model is calibrated');
      assert.match(result.model.hash, /^[0-9a-f]{64}$/);
      assert.ok(result.latencyMs.total >= result.latencyMs.inference);
    }

    // The model separates the defective samples from the good ones.
    const scoreOf = (expected: 'OK' | 'NG') =>
      results.filter((_, i) => manifest.images[i]!.expected === expected).map((r) => r.normalized as number);
    const good = scoreOf('OK');
    const bad = scoreOf('NG');
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(mean(bad) > mean(good), `defects score higher on average (NG ${mean(bad).toFixed(3)} vs OK ${mean(good).toFixed(3)})`);
    const verdictHits = results.filter((r, i) => r.verdict === manifest.images[i]!.expected).length;
    assert.ok(verdictHits >= Math.ceil(results.length * 0.75), `verdicts agree with the manifest for ${verdictHits}/${results.length}`);

    // Crops and overlays: binary JPEG with MQTT 5 properties pointing at their result. They are
    // published right after their result, so the last ones may still be on the way.
    const correlated = (topic: string, id: string) =>
      subscriber.on(topic).some((m) => m.packet.properties?.correlationData?.toString() === id);
    await subscriber.waitFor('an overlay and the crops of every result', () =>
      results.every((r) => correlated(`${prefix}/cam1/overlay`, r.messageId) &&
        Array.from({ length: r.crops as number }, (_, n) => n).every((n) => correlated(`${prefix}/cam1/crop/${n}`, r.messageId))),
    );
    for (const result of results) {
      const overlay = subscriber.on(`${prefix}/cam1/overlay`).find((m) => m.packet.properties?.correlationData?.toString() === result.messageId);
      assert.ok(overlay, `overlay for ${result.messageId}`);
      assert.equal(overlay.packet.properties?.contentType, 'image/jpeg');
      assert.deepEqual([...overlay.payload.subarray(0, 2)], [0xff, 0xd8], 'JPEG magic');
      for (let n = 0; n < result.crops; n++) {
        const crop = subscriber.on(`${prefix}/cam1/crop/${n}`).find((m) => m.packet.properties?.correlationData?.toString() === result.messageId);
        assert.ok(crop, `crop ${n} of ${result.messageId}`);
        assert.deepEqual([...crop.payload.subarray(0, 2)], [0xff, 0xd8]);
      }
    }

    const status = subscriber.on(`${prefix}/status`).at(-1)?.json;
    assertValid(ajv, 'device-status.schema.json', status);
    assert.equal(status.state, 'online');
    assert.equal(status.version, version);
    assert.equal(status.commit, checkoutCommit(), 'the commit of the checkout the tests run from (null outside one)');
    const cameraStatus = subscriber.on(`${prefix}/cam1/status`).map((m) => m.json);
    for (const s of cameraStatus) assertValid(ajv, 'camera-status.schema.json', s);
    assert.ok(cameraStatus.some((s) => s.state === 'online'));
    await daemon.stop();
    await subscriber.waitFor('offline status after shutdown', (m) => m.filter((x) => x.topic === `${prefix}/status`).at(-1)?.json?.state === 'offline');
    assertValid(ajv, 'device-status.schema.json', subscriber.on(`${prefix}/status`).at(-1)?.json);
  } finally {
    await daemon.stop();
    await subscriber.close();
  }
});

test('crad-edge run with the example GigE config streams results from the simulated GigE camera', async () => {
  const camera = new FakeGigeCamera();
  await camera.start();
  const state = removeOnExit(fs.mkdtempSync(path.join(repoRoot, '.work-e2e-')));
  const daemon = new DaemonProcess(path.join(repoRoot, 'config/example-gige-sim.json'), {
    CRAD_MQTT_URL: broker.url,
    CRAD_OUTBOX: path.join(state, 'outbox.sqlite'),
    STATE_DIRECTORY: state,
  });
  const prefix = 'lab/sim/sim';
  const subscriber = await Subscriber.connect(broker.url, 5, `${prefix}/#`);
  try {
    daemon.start();
    await subscriber.waitFor('3 results from the GigE camera', (m) => m.filter((x) => x.topic === `${prefix}/gige1/result`).length >= 3, 60_000);
    for (const m of subscriber.on(`${prefix}/gige1/result`)) assertValid(ajv, 'result.schema.json', m.json);

    // Camera unplugged: status goes offline; plugged back: online again and results resume.
    await camera.kill();
    await subscriber.waitFor('camera offline', (m) => m.some((x) => x.topic === `${prefix}/gige1/status` && x.json?.state === 'offline'), 30_000);
    const before = subscriber.on(`${prefix}/gige1/result`).length;
    await camera.restart();
    await subscriber.waitFor(
      'camera online again after offline',
      (m) => {
        const states = m.filter((x) => x.topic === `${prefix}/gige1/status`).map((x) => x.json?.state);
        return states.lastIndexOf('online') > states.indexOf('offline');
      },
      60_000,
    );
    await until('results resume', () => subscriber.on(`${prefix}/gige1/result`).length >= before + 2, 30_000);

    assert.equal(await daemon.stop('SIGTERM'), 0, `clean exit on SIGTERM\n${daemon.output.slice(-3000)}`);
    await subscriber.waitFor('offline device status', (m) => m.filter((x) => x.topic === `${prefix}/status`).at(-1)?.json?.state === 'offline');
  } finally {
    await daemon.stop('SIGKILL');
    await camera.stop();
    await subscriber.close();
  }
});
