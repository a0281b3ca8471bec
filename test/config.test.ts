// Configuration: every bad value is an error that names its key; examples and the README stay valid.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, redact, validateConfigObject } from '../src/config/load.js';
import { configReference } from '../src/cli/config-docs.js';
import { tempDir } from './helpers/cleanup.js';

const repo = path.resolve(import.meta.dirname, '..');

function writeTemp(text: string): string {
  const dir = tempDir('config');
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, text);
  return file;
}

test('defaults validate on their own', () => {
  const config = validateConfigObject({});
  assert.equal(config.mqtt.protocolVersion, 5);
  assert.deepEqual(config.cameras, []);
});

test('every example config in config/ is valid', () => {
  const files = fs.readdirSync(path.join(repo, 'config')).filter((f) => f.endsWith('.json'));
  assert.ok(files.length >= 4, `expected the example configs, found ${files.join(', ')}`);
  for (const file of files) {
    assert.doesNotThrow(() => loadConfig(path.join(repo, 'config', file)), `config/${file}`);
  }
});

test('paths in a config file resolve against the file', () => {
  const config = loadConfig(path.join(repo, 'config/demo.json'));
  assert.equal(config.model.path, path.join(repo, 'models/demo/crad-demo.onnx'));
  assert.equal(config.cameras[0]!.path, path.join(repo, 'samples'));
});

const badValues: [string, Record<string, unknown>, RegExp][] = [
  ['unknown top-level key', { colour: 'red' }, /colour/],
  ['unknown nested key', { mqtt: { hostname: 'x' } }, /mqtt\.hostname/],
  ['wrong type', { inference: { maxBatch: 'four' } }, /inference\.maxBatch/],
  ['bad enum', { model: { graphOptimization: 'max' } }, /model\.graphOptimization/],
  ['bad protocol version', { mqtt: { protocolVersion: 3 } }, /mqtt\.protocolVersion/],
  ['bad qos', { mqtt: { qos: { result: 3 } } }, /mqtt\.qos\.result/],
  ['topic prefix with wildcard', { mqtt: { topicPrefix: 'a/+/b' } }, /mqtt\.topicPrefix/],
  ['topic prefix with empty level', { mqtt: { topicPrefix: 'a//b' } }, /mqtt\.topicPrefix/],
  ['device id with slash', { device: { id: 'a/b' } }, /device\.id/],
  ['sensitivity out of range', { inference: { sensitivity: 0.9 } }, /inference\.sensitivity/],
  ['crop quality out of range', { crops: { quality: 101 } }, /crops\.quality/],
  ['overlay alpha out of range', { overlay: { alpha: 2 } }, /overlay\.alpha/],
  ['zero batch', { inference: { maxBatch: 0 } }, /inference\.maxBatch/],
  ['cameras not a list', { cameras: { id: 'x' } }, /cameras/],
  ['camera unknown key', { cameras: [{ id: 'a', source: 'folder', path: '/tmp', colour: 1 }] }, /cameras\[0\]\.colour/],
  ['camera bad source', { cameras: [{ id: 'a', source: 'webcam' }] }, /cameras\[0\]\.source/],
  ['camera missing path', { cameras: [{ id: 'a', source: 'folder' }] }, /cameras\[0\]\.path/],
  ['gige camera missing address', { cameras: [{ id: 'a', source: 'gige' }] }, /cameras\[0\]\.address/],
  ['camera duplicate id', { cameras: [{ id: 'a', source: 'folder', path: '/x' }, { id: 'a', source: 'folder', path: '/y' }] }, /cameras\[1\]\.id/],
  ['camera bad roi', { cameras: [{ id: 'a', source: 'folder', path: '/x', roi: { x: 0, y: 0, width: 0, height: 5 } }] }, /cameras\[0\]\.roi/],
  ['camera bad trigger', { cameras: [{ id: 'a', source: 'folder', path: '/x', trigger: 'gpio' }] }, /cameras\[0\]\.trigger/],
  ['camera id with wildcard', { cameras: [{ id: 'a#', source: 'folder', path: '/x' }] }, /cameras\[0\]\.id/],
];

for (const [name, value, key] of badValues) {
  test(`rejects ${name}, naming the key`, () => {
    assert.throws(() => validateConfigObject(value), (err: unknown) => {
      assert.ok(err instanceof ConfigError || err instanceof Error);
      assert.match((err as Error).message, key);
      return true;
    });
  });
}

test('a config file that is not JSON names the file and the line', () => {
  const file = writeTemp('{\n  "device": { "id": "x" },\n  "mqtt": { url: }\n}\n');
  assert.throws(() => loadConfig(file), /config\.json is not valid JSON: .* line 3/);
});

test('a missing config file is a clear error', () => {
  assert.throws(() => loadConfig('/nonexistent/crad.json'), /cannot read config file \/nonexistent\/crad\.json/);
});

test('comments and trailing commas are allowed in config files', () => {
  const file = writeTemp('// a line PC\n{ "device": { "id": "line-1" }, /* note */ "log": { "level": "debug" }, }\n');
  const config = loadConfig(file);
  assert.equal(config.device.id, 'line-1');
  assert.equal(config.log.level, 'debug');
});

test('redact hides passwords, keys and URL credentials', () => {
  const config = validateConfigObject({
    mqtt: { url: 'mqtts://user:secret@broker:8883', password: 'hunter2', tls: { cert: '/etc/cert.pem', key: '/etc/key.pem' } },
    cameras: [{ id: 'rtsp1', source: 'rtsp', url: 'rtsp://admin:admin@127.0.0.1/stream' }],
  });
  const text = JSON.stringify(redact(config));
  assert.doesNotMatch(text, /hunter2|secret|admin:admin|key\.pem/);
  assert.match(text, /\[redacted\]/);
});

test('docs/configuration.md carries the configuration reference generated from the schema', () => {
  const reference = fs.readFileSync(path.join(repo, 'docs/configuration.md'), 'utf8');
  assert.ok(reference.includes(configReference()), 'docs/configuration.md is out of date: run `npm run docs:config`');
});

test('a client certificate without its key (or the reverse) is refused at load, naming the missing key', () => {
  const certOnly = writeTemp(JSON.stringify({ mqtt: { tls: { cert: '/etc/crad/client.pem' } } }));
  assert.throws(() => loadConfig(certOnly), /mqtt\.tls\.key: must be set together with mqtt\.tls\.cert/);
  const keyOnly = writeTemp(JSON.stringify({ mqtt: { tls: { key: '/etc/crad/client.key' } } }));
  assert.throws(() => loadConfig(keyOnly), /mqtt\.tls\.cert: must be set together with mqtt\.tls\.key/);
});

test('every key whose change applies live is taken by a stage that declared it (a push reaches it)', async () => {
  const { keysApplied } = await import('../src/config/policy.js');
  const { LIVE_STAGE_KEYS } = await import('../src/service/daemon.js');
  const { stageTakes } = await import('../src/service/config-push.js');
  const stages = Object.entries(LIVE_STAGE_KEYS).map(([name, keys]) => ({ name, keys, apply: () => undefined }));
  const live = keysApplied('live');
  assert.ok(live.includes('inference.sensitivity') && live.length > 20, `the live keys were found (${live.length})`);
  const orphans = live.filter((key) => !stages.some((stage) => stageTakes(stage, key)));
  assert.deepEqual(orphans, [], `live keys no stage takes: ${orphans.join(', ')}`);
  // And a key that no stage declares is found: the check can fail.
  assert.equal(stages.some((stage) => stageTakes(stage, 'http.liveFps')), false);
});
