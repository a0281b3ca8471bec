// Persisting a pushed config: atomic replace, revision kept inside the file, secrets from the
// environment never written, failures leave the previous file exactly as it was.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, validateConfigObject, ConfigError } from '../src/config/load.js';
import { persistConfig } from '../src/config/persist.js';
import { tempDir } from './helpers/cleanup.js';

const root = tempDir('persist');

let dirCount = 0;
function freshDir(): string {
  const dir = path.join(root, `d${dirCount++}`);
  fs.mkdirSync(dir);
  return dir;
}

function withEnv<T>(name: string, value: string, fn: () => T): T {
  const saved = process.env[name];
  process.env[name] = value;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}

const config = validateConfigObject({
  device: { id: 'line3-pc1' },
  cameras: [{ id: 'cam1', source: 'usb', device: '/dev/video0', fps: 5 }],
  inference: { sensitivity: 0.2 },
  mqtt: { password: 'from-file' },
});

describe('persistConfig', () => {
  test('writes the config with the revision inside; loadConfig reads it back unchanged', () => {
    const file = path.join(freshDir(), 'config.json');
    persistConfig(file, config, 7);
    const reloaded = loadConfig(file);
    assert.deepEqual(reloaded, { ...config, remoteConfig: { ...config.remoteConfig, revision: 7 } });
    assert.equal(loadConfig(file).remoteConfig.revision, 7);
    assert.equal(config.remoteConfig.revision, 0, 'the object passed in is not modified');
  });

  test('without a revision argument the object\'s own remoteConfig.revision is kept', () => {
    const file = path.join(freshDir(), 'config.json');
    persistConfig(file, { ...config, remoteConfig: { ...config.remoteConfig, revision: 4 } });
    assert.equal(loadConfig(file).remoteConfig.revision, 4);
  });

  test('replaces an existing file, leaves no temp file, and creates it readable by the owner only', () => {
    const dir = freshDir();
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, '{"inference": {"sensitivity": -0.4}}');
    persistConfig(file, config, 1);
    assert.deepEqual(fs.readdirSync(dir), ['config.json']);
    assert.equal(loadConfig(file).inference.sensitivity, 0.2);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  });

  test('a value that cannot be written leaves the previous file byte for byte', () => {
    const dir = freshDir();
    const file = path.join(dir, 'config.json');
    persistConfig(file, config, 2);
    const before = fs.readFileSync(file);
    assert.throws(() => persistConfig(file, { ...config, inference: { ...config.inference, sensitivity: 1n } }, 3), /BigInt/);
    assert.deepEqual(fs.readFileSync(file), before);
    assert.deepEqual(fs.readdirSync(dir), ['config.json']);
  });

  test('a failed rename removes the temp file and names the target', () => {
    const dir = freshDir();
    const target = path.join(dir, 'config.json');
    fs.mkdirSync(path.join(target, 'occupied'), { recursive: true }); // a non-empty directory cannot be renamed over
    assert.throws(() => persistConfig(target, config, 1), (err: unknown) => err instanceof ConfigError && err.message.includes(target));
    assert.deepEqual(fs.readdirSync(dir), ['config.json']);
  });

  test('a missing directory is an error naming the file', () => {
    const file = path.join(root, 'no-such-dir', 'config.json');
    assert.throws(() => persistConfig(file, config, 1), new RegExp(`cannot write config file ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
  });

  test('a negative revision is refused before anything is written', () => {
    const file = path.join(freshDir(), 'config.json');
    assert.throws(() => persistConfig(file, config, -1), /revision must be a non-negative integer, got -1/);
    assert.equal(fs.existsSync(file), false);
  });

  test('values supplied by the environment are not written, and come back from it on load', () => {
    const file = path.join(freshDir(), 'config.json');
    withEnv('CRAD_MQTT_PASSWORD', 'from-env', () => {
      const effective = loadConfig(undefined, { mqtt: { password: 'ignored' } });
      assert.equal(effective.mqtt.password, 'from-env');
      persistConfig(file, effective, 1);
      const written = JSON.parse(fs.readFileSync(file, 'utf8')) as { mqtt: Record<string, unknown> };
      assert.equal(Object.hasOwn(written.mqtt, 'password'), false);
      assert.doesNotMatch(fs.readFileSync(file, 'utf8'), /from-env/);
      assert.equal(loadConfig(file).mqtt.password, 'from-env');
    });
    // Without the environment variable a file value is written as usual.
    persistConfig(file, config, 1);
    assert.match(fs.readFileSync(file, 'utf8'), /"password": "from-file"/);
  });
});
