// The publisher over TLS with a client certificate and a username/password, against mosquitto.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Publisher } from '../src/publish/index.js';
import { createLogger } from '../src/shared/log.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { PREFIX, Subscriber, assertValid, makeResult, schemaValidator, tempDir, testConfig, until } from './helpers/publish-fixtures.js';

const dir = tempDir();

/** A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
function makeCertificates(): Record<'ca' | 'serverCert' | 'serverKey' | 'clientCert' | 'clientKey', string> {
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=crad test CA', '-keyout', f('ca.key'), '-out', f('ca.pem'));
  fs.writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const [who, subject] of [['server', '/CN=127.0.0.1'], ['client', '/CN=press7']] as const) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', subject, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`));
    openssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2',
      ...(who === 'server' ? ['-extfile', f('server.ext')] : []), '-out', f(`${who}.pem`));
  }
  fs.chmodSync(dir, 0o755);
  for (const name of fs.readdirSync(dir)) fs.chmodSync(f(name), 0o644); // mosquitto reads them as its own user
  return { ca: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

test('TLS with CA, client certificate and username/password: results arrive; a wrong password keeps retrying', async () => {
  const certs = makeCertificates();
  const broker = await Mosquitto.start({ tls: { ca: certs.ca, cert: certs.serverCert, key: certs.serverKey, users: { press7: 's3cret' } } });
  const sub = await Subscriber.connect(broker.url, 5); // the plain listener
  const tls = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey, rejectUnauthorized: true };
  const url = `mqtts://127.0.0.1:${broker.tlsPort}`;
  const publisher = new Publisher(
    testConfig(url, path.join(dir, 'tls.sqlite'), { mqtt: { tls, username: 'press7', password: 's3cret' } }),
    createLogger('silent'),
  );
  const refused = new Publisher(
    testConfig(url, path.join(dir, 'refused.sqlite'), { mqtt: { tls, username: 'press7', password: 'wrong' } }),
    createLogger('silent'),
  );
  try {
    await publisher.start();
    assert.equal(publisher.stats().connected, true);
    publisher.publishResult(makeResult('cam1', 1));
    await sub.waitFor('the result over TLS', (m) => m.some((x) => x.topic === `${PREFIX}/cam1/result`));
    assertValid(schemaValidator(), 'result.schema.json', sub.on(`${PREFIX}/cam1/result`)[0]!.json);

    await refused.start();
    refused.publishResult(makeResult('cam1', 2));
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(refused.stats().connected, false);
    assert.equal(refused.stats().outbox.pendingResults, 1, 'kept for when the credentials are fixed');
    await until('outbox drained', () => publisher.stats().outbox.pending === 0);
  } finally {
    await publisher.stop();
    await refused.stop();
    await sub.close();
    await broker.dispose();
  }
});

test('unreadable TLS files are refused when the publisher is built, naming the config key', async () => {
  const config = testConfig('mqtts://127.0.0.1:8883', path.join(dir, 'bad.sqlite'), { mqtt: { tls: { ca: path.join(dir, 'missing-ca.pem') } } });
  assert.throws(() => new Publisher(config, createLogger('silent')), /mqtt\.tls\.ca: cannot read .*missing-ca\.pem/);
  // The outbox it opened is closed again: a corrected publisher can use the same file.
  await new Publisher(testConfig('mqtt://127.0.0.1:1', path.join(dir, 'bad.sqlite')), createLogger('silent')).stop();
});
