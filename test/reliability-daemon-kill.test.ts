// The daemon killed with SIGKILL mid-stream (no shutdown code runs) and started again, as a real
// process against a real mosquitto: everything it had committed to its outbox is delivered by the
// next run, nothing in the middle of the stream goes missing, and a messageId only ever repeats as
// a replayed copy of the same result.
//
// Which results were committed before the kill is read from the outbox file itself (read-only,
// after the kill, before the restart). The subscriber holds a persistent session on a persistent
// broker, so it loses nothing while the broker is away either.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Mosquitto } from './helpers/mosquitto.js';
import { assertValid, schemaValidator, Subscriber, until } from './helpers/publish-fixtures.js';
import { DaemonProcess, demoModel, samplesDir, writeConfig } from './helpers/daemon.js';
import { describeResults, firstCopies, missingSequences, outboxResults, resultMessages, sleep, type ResultSeen } from './helpers/reliability.js';

const ajv = schemaValidator();

function daemonConfig(device: string, brokerUrl: string): { configFile: string; outboxFile: string } {
  const configFile = writeConfig({
    device: { id: device },
    model: { path: demoModel },
    // 2 fps, far below the model's rate: the batcher replaces no frame, so sequences are contiguous.
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, loop: true, fps: 2 }],
    mqtt: { url: brokerUrl, topicPrefix: 'rel/kill', reconnectMinMs: 200, reconnectMaxMs: 1000, keepaliveSec: 5, connectTimeoutMs: 2000 },
    crops: { enabled: false },
  });
  return { configFile, outboxFile: path.join(path.dirname(configFile), 'outbox.sqlite') };
}

/** Results of one daemon run: captured inside [from, to). */
const capturedBetween = (results: ResultSeen[], from: number, to: number) => results.filter((r) => r.capturedAt >= from && r.capturedAt < to);

function assertContiguous(results: ResultSeen[], what: string): void {
  assert.ok(results.length > 0, `${what}: some results`);
  assert.deepEqual(missingSequences(results, 'cam1'), [], `${what}: no sequence missing in ${describeResults(results, 'cam1')}`);
  const sequences = results.map((r) => r.sequence);
  assert.equal(new Set(sequences).size, sequences.length, `${what}: one messageId per frame (${describeResults(results, 'cam1')})`);
}

/**
 * A messageId seen twice is the same result sent again from the outbox: marked replayed. The one
 * other repeat allowed is the broker's: a QoS 1 message in flight to this subscriber when the
 * broker stopped is delivered again after its restart, with the DUP flag (not the daemon's doing).
 */
function assertDuplicatesAreReplays(all: ResultSeen[]): void {
  const firsts = firstCopies(all);
  for (const dup of all.filter((r) => !firsts.includes(r) && !r.brokerRedelivery)) {
    const first = firsts.find((f) => f.messageId === dup.messageId)!;
    assert.deepEqual([dup.sequence, dup.capturedAt], [first.sequence, first.capturedAt], `duplicate ${dup.messageId} is the same result`);
    assert.equal(dup.replayed, true, `a repeated messageId (${dup.messageId}, #${dup.sequence}) comes only as a replay`);
  }
}

test('SIGKILL while the broker is down: every result committed to the outbox arrives after broker and daemon restart', { timeout: 180_000 }, async () => {
  const broker = await Mosquitto.start({ persistence: true });
  const { configFile, outboxFile } = daemonConfig('killdown', broker.url);
  const prefix = 'rel/kill/killdown';
  const subscriber = await Subscriber.connect(broker.url, 5, `${prefix}/+/result`, `kill-down-scada-${process.pid}`);
  const first = new DaemonProcess(configFile);
  const second = new DaemonProcess(configFile);
  const results = () => resultMessages(subscriber.messages, prefix);
  try {
    first.start();
    await until('3 live results', () => results().length >= 3, 90_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${first.output.slice(-3000)}`);
    });
    await broker.stop();
    await sleep(5000); // results pile up in the outbox meanwhile
    const killedAt = Date.now();
    assert.equal(await first.stop('SIGKILL'), null, 'killed, not exited');

    const committed = outboxResults(outboxFile).rows;
    assert.ok(committed.length >= 3, `results were committed while the broker was down (${committed.length})`);

    await broker.start();
    second.start();
    const ids = new Set(committed.map((r) => r.messageId));
    await until(
      `all ${committed.length} committed results`,
      () => [...ids].every((id) => results().some((r) => r.messageId === id)),
      90_000,
    ).catch((err: Error) => {
      const got = new Set(results().map((r) => r.messageId));
      const missing = committed.filter((r) => !got.has(r.messageId)).map((r) => `#${r.sequence}`);
      throw new Error(`${err.message}; missing ${missing.join(' ')}\n${second.output.slice(-3000)}`);
    });
    await until('the new run streams live results', () => results().some((r) => r.capturedAt > killedAt && !r.replayed), 60_000);
    assert.equal(await second.stop('SIGTERM'), 0, `clean exit\n${second.output.slice(-2000)}`);

    const all = results();
    for (const r of firstCopies(all)) assertValid(ajv, 'result.schema.json', r.json);
    // The committed results, replayed by the second run, in the order the outbox held them.
    const replayedCopies = all.filter((r) => ids.has(r.messageId) && r.replayed);
    assert.deepEqual(
      firstCopies(replayedCopies).map((r) => r.messageId),
      committed.map((r) => r.messageId),
      'every committed result replayed once, in outbox order',
    );
    for (const row of committed) {
      const got = all.find((r) => r.messageId === row.messageId)!;
      assert.equal(got.sequence, row.sequence, `${row.messageId} is the result the outbox held`);
    }
    // Nothing lost inside the first run's stream: what arrived live plus what the outbox held
    // covers every sequence from 1 (only frames not yet committed at the kill can be missing, at the end).
    assertContiguous(firstCopies(capturedBetween(all, 0, killedAt)), 'first run');
    assertContiguous(firstCopies(capturedBetween(all, killedAt, Infinity)), 'second run');
    assertDuplicatesAreReplays(all);
  } finally {
    await first.stop('SIGKILL');
    await second.stop('SIGKILL');
    await subscriber.close();
    await broker.dispose();
  }
});

test('SIGKILL with the broker up: ids stay unique (repeats only as replays), the stream has no holes and resumes after restart', { timeout: 180_000 }, async () => {
  const broker = await Mosquitto.start({ persistence: true });
  const { configFile, outboxFile } = daemonConfig('killup', broker.url);
  const prefix = 'rel/kill/killup';
  const subscriber = await Subscriber.connect(broker.url, 5, `${prefix}/+/result`, `kill-up-scada-${process.pid}`);
  const first = new DaemonProcess(configFile);
  const second = new DaemonProcess(configFile);
  const results = () => resultMessages(subscriber.messages, prefix);
  try {
    first.start();
    await until('6 live results', () => results().length >= 6, 90_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${first.output.slice(-3000)}`);
    });
    const killedAt = Date.now();
    assert.equal(await first.stop('SIGKILL'), null, 'killed, not exited');
    const beforeRestart = results().length;
    const committed = outboxResults(outboxFile).rows;

    second.start();
    await until('6 results from the new run', () => capturedBetween(results(), killedAt, Infinity).length >= 6, 90_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${second.output.slice(-3000)}`);
    });
    await until('every committed result', () => committed.every((row) => results().some((r) => r.messageId === row.messageId)), 30_000);
    assert.equal(await second.stop('SIGTERM'), 0, `clean exit\n${second.output.slice(-2000)}`);

    const all = results();
    for (const r of firstCopies(all)) assertValid(ajv, 'result.schema.json', r.json);
    // Rows still in the outbox at the kill (sent, PUBACK not yet committed, or not yet sent) come
    // again from the next run, marked replayed.
    for (const row of committed) {
      assert.ok(all.some((r) => r.messageId === row.messageId && r.replayed && r.index >= beforeRestart), `committed #${row.sequence} replayed after the restart`);
    }
    assertContiguous(firstCopies(capturedBetween(all, 0, killedAt)), 'first run');
    assertContiguous(firstCopies(capturedBetween(all, killedAt, Infinity)), 'second run');
    assertDuplicatesAreReplays(all);
    // The second run's own results go out live.
    assert.ok(capturedBetween(all, killedAt, Infinity).some((r) => !r.replayed));
  } finally {
    await first.stop('SIGKILL');
    await second.stop('SIGKILL');
    await subscriber.close();
    await broker.dispose();
  }
});
