// The publisher over TLS with a client certificate and a username/password, against mosquitto.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { Publisher } from '../src/publish/index.js';
import { createLogger } from '../src/shared/log.js';
import { makeCertificates } from './helpers/certs.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { tempDir } from './helpers/cleanup.js';
import { PREFIX, Subscriber, assertValid, makeResult, schemaValidator, testConfig, until } from './helpers/publish-fixtures.js';

const dir = tempDir('publish');

test('TLS with CA, client certificate and username/password: results arrive; a wrong password keeps retrying', async () => {
  const certs = makeCertificates({ clients: ['press7'] });
  const broker = await Mosquitto.start({ tls: { ca: certs.ca, cert: certs.cert, key: certs.key, users: { press7: 's3cret' } } });
  const sub = await Subscriber.connect(broker.url, 5); // the plain listener
  const tls = { ca: certs.ca, ...certs.clients.press7!, rejectUnauthorized: true };
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

test('unreadable TLS files are refused when the publisher starts, naming the config key', async () => {
  const config = testConfig('mqtts://127.0.0.1:8883', path.join(dir, 'bad.sqlite'), { mqtt: { tls: { ca: path.join(dir, 'missing-ca.pem') } } });
  const refused = new Publisher(config, createLogger('silent'));
  await assert.rejects(refused.start(), /mqtt\.tls\.ca: cannot read .*missing-ca\.pem/);
  await refused.stop();
  // The outbox it opened is closed again: a corrected publisher can use the same file.
  const corrected = new Publisher(testConfig('mqtt://127.0.0.1:1', path.join(dir, 'bad.sqlite')), createLogger('silent'));
  await corrected.start();
  await corrected.stop();
});
