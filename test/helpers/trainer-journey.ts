// The quality engineer's whole path, as the README's "Training a model" walks it, through the real
// command lines: a folder of good images -> `crad train` -> `crad calibrate` (held-out good images)
// -> `crad export` (gridsample and tent from the checkpoint, the held-out test images as the
// reference images, so the export records the trainer's torch scores of them; the uint8 input form
// converted from the gridsample file with --from-onnx, reference included) -> the daemon loads
// each file (contract check) and reproduces its reference file -> `crad-edge infer` on the held-out
// good and defective images gives the trainer's scores within the reference tolerance, relative to
// the score, and the verdicts the calibration implies. Real backbone weights make real scores: in
// the tens, where an absolute 1e-5 between the sampling forms once refused every trained model
// (issue 22). Small on purpose (64 px, 16 training images, 6 epochs: about a minute of CPU per
// case): the path is tested, not the model's quality. One test file per case, as each file has the
// runner's whole time limit.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import cv from '../../src/cv.js';
import { readModelFile } from '../../src/inference/model-file.js';
import { allowedDifference, checkAgainstReference, REFERENCE_TOLERANCE } from './model-reference.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const sharedData = process.env.CRAD_SHARED_DATA ?? path.resolve(repoRoot, '../shared/data');

const SIZE = 64;
const EPOCHS = '6';
/** A trained model's scores are well above this; a random or untrained head's are not. */
const REAL_SCALE = 5;

/** `python -m crad <args>` as `npm run trainer` runs it; its stdout. Fails with its stderr. */
export function crad(...args: string[]): string {
  const run = spawnSync('/usr/bin/python3', ['-m', 'crad', ...args], {
    cwd: repoRoot,
    env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'training') },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  assert.equal(run.status, 0, `crad ${args.join(' ')} failed (${run.status}):\n${(run.stderr ?? '').slice(-4000)}`);
  return run.stdout;
}

interface InferLine {
  file: string;
  raw: number;
  normalized: number | null;
  verdict: 'OK' | 'NG' | null;
  calibrated: boolean;
}

/** `crad-edge infer <folder> --model <m> --json` (the CLI from source, as the other CLI tests run it). */
function infer(folder: string, model: string): InferLine[] {
  const out = execFileSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/main.ts'), 'infer', folder, '--model', model, '--json'], {
    cwd: repoRoot,
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  return out.trim().split('\n').map((line) => JSON.parse(line) as InferLine);
}

export function imagesIn(dir: string): string[] {
  return fs.readdirSync(dir).filter((name) => /\.(jpe?g|png)$/i.test(name)).sort().map((name) => path.join(dir, name));
}

/** Copy `files` into `dir` (made), each renamed by `name` (default: its own name). */
export function copyInto(dir: string, files: string[], name = (file: string, _index: number) => path.basename(file)): void {
  fs.mkdirSync(dir, { recursive: true });
  files.forEach((file, index) => fs.copyFileSync(file, path.join(dir, name(file, index))));
}

/** A gross defect no model trained on good parts may pass: `file` with its middle ninth painted
 * pure red, written losslessly to `to`. */
function paintedOver(file: string, to: string): void {
  const image = cv.imread(file);
  const view = image.getRegion(new cv.Rect(Math.round(image.cols / 3), Math.round(image.rows / 3), Math.round(image.cols / 3), Math.round(image.rows / 3)));
  view.setTo(new cv.Vec3(0, 0, 255));
  view.release();
  cv.imwrite(to, image);
  image.release();
}

/** What a quality engineer has: a folder of good images to train on, other good images (never
 * trained on) to calibrate with, and held-out good and defective images to check the line with. */
export interface JourneyImages {
  train: string[];
  calibrate: string[];
  good: string[];
  defective: string[];
}

/** The journey on these images with this backbone (trainer options), inside the folder `work`. */
export async function journey(t: TestContext, images: JourneyImages, backbone: string[], work: string): Promise<void> {
  const folders = { train: path.join(work, 'good-images'), calibrate: path.join(work, 'held-out-good'), line: path.join(work, 'line') };
  copyInto(folders.train, images.train);
  copyInto(folders.calibrate, images.calibrate);
  // The line's images, named by what they are so that a failure message says it.
  copyInto(folders.line, images.good, (file, i) => `good-${i}${path.extname(file)}`);
  copyInto(folders.line, images.defective, (file, i) => `defect-${i}${path.extname(file)}`);
  const gross = 'defect-painted.png';
  paintedOver(images.good[0]!, path.join(folders.line, gross));
  const lineImages = imagesIn(folders.line);

  const run = path.join(work, 'run');
  // The trainer chooses its settings (on by default); a short selection run to keep the test quick.
  crad('train', '--data', folders.train, ...backbone, '--input-size', String(SIZE), '--epochs', EPOCHS, '--min-steps', '0',
    '--batch-size', '8', '--select-steps', '12', '--out', run, '--no-progress');
  const calibrated = path.join(run, 'calibrated.pt');
  crad('calibrate', '--model', path.join(run, 'best.pt'), '--normal', folders.calibrate, '--out', calibrated);

  const product = (form: string) => path.join(work, `product-${form}.onnx`);
  const exports: Record<string, string[]> = {
    gridsample: [calibrated, '--sampling', 'gridsample', '--reference-images', ...lineImages],
    tent: [calibrated, '--sampling', 'tent', '--reference-images', ...lineImages],
    uint8: ['--from-onnx', product('gridsample'), '--input-form', 'uint8'],
  };
  // The trainer's (torch) scores of the line's images: the gridsample export's reference scores.
  let trainerScores: Map<string, number> | null = null;
  const rawByForm = new Map<string, Map<string, number>>();
  for (const [form, options] of Object.entries(exports)) {
    const model = product(form);
    const report = JSON.parse(crad('export', ...options, '--out', model)) as {
      calibrated: boolean;
      forms?: Record<string, { difference: number; allowed: number }>;
      reference_scores: number[];
    };
    assert.equal(report.calibrated, true);
    if (report.forms) {
      t.diagnostic(`${form}: forms differ by ` +
        Object.entries(report.forms).map(([name, c]) => `${c.difference.toExponential(2)} on ${name} (allowed ${c.allowed.toExponential(2)})`).join(', '));
    }
    trainerScores ??= new Map(lineImages.map((file, i) => [path.basename(file), report.reference_scores[i]!]));
    const scores = [...trainerScores.values()];
    assert.ok(Math.max(...scores) > REAL_SCALE, `scores ${scores} are not at a trained model's scale`);

    // The daemon loads it: the contract check, then its reference outputs, bare and the daemon's way.
    const file = await readModelFile(model);
    assert.equal(file.info.input.form, form === 'uint8' ? 'uint8-bgr-nhwc' : 'float32-rgb-nchw');
    assert.deepEqual([file.height, file.width], [SIZE, SIZE]);
    const calibration = file.info.calibration;
    assert.ok(calibration, `${form}: the exported model carries the calibration`);
    // The settings the trainer chose from good images, and the synthetic-anomaly check of the threshold.
    const selection = file.info.training?.['settings_selection'] as { mode?: string; chosen?: { neck_pool?: number } } | undefined;
    assert.equal(selection?.mode, 'on', `${form}: crad.training records the settings selection`);
    assert.ok([1, 3].includes(selection?.chosen?.neck_pool ?? 0), `${form}: chosen neck pool ${selection?.chosen?.neck_pool}`);
    assert.match(calibration.source ?? '', /balanced/, `${form}: the default threshold balances false rejects and synthetic misses`);
    await checkAgainstReference(model);

    // The line: crad-edge infer gives the trainer's scores and the calibration's verdicts (NG at
    // or above the image threshold; inference.sensitivity is 0 by default).
    const threshold = calibration.image.threshold;
    const lines = infer(folders.line, model);
    assert.deepEqual(lines.map((line) => path.basename(line.file)), [...trainerScores.keys()]);
    const raw = new Map<string, number>();
    for (const line of lines) {
      const name = path.basename(line.file);
      const expected: number = trainerScores.get(name)!;
      const allowed = allowedDifference(REFERENCE_TOLERANCE, [line.raw], [expected]);
      assert.ok(Math.abs(line.raw - expected) <= allowed, `${form} ${name}: crad-edge ${line.raw}, trainer ${expected} (allowed ${allowed})`);
      assert.equal(line.calibrated, true);
      if (Math.abs(expected - threshold) > allowed) {
        assert.equal(line.verdict, expected >= threshold ? 'NG' : 'OK', `${form} ${name}: raw ${line.raw} against the calibrated threshold ${threshold}`);
      }
      raw.set(name, line.raw);
    }
    // Both verdicts are met: the short schedule need not tell subtle defects, but a painted-over part must be NG.
    assert.equal(lines.find((line) => path.basename(line.file) === gross)?.verdict, 'NG', `${form}: ${gross} passed as OK`);
    t.diagnostic(`${form}: threshold ${threshold.toFixed(2)}; crad-edge: ` + lines.map((l) => `${path.basename(l.file)} ${l.raw.toFixed(2)} ${l.verdict}`).join(', '));
    rawByForm.set(form, raw);
  }
  // The three files are one model: the same score for every image within the tolerance.
  for (const [name, value] of rawByForm.get('gridsample')!) {
    for (const form of ['tent', 'uint8']) {
      const other = rawByForm.get(form)!.get(name)!;
      assert.ok(Math.abs(other - value) <= allowedDifference(REFERENCE_TOLERANCE, [other], [value]), `${name}: ${form} ${other} vs gridsample ${value}`);
    }
  }
}
