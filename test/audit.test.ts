// The audit log on a real state directory: entries survive a reopen with their seq going on, the
// file is rotated at its size cap keeping keepFiles old files, pages run newest first across
// rotated files, secrets never reach it, and the actor says where a client id came from.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { AuditLog, auditChanges, keyFingerprint, mqttActor } from '../src/service/audit.js';
import { tempDir } from './helpers/cleanup.js';
import { assertValid, schemaValidator } from './helpers/publish-fixtures.js';

const ajv = schemaValidator();
const entry = (n: number) => ({ kind: 'config', outcome: 'applied', actor: { kind: 'daemon' as const }, transaction: `tx-${n}`, revisionBefore: n - 1, revisionAfter: n });

test('entries are JSON lines that survive a reopen; seq goes on', () => {
  const dir = tempDir('audit');
  const log = new AuditLog(dir, { maxBytes: 1 << 20, keepFiles: 2 });
  log.record(entry(1));
  log.record(entry(2));
  const lines = fs.readFileSync(path.join(dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => [l.seq, l.transaction]), [[1, 'tx-1'], [2, 'tx-2']]);
  // A line torn by a power cut is skipped, not fatal.
  fs.appendFileSync(path.join(dir, 'audit.jsonl'), '{"seq": 3, "at": "20');
  const reopened = new AuditLog(dir, { maxBytes: 1 << 20, keepFiles: 2 });
  assert.equal(reopened.record(entry(3)).seq, 3);
  assert.deepEqual(reopened.read().entries.map((e) => e.seq), [3, 2, 1]);
});

test('rotation keeps the size cap and keepFiles; pages run newest first across files', () => {
  const dir = tempDir('audit-rotate');
  const maxBytes = 4096;
  const log = new AuditLog(dir, { maxBytes, keepFiles: 2 });
  for (let n = 1; n <= 120; n++) log.record({ ...entry(n), details: { padding: 'x'.repeat(100) } });
  const files = fs.readdirSync(dir).sort();
  assert.deepEqual(files, ['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2']);
  for (const f of files) assert.ok(fs.statSync(path.join(dir, f)).size <= maxBytes, `${f} over the cap`);
  // Walk every page: seq strictly falling, no gaps, ending at the oldest entry kept.
  const seen: number[] = [];
  let before: number | null = null;
  do {
    const page = log.read({ limit: 7, before });
    assertValid(ajv, 'audit-response.schema.json', { transaction: null, status: 'ok', ...page });
    assert.ok(page.entries.length <= 7);
    seen.push(...page.entries.map((e) => e.seq));
    before = page.next;
  } while (before !== null);
  assert.equal(seen[0], 120);
  assert.ok(seen.length > 20 && seen.length < 120, `kept ${seen.length}`);
  assert.deepEqual(seen, Array.from({ length: seen.length }, (_, i) => 120 - i));
});

test('changes show old and new values with secrets redacted as config/get shows them', () => {
  const before = loadConfig();
  const after = structuredClone(before);
  after.mqtt.password = 'hunter2';
  after.inference.sensitivity = 0.1;
  after.cameras = [{ ...structuredClone(after.cameras[0] ?? {}), id: 'cam1', source: 'rtsp', url: 'rtsp://admin:s3cret@10.0.0.5/stream' } as never];
  const changes = auditChanges(before, after, ['cameras', 'inference.sensitivity', 'mqtt.password']);
  const text = JSON.stringify(changes);
  assert.ok(!text.includes('hunter2') && !text.includes('s3cret'), text);
  assert.deepEqual(changes.find((c) => c.key === 'inference.sensitivity'), { key: 'inference.sensitivity', old: 0, new: 0.1 });
  assert.match(text, /rtsp:\/\/.*10\.0\.0\.5\/stream/);
});

test('the actor: client id from the user property, else from the payload; the signing key fingerprint', () => {
  assert.deepEqual(mqttActor({ userProperties: { 'client-id': 'mes-7' } }, Buffer.from('{"clientId":"other"}'), null), { kind: 'mqtt', clientId: 'mes-7', clientIdFrom: 'user-property' });
  assert.deepEqual(mqttActor({}, Buffer.from('{"clientId":"plc-2"}'), null), { kind: 'mqtt', clientId: 'plc-2', clientIdFrom: 'payload' });
  assert.deepEqual(mqttActor(undefined, Buffer.from('not json'), null), { kind: 'mqtt' });
  const { publicKey } = crypto.generateKeyPairSync('ed25519');
  const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const fingerprint = keyFingerprint(pem)!;
  assert.match(fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  assert.equal(keyFingerprint(publicKey.export({ type: 'spki', format: 'der' }).toString('base64')), fingerprint);
  assert.equal(mqttActor({}, null, fingerprint).keyFingerprint, fingerprint);
  assert.equal(keyFingerprint(''), null);
});
