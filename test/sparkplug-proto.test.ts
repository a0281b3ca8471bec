// The edge node's own payload descriptor (src/sparkplug/proto.ts) against the official
// sparkplug_b.proto, read in place from ../shared: same names, numbers, types and rules; and the
// state kept across restarts (bdSeq, device numbers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import protobuf from 'protobufjs';
import { tempDir } from './helpers/cleanup.js';
import { OFFICIAL_PROTO } from './helpers/sparkplug-host.js';
import { DataType, protoRoot } from '../src/sparkplug/proto.js';
import { NodeStateFile } from '../src/sparkplug/state.js';
import { selectMetrics, NODE_METRICS } from '../src/sparkplug/metrics.js';
import { createLogger } from '../src/shared/log.js';

const log = createLogger('silent');

test('every field of our Payload and Metric is the official one', async () => {
  const official = await new protobuf.Root().load(OFFICIAL_PROTO, { keepCase: true });
  for (const name of ['Payload', 'Payload.Metric']) {
    const ours = protoRoot.lookupType(`org.eclipse.tahu.protobuf.${name}`);
    const theirs = official.lookupType(`org.eclipse.tahu.protobuf.${name}`);
    assert.ok(ours.fieldsArray.length > 0);
    for (const field of ours.fieldsArray) {
      const match = theirs.fields[field.name];
      assert.ok(match, `${name}.${field.name} exists in the official proto`);
      assert.deepEqual([field.id, field.type, field.repeated, field.partOf?.name ?? null], [match.id, match.type, match.repeated, match.partOf?.name ?? null], `${name}.${field.name}`);
    }
  }
  const dataType = official.lookupEnum('org.eclipse.tahu.protobuf.DataType');
  for (const [name, value] of Object.entries(DataType)) assert.equal(dataType.values[name], value, `DataType.${name}`);
});

test('bdSeq: 0 first, one more per CONNECT (refused ones too), wrapping after 255, kept across restarts', () => {
  const file = path.join(tempDir('spb-state'), 'sparkplug-state.json');
  let state = new NodeStateFile(file, log);
  assert.equal(state.takeBdSeq(), 0);
  assert.equal(state.takeBdSeq(), 1, 'a second CONNECT (e.g. after a refused one) gets the next bdSeq');
  for (let i = 2; i < 255; i++) state.takeBdSeq();
  assert.equal(state.takeBdSeq(), 255);
  state = new NodeStateFile(file, log);
  assert.equal(state.takeBdSeq(), 0, 'wraps and survives a restart');
  const cam = state.deviceNumber('cam1');
  assert.equal(new NodeStateFile(file, log).deviceNumber('cam1'), cam, 'device numbers (aliases) are stable');
  assert.notEqual(state.deviceNumber('cam2'), cam);
});

test('sparkplug.metrics: unknown names are refused, required metrics always kept', () => {
  assert.throws(() => selectMetrics(NODE_METRICS, ['Node Info/Nope']), /unknown metric "Node Info\/Nope"/);
  const names = selectMetrics(NODE_METRICS, ['Node Info/Uptime Seconds']).map((m) => m.name);
  assert.deepEqual(names, ['bdSeq', 'Node Control/Rebirth', 'Node Info/Uptime Seconds', 'Node Info/Rejected Commands']);
});
