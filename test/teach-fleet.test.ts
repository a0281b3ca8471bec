// The fleet's side of on-device training: a model station A trained and promoted is fetched from
// A's console, put on the fleet's file server, and published to station B with `crad-edge deliver`
// (the installed CLI, signing for B); B's next results, read by a PLC's Paho client, carry its hash.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { tempDir } from './helpers/cleanup.js';
import { makeCertificates } from './helpers/certs.js';
import { CONSOLE_HOST, consoleUrl } from './helpers/console.js';
import { DaemonProcess, demoModel, repoRoot, samplesDir, writeConfig } from './helpers/daemon.js';
import { ModelServer } from './helpers/model-server.js';
import { writeModelVariant } from './helpers/model-variants.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { Plc } from './helpers/plc.js';
import { until } from './helpers/wait.js';

const TOKEN = 'fleet-token';
const cleanups: (() => Promise<void> | void)[] = [];

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function station(id: string, dir: string, brokerPort: number, extra: Record<string, unknown>): DaemonProcess {
  const models = path.join(dir, 'models');
  fs.mkdirSync(models, { recursive: true });
  fs.copyFileSync(demoModel, path.join(models, 'serving.onnx'));
  const daemon = new DaemonProcess(writeConfig({
    device: { id },
    mqtt: { url: `mqtt://127.0.0.1:${brokerPort}`, topicPrefix: 'crad', reconnectMinMs: 200, reconnectMaxMs: 1000 },
    model: { path: path.join(models, 'serving.onnx'), modelsDir: models, warmupRuns: 0 },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 4 }],
    crops: { enabled: false },
    ...extra,
  }, dir));
  daemon.start();
  cleanups.push(async () => void (await daemon.stop()));
  return daemon;
}

/** `crad-edge deliver` to line2, run beside this process (whose file server must keep answering). */
function deliverCli(file: string, url: string, brokerPort: number, extra: string[], broker = `mqtt://127.0.0.1:${brokerPort}`, env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const args = [path.join(repoRoot, 'bin/crad-edge.js'), 'deliver', file, '--url', url, '--broker', broker, '--prefix', 'crad', '--device', 'line2', '--timeout', '120', ...extra];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { encoding: 'utf8', timeout: 180_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

test('a model trained on station A reaches station B: downloaded from A\'s console, delivered and signed by crad-edge deliver, B\'s results carry its hash', async () => {
  const broker = await Mosquitto.start();
  cleanups.push(() => broker.stop());
  const files = await ModelServer.start();
  cleanups.push(() => files.close());
  const signer = crypto.generateKeyPairSync('ed25519');
  const keyFile = path.join(tempDir('teach-fleet-key'), 'fleet.pem');
  fs.writeFileSync(keyFile, signer.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });

  const dirA = tempDir('teach-fleet-a');
  const good = path.join(dirA, 'dataset', 'cam1', 'train', 'good');
  fs.mkdirSync(good, { recursive: true });
  const samples = fs.readdirSync(samplesDir).filter((name) => name.endsWith('.png'));
  for (let i = 0; i < 22; i++) fs.copyFileSync(path.join(samplesDir, samples[i % samples.length]!), path.join(good, `${i}.png`));
  const stationA = station('line1', dirA, broker.port, {
    http: { enabled: true, host: CONSOLE_HOST, port: 0, token: TOKEN },
    training: { randomBackbone: true, backbone: 'mobilenet-v2', inputSize: 64, epochs: 1, minSteps: 0, batchSize: 8, selectSteps: 8, threads: 1, shadowFrames: 0, autoPromote: true },
  });
  station('line2', tempDir('teach-fleet-b'), broker.port, { remoteConfig: { publicKey: signer.publicKey.export({ type: 'spki', format: 'pem' }).toString() } });
  const plcA = await Plc.connect('crad/line1', broker.port, 'fleet-plc-a');
  cleanups.push(() => plcA.close());
  const plcB = await Plc.connect('crad/line2', broker.port, 'fleet-plc-b');
  cleanups.push(() => plcB.close());
  await until('results on both stations', () => plcA.results('cam1').length > 0 && plcB.results('cam1').length > 0, 90_000);
  const before = plcB.results('cam1').at(-1).model.hash as string;

  plcA.publish('train/start', { transaction: 'fleet-1', cameraId: 'cam1' });
  const run = () => plcA.messages('train/progress').at(-1)?.json;
  await until('station A promoted its model', () => ['promoted', 'failed'].includes(run()?.state), 240_000);
  assert.equal(run().state, 'promoted', run().error);
  const trained = run().candidate.sha256 as string;

  // The quality engineer takes the file from A's console (read access)...
  const base = await consoleUrl(stationA);
  const refused = await fetch(`${base}/api/teach/models/${trained}.onnx`);
  assert.equal(refused.status, 401, 'the model file needs read access');
  const unknown = await fetch(`${base}/api/teach/models/${'0'.repeat(64)}.onnx`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(unknown.status, 404);
  const download = await fetch(`${base}/api/teach/models/${trained}.onnx`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(download.status, 200);
  const body = Buffer.from(await download.arrayBuffer());
  assert.equal(crypto.createHash('sha256').update(body).digest('hex'), trained, 'the file is the promoted model');
  const file = path.join(tempDir('teach-fleet-file'), 'line1-teach.onnx');
  fs.writeFileSync(file, body);

  // ...puts it on the fleet's file server and delivers it to B, signed for B.
  const url = files.serve('/models/line1-teach.onnx', body);
  const cli = await deliverCli(file, url, broker.port, ['--key', keyFile]);
  assert.equal(cli.status, 0, `${cli.stdout}\n${cli.stderr}`);
  assert.match(cli.stdout, /^line2: applied$/m);
  const count = plcB.results('cam1').length;
  await until('station B inspects with the trained model', () => plcB.results('cam1').slice(count).some((r) => r.model.hash === trained), 60_000);
  assert.notEqual(before, trained);

  // Unsigned, the same delivery is refused by B (it has remoteConfig.publicKey), and the CLI says so.
  const unsigned = await deliverCli(file, url, broker.port, []);
  assert.equal(unsigned.status, 1, `${unsigned.stdout}\n${unsigned.stderr}`);
  assert.match(unsigned.stdout, /^line2: failed at accepted: signature is missing/m);
});

test('crad-edge deliver over a TLS broker that wants a client certificate and a password: applied; a wrong password is a clear error', async () => {
  const certs = makeCertificates({ clients: ['fleet'] });
  const broker = await Mosquitto.start({ tls: { ca: certs.ca, cert: certs.cert, key: certs.key, users: { fleet: 's3cret' } } });
  cleanups.push(() => broker.stop());
  const files = await ModelServer.start();
  cleanups.push(() => files.close());
  // The station on the plain listener; the fleet tool on the TLS one.
  station('line2', tempDir('teach-fleet-tls'), broker.port, {});
  const plc = await Plc.connect('crad/line2', broker.port, 'fleet-tls-plc');
  cleanups.push(() => plc.close());
  await until('the station inspects', () => plc.results('cam1').length > 0, 90_000);
  const file = path.join(tempDir('teach-fleet-tls-file'), 'variant.onnx');
  writeModelVariant(demoModel, file, 'fleet.note', 'another file, another hash');
  const hash = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  const url = files.serve('/models/variant.onnx', fs.readFileSync(file));
  const tls = `mqtts://127.0.0.1:${broker.tlsPort}`;
  const client = certs.clients.fleet!;
  const tlsArgs = ['--ca', certs.ca, '--cert', client.cert, '--cert-key', client.key, '--username', 'fleet'];
  const wrong = await deliverCli(file, url, broker.port, tlsArgs, tls, { CRAD_DELIVER_PASSWORD: 'wrong' });
  assert.equal(wrong.status, 2, `${wrong.stdout}\n${wrong.stderr}`);
  assert.match(wrong.stderr, /cannot deliver .*variant\.onnx: .*(Not authorized|Bad User Name or Password)/i);
  const right = await deliverCli(file, url, broker.port, tlsArgs, tls, { CRAD_DELIVER_PASSWORD: 's3cret' });
  assert.equal(right.status, 0, `${right.stdout}\n${right.stderr}`);
  const count = plc.results('cam1').length;
  await until('the station inspects with the delivered model', () => plc.results('cam1').slice(count).some((r) => r.model.hash === hash), 60_000);
});
