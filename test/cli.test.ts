// The command line as a user meets it: real processes, real model, real files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { demoModel, repoRoot, samplesDir, writeConfig } from './helpers/daemon.js';
import { killOnExit, tempDir } from './helpers/cleanup.js';
import { uint8FormOf } from './fixtures/uint8-form.js';
import { allowedDifference } from './helpers/tolerance.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function crad(args: string[], timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    const child = killOnExit(spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/main.ts'), ...args], { cwd: repoRoot }));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const tmp = () => tempDir('cli');

test('infer --json prints one JSON line per image and nothing else on stdout', async () => {
  const run = await crad(['infer', samplesDir, '--json', '--model', demoModel]);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trim().split('\n');
  const images = fs.readdirSync(samplesDir).filter((f) => f.endsWith('.png'));
  assert.equal(lines.length, images.length);
  for (const line of lines) {
    const result = JSON.parse(line) as { file: string; verdict: string; raw: number };
    assert.ok(['OK', 'NG'].includes(result.verdict));
    assert.ok(Number.isFinite(result.raw));
  }
});

test('infer runs a model of the uint8 input form: the verdicts and scores of its float form', async () => {
  const results = async (model: string) => {
    const run = await crad(['infer', samplesDir, '--json', '--model', model]);
    assert.equal(run.code, 0, run.stderr);
    return run.stdout.trim().split('\n').map((line) => JSON.parse(line) as { file: string; verdict: string; raw: number });
  };
  const float = await results(demoModel);
  const uint8 = await results(uint8FormOf(demoModel));
  assert.deepEqual(uint8.map((r) => [r.file, r.verdict]), float.map((r) => [r.file, r.verdict]));
  // Within float32 rounding at the scores' scale (1e-5 on the demo's scores, which reach 10.6).
  const allowed = allowedDifference(1e-6, uint8.map((r) => r.raw), float.map((r) => r.raw));
  uint8.forEach((r, i) => assert.ok(Math.abs(r.raw - float[i]!.raw) <= allowed, `${r.file}: ${r.raw} vs ${float[i]!.raw} (allowed ${allowed})`));
});

test('infer skips an image that does not decode, names it, and says so in the exit code', async () => {
  const dir = tmp();
  fs.copyFileSync(path.join(samplesDir, 'washer_00_good.png'), path.join(dir, 'a.png'));
  fs.writeFileSync(path.join(dir, 'b.png'), 'this is not a PNG');
  const out = path.join(dir, 'out');
  const run = await crad(['infer', dir, '--model', demoModel, '--out', out]);
  assert.equal(run.code, 2);
  assert.match(run.stdout, /a\.png\s+OK/);
  assert.match(run.stderr, /skipped .*b\.png: not a decodable image/);
  assert.ok(fs.existsSync(path.join(out, 'a.overlay.jpg')), 'overlay written');
});

test('infer with a corrupt model file names the file and the problem', async () => {
  const dir = tmp();
  const bad = path.join(dir, 'broken.onnx');
  fs.writeFileSync(bad, Buffer.alloc(1000, 7));
  const run = await crad(['infer', samplesDir, '--model', bad]);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /broken\.onnx/);
  assert.equal(run.stdout, '');
});

test('config check names the bad key; config print redacts secrets', async () => {
  const dir = tmp();
  const bad = path.join(dir, 'bad.json');
  fs.writeFileSync(bad, JSON.stringify({ inference: { maxBatch: 'lots' } }));
  const check = await crad(['config', 'check', bad]);
  assert.equal(check.code, 1);
  assert.match(check.stderr, /inference\.maxBatch/);

  const good = path.join(dir, 'good.json');
  fs.writeFileSync(good, JSON.stringify({ mqtt: { password: 'hunter2' } }));
  assert.equal((await crad(['config', 'check', good])).code, 0);
  const print = await crad(['config', 'print', '--config', good]);
  assert.equal(print.code, 0);
  assert.doesNotMatch(print.stdout, /hunter2/);
  assert.equal(JSON.parse(print.stdout).mqtt.password, '[redacted]');
});

test('run refuses to start without a usable model, saying which file, with a failure exit code', async () => {
  const configFile = writeConfig({ model: { path: '/nonexistent/model.onnx' }, mqtt: { url: 'mqtt://127.0.0.1:1' } });
  const run = await crad(['run', '--config', configFile]);
  assert.equal(run.code, 1);
  assert.match(run.stdout + run.stderr, /\/nonexistent\/model\.onnx/);
});

test('demo: embedded broker, demo model, sample camera: prints a line per frame and how to watch', async () => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const run = await crad(['demo', '--frames', '4', '--port', String(port), '--fps', '8']);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, new RegExp(`mosquitto_sub -h 127\\.0\\.0\\.1 -p ${port}`));
  const frames = run.stdout.split('\n').filter((l) => /^cam1 #\s*\d+\s+(OK|NG)/.test(l));
  assert.ok(frames.length >= 4, run.stdout);
  assert.match(run.stdout, /demo: operator console on http:\/\/127\.0\.0\.1:\d+\//);
});

test('demo: the operator console it prints shows the samples being inspected, each frame with its own result', async () => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = killOnExit(spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/main.ts'), 'demo', '--port', String(port)], { cwd: repoRoot }));
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    const deadline = Date.now() + 120_000;
    let url: string | undefined;
    while (!(url = /operator console on (http:\/\/127\.0\.0\.1:\d+)\//.exec(stdout)?.[1]) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.ok(url, stdout);
    const cameras = (await (await fetch(`${url}/api/cameras`)).json()) as { cameras: Array<{ id: string }> };
    assert.deepEqual(cameras.cameras.map((c) => c.id), ['cam1']);
    assert.match(await (await fetch(`${url}/`)).text(), /<canvas id="live"/);
    // The live view: a frame event carries the JPEG and that frame's own result.
    const controller = new AbortController();
    const response = await fetch(`${url}/api/cameras/cam1/live`, { signal: controller.signal });
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    while (!/event: frame\ndata: .*\n\n/.test(text)) {
      const { done, value } = await reader.read();
      assert.ok(!done, `the stream ended: ${text.slice(0, 300)}`);
      text += value;
    }
    controller.abort();
    const frame = JSON.parse(/event: frame\ndata: (.*)\n\n/.exec(text)![1]!);
    assert.ok(Number.isInteger(frame.sequence) && ['OK', 'NG'].includes(frame.verdict), JSON.stringify({ ...frame, jpeg: undefined }));
    assert.equal(Buffer.from(frame.jpeg, 'base64').subarray(0, 2).toString('hex'), 'ffd8', 'a JPEG');
  } finally {
    child.kill('SIGINT');
  }
  assert.equal(await exited, 0, stdout);
});
