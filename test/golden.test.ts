// Golden samples against the real demo model: the committed samples (manifest layout) pass; an
// ok/ng folder layout is read; a recalibrated model that calls everything OK fails naming every NG
// image; an unusable set is a failed run, not a crash; the CLI exits by the result and audits it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { goldenDirFor, listGoldenSamples, runGoldenSamples } from '../src/inference/golden.js';
import { loadModel, type CradModel } from '../src/inference/model.js';
import { modelOptions } from '../src/inference/model-options.js';
import { postprocessOptions } from '../src/inference/postprocess.js';
import { AuditLog } from '../src/service/audit.js';
import { createLogger } from '../src/shared/log.js';
import { tempDir } from './helpers/cleanup.js';
import { demoModel, repoRoot, samplesDir } from './helpers/daemon.js';
import { writeRecalibratedModel } from './helpers/model-variants.js';
import { assertValid, schemaValidator } from './helpers/publish-fixtures.js';

const ajv = schemaValidator();
const root = tempDir('golden');
const config = loadConfig();
const post = postprocessOptions(config);
const log = createLogger('silent');
const expectedNg = JSON.parse(fs.readFileSync(path.join(samplesDir, 'manifest.json'), 'utf8')).images.filter((i: { expected: string }) => i.expected === 'NG').map((i: { file: string }) => i.file).sort();

async function withModel<T>(file: string, use: (model: CradModel) => Promise<T>): Promise<T> {
  const model = await loadModel(file, modelOptions(config), log);
  try {
    return await use(model);
  } finally {
    await model.release();
  }
}

test('the demo model passes the committed samples (manifest layout); the run matches its schema', async () => {
  const run = await withModel(demoModel, (m) => runGoldenSamples(m, samplesDir, post, 4));
  assert.equal(run.passed, true, JSON.stringify(run.failed));
  assert.equal(run.total, 12);
  assertValid(ajv, 'golden-run.schema.json', run);
});

test('ok/ and ng/ folders; a model that calls everything OK fails, naming each NG image', async () => {
  const dir = path.join(root, 'folders');
  for (const sub of ['ok', 'ng']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
  const manifest = JSON.parse(fs.readFileSync(path.join(samplesDir, 'manifest.json'), 'utf8')).images as { file: string; expected: string }[];
  for (const { file, expected } of manifest) fs.copyFileSync(path.join(samplesDir, file), path.join(dir, expected.toLowerCase(), file));
  assert.equal(listGoldenSamples(dir).length, 12);
  const lenient = path.join(root, 'lenient.onnx');
  await writeRecalibratedModel(demoModel, lenient, 1000);
  const good = await withModel(demoModel, (m) => runGoldenSamples(m, dir, post, 3));
  assert.equal(good.passed, true, JSON.stringify(good.failed));
  const bad = await withModel(lenient, (m) => runGoldenSamples(m, dir, post, 3));
  assert.equal(bad.passed, false);
  assert.deepEqual(bad.failed.map((f) => path.basename(f.file)).sort(), expectedNg);
  assert.ok(bad.failed.every((f) => f.expected === 'NG' && f.got === 'OK'));
  assertValid(ajv, 'golden-run.schema.json', bad);
});

test('an unusable set is a failed run with the reason, never an exception', async () => {
  const empty = path.join(root, 'empty');
  fs.mkdirSync(empty);
  const badManifest = path.join(root, 'bad-manifest');
  fs.mkdirSync(badManifest);
  fs.writeFileSync(path.join(badManifest, 'manifest.json'), JSON.stringify({ images: [{ file: '../escape.png', expected: 'OK' }] }));
  await withModel(demoModel, async (m) => {
    for (const [dir, reason] of [[path.join(root, 'missing'), /does not exist/], [empty, /holds no images/], [badManifest, /must lie inside/]] as const) {
      const run = await runGoldenSamples(m, dir, post, 4);
      assert.equal(run.passed, false);
      assert.match(run.error ?? '', reason);
    }
  });
});

test('a set is found per model: model.goldenDir, else <model>.golden beside the file', () => {
  const model = path.join(root, 'line3.onnx');
  assert.equal(goldenDirFor({ ...config, model: { ...config.model, path: model, goldenDir: '' } }), null);
  fs.mkdirSync(path.join(root, 'line3.golden'));
  assert.equal(goldenDirFor({ ...config, model: { ...config.model, path: model, goldenDir: '' } }), path.join(root, 'line3.golden'));
  assert.equal(goldenDirFor({ ...config, model: { ...config.model, path: model, goldenDir: '/x/set' } }), '/x/set');
});

test('crad-edge validate exits 0 on a pass and 1 on a failure, and both runs are in the audit log', async () => {
  const state = path.join(root, 'cli-state');
  const configFile = path.join(root, 'cli.json');
  fs.writeFileSync(configFile, JSON.stringify({ model: { path: demoModel, goldenDir: samplesDir }, service: { stateDir: state } }));
  const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/main.ts'), ...args], { cwd: repoRoot, encoding: 'utf8' });
  const pass = cli('validate', '-c', configFile);
  assert.equal(pass.status, 0, pass.stderr);
  assert.match(pass.stdout, /passed: 12 golden samples/);
  const fail = cli('validate', '-c', configFile, '-m', path.join(root, 'lenient.onnx'));
  assert.equal(fail.status, 1, fail.stderr);
  for (const ng of expectedNg) assert.match(fail.stdout, new RegExp(`FAIL .*${ng}  expected NG, got OK`));
  const noSet = path.join(root, 'cli-none.json');
  fs.writeFileSync(noSet, JSON.stringify({ model: { path: demoModel }, service: { stateDir: state } }));
  const none = cli('validate', '-c', noSet);
  assert.equal(none.status, 2);
  assert.match(none.stderr, /no golden samples for/);
  const entries = new AuditLog(path.join(state, 'audit'), { maxBytes: 1 << 20, keepFiles: 2 }).read().entries;
  assert.deepEqual(entries.map((e) => [e.kind, e.outcome, e.actor.kind]), [['golden', 'failed', 'cli'], ['golden', 'passed', 'cli']]);
  const audit = cli('audit', '-c', configFile, '--limit', '1');
  assert.equal(audit.status, 0, audit.stderr);
  assert.match(audit.stdout, /^#2 .* golden failed by cli/);
  assert.match(audit.stderr, /more: crad-edge audit --before 2/);
});
