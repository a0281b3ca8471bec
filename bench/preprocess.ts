// `node --import tsx bench/preprocess.ts`: the two input forms of the model contract side by side
// (issue 14), on one 1280x1024 BGR frame resized to the model's 224 px:
//   1. main-thread time per frame of preprocessInto: the float form (convertTo, split, three plane
//      copies after the resize) against the uint8 form (one copy of the resized BGR bytes). The
//      resize itself runs on libuv's pool in both. Two measures of the main thread: its CPU time
//      (Linux /proc/thread-self/schedstat, not inflated by waiting for a core), and the event
//      loop's active time (performance.eventLoopUtilization: wall time not idle, which on a busy
//      machine includes waiting for a core); the call's wall time is printed beside.
//   2. session.run at batch 1 of the same model in both forms (the uint8 graph adds a transpose,
//      a gather, a cast and a division in front), on the preprocessed frame; and, from
//      onnxruntime's own profile of the uint8 model, those four nodes' kernel time per run
//      against all nodes', a share that a busy machine's noise on whole runs would hide.
// Rounds interleave the forms (float first in even rounds, uint8 first in odd ones), so that a
// slow spell of a shared machine hits both alike; figures are medians of the rounds, with their
// range. The uint8 model is converted from --model by the trainer (`crad export --from-onnx`).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import * as ort from 'onnxruntime-node';
import cv from '../src/cv.js';
import type { Frame } from '../src/capture/frame.js';
import { inputBuffer, inputTensor, preprocessInto, type InputBuffer } from '../src/inference/preprocess.js';
import { readModelFile } from '../src/inference/model-file.js';
import type { InputForm } from '../src/inference/types.js';
import { describeMachine } from './lib/machine.js';
import { OtherLoad } from './lib/proc.js';
import { openSession } from './lib/runtime.js';

const root = path.resolve(import.meta.dirname, '..');
const PYTHON = process.env.CRAD_PYTHON ?? '/usr/bin/python3';
const FORMS: InputForm[] = ['float32-rgb-nchw', 'uint8-bgr-nhwc'];

const opts = new Command('preprocess')
  .option('--model <file>', 'float-form model (format 1)', path.join(root, 'models/demo/crad-demo.onnx'))
  .option('--image <file>', 'image scaled to the frame size', path.join(root, 'samples/washer_01_scratch.png'))
  .option('--frame <WxH>', 'camera frame size', '1280x1024')
  .option('--rounds <n>', 'interleaved rounds', (v) => Number(v), 9)
  .option('--frames <n>', 'frames preprocessed per form and round', (v) => Number(v), 100)
  .option('--runs <n>', 'session.run calls per form and round', (v) => Number(v), 10)
  .parse()
  .opts<{ model: string; image: string; frame: string; rounds: number; frames: number; runs: number }>();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cell = (xs: number[], digits: number) => `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}-${Math.max(...xs).toFixed(digits)})`;

/** Node names of the uint8 form's input prefix (training/crad/export.py PREFIX_NAME). */
const PREFIX_NODES = 'crad_uint8_input/';

function uint8Model(model: string, dir: string): string {
  const out = path.join(dir, path.basename(model).replace(/\.onnx$/i, '') + '-u8.onnx');
  execFileSync(PYTHON, ['-m', 'crad', 'export', '--from-onnx', model, '--input-form', 'uint8', '--out', out, '--no-reference'], {
    env: { ...process.env, PYTHONPATH: path.join(root, 'training') },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return out;
}

/** Kernel time per run (µs) of the prefix nodes and of all nodes, from onnxruntime's profile of `runs` runs. */
async function prefixKernelTime(model: string, tensor: ort.Tensor, runs: number, dir: string): Promise<{ prefixUs: number; allUs: number }> {
  const session = await ort.InferenceSession.create(model, { enableProfiling: true, profileFilePrefix: path.join(dir, 'profile'), graphOptimizationLevel: 'all', logSeverityLevel: 3 });
  for (let i = 0; i < runs; i++) await session.run({ image: tensor });
  session.endProfiling();
  await session.release();
  const file = fs.readdirSync(dir).find((f) => f.startsWith('profile') && f.endsWith('.json'))!;
  const events = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as { cat: string; name: string; dur: number }[];
  const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const sum = (list: typeof kernels) => list.reduce((total, e) => total + e.dur, 0) / runs;
  return { prefixUs: sum(kernels.filter((e) => e.name.startsWith(PREFIX_NODES))), allUs: sum(kernels) };
}

/** CPU time of the calling (main) thread so far, ms; NaN where Linux's schedstat is missing. */
function mainThreadCpuMs(): number {
  try {
    return Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return Number.NaN;
  }
}

/** Mean ms per frame of preprocessInto over `frames` calls: main-thread CPU, event loop active, wall. */
async function timePreprocess(frame: Frame, input: InputBuffer, size: number, frames: number): Promise<{ cpuMs: number; activeMs: number; wallMs: number }> {
  const loop = performance.eventLoopUtilization();
  const cpu = mainThreadCpuMs();
  const t0 = performance.now();
  for (let i = 0; i < frames; i++) await preprocessInto([frame], input, size, size);
  const wallMs = (performance.now() - t0) / frames;
  return { cpuMs: (mainThreadCpuMs() - cpu) / frames, activeMs: performance.eventLoopUtilization(loop).active / frames, wallMs };
}

async function timeRuns(session: ort.InferenceSession, tensor: ort.Tensor, runs: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await session.run({ [session.inputNames[0]!]: tensor });
    times.push(performance.now() - t0);
  }
  return median(times);
}

const [frameWidth, frameHeight] = opts.frame.split('x').map(Number) as [number, number];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crad-bench-preprocess-'));
try {
  const uint8 = uint8Model(opts.model, dir);
  const settings = { executionProviders: ['cpu'], intraOpThreads: 0, interOpThreads: 0, graphOptimization: 'all' as const, memoryArena: true };
  const sessions = { 'float32-rgb-nchw': await openSession(opts.model, settings), 'uint8-bgr-nhwc': await openSession(uint8, settings) };
  const size = (await readModelFile(opts.model)).height;
  const image = cv.imread(opts.image, cv.IMREAD_COLOR).resize(frameHeight, frameWidth, 0, 0, cv.INTER_LINEAR);
  const frame: Frame = { cameraId: 'bench', sequence: 1, capturedAt: new Date().toISOString(), capturedMono: 0, image, roi: null, release: () => image.release() };
  const inputs = Object.fromEntries(FORMS.map((form) => [form, inputBuffer(form, 1, size, size)])) as Record<InputForm, InputBuffer>;
  const tensors = {} as Record<InputForm, ort.Tensor>;
  for (const form of FORMS) {
    await preprocessInto([frame], inputs[form], size, size);
    tensors[form] = inputTensor(inputs[form], 1, size, size);
    for (let warm = 0; warm < 3; warm++) await sessions[form].run({ [sessions[form].inputNames[0]!]: tensors[form] });
  }

  const figures = Object.fromEntries(FORMS.map((form) => [form, { cpuMs: [] as number[], activeMs: [] as number[], wallMs: [] as number[], runMs: [] as number[] }]));
  const load = new OtherLoad();
  const loadAverage = [os.loadavg()[0]!];
  for (let round = 0; round < opts.rounds; round++) {
    for (const form of round % 2 ? [...FORMS].reverse() : FORMS) {
      const { cpuMs, activeMs, wallMs } = await timePreprocess(frame, inputs[form], size, opts.frames);
      figures[form]!.cpuMs.push(cpuMs);
      figures[form]!.activeMs.push(activeMs);
      figures[form]!.wallMs.push(wallMs);
      figures[form]!.runMs.push(await timeRuns(sessions[form], tensors[form], opts.runs));
    }
  }
  loadAverage.push(os.loadavg()[0]!);
  const otherLoad = load.percent();
  for (const session of Object.values(sessions)) await session.release();
  const profiled = await prefixKernelTime(uint8, tensors['uint8-bgr-nhwc'], 2 * opts.runs, dir);
  frame.release();

  const machine = describeMachine(root, PYTHON);
  const lines = [
    `Machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}; node ${machine.versions.node}, onnxruntime-node ${machine.versions['onnxruntime-node']}, OpenCV ${machine.versions.opencv}`,
    `Load: 1-minute load average ${loadAverage.map((l) => l.toFixed(1)).join(' -> ')}, other processes ${otherLoad.toFixed(0)} % of one core during the measurement`,
    `Model: ${path.relative(root, opts.model)} (${size} px) and its uint8 form; frame ${frameWidth}x${frameHeight} BGR; ${opts.rounds} interleaved rounds of ${opts.frames} preprocessings and ${opts.runs} session.run calls per form; median of the rounds (range)`,
    '',
    '| input form | preprocessInto main-thread CPU ms per frame | event loop active ms per frame | wall ms per frame (resize on the pool included) | session.run ms, batch 1 |',
    '| --- | --- | --- | --- | --- |',
    ...FORMS.map((form) => `| ${form} | ${cell(figures[form]!.cpuMs, 3)} | ${cell(figures[form]!.activeMs, 3)} | ${cell(figures[form]!.wallMs, 3)} | ${cell(figures[form]!.runMs, 2)} |`),
    '',
    `The uint8 form's input prefix (Transpose, Gather, Cast, Div) in onnxruntime's profile of ${2 * opts.runs} runs at batch 1: ` +
      `${(profiled.prefixUs / 1000).toFixed(3)} ms of ${(profiled.allUs / 1000).toFixed(2)} ms kernel time per run (${((100 * profiled.prefixUs) / profiled.allUs).toFixed(1)} %)`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
