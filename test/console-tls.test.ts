// The operator console over HTTPS (http.tls.cert / http.tls.key), the daemon as a real process with
// a certificate openssl makes at test time: HTTPS verified against that CA and nothing else, no
// plain HTTP on the port, credentials still required beyond loopback; and a certificate or key
// that cannot be read or used (or half a pair) stops the start with an error naming the key, with
// no stack trace and no console listening.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { makeCertificates, type Certificates } from './helpers/certs.js';
import { call, CONSOLE_HOST, consoleConfig, consoleUrl } from './helpers/console.js';
import { DaemonProcess } from './helpers/daemon.js';
import { Mosquitto } from './helpers/mosquitto.js';

const TOKEN = 'console-tls-token';
let broker: Mosquitto;
let certs: Certificates;

/** Beyond loopback (CONSOLE_HOST), so the token is mandatory. */
const config = (id: string, tls: Record<string, string>): string =>
  consoleConfig(`tls-${id}`, { url: broker.url, topicPrefix: 'console-tls/plant' }, { token: TOKEN, tls });

/** fetch()'s failure, with the cause that says why (undici wraps it). */
async function fetchFailure(url: string): Promise<string> {
  const err = await fetch(url).then(() => null, (e: Error & { cause?: Error & { code?: string } }) => e);
  assert.ok(err, `${url} answered`);
  return `${err.message}: ${err.cause?.code ?? ''} ${err.cause?.message ?? ''}`;
}

before(async () => {
  broker = await Mosquitto.start();
  certs = makeCertificates({ ips: [CONSOLE_HOST] });
});

after(async () => {
  await broker?.dispose();
});

test('HTTPS with the configured certificate: verified against its CA, no plain HTTP on the port, the token still needed', async () => {
  const daemon = new DaemonProcess(config('tls', { cert: certs.cert, key: certs.key }));
  try {
    daemon.start();
    const base = await consoleUrl(daemon);
    assert.match(base, /^https:\/\/127\.0\.0\.2:\d+$/);

    const health = await call(`${base}/healthz`, { ca: certs.ca });
    assert.equal(health.status, 200);
    assert.deepEqual(health.json, { status: 'alive' });
    // Without our CA the certificate does not verify: it is really checked.
    assert.match(await fetchFailure(`${base}/healthz`), /certificate/i);
    // The same port speaks no plain HTTP.
    assert.match(await fetchFailure(`${base.replace(/^https:/, 'http:')}/healthz`), /fetch failed/);

    // Credentials apply over TLS as they do without it.
    const anonymous = await call(`${base}/api/counters`, { ca: certs.ca });
    assert.equal(anonymous.status, 401, anonymous.text);
    assert.equal((await call(`${base}/api/counters`, { ca: certs.ca, token: 'wrong' })).status, 401);
    const counters = await call(`${base}/api/counters`, { ca: certs.ca, token: TOKEN });
    assert.equal(counters.status, 200, counters.text);
    assert.ok(counters.json.cam1, counters.text);
    assert.equal((await call(`${base}/api/counters/reset`, { ca: certs.ca, body: {} })).status, 401);
    const reset = await call(`${base}/api/counters/reset`, { ca: certs.ca, token: TOKEN, body: { camera: 'cam1' } });
    assert.deepEqual(reset.json, { status: 'ok', cameras: ['cam1'] });

    assert.equal(await daemon.stop('SIGTERM'), 0, daemon.output.slice(-2000));
  } finally {
    await daemon.stop('SIGKILL');
  }
});

test('a certificate or key that cannot be read or used, or half a pair, stops the start naming the key: no stack, no console', async () => {
  const cases: Array<[what: string, tls: Record<string, string>, error: RegExp]> = [
    ['missing cert', { cert: path.join(certs.dir, 'missing.pem'), key: certs.key }, /http\.tls\.cert: cannot read \S*missing\.pem: ENOENT/],
    ['key is a directory', { cert: certs.cert, key: certs.dir }, /http\.tls\.key: cannot read \S+: EISDIR/],
    ['key of another certificate', { cert: certs.cert, key: path.join(certs.dir, 'ca.key') }, /http\.tls\.cert \/ http\.tls\.key: not a PEM certificate and its private key .*key values mismatch/],
    ['cert without key', { cert: certs.cert }, /http\.tls\.key: must be set together with http\.tls\.cert/],
  ];
  const daemons = cases.map(([what, tls]) => new DaemonProcess(config(what.replaceAll(' ', '-'), tls)));
  try {
    for (const daemon of daemons) daemon.start();
    // SIGCONT does nothing to a running process: stop() just waits for each to exit on its own.
    const codes = await Promise.all(daemons.map((daemon) => daemon.stop('SIGCONT', 90_000)));
    for (const [i, [what, , error]] of cases.entries()) {
      const output = daemons[i]!.output;
      assert.equal(codes[i], 1, `${what}: exit code\n${output.slice(-2000)}`);
      assert.match(output, error, what);
      assert.doesNotMatch(output, /\n\s+at |"stack"/, `${what}: no stack trace\n${output.slice(-2000)}`);
      assert.doesNotMatch(output, /operator console listening/, what);
    }
  } finally {
    await Promise.all(daemons.map((daemon) => daemon.stop('SIGKILL')));
  }
});
