// Model downloads against real servers on loopback: a good file over http and over https with a
// test CA; a resumed download asks for the rest with Range; a server that stalls, one that never
// answers, one that announces more than it sends, one that sends more than announced, a 404, a
// wrong hash, a disk without room: each a clear error. Requests are checked (URL, signature)
// before anything is fetched.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  checkDeliveredContract, DeliveryError, download, parseDeliveryRequest, partialPath, signDelivery, verifyDownload, type DeliveryLimits,
} from '../src/control/model-delivery.js';
import { signConfigPush } from '../src/config/push-signing.js';
import { tempDir } from './helpers/cleanup.js';
import { makeCertificates } from './helpers/certs.js';
import { demoModel } from './helpers/daemon.js';
import { ModelServer } from './helpers/model-server.js';

const root = tempDir('delivery');
const model = fs.readFileSync(demoModel);
const sha256 = crypto.createHash('sha256').update(model).digest('hex');
// Small timeouts: a stalled or silent server is found by the downloader's own clocks.
const limits: DeliveryLimits = { maxBytes: 1 << 30, connectTimeoutMs: 400, idleTimeoutMs: 400, totalTimeoutMs: 60_000, ca: '' };
let server: ModelServer;
after(async () => server?.close());

let counter = 0;
const target = () => partialPath(path.join(root, `models-${++counter}`), sha256);

async function rejects(promise: Promise<unknown>, stage: string, message: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof DeliveryError, String(err));
    assert.equal(err.stage, stage);
    assert.match(err.message, message);
    return true;
  });
}

test('a good file downloads whole, verifies and passes the model contract', async () => {
  server = await ModelServer.start();
  const file = target();
  await download(server.serve('/good.onnx', model), file, model.length, limits);
  assert.ok(fs.readFileSync(file).equals(model));
  await verifyDownload(file, { transaction: 't', baseRevision: 0, url: '', sha256, size: model.length });
  await checkDeliveredContract(file);
});

test('a partial file is resumed with a Range request', async () => {
  const file = target();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, model.subarray(0, 5000));
  const starts: number[] = [];
  await download(server.serve('/resume.onnx', model), file, model.length, limits, ({ resumedFrom }) => starts.push(resumedFrom));
  assert.deepEqual(server.ranges.filter((r) => r.path === '/resume.onnx').map((r) => r.range), ['bytes=5000-']);
  assert.deepEqual(starts, [5000]);
  assert.ok(fs.readFileSync(file).equals(model));
});

test('a stalled body, a silent server, a short body, an overlong body and a 404 each fail clearly; a partial stays for a resume', async () => {
  const stalled = target();
  await rejects(download(server.serve('/stall.onnx', model, 'stall'), stalled, model.length, limits), 'downloading', /no data for 400 ms after \d+ of \d+ bytes/);
  assert.ok(fs.statSync(stalled).size > 0 && fs.statSync(stalled).size < model.length, 'the partial file is kept');
  await rejects(download(server.serve('/silent.onnx', model, 'silent'), target(), model.length, limits), 'downloading', /did not answer within 400 ms/);
  await rejects(download(server.serve('/short.onnx', model, 'short'), target(), model.length, limits), 'downloading', /after \d+ of \d+ bytes/);
  await rejects(download(server.serve('/long.onnx', model, 'long'), target(), model.length, limits), 'downloading', /more than the \d+ bytes announced/);
  await rejects(download(server.serve('/missing.onnx', model, 'missing'), target(), model.length, limits), 'downloading', /HTTP 404/);
  // The request says fewer bytes than the server announces.
  await rejects(download(server.serve('/other.onnx', model), target(), model.length - 1, limits), 'downloading', /announces \d+ bytes, the request said/);
  await rejects(download('http://127.0.0.1:1/closed.onnx', target(), model.length, limits), 'downloading', /ECONNREFUSED/);
});

test('a wrong hash removes the file; a disk without room is refused before downloading', async () => {
  const file = target();
  const forged = Buffer.from(model);
  forged.writeUInt8(forged.readUInt8(forged.length - 1) ^ 0xff, forged.length - 1);
  await download(server.serve('/forged.onnx', forged), file, forged.length, limits);
  await rejects(verifyDownload(file, { transaction: 't', baseRevision: 0, url: '', sha256, size: model.length }), 'verified', /sha256 mismatch/);
  assert.equal(fs.existsSync(file), false);
  const huge = 2 ** 52;
  await rejects(download(server.serve('/huge.onnx', model), target(), huge, { ...limits, maxBytes: huge }), 'downloading', /the disk is full/);
});

test('https with a CA from model.delivery.ca; without it the certificate is refused', async () => {
  const certs = makeCertificates();
  const secure = await ModelServer.start(certs);
  try {
    const url = secure.serve('/tls.onnx', model);
    await rejects(download(url, target(), model.length, limits), 'downloading', /certificate/);
    const file = target();
    await download(url, file, model.length, { ...limits, ca: certs.ca });
    assert.ok(fs.readFileSync(file).equals(model));
  } finally {
    await secure.close();
  }
});

test('requests: URL, hash, size and name are checked; a signing key makes the signature required and binding', () => {
  const base = { transaction: 'd1', baseRevision: 3, url: 'https://models.example/m.onnx', sha256, size: model.length };
  const options = { revision: 3, publicKey: '', deviceId: 'press7', maxBytes: 1 << 30 };
  const parse = (request: object, opts = options) => () => parseDeliveryRequest(Buffer.from(JSON.stringify(request)), opts);
  assert.deepEqual(parse(base)(), base);
  for (const [bad, message] of [
    [{ ...base, url: 'ftp://models.example/m.onnx' }, /url must be http or https, not ftp/],
    [{ ...base, url: 'not a url' }, /is not a valid URL/],
    [{ ...base, sha256: 'abc' }, /sha256 must be 64/],
    [{ ...base, size: 0 }, /size must be a positive integer/],
    [{ ...base, size: 2 ** 31 }, /over the limit/],
    [{ ...base, name: '../x.onnx' }, /name must be a plain file name/],
    [{ ...base, baseRevision: 2 }, /stale baseRevision 2/],
    [{ ...base, extra: 1 }, /unknown field "extra"/],
  ] as const) assert.throws(parse(bad), message);

  const signer = crypto.generateKeyPairSync('ed25519');
  const signed = { ...options, publicKey: signer.publicKey.export({ type: 'spki', format: 'pem' }).toString() };
  const request = signDelivery(base, signer.privateKey, 'press7');
  assert.equal(parse(request, signed)().url, base.url);
  assert.throws(parse(base, signed), /signature is missing/);
  assert.throws(parse({ ...request, url: 'https://evil.example/m.onnx' }, signed), /does not verify/);
  assert.throws(parse(request, { ...signed, deviceId: 'press8' }), /does not verify/);
  // A config-push signature over the same fields never verifies as a delivery.
  const { signature } = signConfigPush({ ...base, changes: {} } as never, signer.privateKey, 'press7');
  assert.throws(parse({ ...base, signature }, signed), /does not verify/);
});
